package signaling

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/chorus-voice/chorus/guild"
)

// The shadows of a gone node take part in the handoff (handoff.go) as the
// node's own sessions would: found, then released with their logs once
// the guilds' moved markers (sent to the gone node's subject, which this
// node follows) arrived.

// holdsAnswer answers "holds": whether the node holds a session, and the
// incarnation of its replication stream.
type holdsAnswer struct {
	Held bool   `json:"held"`
	Inc  uint64 `json:"inc"`
}

// probe asks a followed node whether it still holds a session.
func (r *replicas) probe(ctx context.Context, node, session string) (holdsAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, _ := json.Marshal(handoffRequest{Op: "holds", Session: session})
	var a holdsAnswer
	b, err := r.g.router.CallGateway(ctx, node, req)
	if err == nil {
		err = json.Unmarshal(b, &a)
	}
	return a, err
}

// back reports whether a node taken for gone answers as the incarnation
// inc: the same process, alive again. A dead node answers "no responders"
// at once.
func (r *replicas) back(ctx context.Context, node string, inc uint64) bool {
	a, err := r.probe(ctx, node, "")
	return err == nil && a.Inc == inc
}

// find answers a find for a session copied here whose node is gone, and
// marks the shadow leaving for req.To. A node that still holds the session
// answers for itself.
func (r *replicas) find(ctx context.Context, req handoffRequest) foundSession {
	f, sh := r.lookup(req.Session)
	if sh == nil {
		return foundSession{}
	}
	sh.mu.Lock()
	st := sh.st
	sh.mu.Unlock()
	if st.User != req.User {
		return foundSession{}
	}
	f.mu.Lock()
	gone, inc := f.gone, f.inc
	f.mu.Unlock()
	if gone && r.back(ctx, f.node, inc) {
		// Taken for dead (evicted while paused, or cut off from NATS), the
		// node lives on as the same process: its sessions are its own, and
		// the copy has not followed them since.
		return foundSession{}
	}
	if !gone {
		a, err := r.probe(ctx, f.node, req.Session)
		if err == nil && a.Inc == inc {
			return foundSession{} // alive: it holds the session, or ended it
		}
		if ctx.Err() != nil {
			// The search ended (the holder answered): no news of the node.
			return foundSession{}
		}
		r.g.cfg.Logger.Debug("replica: probe says the node is gone", "node", f.node, "session", req.Session, "err", err, "inc", a.Inc, "following", inc)
		r.mu.Lock()
		fw := r.nodes[f.node]
		if fw != nil && fw.live == f {
			fw.live = nil
			if err == nil {
				// Restarted under the same id: follow the new incarnation.
				fw.live = r.newFollower(f.node)
				go r.askSync(fw.live)
			}
			fw.gone = append(fw.gone, f)
		}
		r.mu.Unlock()
		if fw == nil {
			return foundSession{}
		}
		r.markGone(fw, f)
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.invalid || (sh.leaving != nil && sh.leaving.to != req.To) {
		return foundSession{}
	}
	if sh.leaving == nil {
		sh.leaving = &leaving{to: req.To, moved: map[guild.ID]bool{}, wake: make(chan struct{}, 1)}
	}
	out := sh.st.foundSession
	out.Found, out.Node, out.Guilds = true, f.node, slices.Clone(out.Guilds)
	return out
}

// leavingFor returns the shadow req names if it is leaving for req.To.
func (r *replicas) leavingFor(req handoffRequest) (*follower, *shadow) {
	f, sh := r.lookup(req.Session)
	if sh == nil {
		return nil, nil
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.leaving == nil || sh.leaving.to != req.To || sh.st.User != req.User {
		return nil, nil
	}
	return f, sh
}

// release hands a shadow's log over once its markers arrived.
func (r *replicas) release(ctx context.Context, req handoffRequest) (releasedLog, error) {
	f, sh := r.leavingFor(req)
	if sh == nil {
		return releasedLog{}, errNoSuchHandoff
	}
	sh.mu.Lock()
	l := sh.leaving
	sh.mu.Unlock()
	if err := awaitMoved(ctx, &sh.mu, l, req.Expect); err != nil {
		return releasedLog{}, err
	}
	r.forget(f, sh)
	r.g.metrics.ReplicaHandedOff.Add(1)
	return logOf(&sh.eventLog), nil
}

// abort drops a shadow whose handoff failed.
func (r *replicas) abort(req handoffRequest) {
	if f, sh := r.leavingFor(req); sh != nil {
		r.forget(f, sh)
	}
}

func (r *replicas) forget(f *follower, sh *shadow) {
	sh.invalidate()
	f.mu.Lock()
	if f.sessions[sh.id] == sh {
		delete(f.sessions, sh.id)
	}
	f.mu.Unlock()
}

// subscribers returns the subscriptions to gid of the shadows of nodes
// that are gone (or off the ring): a guild's new owner adopts them as it
// adopts the live sessions', and the events reach this node through the
// gone node's subject. A live node answers for its sessions itself, and
// only for those that had the guild's GUILD_CREATE; a shadow does not
// know that, so it must not answer for a live node's session, whose
// subscription may still be on its way. A shadow being handed over is
// listed too: the owner loading the guild in the middle of its handoff
// (the handoff's own move may be what loads it) must know it, or the move
// finds a session it never had, and the session is told the guild was
// out when it missed nothing. The move's newer Gen then replaces this
// registration, and its moved marker comes here through the gone node's
// subject, as for a guild loaded before.
func (r *replicas) subscribers(gid guild.ID) []guild.Sub {
	onRing := r.g.router.GatewayNodes()
	var subs []guild.Sub
	for _, f := range r.followers() {
		f.mu.Lock()
		if f.gone || !slices.Contains(onRing, f.node) {
			for id, sh := range f.sessions {
				sh.mu.Lock()
				if slices.Contains(sh.st.Guilds, gid) {
					subs = append(subs, guild.Sub{Node: f.node, Session: id, User: sh.st.User, Intents: sh.st.Intents,
						LargeThreshold: sh.st.Large, Status: sh.st.Status, Activities: sh.st.Acts, Gen: sh.st.Gen})
				}
				sh.mu.Unlock()
			}
		}
		f.mu.Unlock()
	}
	return subs
}

// awaitMoved waits until the moved markers of expect arrived at l (mu
// guards l's map), at most handoffWait.
func awaitMoved(ctx context.Context, mu interface {
	Lock()
	Unlock()
}, l *leaving, expect []guild.ID) error {
	t := time.NewTimer(handoffWait)
	defer t.Stop()
	for {
		mu.Lock()
		all := true
		for _, gid := range expect {
			all = all && l.moved[gid]
		}
		mu.Unlock()
		if all {
			return nil
		}
		select {
		case <-l.wake:
		case <-t.C:
			return errMarkersLate
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

var errMarkersLate = errorString("signaling: moved markers did not arrive in " + handoffWait.String())

// logOf copies a log for the handoff.
func logOf(l *eventLog) releasedLog {
	base, evs := l.snapshot()
	out := releasedLog{Base: base, Events: make([]loggedEvent, len(evs))}
	for i, ev := range evs {
		out.Events[i] = loggedEvent{ev.Name, ev.Data}
	}
	return out
}
