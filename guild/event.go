package guild

import "encoding/json"

// Event is one dispatch, encoded once: each recipient session only wraps
// it in its own envelope (op, s, t).
type Event struct {
	Name string
	Data []byte
}

// NewEvent encodes v as the data of a dispatch named name.
func NewEvent(name string, v any) *Event {
	b, err := json.Marshal(v)
	if err != nil {
		// Every payload here is built from our own types; failing to encode
		// one is a programming error.
		panic("guild: encode " + name + ": " + err.Error())
	}
	return &Event{Name: name, Data: b}
}

// Deliverer carries one event to sessions on a node. Implementations must not
// retain sessions after returning: callers reuse the slice.
type Deliverer interface {
	Deliver(node string, ev *Event, sessions []string)
}

// Sub is a gateway session subscribed to a guild's events.
type Sub struct {
	Node           string
	Session        string
	User           ID
	Intents        uint64
	LargeThreshold int
	Status         string
	Activities     []Activity
	// Gen counts the session's moves between gateway nodes: a
	// registration with a lower Gen than the one an actor holds is a
	// late one from the node the session left, and is ignored.
	Gen uint64 `json:",omitempty"`
	// Had says the session has the guild's state already: it registers
	// again after the guild moved, or it moved here from another node.
	// An owner that does not know such a session owes it what the guild
	// sent meanwhile, which is gone: it tells the session the guild was
	// out (GUILD_DELETE unavailable, then GUILD_CREATE) rather than let it
	// carry on as if it had missed nothing. Only Subscribe and Move read
	// it; a registration held does not keep it.
	Had bool `json:",omitempty"`
}
