package signaling

import (
	"context"
	"sync"

	"github.com/chorus-voice/chorus/guild"
)

// When the ring moves a guild to another node (a node joined, left or
// died), the guild's new owner knows none of its sessions: the gateway
// subscribes each of its sessions that carry the guild again, with the new
// owner, and the session stays connected (DESIGN.md "Cluster"). The new
// owner's GUILD_CREATE tells the client the guild is (again) available.

// owners remembers, per guild, the owner this node's sessions subscribed
// with; a ring change that names another owner moves them.
type owners struct {
	mu sync.Mutex
	m  map[guild.ID]string
}

// note records the owner a subscription to gid is about to be made with.
// It is read under the same lock a sweep holds, so a subscription either
// precedes a sweep (and is moved by it) or sees the newer ring itself.
func (o *owners) note(r *guild.Router, gid guild.ID) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = map[guild.ID]string{}
	}
	o.m[gid] = r.Owner(gid)
}

// moved returns the guilds whose owner changed since noted, and notes the
// new owners. A view without an owner (this node fenced itself: it was
// paused or cut off) says nothing of where a guild lives: the note stays,
// and the view after the fence decides. Taking it for a move sent every
// session of a node that woke from a pause through GUILD_DELETE and
// GUILD_CREATE, missing events on the way.
func (o *owners) moved(r *guild.Router) map[guild.ID]bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[guild.ID]bool{}
	for gid, was := range o.m {
		if now := r.Owner(gid); now != was && now != "" {
			out[gid] = true
			o.m[gid] = now
		}
	}
	return out
}

// resubscribeWorkers bounds the subscriptions a ring change makes at once.
const resubscribeWorkers = 32

// followRing moves sessions after each ring change until the gateway shuts
// down.
func (g *Gateway) followRing() {
	if g.router == nil {
		return // an edge without a guild layer (unit tests)
	}
	ch := g.router.Changed()
	if ch == nil {
		return // a ring that never changes
	}
	if g.hub.reps != nil {
		g.hub.reps.follow()
	}
	for {
		select {
		case <-ch:
		case <-g.done:
			return
		}
		ch = g.router.Changed()
		if g.hub.reps != nil {
			g.hub.reps.follow()
		}
		g.resubscribeMoved()
	}
}

// resubscribeMoved subscribes every local session of a moved guild with its
// new owner.
func (g *Gateway) resubscribeMoved() {
	moved := g.owners.moved(g.router)
	if len(moved) == 0 {
		return
	}
	type job struct {
		s   *Session
		gid guild.ID
	}
	var jobs []job
	for _, s := range g.hub.all() {
		for _, gid := range s.guildList() {
			if moved[gid] {
				jobs = append(jobs, job{s, gid})
			}
		}
	}
	g.metrics.Resubscribed.Add(uint64(len(jobs)))
	work := make(chan job)
	var wg sync.WaitGroup
	for i := 0; i < min(resubscribeWorkers, len(jobs)); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				g.subscribe(ctx, j.s, j.gid, true)
				cancel()
			}
		}()
	}
	for _, j := range jobs {
		work <- j
	}
	close(work)
	wg.Wait()
}
