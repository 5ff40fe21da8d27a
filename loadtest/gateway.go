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
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-voice/chorus/protocol"
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
	// Err is why the session ended, valid once Done is closed.
	Err error
	// Discard drops dispatches instead of queueing them on Events, for
	// sessions that only idle (a full Events would stall the reader).
	Discard atomic.Bool
	// Resumable keeps Events open when the connection drops, so that
	// Resume can continue the same stream (the churn scenario).
	Resumable atomic.Bool
	// Resumed and Invalidated count RESUMED dispatches and op 9 answers.
	Resumed, Invalidated atomic.Int64
	// Reconnect makes the client recover from a lost connection by itself,
	// as client libraries do (gateway.md §10): it resumes at
	// resume_gateway_url, retrying with backoff while the node is
	// unreachable, and identifies afresh after op 9. It also treats a
	// heartbeat that was never acknowledged as a dead connection (a zombie,
	// gateway.md §6). Reconnect implies Resumable.
	Reconnect atomic.Bool
	// Alternates are the gateway URLs of the other nodes of the cluster.
	// A Reconnect client that cannot reach its node tries them in turn, as
	// a client behind a load balancer in front of the cluster would; the
	// node it lands on does not know the session (op 9), so it identifies
	// afresh there. Set before the session can drop.
	Alternates []string
	// ReconnectFor bounds how long a Reconnect client keeps trying before
	// the session ends (default 60 s).
	ReconnectFor time.Duration
	// Drops counts lost connections; Reidentified counts fresh READYs after
	// a drop.
	Drops, Reidentified atomic.Int64
	// GuildsOut counts the guilds the server said were unavailable
	// (GUILD_DELETE with unavailable set, gateway.md §9.2); WasOut tells
	// which, and until when.
	GuildsOut atomic.Int64
	outMu     sync.Mutex
	outUntil  map[string]time.Time // guild id → its GUILD_CREATE after the last outage; zero while out

	dialer         *websocket.Dialer
	url            string
	token          string
	intents        int
	droppedAt      atomic.Int64 // unix ns of the drop under repair, 0 when live
	backAt         atomic.Int64 // unix ns the session was last re-established
	lastOutage     atomic.Int64 // ns from the last drop to being back
	ackPending     atomic.Bool
	pendingGuilds  atomic.Int64 // GUILD_CREATEs still owed after READY
	identifying    atomic.Bool  // an identify is out and unanswered
	gen            atomic.Int64 // bumped whenever ws is replaced
	sessionID      string
	resumeURL      string
	alt            int // how many times nextNode moved on
	closing        atomic.Bool
	heartbeatEvery time.Duration
	doneOnce       sync.Once
	ready          chan struct{} // signalled by the first READY
	readyOnce      sync.Once
}

// SessionID is the id of the session's latest READY.
func (c *GatewayClient) SessionID() string {
	c.smu.Lock()
	defer c.smu.Unlock()
	return c.sessionID
}

// Done is closed when the session ended for good (Close, or a drop of a
// session that is not Resumable). Consumers of a Resumable session's
// Events select on it: those Events are never closed.
func (c *GatewayClient) Done() <-chan struct{} { return c.done }

func (c *GatewayClient) finish() { c.doneOnce.Do(func() { close(c.done) }) }

// DialGateway connects to url (ws:// or wss://), identifies with token and
// intents and waits for READY, which it keeps in Ready; the dispatches
// after it arrive on Events.
func DialGateway(ctx context.Context, d *websocket.Dialer, url, token string, intents int) (*GatewayClient, error) {
	return dial(ctx, d, url, token, intents, false)
}

// DialIdle is DialGateway for a session that only idles, as the gateway
// scenario's do: it decodes nothing but the sequence number, opcode and
// its own READY, keeps no READY payload and has no Events, so that a
// hundred thousand of them fit in one load tester.
func DialIdle(ctx context.Context, d *websocket.Dialer, url, token string, intents int) (*GatewayClient, error) {
	return dial(ctx, d, url, token, intents, true)
}

