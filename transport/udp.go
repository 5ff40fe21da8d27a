package transport

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
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
	// RTP handles an RTP packet and returns the datagrams to send, which
	// stay valid until the next call with the same worker.
	RTP(worker int, pkt []byte, from netip.AddrPort) []Datagram
}

// Stats counts what the socket saw. Every dropped datagram is counted.
type Stats struct {
	Received, Discovery, KeepAlive, RTP, RTCP atomic.Uint64
	DroppedUnknown, DroppedDiscovery          atomic.Uint64
	Sent, SendErrors                          atomic.Uint64
}

// Server reads one UDP socket and answers or dispatches each datagram.
type Server struct {
	conn  *net.UDPConn
	media Media
	Stats Stats
}

// Listen opens the voice UDP socket on addr.
func Listen(addr string, m Media) (*Server, error) {
	ua, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP("udp4", ua)
	if err != nil {
		return nil, err
	}
	c.SetReadBuffer(4 << 20)
	c.SetWriteBuffer(4 << 20)
	return &Server{conn: c, media: m}, nil
}

// Addr returns the bound address.
func (s *Server) Addr() netip.AddrPort { return s.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Close stops Serve.
func (s *Server) Close() error { return s.conn.Close() }

// MaxDatagram is the largest datagram read; larger ones are truncated and
// then fail authentication.
const MaxDatagram = 1500

// Serve runs the read loop of one worker until the socket is closed. Reads
// and writes are one system call per datagram with no allocation; the
// datagrams of one forwarded packet are written back to back.
func (s *Server) Serve(worker int) error {
	buf := make([]byte, MaxDatagram)
	resp := make([]byte, 0, DiscoverySize)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			continue
		}
		s.Stats.Received.Add(1)
		pkt := buf[:n]
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		switch Classify(pkt) {
		case KindDiscovery:
			ssrc, ok := ParseDiscoveryRequest(pkt)
			if !ok || !s.media.Discovery(ssrc, from) {
				s.Stats.DroppedDiscovery.Add(1)
				continue
			}
			s.Stats.Discovery.Add(1)
			if r, err := AppendDiscoveryResponse(resp[:0], ssrc, from); err == nil {
				s.send(r, from)
			}
		case KindKeepAlive:
			// Echo, which refreshes NAT bindings and is what older
			// @discordjs/voice waited for (voice.md §9.2).
			s.Stats.KeepAlive.Add(1)
			s.send(pkt, from)
		case KindRTP:
			s.Stats.RTP.Add(1)
			for _, d := range s.media.RTP(worker, pkt, from) {
				s.send(d.Buf, d.Addr)
			}
		case KindRTCP:
			s.Stats.RTCP.Add(1) // bot clients never need ours (voice.md §11)
		default:
			s.Stats.DroppedUnknown.Add(1)
		}
	}
}

func (s *Server) send(b []byte, to netip.AddrPort) {
	if _, err := s.conn.WriteToUDPAddrPort(b, to); err != nil {
		s.Stats.SendErrors.Add(1)
		return
	}
	s.Stats.Sent.Add(1)
}
