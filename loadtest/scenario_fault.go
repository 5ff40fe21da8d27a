package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chorus-voice/chorus/adminapi"
)

// Fault is an operator command run at a given moment while the chat
// scenario runs: the fault scenario. "Kill a node and start it again" is
// the typical one. Clients behave as client libraries do meanwhile:
// sessions resume or identify afresh by themselves (GatewayClient.Reconnect)
// and senders retry each message with its nonce enforced, so a retry after
// a lost answer cannot post it twice.
type Fault struct {
	// Command runs under "sh -c" At after sending started. Its output goes
	// to Output when set (the CLI uses a log file): a command that starts a
	// server in the background must not keep a pipe of ours open.
	Command string
	At      time.Duration
	Output  *os.File
	// Heal, with Command, runs under "sh -c" HealAfter after Command began:
	// it ends a fault that lasts, such as a partition made by Command.
	Heal      string
	HealAfter time.Duration
	// Signal, instead of Command, is sent to the chorus process behind
	// Node (a node's HTTP base) at At: SIGKILL, SIGTERM, or SIGSTOP
	// followed by SIGCONT StopFor later (the fault scenario's kill, stop
	// and graceful stop of one node of a cluster). The process comes from
	// the cluster record, asked of the first node through the admin API
	// (under chat, whose admin token it uses) and matched by HTTP address;
	// the node must run on this machine.
	Signal  syscall.Signal
	Node    string
	StopFor time.Duration
	// Run, instead of Command or Signal, is called At (a program that
	// embeds the load tester, or a test, makes the fault itself: a rolling
	// restart of the processes it started). Its error fails the fault.
	Run func(context.Context) error
	// RecoverWithin bounds how long after the fault clients keep trying,
	// and how long the run waits for them (default 60 s).
	RecoverWithin time.Duration
}

// validate checks f for a run whose measured part lasts window.
func (f *Fault) validate(window time.Duration) error {
	if f == nil {
		return nil
	}
	switch {
	case strings.TrimSpace(f.Command) == "" && f.Signal == 0 && f.Run == nil:
		return errors.New("loadtest fault: a command to run, or a node to kill, stop or terminate, is required")
	case f.Command != "" && f.Signal != 0, f.Run != nil && (f.Command != "" || f.Signal != 0):
		return errors.New("loadtest fault: one of a command, a node signal or a function")
	case f.Signal != 0 && f.Node == "":
		return errors.New("loadtest fault: which node to signal?")
	case f.Signal != 0 && f.Signal != syscall.SIGKILL && f.Signal != syscall.SIGTERM && f.Signal != syscall.SIGSTOP:
		return fmt.Errorf("loadtest fault: a node can be killed, terminated or stopped, not sent %v", f.Signal)
	case f.Heal != "" && f.Command == "":
		return errors.New("loadtest fault: a heal command undoes a fault command; there is none")
	case f.Heal != "" && f.HealAfter <= 0:
		return errors.New("loadtest fault: a heal command needs a time after the fault to run")
	case f.Signal == syscall.SIGSTOP && f.StopFor <= 0:
		return errors.New("loadtest fault: a stopped node needs a time to stay stopped")
	case f.At < 0 || f.At >= window:
		return fmt.Errorf("loadtest fault: the fault time %v must fall inside the run (%v)", f.At, window)
	}
	return nil
}

func (f *Fault) recoverWithin() time.Duration {
	if f == nil || f.RecoverWithin <= 0 {
		return time.Minute
	}
	return f.RecoverWithin
}

// faultRun is one fault under way: the command's outcome and every send
// attempt, from which the time to recovery follows.
type faultRun struct {
	Fault
	adminBase      string // the node whose admin token the scenario has
	adminToken     string // for Signal's admin API call
	target         string // the process Signal went to
	started, ended time.Time
	exitCode       int
	cmdErr         error
	done           chan struct{}

	mu       sync.Mutex
	lastFail time.Time // the latest failed send attempt after the fault
	acks     []ack     // every acknowledged message, in order of answer
	retries  int
	// retryCause counts failed attempts by answer ("unreachable" when
	// none came, else the HTTP status).
	retryCause map[string]int
}

