package natstest

import (
	"net"
	"sync"
	"testing"
)

// Proxy is a loopback TCP proxy in front of one server that a test can cut
// and heal: while cut, nothing moves either way (the connections stay
// open, as across a network partition); healed, what was held flows on.
// It cuts one client off from NATS without touching the NATS cluster
// itself (stopping a server could cost the whole cluster a JetStream
// leader election).
type Proxy struct {
	// URL is what the client connects to, and Addr its host:port.
	URL, Addr string

	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	heal  *sync.Cond
	conns []net.Conn
}

// NewProxy starts a proxy on loopback to a nats:// URL's host:port; it
// stops with the test.
func NewProxy(t testing.TB, url string) *Proxy {
	t.Helper()
	return ListenProxy(t, "127.0.0.1:0", url)
}

// ListenProxy starts a proxy listening on listen (host:port) to target, a
// nats:// URL or any host:port: it also carries other TCP, such as
// PostgreSQL's, to a network namespace of the test's.
func ListenProxy(t testing.TB, listen, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	p := &Proxy{URL: "nats://" + addr, Addr: addr, ln: ln, target: hostPort(target)}
	p.heal = sync.NewCond(&p.mu)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func hostPort(url string) string {
	const scheme = "nats://"
	if len(url) > len(scheme) && url[:len(scheme)] == scheme {
		return url[len(scheme):]
	}
	return url
}

// Cut stops all traffic through the proxy.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
}

// Heal lets traffic through again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.cut = false
	p.heal.Broadcast()
	p.mu.Unlock()
}

// Reset closes every connection through the proxy, both ends: the server
// forgets the client's subscriptions at once, and the client reconnects
// (through the proxy, held while it is cut). What is published to the
// client meanwhile is lost to it, as when a NATS connection really breaks.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go p.pipe(c, s)
		go p.pipe(s, c)
	}
}

// pipe copies src to dst, holding each chunk while the proxy is cut.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.cut {
				p.heal.Wait()
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or a closed connection: close both sides
		}
	}
}

func (p *Proxy) close() {
	p.ln.Close()
	p.Heal()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}
