package signaling

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/signaling/wire"
)

// closeSlowConsumer is the resumable code a slow consumer is closed with.
const closeSlowConsumer = wire.CloseUnknownError

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

// conn is one websocket connection. Its reader goroutine parses client
// payloads; its writer goroutine coalesces control frames and dispatches
// into one write per wake-up.
type conn struct {
	g    *Gateway
	ws   *websocket.Conn
	nc   *lockedConn
	comp wire.Compressor

	sess     atomic.Pointer[Session]
	lastBeat atomic.Int64 // unix nanoseconds

	wakeCh chan struct{}
	done   chan struct{}

	mu          sync.Mutex
	ctrl        []ctrlFrame
	closeCode   int
	closeReason string

	// writer-goroutine state
	wbuf, env, zbuf []byte
	batch           []*guild.Event
	spare           []ctrlFrame

	// reader-goroutine state: token bucket of the payload rate limit
	tokens float64
	refill time.Time
}

func (c *conn) wake() {
	select {
	case c.wakeCh <- struct{}{}:
	default:
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

// closeWith asks the writer to send a close frame and end the connection.
// The first code wins. It never blocks.
func (c *conn) closeWith(code int, reason string) {
	c.mu.Lock()
	if c.closeCode == 0 {
		c.closeCode, c.closeReason = code, reason
		c.g.metrics.countClose(code)
	}
	c.mu.Unlock()
	c.wake()
}

func (c *conn) appendMessage(b, payload []byte) []byte {
	if c.comp == nil {
		return wire.AppendFrame(b, wire.FrameText, payload)
	}
	out, err := c.comp.Compress(c.zbuf[:0], payload)
	if err != nil {
		return b
	}
	c.zbuf = out
	return wire.AppendFrame(b, wire.FrameBinary, out)
}

func (c *conn) writeLoop() {
	timeout := c.g.heartbeatTimeout()
	hb := time.NewTimer(timeout)
	defer hb.Stop()
	for {
		select {
		case <-c.wakeCh:
		case <-hb.C:
			idle := time.Since(time.Unix(0, c.lastBeat.Load()))
			if idle >= timeout {
				// Zombie connection (gateway.md §6); the session stays resumable.
				c.closeWith(wire.CloseUnknownError, "heartbeat timeout")
			} else {
				hb.Reset(timeout - idle)
			}
		case <-c.done:
			return
		}
		if !c.flush() {
			return
		}
	}
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

		b := c.wbuf[:0]
		for _, f := range ctrl {
			if f.op == 0 {
				b = c.appendMessage(b, f.p)
			} else {
				b = wire.AppendFrame(b, f.op, f.p)
			}
		}
		var last uint64
		more := false
		if s := c.sess.Load(); s != nil && code == 0 {
			batch, first := s.pending(c, c.batch[:0])
			c.batch = batch
			for i, ev := range batch {
				c.env = wire.AppendDispatch(c.env[:0], ev.Name, first+uint64(i), ev.Data)
				b = c.appendMessage(b, c.env)
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
		c.wbuf = b
		if len(b) > 0 {
			c.nc.SetWriteDeadline(time.Now().Add(c.g.cfg.WriteTimeout))
			if _, err := c.nc.Write(b); err != nil {
				c.g.metrics.SlowConsumers.Add(1)
				c.nc.Close()
				return false
			}
		}
		if last != 0 {
			c.sess.Load().markSent(c, last)
		}
		if len(c.wbuf) > 64<<10 {
			c.wbuf = nil // do not keep a burst's buffer on an idle connection
		}
		if code != 0 {
			c.finish()
			return false
		}
		if !more {
			return true
		}
	}
}

// finish half-closes after a close frame so the peer reads it before the
// connection goes away, then lets the reader drain for a moment.
func (c *conn) finish() {
	if tc, ok := c.nc.Conn.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
	c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
}
