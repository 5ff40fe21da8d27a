package clustertest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// SIGTERM of a guild's owner while messages are sent through the other
// nodes: it hands the guild over before it stops answering (it leaves the
// ring first), so no send is refused — not one 503, not one retry — and
// the sessions on the other nodes get every acknowledged message, each
// sender's in the order they were acknowledged, once.
func TestOwnerStoppedGracefully(t *testing.T) {
	c := Start(t, 3, "--rest-rate", "100000") // the senders share one bot's limit
	demo := c.Nodes[0].Demo
	victim, survivors := split(c, demo.Guild)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	w := watch(t, ctx, survivors, demo)
	bot := demo.Tokens["bot"]

	// Senders, each one message at a time, through both other nodes.
	const workers = 6
	var (
		mu      sync.Mutex
		acks    = make([][]acked, workers)
		refused []error
		count   int
		wg      sync.WaitGroup
	)
	stopLoad := make(chan struct{})
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 2000; j++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				name := fmt.Sprintf("w%d-%d", w, j)
				id, _, err := send(ctx, survivors[(w+j)%2], bot, demo.General, name, name)
				mu.Lock()
				if err != nil {
					refused = append(refused, err)
				} else {
					acks[w] = append(acks[w], acked{id: id, nonce: name, at: time.Now()})
					count++
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	waitAcks := func(n int) {
		t.Helper()
		for {
			mu.Lock()
			got := count
			mu.Unlock()
			if got >= n {
				return
			}
			select {
			case <-ctx.Done():
				mu.Lock()
				why := fmt.Sprint(refused)
				mu.Unlock()
				t.Fatalf("only %d of %d messages acknowledged; refused: %s", got, n, why)
			case <-time.After(time.Millisecond):
			}
		}
	}
	waitAcks(30)
	stopped := time.Now()
	victim.Stop(t)
	t.Logf("owner %s stopped with SIGTERM in %v", victim.ID, time.Since(stopped))
	mu.Lock()
	after := count
	mu.Unlock()
	waitAcks(after + 30) // the new owner serves the load
	close(stopLoad)
	wg.Wait()
	last, _, err := sendRetrying(ctx, survivors[0], bot, demo.General, "last", "last")
	if err != nil {
		t.Fatal(err)
	}
	pos := w.until(t, last.id)

	for _, err := range refused {
		t.Errorf("refused during the handover: %v", err)
	}
	stored, err := listMessages(ctx, survivors[1], bot, demo.General)
	if err != nil {
		t.Fatal(err)
	}
	storedCount := map[string]int{}
	for _, m := range stored {
		storedCount[m.ID]++
	}
	total := 0
	for _, as := range acks {
		for _, a := range as {
			total++
			if storedCount[a.id] != 1 {
				t.Errorf("%s (%s) stored %d times", a.nonce, a.id, storedCount[a.id])
			}
		}
	}
	for k := range survivors {
		for _, as := range acks { // each sender's, in the order acknowledged
			w.inOrder(t, pos, k, as, "its sender's order")
		}
	}
	t.Logf("%d messages acknowledged, %d before the stop; %d refused", total, after, len(refused))
}
