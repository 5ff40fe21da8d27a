package guild

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
)

// commitCounter wraps the real store to count message commits and to fail
// them on demand.
type commitCounter struct {
	store.Store
	commits, messages atomic.Int64
	fail              atomic.Pointer[error]
}

func (c *commitCounter) CreateMessages(ctx context.Context, ms ...store.Message) error {
	if err := c.fail.Load(); err != nil {
		return *err
	}
	c.commits.Add(1)
	c.messages.Add(int64(len(ms)))
	return c.Store.CreateMessages(ctx, ms...)
}

// groupFixture is a guild with one text channel and one subscribed session
// "s", on a router whose store counts commits.
func groupFixture(t *testing.T) (*Router, *recorder, *commitCounter, *actor, ID) {
	t.Helper()
	r0, rec, st := newTestRouter(t)
	cc := &commitCounter{Store: st}
	r := NewRouter(Config{}, Deps{Placement: r0.place, Store: cc, Sessions: rec, IDs: snowflake.NewGenerator(7)})
	ctx := context.Background()
	st.PutUser(ctx, store.User{ID: 1, Username: "owner"})
	g, err := r.CreateGuild(ctx, "g", 1)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := r.CreateChannel(ctx, store.Channel{GuildID: g.ID, Name: "general"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Subscribe(ctx, g.ID, Sub{Node: "n", Session: "s", User: 1,
		Intents: protocol.IntentGuildMessages | protocol.IntentMessageContent | protocol.IntentGuildMessageTyping}); err != nil {
		t.Fatal(err)
	}
	a, err := r.actor(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	return r, rec, cc, a, ch.ID
}

// hold parks the actor until the returned release is called, and waitQueued
// waits until n calls wait in its mailbox: what queues meanwhile is one
// batch.
func hold(t *testing.T, r *Router, a *actor) (release func()) {
	started, done := make(chan struct{}), make(chan struct{})
	go r.call(context.Background(), a.guild.ID, func(*actor) error { close(started); <-done; return nil })
	<-started
	return func() { close(done) }
}

func waitQueued(t *testing.T, a *actor, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); len(a.mbox) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued, want %d", len(a.mbox), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestGroupCommit(t *testing.T) {
	r, rec, cc, a, ch := groupFixture(t)
	ctx := context.Background()
	before := cc.commits.Load()

	release := hold(t, r, a)
	const n = 50
	ids := make([]ID, n+2)
	errs := make([]error, n+2)
	var wg sync.WaitGroup
	send := func(i int, req CreateMessage) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := r.CreateMessage(ctx, req)
			ids[i], errs[i] = m.ID, err
		}()
	}
	for i := 0; i < n; i++ {
		send(i, CreateMessage{ChannelID: ch, AuthorID: 1, Content: "m"})
	}
	// The same nonce twice in one batch: one message, both answered with it.
	send(n, CreateMessage{ChannelID: ch, AuthorID: 1, Content: "once", Nonce: []byte(`"k"`), EnforceNonce: true})
	waitQueued(t, a, n+1)
	send(n+1, CreateMessage{ChannelID: ch, AuthorID: 1, Content: "once", Nonce: []byte(`"k"`), EnforceNonce: true})
	waitQueued(t, a, n+2)
	release()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if ids[n] != ids[n+1] || ids[n] == 0 {
		t.Fatalf("nonce repeat in one batch: %d and %d", ids[n], ids[n+1])
	}
	commits, stored := cc.commits.Load()-before, cc.messages.Load()
	if stored != n+1 || commits > 3 {
		t.Fatalf("%d messages in %d commits, want %d in a few", stored, commits, n+1)
	}
	evs := rec.events("s", "MESSAGE_CREATE")
	if len(evs) != n+1 {
		t.Fatalf("%d MESSAGE_CREATE delivered, want %d", len(evs), n+1)
	}
	ms, _ := r.Store().ListMessages(ctx, ch, store.Page{Limit: 100})
	if len(ms) != n+1 {
		t.Fatalf("%d messages stored", len(ms))
	}
}

