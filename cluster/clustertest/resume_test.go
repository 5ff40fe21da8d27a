package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/loadtest"
	"github.com/chorus-voice/chorus/protocol"
)

// A session resumes at another node than the one holding it: the new node
// takes it over (signaling/handoff.go), and the client gets exactly the
// events it missed, with their sequence numbers, then RESUMED, then live
// events from the new node — nothing twice, nothing lost.
func TestResumeOnAnotherNode(t *testing.T) {
	c := Start(t, 2)
	demo := c.Nodes[0].Demo
	n1, n2 := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := session(t, ctx, n1, demo.Tokens["alice"], demo.Guild)
	alice.Resumable.Store(true)
	bot := demo.Tokens["bot"]

	first := mustSend(t, ctx, n2, bot, demo.General, "before")
	if got := nextMessages(t, ctx, alice, 1); got[0].id != first {
		t.Fatalf("got %v, want %s", got, first)
	}
	alice.Drop()
	var missed []string
	for i := range 6 { // through both nodes: one owns the guild
		missed = append(missed, mustSend(t, ctx, c.Nodes[i%2], bot, demo.General, fmt.Sprint("missed ", i)))
	}
	alice.ResumeAt("ws://" + n2.HTTP)
	if err := alice.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	replayed := untilResumed(t, ctx, alice)
	if !slices.Equal(ids(replayed), missed) {
		t.Fatalf("replayed %v, want the missed %v", ids(replayed), missed)
	}
	for i := 1; i < len(replayed); i++ {
		if replayed[i].seq != replayed[i-1].seq+1 {
			t.Fatalf("replayed sequence numbers %v are not consecutive", replayed)
		}
	}
	after := mustSend(t, ctx, n1, bot, demo.General, "after")
	// RESUMED took the next number.
	if got := nextMessages(t, ctx, alice, 1); got[0].id != after || got[0].seq != replayed[len(replayed)-1].seq+2 {
		t.Fatalf("after the resume got %v, want %s after RESUMED, which followed seq %d", got, after, replayed[len(replayed)-1].seq)
	}
	for _, m := range []struct {
		nd   *Node
		name string
	}{{n2, "chorus_gateway_sessions_taken_over_total"}, {n1, "chorus_gateway_sessions_handed_off_total"}} {
		if v, err := m.nd.Metric(m.name); err != nil || v != 1 {
			t.Errorf("%s %s = %v (%v), want 1", m.nd.ID, m.name, v, err)
		}
	}
	// The old node forgot the session: resuming there again finds it at
	// n2 and takes it back.
	alice.Drop()
	again := mustSend(t, ctx, n2, bot, demo.General, "again")
	alice.ResumeAt("ws://" + n1.HTTP)
	if err := alice.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if got := untilResumed(t, ctx, alice); !slices.Equal(ids(got), []string{again}) {
		t.Fatalf("second resume replayed %v, want [%s]", ids(got), again)
	}
}

type seen struct {
	id  string
	seq int64
}

func ids(ms []seen) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.id
	}
	return out
}

func mustSend(t *testing.T, ctx context.Context, nd *Node, token, channel, content string) string {
	t.Helper()
	a, _, err := sendRetrying(ctx, nd, token, channel, content, content)
	if err != nil {
		t.Fatal(err)
	}
	return a.id
}

// nextMessages reads the next n MESSAGE_CREATEs.
func nextMessages(t *testing.T, ctx context.Context, gc *loadtest.GatewayClient, n int) []seen {
	t.Helper()
	var out []seen
	for len(out) < n {
		ev, err := gc.Next(ctx, protocol.EventMessageCreate)
		if err != nil {
			t.Fatalf("after %v: %v", out, err)
		}
		var m struct{ ID string }
		json.Unmarshal(ev.D, &m)
		out = append(out, seen{m.ID, ev.S})
	}
	return out
}

// untilResumed returns the MESSAGE_CREATEs replayed before RESUMED, and
// fails on any READY (the resume was refused and the session started over).
func untilResumed(t *testing.T, ctx context.Context, gc *loadtest.GatewayClient) []seen {
	t.Helper()
	var out []seen
	for {
		select {
		case ev := <-gc.Events:
			switch ev.T {
			case protocol.EventResumed:
				return out
			case protocol.EventReady:
				t.Fatalf("READY instead of RESUMED (after %v)", out)
			case protocol.EventMessageCreate:
				var m struct{ ID string }
				json.Unmarshal(ev.D, &m)
				out = append(out, seen{m.ID, ev.S})
			}
		case <-ctx.Done():
			t.Fatalf("no RESUMED (invalidated %d times) after %v", gc.Invalidated.Load(), out)
		}
	}
}

// A rolling restart of all three nodes, one at a time, behind a load
// balancer, while a bot sends messages: every node's SIGTERM tells its
// sessions to reconnect (op 7), they resume at other nodes, which take
// them over, and every session gets every acknowledged message exactly
// once, in order, without ever identifying again.
//
// Every node keeps a copy of another's sessions (--session-copies, the
// default): the copies must not get in the way of the handoffs.
func TestRollingRestart(t *testing.T) { rollingRestart(t, "--log-level", "debug") }

// The same without session copies: the handoffs alone.
func TestRollingRestartWithoutSessionCopies(t *testing.T) {
	rollingRestart(t, "--session-copies=false")
}

