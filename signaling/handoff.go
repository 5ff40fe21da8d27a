package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/store"
)

// A client may resume its session at any gateway node of the cluster
// (resume_gateway_url names the cluster's address, behind which any node
// answers). The node that holds the session hands it over, with nothing
// lost and nothing repeated (issue 11 §3, §4):
//
//  1. find: the new node asks the others which holds the session. The
//     holder marks it leaving (its own resumes are refused from now on),
//     closes its connection if it still has one, and describes it: user,
//     intents, shard, guilds, presence and its move count (Gen).
//  2. move: the new node registers the session, under Gen+1, with the
//     owner of each of its guilds. Each owner's actor replaces the
//     registration and puts a "moved" marker into the old node's ordered
//     stream after every event it sent there for the session; events
//     after the move come to the new node, which keeps them in the
//     session's log.
//  3. release: once the old node has the markers of every guild the move
//     took from it, its log of the session is complete. It hands the log
//     over (sequence numbers included) and forgets the session. The new
//     node puts it in front of what it gathered since the moves, and the
//     resume replays from the client's seq as on any node.
//
// Anything failing on the way abandons the session (the old node drops
// it, the new one unsubscribes it): the client gets op 9 and identifies
// again, as when a resume cannot be served on one node.

const (
	// findTimeout bounds the search for a session's holder.
	findTimeout = 2 * time.Second
	// handoffWait bounds the old node's wait for the moved markers.
	handoffWait = 3 * time.Second
)

// handoffRequest is one step, from the new node to the old.
type handoffRequest struct {
	Op      string     `json:"op"` // "find", "release", "abort"; "drain" (admin.go); "held", "batch" (batchgap.go)
	Session string     `json:"session"`
	User    guild.ID   `json:"user"`
	To      string     `json:"to"`
	Expect  []guild.ID `json:"expect,omitempty"` // release: guilds whose markers to await
	// held, batch (batchgap.go): the batches from Sender below N, or the
	// one numbered N, sent to To, whose replication stream is incarnation Inc.
	Sender string `json:"sender,omitempty"`
	N      uint64 `json:"n,omitempty"`
	Inc    uint64 `json:"inc,omitempty"`
}

// foundSession answers find.
type foundSession struct {
	Found   bool             `json:"found"`
	Intents uint64           `json:"intents,omitempty"`
	Shard   []int            `json:"shard,omitempty"`
	Large   int              `json:"large,omitempty"`
	Guilds  []guild.ID       `json:"guilds,omitempty"`
	Status  string           `json:"status,omitempty"`
	Acts    []guild.Activity `json:"acts,omitempty"`
	Gen     uint64           `json:"gen,omitempty"`
	// Node is the node the session's subscriptions name, when not the
	// one answering: a gone node whose copy answers (replica.go).
	Node string `json:"node,omitempty"`
}

// releasedLog answers release: the session's log, the first entry's seq
// and every entry after it.
type releasedLog struct {
	Base   uint64        `json:"base"`
	Events []loggedEvent `json:"events"`
}

type loggedEvent struct {
	Name string          `json:"t"`
	Data json.RawMessage `json:"d"`
}

// leaving is the state of a session being handed to another node.
type leaving struct {
	to    string
	moved map[guild.ID]bool // guilds whose moved marker arrived
	wake  chan struct{}
}

// errNoSuchHandoff answers a release or abort for a session that is not
// leaving for the caller.
var errNoSuchHandoff = errors.New("signaling: no such session handoff")

// sessionNode returns the node a session id was created on (newSessionID).
func sessionNode(id string) string {
	if i := strings.LastIndexByte(id, '.'); i >= 0 {
		return id[i+1:]
	}
	return ""
}

// ServeGateway answers another gateway node's handoff step
// (guild.Sessions; guild.Router.CallGateway at the other end).
func (h *Hub) ServeGateway(ctx context.Context, b []byte) ([]byte, error) {
	var req handoffRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, fmt.Errorf("signaling: handoff request: %w", err)
	}
	switch req.Op {
	case "find":
		found := h.find(req)
		if !found.Found && h.reps != nil {
			found = h.reps.find(ctx, req)
		}
		return json.Marshal(found)
	case "release":
		out, err := h.release(ctx, req)
		if errors.Is(err, errNoSuchHandoff) && h.reps != nil {
			out, err = h.reps.release(ctx, req)
		}
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	case "holds":
		a := holdsAnswer{Held: h.get(req.Session) != nil}
		if h.rep != nil {
			a.Inc = h.rep.inc
		}
		return json.Marshal(a)
	case "held":
		var a heldNumbers
		if h.reps != nil {
			a = h.reps.heldBelow(req.To, req.Inc, req.Sender, req.N)
		}
		return json.Marshal(a)
	case "batch":
		var a heldBatch
		if h.reps != nil {
			a = h.reps.heldFor(req.To, req.Inc, guild.BatchRef{From: req.Sender, N: req.N})
		}
		return json.Marshal(a)
	case "replica_sync":
		if h.rep != nil {
			h.rep.resync()
		}
		return []byte("null"), nil
	case "drain":
		h.requestDrain()
		return []byte("null"), nil
	case "abort":
		if s := h.leavingFor(req); s != nil {
			s.invalidate()
			h.remove(s)
		} else if h.reps != nil {
			h.reps.abort(req)
		}
		return []byte("null"), nil
	}
	return nil, fmt.Errorf("signaling: unknown handoff step %q", req.Op)
}

