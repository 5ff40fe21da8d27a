// Package cluster owns membership and node-to-node transport. A node is
// always a member of a cluster: alone, it runs an in-process NATS server
// (JetStream on, files under the data directory) and is a one-member
// cluster through the same code paths as a node of many; with NATSURLs it
// joins an external NATS cluster. A message whose destination is this node
// never touches NATS.
//
// This package never knows what a guild is: it keeps the ring and moves
// opaque batches.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chorus-voice/chorus/ring"
)

// Config configures a node. Zero durations take the defaults named on them.
type Config struct {
	// NodeID names this node in the ring; it must be unique in a cluster.
	NodeID string
	// Roles this node serves.
	Roles ring.Role
	// Addr is the public host:port of this node's voice endpoint.
	Addr string
	// HTTP is the node's gateway/REST address, reported in its heartbeat.
	HTTP string
	// DataDir holds the embedded NATS server's JetStream files.
	DataDir string
	// NATSURLs, when set (comma-separated), joins an external NATS cluster
	// instead of starting an embedded server.
	NATSURLs string
	// Replicas of the membership bucket; default 1 on the embedded server
	// and 3 on an external cluster (1 if it has fewer servers).
	Replicas int
	// HeartbeatEvery is how often the node renews its membership; default
	// DefaultHeartbeatEvery.
	HeartbeatEvery time.Duration
	// TTL is how long a heartbeat keeps the node a member, in whole
	// seconds (JetStream's per-message TTL); default DefaultTTL.
	TTL time.Duration
	// FenceAfter is how long the node serves after its last renewal before
	// it fences itself (stops owning anything); default DefaultFenceAfter.
	// It must be shorter than TTL, so a node cut off from NATS has stopped
	// before any other node can see its key expire and take its guilds.
	FenceAfter time.Duration
	// JoinTimeout bounds Start's wait for the ring to include this node;
	// default DefaultJoinTimeout.
	JoinTimeout time.Duration
	// Load reports the node's work for its heartbeats; nil reports none.
	Load   func() Load
	Logger *slog.Logger
}

// Membership timing defaults (issue 10: a heartbeat every second, a TTL of
// about three, self-fencing after about two).
const (
	DefaultHeartbeatEvery = time.Second
	DefaultTTL            = 3 * time.Second
	DefaultFenceAfter     = 2 * time.Second
	DefaultJoinTimeout    = 15 * time.Second
	// natsStartTimeout bounds the embedded server's start.
	natsStartTimeout = 10 * time.Second
)

// Node is this process's membership of the cluster.
type Node struct {
	cfg     Config
	ns      *server.Server // nil with an external NATS
	conn    *nats.Conn     // the bus (bus.go)
	mconn   *nats.Conn     // membership: heartbeats, the watch, the ring record
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	started time.Time
	host    string // os.Hostname, in heartbeats
	log     *slog.Logger

	mu    sync.Mutex
	live  map[string]Member    // members whose heartbeat key exists
	heard map[string]time.Time // when this node last saw each member's heartbeat
	// suspected is when a call to each member last met no responders.
	suspected map[string]time.Time
	evicted   atomic.Uint64 // members this node evicted (evict.go)
	view      []ring.Node   // the ring record
	viewRev   uint64
	proposed  uint64 // the ring revision this node last proposed over
	fenced    bool   // serving nothing until unfenceSeq is seen
	// unfenceSeq is the revision of the first heartbeat acknowledged after
	// a fence; the node serves again once its watch has seen it, so its
	// view is at least as new as that moment.
	unfenceSeq uint64
	seen       uint64        // the newest revision the watch delivered
	poke       chan struct{} // asks the watch to consider a proposal
	ring       *ring.Ring    // what Ring returns
	changed    chan struct{}
	fence      *time.Timer
	// renewed is when the newest acknowledged heartbeat was sent. The
	// fence timer may fire late (the process was stopped, the machine
	// starved), so Ring and each renewal also check the time themselves.
	renewed time.Time
	subs    []*nats.Subscription // Serve's

	// calls are the calls being served (bus.go); once callsClosed is set
	// no new one starts, and Close waits for them.
	callsMu     sync.Mutex
	callsClosed bool
	calls       sync.WaitGroup

	// reconnected gets a value each time the NATS connection is made
	// again (Reconnected).
	reconnected chan struct{}

	stop      chan struct{}
	leave     chan struct{} // closed by Leave: the heartbeats stop
	beating   chan struct{} // closed when the heartbeats have stopped
	stopWatch context.CancelFunc
	wg        sync.WaitGroup
}

