package loadtest

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/crypto"
)

func TestVoiceScenario(t *testing.T) {
	n := startNode(t, "--https", "127.0.0.1:0", "--voice", "127.0.0.1:0")
	tok, _ := os.ReadFile(filepath.Join(n.data, "admin.token"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunVoice(ctx, VoiceOptions{URL: n.base, AdminToken: strings.TrimSpace(string(tok)), CAFile: n.ca,
		Rooms: 3, Participants: 4, Speakers: 2, Duration: 2 * time.Second,
		Modes: []crypto.Mode{crypto.AES256GCMRTPSize, crypto.XChaCha20Poly1305RTPSize, crypto.XSalsa20Poly1305Lite}})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Counters
	// 6 speakers × ~100 packets × 3 listeners each, and nothing lost on loopback.
	if c["sent_packets"] < 400 || c["received_packets"] != c["expected_packets"] || c["loss_percent"] != 0 {
		t.Fatalf("counters %v", c)
	}
	if r.Latency["forwarding"].Count == 0 || c["server_cpu_us_per_forwarded_packet"] <= 0 || c["forwarded_packets_per_s"] <= 0 {
		t.Fatalf("latency %+v counters %v", r.Latency, c)
	}
}

// Loss injected by a proxy (every 10th RTP packet a speaker sends) shows up
// in the report as exactly that loss.
func TestVoiceScenarioReportsInjectedLoss(t *testing.T) {
	n := startNode(t, "--https", "127.0.0.1:0", "--voice", "127.0.0.1:0")
	tok, _ := os.ReadFile(filepath.Join(n.data, "admin.token"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var proxy *lossProxy
	var once sync.Once
	r, err := RunVoice(ctx, VoiceOptions{URL: n.base, AdminToken: strings.TrimSpace(string(tok)), CAFile: n.ca,
		Rooms: 2, Participants: 3, Speakers: 1, Duration: 2 * time.Second,
		Route: func(server netip.AddrPort) netip.AddrPort {
			once.Do(func() { proxy = newLossProxy(t, server, 10) })
			return proxy.addr()
		}})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Counters
	dropped := float64(proxy.dropped.Load())
	lost := c["expected_packets"] - c["received_packets"]
	// Each dropped packet was due at the 2 other participants of its room.
	if dropped < 10 || lost != 2*dropped {
		t.Fatalf("proxy dropped %v packets, report says %v lost (%v)", dropped, lost, c)
	}
	want := 100 * lost / c["expected_packets"]
	if got := c["loss_percent"]; got < want-0.001 || got > want+0.001 {
		t.Fatalf("loss_percent %v, want %v", got, want)
	}
}

// Mixed rooms (--webrtc-share): half of each room joins over WebRTC,
// one of the two speakers among them; everyone hears everyone, and the
// report says what each kind of receiver got.
func TestVoiceScenarioMixedRooms(t *testing.T) {
	n := startNode(t, "--https", "127.0.0.1:0", "--voice", "127.0.0.1:0")
	tok, _ := os.ReadFile(filepath.Join(n.data, "admin.token"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunVoice(ctx, VoiceOptions{URL: n.base, AdminToken: strings.TrimSpace(string(tok)), CAFile: n.ca,
		Rooms: 2, Participants: 4, Speakers: 2, Duration: 2 * time.Second, WebRTCShare: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Counters
	// Per room, seats 1 and 3 are WebRTC: speaker 0 (UDP) reaches 2
	// WebRTC receivers, speaker 1 (WebRTC) reaches 1 (seat 3).
	if c["webrtc_participants"] != 4 || c["sent_packets"] < 300 || c["received_packets"] != c["expected_packets"] ||
		c["webrtc_loss_percent"] != 0 || c["udp_loss_percent"] != 0 || c["webrtc_received_packets"] < 0.4*c["received_packets"] {
		t.Fatalf("counters %v", c)
	}
	if _, err := RunVoice(ctx, VoiceOptions{URL: n.base, Rooms: 1, Participants: 2, Speakers: 1, WebRTCShare: 1.5}); err == nil ||
		!strings.Contains(err.Error(), "between 0 and 1") {
		t.Fatalf("a share of 1.5: %v", err)
	}
}

func TestWebRTCSeats(t *testing.T) {
	for _, tc := range []struct {
		share float64
		n     int
		want  string
	}{
		{0, 4, "...."},
		{1, 4, "wwww"},
		{0.5, 4, ".w.w"},
		{0.25, 8, "...w...w"},
		{0.3, 10, "...w..w..w"},
	} {
		var got []byte
		for j := range tc.n {
			if webrtcSeat(j, tc.share) {
				got = append(got, 'w')
			} else {
				got = append(got, '.')
			}
		}
		if string(got) != tc.want {
			t.Errorf("share %v of %d: %s, want %s", tc.share, tc.n, got, tc.want)
		}
	}
}
