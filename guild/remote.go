package guild

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/chorus-voice/chorus/ring"
	"github.com/chorus-voice/chorus/store"
)

// Every guild operation runs on the node the ring names as the guild's
// owner. An operation is defined once (defineOp): its local form runs on
// the owner's actor; run sends it there when the owner is another node,
// as a request that carries the ring revision the caller placed it with.
// The receiver answers "moved" when it does not own the guild at its own
// view (waiting briefly first if the caller's view is newer than its own),
// and the caller retries once its own ring is newer than the one it used
// (DESIGN.md "Cluster", issue 10 §3).

// Peers carries calls and event batches to the other nodes of the cluster.
// A node alone has none (Deps.Peers nil): every guild is its own.
type Peers interface {
	// Call sends a request to node and returns its reply. An error other
	// than ctx's own means the node could not be reached (gone, not yet
	// serving): the caller waits for a newer ring and tries again.
	Call(ctx context.Context, node string, req []byte) ([]byte, error)
	// Send delivers a batch of events to node, in the order sent.
	Send(node string, batch []byte) error
}

// Timing of calls to other nodes.
const (
	// maxMoves bounds how often one call follows "moved" or an unreachable
	// owner before it answers ErrUnavailable.
	maxMoves = 4
	// moveWait bounds each wait for a newer ring. A dead owner leaves the
	// ring once its heartbeat expires (cluster.DefaultTTL); callers during
	// that gap get ErrUnavailable (503) and retry.
	moveWait = 1500 * time.Millisecond
	// callTimeout bounds a call whose caller set no deadline.
	callTimeout = 10 * time.Second
	// maxServedCalls bounds the calls from other nodes running at once;
	// past it they are answered ErrOverloaded.
	maxServedCalls = 1024
)

// ErrUnavailable is a guild whose owner cannot be reached at the moment:
// it is moving between nodes (a node died or joined) or this node is
// fenced off the cluster. Try again shortly.
var ErrUnavailable = errors.New("guild: temporarily unavailable while the cluster moves it")

// errMoved is a remote owner's "not mine at my revision".
var errMoved = errors.New("guild: moved")

// op is one guild operation, runnable on whichever node owns the guild.
type op[Req, Resp any] struct {
	name  string
	local func(r *Router, ctx context.Context, req Req) (Resp, error)
}

// ops serves calls from other nodes, by operation name.
var ops = map[string]func(ctx context.Context, r *Router, body []byte) ([]byte, error){}

// defineOp registers an operation under a name unique in the package.
func defineOp[Req, Resp any](name string, local func(*Router, context.Context, Req) (Resp, error)) op[Req, Resp] {
	if _, dup := ops[name]; dup {
		panic("guild: operation defined twice: " + name)
	}
	ops[name] = func(ctx context.Context, r *Router, body []byte) ([]byte, error) {
		var req Req
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, fmt.Errorf("guild: %s: request: %w", name, err)
		}
		resp, err := local(r, ctx, req)
		if err != nil {
			return nil, err
		}
		return json.Marshal(resp)
	}
	return op[Req, Resp]{name: name, local: local}
}

// none is the reply of operations that answer only an error.
type none struct{}

// run performs the operation on the guild's owner.
func (o op[Req, Resp]) run(ctx context.Context, r *Router, guild ID, req Req) (Resp, error) {
	var zero Resp
	if r.peers == nil {
		return o.local(r, ctx, req)
	}
	var body []byte
	for attempt := 0; ; attempt++ {
		view := r.place.Ring()
		owner, ok := view.Owner(ring.RoleGuild, uint64(guild))
		switch {
		case !ok:
			// No owner in view: this node is fenced, or no node serves guilds.
		case owner.ID == r.place.ID():
			resp, err := o.local(r, ctx, req)
			if !errors.Is(err, ErrNotOwner) && !errors.Is(err, store.ErrFenced) {
				return resp, err
			}
			// Not the owner after all: the ring changed under the call, or
			// the store refused the actor's write because a newer owner
			// claimed the guild (this node's view is stale: it was paused).
		default:
			if body == nil {
				b, err := json.Marshal(req)
				if err != nil {
					return zero, err
				}
				body = b
			}
			out, err := r.callRemote(ctx, owner.ID, o.name, guild, view.Revision, body)
			if err == nil {
				var resp Resp
				if err := json.Unmarshal(out, &resp); err != nil {
					return zero, fmt.Errorf("guild: %s: reply from %s: %w", o.name, owner.ID, err)
				}
				return resp, nil
			}
			if !errors.Is(err, errMoved) && !errors.Is(err, errUnreachable) {
				return zero, err
			}
		}
		if attempt+1 >= maxMoves || !r.awaitNewer(ctx, view.Revision) {
			return zero, ErrUnavailable
		}
	}
}

// errUnreachable wraps a Peers.Call failure that was not the caller's own
// deadline: the owner is gone or not serving yet.
var errUnreachable = errors.New("guild: owner unreachable")

