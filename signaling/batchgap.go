package signaling

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/protocol"
)

// A gateway node must never let its sessions miss an event without
// knowing: a client whose connection stayed open has no reason to read the
// history. Yet a batch sent to this node can be missed while the node
// stays up: NATS does not replay what was published while the node's
// connection was down (a NATS server restarted, a connection cut and
// re-made), and a sender whose queue for this node is full drops events.
//
// Batch numbers (guild.BatchRef) are consecutive per sender and receiver,
// and a sender that drops events skips a number, so the receiver sees
// every loss as a gap. It asks its buddy, which receives every batch sent
// to this node (replica.go), for the batches it missed and delivers them
// before the one that showed the gap; the buddy keeps them until this
// node's stream orders them, as it now does. Batches nobody has (the
// sender dropped them, or the buddy missed them too, or there are no
// copies) cannot be repaired: every session of this node is ended, its
// client told to start a new session (4009), and it reads what it missed
// from the history as after any fresh identify.
//
// A gap shows when the next batch from the same sender arrives. So that a
// sender with nothing more to send cannot hide one, a node whose NATS
// connection was made again asks every other node for a mark, an empty
// batch under the next number (guild.Router.MarkBatches).

// batchGaps follows the numbers of the batches received from each sender.
// Its zero value is ready; it is used by one goroutine (the subscription's).
type batchGaps struct {
	next map[string]uint64
}

// A gap is what see finds before a batch: the numbers lo..hi-1 from a
// sender that never came. first marks the first batch heard from that
// sender, numbered above 1: the numbers below may have gone to an earlier
// process under this node's id (a sender numbers per node id), or have
// been missed by this one, and only the buddy can tell.
type gap struct {
	lo, hi uint64
	first  bool
}

// see records ref and returns the gap before it (lo == hi: none). Number 1
// starts a sender's count again (it restarted).
func (b *batchGaps) see(ref guild.BatchRef) gap {
	if b.next == nil {
		b.next = map[string]uint64{}
	}
	want, known := b.next[ref.From]
	b.next[ref.From] = ref.N + 1
	switch {
	case ref.N <= 1 || (known && ref.N == want):
		return gap{}
	case !known:
		return gap{lo: 1, hi: ref.N, first: true}
	case ref.N > want:
		return gap{lo: want, hi: ref.N}
	default:
		// Lower than expected, not 1: the sender restarted and its first
		// batches never came.
		return gap{lo: 1, hi: ref.N}
	}
}

const (
	// maxRepair bounds the batches asked of the buddy for one gap; a
	// larger gap resets the sessions at once.
	maxRepair = 64
	// repairWait bounds the wait for one batch at the buddy (it comes to
	// the buddy on its own subscription, possibly later than to us).
	repairWait = 250 * time.Millisecond
)

// markAfterReconnects asks every other node for a batch mark each time
// this node's NATS connection was made again: a gap is seen only when a
// later batch arrives, and a sender that has nothing more for this node
// would otherwise leave it unseen.
func (g *Gateway) markAfterReconnects(reconnected <-chan struct{}) {
	for {
		select {
		case <-g.done:
			return
		case <-reconnected:
		}
		if !g.awaitRing() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*callTimeout)
		g.router.MarkBatches(ctx)
		cancel()
	}
}

// markRingWait bounds the wait for a ring this node is on before it asks
// for marks.
const markRingWait = 30 * time.Second

// awaitRing waits until this node is on its ring (at most markRingWait):
// a node whose connection broke long enough was fenced, and its empty ring
// names nobody to ask for a mark. It reports false once the gateway shuts
// down.
func (g *Gateway) awaitRing() bool {
	deadline := time.NewTimer(markRingWait)
	defer deadline.Stop()
	for {
		changed := g.router.Changed()
		if _, joined := g.router.GatewayView(); joined {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return true
		case <-g.done:
			return false
		}
	}
}

// heldBatch answers "batch": a batch sent to the asking node, as the buddy
// received it.
type heldBatch struct {
	Found bool   `json:"found"`
	Body  []byte `json:"body,omitempty"`
}

// batchGap handles gap in the batches from sender from, seen just before
// one from it: it queues the missed batches, fetched from the buddy, or
// resets every session. Of a first batch's gap only what the buddy holds
// for this process was missed, and nothing else is.
func (g *Gateway) batchGap(from string, gp gap) {
	if gp.first {
		if g.hub.rep == nil {
			return
		}
		ns := g.askBuddy(from, gp.hi)
		if len(ns) == 0 {
			return
		}
		if bodies := g.fetchMissed(from, ns); bodies != nil {
			g.cfg.Logger.Warn("event batches missed before the first from a node", "from", from, "count", len(ns))
			g.deliverMissed(from, ns, bodies)
			return
		}
	} else {
		g.cfg.Logger.Warn("event batches missed", "from", from, "first", gp.lo, "count", gp.hi-gp.lo)
		if g.hub.rep != nil && gp.hi-gp.lo <= maxRepair {
			ns := make([]uint64, 0, gp.hi-gp.lo)
			for n := gp.lo; n < gp.hi; n++ {
				ns = append(ns, n)
			}
			if bodies := g.fetchMissed(from, ns); bodies != nil {
				g.deliverMissed(from, ns, bodies)
				return
			}
		}
	}
	g.metrics.BatchGapsReset.Add(1)
	g.resetSessions()
}

func (g *Gateway) deliverMissed(from string, ns []uint64, bodies [][]byte) {
	for i, body := range bodies {
		g.hub.rep.batch(guild.BatchRef{From: from, N: ns[i]}, body)
	}
	g.metrics.BatchGapsRepaired.Add(1)
}

