package clustertest

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/loadtest"
)

// SIGSTOP of a guild's owner past its heartbeat TTL, while messages go
// through it and through another node: a new owner takes over; SIGCONT
// wakes the old owner with writes in flight, which the store refuses
// (ownership epochs) — every acknowledged message is stored exactly once,
// nothing unacknowledged is stored, and the sessions on all three nodes
// see one history: nothing twice, nothing that was not stored, and every
// message acknowledged after the old owner is back, in order.
func TestPausedOwnerCannotWrite(t *testing.T) {
	c := Start(t, 3)
	demo := c.Nodes[0].Demo
	victim, survivors := split(c, demo.Guild)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	nodes := append([]*Node{victim}, survivors...)
	var sessions []*loadtest.GatewayClient
	for _, nd := range nodes {
		sessions = append(sessions, session(t, ctx, nd, demo.Tokens["alice"], demo.Guild))
	}
	arrivals := watchMessages(readCtx, sessions)
	bot := demo.Tokens["bot"]
	var mu sync.Mutex
	var acks []acked
	sendVia := func(nd *Node, name string) (acked, error) {
		a, _, err := sendRetrying(ctx, nd, bot, demo.General, name, name)
		if err == nil {
			mu.Lock()
			acks = append(acks, a)
			mu.Unlock()
		}
		return a, err
	}
	for i := 0; i < 10; i++ {
		if _, err := sendVia(victim, fmt.Sprint("warm", i)); err != nil {
			t.Fatal(err)
		}
	}

	// Steady load through the owner, stopped while it commits: some of
	// these wait in its guild's mailbox or group commit through the pause.
	var burst sync.WaitGroup
	const workers = 48
	burstErrs := make(chan error, workers)
	stopBurst := make(chan struct{})
	for w := 0; w < workers; w++ {
		burst.Add(1)
		go func() {
			defer burst.Done()
			for j := 0; j < 1000; j++ {
				select {
				case <-stopBurst:
					return
				default:
				}
				if _, err := sendVia(victim, fmt.Sprintf("burst%d-%d", w, j)); err != nil {
					burstErrs <- err
					return
				}
			}
		}()
	}
	// Stop the owner once the load runs.
	for {
		mu.Lock()
		n := len(acks)
		mu.Unlock()
		if n >= 10+2*workers {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the load through the owner does not run")
		case <-time.After(time.Millisecond):
		}
	}
	if err := victim.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	close(stopBurst)
	stopped := time.Now()
	// Through another node until the new owner answers, then a few more.
	takeover, err := sendVia(survivors[0], "takeover")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("owner %s stopped; a message acknowledged by the new owner %v later", victim.ID, takeover.at.Sub(stopped))
	for i := 0; i < 10; i++ {
		if _, err := sendVia(survivors[i%2], fmt.Sprint("during", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := victim.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	burst.Wait()
	close(burstErrs)
	for err := range burstErrs {
		t.Fatal(err)
	}
	c.WaitRing(3)

	// The old owner is back in the ring (and owns the guild again): every
	// message from here on reaches every session, in order.
	mu.Lock()
	back := len(acks)
	mu.Unlock()
	for i := 0; i < 20; i++ {
		if _, err := sendVia(nodes[i%3], fmt.Sprint("after", i)); err != nil {
			t.Fatal(err)
		}
	}
	last, err := sendVia(survivors[1], "last")
	if err != nil {
		t.Fatal(err)
	}
	got := collectUntil(t, arrivals, nodes, last.id)
	stopReading()

	stored, err := listMessages(ctx, survivors[1], bot, demo.General)
	if err != nil {
		t.Fatal(err)
	}
	storedIDs := map[string]bool{}
	count := map[string]int{}
	for _, m := range stored {
		storedIDs[m.ID] = true
		count[m.Content]++
	}
	for _, a := range acks {
		if count[a.nonce] != 1 {
			t.Errorf("%s stored %d times", a.nonce, count[a.nonce])
		}
		if !storedIDs[a.id] {
			t.Errorf("%s acknowledged as %s, which is not stored", a.nonce, a.id)
		}
	}
	if len(stored) != len(acks) {
		t.Errorf("%d messages stored, %d acknowledged", len(stored), len(acks))
	}
	for k, ids := range got {
		seen := positions(t, nodes[k].ID, ids)
		for _, id := range ids {
			if !storedIDs[id] {
				t.Errorf("session on %s: message %s delivered but not stored", nodes[k].ID, id)
			}
		}
		pos := 0
		for _, a := range acks[back : len(acks)-1] { // the last ends the collection
			p := seen[a.id]
			if p == 0 {
				t.Errorf("session on %s missed %s (sent after the old owner was back)", nodes[k].ID, a.nonce)
				continue
			}
			if p < pos {
				t.Errorf("session on %s: %s out of order", nodes[k].ID, a.nonce)
			}
			pos = p
		}
		if sessions[k].Drops.Load() != 0 {
			t.Errorf("session on %s dropped %d times", nodes[k].ID, sessions[k].Drops.Load())
		}
	}
	fenced, _ := victim.Metric("chorus_cluster_fenced_writes_total")
	t.Logf("old owner: %v actors retired by a refused write; sessions got %d, %d, %d messages of %d", fenced, len(got[0]), len(got[1]), len(got[2]), len(acks))
}
