package interop

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
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

	"github.com/chorus-voice/chorus/loadtest"
)

// frameSource plays fixture frames, then reports the end.
type frameSource struct {
	mu     sync.Mutex
	frames [][]byte
}

func (s *frameSource) ProvideOpusFrame() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.frames) == 0 {
		return nil, io.EOF
	}
	f := s.frames[0]
	s.frames = s.frames[1:]
	return f, nil
}

func (s *frameSource) Close() {}

// frameSink keeps the frames received per user, silence frames left out.
type frameSink struct {
	mu  sync.Mutex
	got map[snowflake.ID][][]byte
}

func (s *frameSink) ReceiveOpusFrame(user snowflake.ID, p *voice.Packet) error {
	if bytes.Equal(p.Opus, voice.SilenceAudioFrame) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got[user] = append(s.got[user], bytes.Clone(p.Opus))
	return nil
}

func (s *frameSink) CleanupUser(snowflake.ID) {}
func (s *frameSink) Close()                   {}

func (s *frameSink) count(user snowflake.ID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got[user])
}

func voiceBot(t *testing.T, c *chorus, token string, pool *x509.CertPool) *bot.Client {
	t.Helper()
	ready := make(chan struct{}, 1)
	client, err := disgo.New(token,
		bot.WithRestClientConfigOpts(rest.WithURL("http://"+c.HTTP+"/api/v10")),
		bot.WithCacheConfigOpts(cache.WithCaches(cache.FlagsAll)),
		bot.WithGatewayConfigOpts(gateway.WithURL("ws://"+c.HTTP),
			gateway.WithIntents(gateway.IntentGuilds, gateway.IntentGuildVoiceStates)),
		bot.WithVoiceManagerConfigOpts(voice.WithConnConfigOpts(voice.WithConnGatewayConfigOpts(
			voice.WithGatewayDialer(&websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 10 * time.Second})))),
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
	return client
}

func TestDisgoVoice(t *testing.T) {
	// Both modes disgo implements; the server offers one at a time.
	for _, mode := range []string{"aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize"} {
		t.Run(mode, func(t *testing.T) { testDisgoVoice(t, mode) })
	}
}

func testDisgoVoice(t *testing.T, mode string) {
	c := startChorus(t, "--voice-modes", mode)
	pem, err := os.ReadFile(c.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	guildID, lounge := snowflake.MustParse(c.GuildID), snowflake.MustParse(c.Lounge)
	botID, aliceID := snowflake.MustParse(c.IDs["bot"]), snowflake.MustParse(c.IDs["alice"])

	type side struct {
		conn voice.Conn
		sink *frameSink
		sent [][]byte
	}
	join := func(token, fixture string) *side {
		client := voiceBot(t, c, token, pool)
		frames, err := loadtest.OpusFrames(fixture)
		if err != nil {
			t.Fatal(err)
		}
		s := &side{sink: &frameSink{got: map[snowflake.ID][][]byte{}}, sent: frames}
		s.conn = client.VoiceManager.CreateConn(guildID)
		if err := s.conn.Open(within(t, 20*time.Second), lounge, false, false); err != nil {
			t.Fatalf("voice open: %v", err)
		}
		// disgo's receiver reads the UDP socket, which exists once Open returned.
		s.conn.SetOpusFrameReceiver(s.sink)
		t.Cleanup(func() { s.conn.Close(context.Background()) })
		return s
	}
	b := join(c.Tokens["bot"], "a")
	a := join(c.Tokens["alice"], "b")
	b.conn.SetOpusFrameProvider(&frameSource{frames: b.sent})
	a.conn.SetOpusFrameProvider(&frameSource{frames: a.sent})

	deadline := time.Now().Add(30 * time.Second)
	for (a.sink.count(botID) < len(b.sent) || b.sink.count(aliceID) < len(a.sent)) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	check := func(name string, got, sent [][]byte) {
		if len(got) != len(sent) {
			t.Fatalf("%s: received %d frames, sent %d", name, len(got), len(sent))
		}
		for i := range sent {
			if !bytes.Equal(got[i], sent[i]) {
				t.Fatalf("%s: frame %d differs", name, i)
			}
		}
	}
	a.sink.mu.Lock()
	check("alice from bot", a.sink.got[botID], b.sent)
	a.sink.mu.Unlock()
	b.sink.mu.Lock()
	check("bot from alice", b.sink.got[aliceID], a.sent)
	b.sink.mu.Unlock()
}
