package loadtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestChatScenarioLossless(t *testing.T) {
	n := startNode(t)
	tok, err := os.ReadFile(filepath.Join(n.data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunChat(ctx, ChatOptions{URL: n.base, AdminToken: strings.TrimSpace(string(tok)), Sessions: 60, Guilds: 6,
		HugeShare: 0.5, SizeSkew: 1, Rate: 40, Duration: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Counters
	// 30 members over 5 guilds by 1/k: 2 each, then the other 20 as 9, 5, 3, 2, 1.
	if c["sent"] < 60 || c["send_failed"] != 0 || c["huge_guild_members"] != 30 || c["largest_other_guild_members"] != 11 || c["smallest_other_guild_members"] != 3 {
		t.Fatalf("counters %v failures %v", c, r.Failures)
	}
	// A lossless run: every member got every message of its guild once.
	if c["lost"] != 0 || c["duplicated"] != 0 || c["delivered"] != c["expected_deliveries"] || c["delivered"] == 0 {
		t.Fatalf("lost %v duplicated %v delivered %v expected %v", c["lost"], c["duplicated"], c["delivered"], c["expected_deliveries"])
	}
	if r.Latency["delivery_huge"].Count == 0 || r.Latency["delivery_small"].Count == 0 ||
		r.Latency["delivery"].Count != uint64(c["delivered"]) {
		t.Fatalf("latency %+v", r.Latency)
	}
	if !r.Check([]SLO{mustSLO(t, "lost<=0"), mustSLO(t, "duplicated<=0")}) {
		t.Fatal("lossless SLOs missed")
	}
	// Wrong admin token: a clear error, not a hang.
	if _, err := RunChat(ctx, ChatOptions{URL: n.base, AdminToken: "nope", Sessions: 2, Guilds: 1, Rate: 1, Duration: time.Second}); err == nil {
		t.Fatal("bad admin token accepted")
	}
}

// Churn: sessions drop and resume while chat runs; every resume succeeds
// and no event is missed or repeated.
func TestChurnScenario(t *testing.T) {
	n := startNode(t)
	tok, _ := os.ReadFile(filepath.Join(n.data, "admin.token"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunChat(ctx, ChatOptions{URL: n.base, AdminToken: strings.TrimSpace(string(tok)), Sessions: 40, Guilds: 4,
		HugeShare: 0.5, Rate: 40, Duration: 3 * time.Second, ChurnPerSecond: 8})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Counters
	if r.Scenario != "churn" || c["drops"] < 10 || c["resumed"] != c["drops"] || c["resume_errors"] != 0 || c["invalid_sessions"] != 0 {
		t.Fatalf("churn counters %v", c)
	}
	if c["missed_after_resume"] != 0 || c["duplicated"] != 0 || c["delivered"] != c["expected_deliveries"] {
		t.Fatalf("events missed or repeated across resumes: %v", c)
	}
}

// Churn where half the dropped sessions start over instead of resuming:
// those close 1000, identify afresh and read what they missed from
// history, so nothing is lost or counted twice either way.
func TestChurnScenarioReidentify(t *testing.T) {
	n := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunChat(ctx, ChatOptions{URL: n.base, AdminToken: adminTokenFile(t, n), Sessions: 40, Guilds: 4,
		HugeShare: 0.5, Rate: 40, Duration: 3 * time.Second, ChurnPerSecond: 10, ReidentifyShare: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Counters
	t.Logf("counters %v", c)
	if c["reidentified"] < 3 || c["drops"] < 3 || c["reidentify_errors"] != 0 || c["resume_errors"] != 0 || c["resumed"] != c["drops"] {
		t.Fatalf("churn counters %v", c)
	}
	if c["lost"] != 0 || c["duplicated"] != 0 || c["delivered"]+c["recovered_from_history"] != c["expected_deliveries"] {
		t.Fatalf("events lost or repeated across re-identifies: %v", c)
	}
	if _, err := RunChat(ctx, ChatOptions{URL: n.base, Sessions: 2, Guilds: 1, Rate: 1, Duration: time.Second, ReidentifyShare: 2}); err == nil {
		t.Fatal("re-identify share 2 accepted")
	}
}

func TestGuildSizes(t *testing.T) {
	for _, tc := range []struct {
		n, g  int
		skew  float64
		first int // size of the largest
	}{
		{700, 49, 1, 136}, // 2 + 602/H49, H49 ≈ 4.4792
		{100, 10, 0, 10},
		{5, 10, 1, 1},
		{0, 3, 1, 0},
	} {
		sizes := guildSizes(tc.n, tc.g, tc.skew)
		sum := 0
		for k, s := range sizes {
			sum += s
			if k > 0 && s > sizes[k-1] {
				t.Errorf("%+v: sizes grow at %d: %v", tc, k, sizes)
			}
		}
		if sum != tc.n || len(sizes) != tc.g || (tc.n > 0 && sizes[0] < tc.first) || (tc.n >= 2*tc.g && sizes[tc.g-1] < 2) {
			t.Errorf("%+v: %v (sum %d)", tc, sizes, sum)
		}
	}
}

func TestParseLoad(t *testing.T) {
	if sent, seq, ok := parseLoad(loadContent(42)); !ok || seq != 42 || time.Since(time.Unix(0, sent)) > time.Minute {
		t.Fatalf("round trip: %d %d %v", sent, seq, ok)
	}
	for _, bad := range []string{"", "hello", "lt 1", "lt 1 2 3", "xx 1 2", "lt a 2", "lt 1 -2", "lt 1 b"} {
		if _, _, ok := parseLoad(bad); ok {
			t.Errorf("%q parsed as a load message", bad)
		}
	}
}
