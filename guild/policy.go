package guild

import (
	"context"
	"slices"

	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/store"
)

// Changes of policy (a member's roles, mute or deafen, a role's
// permissions, a channel's overwrites) take effect on people already in
// voice at once, not at their next join: every voice state the change can
// touch is evaluated again.

// reevaluateVoice applies the current permissions to the voice states of
// user, or of everyone when user is 0: without CONNECT (or VIEW_CHANNEL)
// the user is disconnected (the voice node closes the connection with
// 4014); otherwise the SFU gets the new mute, deafen and SPEAK at once and
// the guild sees the new voice state.
func (a *actor) reevaluateVoice(user ID) {
	ids := make([]ID, 0, len(a.voice))
	for id := range a.voice {
		if user == 0 || id == user {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids) // a stable order of events
	for _, id := range ids {
		v := a.voice[id]
		c := a.channels[v.ChannelID]
		if c == nil || a.permissions(id, c)&PermConnect == 0 {
			a.updateVoice(VoiceUpdate{User: id})
			continue
		}
		a.fanoutVoice(v)
		a.notifyVoice(v)
	}
}

// UpdateRole changes a role's name or permissions (nil: unchanged),
// announces GUILD_ROLE_UPDATE and applies the new permissions to everyone
// in voice.
func (r *Router) UpdateRole(ctx context.Context, guild, role ID, name *string, perms *uint64) (Role, error) {
	return opUpdateRole.run(ctx, r, guild, updateRoleArgs{guild, role, name, perms})
}

type updateRoleArgs struct {
	Guild ID
	Role  ID
	Name  *string
	Perms *uint64
}

var opUpdateRole = defineOp("update_role", func(r *Router, ctx context.Context, q updateRoleArgs) (Role, error) {
	return r.updateRole(ctx, q.Guild, q.Role, q.Name, q.Perms)
})

// updateRole is UpdateRole on the guild's owner.
func (r *Router) updateRole(ctx context.Context, guild, role ID, name *string, perms *uint64) (Role, error) {
	if name != nil {
		if err := CheckLength("name", *name, 1, MaxName); err != nil {
			return Role{}, err
		}
	}
	var out Role
	err := r.call(ctx, guild, func(a *actor) error {
		old := a.roles[role]
		if old == nil {
			return ErrUnknownRole
		}
		next := *old
		if name != nil && role != guild { // @everyone keeps its name
			next.Name = *name
		}
		if perms != nil {
			next.Permissions = *perms
		}
		if err := r.store.PutRole(a.fenced(ctx), next); err != nil {
			return err
		}
		*old = next
		a.invalidatePerms()
		out = RoleObject(old)
		a.fanout(NewEvent(protocol.EventGuildRoleUpdate, struct {
			GuildID ID   `json:"guild_id"`
			Role    Role `json:"role"`
		}{guild, out}), func(s *Sub) bool { return s.Intents&protocol.IntentGuilds != 0 })
		a.reevaluateVoice(0)
		return nil
	})
	return out, err
}

// SetOverwrite adds or replaces a channel's permission overwrite for a role
// (type 0) or member (type 1), announces CHANNEL_UPDATE to those who can
// see the channel afterwards and applies it to everyone in voice.
func (r *Router) SetOverwrite(ctx context.Context, channel ID, o store.Overwrite) (Channel, error) {
	guild, err := r.GuildOfChannel(ctx, channel)
	if err != nil {
		return Channel{}, err
	}
	return opSetOverwrite.run(ctx, r, guild, setOverwriteArgs{channel, o})
}

type setOverwriteArgs struct {
	Channel ID
	O       store.Overwrite
}

var opSetOverwrite = defineOp("set_overwrite", func(r *Router, ctx context.Context, q setOverwriteArgs) (Channel, error) {
	return r.setOverwrite(ctx, q.Channel, q.O)
})

// setOverwrite is SetOverwrite on the guild's owner.
func (r *Router) setOverwrite(ctx context.Context, channel ID, o store.Overwrite) (Channel, error) {
	var out Channel
	err := r.callChannel(ctx, channel, func(a *actor) error {
		c := a.channels[channel]
		if c == nil {
			return ErrUnknownChannel
		}
		if (o.Type == 0 && a.roles[o.ID] == nil) || (o.Type == 1 && a.members[o.ID] == nil) {
			return InvalidForm("id", "BASE_TYPE_INVALID", "Not a role or member of this guild.")
		}
		next := *c
		next.Overwrites = slices.DeleteFunc(slices.Clone(c.Overwrites), func(w store.Overwrite) bool { return w.ID == o.ID })
		next.Overwrites = append(next.Overwrites, o)
		if err := r.store.PutChannel(a.fenced(ctx), next); err != nil {
			return err
		}
		*c = next
		a.invalidatePerms()
		out = ChannelObject(c)
		a.fanout(NewEvent(protocol.EventChannelUpdate, out), func(s *Sub) bool { return a.canSee(s, protocol.IntentGuilds, c) })
		a.reevaluateVoice(0)
		return nil
	})
	return out, err
}
