package guild

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Events for sessions on other nodes leave in batches: one bus message per
// destination node per flush, never one per session or per event
// (DESIGN.md "Cluster": Discord's manifold; unbatched bursts over NATS drop
// messages). Each destination has a queue and a sender goroutine; events
// queued while a batch is on its way leave together in the next one, so a
// quiet node adds no delay and a busy one coalesces. One sender per
// destination keeps the order the guild actors produced; the receiver
// delivers a batch's events in order.

// maxBatch bounds one batch's bytes (NATS's default max_payload is 1 MiB).
const maxBatch = 512 << 10

// maxQueued bounds what waits for one destination; past it events for
// that node are dropped and counted, and the batch numbers skip one: the
// receiver sees the gap (signaling's batch checks) and its sessions start
// over rather than miss the events without knowing. A variable for tests.
var maxQueued = 64 << 20

// outbox holds the queues to other nodes.
type outbox struct {
	r      *Router
	mu     sync.Mutex
	nodes  map[string]*queue
	closed bool // the router is stopping: no new senders
}

type queue struct {
	// sending is held while a batch is taken and published, so that a
	// flush (below) and the sender publish in queue order.
	sending sync.Mutex
	mu      sync.Mutex
	batches [][]byte // full batches first, the open one last
	size    int
	made    uint64 // batches begun for this node: the next one's number
	// skipped: an event was dropped since the last batch was begun, whose
	// number made counts; the next event begins a new batch after it.
	skipped bool
	wake    chan struct{}
}

// deliver sends ev to sessions on node: straight to this node's sessions,
// or into node's queue.
func (r *Router) deliver(node string, ev *Event, sessions []string) {
	if r.peers == nil || node == r.place.ID() {
		r.sessions.Deliver(node, ev, sessions)
		return
	}
	r.out.add(node, ev, sessions)
}

