package signaling

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/signaling/wire"
	"github.com/gorilla/websocket"
)

// writeBatch is how many dispatches one system call carries at most.
const writeBatch = 64

// lockedConn serialises writes from our writer and the few control frames
// gorilla writes itself, so frames never interleave.
type lockedConn struct {
	net.Conn
	mu sync.Mutex
}

func (l *lockedConn) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Conn.Write(p)
}

type ctrlFrame struct {
	op byte
	p  []byte
}

// endpoint is what one gateway's connections share: limits and timeouts,
// the close codes its protocol gives the situations the connection layer
// handles itself, how a message kept in a session's eventLog is framed,
// and where closes and panics are counted.
type endpoint struct {
	name              string // "main" or "voice": the closes label, logs
	heartbeatTimeout  time.Duration
	identifyTimeout   time.Duration
	writeTimeout      time.Duration
	payloadsPerMinute int
	// ignoreBinary drops binary messages unread (voice: DAVE's binary
	// opcodes, never negotiated, voice.md §7).
	ignoreBinary bool
	// Close codes: no Identify in time (4003 in both protocols), a
	// heartbeat timeout, a payload over protocol.MaxPayload, a server
	// fault (a handler's panic, a slow consumer) the client may resume
	// from, and too many payloads.
	closeNoIdentify, closeZombie, closeTooLarge, closeServerFault protocol.CloseCode
	closeRateLimited                                              protocol.CloseCode
	// frame appends a kept message with its sequence number.
	frame    func(c *conn, b []byte, ev *guild.Event, seq uint64) []byte
	closes   *closeCounts
	metrics  *Metrics
	logger   *slog.Logger
	bufs     sync.Pool // payload buffers, protocol.MaxPayload+1 bytes
	upgrader websocket.Upgrader
}

func (e *endpoint) init() {
	e.bufs.New = func() any { b := make([]byte, protocol.MaxPayload+1); return &b }
	e.upgrader = websocket.Upgrader{
		ReadBufferSize:  512,          // client payloads are small; gorilla's minimum is 125
		WriteBufferPool: &sync.Pool{}, // we write frames ourselves; gorilla keeps no buffer
		CheckOrigin:     func(*http.Request) bool { return true },
	}
}

// heartbeatTimeout is one interval plus half of one: the interval already
// includes slack (gateway.md §6).
func heartbeatTimeout(interval time.Duration) time.Duration { return interval * 3 / 2 }

// accept upgrades a request to a websocket connection of e: gorilla
// performs the handshake, and from then on the socket is ours (reader.go
// reads frames, the writer here writes them). It returns nil when gorilla
// answered with an HTTP error.
func (e *endpoint) accept(w http.ResponseWriter, r *http.Request) *conn {
	hw := &hijackWriter{ResponseWriter: w}
	if _, err := e.upgrader.Upgrade(hw, r, nil); err != nil {
		return nil
	}
	return &conn{ep: e, nc: hw.conn, rd: hw.conn.Conn, limit: newPayloadBucket(e.payloadsPerMinute)}
}

// hijackWriter hands gorilla a connection whose writes are serialised with ours.
type hijackWriter struct {
	http.ResponseWriter
	conn *lockedConn
}

func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, rw, err := h.ResponseWriter.(http.Hijacker).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.conn = &lockedConn{Conn: nc}
	return h.conn, rw, nil
}

