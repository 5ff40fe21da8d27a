package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"

	"github.com/chorus-voice/chorus/snowflake"
)

// Gateway opcodes (gateway.md §4).
const (
	OpDispatch        = 0
	OpHeartbeat       = 1
	OpIdentify        = 2
	OpPresenceUpdate  = 3
	OpVoiceState      = 4
	OpResume          = 6
	OpReconnect       = 7
	OpRequestMembers  = 8
	OpInvalidSession  = 9
	OpHello           = 10
	OpHeartbeatACK    = 11
	OpRequestSounds   = 31
	OpRequestChanInfo = 43
)

// Gateway close codes (gateway.md §11).
const (
	CloseUnknownError         CloseCode = 4000
	CloseUnknownOpcode        CloseCode = 4001
	CloseDecodeError          CloseCode = 4002
	CloseNotAuthenticated     CloseCode = 4003
	CloseAuthenticationFailed CloseCode = 4004
	CloseAlreadyAuthenticated CloseCode = 4005
	CloseInvalidSeq           CloseCode = 4007
	CloseRateLimited          CloseCode = 4008
	CloseSessionTimedOut      CloseCode = 4009
	CloseInvalidShard         CloseCode = 4010
	CloseShardingRequired     CloseCode = 4011
	CloseInvalidAPIVersion    CloseCode = 4012
	CloseInvalidIntents       CloseCode = 4013
	CloseDisallowedIntents    CloseCode = 4014
)

// MaxPayload is the largest client payload in bytes (gateway.md §12).
const MaxPayload = 4096

// Gateway intents the server filters by (gateway.md §13).
const (
	IntentGuilds             uint64 = 1 << 0
	IntentGuildMembers       uint64 = 1 << 1
	IntentGuildVoiceStates   uint64 = 1 << 7
	IntentGuildPresences     uint64 = 1 << 8
	IntentGuildMessages      uint64 = 1 << 9
	IntentGuildMessageTyping uint64 = 1 << 11
	IntentMessageContent     uint64 = 1 << 15
)

// AllIntents is the union of every defined intent bit (gateway.md §13).
const AllIntents uint64 = 53608447

// PrivilegedIntents are GUILD_MEMBERS, GUILD_PRESENCES and MESSAGE_CONTENT.
const PrivilegedIntents = IntentGuildMembers | IntentGuildPresences | IntentMessageContent

// Application flags that grant privileged intents (the "limited" variants too).
const (
	AppFlagGatewayPresence              = 1 << 12
	AppFlagGatewayPresenceLimited       = 1 << 13
	AppFlagGatewayGuildMembers          = 1 << 14
	AppFlagGatewayGuildMembersLimited   = 1 << 15
	AppFlagGatewayMessageContent        = 1 << 18
	AppFlagGatewayMessageContentLimited = 1 << 19
	AppFlagsAllPrivileged               = AppFlagGatewayPresence | AppFlagGatewayGuildMembers | AppFlagGatewayMessageContent
)

// PrivilegedIntentNames names the application flag that grants each
// privileged intent, as the admin API and CLI spell them.
var PrivilegedIntentNames = map[string]int{
	"presences":       AppFlagGatewayPresence,
	"guild_members":   AppFlagGatewayGuildMembers,
	"message_content": AppFlagGatewayMessageContent,
}

// AllowedIntents returns the privileged intents an application's flags grant.
func AllowedIntents(appFlags int) uint64 {
	var allowed uint64
	if appFlags&(AppFlagGatewayGuildMembers|AppFlagGatewayGuildMembersLimited) != 0 {
		allowed |= IntentGuildMembers
	}
	if appFlags&(AppFlagGatewayPresence|AppFlagGatewayPresenceLimited) != 0 {
		allowed |= IntentGuildPresences
	}
	if appFlags&(AppFlagGatewayMessageContent|AppFlagGatewayMessageContentLimited) != 0 {
		allowed |= IntentMessageContent
	}
	return allowed
}

// Errors of payload decoding. ErrSyntax maps to close 4002, ErrPayload to
// 4001 (a well-formed frame whose data does not fit its opcode).
var (
	ErrSyntax  = errors.New("protocol: payload is not valid JSON")
	ErrPayload = errors.New("protocol: invalid payload for opcode")
)

// Envelope is a decoded client frame: the opcode and the raw data.
type Envelope struct {
	Op int
	D  json.RawMessage
}

type envelopeJSON struct {
	Op *int            `json:"op"`
	D  json.RawMessage `json:"d"`
}

// DecodeEnvelope parses a client payload's envelope.
func DecodeEnvelope(b []byte) (Envelope, error) {
	var e envelopeJSON
	if err := json.Unmarshal(b, &e); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return Envelope{}, ErrPayload
		}
		return Envelope{}, ErrSyntax
	}
	if e.Op == nil {
		return Envelope{}, ErrPayload
	}
	return Envelope{Op: *e.Op, D: e.D}, nil
}

// decode unmarshals op data, mapping every failure to ErrPayload.
func decode(d []byte, v any) error {
	if len(d) == 0 || string(d) == "null" {
		return ErrPayload
	}
	if err := json.Unmarshal(d, v); err != nil {
		return ErrPayload
	}
	return nil
}

// DecodeHeartbeat returns the sequence a heartbeat carries: null and absent
// give -1; discordgo's 0 and any integer are accepted (gateway.md §6).
func DecodeHeartbeat(d []byte) (int64, error) {
	d = bytes.TrimSpace(d)
	if len(d) == 0 || string(d) == "null" {
		return -1, nil
	}
	n, err := strconv.ParseInt(string(d), 10, 64)
	if err != nil {
		return 0, ErrPayload
	}
	return n, nil
}

