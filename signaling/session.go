package signaling

import (
	"slices"

	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/store"
)

// Session is a gateway session: it outlives its connections so that a
// client can resume. Its eventLog is both the send queue and the resume
// buffer (resumelog.go); the log's mutex also guards guilds, status and
// acts (the rest is fixed at Identify).
type Session struct {
	eventLog
	id      string
	user    store.User
	intents uint64
	shard   []int
	large   int

	// gen counts the session's moves between nodes (guild.Sub.Gen).
	gen uint64

	guilds []guild.ID
	status string
	acts   []guild.Activity
	// leaving is set while another node takes the session (handoff.go).
	leaving *leaving
}

func newSession(id string, u store.User) *Session {
	return &Session{id: id, user: u, eventLog: newEventLog()}
}

// isLeaving reports whether another node is taking the session.
func (s *Session) isLeaving() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leaving != nil
}

func (s *Session) inGuild(id guild.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.guilds {
		if g == id {
			return true
		}
	}
	return false
}

// guildList returns a copy of the session's guilds.
func (s *Session) guildList() []guild.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.guilds)
}

// sub is the session's subscription to a guild's events, as node's.
func (s *Session) sub(node string) guild.Sub {
	s.mu.Lock()
	defer s.mu.Unlock()
	return guild.Sub{Node: node, Session: s.id, User: s.user.ID, Intents: s.intents, LargeThreshold: s.large,
		Status: s.status, Activities: s.acts, Gen: s.gen}
}

// join adds a guild the user just joined to the session when its shard
// carries it, and reports whether it does.
func (s *Session) join(gid guild.ID) bool {
	if !protocol.OnShard(gid, s.shard) {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.guilds, gid) {
		s.guilds = append(s.guilds, gid)
	}
	return true
}
