package guild

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/chorus-voice/chorus/protocol"
)

// MembersRequest is gateway op 8 (gateway.md §16.3).
type MembersRequest struct {
	Node, Session string
	User          ID
	Intents       uint64
	Query         *string
	Limit         int
	UserIDs       []ID
	Presences     bool
	Nonce         string
}

// FullListInterval limits "all members" requests per guild and user
// (gateway.md §12).
const FullListInterval = 30 * time.Second

const chunkSize = 1000

// RequestMembers answers op 8 with GUILD_MEMBERS_CHUNK events delivered to
// the requesting session: always at least one chunk, each echoing the nonce.
func (r *Router) RequestMembers(ctx context.Context, guild ID, req MembersRequest) error {
	_, err := opRequestMembers.run(ctx, r, guild, requestMembersArgs{guild, req})
	return err
}

type requestMembersArgs struct {
	Guild ID
	Req   MembersRequest
}

var opRequestMembers = defineOp("request_members", func(r *Router, ctx context.Context, q requestMembersArgs) (none, error) {
	return none{}, r.requestMembers(ctx, q.Guild, q.Req)
})

// requestMembers is RequestMembers on the guild's owner.
func (r *Router) requestMembers(ctx context.Context, guild ID, req MembersRequest) error {
	return r.call(ctx, guild, func(a *actor) error { a.requestMembers(req); return nil })
}