func (o *outbox) add(node string, ev *Event, sessions []string) {
	o.mu.Lock()
	q := o.nodes[node]
	if q == nil && o.closed {
		o.mu.Unlock()
		o.r.stats.batchDropped.Add(uint64(len(sessions)))
		return
	}
	if q == nil {
		q = &queue{wake: make(chan struct{}, 1)}
		o.nodes[node] = q
		o.r.senders.Add(1)
		go o.send(node, q)
	}
	o.mu.Unlock()
	q.mu.Lock()
	// An item without sessions (a voice change) is sent once.
	for first := true; first || len(sessions) > 0; first = false {
		// As many sessions as fit one batch with the event.
		n, size := 0, itemSize(ev, nil)
		for n < len(sessions) && n < 1<<16-1 && (n == 0 || size+2+len(sessions[n]) <= maxBatch) {
			size += 2 + len(sessions[n])
			n++
			if o.r.cfg.UnbatchedFanout {
				break
			}
		}
		if q.size+size > maxQueued {
			if !q.skipped {
				q.made++ // the number of the batch that never goes
				q.skipped = true
			}
			q.mu.Unlock()
			o.r.stats.batchDropped.Add(uint64(len(sessions)))
			return
		}
		last := len(q.batches) - 1
		if last < 0 || q.skipped || len(q.batches[last])+size > maxBatch || o.r.cfg.UnbatchedFanout {
			q.made++
			q.skipped = false
			b := make([]byte, 0, min(max(size, 4096), maxBatch)+batchHeaderMax)
			q.batches = append(q.batches, appendBatchHeader(b, BatchRef{From: o.r.place.ID(), N: q.made}))
			last++
		}
		q.batches[last] = appendItem(q.batches[last], ev, sessions[:n])
		q.size += size
		sessions = sessions[n:]
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// send is node's sender: it takes every batch queued and sends each.
// When the router stops it sends what is still queued, then returns.
func (o *outbox) send(node string, q *queue) {
	defer o.r.senders.Done()
	for stopping := false; !stopping; {
		select {
		case <-q.wake:
		case <-o.r.stop:
			stopping = true
		}
		for o.sendOne(node, q) {
		}
	}
}

// mark queues an empty batch for node, numbered as the next: node asked
// for it after it may have missed batches (MarkBatches), and learns from
// its number whether it did. A node that was never sent anything missed
// nothing.
func (o *outbox) mark(node string) {
	o.mu.Lock()
	q := o.nodes[node]
	o.mu.Unlock()
	if q == nil {
		return
	}
	q.mu.Lock()
	q.made++
	q.skipped = false
	q.batches = append(q.batches, appendBatchHeader(make([]byte, 0, batchHeaderMax), BatchRef{From: o.r.place.ID(), N: q.made}))
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// MarkBatches asks every other node of the ring to send this node a batch
// now, empty if it has nothing: its number shows this node whether it
// missed batches from that node that nothing since has revealed.
// signaling calls it after the node's NATS connection was made again.
func (r *Router) MarkBatches(ctx context.Context) {
	if r.peers == nil {
		return
	}
	me := r.place.ID()
	for _, n := range r.place.Ring().Nodes() {
		if n.ID == me {
			continue
		}
		body, _ := json.Marshal(me)
		if _, err := r.callNode(ctx, n.ID, callRequest{Op: opMark.name, Direct: true, Body: body}); err != nil {
			r.log.Warn("asking for a batch mark failed", "node", n.ID, "err", err)
		}
	}
}

var opMark = defineOp("mark", func(r *Router, _ context.Context, to string) (struct{}, error) {
	r.out.mark(to)
	return struct{}{}, nil
})

// sendOne publishes q's first batch and reports whether there was one.
func (o *outbox) sendOne(node string, q *queue) bool {
	q.sending.Lock()
	defer q.sending.Unlock()
	q.mu.Lock()
	if len(q.batches) == 0 {
		q.mu.Unlock()
		return false
	}
	b := q.batches[0]
	q.batches = q.batches[1:]
	q.size -= len(b)
	q.mu.Unlock()
	if err := o.r.peers.Send(node, b); err != nil {
		o.r.stats.batchDropped.Add(1)
		return true
	}
	o.r.stats.batchesSent.Add(1)
	return true
}

// flush publishes everything queued for every node now, in order, and
// returns once it has been handed to the bus. A new owner of a guild asks
// its previous owner to do this before it serves (remote.go, subscribers):
// the previous owner's last events then reach every node ahead of the new
// owner's first, so a channel's order holds across the move.
func (o *outbox) flush() {
	o.mu.Lock()
	qs := make(map[string]*queue, len(o.nodes))
	for n, q := range o.nodes {
		qs[n] = q
	}
	o.mu.Unlock()
	for n, q := range qs {
		for o.sendOne(n, q) {
		}
	}
}

// close lets the senders send what is queued and stop, and waits for
// them, at most d.
func (o *outbox) close(d time.Duration) {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	close(o.r.stop)
	waitBounded(&o.r.senders, d)
}

// ServeBatch delivers a batch from another node to this node's sessions,
// in order.
func (r *Router) ServeBatch(b []byte) error {
	_, body, err := SplitBatch(b)
	if err != nil {
		r.stats.batchesReceived.Add(1)
		r.stats.batchMalformed.Add(1)
		return err
	}
	return r.ServeBatchWith(body, r.sessions.Deliver)
}

// ServeBatchWith delivers the items of a batch's body (SplitBatch) through
// deliver: the gateway's replicator (signaling) orders a batch among the
// node's other deliveries before it hands it here.
func (r *Router) ServeBatchWith(body []byte, deliver func(node string, ev *Event, sessions []string)) error {
	r.stats.batchesReceived.Add(1)
	err := walkBatch(body, func(ev *Event, sessions []string) { deliver(r.place.ID(), ev, sessions) }, r.sessions.Moved,
		func(ch VoiceChange) {
			if r.voice != nil {
				r.voice.VoiceChanged(ch)
			}
		})
	if err != nil {
		r.stats.batchMalformed.Add(1)
	}
	return err
}

// BatchRef names a batch: the node that sent it and its number among the
// batches that node sent to the receiver (1, 2, ... in the order sent). A
// gateway node's replica (signaling) receives the same batches and learns
// from the node in which order it delivered them.
type BatchRef struct {
	From string
	N    uint64
}

// A batch begins with its header: u16 sender length, sender, u64 number.
const batchHeaderMax = 2 + 255 + 8

func appendBatchHeader(b []byte, ref BatchRef) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(ref.From)))
	b = append(b, ref.From...)
	return binary.BigEndian.AppendUint64(b, ref.N)
}

