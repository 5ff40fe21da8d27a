package clustertest

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SIGSTOP of a guild's owner past its heartbeat TTL, under load through it
// and through the others; SIGCONT wakes it with writes in flight, which the
// store refuses (ownership epochs). See ownerCutOff for what is checked.
func TestPausedOwnerCannotWrite(t *testing.T) {
	c := Start(t, 3)
	victim, survivors := split(c, c.Nodes[0].Demo.Guild)
	ownerCutOff(t, c, victim, survivors, "stopped",
		func() error { return victim.Signal(syscall.SIGSTOP) },
		func() error { return victim.Signal(syscall.SIGCONT) })
}

// A guild's owner cut off from every NATS server by a network partition
// (its NATS link down, in a network namespace of the test's) while
// PostgreSQL and its clients still reach it: unlike a stopped process it
// goes on running, answers its clients and could write, so it must fence
// itself before its heartbeat expires and the store must refuse whatever
// it still tries after its successor claimed the guild. When the link
// heals it rejoins the ring and, owning the guild again, takes it back.
// See ownerCutOff for what is checked.
func TestPartitionedOwnerCannotWrite(t *testing.T) {
	c := StartPartitionable(t, 3)
	victim, survivors := split(c, c.Nodes[0].Demo.Guild)
	ownerCutOff(t, c, victim, survivors, "cut off from NATS",
		func() error { victim.Netns.CutNATS(); return nil },
		func() error { victim.Netns.HealNATS(); return nil })
}

// ownerCutOff runs load through a guild's owner (48 senders) and through
// the others, cuts the owner off past its heartbeat TTL while it commits,
// waits until another node acknowledges a message as the guild's new
// owner, sends through the others, and heals the owner. Every sender
// retries with its nonce until acknowledged. Then: every acknowledged
// message is stored exactly once, nothing unacknowledged is stored, and
// the sessions on all three nodes see one history: nothing twice, nothing
// that was not stored, and every message acknowledged after the old owner
// is back, in order.
func ownerCutOff(t *testing.T, c *Cluster, victim *Node, survivors []*Node, how string, cut, heal func() error) {
	demo := c.Nodes[0].Demo
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	nodes := append([]*Node{victim}, survivors...)
	w := watch(t, ctx, nodes, demo)
	bot := demo.Tokens["bot"]
	var mu sync.Mutex
	var acks []acked
	retried := map[string]int{}
	sendVia := func(nd *Node, name string) (acked, error) {
		a, tries, err := sendRetrying(ctx, nd, bot, demo.General, name, name)
		mu.Lock()
		retried[nd.ID] += tries - 1
		if err == nil {
			acks = append(acks, a)
		}
		mu.Unlock()
		return a, err
	}
	for i := 0; i < 10; i++ {
		if _, err := sendVia(victim, fmt.Sprint("warm", i)); err != nil {
			t.Fatal(err)
		}
	}

	// Steady load through the owner, cut off while it commits: some of
	// these wait in its guild's mailbox or group commit through the fault;
	// those sent during it wait or are refused and retried.
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
	if err := cut(); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	// Through another node until the new owner answers, then a few more.
	takeover, err := sendVia(survivors[0], "takeover")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("owner %s %s; a message acknowledged by the new owner %v later", victim.ID, how, takeover.at.Sub(cutAt))
	for i := 0; i < 10; i++ {
		if _, err := sendVia(survivors[i%2], fmt.Sprint("during", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := heal(); err != nil {
		t.Fatal(err)
	}
	close(stopBurst)
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
	pos := w.until(t, last.id)

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
	for k := range nodes {
		for id := range pos[k] {
			if !storedIDs[id] {
				t.Errorf("session on %s: message %s delivered but not stored", nodes[k].ID, id)
			}
		}
		w.inOrder(t, pos, k, acks[back:len(acks)-1], "sent after the old owner was back") // the last ends the collection
	}
	fenced, _ := victim.Metric("chorus_cluster_fenced_writes_total")
	t.Logf("old owner: %v actors retired by a refused write; sessions got %d, %d, %d messages of %d; sends retried: %v", fenced, len(pos[0]), len(pos[1]), len(pos[2]), len(acks), retried)
}
