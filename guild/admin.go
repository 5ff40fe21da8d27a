package guild

import (
	"context"
	"errors"
	"time"

	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/store"
)

// The operations below are what an operator does before clients connect
// (the admin API). Each goes through the owning actor so that live sessions
// see the change as an event.

// CreateGuild creates a guild owned by owner, with its @everyone role (whose
// id is the guild's) and the owner as its first member.
func (r *Router) CreateGuild(ctx context.Context, name string, owner ID) (store.Guild, error) {
	if err := CheckLength("name", name, 1, MaxName); err != nil {
		return store.Guild{}, err
	}
	if _, err := r.store.GetUser(ctx, owner); err != nil {
		return store.Guild{}, ErrUnknownUser
	}
	g := store.Guild{ID: r.ids.Next(), Name: name, OwnerID: owner, CreatedAt: time.Now().UTC()}
	if err := r.store.PutRole(ctx, store.Role{ID: g.ID, GuildID: g.ID, Name: "@everyone", Permissions: PermDefaultEveryone}); err != nil {
		return store.Guild{}, err
	}
	if err := r.store.PutMember(ctx, store.Member{GuildID: g.ID, UserID: owner, JoinedAt: g.CreatedAt}); err != nil {
		return store.Guild{}, err
	}
	// The guild record last: a guild that exists is complete.
	if err := r.store.PutGuild(ctx, g); err != nil {
		return store.Guild{}, err
	}
	r.subscribeJoined(ctx, g.ID, owner)
	return g, nil
}

// CreateChannel adds a channel and announces CHANNEL_CREATE.
func (r *Router) CreateChannel(ctx context.Context, c store.Channel) (Channel, error) {
	return opCreateChannel.run(ctx, r, c.GuildID, c)
}

var opCreateChannel = defineOp("create_channel", (*Router).createChannel)

// createChannel is CreateChannel on the guild's owner.
func (r *Router) createChannel(ctx context.Context, c store.Channel) (Channel, error) {
	if err := CheckLength("name", c.Name, 1, MaxName); err != nil {
		return Channel{}, err
	}
	if err := CheckLength("topic", c.Topic, 0, MaxTopic); err != nil {
		return Channel{}, err
	}
	switch c.Type {
	case ChannelText, ChannelVoice, ChannelCategory:
	default:
		return Channel{}, InvalidForm("type", "BASE_TYPE_CHOICES", "Value must be one of {0, 2, 4}.")
	}
	var out Channel
	err := r.call(ctx, c.GuildID, func(a *actor) error {
		if c.ParentID != 0 && (a.channels[c.ParentID] == nil || a.channels[c.ParentID].Type != ChannelCategory) {
			return InvalidForm("parent_id", "CHANNEL_PARENT_INVALID", "Parent must be a category of this guild.")
		}
		c.ID = r.ids.Next()
		if err := r.store.PutChannel(a.fenced(ctx), c); err != nil {
			return err
		}
		a.channels[c.ID] = &c
		r.chanGuild.Store(c.ID, c.GuildID)
		a.invalidatePerms()
		out = ChannelObject(&c)
		ev := NewEvent(protocol.EventChannelCreate, out)
		a.fanout(ev, func(s *Sub) bool { return a.canSee(s, protocol.IntentGuilds, &c) })
		return nil
	})
	return out, err
}

// CreateRole adds a role and announces GUILD_ROLE_CREATE.
func (r *Router) CreateRole(ctx context.Context, role store.Role) (Role, error) {
	return opCreateRole.run(ctx, r, role.GuildID, role)
}

var opCreateRole = defineOp("create_role", (*Router).createRole)

// createRole is CreateRole on the guild's owner.
func (r *Router) createRole(ctx context.Context, role store.Role) (Role, error) {
	if err := CheckLength("name", role.Name, 1, MaxName); err != nil {
		return Role{}, err
	}
	var out Role
	err := r.call(ctx, role.GuildID, func(a *actor) error {
		role.ID = r.ids.Next()
		if role.Position == 0 {
			role.Position = len(a.roles)
		}
		if err := r.store.PutRole(a.fenced(ctx), role); err != nil {
			return err
		}
		a.roles[role.ID] = &role
		a.invalidatePerms()
		out = RoleObject(&role)
		ev := NewEvent(protocol.EventGuildRoleCreate, struct {
			GuildID ID   `json:"guild_id"`
			Role    Role `json:"role"`
		}{a.guild.ID, out})
		a.fanout(ev, func(s *Sub) bool { return s.Intents&protocol.IntentGuilds != 0 })
		return nil
	})
	return out, err
}