func dial(ctx context.Context, d *websocket.Dialer, url, token string, intents int, idle bool) (*GatewayClient, error) {
	if d == nil {
		d = websocket.DefaultDialer
	}
	ws, _, err := d.DialContext(ctx, url+"/?v=10&encoding=json", nil)
	if err != nil {
		return nil, err
	}
	c := &GatewayClient{ws: ws, done: make(chan struct{}), ready: make(chan struct{}, 1), dialer: d, url: url, token: token, intents: intents}
	if idle {
		c.Discard.Store(true)
	} else {
		c.Events = make(chan Dispatch, 64)
	}
	var hello struct {
		Op int `json:"op"`
		D  struct {
			Interval int `json:"heartbeat_interval"`
		} `json:"d"`
	}
	if err := ws.ReadJSON(&hello); err != nil || hello.Op != protocol.OpHello {
		ws.Close()
		return nil, fmt.Errorf("loadtest: no Hello: %v", err)
	}
	c.identify()
	go c.read(ws)
	c.heartbeatEvery = time.Duration(hello.D.Interval) * time.Millisecond
	c.heartbeat(c.heartbeatEvery)
	select {
	case <-c.ready:
		return c, nil
	case <-c.done:
		if c.Err != nil {
			return nil, c.Err
		}
		return nil, errors.New("loadtest: gateway closed before READY")
	case <-ctx.Done():
		c.closing.Store(true)
		ws.Close()
		return nil, ctx.Err()
	}
}

func (c *GatewayClient) identify() error {
	c.ackPending.Store(false)
	c.identifying.Store(true)
	return c.Send(protocol.OpIdentify, map[string]any{"token": c.token, "intents": c.intents,
		"properties": map[string]string{"os": "linux", "browser": "chorus-loadtest", "device": "chorus-loadtest"}})
}

// Send writes one payload.
func (c *GatewayClient) Send(op int, d any) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.WriteJSON(map[string]any{"op": op, "d": d})
}

func (c *GatewayClient) read(ws *websocket.Conn) {
	gen := c.gen.Load()
	for {
		// ReadMessage parks in a shallow frame, so an idle client's stack
		// stays small; decoding happens after, and for an idle session only
		// of the few dispatches that change its state.
		_, b, err := ws.ReadMessage()
		if err != nil {
			c.lost(ws, err)
			return
		}
		if c.Discard.Load() {
			op, _ := numField(b, `"op":`)
			if op != protocol.OpDispatch {
				c.control(int(op))
				continue
			}
			if s, ok := numField(b, `"s":`); ok && c.gen.Load() == gen {
				c.smu.Lock()
				c.lastS = s
				c.smu.Unlock()
			}
			if isDispatch(b, protocol.EventReady) || isDispatch(b, protocol.EventResumed) || isDispatch(b, protocol.EventGuildCreate) {
				var d Dispatch
				if json.Unmarshal(b, &d) == nil {
					d.Seen = time.Now()
					c.track(d)
				}
			}
			continue
		}
		var d Dispatch
		if json.Unmarshal(b, &d) != nil {
			continue
		}
		if d.Op != protocol.OpDispatch {
			c.control(d.Op)
			continue
		}
		d.Seen = time.Now()
		if c.gen.Load() == gen { // not a replaced connection's last words
			c.smu.Lock()
			c.lastS = d.S
			c.smu.Unlock()
		}
		if c.track(d) {
			c.Events <- d
		}
	}
}

// track follows the dispatches that change the session's state: READY
// (a new session), GUILD_CREATE (its guilds arriving) and RESUMED. It
// reports whether d goes on to Events: the first READY does not, it is
// DialGateway's answer.
func (c *GatewayClient) track(d Dispatch) bool {
	switch d.T {
	case protocol.EventReady:
		c.identifying.Store(false)
		var r struct {
			SessionID string            `json:"session_id"`
			ResumeURL string            `json:"resume_gateway_url"`
			Guilds    []json.RawMessage `json:"guilds"`
		}
		json.Unmarshal(d.D, &r)
		c.smu.Lock()
		c.sessionID, c.resumeURL = r.SessionID, r.ResumeURL
		c.smu.Unlock()
		if c.droppedAt.Load() != 0 {
			c.Reidentified.Add(1)
		}
		// A fresh session is live once every guild it is in has arrived:
		// events of a guild follow its GUILD_CREATE (gateway.md §9.3).
		if c.pendingGuilds.Store(int64(len(r.Guilds))); len(r.Guilds) == 0 {
			c.back(d.Seen)
		}
		first := false
		c.readyOnce.Do(func() {
			first = true
			if !c.Discard.Load() {
				c.Ready = d.D
			}
			c.ready <- struct{}{}
		})
		return !first
	case protocol.EventGuildCreate:
		if c.pendingGuilds.Add(-1) == 0 {
			c.back(d.Seen)
		}
		if c.GuildsOut.Load() > 0 { // a guild coming back: read its id (only then: it may be large)
			var g struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(d.D, &g) == nil {
				c.outMu.Lock()
				if until, ok := c.outUntil[g.ID]; ok && until.IsZero() {
					c.outUntil[g.ID] = d.Seen
				}
				c.outMu.Unlock()
			}
		}
	case protocol.EventGuildDelete:
		var g struct {
			ID          string `json:"id"`
			Unavailable bool   `json:"unavailable"`
		}
		if json.Unmarshal(d.D, &g) == nil && g.Unavailable {
			c.outMu.Lock()
			if c.outUntil == nil {
				c.outUntil = map[string]time.Time{}
			}
			c.outUntil[g.ID] = time.Time{}
			c.outMu.Unlock()
			c.GuildsOut.Add(1)
		}
	case protocol.EventResumed:
		c.Resumed.Add(1)
		c.back(d.Seen)
	}
	return true
}

