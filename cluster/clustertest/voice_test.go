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
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/loadtest"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/ring"
)

// placement is where the cluster says a guild and one of its voice rooms
// live, and each member's voice endpoint.
type placement struct {
	owner, room string
	addr        map[string]string // by node id
}

func placed(t *testing.T, via *Node, guild, channel string) placement {
	t.Helper()
	var st struct {
		Members []struct{ ID, Addr string }
		Guild   *struct{ Owner string }
		Room    *struct{ Node string } `json:"voice_room"`
	}
	if err := via.Admin(t).Do("GET", "/admin/v1/cluster?guild="+guild+"&channel="+channel, nil, &st); err != nil {
		t.Fatal(err)
	}
	p := placement{addr: map[string]string{}}
	for _, m := range st.Members {
		p.addr[m.ID] = m.Addr
	}
	if st.Guild != nil {
		p.owner = st.Guild.Owner
	}
	if st.Room != nil {
		p.room = st.Room.Node
	}
	return p
}

// voiceDialer trusts the development CAs of the given nodes. Their
// certificates name localhost and 127.0.0.1, not the addresses of nodes
// in network namespaces, so the name checked is localhost's.
func voiceDialer(t *testing.T, nodes ...*Node) *websocket.Dialer {
	t.Helper()
	pool := x509.NewCertPool()
	for _, nd := range nodes {
		pem, err := os.ReadFile(filepath.Join(nd.Data, "tls", "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		pool.AppendCertsFromPEM(pem)
	}
	return &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}
}

// voiceUser is a demo user in a voice room of the demo guild, with the
// gateway session it joined through.
type voiceUser struct {
	name string
	gw   *loadtest.GatewayClient
	vc   *loadtest.VoiceClient
}

// joinRoom has the demo user name join channel through node nd's gateway,
// and checks that it was sent to endpoint; the microphone is on.
func joinRoom(t *testing.T, ctx context.Context, nd *Node, d *websocket.Dialer, demo *Demo, channel, name, endpoint string) *voiceUser {
	t.Helper()
	g, err := loadtest.DialGateway(ctx, nil, "ws://"+nd.HTTP, demo.Tokens[name], int(protocol.IntentGuilds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	vc, err := loadtest.JoinVoice(ctx, g, d, demo.Guild, channel, demo.IDs[name], crypto.AES256GCM)
	if err != nil {
		t.Fatalf("%s joining through %s: %v", name, nd.ID, err)
	}
	t.Cleanup(func() { vc.Close() })
	if vc.Endpoint != endpoint {
		t.Fatalf("%s was sent to %s, want %s", name, vc.Endpoint, endpoint)
	}
	vc.SetSpeaking(protocol.SpeakingMicrophone)
	return &voiceUser{name: name, gw: g, vc: vc}
}

// leave sends op 4 for no channel.
func (u *voiceUser) leave(guild string) {
	u.gw.Send(protocol.OpVoiceState, map[string]any{"guild_id": guild, "channel_id": nil})
}

var frame = func() []byte {
	fs, err := loadtest.OpusFrames("a")
	if err != nil {
		panic(err)
	}
	return fs[0]
}()

// talk has from send until to receives one of its packets, within 30 s.
func talk(from, to *loadtest.VoiceClient) error {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		from.SendOpus(frame)
		if ssrc, _, err := to.Receive(20 * time.Millisecond); err == nil && ssrc == from.SSRC {
			return nil
		}
	}
	return fmt.Errorf("no packet from %d within 30 s", from.SSRC)
}

// waitMetric waits up to 10 s for a node's metric to read want.
func waitMetric(t *testing.T, nd *Node, name string, want float64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if v, err := nd.Metric(name); err == nil && v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's %s is not %v within 10 s", nd.ID, name, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killUnder kills victim while the users talk through the room it hosts,
// has each user follow the VOICE_SERVER_UPDATE that moves the room to
// endpoint, and checks that audio flows both ways there; it logs the gap
// per listener, from the kill to the first packet (issue 11's target:
// 2 s).
func killUnder(t *testing.T, ctx context.Context, victim *Node, d *websocket.Dialer, demo *Demo, endpoint string, a, b *voiceUser) {
	t.Helper()
	moveUnder(t, ctx, "the kill of "+victim.ID, victim.Kill, d, demo, endpoint, a, b)
}

// moveUnder is killUnder with another change that moves the room (what
// names it in the log).
func moveUnder(t *testing.T, ctx context.Context, what string, change func(), d *websocket.Dialer, demo *Demo, endpoint string, a, b *voiceUser) {
	t.Helper()
	if err := talk(a.vc, b.vc); err != nil {
		t.Fatalf("before the kill: %v", err)
	}
	moved := make(chan error, 2)
	for _, u := range []*voiceUser{a, b} {
		go func() {
			vc, err := loadtest.FollowVoiceServer(ctx, u.gw, d, demo.Guild, demo.IDs[u.name], u.vc.Session, crypto.AES256GCM)
			if err == nil {
				u.vc.Close()
				u.vc = vc
			}
			moved <- err
		}()
	}
	killed := time.Now()
	change()
	for range 2 {
		if err := <-moved; err != nil {
			t.Fatalf("following the room to its new node: %v", err)
		}
	}
	for _, u := range []*voiceUser{a, b} {
		t.Cleanup(func() { u.vc.Close() })
		if u.vc.Endpoint != endpoint {
			t.Fatalf("%s was sent to %s, want %s", u.name, u.vc.Endpoint, endpoint)
		}
		u.vc.SetSpeaking(protocol.SpeakingMicrophone)
	}
	for _, pair := range [][2]*voiceUser{{a, b}, {b, a}} {
		if err := talk(pair[0].vc, pair[1].vc); err != nil {
			t.Fatalf("%s to %s after the kill: %v", pair[0].name, pair[1].name, err)
		}
		t.Logf("%s hears %s again %v after %s", pair[1].name, pair[0].name, time.Since(killed), what)
	}
}

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
	demo, voiceNode := c.Nodes[0].Demo, c.Nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p := placed(t, c.Nodes[0], demo.Guild, demo.Lounge)
	if p.room != voiceNode.ID {
		t.Fatalf("the Lounge is placed on %q, want %s", p.room, voiceNode.ID)
	}
	d := voiceDialer(t, voiceNode)
	alice := joinRoom(t, ctx, c.Nodes[0], d, demo, demo.Lounge, "alice", p.addr[voiceNode.ID])
	bob := joinRoom(t, ctx, c.Nodes[1], d, demo, demo.Lounge, "bob", p.addr[voiceNode.ID])

	frames, err := loadtest.OpusFrames("a")
	if err != nil {
		t.Fatal(err)
	}
	for i, fr := range frames[:50] {
		if err := alice.vc.SendOpus(fr); err != nil {
			t.Fatal(err)
		}
		ssrc, got, err := bob.vc.Receive(5 * time.Second)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if ssrc != alice.vc.SSRC || !bytes.Equal(got, fr) {
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
	// flows waits up to 5 s for bob's audio to reach alice (want) or to
	// stop reaching her: 300 ms of bob talking without a frame arriving.
	flows := func(want bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			quiet := time.Now().Add(300 * time.Millisecond)
			got := false
			for !got && time.Now().Before(quiet) {
				bob.vc.SendOpus(frame)
				ssrc, _, err := alice.vc.Receive(20 * time.Millisecond)
				got = err == nil && ssrc == bob.vc.SSRC
			}
			if got == want {
				return
			}
		}
		t.Fatalf("bob's audio still %s alice 5 s after the change", map[bool]string{true: "does not reach", false: "reaches"}[want])
	}
	flows(true)
	mute(true)
	flows(false)
	mute(false)
	flows(true)

	// Leaving through the gateways ends the voice connections on n3.
	alice.leave(demo.Guild)
	bob.leave(demo.Guild)
	waitMetric(t, voiceNode, "chorus_voice_participants", 0)
}

// roomOnVoiceNode starts n1 (gateway, guild) and two voice-only nodes;
// alice and bob join the Lounge through n1's gateway. victim is the voice
// node the room is on, next the endpoint of the other.
func roomOnVoiceNode(t *testing.T, ctx context.Context) (victim *Node, next string, d *websocket.Dialer, demo *Demo, alice, bob *voiceUser) {
	t.Helper()
	voice := []string{"--roles", "voice", "--voice", "127.0.0.1:0"}
	c := StartEach(t, []string{"--roles", "gateway,guild"}, voice, voice)
	demo = c.Nodes[0].Demo
	p := placed(t, c.Nodes[0], demo.Guild, demo.Lounge)
	victim, survivor := c.Nodes[1], c.Nodes[2]
	if p.room == survivor.ID {
		victim, survivor = survivor, victim
	}
	d = voiceDialer(t, victim, survivor)
	alice = joinRoom(t, ctx, c.Nodes[0], d, demo, demo.Lounge, "alice", p.addr[victim.ID])
	bob = joinRoom(t, ctx, c.Nodes[0], d, demo, demo.Lounge, "bob", p.addr[victim.ID])
	return victim, p.addr[survivor.ID], d, demo, alice, bob
}

// kill -9 of the node a voice room is on, while two users talk through
// it: the ring moves the room to the other voice node, the guild's owner
// sends both users' sessions a new VOICE_SERVER_UPDATE naming it (as
// Discord does on a voice server change), they connect there as the same
// voice sessions, and audio flows again both ways.
func TestVoiceNodeKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	victim, next, d, demo, alice, bob := roomOnVoiceNode(t, ctx)
	killUnder(t, ctx, victim, d, demo, next, alice, bob)
}

// SIGTERM of the node a voice room is on: it leaves the ring before it
// closes anything, the room's participants are sent to its new node, and
// the node exits 0 (drain, issue 11).
func TestVoiceNodeStopped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	victim, next, d, demo, alice, bob := roomOnVoiceNode(t, ctx)
	moveUnder(t, ctx, "SIGTERM to "+victim.ID, func() { victim.Stop(t) }, d, demo, next, alice, bob)
}

// kill -9 of a guild's owner while two users are in one of its voice
// rooms on another node: their voice connections live on, the new owner
// takes their voice states over from the voice node, and the guild
// behaves as before: a user who leaves is disconnected there, the other
// stays connected.
func TestGuildOwnerKilledWhileInVoice(t *testing.T) {
	guild := []string{"--roles", "guild"}
	// The first node seeds the demo guild, so it serves guilds.
	c := StartEach(t, guild, guild, []string{"--roles", "gateway"}, []string{"--roles", "voice", "--voice", "127.0.0.1:0"})
	demo := c.Nodes[0].Demo
	gateway, voiceNode := c.Nodes[2], c.Nodes[3]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p := placed(t, gateway, demo.Guild, demo.Lounge)
	d := voiceDialer(t, voiceNode)
	joinRoom(t, ctx, gateway, d, demo, demo.Lounge, "alice", p.addr[voiceNode.ID])
	bob := joinRoom(t, ctx, gateway, d, demo, demo.Lounge, "bob", p.addr[voiceNode.ID])
	waitMetric(t, voiceNode, "chorus_voice_participants", 2)

	var owner *Node
	for _, nd := range c.Nodes[:2] {
		if nd.ID == p.owner {
			owner = nd
		}
	}
	if owner == nil {
		t.Fatalf("the guild's owner is %q, not a guild node", p.owner)
	}
	owner.Kill()
	c.WaitRing(3)
	// Bob leaves through the gateway: the new owner must know he was in
	// voice to tell the voice node, which then ends his connection. (The
	// first tries may meet the old ring: 503, and the gateway drops op 4.)
	for tries := 0; ; tries++ {
		bob.leave(demo.Guild)
		if n, err := voiceNode.Metric("chorus_voice_participants"); err == nil && n == 1 {
			break
		}
		if tries == 100 {
			t.Fatal("bob's leave after the owner's death did not reach the voice node")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Alice, who stays, keeps her connection.
	waitMetric(t, voiceNode, "chorus_voice_participants", 1)
}

// kill -9 of the node that is both a guild's owner and its voice room's
// node (every node has every role): the voice states die with the owner's
// memory and the connections with the voice node, but the other voice
// nodes heard the states; the new owner takes them over, finds no live
// node holding the room's connections, and sends its participants to the
// room's new node, where they talk again.
func TestOwnerAndVoiceNodeKilledTogether(t *testing.T) {
	c := Start(t, 3, "--voice", "127.0.0.1:0")
	demo := c.Nodes[0].Demo
	owner, others := split(c, demo.Guild)
	// A voice channel of the guild whose room the ring places on its owner.
	var room string
	var p placement
	for i := 0; i < 60 && room == ""; i++ {
		var ch struct{ ID string }
		if err := others[0].Admin(t).Do("POST", "/admin/v1/guilds/"+demo.Guild+"/channels", map[string]any{"name": fmt.Sprint("v", i), "type": 2}, &ch); err != nil {
			t.Fatal(err)
		}
		if p = placed(t, others[0], demo.Guild, ch.ID); p.room == owner.ID {
			room = ch.ID
		}
	}
	if room == "" {
		t.Fatalf("no voice channel of 60 placed on the guild's owner %s", owner.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d := voiceDialer(t, c.Nodes...)
	alice := joinRoom(t, ctx, others[0], d, demo, room, "alice", p.addr[owner.ID])
	bob := joinRoom(t, ctx, others[0], d, demo, room, "bob", p.addr[owner.ID])
	// Where the ring of the two others places the room.
	gid, _ := strconv.ParseUint(demo.Guild, 10, 64)
	cid, _ := strconv.ParseUint(room, 10, 64)
	next, _ := ring.New(0, []ring.Node{{ID: others[0].ID, Roles: ring.RoleAll}, {ID: others[1].ID, Roles: ring.RoleAll}}).
		Owner(ring.RoleVoice, ring.VoiceKey(gid, cid))
	killUnder(t, ctx, owner, d, demo, p.addr[next.ID], alice, bob)
}

// A voice room's node cut off from NATS (its NATS link down, in a network
// namespace of the test's) while its participants talk through it: it is
// dropped from the ring at its TTL, the room's participants are sent to
// the room's new node and talk there; when the link heals the node
// rejoins, and if the ring places the room on it again its participants
// are sent back and talk there.
func TestVoiceNodePartitioned(t *testing.T) {
	c := StartPartitionable(t, 3, "--voice", "127.0.0.1:0")
	demo := c.Nodes[0].Demo
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	p := placed(t, c.Nodes[0], demo.Guild, demo.Lounge)
	var victim, gateway *Node
	var others []*Node
	for _, nd := range c.Nodes {
		if nd.ID == p.room {
			victim = nd
		} else {
			others = append(others, nd)
		}
	}
	gateway = others[0]
	d := voiceDialer(t, c.Nodes...)
	alice := joinRoom(t, ctx, gateway, d, demo, demo.Lounge, "alice", p.addr[victim.ID])
	bob := joinRoom(t, ctx, gateway, d, demo, demo.Lounge, "bob", p.addr[victim.ID])
	gid, _ := strconv.ParseUint(demo.Guild, 10, 64)
	cid, _ := strconv.ParseUint(demo.Lounge, 10, 64)
	next, _ := ring.New(0, []ring.Node{{ID: others[0].ID, Roles: ring.RoleAll}, {ID: others[1].ID, Roles: ring.RoleAll}}).
		Owner(ring.RoleVoice, ring.VoiceKey(gid, cid))
	moveUnder(t, ctx, "cutting "+victim.ID+" off NATS", victim.Netns.CutNATS, d, demo, p.addr[next.ID], alice, bob)

	// Healed, the node comes back under the same id: the room goes home.
	moveUnder(t, ctx, "healing "+victim.ID+"'s link", victim.Netns.HealNATS, d, demo, p.addr[victim.ID], alice, bob)
	c.WaitRing(3)
}