// buddy returns this node's buddy, "" when it has none. It is the buddy
// of the last ring this node was on: a node that just woke from a pause
// is fenced (on no ring) when the batches it missed show their gap.
func (g *Gateway) buddy() string {
	if g.hub.reps == nil {
		return ""
	}
	return g.hub.reps.buddy()
}

// callBuddy sends a "batch" or "held" question about this node's batches
// from sender to the buddy.
func (g *Gateway) callBuddy(buddy string, req handoffRequest, out any) error {
	req.To, req.Inc = g.cfg.NodeID, g.hub.rep.inc
	b, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(context.Background(), repairWait+callTimeout)
	defer cancel()
	b, err := g.router.CallGateway(ctx, buddy, b)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// askBuddy returns the numbers of the batches from sender below n that the
// buddy holds for this process, at most maxRepair: sent here, never
// delivered.
func (g *Gateway) askBuddy(from string, n uint64) []uint64 {
	buddy := g.buddy()
	if buddy == "" {
		return nil
	}
	var held heldNumbers
	if err := g.callBuddy(buddy, handoffRequest{Op: "held", Sender: from, N: n}, &held); err != nil {
		g.cfg.Logger.Warn("asking the buddy for missed batches failed", "buddy", buddy, "from", from, "err", err)
		return nil
	}
	return held.N
}

// fetchMissed asks this node's buddy for the batches from sender numbered
// ns; nil unless it had every one.
func (g *Gateway) fetchMissed(from string, ns []uint64) [][]byte {
	buddy := g.buddy()
	if buddy == "" {
		return nil
	}
	bodies := make([][]byte, 0, len(ns))
	for _, n := range ns {
		var a heldBatch
		err := g.callBuddy(buddy, handoffRequest{Op: "batch", Sender: from, N: n}, &a)
		if err != nil || !a.Found {
			g.cfg.Logger.Warn("missed event batch not held by the buddy", "buddy", buddy, "from", from, "n", n, "err", err)
			return nil
		}
		bodies = append(bodies, a.Body)
	}
	return bodies
}

// heldNumbers answers "held".
type heldNumbers struct {
	N []uint64 `json:"n,omitempty"`
}

// copiesOf returns the copies of incarnation inc of node: the live one and
// those of it taken for gone, newest first. A live copy keeps the batches
// sent to node until node's stream orders them; so does the copy of a node
// taken for gone that was not (evicted in a pause or a broken NATS
// connection), whose gap is exactly what was sent while it was away.
func (r *replicas) copiesOf(node string, inc uint64) []*follower {
	r.mu.Lock()
	defer r.mu.Unlock()
	var fs []*follower
	if fw := r.nodes[node]; fw != nil {
		if fw.live != nil {
			fs = append(fs, fw.live)
		}
		for i := len(fw.gone) - 1; i >= 0; i-- {
			fs = append(fs, fw.gone[i])
		}
	}
	return slices.DeleteFunc(fs, func(f *follower) bool { return !f.incIs(inc) })
}

// awaitBatch waits up to repairWait until one of fs holds ref, or has
// held it (ordered since): found tells which.
func awaitBatch(fs []*follower, ref guild.BatchRef, found func(f *follower) bool) bool {
	deadline := time.NewTimer(repairWait)
	defer deadline.Stop()
	for {
		var arrived chan struct{}
		for _, f := range fs {
			f.mu.Lock()
			ok := found(f)
			if arrived == nil {
				arrived = f.arrived // the newest copy's subscription
			}
			f.mu.Unlock()
			if ok {
				return true
			}
		}
		if arrived == nil {
			return false
		}
		select {
		case <-arrived:
		case <-deadline.C:
			return false
		}
	}
}

// heldFor answers the buddy's side of "batch": the batch ref sent to
// incarnation inc of node, waiting up to repairWait for it to arrive.
func (r *replicas) heldFor(node string, inc uint64, ref guild.BatchRef) heldBatch {
	var a heldBatch
	awaitBatch(r.copiesOf(node, inc), ref, func(f *follower) bool {
		a.Body, a.Found = f.batches[ref]
		return a.Found
	})
	return a
}

// heldBelow answers the buddy's side of "held": the numbers of the batches
// from sender below n held for incarnation inc of node, once batch n
// itself has come here (it was published after them), or repairWait.
func (r *replicas) heldBelow(node string, inc uint64, sender string, n uint64) heldNumbers {
	fs := r.copiesOf(node, inc)
	ref := guild.BatchRef{From: sender, N: n}
	awaitBatch(fs, ref, func(f *follower) bool {
		_, ok := f.batches[ref]
		return ok // not yet ordered: the node asks before it delivers it
	})
	var a heldNumbers
	for _, f := range fs {
		f.mu.Lock()
		for held := range f.batches {
			if held.From == sender && held.N < n && !slices.Contains(a.N, held.N) {
				a.N = append(a.N, held.N)
			}
		}
		f.mu.Unlock()
	}
	slices.Sort(a.N)
	if len(a.N) > maxRepair {
		a.N = a.N[len(a.N)-maxRepair:]
	}
	return a
}

// resetSessions ends every session of this node after events were missed
// for good: each is invalidated at once, so a resume anywhere gets op 9,
// and its client is told to start over; leaving its guilds happens after.
func (g *Gateway) resetSessions() {
	all := g.hub.all()
	for _, s := range all {
		s.invalidate()
		if c := s.current(); c != nil {
			c.closeWith(protocol.CloseSessionTimedOut, "events missed: start a new session")
		}
	}
	g.metrics.SessionsReset.Add(uint64(len(all)))
	go func() {
		for _, s := range all {
			g.endSession(s)
		}
	}()
}
