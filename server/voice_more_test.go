package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/server"
	"github.com/chorus-voice/chorus/sfu"
	"github.com/chorus-voice/chorus/signaling"
	"github.com/chorus-voice/chorus/transport"
)

// Every encryption mode, with our own client on both ends: each receiver
// gets the sender's frames sealed in its own mode.
func TestVoiceEveryMode(t *testing.T) {
	f, pool := voiceFixture(t)
	aliceGW := f.dial("v=10")
	aliceGW.ready(f.demo.AliceToken, allIntents)
	aliceGW.waitFor("GUILD_CREATE")
	bobGW := f.dial("v=10")
	bobGW.ready(f.demo.BobToken, allIntents)
	bobGW.waitFor("GUILD_CREATE")
	for i, mode := range crypto.Offered {
		other := crypto.Offered[(i+3)%len(crypto.Offered)]
		t.Run(mode.String()+"_to_"+other.String(), func(t *testing.T) {
			alice := joinVoice(t, f, pool, aliceGW, f.demo.Alice.ID.String(), mode)
			bob := joinVoice(t, f, pool, bobGW, f.demo.Bob.ID.String(), other)
			for j := 0; j < 5; j++ {
				payload := []byte(fmt.Sprintf("%s %d", mode, j))
				alice.sendAudio(payload)
				got := bob.receive(5 * time.Second)
				if got == nil {
					t.Fatalf("frame %d lost", j)
				}
				h, _ := transport.ParseRTP(got)
				if string(got[h.Len:]) != string(payload) {
					t.Fatalf("frame %d = %q", j, got[h.Len:])
				}
			}
			// Leave, so the next round joins afresh.
			for _, gw := range []*client{aliceGW, bobGW} {
				gw.send(map[string]any{"op": 4, "d": map[string]any{"guild_id": f.demo.GuildID.String(), "channel_id": nil}})
			}
		})
	}
}

func dialVoice(t *testing.T, pool *x509.CertPool, endpoint, query string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	ws, _, err := d.Dial("wss://"+endpoint+"/"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	return ws
}

// readOp reads frames until one with op arrives; it returns d.
func readOp(t *testing.T, ws *websocket.Conn, op int) json.RawMessage {
	t.Helper()
	for {
		var m struct {
			Op int             `json:"op"`
			D  json.RawMessage `json:"d"`
		}
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatalf("waiting for op %d: %v", op, err)
		}
		if m.Op == op {
			return m.D
		}
	}
}

// closeCode reads until the server closes and returns its code.
func closeCode(t *testing.T, ws *websocket.Conn) int {
	t.Helper()
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			t.Fatalf("connection ended without a close frame: %v", err)
		}
	}
}

