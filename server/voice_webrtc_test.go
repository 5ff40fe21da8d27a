package server_test

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/rtc"
	"github.com/chorus-voice/chorus/sfu"
	"github.com/chorus-voice/chorus/transport"
	"github.com/gorilla/websocket"
	"github.com/pion/rtp"
)

// selectWebRTC sends Select Protocol "webrtc" with sdp as a browser does
// (data and sdp alike, Opus on 111 in codecs).
func (vc *voiceClient) selectWebRTC(sdp string) {
	vc.ws.WriteJSON(map[string]any{"op": 1, "d": map[string]any{"protocol": "webrtc", "data": sdp, "sdp": sdp,
		"codecs": []map[string]any{{"name": "opus", "type": "audio", "priority": 1000, "payload_type": rtc.ClientOpusPT},
			{"name": "H264", "type": "video", "priority": 1000, "payload_type": 103, "rtx_payload_type": 104}},
		"rtc_connection_id": "d6b92f64-40df-48eb-8bce-7facb043149a"}})
}

// One room, two transports (issue 12 §2): alice joins over UDP, bob over
// WebRTC (a pion client, as a browser); each hears the other, bob's audio
// under the SSRC bob's Ready named, with each side's payload type.
func TestWebRTCAndUDPInOneRoom(t *testing.T) {
	f, pool := voiceFixture(t)
	aliceGW, bobGW := f.dial("v=10"), f.dial("v=10")
	aliceGW.ready(f.demo.AliceToken, allIntents)
	aliceGW.waitFor("GUILD_CREATE")
	bobGW.ready(f.demo.BobToken, allIntents)
	bobGW.waitFor("GUILD_CREATE")
	alice := joinVoice(t, f, pool, aliceGW, f.demo.Alice.ID.String(), crypto.AES256GCMRTPSize)
	bob := identifyVoice(t, f, pool, bobGW, f.demo.Bob.ID.String())

	heard := make(chan rtp.Packet, 256)
	client, err := rtc.NewClient(func(p *rtp.Packet) {
		c := *p
		c.Payload = append([]byte(nil), p.Payload...)
		select {
		case heard <- c:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	bob.selectWebRTC(client.Offer)
	var desc map[string]json.RawMessage
	json.Unmarshal(bob.wait(4), &desc)
	var sdp, codec, session string
	var dave int
	json.Unmarshal(desc["sdp"], &sdp)
	json.Unmarshal(desc["audio_codec"], &codec)
	json.Unmarshal(desc["media_session_id"], &session)
	json.Unmarshal(desc["dave_protocol_version"], &dave)
	if _, has := desc["secret_key"]; has || desc["mode"] != nil || codec != "opus" || len(session) != 32 || dave != 0 ||
		!strings.HasPrefix(sdp, "m=audio ") || !strings.Contains(sdp, "a=candidate:") {
		t.Fatalf("session description for webrtc: %s", mustMarshal(desc))
	}
	if err := client.Accept(sdp); err != nil {
		t.Fatal(err)
	}
	select {
	case <-client.Connected():
	case <-time.After(10 * time.Second):
		t.Fatal("the WebRTC client did not connect")
	}
	// alice is told bob connected (op 11), as for any client.
	var joined struct {
		UserIDs []string `json:"user_ids"`
	}
	json.Unmarshal(alice.wait(11), &joined)
	if len(joined.UserIDs) != 1 || joined.UserIDs[0] != f.demo.Bob.ID.String() {
		t.Fatalf("op 11 named %v, want bob", joined.UserIDs)
	}

	// bob → alice: alice hears bob under bob's SSRC from Ready, as Opus on 120.
	deadline := time.Now().Add(10 * time.Second)
	var got []byte
	for seq := uint16(1); got == nil && time.Now().Before(deadline); seq++ {
		client.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 960},
			Payload: []byte{0xF8, 0xFF, 0xFE, byte(seq)}})
		got = alice.receive(20 * time.Millisecond)
	}
	if got == nil {
		t.Fatal("alice heard nothing from bob")
	}
	h, err := transport.ParseRTP(got)
	if err != nil || h.SSRC != bob.ssrc || h.PayloadType != 120 || h.Extension || string(got[h.Len:h.Len+3]) != "\xF8\xFF\xFE" {
		t.Fatalf("alice got % x (SSRC %d, bob's %d)", got, h.SSRC, bob.ssrc)
	}
	// alice → bob: bob's client hears alice under her SSRC, as Opus on 111.
	var p rtp.Packet
	for i := 0; p.SSRC == 0 && time.Now().Before(deadline); i++ {
		alice.sendAudio([]byte{0xF8, 0x01, 0x02})
		select {
		case p = <-heard:
		case <-time.After(20 * time.Millisecond):
		}
	}
	if p.SSRC != alice.ssrc || p.PayloadType != rtc.ClientOpusPT || string(p.Payload) != "\xF8\x01\x02" {
		t.Fatalf("bob got %v (alice's SSRC %d)", p, alice.ssrc)
	}
	// Server mute applies to the WebRTC sender as to any: nothing of bob's
	// reaches alice once the mute is applied.
	var m map[string]any
	f.rest("PATCH", fmt.Sprintf("/api/v10/guilds/%s/members/%s", f.demo.GuildID, f.demo.Bob.ID), f.demo.BotToken, map[string]any{"mute": true}, &m)
	muted := f.node.SFU().Participant(uint64(f.demo.GuildID), uint64(f.demo.Bob.ID))
	waitCount(t, func() bool { return muted.Flags()&sfu.FlagServerMute != 0 })
	for alice.receive(50*time.Millisecond) != nil {
		// drain what was in flight
	}
	for seq := uint16(1000); seq < 1025; seq++ {
		client.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 960}, Payload: []byte{0xF8}})
	}
	if got := alice.receive(300 * time.Millisecond); got != nil {
		t.Fatalf("alice heard a server-muted WebRTC sender: % x", got)
	}
	// Server deafen applies to the WebRTC receiver as to any.
	f.rest("PATCH", fmt.Sprintf("/api/v10/guilds/%s/members/%s", f.demo.GuildID, f.demo.Bob.ID), f.demo.BotToken, map[string]any{"deaf": true}, &m)
	waitCount(t, func() bool { return muted.Flags()&sfu.FlagServerDeaf != 0 })
	time.Sleep(50 * time.Millisecond) // what was in flight before the flag
	for len(heard) > 0 {
		<-heard
	}
	for i := 0; i < 25; i++ {
		alice.sendAudio([]byte{0xF8, 0x03})
	}
	select {
	case p := <-heard:
		t.Fatalf("a server-deafened WebRTC receiver heard %v", p)
	case <-time.After(300 * time.Millisecond):
	}
	// Speaking: bob announces his browser's own SSRC; alice is told bob's
	// Ready SSRC, the one his packets reach her under.
	bob.ws.WriteJSON(map[string]any{"op": 5, "d": map[string]any{"speaking": 1, "delay": 0, "ssrc": client.SSRC()}})
	for {
		var sp struct {
			UserID string `json:"user_id"`
			SSRC   uint32 `json:"ssrc"`
		}
		json.Unmarshal(alice.wait(5), &sp)
		if sp.UserID == f.demo.Bob.ID.String() {
			if sp.SSRC != bob.ssrc {
				t.Fatalf("alice was told bob speaks under %d, his packets come under %d", sp.SSRC, bob.ssrc)
			}
			break
		}
	}
	// bob leaves the channel: his PeerConnection closes with his voice
	// connection.
	if f.node.WebRTC().Peers() != 1 {
		t.Fatalf("%d peers open, want bob's", f.node.WebRTC().Peers())
	}
	// bob was sent on the leg's own SRTP path, not pion's (rtc/keys.go).
	if n := f.node.WebRTC().Stats.PionSRTP.Load(); n != 0 {
		t.Fatalf("%d peers on pion's SRTP path", n)
	}
	bobGW.send(map[string]any{"op": 4, "d": map[string]any{"guild_id": f.demo.GuildID.String(), "channel_id": nil}})
	bob.expectClose(4014)
	waitCount(t, func() bool { return f.node.WebRTC().Peers() == 0 })
	// alice hears that he left (op 13), as for any client.
	var gone struct {
		UserID string `json:"user_id"`
	}
	json.Unmarshal(alice.wait(13), &gone)
	if gone.UserID != f.demo.Bob.ID.String() {
		t.Fatalf("op 13 for %q, want bob", gone.UserID)
	}
}

