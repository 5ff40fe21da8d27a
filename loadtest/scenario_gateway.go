package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// GatewayOptions configures the gateway scenario.
type GatewayOptions struct {
	// URL is the node's HTTP base, e.g. http://127.0.0.1:8080, or several
	// nodes' bases, comma-separated: sessions go to them round robin and
	// server memory is their sum.
	URL string
	// Token identifies every session (a bot token; the server's
	// --max-concurrency must allow the identify rate). With several nodes
	// that do not share a store, give one token per node, comma-separated
	// in the order of URL.
	Token string
	// Sessions to open, at Rate identifies per second, then held for Hold.
	Sessions int
	Rate     float64
	Hold     time.Duration
	Intents  int
	// Progress, if set, is called about once a second.
	Progress func(done, failed int)
	// Held and Release make this run one worker of several processes
	// (RunGatewayWorkers): once every session connected and the client's
	// memory was measured, Held gets the result so far (identify
	// histogram included, server memory left to the coordinator), and the
	// sessions stay open until Release is closed instead of for Hold.
	Held    func(*Result)
	Release <-chan struct{}
	// Fault, if set, runs an operator command At into the hold: sessions
	// reconnect by themselves and the result says when all were back and
	// how long each was away (the fault scenario under gateway).
	Fault *Fault
}

