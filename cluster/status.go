package cluster

import (
	"slices"
	"strings"
	"time"

	"github.com/chorus-voice/chorus/ring"
)

// Status is the cluster as this node sees it, for operators (the admin
// API's GET /admin/v1/cluster and `chorus admin cluster`).
type Status struct {
	Node     string `json:"node"`     // this node
	Revision uint64 `json:"revision"` // of the ring it follows
	Fenced   bool   `json:"fenced"`   // serving nothing until it renews
	// Members are the nodes whose heartbeat key exists, sorted by id.
	Members []MemberStatus `json:"members"`
}

// MemberStatus is one member's heartbeat and its place in the ring.
type MemberStatus struct {
	ID    string `json:"id"`
	Roles string `json:"roles"` // "gateway,guild,voice"
	Addr  string `json:"addr"`
	HTTP  string `json:"http,omitempty"`
	Load  Load   `json:"load"`
	// Started is when the member's process started (its own clock).
	Started time.Time `json:"started"`
	// HeartbeatAgeMS is how long ago this node received the member's
	// newest heartbeat (this node's clock, so skew between machines does
	// not enter it).
	HeartbeatAgeMS int64 `json:"heartbeat_age_ms"`
	// Host and PID name the member's process.
	Host string `json:"host,omitempty"`
	PID  int    `json:"pid,omitempty"`
	// OnRing reports whether the ring at Revision includes the member: a
	// member that just joined or left differs from the ring for a moment.
	OnRing bool `json:"on_ring"`
}

// Status returns the cluster as this node sees it now.
func (n *Node) Status() Status {
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lapsedLocked(now)
	r := ring.New(n.viewRev, n.view)
	st := Status{Node: n.cfg.NodeID, Revision: n.viewRev, Fenced: n.fenced, Members: []MemberStatus{}}
	for _, m := range n.live {
		st.Members = append(st.Members, MemberStatus{ID: m.ID, Roles: m.Roles.String(), Addr: m.Addr, HTTP: m.HTTP,
			Load: m.Load, Started: time.UnixMilli(m.Started).UTC(), HeartbeatAgeMS: now.Sub(n.heard[m.ID]).Milliseconds(),
			OnRing: r.Has(m.ID), Host: m.Host, PID: m.PID})
	}
	slices.SortFunc(st.Members, func(a, b MemberStatus) int { return strings.Compare(a.ID, b.ID) })
	return st
}
