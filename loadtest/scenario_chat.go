package loadtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-voice/chorus/adminapi"
	"github.com/chorus-voice/chorus/protocol"
)

// ChatOptions configures the chat scenario.
type ChatOptions struct {
	// URL is the HTTP base of the node, or a comma-separated list of the
	// nodes of one cluster: sessions are spread over them round-robin, each
	// member sends through its own session's node, and the result has a
	// line per node. The first one runs the admin calls.
	URL        string
	AdminToken string  // to create the users, guilds and channels
	Sessions   int     // users, one gateway session each
	Guilds     int     // one huge guild plus Guilds-1 small ones
	HugeShare  float64 // share of the sessions in the huge guild
	// SizeSkew shapes the other guilds' sizes: guild k of them gets a
	// share proportional to 1/k^SizeSkew (Zipf), so a few are large and
	// most are small, as on real deployments. 0 makes them equal.
	SizeSkew float64
	Rate     float64 // messages per second over all guilds
	Duration time.Duration
	// ChurnPerSecond drops that many random sessions per second (no close
	// frame) and resumes each a moment later: the churn scenario. Every
	// event a dropped session missed must arrive after its resume, so lost
	// and duplicated stay 0.
	ChurnPerSecond float64
	// ReidentifyShare is the share of churned sessions that start over
	// instead of resuming: close 1000, identify afresh, then read what
	// they missed from the channel's history as clients do (counted as
	// recovered_from_history; lost must still be 0).
	ReidentifyShare float64
	// HugeMessages is the share of messages posted in the huge guild; the
	// rest go to a random small guild (default 0.5). Each message comes
	// from a random member of its guild.
	HugeMessages float64
	// Fault, if set, runs an operator command while chat runs (the fault
	// scenario): sessions reconnect by themselves, senders retry with
	// their nonce, and the result says when service recovered and what
	// was lost.
	Fault    *Fault
	Progress func(sent, delivered int64)
	// Procs > 1 holds the sessions in that many worker processes, each
	// started by Worker (this binary as `loadtest chat --worker`, which runs
	// ServeChatWorker): one process holds at most its open-file limit. Not
	// with churn or a fault.
	Procs  int
	Worker func() *exec.Cmd
}

// RunChat builds guilds of realistic sizes (one huge, many small), connects
// every member, has members post at Rate, and measures delivery latency
// from send to every member's receipt, separately for the huge guild and
// the small ones, with lost and duplicated deliveries. It runs in phases:
// build the world, connect, drive (send, churn, fault), settle, report.
func RunChat(ctx context.Context, o ChatOptions) (*Result, error) {
	if o.Sessions < 2 || o.Guilds < 1 || o.Rate <= 0 || o.HugeShare < 0 || o.HugeShare > 1 || o.ReidentifyShare < 0 || o.ReidentifyShare > 1 || o.SizeSkew < 0 {
		return nil, errors.New("loadtest: chat needs sessions >= 2, guilds >= 1, rate > 0, 0 <= huge share <= 1, 0 <= re-identify share <= 1, size skew >= 0")
	}
	if err := o.Fault.validate(o.Duration); err != nil {
		return nil, err
	}
	if o.Fault != nil && o.ChurnPerSecond > 0 {
		return nil, errors.New("loadtest fault: runs under chat without churn, so that every drop is the fault's")
	}
	if o.Procs > 1 && (o.Fault != nil || o.ChurnPerSecond > 0 || o.Worker == nil) {
		return nil, errors.New("loadtest chat: worker processes run plain chat only (no churn, no fault)")
	}
	bases := nodes(o.URL)
	if len(bases) == 0 {
		return nil, errors.New("loadtest: no node URL")
	}
	c := &chatRun{o: o, base: bases[0], start: time.Now(), small: &Histogram{}, hugeH: &Histogram{},
		hc: &http.Client{Timeout: 30 * time.Second}}
	for _, b := range bases {
		c.nodes = append(c.nodes, &chatNode{base: b, lat: &Histogram{}})
	}
	c.r = newResult("chat", map[string]any{"url": o.URL, "sessions": o.Sessions, "guilds": o.Guilds,
		"huge_share": o.HugeShare, "size_skew": o.SizeSkew, "huge_messages": o.HugeMessages, "rate": o.Rate, "duration_s": o.Duration.Seconds()})
	if o.Fault != nil {
		c.fr = &faultRun{Fault: *o.Fault, adminBase: c.base, adminToken: o.AdminToken}
	}
	var err error
	if c.users, c.guilds, err = buildChatWorld(adminapi.New(c.base, o.AdminToken), o); err != nil {
		return nil, err
	}
	if o.Procs > 1 {
		if err := c.runWorkers(ctx); err != nil {
			return nil, err
		}
		c.r.Params["processes"] = o.Procs
		return c.report(ctx)
	}
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	c.drive(ctx)
	c.settle(ctx)
	return c.report(ctx)
}