func (a *actor) requestMembers(req MembersRequest) {
	sub := &Sub{Node: req.Node, Session: req.Session}
	if a.members[req.User] == nil {
		return
	}
	var ids, notFound []ID
	switch {
	case req.Query != nil:
		all := *req.Query == "" && req.Limit == 0
		if all {
			if req.Intents&protocol.IntentGuildMembers == 0 {
				break // the full list needs the privileged intent
			}
			if last, ok := a.lastFullReq[req.User]; ok && time.Since(last) < FullListInterval {
				retry := FullListInterval - time.Since(last)
				a.toSub(sub, NewEvent("RATE_LIMITED", rateLimited{Opcode: 8, RetryAfter: retry.Seconds(),
					Meta: rateMeta{GuildID: a.guild.ID, Nonce: req.Nonce}}))
				return
			}
			a.lastFullReq[req.User] = time.Now()
		}
		limit := req.Limit
		if !all && (limit <= 0 || limit > 100) {
			limit = 100
		}
		q := strings.ToLower(*req.Query)
		for id, u := range a.users {
			if strings.HasPrefix(strings.ToLower(u.Username), q) ||
				(a.members[id].Nick != "" && strings.HasPrefix(strings.ToLower(a.members[id].Nick), q)) {
				ids = append(ids, id)
			}
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		if !all && len(ids) > limit {
			ids = ids[:limit]
		}
	default:
		for i, id := range req.UserIDs {
			if i == 100 {
				break
			}
			if a.members[id] != nil {
				ids = append(ids, id)
			} else {
				notFound = append(notFound, id)
			}
		}
	}
	count := (len(ids) + chunkSize - 1) / chunkSize
	if count == 0 {
		count = 1
	}
	for i := 0; i < count; i++ {
		part := ids[min(i*chunkSize, len(ids)):min((i+1)*chunkSize, len(ids))]
		ch := membersChunk{GuildID: a.guild.ID, Members: make([]Member, 0, len(part)), ChunkIndex: i,
			ChunkCount: count, Nonce: req.Nonce}
		if i == 0 && len(notFound) > 0 {
			ch.NotFound = notFound
		}
		if req.Presences && req.Intents&protocol.IntentGuildPresences != 0 {
			ch.Presences = []Presence{}
		}
		for _, id := range part {
			ch.Members = append(ch.Members, a.member(id))
			if ch.Presences != nil && a.presence[id] != nil {
				ch.Presences = append(ch.Presences, *a.presence[id])
			}
		}
		a.toSub(sub, NewEvent(protocol.EventGuildMembersChunk, ch))
	}
}

type membersChunk struct {
	GuildID    ID         `json:"guild_id"`
	Members    []Member   `json:"members"`
	ChunkIndex int        `json:"chunk_index"`
	ChunkCount int        `json:"chunk_count"`
	NotFound   []ID       `json:"not_found,omitempty"`
	Presences  []Presence `json:"presences,omitempty"`
	Nonce      string     `json:"nonce,omitempty"`
}

type rateLimited struct {
	Opcode     int      `json:"opcode"`
	RetryAfter float64  `json:"retry_after"`
	Meta       rateMeta `json:"meta"`
}

type rateMeta struct {
	GuildID ID     `json:"guild_id"`
	Nonce   string `json:"nonce,omitempty"`
}

// GetGuild returns the guild object for a member.
func (r *Router) GetGuild(ctx context.Context, guild, user ID) (Guild, error) {
	return opGetGuild.run(ctx, r, guild, getGuildArgs{guild, user})
}

type getGuildArgs struct {
	Guild ID
	User  ID
}

var opGetGuild = defineOp("get_guild", func(r *Router, ctx context.Context, q getGuildArgs) (Guild, error) {
	return r.getGuild(ctx, q.Guild, q.User)
})

// getGuild is GetGuild on the guild's owner.
func (r *Router) getGuild(ctx context.Context, guild, user ID) (Guild, error) {
	var g Guild
	err := r.call(ctx, guild, func(a *actor) error {
		if a.members[user] == nil {
			return ErrUnknownGuild
		}
		g = a.guildObject()
		g.ApproximateMemberCount = len(a.members)
		return nil
	})
	return g, err
}

// Channels lists a guild's channels for a member.
func (r *Router) Channels(ctx context.Context, guild, user ID) ([]Channel, error) {
	return opChannels.run(ctx, r, guild, channelsArgs{guild, user})
}

type channelsArgs struct {
	Guild ID
	User  ID
}

var opChannels = defineOp("channels", func(r *Router, ctx context.Context, q channelsArgs) ([]Channel, error) {
	return r.channels(ctx, q.Guild, q.User)
})

// channels is Channels on the guild's owner.
func (r *Router) channels(ctx context.Context, guild, user ID) ([]Channel, error) {
	var out []Channel
	err := r.call(ctx, guild, func(a *actor) error {
		if a.members[user] == nil {
			return ErrUnknownGuild
		}
		out = []Channel{}
		for _, c := range a.sortedChannels() {
			if a.permissions(user, c)&PermViewChannel != 0 {
				out = append(out, ChannelObject(c))
			}
		}
		return nil
	})
	return out, err
}

// Channel returns one channel the user can see.
func (r *Router) Channel(ctx context.Context, channel, user ID) (Channel, error) {
	guild, err := r.GuildOfChannel(ctx, channel)
	if err != nil {
		return Channel{}, err
	}
	return opChannel.run(ctx, r, guild, channelArgs{channel, user})
}

type channelArgs struct {
	Channel ID
	User    ID
}

var opChannel = defineOp("channel", func(r *Router, ctx context.Context, q channelArgs) (Channel, error) {
	return r.channel(ctx, q.Channel, q.User)
})

// channel is Channel on the guild's owner.
func (r *Router) channel(ctx context.Context, channel, user ID) (Channel, error) {
	gid, err := r.GuildOfChannel(ctx, channel)
	if err != nil {
		return Channel{}, err
	}
	var out Channel
	err = r.call(ctx, gid, func(a *actor) error {
		c := a.channels[channel]
		if c == nil {
			return ErrUnknownChannel
		}
		if a.permissions(user, c)&PermViewChannel == 0 {
			return ErrMissingAccess
		}
		out = ChannelObject(c)
		return nil
	})
	return out, err
}

// Members lists members by ascending user id after a given id (REST).
func (r *Router) Members(ctx context.Context, guild, user, after ID, limit int) ([]Member, error) {
	return opMembers.run(ctx, r, guild, membersArgs{guild, user, after, limit})
}

type membersArgs struct {
	Guild ID
	User  ID
	After ID
	Limit int
}

var opMembers = defineOp("members", func(r *Router, ctx context.Context, q membersArgs) ([]Member, error) {
	return r.members(ctx, q.Guild, q.User, q.After, q.Limit)
})

// members is Members on the guild's owner.
func (r *Router) members(ctx context.Context, guild, user, after ID, limit int) ([]Member, error) {
	var out []Member
	err := r.call(ctx, guild, func(a *actor) error {
		if a.members[user] == nil {
			return ErrUnknownGuild
		}
		ids := make([]ID, 0, len(a.members))
		for id := range a.members {
			if id > after {
				ids = append(ids, id)
			}
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		if len(ids) > limit {
			ids = ids[:limit]
		}
		out = make([]Member, 0, len(ids))
		for _, id := range ids {
			out = append(out, a.member(id))
		}
		return nil
	})
	return out, err
}

// UserGuilds lists the guilds a user belongs to.
func (r *Router) UserGuilds(ctx context.Context, user ID) ([]ID, error) {
	return r.store.UserGuilds(ctx, user)
}
