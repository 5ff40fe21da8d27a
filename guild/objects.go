package guild

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
)

// The JSON shapes below are Discord's object shapes (gateway.md §14), built
// from store records. They are what REST answers and what events carry.

type ID = snowflake.ID

// jsonNull is a JSON null for fields that are present but empty.
var jsonNull = json.RawMessage("null")

// Timestamp formats a time the way Discord does (ISO8601 with microseconds).
func Timestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000+00:00") }

// User is a user object.
type User struct {
	ID            ID      `json:"id"`
	Username      string  `json:"username"`
	Discriminator string  `json:"discriminator"`
	GlobalName    *string `json:"global_name"`
	Avatar        *string `json:"avatar"`
	Bot           bool    `json:"bot,omitempty"`
	PublicFlags   int     `json:"public_flags"`
	Flags         int     `json:"flags"`
}

// UserObject converts a store user.
func UserObject(u store.User) User {
	o := User{ID: u.ID, Username: u.Username, Discriminator: "0", Bot: u.Bot}
	if u.GlobalName != "" {
		o.GlobalName = &u.GlobalName
	}
	if u.Avatar != "" {
		o.Avatar = &u.Avatar
	}
	return o
}

// Member is a guild member object.
type Member struct {
	User         *User   `json:"user,omitempty"`
	Nick         *string `json:"nick"`
	Avatar       *string `json:"avatar"`
	Roles        []ID    `json:"roles"`
	JoinedAt     string  `json:"joined_at"`
	PremiumSince *string `json:"premium_since"`
	Deaf         bool    `json:"deaf"`
	Mute         bool    `json:"mute"`
	Flags        int     `json:"flags"`
	Pending      bool    `json:"pending"`
}

// MemberObject converts a member; withUser adds the user object.
func MemberObject(m *store.Member, u *store.User) Member {
	o := Member{Roles: m.Roles, JoinedAt: Timestamp(m.JoinedAt), Deaf: m.Deaf, Mute: m.Mute}
	if o.Roles == nil {
		o.Roles = []ID{}
	}
	if m.Nick != "" {
		o.Nick = &m.Nick
	}
	if u != nil {
		uo := UserObject(*u)
		o.User = &uo
	}
	return o
}

// Role is a role object.
type Role struct {
	ID           ID         `json:"id"`
	Name         string     `json:"name"`
	Color        int        `json:"color"` // mirrors Colors.Primary, as Discord still sends it
	Colors       RoleColors `json:"colors"`
	Hoist        bool       `json:"hoist"`
	Icon         *string    `json:"icon"`
	UnicodeEmoji *string    `json:"unicode_emoji"`
	Position     int        `json:"position"`
	Permissions  string     `json:"permissions"`
	Managed      bool       `json:"managed"`
	Mentionable  bool       `json:"mentionable"`
	Flags        int        `json:"flags"`
}

// RoleColors is a role's colors object: gradients and holographic styles
// are not offered, so only the primary color is ever set.
type RoleColors struct {
	Primary   int  `json:"primary_color"`
	Secondary *int `json:"secondary_color"`
	Tertiary  *int `json:"tertiary_color"`
}

// RoleObject converts a role.
func RoleObject(r *store.Role) Role {
	return Role{ID: r.ID, Name: r.Name, Color: r.Color, Colors: RoleColors{Primary: r.Color}, Hoist: r.Hoist,
		Position: r.Position, Permissions: strconv.FormatUint(r.Permissions, 10), Mentionable: r.Mentionable}
}

// Overwrite is a permission overwrite object.
type Overwrite struct {
	ID    ID     `json:"id"`
	Type  int    `json:"type"`
	Allow string `json:"allow"`
	Deny  string `json:"deny"`
}

// Channel is a guild channel object.
type Channel struct {
	ID                   ID              `json:"id"`
	Type                 int             `json:"type"`
	GuildID              ID              `json:"guild_id"`
	Position             int             `json:"position"`
	PermissionOverwrites []Overwrite     `json:"permission_overwrites"`
	Name                 string          `json:"name"`
	Topic                *string         `json:"topic,omitempty"`
	NSFW                 bool            `json:"nsfw"`
	LastMessageID        *ID             `json:"last_message_id,omitempty"`
	Bitrate              int             `json:"bitrate,omitempty"`
	UserLimit            *int            `json:"user_limit,omitempty"`
	RateLimitPerUser     int             `json:"rate_limit_per_user"`
	ParentID             *ID             `json:"parent_id"`
	RTCRegion            json.RawMessage `json:"rtc_region,omitempty"` // null for voice: automatic
	Flags                int             `json:"flags"`
}

// Channel types used here.
const (
	ChannelText     = 0
	ChannelVoice    = 2
	ChannelCategory = 4
)

// ChannelObject converts a channel.
func ChannelObject(c *store.Channel) Channel {
	o := Channel{ID: c.ID, Type: c.Type, GuildID: c.GuildID, Position: c.Position, Name: c.Name,
		PermissionOverwrites: make([]Overwrite, 0, len(c.Overwrites))}
	for _, w := range c.Overwrites {
		o.PermissionOverwrites = append(o.PermissionOverwrites, Overwrite{ID: w.ID, Type: w.Type,
			Allow: strconv.FormatUint(w.Allow, 10), Deny: strconv.FormatUint(w.Deny, 10)})
	}
	if c.Topic != "" || c.Type == ChannelText {
		t := c.Topic
		o.Topic = &t
	}
	if c.ParentID != 0 {
		p := c.ParentID
		o.ParentID = &p
	}
	if c.Type == ChannelVoice {
		o.Bitrate = c.Bitrate
		if o.Bitrate == 0 {
			o.Bitrate = 64000
		}
		l := c.UserLimit
		o.UserLimit = &l
		o.RTCRegion = jsonNull
	}
	return o
}

