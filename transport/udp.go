package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Datagram is one packet to write.
type Datagram struct {
	Buf  []byte
	Addr netip.AddrPort
}

// Media is what the voice side does with the datagrams that need policy.
type Media interface {
	// Discovery reports whether the voice gateway assigned ssrc, and notes
	// where its IP discovery came from. Discovery is answered only for
	// assigned SSRCs (voice.md §9.1).
	Discovery(ssrc uint32, from netip.AddrPort) bool
	// KeepAlive reports whether an 8-byte keep-alive from this address is
	// echoed: only addresses the voice side knows are.
	KeepAlive(from netip.AddrPort) bool
	// RTP handles an RTP packet and returns the datagrams to send, which
	// stay valid until the next call with the same worker.
	RTP(worker int, pkt []byte, from netip.AddrPort) []Datagram
}

// Stats counts what the socket saw. Every dropped datagram is counted.
type Stats struct {
	Received, Discovery, KeepAlive, RTP, RTCP atomic.Uint64
	DroppedUnknown, DroppedDiscovery          atomic.Uint64
	// DroppedKeepAlive counts keep-alives not echoed; RateLimited the
	// discovery requests and keep-alives over their source's answer rate.
	DroppedKeepAlive, RateLimited atomic.Uint64
	Sent, SendErrors              atomic.Uint64
	// Panics counts panics recovered in a worker; the worker goes on with
	// the next batch (the datagram that caused it is lost).
	Panics atomic.Uint64
}

// Server reads the voice UDP sockets: several bound to one address with
// SO_REUSEPORT, one worker goroutine each, so that more cores can carry
// media; the kernel keeps each sender on one socket.
type Server struct {
	conns []*net.UDPConn
	media Media
	Stats Stats
	wg    sync.WaitGroup
}

// BatchSize is how many datagrams one system call reads or writes at most.
const BatchSize = 64

// Listen opens sockets UDP sockets on addr (IPv4).
func Listen(addr string, m Media, sockets int) (*Server, error) {
	if sockets < 1 {
		sockets = 1
	}
	lc := net.ListenConfig{Control: reusePort}
	s := &Server{media: m}
	for i := 0; i < sockets; i++ {
		pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
		if err != nil {
			s.Close()
			return nil, err
		}
		c := pc.(*net.UDPConn)
		c.SetReadBuffer(4 << 20)
		c.SetWriteBuffer(4 << 20)
		s.conns = append(s.conns, c)
		addr = c.LocalAddr().String() // the others join the port the first one got
	}
	return s, nil
}

// Addr returns the bound address.
func (s *Server) Addr() netip.AddrPort { return s.conns[0].LocalAddr().(*net.UDPAddr).AddrPort() }

// Workers is the number of sockets, and so of Media workers.
func (s *Server) Workers() int { return len(s.conns) }

// Close stops Serve.
func (s *Server) Close() error {
	for _, c := range s.conns {
		c.Close()
	}
	s.wg.Wait()
	return nil
}

// MaxDatagram is the largest datagram read; larger ones are truncated and
// then fail authentication.
const MaxDatagram = 1500

// Serve starts one worker per socket and returns at once.
func (s *Server) Serve() {
	for i, c := range s.conns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for !s.serveGuarded(i, c) {
			}
		}()
	}
}

// serveGuarded runs serve and reports whether it ended normally (socket
// closed); false after a recovered panic, which is counted and logged.
func (s *Server) serveGuarded(worker int, c *net.UDPConn) (ended bool) {
	defer func() {
		if r := recover(); r != nil {
			s.Stats.Panics.Add(1)
			slog.Error("voice udp worker recovered from a panic", "worker", worker, "panic", fmt.Sprint(r),
				"stack", string(debug.Stack()))
			ended = false
		}
	}()
	s.serve(worker, c)
	return true
}

