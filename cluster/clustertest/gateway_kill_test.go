package clustertest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// A gateway node is killed (SIGKILL) with sessions on it. Its buddy kept
// a copy of each session, numbered as the node numbered them
// (signaling/replicate.go): the clients resume at the other nodes and get
// exactly the events they missed — the ones sent while they were away,
// and none they had — with consecutive sequence numbers, then RESUMED.
func TestResumeAfterGatewayNodeKilled(t *testing.T) {
	c := Start(t, 3) // --session-copies is the default
	demo := c.Nodes[0].Demo
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	alice := session(t, ctx, n1, demo.Tokens["alice"], demo.Guild)
	bob := session(t, ctx, n1, demo.Tokens["alice"], demo.Guild) // a second session of alice's
	alice.Resumable.Store(true)
	bob.Resumable.Store(true)
	bot := demo.Tokens["bot"]

	// Both sessions are copied at n1's buddy.
	deadline := time.Now().Add(30 * time.Second)
	for copied := 0.0; copied < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("the sessions were not copied: %v", copied)
		}
		copied = 0
		for _, nd := range []*Node{n2, n3} {
			v, _ := nd.Metric("chorus_gateway_replica_sessions")
			copied += v
		}
		time.Sleep(20 * time.Millisecond)
	}

	before := mustSend(t, ctx, n2, bot, demo.General, "before")
	if got := nextMessages(t, ctx, alice, 1); got[0].id != before {
		t.Fatalf("alice got %v, want %s", got, before)
	}
	// bob has not read it from his client yet; it reached his socket
	// or not: either way he must end with it exactly once.
	last := mustSend(t, ctx, n3, bot, demo.General, "as n1 dies")
	n1.Kill()
	var missed []string
	for i := range 6 {
		missed = append(missed, mustSend(t, ctx, []*Node{n2, n3}[i%2], bot, demo.General, fmt.Sprint("missed ", i)))
	}

	alice.ResumeAt("ws://" + n2.HTTP)
	if err := alice.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	replayed := untilResumed(t, ctx, alice)
	if want := append([]string{last}, missed...); !slices.Equal(ids(replayed), want) {
		// alice may have had "as n1 dies" before the kill: then only the rest.
		if !slices.Equal(ids(replayed), missed) {
			t.Fatalf("alice: replayed %v, want %v (or without the first)", ids(replayed), want)
		}
	}
	consecutive(t, "alice", replayed)

	bob.ResumeAt("ws://" + n3.HTTP)
	if err := bob.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	// Everything bob saw since he read nothing: the events read off his
	// socket before the kill, then the replay.
	all := untilResumed(t, ctx, bob)
	if want := append([]string{before, last}, missed...); !slices.Equal(ids(all), want) {
		t.Fatalf("bob: got %v, want %v", ids(all), want)
	}
	consecutive(t, "bob", all)

	// Live events flow to the new nodes.
	after := mustSend(t, ctx, n2, bot, demo.General, "after")
	for _, gc := range []struct {
		name string
		got  []seen
	}{{"alice", nextMessages(t, ctx, alice, 1)}, {"bob", nextMessages(t, ctx, bob, 1)}} {
		if gc.got[0].id != after {
			t.Fatalf("%s got %v after the resume, want %s", gc.name, gc.got, after)
		}
	}
	if alice.Reidentified.Load()+bob.Reidentified.Load() != 0 {
		t.Fatal("a client identified again")
	}
	var handed float64
	for _, nd := range []*Node{n2, n3} {
		v, _ := nd.Metric("chorus_gateway_replica_handed_off_total")
		handed += v
	}
	if handed != 2 {
		t.Errorf("chorus_gateway_replica_handed_off_total = %v over n2 and n3, want 2", handed)
	}
}

// consecutive fails unless the messages' sequence numbers ascend with
// gaps only where other events (GUILD_CREATE of a guild's new owner) took
// numbers.
func consecutive(t *testing.T, who string, ms []seen) {
	t.Helper()
	for i := 1; i < len(ms); i++ {
		if ms[i].seq <= ms[i-1].seq {
			t.Fatalf("%s: sequence numbers %v do not ascend", who, ms)
		}
	}
}
