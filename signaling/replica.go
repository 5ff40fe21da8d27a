package signaling

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-voice/chorus/cluster"
	"github.com/chorus-voice/chorus/guild"
)

// The buddy's side of replicate.go. Each gateway node follows the gateway
// node before it in the sorted list of gateway nodes (buddyOf): it
// subscribes to that node's event batches and replication stream and
// keeps a shadow of each of its sessions, a log numbered as the node's
// own. While the node lives the shadows only follow; once it is gone
// (it left the ring, or a resume found it not answering, or it restarted
// under a new incarnation) its shadows are held here as the node would
// hold its sessions: found, moved and released by the ordinary handoff
// (handoff.go), and expired after the resume window.

// buddyOf names the gateway node that keeps node's copy: the next one in
// sorted order ("" when node is alone).
func buddyOf(nodes []string, node string) string {
	if len(nodes) < 2 {
		return ""
	}
	i := sort.SearchStrings(nodes, node)
	if i < len(nodes) && nodes[i] == node {
		i++
	}
	return nodes[i%len(nodes)]
}

const (
	// maxHeldBatches bounds the batches kept for a followed node until its
	// stream says when it delivered them.
	maxHeldBatches = 8192
	// batchRefWait bounds the wait for a batch the stream names that has
	// not arrived here yet (it comes on another subscription).
	batchRefWait = 2 * time.Second
	// probeTimeout bounds the question to a followed node whether it
	// still holds a session: a dead one answers at once (no responders),
	// a paused one costs this.
	probeTimeout = 750 * time.Millisecond
	// drainWait bounds the wait for the rest of a dead node's stream.
	drainWait = 500 * time.Millisecond
	// syncEvery bounds how often a follower out of step asks for a copy,
	// syncTries how often it asks in a row.
	syncEvery = time.Second
	syncTries = 60
)

// replicas are the copies this node keeps.
type replicas struct {
	g   *Gateway
	bus *cluster.Node

	mu    sync.Mutex
	nodes map[string]*following
	ring  []string // the gateway nodes, sorted, of the last ring this node was on
}

// following is this node's subscription to one other node's subjects, and
// the copies taken from it: of its live incarnation, and of earlier ones
// that died with sessions still to resume.
type following struct {
	node    string
	stop    func()
	pending func() int
	live    *follower // nil once this node is no longer its buddy
	gone    []*follower
}

// follower is the copy of one incarnation of a node's sessions.
type follower struct {
	r    *replicas
	node string
	busy atomic.Bool // a replication message is being applied

	mu       sync.Mutex
	inc      uint64
	synced   bool
	next     uint64
	asked    time.Time
	gone     bool
	batches  map[guild.BatchRef][]byte
	order    []guild.BatchRef // arrival order of the batches held
	arrived  chan struct{}    // closed at the next batch's arrival
	sessions map[string]*shadow
}

// shadow is a copied session.
type shadow struct {
	eventLog
	id      string
	st      sessionState
	leaving *leaving
}

func newReplicas(g *Gateway, bus *cluster.Node) *replicas {
	return &replicas{g: g, bus: bus, nodes: map[string]*following{}}
}

func (r *replicas) newFollower(node string) *follower {
	return &follower{r: r, node: node, batches: map[guild.BatchRef][]byte{}, arrived: make(chan struct{}),
		sessions: map[string]*shadow{}}
}

// follow brings the set of followed nodes in line with the ring: called
// at each ring change. A ring this node is not on (it fenced itself) is
// not followed: taken at its word, it said every other node was gone, and
// a node waking from a pause took the copies it keeps for live nodes for
// copies of dead ones.
func (r *replicas) follow() {
	me := r.g.cfg.NodeID
	nodes, joined := r.g.router.GatewayView()
	if !joined {
		return
	}
	nodes = append(nodes, me)
	sort.Strings(nodes)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ring = nodes
	for _, n := range nodes {
		if n == me || buddyOf(nodes, n) != me {
			continue
		}
		fw := r.nodes[n]
		if fw == nil {
			fw = &following{node: n}
			stop, pending, err := r.bus.Follow(n, func(b []byte) { r.batch(n, b) }, func(b []byte) { r.replica(n, b) })
			if err != nil {
				r.g.cfg.Logger.Warn("replica: cannot follow", "node", n, "err", err)
				continue
			}
			fw.stop, fw.pending = stop, pending
			r.nodes[n] = fw
		}
		if fw.live == nil {
			fw.live = r.newFollower(n)
			go r.askSync(fw.live)
		}
	}
	for n, fw := range r.nodes {
		if fw.live == nil {
			continue
		}
		switch {
		case !slices.Contains(nodes, n):
			// It left the ring: dead, or drained. Its sessions are ours.
			f := fw.live
			fw.live = nil
			fw.gone = append(fw.gone, f)
			go r.markGone(fw, f)
		case buddyOf(nodes, n) != me:
			fw.live = nil // another node keeps its copy now
		}
		r.drop(fw)
	}
}