// chatRun is one run of the chat scenario: its world and what it counted.
type chatRun struct {
	o            ChatOptions
	base         string      // the first node: admin calls, the fault's checks
	nodes        []*chatNode // every node given, in order
	start        time.Time
	hc           *http.Client
	r            *Result
	fr           *faultRun // nil without a fault
	users        []*chatUser
	guilds       []*chatGuild // the huge one first
	small, hugeH *Histogram
	all          *Timed
	readers      sync.WaitGroup

	sendStart, sendEnd                                             time.Time
	delivered, duplicated, sent, expected, failed                  atomic.Int64
	drops, resumeErrors, reidentifies, reidentifyErrors, recovered atomic.Int64
}

// buildChatWorld creates the users, then the guilds and their membership
// through the admin API: the huge guild first, then the others by size.
func buildChatWorld(ad *adminapi.Client, o ChatOptions) ([]*chatUser, []*chatGuild, error) {
	var run [4]byte
	rand.Read(run[:])
	users := make([]*chatUser, o.Sessions)
	for i := range users {
		var u struct {
			User  struct{ ID string } `json:"user"`
			Token string              `json:"token"`
		}
		if err := ad.Do("POST", "/admin/v1/users", map[string]any{"username": fmt.Sprintf("lt%s%05d", hex.EncodeToString(run[:]), i)}, &u); err != nil {
			return nil, nil, err
		}
		users[i] = &chatUser{id: u.User.ID, token: u.Token}
	}
	guilds := make([]*chatGuild, o.Guilds)
	for i := range guilds {
		guilds[i] = &chatGuild{huge: i == 0}
	}
	huge := int(math.Round(o.HugeShare * float64(o.Sessions)))
	if o.Guilds == 1 {
		huge = o.Sessions
	}
	sizes := guildSizes(o.Sessions-huge, o.Guilds-1, o.SizeSkew)
	for i, u := range users {
		g := guilds[0]
		if i >= huge {
			k := 0
			for sizes[k] == 0 {
				k++
			}
			sizes[k]--
			g = guilds[1+k]
		}
		u.guild = g
		g.members = append(g.members, u)
	}
	for i, g := range guilds {
		if len(g.members) == 0 {
			continue
		}
		var gg struct{ ID string }
		if err := ad.Do("POST", "/admin/v1/guilds", map[string]any{"name": fmt.Sprintf("load %d", i), "owner_id": g.members[0].id}, &gg); err != nil {
			return nil, nil, err
		}
		g.id = gg.ID
		var ch struct{ ID string }
		if err := ad.Do("POST", "/admin/v1/guilds/"+g.id+"/channels", map[string]any{"name": "load", "type": 0}, &ch); err != nil {
			return nil, nil, err
		}
		g.channel = ch.ID
		for _, m := range g.members[1:] {
			if err := ad.Do("PUT", "/admin/v1/guilds/"+g.id+"/members/"+m.id, map[string]any{}, nil); err != nil {
				return nil, nil, err
			}
		}
	}
	return users, guilds, nil
}

// connect opens every member's session; each records what it receives.
func (c *chatRun) connect(ctx context.Context) error {
	c.all = NewTimed() // the delivery timeline starts with the first session
	ds := dialers(c.base)
	for i, u := range c.users {
		if u.node == nil { // a worker's members come with theirs
			u.node = c.nodes[i%len(c.nodes)]
		}
		u.node.sessions++
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		gw, err := DialGateway(cctx, ds[i%len(ds)], wsURL(u.node.base), u.token,
			int(protocol.IntentGuilds|protocol.IntentGuildMessages|protocol.IntentMessageContent))
		cancel()
		if err != nil {
			return fmt.Errorf("loadtest: session %d: %w", i, err)
		}
		u.gw = gw
		gw.Resumable.Store(c.o.ChurnPerSecond > 0)
		if c.o.Fault != nil {
			for _, n := range c.nodes {
				if n != u.node {
					gw.Alternates = append(gw.Alternates, wsURL(n.base))
				}
			}
			gw.ReconnectFor = c.o.Fault.recoverWithin()
			gw.Reconnect.Store(true)
		}
		u.seen, u.recovered = map[uint64]bool{}, map[uint64]bool{}
		c.readers.Add(1)
		go c.read(u)
	}
	return nil
}