// Reconnected gets a value after the node's NATS connection broke and was
// made again (coalesced): whatever was published to the node in between
// never reached it.
func (n *Node) Reconnected() <-chan struct{} { return n.reconnected }

// ErrNotJoined is returned by Start when the ring did not take the node in
// within JoinTimeout.
var ErrNotJoined = errors.New("cluster: the ring did not include this node in time")

// Start connects the node to the cluster: to NATS (starting the embedded
// server without NATSURLs) and to the membership bucket, whose ring it
// follows from then on. The node becomes a member, placed on the ring, in
// Serve, once the layers above can answer other nodes.
func Start(cfg Config) (*Node, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("cluster: empty node id")
	}
	if strings.ContainsAny(cfg.NodeID, ".*> \t") {
		return nil, fmt.Errorf("cluster: node id %q: letters, digits, '-' and '_' only", cfg.NodeID)
	}
	if cfg.HeartbeatEvery <= 0 {
		cfg.HeartbeatEvery = DefaultHeartbeatEvery
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.FenceAfter <= 0 {
		cfg.FenceAfter = DefaultFenceAfter
	}
	if cfg.TTL%time.Second != 0 {
		// JetStream's per-message TTL counts whole seconds.
		return nil, fmt.Errorf("cluster: heartbeat TTL %v: whole seconds only", cfg.TTL)
	}
	if cfg.FenceAfter >= cfg.TTL {
		return nil, fmt.Errorf("cluster: fence time %v must be shorter than the heartbeat TTL %v", cfg.FenceAfter, cfg.TTL)
	}
	if cfg.JoinTimeout <= 0 {
		cfg.JoinTimeout = DefaultJoinTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	host, _ := os.Hostname()
	n := &Node{cfg: cfg, started: time.Now(), host: host, log: cfg.Logger, fenced: true, ring: ring.New(0, nil),
		live: map[string]Member{}, heard: map[string]time.Time{}, suspected: map[string]time.Time{},
		changed: make(chan struct{}), stop: make(chan struct{}), leave: make(chan struct{}), poke: make(chan struct{}, 1),
		reconnected: make(chan struct{}, 1)}
	if err := n.connect(); err != nil {
		return nil, err
	}
	if err := n.observe(); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// connect reaches NATS: the embedded server, or the external cluster whose
// version must support per-message TTLs.
func (n *Node) connect() error {
	opts := []nats.Option{nats.Name("chorus " + n.cfg.NodeID)}
	urls := n.cfg.NATSURLs
	if urls == "" {
		dir := filepath.Join(n.cfg.DataDir, "nats")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		ns, err := server.NewServer(&server.Options{
			ServerName: n.cfg.NodeID,
			DontListen: true, // reached in process only
			JetStream:  true,
			StoreDir:   dir,
			NoSigs:     true,
			NoLog:      true,
		})
		if err != nil {
			return fmt.Errorf("cluster: nats server: %w", err)
		}
		ns.Start()
		if !ns.ReadyForConnections(natsStartTimeout) {
			ns.Shutdown()
			return errors.New("cluster: embedded nats server did not start")
		}
		n.ns = ns
		opts = append(opts, nats.InProcessServer(ns))
	} else {
		// A node keeps trying to reach its cluster for as long as it runs;
		// while it cannot, it is fenced (it owns nothing).
		opts = append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond),
			nats.Timeout(2*time.Second), nats.ReconnectHandler(func(*nats.Conn) {
				n.log.Warn("cluster: NATS connection made again")
				select {
				case n.reconnected <- struct{}{}:
				default:
				}
			}))
	}
	conn, err := nats.Connect(urls, opts...)
	if err != nil {
		n.closeConn()
		return fmt.Errorf("cluster: connect to nats %s: %w", urls, err)
	}
	n.conn = conn
	if err := checkServerVersion(conn.ConnectedServerVersion()); err != nil {
		n.closeConn()
		return err
	}
	// Membership has a connection of its own: on the bus's, a heartbeat
	// and its acknowledgement wait behind every batch queued before them
	// (in this process's write buffer, and in the server's reading of
	// the connection), and a node busy with fan-out missed its renewals
	// and fenced itself.
	mopts := append(opts[:len(opts):len(opts)], nats.Name("chorus "+n.cfg.NodeID+" membership"),
		nats.ReconnectHandler(func(*nats.Conn) { n.log.Warn("cluster: NATS membership connection made again") }))
	if n.mconn, err = nats.Connect(urls, mopts...); err != nil {
		n.closeConn()
		return fmt.Errorf("cluster: connect to nats %s: %w", urls, err)
	}
	if n.js, err = jetstream.New(n.mconn); err != nil {
		n.closeConn()
		return fmt.Errorf("cluster: jetstream: %w", err)
	}
	return nil
}

