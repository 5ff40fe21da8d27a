package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/chorus-voice/chorus/signaling"
)

type restError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Errors  json.RawMessage `json:"errors"`
}

func TestGatewayEndpoints(t *testing.T) {
	f := start(t, nil)
	var gw struct {
		URL string `json:"url"`
	}
	if r := f.rest("GET", "/api/v10/gateway", "", nil, &gw); r.StatusCode != 200 || gw.URL != "ws://"+f.node.HTTPAddr {
		t.Fatalf("GET /gateway without auth = %d %+v", r.StatusCode, gw)
	}
	var bot struct {
		URL   string `json:"url"`
		Shard int    `json:"shards"`
		Limit struct {
			Total, Remaining, ResetAfter, MaxConcurrency int
		} `json:"session_start_limit"`
	}
	if r := f.rest("GET", "/api/v10/gateway/bot", f.demo.BotToken, nil, &bot); r.StatusCode != 200 || bot.URL == "" || bot.Shard != 1 {
		t.Fatalf("GET /gateway/bot = %d %+v", r.StatusCode, bot)
	}
	var raw map[string]any
	f.rest("GET", "/api/v10/gateway/bot", f.demo.BotToken, nil, &raw)
	for _, k := range []string{"total", "remaining", "reset_after", "max_concurrency"} {
		if _, ok := raw["session_start_limit"].(map[string]any)[k]; !ok {
			t.Fatalf("session_start_limit lacks %s", k)
		}
	}
	var app map[string]any
	f.rest("GET", "/api/v9/oauth2/applications/@me", f.demo.BotToken, nil, &app)
	for _, k := range []string{"id", "name", "description", "icon", "bot_public", "bot_require_code_grant", "owner", "verify_key"} {
		if _, ok := app[k]; !ok {
			t.Fatalf("application lacks %s (discord.py reads it, gateway.md §18.5)", k)
		}
	}
	var me map[string]any
	if f.rest("GET", "/api/v10/users/@me", f.demo.BotToken, nil, &me); me["id"] != f.demo.Bot.ID.String() || me["bot"] != true {
		t.Fatalf("users/@me = %v", me)
	}
	var e restError
	if r := f.rest("GET", "/api/v10/users/@me", "", nil, &e); r.StatusCode != 401 {
		t.Fatalf("no auth = %d", r.StatusCode)
	}
	if r := f.rest("GET", "/api/v10/users/@me", "garbage", nil, &e); r.StatusCode != 401 {
		t.Fatalf("bad auth = %d", r.StatusCode)
	}
	if r := f.rest("GET", "/api/v6/users/@me", f.demo.BotToken, nil, &e); r.StatusCode != 400 || e.Code != 50041 {
		t.Fatalf("v6 = %d %+v", r.StatusCode, e)
	}
	if r := f.rest("GET", "/api/v10/nothing/here", f.demo.BotToken, nil, &e); r.StatusCode != 404 {
		t.Fatalf("unknown route = %d", r.StatusCode)
	}
}