// callRequest and callReply are the wire form of a call between nodes.
type callRequest struct {
	Op string `json:"op"`
	// Direct calls are for the node itself, not for a guild's owner: no
	// ownership check.
	Direct bool            `json:"direct,omitempty"`
	Guild  ID              `json:"guild"`
	Rev    uint64          `json:"rev"`
	TTL    int64           `json:"ttl_ms"` // the caller's remaining deadline
	Body   json.RawMessage `json:"body"`
}

type callReply struct {
	Body json.RawMessage `json:"body,omitempty"`
	Err  string          `json:"err,omitempty"`
	Msg  string          `json:"msg,omitempty"`
	Form *FormError      `json:"form,omitempty"`
}

// callRemote calls the guild's owner, and abandons the call (errMoved) as
// soon as the ring no longer names that node: an owner that stopped
// answering — paused, partitioned — leaves the ring within its heartbeat
// TTL, and the caller must not wait out its whole deadline on it. (An owner
// that died answers at once: NATS has no responder for its subject.)
func (r *Router) callRemote(ctx context.Context, node, name string, guild ID, rev uint64, body []byte) ([]byte, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			ch := r.place.Changed()
			if o, ok := r.place.Ring().Owner(ring.RoleGuild, uint64(guild)); !ok || o.ID != node {
				cancel(errMoved)
				return
			}
			select {
			case <-ch:
			case <-done:
				return
			}
		}
	}()
	out, err := r.callNode(ctx, node, callRequest{Op: name, Guild: guild, Rev: rev, Body: body})
	if err != nil && errors.Is(context.Cause(ctx), errMoved) {
		return nil, errMoved
	}
	return out, err
}

func (r *Router) callNode(ctx context.Context, node string, call callRequest) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, callTimeout)
		defer cancel()
	}
	dl, _ := ctx.Deadline()
	call.TTL = time.Until(dl).Milliseconds()
	req, err := json.Marshal(call)
	if err != nil {
		return nil, err
	}
	r.stats.callsSent.Add(1)
	out, err := r.peers.Call(ctx, node, req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %s: %v", errUnreachable, node, err)
	}
	var rep callReply
	if err := json.Unmarshal(out, &rep); err != nil {
		return nil, fmt.Errorf("guild: reply from %s: %w", node, err)
	}
	if rep.Err == "" {
		return rep.Body, nil
	}
	if rep.Err == "moved" {
		r.stats.movedSeen.Add(1)
	}
	return nil, decodeError(rep)
}

