package signaling

import (
	"sync"
	"time"

	"github.com/chorus-voice/chorus/guild"
)

// eventLog is what both gateways resume from: a session's sequenced
// messages, kept as a ring of events. Entry seq is the message sent with
// that sequence number; entries from sent+1 on are not yet written to the
// current connection, and entries up to sent stay for a resume until newer
// ones push them out or the client acknowledges them. The connection's
// writer frames each entry as its protocol wants (endpoint.frame): a
// dispatch of the main gateway, or a voice message with its 16-bit seq.
type eventLog struct {
	mu       sync.Mutex
	log      []*guild.Event // ring buffer, len is a power of two
	bytes    int            // payload bytes of the entries kept
	base     uint64         // seq of the oldest entry kept
	next     uint64         // seq the next event gets
	sent     uint64         // last seq written to conn
	conn     *conn
	invalid  bool
	detached time.Time
}

func newEventLog() eventLog {
	return eventLog{log: make([]*guild.Event, minLog), base: 1, next: 1}
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
func (s *eventLog) push(ev *guild.Event, lim logLimit) (slow *conn) {
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
func (s *eventLog) drop() {
	i := s.base & uint64(len(s.log)-1)
	s.bytes -= len(s.log[i].Data)
	s.log[i] = nil
	s.base++
}

func (s *eventLog) grow() {
	n := make([]*guild.Event, len(s.log)*2)
	for seq := s.base; seq < s.next; seq++ {
		n[seq&uint64(len(n)-1)] = s.log[seq&uint64(len(s.log)-1)]
	}
	s.log = n
}

// pending copies up to len(dst) unsent events for c into dst and returns
// them with the seq of the first; none when c is no longer attached.
func (s *eventLog) pending(c *conn, dst []*guild.Event) ([]*guild.Event, uint64) {
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
func (s *eventLog) markSent(c *conn, seq uint64) {
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
func (s *eventLog) ack(c *conn, seq uint64) {
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
func (s *eventLog) attach(c *conn, resuming bool, seq uint64) (old *conn, result int) {
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
func (s *eventLog) detach(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != c {
		return false
	}
	s.conn = nil
	s.detached = time.Now()
	return true
}

func (s *eventLog) invalidate() {
	s.mu.Lock()
	s.invalid = true
	s.mu.Unlock()
}

// current returns the attached connection, nil while detached.
func (s *eventLog) current() *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

// stale reports whether the log has been detached for at least window:
// its session was not resumed in time.
func (s *eventLog) stale(window time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn == nil && time.Since(s.detached) >= window
}

// lastSeq returns the newest sequence number given out (0 for none).
func (s *eventLog) lastSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next - 1
}

// seqOf16 maps a voice seq_ack, the low 16 bits of a sequence number
// (voice.md §6), to the full number: the newest one from which a resume
// could still start (base-1 up to the newest given out). The log holds
// far fewer than 65,536 entries, so the match is unique.
func (s *eventLog) seqOf16(ack int) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for seq := s.next - 1; seq+1 >= s.base; seq-- {
		if int(seq&0xFFFF) == ack {
			return seq, true
		}
		if seq == 0 {
			break
		}
	}
	return 0, false
}

// adopt puts a log handed over by another node in front of this one's
// entries, which have not been sent (the session was not attached here
// yet): the handed-over events keep their numbers from base on, and this
// log's follow them. It reports false when both do not fit lim.
func (s *eventLog) adopt(base uint64, evs []*guild.Event, lim logLimit) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := len(evs) + int(s.next-s.base)
	if total > lim.events || base == 0 {
		return false
	}
	n := minLog
	for n < total {
		n *= 2
	}
	ring, bytes := make([]*guild.Event, n), 0
	seq := base
	for _, ev := range evs {
		ring[seq&uint64(n-1)] = ev
		bytes += len(ev.Data)
		seq++
	}
	for q := s.base; q < s.next; q++ {
		ev := s.log[q&uint64(len(s.log)-1)]
		ring[seq&uint64(n-1)] = ev
		bytes += len(ev.Data)
		seq++
	}
	s.log, s.bytes, s.base, s.next, s.sent = ring, bytes, base, seq, base-1
	return true
}

// snapshot returns the entries kept and the seq of the first.
func (s *eventLog) snapshot() (base uint64, evs []*guild.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for q := s.base; q < s.next; q++ {
		evs = append(evs, s.log[q&uint64(len(s.log)-1)])
	}
	return s.base, evs
}