// Message is a message object; GuildID and Member are set in gateway events.
type Message struct {
	ID              ID              `json:"id"`
	Type            int             `json:"type"`
	ChannelID       ID              `json:"channel_id"`
	GuildID         *ID             `json:"guild_id,omitempty"`
	Author          User            `json:"author"`
	Member          *Member         `json:"member,omitempty"`
	Content         string          `json:"content"`
	Timestamp       string          `json:"timestamp"`
	EditedTimestamp *string         `json:"edited_timestamp"`
	TTS             bool            `json:"tts"`
	MentionEveryone bool            `json:"mention_everyone"`
	Mentions        []User          `json:"mentions"`
	MentionRoles    []ID            `json:"mention_roles"`
	Attachments     []struct{}      `json:"attachments"`
	Embeds          []struct{}      `json:"embeds"`
	Pinned          bool            `json:"pinned"`
	Components      []struct{}      `json:"components"`
	Flags           int             `json:"flags"`
	Nonce           json.RawMessage `json:"nonce,omitempty"`
	ChannelType     *int            `json:"channel_type,omitempty"`
}

// MessageObject converts a message.
func MessageObject(m *store.Message, author store.User) Message {
	o := Message{ID: m.ID, Type: m.Type, ChannelID: m.ChannelID, Author: UserObject(author),
		Content: m.Content, Timestamp: Timestamp(m.ID.Time()), TTS: m.TTS, Nonce: m.Nonce,
		Mentions: []User{}, MentionRoles: []ID{}, Attachments: []struct{}{}, Embeds: []struct{}{},
		Components: []struct{}{}}
	if m.EditedAt != nil {
		e := Timestamp(*m.EditedAt)
		o.EditedTimestamp = &e
	}
	return o
}

// Guild is a guild object (gateway.md §9.3 essentials).
type Guild struct {
	ID                          ID        `json:"id"`
	Name                        string    `json:"name"`
	Icon                        *string   `json:"icon"`
	Splash                      *string   `json:"splash"`
	DiscoverySplash             *string   `json:"discovery_splash"`
	OwnerID                     ID        `json:"owner_id"`
	AFKChannelID                *ID       `json:"afk_channel_id"`
	AFKTimeout                  int       `json:"afk_timeout"`
	VerificationLevel           int       `json:"verification_level"`
	DefaultMessageNotifications int       `json:"default_message_notifications"`
	ExplicitContentFilter       int       `json:"explicit_content_filter"`
	Roles                       []Role    `json:"roles"`
	Emojis                      []any     `json:"emojis"`
	Stickers                    []any     `json:"stickers"`
	Features                    []string  `json:"features"`
	MFALevel                    int       `json:"mfa_level"`
	ApplicationID               *ID       `json:"application_id"`
	SystemChannelID             *ID       `json:"system_channel_id"`
	SystemChannelFlags          int       `json:"system_channel_flags"`
	RulesChannelID              *ID       `json:"rules_channel_id"`
	VanityURLCode               *string   `json:"vanity_url_code"`
	Description                 *string   `json:"description"`
	Banner                      *string   `json:"banner"`
	PremiumTier                 int       `json:"premium_tier"`
	PreferredLocale             string    `json:"preferred_locale"`
	PublicUpdatesChannelID      *ID       `json:"public_updates_channel_id"`
	NSFWLevel                   int       `json:"nsfw_level"`
	PremiumProgressBarEnabled   bool      `json:"premium_progress_bar_enabled"`
	SafetyAlertsChannelID       *ID       `json:"safety_alerts_channel_id"`
	HubType                     *int      `json:"hub_type"`
	IncidentsData               *struct{} `json:"incidents_data"`
	MaxMembers                  int       `json:"max_members"`
	ApproximateMemberCount      int       `json:"approximate_member_count,omitempty"`
}

// GuildCreate is the GUILD_CREATE payload: a guild plus its live state.
type GuildCreate struct {
	Guild
	JoinedAt             string     `json:"joined_at"`
	Large                bool       `json:"large"`
	Unavailable          bool       `json:"unavailable"`
	MemberCount          int        `json:"member_count"`
	VoiceStates          []any      `json:"voice_states"`
	Members              []Member   `json:"members"`
	Channels             []Channel  `json:"channels"`
	Threads              []any      `json:"threads"`
	Presences            []Presence `json:"presences"`
	StageInstances       []any      `json:"stage_instances"`
	GuildScheduledEvents []any      `json:"guild_scheduled_events"`
	SoundboardSounds     []any      `json:"soundboard_sounds"`
}

// Activity is the part of an activity a bot may set (gateway.md §16.1).
type Activity struct {
	Name      string `json:"name"`
	Type      int    `json:"type"`
	URL       string `json:"url,omitempty"`
	State     string `json:"state,omitempty"`
	CreatedAt int64  `json:"created_at"`
}

// Presence is a PRESENCE_UPDATE payload (and GUILD_CREATE presences entry).
type Presence struct {
	User struct {
		ID ID `json:"id"`
	} `json:"user"`
	GuildID      *ID               `json:"guild_id,omitempty"`
	Status       string            `json:"status"`
	Activities   []Activity        `json:"activities"`
	ClientStatus map[string]string `json:"client_status"`
}
