package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// faultNode starts a node whose address and data survive a restart, and
// returns a script that kills it (SIGKILL: no goodbye to anyone) and,
// when restart is set, starts it again on the same address and data.
func faultNode(t *testing.T, restart bool) (*node, string) {
	t.Helper()
	n := startNode(t, "--voice", "off")
	u, err := url.Parse(n.base)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "restarted.pid")
	script := fmt.Sprintf("kill -9 %d\n", n.cmd.Process.Pid)
	if restart {
		script += fmt.Sprintf("sleep 0.3\n%s serve --data %s --http %s --https off --voice off --max-concurrency 100000 --rest-rate 100000 >%s 2>&1 &\necho $! >%s\n",
			chorusBin, n.data, u.Host, filepath.Join(dir, "restarted.log"), pidFile)
		t.Cleanup(func() {
			b, err := os.ReadFile(pidFile)
			if err != nil {
				return
			}
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(pid, syscall.SIGTERM)
				for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
					time.Sleep(50 * time.Millisecond)
				}
				syscall.Kill(pid, syscall.SIGKILL)
			}
		})
	}
	path := filepath.Join(dir, "fault.sh")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return n, path
}

func adminTokenFile(t *testing.T, n *node) string {
	b, err := os.ReadFile(filepath.Join(n.data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// A node killed and started again mid-run: every session comes back by
// itself (resume refused by the new process, so a fresh identify), every
// acknowledged message is in the history exactly once, and everything
// sent after recovery reaches every member live.
func TestFaultScenarioKillAndRestart(t *testing.T) {
	n, script := faultNode(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunChat(ctx, ChatOptions{URL: n.base, AdminToken: adminTokenFile(t, n), Sessions: 30, Guilds: 3,
		HugeShare: 0.5, Rate: 30, Duration: 4 * time.Second,
		Fault: &Fault{Command: "sh " + script, At: 1500 * time.Millisecond, RecoverWithin: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Counters
	t.Logf("fault counters %v failures %v", c, r.Failures)
	if r.Scenario != "fault" || c["fault_exit_code"] != 0 || len(r.Failures) != 0 {
		t.Fatalf("fault run: scenario %s counters %v failures %v", r.Scenario, c, r.Failures)
	}
	if c["sessions_disrupted"] != 30 || c["sessions_unrecovered"] != 0 || c["reidentified"] != 30 {
		t.Fatalf("sessions: %v", c)
	}
	if c["send_retries"] == 0 || c["send_failed"] != 0 || c["acknowledged"] != c["sent"] || c["sent"] < 100 {
		t.Fatalf("sends: %v", c)
	}
	if c["lost"] != 0 || c["stored_twice"] != 0 || c["missed_after_recovery"] != 0 || c["duplicated"] != 0 {
		t.Fatalf("loss: %v", c)
	}
	if c["recovery_ms"] < 300 || c["recovery_ms"] > 30000 || c["recovery_ms"] < c["sessions_recovered_ms"] || c["recovery_ms"] < c["sends_recovered_ms"] {
		t.Fatalf("recovery: %v", c)
	}
	if !r.Check([]SLO{mustSLO(t, "lost<=0"), mustSLO(t, "recovery_ms<=30s")}) || r.Check([]SLO{mustSLO(t, "recovery_ms<=1ms")}) {
		t.Fatalf("SLOs: %+v", r.SLOs)
	}
	// The report marks the fault and the recovery on its timeline.
	if len(r.Marks) != 2 || r.Marks[0].Label != "fault" || r.Marks[1].Label != "recovered" || r.Marks[1].Second <= r.Marks[0].Second {
		t.Fatalf("marks %+v", r.Marks)
	}
	var page strings.Builder
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(page.String(), `class="mark"`); n != 2 {
		t.Fatalf("%d marks drawn", n)
	}
}

// A node killed for good: the run ends within its recovery bound and says
// so, instead of hanging; loss cannot be measured without the node.
func TestFaultScenarioNodeStaysDown(t *testing.T) {
	n, script := faultNode(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	r, err := RunChat(ctx, ChatOptions{URL: n.base, AdminToken: adminTokenFile(t, n), Sessions: 10, Guilds: 2,
		HugeShare: 0.5, Rate: 20, Duration: 2 * time.Second,
		Fault: &Fault{Command: "sh " + script, At: 500 * time.Millisecond, RecoverWithin: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Counters
	if took := time.Since(began); took > 30*time.Second {
		t.Fatalf("a dead node held the run for %v", took)
	}
	if c["sessions_unrecovered"] != 10 || r.Failures["not-recovered"] == 0 || r.Failures["history-unreadable"] == 0 || c["send_failed"] == 0 {
		t.Fatalf("counters %v failures %v", c, r.Failures)
	}
	if _, measured := c["lost"]; measured {
		t.Fatalf("loss reported without the history: %v", c)
	}
	if r.Check([]SLO{mustSLO(t, "lost<=0")}) || r.Check([]SLO{mustSLO(t, "recovery_ms<=10s")}) {
		t.Fatalf("SLOs met by a dead node: %+v", r.SLOs)
	}
}

func TestFaultOptionsRejected(t *testing.T) {
	o := ChatOptions{URL: "http://127.0.0.1:1", Sessions: 2, Guilds: 1, Rate: 1, Duration: time.Second}
	for _, f := range []Fault{{Command: ""}, {Command: "true", At: 2 * time.Second}, {Command: "true", At: -1},
		{Heal: "true", HealAfter: time.Second, Signal: syscall.SIGKILL, Node: "http://127.0.0.1:1"}, {Command: "true", Heal: "true"},
		{Command: "true", Run: func(context.Context) error { return nil }}} {
		if _, err := RunChat(context.Background(), ChatOptions{URL: o.URL, Sessions: 2, Guilds: 1, Rate: 1, Duration: time.Second, Fault: &f}); err == nil {
			t.Errorf("fault %+v accepted", f)
		}
	}
	o.ChurnPerSecond = 1
	o.Fault = &Fault{Command: "true"}
	if _, err := RunChat(context.Background(), o); err == nil {
		t.Error("fault with churn accepted")
	}
}

// Under the gateway scenario: idle sessions of a node killed and started
// again all come back by themselves, and the report says when and how
// long each was away.
func TestFaultUnderGateway(t *testing.T) {
	n, script := faultNode(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunGateway(ctx, GatewayOptions{URL: n.base, Token: n.botToken, Sessions: 200, Rate: 400, Hold: 3 * time.Second,
		Fault: &Fault{Command: "sh " + script, At: time.Second, RecoverWithin: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Counters
	if r.Scenario != "fault" || r.Params["under"] != "gateway" || len(r.Failures) != 0 || c["connected"] != 200 {
		t.Fatalf("scenario %s counters %v failures %v", r.Scenario, c, r.Failures)
	}
	if c["sessions_disrupted"] != 200 || c["sessions_unrecovered"] != 0 || c["reidentified"] != 200 {
		t.Fatalf("sessions: %v", c)
	}
	if c["recovery_ms"] < 300 || c["recovery_ms"] > 30000 || r.Latency["session_outage"].Count != 200 ||
		r.Latency["session_outage"].Max > c["recovery_ms"]+1000 {
		t.Fatalf("recovery: %v outage %+v", c, r.Latency["session_outage"])
	}
	if _, err := RunGateway(ctx, GatewayOptions{URL: n.base, Token: n.botToken, Sessions: 1, Rate: 1, Hold: time.Second,
		Fault: &Fault{Command: "true", At: 2 * time.Second}}); err == nil {
		t.Fatal("a fault after the hold accepted")
	}
}

// A node frozen for 3 s (SIGSTOP, then SIGCONT) keeps its sessions: the
// clients see their heartbeats go unacknowledged, drop the connections as
// zombies, and resume once the node answers again — every session resumes
// (none starts over) and every event missed meanwhile is replayed.
func TestFaultFreezeResumes(t *testing.T) {
	n := startNode(t, "--voice", "off", "--heartbeat-interval", "1s")
	script := filepath.Join(t.TempDir(), "freeze.sh")
	pid := n.cmd.Process.Pid
	os.WriteFile(script, []byte(fmt.Sprintf("kill -STOP %d\nsleep 3\nkill -CONT %d\n", pid, pid)), 0o755)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunChat(ctx, ChatOptions{URL: n.base, AdminToken: adminTokenFile(t, n), Sessions: 20, Guilds: 2,
		HugeShare: 0.5, Rate: 20, Duration: 6 * time.Second,
		Fault: &Fault{Command: "sh " + script, At: 1500 * time.Millisecond, RecoverWithin: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Counters
	t.Logf("freeze counters %v failures %v", c, r.Failures)
	if len(r.Failures) != 0 || c["sessions_disrupted"] != 20 || c["sessions_unrecovered"] != 0 || c["reidentified"] != 0 || c["resumed"] < 20 {
		t.Fatalf("sessions through a freeze: %v %v", c, r.Failures)
	}
	if c["lost"] != 0 || c["stored_twice"] != 0 || c["missed_live"] != 0 || c["duplicated"] != 0 || c["acknowledged"] != c["sent"] {
		t.Fatalf("events through a freeze: %v", c)
	}
	if c["recovery_ms"] < 3000 {
		t.Fatalf("recovered in %v ms from a 3 s freeze", c["recovery_ms"])
	}
}

// A fault may be a function of the program running the load test: it is
// called once, at its time, while the sessions are up, and an error it
// returns is the fault's failure in the report.
func TestFaultRunsAFunction(t *testing.T) {
	n := startNode(t, "--voice", "off")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var calls atomic.Int32
	r, err := RunGateway(ctx, GatewayOptions{URL: n.base, Token: n.botToken, Sessions: 5, Rate: 50, Hold: 2 * time.Second,
		Fault: &Fault{At: 500 * time.Millisecond, RecoverWithin: 5 * time.Second, Run: func(context.Context) error {
			calls.Add(1)
			return errors.New("the test's fault failed")
		}}})
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 || r.Counters["fault_exit_code"] != 1 || r.Params["fault_error"] != "the test's fault failed" ||
		r.Failures["fault-command-exit-1"] != 1 || r.Counters["fault_at_ms"] < 500 {
		t.Fatalf("called %d times; counters %v params %v failures %v", calls.Load(), r.Counters, r.Params, r.Failures)
	}
}
