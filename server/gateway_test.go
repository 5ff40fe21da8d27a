package server_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/signaling"
)

type messageEvent struct {
	ID        string          `json:"id"`
	ChannelID string          `json:"channel_id"`
	GuildID   string          `json:"guild_id"`
	Content   string          `json:"content"`
	Nonce     json.RawMessage `json:"nonce"`
	Author    struct {
		ID string `json:"id"`
	} `json:"author"`
	Member *struct {
		Roles []string `json:"roles"`
	} `json:"member"`
}

func TestReadyGuildCreateAndMessages(t *testing.T) {
	f := start(t, nil)
	bot := f.dial("v=10&encoding=json")
	ready := bot.ready(f.demo.BotToken, allIntents)
	for _, k := range []string{"user", "guilds", "session_id", "resume_gateway_url", "application"} {
		if ready[k] == nil {
			t.Fatalf("READY lacks %s: %v", k, ready)
		}
	}
	if ready["resume_gateway_url"] != "ws://"+f.node.HTTPAddr {
		t.Fatalf("resume_gateway_url = %v", ready["resume_gateway_url"])
	}
	gc := bot.waitFor("GUILD_CREATE")
	var g struct {
		ID          string `json:"id"`
		MemberCount int    `json:"member_count"`
		Channels    []struct {
			ID   string `json:"id"`
			Type int    `json:"type"`
		} `json:"channels"`
		Members []struct {
			User struct {
				ID string `json:"id"`
			} `json:"user"`
		} `json:"members"`
		Roles       []any `json:"roles"`
		VoiceStates []any `json:"voice_states"`
	}
	if err := json.Unmarshal(gc.D, &g); err != nil {
		t.Fatal(err)
	}
	if g.ID != f.demo.GuildID.String() || len(g.Channels) != 3 || g.MemberCount != 3 || len(g.Members) != 3 || g.VoiceStates == nil {
		t.Fatalf("GUILD_CREATE = %s", gc.D)
	}
	hasBot := false
	for _, m := range g.Members {
		hasBot = hasBot || m.User.ID == f.demo.Bot.ID.String()
	}
	if !hasBot {
		t.Fatal("GUILD_CREATE members lack the bot (clients.md §4)")
	}

	alice := f.dial("v=10&encoding=json")
	alice.ready(f.demo.AliceToken, allIntents)
	alice.waitFor("GUILD_CREATE")

	// Bot posts through REST; alice receives it with author, content, nonce.
	var sent messageEvent
	resp := f.rest("POST", fmt.Sprintf("/api/v10/channels/%s/messages", f.demo.General), f.demo.BotToken,
		map[string]any{"content": "hello alice", "nonce": 12345}, &sent)
	if resp.StatusCode != 200 || sent.ID == "" {
		t.Fatalf("post = %d %+v", resp.StatusCode, sent)
	}
	var got messageEvent
	json.Unmarshal(alice.waitFor("MESSAGE_CREATE").D, &got)
	if got.ID != sent.ID || got.Content != "hello alice" || got.Author.ID != f.demo.Bot.ID.String() ||
		string(got.Nonce) != "12345" || got.GuildID != f.demo.GuildID.String() || got.Member == nil {
		t.Fatalf("alice got %+v", got)
	}
	// And the other way.
	f.rest("POST", fmt.Sprintf("/api/v10/channels/%s/messages", f.demo.General), f.demo.AliceToken,
		map[string]any{"content": "hi bot", "nonce": "n-1"}, &sent)
	got = bot.waitMessage("hi bot")
	if got.Content != "hi bot" || got.Author.ID != f.demo.Alice.ID.String() || string(got.Nonce) != `"n-1"` {
		t.Fatalf("bot got %+v", got)
	}
	// Sequence numbers increase by one per dispatch.
	if bot.lastS < 3 {
		t.Fatalf("bot seq %d", bot.lastS)
	}
}

// waitMessage skips events until the MESSAGE_CREATE with content arrives.
func (c *client) waitMessage(content string) messageEvent {
	c.t.Helper()
	for i := 0; i < 100; i++ {
		var m messageEvent
		json.Unmarshal(c.waitFor("MESSAGE_CREATE").D, &m)
		if m.Content == content {
			return m
		}
	}
	c.t.Fatalf("no message %q", content)
	return messageEvent{}
}

func TestHeartbeatAck(t *testing.T) {
	f := start(t, nil)
	c := f.dial("v=10&encoding=json")
	hello := c.next(5 * time.Second)
	var h struct {
		Interval int `json:"heartbeat_interval"`
	}
	json.Unmarshal(hello.D, &h)
	if hello.Op != 10 || h.Interval != 41250 {
		t.Fatalf("hello = %+v %s", hello, hello.D)
	}
	for _, d := range []string{`null`, `0`, `17`} { // discordgo sends 0 (gateway.md §6)
		c.send(`{"op":1,"d":` + d + `}`)
		if ack := c.next(5 * time.Second); ack.Op != 11 {
			t.Fatalf("heartbeat %s answered with op %d", d, ack.Op)
		}
	}
}

func TestZombieConnectionClosedResumable(t *testing.T) {
	f := start(t, func(c *signaling.Config) { c.HeartbeatInterval = 200 * time.Millisecond })
	c := f.dial("v=10")
	c.ready(f.demo.BotToken, allIntents)
	// No heartbeats: closed with a resumable code after 1.5 intervals.
	c.expectClose(4000)
	if n := f.node.Gateway().Metrics().Closes(4000); n != 1 {
		t.Fatalf("counted %d 4000 closes", n)
	}
}

