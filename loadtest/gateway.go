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
	// Resumable keeps Events open when the connection drops, so that
	// Resume can continue the same stream (the churn scenario).
	Resumable atomic.Bool
	// Resumed and Invalidated count RESUMED dispatches and op 9 answers.
	Resumed, Invalidated atomic.Int64

	dialer         *websocket.Dialer
	token          string
	sessionID      string
	resumeURL      string
	closing        atomic.Bool
	heartbeatEvery time.Duration
	doneOnce       sync.Once
}

// Done is closed when the session ended for good (Close, or a drop of a
// session that is not Resumable). Consumers of a Resumable session's
// Events select on it: those Events are never closed.
func (c *GatewayClient) Done() <-chan struct{} { return c.done }

func (c *GatewayClient) finish() { c.doneOnce.Do(func() { close(c.done) }) }

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
	c := &GatewayClient{ws: ws, Events: make(chan Dispatch, 64), done: make(chan struct{}), dialer: d, token: token}
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
	go c.read(ws)
	c.heartbeatEvery = time.Duration(hello.D.Interval) * time.Millisecond
	c.heartbeat(c.heartbeatEvery)
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
				var r struct {
					SessionID string `json:"session_id"`
					ResumeURL string `json:"resume_gateway_url"`
				}
				json.Unmarshal(ev.D, &r)
				c.sessionID, c.resumeURL = r.SessionID, r.ResumeURL
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

func (c *GatewayClient) read(ws *websocket.Conn) {
	for {
		// ReadMessage parks in a shallow frame, so an idle client's stack
		// stays small; decoding happens after, and not at all for an idle
		// session, which only needs the sequence number.
		_, b, err := ws.ReadMessage()
		if err != nil {
			if c.Resumable.Load() && !c.closing.Load() {
				return // dropped: Resume continues the stream on Events
			}
			c.Err = err
			c.finish()
			if !c.Resumable.Load() {
				close(c.Events)
			}
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
		if json.Unmarshal(b, &d) != nil {
			continue
		}
		if d.Op == 9 {
			c.Invalidated.Add(1)
			continue
		}
		if d.Op != 0 {
			continue
		}
		d.Seen = time.Now()
		c.smu.Lock()
		c.lastS = d.S
		c.smu.Unlock()
		if d.T == "RESUMED" {
			c.Resumed.Add(1)
		}
		c.Events <- d
	}
}

// Drop cuts the connection the way a network does: no close frame.
func (c *GatewayClient) Drop() {
	c.wmu.Lock()
	c.ws.UnderlyingConn().Close()
	c.wmu.Unlock()
}

// Resume reconnects to resume_gateway_url and resumes the session from
// the last sequence number seen (gateway.md §10). The replayed events and
// RESUMED arrive on Events.
func (c *GatewayClient) Resume(ctx context.Context) error {
	ws, _, err := c.dialer.DialContext(ctx, c.resumeURL+"/?v=10&encoding=json", nil)
	if err != nil {
		return err
	}
	var hello struct{ Op int }
	if err := ws.ReadJSON(&hello); err != nil || hello.Op != 10 {
		ws.Close()
		return fmt.Errorf("loadtest: no Hello on resume: %v", err)
	}
	c.smu.Lock()
	seq := c.lastS
	c.smu.Unlock()
	c.wmu.Lock()
	c.ws = ws
	err = ws.WriteJSON(map[string]any{"op": 6, "d": map[string]any{"token": c.token, "session_id": c.sessionID, "seq": seq}})
	c.wmu.Unlock()
	if err != nil {
		return err
	}
	go c.read(ws)
	return nil
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
	if c.closing.Swap(true) {
		return nil
	}
	if c.Resumable.Load() {
		c.finish()
	}
	c.wmu.Lock()
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	return c.ws.Close()
}
