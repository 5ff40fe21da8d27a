package signaling

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"github.com/chorus-voice/chorus/cluster"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/chorus-voice/chorus/auth"
	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/ring"
	"github.com/chorus-voice/chorus/signaling/wire"
	"github.com/chorus-voice/chorus/store"
)

// Config tunes the client-facing edge. Zero values take the defaults below.
type Config struct {
	NodeID string
	// GatewayURL is what GET /gateway advertises and READY's
	// resume_gateway_url carries: a bare origin such as ws://127.0.0.1:8080.
	GatewayURL string
	// HeartbeatInterval is sent in Hello. Default 41.25 s, Discord's value.
	HeartbeatInterval time.Duration
	// ResumeWindow is how long a dropped session can be resumed. Default 3 min.
	ResumeWindow time.Duration
	// MaxLog bounds each session's event log (send queue + resume buffer).
	// Default 1024 events.
	MaxLog int
	// MaxLogBytes bounds the payload bytes of each session's event log.
	// Default 4 MiB.
	MaxLogBytes int
	// PayloadsPerMinute is the per-connection client payload limit. Default 120.
	PayloadsPerMinute int
	// IdentifiesPer5s is max_concurrency: identifies per user per 5 s. Default 16.
	IdentifiesPer5s int
	// WriteTimeout bounds one socket write; a client that does not read is
	// dropped after it (resumable). Default 10 s.
	WriteTimeout time.Duration
	// RESTRequestsPerSecond is the per-user, per-route REST rate limit. Default 50.
	RESTRequestsPerSecond int
	// MaxGuildsPerSession is how many guilds one session (shard) may carry
	// before Identify is refused with 4011. Default 2500, Discord's limit.
	MaxGuildsPerSession int
	// DrainWait bounds how long a stopping node waits for other nodes to
	// take over the sessions it told to reconnect. Default 10 s.
	DrainWait time.Duration
	// SessionCopies makes each gateway node keep an exact copy of the
	// sessions of another, so that they survive its death (replicate.go).
	// Off by default while it is experimental: under a rolling restart it
	// has been seen to lose a handoff (issue 11).
	SessionCopies bool
	// IdentifyTimeout is how long a new connection may go without sending
	// Identify or Resume before it is closed with 4003. Default 10 s.
	IdentifyTimeout time.Duration
	// HTTP bounds how long an HTTP request may take (zero fields: defaults).
	HTTP HTTPTimeouts
	// AdminToken authenticates the admin API.
	AdminToken string
	Logger     *slog.Logger
}