// SplitBatch decodes a batch's header and returns it with the items.
func SplitBatch(b []byte) (BatchRef, []byte, error) {
	from, rest, ok := readBytes(b, 2)
	if !ok || len(rest) < 8 {
		return BatchRef{}, nil, errMalformedBatch
	}
	return BatchRef{From: string(from), N: binary.BigEndian.Uint64(rest)}, rest[8:], nil
}

// BatchItems calls fn for each event item of a batch's body, with the
// sessions it goes to (reused between calls); the session-moved markers
// go to moved. Voice items are skipped. It is the replica's reading of a
// batch; it does not deliver.
func BatchItems(body []byte, fn func(ev *Event, sessions []string), moved func(guild ID, session string)) error {
	return walkBatch(body, fn, moved, nil)
}

// walkBatch reads a batch's body item by item: events go to fn with the
// sessions they are for (reused between calls), moved markers to moved,
// voice changes to voice (skipped when nil). It stops at the first item
// that does not decode.
func walkBatch(body []byte, fn func(ev *Event, sessions []string), moved func(guild ID, session string), voice func(VoiceChange)) error {
	var sessions []string
	for b := body; len(b) > 0; {
		var ev *Event
		var err error
		ev, sessions, b, err = readItem(b, sessions[:0])
		if err != nil {
			return err
		}
		switch ev.Name {
		case movedEvent:
			var gid ID
			if err := json.Unmarshal(ev.Data, &gid); err != nil || len(sessions) != 1 {
				return fmt.Errorf("%w: %s", errMalformedBatch, movedEvent)
			}
			moved(gid, sessions[0])
		case voiceChangeEvent:
			if voice == nil {
				continue
			}
			var ch VoiceChange
			if err := json.Unmarshal(ev.Data, &ch); err != nil {
				return fmt.Errorf("%w: %s: %v", errMalformedBatch, voiceChangeEvent, err)
			}
			voice(ch)
		default:
			fn(ev, sessions)
		}
	}
	return nil
}

// After its header, a batch is a sequence of items, each:
//
//	u16 name length, name, u32 data length, data,
//	u16 session count, then per session u16 length and the id.
//
// All integers big-endian. appendItem and readItem are the codec, with no
// I/O (fuzzed in fanout_test.go).

func itemSize(ev *Event, sessions []string) int {
	n := 2 + len(ev.Name) + 4 + len(ev.Data) + 2
	for _, s := range sessions {
		n += 2 + len(s)
	}
	return n
}

func appendItem(b []byte, ev *Event, sessions []string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(ev.Name)))
	b = append(b, ev.Name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ev.Data)))
	b = append(b, ev.Data...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(sessions)))
	for _, s := range sessions {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	return b
}

var errMalformedBatch = errors.New("guild: malformed event batch")

// readItem decodes the first item of b; the event's data aliases b.
func readItem(b []byte, sessions []string) (*Event, []string, []byte, error) {
	name, b, ok := readBytes(b, 2)
	if !ok {
		return nil, nil, nil, errMalformedBatch
	}
	data, b, ok := readBytes(b, 4)
	if !ok {
		return nil, nil, nil, errMalformedBatch
	}
	if len(b) < 2 {
		return nil, nil, nil, errMalformedBatch
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	for i := 0; i < n; i++ {
		var s []byte
		if s, b, ok = readBytes(b, 2); !ok {
			return nil, nil, nil, errMalformedBatch
		}
		sessions = append(sessions, string(s))
	}
	return &Event{Name: string(name), Data: data}, sessions, b, nil
}

// readBytes reads a length-prefixed field (prefix of 2 or 4 bytes).
func readBytes(b []byte, prefix int) (field, rest []byte, ok bool) {
	if len(b) < prefix {
		return nil, nil, false
	}
	var n uint64
	if prefix == 2 {
		n = uint64(binary.BigEndian.Uint16(b))
	} else {
		n = uint64(binary.BigEndian.Uint32(b))
	}
	b = b[prefix:]
	if uint64(len(b)) < n {
		return nil, nil, false
	}
	return b[:n:n], b[n:], true
}