func TestCompressedStreams(t *testing.T) {
	f := start(t, nil)
	for _, mode := range []string{"zlib-stream", "zstd-stream"} {
		t.Run(mode, func(t *testing.T) {
			c := f.dial("v=10&encoding=json&compress=" + mode)
			c.t = t
			c.ready(f.demo.AliceToken, allIntents)
			c.waitFor("GUILD_CREATE")
			for i := 0; i < 20; i++ {
				f.rest("POST", fmt.Sprintf("/api/v10/channels/%s/messages", f.demo.General), f.demo.BotToken,
					map[string]any{"content": fmt.Sprintf("compressed %s %d", mode, i)}, nil)
			}
			for i := 0; i < 20; i++ {
				var m messageEvent
				json.Unmarshal(c.waitFor("MESSAGE_CREATE").D, &m)
				if m.Content != fmt.Sprintf("compressed %s %d", mode, i) {
					t.Fatalf("message %d = %q", i, m.Content)
				}
			}
		})
	}
}

func TestResumeReplaysExactlyMissedEvents(t *testing.T) {
	f := start(t, nil)
	c := f.dial("v=10")
	ready := c.ready(f.demo.AliceToken, allIntents)
	c.waitFor("GUILD_CREATE")
	post := func(s string) {
		f.rest("POST", fmt.Sprintf("/api/v10/channels/%s/messages", f.demo.General), f.demo.BotToken, map[string]any{"content": s}, nil)
	}
	post("before")
	c.waitFor("MESSAGE_CREATE")
	seq := c.lastS
	c.ws.Close() // a drop with no close frame: the session stays resumable
	time.Sleep(100 * time.Millisecond)
	for i := 0; i < 5; i++ {
		post(fmt.Sprintf("missed %d", i))
	}
	r := f.dial("v=10")
	if r.next(5*time.Second).Op != 10 {
		t.Fatal("no hello")
	}
	r.send(map[string]any{"op": 6, "d": map[string]any{"token": f.demo.AliceToken, "session_id": ready["session_id"], "seq": seq}})
	for i := 0; i < 5; i++ {
		fr := r.next(5 * time.Second)
		var m messageEvent
		json.Unmarshal(fr.D, &m)
		if fr.name() != "MESSAGE_CREATE" || m.Content != fmt.Sprintf("missed %d", i) || *fr.S != seq+int64(i)+1 {
			t.Fatalf("replay %d: %s s=%v %q", i, fr.name(), *fr.S, m.Content)
		}
	}
	if fr := r.next(5 * time.Second); fr.name() != "RESUMED" {
		t.Fatalf("after replay: %s", fr.name())
	}
	post("after")
	var m messageEvent
	json.Unmarshal(r.waitFor("MESSAGE_CREATE").D, &m)
	if m.Content != "after" {
		t.Fatalf("live after resume: %q", m.Content)
	}
}

func TestResumeFailures(t *testing.T) {
	f := start(t, nil)
	c := f.dial("v=10")
	ready := c.ready(f.demo.AliceToken, allIntents)
	c.waitFor("GUILD_CREATE")
	c.ws.Close()

	// Unknown session: op 9 d=false.
	r := f.dial("v=10")
	r.next(5 * time.Second)
	r.send(map[string]any{"op": 6, "d": map[string]any{"token": f.demo.AliceToken, "session_id": "nope", "seq": 1}})
	if fr := r.next(5 * time.Second); fr.Op != 9 || string(fr.D) != "false" {
		t.Fatalf("unknown session answered %+v", fr)
	}
	// Someone else's session: op 9 too.
	r2 := f.dial("v=10")
	r2.next(5 * time.Second)
	r2.send(map[string]any{"op": 6, "d": map[string]any{"token": f.demo.BobToken, "session_id": ready["session_id"], "seq": 1}})
	if fr := r2.next(5 * time.Second); fr.Op != 9 {
		t.Fatalf("foreign session answered %+v", fr)
	}
	// A seq from the future: 4007.
	r3 := f.dial("v=10")
	r3.next(5 * time.Second)
	r3.send(map[string]any{"op": 6, "d": map[string]any{"token": f.demo.AliceToken, "session_id": ready["session_id"], "seq": 999}})
	r3.expectClose(4007)
}

func TestCleanCloseEndsSession(t *testing.T) {
	f := start(t, nil)
	c := f.dial("v=10")
	ready := c.ready(f.demo.AliceToken, allIntents)
	c.waitFor("GUILD_CREATE")
	c.ws.WriteControl(8, []byte{0x03, 0xE8}, time.Now().Add(time.Second)) // 1000
	time.Sleep(200 * time.Millisecond)
	r := f.dial("v=10")
	r.next(5 * time.Second)
	r.send(map[string]any{"op": 6, "d": map[string]any{"token": f.demo.AliceToken, "session_id": ready["session_id"], "seq": 1}})
	if fr := r.next(5 * time.Second); fr.Op != 9 {
		t.Fatalf("resume after a 1000 close answered %+v", fr)
	}
}

func TestShutdownSendsReconnect(t *testing.T) {
	f := start(t, nil)
	c := f.dial("v=10")
	c.ready(f.demo.AliceToken, allIntents)
	c.waitFor("GUILD_CREATE")
	go f.node.Close()
	for {
		fr := c.next(5 * time.Second)
		if fr.Op == 7 {
			break
		}
	}
	c.expectClose(4000)
}

func TestGatewayPathWithExtraSlash(t *testing.T) {
	// Some libraries append "/" to the gateway URL (clients.md §2).
	f := start(t, nil)
	for _, path := range []string{"/?v=10", "//?v=10"} {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+f.node.HTTPAddr+path, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		_, msg, err := ws.ReadMessage()
		if err != nil || !strings.Contains(string(msg), `"op":10`) {
			t.Fatalf("%s: first frame %s %v", path, msg, err)
		}
		ws.Close()
	}
}