// Activity is an activity a client sets in a presence.
type Activity struct {
	Name  string `json:"name"`
	Type  int    `json:"type"`
	URL   string `json:"url,omitempty"`
	State string `json:"state,omitempty"`
}

// Presence is op 3's data and Identify's presence (gateway.md §16.1).
type Presence struct {
	Since      json.RawMessage `json:"since"`
	Activities []Activity      `json:"activities"`
	Game       *Activity       `json:"game"` // discord.py's legacy key
	Status     string          `json:"status"`
	AFK        bool            `json:"afk"`
}

// ValidStatus reports whether s is a status a client may set.
func ValidStatus(s string) bool {
	switch s {
	case "online", "dnd", "idle", "invisible", "offline":
		return true
	}
	return false
}

// DecodePresence parses op 3 data, folding the legacy game key into activities.
func DecodePresence(d []byte) (Presence, error) {
	var p Presence
	if err := decode(d, &p); err != nil {
		return p, err
	}
	return p, p.normalize()
}

func (p *Presence) normalize() error {
	if p.Status == "" {
		p.Status = "online"
	}
	if !ValidStatus(p.Status) {
		return ErrPayload
	}
	if p.Game != nil && len(p.Activities) == 0 {
		p.Activities = []Activity{*p.Game}
	}
	p.Game = nil
	if len(p.Activities) > 10 {
		return ErrPayload
	}
	// Activities are fanned out to every member and kept in resume logs:
	// their strings are bounded like Discord's.
	for _, a := range p.Activities {
		if utf8.RuneCountInString(a.Name) > MaxActivityText || utf8.RuneCountInString(a.State) > MaxActivityText ||
			len(a.URL) > MaxActivityURL {
			return ErrPayload
		}
	}
	return nil
}

// Bounds of an activity's strings.
const (
	MaxActivityText = 128 // name, state
	MaxActivityURL  = 512
)

// Identify is op 2's data (gateway.md §7).
type Identify struct {
	Token          string          `json:"token"`
	Properties     json.RawMessage `json:"properties"`
	Compress       bool            `json:"compress"`
	LargeThreshold *int            `json:"large_threshold"`
	Shard          []int           `json:"shard"`
	Presence       *Presence       `json:"presence"`
	Intents        *uint64         `json:"intents"`
}

// DecodeIdentify parses Identify. Range checks that have their own close
// codes (intents, shard) are left to the caller.
func DecodeIdentify(d []byte) (Identify, error) {
	var id Identify
	if err := decode(d, &id); err != nil {
		return id, err
	}
	if id.Token == "" {
		return id, ErrPayload
	}
	if id.LargeThreshold != nil && (*id.LargeThreshold < 50 || *id.LargeThreshold > 250) {
		return id, ErrPayload
	}
	if id.Presence != nil {
		if err := id.Presence.normalize(); err != nil {
			return id, err
		}
	}
	return id, nil
}

// Resume is op 6's data (gateway.md §10).
type Resume struct {
	Token     string `json:"token"`
	SessionID string `json:"session_id"`
	Seq       *int64 `json:"seq"`
}

// DecodeResume parses Resume.
func DecodeResume(d []byte) (Resume, error) {
	var r Resume
	if err := decode(d, &r); err != nil {
		return r, err
	}
	if r.Token == "" || r.SessionID == "" || r.Seq == nil || *r.Seq < 0 {
		return r, ErrPayload
	}
	return r, nil
}

// RequestMembers is op 8's data (gateway.md §16.3). UserIDs accepts one id
// or an array, as strings or numbers.
type RequestMembers struct {
	GuildID   snowflake.ID    `json:"guild_id"`
	Query     *string         `json:"query"`
	Limit     int             `json:"limit"`
	Presences bool            `json:"presences"`
	UserIDs   json.RawMessage `json:"user_ids"`
	Nonce     string          `json:"nonce"`
	IDs       []snowflake.ID  `json:"-"`
}

// DecodeRequestMembers parses op 8. A nonce over 32 bytes is dropped, as
// Discord does.
func DecodeRequestMembers(d []byte) (RequestMembers, error) {
	var r RequestMembers
	if err := decode(d, &r); err != nil {
		return r, err
	}
	if r.GuildID == 0 || r.Limit < 0 {
		return r, ErrPayload
	}
	if len(r.UserIDs) > 0 && string(r.UserIDs) != "null" {
		if r.UserIDs[0] == '[' {
			if err := json.Unmarshal(r.UserIDs, &r.IDs); err != nil {
				return r, ErrPayload
			}
		} else {
			id, err := snowflake.ParseJSON(r.UserIDs)
			if err != nil {
				return r, ErrPayload
			}
			r.IDs = []snowflake.ID{id}
		}
	}
	if (r.Query == nil) == (len(r.IDs) == 0) {
		return r, ErrPayload // exactly one of query and user_ids
	}
	if len(r.Nonce) > 32 {
		r.Nonce = ""
	}
	return r, nil
}

// VoiceStateUpdate is op 4's data (gateway.md §16.2).
type VoiceStateUpdate struct {
	GuildID   snowflake.ID  `json:"guild_id"`
	ChannelID *snowflake.ID `json:"channel_id"`
	SelfMute  bool          `json:"self_mute"`
	SelfDeaf  bool          `json:"self_deaf"`
}

// DecodeVoiceStateUpdate parses op 4.
func DecodeVoiceStateUpdate(d []byte) (VoiceStateUpdate, error) {
	var v VoiceStateUpdate
	if err := decode(d, &v); err != nil {
		return v, err
	}
	if v.GuildID == 0 {
		return v, ErrPayload
	}
	if v.ChannelID != nil && *v.ChannelID == 0 {
		v.ChannelID = nil
	}
	return v, nil
}
