package ring

import (
	"fmt"
	"strings"
)

var roleNames = [...]struct {
	role Role
	name string
}{{RoleGateway, "gateway"}, {RoleGuild, "guild"}, {RoleVoice, "voice"}}

// String names the roles, comma-separated ("gateway,guild,voice"), in the
// form ParseRoles reads.
func (r Role) String() string {
	var names []string
	for _, rn := range roleNames {
		if r&rn.role != 0 {
			names = append(names, rn.name)
		}
	}
	return strings.Join(names, ",")
}

// ParseRoles reads a comma-separated list of role names (gateway, guild,
// voice; "all" for every role). At least one role is required.
func ParseRoles(s string) (Role, error) {
	if strings.TrimSpace(s) == "" {
		return 0, fmt.Errorf("no roles given: name at least one of gateway, guild and voice")
	}
	var r Role
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "all" {
			r |= RoleAll
			continue
		}
		found := false
		for _, rn := range roleNames {
			if part == rn.name {
				r |= rn.role
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown role %q: the roles are gateway, guild and voice", part)
		}
	}
	return r, nil
}
