package server_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/signaling"
)

// Each bad input gets its documented close code (gateway.md §11), is
// counted, and a bystander session keeps receiving every message.
func TestBadInputCloseCodes(t *testing.T) {
	f := start(t, func(c *signaling.Config) { c.PayloadsPerMinute = 10 })
	bystander := f.dial("v=10")
	bystander.ready(f.demo.BobToken, allIntents)
	bystander.waitFor("GUILD_CREATE")

	noFlags := f.createBot(t, "plainbot", false)

	tests := []struct {
		name   string
		query  string
		frames []string
		code   int
	}{
		{"malformed json", "v=10", []string{`{"op":2,"d":`}, 4002},
		{"not an object", "v=10", []string{`[1,2]`}, 4001},
		{"unknown opcode", "v=10", []string{`{"op":99,"d":null}`}, 4001},
		{"server-only opcode", "v=10", []string{`{"op":10,"d":null}`}, 4001},
		{"oversized payload", "v=10", []string{`{"op":1,"d":null,"x":"` + strings.Repeat("a", 5000) + `"}`}, 4002},
		{"presence before identify", "v=10", []string{`{"op":3,"d":{"status":"online","activities":[]}}`}, 4003},
		{"request members before identify", "v=10", []string{`{"op":8,"d":{"guild_id":"1","query":"","limit":0}}`}, 4003},
		{"invalid token", "v=10", []string{identifyJSON("not-a-token", allIntents)}, 4004},
		{"forged token", "v=10", []string{identifyJSON(f.demo.BotToken[:len(f.demo.BotToken)-3]+"abc", allIntents)}, 4004},
		{"second identify", "v=10", []string{identifyJSON(f.demo.AliceToken, allIntents), identifyJSON(f.demo.AliceToken, allIntents)}, 4005},
		{"undefined intent bits", "v=10", []string{identifyJSON(f.demo.AliceToken, 1<<30)}, 4013},
		{"missing intents", "v=10", []string{`{"op":2,"d":{"token":"` + f.demo.AliceToken + `"}}`}, 4013},
		{"privileged intent not granted", "v=10", []string{identifyJSON(noFlags, 1<<15|1)}, 4014},
		{"invalid shard", "v=10", []string{`{"op":2,"d":{"token":"` + f.demo.AliceToken + `","intents":1,"shard":[3,2]}}`}, 4010},
		{"large_threshold out of range", "v=10", []string{`{"op":2,"d":{"token":"` + f.demo.AliceToken + `","intents":1,"large_threshold":5}}`}, 4001},
		{"activity name over 128 characters", "v=10", []string{identifyJSON(f.demo.AliceToken, allIntents),
			`{"op":3,"d":{"status":"online","activities":[{"name":"` + strings.Repeat("a", 129) + `","type":0}]}}`}, 4001},
		{"bad heartbeat", "v=10", []string{`{"op":1,"d":"soon"}`}, 4001},
		{"rate limit", "v=10", strings.Split(strings.Repeat(`{"op":1,"d":null}|`, 12), "|")[:12], 4008},
		{"api version 6", "v=6", nil, 4012},
		{"etf encoding", "v=10&encoding=etf", nil, 4002},
		{"unknown compression", "v=10&compress=gzip", nil, 4002},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.node.Gateway().Metrics().Closes(protocol.CloseCode(tt.code))
			c := f.dial(tt.query)
			c.t = t
			for _, fr := range tt.frames {
				// The server may close before the last frame; a refused
				// write is then expected.
				if c.ws.WriteMessage(websocket.TextMessage, []byte(fr)) != nil {
					break
				}
			}
			c.expectClose(tt.code)
			if after := f.node.Gateway().Metrics().Closes(protocol.CloseCode(tt.code)); after != before+1 {
				t.Fatalf("close %d counted %d times", tt.code, after-before)
			}
		})
	}
	// Nothing above disturbed the bystander.
	f.rest("POST", fmt.Sprintf("/api/v10/channels/%s/messages", f.demo.General), f.demo.AliceToken,
		map[string]any{"content": "still here"}, nil)
	if m := bystander.waitMessage("still here"); m.Author.ID != f.demo.Alice.ID.String() {
		t.Fatalf("bystander got %+v", m)
	}
}

func identifyJSON(token string, intents int) string {
	return fmt.Sprintf(`{"op":2,"d":{"token":%q,"intents":%d,"properties":{"os":"linux"}}}`, token, intents)
}

// An Identify sent before the client read Hello is fine: the server sent
// Hello first on its side, so there is no "before Hello" it could see.
func TestIdentifyWithoutWaitingForHello(t *testing.T) {
	f := start(t, nil)
	c := f.dial("v=10")
	c.send(identify(f.demo.AliceToken, allIntents))
	if fr := c.next(5 * time.Second); fr.Op != 10 {
		t.Fatalf("first frame op %d", fr.Op)
	}
	c.waitFor("READY")
}

