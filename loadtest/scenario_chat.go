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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-voice/chorus/adminapi"
	"github.com/chorus-voice/chorus/protocol"
)

// ChatOptions configures the chat scenario.
type ChatOptions struct {
	URL        string  // HTTP base of the node
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
}

// RunChat builds guilds of realistic sizes (one huge, many small), connects
// every member, has members post at Rate, and measures delivery latency
// from send to every member's receipt, separately for the huge guild and
// the small ones, with lost and duplicated deliveries.
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
	base := strings.TrimRight(o.URL, "/")
	ad := adminapi.New(base, o.AdminToken)
	r := newResult("chat", map[string]any{"url": o.URL, "sessions": o.Sessions, "guilds": o.Guilds,
		"huge_share": o.HugeShare, "size_skew": o.SizeSkew, "huge_messages": o.HugeMessages, "rate": o.Rate, "duration_s": o.Duration.Seconds()})
	start := time.Now()

	// Users, then guild membership: the huge guild first, then the others by size.
	var run [4]byte
	rand.Read(run[:])
	users := make([]*chatUser, o.Sessions)
	for i := range users {
		var u struct {
			User  struct{ ID string } `json:"user"`
			Token string              `json:"token"`
		}
		if err := ad.Do("POST", "/admin/v1/users", map[string]any{"username": fmt.Sprintf("lt%s%05d", hex.EncodeToString(run[:]), i)}, &u); err != nil {
			return nil, err
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
			return nil, err
		}
		g.id = gg.ID
		var ch struct{ ID string }
		if err := ad.Do("POST", "/admin/v1/guilds/"+g.id+"/channels", map[string]any{"name": "load", "type": 0}, &ch); err != nil {
			return nil, err
		}
		g.channel = ch.ID
		for _, m := range g.members[1:] {
			if err := ad.Do("PUT", "/admin/v1/guilds/"+g.id+"/members/"+m.id, map[string]any{}, nil); err != nil {
				return nil, err
			}
		}
	}

	// Every member connects and records what it receives.
	small, hugeH, all := &Histogram{}, &Histogram{}, NewTimed()
	var delivered, duplicated atomic.Int64
	ds := dialers(base)
	var wg sync.WaitGroup
	for i, u := range users {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		gw, err := DialGateway(cctx, ds[i%len(ds)], wsURL(base), u.token, 1|1<<9|1<<15)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("loadtest: session %d: %w", i, err)
		}
		u.gw = gw
		gw.Resumable.Store(o.ChurnPerSecond > 0)
		if o.Fault != nil {
			gw.ReconnectFor = o.Fault.recoverWithin()
			gw.Reconnect.Store(true)
		}
		u.seen, u.recovered = map[uint64]bool{}, map[uint64]bool{}
		wg.Add(1)
		go func(u *chatUser) {
			defer wg.Done()
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
						duplicated.Add(1)
					}
					continue
				}
				lat := ev.Seen.Sub(time.Unix(0, sentAt))
				all.RecordAt(ev.Seen, lat)
				if u.guild.huge {
					hugeH.Record(lat)
				} else {
					small.Record(lat)
				}
				delivered.Add(1)
			}
		}(u)
	}

	// Senders: Rate messages per second, HugeMessages of them in the huge
	// guild, each from a random member of its guild.
	var smallGuilds []*chatGuild
	for _, g := range guilds[1:] {
		if len(g.members) > 0 {
			smallGuilds = append(smallGuilds, g)
		}
	}
	hugeMessages := o.HugeMessages
	if hugeMessages <= 0 || hugeMessages > 1 {
		hugeMessages = 0.5
	}
	var sent, expected, failed atomic.Int64
	hc := &http.Client{Timeout: 30 * time.Second}
	var sendStart time.Time
	var fr *faultRun
	if o.Fault != nil {
		fr = &faultRun{Fault: *o.Fault}
	}
	// post sends message seq from u with its nonce enforced, so that a
	// retry after a lost answer cannot post it twice; under a fault it
	// retries until the fault's recovery bound. It returns the last HTTP
	// status (0: no answer).
	post := func(u *chatUser, seq uint64) (bool, int) {
		content := loadContent(seq)
		body, _ := json.Marshal(map[string]any{"content": content, "nonce": strconv.FormatUint(seq, 10), "enforce_nonce": true})
		backoff := 50 * time.Millisecond
		for attempt := 0; ; attempt++ {
			status, began := 0, time.Now()
			req, _ := http.NewRequestWithContext(ctx, "POST", base+"/api/v10/channels/"+u.guild.channel+"/messages", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bot "+u.token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
			}
			if fr == nil {
				return status == 200, status
			}
			at := time.Now()
			fr.attempt(seq, u.guild, began, at, status == 200)
			// 4xx other than 429 will not change on a retry.
			if status == 200 || (status >= 400 && status < 500 && status != 429) || ctx.Err() != nil ||
				at.After(sendStart.Add(o.Duration+fr.recoverWithin())) {
				return status == 200, status
			}
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
		}
	}
	interval := time.Duration(float64(time.Second) / o.Rate)
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 1))
	sendStart = time.Now()
	if fr != nil {
		fr.start(ctx, sendStart)
	}
	var swg sync.WaitGroup
	sem := make(chan struct{}, 64)
	progress := time.NewTicker(time.Second)
	defer progress.Stop()
	var drops, resumeErrors, reidentifies, reidentifyErrors, recovered atomic.Int64
	churnDone := make(chan struct{})
	if o.ChurnPerSecond > 0 {
		go func() {
			defer close(churnDone)
			crng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 3))
			every := time.Duration(float64(time.Second) / o.ChurnPerSecond)
			var cwg sync.WaitGroup
			for time.Since(sendStart) < o.Duration && ctx.Err() == nil {
				time.Sleep(every)
				u := users[crng.IntN(len(users))]
				pause := time.Duration(50+crng.IntN(150)) * time.Millisecond
				if !u.churning.CompareAndSwap(false, true) {
					continue // one drop at a time per session, as a real client
				}
				cwg.Add(1)
				if crng.Float64() < o.ReidentifyShare {
					go func() {
						defer cwg.Done()
						defer u.churning.Store(false)
						reidentifies.Add(1)
						rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
						defer cancel()
						if err := u.gw.Reidentify(rctx); err != nil {
							reidentifyErrors.Add(1)
							return
						}
						for u.gw.Recovering() && rctx.Err() == nil {
							time.Sleep(10 * time.Millisecond)
						}
						n, err := u.catchUp(rctx, hc, base)
						if err != nil || u.gw.Recovering() {
							reidentifyErrors.Add(1)
						}
						recovered.Add(int64(n))
					}()
					continue
				}
				go func() {
					defer cwg.Done()
					defer u.churning.Store(false)
					u.gw.Drop()
					drops.Add(1)
					time.Sleep(pause)
					rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					defer cancel()
					if err := u.gw.Resume(rctx); err != nil {
						resumeErrors.Add(1)
					}
				}()
			}
			cwg.Wait()
		}()
	} else {
		close(churnDone)
	}
	for seq := uint64(1); time.Since(sendStart) < o.Duration && ctx.Err() == nil; seq++ {
		if wait := time.Until(sendStart.Add(time.Duration(seq-1) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		select {
		case <-progress.C:
			if o.Progress != nil {
				o.Progress(sent.Load(), delivered.Load())
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
			ok, status := post(u, seq)
			if !ok {
				failed.Add(1)
				if status != 0 {
					r.addFailure(fmt.Sprintf("http-%d", status))
				}
				return
			}
			sent.Add(1)
			expected.Add(int64(len(u.guild.members)))
		}(u, seq)
	}
	swg.Wait()
	<-churnDone
	sendTime := time.Since(sendStart)
	// Drain: wait until every expected delivery (and every RESUMED) arrived,
	// or 5 s passed.
	resumedAll := func() int64 {
		var n int64
		for _, u := range users {
			n += u.gw.Resumed.Load()
		}
		return n
	}
	gws := make([]*GatewayClient, len(users))
	for i, u := range users {
		gws[i] = u.gw
	}
	if fr != nil {
		fr.settle(ctx, gws, delivered.Load)
	} else {
		deadline := time.Now().Add(5 * time.Second)
		for (delivered.Load()+recovered.Load() < expected.Load() || resumedAll() < drops.Load()-resumeErrors.Load()) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, u := range users {
		u.gw.Close()
	}
	wg.Wait()

	r.Counters["sessions"] = float64(len(users))
	r.Counters["sent"] = float64(sent.Load())
	r.Counters["send_failed"] = float64(failed.Load())
	r.Counters["expected_deliveries"] = float64(expected.Load())
	r.Counters["delivered"] = float64(delivered.Load())
	r.Counters["lost"] = float64(expected.Load() - delivered.Load() - recovered.Load())
	r.Counters["duplicated"] = float64(duplicated.Load())
	r.Counters["deliveries_per_s"] = float64(delivered.Load()) / sendTime.Seconds()
	r.Counters["huge_guild_members"] = float64(len(guilds[0].members))
	if len(guilds) > 1 {
		r.Counters["largest_other_guild_members"] = float64(len(guilds[1].members))
		r.Counters["smallest_other_guild_members"] = float64(len(guilds[len(guilds)-1].members))
	}
	if o.ChurnPerSecond > 0 {
		r.Scenario = "churn"
		resumed, invalidated := resumedAll(), int64(0)
		for _, u := range users {
			invalidated += u.gw.Invalidated.Load()
		}
		r.Counters["drops"] = float64(drops.Load())
		r.Counters["resumed"] = float64(resumed)
		r.Counters["resume_errors"] = float64(resumeErrors.Load())
		r.Counters["invalid_sessions"] = float64(invalidated)
		r.Counters["reidentified"] = float64(reidentifies.Load())
		r.Counters["reidentify_errors"] = float64(reidentifyErrors.Load())
		r.Counters["recovered_from_history"] = float64(recovered.Load())
		r.Counters["missed_after_resume"] = r.Counters["lost"]
	}
	if fr != nil {
		if err := fr.report(ctx, r, base, sendStart, all, gws, guilds); err != nil {
			return nil, err
		}
	}
	r.Latency["delivery"] = all.Summarize()
	r.TimelineOf, r.Timeline = "delivery", all.Timeline()
	r.Latency["delivery_huge"] = hugeH.Summarize()
	r.Latency["delivery_small"] = small.Summarize()
	r.Seconds = time.Since(start).Seconds()
	return r, nil
}

var failMu sync.Mutex

func (r *Result) addFailure(key string) {
	failMu.Lock()
	r.Failures[key]++
	failMu.Unlock()
}