// find describes a session held here and marks it leaving for req.To.
func (h *Hub) find(req handoffRequest) foundSession {
	s := h.get(req.Session)
	if s == nil || s.user.ID != req.User {
		return foundSession{}
	}
	s.mu.Lock()
	if s.invalid || (s.leaving != nil && s.leaving.to != req.To) {
		s.mu.Unlock()
		return foundSession{}
	}
	if s.leaving == nil {
		s.leaving = &leaving{to: req.To, moved: map[guild.ID]bool{}, wake: make(chan struct{}, 1)}
	}
	out := foundSession{Found: true, Intents: s.intents, Shard: s.shard, Large: s.large, Guilds: append([]guild.ID(nil), s.guilds...),
		Status: s.status, Acts: s.acts, Gen: s.gen}
	c := s.conn
	s.mu.Unlock()
	if c != nil {
		// The client is at the other node now; this connection is a
		// zombie. It ends as a dropped one does (the session stays here,
		// with its expiry, until it is released).
		c.closeWith(protocol.CloseUnknownError, "session resumed elsewhere")
	}
	return out
}

// leavingFor returns the session req names if it is leaving for req.To.
func (h *Hub) leavingFor(req handoffRequest) *Session {
	s := h.get(req.Session)
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leaving == nil || s.leaving.to != req.To || s.user.ID != req.User {
		return nil
	}
	return s
}

// release waits until the markers of req.Expect arrived, then hands the
// session's log over and forgets the session.
func (h *Hub) release(ctx context.Context, req handoffRequest) (releasedLog, error) {
	s := h.leavingFor(req)
	if s == nil {
		return releasedLog{}, errNoSuchHandoff
	}
	s.mu.Lock()
	l := s.leaving
	s.mu.Unlock()
	if err := awaitMoved(ctx, &s.mu, l, req.Expect); err != nil {
		return releasedLog{}, fmt.Errorf("session %s: %w", s.id, err)
	}
	s.invalidate()
	h.remove(s)
	out := logOf(&s.eventLog)
	h.metrics.HandedOff.Add(1)
	return out, nil
}

// Moved records a guild's moved marker for a leaving session
// (guild.Sessions). In a cluster it takes its turn in the replicator after
// the deliveries queued before it: a guild this node owns marks a move
// directly, and its last events for the session may still be queued.
func (h *Hub) Moved(gid guild.ID, session string) {
	if h.rep != nil {
		h.rep.moved(gid, session)
		return
	}
	h.movedNow(gid, session)
}

func (h *Hub) movedNow(gid guild.ID, session string) {
	s := h.get(session)
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leaving == nil {
		return // a late marker of a registration this node did not ask to move
	}
	s.leaving.moved[gid] = true
	select {
	case s.leaving.wake <- struct{}{}:
	default:
	}
}

// takeOver brings a session another node holds here (steps above) and
// returns it, detached and ready for the resume, or nil when no node has
// it or the handoff failed.
func (g *Gateway) takeOver(ctx context.Context, id string, u store.User) *Session {
	holder, found := g.findSession(ctx, id, u.ID)
	if holder == "" {
		g.cfg.Logger.Debug("handoff: no node holds the session", "session", id)
		return nil
	}
	s := newSession(id, u)
	s.intents, s.shard, s.large, s.guilds = found.Intents, found.Shard, found.Large, found.Guilds
	s.status, s.acts, s.gen = found.Status, found.Acts, found.Gen+1
	s.detached = time.Now()
	g.hub.add(s)
	// The guilds whose registration the moves take from the node that
	// held the session send it their moved markers.
	from := found.Node
	if from == "" {
		from = holder
	}
	var expect []guild.ID
	for _, gid := range found.Guilds {
		g.owners.note(g.router, gid)
		sub := s.sub(g.cfg.NodeID)
		sub.Had = true // an owner that lost track of it tells it the guild was out
		var was string
		err := retryOverloaded(ctx, func() (err error) {
			was, err = g.router.Move(ctx, gid, sub)
			return err
		})
		if err != nil {
			g.abandon(s, holder, fmt.Errorf("moving guild %d: %w", gid, err))
			return nil
		}
		if was == from {
			expect = append(expect, gid)
		}
		g.hub.subscribed(s, gid)
	}
	req, _ := json.Marshal(handoffRequest{Op: "release", Session: id, User: u.ID, To: g.cfg.NodeID, Expect: expect})
	var b []byte
	err := retryOverloaded(ctx, func() (err error) {
		b, err = g.router.CallGateway(ctx, holder, req)
		return err
	})
	var rel releasedLog
	if err == nil {
		err = json.Unmarshal(b, &rel)
	}
	if err != nil {
		g.abandon(s, holder, err)
		return nil
	}
	evs := make([]*guild.Event, len(rel.Events))
	for i, e := range rel.Events {
		evs[i] = &guild.Event{Name: e.Name, Data: e.Data}
	}
	if !s.adopt(rel.Base, evs, g.cfg.logLimit()) {
		g.abandon(s, holder, errors.New("the handed-over log does not fit"))
		return nil
	}
	g.metrics.TakenOver.Add(1)
	if g.hub.rep != nil {
		g.hub.rep.snapshot(s) // its log is new here: the buddy copies it whole
	}
	time.AfterFunc(g.cfg.ResumeWindow, func() { g.expire(s) })
	return s
}