// ack is one acknowledged message: its request began at sent and its
// answer arrived at at.
type ack struct {
	seq      uint64
	guild    *chatGuild
	sent, at time.Time
}

// attempt records one send attempt of message seq.
func (f *faultRun) attempt(seq uint64, g *chatGuild, sent, at time.Time, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if status == 200 {
		f.acks = append(f.acks, ack{seq, g, sent, at})
		return
	}
	f.retries++
	cause := "unreachable"
	if status != 0 {
		cause = "http_" + strconv.Itoa(status)
	}
	if f.retryCause == nil {
		f.retryCause = map[string]int{}
	}
	f.retryCause[cause]++
	if !f.started.IsZero() && at.After(f.started) && at.After(f.lastFail) {
		f.lastFail = at
	}
}

// start runs the command At after sendStart, on its own goroutine.
func (f *faultRun) start(ctx context.Context, sendStart time.Time) {
	f.done = make(chan struct{})
	go func() {
		defer close(f.done)
		select {
		case <-time.After(time.Until(sendStart.Add(f.At))):
		case <-ctx.Done():
			f.cmdErr = ctx.Err()
			return
		}
		if f.Signal != 0 || f.Run != nil {
			f.mu.Lock()
			f.started = time.Now()
			f.mu.Unlock()
			if f.Run != nil {
				f.cmdErr = f.Run(ctx)
			} else {
				f.cmdErr = f.signalNode(ctx)
			}
			f.ended = time.Now()
			if f.cmdErr != nil {
				f.exitCode = 1
			}
			return
		}
		f.mu.Lock()
		f.started = time.Now()
		f.mu.Unlock()
		f.exitCode, f.cmdErr = f.run(ctx, f.Command)
		if f.Heal != "" {
			select {
			case <-time.After(time.Until(f.started.Add(f.HealAfter))):
			case <-ctx.Done():
			}
			// The heal runs even when the fault command failed or the run
			// is ending: whatever part of the fault took hold is undone.
			code, err := f.run(context.WithoutCancel(ctx), f.Heal)
			if f.cmdErr == nil && err != nil {
				f.exitCode, f.cmdErr = code, fmt.Errorf("heal command: %w", err)
			}
		}
		f.ended = time.Now()
	}()
}

// startedAt is when the fault began; zero before.
func (f *faultRun) startedAt() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.started
}

// run runs one operator command under "sh -c".
func (f *faultRun) run(ctx context.Context, command string) (int, error) {
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	if f.Output != nil {
		cmd.Stdout, cmd.Stderr = f.Output, f.Output
	}
	// A background child may inherit our descriptors; do not wait on
	// it past the command itself.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	return cmd.ProcessState.ExitCode(), err
}

// settle waits until the command ended and every session is live again,
// or RecoverWithin after the fault passed; then until every delivery owed
// arrived or none arrived for settleQuiet, at most settleMax more. An
// overloaded cluster delivers seconds late: what is still on its way is
// not missed.
func (f *faultRun) settle(ctx context.Context, gws []*GatewayClient, delivered, owed func() int64) {
	f.waitSessions(ctx, gws)
	last, stable := delivered(), time.Now()
	for end := time.Now().Add(settleMax); ctx.Err() == nil && time.Now().Before(end) &&
		time.Since(stable) < settleQuiet && last < owed(); {
		time.Sleep(20 * time.Millisecond)
		if n := delivered(); n != last {
			last, stable = n, time.Now()
		}
	}
}

// settleQuiet and settleMax bound the wait for late deliveries after a
// fault run.
const (
	settleQuiet = time.Second
	settleMax   = 60 * time.Second
)

