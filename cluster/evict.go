package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A member that died (kill -9, a crash) leaves the ring when its heartbeat
// expires: TTL after its last renewal, 2–3 s with the defaults. That bounds
// failover from below, and issue 10 asks for ≤ 2 s. But a dead process
// says so sooner: NATS drops its subscriptions when its connection closes,
// and a request to its call subject is answered "no responders" at once.
// So a node whose call meets no responders suspects that member, and
// evicts it — deletes its heartbeat — if, after reading that heartbeat, a
// ping to the member still finds no one listening. The delete is
// conditional on the heartbeat's revision: a member that renewed since is
// alive and stays. Every node's watch sees the delete at once, and the
// ring moves on without waiting for the TTL.
//
// A member that is alive but cut off from NATS (its connection dropped and
// reconnecting) can be evicted too. That is safe — it fences itself, its
// writes carry a stale epoch, and its next heartbeat puts it back — and it
// is what the TTL would have done a little later.

// probe pings every other member once per heartbeat: a member that died
// while nobody called it — a voice node, say, to which only batches go,
// and batches are not answered — is then evicted within about a
// heartbeat instead of its TTL. A ping to a live member costs one small
// request; a dead one's is answered "no responders" at once.
func (n *Node) probe() {
	n.mu.Lock()
	ids := make([]string, 0, len(n.live))
	for id := range n.live {
		if id != n.cfg.NodeID {
			ids = append(ids, id)
		}
	}
	n.mu.Unlock()
	if n.conn == nil {
		return
	}
	for _, id := range ids {
		go func() { // not in wg: a closed connection ends it
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.HeartbeatEvery)
			defer cancel()
			if _, err := n.conn.RequestWithContext(ctx, pingSubject(id), nil); errors.Is(err, nats.ErrNoResponders) {
				n.suspect(id)
			}
		}()
	}
}

// suspectEvery limits suspicions of one member, so a burst of calls to a
// dead node starts one eviction.
const suspectEvery = 500 * time.Millisecond

// suspect notes that a call to member id met no responders.
func (n *Node) suspect(id string) {
	now := time.Now()
	n.mu.Lock()
	_, live := n.live[id]
	if !live || id == n.cfg.NodeID || now.Sub(n.suspected[id]) < suspectEvery || n.kv == nil {
		n.mu.Unlock()
		return
	}
	n.suspected[id] = now
	n.mu.Unlock()
	go n.evict(id) // not in wg: Close may be waiting; a closed connection ends it
}

// evict deletes member id's heartbeat if it is still the one read here
// and the member answers no ping after it was read.
func (n *Node) evict(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.HeartbeatEvery)
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	e, err := n.kv.Get(ctx, memberKey+id)
	if err != nil {
		return // gone already, or NATS cannot say: the TTL decides
	}
	if _, err := n.conn.RequestWithContext(ctx, pingSubject(id), nil); !errors.Is(err, nats.ErrNoResponders) {
		return // it answers (or the question did not get through)
	}
	if err := n.kv.Delete(ctx, memberKey+id, jetstream.LastRevision(e.Revision())); err != nil {
		return // it renewed meanwhile: alive
	}
	n.evicted.Add(1)
	n.log.Warn("cluster: evicted a member that no longer listens", "member", id)
}