// serve is one worker: batched reads, and each forwarded packet's copies
// written with one batched write. Nothing is allocated per datagram.
func (s *Server) serve(worker int, c *net.UDPConn) {
	in, err := newBatch(c, BatchSize)
	if err != nil {
		return
	}
	out, err := newBatch(c, BatchSize)
	if err != nil {
		return
	}
	one := make([]Datagram, 1)
	resp := make([]byte, 0, DiscoverySize)
	var limit sourceLimiter
	for {
		n, err := in.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		for i := 0; i < n; i++ {
			pkt, from := in.datagram(i)
			s.Stats.Received.Add(1)
			switch Classify(pkt) {
			case KindDiscovery:
				// Only answers take tokens: a scan of unknown SSRCs from
				// behind a shared NAT (or one spoofing its address) must
				// not starve a real client's discovery from there.
				ssrc, ok := ParseDiscoveryRequest(pkt)
				if !ok || !s.media.Discovery(ssrc, from) {
					s.Stats.DroppedDiscovery.Add(1)
					continue
				}
				if !limit.allow(from.Addr(), time.Now()) {
					s.Stats.RateLimited.Add(1)
					continue
				}
				s.Stats.Discovery.Add(1)
				if r, err := AppendDiscoveryResponse(resp[:0], ssrc, from); err == nil {
					one[0] = Datagram{Buf: r, Addr: from}
					s.send(out, one)
				}
			case KindKeepAlive:
				// Echo, which refreshes NAT bindings and is what older
				// @discordjs/voice waited for (voice.md §9.2); only to a
				// known address, at a bounded rate.
				s.Stats.KeepAlive.Add(1)
				if !s.media.KeepAlive(from) {
					s.Stats.DroppedKeepAlive.Add(1)
					continue
				}
				if !limit.allow(from.Addr(), time.Now()) {
					s.Stats.RateLimited.Add(1)
					continue
				}
				one[0] = Datagram{Buf: pkt, Addr: from}
				s.send(out, one)
			case KindRTP:
				s.Stats.RTP.Add(1)
				s.send(out, s.media.RTP(worker, pkt, from))
			case KindRTCP:
				s.Stats.RTCP.Add(1) // bot clients never need ours (voice.md §11)
			default:
				s.Stats.DroppedUnknown.Add(1)
			}
		}
	}
}

func (s *Server) send(b *batch, ds []Datagram) {
	if len(ds) == 0 {
		return
	}
	n, _ := b.write(ds)
	s.Stats.Sent.Add(uint64(n))
	if n < len(ds) {
		s.Stats.SendErrors.Add(uint64(len(ds) - n))
	}
}

// WriteMetrics writes the socket's counters in the Prometheus text format.
func (s *Stats) WriteMetrics(w io.Writer) {
	for _, c := range []struct {
		series string
		n      *atomic.Uint64
	}{{`chorus_voice_udp_received_total{kind="all"}`, &s.Received}, {`chorus_voice_udp_received_total{kind="discovery"}`, &s.Discovery},
		{`chorus_voice_udp_received_total{kind="keepalive"}`, &s.KeepAlive}, {`chorus_voice_udp_received_total{kind="rtp"}`, &s.RTP},
		{`chorus_voice_udp_received_total{kind="rtcp"}`, &s.RTCP},
		{`chorus_voice_udp_dropped_total{reason="unknown"}`, &s.DroppedUnknown},
		{`chorus_voice_udp_dropped_total{reason="discovery"}`, &s.DroppedDiscovery},
		{`chorus_voice_udp_dropped_total{reason="keepalive"}`, &s.DroppedKeepAlive},
		{`chorus_voice_udp_dropped_total{reason="rate_limited"}`, &s.RateLimited},
		{"chorus_voice_udp_sent_total", &s.Sent}, {"chorus_voice_udp_send_errors_total", &s.SendErrors},
		{"chorus_voice_udp_panics_recovered_total", &s.Panics}} {
		fmt.Fprintf(w, "%s %d\n", c.series, c.n.Load())
	}
}