// drop ends a following that keeps nothing.
func (r *replicas) drop(fw *following) {
	if fw.live == nil && len(fw.gone) == 0 {
		fw.stop()
		delete(r.nodes, fw.node)
	}
}

// retire removes the copy f of a gone incarnation of fw's node.
func (r *replicas) retire(fw *following, f *follower) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fw.gone = slices.DeleteFunc(fw.gone, func(x *follower) bool { return x == f })
	r.drop(fw)
}

// buddy returns this node's buddy on the last ring it was on, "" when it
// has none.
func (r *replicas) buddy() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b := buddyOf(r.ring, r.g.cfg.NodeID); b != r.g.cfg.NodeID {
		return b
	}
	return ""
}

func (r *replicas) get(node string) *following {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nodes[node]
}

// followers returns every copy held, live and gone.
func (r *replicas) followers() []*follower {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*follower
	for _, fw := range r.nodes {
		if fw.live != nil {
			out = append(out, fw.live)
		}
		out = append(out, fw.gone...)
	}
	return out
}

// batch takes a batch sent to a followed node.
func (r *replicas) batch(node string, b []byte) {
	ref, body, err := guild.SplitBatch(b)
	if err != nil {
		r.g.metrics.ReplicaMalformed.Add(1)
		return
	}
	r.mu.Lock()
	fw := r.nodes[node]
	var fs []*follower
	if fw != nil {
		if fw.live != nil {
			fs = append(fs, fw.live)
		}
		fs = append(fs, fw.gone...)
	}
	r.mu.Unlock()
	for _, f := range fs {
		f.batch(ref, body)
	}
}

func (f *follower) batch(ref guild.BatchRef, body []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gone {
		// Nobody orders them any more: applied as they come, and kept
		// for the node in case it was not dead after all (batchgap.go).
		f.applyBatch(body)
	}
	f.batches[ref] = body
	f.order = append(f.order, ref)
	for len(f.batches) > maxHeldBatches {
		delete(f.batches, f.order[0])
		f.order = f.order[1:]
	}
	if len(f.order) > 2*len(f.batches)+64 {
		kept := f.order[:0]
		for _, ref := range f.order {
			if _, ok := f.batches[ref]; ok {
				kept = append(kept, ref)
			}
		}
		clear(f.order[len(kept):])
		f.order = kept
	}
	close(f.arrived)
	f.arrived = make(chan struct{})
}

// applyBatch puts a batch's events into the shadows it names. f.mu held.
func (f *follower) applyBatch(body []byte) {
	lim := f.r.g.cfg.logLimit()
	err := guild.BatchItems(body, func(ev *guild.Event, ids []string) {
		for _, id := range ids {
			if sh := f.sessions[id]; sh != nil {
				sh.add(ev, lim)
			}
		}
	}, func(gid guild.ID, id string) {
		if sh := f.sessions[id]; sh != nil {
			sh.moved(gid)
		}
	})
	if err != nil {
		f.r.g.metrics.ReplicaMalformed.Add(1)
	}
}

// add appends ev to the shadow's log. The shadow sends nothing, so it
// counts everything as sent: the log drops from its front as the node's
// does, and never gives up.
func (sh *shadow) add(ev *guild.Event, lim logLimit) {
	sh.push(ev, lim)
	sh.mu.Lock()
	sh.sent = sh.next - 1
	sh.mu.Unlock()
}

// moved records a moved marker for a shadow being handed over.
func (sh *shadow) moved(gid guild.ID) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.leaving == nil {
		return
	}
	sh.leaving.moved[gid] = true
	select {
	case sh.leaving.wake <- struct{}{}:
	default:
	}
}

