package guild

import (
	"context"
	"encoding/json"

	"github.com/chorus-voice/chorus/ring"
)

// A gateway session can move between gateway nodes while it lives (a
// client resuming at another node: signaling's handoff). The guild layer
// carries the two things that needs and knows nothing else of sessions:
//
//   - A registration from the session's new node replaces the old one
//     (Sub.Gen orders them), and the old node is told, in its ordered
//     event stream, after every event it was sent for the session: the
//     "moved" marker. Once the old node has the markers of all the
//     session's guilds, its log of the session is complete and can be
//     handed over with nothing lost or repeated.
//   - Gateway nodes call each other directly (CallGateway) to find and
//     hand over a session.

// movedEvent names the batch item that tells a node one of its sessions
// was registered with a guild from another node; it is never a gateway
// event. Its data is the guild's id, its one session the session's.
const movedEvent = "chorus:session_moved"

// sessionMoved tells node that session is now registered with guild from
// another node, in order with the events node was sent before.
func (r *Router) sessionMoved(node string, guild ID, session string) {
	if r.peers == nil || node == r.place.ID() {
		r.sessions.Moved(guild, session)
		return
	}
	data, _ := json.Marshal(guild) // a snowflake: cannot fail
	r.out.add(node, &Event{Name: movedEvent, Data: data}, []string{session})
}

// Move registers a session that moved to this node with a guild and
// returns the node it was registered from before ("" if none): that node
// gets the moved marker. s.Gen must exceed the old registration's.
func (r *Router) Move(ctx context.Context, guild ID, s Sub) (from string, err error) {
	return opMove.run(ctx, r, guild, subscribeArgs{guild, s})
}

var opMove = defineOp("move", func(r *Router, ctx context.Context, q subscribeArgs) (string, error) {
	var from string
	err := r.send(ctx, q.Guild, func(a *actor, reply func(error)) {
		if old := a.subs[q.S.Session]; old != nil {
			from = old.Node
		}
		reply(a.subscribe(&q.S))
	}, true)
	return from, err
})

// CallGateway sends req to the gateway of node and returns its answer
// (Sessions.ServeGateway there). It goes to the node itself, whether or
// not the ring still holds it: a node that is leaving still hands its
// sessions over.
func (r *Router) CallGateway(ctx context.Context, node string, req []byte) ([]byte, error) {
	if r.peers == nil || node == r.place.ID() {
		return r.sessions.ServeGateway(ctx, req)
	}
	return r.callNode(ctx, node, callRequest{Op: opGateway.name, Direct: true, Body: req})
}

var opGateway = defineOp("gateway", func(r *Router, ctx context.Context, req json.RawMessage) (json.RawMessage, error) {
	return r.sessions.ServeGateway(ctx, req)
})

// GatewayNodes lists the other nodes of the ring that serve gateway
// sessions.
func (r *Router) GatewayNodes() []string {
	out, _ := r.GatewayView()
	return out
}

// GatewayView lists the other nodes of the ring that serve gateway
// sessions, and tells whether this node is on that ring. A node off its
// own ring (fenced after a pause or a cut, or not joined yet) sees an
// empty one, which says nothing about the others.
func (r *Router) GatewayView() (others []string, joined bool) {
	view := r.place.Ring()
	for _, n := range view.Nodes() {
		if n.ID != r.place.ID() && n.Roles&ring.RoleGateway != 0 {
			others = append(others, n.ID)
		}
	}
	return others, view.Has(r.place.ID())
}
