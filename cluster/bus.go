package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
)

// The node-to-node bus: each node subscribes to its own subjects, one for
// requests (answered), one for event batches (delivered in the order sent:
// one subscription, one goroutine, and NATS keeps a publisher's order) and
// one for pings (evict.go). The payloads are opaque to this package.
func callSubject(node string) string  { return "chorus.node." + node + ".call" }
func batchSubject(node string) string { return "chorus.node." + node + ".batch" }
func pingSubject(node string) string  { return "chorus.node." + node + ".ping" }

// replicaSubject carries a gateway node's replication stream (signaling's
// replicator) to the node that keeps its copy.
func replicaSubject(node string) string { return "chorus.node." + node + ".replica" }

// Handlers serve what other nodes send this one.
type Handlers struct {
	// Call answers a request; it runs on a goroutine of its own.
	Call func(req []byte) []byte
	// Batch takes an event batch; batches arrive one at a time, in order.
	Batch func(batch []byte) error
}

// ErrServing is returned by Serve when called twice.
var ErrServing = errors.New("cluster: already serving")

// Serve subscribes the node's subjects and then makes the node a member
// of the cluster, returning once the ring holds it. It is called once,
// after the layers above are built: no other node places anything here
// before this node can answer.
func (n *Node) Serve(h Handlers) error {
	n.mu.Lock()
	serving := n.subs != nil
	n.mu.Unlock()
	if serving {
		return ErrServing
	}
	call, err := n.conn.Subscribe(callSubject(n.cfg.NodeID), func(m *nats.Msg) {
		n.callsMu.Lock()
		if n.callsClosed {
			n.callsMu.Unlock()
			return // stopping: the caller meets its deadline or a newer ring
		}
		n.calls.Add(1)
		n.callsMu.Unlock()
		go func() {
			defer n.calls.Done()
			if err := m.Respond(h.Call(m.Data)); err != nil {
				n.log.Warn("cluster: reply not sent", "err", err)
			}
		}()
	})
	if err != nil {
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	batch, err := n.conn.Subscribe(batchSubject(n.cfg.NodeID), func(m *nats.Msg) {
		if err := h.Batch(m.Data); err != nil {
			n.log.Warn("cluster: malformed event batch", "from", m.Subject, "err", err)
		}
	})
	if err != nil {
		call.Unsubscribe()
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	ping, err := n.conn.Subscribe(pingSubject(n.cfg.NodeID), func(m *nats.Msg) { m.Respond(nil) })
	if err != nil {
		call.Unsubscribe()
		batch.Unsubscribe()
		return fmt.Errorf("cluster: subscribe: %w", err)
	}
	// Batches are few and large; let a burst wait in memory rather than be
	// dropped as a slow consumer's.
	batch.SetPendingLimits(-1, 256<<20)
	n.mu.Lock()
	n.subs = []*nats.Subscription{call, batch, ping}
	n.mu.Unlock()
	// Both subscriptions are known to the server before the first
	// heartbeat tells the others this node serves.
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("cluster: flush: %w", err)
	}
	return n.join()
}

// Call sends a request to another node and waits for its reply until ctx
// ends.
func (n *Node) Call(ctx context.Context, node string, req []byte) ([]byte, error) {
	m, err := n.conn.RequestWithContext(ctx, callSubject(node), req)
	if errors.Is(err, nats.ErrNoResponders) {
		n.suspect(node)
	}
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}

// Send publishes an event batch to another node.
func (n *Node) Send(node string, batch []byte) error {
	return n.conn.Publish(batchSubject(node), batch)
}

// PublishReplica publishes a message of this node's replication stream.
func (n *Node) PublishReplica(b []byte) error {
	return n.conn.Publish(replicaSubject(n.cfg.NodeID), b)
}

// FlushBus returns once the NATS server has everything this node published
// so far: it is routed to the subscribers even if this process dies now.
func (n *Node) FlushBus(ctx context.Context) error {
	return n.conn.FlushWithContext(ctx)
}

// Follow subscribes to another node's event batches and replication
// stream, for the copy of its sessions this node keeps (each handler runs
// on a goroutine of its own subscription, messages in the order received).
// stop ends both subscriptions; pending counts the stream's messages
// received and not yet handled.
func (n *Node) Follow(node string, batch, replica func([]byte)) (stop func(), pending func() int, err error) {
	bs, err := n.conn.Subscribe(batchSubject(node), func(m *nats.Msg) { batch(m.Data) })
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: follow %s: %w", node, err)
	}
	rs, err := n.conn.Subscribe(replicaSubject(node), func(m *nats.Msg) { replica(m.Data) })
	if err != nil {
		bs.Unsubscribe()
		return nil, nil, fmt.Errorf("cluster: follow %s: %w", node, err)
	}
	bs.SetPendingLimits(-1, 256<<20)
	rs.SetPendingLimits(-1, 256<<20)
	if err := n.conn.Flush(); err != nil {
		bs.Unsubscribe()
		rs.Unsubscribe()
		return nil, nil, fmt.Errorf("cluster: follow %s: %w", node, err)
	}
	pending = func() int {
		msgs, _, _ := rs.Pending()
		return msgs
	}
	return func() { bs.Unsubscribe(); rs.Unsubscribe() }, pending, nil
}