func (c *Config) setDefaults() {
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.ResumeWindow == 0 {
		c.ResumeWindow = DefaultResumeWindow
	}
	if c.MaxLog == 0 {
		c.MaxLog = DefaultMaxLog
	}
	if c.MaxLogBytes == 0 {
		c.MaxLogBytes = DefaultMaxLogBytes
	}
	if c.PayloadsPerMinute == 0 {
		c.PayloadsPerMinute = DefaultPayloadsPerMinute
	}
	if c.IdentifiesPer5s == 0 {
		c.IdentifiesPer5s = DefaultIdentifiesPer5s
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.RESTRequestsPerSecond == 0 {
		c.RESTRequestsPerSecond = DefaultRESTRequestsPerSecond
	}
	if c.DrainWait == 0 {
		c.DrainWait = DefaultDrainWait
	}
	if c.IdentifyTimeout == 0 {
		c.IdentifyTimeout = DefaultIdentifyTimeout
	}
	if c.MaxGuildsPerSession == 0 {
		c.MaxGuildsPerSession = DefaultMaxGuildsPerSession
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) logLimit() logLimit { return logLimit{events: c.MaxLog, bytes: c.MaxLogBytes} }

// Deps are what the edge's parts (Gateway, API) work with, all given at
// construction: nothing is wired afterwards.
type Deps struct {
	Store  store.Store
	Signer *auth.Signer
	Router *guild.Router
	// Hub is this node's session table; the router must deliver through
	// it (guild.Deps.Sessions). Default: a new one.
	Hub *Hub
	// Metrics, shared by every part of the edge. Default: a private set.
	Metrics *Metrics
	// Cluster is the node's membership, which the admin API shows; nil
	// answers GET /admin/v1/cluster with 404.
	Cluster *cluster.Node
}

func (d *Deps) setDefaults(cfg Config) {
	if d.Metrics == nil {
		d.Metrics = &Metrics{}
	}
	if d.Hub == nil {
		d.Hub = NewHub(cfg, d.Metrics)
	}
}

// Gateway serves Discord Gateway v10 sessions.
type Gateway struct {
	cfg     Config
	router  *guild.Router
	store   store.Store
	tokens  tokens
	hub     *Hub
	metrics *Metrics
	ep      endpoint
	limits  *limiter
	hello   []byte

	connsMu sync.Mutex
	conns   map[*conn]struct{}
	closing bool
	running sync.WaitGroup

	owners owners        // moves.go
	gaps   batchGaps     // of the batches other nodes send (batchgap.go)
	done   chan struct{} // closed at Shutdown
}

// NewGateway returns a gateway.
func NewGateway(cfg Config, d Deps) *Gateway {
	cfg.setDefaults()
	d.setDefaults(cfg)
	g := &Gateway{cfg: cfg, router: d.Router, store: d.Store, tokens: tokens{d.Signer, d.Store}, metrics: d.Metrics,
		hub: d.Hub, limits: newLimiter(), conns: map[*conn]struct{}{}, done: make(chan struct{})}
	g.ep = endpoint{name: "main", heartbeatTimeout: heartbeatTimeout(cfg.HeartbeatInterval),
		identifyTimeout: cfg.IdentifyTimeout, writeTimeout: cfg.WriteTimeout, payloadsPerMinute: cfg.PayloadsPerMinute,
		closeNoIdentify: protocol.CloseNotAuthenticated, closeZombie: protocol.CloseUnknownError,
		closeTooLarge: protocol.CloseDecodeError, closeServerFault: protocol.CloseUnknownError,
		closeRateLimited: protocol.CloseRateLimited, frame: frameDispatch, closes: &d.Metrics.closes,
		metrics: d.Metrics, logger: cfg.Logger}
	g.ep.init()
	g.hello = protocol.Hello(int(cfg.HeartbeatInterval / time.Millisecond))
	if cfg.SessionCopies && d.Cluster != nil && d.Router != nil && d.Cluster.Roles()&ring.RoleGateway != 0 {
		g.hub.rep = newReplicator(g, d.Cluster)
		g.hub.reps = newReplicas(g, d.Cluster)
	}
	if d.Cluster != nil && d.Router != nil {
		go g.markAfterReconnects(d.Cluster.Reconnected())
	}
	go g.followRing()
	return g
}

// ServeBatch takes an event batch another node sent this one
// (cluster.Handlers.Batch): through the replicator, in a cluster.
// A gap in the batches' numbers is repaired first (batchgap.go).
func (g *Gateway) ServeBatch(b []byte) error {
	ref, body, err := guild.SplitBatch(b)
	if err != nil {
		return g.router.ServeBatch(b) // counts it
	}
	if gp := g.gaps.see(ref); gp.lo < gp.hi {
		g.batchGap(ref.From, gp)
	}
	if g.hub.rep != nil {
		g.hub.rep.batch(ref, body)
		return nil
	}
	return g.router.ServeBatchWith(body, g.hub.Deliver)
}

// Close stops the session copies: the last deliveries are made and the
// other nodes are no longer followed. It is called after Shutdown, once
// the guild router has stopped.
func (g *Gateway) Close() {
	if g.hub.rep != nil {
		g.hub.rep.close()
	}
	if g.hub.reps != nil {
		g.hub.reps.close()
	}
}

// frameDispatch frames a gateway event as a dispatch (gateway.md §5).
func frameDispatch(_ *conn, b []byte, ev *guild.Event, seq uint64) []byte {
	return protocol.AppendDispatch(b, ev.Name, seq, ev.Data)
}

// Hub returns this node's session table.
func (g *Gateway) Hub() *Hub { return g.hub }

// Metrics returns the edge's counters.
func (g *Gateway) Metrics() *Metrics { return g.metrics }

// ServeHTTP upgrades a gateway connection (gateway.md §1) and runs it.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.connsMu.Lock()
	closing := g.closing
	g.connsMu.Unlock()
	if closing {
		// Draining: the client's library (or the load balancer) tries
		// another node, which takes the session over (handoff.go).
		http.Error(w, "this node is draining: connect to another", http.StatusServiceUnavailable)
		return
	}
	q := r.URL.Query()
	c := g.ep.accept(w, r)
	if c == nil {
		return // gorilla already answered with an HTTP error
	}

	switch v := q.Get("v"); v {
	case "", "9", "10":
	default:
		c.closeWith(protocol.CloseInvalidAPIVersion, "invalid API version")
	}
	if enc := q.Get("encoding"); enc != "" && enc != "json" {
		c.closeWith(protocol.CloseDecodeError, "only encoding=json is supported")
	}
	comp, err := wire.NewCompressor(q.Get("compress"))
	if err != nil {
		c.closeWith(protocol.CloseDecodeError, "unknown compress value")
	}
	c.comp = comp
	c.send(g.hello)

	g.connsMu.Lock()
	if g.closing {
		g.connsMu.Unlock()
		c.nc.Close()
		return
	}
	g.conns[c] = struct{}{}
	g.running.Add(1)
	g.connsMu.Unlock()
	c.startTimers()
	// The connection runs on its own goroutine so that net/http can free
	// its per-request state (buffers, context) now: an idle session then
	// costs only what it needs (DESIGN.md, idle memory per session).
	go g.run(c)
}

func (g *Gateway) run(c *conn) {
	g.metrics.Connections.Add(1)
	code := closeNoResponse
	defer func() {
		// A panic in the read loop is confined to this connection: counted,
		// its stack logged, and the connection ends as if the client had
		// vanished (its session stays resumable). The recover lives here,
		// not in a frame of its own around readLoop: one more frame under
		// every parked reader doubled its stack to 4 KiB.
		if r := recover(); r != nil {
			g.metrics.recovered(g.cfg.Logger, "gateway read loop", r)
		}
		g.ended(c, code)
		g.metrics.Connections.Add(-1)
		g.connsMu.Lock()
		delete(g.conns, c)
		g.connsMu.Unlock()
		g.running.Done()
	}()
	code = readLoop(c, g.handle)
}

// ended releases a connection whose read loop is over: a session the
// client closed normally ends, any other waits for a resume.
func (g *Gateway) ended(c *conn, code protocol.CloseCode) {
	c.hb.Stop()
	c.nc.Close()
	if s := c.sess.Load(); s != nil && s.detach(c) {
		if code.EndsSession() {
			g.endSession(s) // the client ended it (gateway.md §10)
		} else {
			time.AfterFunc(g.cfg.ResumeWindow, func() { g.expire(s) })
		}
	}
}

// handle processes one client payload; false once the connection is closing.
func (g *Gateway) handle(c *conn, p []byte) bool {
	if !c.allow() {
		c.closeWith(protocol.CloseRateLimited, "rate limited")
		return false
	}
	env, err := protocol.DecodeEnvelope(p)
	if err != nil {
		if errors.Is(err, protocol.ErrSyntax) {
			c.closeWith(protocol.CloseDecodeError, "decode error")
		} else {
			c.closeWith(protocol.CloseUnknownOpcode, "invalid payload")
		}
		return false
	}
	s := c.sess.Load()
	switch env.Op {
	case protocol.OpHeartbeat:
		seq, err := protocol.DecodeHeartbeat(env.D)
		if err != nil {
			c.closeWith(protocol.CloseUnknownOpcode, "invalid heartbeat")
			return false
		}
		c.lastBeat.Store(time.Now().UnixNano())
		if s != nil && seq > 0 {
			// The client holds everything up to seq and will never ask for
			// it again: a resume names a seq at least this high.
			s.ack(c, uint64(seq))
			if g.hub.rep != nil {
				g.hub.rep.ack(s.id, uint64(seq))
			}
		}
		c.send(protocol.HeartbeatACK)
		return true
	case protocol.OpIdentify:
		if s != nil {
			c.closeWith(protocol.CloseAlreadyAuthenticated, "already authenticated")
			return false
		}
		c.loggingIn.Store(true)
		return g.identify(c, env.D)
	case protocol.OpResume:
		if s != nil {
			c.closeWith(protocol.CloseAlreadyAuthenticated, "already authenticated")
			return false
		}
		c.loggingIn.Store(true)
		return g.resume(c, env.D)
	case protocol.OpPresenceUpdate, protocol.OpVoiceState, protocol.OpRequestMembers, protocol.OpRequestSounds, protocol.OpRequestChanInfo:
		if s == nil {
			c.closeWith(protocol.CloseNotAuthenticated, "not authenticated")
			return false
		}
	default:
		c.closeWith(protocol.CloseUnknownOpcode, "unknown opcode")
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	switch env.Op {
	case protocol.OpPresenceUpdate:
		pr, err := protocol.DecodePresence(env.D)
		if err != nil {
			c.closeWith(protocol.CloseUnknownOpcode, "invalid presence")
			return false
		}
		s.mu.Lock()
		s.status, s.acts = pr.Status, activities(pr.Activities)
		guilds := append([]guild.ID(nil), s.guilds...)
		s.mu.Unlock()
		if g.hub.rep != nil {
			g.hub.rep.describe(s)
		}
		for _, gid := range guilds {
			g.opFailed("presence update", gid, g.router.UpdatePresence(ctx, gid, s.user.ID, pr.Status, activities(pr.Activities)))
		}
	case protocol.OpRequestMembers:
		req, err := protocol.DecodeRequestMembers(env.D)
		if err != nil {
			c.closeWith(protocol.CloseUnknownOpcode, "invalid request guild members")
			return false
		}
		if !s.inGuild(req.GuildID) {
			return true
		}
		err = g.router.RequestMembers(ctx, req.GuildID, guild.MembersRequest{Node: g.cfg.NodeID, Session: s.id,
			User: s.user.ID, Intents: s.intents, Query: req.Query, Limit: req.Limit, UserIDs: req.IDs,
			Presences: req.Presences, Nonce: req.Nonce})
		g.opFailed("request guild members", req.GuildID, err)
	case protocol.OpVoiceState:
		v, err := protocol.DecodeVoiceStateUpdate(env.D)
		if err != nil {
			c.closeWith(protocol.CloseUnknownOpcode, "invalid voice state update")
			return false
		}
		if !s.inGuild(v.GuildID) {
			return true
		}
		u := guild.VoiceUpdate{Node: g.cfg.NodeID, Session: s.id, User: s.user.ID, SelfMute: v.SelfMute, SelfDeaf: v.SelfDeaf}
		if v.ChannelID != nil {
			u.ChannelID = *v.ChannelID
		}
		g.opFailed("voice state update", v.GuildID, g.router.UpdateVoiceState(ctx, v.GuildID, u))
	}
	return true
}

// opFailed counts and logs a client operation the guild layer could not
// carry out (an overloaded or unreachable guild). The protocol has no
// answer for it: the client sees the effect missing, as after a lost
// packet, and the connection goes on.
func (g *Gateway) opFailed(op string, gid guild.ID, err error) {
	if err == nil {
		return
	}
	g.metrics.OpFailures.Add(1)
	g.cfg.Logger.Warn("gateway op failed", "op", op, "guild", gid, "err", err)
}

func activities(in []protocol.Activity) []guild.Activity {
	out := make([]guild.Activity, 0, len(in))
	now := time.Now().UnixMilli()
	for _, a := range in {
		out = append(out, guild.Activity{Name: a.Name, Type: a.Type, URL: a.URL, State: a.State, CreatedAt: now})
	}
	return out
}

// closeAuthFailed closes a connection whose token could not be accepted:
// 4004 for a bad token, 4000 (reconnect and try again) when the store
// could not be asked.
func (g *Gateway) closeAuthFailed(c *conn, err error) {
	if errors.Is(err, errStoreUnavailable) {
		g.cfg.Logger.Warn("identify: store unavailable", "err", err)
		c.closeWith(protocol.CloseUnknownError, "store unavailable")
		return
	}
	c.closeWith(protocol.CloseAuthenticationFailed, "authentication failed")
}

// newSessionID returns a random session id that names the node it is
// created on (after the last dot; node ids have no dots): a node taking
// the session over asks that node first (handoff.go).
func newSessionID(node string) string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:]) + "." + node
}