func TestMessageREST(t *testing.T) {
	f := start(t, nil)
	ch := f.demo.General.String()
	path := "/api/v10/channels/" + ch + "/messages"

	// enforce_nonce: the same nonce returns the same message and creates nothing.
	var m1, m2 messageEvent
	f.rest("POST", path, f.demo.BotToken, map[string]any{"content": "once", "nonce": "dup-1", "enforce_nonce": true}, &m1)
	f.rest("POST", path, f.demo.BotToken, map[string]any{"content": "twice", "nonce": "dup-1", "enforce_nonce": true}, &m2)
	if m1.ID == "" || m1.ID != m2.ID || m2.Content != "once" {
		t.Fatalf("enforce_nonce: %+v vs %+v", m1, m2)
	}
	// Without enforce_nonce the nonce is only echoed.
	f.rest("POST", path, f.demo.BotToken, map[string]any{"content": "again", "nonce": "dup-1"}, &m2)
	if m2.ID == m1.ID {
		t.Fatal("nonce without enforce_nonce deduplicated")
	}
	// Another author may reuse the nonce.
	f.rest("POST", path, f.demo.AliceToken, map[string]any{"content": "alice", "nonce": "dup-1", "enforce_nonce": true}, &m2)
	if m2.ID == m1.ID {
		t.Fatal("nonce deduplicated across authors")
	}

	var ids []string
	for i := 0; i < 10; i++ {
		var m messageEvent
		f.rest("POST", path, f.demo.BotToken, map[string]any{"content": fmt.Sprintf("p%d", i)}, &m)
		ids = append(ids, m.ID)
	}
	list := func(q string) []string {
		var ms []messageEvent
		if r := f.rest("GET", path+q, f.demo.BotToken, nil, &ms); r.StatusCode != 200 {
			t.Fatalf("list %s = %d", q, r.StatusCode)
		}
		var out []string
		for _, m := range ms {
			out = append(out, m.Content)
		}
		return out
	}
	if got := strings.Join(list("?limit=3"), ","); got != "p9,p8,p7" {
		t.Fatalf("newest = %s", got)
	}
	if got := strings.Join(list("?limit=2&before="+ids[5]), ","); got != "p4,p3" {
		t.Fatalf("before = %s", got)
	}
	if got := strings.Join(list("?limit=2&after="+ids[5]), ","); got != "p7,p6" {
		t.Fatalf("after = %s", got)
	}
	if got := strings.Join(list("?limit=3&around="+ids[5]), ","); got != "p6,p5,p4" {
		t.Fatalf("around = %s", got)
	}
	if got := list("?limit=2&after=0"); len(got) != 2 || got[1] != "once" {
		t.Fatalf("after=0 = %v", got)
	}

	// Edit and delete.
	var edited map[string]any
	f.rest("PATCH", path+"/"+ids[0], f.demo.BotToken, map[string]any{"content": "p0 edited"}, &edited)
	if edited["content"] != "p0 edited" || edited["edited_timestamp"] == nil {
		t.Fatalf("edit = %v", edited)
	}
	var e restError
	if r := f.rest("PATCH", path+"/"+ids[0], f.demo.AliceToken, map[string]any{"content": "x"}, &e); r.StatusCode != 403 || e.Code != 50005 {
		t.Fatalf("edit by another = %d %+v", r.StatusCode, e)
	}
	if r := f.rest("DELETE", path+"/"+ids[1], f.demo.BobToken, nil, &e); r.StatusCode != 403 {
		t.Fatalf("delete by another without MANAGE_MESSAGES = %d", r.StatusCode)
	}
	if r := f.rest("DELETE", path+"/"+ids[1], f.demo.BotToken, nil, nil); r.StatusCode != 204 {
		t.Fatalf("delete = %d", r.StatusCode)
	}
	if r := f.rest("GET", path+"/"+ids[1], f.demo.BotToken, nil, &e); r.StatusCode != 404 || e.Code != 10008 {
		t.Fatalf("get deleted = %d %+v", r.StatusCode, e)
	}
	var one messageEvent
	if f.rest("GET", path+"/"+ids[2], f.demo.BotToken, nil, &one); one.Content != "p2" {
		t.Fatalf("get one = %+v", one)
	}
	if r := f.rest("POST", "/api/v10/channels/"+ch+"/typing", f.demo.BotToken, nil, nil); r.StatusCode != 204 {
		t.Fatalf("typing = %d", r.StatusCode)
	}
}

