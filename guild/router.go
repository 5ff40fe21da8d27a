package guild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/ring"
	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
)

// Config tunes the guild layer.
type Config struct {
	// Mailbox is the bound of each actor's mailbox; a full mailbox answers
	// ErrOverloaded instead of queueing without limit. Default 4096.
	Mailbox int
	// IdleAfter stops a guild's actor that had nothing to do for that long
	// and has no subscribed session and nobody in voice: its state is in
	// the store and is loaded again on the next call. Default 10 minutes;
	// negative keeps actors forever.
	IdleAfter time.Duration
	// UnbatchedFanout sends each event to each session on another node in
	// a bus message of its own, as a naive design would: for the benchmark
	// that measures what per-node batching saves, never for a real node.
	UnbatchedFanout bool
}

// Placement says which node owns a guild: the ring of the current view
// and this node's id. A running node passes its *cluster.Node;
// cluster.Static serves one node without NATS (the guild tests).
type Placement interface {
	Ring() *ring.Ring
	ID() string
	// Changed returns a channel closed at the ring's next change (nil:
	// it never changes).
	Changed() <-chan struct{}
}

// Sessions is the node's table of gateway sessions as the guild layer
// sees it: it delivers events, and it names the sessions a user who just
// joined a guild has that now want its events.
type Sessions interface {
	Deliverer
	// Joined records that user became a member of guild and returns the
	// subscriptions of that user's live sessions that carry it (by shard).
	Joined(guild, user ID) []Sub
	// Subscribers returns the subscriptions to guild that this node's
	// sessions made before (and got GUILD_CREATE for), for an owner that
	// loads the guild to adopt.
	Subscribers(guild ID) []Sub
	// Moved tells the node that session is registered with guild from
	// another node now: no more of guild's events come here for it.
	Moved(guild ID, session string)
	// ServeGateway answers another gateway node's request (CallGateway).
	ServeGateway(ctx context.Context, req []byte) ([]byte, error)
}

// VoiceHost is the node's voice gateway. VoiceChanged hears every voice
// state change of the cluster's guilds (each guild's owner tells every
// voice node, in order), so whichever node a room is placed on can admit
// the user's Identify, apply mute and deafen to live media at once, or end
// a connection; a room moved to another node finds the states there
// already. It may not block.
type VoiceHost interface {
	VoiceChanged(VoiceChange)
	// VoiceStates lists what the node heard of a guild's voice states: a
	// new owner of the guild (its old one died with them in memory)
	// takes them over.
	VoiceStates(guild ID) []VoiceChange
}

// Deps are what a router works with, all given at construction.
type Deps struct {
	Placement Placement
	Store     store.Store
	Sessions  Sessions
	// Voice is nil on a node that serves no voice.
	Voice VoiceHost
	// VoiceToken issues the token of VOICE_SERVER_UPDATE, which every voice
	// node admits (tokens are signed with the cluster's key); nil: joins
	// get no VOICE_SERVER_UPDATE.
	VoiceToken func(user ID) string
	IDs        *snowflake.Generator
	// Peers reaches the cluster's other nodes; nil on a node that is
	// alone (cluster.Static), where every guild is local.
	Peers Peers
	// Logger hears what is worth knowing when a move goes wrong (debug
	// level); nil discards.
	Logger *slog.Logger
}

// Router finds the actor that owns a guild: a ring lookup, then a local call
// or a request to the owning node (remote.go). Callers use its typed
// methods and never see where the guild lives.
type Router struct {
	cfg      Config
	place    Placement
	store    store.Store
	sessions Sessions
	voice    VoiceHost
	voiceTok func(user ID) string
	log      *slog.Logger
	ids      *snowflake.Generator
	peers    Peers
	out      outbox
	served   chan struct{} // calls from other nodes running now
	stats    routerStats
	stop     chan struct{}
	stopOnce sync.Once
	running  sync.WaitGroup // actors' goroutines, and loads that may start one
	senders  sync.WaitGroup // the outbox's senders

	mu          sync.Mutex
	closing     bool // Close has begun: no new actors
	slots       map[ID]*slot
	retirements atomic.Uint64

	chanGuild sync.Map // channel id → guild id; channels never change guild

	// lastRing is the newest ring follow has seen, prevRing the one before
	// it: a new owner asks a guild's previous owner to flush (remote.go).
	lastRing, prevRing atomic.Pointer[ring.Ring]
	ringMu             sync.Mutex // serialises handleRing

	// handing holds, while a retiring actor hands its voice over, the
	// states it hands with the node each user was sent to: a new owner
	// that loads the guild before the handover arrives asks this node
	// (voiceStates) and must not send its users where they were just sent.
	// handMu also spans the revoice that fills it, so an answer never falls
	// between the two.
	handMu  sync.Mutex
	handing map[ID][]VoiceChange
}

