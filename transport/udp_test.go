package transport

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// echoMedia answers every RTP packet with copies to the given receivers;
// SSRC 7 is the only assigned one.
type echoMedia struct {
	mu   sync.Mutex
	to   []netip.AddrPort
	disc []netip.AddrPort
	outs [][]Datagram
}

func (m *echoMedia) Discovery(ssrc uint32, from netip.AddrPort) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.disc = append(m.disc, from)
	return ssrc == 7
}

// KeepAlive echoes to addresses that sent a discovery request.
func (m *echoMedia) KeepAlive(from netip.AddrPort) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range m.disc {
		if a == from {
			return true
		}
	}
	return false
}

func (m *echoMedia) RTP(worker int, pkt []byte, _ netip.AddrPort) []Datagram {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.outs[worker][:0]
	for _, a := range m.to {
		out = append(out, Datagram{Buf: pkt, Addr: a})
	}
	m.outs[worker] = out
	return out
}

func udpClient(t *testing.T, server netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func listener(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestServerBatchesAndDemultiplexes(t *testing.T) {
	r1, r2 := listener(t), listener(t)
	m := &echoMedia{to: []netip.AddrPort{r1.LocalAddr().(*net.UDPAddr).AddrPort(), r2.LocalAddr().(*net.UDPAddr).AddrPort()},
		outs: make([][]Datagram, 4)}
	s, err := Listen("127.0.0.1:0", m, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Workers() != 4 {
		t.Fatalf("%d sockets", s.Workers())
	}
	s.Serve()
	c := udpClient(t, s.Addr())

	// IP discovery: answered for SSRC 7 only.
	req := make([]byte, DiscoverySize)
	binary.BigEndian.PutUint16(req, 1)
	binary.BigEndian.PutUint16(req[2:], 70)
	binary.BigEndian.PutUint32(req[4:], 8)
	c.Write(req)
	binary.BigEndian.PutUint32(req[4:], 7)
	c.Write(req)
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil || n != DiscoverySize || binary.BigEndian.Uint32(buf[4:]) != 7 {
		t.Fatalf("discovery answer: %d %v", n, err)
	}
	local := c.LocalAddr().(*net.UDPAddr)
	if int(binary.BigEndian.Uint16(buf[72:])) != local.Port {
		t.Fatal("discovery reports the wrong port")
	}
	// Keep-alive: echoed verbatim to a known address.
	c.Write([]byte{1, 0, 0, 0, 0, 0, 0, 0})
	n, err = c.Read(buf)
	if err != nil || n != 8 || buf[0] != 1 {
		t.Fatalf("keep-alive echo: %d %v", n, err)
	}
	// A burst of RTP: every packet reaches both receivers (read while it
	// is sent: loopback socket buffers are smaller than the burst).
	const burst = 300
	pkt := []byte{0x80, 0x78, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0xF8, 0xFF, 0xFE}
	errs := make(chan error, 2)
	for _, r := range []*net.UDPConn{r1, r2} {
		go func() {
			seen := map[uint16]bool{}
			b := make([]byte, 1500)
			r.SetReadDeadline(time.Now().Add(10 * time.Second))
			for len(seen) < burst {
				n, err := r.Read(b)
				if err != nil {
					errs <- fmt.Errorf("receiver got %d of %d: %w", len(seen), burst, err)
					return
				}
				if n != len(pkt) {
					errs <- fmt.Errorf("datagram of %d bytes", n)
					return
				}
				seen[binary.BigEndian.Uint16(b[2:])] = true
			}
			errs <- nil
		}()
	}
	for i := 0; i < burst; i++ {
		binary.BigEndian.PutUint16(pkt[2:], uint16(i))
		c.Write(pkt)
		if i%20 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Junk: counted and dropped.
	c.Write([]byte{0x40, 1, 2})
	c.Write([]byte{0x80, 0xC8, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0})
	deadline := time.Now().Add(5 * time.Second)
	for (s.Stats.DroppedUnknown.Load() == 0 || s.Stats.RTCP.Load() == 0) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s.Stats.DroppedUnknown.Load() != 1 || s.Stats.RTCP.Load() != 1 || s.Stats.DroppedDiscovery.Load() != 1 ||
		s.Stats.RTP.Load() != burst || s.Stats.Sent.Load() != 2*burst+2 {
		t.Fatalf("stats: unknown %d rtcp %d baddisc %d rtp %d sent %d", s.Stats.DroppedUnknown.Load(), s.Stats.RTCP.Load(),
			s.Stats.DroppedDiscovery.Load(), s.Stats.RTP.Load(), s.Stats.Sent.Load())
	}
}

// Unauthenticated answers are rate limited per source IP: a flood of
// discovery requests gets at most the burst answered, the rest counted;
// keep-alives from an address the media side does not know are not echoed.
func TestUnauthenticatedAnswersAreBounded(t *testing.T) {
	s := echoServer(t)
	stranger := udpClient(t, s.Addr())
	stranger.Write([]byte{1, 0, 0, 0, 0, 0, 0, 0})
	c := udpClient(t, s.Addr())
	req := discoveryFor(7)
	const flood = 4 * sourceBurst
	for range flood {
		c.Write(req)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats.Discovery.Load()+s.Stats.RateLimited.Load() < flood && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	answered, limited := s.Stats.Discovery.Load(), s.Stats.RateLimited.Load()
	// The flood takes well under a second to send: the refill adds a few.
	if answered < sourceBurst || answered > sourceBurst+sourceRate || answered+limited != flood {
		t.Fatalf("%d answered, %d limited of %d", answered, limited, flood)
	}
	if s.Stats.DroppedKeepAlive.Load() != 1 {
		t.Fatalf("keep-alive from a stranger: %d dropped", s.Stats.DroppedKeepAlive.Load())
	}
	stranger.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := stranger.Read(make([]byte, 100)); err == nil {
		t.Fatalf("the stranger got %d bytes back", n)
	}
}

// A scan of unknown SSRCs takes no tokens: the client it shares an IP with
// (a NAT, or the attacker spoofing its address) still gets its own
// discovery answered.
func TestDiscoveryScanDoesNotStarveASharedSource(t *testing.T) {
	s := echoServer(t)
	scanner, c := udpClient(t, s.Addr()), udpClient(t, s.Addr())
	req := discoveryFor
	const scan = 4 * sourceBurst
	for i := range scan {
		scanner.Write(req(uint32(1000 + i)))
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats.DroppedDiscovery.Load() < scan && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if d := s.Stats.DroppedDiscovery.Load(); d != scan {
		t.Fatalf("%d of %d scanned SSRCs dropped", d, scan)
	}
	c.Write(req(7))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 100)
	if n, err := c.Read(b); err != nil || n != DiscoverySize {
		t.Fatalf("the client's own discovery: %d bytes, %v (rate limited %d)", n, err, s.Stats.RateLimited.Load())
	}
}

// echoServer serves echoMedia on one worker until the test ends.
func echoServer(t *testing.T) *Server {
	t.Helper()
	s, err := Listen("127.0.0.1:0", &echoMedia{outs: make([][]Datagram, 1)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.Serve()
	return s
}

// discoveryFor is an IP discovery request for ssrc (voice.md §9.1).
func discoveryFor(ssrc uint32) []byte {
	b := make([]byte, DiscoverySize)
	binary.BigEndian.PutUint16(b, 1)
	binary.BigEndian.PutUint16(b[2:], 70)
	binary.BigEndian.PutUint32(b[4:], ssrc)
	return b
}

func TestSourceLimiter(t *testing.T) {
	var l sourceLimiter
	a, b := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	now := time.Unix(1000, 0)
	for i := range sourceBurst {
		if !l.allow(a, now) {
			t.Fatalf("refused at %d within the burst", i)
		}
	}
	if l.allow(a, now) {
		t.Fatal("allowed past the burst")
	}
	if !l.allow(b, now) {
		t.Fatal("another source was limited")
	}
	if !l.allow(a, now.Add(time.Second/sourceRate)) {
		t.Fatal("no refill")
	}
	for i := range maxSources + 10 { // the table never grows past its bound
		l.allow(netip.AddrFrom4([4]byte{127, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	if len(l.buckets) > maxSources {
		t.Fatalf("%d sources kept", len(l.buckets))
	}
}
