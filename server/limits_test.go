package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// Nicks follow Discord's rules: 1–32 characters (null or "" removes one),
// CHANGE_NICKNAME for one's own (PATCH members/@me or members/{own id}),
// MANAGE_NICKNAMES for anyone else's. A body over the JSON limit is 413;
// nothing oversized is stored or fanned out, and a bystander sees each
// accepted change.
func TestNickLimitsAndPermissions(t *testing.T) {
	f := start(t, nil)
	bystander := f.dial("v=10")
	bystander.ready(f.demo.BobToken, allIntents)
	bystander.waitFor("GUILD_CREATE")
	me := fmt.Sprintf("/api/v10/guilds/%s/members/@me", f.demo.GuildID)
	bob := fmt.Sprintf("/api/v10/guilds/%s/members/%s", f.demo.GuildID, f.demo.Bob.ID)
	alice := fmt.Sprintf("/api/v10/guilds/%s/members/%s", f.demo.GuildID, f.demo.Alice.ID)

	tests := []struct {
		name   string
		path   string
		token  string
		body   any
		status int
		nick   *string // the nick the member then has, when the call succeeds
	}{
		{"own nick through @me", me, f.demo.AliceToken, map[string]any{"nick": "Ally"}, 200, ptr("Ally")},
		{"32 characters", me, f.demo.AliceToken, map[string]any{"nick": strings.Repeat("é", 32)}, 200, ptr(strings.Repeat("é", 32))},
		{"33 characters", me, f.demo.AliceToken, map[string]any{"nick": strings.Repeat("a", 33)}, 400, nil},
		{"not a string", me, f.demo.AliceToken, map[string]any{"nick": 7}, 400, nil},
		{"own nick by id", alice, f.demo.AliceToken, map[string]any{"nick": "A"}, 200, ptr("A")},
		{"null removes it", me, f.demo.AliceToken, map[string]any{"nick": nil}, 200, nil},
		{"someone else's without MANAGE_NICKNAMES", alice, f.demo.BobToken, map[string]any{"nick": "Al"}, 403, nil},
		{"own nick with CHANGE_NICKNAME only", me, f.demo.BobToken, map[string]any{"nick": "B"}, 200, ptr("B")},
		{"someone else's as a moderator", bob, f.demo.BotToken, map[string]any{"nick": "Bobby"}, 200, ptr("Bobby")},
		{"mute through @me is ignored", me, f.demo.AliceToken, map[string]any{"mute": true, "nick": "Al"}, 200, ptr("Al")},
		{"8 MiB nick", me, f.demo.AliceToken, map[string]any{"nick": strings.Repeat("a", 8<<20)}, 413, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m struct {
				Nick *string `json:"nick"`
				Mute bool    `json:"mute"`
				Code int     `json:"code"`
			}
			resp := f.rest("PATCH", tt.path, tt.token, tt.body, &m)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (code %d)", resp.StatusCode, tt.status, m.Code)
			}
			if tt.status != 200 {
				return
			}
			if (m.Nick == nil) != (tt.nick == nil) || (m.Nick != nil && *m.Nick != *tt.nick) || m.Mute {
				t.Fatalf("member %+v, want nick %v", m, tt.nick)
			}
			// Bob has GUILD_MEMBERS: the update reaches him.
			for {
				fr := bystander.waitFor("GUILD_MEMBER_UPDATE")
				var u struct {
					Nick *string `json:"nick"`
				}
				json.Unmarshal(fr.D, &u)
				if (u.Nick == nil) == (tt.nick == nil) && (u.Nick == nil || *u.Nick == *tt.nick) {
					break
				}
			}
		})
	}
}

func ptr(s string) *string { return &s }

// A body that declares more than the JSON limit is refused with 413 before
// it is read; so is one that turns out larger than it declared.
func TestOversizedBodies(t *testing.T) {
	f := start(t, nil)
	url := fmt.Sprintf("%s/api/v10/channels/%s/messages", f.base, f.demo.General)
	for _, chunked := range []bool{false, true} {
		body := []byte(`{"content":"` + strings.Repeat("a", 2<<20) + `"}`)
		var rd any = bytes.NewReader(body)
		if chunked {
			rd = struct{ *bytes.Reader }{bytes.NewReader(body)} // no length: sent chunked
		}
		req, _ := http.NewRequest("POST", url, rd.(interface{ Read([]byte) (int, error) }))
		req.Header.Set("Authorization", "Bot "+f.demo.AliceToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("chunked %v: status %d", chunked, resp.StatusCode)
		}
	}
}

// Users made through the admin API have bounded names too.
func TestAdminUserLimits(t *testing.T) {
	f := start(t, nil)
	for _, tt := range []struct {
		body map[string]any
		want int
	}{
		{map[string]any{"username": "x"}, 400},
		{map[string]any{"username": strings.Repeat("u", 33)}, 400},
		{map[string]any{"username": "gina", "global_name": strings.Repeat("G", 33)}, 400},
		{map[string]any{"username": "gina", "global_name": strings.Repeat("é", 32)}, 201},
	} {
		f.adminCall(t, "POST", "/admin/v1/users", tt.body, tt.want, nil)
	}
}

// A bot can be granted some privileged intents and not others.
func TestBotPrivilegedIntentsPerIntent(t *testing.T) {
	f := start(t, nil)
	var bot struct {
		Token string `json:"token"`
	}
	f.adminCall(t, "POST", "/admin/v1/users", map[string]any{"username": "picky", "bot": true,
		"privileged_intents": []string{"guild_members"}}, 201, &bot)
	f.adminCall(t, "POST", "/admin/v1/users", map[string]any{"username": "odd", "bot": true,
		"privileged_intents": []string{"mind_reading"}}, 400, nil)
	ok := f.dial("v=10")
	ok.ready(bot.Token, 1|1<<1)                      // GUILDS | GUILD_MEMBERS
	for _, intents := range []int{1 << 8, 1 << 15} { // GUILD_PRESENCES, MESSAGE_CONTENT
		c := f.dial("v=10")
		c.send(identify(bot.Token, intents))
		c.expectClose(4014)
	}
}