type slot struct {
	ready chan struct{}
	a     *actor
	err   error
}

// loaded returns the slot's actor once its load has ended, and nil while it
// runs: the loader writes a and err without the router's lock, so nobody
// may read them before ready is closed.
func (s *slot) loaded() *actor {
	select {
	case <-s.ready:
		return s.a
	default:
		return nil
	}
}

// NewRouter returns a router for this node.
func NewRouter(cfg Config, d Deps) *Router {
	if cfg.Mailbox <= 0 {
		cfg.Mailbox = 4096
	}
	if cfg.IdleAfter == 0 {
		cfg.IdleAfter = 10 * time.Minute
	}
	r := &Router{cfg: cfg, place: d.Placement, store: d.Store, sessions: d.Sessions, voice: d.Voice, voiceTok: d.VoiceToken, ids: d.IDs,
		peers: d.Peers, served: make(chan struct{}, maxServedCalls), stop: make(chan struct{}), slots: map[ID]*slot{}}
	r.out = outbox{r: r, nodes: map[string]*queue{}}
	if r.log = d.Logger; r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.lastRing.Store(r.place.Ring())
	if ch := r.place.Changed(); ch != nil {
		go r.follow(ch)
	}
	return r
}

// follow drops the actors of guilds the ring moved to other nodes, at each
// change of the ring, until the router closes.
func (r *Router) follow(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		case <-r.stop:
			return
		}
		ch = r.place.Changed()
		r.handleRing()
	}
}

// handleRing applies the newest ring: actors of guilds that moved away
// retire (handing their voice over), and participants of rooms that moved
// are told. follow calls it at each change; Close calls it first, because
// a node that left the ring may close before follow has seen the ring
// without it, and Close's own retiring hands nothing over.
func (r *Router) handleRing() {
	r.ringMu.Lock()
	defer r.ringMu.Unlock()
	if now := r.place.Ring(); now != r.lastRing.Load() {
		r.prevRing.Store(r.lastRing.Swap(now))
	}
	r.dropMoved()
	r.replaceVoice()
}

// dropMoved retires every actor whose guild this node no longer owns: new
// calls find the new owner; calls already in its mailbox are answered.
func (r *Router) dropMoved() {
	view, me := r.place.Ring(), r.place.ID()
	var gone []*actor
	r.mu.Lock()
	for id, s := range r.slots {
		if owner, ok := view.Owner(ring.RoleGuild, uint64(id)); ok && owner.ID == me {
			continue
		}
		select {
		case <-s.ready:
		default:
			continue // still loading; its first call finds it moved
		}
		if a := s.loaded(); a != nil {
			gone = append(gone, a)
		}
		delete(r.slots, id)
	}
	r.mu.Unlock()
	if len(gone) > 0 {
		r.log.Debug("guilds moved away", "actors", len(gone), "ring", view.Revision)
	}
	for _, a := range gone {
		// Queued before retiring, so it runs (a retiring actor answers its
		// mailbox). Not waited for long: a mailbox still full after that
		// is a guild under load, whose new owner learns the voice states
		// from the voice nodes instead.
		ctx, cancel := context.WithTimeout(context.Background(), handVoiceWait)
		a.post(ctx, func(a *actor) { a.handVoice() }, true)
		cancel()
		a.gate.Lock()
		a.retired = true
		a.gate.Unlock()
		close(a.quit)
		r.stats.moves.Add(1)
	}
}

