package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chorus-voice/chorus/server"
)

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "chorus.json")
	os.WriteFile(cfgPath, []byte(`{"http":"from-file:1","data":"file-data","demo":true}`), 0o600)
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.String("config", "", "")
	httpAddr := fs.String("http", "default:1", "")
	data := fs.String("data", "default-data", "")
	demo := fs.Bool("demo", false, "")
	node := fs.String("node-id", "default-node", "")
	t.Setenv("CHORUS_DATA", "env-data")
	t.Setenv("CHORUS_NODE_ID", "env-node")
	if err := fs.Parse([]string{"--http", "flag:1"}); err != nil {
		t.Fatal(err)
	}
	if err := applyConfig(fs, cfgPath); err != nil {
		t.Fatal(err)
	}
	if *httpAddr != "flag:1" || *data != "env-data" || *node != "env-node" || !*demo {
		t.Fatalf("http=%s data=%s node=%s demo=%v", *httpAddr, *data, *node, *demo)
	}

	os.WriteFile(cfgPath, []byte(`{"htp":"typo"}`), 0o600)
	if err := applyConfig(fs, cfgPath); err == nil || !strings.Contains(err.Error(), "htp") {
		t.Fatalf("unknown key: %v", err)
	}
	os.WriteFile(cfgPath, []byte(`{"demo":"maybe"}`), 0o600)
	fs2 := flag.NewFlagSet("t", flag.ContinueOnError)
	fs2.Bool("demo", false, "")
	if err := applyConfig(fs2, cfgPath); err == nil {
		t.Fatal("bad boolean accepted")
	}
	if err := applyConfig(fs2, filepath.Join(dir, "missing.json")); err == nil {
		t.Fatal("missing config file accepted")
	}
}

// capture runs fn with stdout redirected and returns what it printed.
func capture(t *testing.T, fn func() error) (string, error) {
	t.Helper()
	r, w, _ := os.Pipe()
	old := os.Stdout
	os.Stdout = w
	err := fn()
	w.Close()
	os.Stdout = old
	b, _ := io.ReadAll(r)
	return string(b), err
}

