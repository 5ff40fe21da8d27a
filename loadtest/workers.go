package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// One process can hold only as many sessions as its open-file limit
// allows (20,000 on the reference machine, and no raising it), so the
// gateway scenario can spread its sessions over worker processes: the
// coordinator starts them, each connects its share and reports, all hold
// together while the coordinator reads the nodes' memory, and their
// results merge into one.
//
// A worker speaks on its standard output, one line each:
//
//	progress <connected> <failed>
//	held <result JSON, with its raw histograms>
//
// and releases its sessions when its standard input closes.

// ServeGatewayWorker runs o as one worker: progress and the held result
// go to out, and sessions are released at EOF on in.
func ServeGatewayWorker(ctx context.Context, o GatewayOptions, in io.Reader, out io.Writer) error {
	var mu sync.Mutex
	line := func(format string, a ...any) {
		mu.Lock()
		fmt.Fprintf(out, format+"\n", a...)
		mu.Unlock()
	}
	release := make(chan struct{})
	go func() {
		io.Copy(io.Discard, in)
		close(release)
	}()
	o.Release = release
	o.Progress = func(done, failed int) { line("progress %d %d", done, failed) }
	o.Held = func(r *Result) {
		b, err := json.Marshal(r)
		if err != nil {
			line("error %v", err)
			return
		}
		line("held %s", b)
	}
	_, err := RunGateway(ctx, o)
	return err
}

