package signaling

import (
	"errors"
	"io"
	"time"
	"unicode/utf8"

	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/signaling/wire"
)

// The read side of a connection is our own: gorilla/websocket performs the
// handshake, then frames are read straight from the socket by a small
// parser (wire.ParseFrameHeader) into a pooled buffer that an idle
// connection does not hold. Like nats-server's read loop, nothing here
// buffers beyond the frame at hand.

var (
	errTooLarge   = errors.New("payload too large")
	errProtocol   = errors.New("websocket protocol error")
	errNotUTF8    = errors.New("text message is not UTF-8")
	errPeerClosed = errors.New("peer sent a close frame")
)

// closeNoResponse stands for "the peer vanished without a close frame".
const closeNoResponse protocol.CloseCode = 0

// readMessage reads one client message and returns it in a buffer from
// the gateway's pool, which the caller puts back. The buffer is taken only
// once a data frame has arrived, so a connection blocked here holds none.
// Control frames in between are handled here: pings are answered, pongs
// ignored. A close frame ends reading with errPeerClosed and the client's
// status code; every other error comes with a nil buffer.
func (c *conn) readMessage() (bp *[]byte, n int, closeCode protocol.CloseCode, err error) {
	defer func() {
		if bp != nil && err != nil {
			c.g.bufs.Put(bp)
			bp = nil
		}
	}()
	var text, inMessage bool
	for {
		if _, err := io.ReadFull(c.rd, c.hdr[:2]); err != nil {
			return bp, 0, closeNoResponse, err
		}
		size := wire.HeaderSize(c.hdr[1])
		if _, err := io.ReadFull(c.rd, c.hdr[2:size]); err != nil {
			return bp, 0, closeNoResponse, err
		}
		h, err := wire.ParseFrameHeader(c.hdr[:size])
		if err != nil {
			return bp, 0, closeNoResponse, errProtocol
		}
		if h.Opcode >= wire.FrameClose {
			// At most 125 bytes (ParseFrameHeader) and rare. On the heap: an
			// array here would sit in the frame of every parked reader and
			// push its stack past 2 KiB.
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(c.rd, p); err != nil {
				return bp, 0, closeNoResponse, err
			}
			wire.Unmask(p, h.Mask, 0)
			switch h.Opcode {
			case wire.FramePing:
				c.queue(ctrlFrame{op: wire.FramePong, p: p})
			case wire.FrameClose:
				code, err := wire.ParseClosePayload(p)
				switch {
				case errors.Is(err, wire.ErrCloseReasonUTF8):
					return bp, 0, closeNoResponse, errNotUTF8
				case err != nil:
					return bp, 0, closeNoResponse, errProtocol
				}
				return bp, 0, code, errPeerClosed
			}
			continue
		}
		if (h.Opcode == 0) != inMessage {
			return bp, 0, closeNoResponse, errProtocol // continuation without a start, or a new start mid-message
		}
		if !inMessage {
			text = h.Opcode == wire.FrameText
		}
		inMessage = true
		if uint64(n)+h.Length > protocol.MaxPayload {
			return bp, 0, closeNoResponse, errTooLarge
		}
		if bp == nil {
			bp = c.g.bufs.Get().(*[]byte)
		}
		end := n + int(h.Length)
		if _, err := io.ReadFull(c.rd, (*bp)[n:end]); err != nil {
			return bp, 0, closeNoResponse, err
		}
		wire.Unmask((*bp)[n:end], h.Mask, 0)
		n = end
		if h.Fin {
			// RFC 6455 §8.1: a text message is UTF-8 as a whole.
			if text && !utf8.Valid((*bp)[:n]) {
				return bp, 0, closeNoResponse, errNotUTF8
			}
			return bp, n, 0, nil
		}
	}
}

// readLoop reads client payloads until the connection ends and returns the
// client's close code (closeNoResponse when it just went away).
func (g *Gateway) readLoop(c *conn) protocol.CloseCode {
	for {
		bp, n, code, err := c.readMessage()
		if err != nil {
			switch {
			case errors.Is(err, errTooLarge):
				c.closeWith(protocol.CloseDecodeError, "payload too large")
				return drain(c)
			case errors.Is(err, errProtocol):
				c.closeWith(protocol.CloseProtocol, "protocol error")
				return drain(c)
			case errors.Is(err, errNotUTF8):
				c.closeWith(protocol.CloseInvalidData, "text is not UTF-8")
				return drain(c)
			case errors.Is(err, errPeerClosed):
				// Answer the client's close (RFC 6455 §5.5.1) with a normal
				// closure of our own, never an echo of what the client
				// claimed, and let the writer finish before the socket goes.
				c.closeFrame(protocol.CloseNormal, "", false)
				c.waitFinished(closeDrain)
			}
			return code
		}
		// Handling (JSON decoding, store and guild calls) runs on a
		// short-lived goroutine so that its deep stack is not kept by the
		// long-lived reader of an idle connection. The reader waits, so
		// payloads are still handled one at a time and in order.
		if c.handled == nil {
			c.handled = make(chan bool, 1)
		}
		go g.handleAsync(c, (*bp)[:n])
		ok := <-c.handled
		g.bufs.Put(bp)
		if !ok {
			return drain(c)
		}
	}
}

// handleAsync runs handle for the reader and reports back. A panic while
// handling closes this connection only (4000, resumable) and is counted;
// the node and every other session go on.
func (g *Gateway) handleAsync(c *conn, p []byte) {
	ok := false
	defer func() {
		if r := recover(); r != nil {
			g.metrics.recovered(g.cfg.Logger, "gateway payload handler", r)
			c.closeWith(protocol.CloseUnknownError, "internal error")
		}
		c.handled <- ok
	}()
	ok = g.handle(c, p)
}

// drain discards input after we decided to close, until the peer goes away
// or the deadline set here passes.
func drain(c *conn) protocol.CloseCode {
	c.nc.SetReadDeadline(time.Now().Add(drainAfterError))
	var buf [512]byte
	for {
		if _, err := c.rd.Read(buf[:]); err != nil {
			return closeNoResponse
		}
	}
}
