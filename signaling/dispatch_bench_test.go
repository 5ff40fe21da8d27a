package signaling

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/store"
)

// newBenchHub returns a hub with n connected sessions whose writers are
// driven by hand (drain), so the path measured is everything after the
// event was encoded except the socket write: hub lookup, log push, writer
// wake-up, envelope stamping and the sent mark.
func newBenchHub(n int) (*Hub, []string, []*conn) {
	h := newHub("n", logLimit{events: 1024, bytes: 4 << 20}, &Metrics{})
	ep := &endpoint{name: "main", metrics: h.metrics, closes: &h.metrics.closes, frame: frameDispatch,
		closeServerFault: protocol.CloseUnknownError}
	ids := make([]string, n)
	conns := make([]*conn, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("session-%06d", i)
		s := newSession(ids[i], store.User{ID: guild.ID(i + 1)})
		c := &conn{ep: ep, batch: make([]*guild.Event, 0, writeBatch), env: getBuf()}
		c.writing.Store(true) // drainWriter below is this connection's writer
		s.attach(c, false, 0)
		c.sess.Store(s)
		h.add(s)
		conns[i] = c
	}
	return h, ids, conns
}

// drainWriter does what the writer does per wake-up, minus the socket write.
func drainWriter(c *conn) int {
	c.dirty.Store(false)
	s := c.sess.Load()
	batch, first := s.pending(c, c.batch[:0])
	for i, ev := range batch {
		*c.env = protocol.AppendDispatch((*c.env)[:0], ev.Name, first+uint64(i), ev.Data)
		batch[i] = nil
	}
	if len(batch) > 0 {
		s.markSent(c, first+uint64(len(batch))-1)
	}
	return len(batch)
}

var benchEvent = guild.NewEvent("MESSAGE_CREATE", map[string]any{
	"id": "1575916756385935360", "channel_id": "1575916747686948864", "content": "hello, ten thousand sessions",
	"author": map[string]any{"id": "1575916747678560256", "username": "chorus-bot"},
})