// conn is one websocket connection of either gateway. Its reader goroutine
// parses client payloads (reader.go). A writer goroutine exists only while
// there is something to write: it coalesces control frames, the session's
// sequenced messages and a close frame into one write per round and exits
// when the queue is empty, so an idle connection costs one parked
// goroutine with a small stack.
type conn struct {
	ep   *endpoint
	nc   *lockedConn // writes, deadlines, close
	rd   io.Reader   // reads (the same socket, without the write lock)
	hdr  [14]byte    // frame header being read
	comp wire.Compressor

	// The session the connection serves, once identified or resumed: a
	// gateway Session or a voice session; its eventLog feeds the writer.
	sess     atomic.Pointer[Session]
	voice    atomic.Pointer[voiceSession]
	lastBeat atomic.Int64 // unix nanoseconds

	writing atomic.Bool // a writer goroutine is running
	dirty   atomic.Bool // something was queued since the writer last looked
	hb      *time.Timer // heartbeat deadline (zombie detection)

	mu          sync.Mutex
	done        chan struct{} // closed once the close frame is written
	ctrl        []ctrlFrame
	closeCode   protocol.CloseCode
	closeReason string

	// writer-goroutine state; the byte buffers come from writeBufs for the
	// length of one flush, so an idle connection holds none of them.
	wbuf, env, zbuf *[]byte
	batch           []*guild.Event
	batchp          *[]*guild.Event // batch's pool entry
	spare           []ctrlFrame

	// reader-goroutine state: the payload rate limit, and where the
	// handler goroutine reports back
	limit   payloadBucket
	handled chan bool

	// the identify deadline: when the connection opened, and whether
	// Identify or Resume arrived since; the protocol version the client
	// asked for (cold fields, kept last)
	opened    time.Time
	loggingIn atomic.Bool
	version   int
}

// log returns the eventLog of the session the connection serves, if any.
func (c *conn) log() *eventLog {
	if s := c.sess.Load(); s != nil {
		return &s.eventLog
	}
	if v := c.voice.Load(); v != nil {
		return &v.eventLog
	}
	return nil
}

// allow applies the payloads-per-minute limit.
func (c *conn) allow() bool { return c.limit.take(time.Now()) }

// wake makes sure a writer will look at the queues. It never blocks.
func (c *conn) wake() {
	c.dirty.Store(true)
	if c.writing.CompareAndSwap(false, true) {
		go c.writeLoop()
	}
}

// send queues a non-dispatch gateway payload.
func (c *conn) send(p []byte) { c.queue(ctrlFrame{op: 0, p: p}) }

func (c *conn) queue(f ctrlFrame) {
	c.mu.Lock()
	if c.closeCode == 0 {
		c.ctrl = append(c.ctrl, f)
	}
	c.mu.Unlock()
	c.wake()
}

// closeWith asks the writer to send a close frame and end the connection,
// and counts the code. The first code wins. It never blocks.
func (c *conn) closeWith(code protocol.CloseCode, reason string) { c.closeFrame(code, reason, true) }

func (c *conn) closeFrame(code protocol.CloseCode, reason string, count bool) {
	c.mu.Lock()
	if c.closeCode == 0 {
		c.closeCode, c.closeReason = code, reason
		if count {
			c.ep.closes.add(code)
		}
	}
	c.mu.Unlock()
	c.wake()
}

// waitFinished waits until the writer has sent the close frame, or d.
func (c *conn) waitFinished(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.finished():
	case <-t.C:
	}
}

func (c *conn) finished() chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
	}
	return c.done
}

// writeBufs holds the writers' scratch buffers between flushes.
var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return writeBufs.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= 256<<10 { // a burst's huge buffer is left to the GC
		*b = (*b)[:0]
		writeBufs.Put(b)
	}
}

func (c *conn) appendMessage(b, payload []byte) []byte {
	if c.comp == nil {
		return wire.AppendFrame(b, wire.FrameText, payload)
	}
	if c.zbuf == nil {
		c.zbuf = getBuf()
	}
	out, err := c.comp.Compress((*c.zbuf)[:0], payload)
	if err != nil {
		return b
	}
	*c.zbuf = out
	return wire.AppendFrame(b, wire.FrameBinary, out)
}

// batches holds the writers' event batches between flushes.
var batches = sync.Pool{New: func() any { b := make([]*guild.Event, 0, writeBatch); return &b }}

// release returns the scratch buffers to the pools.
func (c *conn) release() {
	if c.batchp != nil {
		batches.Put(c.batchp)
		c.batch, c.batchp = nil, nil
	}
	for _, b := range []**[]byte{&c.wbuf, &c.env, &c.zbuf} {
		if *b != nil {
			putBuf(*b)
			*b = nil
		}
	}
}

