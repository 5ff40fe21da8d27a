package signaling

import (
	"encoding/binary"
	"errors"
	"io"
	"time"

	"github.com/chorus-voice/chorus/signaling/wire"
)

// The read side of a connection is our own: gorilla/websocket performs the
// handshake, then frames are read straight from the socket by a small
// parser (wire.ParseFrameHeader) into a pooled buffer that an idle
// connection does not hold. Like nats-server's read loop, nothing here
// buffers beyond the frame at hand.

var (
	errTooLarge = errors.New("payload too large")
	errProtocol = errors.New("websocket protocol error")
)

// WebSocket close codes (RFC 6455 §7.4.1).
const (
	closeNormal     = 1000
	closeGoingAway  = 1001
	closeProtocol   = 1002
	closeNoStatus   = 1005
	closeNoResponse = 0 // the peer vanished without a close frame
)

// readMessage reads one client message and returns it in a buffer from
// the gateway's pool, which the caller puts back. The buffer is taken only
// once a data frame has arrived, so a connection blocked here holds none.
// Control frames in between are handled here: pings are answered, pongs
// ignored; a close frame ends reading with its code.
func (c *conn) readMessage() (bp *[]byte, n int, closeCode int, err error) {
	defer func() {
		if bp != nil && (err != nil || closeCode != 0) {
			c.g.bufs.Put(bp)
			bp = nil
		}
	}()
	inMessage := false
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
			return bp, 0, 0, errProtocol
		}
		if h.Opcode >= wire.FrameClose {
			p := make([]byte, h.Length) // at most 125 bytes, and rare
			if _, err := io.ReadFull(c.rd, p); err != nil {
				return bp, 0, closeNoResponse, err
			}
			wire.Unmask(p, h.Mask, 0)
			switch h.Opcode {
			case wire.FramePing:
				c.queue(ctrlFrame{op: wire.FramePong, p: p})
			case wire.FrameClose:
				if len(p) < 2 {
					return bp, 0, closeNoStatus, nil
				}
				return bp, 0, int(binary.BigEndian.Uint16(p)), nil
			}
			continue
		}
		if (h.Opcode == 0) != inMessage {
			return bp, 0, 0, errProtocol // continuation without a start, or a new start mid-message
		}
		inMessage = true
		if uint64(n)+h.Length > wire.MaxPayload {
			return bp, 0, 0, errTooLarge
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
			if bp == nil { // an empty message
				bp = c.g.bufs.Get().(*[]byte)
			}
			return bp, n, 0, nil
		}
	}
}

// readLoop reads client payloads until the connection ends and returns the
// client's close code (closeNoResponse when it just went away).
func (g *Gateway) readLoop(c *conn) int {
	for {
		bp, n, code, err := c.readMessage()
		if err != nil || code != 0 {
			switch {
			case errors.Is(err, errTooLarge):
				c.closeWith(wire.CloseDecodeError, "payload too large")
				return drain(c)
			case errors.Is(err, errProtocol):
				c.closeWith(closeProtocol, "protocol error")
				return drain(c)
			case code != 0:
				// Answer the client's close (RFC 6455 §5.5.1) and let the
				// writer finish before the socket goes.
				echo := code
				if echo == closeNoStatus {
					echo = closeNormal
				}
				c.closeFrame(echo, "", false)
				c.waitFinished(2 * time.Second)
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
		go func(p []byte) { c.handled <- g.handle(c, p) }((*bp)[:n])
		ok := <-c.handled
		g.bufs.Put(bp)
		if !ok {
			return drain(c)
		}
	}
}

// drain discards input after we decided to close, until the peer goes away
// or the deadline set here passes.
func drain(c *conn) int {
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var buf [512]byte
	for {
		if _, err := c.rd.Read(buf[:]); err != nil {
			return closeNoResponse
		}
	}
}
