package interop

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/disgoorg/disgo"
	"github.com/disgoorg/disgo/bot"
	"github.com/disgoorg/disgo/cache"
	"github.com/disgoorg/disgo/events"
	"github.com/disgoorg/disgo/gateway"
	"github.com/disgoorg/disgo/rest"
	"github.com/disgoorg/disgo/voice"
	"github.com/disgoorg/snowflake/v2"
	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/cluster/clustertest"
	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/loadtest"
)

// loopSource plays fixture frames over and over until the test ends.
type loopSource struct {
	mu     sync.Mutex
	frames [][]byte
	i      int
}

func (s *loopSource) ProvideOpusFrame() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.frames[s.i%len(s.frames)]
	s.i++
	return f, nil
}

func (s *loopSource) Close() {}

// failover is a cluster for a voice-node kill: n1 serves the gateway and
// the guild, n2 and n3 voice; bob listens in the Lounge with our own
// client. victim is the node the Lounge is on.
type failover struct {
	c      *clustertest.Cluster
	demo   *clustertest.Demo
	victim *clustertest.Node
	dialer *websocket.Dialer
	caFile string // both voice nodes' development CAs
	bobGW  *loadtest.GatewayClient
	bob    *loadtest.VoiceClient
	frames [][]byte
	ctx    context.Context
}