func TestVoiceCloseCodes(t *testing.T) {
	f, pool := voiceFixture(t)
	gw := f.dial("v=10")
	gw.ready(f.demo.AliceToken, allIntents)
	gw.waitFor("GUILD_CREATE")
	vs := joinLounge(t, f, gw, f.demo.Alice.ID.String())
	guild, alice := f.demo.GuildID.String(), f.demo.Alice.ID.String()
	identify := func(server, user, session, token string) map[string]any {
		return map[string]any{"op": 0, "d": map[string]any{"server_id": server, "user_id": user, "session_id": session, "token": token}}
	}
	good := identify(guild, alice, vs.SessionID, vs.Token)
	selectProto := func(proto, mode string) map[string]any {
		return map[string]any{"op": 1, "d": map[string]any{"protocol": proto, "data": map[string]any{"address": "127.0.0.1", "port": 1, "mode": mode}}}
	}
	tests := []struct {
		name   string
		frames []any
		code   int
	}{
		{"select before identify", []any{selectProto("udp", "aead_aes256_gcm_rtpsize")}, 4003},
		{"speaking before identify", []any{map[string]any{"op": 5, "d": map[string]any{"speaking": 1}}}, 4003},
		{"malformed json", []any{"{"}, 4002},
		{"identify missing token", []any{map[string]any{"op": 0, "d": map[string]any{"server_id": guild}}}, 4002},
		{"forged token", []any{identify(guild, alice, vs.SessionID, vs.Token[:len(vs.Token)-2]+"xx")}, 4004},
		{"someone else's token", []any{identify(guild, f.demo.Bob.ID.String(), vs.SessionID, vs.Token)}, 4004},
		{"gateway token instead of voice token", []any{identify(guild, alice, vs.SessionID, f.demo.AliceToken)}, 4004},
		{"expired token", []any{identify(guild, alice, vs.SessionID,
			f.node.Voice().IssueTokenUntil(f.demo.Alice.ID, time.Now().Add(-time.Second)))}, 4004},
		{"wrong session", []any{identify(guild, alice, "not-the-session", vs.Token)}, 4006},
		{"unknown server", []any{identify("123456", alice, vs.SessionID, vs.Token)}, 4011},
		{"second identify", []any{good, good}, 4005},
		{"unknown protocol", []any{good, selectProto("carrier-pigeon", "aead_aes256_gcm_rtpsize")}, 4012},
		{"unknown mode", []any{good, selectProto("udp", "rot13")}, 4016},
		{"text not UTF-8", []any{"{\"op\":3,\"d\":\"\xff\"}"}, 1007},
		{"speaking flood", append([]any{good}, speakingFlood(130)...), 4021},
		{"resume", []any{map[string]any{"op": 7, "d": map[string]any{"server_id": guild, "session_id": vs.SessionID, "token": vs.Token, "seq_ack": 1}}}, 4006},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.node.Voice().Closes(protocol.CloseCode(tt.code))
			ws := dialVoice(t, pool, vs.Endpoint, "?v=8")
			readOp(t, ws, 8)
			for _, fr := range tt.frames {
				if s, ok := fr.(string); ok {
					ws.WriteMessage(websocket.TextMessage, []byte(s))
				} else {
					ws.WriteJSON(fr)
				}
			}
			if code := closeCode(t, ws); code != tt.code {
				t.Fatalf("closed with %d, want %d", code, tt.code)
			}
			if f.node.Voice().Closes(protocol.CloseCode(tt.code)) != before+1 {
				t.Fatalf("close %d not counted", tt.code)
			}
		})
	}
	// A client's close is answered with 1000, not an echo of its code.
	ws := dialVoice(t, pool, vs.Endpoint, "?v=8")
	readOp(t, ws, 8)
	ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4004, "mine"), time.Now().Add(time.Second))
	if code := closeCode(t, ws); code != 1000 {
		t.Fatalf("the client's close was answered with %d", code)
	}
	// Unknown opcodes (Discord's own clients send several) and binary
	// frames are ignored, not fatal (voice.md §4.2, §7).
	ws = dialVoice(t, pool, vs.Endpoint, "?v=8")
	readOp(t, ws, 8)
	ws.WriteJSON(map[string]any{"op": 12, "d": map[string]any{"audio_ssrc": 1}})
	ws.WriteMessage(websocket.BinaryMessage, []byte{26, 1, 2, 3})
	ws.WriteJSON(map[string]any{"op": 3, "d": map[string]any{"t": 42, "seq_ack": -1}})
	var ack struct {
		T int64 `json:"t"`
	}
	json.Unmarshal(readOp(t, ws, 6), &ack)
	if ack.T != 42 {
		t.Fatalf("v8 heartbeat ACK t = %d", ack.T)
	}
}

// speakingFlood is n speaking toggles: over the payload limit (120 a
// minute) each would be relayed to the whole room.
func speakingFlood(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = map[string]any{"op": 5, "d": map[string]any{"speaking": i % 2, "delay": 0}}
	}
	return out
}

