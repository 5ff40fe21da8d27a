package interop

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
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

	// hearBoth reads vc until packets from two speakers have arrived and
	// returns when each first did.
	hearBoth := func(vc *loadtest.VoiceClient) (map[uint32]time.Time, error) {
		first := map[uint32]time.Time{}
		for deadline := time.Now().Add(30 * time.Second); len(first) < 2; {
			if time.Now().After(deadline) {
				return first, fmt.Errorf("heard %d speakers in 30 s", len(first))
			}
			ssrc, _, err := vc.Receive(100 * time.Millisecond)
			if err == nil && first[ssrc].IsZero() {
				first[ssrc] = time.Now()
			}
		}
		return first, nil
	}
	if _, err := hearBoth(bob); err != nil {
		t.Fatalf("before the kill: %v", err)
	}

	followed := make(chan *loadtest.VoiceClient, 1)
	go func() {
		vc, err := loadtest.FollowVoiceServer(ctx, bobGW, dialer, demo.Guild, demo.IDs["bob"], bob.Session, crypto.AES256GCM)
		if err != nil {
			t.Error(err)
		}
		followed <- vc
	}()
	killed := time.Now()
	victim.Kill()
	moved := <-followed
	if moved == nil {
		t.FailNow()
	}
	t.Cleanup(func() { moved.Close() })
	first, err := hearBoth(moved)
	if err != nil {
		t.Fatalf("after the kill of %s: %v", victim.ID, err)
	}
	for ssrc, at := range first {
		t.Logf("bob hears the disgo client with SSRC %d again %v after the kill of %s", ssrc, at.Sub(killed), victim.ID)
	}
}