// findSession asks the node the session was created on and every other
// gateway node of the ring which holds it.
func (g *Gateway) findSession(ctx context.Context, id string, user guild.ID) (string, foundSession) {
	nodes := g.router.GatewayNodes()
	if n := sessionNode(id); n != "" && n != g.cfg.NodeID && !slices.Contains(nodes, n) {
		nodes = append(nodes, n)
	}
	if g.hub.reps != nil {
		// This node may keep the copy of the session's gone node. It asks
		// its copies directly: asked through the bus like the others, its
		// hub could answer late, after takeOver registered the session
		// here, and mark that leaving.
		nodes = append(nodes, g.cfg.NodeID)
	}
	find := handoffRequest{Op: "find", Session: id, User: user, To: g.cfg.NodeID}
	req, _ := json.Marshal(find)
	type answer struct {
		node  string
		found foundSession
	}
	// A node that stops while asked never answers: each ask is bounded,
	// and the holder's answer ends the search.
	ctx, cancel := context.WithTimeout(ctx, findTimeout)
	defer cancel()
	answers := make(chan answer, len(nodes))
	for _, n := range nodes {
		go func() {
			var f foundSession
			if n == g.cfg.NodeID {
				f = g.hub.reps.find(ctx, find)
			} else if b, err := g.router.CallGateway(ctx, n, req); err == nil {
				json.Unmarshal(b, &f)
			}
			answers <- answer{n, f}
		}()
	}
	// A node's own session ends the search. A copy of a gone node's
	// (found.Node set) may be stale — the session moved on before its
	// node died, and the copy missed the news — so it counts only when no
	// node holds the session itself, and the newest (highest Gen) wins.
	var best answer
	var copies []answer
	left := len(nodes)
	for ; left > 0; left-- {
		a := <-answers
		if !a.found.Found {
			continue
		}
		g.cfg.Logger.Debug("handoff: found", "session", id, "at", a.node, "node", a.found.Node, "gen", a.found.Gen)
		if a.found.Node == "" {
			best = a
			left--
			break
		}
		copies = append(copies, a)
		if best.node == "" || a.found.Gen > best.found.Gen {
			best = a
		}
	}
	// Copies not taken are released (marked leaving, they would wait for
	// a release that never comes), including those that answer later.
	abort, _ := json.Marshal(handoffRequest{Op: "abort", Session: id, User: user, To: g.cfg.NodeID})
	go func() {
		for ; left > 0; left-- {
			if a := <-answers; a.found.Found && a.found.Node != "" {
				copies = append(copies, a)
			}
		}
		for _, a := range copies {
			if a.node != best.node {
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				g.router.CallGateway(ctx, a.node, abort)
				cancel()
			}
		}
	}()
	return best.node, best.found
}

// overloadedTries bounds the tries of one step of a takeover that met a
// node's overload guard (guild.ErrOverloaded: an actor's mailbox, or the
// calls a node serves at once, full — as when thousands of sessions of a
// dead node resume together). Given up, the takeover costs its client a
// fresh identify, far more work than a wait of a few hundred
// milliseconds.
const overloadedTries = 5

// retryOverloaded runs fn until it does not fail with ErrOverloaded, at
// most overloadedTries times, backing off (25 ms doubling, with jitter).
func retryOverloaded(ctx context.Context, fn func() error) error {
	backoff := 25 * time.Millisecond
	for try := 1; ; try++ {
		err := fn()
		if !errors.Is(err, guild.ErrOverloaded) || try == overloadedTries {
			return err
		}
		t := time.NewTimer(backoff + rand.N(backoff))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
		backoff *= 2
	}
}

// abandon gives up a handoff: the old node drops the session, this one
// ends it (unsubscribing it wherever it is registered).
func (g *Gateway) abandon(s *Session, holder string, why error) {
	g.metrics.HandoffFailed.Add(1)
	g.cfg.Logger.Warn("session handoff failed", "session", s.id, "from", holder, "err", why)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, _ := json.Marshal(handoffRequest{Op: "abort", Session: s.id, User: s.user.ID, To: g.cfg.NodeID})
	g.router.CallGateway(ctx, holder, req)
	g.endSession(s)
}
