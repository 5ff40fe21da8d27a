package guild

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/store"
)

// storeWriteTimeout bounds one group commit's store write; past it every
// message of the batch is answered with the error.
const storeWriteTimeout = 30 * time.Second

// actor owns one guild's state. Only its goroutine touches the fields below;
// everything reaches it through the mailbox.
type actor struct {
	r     *Router
	guild store.Guild
	// epoch is this node's claim on the guild in the store, made when the
	// actor loaded it; every write is fenced with it (store/fence.go).
	epoch uint64

	channels map[ID]*store.Channel
	roles    map[ID]*store.Role
	members  map[ID]*store.Member
	users    map[ID]*store.User
	presence map[ID]*Presence // online members only
	subs     map[string]*Sub
	userSubs map[ID]int
	// watchers are the subscribers with the GUILD_PRESENCES intent: each
	// member going on- or offline is an event for them alone, so a presence
	// costs O(watchers), not O(subscribers) — in a big guild whose sessions
	// do not ask for presences (bots, the load tester) an identify storm
	// would otherwise cost O(members²).
	watchers map[string]*Sub

	voice       map[ID]*VoiceState
	perms       map[[2]ID]uint64 // (user, channel) → permissions, cleared on change
	lastFullReq map[ID]time.Time // op 8 "all members" rate limit per user

	mbox    chan func(*actor)
	scratch map[string][]string // fan-out lists per node, reused

	// gate orders posts against retirement: senders post under its read
	// lock; retire takes it to find the mailbox empty and set retired.
	gate    sync.RWMutex
	retired bool
	// quit is closed when the ring moved the guild to another node.
	quit chan struct{}

	pending []pendingMessage // messages waiting for the group commit
	writes  []store.Message  // the batch being written, reused
}

// pendingMessage is a new message that passed every check and waits to be
// written with the others of its batch; reply answers its sender once the
// batch is durable. An enforce_nonce repeat of a message in the same batch
// waits with it, without a write of its own.
type pendingMessage struct {
	m     store.Message
	write bool
	c     *store.Channel
	obj   Message
	reply func(Message, error)
}

// maxGroupCommit bounds the messages written together.
const maxGroupCommit = 256

func (r *Router) load(ctx context.Context, id ID) (*actor, error) {
	if _, err := r.store.GetGuild(ctx, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, ErrUnknownGuild // and no claim recorded for an unknown id
		}
		return nil, err
	}
	// Claim, then read: whatever an earlier owner wrote before this claim
	// is read below, and nothing it tries to write after it lands.
	epoch, err := r.store.Claim(ctx, id)
	if err != nil {
		return nil, err
	}
	g, err := r.store.GetGuild(ctx, id)
	if err != nil {
		return nil, err
	}
	a := &actor{r: r, guild: g, epoch: epoch,
		channels: map[ID]*store.Channel{}, roles: map[ID]*store.Role{}, members: map[ID]*store.Member{},
		users: map[ID]*store.User{}, presence: map[ID]*Presence{}, subs: map[string]*Sub{},
		userSubs: map[ID]int{}, watchers: map[string]*Sub{}, voice: map[ID]*VoiceState{}, perms: map[[2]ID]uint64{}, lastFullReq: map[ID]time.Time{},
		mbox: make(chan func(*actor), r.cfg.Mailbox), scratch: map[string][]string{}, quit: make(chan struct{})}
	cs, err := r.store.ListChannels(ctx, id)
	if err != nil {
		return nil, err
	}
	for i := range cs {
		a.channels[cs[i].ID] = &cs[i]
	}
	rs, err := r.store.ListRoles(ctx, id)
	if err != nil {
		return nil, err
	}
	for i := range rs {
		a.roles[rs[i].ID] = &rs[i]
	}
	ms, err := r.store.ListMembers(ctx, id)
	if err != nil {
		return nil, err
	}
	for i := range ms {
		m := &ms[i]
		u, err := r.store.GetUser(ctx, m.UserID)
		if err != nil {
			continue // a member whose user is gone is not loaded
		}
		a.members[m.UserID] = m
		a.users[m.UserID] = &u
	}
	a.adopt(r.subscribers(ctx, id))
	a.adoptVoice(r.voiceStates(ctx, id))
	return a, nil
}

