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
