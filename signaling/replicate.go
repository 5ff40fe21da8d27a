package signaling

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/chorus-voice/chorus/cluster"
	"github.com/chorus-voice/chorus/guild"
)

// A gateway session must survive the death of its node (issue 11 §3): a
// client whose node was killed resumes at another and gets exactly the
// events it missed. So another gateway node, the session node's buddy
// (buddyOf), keeps a copy of every session and its log, numbered as the
// node numbers them (replica.go), and hands it over as the node itself
// would (handoff.go).
//
// The copy costs little because the buddy needs the order of events, not
// the events: it subscribes to the node's event batches itself, and the
// node tells it only which batch it delivered when ("B" records, a few
// bytes per batch, whatever its size). What the node delivers that no
// batch carried — events of the guilds it owns, READY — goes whole ("L").
//
// The copy is exact because nothing reaches a session's log before its
// record is at the NATS server: the replicator publishes a round's
// records, waits for the server's acknowledgement (a flush), and only then
// pushes the round's events into the logs, where the writers find them.
// An event a client received is therefore always in the buddy's copy,
// under the same number. The cost is one round trip to the NATS server
// per round; rounds coalesce everything that arrived meanwhile.

// repItem is one queued delivery or change, in the order they happen.
type repItem struct {
	kind   byte
	ref    guild.BatchRef // batch
	body   []byte         // batch: its items
	ev     *guild.Event   // local
	lo, hi int            // local: its sessions, ids[lo:hi]
	s      *Session       // describe, snapshot
	fresh  bool           // snapshot of a new session: nothing delivered yet
	id     string         // ack, end, moved
	seq    uint64         // ack
	guild  guild.ID       // moved
}

// recMoved is a moved marker (handoff.go), kept in order with the
// deliveries; it is not streamed.
const recMoved = 'M'

func (r *replicator) moved(gid guild.ID, session string) {
	r.enqueue(repItem{kind: recMoved, guild: gid, id: session})
}

// replicator orders this node's deliveries to gateway sessions and
// streams them to the buddy.
type replicator struct {
	g   *Gateway
	bus *cluster.Node

	mu   sync.Mutex
	q    []repItem
	ids  []string // the sessions of q's local items
	wake chan struct{}

	stop, stopped chan struct{}

	// inc tells this process's stream from an earlier one's (a node
	// restarted under the same id).
	inc uint64

	// Owned by the loop.
	streaming bool
	published time.Time // when the last message went out
	ackTimer  *time.Timer
	seq       uint64
	msg       []byte
	applyQ    []repItem
	spareQ    []repItem
	spareID   []string
}

// maxReplicaMsg bounds one message of the stream (NATS's default
// max_payload is 1 MiB).
const maxReplicaMsg = 512 << 10

// replicaAckDelay is how long acknowledgements alone may wait for a
// message to ride on. An ack only lets the copy trim its log: one that is
// late leaves the copy a few events longer than the node's, which a
// resume skips (the client's seq decides). Alone, each client heartbeat
// would cost a message and a flush; this way acks add bytes to the
// messages deliveries send anyway, and at most one message a second when
// nothing else happens.
const replicaAckDelay = time.Second

// replicaFlushTimeout bounds the wait for the server's acknowledgement; a
// round that does not get it is delivered all the same (the copy may then
// lack it: the buddy sees the gap and asks for a fresh copy).
const replicaFlushTimeout = 2 * time.Second

func newReplicator(g *Gateway, bus *cluster.Node) *replicator {
	r := &replicator{g: g, bus: bus, wake: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{}),
		inc: rand.Uint64()}
	go r.loop()
	return r
}

