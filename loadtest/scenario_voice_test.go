package loadtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
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