// replica takes a message of a followed node's stream.
func (r *replicas) replica(node string, msg []byte) {
	inc, seq, err := replicaHeader(msg)
	if err != nil {
		r.g.metrics.ReplicaMalformed.Add(1)
		return
	}
	r.mu.Lock()
	fw := r.nodes[node]
	var f *follower
	if fw != nil {
		f = fw.live
		if n := len(fw.gone); n > 0 && (f == nil || !f.isSynced()) && fw.gone[n-1].draining(inc) {
			// The copy was just taken for a resume and is being marked
			// gone: the rest of the stream still belongs to it (markGone
			// waits for it). Once marked, the stream is the live copy's
			// again: a node taken for dead that comes back as the same
			// process streams under the same incarnation, and its new
			// copy must sync from it, or the node has no copy at all
			// until the old one expires.
			f = fw.gone[n-1]
		}
	}
	r.mu.Unlock()
	if f == nil {
		return
	}
	f.busy.Store(true)
	defer f.busy.Store(false)
	f.mu.Lock()
	if f.synced && inc != f.inc {
		// The node restarted: the copy of its earlier incarnation is all
		// that is left of those sessions.
		f.mu.Unlock()
		r.mu.Lock()
		if fw.live == f {
			fw.live = r.newFollower(node)
			fw.gone = append(fw.gone, f)
			go r.markGone(fw, f)
		}
		f = fw.live
		r.mu.Unlock()
		f.mu.Lock()
	}
	defer f.mu.Unlock()
	if f.gone {
		return
	}
	if !f.synced || seq != f.next || inc != f.inc {
		if len(msg) == replicaHeaderLen || msg[replicaHeaderLen] != recSync {
			if f.synced {
				r.g.metrics.ReplicaGaps.Add(1)
				f.synced = false
				clear(f.sessions)
			}
			f.askSyncLocked()
			return
		}
		f.synced, f.inc = true, inc
	}
	f.next = seq + 1
	if err := readReplica(msg, f.apply); err != nil && !f.gone {
		r.g.metrics.ReplicaMalformed.Add(1)
		f.synced = false
		clear(f.sessions)
		f.askSyncLocked()
	}
}

// askSyncLocked asks the node for a full copy, at most every syncEvery.
func (f *follower) askSyncLocked() {
	if time.Since(f.asked) < syncEvery {
		return
	}
	f.asked = time.Now()
	go f.r.askSync(f)
}