// BenchmarkDispatch10k fans one encoded event out to 10,000 local sessions
// and has every session's writer stamp its envelope.
func BenchmarkDispatch10k(b *testing.B) {
	const n = 10000
	h, ids, conns := newBenchHub(n)
	for i := 0; i < 1100; i++ { // steady state: logs at full size
		h.Deliver("", benchEvent, ids)
		for _, c := range conns {
			drainWriter(c)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.Deliver("", benchEvent, ids)
		for _, c := range conns {
			drainWriter(c)
		}
	}
	b.StopTimer()
	deliveries := float64(b.N) * n
	b.ReportMetric(deliveries/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
}

// TestDispatchAllocationFree holds the hot path to zero allocations per
// delivery once the session logs have their steady-state size.
func TestDispatchAllocationFree(t *testing.T) {
	h, ids, conns := newBenchHub(100)
	round := func() {
		h.Deliver("", benchEvent, ids)
		for _, c := range conns {
			if drainWriter(c) != 1 {
				t.Fatal("event not delivered")
			}
		}
	}
	// Warm up until every session log reached its full size (the resume
	// buffer grows to MaxLog entries, then slides).
	for i := 0; i < 1100; i++ {
		round()
	}
	if a := testing.AllocsPerRun(100, round); a != 0 {
		t.Fatalf("%v allocations per dispatch to 100 sessions", a)
	}
}

// A huge fan-out yields between chunks: a small guild's event, readied
// while it runs, goes out after the first chunk, not after all of it. One
// processor makes the order deterministic.
func TestDeliverYieldsBetweenChunks(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	h, ids, _ := newBenchHub(10001)
	huge, small := ids[:10000], ids[10000:]
	started, done := make(chan struct{}), make(chan struct{})
	go func() {
		close(started) // readies the test goroutine, which runs at the first yield
		h.Deliver("", benchEvent, huge)
		close(done)
	}()
	<-started
	h.Deliver("", benchEvent, small)
	before := h.metrics.Deliveries.Load()
	<-done
	if before > 10000/2 {
		t.Fatalf("the small guild's event went out after %d of the huge guild's 10,000 deliveries", before-1)
	}
	if all := h.metrics.Deliveries.Load(); all != 10001 {
		t.Fatalf("%d deliveries, want 10,001", all)
	}
}

// TestSessionLogBounds checks the slow-consumer and resume-window rules.
func TestSessionLogBounds(t *testing.T) {
	const max = 64
	s := newSession("s", store.User{ID: 1})
	c := &conn{ep: &endpoint{metrics: &Metrics{}, closes: &closeCounts{}, closeServerFault: protocol.CloseUnknownError}, batch: make([]*guild.Event, 0, writeBatch), env: getBuf()}
	c.writing.Store(true)
	s.attach(c, false, 0)
	c.sess.Store(s)
	// Half the log unsent: the connection is reported slow, nothing is lost.
	var slow *conn
	for i := 0; i <= max/2; i++ {
		slow = s.push(benchEvent, logLimit{events: max, bytes: 1 << 20})
	}
	if slow != c {
		t.Fatal("slow consumer not reported at half the log")
	}
	// Everything sent: older events slide out as new ones come (resume window).
	for drainWriter(c) > 0 {
	}
	for i := 0; i < 3*max; i++ {
		s.push(benchEvent, logLimit{events: max, bytes: 1 << 20})
		drainWriter(c)
	}
	if len(s.log) != max || s.next-s.base != max || s.invalid {
		t.Fatalf("log %d entries base %d next %d invalid %v", len(s.log), s.base, s.next, s.invalid)
	}
	// A resume from before the window is refused; within it, accepted.
	c2 := &conn{}
	if _, r := s.attach(c2, true, s.base-2); r != resumeGone {
		t.Fatalf("resume before the window = %d", r)
	}
	if _, r := s.attach(c2, true, s.next); r != resumeBadSeq {
		t.Fatalf("resume from the future = %d", r)
	}
	if old, r := s.attach(c2, true, s.base); r != resumeOK || old != c {
		t.Fatalf("resume in the window = %d", r)
	}
	// A detached session whose log fills with unsent events is invalidated.
	s.detach(c2)
	for i := 0; i <= max; i++ {
		s.push(benchEvent, logLimit{events: max, bytes: 1 << 20})
	}
	if !s.invalid {
		t.Fatal("session with a full log of unsent events not invalidated")
	}
}

// TestSessionLogByteBound: the bytes a session's log keeps for resuming are
// bounded too, not only its event count (a few huge events must not stay
// alive for the resume window), and unsent bytes past the bound invalidate
// the session instead of growing.
func TestSessionLogByteBound(t *testing.T) {
	lim := logLimit{events: 1024, bytes: 1 << 20}
	big := guild.NewEvent("GUILD_MEMBER_UPDATE", map[string]string{"nick": strings.Repeat("x", 100<<10)})
	s := newSession("s", store.User{ID: 1})
	c := &conn{ep: &endpoint{metrics: &Metrics{}, closes: &closeCounts{}, closeServerFault: protocol.CloseUnknownError}, batch: make([]*guild.Event, 0, writeBatch), env: getBuf()}
	c.writing.Store(true)
	s.attach(c, false, 0)
	c.sess.Store(s)
	for range 50 {
		s.push(big, lim)
		drainWriter(c)
	}
	if s.bytes > lim.bytes || s.bytes != int(s.next-s.base)*len(big.Data) || s.invalid {
		t.Fatalf("log keeps %d bytes in %d events (bound %d), invalid %v", s.bytes, s.next-s.base, lim.bytes, s.invalid)
	}
	s.ack(c, s.next-1)
	if s.bytes != 0 {
		t.Fatalf("%d bytes kept after everything was acknowledged", s.bytes)
	}
	s.detach(c)
	for range 11 {
		s.push(big, lim)
	}
	if !s.invalid {
		t.Fatal("a session with more unsent bytes than the bound was not invalidated")
	}
}