func rollingRestart(t *testing.T, extra ...string) {
	c, lb := StartBalanced(t, 3, extra...)
	demo := c.Nodes[0].Demo
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	front := &Node{ID: "balancer", HTTP: lb.Addr()}

	const perUser = 8
	var clients []*loadtest.GatewayClient
	var firstIDs []string // for the failure messages
	for _, user := range []string{"alice", "bob"} {
		for range perUser {
			gc := session(t, ctx, front, demo.Tokens[user], demo.Guild)
			gc.Reconnect.Store(true)
			clients = append(clients, gc)
			firstIDs = append(firstIDs, gc.SessionID())
		}
	}
	arrivals := make([]chan string, len(clients))
	for k, gc := range clients {
		arrivals[k] = make(chan string, 10000)
		go func() {
			for {
				ev, err := gc.Next(ctx, protocol.EventMessageCreate)
				if err != nil {
					return
				}
				var m struct{ ID string }
				json.Unmarshal(ev.D, &m)
				arrivals[k] <- m.ID
			}
		}()
	}

	// One sender, one message at a time, so the acknowledged order is the
	// order every session must see.
	var acked []string
	stop, sent := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sent)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			a, _, err := sendRetrying(ctx, front, demo.Tokens["bot"], demo.General, fmt.Sprint("m", i), fmt.Sprint("rolling-", i))
			if err != nil {
				t.Error(err)
				return
			}
			acked = append(acked, a.id)
		}
	}()
	c.RollingRestart(t, lb, func(*Node) {})
	close(stop)
	<-sent
	last := mustSend(t, ctx, front, demo.Tokens["bot"], demo.General, "last")
	acked = append(acked, last)

	var maxGap time.Duration
	for k, gc := range clients {
		var got []string
		for len(got) == 0 || got[len(got)-1] != last {
			select {
			case id := <-arrivals[k]:
				got = append(got, id)
			case <-ctx.Done():
				t.Fatalf("session %d: got %d of %d messages, not the last (drops %d, resumed %d, invalidated %d, identified again %d, recovering %v, ended %v)",
					k, len(got), len(acked), gc.Drops.Load(), gc.Resumed.Load(), gc.Invalidated.Load(), gc.Reidentified.Load(), gc.Recovering(), gc.Err)
			}
		}
		if !slices.Equal(got, acked) {
			i := 0
			for i < min(len(got), len(acked)) && got[i] == acked[i] {
				i++
			}
			t.Errorf("session %d (%s): %d messages, want the %d acknowledged, once each and in order; they differ from #%d: got %v, acknowledged %v (drops %d, resumed %d, invalidated %d)",
				k, firstIDs[k], len(got), len(acked), i, got[max(0, i-2):min(len(got), i+3)], acked[max(0, i-2):min(len(acked), i+3)],
				gc.Drops.Load(), gc.Resumed.Load(), gc.Invalidated.Load())
		}
		if n := gc.Reidentified.Load(); n != 0 {
			t.Errorf("session %d (%s) identified again %d times", k, firstIDs[k], n)
		}
		maxGap = max(maxGap, gc.LastOutage())
	}
	var taken float64
	for _, nd := range c.Nodes {
		v, _ := nd.Metric("chorus_gateway_sessions_taken_over_total")
		taken += v
	}
	t.Logf("%d messages, %d sessions; sessions taken over by the restarted nodes since: %v; longest last outage %v",
		len(acked), len(clients), taken, maxGap)
}

// `chorus admin node drain ID`, asked of any node, stops node ID as
// SIGTERM does: its sessions resume at the other node, taken over with
// nothing missed, and the process exits 0. An unknown node is refused.
func TestAdminDrainsANode(t *testing.T) {
	c := Start(t, 2)
	demo := c.Nodes[0].Demo
	n1, n2 := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := session(t, ctx, n2, demo.Tokens["alice"], demo.Guild)
	alice.Alternates = []string{"ws://" + n1.HTTP}
	alice.Reconnect.Store(true)

	admin := func(args ...string) (string, error) {
		cmd := exec.Command(Binary(t), append([]string{"admin", "--server", "http://" + n1.HTTP, "--data", n1.Data}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := admin("node", "drain", "nosuchnode"); err == nil || !strings.Contains(out, "no such node") {
		t.Fatalf("draining an unknown node: %v\n%s", err, out)
	}
	if out, err := admin("node", "drain", n2.ID); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	select {
	case <-n2.Exited():
	case <-ctx.Done():
		t.Fatal("n2 did not stop after the drain")
	}
	if !strings.Contains(n2.Log.String(), "draining, as asked through the admin API") {
		t.Fatalf("n2 log:\n%s", n2.Log.String())
	}
	n2.mu.Lock()
	code := n2.cmd.ProcessState.ExitCode()
	n2.mu.Unlock()
	if code != 0 {
		t.Fatalf("n2 exited with %d", code)
	}
	after := mustSend(t, ctx, n1, demo.Tokens["bot"], demo.General, "after the drain")
	if got := nextMessages(t, ctx, alice, 1); got[0].id != after {
		t.Fatalf("got %v, want %s", got, after)
	}
	if alice.Resumed.Load() != 1 || alice.Reidentified.Load() != 0 {
		t.Fatalf("resumed %d, identified again %d", alice.Resumed.Load(), alice.Reidentified.Load())
	}
}
