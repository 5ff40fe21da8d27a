package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/chorus-voice/chorus/adminapi"

	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/loadtest"
)

const loadtestUsage = `Usage: chorus loadtest <scenario> [flags]

Drives a Chorus deployment over the wire, the way client libraries do, and
reports what it measured as a table and a JSON file. --slo bounds make the
exit code non-zero when missed, for CI and operators.

Scenarios:
  gateway   open sessions at a rate, hold them idle; identify latency,
            failures by close code, memory per session (server and client)
  chat      one huge guild, a few large and many small, members posting at a rate;
            delivery latency (huge and small guilds apart), lost, duplicated
  churn     chat while sessions drop and resume (or, --reidentify, start
            over and catch up from history); resumes, re-identifies, and
            events missed after either (lost, duplicated: both must be 0)
  fault     chat (or, --under gateway, idle sessions) while an operator
            command runs at a given time (say, kill a node and start it
            again; or cut a node off and, --heal-command, reconnect it),
            or one node of a cluster is killed, stopped or paused; time
            until service recovered, how long each session was
            away, acknowledged messages lost or stored twice (read back from
            history), deliveries missed after recovery; --under voice: a
            voice node killed or stopped while everyone talks, each moved
            participant's longest silence, loss before/during/after
  voice     rooms of participants, speakers sending real Opus frames every
            20 ms in talk spurts; forwarded packets/s, loss, jitter, one-way
            latency, server CPU per forwarded packet
  abuse     hostile clients (bad frames, forged tokens, floods, sockets that
            never log in, oversized bodies, UDP discovery scans and hijacks)
            beside chat and voice; whether each attack got its documented
            answer, and that legitimate users lost nothing (exits non-zero
            otherwise, or when the node stops answering or recovered a panic)

Run "chorus loadtest <scenario> -h" for its flags.
`

// sloFlags collects repeated --slo values.
type sloFlags []loadtest.SLO

func (s *sloFlags) String() string { return fmt.Sprint(len(*s)) }

func (s *sloFlags) Set(v string) error {
	slo, err := loadtest.ParseSLO(v)
	if err != nil {
		return err
	}
	*s = append(*s, slo)
	return nil
}

// nodeAccess registers the flags that say how to reach a node's admin API
// and voice gateway (--admin-token, --data, --ca); the function it returns
// resolves them once the flags are parsed: the admin token, and the CA to
// trust for wss:// (the one given, else the node's development CA when the
// data directory has one).
func nodeAccess(fs *flag.FlagSet) func() (token, caFile string, err error) {
	adminToken := fs.String("admin-token", "", "admin token of the node (default: read from <data>/admin.token)")
	data := fs.String("data", "data", "data directory of the node, for its admin token and development CA")
	ca := fs.String("ca", "", "CA certificates to trust for wss://, one PEM file (for a cluster on development CAs, every node's ca.pem in one file; default: <data>/tls/ca.pem when it exists)")
	return func() (string, string, error) {
		tok, err := adminapi.TokenOr(*adminToken, *data)
		caFile := *ca
		if p := filepath.Join(*data, "tls", "ca.pem"); caFile == "" && fileExists(p) {
			caFile = p
		}
		return tok, caFile, err
	}
}

// errSLO makes the process exit non-zero without another message.
var errSLO = errors.New("an SLO was missed")

