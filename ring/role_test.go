package ring

import "testing"

func TestParseRoles(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Role
		err  bool
	}{
		{"gateway,guild,voice", RoleAll, false},
		{"all", RoleAll, false},
		{"guild", RoleGuild, false},
		{" voice , gateway ", RoleVoice | RoleGateway, false},
		{"guild,guild", RoleGuild, false},
		{"", 0, true},
		{"gateway,", 0, true},
		{"sfu", 0, true},
		{"Guild", 0, true},
	} {
		got, err := ParseRoles(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseRoles(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
		if err == nil {
			if back, _ := ParseRoles(got.String()); back != got {
				t.Errorf("%v does not read back (%q)", got, got.String())
			}
		}
	}
}
