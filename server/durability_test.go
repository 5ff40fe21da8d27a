package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/server"
	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
	"github.com/chorus-voice/chorus/store/pgtest"
)

// A message is durable before the REST call answers: it is there after the
// node stops and starts again on the same data directory.
func TestMessagesSurviveRestart(t *testing.T) {
	cfg := testConfig(t)
	survivesRestart(t, cfg, cfg)
}

// With PostgreSQL as the store, the state lives there: a node started on
// an empty data directory against the same database finds every message,
// and the signing key, so the old tokens still work.
func TestMessagesSurviveRestartOnPostgres(t *testing.T) {
	dsn := pgtest.Start(t).NewDatabase(t)
	survivesRestart(t,
		server.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", HTTPSAddr: "off", VoiceAddr: "off", Postgres: dsn},
		server.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", HTTPSAddr: "off", VoiceAddr: "off", Postgres: dsn})
}

func survivesRestart(t *testing.T, cfg, again server.Config) {
	n, err := server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := n.SeedDemo(context.Background())
	f := &fixture{t: t, node: n, demo: d, base: "http://" + n.HTTPAddr}
	var ids []string
	for i := 0; i < 20; i++ {
		var m messageEvent
		f.rest("POST", fmt.Sprintf("/api/v10/channels/%s/messages", d.General), d.BotToken, map[string]any{"content": fmt.Sprint(i)}, &m)
		ids = append(ids, m.ID)
	}
	n.Close()

	n, err = server.Start(context.Background(), again)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	d2, _ := n.SeedDemo(context.Background())
	f = &fixture{t: t, node: n, demo: d2, base: "http://" + n.HTTPAddr}
	var ms []messageEvent
	f.rest("GET", fmt.Sprintf("/api/v10/channels/%s/messages?limit=100", d.General), d2.BotToken, nil, &ms)
	if len(ms) != 20 || ms[0].ID != ids[19] || ms[19].ID != ids[0] {
		t.Fatalf("after restart: %d messages", len(ms))
	}
	// The signing key survived too: the old token still works.
	if r := f.rest("GET", "/api/v10/users/@me", d.BotToken, nil, nil); r.StatusCode != 200 {
		t.Fatalf("old token after restart: %d", r.StatusCode)
	}
}

// wss:// and https:// work with the development CA and nothing else
// configured (clients.md §1).
func TestTLSWithDevelopmentCA(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTPSAddr, cfg.VoiceAddr = "127.0.0.1:0", "127.0.0.1:0"
	n, err := server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	d, _ := n.SeedDemo(context.Background())
	pem, err := os.ReadFile(n.CAPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("CA file holds no certificate")
	}
	_, port, _ := net.SplitHostPort(n.HTTPSAddr)
	for _, host := range []string{"127.0.0.1", "localhost"} {
		dialer := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 5 * time.Second}
		ws, _, err := dialer.Dial("wss://"+host+":"+port+"/?v=10", nil)
		if err != nil {
			t.Fatalf("wss://%s: %v", host, err)
		}
		c := &client{t: t, ws: ws, frames: make(chan frame, 64), closed: make(chan error, 1)}
		go c.read("")
		c.ready(d.AliceToken, allIntents)
		c.waitFor("GUILD_CREATE")
		ws.Close()
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("GET", "https://localhost:"+port+"/api/v10/users/@me", nil)
	req.Header.Set("Authorization", "Bot "+d.BotToken)
	resp, err := hc.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("https REST: %v %v", resp, err)
	}
	resp.Body.Close()
	// Without the CA the handshake fails: the certificate is not a public one.
	if _, _, err := websocket.DefaultDialer.Dial("wss://127.0.0.1:"+port+"/?v=10", nil); err == nil {
		t.Fatal("TLS handshake succeeded without trusting the development CA")
	}
}

// While the store is down, clients are told to come back, not that their
// token is bad: REST answers 503 (not 401) and an identify is closed with
// 4000 (reconnect) instead of 4004 (which makes bots give up). Once the
// store is back, the same node serves again with no restart.
func TestStoreOutageIsNotAnAuthFailure(t *testing.T) {
	pg := pgtest.Start(t)
	f := startConfig(t, server.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", HTTPSAddr: "off", VoiceAddr: "off", Postgres: pg.NewDatabase(t)})
	n, d := f.node, f.demo
	if r := f.rest("GET", "/api/v10/users/@me", d.BotToken, nil, nil); r.StatusCode != 200 {
		t.Fatalf("before the outage: %d", r.StatusCode)
	}

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if r := f.rest("GET", "/api/v10/users/@me", d.BotToken, nil, nil); r.StatusCode != 503 {
		t.Fatalf("token check without a store: %d, want 503", r.StatusCode)
	}
	before := n.Gateway().Metrics().Closes(4000)
	c := f.dial("v=10")
	c.send(identify(d.BotToken, allIntents))
	c.expectClose(4000)
	if n.Gateway().Metrics().Closes(4000) != before+1 || n.Gateway().Metrics().Closes(4004) != 0 {
		t.Fatal("the outage's close was not counted as 4000")
	}
	// A bad token is still a bad token, store or not.
	if r := f.rest("GET", "/api/v10/users/@me", "not-a-token", nil, nil); r.StatusCode != 401 {
		t.Fatalf("bad token during the outage: %d", r.StatusCode)
	}

	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := f.rest("POST", fmt.Sprintf("/api/v10/channels/%s/messages", d.General), d.BotToken, map[string]any{"content": "back"}, nil)
		if r.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the store came back: %d", r.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c = f.dial("v=10")
	c.ready(d.BotToken, allIntents)
}

// A guild that cannot be loaded when a session identifies is sent as
// unavailable (GUILD_DELETE, unavailable) and retried in the background;
// once it loads, the session gets its GUILD_CREATE without reconnecting.
func TestUnavailableGuildComesBack(t *testing.T) {
	f := start(t, nil)
	ctx := context.Background()
	st := f.node.Router().Store()
	gid := snowflake.NewGenerator(900).Next()
	// Bob is a member of a guild whose record is missing, so loading it fails.
	if err := st.PutMember(ctx, store.Member{GuildID: gid, UserID: f.demo.Bob.ID, JoinedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	c := f.dial("v=10")
	c.ready(f.demo.BobToken, allIntents)
	guildEvent := func(name string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			fr := c.next(time.Until(deadline))
			var d struct {
				ID          string `json:"id"`
				Unavailable bool   `json:"unavailable"`
			}
			json.Unmarshal(fr.D, &d)
			if fr.name() == name && d.ID == gid.String() && (name != "GUILD_DELETE" || d.Unavailable) {
				return
			}
		}
		t.Fatalf("no %s for guild %s", name, gid)
	}
	guildEvent("GUILD_DELETE")
	if err := st.PutGuild(ctx, store.Guild{ID: gid, Name: "late", OwnerID: f.demo.Bob.ID, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	guildEvent("GUILD_CREATE")
}