func startFailover(t *testing.T) *failover {
	t.Helper()
	f := &failover{}
	voiceArgs := []string{"--roles", "voice", "--voice", "127.0.0.1:0"}
	c := clustertest.StartEach(t, []string{"--roles", "gateway,guild"}, voiceArgs, voiceArgs)
	demo := c.Nodes[0].Demo
	var st struct {
		Room *struct{ Node string } `json:"voice_room"`
	}
	if err := c.Nodes[0].Admin(t).Do("GET", "/admin/v1/cluster?guild="+demo.Guild+"&channel="+demo.Lounge, nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Room == nil {
		t.Fatal("the Lounge is placed nowhere")
	}
	victim := c.Nodes[1]
	if st.Room.Node == c.Nodes[2].ID {
		victim = c.Nodes[2]
	}
	pool := x509.NewCertPool()
	for _, nd := range c.Nodes[1:] {
		pem, err := os.ReadFile(filepath.Join(nd.Data, "tls", "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		pool.AppendCertsFromPEM(pem)
	}
	dialer := &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 10 * time.Second}
	frames, err := loadtest.OpusFrames("a")
	if err != nil {
		t.Fatal(err)
	}
	ctx := within(t, 90*time.Second)

	// bob listens with our own client.
	bobGW, err := loadtest.DialGateway(ctx, nil, "ws://"+c.Nodes[0].HTTP, demo.Tokens["bob"], 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bobGW.Close() })
	bob, err := loadtest.JoinVoice(ctx, bobGW, dialer, demo.Guild, demo.Lounge, demo.IDs["bob"], crypto.AES256GCM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bob.Close() })

	f.c, f.demo, f.victim, f.dialer, f.bobGW, f.bob, f.frames, f.ctx = c, demo, victim, dialer, bobGW, bob, frames, ctx
	f.caFile = filepath.Join(t.TempDir(), "cas.pem")
	var cas []byte
	for _, nd := range c.Nodes[1:] {
		pem, _ := os.ReadFile(filepath.Join(nd.Data, "tls", "ca.pem"))
		cas = append(cas, pem...)
	}
	if err := os.WriteFile(f.caFile, cas, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// hear reads vc until packets from n speakers have arrived (within 30 s)
// and returns when each first did.
func hear(vc *loadtest.VoiceClient, n int) (map[uint32]time.Time, error) {
	first := map[uint32]time.Time{}
	for deadline := time.Now().Add(30 * time.Second); len(first) < n; {
		if time.Now().After(deadline) {
			return first, fmt.Errorf("heard %d of %d speakers in 30 s", len(first), n)
		}
		ssrc, _, err := vc.Receive(100 * time.Millisecond)
		if err == nil && first[ssrc].IsZero() {
			first[ssrc] = time.Now()
		}
	}
	return first, nil
}

// killAndHear kills the Lounge's node while bob listens, follows bob to
// the room's new node and returns when he first hears each of n speakers
// there, measured from the kill.
func (f *failover) killAndHear(t *testing.T, n int) map[uint32]time.Duration {
	t.Helper()
	if _, err := hear(f.bob, n); err != nil {
		t.Fatalf("before the kill: %v", err)
	}
	followed := make(chan *loadtest.VoiceClient, 1)
	go func() {
		vc, err := loadtest.FollowVoiceServer(f.ctx, f.bobGW, f.dialer, f.demo.Guild, f.demo.IDs["bob"], f.bob.Session, crypto.AES256GCM)
		if err != nil {
			t.Error(err)
		}
		followed <- vc
	}()
	killed := time.Now()
	f.victim.Kill()
	moved := <-followed
	if moved == nil {
		t.FailNow()
	}
	t.Cleanup(func() { moved.Close() })
	first, err := hear(moved, n)
	if err != nil {
		t.Fatalf("after the kill of %s: %v", f.victim.ID, err)
	}
	gaps := map[uint32]time.Duration{}
	for ssrc, at := range first {
		gaps[ssrc] = at.Sub(killed)
	}
	return gaps
}

// kill -9 of the voice node that hosts a room two disgo clients talk in:
// the cluster sends both a new VOICE_SERVER_UPDATE naming the room's new
// node, and unmodified disgo reconnects there by itself and talks on. A
// listener of our own (bob, the load tester's voice client, following the
// same VOICE_SERVER_UPDATE) hears both again; the gap per speaker, from
// the kill to bob's first packet from each, is logged (issue 11's target:
// 2 s). disgo's own receiving is not checked after the move: v0.19.6's
// receiver goes on reading the UDP socket it had before the move (it
// swaps sockets under a read in progress), so after any voice server
// change — Discord's too — a disgo client sends but no longer hears.
func TestDisgoVoiceNodeKilled(t *testing.T) {
	f := startFailover(t)
	c, demo, dialer, frames := f.c, f.demo, f.dialer, f.frames
	guildID, lounge := snowflake.MustParse(demo.Guild), snowflake.MustParse(demo.Lounge)
	for _, name := range []string{"bot", "alice"} {
		ready := make(chan struct{}, 1)
		client, err := disgo.New(demo.Tokens[name],
			bot.WithRestClientConfigOpts(rest.WithURL("http://"+c.Nodes[0].HTTP+"/api/v10")),
			bot.WithCacheConfigOpts(cache.WithCaches(cache.FlagsAll)),
			bot.WithGatewayConfigOpts(gateway.WithURL("ws://"+c.Nodes[0].HTTP),
				gateway.WithIntents(gateway.IntentGuilds, gateway.IntentGuildVoiceStates)),
			bot.WithVoiceManagerConfigOpts(voice.WithConnConfigOpts(voice.WithConnGatewayConfigOpts(voice.WithGatewayDialer(dialer)))),
			bot.WithEventListenerFunc(func(e *events.GuildReady) { ready <- struct{}{} }),
		)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close(context.Background()) })
		if err := client.OpenGateway(within(t, 20*time.Second)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ready:
		case <-time.After(20 * time.Second):
			t.Fatal("guild not ready")
		}
		conn := client.VoiceManager.CreateConn(guildID)
		if err := conn.Open(within(t, 20*time.Second), lounge, false, false); err != nil {
			t.Fatalf("%s: voice open: %v", name, err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		conn.SetOpusFrameProvider(&loopSource{frames: frames})
	}
	for ssrc, gap := range f.killAndHear(t, 2) {
		t.Logf("bob hears the disgo client with SSRC %d again %v after the kill of %s", ssrc, gap, f.victim.ID)
	}
}

// The same kill with an unmodified @discordjs/voice client playing in the
// room (js/voice_failover.mjs): it follows the new VOICE_SERVER_UPDATE by
// itself, and bob hears it again on the room's new node.
func TestDiscordJSVoiceNodeKilled(t *testing.T) {
	needNode(t)
	f := startFailover(t)
	cmd := exec.Command("node", "js/voice_failover.mjs")
	cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+f.caFile, "CHORUS_HTTP="+f.c.Nodes[0].HTTP,
		"CHORUS_GUILD="+f.demo.Guild, "CHORUS_LOUNGE="+f.demo.Lounge, "CHORUS_BOT_TOKEN="+f.demo.Tokens["bot"])
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out clustertest.Log
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("js/voice_failover.mjs printed:\n%s", out.String())
		}
	})
	for ssrc, gap := range f.killAndHear(t, 1) {
		t.Logf("bob hears the @discordjs/voice client (SSRC %d) again %v after the kill of %s", ssrc, gap, f.victim.ID)
	}
	stdin.Close() // the script says ok and leaves
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("js/voice_failover.mjs: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("js/voice_failover.mjs did not end within 30 s of being told to:\n%s", out.String())
	}
	t.Logf("@discordjs/voice connection states:\n%s", out.String())
}
