// Package ring is the one placement function of Chorus: a consistent hash
// ring over a membership view. It places guilds on guild nodes and voice
// rooms on voice nodes. It does no I/O; the cluster package feeds it views.
package ring

import (
	"encoding/binary"
	"hash/fnv"
	"sort"
)

// Role is a capability a node serves.
type Role uint8

// Roles a node can have; a node usually has all of them.
const (
	RoleGateway Role = 1 << iota
	RoleGuild
	RoleVoice
	RoleAll = RoleGateway | RoleGuild | RoleVoice
)

// Node is one member of a view.
type Node struct {
	ID    string
	Roles Role
	// Addr is where clients reach the node's public endpoints (voice host:port).
	Addr string
}

// VirtualNodes is the number of points each node has on the ring; 128 keeps
// the load spread within a few percent for small clusters.
const VirtualNodes = 128

type point struct {
	hash uint64
	node int
}

// Ring is an immutable placement table for one membership view at one
// revision. The zero value places nothing.
type Ring struct {
	Revision uint64
	nodes    []Node
	byRole   map[Role][]point
}

// New builds the ring of nodes at revision rev. The result does not depend
// on the order of nodes, so every node that sees the same view places keys
// identically.
func New(rev uint64, nodes []Node) *Ring {
	ns := append([]Node(nil), nodes...)
	sort.Slice(ns, func(i, j int) bool { return ns[i].ID < ns[j].ID })
	r := &Ring{Revision: rev, nodes: ns, byRole: map[Role][]point{}}
	for _, role := range []Role{RoleGateway, RoleGuild, RoleVoice} {
		var pts []point
		for i, n := range ns {
			if n.Roles&role == 0 {
				continue
			}
			for v := 0; v < VirtualNodes; v++ {
				pts = append(pts, point{hash: hashPoint(n.ID, v), node: i})
			}
		}
		sort.Slice(pts, func(i, j int) bool {
			if pts[i].hash != pts[j].hash {
				return pts[i].hash < pts[j].hash
			}
			return pts[i].node < pts[j].node
		})
		r.byRole[role] = pts
	}
	return r
}

func hashPoint(id string, v int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	h.Write(b[:])
	return mix(h.Sum64())
}

// mix is the splitmix64 finaliser: snowflakes share high bits, so keys are
// scrambled before they are placed.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Owner returns the node that owns key for role, and false when no node has
// that role.
func (r *Ring) Owner(role Role, key uint64) (Node, bool) {
	if r == nil {
		return Node{}, false
	}
	pts := r.byRole[role]
	if len(pts) == 0 {
		return Node{}, false
	}
	h := mix(key)
	i := sort.Search(len(pts), func(i int) bool { return pts[i].hash >= h })
	if i == len(pts) {
		i = 0
	}
	return r.nodes[pts[i].node], true
}

// Nodes returns the members of the view, sorted by id.
func (r *Ring) Nodes() []Node {
	if r == nil {
		return nil
	}
	return append([]Node(nil), r.nodes...)
}

// VoiceKey is the placement key of a voice room.
func VoiceKey(guild, channel uint64) uint64 { return mix(guild) ^ channel }

// Has reports whether the view holds a node with this id.
func (r *Ring) Has(id string) bool {
	if r == nil {
		return false
	}
	for _, n := range r.nodes {
		if n.ID == id {
			return true
		}
	}
	return false
}