// The legacy forms of voice.md §2: no version, integer heartbeats echoed as
// integers, boolean speaking without ssrc, heartbeat_interval in Ready.
func TestVoiceLegacyForms(t *testing.T) {
	f, pool := voiceFixture(t)
	gw := f.dial("v=9")
	gw.ready(f.demo.AliceToken, allIntents)
	gw.waitFor("GUILD_CREATE")
	vs := joinLounge(t, f, gw, f.demo.Alice.ID.String())
	bobGW := f.dial("v=10")
	bobGW.ready(f.demo.BobToken, allIntents)
	bobGW.waitFor("GUILD_CREATE")
	bob := joinVoice(t, f, pool, bobGW, f.demo.Bob.ID.String(), crypto.AES256GCMRTPSize)

	ws := dialVoice(t, pool, vs.Endpoint, "") // discordgo: no ?v=
	var hello struct {
		Interval int  `json:"heartbeat_interval"`
		V        *int `json:"v"`
	}
	json.Unmarshal(readOp(t, ws, 8), &hello)
	if hello.Interval == 0 || hello.V != nil {
		t.Fatalf("legacy hello %+v", hello)
	}
	ws.WriteJSON(map[string]any{"op": 0, "d": map[string]any{"server_id": f.demo.GuildID.String(),
		"user_id": f.demo.Alice.ID.String(), "session_id": vs.SessionID, "token": vs.Token}})
	var ready struct {
		SSRC     uint32 `json:"ssrc"`
		Interval int    `json:"heartbeat_interval"`
	}
	json.Unmarshal(readOp(t, ws, 2), &ready)
	if ready.Interval != hello.Interval {
		t.Fatalf("Ready heartbeat_interval %d (discordgo reads only this one)", ready.Interval)
	}
	ws.WriteJSON(map[string]any{"op": 3, "d": 1501184119561})
	if d := readOp(t, ws, 6); string(d) != "1501184119561" {
		t.Fatalf("legacy heartbeat ACK d = %s", d)
	}
	ws.WriteJSON(map[string]any{"op": 5, "d": map[string]any{"speaking": true, "delay": 0}})
	for {
		var sp struct {
			UserID   string `json:"user_id"`
			SSRC     uint32 `json:"ssrc"`
			Speaking int    `json:"speaking"`
		}
		json.Unmarshal(bob.wait(5), &sp)
		if sp.UserID == f.demo.Alice.ID.String() && sp.Speaking == 1 {
			if sp.SSRC != ready.SSRC {
				t.Fatalf("speaking ssrc %d, Ready gave %d", sp.SSRC, ready.SSRC)
			}
			break
		}
	}
}