// WasOut reports whether the server said guild was unavailable to this
// client and had not given it back (GUILD_CREATE) by at: a message of the
// guild sent before then that the client missed, it was told of.
func (c *GatewayClient) WasOut(guild string, at time.Time) bool {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	until, ok := c.outUntil[guild]
	return ok && (until.IsZero() || at.Before(until))
}

// control handles the opcodes a client must act on besides dispatches.
func (c *GatewayClient) control(op int) {
	switch op {
	case protocol.OpHeartbeatACK:
		c.ackPending.Store(false)
	case protocol.OpInvalidSession: // identify afresh on this connection (gateway.md §10)
		c.Invalidated.Add(1)
		if !c.Reconnect.Load() {
			return
		}
		if c.identifying.Load() {
			// The identify itself was refused (the identify rate limit):
			// wait 1–5 s as libraries do before trying again.
			go func() {
				time.Sleep(time.Second + rand.N(4*time.Second))
				if !c.closing.Load() {
					c.identify()
				}
			}()
			return
		}
		go c.identify() // the resume was refused: start a new session now
	}
}

// lost handles the end of connection ws: a Resumable session waits for
// Resume (from the caller, or from itself when Reconnect is set); any
// other ends for good.
func (c *GatewayClient) lost(ws *websocket.Conn, err error) {
	c.wmu.Lock()
	current := c.ws == ws
	c.wmu.Unlock()
	if !current {
		return // an older connection, already replaced by a resume
	}
	if (c.Resumable.Load() || c.Reconnect.Load()) && !c.closing.Load() {
		c.Drops.Add(1)
		if c.Reconnect.Load() {
			// Also when the connection of a resume under way ends before
			// RESUMED (a node that drains closes it): the drop is still
			// the first one, and repairing starts over.
			c.droppedAt.CompareAndSwap(0, time.Now().UnixNano())
			go c.reconnect()
		}
		return
	}
	c.Err = err
	c.finish()
	if !c.Resumable.Load() && !c.Reconnect.Load() && c.Events != nil {
		close(c.Events)
	}
}

// back records that the session is live again after a drop; it reports
// whether there was one.
func (c *GatewayClient) back(at time.Time) bool {
	dropped := c.droppedAt.Swap(0)
	if dropped == 0 {
		return false
	}
	c.backAt.Store(at.UnixNano())
	c.lastOutage.Store(at.UnixNano() - dropped)
	return true
}

// LastOutage is how long the session was last away: from losing its
// connection to being live again.
func (c *GatewayClient) LastOutage() time.Duration { return time.Duration(c.lastOutage.Load()) }

// Recovering reports whether the session lost its connection and is not
// yet live again; BackAt is when it was last re-established.
func (c *GatewayClient) Recovering() bool { return c.droppedAt.Load() != 0 }

