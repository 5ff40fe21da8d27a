package rtc

import (
	"net"
	"net/netip"
	"sync"

	"github.com/chorus-voice/chorus/transport"
)

// batchConn is the shared port as pion's ICE mux sees it. A forwarding
// goroutine fanning one packet out to many WebRTC receivers (sfu's
// Forwarder, between Begin and End) would otherwise pay one sendto(2) per
// receiver inside pion's SRTP write — most of a packet's cost. Writes made
// while any fan-out is open are copied into a queue instead, and the fan
// out's End sends the queue with one sendmmsg(2). Every other write
// (STUN, DTLS, RTCP) goes straight out. Ordering between receivers does
// not matter; a queued write waits at most one fan-out.
type batchConn struct {
	*net.UDPConn

	mu     sync.Mutex // guards open, queue, bufs and w
	open   int        // fan-outs between Begin and End
	queue  []transport.Datagram
	bufs   [][]byte
	w      *transport.Writer
	Queued uint64 // writes that went out batched (under mu)

	// take, if set, is offered every RTP packet read before pion sees it
	// (Leg.take): true means it was consumed. Set before the mux reads.
	take func(pkt []byte, from netip.AddrPort) bool
}

// maxQueued bounds the queue (and its copies): a few sendmmsg calls' worth.
const maxQueued = 4 * transport.BatchSize

func newBatchConn(c *net.UDPConn) (*batchConn, error) {
	w, err := transport.NewWriter(c)
	if err != nil {
		return nil, err
	}
	return &batchConn{UDPConn: c, w: w}, nil
}

// Begin opens a fan-out (sfu.Batch).
func (b *batchConn) Begin() {
	b.mu.Lock()
	b.open++
	b.mu.Unlock()
}

// End closes a fan-out and sends everything queued (sfu.Batch).
func (b *batchConn) End() {
	b.mu.Lock()
	b.open--
	if len(b.queue) > 0 {
		b.w.Write(b.queue)
		b.Queued += uint64(len(b.queue))
		b.queue = b.queue[:0]
	}
	b.mu.Unlock()
}

// WriteToAddrPort is how pion's mux writes (ice.AddrPortReaderWriter).
func (b *batchConn) WriteToAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	b.mu.Lock()
	if b.open > 0 {
		i := len(b.queue)
		if i == maxQueued {
			// A fan-out larger than the queue: send what is queued first
			// (the copies are reused).
			b.w.Write(b.queue)
			b.Queued += uint64(i)
			b.queue, i = b.queue[:0], 0
		}
		if i == len(b.bufs) {
			b.bufs = append(b.bufs, make([]byte, 0, transport.MaxDatagram))
		}
		b.bufs[i] = append(b.bufs[i][:0], p...)
		b.queue = append(b.queue, transport.Datagram{Buf: b.bufs[i], Addr: addr})
		b.mu.Unlock()
		return len(p), nil
	}
	b.mu.Unlock()
	return b.UDPConn.WriteToUDPAddrPort(p, addr)
}

// WriteTo routes net.Addr writes the same way.
func (b *batchConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok {
		return b.WriteToAddrPort(p, ua.AddrPort())
	}
	return b.UDPConn.WriteTo(p, addr)
}

// ReadFromAddrPort completes ice.AddrPortReaderWriter. It is pion's mux's
// one read loop; SRTP from a peer on the leg's own path is decrypted and
// forwarded here (Leg.take) and never reaches pion, which sees STUN, DTLS
// and RTCP.
func (b *batchConn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	for {
		n, from, err := b.UDPConn.ReadFromUDPAddrPort(p)
		if err != nil || b.take == nil || !isRTP(p[:n]) || !b.take(p[:n], from) {
			return n, from, err
		}
	}
}

// isRTP tells RTP from what shares the port with it (RFC 7983 §7: the
// first byte 128–191 is RTP or RTCP; RFC 5761 §4: RTCP's packet types
// 192–223 in the second byte).
func isRTP(b []byte) bool {
	return len(b) >= 12 && b[0] >= 128 && b[0] <= 191 && (b[1] < 192 || b[1] > 223)
}
