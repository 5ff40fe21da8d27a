package signaling

import (
	"runtime"
	"sync"

	"github.com/chorus-voice/chorus/guild"
)

// Hub is this node's table of gateway sessions. It implements
// guild.Deliverer for the sessions of this node: delivering an event is a
// pointer push into each session's log, with no encoding and no allocation.
type Hub struct {
	limit   logLimit
	metrics *Metrics

	mu       sync.RWMutex
	sessions map[string]*Session
	byUser   map[guild.ID]map[*Session]struct{}
}

func newHub(limit logLimit, m *Metrics) *Hub {
	return &Hub{limit: limit, metrics: m, sessions: map[string]*Session{}, byUser: map[guild.ID]map[*Session]struct{}{}}
}

// deliverChunk is how many sessions one event is pushed to before the
// delivering goroutine yields (DESIGN.md, "Fairness"): the writers the
// chunk woke, and other guilds' deliveries, run before it goes on, so a
// huge guild's fan-out never makes a small guild's events wait behind all
// of it. The hub lock is released between chunks, so an identify waiting
// to add its session is not held up either.
const deliverChunk = 256

// Deliver pushes ev to the listed local sessions, a chunk at a time.
func (h *Hub) Deliver(_ string, ev *guild.Event, ids []string) {
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
			slow.closeWith(closeSlowConsumer, "slow consumer")
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

func (h *Hub) remove(s *Session) {
	h.mu.Lock()
	delete(h.sessions, s.id)
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

// Len returns the number of sessions, connected or waiting for a resume.
func (h *Hub) Len() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.sessions)
}