func runLoadtest(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(os.Stderr, loadtestUsage)
		return errors.New("loadtest: name a scenario")
	}
	scenario, args := args[0], args[1:]
	// fault runs under another scenario, which decides the other flags.
	under := ""
	if scenario == "fault" {
		var err error
		if under, args, err = underOf(args); err != nil {
			return err
		}
	}
	fs := flag.NewFlagSet("loadtest "+scenario, flag.ContinueOnError)
	base := fs.String("url", "http://127.0.0.1:8080", "HTTP base URL of the node under test; for chat, fault, gateway and voice a comma-separated list of the nodes of one cluster, over which sessions are spread (reported per node; for voice, per voice node)")
	out := fs.String("json", "loadtest-"+scenario+".json", "where to write the JSON result")
	htmlOut := fs.String("html", "loadtest-"+scenario+".html", "where to write the self-contained HTML report")
	cpuProfile := fs.String("cpuprofile", "", "write the load tester's own CPU profile here (go tool pprof): does a run measure the server or the tester? (with --procs, the first process's only)")
	var slos sloFlags
	fs.Var(&slos, "slo", `a bound such as "identify.p99<=250ms" or "failed<=0" (repeatable)`)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var run func() (*loadtest.Result, error)
	var bar *progress
	kind := scenario
	if under != "" {
		kind = under
	}
	switch kind {
	case "gateway":
		token := fs.String("token", "", "token every session identifies with (required)")
		sessions := fs.Int("sessions", 1000, "sessions to open")
		rate := fs.Float64("rate", 200, "identifies per second")
		hold := fs.Duration("hold", 10*time.Second, "how long to hold the sessions open")
		procs := fs.Int("procs", 1, "load-tester processes to spread the sessions over (one process holds at most its open-file limit)")
		worker := fs.Bool("worker", false, "run as one worker of a --procs run (speaks on stdin/stdout)")
		fault := faultFlags(fs, scenario, "into the hold")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if *token == "" {
			return errors.New("loadtest gateway: --token is required (for example the demo bot's)")
		}
		if *procs < 1 {
			return errors.New("loadtest gateway: --procs must be at least 1")
		}
		f, err := fault()
		if err != nil {
			return err
		}
		if f != nil && *procs > 1 {
			return errors.New("loadtest fault: runs in one load-tester process (no --procs)")
		}
		o := loadtest.GatewayOptions{URL: *base, Token: *token, Sessions: *sessions, Rate: *rate, Hold: *hold, Fault: f}
		if *worker {
			return loadtest.ServeGatewayWorker(ctx, o, os.Stdin, os.Stdout)
		}
		if need := *sessions / *procs; need > openFileLimit()-100 {
			fmt.Fprintf(os.Stderr, "warning: %d sessions per process, but a process may open only %d files here: use --procs %d or more\n",
				need, openFileLimit(), (*sessions+openFileLimit()-101)/(openFileLimit()-100))
		}
		bar = newProgress("gateway", int64(*sessions))
		o.Progress = func(done, failed int) {
			bar.counts(int64(done+failed), "connected", int64(done), "attempted", int64(done+failed), "failed", int64(failed))
		}
		run = func() (*loadtest.Result, error) {
			if *procs == 1 {
				return loadtest.RunGateway(ctx, o)
			}
			exe, err := os.Executable()
			if err != nil {
				return nil, err
			}
			return loadtest.RunGatewayWorkers(ctx, o, *procs, func(sessions int, rate float64) *exec.Cmd {
				cmd := exec.Command(exe, "loadtest", "gateway", "--worker", "--url", *base, "--token", *token,
					"--sessions", strconv.Itoa(sessions), "--rate", strconv.FormatFloat(rate, 'f', -1, 64))
				cmd.Stderr = os.Stderr
				return cmd
			})
		}
	case "chat", "churn":
		churnDefault := 0.0
		if scenario == "churn" {
			churnDefault = 10
		}
		churn := fs.Float64("churn", churnDefault, "sessions dropped (no close frame) and resumed per second")
		reidentify := fs.Float64("reidentify", 0, "share of churned sessions that start over instead (close 1000, identify, catch up from history)")
		adminToken := fs.String("admin-token", "", "admin token of the node (default: read from <data>/admin.token)")
		data := fs.String("data", "data", "data directory of the node, for its admin token")
		sessions := fs.Int("sessions", 1000, "users, one gateway session each")
		guilds := fs.Int("guilds", 50, "guilds: one huge, the rest small")
		huge := fs.Float64("huge-share", 0.3, "share of the sessions in the huge guild")
		skew := fs.Float64("size-skew", 1, "the other guilds' sizes follow 1/k^skew (Zipf): a few large, most small; 0 = equal")
		hugeMsgs := fs.Float64("huge-messages", 0.5, "share of the messages posted in the huge guild")
		rate := fs.Float64("rate", 100, "messages per second over all guilds")
		duration := fs.Duration("duration", 20*time.Second, "how long to send")
		chatProcs := fs.Int("procs", 1, "load-tester processes to hold the sessions (one process holds at most its open-file limit); plain chat only")
		chatWorker := fs.Bool("worker", false, "run as one worker of a --procs run (speaks on stdin/stdout)")
		faultOf := faultFlags(fs, scenario, "after sending started")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if *chatWorker {
			return loadtest.ServeChatWorker(ctx, os.Stdin, os.Stdout)
		}
		if *chatProcs < 1 {
			return errors.New("loadtest chat: --procs must be at least 1")
		}
		tok, err := adminapi.TokenOr(*adminToken, *data)
		if err != nil {
			return err
		}
		fault, err := faultOf()
		if err != nil {
			return err
		}
		bar = newProgress(scenario, int64(duration.Seconds()))
		started := time.Now()
		run = func() (*loadtest.Result, error) {
			return loadtest.RunChat(ctx, loadtest.ChatOptions{URL: *base, AdminToken: tok, Sessions: *sessions, Guilds: *guilds,
				HugeShare: *huge, SizeSkew: *skew, Rate: *rate, Duration: *duration, ChurnPerSecond: *churn, ReidentifyShare: *reidentify, HugeMessages: *hugeMsgs, Fault: fault, Progress: func(sent, delivered int64) {
					bar.counts(int64(time.Since(started).Seconds()), "sent", sent, "delivered", delivered, "errors", 0)
				}, Procs: *chatProcs, Worker: func() *exec.Cmd {
					exe, _ := os.Executable()
					cmd := exec.Command(exe, "loadtest", "chat", "--worker")
					cmd.Stderr = os.Stderr
					return cmd
				}})
		}
	case "abuse":
		access := nodeAccess(fs)
		sessions := fs.Int("sessions", 100, "chat users, one gateway session each")
		guilds := fs.Int("guilds", 5, "chat guilds")
		rate := fs.Float64("rate", 50, "chat messages per second")
		rooms := fs.Int("rooms", 2, "voice rooms (one speaker each)")
		participants := fs.Int("participants", 5, "participants per voice room")
		duration := fs.Duration("duration", 20*time.Second, "how long traffic and attacks run")
		identify := fs.Duration("identify-timeout", 10*time.Second, "the node's --identify-timeout")
		if err := fs.Parse(args); err != nil {
			return err
		}
		tok, caFile, err := access()
		if err != nil {
			return err
		}
		// Legitimate users must lose nothing and every attack must get its
		// documented answer: these bounds always apply.
		for _, spec := range []string{"node_alive>=1", "panics_recovered<=0", "unexpected_answers<=0", "chat_lost<=0",
			"chat_duplicated<=0", "voice_lost<=0"} {
			slo, _ := loadtest.ParseSLO(spec)
			slos = append(slos, slo)
		}
		bar = newProgress("abuse", int64(duration.Seconds()))
		started := time.Now()
		run = func() (*loadtest.Result, error) {
			return loadtest.RunAbuse(ctx, loadtest.AbuseOptions{URL: *base, AdminToken: tok, CAFile: caFile,
				Sessions: *sessions, Guilds: *guilds, Rate: *rate, Rooms: *rooms, Participants: *participants,
				Duration: *duration, IdentifyTimeout: *identify, Progress: func(attacks, unexpected int64) {
					bar.counts(int64(time.Since(started).Seconds()), "attacks", attacks, "unexpected", unexpected, "errors", 0)
				}})
		}
	case "voice":
		access := nodeAccess(fs)
		rooms := fs.Int("rooms", 10, "voice rooms")
		participants := fs.Int("participants", 10, "participants per room")
		speakers := fs.Int("speakers", 2, "speakers per room")
		modes := fs.String("modes", "aead_aes256_gcm_rtpsize", "encryption modes, comma-separated, used round robin")
		webrtcShare := fs.Float64("webrtc-share", 0, "share of each room's participants (0 to 1) joining over WebRTC as browsers do (pion); the rest over UDP")
		duration := fs.Duration("duration", 20*time.Second, "how long speakers talk")
		on := fs.Duration("talk-on", 3*time.Second, "mean talk spurt")
		off := fs.Duration("talk-off", 2*time.Second, "mean pause (0: never pause; a fault run never pauses)")
		fault := faultFlags(fs, scenario, "after the speakers start")
		if err := fs.Parse(args); err != nil {
			return err
		}
		f, err := fault()
		if err != nil {
			return err
		}
		tok, caFile, err := access()
		if err != nil {
			return err
		}
		if *webrtcShare < 0 || *webrtcShare > 1 {
			return fmt.Errorf("loadtest voice: --webrtc-share %v: give a share between 0 and 1", *webrtcShare)
		}
		var ms []crypto.Mode
		for _, name := range strings.Split(*modes, ",") {
			m, err := crypto.ParseMode(strings.TrimSpace(name))
			if err != nil {
				return fmt.Errorf("loadtest voice: --modes: %q is not a voice encryption mode", name)
			}
			ms = append(ms, m)
		}
		bar = newProgress("voice", int64(duration.Seconds()))
		started := time.Now()
		run = func() (*loadtest.Result, error) {
			return loadtest.RunVoice(ctx, loadtest.VoiceOptions{URL: *base, AdminToken: tok, CAFile: caFile, Rooms: *rooms,
				Participants: *participants, Speakers: *speakers, Modes: ms, WebRTCShare: *webrtcShare, Duration: *duration, TalkOn: *on, TalkOff: *off, Fault: f,
				Progress: func(sent, received int64) {
					bar.counts(int64(time.Since(started).Seconds()), "packets sent", sent, "received", received, "errors", 0)
				}})
		}
	default:
		fmt.Fprint(os.Stderr, loadtestUsage)
		return fmt.Errorf("loadtest: unknown scenario %q", scenario)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("loadtest: --cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("loadtest: --cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	r, err := run()
	bar.finish()
	if err != nil {
		return err
	}
	met := r.Check(slos)
	r.WriteSummary(os.Stdout)
	if err := r.WriteJSON(*out); err != nil {
		return err
	}
	if err := r.WriteHTMLFile(*htmlOut); err != nil {
		return err
	}
	fmt.Printf("\nresult written to %s and %s\n", *out, *htmlOut)
	if !met {
		return errSLO
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// openFileLimit is this process's open-file limit (the Go runtime has
// already raised the soft limit to the hard one).
func openFileLimit() int {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil || l.Cur > 1<<30 {
		return 1 << 30
	}
	return int(l.Cur)
}

// underOf takes "--under SCENARIO" out of the fault scenario's arguments.
func underOf(args []string) (string, []string, error) {
	under := "chat"
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--under" || a == "-under":
			if i+1 >= len(args) {
				return "", nil, errors.New("loadtest fault: --under needs a scenario: chat, gateway or voice")
			}
			under = args[i+1]
			i++
		case strings.HasPrefix(a, "--under=") || strings.HasPrefix(a, "-under="):
			under = a[strings.IndexByte(a, '=')+1:]
		default:
			rest = append(rest, a)
		}
	}
	if under != "chat" && under != "gateway" && under != "voice" {
		return "", nil, fmt.Errorf("loadtest fault: --under %q: runs under chat, gateway or voice", under)
	}
	return under, rest, nil
}

// faultFlags adds the fault scenario's flags when scenario is "fault"; the
// function it returns gives the Fault they describe (nil otherwise).
func faultFlags(fs *flag.FlagSet, scenario, when string) func() (*loadtest.Fault, error) {
	if scenario != "fault" {
		return func() (*loadtest.Fault, error) { return nil, nil }
	}
	fs.String("under", "chat", "the scenario the fault runs under: chat, gateway or voice")
	command := fs.String("command", "", `operator command run under "sh -c" at --at, e.g. "systemctl restart chorus"`)
	heal := fs.String("heal-command", "", `with --command: run under "sh -c" --heal-after after it, to end a fault that lasts (a partition: "ip link set veth0 up")`)
	healAfter := fs.Duration("heal-after", 5*time.Second, "how long after --command the --heal-command runs")
	killNode := fs.String("kill-node", "", "instead of --command: kill -9 the node at this URL (one of a cluster's; it must run on this machine; under chat or voice)")
	termNode := fs.String("term-node", "", "instead of --command: stop the node at this URL gracefully (SIGTERM)")
	stopNode := fs.String("stop-node", "", "instead of --command: SIGSTOP the node at this URL, SIGCONT it --stop-for later")
	stopFor := fs.Duration("stop-for", 5*time.Second, "how long --stop-node keeps the node stopped")
	at := fs.Duration("at", 5*time.Second, "when to run the command, "+when)
	within := fs.Duration("recover-within", time.Minute, "how long clients keep reconnecting and the run waits for them")
	commandLog := fs.String("command-log", "loadtest-fault.log", "where the command's output goes")
	return func() (*loadtest.Fault, error) {
		var node string
		var sig syscall.Signal
		for _, v := range []struct {
			url string
			sig syscall.Signal
		}{{*killNode, syscall.SIGKILL}, {*termNode, syscall.SIGTERM}, {*stopNode, syscall.SIGSTOP}} {
			if v.url == "" {
				continue
			}
			if node != "" || *command != "" {
				return nil, errors.New("loadtest fault: one of --command, --kill-node, --term-node and --stop-node")
			}
			if *heal != "" {
				return nil, errors.New("loadtest fault: --heal-command goes with --command")
			}
			node, sig = strings.TrimRight(v.url, "/"), v.sig
		}
		if node != "" {
			return &loadtest.Fault{Signal: sig, Node: node, StopFor: *stopFor, At: *at, RecoverWithin: *within}, nil
		}
		if strings.TrimSpace(*command) == "" {
			return nil, errors.New("loadtest fault: --command is required (what to run at --at, e.g. a node restart), or --kill-node, --term-node or --stop-node")
		}
		logFile, err := os.Create(*commandLog)
		if err != nil {
			return nil, fmt.Errorf("loadtest fault: --command-log: %w", err)
		}
		// The file stays open for the command's children; the process
		// exit closes it.
		return &loadtest.Fault{Command: *command, Heal: *heal, HealAfter: *healAfter, At: *at, RecoverWithin: *within, Output: logFile}, nil
	}
}