// fenced returns ctx with the actor's ownership epoch, for its writes.
func (a *actor) fenced(ctx context.Context) context.Context {
	return store.WithFence(ctx, a.guild.ID, a.epoch)
}

// post queues fn; false if the actor retired (look the guild up again).
// A full mailbox is ErrOverloaded, or, with wait, waited out until ctx ends.
func (a *actor) post(ctx context.Context, fn func(*actor), wait bool) (bool, error) {
	a.gate.RLock()
	defer a.gate.RUnlock()
	if a.retired {
		return false, nil
	}
	select {
	case a.mbox <- fn:
		return true, nil
	default:
	}
	if !wait {
		return false, ErrOverloaded
	}
	select {
	case a.mbox <- fn:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// idle reports whether nothing but the store holds this guild's state: no
// session subscribed, nobody in voice, no message waiting to be written.
func (a *actor) idle() bool {
	return len(a.subs) == 0 && len(a.voice) == 0 && len(a.pending) == 0
}

func (a *actor) run() {
	// Idle detection without a timer operation per call: the ticker checks
	// whether any mail arrived since its last tick, so an idle actor
	// retires between IdleAfter and twice that after its last call.
	var tick <-chan time.Time
	if a.r.cfg.IdleAfter > 0 {
		t := time.NewTicker(a.r.cfg.IdleAfter)
		defer t.Stop()
		tick = t.C
	}
	busy := false
	for {
		select {
		case fn := <-a.mbox:
			busy = true
			fn(a)
		case <-tick:
			if !busy && a.idle() && a.r.retire(a) {
				return
			}
			busy = false
			continue
		case <-a.quit:
			// Moved away: what was accepted before is answered, then the
			// actor ends (the new owner loads the guild from the store).
			for {
				select {
				case fn := <-a.mbox:
					fn(a)
					continue
				default:
				}
				a.flush()
				return
			}
		}
		// Group commit: while messages wait to be written, run what else is
		// already in the mailbox (a bounded number), so that the messages
		// among it share one durable write instead of one each.
	drain:
		for n := 0; n < maxGroupCommit && len(a.pending) > 0 && len(a.pending) < maxGroupCommit; n++ {
			select {
			case fn := <-a.mbox:
				fn(a)
			default:
				break drain
			}
		}
		a.flush()
	}
}

// flush writes the pending messages in one durable batch, then delivers
// each and answers its sender, in the order they were accepted. A failed
// write fails every message of the batch; their senders may retry with
// their nonce.
func (a *actor) flush() {
	if len(a.pending) == 0 {
		return
	}
	batch := a.pending
	a.pending = nil // fanout below must not flush again
	writes := a.writes[:0]
	for i := range batch {
		if batch[i].write {
			writes = append(writes, batch[i].m)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeWriteTimeout)
	err := a.r.store.CreateMessages(a.fenced(ctx), writes...)
	cancel()
	for i := range batch {
		p := &batch[i]
		switch {
		case err != nil:
			p.reply(Message{}, err)
		case p.write:
			a.fanoutMessage(protocol.EventMessageCreate, p.c, p.obj)
			p.reply(p.obj, nil)
		default:
			p.reply(p.obj, nil)
		}
	}
	clear(writes) // keep no message content alive between batches
	clear(batch)
	a.writes, a.pending = writes[:0], batch[:0]
}

// permissions returns the user's permissions in a channel, cached.
func (a *actor) permissions(user ID, c *store.Channel) uint64 {
	k := [2]ID{user, c.ID}
	if p, ok := a.perms[k]; ok {
		return p
	}
	m := a.members[user]
	if m == nil {
		return 0
	}
	p := ChannelPermissions(BasePermissions(a.guild, a.roles, m), a.guild, c, m)
	a.perms[k] = p
	return p
}

func (a *actor) invalidatePerms() { clear(a.perms) }

// fanout delivers ev to every subscribed session for which want is true,
// one batch per node.
func (a *actor) fanout(ev *Event, want func(*Sub) bool) { a.fanoutAmong(a.subs, ev, want) }

// fanoutAmong delivers ev to the sessions of subs that want it.
func (a *actor) fanoutAmong(subs map[string]*Sub, ev *Event, want func(*Sub) bool) {
	a.flush() // events leave in the order the mailbox accepted their causes
	for k := range a.scratch {
		a.scratch[k] = a.scratch[k][:0]
	}
	for _, s := range subs {
		if want(s) {
			a.scratch[s.Node] = append(a.scratch[s.Node], s.Session)
		}
	}
	for node, ids := range a.scratch {
		if len(ids) > 0 {
			a.r.deliver(node, ev, ids)
		}
	}
}

// toSub delivers an event to one session.
func (a *actor) toSub(s *Sub, ev *Event) {
	a.flush()
	a.r.deliver(s.Node, ev, []string{s.Session})
}

// canSee reports whether a subscriber with intent may see an event in channel c.
func (a *actor) canSee(s *Sub, intent uint64, c *store.Channel) bool {
	if s.Intents&intent == 0 {
		return false
	}
	return c == nil || a.permissions(s.User, c)&PermViewChannel != 0
}

func (a *actor) sortedChannels() []*store.Channel {
	cs := make([]*store.Channel, 0, len(a.channels))
	for _, c := range a.channels {
		cs = append(cs, c)
	}
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].Position != cs[j].Position {
			return cs[i].Position < cs[j].Position
		}
		return cs[i].ID < cs[j].ID
	})
	return cs
}