// waitSessions waits until the command ended and every session is live
// again, or RecoverWithin after the fault passed.
func (f *faultRun) waitSessions(ctx context.Context, gws []*GatewayClient) {
	<-f.done
	deadline := f.started.Add(f.recoverWithin())
	for ctx.Err() == nil && time.Now().Before(deadline) && recovering(gws) > 0 {
		time.Sleep(20 * time.Millisecond)
	}
}

func recovering(gws []*GatewayClient) int {
	n := 0
	for _, c := range gws {
		if c.Recovering() {
			n++
		}
	}
	return n
}

// reportCommand records when the command ran and how it ended.
func (f *faultRun) reportCommand(r *Result, start time.Time) error {
	c := r.Counters
	c["fault_at_ms"] = ms(f.started.Sub(start))
	c["fault_command_ms"] = ms(f.ended.Sub(f.started))
	c["fault_exit_code"] = float64(f.exitCode)
	r.Params["fault_command"] = f.describe()
	if f.started.IsZero() {
		return fmt.Errorf("loadtest fault: the command never ran: %v", f.cmdErr)
	}
	if f.exitCode != 0 {
		r.addFailure("fault-command-exit-" + strconv.Itoa(f.exitCode))
	}
	if f.cmdErr != nil {
		r.Params["fault_error"] = f.cmdErr.Error()
	}
	return nil
}

// reportSessions records what the fault did to the sessions: every drop
// after it must be repaired. It returns when the last one was back and
// how many were not.
func (f *faultRun) reportSessions(r *Result, gws []*GatewayClient) (back time.Time, unrecovered int) {
	var disrupted, resumed, reidentified, out int
	for _, gw := range gws {
		out += int(gw.GuildsOut.Load())
		if gw.Drops.Load() == 0 {
			continue
		}
		disrupted++
		resumed += int(gw.Resumed.Load())
		reidentified += int(gw.Reidentified.Load())
		if gw.Recovering() {
			unrecovered++
			continue
		}
		if b := gw.BackAt(); b.After(back) {
			back = b
		}
	}
	c := r.Counters
	c["guilds_out"] = float64(out) // GUILD_DELETE unavailable received, over every session
	c["sessions_disrupted"] = float64(disrupted)
	c["sessions_unrecovered"] = float64(unrecovered)
	c["resumed"] = float64(resumed)
	c["reidentified"] = float64(reidentified)
	c["sessions_recovered_ms"] = f.since(back)
	if unrecovered > 0 {
		r.addFailure("sessions-unrecovered")
	}
	var outage Histogram // per session: from its drop to being live again
	for _, gw := range gws {
		if gw.Drops.Load() > 0 && !gw.Recovering() {
			outage.Record(gw.LastOutage())
		}
	}
	if outage.Count() > 0 {
		r.Latency["session_outage"] = outage.Summarize()
	}
	return back, unrecovered
}

// since is t's distance after the fault in ms, 0 for no time or before.
func (f *faultRun) since(t time.Time) float64 {
	if t.IsZero() || t.Before(f.started) {
		return 0
	}
	return ms(t.Sub(f.started))
}

// mark puts the fault, and the recovery when there was one, on the timeline.
func (f *faultRun) mark(r *Result, timeline *Timed, recoveredAt time.Time) {
	r.Marks = append(r.Marks, Mark{f.started.Sub(timeline.Start).Seconds(), "fault"})
	if _, ok := r.Counters["recovery_ms"]; ok && !recoveredAt.IsZero() {
		r.Marks = append(r.Marks, Mark{recoveredAt.Sub(timeline.Start).Seconds(), "recovered"})
	}
}