// A batch that fails to commit fails every sender in it and delivers
// nothing; the guild goes on with the next batch.
func TestGroupCommitFailure(t *testing.T) {
	r, rec, cc, a, ch := groupFixture(t)
	ctx := context.Background()
	diskFull := errors.New("disk full")
	cc.fail.Store(&diskFull)
	release := hold(t, r, a)
	errs := make(chan error, 5)
	for i := 0; i < 5; i++ {
		go func() {
			_, err := r.CreateMessage(ctx, CreateMessage{ChannelID: ch, AuthorID: 1, Content: "lost?"})
			errs <- err
		}()
	}
	waitQueued(t, a, 5)
	release()
	for i := 0; i < 5; i++ {
		if err := <-errs; !errors.Is(err, diskFull) {
			t.Fatalf("sender %d: %v", i, err)
		}
	}
	if evs := rec.events("s", "MESSAGE_CREATE"); len(evs) != 0 {
		t.Fatalf("%d messages delivered from a failed batch", len(evs))
	}
	cc.fail.Store(nil)
	if _, err := r.CreateMessage(ctx, CreateMessage{ChannelID: ch, AuthorID: 1, Content: "after"}); err != nil {
		t.Fatal(err)
	}
	if ms, _ := r.Store().ListMessages(ctx, ch, store.Page{Limit: 10}); len(ms) != 1 || ms[0].Content != "after" {
		t.Fatalf("stored after the failure: %+v", ms)
	}
}

// Events leave in the order the mailbox accepted their causes: a message
// waiting for its batch is delivered before a later typing event.
func TestGroupCommitKeepsEventOrder(t *testing.T) {
	r, rec, _, a, ch := groupFixture(t)
	ctx := context.Background()
	release := hold(t, r, a)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.CreateMessage(ctx, CreateMessage{ChannelID: ch, AuthorID: 1, Content: "first"})
	}()
	waitQueued(t, a, 1)
	go func() { defer wg.Done(); r.Typing(ctx, ch, 1) }()
	waitQueued(t, a, 2)
	release()
	wg.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var names []string
	for _, ev := range rec.got["s"] {
		if ev.Name == "MESSAGE_CREATE" || ev.Name == "TYPING_START" {
			names = append(names, ev.Name)
		}
	}
	if len(names) != 2 || names[0] != "MESSAGE_CREATE" || names[1] != "TYPING_START" {
		t.Fatalf("events in order %v", names)
	}
}

// A subscription waits out a full mailbox (a node's sessions all
// identifying again after a restart) where a client's request is refused
// at once with ErrOverloaded.
func TestSubscribeWaitsForMailboxSpace(t *testing.T) {
	r0, rec, st := newTestRouter(t)
	r := NewRouter(Config{Mailbox: 1}, Deps{Placement: r0.place, Store: st, Sessions: rec, IDs: snowflake.NewGenerator(8)})
	ctx := context.Background()
	st.PutUser(ctx, store.User{ID: 1, Username: "owner"})
	g, err := r.CreateGuild(ctx, "g", 1)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := r.actor(ctx, g.ID)
	release := hold(t, r, a)
	go r.call(ctx, g.ID, func(*actor) error { return nil }) // fills the mailbox
	waitQueued(t, a, 1)
	if _, err := r.GetGuild(ctx, g.ID, 1); err != ErrOverloaded {
		t.Fatalf("a request to a full mailbox: %v", err)
	}
	subscribed := make(chan error, 1)
	go func() { subscribed <- r.Subscribe(ctx, g.ID, Sub{Node: "n", Session: "late", User: 1, Intents: 1}) }()
	select {
	case err := <-subscribed:
		t.Fatalf("subscribe returned %v while the mailbox was full", err)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	if err := <-subscribed; err != nil {
		t.Fatalf("subscribe after the burst: %v", err)
	}
	if len(rec.events("late", "GUILD_CREATE")) != 1 {
		t.Fatal("no GUILD_CREATE for the waiting subscription")
	}
	// A waiting subscription gives up when its context ends.
	release = hold(t, r, a)
	go r.call(ctx, g.ID, func(*actor) error { return nil })
	waitQueued(t, a, 1)
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if err := r.Subscribe(short, g.ID, Sub{Node: "n", Session: "never", User: 1}); err != context.DeadlineExceeded {
		t.Fatalf("subscribe past its deadline: %v", err)
	}
	release()
}