// A v8 voice session survives a dropped websocket: Resume gets op 9 and
// every sequenced message sent meanwhile, and media never stopped.
func TestVoiceResume(t *testing.T) {
	f, pool := voiceFixture(t)
	aliceGW := f.dial("v=10")
	aliceGW.ready(f.demo.AliceToken, allIntents)
	aliceGW.waitFor("GUILD_CREATE")
	vs := joinLounge(t, f, aliceGW, f.demo.Alice.ID.String())
	ws := dialVoice(t, pool, vs.Endpoint, "?v=8")
	readOp(t, ws, 8)
	ws.WriteJSON(map[string]any{"op": 0, "d": map[string]any{"server_id": f.demo.GuildID.String(),
		"user_id": f.demo.Alice.ID.String(), "session_id": vs.SessionID, "token": vs.Token}})
	readOp(t, ws, 2)
	// Ready goes out before the server has sent alice the room's roster;
	// her next payload is handled only once Identify is done (one reader
	// per connection), so the ACK says bob cannot join mid-Identify. (If
	// he did, both Identifies would tell alice about him: at least once,
	// as designed, but this test counts the messages.)
	ws.WriteJSON(map[string]any{"op": 3, "d": map[string]any{"t": 1, "seq_ack": -1}})
	readOp(t, ws, 6)

	bobGW := f.dial("v=10")
	bobGW.ready(f.demo.BobToken, allIntents)
	bobGW.waitFor("GUILD_CREATE")
	bob := joinVoice(t, f, pool, bobGW, f.demo.Bob.ID.String(), crypto.AES256GCMRTPSize)
	// Alice sees bob connect (op 11, sequenced) and his SSRC (op 5).
	var lastSeq int
	for seen := 0; seen < 2; {
		var m struct {
			Op  int `json:"op"`
			Seq int `json:"seq"`
		}
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		if m.Op == 11 || m.Op == 5 {
			seen++
			lastSeq = m.Seq
		}
	}
	ws.UnderlyingConn().Close() // dropped, no close frame
	time.Sleep(100 * time.Millisecond)
	bob.ws.WriteJSON(map[string]any{"op": 5, "d": map[string]any{"speaking": 1, "ssrc": bob.ssrc}})
	time.Sleep(100 * time.Millisecond)

	bad := dialVoice(t, pool, vs.Endpoint, "?v=8")
	readOp(t, bad, 8)
	bad.WriteJSON(map[string]any{"op": 7, "d": map[string]any{"server_id": f.demo.GuildID.String(),
		"session_id": vs.SessionID, "token": "wrong", "seq_ack": lastSeq}})
	if code := closeCode(t, bad); code != 4004 {
		t.Fatalf("resume with a wrong token closed with %d", code)
	}

	ws2 := dialVoice(t, pool, vs.Endpoint, "?v=8")
	readOp(t, ws2, 8)
	ws2.WriteJSON(map[string]any{"op": 7, "d": map[string]any{"server_id": f.demo.GuildID.String(),
		"session_id": vs.SessionID, "token": vs.Token, "seq_ack": lastSeq}})
	var first struct {
		Op int `json:"op"`
	}
	ws2.ReadJSON(&first)
	if first.Op != 9 {
		t.Fatalf("resume answered op %d", first.Op)
	}
	var missed struct {
		Op  int `json:"op"`
		Seq int `json:"seq"`
		D   struct {
			UserID   string `json:"user_id"`
			Speaking int    `json:"speaking"`
		} `json:"d"`
	}
	ws2.ReadJSON(&missed)
	if missed.Op != 5 || missed.Seq != lastSeq+1 || missed.D.UserID != f.demo.Bob.ID.String() || missed.D.Speaking != 1 {
		t.Fatalf("replayed %+v", missed)
	}
	// The session is alive: heartbeats are answered on the new websocket.
	ws2.WriteJSON(map[string]any{"op": 3, "d": map[string]any{"t": 7, "seq_ack": missed.Seq}})
	readOp(t, ws2, 6)
}