func TestAdminCommands(t *testing.T) {
	data := t.TempDir()
	n, err := server.Start(context.Background(), server.Config{DataDir: data, HTTPAddr: "127.0.0.1:0", HTTPSAddr: "off", VoiceAddr: "off"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	conn := []string{"--server", "http://" + n.HTTPAddr, "--data", data}
	run := func(args ...string) map[string]any {
		t.Helper()
		out, err := capture(t, func() error { return admin(append(append([]string{}, conn...), args...)) })
		if err != nil {
			t.Fatalf("admin %v: %v", args, err)
		}
		var v map[string]any
		json.Unmarshal([]byte(out), &v)
		return v
	}
	u := run("user", "create", "--name", "dave")
	if u["token"] == nil {
		t.Fatalf("user create printed %v", u)
	}
	run("user", "create", "--name", "davebot", "--bot")
	g := run("guild", "create", "--name", "Dave's", "--owner", "dave")
	gid := g["id"].(string)
	ch := run("channel", "create", "--guild", gid, "--name", "talk", "--type", "voice", "--user-limit", "5")
	if ch["type"].(float64) != 2 || ch["user_limit"].(float64) != 5 {
		t.Fatalf("channel %v", ch)
	}
	r := run("role", "create", "--guild", gid, "--name", "mods", "--permissions", "8192")
	run("member", "add", "--guild", gid, "--user", "davebot", "--roles", r["id"].(string))
	run("member", "remove", "--guild", gid, "--user", "davebot")
	tok, err := capture(t, func() error { return token(append(append([]string{}, conn...), "--user", "dave", "--revoke")) })
	if err != nil || strings.Count(tok, ".") != 2 {
		t.Fatalf("token: %q %v", tok, err)
	}
	me := func(token string) int {
		req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr+"/api/v10/users/@me", nil)
		req.Header.Set("Authorization", "Bot "+strings.TrimSpace(token))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := me(u["token"].(string)); code != 401 {
		t.Fatalf("revoked token answered %d", code)
	}
	if code := me(tok); code != 200 {
		t.Fatalf("new token answered %d", code)
	}
	// The cluster: this one node, on the ring (without the voice role: its
	// voice is off), owning the guild; its voice room has no node.
	cl := run("cluster", "--json", "--guild", gid, "--channel", ch["id"].(string))
	members, _ := cl["members"].([]any)
	if len(members) != 1 || cl["revision"].(float64) < 1 || cl["fenced"] != false {
		t.Fatalf("cluster: %v", cl)
	}
	m := members[0].(map[string]any)
	if m["id"] != "node-1" || m["roles"] != "gateway,guild" || m["on_ring"] != true || m["heartbeat_age_ms"].(float64) > 5000 {
		t.Fatalf("member: %v", m)
	}
	if cl["guild"].(map[string]any)["owner"] != "node-1" || cl["voice_room"].(map[string]any)["node"] != "" {
		t.Fatalf("placement: %v %v", cl["guild"], cl["voice_room"])
	}
	table, err := capture(t, func() error { return admin(append(append([]string{}, conn...), "cluster", "--guild", gid)) })
	if err != nil || !strings.Contains(table, "ring revision") || !strings.Contains(table, "node-1  gateway,guild  yes") ||
		!strings.Contains(table, "owned by node-1") {
		t.Fatalf("admin cluster printed %q, %v", table, err)
	}
	// Profiles of the running node, behind the admin token.
	adminTok, _ := os.ReadFile(filepath.Join(data, "admin.token"))
	for _, tc := range []struct {
		path, token string
		code        int
		want        string
	}{
		{"/admin/v1/debug/pprof/", "", 401, ""},
		{"/admin/v1/debug/pprof/", strings.TrimSpace(string(adminTok)), 200, "goroutine"},
		{"/admin/v1/debug/pprof/goroutine?debug=1", strings.TrimSpace(string(adminTok)), 200, "goroutine profile"},
	} {
		req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr+tc.path, nil)
		req.Header.Set("Authorization", "Bearer "+tc.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: %d %.80q", tc.path, resp.StatusCode, b)
		}
	}
	text := run("channel", "create", "--guild", gid, "--name", "chat")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cluster", "--channel", "1"}, "together with --guild"},
		{[]string{"cluster", "--guild", "x"}, "400"},
		{[]string{"cluster", "--guild", "12345"}, "Unknown Guild"},
		{[]string{"cluster", "--guild", gid, "--channel", text["id"].(string)}, "Unknown Channel"},
	} {
		_, err := capture(t, func() error { return admin(append(append([]string{}, conn...), tc.args...)) })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("admin %v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}

	// Bad input gets a clear error.
	for _, args := range [][]string{
		{"user", "create", "--name", "x"},                       // too short
		{"guild", "create", "--name", "g", "--owner", "nobody"}, // unknown user
		{"channel", "create", "--guild", gid, "--name", "c", "--type", "stage"},
		{"frobnicate", "now"},
	} {
		if _, err := capture(t, func() error { return admin(append(append([]string{}, conn...), args...)) }); err == nil {
			t.Errorf("admin %v succeeded", args)
		}
	}
	if _, err := capture(t, func() error {
		return admin([]string{"--server", "http://" + n.HTTPAddr, "--admin-token", "wrong", "user", "list"})
	}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong admin token: %v", err)
	}
}

func TestDemoIsIdempotent(t *testing.T) {
	data := t.TempDir()
	cfg := server.Config{DataDir: data, HTTPAddr: "127.0.0.1:0", HTTPSAddr: "off", VoiceAddr: "off"}
	n, err := server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	d1, err := n.SeedDemo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	n, err = server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	d2, err := n.SeedDemo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d1.GuildID != d2.GuildID || d1.General != d2.General || d1.Lounge != d2.Lounge || d1.Bot.ID != d2.Bot.ID || d1.Moderator != d2.Moderator {
		t.Fatalf("second seed made new records: %+v vs %+v", d1, d2)
	}
	gs, _ := n.Router().Store().ListGuilds(context.Background())
	if len(gs) != 1 {
		t.Fatalf("%d guilds after two seeds", len(gs))
	}
}

// Bad loadtest invocations fail at once with a message naming the fix,
// before any load is sent.
func TestLoadtestBadInvocations(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nonsense"}, "unknown scenario"},
		{[]string{"fault", "--admin-token", "x", "--command-log", filepath.Join(dir, "f.log")}, "--command is required"},
		{[]string{"chat", "--data", filepath.Join(dir, "missing")}, "no --admin-token"},
		{[]string{"gateway"}, "--token is required"},
		{[]string{"fault", "--under", "sleep"}, "runs under chat, gateway or voice"},
		{[]string{"fault", "--under", "voice", "--admin-token", "x", "--command-log", filepath.Join(dir, "v.log")}, "--command is required"},
		{[]string{"fault", "--under"}, "--under needs a scenario"},
		{[]string{"fault", "--under=gateway", "--token", "x"}, "--command is required"},
		{[]string{"fault", "--under", "gateway", "--token", "x", "--procs", "2", "--command", "true", "--command-log", filepath.Join(dir, "g.log")}, "no --procs"},
		{[]string{"voice", "--admin-token", "x", "--modes", "rot13"}, "not a voice encryption mode"},
		{[]string{"fault", "--admin-token", "x", "--command", "true", "--kill-node", "http://127.0.0.1:1"}, "one of --command, --kill-node"},
		{[]string{"fault", "--admin-token", "x", "--kill-node", "http://a", "--stop-node", "http://b"}, "one of --command, --kill-node"},
		{[]string{"fault", "--admin-token", "x", "--stop-node", "http://127.0.0.1:1", "--stop-for", "0s"}, "needs a time to stay stopped"},
		{[]string{"fault", "--under", "gateway", "--token", "x", "--kill-node", "http://127.0.0.1:1"}, "runs under chat"},
		{[]string{"fault", "--admin-token", "x", "--kill-node", "http://127.0.0.1:1", "--heal-command", "true"}, "--heal-command goes with --command"},
		{[]string{"fault", "--admin-token", "x", "--command", "true", "--heal-command", "true", "--heal-after", "0s", "--command-log", filepath.Join(dir, "h.log")}, "needs a time after the fault"},
	} {
		err := runLoadtest(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("loadtest %v: got %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// serve refuses bad cluster settings with a message naming the flag,
// before it creates or listens on anything.
func TestServeBadClusterFlags(t *testing.T) {
	dir := t.TempDir()
	base := []string{"--data", filepath.Join(dir, "d"), "--http", "127.0.0.1:0", "--https", "off", "--voice", "off"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--roles", "gateway,sfu"}, `--roles: unknown role "sfu"`},
		{[]string{"--roles", ""}, "--roles: no roles given"},
		{[]string{"--cluster-ttl", "2500ms"}, "whole seconds"},
		{[]string{"--cluster-fence-after", "3s"}, "--cluster-fence-after (3s) < --cluster-ttl (3s)"},
		{[]string{"--cluster-heartbeat", "0s"}, "0 < --cluster-heartbeat"},
		{[]string{"--advertise", "10.0.0.1:8080"}, "without a port"},
		{[]string{"--advertise", "0.0.0.0"}, "unspecified address"},
		{[]string{"--nats", "nats://127.0.0.1:4222"}, "--nats needs --postgres"},
	} {
		err := serve(append(append([]string{}, base...), tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("serve %v: got %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "d")); err == nil {
		t.Error("a refused start created the data directory")
	}
}