// read records a member's MESSAGE_CREATEs until its session ends.
func (c *chatRun) read(u *chatUser) {
	defer c.readers.Done()
	for {
		var ev Dispatch
		select {
		case e, ok := <-u.gw.Events:
			if !ok {
				return
			}
			ev = e
		case <-u.gw.Done():
			return
		}
		if ev.T != protocol.EventMessageCreate {
			continue
		}
		var m struct {
			ID      string `json:"id"`
			Content string `json:"content"`
		}
		json.Unmarshal(ev.D, &m)
		sentAt, seq, ok := parseLoad(m.Content)
		if !ok {
			continue
		}
		id, _ := strconv.ParseUint(m.ID, 10, 64)
		if fresh, dup := u.receive(seq, id); !fresh {
			if dup {
				c.duplicated.Add(1)
			}
			continue
		}
		lat := ev.Seen.Sub(time.Unix(0, sentAt))
		c.all.RecordAt(ev.Seen, lat)
		u.node.lat.Record(lat)
		u.node.delivered.Add(1)
		if u.guild.huge {
			c.hugeH.Record(lat)
		} else {
			c.small.Record(lat)
		}
		c.delivered.Add(1)
	}
}

// post sends message seq from u with its nonce enforced, so that a retry
// after a lost answer cannot post it twice; under a fault it retries until
// the fault's recovery bound. It returns the last HTTP status (0: no
// answer).
func (c *chatRun) post(ctx context.Context, u *chatUser, seq uint64) (bool, int) {
	content := loadContent(seq)
	body, _ := json.Marshal(map[string]any{"content": content, "nonce": strconv.FormatUint(seq, 10), "enforce_nonce": true})
	backoff := 50 * time.Millisecond
	node := c.via(u)
	for {
		status, began := 0, time.Now()
		req, _ := http.NewRequestWithContext(ctx, "POST", node.base+"/api/v10/channels/"+u.guild.channel+"/messages", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bot "+u.token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.hc.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
		}
		if c.fr == nil {
			return status == 200, status
		}
		at := time.Now()
		c.fr.attempt(seq, u.guild, began, at, status)
		// 4xx other than 429 will not change on a retry.
		if status == 200 || (status >= 400 && status < 500 && status != 429) || ctx.Err() != nil ||
			at.After(c.sendStart.Add(c.o.Duration+c.fr.recoverWithin())) {
			return status == 200, status
		}
		if status == 0 {
			// Unreachable: the next node of the cluster takes the retry,
			// and the later sends of every member of this one.
			node.unreachable.Store(true)
			node = c.via(u)
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
}

// liveBase is the first node that answers /healthz (the history is read
// through it after a fault, which may have taken the first one down), or
// the first node when none does.
func (c *chatRun) liveBase(ctx context.Context) string {
	for _, n := range c.nodes {
		req, _ := http.NewRequestWithContext(ctx, "GET", n.base+"/healthz", nil)
		if resp, err := c.hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return n.base
			}
		}
	}
	return c.base
}

// via is the node u sends through: its own, or, once that was found
// unreachable, the next one in --url order that was not (under a fault
// that took a node down; a load balancer in front of a cluster does the
// same). With every node unreachable, its own.
func (c *chatRun) via(u *chatUser) *chatNode {
	k := 0
	for i, n := range c.nodes {
		if n == u.node {
			k = i
		}
	}
	for i := range c.nodes {
		if n := c.nodes[(k+i)%len(c.nodes)]; !n.unreachable.Load() {
			return n
		}
	}
	return u.node
}

