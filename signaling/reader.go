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
func (c *conn) readMessage() (bp *[]byte, n int, binary bool, closeCode protocol.CloseCode, err error) {
	defer func() {
		if bp != nil && err != nil {
			c.ep.bufs.Put(bp)
			bp = nil
		}
	}()
	var text, inMessage bool
	for {
		if _, err := io.ReadFull(c.rd, c.hdr[:2]); err != nil {
			return bp, 0, false, closeNoResponse, err
		}
		size := wire.HeaderSize(c.hdr[1])
		if _, err := io.ReadFull(c.rd, c.hdr[2:size]); err != nil {
			return bp, 0, false, closeNoResponse, err
		}
		h, err := wire.ParseFrameHeader(c.hdr[:size])
		if err != nil {
			return bp, 0, false, closeNoResponse, errProtocol
		}
		if h.Opcode >= wire.FrameClose {
			// At most 125 bytes (ParseFrameHeader) and rare. On the heap: an
			// array here would sit in the frame of every parked reader and
			// push its stack past 2 KiB.
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(c.rd, p); err != nil {
				return bp, 0, false, closeNoResponse, err
			}
			wire.Unmask(p, h.Mask, 0)
			switch h.Opcode {
			case wire.FramePing:
				c.queue(ctrlFrame{op: wire.FramePong, p: p})
			case wire.FrameClose:
				code, err := wire.ParseClosePayload(p)
				switch {
				case errors.Is(err, wire.ErrCloseReasonUTF8):
					return bp, 0, false, closeNoResponse, errNotUTF8
				case err != nil:
					return bp, 0, false, closeNoResponse, errProtocol
				}
				return bp, 0, false, code, errPeerClosed
			}
			continue
		}
		if (h.Opcode == 0) != inMessage {
			return bp, 0, false, closeNoResponse, errProtocol // continuation without a start, or a new start mid-message
		}
		if !inMessage {
			text = h.Opcode == wire.FrameText
		}
		inMessage = true
		if uint64(n)+h.Length > protocol.MaxPayload {
			return bp, 0, false, closeNoResponse, errTooLarge
		}
		if bp == nil {
			bp = c.ep.bufs.Get().(*[]byte)
		}
		end := n + int(h.Length)
		if _, err := io.ReadFull(c.rd, (*bp)[n:end]); err != nil {
			return bp, 0, false, closeNoResponse, err
		}
		wire.Unmask((*bp)[n:end], h.Mask, 0)
		n = end
		if h.Fin {
			// RFC 6455 §8.1: a text message is UTF-8 as a whole.
			if text && !utf8.Valid((*bp)[:n]) {
				return bp, 0, false, closeNoResponse, errNotUTF8
			}
			return bp, n, !text, 0, nil
		}
	}
}

// handler processes one client payload; false once the connection is
// closing.
type handler func(c *conn, p []byte) bool

// readLoop reads client payloads until the connection ends and returns the
// client's close code (closeNoResponse when it just went away).
func readLoop(c *conn, handle handler) protocol.CloseCode {
	for {
		bp, n, binary, code, err := c.readMessage()
		if err != nil {
			switch {
			case errors.Is(err, errTooLarge):
				c.closeWith(c.ep.closeTooLarge, "payload too large")
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
		if c.closedWith() != 0 {
			// A close frame is out (from this reader or elsewhere: a
			// replaced session, a slow consumer): input is read until the
			// client answers or the drain deadline passes, never handled.
			c.ep.bufs.Put(bp)
			continue
		}
		if binary && c.ep.ignoreBinary {
			c.ep.bufs.Put(bp)
			if !c.allow() { // unread, but counted like any payload
				c.closeWith(c.ep.closeRateLimited, "rate limited")
				return drain(c)
			}
			continue
		}
		// Handling (JSON decoding, store and guild calls) runs on a
		// short-lived goroutine so that its deep stack is not kept by the
		// long-lived reader of an idle connection. The reader waits, so
		// payloads are still handled one at a time and in order.
		if c.handled == nil {
			c.handled = make(chan bool, 1)
		}
		go handleAsync(c, handle, (*bp)[:n])
		ok := <-c.handled
		c.ep.bufs.Put(bp)
		if !ok {
			return drain(c)
		}
	}
}

// handleAsync runs handle for the reader and reports back. A panic while
// handling closes this connection only (with the endpoint's resumable
// server-fault code) and is counted; the node and every other session go on.
func handleAsync(c *conn, handle handler, p []byte) {
	ok := false
	defer func() {
		if r := recover(); r != nil {
			c.ep.metrics.recovered(c.ep.logger, c.ep.name+" payload handler", r)
			c.closeWith(c.ep.closeServerFault, "internal error")
		}
		c.handled <- ok
	}()
	ok = handle(c, p)
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
