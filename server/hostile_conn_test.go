package server_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/signaling"
)

// readsEOF reports whether the server closes c within d (reading discards
// whatever it sent first).
func readsEOF(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	return err == nil // io.Copy returns nil at EOF, a timeout error otherwise
}

// Connections that hold a socket without logging in or finishing a
// request are cut off; an upgraded websocket is not (the HTTP server's
// deadlines end at the upgrade).
func TestIdleConnectionsAreCut(t *testing.T) {
	const limit = 400 * time.Millisecond
	cfg := testConfig(t)
	cfg.Gateway.IdentifyTimeout = limit
	cfg.Gateway.HTTP = signaling.HTTPTimeouts{ReadHeader: limit, Read: limit, Write: limit, Idle: limit}
	cfg.Gateway.HeartbeatInterval = time.Hour // only the identify deadline can close
	f := startConfig(t, cfg)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", f.node.HTTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	t.Run("request body declared and never sent", func(t *testing.T) {
		c := dial()
		fmt.Fprintf(c, "POST /admin/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
		if !readsEOF(c, 10*limit) {
			t.Fatal("connection still open")
		}
	})
	t.Run("headers never finished", func(t *testing.T) {
		c := dial()
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
		if !readsEOF(c, 10*limit) {
			t.Fatal("connection still open")
		}
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		c := dial()
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("healthz: %v", err)
		}
		if !readsEOF(c, 10*limit) {
			t.Fatal("idle connection still open")
		}
	})
	t.Run("gateway without identify", func(t *testing.T) {
		before := f.node.Gateway().Metrics().Closes(4003)
		c := f.dial("v=10")
		c.t = t
		c.expectClose(4003)
		if f.node.Gateway().Metrics().Closes(4003) != before+1 {
			t.Fatal("not counted")
		}
	})
	t.Run("a logged-in websocket outlives every HTTP timeout", func(t *testing.T) {
		c := f.dial("v=10")
		c.t = t
		c.ready(f.demo.AliceToken, allIntents)
		time.Sleep(3 * limit) // past the read, write, idle and identify limits
		c.send(map[string]any{"op": 1, "d": nil})
		for {
			if fr := c.next(5 * time.Second); fr.Op == 11 {
				break
			}
		}
	})
}

// One source IP holds at most MaxConnsPerIP connections per listener; the
// next is refused with 429 and counted, and a slot freed is usable again.
func TestConnectionsPerIP(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxConnsPerIP = 3
	f := startConfig(t, cfg)
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", f.node.HTTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// Accept is asynchronous: the three are counted once they were served.
	for _, c := range held {
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("held connection: %v", err)
		}
	}
	extra, err := net.Dial("tcp", f.node.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(extra), nil)
	if err != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth connection: %v %v", resp, err)
	}
	if n := f.node.Gateway().Metrics().ConnsRefused.Load(); n != 1 {
		t.Fatalf("%d refusals counted", n)
	}
	held[0].Close()
	// The slot comes back once the server noticed the close.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+f.node.HTTPAddr+"/?v=10", nil)
		if err == nil {
			ws.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot after a close: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The voice gateway closes a connection that never identifies with 4003.
// (Voice runs here without the HTTPS listener: it has its own.)
func TestVoiceIdentifyDeadline(t *testing.T) {
	cfg := testConfig(t)
	cfg.VoiceAddr = "127.0.0.1:0" // HTTPSAddr is "off"
	cfg.Gateway.IdentifyTimeout = 300 * time.Millisecond
	f := startConfig(t, cfg)
	d := websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	ws, _, err := d.Dial("wss://"+f.node.VoiceAddr+"/?v=8", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue // Hello
		}
		if !websocket.IsCloseError(err, 4003) {
			t.Fatalf("closed with %v", err)
		}
		break
	}
	if f.node.Voice().Closes(4003) != 1 {
		t.Fatalf("%d voice 4003 closes counted", f.node.Voice().Closes(4003))
	}
}