func TestRESTErrors(t *testing.T) {
	f := start(t, func(c *signaling.Config) { c.RESTRequestsPerSecond = 5 })
	path := "/api/v10/channels/" + f.demo.General.String() + "/messages"
	tests := []struct {
		name   string
		method string
		path   string
		body   any
		status int
		code   int
	}{
		{"empty message", "POST", path, map[string]any{"content": ""}, 400, 50006},
		{"too long", "POST", path, map[string]any{"content": strings.Repeat("a", 2001)}, 400, 50035},
		{"bad nonce", "POST", path, map[string]any{"content": "x", "nonce": strings.Repeat("n", 26)}, 400, 50035},
		{"unknown channel", "POST", "/api/v10/channels/123/messages", map[string]any{"content": "x"}, 404, 10003},
		{"bad snowflake", "GET", "/api/v10/channels/abc/messages", nil, 400, 50035},
		{"bad limit", "GET", path + "?limit=101", nil, 400, 50035},
	}
	for _, tt := range tests {
		var e restError
		r := f.rest(tt.method, tt.path, f.demo.BobToken, tt.body, &e)
		if r.StatusCode != tt.status || e.Code != tt.code {
			t.Errorf("%s: %d %+v", tt.name, r.StatusCode, e)
		}
	}
	// Not JSON at all.
	req, _ := http.NewRequest("POST", f.base+path, strings.NewReader("content=hi"))
	req.Header.Set("Authorization", "Bot "+f.demo.AliceToken)
	resp, _ := http.DefaultClient.Do(req)
	if resp.StatusCode != 400 {
		t.Fatalf("no content type = %d", resp.StatusCode)
	}
	resp.Body.Close()

	// Rate limit: headers on every answer, then 429 with retry_after.
	var last *http.Response
	var body any
	for i := 0; i < 6; i++ {
		body = nil
		last = f.rest("GET", "/api/v10/channels/"+f.demo.Random.String()+"/messages", f.demo.AliceToken, nil, &body)
		if i < 5 && last.Header.Get("X-RateLimit-Remaining") != fmt.Sprint(4-i) {
			t.Fatalf("request %d remaining %q", i, last.Header.Get("X-RateLimit-Remaining"))
		}
	}
	if last.StatusCode != 429 || last.Header.Get("Retry-After") == "" || body.(map[string]any)["retry_after"] == nil {
		t.Fatalf("6th request = %d %v", last.StatusCode, body)
	}
	if f.node.Gateway().Metrics().RESTLimited.Load() != 1 {
		t.Fatal("429 not counted")
	}
}

// modsChannel creates a text channel only the Moderator role may see.
func (f *fixture) modsChannel(t *testing.T) (ch struct {
	ID string `json:"id"`
}) {
	t.Helper()
	f.admin(t, "POST", "/admin/v1/guilds/"+f.demo.GuildID.String()+"/channels", map[string]any{
		"name": "mods", "type": 0, "permission_overwrites": []map[string]any{
			{"id": f.demo.GuildID.String(), "type": 0, "allow": "0", "deny": "1024"},
			{"id": f.demo.Moderator.String(), "type": 0, "allow": "1024", "deny": "0"},
		}}, &ch)
	return ch
}

func TestPermissionsEnforced(t *testing.T) {
	f := start(t, nil)
	ch := f.modsChannel(t)
	// And a read-only one.
	var ro struct {
		ID string `json:"id"`
	}
	f.admin(t, "POST", "/admin/v1/guilds/"+f.demo.GuildID.String()+"/channels", map[string]any{
		"name": "announcements", "type": 0, "permission_overwrites": []map[string]any{
			{"id": f.demo.GuildID.String(), "type": 0, "allow": "0", "deny": "2048"},
		}}, &ro)

	bob := f.dial("v=10")
	bob.ready(f.demo.BobToken, allIntents)
	bob.waitFor("GUILD_CREATE")

	var e restError
	if r := f.rest("POST", "/api/v10/channels/"+ch.ID+"/messages", f.demo.BobToken, map[string]any{"content": "x"}, &e); r.StatusCode != 403 || e.Code != 50001 {
		t.Fatalf("hidden channel post = %d %+v", r.StatusCode, e)
	}
	if r := f.rest("GET", "/api/v10/channels/"+ch.ID+"/messages", f.demo.BobToken, nil, &e); r.StatusCode != 403 {
		t.Fatalf("hidden channel read = %d", r.StatusCode)
	}
	if r := f.rest("POST", "/api/v10/channels/"+ro.ID+"/messages", f.demo.BobToken, map[string]any{"content": "x"}, &e); r.StatusCode != 403 || e.Code != 50013 {
		t.Fatalf("read-only post = %d %+v", r.StatusCode, e)
	}
	// The bot (Moderator) posts in the hidden channel; bob must not get it,
	// but does get the next message in #general.
	if r := f.rest("POST", "/api/v10/channels/"+ch.ID+"/messages", f.demo.BotToken, map[string]any{"content": "secret"}, nil); r.StatusCode != 200 {
		t.Fatalf("moderator post = %d", r.StatusCode)
	}
	f.rest("POST", "/api/v10/channels/"+f.demo.General.String()+"/messages", f.demo.BotToken, map[string]any{"content": "public"}, nil)
	for {
		var m messageEvent
		json.Unmarshal(bob.waitFor("MESSAGE_CREATE").D, &m)
		if m.Content == "secret" {
			t.Fatal("bob received a message from a channel he cannot view")
		}
		if m.Content == "public" {
			break
		}
	}
	var chans []map[string]any
	f.rest("GET", "/api/v10/guilds/"+f.demo.GuildID.String()+"/channels", f.demo.BobToken, nil, &chans)
	for _, c := range chans {
		if c["id"] == ch.ID {
			t.Fatal("GET channels lists a hidden channel")
		}
	}
}