// observe creates (or finds) the membership bucket and starts following it.
func (n *Node) observe() error {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.JoinTimeout)
	defer cancel()
	replicas := n.cfg.Replicas
	if replicas <= 0 {
		replicas = 1
		if n.ns == nil {
			replicas = 3
		}
	}
	kv, err := bucket(ctx, n.js, replicas)
	if err != nil && n.cfg.Replicas <= 0 && replicas > 1 {
		// An external NATS of fewer than three servers cannot hold three
		// replicas: membership then lives on one, and says so.
		n.log.Warn("membership bucket with one replica: the NATS cluster has fewer than three JetStream servers", "err", err)
		kv, err = bucket(ctx, n.js, 1)
	}
	if err != nil {
		return err
	}
	n.kv = kv
	wctx, stopWatch := context.WithCancel(context.Background())
	n.stopWatch = stopWatch
	w, err := kv.WatchAll(wctx)
	if err != nil {
		return fmt.Errorf("cluster: watch membership: %w", err)
	}
	n.wg.Add(1)
	go n.watch(w)
	return nil
}

// join makes the node a member: its first heartbeat, the heartbeat loop
// and the fence, then a wait until the ring holds it.
func (n *Node) join() error {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.JoinTimeout)
	defer cancel()
	sent := time.Now()
	seq, err := n.beat(ctx)
	if err != nil {
		return fmt.Errorf("cluster: first heartbeat: %w", err)
	}
	n.mu.Lock()
	n.renewed = sent
	n.renewedLocked(seq)
	n.fence = time.AfterFunc(n.cfg.FenceAfter, n.fenceSelf)
	n.beating = make(chan struct{})
	n.mu.Unlock()
	n.wg.Add(1)
	go n.heartbeats()
	for {
		n.mu.Lock()
		joined := !n.fenced && n.ring.Has(n.cfg.NodeID)
		ch := n.changed
		n.mu.Unlock()
		if joined {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w (%v)", ErrNotJoined, n.cfg.JoinTimeout)
		}
	}
}

