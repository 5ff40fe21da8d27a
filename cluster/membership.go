package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chorus-voice/chorus/ring"
)

// Membership lives in one JetStream key-value bucket (DESIGN.md "Cluster"):
//
//   - member.<id>: each node's heartbeat, published every HeartbeatEvery with
//     a per-message TTL. When a node stops renewing it, the server removes
//     the key and leaves a delete marker that every watcher receives: expiry
//     is an event, not something a poller finds.
//   - ring: the placement view every node builds its ring from, written by
//     one node (the proposer, below) with compare-and-set. Its KV revision is
//     the ring revision, so every node holds the same ring at the same
//     revision, and a later revision is always the newer view.
//
// Heartbeats change every second; the ring only when the set of live
// members (or a member's roles or addresses) changes.
const (
	bucketName = "chorus_members"
	memberKey  = "member."
	ringKey    = "ring"
)

// Member is what a node says of itself in its heartbeat.
type Member struct {
	ID    string    `json:"id"`
	Roles ring.Role `json:"roles"`
	// Addr is where clients reach the node's public endpoints (ring.Node.Addr).
	Addr string `json:"addr"`
	// HTTP is the node's gateway/REST/admin address for other nodes and
	// operators.
	HTTP    string `json:"http,omitempty"`
	Load    Load   `json:"load"`
	Started int64  `json:"started_ms"`
	Beat    int64  `json:"beat_ms"`
	// Host and PID name the process, for operators and for the load
	// tester's node faults (loadtest.Fault.Signal).
	Host string `json:"host,omitempty"`
	PID  int    `json:"pid,omitempty"`
}

// Load is what a node reports of its work in each heartbeat.
type Load struct {
	Sessions int `json:"sessions"`
	Guilds   int `json:"guilds"`
}

func (m Member) node() ring.Node { return ring.Node{ID: m.ID, Roles: m.Roles, Addr: m.Addr} }

// ringView is the stored form of the ring key.
type ringView struct {
	Nodes []ringNode `json:"nodes"`
}

type ringNode struct {
	ID    string    `json:"id"`
	Roles ring.Role `json:"roles"`
	Addr  string    `json:"addr"`
}

func encodeView(nodes []ring.Node) []byte {
	v := ringView{Nodes: make([]ringNode, 0, len(nodes))}
	for _, n := range nodes {
		v.Nodes = append(v.Nodes, ringNode{ID: n.ID, Roles: n.Roles, Addr: n.Addr})
	}
	sort.Slice(v.Nodes, func(i, j int) bool { return v.Nodes[i].ID < v.Nodes[j].ID })
	b, _ := json.Marshal(v) // plain strings and integers: cannot fail
	return b
}

func decodeView(b []byte) ([]ring.Node, error) {
	var v ringView
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("cluster: ring record: %w", err)
	}
	nodes := make([]ring.Node, 0, len(v.Nodes))
	for _, n := range v.Nodes {
		nodes = append(nodes, ring.Node{ID: n.ID, Roles: n.Roles, Addr: n.Addr})
	}
	return nodes, nil
}

// sameNodes reports whether two views hold the same members with the same
// roles and addresses, in any order.
func sameNodes(a, b []ring.Node) bool {
	if len(a) != len(b) {
		return false
	}
	m := make(map[string]ring.Node, len(a))
	for _, n := range a {
		m[n.ID] = n
	}
	for _, n := range b {
		if m[n.ID] != n {
			return false
		}
	}
	return true
}

// proposer names the node that writes the next ring record: the smallest id
// among the current ring's members that are still alive, or, when none is
// (the first node, or every old member gone), the smallest live id. One
// writer per view keeps two nodes with a momentarily different picture of
// the heartbeats from flipping the ring back and forth; compare-and-set on
// the ring key keeps even that case linearizable.
func proposer(current []ring.Node, live map[string]Member) string {
	best := ""
	for _, n := range current {
		if _, ok := live[n.ID]; ok && (best == "" || n.ID < best) {
			best = n.ID
		}
	}
	if best != "" {
		return best
	}
	for id := range live {
		if best == "" || id < best {
			best = id
		}
	}
	return best
}

// liveNodes is the ring view the live members make.
func liveNodes(live map[string]Member) []ring.Node {
	nodes := make([]ring.Node, 0, len(live))
	for _, m := range live {
		nodes = append(nodes, m.node())
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	return nodes
}

// minServerVersion is the first nats-server with per-message TTLs and
// subject delete markers (ADR-43), which membership expiry depends on.
var minServerVersion = [3]int{2, 11, 0}

// ErrServerVersion is returned when the NATS server is too old for
// membership (no per-message TTL or delete markers).
var ErrServerVersion = errors.New("cluster: nats-server 2.11 or newer is required (per-message TTL and delete markers)")

// checkServerVersion parses a server's "x.y.z[-suffix]" version and checks
// it against minServerVersion.
func checkServerVersion(v string) error {
	core, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), "-")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return fmt.Errorf("%w: server reports version %q", ErrServerVersion, v)
	}
	var got [3]int
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return fmt.Errorf("%w: server reports version %q", ErrServerVersion, v)
		}
		got[i] = n
	}
	for i := range got {
		if got[i] != minServerVersion[i] {
			if got[i] < minServerVersion[i] {
				return fmt.Errorf("%w: server is %s", ErrServerVersion, v)
			}
			return nil
		}
	}
	return nil
}

// bucket creates (or finds) the membership bucket: one value per key,
// delete markers kept long enough for every watcher to see them.
func bucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         bucketName,
		Description:    "Chorus cluster membership: heartbeats and the ring",
		History:        1,
		Storage:        jetstream.MemoryStorage,
		Replicas:       replicas,
		LimitMarkerTTL: markerTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: membership bucket: %w", err)
	}
	return kv, nil
}

// markerTTL is how long a delete marker stays in the bucket: long enough for
// a watcher that was briefly disconnected to catch up on it.
const markerTTL = time.Minute

func sortMembers(ms []Member) { sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID }) }
