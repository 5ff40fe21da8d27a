// Package loadtest drives a Chorus deployment the way real clients do,
// over the wire only: it never imports server packages, only the pure
// protocol codecs (crypto, transport framing) a client needs too.
package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Dispatch is one gateway event.
type Dispatch struct {
	Op   int             `json:"op"`
	S    int64           `json:"s"`
	T    string          `json:"t"`
	D    json.RawMessage `json:"d"`
	Seen time.Time       `json:"-"`
}

// GatewayClient is a minimal Gateway v10 client: it identifies, answers
// heartbeats and hands dispatches out on Events.
type GatewayClient struct {
	ws     *websocket.Conn
	wmu    sync.Mutex
	Events chan Dispatch
	Ready  json.RawMessage
	lastS  int64
	smu    sync.Mutex
	done   chan struct{}
	// Err is why the connection ended, valid once Events is closed.
	Err error
	// Discard drops dispatches instead of queueing them on Events, for
	// sessions that only idle (a full Events would stall the reader).
	Discard atomic.Bool
}

// DialGateway connects to url (ws:// or wss://), identifies with token and
// intents and waits for READY.
func DialGateway(ctx context.Context, d *websocket.Dialer, url, token string, intents int) (*GatewayClient, error) {
	if d == nil {
		d = websocket.DefaultDialer
	}
	ws, _, err := d.DialContext(ctx, url+"/?v=10&encoding=json", nil)
	if err != nil {
		return nil, err
	}
	c := &GatewayClient{ws: ws, Events: make(chan Dispatch, 64), done: make(chan struct{})}
	var hello struct {
		Op int `json:"op"`
		D  struct {
			Interval int `json:"heartbeat_interval"`
		} `json:"d"`
	}
	if err := ws.ReadJSON(&hello); err != nil || hello.Op != 10 {
		ws.Close()
		return nil, fmt.Errorf("loadtest: no Hello: %v", err)
	}
	c.Send(2, map[string]any{"token": token, "intents": intents,
		"properties": map[string]string{"os": "linux", "browser": "chorus-loadtest", "device": "chorus-loadtest"}})
	go c.read()
	c.heartbeat(time.Duration(hello.D.Interval) * time.Millisecond)
	for {
		select {
		case ev, ok := <-c.Events:
			if !ok {
				if c.Err != nil {
					return nil, c.Err
				}
				return nil, errors.New("loadtest: gateway closed before READY")
			}
			if ev.T == "READY" {
				c.Ready = ev.D
				return c, nil
			}
		case <-ctx.Done():
			ws.Close()
			return nil, ctx.Err()
		}
	}
}

// Send writes one payload.
func (c *GatewayClient) Send(op int, d any) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.WriteJSON(map[string]any{"op": op, "d": d})
}

func (c *GatewayClient) read() {
	defer close(c.Events)
	defer close(c.done)
	for {
		// ReadMessage parks in a shallow frame, so an idle client's stack
		// stays small; decoding happens after, and not at all for an idle
		// session, which only needs the sequence number.
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			c.Err = err
			return
		}
		if c.Discard.Load() {
			if s, ok := seqOf(b); ok {
				c.smu.Lock()
				c.lastS = s
				c.smu.Unlock()
			}
			continue
		}
		var d Dispatch
		if json.Unmarshal(b, &d) != nil || d.Op != 0 {
			continue
		}
		d.Seen = time.Now()
		c.smu.Lock()
		c.lastS = d.S
		c.smu.Unlock()
		c.Events <- d
	}
}

// seqOf finds the "s" of a dispatch envelope without decoding it.
func seqOf(b []byte) (int64, bool) {
	i := bytes.Index(b, []byte(`"s":`))
	if i < 0 {
		return 0, false
	}
	j := i + 4
	k := j
	for k < len(b) && b[k] >= '0' && b[k] <= '9' {
		k++
	}
	v, err := strconv.ParseInt(string(b[j:k]), 10, 64)
	return v, err == nil
}

// heartbeat beats every interval from a timer, so an idle client parks no
// goroutine for it.
func (c *GatewayClient) heartbeat(every time.Duration) {
	if every <= 0 {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(every, func() {
		select {
		case <-c.done:
			return
		default:
		}
		c.smu.Lock()
		s := c.lastS
		c.smu.Unlock()
		c.Send(1, s)
		t.Reset(every)
	})
}

// Next returns the next dispatch named name, skipping others.
func (c *GatewayClient) Next(ctx context.Context, name string) (Dispatch, error) {
	for {
		select {
		case ev, ok := <-c.Events:
			if !ok {
				return Dispatch{}, errors.New("loadtest: gateway closed")
			}
			if ev.T == name {
				return ev, nil
			}
		case <-ctx.Done():
			return Dispatch{}, ctx.Err()
		}
	}
}

// Close ends the session (close 1000).
func (c *GatewayClient) Close() error {
	c.wmu.Lock()
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	return c.ws.Close()
}
