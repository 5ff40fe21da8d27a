// Package store keeps users, guilds, channels, roles, members and messages.
// There is one interface with two backends: the embedded Pebble store for a
// single node (OpenPebble) and PostgreSQL shared by a cluster
// (OpenPostgres). Both pass the contract suite in storetest.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/chorus-voice/chorus/snowflake"
)

type ID = snowflake.ID

// ErrNotFound is returned when a record does not exist.
var ErrNotFound = errors.New("store: not found")

// User is an account; bots are users with Bot set.
type User struct {
	ID         ID     `json:"id"`
	Username   string `json:"username"`
	GlobalName string `json:"global_name,omitempty"`
	Avatar     string `json:"avatar,omitempty"`
	Bot        bool   `json:"bot,omitempty"`
	// AppFlags are the application flags of a bot (privileged intents,
	// gateway.md §13), reported in READY's application object.
	AppFlags int `json:"app_flags,omitempty"`
	// TokenGen is the generation of the user's tokens; tokens of an older
	// generation are revoked.
	TokenGen uint64 `json:"token_gen,omitempty"`
}

// Guild is a server (community).
type Guild struct {
	ID        ID        `json:"id"`
	Name      string    `json:"name"`
	OwnerID   ID        `json:"owner_id"`
	CreatedAt time.Time `json:"created_at"`
}

// Overwrite is a channel permission overwrite. Type 0 is a role, 1 a member.
type Overwrite struct {
	ID    ID     `json:"id"`
	Type  int    `json:"type"`
	Allow uint64 `json:"allow,string"`
	Deny  uint64 `json:"deny,string"`
}

// Channel is a guild channel.
type Channel struct {
	ID         ID          `json:"id"`
	GuildID    ID          `json:"guild_id"`
	Type       int         `json:"type"`
	Name       string      `json:"name"`
	Topic      string      `json:"topic,omitempty"`
	Position   int         `json:"position"`
	ParentID   ID          `json:"parent_id,omitempty"`
	UserLimit  int         `json:"user_limit,omitempty"`
	Bitrate    int         `json:"bitrate,omitempty"`
	Overwrites []Overwrite `json:"overwrites,omitempty"`
}

// Role is a guild role. The @everyone role has the guild's id.
type Role struct {
	ID          ID     `json:"id"`
	GuildID     ID     `json:"guild_id"`
	Name        string `json:"name"`
	Permissions uint64 `json:"permissions,string"`
	Position    int    `json:"position"`
	Color       int    `json:"color,omitempty"`
	Hoist       bool   `json:"hoist,omitempty"`
	Mentionable bool   `json:"mentionable,omitempty"`
}

// Member is a user's membership of a guild.
type Member struct {
	GuildID  ID        `json:"guild_id"`
	UserID   ID        `json:"user_id"`
	Nick     string    `json:"nick,omitempty"`
	Roles    []ID      `json:"roles,omitempty"`
	JoinedAt time.Time `json:"joined_at"`
	Mute     bool      `json:"mute,omitempty"`
	Deaf     bool      `json:"deaf,omitempty"`
}

// Message is a chat message. Nonce holds the client's nonce as its raw JSON
// token (a string or an integer) so it is echoed in the type it was sent.
type Message struct {
	ID        ID              `json:"id"`
	ChannelID ID              `json:"channel_id"`
	GuildID   ID              `json:"guild_id"`
	AuthorID  ID              `json:"author_id"`
	Content   string          `json:"content"`
	Nonce     json.RawMessage `json:"nonce,omitempty"`
	TTS       bool            `json:"tts,omitempty"`
	Type      int             `json:"type,omitempty"`
	EditedAt  *time.Time      `json:"edited_at,omitempty"`
}

// Page selects messages of a channel (gateway.md §18.7). At most one of
// Before, After and Around is set; Limit is 1..100.
type Page struct {
	Before, After, Around ID
	Limit                 int
}

// MaxID is the largest id a record can have: snowflakes are positive
// 64-bit signed integers.
const MaxID ID = 1<<63 - 1

// Clamped returns p with anchors above MaxID lowered to MaxID, so that
// after, before and around near 2^64 mean "past the newest message" and
// never wrap around to the oldest (both backends page through it).
func (p Page) Clamped() Page {
	p.Before, p.After, p.Around = min(p.Before, MaxID), min(p.After, MaxID), min(p.Around, MaxID)
	return p
}

// Store is the persistence contract. Every write is durable when it returns.
type Store interface {
	PutUser(ctx context.Context, u User) error
	GetUser(ctx context.Context, id ID) (User, error)
	// UserByName finds a user by exact username.
	UserByName(ctx context.Context, name string) (User, error)
	ListUsers(ctx context.Context) ([]User, error)

	PutGuild(ctx context.Context, g Guild) error
	GetGuild(ctx context.Context, id ID) (Guild, error)
	ListGuilds(ctx context.Context) ([]Guild, error)

	PutChannel(ctx context.Context, c Channel) error
	GetChannel(ctx context.Context, id ID) (Channel, error)
	DeleteChannel(ctx context.Context, id ID) error
	ListChannels(ctx context.Context, guild ID) ([]Channel, error)

	PutRole(ctx context.Context, r Role) error
	DeleteRole(ctx context.Context, guild, id ID) error
	ListRoles(ctx context.Context, guild ID) ([]Role, error)

	PutMember(ctx context.Context, m Member) error
	GetMember(ctx context.Context, guild, user ID) (Member, error)
	DeleteMember(ctx context.Context, guild, user ID) error
	ListMembers(ctx context.Context, guild ID) ([]Member, error)
	// UserGuilds lists the ids of the guilds a user is a member of.
	UserGuilds(ctx context.Context, user ID) ([]ID, error)

	// CreateMessages stores new messages in one durable write: all or none.
	// For each with a Nonce it also records (channel, author, nonce) so
	// MessageByNonce finds it. A guild commits what its mailbox holds
	// together this way (group commit).
	CreateMessages(ctx context.Context, ms ...Message) error
	GetMessage(ctx context.Context, channel, id ID) (Message, error)
	UpdateMessage(ctx context.Context, m Message) error
	DeleteMessage(ctx context.Context, channel, id ID) error
	// ListMessages returns messages newest first.
	ListMessages(ctx context.Context, channel ID, p Page) ([]Message, error)
	// MessageByNonce returns the id of the message the author created in the
	// channel with that nonce at or after since.
	MessageByNonce(ctx context.Context, channel, author ID, nonce []byte, since time.Time) (ID, error)

	// Claim makes the caller the guild's newest owner and returns its
	// ownership epoch: greater than any epoch returned for the guild before.
	// From then on writes under an older epoch (see WithFence) fail with
	// ErrFenced.
	Claim(ctx context.Context, guild ID) (uint64, error)

	// Get and Put of small opaque settings (secrets, schema versions).
	GetMeta(ctx context.Context, key string) ([]byte, error)
	PutMeta(ctx context.Context, key string, value []byte) error

	Close() error
}