// readyUser is READY's and GET /users/@me's user object.
type readyUser struct {
	guild.User
	Verified   bool `json:"verified"`
	MFAEnabled bool `json:"mfa_enabled"`
}

func (g *Gateway) identify(c *conn, d json.RawMessage) bool {
	id, err := protocol.DecodeIdentify(d)
	if err != nil {
		c.closeWith(protocol.CloseUnknownOpcode, "invalid identify")
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	u, err := g.tokens.authenticate(ctx, id.Token)
	if err != nil {
		g.closeAuthFailed(c, err)
		return false
	}
	if id.Intents == nil || *id.Intents&^protocol.AllIntents != 0 {
		c.closeWith(protocol.CloseInvalidIntents, "invalid intent(s)")
		return false
	}
	intents := *id.Intents
	if u.Bot && intents&protocol.PrivilegedIntents&^protocol.AllowedIntents(u.AppFlags) != 0 {
		c.closeWith(protocol.CloseDisallowedIntents, "disallowed intent(s)")
		return false
	}
	if id.Shard != nil && (len(id.Shard) != 2 || id.Shard[1] < 1 || id.Shard[1] > 4096 || id.Shard[0] < 0 || id.Shard[0] >= id.Shard[1]) {
		c.closeWith(protocol.CloseInvalidShard, "invalid shard")
		return false
	}
	if !g.limits.allow("identify:"+u.ID.String(), g.cfg.IdentifiesPer5s, identifyWindow) {
		c.send(protocol.InvalidSession)
		return true
	}
	all, err := g.store.UserGuilds(ctx, u.ID)
	if err != nil {
		c.closeWith(protocol.CloseUnknownError, "store unavailable")
		return false
	}
	var guilds []guild.ID
	for _, gid := range all {
		if protocol.OnShard(gid, id.Shard) {
			guilds = append(guilds, gid)
		}
	}
	if len(guilds) > g.cfg.MaxGuildsPerSession {
		c.closeWith(protocol.CloseShardingRequired, "sharding required")
		return false
	}
	s := newSession(newSessionID(g.cfg.NodeID), u)
	s.intents, s.shard, s.guilds, s.large = intents, id.Shard, guilds, 50
	if id.LargeThreshold != nil {
		s.large = *id.LargeThreshold
	}
	s.status = "online"
	if id.Presence != nil {
		s.status, s.acts = id.Presence.Status, activities(id.Presence.Activities)
	}
	g.metrics.Identifies.Add(1)
	g.hub.add(s)
	s.attach(c, false, 0)
	c.sess.Store(s)

	ready := protocol.Ready{V: 10, User: readyUser{User: guild.UserObject(u), Verified: true}, SessionID: s.id,
		SessionType: "normal", ResumeGatewayURL: g.cfg.GatewayURL, Shard: id.Shard,
		Application: protocol.ReadyApplication{ID: u.ID, Flags: u.AppFlags}, Guilds: make([]protocol.UnavailableGuild, 0, len(guilds)),
		PrivateChannels: []any{}, Presences: []any{}, Relationships: []any{}, GuildJoinReqs: []any{}}
	for _, gid := range guilds {
		ready.Guilds = append(ready.Guilds, protocol.UnavailableGuild{ID: gid, Unavailable: true})
	}
	if g.hub.rep != nil {
		g.hub.rep.created(s)
	}
	g.hub.push(s, guild.NewEvent(protocol.EventReady, ready))
	for _, gid := range guilds {
		g.subscribe(ctx, s, gid, false)
	}
	return true
}

// subscribe registers s with gid's owner; had says s has the guild's
// state already (guild.Sub.Had: it registers again after a move).
func (g *Gateway) subscribe(ctx context.Context, s *Session, gid guild.ID, had bool) {
	if err := g.trySubscribe(ctx, s, gid, had); err != nil {
		g.cfg.Logger.Warn("subscribe failed", "guild", gid, "session", s.id, "err", err)
		// The guild is unavailable for this session until a later try
		// succeeds; its GUILD_CREATE then says it is back (gateway.md §9.2).
		g.hub.push(s, guild.NewEvent(protocol.EventGuildDelete, protocol.UnavailableGuild{ID: gid, Unavailable: true}))
		go g.resubscribe(s, gid)
	}
}

func (g *Gateway) trySubscribe(ctx context.Context, s *Session, gid guild.ID, had bool) error {
	g.owners.note(g.router, gid)
	sub := s.sub(g.cfg.NodeID)
	sub.Had = had
	if err := g.router.Subscribe(ctx, gid, sub); err != nil {
		return err
	}
	g.hub.subscribed(s, gid)
	return nil
}

// resubscribe retries a failed subscription with backoff (1 s doubling to
// 30 s, about ten minutes in all) while the session lives and the node runs.
func (g *Gateway) resubscribe(s *Session, gid guild.ID) {
	backoff := resubscribeFirst
	for try := 0; try < resubscribeTries; try++ {
		time.Sleep(backoff)
		backoff = min(2*backoff, resubscribeMax)
		g.connsMu.Lock()
		closing := g.closing
		g.connsMu.Unlock()
		if closing || g.hub.get(s.id) != s {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		err := g.trySubscribe(ctx, s, gid, false) // told the guild is out already
		cancel()
		if err == nil {
			return
		}
	}
	g.cfg.Logger.Warn("gave up subscribing", "guild", gid, "session", s.id)
}

func (g *Gateway) resume(c *conn, d json.RawMessage) bool {
	r, err := protocol.DecodeResume(d)
	if err != nil {
		c.closeWith(protocol.CloseUnknownOpcode, "invalid resume")
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	u, err := g.tokens.authenticate(ctx, r.Token)
	if err != nil {
		g.closeAuthFailed(c, err)
		return false
	}
	s := g.hub.get(r.SessionID)
	if s == nil && g.router != nil {
		s = g.takeOver(ctx, r.SessionID, u)
	}
	if s == nil || s.user.ID != u.ID || s.isLeaving() {
		g.metrics.ResumeFailed.Add(1)
		g.cfg.Logger.Debug("resume refused", "session", r.SessionID, "known", s != nil)
		c.send(protocol.InvalidSession)
		return true
	}
	old, result := s.attach(c, true, uint64(*r.Seq))
	switch result {
	case resumeBadSeq:
		g.metrics.ResumeFailed.Add(1)
		g.cfg.Logger.Debug("resume refused: seq not in the log", "session", r.SessionID, "seq", *r.Seq)
		c.closeWith(protocol.CloseInvalidSeq, "invalid seq")
		return false
	case resumeGone:
		g.metrics.ResumeFailed.Add(1)
		g.cfg.Logger.Debug("resume refused: the session ended", "session", r.SessionID)
		c.send(protocol.InvalidSession)
		return true
	}
	if old != nil {
		old.closeWith(protocol.CloseUnknownError, "session resumed elsewhere")
	}
	c.sess.Store(s)
	g.metrics.Resumes.Add(1)
	g.hub.push(s, guild.NewEvent(protocol.EventResumed, struct{}{}))
	c.wake()
	return true
}

// expire ends a session that was not resumed in time.
func (g *Gateway) expire(s *Session) {
	if s.stale(g.cfg.ResumeWindow) {
		g.endSession(s)
	}
}

// endSession forgets a session for good: it leaves its guilds (which marks
// the user offline where this was their last session).
func (g *Gateway) endSession(s *Session) {
	if g.hub.get(s.id) != s {
		return // ended already, or handed to another node
	}
	s.invalidate()
	g.hub.remove(s)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	s.mu.Lock()
	guilds := append([]guild.ID(nil), s.guilds...)
	s.mu.Unlock()
	for _, gid := range guilds {
		if err := g.router.Unsubscribe(ctx, gid, s.id); err != nil {
			// The actor keeps a subscription it can no longer deliver to;
			// deliveries to the forgotten session id are dropped by the hub.
			g.cfg.Logger.Warn("unsubscribe failed", "guild", gid, "session", s.id, "err", err)
		}
	}
}

// Revoke ends every session of a user whose tokens were revoked: each
// gateway connection is closed with 4004 (bots then stop, as for a bad
// token) and its session, which cannot be resumed, ends.
func (g *Gateway) Revoke(user guild.ID) {
	for _, s := range g.hub.userSessions(user) {
		if c := s.current(); c != nil {
			c.closeWith(protocol.CloseAuthenticationFailed, "token revoked")
		}
		g.endSession(s)
	}
}

// Shutdown tells every connected client to reconnect (op 7, gateway.md §10),
// closes its connection with a resumable code, and waits until every
// connection has ended; at ctx's end the rest are cut. In a cluster it then
// waits, at most DrainWait, until other nodes have taken over the sessions
// it told to reconnect, as their clients resume there (handoff.go).
func (g *Gateway) Shutdown(ctx context.Context) {
	told := g.closeConns(ctx)
	if g.router == nil || len(g.router.GatewayNodes()) == 0 {
		return // nobody to hand sessions to
	}
	t := time.NewTimer(g.cfg.DrainWait)
	defer t.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for _, s := range told {
		for g.hub.get(s.id) == s {
			select {
			case <-tick.C:
			case <-t.C:
				g.cfg.Logger.Warn("drain: sessions not taken over by another node in time", "sessions", g.hub.Len())
				return
			}
		}
	}
}

// closeConns sends op 7 to every connection, closes it resumably and waits
// for them all to end; it returns the sessions that were told.
func (g *Gateway) closeConns(ctx context.Context) []*Session {
	g.connsMu.Lock()
	if !g.closing {
		close(g.done)
	}
	g.closing = true
	conns := make([]*conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.connsMu.Unlock()
	var told []*Session
	for _, c := range conns {
		if s := c.sess.Load(); s != nil {
			c.send(protocol.Reconnect)
			told = append(told, s)
		}
		c.closeFrame(protocol.CloseUnknownError, "server shutting down", false)
	}
	done := make(chan struct{})
	go func() { g.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		for _, c := range conns {
			c.nc.Close()
		}
		<-done
	}
	return told
}