// Bad SDP gets 4020 with the reason, and nothing else is harmed: the same
// client can connect again and identify.
func TestWebRTCBadSDP(t *testing.T) {
	f, pool := voiceFixture(t)
	gw := f.dial("v=10")
	gw.ready(f.demo.AliceToken, allIntents)
	gw.waitFor("GUILD_CREATE")
	good, err := rtc.NewClient(func(*rtp.Packet) {})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	for _, tc := range []struct {
		name, sdp string
		codecs    []map[string]any
		reason    string
	}{
		{"garbage", "hello, world", nil, "sdp malformed"},
		{"huge", strings.Repeat("a=x:y\n", 1500), nil, ""},
		{"no ICE", "a=fingerprint:sha-256 " + strings.Repeat("AB:", 31) + "AB\n", nil, "sdp has no valid ice-ufrag and ice-pwd"},
		{"no opus", good.Offer, []map[string]any{{"name": "VP8", "type": "video", "payload_type": 96}, {"name": "mystery", "type": "audio", "payload_type": 100}}, "no opus codec offered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vc := identifyVoice(t, f, pool, gw, f.demo.Alice.ID.String())
			d := map[string]any{"protocol": "webrtc", "data": tc.sdp, "sdp": tc.sdp}
			if tc.codecs != nil {
				d["codecs"] = tc.codecs
			}
			vc.ws.WriteJSON(map[string]any{"op": 1, "d": d})
			want := 4020
			if tc.reason == "" {
				want = 4002 // over the payload limit: it never reaches the SDP parser
			}
			vc.expectClose(want)
			var ce *websocket.CloseError
			if errors.As(vc.err, &ce) && tc.reason != "" && !strings.HasPrefix(ce.Text, tc.reason) {
				t.Fatalf("closed with %q, want %q", ce.Text, tc.reason)
			}
			// Leave, so the next case joins afresh.
			gw.send(map[string]any{"op": 4, "d": map[string]any{"guild_id": f.demo.GuildID.String(), "channel_id": nil}})
			gw.waitFor("VOICE_STATE_UPDATE")
		})
	}
	// The node still serves: alice joins over UDP.
	joinVoice(t, f, pool, gw, f.demo.Alice.ID.String(), crypto.AES256GCMRTPSize)
}

func mustMarshal(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// A WebRTC client that never completes ICE and DTLS is dropped after the
// connect timeout: its voice connection closes with 4009 and it leaves
// the room.
func TestWebRTCClientThatNeverConnectsIsDropped(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTPSAddr, cfg.VoiceAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.WebRTCConnectTimeout = 300 * time.Millisecond
	f := startConfig(t, cfg)
	pem, _ := os.ReadFile(f.node.CAPath)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	gw := f.dial("v=10")
	gw.ready(f.demo.AliceToken, allIntents)
	gw.waitFor("GUILD_CREATE")
	vc := identifyVoice(t, f, pool, gw, f.demo.Alice.ID.String())
	client, err := rtc.NewClient(func(*rtp.Packet) {})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	vc.selectWebRTC(client.Offer)
	vc.wait(4) // and never applies it
	vc.expectClose(4009)
	waitCount(t, func() bool {
		return f.node.WebRTC().Peers() == 0 && f.node.SFU().Participant(uint64(f.demo.GuildID), uint64(f.demo.Alice.ID)) == nil
	})
	if f.node.WebRTC().Stats.TimedOut.Load() != 1 {
		t.Fatalf("%d timed out", f.node.WebRTC().Stats.TimedOut.Load())
	}
}
