package loadtest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestGatewayScenario(t *testing.T) {
	n := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunGateway(ctx, GatewayOptions{URL: n.base, Token: n.botToken, Sessions: 300, Rate: 300, Hold: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Counters["connected"] != 300 || r.Counters["failed"] != 0 || r.Latency["identify"].Count != 300 {
		t.Fatalf("counters %v latency %+v failures %v", r.Counters, r.Latency["identify"], r.Failures)
	}
	if r.Counters["server_bytes_per_session"] <= 0 || r.Latency["identify"].P99 <= 0 {
		t.Fatalf("memory and latency must be measured: %v", r.Counters)
	}
	if !r.Check([]SLO{mustSLO(t, "connected>=300"), mustSLO(t, "identify.p99<=30s")}) {
		t.Fatalf("SLOs: %+v", r.SLOs)
	}
	if r.Check([]SLO{mustSLO(t, "identify.p50<=0ms")}) {
		t.Fatal("an impossible SLO was met")
	}
	out := filepath.Join(t.TempDir(), "r.json")
	if err := r.WriteJSON(out); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); len(b) < 100 {
		t.Fatal("empty JSON result")
	}
}

// Failures are reported by close code, not as a hang.
func TestGatewayScenarioCountsFailures(t *testing.T) {
	n := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := RunGateway(ctx, GatewayOptions{URL: n.base, Token: "not-a-token", Sessions: 20, Rate: 100})
	if err != nil {
		t.Fatal(err)
	}
	if r.Counters["connected"] != 0 || r.Failures["close-4004"] != 20 {
		t.Fatalf("failures %v counters %v", r.Failures, r.Counters)
	}
	// A server that is gone: every session fails fast.
	n.cmd.Process.Kill()
	n.cmd.Wait()
	if _, err := RunGateway(ctx, GatewayOptions{URL: n.base, Token: n.botToken, Sessions: 5, Rate: 100}); err == nil {
		t.Fatal("a dead server was not reported")
	}
}

func mustSLO(t *testing.T, s string) SLO {
	t.Helper()
	slo, err := ParseSLO(s)
	if err != nil {
		t.Fatal(err)
	}
	return slo
}

func TestParseSLO(t *testing.T) {
	for in, want := range map[string]SLO{
		"delivery.p99<=250ms": {Metric: "delivery.p99", Max: true, Value: 250},
		"lost<=0":             {Metric: "lost", Max: true, Value: 0},
		"connected>=1000":     {Metric: "connected", Value: 1000},
		"identify.p99.9<=1s":  {Metric: "identify.p99.9", Max: true, Value: 1000},
	} {
		got, err := ParseSLO(in)
		want.Spec = in
		if err != nil || got != want {
			t.Errorf("%s: %+v %v", in, got, err)
		}
	}
	for _, bad := range []string{"p99", "<=3", "x<=fast"} {
		if _, err := ParseSLO(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	r := &Result{Latency: map[string]Summary{"identify": {P999: 5}}, Counters: map[string]float64{}}
	if !r.Check([]SLO{mustSLO(t, "identify.p99.9<=6ms")}) || r.Check([]SLO{mustSLO(t, "unknown<=1")}) {
		t.Fatal("check")
	}
}