// beat publishes this node's heartbeat with its TTL and returns the
// revision the bucket gave it.
func (n *Node) beat(ctx context.Context) (uint64, error) {
	m := Member{ID: n.cfg.NodeID, Roles: n.cfg.Roles, Addr: n.cfg.Addr, HTTP: n.cfg.HTTP, Host: n.host, PID: os.Getpid(),
		Started: n.started.UnixMilli(), Beat: time.Now().UnixMilli()}
	if n.cfg.Load != nil {
		m.Load = n.cfg.Load()
	}
	b, _ := json.Marshal(m) // strings and integers: cannot fail
	ack, err := n.js.Publish(ctx, "$KV."+bucketName+"."+memberKey+n.cfg.NodeID, b, jetstream.WithMsgTTL(n.cfg.TTL))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// heartbeats renews the membership every HeartbeatEvery. Each
// acknowledged renewal pushes the self-fence back by FenceAfter.
func (n *Node) heartbeats() {
	defer n.wg.Done()
	defer close(n.beating)
	t := time.NewTicker(n.cfg.HeartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-n.leave:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.HeartbeatEvery)
		sent := time.Now()
		seq, err := n.beat(ctx)
		cancel()
		if err != nil {
			n.log.Warn("cluster heartbeat failed", "err", err)
			continue
		}
		n.mu.Lock()
		// A renewal after a lapse (the process was stopped past its
		// fence time) fences first: the view may be stale, and the node
		// serves again only once its watch has caught up past this renewal.
		n.lapsedLocked(time.Now())
		n.renewed = sent
		n.fence.Reset(n.cfg.FenceAfter - time.Since(sent))
		n.renewedLocked(seq)
		n.mu.Unlock()
		n.probe()
	}
}

// renewedLocked notes an acknowledged heartbeat at revision seq. A fenced
// node serves again once its watch has seen seq (at once if it has): its
// view is then at least as new as the renewal.
func (n *Node) renewedLocked(seq uint64) {
	if !n.fenced || n.unfenceSeq != 0 {
		return
	}
	if n.seen < seq {
		n.unfenceSeq = seq
		return
	}
	n.fenced = false
	n.publishLocked()
	select {
	case n.poke <- struct{}{}: // the watch may have a ring to propose
	default:
	}
}

// fenceSelf runs when no heartbeat was acknowledged for FenceAfter: the
// node may already be gone from the others' view, so it owns nothing until
// a renewal succeeds and its watch has caught up past it.
func (n *Node) fenceSelf() {
	n.mu.Lock()
	defer n.mu.Unlock()
	select {
	case <-n.stop:
		return
	default:
	}
	n.fenceLocked()
}

func (n *Node) fenceLocked() {
	if n.fenced && n.unfenceSeq == 0 {
		return
	}
	n.log.Warn("cluster membership not renewed: fencing this node", "after", n.cfg.FenceAfter)
	n.fenced, n.unfenceSeq = true, 0
	n.publishLocked()
}

// lapsedLocked fences the node if its newest renewal is older than
// FenceAfter at now, whether or not the fence timer has run yet.
func (n *Node) lapsedLocked(now time.Time) {
	select {
	case <-n.stop:
		return // closing: the node leaves, it does not fence
	default:
	}
	if !n.renewed.IsZero() && now.Sub(n.renewed) > n.cfg.FenceAfter {
		n.fenceLocked()
	}
}

// watch follows the bucket: heartbeats and their expiry markers update the
// live set, ring records the view; after each change the proposer writes
// the next ring record when the live set differs from it. A watch that
// ends (its consumer lost) is started again from the current values.
func (n *Node) watch(w jetstream.KeyWatcher) {
	defer n.wg.Done()
	synced := false
	for {
		var e jetstream.KeyValueEntry
		ok := true
		select {
		case <-n.stop:
			w.Stop()
			return
		case e, ok = <-w.Updates():
		case <-n.poke:
			if synced {
				n.propose()
			}
			continue
		}
		if !ok {
			w.Stop()
			if w = n.rewatch(); w == nil {
				return
			}
			synced = false
			continue
		}
		if e == nil {
			synced = true // the initial values are in
		} else {
			n.apply(e)
		}
		if synced {
			n.propose()
		}
	}
}

// rewatch starts a new watch, trying every HeartbeatEvery until it works or
// the node stops; the live set is rebuilt from the initial values.
func (n *Node) rewatch() jetstream.KeyWatcher {
	for {
		w, err := n.kv.WatchAll(context.Background())
		if err == nil {
			n.mu.Lock()
			clear(n.live)
			n.mu.Unlock()
			return w
		}
		n.log.Warn("cluster: membership watch lost, retrying", "err", err)
		select {
		case <-n.stop:
			return nil
		case <-time.After(n.cfg.HeartbeatEvery):
		}
	}
}