// CONNECT and the user limit gate joins (no events at all when refused, as
// on Discord); SPEAK gates forwarding; a move closes the old voice
// connection with 4014 and hands out a new VOICE_SERVER_UPDATE.
func TestVoicePermissionsLimitsAndMoves(t *testing.T) {
	f, pool := voiceFixture(t)
	guild := f.demo.GuildID.String()
	var small, noConnect, muteRoom struct {
		ID string `json:"id"`
	}
	f.admin(t, "POST", "/admin/v1/guilds/"+guild+"/channels", map[string]any{"name": "duo", "type": 2, "user_limit": 1}, &small)
	f.admin(t, "POST", "/admin/v1/guilds/"+guild+"/channels", map[string]any{"name": "closed", "type": 2,
		"permission_overwrites": []map[string]any{{"id": guild, "type": 0, "allow": "0", "deny": "1048576"}}}, &noConnect) // CONNECT
	f.admin(t, "POST", "/admin/v1/guilds/"+guild+"/channels", map[string]any{"name": "listen-only", "type": 2,
		"permission_overwrites": []map[string]any{{"id": guild, "type": 0, "allow": "0", "deny": "2097152"}}}, &muteRoom) // SPEAK

	bobGW := f.dial("v=10")
	bobGW.ready(f.demo.BobToken, allIntents)
	bobGW.waitFor("GUILD_CREATE")
	join := func(gw *client, channel string) {
		gw.send(map[string]any{"op": 4, "d": map[string]any{"guild_id": guild, "channel_id": channel}})
	}
	expectNothing := func(gw *client, what string) {
		select {
		case fr := <-gw.frames:
			if fr.name() == "VOICE_STATE_UPDATE" || fr.name() == "VOICE_SERVER_UPDATE" {
				t.Fatalf("%s: got %s", what, fr.name())
			}
		case <-time.After(300 * time.Millisecond):
		}
	}
	join(bobGW, noConnect.ID)
	expectNothing(bobGW, "join without CONNECT")

	// The bot fills the one-seat channel; bob (no MOVE_MEMBERS) cannot follow.
	botGW := f.dial("v=10")
	botGW.ready(f.demo.BotToken, allIntents)
	botGW.waitFor("GUILD_CREATE")
	join(botGW, small.ID)
	botGW.waitFor("VOICE_SERVER_UPDATE")
	for len(bobGW.frames) > 0 {
		<-bobGW.frames
	}
	join(bobGW, small.ID)
	deadline := time.After(500 * time.Millisecond)
	for done := false; !done; {
		select {
		case fr := <-bobGW.frames:
			if fr.name() == "VOICE_SERVER_UPDATE" {
				t.Fatal("joined a full channel")
			}
		case <-deadline:
			done = true
		}
	}

	// Bob in the listen-only channel: connected, but his audio is not forwarded.
	alice := f.dial("v=10")
	alice.ready(f.demo.AliceToken, allIntents)
	alice.waitFor("GUILD_CREATE")
	listenerVS := func(gw *client, user string, channel string) voiceServer {
		join(gw, channel)
		var vs voiceServer
		for vs.Token == "" {
			fr := gw.next(5 * time.Second)
			switch fr.name() {
			case "VOICE_STATE_UPDATE":
				var v struct {
					UserID    string `json:"user_id"`
					SessionID string `json:"session_id"`
				}
				json.Unmarshal(fr.D, &v)
				if v.UserID == user {
					vs.SessionID = v.SessionID
				}
			case "VOICE_SERVER_UPDATE":
				var v struct{ Token, Endpoint string }
				json.Unmarshal(fr.D, &v)
				vs.Token, vs.Endpoint = v.Token, v.Endpoint
			}
		}
		return vs
	}
	first := listenerVS(bobGW, f.demo.Bob.ID.String(), muteRoom.ID)
	ws := dialVoice(t, pool, first.Endpoint, "?v=8")
	readOp(t, ws, 8)
	ws.WriteJSON(map[string]any{"op": 0, "d": map[string]any{"server_id": guild, "user_id": f.demo.Bob.ID.String(),
		"session_id": first.SessionID, "token": first.Token}})
	readOp(t, ws, 2)
	p := f.node.SFU().Participant(uint64(f.demo.GuildID), uint64(f.demo.Bob.ID))
	if p == nil || p.Flags()&sfu.FlagMaySpeak != 0 {
		t.Fatal("bob may speak in a channel that denies SPEAK")
	}
	// Moving to the Lounge: the old voice connection is closed with 4014 and
	// a new VOICE_SERVER_UPDATE (new token) follows.
	second := listenerVS(bobGW, f.demo.Bob.ID.String(), f.demo.Lounge.String())
	if second.Token == first.Token {
		t.Fatal("a move reused the voice token")
	}
	if code := closeCode(t, ws); code != 4014 {
		t.Fatalf("old voice connection closed with %d", code)
	}
}