// report adds what the fault cost to r: when sessions and sends were back,
// what live clients missed, and, from every channel's history read back
// over REST, whether any acknowledged message was lost or stored twice.
func (f *faultRun) report(ctx context.Context, r *Result, base string, sendStart time.Time, timeline *Timed, gws []*GatewayClient, guilds []*chatGuild) error {
	r.Scenario = "fault"
	r.Params["under"] = "chat"
	c := r.Counters
	if err := f.reportCommand(r, sendStart); err != nil {
		return err
	}
	sessionsBack, unrecovered := f.reportSessions(r, gws)

	// Sends: back at the first acknowledgement after the last failure.
	f.mu.Lock()
	acks, lastFail := f.acks, f.lastFail
	c["send_retries"] = float64(f.retries)
	for cause, n := range f.retryCause {
		c["send_retries_"+cause] = float64(n)
	}
	f.mu.Unlock()
	var sendsBack time.Time
	if !lastFail.IsZero() {
		for _, a := range acks {
			if a.at.After(lastFail) {
				sendsBack = a.at
				break
			}
		}
	}
	c["sends_recovered_ms"] = f.since(sendsBack)
	recoveredAt := sessionsBack
	if sendsBack.After(recoveredAt) {
		recoveredAt = sendsBack
	}
	if unrecovered > 0 || (!lastFail.IsZero() && sendsBack.IsZero()) {
		// Not recovered within the bound: recovery_ms stays unmeasured, so
		// an SLO on it is missed.
		r.addFailure("not-recovered")
	} else {
		c["recovery_ms"] = f.since(recoveredAt)
	}
	f.mark(r, timeline, recoveredAt)

	// What live clients missed: every delivery is owed for a message sent
	// once service was back (its request began after every session was
	// live again); before that, a client that was away finds the message
	// in the channel's history instead.
	missedAfter := 0
	for _, a := range acks {
		if !a.sent.After(recoveredAt) {
			continue
		}
		for _, m := range a.guild.members {
			if !m.seen[a.seq] {
				missedAfter++
			}
		}
	}
	c["missed_after_recovery"] = float64(missedAfter)
	c["missed_live"] = c["expected_deliveries"] - c["delivered"]
	// A session that never started over owes every message: it stayed
	// connected or resumed, so its client has no reason to read the
	// history and would never learn of what it missed — unless the server
	// said the guild was out (GUILD_DELETE unavailable; its GUILD_CREATE
	// follows), Discord's way of telling a client that it missed a guild's
	// events for a while: what was sent before the guild came back.
	unnoticed := 0
	for _, a := range acks {
		for _, m := range a.guild.members {
			if m.gw != nil && m.gw.Reidentified.Load() == 0 && !m.seen[a.seq] && !m.gw.WasOut(a.guild.id, a.sent) {
				unnoticed++
			}
		}
	}
	c["missed_unnoticed"] = float64(unnoticed)
	delete(c, "lost") // redefined below: acknowledged but not stored

	stored, err := storedSeqs(ctx, base, guilds)
	if err != nil {
		// Without the history nothing can be said of loss: leave "lost"
		// unmeasured, which fails any SLO on it.
		r.addFailure("history-unreadable")
		r.Params["history_error"] = err.Error()
		return nil
	}
	lost, twice := 0, 0
	for _, a := range acks {
		switch stored[a.seq] {
		case 0:
			lost++
		case 1:
		default:
			twice++
		}
	}
	c["acknowledged"] = float64(len(acks))
	c["lost"] = float64(lost)
	c["stored_twice"] = float64(twice)
	return nil
}

