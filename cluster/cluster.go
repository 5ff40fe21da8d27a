// Package cluster owns membership and node-to-node transport. On a single
// node it runs an in-process NATS server (JetStream on, files under the data
// directory) so that the same code paths exist from the first node on; a
// message whose destination is this node never touches NATS.
//
// This package never knows what a guild is: it moves opaque batches.
package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/chorus-voice/chorus/ring"
)

// Config configures a node.
type Config struct {
	// NodeID names this node in the ring; it must be unique in a cluster.
	NodeID string
	// Roles this node serves.
	Roles ring.Role
	// Addr is the public host:port of this node's voice/gateway endpoints.
	Addr string
	// DataDir holds the embedded NATS server's JetStream files.
	DataDir string
	// NATSURLs, when set, joins an external NATS cluster instead of starting
	// an embedded server. Multi-node membership arrives with the cluster issue.
	NATSURLs string
}

// Node is this process's membership of the cluster.
type Node struct {
	cfg  Config
	ns   *server.Server // nil with an external NATS
	conn *nats.Conn

	mu   sync.RWMutex
	ring *ring.Ring
}

// ErrExternalNATS is returned for an external NATS cluster: this build
// runs as a single node on its embedded server, and says so rather than
// half-joining a cluster.
var ErrExternalNATS = errors.New("cluster: joining an external NATS cluster is not supported yet")

// Start starts the node: the embedded NATS server and an in-process
// connection to it, and the ring of the current view.
func Start(cfg Config) (*Node, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("cluster: empty node id")
	}
	if cfg.NATSURLs != "" {
		return nil, ErrExternalNATS
	}
	dir := filepath.Join(cfg.DataDir, "nats")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: cfg.NodeID,
		DontListen: true, // reached in process only
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: nats server: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("cluster: embedded nats server did not start")
	}
	conn, err := nats.Connect("", nats.InProcessServer(ns), nats.Name(cfg.NodeID))
	if err != nil {
		ns.Shutdown()
		return nil, fmt.Errorf("cluster: connect: %w", err)
	}
	n := &Node{cfg: cfg, ns: ns, conn: conn}
	n.ring = ring.New(1, []ring.Node{{ID: cfg.NodeID, Roles: cfg.Roles, Addr: cfg.Addr}})
	return n, nil
}

// ID returns this node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Ring returns the current placement table.
func (n *Node) Ring() *ring.Ring {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.ring
}

// Conn returns the node's NATS connection.
func (n *Node) Conn() *nats.Conn { return n.conn }

// Close leaves the cluster and stops the embedded server.
func (n *Node) Close() {
	n.conn.Close()
	if n.ns != nil {
		n.ns.Shutdown()
		n.ns.WaitForShutdown()
	}
}

// Static is a placement that never changes: a fixed ring and this node's
// id, with no NATS. It serves the guild layer's tests and tools that run
// one node's logic in process; a running node uses *Node.
type Static struct {
	id   string
	ring *ring.Ring
}

// NewStatic returns the placement of a one-node cluster: id owns every role.
func NewStatic(id string) *Static {
	return &Static{id: id, ring: ring.New(1, []ring.Node{{ID: id, Roles: ring.RoleAll}})}
}

// ID returns this node's id.
func (s *Static) ID() string { return s.id }

// Ring returns the fixed ring.
func (s *Static) Ring() *ring.Ring { return s.ring }
