package signaling

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/signaling/wire"
	"github.com/chorus-voice/chorus/store"
)

// maskedFrame builds a client frame: fin, opcode and a masked payload.
func maskedFrame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	b = append(b, mask[:]...)
	start := len(b)
	b = append(b, payload...)
	wire.Unmask(b[start:], mask, 0)
	return b
}

// readerConn is a conn whose input is in and whose output is discarded.
func readerConn(t testing.TB, in []byte) *conn {
	c, _ := readerGatewayConn(t, in)
	return c
}

// readerGatewayConn is readerConn with the gateway it belongs to.
func readerGatewayConn(t testing.TB, in []byte) (*conn, *Gateway) {
	g := NewGateway(Config{}, Deps{})
	server, client := net.Pipe()
	go io.Copy(io.Discard, client)
	t.Cleanup(func() { server.Close(); client.Close() })
	return &conn{ep: &g.ep, nc: &lockedConn{Conn: server}, rd: bytes.NewReader(in)}, g
}

func TestReadMessage(t *testing.T) {
	closeBody := func(code uint16, reason string) []byte {
		return append(binary.BigEndian.AppendUint16(nil, code), reason...)
	}
	tests := []struct {
		name string
		in   []byte
		want string             // the message, when one is read
		code protocol.CloseCode // the close code, with errPeerClosed
		err  error
	}{
		{"text", maskedFrame(true, wire.FrameText, []byte(`{"op":1}`)), `{"op":1}`, 0, nil},
		{"fragmented", append(maskedFrame(false, wire.FrameText, []byte(`{"op"`)), maskedFrame(true, 0, []byte(`:1}`))...), `{"op":1}`, 0, nil},
		{"ping between fragments", append(append(maskedFrame(false, wire.FrameText, []byte(`ab`)), maskedFrame(true, wire.FramePing, []byte("x"))...), maskedFrame(true, 0, []byte(`c`))...), `abc`, 0, nil},
		{"empty message", maskedFrame(true, wire.FrameBinary, nil), ``, 0, nil},
		{"close without body", maskedFrame(true, wire.FrameClose, nil), ``, protocol.CloseNoStatus, errPeerClosed},
		{"close 1000", maskedFrame(true, wire.FrameClose, closeBody(1000, "bye")), ``, 1000, errPeerClosed},
		{"close 4000", maskedFrame(true, wire.FrameClose, closeBody(4000, "")), ``, 4000, errPeerClosed},
		// The frame that crashed the node: status code 0.
		{"close code 0", maskedFrame(true, wire.FrameClose, []byte{0, 0}), ``, 0, errProtocol},
		{"close code 999", maskedFrame(true, wire.FrameClose, closeBody(999, "")), ``, 0, errProtocol},
		{"close code 1005", maskedFrame(true, wire.FrameClose, closeBody(1005, "")), ``, 0, errProtocol},
		{"close code 1015", maskedFrame(true, wire.FrameClose, closeBody(1015, "")), ``, 0, errProtocol},
		{"close code 2999", maskedFrame(true, wire.FrameClose, closeBody(2999, "")), ``, 0, errProtocol},
		{"close code 5000", maskedFrame(true, wire.FrameClose, closeBody(5000, "")), ``, 0, errProtocol},
		{"close body of one byte", maskedFrame(true, wire.FrameClose, []byte{3}), ``, 0, errProtocol},
		{"close reason not UTF-8", maskedFrame(true, wire.FrameClose, closeBody(1000, "\xff")), ``, 0, errNotUTF8},
		{"text not UTF-8", maskedFrame(true, wire.FrameText, []byte("{\"op\":\xc3}")), ``, 0, errNotUTF8},
		{"UTF-8 split across fragments", append(maskedFrame(false, wire.FrameText, []byte("\xc3")), maskedFrame(true, 0, []byte("\xa9"))...), "é", 0, nil},
		{"binary need not be UTF-8", maskedFrame(true, wire.FrameBinary, []byte{0xff}), "\xff", 0, nil},
		{"continuation first", maskedFrame(true, 0, []byte("x")), ``, 0, errProtocol},
		{"too large", maskedFrame(true, wire.FrameText, make([]byte, protocol.MaxPayload+1)), ``, 0, errTooLarge},
		{"truncated", maskedFrame(true, wire.FrameText, []byte("abc"))[:5], ``, 0, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := readerConn(t, tt.in)
			bp, n, _, code, err := c.readMessage()
			if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if err != nil {
				if bp != nil {
					t.Fatal("a buffer came back with an error")
				}
				if code != tt.code {
					t.Fatalf("close code %d, want %d", code, tt.code)
				}
				return
			}
			if got := string((*bp)[:n]); got != tt.want {
				t.Fatalf("message %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzReadMessage drives the frame reader with arbitrary client bytes,
// control frames included: it must never panic, and what it returns must
// be consistent.
func FuzzReadMessage(f *testing.F) {
	f.Add(maskedFrame(true, wire.FrameClose, []byte{0, 0}))
	f.Add(maskedFrame(true, wire.FrameClose, nil))
	f.Add(maskedFrame(true, wire.FrameText, []byte(`{"op":1,"d":null}`)))
	f.Add(append(maskedFrame(false, wire.FrameText, []byte(`{"op"`)), maskedFrame(true, wire.FramePing, []byte("p"))...))
	f.Add([]byte{0x88, 0x82, 1, 2, 3, 4, 1, 2})
	f.Fuzz(func(t *testing.T, in []byte) {
		c := readerConn(t, in)
		for range 64 { // every frame is at least 2 bytes: bounded by the input anyway
			bp, n, _, code, err := c.readMessage()
			if err != nil {
				if bp != nil {
					t.Fatal("a buffer came back with an error")
				}
				if errors.Is(err, errPeerClosed) && code != protocol.CloseNoStatus && !wire.SendableCloseCode(int(code)) {
					t.Fatalf("close code %d accepted", code)
				}
				return
			}
			if n > protocol.MaxPayload {
				t.Fatalf("message of %d bytes", n)
			}
			c.ep.bufs.Put(bp)
		}
	})
}

// A panic while handling a payload ends that connection only: it is
// counted, the connection is closed with 4000, and the reader goes on.
// (Here the panic is a nil router: a session in a guild on a gateway that
// was never given one.)
func TestHandlerPanicIsConfined(t *testing.T) {
	c, g := readerGatewayConn(t, nil)
	s := newSession("s1", store.User{ID: 1})
	s.guilds = []guild.ID{2}
	c.sess.Store(s)
	c.handled = make(chan bool, 1)
	c.limit = newPayloadBucket(10)
	go handleAsync(c, g.handle, []byte(`{"op":3,"d":{"status":"idle","activities":[]}}`))
	if ok := <-c.handled; ok {
		t.Fatal("the handler reported success")
	}
	if n := g.metrics.Panics.Load(); n != 1 {
		t.Fatalf("%d panics counted", n)
	}
	c.mu.Lock()
	code := c.closeCode
	c.mu.Unlock()
	if code != protocol.CloseUnknownError {
		t.Fatalf("closed with %d", code)
	}
}

type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("reader exploded") }

// A panic in the read loop ends that connection only, counted.
func TestReadLoopPanicIsConfined(t *testing.T) {
	c, g := readerGatewayConn(t, nil)
	c.rd = panicReader{}
	c.hb = time.AfterFunc(time.Hour, func() {})
	g.running.Add(1)
	g.run(c) // returns instead of taking the process down
	if n := g.metrics.Panics.Load(); n != 1 {
		t.Fatalf("%d panics counted", n)
	}
	if n := g.metrics.Connections.Load(); n != 0 {
		t.Fatalf("%d connections still counted", n)
	}
}
