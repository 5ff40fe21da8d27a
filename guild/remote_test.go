package guild

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/ring"
	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
)

// view is a test placement whose ring the test changes.
type view struct {
	id string
	mu sync.Mutex
	r  *ring.Ring
	ch chan struct{}
}

func newView(id string, r *ring.Ring) *view { return &view{id: id, r: r, ch: make(chan struct{})} }

func (v *view) ID() string { return v.id }
func (v *view) Ring() *ring.Ring {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.r
}
func (v *view) Changed() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ch
}
func (v *view) set(r *ring.Ring) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.r = r
	close(v.ch)
	v.ch = make(chan struct{})
}

// loopback is an in-memory Peers between routers of one test: the unit
// test of the routing logic. The real transport (NATS) is tested in the
// cluster and server suites.
type loopback struct {
	mu      sync.Mutex
	routers map[string]*Router
	calls   int
	batches int
	// hold, when set, keeps every Send waiting until it is closed.
	hold chan struct{}
	// before, when set, runs before each Call is served.
	before func(node string, req []byte)
}

func (l *loopback) Call(ctx context.Context, node string, req []byte) ([]byte, error) {
	l.mu.Lock()
	r := l.routers[node]
	l.calls++
	before := l.before
	l.mu.Unlock()
	if before != nil {
		before(node, req)
	}
	if r == nil {
		return nil, errors.New("no responders")
	}
	return r.ServeCall(append([]byte(nil), req...)), nil
}

func (l *loopback) Send(node string, batch []byte) error {
	l.mu.Lock()
	r := l.routers[node]
	l.batches++
	hold := l.hold
	l.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if r == nil {
		return errors.New("no responders")
	}
	return r.ServeBatch(append([]byte(nil), batch...))
}

type pair struct {
	a, b     *Router
	ra, rb   *recorder
	va, vb   *view
	st       store.Store
	net      *loopback
	ringAB   *ring.Ring
	owner    store.User
	gA, gB   store.Guild // a guild owned by each node
	chA, chB Channel
	ctx      context.Context
}