// BackAt is when the session was last re-established after a drop (RESUMED
// or a fresh READY received), zero if it never dropped.
func (c *GatewayClient) BackAt() time.Time {
	if ns := c.backAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// reconnect resumes the session with exponential backoff (50 ms to 1 s)
// until a connection is accepted; what the node answers (RESUMED, or op 9
// and then a fresh identify) arrives on the new connection's read loop.
func (c *GatewayClient) reconnect() {
	limit := c.ReconnectFor
	if limit <= 0 {
		limit = time.Minute
	}
	deadline := time.Now().Add(limit)
	backoff := 50 * time.Millisecond
	for !c.closing.Load() && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.Resume(ctx)
		cancel()
		if err == nil {
			return
		}
		c.nextNode()
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
	if !c.closing.Load() {
		c.Err = errors.New("loadtest: gave up reconnecting")
		c.finish()
	}
}

// nextNode points the next resume at the next alternate node, if any.
func (c *GatewayClient) nextNode() {
	if len(c.Alternates) == 0 {
		return
	}
	c.smu.Lock()
	defer c.smu.Unlock()
	c.alt++
	if i := c.alt % (len(c.Alternates) + 1); i == 0 {
		c.resumeURL = c.url
	} else {
		c.resumeURL = c.Alternates[i-1]
	}
}

// ResumeAt makes the next resume go to url instead of resume_gateway_url,
// as a client behind a load balancer lands on whichever node it picks.
func (c *GatewayClient) ResumeAt(url string) {
	c.smu.Lock()
	c.resumeURL = url
	c.smu.Unlock()
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
	c.smu.Lock()
	seq, sessionID, resumeURL := c.lastS, c.sessionID, c.resumeURL
	c.smu.Unlock()
	ws, _, err := c.dialer.DialContext(ctx, resumeURL+"/?v=10&encoding=json", nil)
	if err != nil {
		return err
	}
	var hello struct{ Op int }
	if err := ws.ReadJSON(&hello); err != nil || hello.Op != protocol.OpHello {
		ws.Close()
		return fmt.Errorf("loadtest: no Hello on resume: %v", err)
	}
	c.wmu.Lock()
	c.ws = ws
	c.gen.Add(1)
	c.ackPending.Store(false)
	err = ws.WriteJSON(map[string]any{"op": protocol.OpResume, "d": protocol.Resume{Token: c.token, SessionID: sessionID, Seq: &seq}})
	c.wmu.Unlock()
	if c.closing.Load() {
		ws.Close() // Close ran while this resume was being dialled
	}
	if err != nil {
		return err
	}
	go c.read(ws)
	return nil
}

// Reidentify starts over the way a client that drops its session does:
// it closes with 1000, which ends the session on the node (gateway.md §10),
// and identifies afresh on a new connection. The new READY and GUILD_CREATEs
// arrive on Events; Recovering and BackAt say when the last one did. What
// was sent meanwhile is only in the channels' history.
func (c *GatewayClient) Reidentify(ctx context.Context) error {
	c.droppedAt.CompareAndSwap(0, time.Now().UnixNano())
	c.wmu.Lock()
	old := c.ws
	old.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(protocol.CloseNormal), ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	ws, _, err := c.dialer.DialContext(ctx, c.url+"/?v=10&encoding=json", nil)
	if err != nil {
		return err
	}
	var hello struct{ Op int }
	if err := ws.ReadJSON(&hello); err != nil || hello.Op != protocol.OpHello {
		ws.Close()
		return fmt.Errorf("loadtest: no Hello on re-identify: %v", err)
	}
	c.wmu.Lock()
	c.ws = ws
	c.gen.Add(1)
	c.wmu.Unlock()
	old.Close()
	if err := c.identify(); err != nil {
		return err
	}
	if c.closing.Load() {
		ws.Close()
	}
	go c.read(ws)
	return nil
}

// numField finds a top-level number such as "s": or "op": in a gateway
// payload without decoding it. Dispatch envelopes put op, s and t before d
// (as the node encodes them), so a match inside d is not reached first.
func numField(b []byte, key string) (int64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	j := i + len(key)
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
		if c.Reconnect.Load() && c.ackPending.Swap(true) {
			c.Drop() // the last beat was never acknowledged: a zombie connection
		} else {
			c.Send(protocol.OpHeartbeat, s)
		}
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
	if c.Resumable.Load() || c.Reconnect.Load() {
		c.finish()
	}
	c.wmu.Lock()
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(protocol.CloseNormal), ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	return c.ws.Close()
}

// isDispatch reports whether a raw frame is a dispatch named name, as the
// server writes them: the envelope starts {"t":"NAME" (protocol.AppendDispatch).
func isDispatch(b []byte, name string) bool {
	const head = `{"t":"`
	n := len(head) + len(name)
	return len(b) > n && string(b[:len(head)]) == head && string(b[len(head):n]) == name && b[n] == '"'
}