// apply folds one bucket entry into the node's picture.
func (n *Node) apply(e jetstream.KeyValueEntry) {
	n.mu.Lock()
	defer n.mu.Unlock()
	gone := e.Operation() != jetstream.KeyValuePut
	switch key := e.Key(); {
	case strings.HasPrefix(key, memberKey):
		id := strings.TrimPrefix(key, memberKey)
		if gone {
			delete(n.live, id)
			delete(n.heard, id)
			delete(n.suspected, id)
			break
		}
		var m Member
		if err := json.Unmarshal(e.Value(), &m); err != nil || m.ID != id {
			n.log.Warn("cluster: ignoring a malformed heartbeat", "key", key)
			break
		}
		n.live[id] = m
		n.heard[id] = time.Now()
	case key == ringKey:
		if gone {
			n.view, n.viewRev = nil, e.Revision()
		} else if nodes, err := decodeView(e.Value()); err != nil {
			n.log.Warn("cluster: ignoring a malformed ring record", "err", err)
			break
		} else {
			n.view, n.viewRev = nodes, e.Revision()
		}
		n.ring = ring.New(n.viewRev, n.view)
		n.publishLocked()
	}
	n.seen = max(n.seen, e.Revision())
	if n.fenced && n.unfenceSeq != 0 && e.Revision() >= n.unfenceSeq {
		n.fenced, n.unfenceSeq = false, 0
		n.publishLocked()
	}
}

// propose writes the next ring record if this node is the proposer and the
// live set differs from the current record.
func (n *Node) propose() {
	n.mu.Lock()
	if n.fenced || sameNodes(n.view, liveNodes(n.live)) || proposer(n.view, n.live) != n.cfg.NodeID ||
		(n.proposed == n.viewRev && n.viewRev != 0) {
		n.mu.Unlock()
		return
	}
	rev, next := n.viewRev, encodeView(liveNodes(n.live))
	n.proposed = rev
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.HeartbeatEvery)
	defer cancel()
	var err error
	if rev == 0 {
		_, err = n.kv.Create(ctx, ringKey, next)
	} else {
		_, err = n.kv.Update(ctx, ringKey, next, rev)
	}
	if err != nil {
		// Another writer got there first (the watch brings its record) or
		// NATS is unreachable (the next change or heartbeat tries again).
		n.log.Debug("cluster: ring proposal not written", "over", rev, "err", err)
		n.mu.Lock()
		if n.proposed == rev {
			n.proposed = 0
		}
		n.mu.Unlock()
	}
}

// publishLocked makes the current ring (empty while fenced) what Ring
// returns and wakes everyone waiting on Changed.
func (n *Node) publishLocked() {
	if n.fenced {
		n.ring = ring.New(n.viewRev, nil)
	} else {
		n.ring = ring.New(n.viewRev, n.view)
	}
	close(n.changed)
	n.changed = make(chan struct{})
}

// ID returns this node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Roles returns the roles this node serves.
func (n *Node) Roles() ring.Role { return n.cfg.Roles }

// Ring returns the current placement table: the ring record's view, or,
// while the node is fenced, an empty ring at the same revision (the node
// owns nothing and places nothing).
func (n *Node) Ring() *ring.Ring {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lapsedLocked(time.Now())
	return n.ring
}

// Changed returns a channel closed at the next change of Ring (a new
// revision, a fence or its end).
func (n *Node) Changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.changed
}

// Members returns the live members as this node sees them, sorted by id.
func (n *Node) Members() []Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	ms := make([]Member, 0, len(n.live))
	for _, m := range n.live {
		ms = append(ms, m)
	}
	sortMembers(ms)
	return ms
}

// Fenced reports whether the node has fenced itself.
func (n *Node) Fenced() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fenced
}