func (a *actor) sortedRoles() []Role {
	out := make([]Role, 0, len(a.roles))
	for _, r := range a.roles {
		out = append(out, RoleObject(r))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (a *actor) guildObject() Guild {
	g := Guild{ID: a.guild.ID, Name: a.guild.Name, OwnerID: a.guild.OwnerID, Roles: a.sortedRoles(),
		Emojis: []any{}, Stickers: []any{}, Features: []string{}, PreferredLocale: "en-US",
		AFKTimeout: 300, MaxMembers: 500000}
	return g
}

func (a *actor) member(id ID) Member { return MemberObject(a.members[id], a.users[id]) }

// guildCreate builds the GUILD_CREATE for one subscriber (gateway.md §9.3).
func (a *actor) guildCreate(s *Sub) *Event {
	gc := GuildCreate{Guild: a.guildObject(), MemberCount: len(a.members), VoiceStates: make([]any, 0, len(a.voice)),
		Threads: []any{}, StageInstances: []any{}, GuildScheduledEvents: []any{}, SoundboardSounds: []any{},
		Members: []Member{}, Presences: []Presence{}, Channels: []Channel{}}
	if m := a.members[s.User]; m != nil {
		gc.JoinedAt = Timestamp(m.JoinedAt)
	}
	gc.Large = len(a.members) > s.LargeThreshold
	for _, v := range a.voice {
		gc.VoiceStates = append(gc.VoiceStates, a.voiceObject(v, false))
	}
	for _, c := range a.sortedChannels() {
		// Like REST and CHANNEL_CREATE: only what the member may view.
		if a.permissions(s.User, c)&PermViewChannel != 0 {
			gc.Channels = append(gc.Channels, ChannelObject(c))
		}
	}
	full := s.Intents&protocol.IntentGuildPresences != 0 && len(a.members) <= 75000
	ids := make([]ID, 0, len(a.members))
	for id := range a.members {
		if id == s.User || a.voice[id] != nil || (full && (!gc.Large || a.presence[id] != nil)) {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		gc.Members = append(gc.Members, a.member(id))
		if p := a.presence[id]; p != nil {
			gc.Presences = append(gc.Presences, *p)
		}
	}
	return NewEvent(protocol.EventGuildCreate, gc)
}

// setPresence records a user's presence and tells subscribers with the
// GUILD_PRESENCES intent when it changed.
func (a *actor) setPresence(user ID, status string, acts []Activity) {
	if p := a.recordPresence(user, status, acts); p != nil {
		a.fanoutAmong(a.watchers, NewEvent(protocol.EventPresenceUpdate, p), func(*Sub) bool { return true })
	}
}

// recordPresence sets a member's presence and returns it, or nil when
// nothing changed that anyone must hear of.
func (a *actor) recordPresence(user ID, status string, acts []Activity) *Presence {
	if a.members[user] == nil {
		return nil
	}
	if status == "" || status == "invisible" {
		status = "offline"
	}
	old := a.presence[user]
	if old == nil && status == "offline" {
		return nil
	}
	if acts == nil {
		acts = []Activity{}
	}
	gid := a.guild.ID
	p := &Presence{GuildID: &gid, Status: status, Activities: acts, ClientStatus: map[string]string{}}
	p.User.ID = user
	if status != "offline" {
		p.ClientStatus["desktop"] = status
		a.presence[user] = p
	} else {
		delete(a.presence, user)
	}
	return p
}

// adopt takes over subscriptions made with the guild's previous owner (or
// this node's previous actor of it): the sessions have had their
// GUILD_CREATE, so they are added quietly, with their presences.
func (a *actor) adopt(subs []Sub) {
	for i := range subs {
		s := &subs[i]
		if a.members[s.User] == nil {
			continue
		}
		if old := a.subs[s.Session]; old != nil && old.Gen >= s.Gen {
			continue // two nodes named the session while it moved: the newer wins
		}
		a.addSub(s)
		if a.presence[s.User] == nil {
			a.recordPresence(s.User, s.Status, s.Activities)
		}
	}
}

// addSub registers a session, or registers it again with what it asks
// for now, and returns its previous registration. A registration older
// than the one held (Sub.Gen: the session has moved to another node since)
// changes nothing and returns the held one.
func (a *actor) addSub(s *Sub) (old *Sub) {
	old = a.subs[s.Session]
	if old != nil && s.Gen < old.Gen {
		return old
	}
	if old != nil && old.Node != s.Node {
		// The session moved to another gateway node: its old node hears
		// so after every event it was sent for it (signaling's handoff).
		a.r.sessionMoved(old.Node, a.guild.ID, s.Session)
	}
	if old == nil {
		a.userSubs[s.User]++
	}
	a.subs[s.Session] = s
	if s.Intents&protocol.IntentGuildPresences != 0 {
		a.watchers[s.Session] = s
	} else {
		delete(a.watchers, s.Session)
	}
	return old
}

func (a *actor) subscribe(s *Sub) error {
	if a.members[s.User] == nil {
		return ErrMissingAccess
	}
	had := s.Had
	s.Had = false
	old := a.addSub(s)
	// A session registering again (its gateway moving it after a ring
	// change) has the guild already: no second GUILD_CREATE — if this
	// owner knew it. One that did not (its load adopted no subscription
	// from the session's node, which answered too late) delivered the
	// guild's events to others but not to it: the session is told the
	// guild was out, as Discord says it of an outage (gateway.md §9.2),
	// and gets it back whole.
	if old == nil && had {
		a.r.stats.subscriberGaps.Add(1)
		a.r.log.Debug("a session this owner did not know came back: told the guild was out", "guild", a.guild.ID,
			"session", s.Session, "node", s.Node, "gen", s.Gen)
		if s.Intents&protocol.IntentGuilds != 0 {
			a.toSub(s, NewEvent(protocol.EventGuildDelete, protocol.UnavailableGuild{ID: a.guild.ID, Unavailable: true}))
		}
	}
	if old == nil && s.Intents&protocol.IntentGuilds != 0 {
		a.toSub(s, a.guildCreate(s))
	}
	if v := a.voice[s.User]; v != nil && v.SessionID == s.Session && a.subs[s.Session] == s {
		// Its voice room may have moved while the session did.
		a.revoiceSession(v, s)
	}
	if a.presence[s.User] == nil || a.presence[s.User].Status != s.Status {
		a.setPresence(s.User, s.Status, s.Activities)
	}
	return nil
}

func (a *actor) unsubscribe(session string) {
	s := a.subs[session]
	if s == nil {
		return
	}
	delete(a.subs, session)
	delete(a.watchers, session)
	if v := a.voice[s.User]; v != nil && v.SessionID == session {
		// The gateway session that joined voice is gone: so is the voice state.
		a.r.log.Debug("voice session unsubscribed", "guild", a.guild.ID, "user", s.User, "session", session, "gateway", s.Node)
		a.updateVoice(VoiceUpdate{User: s.User})
	}
	a.userSubs[s.User]--
	if a.userSubs[s.User] <= 0 {
		delete(a.userSubs, s.User)
		a.setPresence(s.User, "offline", nil)
	}
}