// storedSeqs reads every channel's whole history back over REST (pages of
// 100 from the first message on, as a client catching up does) and counts
// each load message by its seq.
func storedSeqs(ctx context.Context, base string, guilds []*chatGuild) (map[uint64]int, error) {
	hc := &http.Client{Timeout: 30 * time.Second}
	counts := map[uint64]int{}
	for _, g := range guilds {
		if len(g.members) == 0 {
			continue
		}
		query := "after=0" // from the first message, in pages of 100
		for page := 0; page < 100000; page++ {
			msgs, err := historyPage(ctx, hc, base, g.members[0].token, g.channel, query)
			if err != nil {
				return nil, err
			}
			var last uint64
			for _, m := range msgs {
				if id, _ := strconv.ParseUint(m.ID, 10, 64); id > last {
					last = id
				}
				if _, seq, ok := parseLoad(m.Content); ok {
					counts[seq]++
				}
			}
			if len(msgs) < 100 {
				break
			}
			query = "after=" + strconv.FormatUint(last, 10)
		}
	}
	return counts, nil
}

// reportIdle adds what the fault cost idle sessions (the gateway scenario):
// when all were live again, and each session's time away.
func (f *faultRun) reportIdle(r *Result, start time.Time, timeline *Timed, gws []*GatewayClient) error {
	r.Scenario = "fault"
	r.Params["under"] = "gateway"
	if err := f.reportCommand(r, start); err != nil {
		return err
	}
	back, unrecovered := f.reportSessions(r, gws)
	if unrecovered > 0 {
		r.addFailure("not-recovered")
	} else {
		r.Counters["recovery_ms"] = f.since(back)
	}
	f.mark(r, timeline, back)
	return nil
}

// describe names the fault for the report.
func (f *faultRun) describe() string {
	if f.Run != nil {
		return "a function of the program running the load test"
	}
	if f.Signal == 0 && f.Heal != "" {
		return fmt.Sprintf("%s; %v later: %s", f.Command, f.HealAfter, f.Heal)
	}
	if f.Signal == 0 {
		return f.Command
	}
	d := fmt.Sprintf("%v to %s", f.Signal, f.Node)
	if f.target != "" {
		d += " (" + f.target + ")"
	}
	if f.Signal == syscall.SIGSTOP {
		d += fmt.Sprintf(", SIGCONT %v later", f.StopFor)
	}
	return d
}

// signalNode finds the process behind f.Node in the cluster record (asked
// of the node whose admin token the run has: tokens are per node) by its
// HTTP address, and sends it f.Signal (and SIGCONT StopFor after a
// SIGSTOP).
func (f *faultRun) signalNode(ctx context.Context) error {
	var st struct {
		Members []struct {
			ID   string `json:"id"`
			HTTP string `json:"http"`
			Host string `json:"host"`
			PID  int    `json:"pid"`
		} `json:"members"`
	}
	if err := adminapi.New(f.adminBase, f.adminToken).Do("GET", "/admin/v1/cluster", nil, &st); err != nil {
		return fmt.Errorf("loadtest fault: asking %s for the cluster's members: %w", f.adminBase, err)
	}
	u, err := url.Parse(f.Node)
	if err != nil || u.Host == "" {
		return fmt.Errorf("loadtest fault: %q is not a node's URL", f.Node)
	}
	host, _ := os.Hostname()
	var seen []string
	for _, m := range st.Members {
		seen = append(seen, m.ID+" at "+m.HTTP)
		if m.HTTP != u.Host {
			continue
		}
		if m.Host != host || m.PID <= 0 {
			return fmt.Errorf("loadtest fault: node %s runs on %q, this load tester on %q: signal it there, or use --command", m.ID, m.Host, host)
		}
		f.target = fmt.Sprintf("node %s, pid %d", m.ID, m.PID)
		if err := syscall.Kill(m.PID, f.Signal); err != nil {
			return fmt.Errorf("loadtest fault: %v to %s: %w", f.Signal, f.target, err)
		}
		if f.Signal != syscall.SIGSTOP {
			return nil
		}
		select {
		case <-time.After(f.StopFor):
		case <-ctx.Done():
		}
		return syscall.Kill(m.PID, syscall.SIGCONT)
	}
	return fmt.Errorf("loadtest fault: no member of the cluster answers at %s (members: %s)", u.Host, strings.Join(seen, ", "))
}
