package loadtest

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Every attack runs against a live node beside chat and voice traffic:
// each gets its documented answer, legitimate users lose nothing, and the
// node is up and recovered no panic at the end.
func TestAbuseScenario(t *testing.T) {
	n := startNode(t, "--https", "127.0.0.1:0", "--voice", "127.0.0.1:0", "--identify-timeout", "1s")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunAbuse(ctx, AbuseOptions{URL: n.base, AdminToken: adminTokenFile(t, n),
		CAFile: filepath.Join(n.data, "tls", "ca.pem"), Sessions: 12, Guilds: 2, Rate: 20, Rooms: 1, Participants: 3,
		Duration: 3 * time.Second, IdentifyTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Counters
	if c["node_alive"] != 1 || c["panics_recovered"] != 0 {
		t.Fatalf("node alive %v, panics %v", c["node_alive"], c["panics_recovered"])
	}
	if c["unexpected_answers"] != 0 {
		t.Fatalf("unexpected answers: %v", r.Failures)
	}
	for _, name := range AttackNames() {
		key := "attempts_" + strings.Fields(name)[0]
		if c[key] < 1 {
			t.Fatalf("attack %s never ran (%v)", name, c)
		}
	}
	if c["chat_lost"] != 0 || c["chat_duplicated"] != 0 || c["chat_delivered"] == 0 {
		t.Fatalf("chat: lost %v duplicated %v delivered %v", c["chat_lost"], c["chat_duplicated"], c["chat_delivered"])
	}
	if c["voice_lost"] != 0 || c["voice_received_packets"] == 0 {
		t.Fatalf("voice: lost %v received %v", c["voice_lost"], c["voice_received_packets"])
	}
	// The node counted what it refused.
	for _, series := range []string{`node_gateway_closes_total{gateway="main",code="1002"}`,
		`node_gateway_closes_total{gateway="main",code="1007"}`, `node_gateway_closes_total{gateway="main",code="4002"}`,
		`node_gateway_closes_total{gateway="main",code="4003"}`, `node_gateway_closes_total{gateway="main",code="4004"}`,
		`node_gateway_closes_total{gateway="voice",code="4021"}`, `node_voice_dropped_total{reason="discovery_refused"}`,
		`node_voice_udp_dropped_total{reason="keepalive"}`} {
		if c[series] < 1 {
			t.Fatalf("%s not counted: %v", series, c)
		}
	}
}
