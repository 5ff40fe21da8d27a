package signaling

import (
	"sync"
	"time"

	"github.com/chorus-voice/chorus/guild"
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

// push appends an event and wakes the writer. It never blocks and allocates
// only when the log grows. maxLog bounds memory: when the log is full of
// unsent events the consumer is hopeless and the session is invalidated;
// when half of it is unsent the connection is closed as a slow consumer
// (resumable; the events stay here for the resume).
func (s *Session) push(ev *guild.Event, maxLog int) (slow *conn) {
	s.mu.Lock()
	if s.invalid {
		s.mu.Unlock()
		return nil
	}
	if int(s.next-s.base) == len(s.log) {
		switch {
		case len(s.log) < maxLog:
			s.grow()
		case s.base <= s.sent:
			s.log[s.base&uint64(len(s.log)-1)] = nil
			s.base++
		default:
			s.invalid = true
			c := s.conn
			s.mu.Unlock()
			return c
		}
	}
	s.log[s.next&uint64(len(s.log)-1)] = ev
	s.next++
	c := s.conn
	unsent := int(s.next - 1 - s.sent)
	s.mu.Unlock()
	if c != nil {
		if unsent > maxLog/2 {
			return c
		}
		c.wake()
	}
	return nil
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
	for ; s.base <= seq; s.base++ {
		s.log[s.base&uint64(len(s.log)-1)] = nil
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
