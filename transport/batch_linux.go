//go:build linux

package transport

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batch reads and writes many datagrams per system call with recvmmsg(2)
// and sendmmsg(2), into buffers and address slots allocated once.
type batch struct {
	rc    syscall.RawConn
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
	bufs  [][]byte

	// The system calls' closures and what they report, made once: a
	// closure made per call would escape through syscall.RawConn and
	// allocate on every batch.
	recv, send func(fd uintptr) bool
	count      int // in: datagrams to send; out: how many were read or sent
	errno      error
}

func newBatch(c *net.UDPConn, n int) (*batch, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &batch{rc: rc, hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet4, n), bufs: make([][]byte, n)}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, MaxDatagram)
	}
	b.init()
	return b, nil
}

func (b *batch) init() {
	b.recv = func(fd uintptr) bool {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)),
			unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN || e == unix.EINTR {
			return false // not ready: the runtime poller waits, then calls again
		}
		b.count, b.errno = int(r), nil
		if e != 0 {
			b.count, b.errno = 0, e
		}
		return true
	}
	b.send = func(fd uintptr) bool {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(b.count),
			unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN || e == unix.EINTR {
			return false
		}
		b.count, b.errno = int(r), nil
		if e != 0 {
			b.count, b.errno = 0, e
		}
		return true
	}
}

// newWriteBatch is a batch for writing only: no read buffers.
func newWriteBatch(c *net.UDPConn, n int) (*batch, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &batch{rc: rc, hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet4, n)}
	b.init()
	return b, nil
}

// read fills up to len(bufs) datagrams and returns how many arrived.
func (b *batch) read() (int, error) {
	for i := range b.hdrs {
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(len(b.bufs[i]))
		h := &b.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Namelen = unix.SizeofSockaddrInet4
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		h.Control, h.Controllen, h.Flags = nil, 0, 0
		b.hdrs[i].Len = 0
	}
	if err := b.rc.Read(b.recv); err != nil {
		return 0, err
	}
	return b.count, b.errno
}

// datagram returns the i-th datagram read and its source.
func (b *batch) datagram(i int) ([]byte, netip.AddrPort) {
	sa := &b.names[i]
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return b.bufs[i][:b.hdrs[i].Len], netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port)
}

// write sends ds with as few system calls as sendmmsg allows; it returns
// how many were sent. IPv4 destinations only (voice.md §3).
func (b *batch) write(ds []Datagram) (int, error) {
	sent := 0
	for sent < len(ds) {
		chunk := ds[sent:]
		if len(chunk) > len(b.hdrs) {
			chunk = chunk[:len(b.hdrs)]
		}
		for i, d := range chunk {
			sa := &b.names[i]
			sa.Family = unix.AF_INET
			sa.Addr = d.Addr.Addr().Unmap().As4()
			binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], d.Addr.Port())
			b.iovs[i].Base = unsafe.SliceData(d.Buf)
			b.iovs[i].SetLen(len(d.Buf))
			h := &b.hdrs[i].Hdr
			h.Name = (*byte)(unsafe.Pointer(sa))
			h.Namelen = unix.SizeofSockaddrInet4
			h.Iov = &b.iovs[i]
			h.SetIovlen(1)
			h.Control, h.Controllen, h.Flags = nil, 0, 0
		}
		b.count = len(chunk)
		err := b.rc.Write(b.send)
		n, operr := b.count, b.errno
		if err != nil {
			return sent, err
		}
		if operr != nil {
			// Skip the datagram that failed (an unreachable receiver must
			// not stall the others) and go on.
			sent++
			continue
		}
		sent += n
	}
	return sent, nil
}

// reusePort lets several sockets bind one address; the kernel spreads
// senders across them by their address, so one sender stays on one socket.
func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