// fencedOut retires an actor whose write the store refused: another node
// has claimed its guild since it loaded (this node was paused, or the other
// one was). The next call loads the guild anew, with a claim of its own, if
// the ring still names this node. It runs on the actor's goroutine, so the
// part that waits for senders (the gate) runs on another.
func (r *Router) fencedOut(a *actor) {
	r.mu.Lock()
	s := r.slots[a.guild.ID]
	// Every message of a refused group commit is answered ErrFenced, so
	// this runs once per message: by the later ones the slot may hold a
	// fresh load under way.
	mine := s != nil && s.loaded() == a
	if mine {
		delete(r.slots, a.guild.ID)
	}
	r.mu.Unlock()
	if !mine {
		return
	}
	r.stats.fencedOut.Add(1)
	go func() {
		a.gate.Lock()
		a.retired = true
		a.gate.Unlock()
		close(a.quit)
	}()
}

// Owner names the node that owns a guild in the current ring ("" when
// none does: the ring is empty or this node is fenced).
func (r *Router) Owner(guild ID) string {
	n, _ := r.place.Ring().Owner(ring.RoleGuild, uint64(guild))
	return n.ID
}

// VoiceNode names the node that hosts a voice room: the ring places rooms
// on the nodes with the voice role ("" when none has it).
func (r *Router) VoiceNode(guild, channel ID) string {
	n, _ := r.voicePlace(guild, channel)
	return n.ID
}

func (r *Router) voicePlace(guild, channel ID) (ring.Node, bool) {
	return r.place.Ring().Owner(ring.RoleVoice, ring.VoiceKey(uint64(guild), uint64(channel)))
}

// Changed returns a channel closed at the ring's next change (nil when it
// never changes).
func (r *Router) Changed() <-chan struct{} { return r.place.Changed() }

// closeTimeout bounds each of Close's two waits.
const closeTimeout = 3 * time.Second

// Close stops the router without losing what it acknowledged: every actor
// answers the mail it accepted and writes and fans out its last group
// commit (as when its guild moves away), then each sender to another node
// sends what is queued for it, and only then stops. A node that left the
// ring first (SIGTERM) has retired its actors already; Close waits for
// them to finish. Each wait is bounded by closeTimeout.
func (r *Router) Close() {
	r.stopOnce.Do(func() {
		if r.peers != nil {
			r.handleRing()
		}
		r.mu.Lock()
		r.closing = true
		r.log.Debug("router closing", "actors", len(r.slots), "ring", r.place.Ring().Revision)
		slots := make([]*slot, 0, len(r.slots))
		for id, s := range r.slots {
			slots = append(slots, s)
			delete(r.slots, id)
		}
		r.mu.Unlock()
		for _, s := range slots {
			<-s.ready // a load under way ends within its caller's deadline
			if a := s.a; a != nil {
				a.gate.Lock()
				a.retired = true
				a.gate.Unlock()
				close(a.quit)
			}
		}
		waitBounded(&r.running, closeTimeout)
		r.out.close(closeTimeout)
	})
}

