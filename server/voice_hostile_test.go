package server_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/transport"
)

// A room member who knows a listener's SSRC (op 5 tells the room) sends IP
// discovery for it from another socket: it gets no answer and none of the
// room's media, and a keep-alive from it is not echoed. The listener never
// sends a packet of its own, so only its confirmed discovery address
// (Select Protocol) says where its media goes.
func TestDiscoveryCannotHijackMedia(t *testing.T) {
	f, pool := voiceFixture(t)
	l := joinLounge2(t, f, pool, crypto.AES256GCMRTPSize, crypto.AES256GCMRTPSize)
	alice, bob := l.alice, l.bob
	alice.ws.WriteJSON(map[string]any{"op": 5, "d": map[string]any{"speaking": 1, "delay": 0, "ssrc": alice.ssrc}})
	bob.wait(5)

	attacker, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(bob.server))
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	req := make([]byte, transport.DiscoverySize)
	binary.BigEndian.PutUint16(req, 1)
	binary.BigEndian.PutUint16(req[2:], 70)
	binary.BigEndian.PutUint32(req[4:], bob.ssrc)
	refused := f.node.SFU().Drops.DiscoveryRefused.Load()
	attacker.Write(req)
	attacker.Write([]byte{1, 0, 0, 0, 0, 0, 0, 0})
	waitCount(t, func() bool {
		return f.node.SFU().Drops.DiscoveryRefused.Load() > refused && f.node.UDP().Stats.DroppedKeepAlive.Load() > 0
	})
	for i := range 5 {
		alice.sendAudio([]byte{byte(i)})
		if bob.receive(5*time.Second) == nil {
			t.Fatalf("frame %d did not reach the listener", i)
		}
	}
	attacker.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := attacker.Read(make([]byte, 1500)); err == nil {
		t.Fatalf("the attacker received %d bytes", n)
	}
	// Operators see both refusals in /metrics.
	resp, err := http.Get(f.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	for _, series := range []string{`chorus_voice_dropped_total{reason="discovery_refused"} `, `chorus_voice_udp_dropped_total{reason="keepalive"} `} {
		i := strings.Index(string(text), series)
		if i < 0 || strings.HasPrefix(string(text[i+len(series):]), "0\n") {
			t.Fatalf("%s not counted in /metrics", series)
		}
	}
}

// hears reports whether a frame from sender reaches receiver.
func hears(sender, receiver *voiceClient) bool {
	sender.sendAudio([]byte("policy"))
	return receiver.receive(400*time.Millisecond) != nil
}

