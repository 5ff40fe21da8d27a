package guild

import (
	"testing"

	"github.com/chorus-voice/chorus/store"
)

func TestPermissions(t *testing.T) {
	g := store.Guild{ID: 1, OwnerID: 99}
	roles := map[store.ID]*store.Role{
		1: {ID: 1, Permissions: PermViewChannel | PermSendMessages},
		2: {ID: 2, Permissions: PermManageMessages},
		3: {ID: 3, Permissions: PermAdministrator},
		4: {ID: 4},
	}
	plain := &store.Member{UserID: 10}
	mod := &store.Member{UserID: 11, Roles: []store.ID{2}}
	admin := &store.Member{UserID: 12, Roles: []store.ID{3}}
	muted := &store.Member{UserID: 13, Roles: []store.ID{4}}
	owner := &store.Member{UserID: 99}

	open := &store.Channel{ID: 5}
	readOnly := &store.Channel{ID: 6, Overwrites: []store.Overwrite{{ID: 1, Type: 0, Deny: PermSendMessages}}}
	hidden := &store.Channel{ID: 7, Overwrites: []store.Overwrite{
		{ID: 1, Type: 0, Deny: PermViewChannel},
		{ID: 2, Type: 0, Allow: PermViewChannel},
	}}
	memberOverride := &store.Channel{ID: 8, Overwrites: []store.Overwrite{
		{ID: 4, Type: 0, Deny: PermSendMessages},
		{ID: 13, Type: 1, Allow: PermSendMessages},
	}}
	roleDenied := &store.Channel{ID: 9, Overwrites: []store.Overwrite{{ID: 4, Type: 0, Deny: PermSendMessages}}}

	tests := []struct {
		name string
		m    *store.Member
		c    *store.Channel
		want uint64 // bits that must be set
		not  uint64 // bits that must be clear
	}{
		{"plain open", plain, open, PermViewChannel | PermSendMessages, PermManageMessages},
		{"plain read-only", plain, readOnly, PermViewChannel, PermSendMessages},
		{"plain hidden", plain, hidden, 0, PermViewChannel | PermSendMessages},
		{"mod hidden via role allow", mod, hidden, PermViewChannel | PermManageMessages, 0},
		{"admin ignores overwrites", admin, hidden, PermViewChannel | PermSendMessages | PermAdministrator, 0},
		{"owner has all", owner, hidden, PermAll, 0},
		{"member overwrite beats role deny", muted, memberOverride, PermSendMessages, 0},
		{"role deny", muted, roleDenied, PermViewChannel, PermSendMessages},
	}
	for _, tt := range tests {
		got := ChannelPermissions(BasePermissions(g, roles, tt.m), g, tt.c, tt.m)
		if got&tt.want != tt.want || got&tt.not != 0 {
			t.Errorf("%s: perms %b want %b not %b", tt.name, got, tt.want, tt.not)
		}
	}
}

// FuzzChannelPermissions checks the invariants of the permission algorithm
// for arbitrary roles and overwrites.
func FuzzChannelPermissions(f *testing.F) {
	f.Add(PermDefaultEveryone, uint64(0), uint64(0), uint64(PermViewChannel), uint64(0), uint64(PermSendMessages), false)
	f.Add(uint64(0), PermAdministrator, uint64(PermViewChannel), uint64(0), uint64(0), uint64(0), false)
	f.Add(PermViewChannel, uint64(0), uint64(0), uint64(0), uint64(PermViewChannel), uint64(0), true)
	f.Fuzz(func(t *testing.T, everyone, role, evDeny, roleAllow, memberDeny, memberAllow uint64, owner bool) {
		g := store.Guild{ID: 1, OwnerID: 50}
		roles := map[store.ID]*store.Role{1: {ID: 1, Permissions: everyone}, 2: {ID: 2, Permissions: role}}
		m := &store.Member{UserID: 10, Roles: []store.ID{2}}
		if owner {
			m.UserID = 50
		}
		c := &store.Channel{Overwrites: []store.Overwrite{
			{ID: 1, Type: 0, Deny: evDeny},
			{ID: 2, Type: 0, Allow: roleAllow},
			{ID: 10, Type: 1, Allow: memberAllow, Deny: memberDeny},
		}}
		base := BasePermissions(g, roles, m)
		p := ChannelPermissions(base, g, c, m)
		switch {
		case owner || (everyone|role)&PermAdministrator != 0:
			if p != PermAll {
				t.Fatalf("owner/admin got %x", p)
			}
		case p != 0 && p&PermViewChannel == 0:
			t.Fatalf("permissions %x without VIEW_CHANNEL", p)
		case p&PermViewChannel != 0 && p&memberAllow != memberAllow:
			t.Fatalf("member allow %x not applied: %x", memberAllow, p)
		case p&memberDeny&^memberAllow != 0:
			t.Fatalf("member deny %x not applied: %x", memberDeny, p)
		}
	})
}
