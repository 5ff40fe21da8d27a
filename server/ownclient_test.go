package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/loadtest"
)

// The load tester's own voice client (wire only) carries real Opus frames
// in the modes no library we test with selects any more: the xsalsa20
// family and non-rtpsize AES-GCM.
func TestOwnVoiceClientDeprecatedModes(t *testing.T) {
	f, pool := voiceFixture(t)
	frames, err := loadtest.OpusFrames("a")
	if err != nil {
		t.Fatal(err)
	}
	frames = frames[:50]
	dialer := &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	gwURL := "ws://" + f.node.HTTPAddr
	aliceGW, err := loadtest.DialGateway(ctx, nil, gwURL, f.demo.AliceToken, 1|1<<7)
	if err != nil {
		t.Fatal(err)
	}
	defer aliceGW.Close()
	bobGW, err := loadtest.DialGateway(ctx, nil, gwURL, f.demo.BobToken, 1|1<<7)
	if err != nil {
		t.Fatal(err)
	}
	defer bobGW.Close()
	guild, lounge := f.demo.GuildID.String(), f.demo.Lounge.String()
	for _, mode := range []crypto.Mode{crypto.XSalsa20Poly1305, crypto.XSalsa20Poly1305Suffix, crypto.XSalsa20Poly1305Lite,
		crypto.XSalsa20Poly1305LiteRTPSize, crypto.AES256GCM} {
		t.Run(mode.String(), func(t *testing.T) {
			alice, err := loadtest.JoinVoice(ctx, aliceGW, dialer, guild, lounge, f.demo.Alice.ID.String(), mode)
			if err != nil {
				t.Fatal(err)
			}
			defer alice.Close()
			bob, err := loadtest.JoinVoice(ctx, bobGW, dialer, guild, lounge, f.demo.Bob.ID.String(), mode)
			if err != nil {
				t.Fatal(err)
			}
			defer bob.Close()
			alice.SetSpeaking(1)
			for i, fr := range frames {
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
				if who := bob.Speaker(ssrc); i > 0 && who != f.demo.Alice.ID.String() {
					t.Fatalf("frame %d attributed to %q", i, who)
				}
			}
			for _, gw := range []*loadtest.GatewayClient{aliceGW, bobGW} {
				gw.Send(4, map[string]any{"guild_id": guild, "channel_id": nil})
			}
			time.Sleep(100 * time.Millisecond)
		})
	}
}
