package signaling

import (
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/chorus-voice/chorus/guild"
)

// Hub is this node's table of gateway sessions. It implements
// guild.Deliverer for the sessions of this node: delivering an event is a
// pointer push into each session's log, with no encoding and no allocation.
type Hub struct {
	node    string
	limit   logLimit
	metrics *Metrics

	mu       sync.RWMutex
	sessions map[string]*Session
	byUser   map[guild.ID]map[*Session]struct{}
	// byGuild holds the sessions whose subscription to a guild succeeded
	// (they had its GUILD_CREATE), for a guild's new owner to adopt.
	byGuild map[guild.ID]map[*Session]struct{}

	drainOnce sync.Once
	drain     chan struct{} // closed when an operator asked this node to drain

	// In a cluster, rep orders every delivery and streams it to the
	// node's buddy (replicate.go), and reps holds the copies this node
	// keeps of others (replica.go). Both are set by NewGateway before it
	// serves, and nil on a node alone.
	rep  *replicator
	reps *replicas
}

// NewHub returns an empty session table for the node cfg names, with
// cfg's session log limits; m counts deliveries and slow consumers.
func NewHub(cfg Config, m *Metrics) *Hub {
	cfg.setDefaults()
	return newHub(cfg.NodeID, cfg.logLimit(), m)
}

func newHub(node string, limit logLimit, m *Metrics) *Hub {
	return &Hub{node: node, limit: limit, metrics: m, sessions: map[string]*Session{},
		byUser: map[guild.ID]map[*Session]struct{}{}, byGuild: map[guild.ID]map[*Session]struct{}{}, drain: make(chan struct{})}
}

// Joined adds a guild a user just joined to that user's sessions whose
// shard carries it and returns their subscriptions (guild.Sessions). The
// router subscribes them at once; they count as subscribed from here.
func (h *Hub) Joined(gid, user guild.ID) []guild.Sub {
	var subs []guild.Sub
	for _, s := range h.userSessions(user) {
		if s.join(gid) {
			subs = append(subs, s.sub(h.node))
			h.subscribed(s, gid)
			if h.rep != nil {
				h.rep.describe(s)
			}
		}
	}
	return subs
}

// deliverChunk is how many sessions one event is pushed to before the
// delivering goroutine yields (DESIGN.md, "Fairness"): the writers the
// chunk woke, and other guilds' deliveries, run before it goes on, so a
// huge guild's fan-out never makes a small guild's events wait behind all
// of it. The hub lock is released between chunks, so an identify waiting
// to add its session is not held up either.
const deliverChunk = 256

// Deliver pushes ev to the listed local sessions (guild.Deliverer): at
// once, or in a cluster through the replicator, which pushes it after its
// record is out.
func (h *Hub) Deliver(node string, ev *guild.Event, ids []string) {
	if h.rep != nil {
		h.rep.local(ev, ids)
		return
	}
	h.deliverNow(node, ev, ids)
}

// push delivers an event of the session itself (READY, RESUMED) as
// Deliver does.
func (h *Hub) push(s *Session, ev *guild.Event) {
	h.Deliver(h.node, ev, []string{s.id})
}

// deliverNow pushes ev to the listed local sessions, a chunk at a time.
func (h *Hub) deliverNow(_ string, ev *guild.Event, ids []string) {
	for len(ids) > deliverChunk {
		h.deliver(ev, ids[:deliverChunk])
		ids = ids[deliverChunk:]
		runtime.Gosched()
	}
	h.deliver(ev, ids)
}

func (h *Hub) deliver(ev *guild.Event, ids []string) {
	h.mu.RLock()
	for _, id := range ids {
		s := h.sessions[id]
		if s == nil {
			continue
		}
		if slow := s.push(ev, h.limit); slow != nil {
			h.metrics.SlowConsumers.Add(1)
			slow.closeWith(slow.ep.closeServerFault, "slow consumer")
		}
	}
	h.mu.RUnlock()
	h.metrics.Deliveries.Add(uint64(len(ids)))
}

func (h *Hub) add(s *Session) {
	h.mu.Lock()
	h.sessions[s.id] = s
	m := h.byUser[s.user.ID]
	if m == nil {
		m = map[*Session]struct{}{}
		h.byUser[s.user.ID] = m
	}
	m[s] = struct{}{}
	h.mu.Unlock()
}

// subscribed records that s's subscription to gid succeeded.
func (h *Hub) subscribed(s *Session, gid guild.ID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sessions[s.id] != s {
		return // ended meanwhile
	}
	m := h.byGuild[gid]
	if m == nil {
		m = map[*Session]struct{}{}
		h.byGuild[gid] = m
	}
	m[s] = struct{}{}
}

// Subscribers returns the subscriptions this node's sessions made to gid
// (guild.Sessions).
func (h *Hub) Subscribers(gid guild.ID) []guild.Sub {
	h.mu.RLock()
	ss := make([]*Session, 0, len(h.byGuild[gid]))
	for s := range h.byGuild[gid] {
		ss = append(ss, s)
	}
	h.mu.RUnlock()
	subs := make([]guild.Sub, 0, len(ss))
	for _, s := range ss {
		subs = append(subs, s.sub(h.node))
	}
	if h.reps != nil {
		subs = append(subs, h.reps.subscribers(gid)...)
	}
	return subs
}

func (h *Hub) remove(s *Session) {
	if h.rep != nil {
		h.rep.end(s.id)
	}
	h.mu.Lock()
	delete(h.sessions, s.id)
	for _, gid := range s.guildList() {
		if m := h.byGuild[gid]; m != nil {
			delete(m, s)
			if len(m) == 0 {
				delete(h.byGuild, gid)
			}
		}
	}
	if m := h.byUser[s.user.ID]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(h.byUser, s.user.ID)
		}
	}
	h.mu.Unlock()
}

func (h *Hub) get(id string) *Session {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.sessions[id]
}

func (h *Hub) userSessions(user guild.ID) []*Session {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*Session, 0, len(h.byUser[user]))
	for s := range h.byUser[user] {
		out = append(out, s)
	}
	return out
}

// all returns every session of the node.
func (h *Hub) all() []*Session {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*Session, 0, len(h.sessions))
	for _, s := range h.sessions {
		out = append(out, s)
	}
	return out
}

// Len returns the number of sessions, connected or waiting for a resume.
func (h *Hub) Len() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.sessions)
}

// WriteMetrics writes the number of sessions.
func (h *Hub) WriteMetrics(w io.Writer) {
	fmt.Fprintf(w, "chorus_gateway_sessions %d\n", h.Len())
	if h.reps != nil {
		fmt.Fprintf(w, "chorus_gateway_replica_sessions %d\n", h.reps.count())
	}
}

// DrainRequested is closed when an operator asked this node to drain
// (POST /admin/v1/cluster/nodes/{id}/drain, on any node): the process
// then stops as on SIGTERM.
func (h *Hub) DrainRequested() <-chan struct{} { return h.drain }

func (h *Hub) requestDrain() { h.drainOnce.Do(func() { close(h.drain) }) }