// drive sends Rate messages per second for Duration, HugeMessages of them
// in the huge guild, each from a random member of its guild, while churn
// and the fault (if any) run.
func (c *chatRun) drive(ctx context.Context) {
	var smallGuilds []*chatGuild
	for _, g := range c.guilds[1:] {
		if len(g.members) > 0 {
			smallGuilds = append(smallGuilds, g)
		}
	}
	hugeMessages := c.o.HugeMessages
	if hugeMessages <= 0 || hugeMessages > 1 {
		hugeMessages = 0.5
	}
	interval := time.Duration(float64(time.Second) / c.o.Rate)
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 1))
	c.sendStart = time.Now()
	if c.fr != nil {
		c.fr.start(ctx, c.sendStart)
	}
	var swg sync.WaitGroup
	sem := make(chan struct{}, 64)
	progress := time.NewTicker(time.Second)
	defer progress.Stop()
	churnDone := make(chan struct{})
	if c.o.ChurnPerSecond > 0 {
		go c.churn(ctx, churnDone)
	} else {
		close(churnDone)
	}
	guilds := c.guilds
	for seq := uint64(1); time.Since(c.sendStart) < c.o.Duration && ctx.Err() == nil; seq++ {
		if wait := time.Until(c.sendStart.Add(time.Duration(seq-1) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		select {
		case <-progress.C:
			if c.o.Progress != nil {
				c.o.Progress(c.sent.Load(), c.delivered.Load())
			}
		default:
		}
		g := guilds[0]
		if len(smallGuilds) > 0 && (len(g.members) == 0 || rng.Float64() >= hugeMessages) {
			g = smallGuilds[rng.IntN(len(smallGuilds))]
		}
		u := g.members[rng.IntN(len(g.members))]
		sem <- struct{}{}
		swg.Add(1)
		go func(u *chatUser, seq uint64) {
			defer swg.Done()
			defer func() { <-sem }()
			ok, status := c.post(ctx, u, seq)
			if !ok {
				c.failed.Add(1)
				u.node.failed.Add(1)
				if status != 0 {
					c.r.addFailure(fmt.Sprintf("http-%d", status))
				}
				return
			}
			c.sent.Add(1)
			u.node.sent.Add(1)
			c.expected.Add(int64(len(u.guild.members)))
			for _, m := range u.guild.members {
				m.node.expected.Add(1)
			}
		}(u, seq)
	}
	swg.Wait()
	<-churnDone
	c.sendEnd = time.Now()
}

// churn drops ChurnPerSecond random sessions per second while sending
// runs: most resume a moment later, ReidentifyShare start over and catch
// up from the channel's history.
func (c *chatRun) churn(ctx context.Context, done chan struct{}) {
	defer close(done)
	crng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 3))
	every := time.Duration(float64(time.Second) / c.o.ChurnPerSecond)
	var cwg sync.WaitGroup
	for time.Since(c.sendStart) < c.o.Duration && ctx.Err() == nil {
		time.Sleep(every)
		u := c.users[crng.IntN(len(c.users))]
		pause := time.Duration(50+crng.IntN(150)) * time.Millisecond
		if !u.churning.CompareAndSwap(false, true) {
			continue // one drop at a time per session, as a real client
		}
		cwg.Add(1)
		if crng.Float64() < c.o.ReidentifyShare {
			go func() {
				defer cwg.Done()
				defer u.churning.Store(false)
				c.reidentifies.Add(1)
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if err := u.gw.Reidentify(rctx); err != nil {
					c.reidentifyErrors.Add(1)
					return
				}
				for u.gw.Recovering() && rctx.Err() == nil {
					time.Sleep(10 * time.Millisecond)
				}
				n, err := u.catchUp(rctx, c.hc, u.node.base)
				if err != nil || u.gw.Recovering() {
					c.reidentifyErrors.Add(1)
				}
				c.recovered.Add(int64(n))
				u.node.recovered.Add(int64(n))
			}()
			continue
		}
		go func() {
			defer cwg.Done()
			defer u.churning.Store(false)
			u.gw.Drop()
			c.drops.Add(1)
			time.Sleep(pause)
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := u.gw.Resume(rctx); err != nil {
				c.resumeErrors.Add(1)
			}
		}()
	}
	cwg.Wait()
}

func (c *chatRun) resumedAll() int64 {
	var n int64
	for _, u := range c.users {
		n += u.gw.Resumed.Load()
	}
	return n
}

func (c *chatRun) gateways() []*GatewayClient {
	gws := make([]*GatewayClient, len(c.users))
	for i, u := range c.users {
		gws[i] = u.gw
	}
	return gws
}