func (r *replicator) enqueue(it repItem) {
	r.mu.Lock()
	r.q = append(r.q, it)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// local queues an event for sessions of this node.
func (r *replicator) local(ev *guild.Event, ids []string) {
	r.mu.Lock()
	lo := len(r.ids)
	r.ids = append(r.ids, ids...)
	r.q = append(r.q, repItem{kind: recLocal, ev: ev, lo: lo, hi: len(r.ids)})
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// batch queues a batch another node sent (Gateway.ServeBatch).
func (r *replicator) batch(ref guild.BatchRef, body []byte) {
	r.enqueue(repItem{kind: recBatch, ref: ref, body: body})
}

// describe queues s's description (after Identify, and when its guilds or
// presence change); snapshot queues s's description and whole log (a
// session taken over from another node).
func (r *replicator) describe(s *Session) { r.enqueue(repItem{kind: recDescribe, s: s}) }
func (r *replicator) snapshot(s *Session) { r.enqueue(repItem{kind: recSnapshot, s: s}) }

// created queues the first record of a session identified here (its log
// is empty: nothing to flush before it).
func (r *replicator) created(s *Session) { r.enqueue(repItem{kind: recSnapshot, s: s, fresh: true}) }
func (r *replicator) ack(id string, seq uint64) {
	r.enqueue(repItem{kind: recAck, id: id, seq: seq})
}
func (r *replicator) end(id string) { r.enqueue(repItem{kind: recEnd, id: id}) }

// resync queues a full copy of every session (the buddy asked: it is new,
// or it lost part of the stream).
func (r *replicator) resync() { r.enqueue(repItem{kind: recSync}) }

// loop runs rounds until the gateway closes (Gateway.Close: after a
// drain, whose handoffs need deliveries to the end).
func (r *replicator) loop() {
	r.ackTimer = time.NewTimer(replicaAckDelay)
	r.ackTimer.Stop()
	for {
		select {
		case <-r.wake:
		case <-r.ackTimer.C:
		case <-r.stop:
			r.round(true)
			close(r.stopped)
			return
		}
		r.round(false)
	}
}

// close makes the last round and stops the loop.
func (r *replicator) close() {
	close(r.stop)
	<-r.stopped
}

// round takes everything queued and processes it in order: records out,
// flush, then deliveries. A describe, snapshot or sync record describes a
// session as it is after every delivery before it, so the deliveries
// before one are made first.
func (r *replicator) round(last bool) {
	r.mu.Lock()
	q, ids := r.q, r.ids
	if wait := replicaAckDelay - time.Since(r.published); r.streaming && !last && wait > 0 && len(q) > 0 && onlyAcks(q) {
		// Acks alone wait (replicaAckDelay), in the queue, where what
		// comes next lines up behind them.
		r.mu.Unlock()
		r.ackTimer.Reset(wait)
		return
	}
	r.q, r.ids = r.spareQ[:0], r.spareID[:0]
	r.mu.Unlock()
	if len(q) == 0 {
		r.spareQ, r.spareID = q, ids
		return
	}
	// Until a buddy asks for its first copy nobody follows: nothing to
	// stream. From then on every round streams (a buddy that is gone is
	// replaced by another, which asks again).
	stream := r.streaming
	for i := 0; !stream && i < len(q); i++ {
		stream = q[i].kind == recSync
	}
	r.streaming = stream
	r.begin()
	for i := range q {
		it := &q[i]
		if !stream || it.kind == recMoved {
			r.applyQ = append(r.applyQ, *it)
			continue
		}
		switch it.kind {
		case recBatch:
			r.put(appendBatchRec(r.msg, it.ref))
			r.applyQ = append(r.applyQ, *it)
		case recLocal:
			r.put(appendLocalRec(r.msg, it.ev, ids[it.lo:it.hi]))
			r.applyQ = append(r.applyQ, *it)
		case recAck:
			r.put(appendAckRec(r.msg, it.id, it.seq))
		case recEnd:
			r.put(appendEndRec(r.msg, it.id))
		case recDescribe:
			// A description is not changed by deliveries: no flush first.
			r.put(appendDescribeRec(r.msg, it.s.id, it.s.state(r.g.cfg.NodeID)))
		case recSnapshot:
			if !it.fresh {
				r.flushAndApply(ids)
			}
			r.putSnapshot(it.s)
		case recSync:
			r.flushAndApply(ids)
			r.put(append(r.msg, recSync))
			for _, s := range r.g.hub.all() {
				r.putSnapshot(s)
			}
			r.g.metrics.ReplicaResyncs.Add(1)
		}
	}
	if stream {
		r.flushAndApply(ids)
	} else {
		r.apply(ids)
	}
	clear(q)
	r.spareQ, r.spareID = q[:0], ids[:0]
}

func onlyAcks(q []repItem) bool {
	for i := range q {
		if q[i].kind != recAck {
			return false
		}
	}
	return true
}

// begin starts a message; publish numbers it.
func (r *replicator) begin() {
	r.msg = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(r.msg[:0], r.inc), 0)
}

// put sets the message to m, which is the message with one record more,
// and sends the message first if it grew past its bound.
func (r *replicator) put(m []byte) {
	r.msg = m
	if len(r.msg) >= maxReplicaMsg {
		r.publish()
		r.begin()
	}
}

func (r *replicator) putSnapshot(s *Session) {
	base, evs := s.snapshot()
	r.put(appendSnapshotRec(r.msg, s.id, s.state(r.g.cfg.NodeID), base, evs))
}

// publish sends the message, if it holds any record.
func (r *replicator) publish() {
	if len(r.msg) <= replicaHeaderLen {
		return
	}
	r.seq++
	binary.BigEndian.PutUint64(r.msg[8:], r.seq)
	if err := r.bus.PublishReplica(r.msg); err != nil {
		r.g.metrics.ReplicaFailed.Add(1)
		return
	}
	r.published = time.Now()
	r.g.metrics.ReplicaMessages.Add(1)
	r.g.metrics.ReplicaBytes.Add(uint64(len(r.msg)))
}

// flushAndApply sends the message, waits until the server has it, then
// makes the deliveries it records. With no delivery to make there is
// nothing to wait for: the stream keeps the order all the same.
func (r *replicator) flushAndApply(ids []string) {
	if len(r.applyQ) == 0 {
		r.publish()
		r.begin()
		return
	}
	if len(r.msg) > replicaHeaderLen {
		r.publish()
		ctx, cancel := context.WithTimeout(context.Background(), replicaFlushTimeout)
		if err := r.bus.FlushBus(ctx); err != nil {
			r.g.metrics.ReplicaFailed.Add(1)
		}
		cancel()
		r.begin()
	}
	r.apply(ids)
}

// apply makes the queued deliveries.
func (r *replicator) apply(ids []string) {
	for i := range r.applyQ {
		it := &r.applyQ[i]
		switch it.kind {
		case recBatch:
			if err := r.g.router.ServeBatchWith(it.body, r.g.hub.deliverNow); err != nil {
				r.g.cfg.Logger.Warn("malformed event batch", "from", it.ref.From, "err", err)
			}
		case recLocal:
			r.g.hub.deliverNow("", it.ev, ids[it.lo:it.hi])
		case recMoved:
			r.g.hub.movedNow(it.guild, it.id)
		}
	}
	clear(r.applyQ)
	r.applyQ = r.applyQ[:0]
}

// sessionState describes a session for its copy and for a handoff: what
// another node needs to resume it.
type sessionState struct {
	foundSession
	User guild.ID `json:"user"`
}

// state encodes s's description, registered from node.
func (s *Session) state(node string) []byte {
	s.mu.Lock()
	st := sessionState{foundSession: foundSession{Found: true, Intents: s.intents, Shard: s.shard, Large: s.large,
		Guilds: append([]guild.ID(nil), s.guilds...), Status: s.status, Acts: s.acts, Gen: s.gen, Node: node}, User: s.user.ID}
	s.mu.Unlock()
	b, _ := json.Marshal(st) // plain fields: cannot fail
	return b
}