func (f *fixture) admin(t *testing.T, method, path string, body, out any) {
	t.Helper()
	f.adminCall(t, method, path, body, 0, out)
}

// adminCall performs an admin API call and fails the test unless it
// answers want (0: any 2xx); out, if not nil, receives the answer.
func (f *fixture) adminCall(t *testing.T, method, path string, body any, want int, out any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, f.base+path, strings.NewReader(string(b)))
	req.Header.Set("Authorization", "Bearer "+f.node.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if (want == 0 && resp.StatusCode >= 300) || (want != 0 && resp.StatusCode != want) {
		t.Fatalf("%s %s: %s %s, want %d", method, path, resp.Status, msg, want)
	}
	if out != nil {
		json.Unmarshal(msg, out)
	}
}

// /metrics speaks the Prometheus text format and counts what operators
// watch: sessions, deliveries, loaded guild actors.
func TestMetricsEndpoint(t *testing.T) {
	f := start(t, nil)
	// Load the demo guild's actor.
	if r := f.rest("GET", "/api/v10/guilds/"+f.demo.GuildID.String(), f.demo.BotToken, nil, nil); r.StatusCode != 200 {
		t.Fatalf("guild: %d", r.StatusCode)
	}
	resp, err := http.Get(f.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	values := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		var name string
		var v float64
		if n, _ := fmt.Sscanf(line, "%s %g", &name, &v); n == 2 {
			values[name] = v
		}
	}
	if values["chorus_guild_actors"] < 1 {
		t.Fatalf("chorus_guild_actors = %v in\n%s", values["chorus_guild_actors"], body)
	}
	for _, name := range []string{"chorus_guild_actors_retired_total", "chorus_gateway_sessions", "chorus_gateway_deliveries_total", "chorus_process_cpu_seconds_total"} {
		if _, ok := values[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
}

// GUILD_CREATE lists only the channels a member may view, like REST and
// CHANNEL_CREATE; messages paged from anchors near 2^64 never wrap around
// to the oldest.
func TestHiddenChannelsAndHugeAnchors(t *testing.T) {
	f := start(t, nil)
	ch := f.modsChannel(t)
	lists := func(token string) bool {
		c := f.dial("v=10")
		c.ready(token, allIntents)
		var gc struct {
			Channels []struct {
				ID string `json:"id"`
			} `json:"channels"`
		}
		json.Unmarshal(c.waitFor("GUILD_CREATE").D, &gc)
		if len(gc.Channels) == 0 {
			t.Fatal("no channels at all")
		}
		for _, c := range gc.Channels {
			if c.ID == ch.ID {
				return true
			}
		}
		return false
	}
	if lists(f.demo.BobToken) {
		t.Fatal("GUILD_CREATE lists a channel bob cannot view")
	}
	if !lists(f.demo.BotToken) {
		t.Fatal("GUILD_CREATE hides a channel the moderator can view")
	}

	path := "/api/v10/channels/" + f.demo.General.String() + "/messages"
	for i := range 3 {
		f.rest("POST", path, f.demo.AliceToken, map[string]any{"content": fmt.Sprint("m", i)}, nil)
	}
	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"after=18446744073709551615", []string{}},
		{"after=9223372036854775808", []string{}},
		{"before=18446744073709551615&limit=2", []string{"m2", "m1"}},
		{"around=18446744073709551615&limit=2", []string{"m2", "m1"}},
	} {
		var ms []messageEvent
		if r := f.rest("GET", path+"?"+tt.query, f.demo.AliceToken, nil, &ms); r.StatusCode != 200 {
			t.Fatalf("%s: %d", tt.query, r.StatusCode)
		}
		got := []string{}
		for _, m := range ms {
			got = append(got, m.Content)
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Fatalf("%s: %v, want %v", tt.query, got, tt.want)
		}
	}
}