// writeLoop flushes until nothing is queued, then exits. A waker that
// queues after the flush either sees writing false and starts a new writer,
// or this loop sees dirty and goes round again.
func (c *conn) writeLoop() {
	defer func() {
		if r := recover(); r != nil {
			// Confined to this connection: counted, logged, socket closed
			// (the reader then ends the connection; the session stays
			// resumable). writing stays true, so no writer starts again.
			c.ep.metrics.recovered(c.ep.logger, c.ep.name+" writer", r)
			c.nc.Close()
		}
	}()
	for {
		c.dirty.Store(false)
		if !c.flush() {
			return // finished: writing stays true so no writer starts again
		}
		c.writing.Store(false)
		if !c.dirty.Load() || !c.writing.CompareAndSwap(false, true) {
			return
		}
	}
}

// startTimers arms the heartbeat and identify deadlines of a new connection.
func (c *conn) startTimers() {
	c.opened = time.Now()
	c.lastBeat.Store(c.opened.UnixNano())
	c.hb = time.AfterFunc(min(c.ep.heartbeatTimeout, c.ep.identifyTimeout), c.checkHeartbeat)
}

// checkHeartbeat runs when the heartbeat or identify deadline passes.
func (c *conn) checkHeartbeat() {
	next := c.ep.heartbeatTimeout
	if !c.loggingIn.Load() {
		// A connection that never logs in holds a socket for nothing.
		left := c.ep.identifyTimeout - time.Since(c.opened)
		if left <= 0 {
			c.closeWith(c.ep.closeNoIdentify, "no identify in time")
			return
		}
		next = min(next, left)
	}
	idle := time.Since(time.Unix(0, c.lastBeat.Load()))
	if idle >= c.ep.heartbeatTimeout {
		// Zombie connection (gateway.md §6, voice.md §5.4); the session
		// stays resumable.
		c.closeWith(c.ep.closeZombie, "heartbeat timeout")
		return
	}
	c.hb.Reset(min(next, c.ep.heartbeatTimeout-idle))
}

// flush writes everything queued; false once the connection is finished.
func (c *conn) flush() bool {
	for {
		c.mu.Lock()
		ctrl := c.ctrl
		c.ctrl = c.spare[:0]
		code, reason := c.closeCode, c.closeReason
		c.mu.Unlock()
		c.spare = ctrl

		if c.wbuf == nil {
			c.wbuf, c.env = getBuf(), getBuf()
		}
		b := (*c.wbuf)[:0]
		for i, f := range ctrl {
			if f.op == 0 {
				b = c.appendMessage(b, f.p)
			} else {
				b = wire.AppendFrame(b, f.op, f.p)
			}
			ctrl[i] = ctrlFrame{} // the spare must not keep payloads alive
		}
		var last uint64
		more := false
		if s := c.log(); s != nil && code == 0 {
			if c.batch == nil {
				c.batchp = batches.Get().(*[]*guild.Event)
				c.batch = *c.batchp
			}
			batch, first := s.pending(c, c.batch[:0])
			c.batch = batch
			for i, ev := range batch {
				*c.env = c.ep.frame(c, (*c.env)[:0], ev, first+uint64(i))
				b = c.appendMessage(b, *c.env)
				batch[i] = nil
			}
			if len(batch) > 0 {
				last = first + uint64(len(batch)) - 1
			}
			more = len(batch) == cap(batch)
		}
		if code != 0 {
			b = wire.AppendClose(b, code, reason)
		}
		*c.wbuf = b
		if len(b) > 0 {
			c.nc.SetWriteDeadline(time.Now().Add(c.ep.writeTimeout))
			if _, err := c.nc.Write(b); err != nil {
				c.ep.metrics.SlowConsumers.Add(1)
				c.nc.Close()
				c.release()
				return false
			}
		}
		if last != 0 {
			c.log().markSent(c, last)
		}
		if code != 0 {
			c.release()
			c.finish()
			return false
		}
		if !more {
			c.release()
			return true
		}
	}
}

// finish half-closes after a close frame so the peer reads it before the
// connection goes away, then lets the reader drain for a moment.
func (c *conn) finish() {
	close(c.finished())
	if tc, ok := c.nc.Conn.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
	c.nc.SetReadDeadline(time.Now().Add(closeDrain))
}

// closedWith returns the code of the close frame the server sent or
// queued, 0 for none.
func (c *conn) closedWith() protocol.CloseCode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode
}
