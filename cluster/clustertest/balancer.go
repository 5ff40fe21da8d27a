package clustertest

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Balancer is a TCP load balancer in front of a cluster's nodes, the way
// clients reach a cluster in production (resume_gateway_url names it):
// each connection goes to the next backend in turn that accepts it. It
// knows nothing of HTTP, so a draining node's 503 reaches the client,
// which tries again and lands on the next node.
type Balancer struct {
	ln net.Listener

	mu       sync.Mutex
	backends []string
	next     int
	conns    map[net.Conn]struct{}
	closed   bool
}

// NewBalancer listens on a free loopback port until the test ends.
func NewBalancer(t testing.TB) *Balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Balancer{ln: ln, conns: map[net.Conn]struct{}{}}
	go b.serve()
	t.Cleanup(b.Close)
	return b
}

// Addr is the host:port clients connect to.
func (b *Balancer) Addr() string { return b.ln.Addr().String() }

// Set replaces the backends (host:port each).
func (b *Balancer) Set(backends ...string) {
	b.mu.Lock()
	b.backends = append([]string(nil), backends...)
	b.mu.Unlock()
}

// Close stops listening and cuts every connection.
func (b *Balancer) Close() {
	b.ln.Close()
	b.mu.Lock()
	b.closed = true
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
}

func (b *Balancer) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		go b.pipe(c)
	}
}

// pipe connects c to the first backend, from the next in turn, that
// accepts, and copies both ways until either side ends.
func (b *Balancer) pipe(c net.Conn) {
	defer c.Close()
	b.mu.Lock()
	backends, start := b.backends, b.next
	b.next++
	b.mu.Unlock()
	var up net.Conn
	for i := range backends {
		var err error
		if up, err = net.DialTimeout("tcp", backends[(start+i)%len(backends)], time.Second); err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	if !b.track(c, up) {
		return
	}
	defer b.untrack(c, up)
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
}

func (b *Balancer) track(cs ...net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	for _, c := range cs {
		b.conns[c] = struct{}{}
	}
	return true
}

func (b *Balancer) untrack(cs ...net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range cs {
		delete(b.conns, c)
	}
}

// StartBalanced starts n nodes (as Start) behind a new Balancer, which
// READY's resume_gateway_url names (--gateway-url).
func StartBalanced(t testing.TB, n int, extra ...string) (*Cluster, *Balancer) {
	t.Helper()
	b := NewBalancer(t)
	c := Start(t, n, append([]string{"--gateway-url", "ws://" + b.Addr()}, extra...)...)
	c.balance(b)
	return c, b
}

// balance points b at the running nodes.
func (c *Cluster) balance(b *Balancer) {
	var addrs []string
	for _, nd := range c.Nodes {
		addrs = append(addrs, nd.HTTP)
	}
	b.Set(addrs...)
}

// RollingRestart stops each node in turn with SIGTERM (the test fails
// unless it exits 0), calls stopped(nd) while it is down, starts it again
// (on a new port, which b is pointed at) and waits until the ring holds
// every node before the next.
func (c *Cluster) RollingRestart(t testing.TB, b *Balancer, stopped func(*Node)) {
	t.Helper()
	for _, nd := range c.Nodes {
		nd.Stop(t)
		stopped(nd)
		nd.Restart(t)
		c.balance(b)
		c.WaitRing(len(c.Nodes))
	}
}