// PutMember adds a user to a guild or changes an existing membership
// (roles, nick, server mute and deafen). It announces GUILD_MEMBER_ADD or
// GUILD_MEMBER_UPDATE; a new member's live sessions then receive the guild.
func (r *Router) PutMember(ctx context.Context, m store.Member) (Member, bool, error) {
	out, err := opPutMember.run(ctx, r, m.GuildID, m)
	return out.Member, out.Added, err
}

type putMemberResult struct {
	Member Member
	Added  bool
}

var opPutMember = defineOp("put_member", func(r *Router, ctx context.Context, q store.Member) (putMemberResult, error) {
	var out putMemberResult
	var err error
	out.Member, out.Added, err = r.putMember(ctx, q)
	return out, err
})

// putMember is PutMember on the guild's owner.
func (r *Router) putMember(ctx context.Context, m store.Member) (Member, bool, error) {
	u, err := r.store.GetUser(ctx, m.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return Member{}, false, ErrUnknownUser
	} else if err != nil {
		return Member{}, false, err
	}
	var out Member
	var added bool
	err = r.call(ctx, m.GuildID, func(a *actor) error {
		for _, id := range m.Roles {
			if a.roles[id] == nil || id == a.guild.ID {
				return ErrUnknownRole
			}
		}
		old := a.members[m.UserID]
		added = old == nil
		if old != nil {
			m.JoinedAt = old.JoinedAt
		} else if m.JoinedAt.IsZero() {
			m.JoinedAt = time.Now().UTC()
		}
		if err := r.store.PutMember(a.fenced(ctx), m); err != nil {
			return err
		}
		a.members[m.UserID] = &m
		a.users[m.UserID] = &u
		a.invalidatePerms()
		out = a.member(m.UserID)
		name := protocol.EventGuildMemberUpdate
		if added {
			name = protocol.EventGuildMemberAdd
		}
		ev := NewEvent(name, struct {
			Member
			GuildID ID `json:"guild_id"`
		}{out, a.guild.ID})
		a.fanout(ev, func(s *Sub) bool { return s.Intents&protocol.IntentGuildMembers != 0 || s.User == m.UserID })
		a.reevaluateVoice(m.UserID) // new roles, mute or deafen apply at once
		return nil
	})
	if err == nil && added {
		r.subscribeJoined(ctx, m.GuildID, m.UserID)
	}
	return out, added, err
}

// RemoveMember removes a user from a guild: GUILD_MEMBER_REMOVE to the
// others and GUILD_DELETE to the user's own sessions, which stop receiving
// the guild's events.
func (r *Router) RemoveMember(ctx context.Context, guild, user ID) error {
	_, err := opRemoveMember.run(ctx, r, guild, removeMemberArgs{guild, user})
	return err
}

type removeMemberArgs struct {
	Guild ID
	User  ID
}

var opRemoveMember = defineOp("remove_member", func(r *Router, ctx context.Context, q removeMemberArgs) (none, error) {
	return none{}, r.removeMember(ctx, q.Guild, q.User)
})

// removeMember is RemoveMember on the guild's owner.
func (r *Router) removeMember(ctx context.Context, guild, user ID) error {
	return r.call(ctx, guild, func(a *actor) error {
		m := a.members[user]
		if m == nil {
			return ErrUnknownMember
		}
		if user == a.guild.OwnerID {
			return ErrMissingPermissions
		}
		if err := r.store.DeleteMember(a.fenced(ctx), guild, user); err != nil {
			return err
		}
		if a.voice[user] != nil {
			a.updateVoice(VoiceUpdate{User: user})
		}
		for id, s := range a.subs {
			if s.User == user {
				a.toSub(s, NewEvent(protocol.EventGuildDelete, struct {
					ID ID `json:"id"`
				}{guild}))
				a.unsubscribe(id)
			}
		}
		u := UserObject(*a.users[user])
		delete(a.members, user)
		delete(a.users, user)
		delete(a.presence, user)
		a.invalidatePerms()
		ev := NewEvent(protocol.EventGuildMemberRemove, struct {
			GuildID ID   `json:"guild_id"`
			User    User `json:"user"`
		}{guild, u})
		a.fanout(ev, func(s *Sub) bool { return s.Intents&protocol.IntentGuildMembers != 0 })
		return nil
	})
}
