package clustertest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/loadtest"
	"github.com/chorus-voice/chorus/protocol"
)

// A voice room lives on the node the ring places it on among those with
// the voice role, whichever nodes hold its guild and its users' gateway
// sessions: here the guild is on n1 or n2 (guild role), alice's session
// on n1, bob's on n2, and the only voice node is n3. Both users' joins get
// VOICE_SERVER_UPDATE naming n3's endpoint with a token n3 admits; the
// voice states reach n3 from the guild's owner in its batches, so n3
// admits both Identifies; audio flows between them; a server mute made
// through n2 silences bob at n3; leaving ends both connections there.
func TestVoiceRoomOnItsVoiceNode(t *testing.T) {
	gw := []string{"--roles", "gateway,guild"}
	c := StartEach(t, gw, gw, []string{"--roles", "voice", "--voice", "127.0.0.1:0"})
	demo := c.Nodes[0].Demo
	voiceNode := c.Nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	var st struct {
		Members []struct{ ID, Addr string }
		Room    *struct{ Node string } `json:"voice_room"`
	}
	if err := c.Nodes[0].Admin(t).Do("GET", "/admin/v1/cluster?guild="+demo.Guild+"&channel="+demo.Lounge, nil, &st); err != nil {
		t.Fatal(err)
	}
	endpoint := ""
	for _, m := range st.Members {
		if m.ID == voiceNode.ID {
			endpoint = m.Addr
		}
	}
	if st.Room == nil || st.Room.Node != voiceNode.ID || endpoint == "" {
		t.Fatalf("the Lounge is placed on %+v, want %s (members %+v)", st.Room, voiceNode.ID, st.Members)
	}

	pem, err := os.ReadFile(filepath.Join(voiceNode.Data, "tls", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	dialer := &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	intents := int(protocol.IntentGuilds | protocol.IntentGuildVoiceStates)
	var gateways []*loadtest.GatewayClient
	join := func(nd *Node, name string) *loadtest.VoiceClient {
		t.Helper()
		g, err := loadtest.DialGateway(ctx, nil, "ws://"+nd.HTTP, demo.Tokens[name], intents)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Close() })
		vc, err := loadtest.JoinVoice(ctx, g, dialer, demo.Guild, demo.Lounge, demo.IDs[name], crypto.AES256GCM)
		if err != nil {
			t.Fatalf("%s joining through %s: %v", name, nd.ID, err)
		}
		t.Cleanup(func() { vc.Close() })
		if vc.Endpoint != endpoint {
			t.Fatalf("%s was sent to %s, the room is on %s (%s)", name, vc.Endpoint, voiceNode.ID, endpoint)
		}
		gateways = append(gateways, g)
		return vc
	}
	alice, bob := join(c.Nodes[0], "alice"), join(c.Nodes[1], "bob")

	frames, err := loadtest.OpusFrames("a")
	if err != nil {
		t.Fatal(err)
	}
	alice.SetSpeaking(1)
	for i, fr := range frames[:50] {
		if err := alice.SendOpus(fr); err != nil {
			t.Fatal(err)
		}
		ssrc, got, err := bob.Receive(5 * time.Second)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if ssrc != alice.SSRC || !bytes.Equal(got, fr) {
			t.Fatalf("frame %d differs (ssrc %d)", i, ssrc)
		}
	}

	// A server mute through n2 (the guild's owner may be n1) reaches n3:
	// bob's audio stops reaching alice within 5 s, and comes back once
	// he is unmuted.
	mute := func(on bool) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "PATCH", "http://"+c.Nodes[1].HTTP+"/api/v10/guilds/"+demo.Guild+"/members/"+demo.IDs["bob"],
			strings.NewReader(fmt.Sprintf(`{"mute":%v}`, on)))
		req.Header.Set("Authorization", demo.Tokens["alice"]) // the guild's owner
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("mute %v: %d", on, resp.StatusCode)
		}
	}
	// flows reports whether bob's audio reaches alice: bob talks until a
	// frame arrives (true) or 300 ms pass without one (false), within 5 s.
	flows := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			quiet := time.Now().Add(300 * time.Millisecond)
			got := false
			for !got && time.Now().Before(quiet) {
				bob.SendOpus(frames[0])
				ssrc, _, err := alice.Receive(20 * time.Millisecond)
				got = err == nil && ssrc == bob.SSRC
			}
			if got == want {
				return
			}
		}
		t.Fatalf("bob's audio still %s alice 5 s after the change", map[bool]string{true: "does not reach", false: "reaches"}[want])
	}
	bob.SetSpeaking(1)
	flows(true)
	mute(true)
	flows(false)
	mute(false)
	flows(true)

	// Leaving through the gateways ends the voice connections on n3.
	for _, g := range gateways {
		g.Send(protocol.OpVoiceState, map[string]any{"guild_id": demo.Guild, "channel_id": nil})
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		if n, err := voiceNode.Metric("chorus_voice_participants"); err == nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the participants are still in the room on the voice node 5 s after they left")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