// nodes splits a comma-separated list of node bases.
func nodes(urls string) []string {
	var out []string
	for _, u := range strings.Split(urls, ",") {
		if u = strings.TrimRight(strings.TrimSpace(u), "/"); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// serverMemory reads ServerMemory of each node, in order, and their sum.
func serverMemory(bases []string) ([]int64, int64, error) {
	each := make([]int64, len(bases))
	var sum int64
	for i, b := range bases {
		n, err := ServerMemory(b)
		if err != nil {
			return nil, 0, fmt.Errorf("loadtest: reading %s/metrics: %w", b, err)
		}
		each[i] = n
		sum += n
	}
	return each, sum, nil
}

// nodeTally is what the gateway scenario counts per node of a cluster:
// sessions in, identifies refused, identify latency.
type nodeTally struct {
	identify          *Timed
	connected, failed atomic.Int64
}

// report adds the "node<k>_*" counters and the "identify_node<k>" latency
// (k from 1 in --url order) of a run over several nodes; before and after
// are the nodes' memory (nil in a worker, which does not read it).
func reportNodes(r *Result, tallies []*nodeTally, before, after []int64) {
	if len(tallies) < 2 {
		return
	}
	for k, t := range tallies {
		p := fmt.Sprintf("node%d_", k+1)
		n := t.connected.Load()
		r.Counters[p+"connected"] = float64(n)
		r.Counters[p+"failed"] = float64(t.failed.Load())
		if before != nil && after != nil && n > 0 {
			r.Counters[p+"server_bytes_per_session"] = float64(after[k]-before[k]) / float64(n)
		}
		r.Latency[fmt.Sprintf("identify_node%d", k+1)] = t.identify.Summarize()
	}
}

// dialers spread connections over many loopback source addresses so that a
// large run never runs out of ephemeral ports (64k per source address).
func dialers(target string) []*websocket.Dialer {
	host := target
	if u, err := url.Parse(target); err == nil {
		host = u.Hostname()
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return []*websocket.Dialer{{HandshakeTimeout: 30 * time.Second}}
	}
	var ds []*websocket.Dialer
	for i := 1; i <= 200; i++ {
		local := &net.TCPAddr{IP: net.IPv4(127, 0, byte(i/250), byte(1+i%250))}
		nd := &net.Dialer{LocalAddr: local, Timeout: 30 * time.Second}
		ds = append(ds, &websocket.Dialer{NetDialContext: nd.DialContext, HandshakeTimeout: 30 * time.Second,
			ReadBufferSize: 1024, WriteBufferSize: 512})
	}
	return ds
}

func wsURL(base string) string {
	return "ws" + strings.TrimPrefix(strings.TrimRight(base, "/"), "http")
}

// failureKey names why a connection failed: the close code when there was one.
func failureKey(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return "close-" + strconv.Itoa(ce.Code)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return "network"
	}
	return "other"
}

// RunGateway opens Sessions sessions at Rate, holds them, and reports
// identify latency, failures by close code, and memory per session on both
// sides.
func RunGateway(ctx context.Context, o GatewayOptions) (*Result, error) {
	if o.Sessions <= 0 || o.Rate <= 0 {
		return nil, errors.New("loadtest: sessions and rate must be positive")
	}
	if o.Intents == 0 {
		o.Intents = 1 | 1<<9
	}
	bases := nodes(o.URL)
	if len(bases) == 0 {
		return nil, errors.New("loadtest: no node URL")
	}
	if err := o.Fault.validate(o.Hold); err != nil {
		return nil, err
	}
	if o.Fault != nil && o.Fault.Signal != 0 {
		return nil, errors.New("loadtest fault: signalling a node runs under chat (it asks the node's admin API for its process); under gateway use --command")
	}
	if o.Fault != nil && o.Release != nil {
		return nil, errors.New("loadtest fault: runs in one load-tester process (no --procs)")
	}
	tokens := strings.Split(o.Token, ",")
	if len(tokens) != 1 && len(tokens) != len(bases) {
		return nil, fmt.Errorf("loadtest: %d tokens for %d nodes: give one, or one per node", len(tokens), len(bases))
	}
	r := newResult("gateway", map[string]any{"url": o.URL, "sessions": o.Sessions, "rate": o.Rate, "hold_s": o.Hold.Seconds()})
	worker := o.Release != nil
	var serverBefore int64
	var nodesBefore []int64
	if !worker {
		var err error
		if nodesBefore, serverBefore, err = serverMemory(bases); err != nil {
			return nil, err
		}
	}
	tallies := make([]*nodeTally, len(bases))
	for k := range tallies {
		tallies[k] = &nodeTally{identify: NewTimed()}
	}
	runtime.GC()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)

	ds := dialers(bases[0])
	targets := make([]string, len(bases))
	for i, b := range bases {
		targets[i] = wsURL(b)
	}
	identify := NewTimed()
	var mu sync.Mutex
	clients := make([]*GatewayClient, 0, o.Sessions)
	var done, failed atomic.Int64
	start := time.Now()
	interval := time.Duration(float64(time.Second) / o.Rate)
	var wg sync.WaitGroup
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	go func() {
		for range ticker.C {
			if o.Progress != nil {
				o.Progress(int(done.Load()), int(failed.Load()))
			}
		}
	}()
	for i := 0; i < o.Sessions; i++ {
		if ctx.Err() != nil {
			break
		}
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t0 := time.Now()
			cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			c, err := DialIdle(cctx, ds[i%len(ds)], targets[i%len(targets)], tokens[i%len(bases)%len(tokens)], o.Intents)
			cancel()
			tally := tallies[i%len(bases)]
			if err != nil {
				failed.Add(1)
				tally.failed.Add(1)
				mu.Lock()
				r.Failures[failureKey(err)]++
				mu.Unlock()
				return
			}
			identify.RecordAt(time.Now(), time.Since(t0))
			tally.identify.RecordAt(time.Now(), time.Since(t0))
			tally.connected.Add(1)
			if o.Fault != nil {
				// The other nodes, as behind a load balancer: a session
				// whose node stops resumes at one of them.
				for k, t := range targets {
					if k != i%len(targets) {
						c.Alternates = append(c.Alternates, t)
					}
				}
				c.ReconnectFor = o.Fault.recoverWithin()
				c.Reconnect.Store(true)
			}
			done.Add(1)
			mu.Lock()
			clients = append(clients, c)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	connectedIn := time.Since(start)
	measure := func() {
		runtime.GC()
		var ms1 runtime.MemStats
		runtime.ReadMemStats(&ms1)
		n := float64(len(clients))
		r.Counters["connected"] = n
		r.Counters["failed"] = float64(failed.Load())
		r.Counters["identifies_per_s"] = n / connectedIn.Seconds()
		if n > 0 {
			r.Counters["client_bytes_per_session"] = float64(int64(ms1.HeapInuse+ms1.StackInuse)-int64(ms0.HeapInuse+ms0.StackInuse)) / n
		}
		r.Latency["identify"] = identify.Summarize()
		r.TimelineOf, r.Timeline = "identify", identify.Timeline()
	}
	if worker {
		measure()
		reportNodes(r, tallies, nil, nil)
		r.Histograms = map[string]*Timed{"identify": identify}
		if len(tallies) > 1 {
			for k, t := range tallies {
				r.Histograms[fmt.Sprintf("identify_node%d", k+1)] = t.identify
			}
		}
		r.Seconds = time.Since(start).Seconds()
		o.Held(r)
		select {
		case <-o.Release:
		case <-ctx.Done():
		}
	} else {
		holdStart := time.Now()
		var fr *faultRun
		if o.Fault != nil {
			fr = &faultRun{Fault: *o.Fault}
			fr.start(ctx, holdStart)
		}
		select {
		case <-time.After(o.Hold):
		case <-ctx.Done():
		}
		if fr != nil {
			fr.waitSessions(ctx, clients)
		}
		nodesAfter, serverAfter, _ := serverMemory(bases)
		measure()
		reportNodes(r, tallies, nodesBefore, nodesAfter)
		if fr != nil {
			if err := fr.reportIdle(r, holdStart, identify, clients); err != nil {
				return nil, err
			}
		}
		if n := float64(len(clients)); n > 0 {
			r.Counters["server_bytes_per_session"] = float64(serverAfter-serverBefore) / n
		}
	}
	for _, c := range clients {
		c.Close()
	}
	r.Seconds = time.Since(start).Seconds()
	return r, nil
}