// awaitNewer waits until the ring's revision passes rev, for at most
// moveWait, and reports whether it did.
func (r *Router) awaitNewer(ctx context.Context, rev uint64) bool {
	t := time.NewTimer(moveWait)
	defer t.Stop()
	for {
		ch := r.place.Changed()
		if r.place.Ring().Revision > rev {
			return true
		}
		select {
		case <-ch:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// ServeCall answers a call from another node (the Peers.Call at its end).
func (r *Router) ServeCall(data []byte) []byte {
	var req callRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return encodeReply(nil, fmt.Errorf("guild: malformed call: %w", err))
	}
	fn := ops[req.Op]
	if fn == nil {
		return encodeReply(nil, fmt.Errorf("guild: unknown operation %q", req.Op))
	}
	select {
	case r.served <- struct{}{}:
		defer func() { <-r.served }()
	default:
		return encodeReply(nil, ErrOverloaded)
	}
	r.stats.callsServed.Add(1)
	ttl := time.Duration(req.TTL) * time.Millisecond
	if ttl <= 0 || ttl > callTimeout {
		ttl = callTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), ttl)
	defer cancel()
	if req.Direct {
		// A direct call that names the caller's ring revision is answered
		// from a view at least as new, if it comes soon (directRevWait).
		if req.Rev > r.place.Ring().Revision {
			wctx, cancel := context.WithTimeout(ctx, directRevWait)
			r.awaitNewer(wctx, req.Rev-1)
			cancel()
		}
		return encodeReply(fn(ctx, r, req.Body))
	}
	// The caller placed the guild with a view this node may not have seen
	// yet (it joined a moment ago): wait for it rather than answer from an
	// older one.
	if r.place.Ring().Revision < req.Rev {
		r.awaitNewer(ctx, req.Rev-1)
	}
	view := r.place.Ring()
	if owner, ok := view.Owner(ring.RoleGuild, uint64(req.Guild)); !ok || owner.ID != r.place.ID() {
		r.stats.movedSent.Add(1)
		return encodeReply(nil, errMoved)
	}
	out, err := fn(ctx, r, req.Body)
	if errors.Is(err, ErrNotOwner) || errors.Is(err, store.ErrFenced) {
		r.stats.movedSent.Add(1)
		err = errMoved
	}
	return encodeReply(out, err)
}

// adoptTimeout bounds a new owner's wait for the other nodes' lists of
// subscribers when it loads a guild.
const adoptTimeout = 2 * time.Second

// opSubscribers answers, on every node, which of its sessions subscribed
// to a guild (a direct call: a new owner asks each gateway node).
var opSubscribers = defineOp("subscribers", func(r *Router, _ context.Context, guild ID) ([]Sub, error) {
	r.out.flush() // events this node queued before the move go out first
	return r.sessions.Subscribers(guild), nil
})

// directRevWait bounds how long a direct call waits for the caller's ring
// revision to arrive here: the membership change reaches every node within
// milliseconds of each other, and a node that lags more (paused, cut off)
// answers from the view it has.
const directRevWait = 250 * time.Millisecond

// previousOwnerWait bounds the wait for a previous owner that is no longer
// on the ring: a node that left gracefully answers at once, a dead one
// meets "no responders" at once; only a paused or cut-off one costs this.
const previousOwnerWait = 250 * time.Millisecond

// subscribers gathers the subscriptions to guild that sessions on every
// gateway node made before, for the owner loading it to adopt: the guild
// moves between nodes and its sessions keep receiving its events, with no
// window in which the new owner delivers to nobody. A node that does not
// answer in time keeps its sessions' subscriptions to re-register itself
// (its ring sweep).
func (r *Router) subscribers(ctx context.Context, guild ID) []Sub {
	subs := r.sessions.Subscribers(guild)
	if r.peers == nil {
		return subs
	}
	body, _ := json.Marshal(guild) // a snowflake: cannot fail
	ctx, cancel := context.WithTimeout(ctx, adoptTimeout)
	defer cancel()
	type answer struct {
		subs []Sub
		err  error
	}
	var asked int
	answers := make(chan answer)
	view := r.place.Ring()
	ask := func(node string, ctx context.Context) {
		asked++
		go func() {
			// Rev: each node answers from a view at least as new as this
			// one (ServeCall): a node that keeps copies of a dead node's
			// sessions lists them once its ring says the node is gone.
			out, err := r.callNode(ctx, node, callRequest{Op: opSubscribers.name, Guild: guild, Direct: true, Rev: view.Revision, Body: body})
			var got []Sub
			if err == nil {
				err = json.Unmarshal(out, &got)
			}
			answers <- answer{got, err}
		}()
	}
	for _, n := range view.Nodes() {
		if n.ID != r.place.ID() && n.Roles&ring.RoleGateway != 0 {
			ask(n.ID, ctx)
		}
	}
	// The guild's previous owner, if it left the ring, flushes what it
	// queued before the move (opSubscribers), so that its last events
	// arrive everywhere before this node's first.
	if prev := r.previousOwner(guild); prev != "" && !view.Has(prev) {
		pctx, cancel := context.WithTimeout(ctx, previousOwnerWait)
		defer cancel()
		ask(prev, pctx)
	}
	for i := 0; i < asked; i++ {
		a := <-answers
		if a.err != nil {
			r.stats.adoptFailed.Add(1)
			continue
		}
		subs = append(subs, a.subs...)
	}
	return subs
}

// wireErrors names the errors that cross nodes as themselves, so the edge
// of the calling node maps them as if the guild were local.
var wireErrors = map[string]error{
	"moved":               errMoved,
	"unknown_guild":       ErrUnknownGuild,
	"unknown_channel":     ErrUnknownChannel,
	"unknown_member":      ErrUnknownMember,
	"unknown_message":     ErrUnknownMessage,
	"unknown_role":        ErrUnknownRole,
	"unknown_user":        ErrUnknownUser,
	"missing_access":      ErrMissingAccess,
	"missing_permissions": ErrMissingPermissions,
	"not_author":          ErrNotAuthor,
	"empty_message":       ErrEmptyMessage,
	"not_text_channel":    ErrNotTextChannel,
	"overloaded":          ErrOverloaded,
	"unavailable":         ErrUnavailable,
	"deadline":            context.DeadlineExceeded,
}

func encodeReply(body []byte, err error) []byte {
	rep := callReply{Body: body}
	if err != nil {
		rep.Body, rep.Err, rep.Msg = nil, "other", err.Error()
		var fe *FormError
		if errors.As(err, &fe) {
			rep.Err, rep.Form = "form", fe
		}
		for code, e := range wireErrors {
			if errors.Is(err, e) {
				rep.Err = code
				break
			}
		}
	}
	b, _ := json.Marshal(rep) // strings and raw JSON we made: cannot fail
	return b
}

// RemoteError is an error another node answered that has no local
// sentinel (a store failure there, say).
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return "guild: remote: " + e.Msg }

func decodeError(rep callReply) error {
	if e, ok := wireErrors[rep.Err]; ok {
		return e
	}
	if rep.Err == "form" && rep.Form != nil {
		return rep.Form
	}
	return &RemoteError{Msg: rep.Msg}
}

// previousOwner names the guild's owner in the rings before the current
// one that this node saw (Router.follow), if another node owned it.
func (r *Router) previousOwner(guild ID) string {
	for _, rg := range []*ring.Ring{r.lastRing.Load(), r.prevRing.Load()} {
		if rg == nil {
			continue
		}
		if o, ok := rg.Owner(ring.RoleGuild, uint64(guild)); ok && o.ID != r.place.ID() {
			return o.ID
		}
	}
	return ""
}
