package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// frameProxy relays TCP between clients and a node. On a connection that
// upgrades to a websocket it parses the node's frames (RFC 6455 §5.2;
// server frames are unmasked) and drops every nth MESSAGE_CREATE dispatch,
// the way a broken intermediary would; anything else passes unchanged.
type frameProxy struct {
	ln       net.Listener
	upstream string
	nth      int64
	seen     atomic.Int64
	dropped  atomic.Int64
}

func newFrameProxy(t *testing.T, upstream string, nth int64) *frameProxy {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &frameProxy{ln: ln, upstream: upstream, nth: nth}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.relay(c)
		}
	}()
	return p
}

func (p *frameProxy) relay(client net.Conn) {
	defer client.Close()
	up, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { io.Copy(up, client); up.Close() }()
	r := bufio.NewReader(up)
	// The first response says what the connection is: 101 carries frames.
	head, err := r.Peek(12)
	if err != nil || !bytes.HasPrefix(head, []byte("HTTP/1.1 101")) {
		io.Copy(client, r)
		return
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		client.Write([]byte(line))
		if line == "\r\n" {
			break
		}
	}
	for {
		frame, payload, err := readServerFrame(r)
		if err != nil {
			return
		}
		if frame[0]&0x0f == 1 && bytes.Contains(payload[:min(len(payload), 40)], []byte(`"t":"MESSAGE_CREATE"`)) {
			if p.seen.Add(1)%p.nth == 0 {
				p.dropped.Add(1)
				continue
			}
		}
		if _, err := client.Write(frame); err != nil {
			return
		}
	}
}

// readServerFrame reads one unmasked frame; it returns the whole frame and
// its payload within it.
func readServerFrame(r *bufio.Reader) (frame, payload []byte, err error) {
	var h [10]byte
	if _, err := io.ReadFull(r, h[:2]); err != nil {
		return nil, nil, err
	}
	n, hl := uint64(h[1]&0x7f), 2
	switch n {
	case 126:
		if _, err := io.ReadFull(r, h[2:4]); err != nil {
			return nil, nil, err
		}
		n, hl = uint64(binary.BigEndian.Uint16(h[2:4])), 4
	case 127:
		if _, err := io.ReadFull(r, h[2:10]); err != nil {
			return nil, nil, err
		}
		n, hl = binary.BigEndian.Uint64(h[2:10]), 10
	}
	if n > 1<<24 {
		return nil, nil, io.ErrUnexpectedEOF
	}
	frame = make([]byte, hl+int(n))
	copy(frame, h[:hl])
	if _, err := io.ReadFull(r, frame[hl:]); err != nil {
		return nil, nil, err
	}
	return frame, frame[hl:], nil
}

// Frames dropped on the way to clients show up as exactly that many lost
// deliveries, and nothing else changes.
func TestChatScenarioFramesDropped(t *testing.T) {
	n := startNode(t)
	p := newFrameProxy(t, strings.TrimPrefix(n.base, "http://"), 7)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunChat(ctx, ChatOptions{URL: "http://" + p.ln.Addr().String(), AdminToken: adminTokenFile(t, n), Sessions: 40, Guilds: 4,
		HugeShare: 0.5, Rate: 40, Duration: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Counters
	if p.dropped.Load() < 10 {
		t.Fatalf("the proxy dropped only %d of %d frames", p.dropped.Load(), p.seen.Load())
	}
	if c["lost"] != float64(p.dropped.Load()) || c["duplicated"] != 0 || c["delivered"]+c["lost"] != c["expected_deliveries"] {
		t.Fatalf("proxy dropped %d MESSAGE_CREATE frames of %d; report: %v", p.dropped.Load(), p.seen.Load(), c)
	}
	if r.Check([]SLO{mustSLO(t, "lost<=0")}) {
		t.Fatal("lost<=0 met with frames dropped")
	}
}