func newPair(t *testing.T) *pair {
	t.Helper()
	st, err := store.OpenPebble(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	p := &pair{st: st, net: &loopback{routers: map[string]*Router{}}, ctx: context.Background(),
		ra: &recorder{got: map[string][]*Event{}}, rb: &recorder{got: map[string][]*Event{}}}
	p.ringAB = ring.New(5, []ring.Node{{ID: "a", Roles: ring.RoleAll}, {ID: "b", Roles: ring.RoleAll}})
	p.va, p.vb = newView("a", p.ringAB), newView("b", p.ringAB)
	p.a = NewRouter(Config{}, Deps{Placement: p.va, Store: st, Sessions: p.ra, IDs: snowflake.NewGenerator(1), Peers: p.net})
	p.b = NewRouter(Config{}, Deps{Placement: p.vb, Store: st, Sessions: p.rb, IDs: snowflake.NewGenerator(2), Peers: p.net})
	t.Cleanup(p.a.Close)
	t.Cleanup(p.b.Close)
	p.net.routers["a"], p.net.routers["b"] = p.a, p.b
	p.owner = store.User{ID: 1, Username: "owner"}
	st.PutUser(p.ctx, p.owner)
	for i := 0; i < 64 && (p.gA.ID == 0 || p.gB.ID == 0); i++ {
		g, err := p.a.CreateGuild(p.ctx, fmt.Sprintf("g%d", i), p.owner.ID)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := p.ringAB.Owner(ring.RoleGuild, uint64(g.ID))
		if n.ID == "a" && p.gA.ID == 0 {
			p.gA = g
		} else if n.ID == "b" && p.gB.ID == 0 {
			p.gB = g
		}
	}
	if p.gA.ID == 0 || p.gB.ID == 0 {
		t.Fatal("no guild on each node in 64 tries")
	}
	if p.chA, err = p.a.CreateChannel(p.ctx, store.Channel{GuildID: p.gA.ID, Name: "a", Type: ChannelText}); err != nil {
		t.Fatal(err)
	}
	if p.chB, err = p.a.CreateChannel(p.ctx, store.Channel{GuildID: p.gB.ID, Name: "b", Type: ChannelText}); err != nil {
		t.Fatal(err)
	}
	return p
}

// A call made on a node that does not own the guild runs on the owner;
// answers and errors come back as if the guild were local.
func TestCallsRunOnTheOwner(t *testing.T) {
	p := newPair(t)
	if p.a.Loaded() != 1 || p.b.Loaded() != 1 {
		t.Fatalf("actors loaded: a %d, b %d; want one each (its own guild)", p.a.Loaded(), p.b.Loaded())
	}
	calls := p.net.calls
	m, err := p.a.CreateMessage(p.ctx, CreateMessage{ChannelID: p.chB.ID, AuthorID: p.owner.ID, Content: "hi",
		Nonce: json.RawMessage(`"n-1"`), EnforceNonce: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.net.calls == calls {
		t.Fatal("a message to b's guild did not cross to b")
	}
	// The same nonce again, from the other node: the same message.
	again, err := p.b.CreateMessage(p.ctx, CreateMessage{ChannelID: p.chB.ID, AuthorID: p.owner.ID, Content: "hi",
		Nonce: json.RawMessage(`"n-1"`), EnforceNonce: true})
	if err != nil || again.ID != m.ID {
		t.Fatalf("repeat: %v %v, want message %v", again.ID, err, m.ID)
	}
	// A message without a nonce has none on either node.
	plain, err := p.a.CreateMessage(p.ctx, CreateMessage{ChannelID: p.chB.ID, AuthorID: p.owner.ID, Content: "plain"})
	if err != nil || plain.Nonce != nil {
		t.Fatalf("plain: nonce %q, err %v", plain.Nonce, err)
	}
	local, err := p.b.ListMessages(p.ctx, p.chB.ID, p.owner.ID, store.Page{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	remote, err := p.a.ListMessages(p.ctx, p.chB.ID, p.owner.ID, store.Page{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	lj, _ := json.Marshal(local)
	rj, _ := json.Marshal(remote)
	if string(lj) != string(rj) || len(local) != 2 {
		t.Fatalf("remote answer differs from the local one:\n%s\n%s", rj, lj)
	}
	if p.a.Loaded() != 1 {
		t.Fatalf("a loaded b's guild (%d actors)", p.a.Loaded())
	}
	// Errors keep their identity across nodes.
	if _, err := p.a.EditMessage(p.ctx, p.chB.ID, 12345, p.owner.ID, "x"); !errors.Is(err, ErrUnknownMessage) {
		t.Fatalf("edit of an unknown message: %v", err)
	}
	_, err = p.a.CreateMessage(p.ctx, CreateMessage{ChannelID: p.chB.ID, AuthorID: p.owner.ID, Content: string(make([]byte, 3000))})
	var fe *FormError
	if !errors.As(err, &fe) || fe.Field != "content" {
		t.Fatalf("too long: %v", err)
	}
	if _, err := p.a.GetGuild(p.ctx, p.gB.ID, 999); !errors.Is(err, ErrUnknownGuild) {
		t.Fatalf("a stranger's guild: %v", err)
	}
	out, added, err := p.a.PutMember(p.ctx, store.Member{GuildID: p.gB.ID, UserID: p.owner.ID, Nick: "boss"})
	if err != nil || added || out.Nick == nil || *out.Nick != "boss" {
		t.Fatalf("put member: %+v %v %v", out, added, err)
	}
}

// A session on node a subscribed to b's guild gets its events in batches,
// in order.
func TestEventsCrossInBatchesInOrder(t *testing.T) {
	p := newPair(t)
	sub := Sub{Node: "a", Session: "s1", User: p.owner.ID, Intents: protocol.IntentGuilds | protocol.IntentGuildMessages}
	if err := p.a.Subscribe(p.ctx, p.gB.ID, sub); err != nil {
		t.Fatal(err)
	}
	// While a's link is held, b's events queue for it; released, they
	// leave in a few batches, not one per event.
	p.net.mu.Lock()
	p.net.hold = make(chan struct{})
	p.net.mu.Unlock()
	const n = 200
	var sent [n]ID
	for i := 0; i < n; i++ {
		m, err := p.b.CreateMessage(p.ctx, CreateMessage{ChannelID: p.chB.ID, AuthorID: p.owner.ID, Content: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		sent[i] = m.ID
	}
	close(p.net.hold)
	deadline := time.Now().Add(10 * time.Second)
	for len(p.ra.events("s1", protocol.EventMessageCreate)) < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	got := p.ra.events("s1", protocol.EventMessageCreate)
	if len(got) != n {
		t.Fatalf("%d of %d messages reached the session on a", len(got), n)
	}
	for i, ev := range got {
		var m struct{ ID ID }
		json.Unmarshal(ev.Data, &m)
		if m.ID != sent[i] {
			t.Fatalf("message %d is %v, want %v: out of order", i, m.ID, sent[i])
		}
	}
	if p.net.batches > 3 {
		t.Fatalf("%d batches for %d events sent while the link was held", p.net.batches, n+1)
	}
	if len(p.ra.events("s1", protocol.EventGuildCreate)) != 1 {
		t.Fatal("the subscription's GUILD_CREATE did not cross")
	}
	if len(p.rb.got) != 0 {
		t.Fatalf("b delivered to its own sessions: %v", p.rb.got)
	}
}

// A node that does not own the guild at its (newer) view answers
// "moved"; the caller waits for its own newer view and runs the call there.
func TestMovedFollowsTheNewerRing(t *testing.T) {
	p := newPair(t)
	onlyA := ring.New(6, []ring.Node{{ID: "a", Roles: ring.RoleAll}})
	p.vb.set(onlyA) // b has seen b leave the guild role; a has not yet
	go func() {
		time.Sleep(50 * time.Millisecond)
		p.va.set(onlyA)
	}()
	m, err := p.a.CreateMessage(p.ctx, CreateMessage{ChannelID: p.chB.ID, AuthorID: p.owner.ID, Content: "moved"})
	if err != nil {
		t.Fatal(err)
	}
	if p.b.stats.movedSent.Load() == 0 || p.a.stats.movedSeen.Load() == 0 {
		t.Fatal("no moved answer was given")
	}
	ms, err := p.st.ListMessages(p.ctx, p.chB.ID, store.Page{Limit: 5})
	if err != nil || len(ms) != 1 || ms[0].ID != m.ID {
		t.Fatalf("stored: %v %v", ms, err)
	}
}

// An owner that cannot be reached and a ring that does not move on end
// in ErrUnavailable, after a bounded wait.
func TestUnreachableOwnerIsUnavailable(t *testing.T) {
	p := newPair(t)
	delete(p.net.routers, "b")
	start := time.Now()
	_, err := p.a.CreateMessage(p.ctx, CreateMessage{ChannelID: p.chB.ID, AuthorID: p.owner.ID, Content: "x"})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*moveWait {
		t.Fatalf("gave up after %v", d)
	}
}

func TestCallWireForms(t *testing.T) {
	// Requests survive the trip: pointers to zero values stay pointers.
	empty := ""
	req := requestMembersArgs{Guild: 7, Req: MembersRequest{Node: "a", Session: "s", Query: &empty, UserIDs: []ID{1, 2}}}
	b, _ := json.Marshal(req)
	var back requestMembersArgs
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(req, back) {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	// Every wire error comes back as itself.
	for code, e := range wireErrors {
		var rep callReply
		json.Unmarshal(encodeReply(nil, fmt.Errorf("wrapped: %w", e)), &rep)
		if got := decodeError(rep); !errors.Is(got, e) {
			t.Errorf("%s: came back as %v", code, got)
		}
	}
	var rep callReply
	json.Unmarshal(encodeReply(nil, errors.New("disk on fire")), &rep)
	var re *RemoteError
	if !errors.As(decodeError(rep), &re) || re.Msg != "disk on fire" {
		t.Fatalf("other error: %+v", rep)
	}
	// Garbage calls are answered, not crashed on.
	for _, in := range []string{"", "{", `{"op":"nope"}`, `{"op":"create_message","body":"x"}`} {
		var rep callReply
		r := NewRouter(Config{}, Deps{Placement: newView("a", ring.New(1, []ring.Node{{ID: "a", Roles: ring.RoleAll}})), Peers: &loopback{}})
		if err := json.Unmarshal(r.ServeCall([]byte(in)), &rep); err != nil || rep.Err == "" {
			t.Errorf("%q: %+v %v", in, rep, err)
		}
	}
}

func TestBatchCodec(t *testing.T) {
	evs := []*Event{{Name: "A", Data: []byte(`{"x":1}`)}, {Name: "MESSAGE_CREATE", Data: nil}}
	sess := [][]string{{"s1", "s2"}, {}}
	var b []byte
	for i, ev := range evs {
		b = appendItem(b, ev, sess[i])
		if len(b) == 0 {
			t.Fatal("nothing appended")
		}
	}
	for i := range evs {
		ev, ss, rest, err := readItem(b, nil)
		if err != nil || ev.Name != evs[i].Name || string(ev.Data) != string(evs[i].Data) || len(ss) != len(sess[i]) {
			t.Fatalf("item %d: %+v %v %v", i, ev, ss, err)
		}
		b = rest
	}
	if len(b) != 0 {
		t.Fatal("bytes left over")
	}
}

func TestBatchHeaderAndItems(t *testing.T) {
	b := appendBatchHeader(nil, BatchRef{From: "n2", N: 7})
	b = appendItem(b, &Event{Name: "MESSAGE_CREATE", Data: []byte(`{}`)}, []string{"s1", "s2"})
	b = appendItem(b, &Event{Name: movedEvent, Data: []byte(`"42"`)}, []string{"s3"})
	b = appendItem(b, &Event{Name: voiceChangeEvent, Data: []byte(`{}`)}, nil)
	ref, body, err := SplitBatch(b)
	if err != nil || ref != (BatchRef{From: "n2", N: 7}) {
		t.Fatalf("header: %+v, %v", ref, err)
	}
	var got []string
	err = BatchItems(body, func(ev *Event, ss []string) { got = append(got, ev.Name+":"+strings.Join(ss, ",")) },
		func(g ID, s string) { got = append(got, fmt.Sprintf("moved:%d:%s", g, s)) })
	if want := []string{"MESSAGE_CREATE:s1,s2", "moved:42:s3"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("items: %v, %v; want %v", got, err, want)
	}
	for _, bad := range [][]byte{nil, {0}, {0, 5, 'a'}, {0, 1, 'a', 0, 0}} {
		if _, _, err := SplitBatch(bad); err == nil {
			t.Errorf("SplitBatch(%v) accepted", bad)
		}
	}
	if err := BatchItems([]byte{0, 9}, func(*Event, []string) {}, func(ID, string) {}); err == nil {
		t.Error("a truncated item was accepted")
	}
}

func FuzzReadItem(f *testing.F) {
	f.Add(appendItem(nil, &Event{Name: "X", Data: []byte("{}")}, []string{"a", "bb"}))
	f.Add([]byte{0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		for i := 0; len(b) > 0 && i < 1000; i++ {
			ev, ss, rest, err := readItem(b, nil)
			if err != nil {
				return
			}
			if len(rest) >= len(b) {
				t.Fatal("no progress")
			}
			// What was read re-encodes to the bytes it came from.
			if enc := appendItem(nil, ev, ss); string(enc) != string(b[:len(b)-len(rest)]) {
				t.Fatalf("re-encoding differs")
			}
			b = rest
		}
	})
}

// bDies takes b off the network and both rings: a is left alone and
// owns every guild.
func (p *pair) bDies() {
	p.net.mu.Lock()
	delete(p.net.routers, "b")
	p.net.mu.Unlock()
	onlyA := ring.New(6, []ring.Node{{ID: "a", Roles: ring.RoleAll}})
	p.va.set(onlyA)
	p.vb.set(onlyA)
}

// When the owner dies, the node that takes the guild over adopts the
// subscriptions the sessions made with the old owner: they keep receiving
// the guild's events with no second GUILD_CREATE.
func TestNewOwnerAdoptsSubscriptions(t *testing.T) {
	p := newPair(t)
	sub := Sub{Node: "a", Session: "s1", User: p.owner.ID, Intents: protocol.IntentGuilds | protocol.IntentGuildMessages, Status: "online"}
	if err := p.a.Subscribe(p.ctx, p.gB.ID, sub); err != nil {
		t.Fatal(err)
	}
	p.ra.mu.Lock()
	p.ra.subs = map[ID][]Sub{p.gB.ID: {sub}} // what a's hub records
	p.ra.mu.Unlock()
	p.bDies()
	m, err := p.a.CreateMessage(p.ctx, CreateMessage{ChannelID: p.chB.ID, AuthorID: p.owner.ID, Content: "after"})
	if err != nil {
		t.Fatal(err)
	}
	got := p.ra.events("s1", protocol.EventMessageCreate)
	if len(got) != 1 || !strings.Contains(string(got[0].Data), m.ID.String()) {
		t.Fatalf("the session on a got %d messages after the move", len(got))
	}
	if n := len(p.ra.events("s1", protocol.EventGuildCreate)); n != 1 {
		t.Fatalf("%d GUILD_CREATEs, want the first one only", n)
	}
	// Registering again with the new owner (the gateway's ring sweep) is
	// quiet too.
	sub.Had = true
	if err := p.a.Subscribe(p.ctx, p.gB.ID, sub); err != nil {
		t.Fatal(err)
	}
	if n := len(p.ra.events("s1", protocol.EventGuildCreate)); n != 1 {
		t.Fatalf("%d GUILD_CREATEs after re-registering", n)
	}
	if n := len(p.ra.events("s1", protocol.EventGuildDelete)); n != 0 {
		t.Fatalf("%d GUILD_DELETEs after re-registering with the owner that adopted it", n)
	}
}

// A new owner whose adoption missed a session (its node answered too
// late) sends it nothing until the session registers again; then the
// session is told the guild was out, and gets it back whole, in that
// order: it must not carry on as if it had missed nothing.
func TestNewOwnerThatMissedASessionSaysTheGuildWasOut(t *testing.T) {
	p := newPair(t)
	sub := Sub{Node: "a", Session: "s1", User: p.owner.ID, Intents: protocol.IntentGuilds | protocol.IntentGuildMessages, Status: "online"}
	if err := p.a.Subscribe(p.ctx, p.gB.ID, sub); err != nil {
		t.Fatal(err)
	}
	// b dies; a's hub lists nothing (recorder.subs empty): the adoption
	// misses s1.
	p.bDies()
	if _, err := p.a.CreateMessage(p.ctx, CreateMessage{ChannelID: p.chB.ID, AuthorID: p.owner.ID, Content: "missed"}); err != nil {
		t.Fatal(err)
	}
	if n := len(p.ra.events("s1", protocol.EventMessageCreate)); n != 0 {
		t.Fatalf("the unknown session got %d messages", n)
	}
	sub.Had = true
	if err := p.a.Subscribe(p.ctx, p.gB.ID, sub); err != nil {
		t.Fatal(err)
	}
	p.ra.mu.Lock()
	var names []string
	for _, ev := range p.ra.got["s1"] {
		names = append(names, ev.Name)
	}
	p.ra.mu.Unlock()
	want := []string{protocol.EventGuildCreate, protocol.EventGuildDelete, protocol.EventGuildCreate}
	if !slices.Equal(names, want) {
		t.Fatalf("events %v, want %v", names, want)
	}
	if del := p.ra.events("s1", protocol.EventGuildDelete)[0]; !strings.Contains(string(del.Data), `"unavailable":true`) {
		t.Fatalf("GUILD_DELETE %s does not say unavailable", del.Data)
	}
	var out strings.Builder
	p.a.WriteMetrics(&out)
	if !strings.Contains(out.String(), "chorus_guild_sessions_told_out_total 1\n") {
		t.Errorf("not counted:\n%s", out.String())
	}
}

// A new owner asks the gateway nodes for their subscriptions with its
// ring revision, and a node whose ring lags answers once it has caught up:
// what it lists may depend on the ring (a node keeping copies of a dead
// node's sessions lists them once its ring says that node is gone).
func TestSubscribersAnswerFromTheCallersRing(t *testing.T) {
	p := newPair(t)
	// b keeps the gateway role only: a owns every guild, b's among them.
	bGateway := ring.New(6, []ring.Node{{ID: "a", Roles: ring.RoleAll}, {ID: "b", Roles: ring.RoleGateway}})
	sub := Sub{Node: "b", Session: "s1", User: p.owner.ID, Intents: protocol.IntentGuilds | protocol.IntentGuildMessages, Status: "online"}
	p.va.set(bGateway)
	go func() {
		time.Sleep(50 * time.Millisecond)
		p.rb.mu.Lock()
		p.rb.subs = map[ID][]Sub{p.gB.ID: {sub}} // what b lists from now on
		p.rb.mu.Unlock()
		p.vb.set(bGateway)
	}()
	m, err := p.a.CreateMessage(p.ctx, CreateMessage{ChannelID: p.chB.ID, AuthorID: p.owner.ID, Content: "after"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(p.rb.events("s1", protocol.EventMessageCreate)) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	got := p.rb.events("s1", protocol.EventMessageCreate)
	if len(got) != 1 || !strings.Contains(string(got[0].Data), m.ID.String()) {
		t.Fatalf("the session b listed once its ring caught up got %d messages from the new owner", len(got))
	}
}

// A node that still believes it owns a guild another node has claimed
// (it was paused through the move) has its write refused by the store, its
// actor retired, and the call lands once, on the new owner, when its ring
// catches up.
func TestStaleOwnerIsFenced(t *testing.T) {
	p := newPair(t)
	send := func(r *Router, content string) (Message, error) {
		return r.CreateMessage(p.ctx, CreateMessage{ChannelID: p.chB.ID, AuthorID: p.owner.ID, Content: content})
	}
	if _, err := send(p.b, "before"); err != nil { // b loads the guild
		t.Fatal(err)
	}
	onlyA := ring.New(6, []ring.Node{{ID: "a", Roles: ring.RoleAll}})
	p.va.set(onlyA) // b has not seen the move
	if _, err := send(p.a, "new owner"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := send(p.b, "from the stale node")
		done <- err
	}()
	// The stale actor's write is refused; the call waits for a newer ring.
	deadline := time.After(5 * time.Second)
	for p.b.stats.fencedOut.Load() == 0 {
		select {
		case <-deadline:
			t.Fatal("the stale owner's write was not fenced")
		case <-time.After(time.Millisecond):
		}
	}
	p.vb.set(onlyA)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ms, err := p.st.ListMessages(p.ctx, p.chB.ID, store.Page{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.Content)
	}
	sort.Strings(got) // ids from two nodes in one millisecond order by node
	if want := []string{"before", "from the stale node", "new owner"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("stored %q, want %q, once each", got, want)
	}
	if p.b.Loaded() != 0 {
		t.Fatalf("the stale node still runs %d actors", p.b.Loaded())
	}
}

// A refused group commit answers every message in it with ErrFenced, and
// each answer retires the actor, while the callers' retries load the guild
// anew: the retirements must not read the fresh load's slot (the race
// detector found them doing so in the cluster's SIGSTOP test).
func TestFencedCommitOfManyMessages(t *testing.T) {
	p := newPair(t)
	send := func(r *Router, content string) (Message, error) {
		return r.CreateMessage(p.ctx, CreateMessage{ChannelID: p.chB.ID, AuthorID: p.owner.ID, Content: content})
	}
	if _, err := send(p.b, "before"); err != nil {
		t.Fatal(err)
	}
	onlyA := ring.New(6, []ring.Node{{ID: "a", Roles: ring.RoleAll}})
	p.va.set(onlyA)
	if _, err := send(p.a, "new owner"); err != nil {
		t.Fatal(err)
	}
	const n = 32
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := send(p.b, fmt.Sprint("stale ", i))
			errs <- err
		}()
	}
	deadline := time.After(5 * time.Second)
	for p.b.stats.fencedOut.Load() == 0 {
		select {
		case <-deadline:
			t.Fatal("the stale owner's writes were not fenced")
		case <-time.After(time.Millisecond):
		}
	}
	p.vb.set(onlyA)
	acked := 0
	for i := 0; i < n; i++ {
		switch err := <-errs; {
		case err == nil:
			acked++
		case !errors.Is(err, ErrUnavailable): // a 503 the client retries
			t.Fatal(err)
		}
	}
	ms, err := p.st.ListMessages(p.ctx, p.chB.ID, store.Page{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != acked+2 {
		t.Fatalf("%d messages stored, %d acknowledged", len(ms), acked+2)
	}
	if p.b.Loaded() != 0 {
		t.Fatalf("the stale node still runs %d actors", p.b.Loaded())
	}
}

// heldPeers records the numbers of the batches sent, each Send waiting
// for the test to let it go.
type heldPeers struct {
	sending chan BatchRef
	release chan struct{}
}

func (h *heldPeers) Call(context.Context, string, []byte) ([]byte, error) {
	return nil, errors.New("no calls here")
}

func (h *heldPeers) Send(_ string, batch []byte) error {
	ref, _, err := SplitBatch(batch)
	if err != nil {
		return err
	}
	h.sending <- ref
	<-h.release
	return nil
}

// Events dropped because a node's queue is full leave a hole in the batch
// numbers, which is how the receiver learns that it missed them.
func TestDroppedEventsSkipABatchNumber(t *testing.T) {
	ev := &Event{Name: "MESSAGE_CREATE", Data: []byte(`{"content":"x"}`)}
	old := maxQueued
	maxQueued = 3 * itemSize(ev, []string{"s1"})
	t.Cleanup(func() { maxQueued = old })
	st, err := store.OpenPebble(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	peers := &heldPeers{sending: make(chan BatchRef, 1), release: make(chan struct{})}
	rg := ring.New(5, []ring.Node{{ID: "a", Roles: ring.RoleAll}, {ID: "b", Roles: ring.RoleAll}})
	r := NewRouter(Config{}, Deps{Placement: newView("a", rg), Store: st, Sessions: &recorder{got: map[string][]*Event{}},
		IDs: snowflake.NewGenerator(1), Peers: peers})
	t.Cleanup(r.Close)
	t.Cleanup(func() { close(peers.release) })
	next := func() BatchRef {
		select {
		case ref := <-peers.sending:
			return ref
		case <-time.After(5 * time.Second):
			t.Fatal("no batch sent")
			return BatchRef{}
		}
	}
	var refs []BatchRef
	r.out.add("b", ev, []string{"s1"})
	refs = append(refs, next()) // on its way, held
	for i := 0; i < 100 && r.stats.batchDropped.Load() == 0; i++ {
		r.out.add("b", ev, []string{"s1"}) // queued in batch 2 until the queue is full
	}
	if r.stats.batchDropped.Load() == 0 {
		t.Fatal("the queue never filled")
	}
	r.out.add("b", ev, []string{"s1"}) // dropped too: still one number for the run
	peers.release <- struct{}{}
	refs = append(refs, next()) // batch 2 taken: the queue is empty
	r.out.add("b", ev, []string{"s1"})
	peers.release <- struct{}{}
	refs = append(refs, next())
	want := []BatchRef{{"a", 1}, {"a", 2}, {"a", 4}}
	if !slices.Equal(refs, want) {
		t.Fatalf("batches sent %v, want %v (number 3 is the dropped events')", refs, want)
	}
}
