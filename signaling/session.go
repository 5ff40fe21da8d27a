package signaling

import (
	"slices"
	"sync"
	"time"

	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/store"
)

// Session is a gateway session: it outlives its connections so that a
// client can resume. Its event log is both the send queue and the resume
// buffer: entry seq is the dispatch with that sequence number, events from
// sent+1 on are not yet written to the current connection, and events up to
// sent stay for replay until newer ones push them out.
type Session struct {
	id      string
	user    store.User
	intents uint64
	shard   []int
	large   int
	guilds  []guild.ID

	mu       sync.Mutex
	log      []*guild.Event // ring buffer, len is a power of two
	bytes    int            // payload bytes of the entries kept
	base     uint64         // seq of the oldest entry kept
	next     uint64         // seq the next event gets
	sent     uint64         // last seq written to conn
	conn     *conn
	invalid  bool
	detached time.Time
	status   string
	acts     []guild.Activity
}

func newSession(id string, u store.User) *Session {
	return &Session{id: id, user: u, log: make([]*guild.Event, minLog), base: 1, next: 1}
}

// logLimit bounds a session's event log: events kept, and their payload
// bytes (an event is shared by every session it goes to, but one session's
// log must not be what keeps megabytes alive for the resume window).
type logLimit struct {
	events int
	bytes  int
}

// push appends an event and wakes the writer. It never blocks and allocates
// only when the log grows. lim bounds memory: events already sent are
// dropped from the front to make room; when the room would have to come
// from unsent events the consumer is hopeless and the session is
// invalidated; when half of the log is unsent the connection is closed as
// a slow consumer (resumable; the events stay here for the resume).
func (s *Session) push(ev *guild.Event, lim logLimit) (slow *conn) {
	s.mu.Lock()
	if s.invalid {
		s.mu.Unlock()
		return nil
	}
	if int(s.next-s.base) == len(s.log) && len(s.log) < lim.events {
		s.grow()
	}
	for int(s.next-s.base) == len(s.log) || (s.next > s.base && s.bytes+len(ev.Data) > lim.bytes) {
		if s.base > s.sent {
			s.invalid = true
			c := s.conn
			s.mu.Unlock()
			return c
		}
		s.drop()
	}
	s.log[s.next&uint64(len(s.log)-1)] = ev
	s.bytes += len(ev.Data)
	s.next++
	c := s.conn
	unsent := int(s.next - 1 - s.sent)
	s.mu.Unlock()
	if c != nil {
		if unsent > lim.events/2 {
			return c
		}
		c.wake()
	}
	return nil
}

// drop forgets the oldest entry. Caller holds s.mu.
func (s *Session) drop() {
	i := s.base & uint64(len(s.log)-1)
	s.bytes -= len(s.log[i].Data)
	s.log[i] = nil
	s.base++
}

func (s *Session) grow() {
	n := make([]*guild.Event, len(s.log)*2)
	for seq := s.base; seq < s.next; seq++ {
		n[seq&uint64(len(n)-1)] = s.log[seq&uint64(len(s.log)-1)]
	}
	s.log = n
}

// pending copies up to len(dst) unsent events for c into dst and returns
// them with the seq of the first; none when c is no longer attached.
func (s *Session) pending(c *conn, dst []*guild.Event) ([]*guild.Event, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != c {
		return dst[:0], 0
	}
	first := s.sent + 1
	if first < s.base {
		first = s.base
	}
	n := 0
	for seq := first; seq < s.next && n < cap(dst); seq++ {
		dst = append(dst[:n], s.log[seq&uint64(len(s.log)-1)])
		n++
	}
	return dst[:n], first
}

// markSent records that events through seq reached c's socket.
func (s *Session) markSent(c *conn, seq uint64) {
	s.mu.Lock()
	if s.conn == c && seq > s.sent {
		s.sent = seq
	}
	s.mu.Unlock()
}

// minLog is the size a session log starts at and shrinks back to.
const minLog = 16

// ack releases the events through seq, which the client confirmed in a
// heartbeat, and shrinks a log that a burst had grown.
func (s *Session) ack(c *conn, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != c || seq > s.sent {
		return
	}
	for s.base <= seq {
		s.drop()
	}
	if live := int(s.next - s.base); len(s.log) > minLog && live <= len(s.log)/4 {
		n := len(s.log) / 2
		for n > minLog && live <= n/4 {
			n /= 2
		}
		small := make([]*guild.Event, n)
		for q := s.base; q < s.next; q++ {
			small[q&uint64(n-1)] = s.log[q&uint64(len(s.log)-1)]
		}
		s.log = small
	}
}

// Resume errors.
const (
	resumeOK = iota
	resumeBadSeq
	resumeGone
)

// attach makes c the session's connection, resuming after seq when
// resuming is true. It returns the connection it replaced, if any.
func (s *Session) attach(c *conn, resuming bool, seq uint64) (old *conn, result int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.invalid {
		return nil, resumeGone
	}
	if resuming {
		if seq >= s.next {
			return nil, resumeBadSeq
		}
		if seq+1 < s.base {
			return nil, resumeGone // events it missed were pushed out
		}
		s.sent = seq
	}
	old, s.conn = s.conn, c
	return old, resumeOK
}

// detach removes c if it is still the connection; it reports whether it was.
func (s *Session) detach(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != c {
		return false
	}
	s.conn = nil
	s.detached = time.Now()
	return true
}

func (s *Session) invalidate() {
	s.mu.Lock()
	s.invalid = true
	s.mu.Unlock()
}

func (s *Session) inGuild(id guild.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.guilds {
		if g == id {
			return true
		}
	}
	return false
}

// sub is the session's subscription to a guild's events, as node's.
func (s *Session) sub(node string) guild.Sub {
	s.mu.Lock()
	defer s.mu.Unlock()
	return guild.Sub{Node: node, Session: s.id, User: s.user.ID, Intents: s.intents, LargeThreshold: s.large,
		Status: s.status, Activities: s.acts}
}

// join adds a guild the user just joined to the session when its shard
// carries it, and reports whether it does.
func (s *Session) join(gid guild.ID) bool {
	if !protocol.OnShard(gid, s.shard) {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.guilds, gid) {
		s.guilds = append(s.guilds, gid)
	}
	return true
}
