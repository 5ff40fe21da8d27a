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
	// Keep-alive: echoed verbatim.
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
