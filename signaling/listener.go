package signaling

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// PerIPListener limits how many connections one source IP may hold open
// on a listener: a client that opens sockets and never logs in ties up a
// file descriptor each, and a node has a fixed number of them. Connections
// over the limit are refused at accept (on a plain listener with a short
// HTTP 429 first, so a person sees why) and counted.
type PerIPListener struct {
	net.Listener
	limit   int
	plain   bool
	metrics *Metrics

	mu   sync.Mutex
	open map[netip.Addr]int
}

// LimitPerIP wraps ln. limit 0 means no limit. plain says ln carries
// plain HTTP (not TLS), so a refusal can be answered in HTTP.
func LimitPerIP(ln net.Listener, limit int, plain bool, m *Metrics) net.Listener {
	if limit <= 0 {
		return ln
	}
	return &PerIPListener{Listener: ln, limit: limit, plain: plain, metrics: m, open: map[netip.Addr]int{}}
}

var tooManyConns = []byte("HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Type: text/plain\r\n" +
	"Content-Length: 42\r\n\r\ntoo many connections from your address\r\n\r\n")

// Accept returns the next connection whose source is under its limit.
func (l *PerIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
		if err != nil {
			return c, nil // not an IP connection: nothing to limit by
		}
		ip := ap.Addr().Unmap()
		l.mu.Lock()
		n := l.open[ip]
		if n < l.limit {
			l.open[ip] = n + 1
		}
		l.mu.Unlock()
		if n >= l.limit {
			l.metrics.ConnsRefused.Add(1)
			if l.plain {
				go func() { // never block Accept on a client that does not read
					c.SetWriteDeadline(time.Now().Add(connRefuseWrite))
					c.Write(tooManyConns)
					c.Close()
				}()
			} else {
				c.Close()
			}
			continue
		}
		return &countedConn{Conn: c, l: l, ip: ip}, nil
	}
}

func (l *PerIPListener) release(ip netip.Addr) {
	l.mu.Lock()
	if n := l.open[ip]; n <= 1 {
		delete(l.open, ip)
	} else {
		l.open[ip] = n - 1
	}
	l.mu.Unlock()
}

// countedConn gives its slot back once, when closed.
type countedConn struct {
	net.Conn
	l    *PerIPListener
	ip   netip.Addr
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.release(c.ip) })
	return c.Conn.Close()
}

// CloseWrite keeps half-closing possible through the wrapper (conn.finish).
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