// RunGatewayWorkers runs the gateway scenario over procs worker processes,
// each started by worker with its share of the sessions and of the rate
// (typically this binary with a --worker flag and ServeGatewayWorker
// behind it). Once all hold, the sessions are held o.Hold more and the
// nodes' memory is read; then the workers are released and their results
// merged.
func RunGatewayWorkers(ctx context.Context, o GatewayOptions, procs int, worker func(sessions int, rate float64) *exec.Cmd) (*Result, error) {
	if o.Sessions <= 0 || o.Rate <= 0 || procs < 1 {
		return nil, errors.New("loadtest: sessions, rate and processes must be positive")
	}
	procs = min(procs, o.Sessions)
	bases := nodes(o.URL)
	if len(bases) == 0 {
		return nil, errors.New("loadtest: no node URL")
	}
	nodesBefore, serverBefore, err := serverMemory(bases)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	type proc struct {
		cmd          *exec.Cmd
		stdin        io.WriteCloser
		done, failed int
		held         *Result
		ended        error
	}
	var mu sync.Mutex
	ps := make([]*proc, procs)
	heldOrEnded := make(chan struct{}, procs) // one signal per worker
	var exited sync.WaitGroup
	defer func() {
		// Release every worker, give them 30 s to close their sessions and
		// exit, then kill what is left.
		for _, p := range ps {
			if p != nil {
				p.stdin.Close()
			}
		}
		waited := make(chan struct{})
		go func() { exited.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(30 * time.Second):
			for _, p := range ps {
				if p != nil {
					p.cmd.Process.Kill()
				}
			}
		}
	}()
	for i := range ps {
		share := o.Sessions / procs
		if i < o.Sessions%procs {
			share++
		}
		cmd := worker(share, o.Rate/float64(procs))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("loadtest: starting worker %d: %w", i, err)
		}
		p := &proc{cmd: cmd, stdin: stdin}
		ps[i] = p
		exited.Add(1)
		go func() {
			defer exited.Done()
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 64<<10), 64<<20)
			signalled := false
			for sc.Scan() {
				kind, rest, _ := strings.Cut(sc.Text(), " ")
				switch kind {
				case "progress":
					var d, f int
					fmt.Sscan(rest, &d, &f)
					mu.Lock()
					p.done, p.failed = d, f
					mu.Unlock()
				case "held":
					r := &Result{}
					if err := json.Unmarshal([]byte(rest), r); err != nil {
						mu.Lock()
						p.ended = fmt.Errorf("worker result: %w", err)
						mu.Unlock()
					} else {
						mu.Lock()
						p.held = r
						mu.Unlock()
					}
					if !signalled {
						signalled = true
						heldOrEnded <- struct{}{}
					}
				}
			}
			err := cmd.Wait()
			mu.Lock()
			if p.held == nil && p.ended == nil {
				p.ended = fmt.Errorf("worker exited before holding its sessions: %v", err)
			}
			mu.Unlock()
			if !signalled {
				heldOrEnded <- struct{}{}
			}
		}()
	}
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	report := func() {
		if o.Progress == nil {
			return
		}
		mu.Lock()
		var d, f int
		for _, p := range ps {
			d, f = d+p.done, f+p.failed
		}
		mu.Unlock()
		o.Progress(d, f)
	}
	for waiting := procs; waiting > 0; {
		select {
		case <-heldOrEnded:
			waiting--
		case <-ticker.C:
			report()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	report()
	select {
	case <-time.After(o.Hold):
	case <-ctx.Done():
	}
	nodesAfter, serverAfter, _ := serverMemory(bases)
	var parts []*Result
	var errs []error
	mu.Lock()
	for i, p := range ps {
		if p.held != nil {
			parts = append(parts, p.held)
		} else {
			errs = append(errs, fmt.Errorf("worker %d: %w", i, p.ended))
		}
	}
	mu.Unlock()
	if len(parts) == 0 {
		return nil, errors.Join(errs...)
	}
	r := MergeGateway(parts)
	r.Params = map[string]any{"url": o.URL, "sessions": o.Sessions, "rate": o.Rate, "hold_s": o.Hold.Seconds(), "processes": procs}
	r.Started = start.UTC()
	for range errs {
		r.Failures["worker-lost"]++
	}
	if n := r.Counters["connected"]; n > 0 {
		r.Counters["server_bytes_per_session"] = float64(serverAfter-serverBefore) / n
	}
	if len(bases) > 1 && nodesAfter != nil {
		for k := range bases {
			p := fmt.Sprintf("node%d_", k+1)
			if n := r.Counters[p+"connected"]; n > 0 {
				r.Counters[p+"server_bytes_per_session"] = float64(nodesAfter[k]-nodesBefore[k]) / n
			}
		}
	}
	r.Seconds = time.Since(start).Seconds()
	return r, nil
}

// MergeGateway merges workers' gateway results: counts add up, the
// identify histograms merge exactly, client memory per session is the
// sessions-weighted mean.
func MergeGateway(parts []*Result) *Result {
	r := newResult("gateway", nil)
	identify := &Timed{Start: parts[0].Started}
	for _, p := range parts {
		if h := p.Histograms["identify"]; h != nil && h.Start.Before(identify.Start) {
			identify.Start = h.Start
		}
	}
	var clientBytes float64
	nodeHists := map[string]*Timed{}
	for _, p := range parts {
		n := p.Counters["connected"]
		r.Counters["connected"] += n
		r.Counters["failed"] += p.Counters["failed"]
		r.Counters["identifies_per_s"] += p.Counters["identifies_per_s"]
		clientBytes += p.Counters["client_bytes_per_session"] * n
		for k, v := range p.Failures {
			r.Failures[k] += v
		}
		if h := p.Histograms["identify"]; h != nil {
			identify.Merge(h)
		}
		// Per node of a cluster: counts add up, histograms merge.
		for k, v := range p.Counters {
			if strings.HasPrefix(k, "node") && (strings.HasSuffix(k, "_connected") || strings.HasSuffix(k, "_failed")) {
				r.Counters[k] += v
			}
		}
		for k, h := range p.Histograms {
			if strings.HasPrefix(k, "identify_node") {
				if nodeHists[k] == nil {
					nodeHists[k] = &Timed{Start: h.Start}
				}
				nodeHists[k].Merge(h)
			}
		}
	}
	for k, h := range nodeHists {
		r.Latency[k] = h.Summarize()
	}
	if n := r.Counters["connected"]; n > 0 {
		r.Counters["client_bytes_per_session"] = clientBytes / n
	}
	r.Counters["processes"] = float64(len(parts))
	r.Latency["identify"] = identify.Summarize()
	r.TimelineOf, r.Timeline = "identify", identify.Timeline()
	return r
}
