package guild

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/cluster"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
)

// recorder is a Deliverer that keeps what it was given, for unit tests of
// the actor's own logic.
type recorder struct {
	mu  sync.Mutex
	got map[string][]*Event
	// subs is what Subscribers answers, by guild.
	subs map[ID][]Sub
	// via is the node each of a session's events was delivered to.
	via map[string][]string
}

func (r *recorder) Deliver(node string, ev *Event, sessions []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range sessions {
		r.got[s] = append(r.got[s], ev)
		if r.via == nil {
			r.via = map[string][]string{}
		}
		r.via[s] = append(r.via[s], node)
	}
}

// Joined: the recorder stands for a node without live sessions.
func (r *recorder) Joined(guild, user ID) []Sub { return nil }

// Subscribers answers what the test put in subs.
func (r *recorder) Subscribers(guild ID) []Sub {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Sub(nil), r.subs[guild]...)
}

// Moved records the marker in the session's stream, as an event named
// movedEvent whose data is the guild.
func (r *recorder) Moved(guild ID, session string) {
	r.Deliver("", &Event{Name: movedEvent, Data: []byte(guild.String())}, []string{session})
}

func (r *recorder) ServeGateway(context.Context, []byte) ([]byte, error) { return []byte("null"), nil }

func (r *recorder) events(session, name string) []*Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*Event
	for _, ev := range r.got[session] {
		if ev.Name == name {
			out = append(out, ev)
		}
	}
	return out
}

func newTestRouter(t testing.TB) (*Router, *recorder, store.Store) {
	t.Helper()
	st, err := store.OpenPebble(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rec := &recorder{got: map[string][]*Event{}}
	return NewRouter(Config{}, Deps{Placement: cluster.NewStatic("n"), Store: st, Sessions: rec, IDs: snowflake.NewGenerator(1)}), rec, st
}

func TestMemberChunking(t *testing.T) {
	r, rec, st := newTestRouter(t)
	ctx := context.Background()
	owner := store.User{ID: 1, Username: "owner"}
	st.PutUser(ctx, owner)
	g, err := r.CreateGuild(ctx, "big", owner.ID)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2500
	for i := 0; i < n; i++ {
		u := store.User{ID: store.ID(1000 + i), Username: fmt.Sprintf("user%04d", i)}
		st.PutUser(ctx, u)
		st.PutMember(ctx, store.Member{GuildID: g.ID, UserID: u.ID, JoinedAt: time.Now()})
	}
	// A fresh router loads the guild with all members from the store.
	r2 := NewRouter(Config{}, Deps{Placement: r.place, Store: st, Sessions: rec, IDs: snowflake.NewGenerator(2)})
	all := ""
	err = r2.RequestMembers(ctx, g.ID, MembersRequest{Node: "n", Session: "s", User: owner.ID,
		Intents: protocol.IntentGuildMembers, Query: &all, Nonce: "big-nonce"})
	if err != nil {
		t.Fatal(err)
	}
	// The actor delivers synchronously before the call returns.
	chunks := rec.events("s", "GUILD_MEMBERS_CHUNK")
	if len(chunks) != 3 {
		t.Fatalf("%d chunks for %d members", len(chunks), n+1)
	}
	total := 0
	for i, ev := range chunks {
		var c struct {
			Members    []json.RawMessage `json:"members"`
			ChunkIndex int               `json:"chunk_index"`
			ChunkCount int               `json:"chunk_count"`
			Nonce      string            `json:"nonce"`
		}
		json.Unmarshal(ev.Data, &c)
		if c.ChunkIndex != i || c.ChunkCount != 3 || c.Nonce != "big-nonce" || len(c.Members) > 1000 {
			t.Fatalf("chunk %d: index %d count %d nonce %q members %d", i, c.ChunkIndex, c.ChunkCount, c.Nonce, len(c.Members))
		}
		total += len(c.Members)
	}
	if total != n+1 {
		t.Fatalf("%d members in chunks, want %d", total, n+1)
	}
	// Without GUILD_MEMBERS the full list is refused: one empty chunk.
	r2.lastFullReqReset(g.ID)
	err = r2.RequestMembers(ctx, g.ID, MembersRequest{Node: "n", Session: "t", User: owner.ID, Query: &all, Nonce: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if c := rec.events("t", "GUILD_MEMBERS_CHUNK"); len(c) != 1 {
		t.Fatalf("without the intent: %d chunks", len(c))
	}
}

func TestUnknownGuildAndOverload(t *testing.T) {
	r, rec, st := newTestRouter(t)
	ctx := context.Background()
	if _, err := r.GetGuild(ctx, 12345, 1); err != ErrUnknownGuild {
		t.Fatalf("unknown guild: %v", err)
	}
	if _, err := r.CreateMessage(ctx, CreateMessage{ChannelID: 999, AuthorID: 1, Content: "x"}); err != ErrUnknownChannel {
		t.Fatalf("unknown channel: %v", err)
	}

	// A full mailbox answers ErrOverloaded at once instead of queueing.
	st.PutUser(ctx, store.User{ID: 1, Username: "o"})
	small := NewRouter(Config{Mailbox: 1}, Deps{Placement: r.place, Store: st, Sessions: rec, IDs: snowflake.NewGenerator(3)})
	g, err := small.CreateGuild(ctx, "g", 1)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	started := make(chan struct{})
	go small.call(ctx, g.ID, func(a *actor) error { close(started); <-release; return nil })
	<-started
	go small.call(ctx, g.ID, func(a *actor) error { return nil }) // fills the mailbox
	deadline := time.Now().Add(5 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		// A probe may itself be what fills the mailbox; it then waits,
		// so each probe gets a short deadline.
		pctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		_, last = small.GetGuild(pctx, g.ID, 1)
		cancel()
		if last == ErrOverloaded {
			break
		}
	}
	close(release)
	if last != ErrOverloaded {
		t.Fatalf("full mailbox answered %v", last)
	}
	// Once the backlog drains the guild answers again.
	for err := error(ErrOverloaded); err != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("after the backlog: %v", err)
		}
		_, err = small.GetGuild(ctx, g.ID, 1)
	}
}

// lastFullReqReset clears the 30 s "all members" limit of a guild (tests).
func (r *Router) lastFullReqReset(g ID) {
	r.call(context.Background(), g, func(a *actor) error { clear(a.lastFullReq); return nil })
}
