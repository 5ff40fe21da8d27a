package guild

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
)

func waitLoaded(t *testing.T, r *Router, want int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); r.Loaded() != want; {
		if time.Now().After(deadline) {
			t.Fatalf("%d actors loaded, want %d", r.Loaded(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// An idle guild's actor stops and its guild loads again from the store on
// the next call; a guild with a subscribed session stays.
func TestIdleActorsRetire(t *testing.T) {
	r0, rec, st := newTestRouter(t)
	r := NewRouter(Config{IdleAfter: 20 * time.Millisecond}, Deps{Placement: r0.place, Store: st, Sessions: rec, IDs: snowflake.NewGenerator(5)})
	ctx := context.Background()
	st.PutUser(ctx, store.User{ID: 1, Username: "owner"})
	quiet, err := r.CreateGuild(ctx, "quiet", 1)
	if err != nil {
		t.Fatal(err)
	}
	busy, _ := r.CreateGuild(ctx, "busy", 1)
	ch, err := r.CreateChannel(ctx, store.Channel{GuildID: quiet.ID, Name: "general"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Subscribe(ctx, busy.ID, Sub{Node: "n", Session: "s", User: 1}); err != nil {
		t.Fatal(err)
	}
	waitLoaded(t, r, 1) // the quiet guild retired, the subscribed one stays
	time.Sleep(100 * time.Millisecond)
	if r.Loaded() != 1 {
		t.Fatalf("%d actors after the subscribed guild's idle time", r.Loaded())
	}
	// The retired guild answers again, with its state from the store.
	cs, err := r.Channels(ctx, quiet.ID, 1)
	if err != nil || len(cs) != 1 || cs[0].ID != ch.ID {
		t.Fatalf("channels after reload: %+v %v", cs, err)
	}
	if _, err := r.CreateMessage(ctx, CreateMessage{ChannelID: ch.ID, AuthorID: 1, Content: "back"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Unsubscribe(ctx, busy.ID, "s"); err != nil {
		t.Fatal(err)
	}
	waitLoaded(t, r, 0)
	if r.Retired() < 3 {
		t.Fatalf("%d retirements, want the quiet guild twice and the busy one", r.Retired())
	}
}

// Calls racing the retirement never find a stopped actor nor two actors of
// one guild: every message is stored exactly once and every call succeeds.
func TestIdleRetirementRacesCalls(t *testing.T) {
	r0, rec, st := newTestRouter(t)
	r := NewRouter(Config{IdleAfter: time.Millisecond}, Deps{Placement: r0.place, Store: st, Sessions: rec, IDs: snowflake.NewGenerator(6)})
	ctx := context.Background()
	st.PutUser(ctx, store.User{ID: 1, Username: "owner"})
	g, _ := r.CreateGuild(ctx, "g", 1)
	ch, err := r.CreateChannel(ctx, store.Channel{GuildID: g.ID, Name: "general"})
	if err != nil {
		t.Fatal(err)
	}
	const senders, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, senders*each)
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := r.CreateMessage(ctx, CreateMessage{ChannelID: ch.ID, AuthorID: 1, Content: fmt.Sprint(i)}); err != nil {
					errs <- err
				}
				time.Sleep(time.Duration(i%3) * time.Millisecond) // gaps long enough to retire in
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n, before := 0, store.ID(0)
	for {
		ms, err := st.ListMessages(ctx, ch.ID, store.Page{Before: before, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if before == 0 && len(ms) == 0 {
			break
		}
		n += len(ms)
		if len(ms) < 100 {
			break
		}
		before = ms[len(ms)-1].ID
	}
	if n != senders*each {
		t.Fatalf("%d messages stored, want %d", n, senders*each)
	}
	if r.Retired() == 0 {
		t.Fatal("the actor never retired during the run: the race was not exercised")
	}
}