// A client that never reads is closed as a slow consumer with a resumable
// code; its memory stays bounded, and a reading client misses nothing.
func TestSlowConsumer(t *testing.T) {
	f := start(t, func(c *signaling.Config) {
		c.MaxLog = 64
		c.WriteTimeout = 300 * time.Millisecond
		c.RESTRequestsPerSecond = 100000
	})
	reader := f.dial("v=10")
	reader.ready(f.demo.BobToken, allIntents)
	reader.waitFor("GUILD_CREATE")

	// A client that identifies and then never reads, with a tiny receive buffer.
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	}}
	slow, _, err := d.Dial("ws://"+f.node.HTTPAddr+"/?v=10", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.WriteMessage(websocket.TextMessage, []byte(identifyJSON(f.demo.AliceToken, allIntents)))

	// The publisher waits for the reader to have each message before it
	// sends the next (lockstep), so the reader is never behind, however
	// slowly this machine runs it, while the slow client's backlog grows
	// until its socket buffers are full and the server cuts it off.
	big := strings.Repeat("x", 1900)
	const n = 5000
	cut := -1
	for i := 0; i < n && (cut < 0 || i < cut+20); i++ {
		f.rest("POST", fmt.Sprintf("/api/v10/channels/%s/messages", f.demo.General), f.demo.BotToken,
			map[string]any{"content": fmt.Sprintf("%d %s", i, big)}, nil)
		m := reader.waitFor("MESSAGE_CREATE")
		if want := fmt.Sprintf(`"content":"%d `, i); !strings.Contains(string(m.D), want) {
			t.Fatalf("reader message %d out of order or lost", i)
		}
		if cut < 0 && f.node.Gateway().Metrics().SlowConsumers.Load() > 0 {
			cut = i // the reader must go on receiving after the cut
		}
	}
	if cut < 0 {
		t.Fatalf("slow consumer not detected after %d messages", n)
	}
}

// A session with more guilds than one shard may carry is refused with 4011;
// the same identify with shards that split the guilds works.
func TestShardingRequired(t *testing.T) {
	f := start(t, func(c *signaling.Config) { c.MaxGuildsPerSession = 1 })
	var g struct {
		ID string `json:"id"`
	}
	f.admin(t, "POST", "/admin/v1/guilds", map[string]any{"name": "second", "owner_id": f.demo.Alice.ID.String()}, &g)
	c := f.dial("v=10")
	c.send(identify(f.demo.AliceToken, allIntents))
	c.expectClose(4011)
	// Find a shard count that puts the two guilds on different shards.
	for n := 2; n < 64; n++ {
		a := (uint64(f.demo.GuildID) >> 22) % uint64(n)
		var gid uint64
		fmt.Sscan(g.ID, &gid)
		if b := (gid >> 22) % uint64(n); a != b {
			s := f.dial("v=10")
			s.send(fmt.Sprintf(`{"op":2,"d":{"token":%q,"intents":1,"shard":[%d,%d]}}`, f.demo.AliceToken, a, n))
			ready := s.waitFor("READY")
			if !strings.Contains(string(ready.D), f.demo.GuildID.String()) || strings.Contains(string(ready.D), g.ID) {
				t.Fatalf("shard %d/%d READY guilds wrong: %s", a, n, ready.D)
			}
			return
		}
	}
	t.Fatal("no shard count separates the guilds")
}

// Close frames and text a client may not send (RFC 6455 §5.5.1, §7.4, §8.1)
// get 1002 or 1007 and are counted; a valid close is answered with 1000,
// never an echo. The close frame with status 0 once crashed the node: the
// bystander and the node must outlive every case.
func TestCloseFramesAndUTF8(t *testing.T) {
	f := start(t, nil)
	bystander := f.dial("v=10")
	bystander.ready(f.demo.BobToken, allIntents)
	bystander.waitFor("GUILD_CREATE")

	body := func(code uint16, reason string) []byte { return append([]byte{byte(code >> 8), byte(code)}, reason...) }
	tests := []struct {
		name  string
		ctl   []byte // a close frame body, or nil for a text message
		text  []byte
		reply int
	}{
		{"status 0", []byte{0, 0}, nil, 1002},
		{"status 1005", body(1005, ""), nil, 1002},
		{"status 2000", body(2000, ""), nil, 1002},
		{"one byte", []byte{3}, nil, 1002},
		{"reason not UTF-8", body(1000, "\xfe"), nil, 1007},
		{"text not UTF-8", nil, []byte("{\"op\":1,\"d\":\"\xff\"}"), 1007},
		{"client says 4004", body(4004, "fake"), nil, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.node.Gateway().Metrics().Closes(protocol.CloseCode(tt.reply))
			c := f.dial("v=10")
			c.t = t
			if tt.ctl != nil {
				if err := c.ws.WriteControl(websocket.CloseMessage, tt.ctl, time.Now().Add(time.Second)); err != nil {
					t.Fatal(err)
				}
			} else if err := c.ws.WriteMessage(websocket.TextMessage, tt.text); err != nil {
				t.Fatal(err)
			}
			c.expectClose(tt.reply)
			if tt.reply != 1000 {
				if after := f.node.Gateway().Metrics().Closes(protocol.CloseCode(tt.reply)); after != before+1 {
					t.Fatalf("close %d counted %d times", tt.reply, after-before)
				}
			}
		})
	}
	f.rest("POST", fmt.Sprintf("/api/v10/channels/%s/messages", f.demo.General), f.demo.AliceToken,
		map[string]any{"content": "still here"}, nil)
	bystander.waitMessage("still here")
}
