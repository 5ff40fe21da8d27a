package transport

import "net"

// Writer sends datagrams on a UDP socket with as few system calls as
// sendmmsg(2) allows, for a goroutine other than the Server's workers (the
// WebRTC leg's readers forward to UDP receivers through one). A Writer is
// not safe for concurrent use; its zero value is not usable.
type Writer struct {
	b     *batch
	Stats *Stats // counts Sent and SendErrors; nil: not counted
}

// NewWriter returns a writer on c.
func NewWriter(c *net.UDPConn) (*Writer, error) {
	b, err := newWriteBatch(c, BatchSize)
	if err != nil {
		return nil, err
	}
	return &Writer{b: b}, nil
}

// Write sends ds and returns how many were sent; a datagram the kernel
// refused is skipped (and counted), not retried.
func (w *Writer) Write(ds []Datagram) int {
	if len(ds) == 0 {
		return 0
	}
	n, _ := w.b.write(ds)
	if w.Stats != nil {
		w.Stats.Sent.Add(uint64(n))
		if n < len(ds) {
			w.Stats.SendErrors.Add(uint64(len(ds) - n))
		}
	}
	return n
}

// NewWriter returns a writer on the server's first socket, counted in its
// Stats.
func (s *Server) NewWriter() (*Writer, error) {
	w, err := NewWriter(s.conns[0])
	if err != nil {
		return nil, err
	}
	w.Stats = &s.Stats
	return w, nil
}
