package loadtest

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/chorus-voice/chorus/transport"
)

// lossProxy relays voice UDP between clients and the server and drops
// every nth RTP packet a client sends.
type lossProxy struct {
	t       *testing.T
	ln      *net.UDPConn
	server  *net.UDPAddr
	nth     int64
	rtp     atomic.Int64
	dropped atomic.Int64
	mu      sync.Mutex
	ups     map[netip.AddrPort]*net.UDPConn
}

func newLossProxy(t *testing.T, server netip.AddrPort, nth int64) *lossProxy {
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &lossProxy{t: t, ln: ln, server: net.UDPAddrFromAddrPort(server), nth: nth, ups: map[netip.AddrPort]*net.UDPConn{}}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, u := range p.ups {
			u.Close()
		}
		p.mu.Unlock()
	})
	go p.run()
	return p
}

func (p *lossProxy) addr() netip.AddrPort { return p.ln.LocalAddr().(*net.UDPAddr).AddrPort() }

func (p *lossProxy) run() {
	buf := make([]byte, 1500)
	for {
		n, client, err := p.ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if transport.Classify(buf[:n]) == transport.KindRTP && p.rtp.Add(1)%p.nth == 0 {
			p.dropped.Add(1)
			continue
		}
		p.mu.Lock()
		up := p.ups[client]
		if up == nil {
			up, err = net.DialUDP("udp4", nil, p.server)
			if err != nil {
				p.mu.Unlock()
				continue
			}
			p.ups[client] = up
			go func(up *net.UDPConn, client netip.AddrPort) {
				b := make([]byte, 1500)
				for {
					n, err := up.Read(b)
					if err != nil {
						return
					}
					p.ln.WriteToUDPAddrPort(b[:n], client)
				}
			}(up, client)
		}
		p.mu.Unlock()
		up.Write(buf[:n])
	}
}