// Leave hands the node's share of the ring to the others before it stops
// (issue 10: a node stopped with SIGTERM hands its guilds over first and
// nothing is unavailable). It stops renewing, deletes its heartbeat, and
// returns once the ring it follows no longer names it, or ctx ends. Until
// then the node serves as before: calls placed with the old ring are
// answered here, and those placed with the new one go to the new owners,
// which claim each guild as they load it (store.Claim), so a write of this
// node still in flight commits before the claim or not at all.
//
// The node's fence timer still runs: if the new ring does not come within
// FenceAfter, the node fences itself as a silent node would. Close follows.
func (n *Node) Leave(ctx context.Context) error {
	n.mu.Lock()
	if n.beating == nil { // never joined
		n.mu.Unlock()
		return nil
	}
	select {
	case <-n.leave:
	default:
		close(n.leave)
	}
	n.mu.Unlock()
	select { // a renewal in flight must not put the key back after the delete
	case <-n.beating:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := n.kv.Delete(ctx, memberKey+n.cfg.NodeID); err != nil {
		return fmt.Errorf("cluster: leaving: %w", err)
	}
	for {
		n.mu.Lock()
		ch, in, others := n.changed, false, false
		for _, v := range n.view {
			in = in || v.ID == n.cfg.NodeID
		}
		for id := range n.live {
			others = others || id != n.cfg.NodeID
		}
		n.mu.Unlock()
		if !in || !others {
			return nil // handed over, or nobody to hand over to
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("cluster: leaving: the ring still names this node: %w", ctx.Err())
		}
	}
}

// Conn returns the node's NATS connection.
func (n *Node) Conn() *nats.Conn { return n.conn }

// Close leaves the cluster: it stops renewing, removes its heartbeat (the
// others see it leave at once instead of after the TTL), and closes NATS.
func (n *Node) Close() {
	select {
	case <-n.stop:
		return
	default:
	}
	close(n.stop)
	if n.stopWatch != nil {
		n.stopWatch()
	}
	n.mu.Lock()
	if n.fence != nil {
		n.fence.Stop()
	}
	n.mu.Unlock()
	n.wg.Wait()
	if n.kv != nil && n.fence != nil { // a member: say goodbye
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.HeartbeatEvery)
		if err := n.kv.Delete(ctx, memberKey+n.cfg.NodeID); err != nil {
			n.log.Warn("cluster: leaving: heartbeat not removed (it expires)", "err", err)
		}
		cancel()
	}
	// Calls being served get their answers out before the connection
	// closes: a gateway handing its last sessions over is answering
	// exactly such calls when it stops (signaling/handoff.go).
	n.mu.Lock()
	for _, s := range n.subs {
		s.Unsubscribe()
	}
	n.mu.Unlock()
	n.callsMu.Lock()
	n.callsClosed = true
	n.callsMu.Unlock()
	done := make(chan struct{})
	go func() { n.calls.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(callsDrain):
		n.log.Warn("cluster: stopping with calls still being served")
	}
	if n.conn != nil {
		n.conn.FlushTimeout(time.Second)
	}
	n.closeConn()
}

// callsDrain bounds how long Close waits for the calls being served.
const callsDrain = 5 * time.Second

func (n *Node) closeConn() {
	if n.conn != nil {
		n.conn.Close()
	}
	if n.mconn != nil {
		n.mconn.Close()
	}
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

// Changed returns nil: a static ring never changes.
func (s *Static) Changed() <-chan struct{} { return nil }

// WriteMetrics writes the node's view of the cluster in the Prometheus text
// format.
func (n *Node) WriteMetrics(w io.Writer) {
	n.mu.Lock()
	rev, members, fenced, inRing := n.viewRev, len(n.live), n.fenced, len(n.view)
	n.mu.Unlock()
	fmt.Fprintf(w, "chorus_cluster_ring_revision %d\n", rev)
	fmt.Fprintf(w, "chorus_cluster_ring_nodes %d\n", inRing)
	fmt.Fprintf(w, "chorus_cluster_members_seen %d\n", members)
	f := 0
	if fenced {
		f = 1
	}
	fmt.Fprintf(w, "chorus_cluster_fenced %d\n", f)
	fmt.Fprintf(w, "chorus_cluster_members_evicted_total %d\n", n.evicted.Load())
}