// Policy changes reach people already in voice at once: an operator's
// server mute, a role that loses SPEAK, an overwrite that takes CONNECT.
func TestPolicyChangesReachVoice(t *testing.T) {
	f, pool := voiceFixture(t)
	l := joinLounge2(t, f, pool, crypto.AES256GCMRTPSize, crypto.AES256GCMRTPSize)
	aliceGW, bobGW, alice, bob := l.aliceGW, l.bobGW, l.alice, l.bob
	bob.ws.WriteJSON(map[string]any{"op": 5, "d": map[string]any{"speaking": 1, "delay": 0, "ssrc": bob.ssrc}})
	alice.wait(5)
	if !hears(bob, alice) {
		t.Fatal("bob is not heard to begin with")
	}
	member := fmt.Sprintf("/admin/v1/guilds/%s/members/%s", f.demo.GuildID, f.demo.Bob.ID)
	roles := []string{f.demo.Member.String()}

	// (1) The operator server-mutes bob: his audio stops, and the guild sees it.
	f.adminCall(t, "PUT", member, map[string]any{"roles": roles, "mute": true}, 200, nil)
	if hears(bob, alice) {
		t.Fatal("a server-muted member is still heard")
	}
	for !strings.Contains(string(aliceGW.waitFor("VOICE_STATE_UPDATE").D), `"mute":true`) {
	}
	f.adminCall(t, "PUT", member, map[string]any{"roles": roles, "mute": false}, 200, nil)
	if !hears(bob, alice) {
		t.Fatal("unmuted but not heard")
	}

	// (2) @everyone loses SPEAK: bob (no other role grants it) goes quiet.
	everyone := fmt.Sprintf("/admin/v1/guilds/%s/roles/%s", f.demo.GuildID, f.demo.GuildID)
	noSpeak := strconv.FormatUint(guild.PermDefaultEveryone&^guild.PermSpeak, 10)
	f.adminCall(t, "PATCH", everyone, map[string]any{"permissions": noSpeak}, 200, nil)
	if hears(bob, alice) {
		t.Fatal("a member whose roles lost SPEAK is still heard")
	}
	f.adminCall(t, "PATCH", everyone, map[string]any{"permissions": strconv.FormatUint(guild.PermDefaultEveryone, 10)}, 200, nil)
	if !hears(bob, alice) {
		t.Fatal("SPEAK given back but not heard")
	}

	// (3) An overwrite denies bob CONNECT on the Lounge: he is disconnected
	// (4014, as for a move) and the guild sees him leave.
	f.adminCall(t, "PUT", fmt.Sprintf("/admin/v1/channels/%s/permissions/%s", f.demo.Lounge, f.demo.Bob.ID),
		map[string]any{"type": 1, "deny": strconv.FormatUint(guild.PermConnect, 10)}, 200, nil)
	bob.expectClose(4014)
	for {
		fr := bobGW.waitFor("VOICE_STATE_UPDATE")
		if strings.Contains(string(fr.D), `"channel_id":null`) {
			break
		}
	}
	// Bad input to the new admin routes.
	f.adminCall(t, "PATCH", fmt.Sprintf("/admin/v1/guilds/%s/roles/1", f.demo.GuildID), map[string]any{"name": "x"}, 404, nil)
	f.adminCall(t, "PATCH", everyone, map[string]any{"permissions": "lots"}, 400, nil)
	f.adminCall(t, "PUT", fmt.Sprintf("/admin/v1/channels/%s/permissions/%s", f.demo.Lounge, f.demo.Bob.ID),
		map[string]any{"type": 7}, 400, nil)
	f.adminCall(t, "PUT", fmt.Sprintf("/admin/v1/channels/%s/permissions/1", f.demo.Lounge), map[string]any{"type": 0}, 400, nil)
}

// Revoking a user's tokens closes their live gateway sessions with 4004 and
// their voice connections with 4004 at once; the old session cannot be
// resumed, and everyone else carries on.
func TestRevocationEndsLiveSessions(t *testing.T) {
	f, pool := voiceFixture(t)
	aliceGW := f.dial("v=10")
	aliceGW.ready(f.demo.AliceToken, allIntents)
	aliceGW.waitFor("GUILD_CREATE")
	bobGW := f.dial("v=10")
	ready := bobGW.ready(f.demo.BobToken, allIntents)
	bobGW.waitFor("GUILD_CREATE")
	alice := joinVoice(t, f, pool, aliceGW, f.demo.Alice.ID.String(), crypto.AES256GCMRTPSize)
	bob := joinVoice(t, f, pool, bobGW, f.demo.Bob.ID.String(), crypto.AES256GCMRTPSize)
	alice.ws.WriteJSON(map[string]any{"op": 5, "d": map[string]any{"speaking": 1, "delay": 0, "ssrc": alice.ssrc}})
	bob.wait(5)

	f.adminCall(t, "POST", fmt.Sprintf("/admin/v1/users/%s/token?revoke=true", f.demo.Bob.ID), nil, 200, nil)
	bobGW.expectClose(4004)
	bob.expectClose(4004)

	again := f.dial("v=10")
	again.next(5 * time.Second) // Hello
	again.send(map[string]any{"op": 6, "d": map[string]any{"token": f.demo.BobToken, "session_id": ready["session_id"], "seq": 1}})
	again.expectClose(4004)
	// Alice's voice and chat go on.
	f.rest("POST", fmt.Sprintf("/api/v10/channels/%s/messages", f.demo.General), f.demo.AliceToken,
		map[string]any{"content": "after revoke"}, nil)
	aliceGW.waitMessage("after revoke")
}
