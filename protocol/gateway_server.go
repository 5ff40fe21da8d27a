package protocol

import (
	"strconv"

	"github.com/chorus-voice/chorus/snowflake"
)

// Dispatch event names the server sends (gateway.md §9).
const (
	EventReady             = "READY"
	EventResumed           = "RESUMED"
	EventGuildCreate       = "GUILD_CREATE"
	EventGuildDelete       = "GUILD_DELETE"
	EventGuildMemberAdd    = "GUILD_MEMBER_ADD"
	EventGuildMemberUpdate = "GUILD_MEMBER_UPDATE"
	EventGuildMemberRemove = "GUILD_MEMBER_REMOVE"
	EventGuildMembersChunk = "GUILD_MEMBERS_CHUNK"
	EventGuildRoleCreate   = "GUILD_ROLE_CREATE"
	EventGuildRoleUpdate   = "GUILD_ROLE_UPDATE"
	EventChannelCreate     = "CHANNEL_CREATE"
	EventChannelUpdate     = "CHANNEL_UPDATE"
	EventMessageCreate     = "MESSAGE_CREATE"
	EventMessageUpdate     = "MESSAGE_UPDATE"
	EventMessageDelete     = "MESSAGE_DELETE"
	EventTypingStart       = "TYPING_START"
	EventPresenceUpdate    = "PRESENCE_UPDATE"
	EventVoiceStateUpdate  = "VOICE_STATE_UPDATE"
	EventVoiceServerUpdate = "VOICE_SERVER_UPDATE"
)

// Ready is READY's data (gateway.md §8). User is the user object with
// verified and mfa_enabled; the types of users belong to the guild layer.
type Ready struct {
	V                int                `json:"v"`
	User             any                `json:"user"`
	Guilds           []UnavailableGuild `json:"guilds"`
	SessionID        string             `json:"session_id"`
	SessionType      string             `json:"session_type"`
	ResumeGatewayURL string             `json:"resume_gateway_url"`
	Shard            []int              `json:"shard,omitempty"`
	Application      ReadyApplication   `json:"application"`
	PrivateChannels  []any              `json:"private_channels"`
	Presences        []any              `json:"presences"`
	Relationships    []any              `json:"relationships"`
	GuildJoinReqs    []any              `json:"guild_join_requests"`
}

// UnavailableGuild is a guild READY announces and GUILD_DELETE takes
// away while it is unavailable (gateway.md §9.2).
type UnavailableGuild struct {
	ID          snowflake.ID `json:"id"`
	Unavailable bool         `json:"unavailable"`
}

// ReadyApplication is READY's partial application.
type ReadyApplication struct {
	ID    snowflake.ID `json:"id"`
	Flags int          `json:"flags"`
}

// OnShard reports whether a guild belongs to shard [id, count] by
// Discord's formula, (guild_id >> 22) % count (gateway.md §14); without
// sharding (nil) every guild does.
func OnShard(guild snowflake.ID, shard []int) bool {
	return shard == nil || int((uint64(guild)>>22)%uint64(shard[1])) == shard[0]
}

// AppendDispatch appends a dispatch envelope around already encoded data:
// {"t":name,"s":seq,"op":0,"d":data}. It allocates nothing when b has room.
func AppendDispatch(b []byte, name string, seq uint64, data []byte) []byte {
	b = append(b, `{"t":"`...)
	b = append(b, name...)
	b = append(b, `","s":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"op":0,"d":`...)
	b = append(b, data...)
	return append(b, '}')
}

// Hello returns the op 10 frame.
func Hello(intervalMS int) []byte {
	return []byte(`{"op":10,"d":{"heartbeat_interval":` + strconv.Itoa(intervalMS) + `},"s":null,"t":null}`)
}

// Fixed server frames.
var (
	HeartbeatACK         = []byte(`{"op":11,"d":null,"s":null,"t":null}`)
	HeartbeatRequest     = []byte(`{"op":1,"d":null,"s":null,"t":null}`)
	Reconnect            = []byte(`{"op":7,"d":null,"s":null,"t":null}`)
	InvalidSession       = []byte(`{"op":9,"d":false,"s":null,"t":null}`)
	InvalidSessionResume = []byte(`{"op":9,"d":true,"s":null,"t":null}`)
)
