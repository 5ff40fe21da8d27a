package loadtest

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// Sessions spread over worker processes (the chorus binary itself, as the
// CLI's --procs runs it) and over two nodes that share nothing: every
// session counts once, the identify histograms merge, and a worker that
// dies before holding is reported instead of hanging the run.
func TestGatewayWorkersOverTwoNodes(t *testing.T) {
	a, b := startNode(t, "--voice", "off"), startNode(t, "--voice", "off")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := GatewayOptions{URL: a.base + "," + b.base, Token: a.botToken + "," + b.botToken, Sessions: 400, Rate: 400, Hold: 300 * time.Millisecond}
	started := 0
	worker := func(sessions int, rate float64) *exec.Cmd {
		started++
		cmd := exec.Command(chorusBin, "loadtest", "gateway", "--worker", "--url", o.URL, "--token", o.Token,
			"--sessions", strconv.Itoa(sessions), "--rate", strconv.FormatFloat(rate, 'f', -1, 64))
		cmd.Stderr = os.Stderr
		return cmd
	}
	r, err := RunGatewayWorkers(ctx, o, 3, worker)
	if err != nil {
		t.Fatal(err)
	}
	c := r.Counters
	if started != 3 || c["processes"] != 3 || c["connected"] != 400 || c["failed"] != 0 || r.Latency["identify"].Count != 400 || len(r.Failures) != 0 {
		t.Fatalf("counters %v latency %+v failures %v", c, r.Latency["identify"], r.Failures)
	}
	if c["server_bytes_per_session"] <= 0 || c["client_bytes_per_session"] <= 0 || len(r.Timeline) == 0 {
		t.Fatalf("memory and timeline must be measured: %v", c)
	}
	// Per node: about half the sessions each (each worker alternates over
	// the nodes), their identify latency, and each node's memory per
	// session.
	if c["node1_connected"]+c["node2_connected"] != 400 {
		t.Fatalf("per node: %v", c)
	}
	for _, k := range []string{"1", "2"} {
		n := c["node"+k+"_connected"]
		if n < 190 || c["node"+k+"_failed"] != 0 || float64(r.Latency["identify_node"+k].Count) != n ||
			c["node"+k+"_server_bytes_per_session"] <= 0 {
			t.Fatalf("node %s: counters %v latency %+v", k, c, r.Latency["identify_node"+k])
		}
	}
	// The same in one process.
	r, err = RunGateway(ctx, GatewayOptions{URL: o.URL, Token: o.Token, Sessions: 100, Rate: 400, Hold: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if c := r.Counters; c["node1_connected"] != 50 || c["node2_connected"] != 50 || r.Latency["identify_node2"].Count != 50 ||
		c["node2_server_bytes_per_session"] == 0 {
		t.Fatalf("one process over two nodes: %v", c)
	}

	// One worker of two dies at once: the other's sessions are reported,
	// and the loss is named.
	dead := 0
	r, err = RunGatewayWorkers(ctx, o, 2, func(sessions int, rate float64) *exec.Cmd {
		if dead++; dead == 1 {
			return exec.Command("sh", "-c", "exit 3")
		}
		return worker(sessions, rate)
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Counters["connected"] != 200 || r.Failures["worker-lost"] != 1 {
		t.Fatalf("counters %v failures %v", r.Counters, r.Failures)
	}
	// Tokens must match the nodes.
	if _, err := RunGateway(ctx, GatewayOptions{URL: o.URL, Token: "a,b,c", Sessions: 1, Rate: 1}); err == nil {
		t.Fatal("three tokens for two nodes accepted")
	}
}

// Chat with its sessions in two worker processes: the workers' deliveries
// and histograms add up to what one process would count — every message
// to every member, once.
func TestChatWorkers(t *testing.T) {
	n := startNode(t, "--voice", "off")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	started := 0
	r, err := RunChat(ctx, ChatOptions{URL: n.base, AdminToken: adminTokenFile(t, n), Sessions: 40, Guilds: 4, HugeShare: 0.5,
		Rate: 20, Duration: 2 * time.Second, Procs: 2, Worker: func() *exec.Cmd {
			started++
			cmd := exec.Command(chorusBin, "loadtest", "chat", "--worker")
			cmd.Stderr = os.Stderr
			return cmd
		}})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Counters
	if started != 2 || c["sent"] < 20 || c["delivered"] != c["expected_deliveries"] || c["lost"] != 0 || c["duplicated"] != 0 {
		t.Fatalf("workers %d, counters %v", started, c)
	}
	if got := r.Latency["delivery"].Count; float64(got) != c["delivered"] || r.Latency["delivery_huge"].Count == 0 {
		t.Fatalf("latency %+v for %v deliveries", r.Latency, c["delivered"])
	}
	// Churn needs the sessions in this process.
	if _, err := RunChat(ctx, ChatOptions{URL: n.base, Sessions: 2, Guilds: 1, Rate: 1, Duration: time.Second, ChurnPerSecond: 1,
		Procs: 2, Worker: func() *exec.Cmd { return nil }}); err == nil {
		t.Fatal("churn over worker processes accepted")
	}
}