// askSync asks until the node has the request (it may not serve yet, or
// be gone), while f is the live copy and out of step; at most every
// syncEvery, for a bounded number of tries.
func (r *replicas) askSync(f *follower) {
	req, _ := json.Marshal(handoffRequest{Op: "replica_sync"})
	for try := 0; try < syncTries; try++ {
		if try > 0 {
			time.Sleep(syncEvery)
		}
		f.mu.Lock()
		done := f.synced || f.gone
		f.mu.Unlock()
		if done || r.live(f.node) != f {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		_, err := r.g.router.CallGateway(ctx, f.node, req)
		cancel()
		if err == nil {
			return
		}
		r.g.cfg.Logger.Debug("replica: sync not asked", "node", f.node, "err", err)
	}
}

// live returns the live copy of node's sessions, if any.
func (r *replicas) live(node string) *follower {
	r.mu.Lock()
	defer r.mu.Unlock()
	if fw := r.nodes[node]; fw != nil {
		return fw.live
	}
	return nil
}

// apply applies one record. f.mu held.
func (f *follower) apply(rec *record) error {
	lim := f.r.g.cfg.logLimit()
	switch rec.kind {
	case recSync:
		clear(f.sessions)
	case recBatch:
		body, ok := f.batches[rec.ref]
		for t := time.Now(); !ok; body, ok = f.batches[rec.ref] {
			if time.Since(t) > batchRefWait {
				return errMissingBatch
			}
			ch := f.arrived
			f.mu.Unlock()
			select {
			case <-ch:
			case <-time.After(batchRefWait):
			}
			f.mu.Lock()
			if f.gone {
				return errMissingBatch // markGone applied what came, in order of arrival
			}
		}
		delete(f.batches, rec.ref)
		f.applyBatch(body)
	case recLocal:
		ev := &guild.Event{Name: rec.ev.Name, Data: rec.ev.Data}
		for _, id := range rec.sessions {
			if sh := f.sessions[id]; sh != nil {
				sh.add(ev, lim)
			}
		}
	case recDescribe:
		if sh := f.sessions[rec.session]; sh != nil {
			var st sessionState
			if err := json.Unmarshal(rec.state, &st); err != nil {
				return err
			}
			sh.mu.Lock()
			sh.st = st
			sh.mu.Unlock()
		}
	case recSnapshot:
		var st sessionState
		if err := json.Unmarshal(rec.state, &st); err != nil {
			return err
		}
		sh := &shadow{eventLog: newEventLog(), id: rec.session, st: st}
		evs := make([]*guild.Event, len(rec.events))
		for i := range rec.events {
			evs[i] = &guild.Event{Name: rec.events[i].Name, Data: rec.events[i].Data}
		}
		if len(evs) > 0 || rec.seq > 1 {
			if !sh.adopt(rec.seq, evs, lim) {
				delete(f.sessions, rec.session)
				f.r.g.metrics.ReplicaDropped.Add(1)
				return nil
			}
			sh.sent = sh.next - 1
		}
		f.sessions[rec.session] = sh
	case recAck:
		if sh := f.sessions[rec.session]; sh != nil {
			sh.ack(nil, rec.seq)
		}
	case recEnd:
		delete(f.sessions, rec.session)
	}
	return nil
}

var errMissingBatch = errorString("signaling: replication names a batch that never arrived")

type errorString string

func (e errorString) Error() string { return string(e) }

// markGone makes f's shadows this node's to hand over: once the rest of
// the dead node's stream is applied, the batches it had not ordered yet
// follow in the order they came, and so does every later one. What is not
// resumed within the resume window ends.
func (r *replicas) markGone(fw *following, f *follower) {
	for t := time.Now(); time.Since(t) < drainWait && (fw.pending() > 0 || f.busy.Load()); {
		time.Sleep(5 * time.Millisecond)
	}
	f.mu.Lock()
	if f.gone {
		f.mu.Unlock()
		return
	}
	f.gone = true
	for _, ref := range f.order {
		if body, ok := f.batches[ref]; ok {
			f.applyBatch(body)
		}
	}
	n := len(f.sessions)
	f.mu.Unlock()
	r.g.metrics.ReplicaAdopted.Add(uint64(n))
	level := slog.LevelInfo
	if n == 0 {
		level = slog.LevelDebug // a drained node: everything was handed over
	}
	r.g.cfg.Logger.Log(context.Background(), level, "replica: holding the sessions of a gone node", "node", f.node, "sessions", n)
	time.AfterFunc(r.g.cfg.ResumeWindow, func() { r.expire(fw, f) })
}

// expire ends the shadows of a gone node that nobody resumed: they leave
// their guilds, as an expired session does — unless the node came back as
// the same process (it was paused, or cut off, and taken for dead): then
// those sessions are its own, live or ended by it, and the copies are only
// forgotten.
func (r *replicas) expire(fw *following, f *follower) {
	f.mu.Lock()
	inc := f.inc
	f.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if r.back(ctx, f.node, inc) {
		f.mu.Lock()
		n := len(f.sessions)
		clear(f.sessions)
		f.mu.Unlock()
		r.g.cfg.Logger.Info("replica: a gone node came back: its copies are forgotten", "node", f.node, "sessions", n)
		r.retire(fw, f)
		return
	}
	f.mu.Lock()
	var ended []*shadow
	for id, sh := range f.sessions {
		sh.mu.Lock()
		leaving := sh.leaving != nil
		sh.mu.Unlock()
		if !leaving {
			ended = append(ended, sh)
			delete(f.sessions, id)
		}
	}
	f.mu.Unlock()
	for _, sh := range ended {
		sh.mu.Lock()
		guilds := slices.Clone(sh.st.Guilds)
		sh.mu.Unlock()
		for _, gid := range guilds {
			if err := r.g.router.Unsubscribe(ctx, gid, sh.id); err != nil {
				r.g.cfg.Logger.Warn("replica: unsubscribe failed", "guild", gid, "session", sh.id, "err", err)
			}
		}
	}
	r.retire(fw, f)
}

// lookup returns the follower and shadow of a session, if this node
// keeps its copy.
func (r *replicas) lookup(id string) (*follower, *shadow) {
	for _, f := range r.followers() {
		f.mu.Lock()
		sh := f.sessions[id]
		f.mu.Unlock()
		if sh != nil {
			return f, sh
		}
	}
	return nil, nil
}

// close stops following every node.
func (r *replicas) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n, fw := range r.nodes {
		fw.stop()
		delete(r.nodes, n)
	}
}

// count returns the number of sessions copied here.
func (r *replicas) count() int {
	n := 0
	for _, f := range r.followers() {
		f.mu.Lock()
		n += len(f.sessions)
		f.mu.Unlock()
	}
	return n
}

// isSynced, draining and incIs read f's stream state under its lock (for a caller
// that holds r.mu: r.mu may be held while taking f.mu, never the reverse).
func (f *follower) isSynced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.synced
}

// draining reports whether f is the copy of incarnation inc and markGone
// has not yet applied the rest of its stream.
func (f *follower) draining(inc uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inc == inc && !f.gone
}

func (f *follower) incIs(inc uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inc == inc
}
