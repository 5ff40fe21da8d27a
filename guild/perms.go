package guild

import "github.com/chorus-voice/chorus/store"

// Permission bits (Discord's permission flags).
const (
	PermCreateInvite       uint64 = 1 << 0
	PermKickMembers        uint64 = 1 << 1
	PermBanMembers         uint64 = 1 << 2
	PermAdministrator      uint64 = 1 << 3
	PermManageChannels     uint64 = 1 << 4
	PermManageGuild        uint64 = 1 << 5
	PermAddReactions       uint64 = 1 << 6
	PermViewChannel        uint64 = 1 << 10
	PermSendMessages       uint64 = 1 << 11
	PermSendTTSMessages    uint64 = 1 << 12
	PermManageMessages     uint64 = 1 << 13
	PermReadMessageHistory uint64 = 1 << 16
	PermMentionEveryone    uint64 = 1 << 17
	PermConnect            uint64 = 1 << 20
	PermSpeak              uint64 = 1 << 21
	PermMuteMembers        uint64 = 1 << 22
	PermDeafenMembers      uint64 = 1 << 23
	PermMoveMembers        uint64 = 1 << 24
	PermChangeNickname     uint64 = 1 << 26
	PermManageNicknames    uint64 = 1 << 27
	PermManageRoles        uint64 = 1 << 28

	// PermAll is every bit, what owners and administrators have.
	PermAll uint64 = 1<<63 - 1 | 1<<63

	// PermDefaultEveryone is what a new guild's @everyone role allows.
	PermDefaultEveryone = PermCreateInvite | PermAddReactions | PermViewChannel |
		PermSendMessages | PermReadMessageHistory | PermConnect | PermSpeak | PermChangeNickname
)

// BasePermissions computes a member's guild-level permissions: the owner has
// everything; otherwise @everyone's bits or'ed with every role's; an
// administrator has everything.
func BasePermissions(g store.Guild, roles map[store.ID]*store.Role, m *store.Member) uint64 {
	if m.UserID == g.OwnerID {
		return PermAll
	}
	var p uint64
	if everyone := roles[g.ID]; everyone != nil {
		p = everyone.Permissions
	}
	for _, id := range m.Roles {
		if r := roles[id]; r != nil {
			p |= r.Permissions
		}
	}
	if p&PermAdministrator != 0 {
		return PermAll
	}
	return p
}

// ChannelPermissions applies a channel's overwrites to base permissions in
// Discord's order: @everyone overwrite, then all of the member's role
// overwrites together (denies before allows), then the member's own.
func ChannelPermissions(base uint64, g store.Guild, c *store.Channel, m *store.Member) uint64 {
	if base&PermAdministrator != 0 || base == PermAll {
		return PermAll
	}
	p := base
	for _, o := range c.Overwrites {
		if o.Type == 0 && o.ID == g.ID {
			p = p&^o.Deny | o.Allow
		}
	}
	var allow, deny uint64
	for _, o := range c.Overwrites {
		if o.Type != 0 || o.ID == g.ID {
			continue
		}
		for _, r := range m.Roles {
			if r == o.ID {
				allow |= o.Allow
				deny |= o.Deny
			}
		}
	}
	p = p&^deny | allow
	for _, o := range c.Overwrites {
		if o.Type == 1 && o.ID == m.UserID {
			p = p&^o.Deny | o.Allow
		}
	}
	// Without VIEW_CHANNEL nothing else in the channel applies.
	if p&PermViewChannel == 0 {
		return 0
	}
	return p
}
