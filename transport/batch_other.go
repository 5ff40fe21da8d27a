//go:build !linux

package transport

import (
	"net"
	"net/netip"
	"syscall"
)

// batch is the portable fallback: one datagram per system call.
type batch struct {
	c    *net.UDPConn
	buf  []byte
	n    int
	from netip.AddrPort
}

func newBatch(c *net.UDPConn, _ int) (*batch, error) {
	return &batch{c: c, buf: make([]byte, MaxDatagram)}, nil
}

func newWriteBatch(c *net.UDPConn, _ int) (*batch, error) { return &batch{c: c}, nil }

func (b *batch) read() (int, error) {
	n, from, err := b.c.ReadFromUDPAddrPort(b.buf)
	if err != nil {
		return 0, err
	}
	b.n, b.from = n, from
	return 1, nil
}

func (b *batch) datagram(int) ([]byte, netip.AddrPort) { return b.buf[:b.n], b.from }

func (b *batch) write(ds []Datagram) (int, error) {
	for i, d := range ds {
		if _, err := b.c.WriteToUDPAddrPort(d.Buf, d.Addr); err != nil {
			return i, err
		}
	}
	return len(ds), nil
}

func reusePort(string, string, syscall.RawConn) error { return nil }