// waitBounded waits for wg, at most d.
func waitBounded(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// routerStats counts the router's traffic with other nodes.
type routerStats struct {
	callsSent, callsServed atomic.Uint64
	movedSent, movedSeen   atomic.Uint64
	batchesSent            atomic.Uint64
	batchesReceived        atomic.Uint64
	batchDropped           atomic.Uint64
	batchMalformed         atomic.Uint64
	moves                  atomic.Uint64 // guilds this node stopped serving
	fencedOut              atomic.Uint64 // actors retired because a newer owner claimed their guild
	adoptFailed            atomic.Uint64 // nodes that did not list their subscribers
	subscriberGaps         atomic.Uint64 // sessions that came back to an owner that did not know them (told: guild out)
}

// Store returns the store the router reads and writes.
func (r *Router) Store() store.Store { return r.store }

func (r *Router) actor(ctx context.Context, id ID) (*actor, error) {
	if owner, ok := r.place.Ring().Owner(ring.RoleGuild, uint64(id)); !ok || owner.ID != r.place.ID() {
		return nil, ErrNotOwner
	}
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return nil, ErrNotOwner
	}
	s := r.slots[id]
	if s == nil {
		s = &slot{ready: make(chan struct{})}
		r.slots[id] = s
		r.running.Add(1)
		r.mu.Unlock()
		s.a, s.err = r.load(ctx, id)
		if s.err != nil {
			r.mu.Lock()
			delete(r.slots, id)
			r.mu.Unlock()
			r.running.Done()
		} else {
			go func() {
				defer r.running.Done()
				s.a.run()
			}()
		}
		close(s.ready)
		// dropMoved skips loads under way: if the ring moved the guild
		// away during this one, the new actor must not serve it.
		if owner, ok := r.place.Ring().Owner(ring.RoleGuild, uint64(id)); s.err == nil && (!ok || owner.ID != r.place.ID()) {
			r.dropMoved()
		}
	} else {
		r.mu.Unlock()
	}
	select {
	case <-s.ready:
		return s.a, s.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// call runs fn on the guild's actor and waits for it.
func (r *Router) call(ctx context.Context, guild ID, fn func(a *actor) error) error {
	return r.send(ctx, guild, func(a *actor, reply func(error)) { reply(fn(a)) }, false)
}

// callAsync runs fn on the guild's actor and waits until reply is called:
// by fn itself, or later by the actor, once the group commit fn's message
// joined is durable. A full mailbox answers ErrOverloaded at once.
func (r *Router) callAsync(ctx context.Context, guild ID, fn func(a *actor, reply func(error))) error {
	return r.send(ctx, guild, fn, false)
}

// send posts fn to the guild's actor and waits for its reply. With wait, a
// full mailbox is waited out until ctx ends (for the node's own work, such
// as subscribing sessions after a restart, which must not fail under a
// burst); without, it answers ErrOverloaded at once (for clients' requests).
func (r *Router) send(ctx context.Context, guild ID, fn func(a *actor, reply func(error)), wait bool) error {
	done := make(chan error, 1)
	mail := func(a *actor) {
		fn(a, func(err error) {
			if errors.Is(err, store.ErrFenced) {
				r.fencedOut(a)
			}
			done <- err
		})
	}
	for attempt := 0; ; attempt++ {
		a, err := r.actor(ctx, guild)
		if err != nil {
			return err
		}
		posted, err := a.post(ctx, mail, wait)
		if err != nil {
			return err
		}
		if posted {
			break
		}
		// The actor retired between the lookup and the post; its slot is
		// gone by now, so the next lookup loads a fresh one.
		if attempt > 100 {
			return ErrOverloaded
		}
		runtime.Gosched()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retire removes a from the router if it is still idle, atomically with
// respect to posts: a sender either posted before (and a stays) or finds a
// retired and looks the guild up again.
func (r *Router) retire(a *actor) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	// TryLock: a sender waiting for mailbox space holds the read lock, and
	// the actor must go back to its mailbox rather than wait for it.
	if !a.gate.TryLock() {
		return false
	}
	defer a.gate.Unlock()
	if len(a.mbox) > 0 || !a.idle() {
		return false
	}
	a.retired = true
	if s := r.slots[a.guild.ID]; s != nil && s.loaded() == a {
		delete(r.slots, a.guild.ID)
	}
	r.retirements.Add(1)
	return true
}

// Retired returns how many idle guild actors have stopped.
func (r *Router) Retired() uint64 { return r.retirements.Load() }

// Loaded returns how many guild actors run on this node.
func (r *Router) Loaded() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.slots)
}

// WriteMetrics writes the router's guild actors in the Prometheus text format.
func (r *Router) WriteMetrics(w io.Writer) {
	fmt.Fprintf(w, "chorus_guild_actors %d\n", r.Loaded())
	fmt.Fprintf(w, "chorus_guild_actors_retired_total %d\n", r.Retired())
	st := &r.stats
	fmt.Fprintf(w, "chorus_cluster_calls_sent_total %d\n", st.callsSent.Load())
	fmt.Fprintf(w, "chorus_cluster_calls_served_total %d\n", st.callsServed.Load())
	fmt.Fprintf(w, "chorus_cluster_moved_answers_total{dir=\"sent\"} %d\n", st.movedSent.Load())
	fmt.Fprintf(w, "chorus_cluster_moved_answers_total{dir=\"received\"} %d\n", st.movedSeen.Load())
	fmt.Fprintf(w, "chorus_cluster_batches_total{dir=\"sent\"} %d\n", st.batchesSent.Load())
	fmt.Fprintf(w, "chorus_cluster_batches_total{dir=\"received\"} %d\n", st.batchesReceived.Load())
	fmt.Fprintf(w, "chorus_cluster_batch_drops_total %d\n", st.batchDropped.Load())
	fmt.Fprintf(w, "chorus_cluster_batches_malformed_total %d\n", st.batchMalformed.Load())
	fmt.Fprintf(w, "chorus_cluster_guilds_moved_away_total %d\n", st.moves.Load())
	fmt.Fprintf(w, "chorus_cluster_fenced_writes_total %d\n", st.fencedOut.Load())
	fmt.Fprintf(w, "chorus_cluster_adopt_failures_total %d\n", st.adoptFailed.Load())
	fmt.Fprintf(w, "chorus_guild_sessions_told_out_total %d\n", st.subscriberGaps.Load())
}

// GuildOfChannel returns the guild a channel belongs to.
func (r *Router) GuildOfChannel(ctx context.Context, channel ID) (ID, error) {
	if g, ok := r.chanGuild.Load(channel); ok {
		return g.(ID), nil
	}
	c, err := r.store.GetChannel(ctx, channel)
	if errors.Is(err, store.ErrNotFound) {
		return 0, ErrUnknownChannel
	}
	if err != nil {
		return 0, err
	}
	r.chanGuild.Store(channel, c.GuildID)
	return c.GuildID, nil
}

// Subscribe adds a gateway session to a guild; the actor delivers the
// session's GUILD_CREATE through the Deliverer, ordered before any later event.
// A burst of subscriptions (every session of a restarted node identifying
// again) waits for mailbox space instead of failing.
func (r *Router) Subscribe(ctx context.Context, guild ID, s Sub) error {
	_, err := opSubscribe.run(ctx, r, guild, subscribeArgs{guild, s})
	return err
}

type subscribeArgs struct {
	Guild ID
	S     Sub
}

var opSubscribe = defineOp("subscribe", func(r *Router, ctx context.Context, q subscribeArgs) (none, error) {
	return none{}, r.subscribe(ctx, q.Guild, q.S)
})

// subscribe is Subscribe on the guild's owner.
func (r *Router) subscribe(ctx context.Context, guild ID, s Sub) error {
	return r.send(ctx, guild, func(a *actor, reply func(error)) { reply(a.subscribe(&s)) }, true)
}

// subscribeJoined subscribes the live sessions of a user who just became a
// member of a guild. A session whose subscription fails is told the guild
// is unavailable (gateway.md §9.2) rather than left without word; it gets
// the guild on its next identify.
func (r *Router) subscribeJoined(ctx context.Context, guild, user ID) {
	for _, sub := range r.sessions.Joined(guild, user) {
		if err := r.Subscribe(ctx, guild, sub); err != nil {
			r.deliver(sub.Node, NewEvent(protocol.EventGuildDelete,
				protocol.UnavailableGuild{ID: guild, Unavailable: true}), []string{sub.Session})
		}
	}
}

// Unsubscribe removes a session from a guild.
func (r *Router) Unsubscribe(ctx context.Context, guild ID, session string) error {
	_, err := opUnsubscribe.run(ctx, r, guild, unsubscribeArgs{guild, session})
	return err
}

type unsubscribeArgs struct {
	Guild   ID
	Session string
}

var opUnsubscribe = defineOp("unsubscribe", func(r *Router, ctx context.Context, q unsubscribeArgs) (none, error) {
	return none{}, r.unsubscribe(ctx, q.Guild, q.Session)
})

// unsubscribe is Unsubscribe on the guild's owner.
func (r *Router) unsubscribe(ctx context.Context, guild ID, session string) error {
	return r.call(ctx, guild, func(a *actor) error { a.unsubscribe(session); return nil })
}

// UpdatePresence sets a user's presence in a guild (gateway op 3).
func (r *Router) UpdatePresence(ctx context.Context, guild, user ID, status string, acts []Activity) error {
	_, err := opUpdatePresence.run(ctx, r, guild, updatePresenceArgs{guild, user, status, acts})
	return err
}

type updatePresenceArgs struct {
	Guild  ID
	User   ID
	Status string
	Acts   []Activity
}

var opUpdatePresence = defineOp("update_presence", func(r *Router, ctx context.Context, q updatePresenceArgs) (none, error) {
	return none{}, r.updatePresence(ctx, q.Guild, q.User, q.Status, q.Acts)
})

// updatePresence is UpdatePresence on the guild's owner.
func (r *Router) updatePresence(ctx context.Context, guild, user ID, status string, acts []Activity) error {
	return r.call(ctx, guild, func(a *actor) error { a.setPresence(user, status, acts); return nil })
}