// settle waits until every expected delivery (and every RESUMED) arrived,
// or 5 s passed (under a fault, until the fault run says), then closes
// every session.
func (c *chatRun) settle(ctx context.Context) {
	if c.fr != nil {
		c.fr.settle(ctx, c.gateways(), c.delivered.Load, c.expected.Load)
	} else {
		deadline := time.Now().Add(5 * time.Second)
		for (c.delivered.Load()+c.recovered.Load() < c.expected.Load() || c.resumedAll() < c.drops.Load()-c.resumeErrors.Load()) &&
			time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, u := range c.users {
		u.gw.Close()
	}
	c.readers.Wait()
}

// report turns what the run counted into its Result.
func (c *chatRun) report(ctx context.Context) (*Result, error) {
	r, guilds := c.r, c.guilds
	sendTime := c.sendEnd.Sub(c.sendStart)
	r.Counters["sessions"] = float64(len(c.users))
	r.Counters["sent"] = float64(c.sent.Load())
	r.Counters["send_failed"] = float64(c.failed.Load())
	r.Counters["expected_deliveries"] = float64(c.expected.Load())
	r.Counters["delivered"] = float64(c.delivered.Load())
	r.Counters["lost"] = float64(c.expected.Load() - c.delivered.Load() - c.recovered.Load())
	r.Counters["duplicated"] = float64(c.duplicated.Load())
	r.Counters["deliveries_per_s"] = float64(c.delivered.Load()) / sendTime.Seconds()
	r.Counters["huge_guild_members"] = float64(len(guilds[0].members))
	if len(guilds) > 1 {
		r.Counters["largest_other_guild_members"] = float64(len(guilds[1].members))
		r.Counters["smallest_other_guild_members"] = float64(len(guilds[len(guilds)-1].members))
	}
	if c.o.ChurnPerSecond > 0 {
		r.Scenario = "churn"
		invalidated := int64(0)
		for _, u := range c.users {
			invalidated += u.gw.Invalidated.Load()
		}
		r.Counters["drops"] = float64(c.drops.Load())
		r.Counters["resumed"] = float64(c.resumedAll())
		r.Counters["resume_errors"] = float64(c.resumeErrors.Load())
		r.Counters["invalid_sessions"] = float64(invalidated)
		r.Counters["reidentified"] = float64(c.reidentifies.Load())
		r.Counters["reidentify_errors"] = float64(c.reidentifyErrors.Load())
		r.Counters["recovered_from_history"] = float64(c.recovered.Load())
		r.Counters["missed_after_resume"] = r.Counters["lost"]
	}
	if c.fr != nil {
		if err := c.fr.report(ctx, r, c.liveBase(ctx), c.sendStart, c.all, c.gateways(), guilds); err != nil {
			return nil, err
		}
	}
	r.Latency["delivery"] = c.all.Summarize()
	r.TimelineOf, r.Timeline = "delivery", c.all.Timeline()
	r.Latency["delivery_huge"] = c.hugeH.Summarize()
	r.Latency["delivery_small"] = c.small.Summarize()
	if len(c.nodes) > 1 {
		c.reportNodes(r)
	}
	r.Seconds = time.Since(c.start).Seconds()
	return r, nil
}

var failMu sync.Mutex

func (r *Result) addFailure(key string) {
	failMu.Lock()
	r.Failures[key]++
	failMu.Unlock()
}

// chatNode is one node of the cluster under test: the sessions placed on
// it and what they received, the sends made through it.
type chatNode struct {
	base                                         string
	sessions                                     int
	lat                                          *Histogram // delivery latency to its sessions
	delivered, expected, recovered, sent, failed atomic.Int64
	unreachable                                  atomic.Bool // a send found it down
}

// reportNodes adds a line per node: "node<k>_*" counters and a
// "delivery_node<k>" latency (k counts from 1 in --url order; the params
// name each node's URL).
func (c *chatRun) reportNodes(r *Result) {
	urls := make([]string, len(c.nodes))
	for k, n := range c.nodes {
		urls[k] = n.base
		p := fmt.Sprintf("node%d_", k+1)
		r.Counters[p+"sessions"] = float64(n.sessions)
		r.Counters[p+"sent"] = float64(n.sent.Load())
		r.Counters[p+"send_failed"] = float64(n.failed.Load())
		r.Counters[p+"delivered"] = float64(n.delivered.Load())
		// The node's share of "lost" (chat) or "missed_live" (fault, where
		// "lost" means acknowledged and not stored).
		r.Counters[p+"missed"] = float64(n.expected.Load() - n.delivered.Load() - n.recovered.Load())
		r.Latency[fmt.Sprintf("delivery_node%d", k+1)] = n.lat.Summarize()
	}
	r.Params["nodes"] = urls
}