// More of voice.md's obligations over the wire: voice_states in a later
// GUILD_CREATE, server deafen, replays and oversized datagrams dropped, a
// vanished receiver not stalling the others, and 4009 without heartbeats.
func TestVoiceRoomBehaviour(t *testing.T) {
	f, pool := voiceFixture(t)
	gws := map[string]*client{}
	for name, tok := range map[string]string{"alice": f.demo.AliceToken, "bob": f.demo.BobToken, "bot": f.demo.BotToken} {
		gws[name] = f.dial("v=10")
		gws[name].ready(tok, allIntents)
		gws[name].waitFor("GUILD_CREATE")
	}
	alice := joinVoice(t, f, pool, gws["alice"], f.demo.Alice.ID.String(), crypto.AES256GCMRTPSize)
	bob := joinVoice(t, f, pool, gws["bob"], f.demo.Bob.ID.String(), crypto.AES256GCMRTPSize)
	bot := joinVoice(t, f, pool, gws["bot"], f.demo.Bot.ID.String(), crypto.XChaCha20Poly1305RTPSize)

	// A session that connects now sees who is in voice.
	late := f.dial("v=10")
	late.ready(f.demo.BotToken, allIntents)
	var gc struct {
		VoiceStates []map[string]any `json:"voice_states"`
	}
	json.Unmarshal(late.waitFor("GUILD_CREATE").D, &gc)
	if len(gc.VoiceStates) != 3 {
		t.Fatalf("GUILD_CREATE voice_states: %v", gc.VoiceStates)
	}
	for _, vs := range gc.VoiceStates {
		if _, has := vs["guild_id"]; has || vs["channel_id"] != f.demo.Lounge.String() || vs["session_id"] == "" {
			t.Fatalf("voice state %v", vs)
		}
	}

	both := func(payload string) {
		t.Helper()
		alice.sendAudio([]byte(payload))
		for _, r := range []*voiceClient{bob, bot} {
			if got := r.receive(5 * time.Second); got == nil || !bytes.HasSuffix(got, []byte(payload)) {
				t.Fatalf("%q not received", payload)
			}
		}
	}
	both("hello both")

	// A replayed packet is dropped; an oversized datagram too.
	drops := &f.node.SFU().Drops
	replays := drops.Replay.Load()
	alice.n--
	alice.sendAudio([]byte("replay"))
	alice.udp.Write(make([]byte, 2000))
	if got := bob.receive(300 * time.Millisecond); got != nil {
		t.Fatalf("replay or oversized datagram forwarded: %q", got)
	}
	waitCount(t, func() bool { return drops.Replay.Load() > replays })
	alice.n++
	both("after the replay")

	// Server deafen: bob receives nothing, the bot still does.
	var m map[string]any
	f.rest("PATCH", fmt.Sprintf("/api/v10/guilds/%s/members/%s", f.demo.GuildID, f.demo.Bob.ID), f.demo.BotToken, map[string]any{"deaf": true}, &m)
	alice.sendAudio([]byte("not for bob"))
	if got := bot.receive(5 * time.Second); got == nil {
		t.Fatal("bot lost audio while bob is deafened")
	}
	if got := bob.receive(300 * time.Millisecond); got != nil {
		t.Fatal("deafened bob received audio")
	}
	f.rest("PATCH", fmt.Sprintf("/api/v10/guilds/%s/members/%s", f.demo.GuildID, f.demo.Bob.ID), f.demo.BotToken, map[string]any{"deaf": false}, &m)
	both("bob hears again")

	// Bob's UDP socket vanishes: the bot keeps receiving every packet.
	bob.udp.Close()
	for i := 0; i < 20; i++ {
		alice.sendAudio([]byte(fmt.Sprintf("after bob left %d", i)))
		if got := bot.receive(5 * time.Second); got == nil {
			t.Fatalf("packet %d lost after a receiver vanished", i)
		}
	}
}

func TestVoiceHeartbeatTimeout(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTPSAddr, cfg.VoiceAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Gateway = signaling.Config{HeartbeatInterval: 300 * time.Millisecond}
	n, err := server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	pem, _ := os.ReadFile(n.CAPath)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	ws := dialVoice(t, pool, n.VoiceAddr, "?v=8")
	readOp(t, ws, 8)
	if code := closeCode(t, ws); code != 4009 {
		t.Fatalf("silent voice connection closed with %d", code)
	}
}
