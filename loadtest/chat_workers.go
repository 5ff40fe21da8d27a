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
	"time"
)

// A chat run bigger than one process can hold (20,000 open files here)
// spreads its sessions over worker processes: the coordinator builds the
// world, hands each worker its share of the members (token, node, guild
// kind) on stdin, waits until every worker's sessions are in, sends the
// messages itself, then closes the workers' stdin; each worker waits for
// the last deliveries and answers with what its sessions received — counts
// and the raw latency histograms, which merge exactly. Churn and faults run
// in one process only.

// chatShare is a worker's part of the world, one JSON line on its stdin.
type chatShare struct {
	URLs  []string    `json:"urls"`
	Users []shareUser `json:"users"`
}

type shareUser struct {
	Token string `json:"token"`
	Node  int    `json:"node"` // index in URLs
	Huge  bool   `json:"huge"` // a member of the huge guild
}

// chatReport is what a worker's sessions received.
type chatReport struct {
	Delivered  int64        `json:"delivered"`
	Duplicated int64        `json:"duplicated"`
	All        *Timed       `json:"all"`
	Huge       *Histogram   `json:"huge"`
	Small      *Histogram   `json:"small"`
	Nodes      []nodeReport `json:"nodes"`
}

type nodeReport struct {
	Delivered int64      `json:"delivered"`
	Latency   *Histogram `json:"latency"`
}

// ServeChatWorker is one worker of a chat run over several processes: it
// reads its share from in, connects the sessions, says "connected" on out,
// records what arrives until in closes, then writes "result" and its
// report.
func ServeChatWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	rd := bufio.NewReader(in)
	line, err := rd.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("loadtest chat worker: no share on stdin: %w", err)
	}
	var share chatShare
	if err := json.Unmarshal(line, &share); err != nil || len(share.URLs) == 0 {
		return fmt.Errorf("loadtest chat worker: a malformed share: %v", err)
	}
	c := &chatRun{base: share.URLs[0], small: &Histogram{}, hugeH: &Histogram{}}
	for _, b := range share.URLs {
		c.nodes = append(c.nodes, &chatNode{base: b, lat: &Histogram{}})
	}
	huge, small := &chatGuild{huge: true}, &chatGuild{}
	for _, su := range share.Users {
		if su.Node < 0 || su.Node >= len(c.nodes) {
			return fmt.Errorf("loadtest chat worker: node %d of %d", su.Node, len(c.nodes))
		}
		g := small
		if su.Huge {
			g = huge
		}
		c.users = append(c.users, &chatUser{token: su.Token, guild: g, node: c.nodes[su.Node]})
	}
	if err := c.connect(ctx); err != nil {
		return err
	}
	fmt.Fprintln(out, "connected")
	io.Copy(io.Discard, rd) // the coordinator has sent everything
	// The last deliveries: until none arrived for 500 ms, at most 10 s.
	last, stable := c.delivered.Load(), time.Now()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && time.Since(stable) < 500*time.Millisecond; {
		time.Sleep(20 * time.Millisecond)
		if n := c.delivered.Load(); n != last {
			last, stable = n, time.Now()
		}
	}
	for _, u := range c.users {
		u.gw.Close()
	}
	c.readers.Wait()
	rep := chatReport{Delivered: c.delivered.Load(), Duplicated: c.duplicated.Load(), All: c.all, Huge: c.hugeH, Small: c.small}
	for _, n := range c.nodes {
		rep.Nodes = append(rep.Nodes, nodeReport{Delivered: n.delivered.Load(), Latency: n.lat})
	}
	b, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "result %s\n", b)
	return err
}

// chatWorker is a running worker process, as the coordinator sees it.
type chatWorker struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	connected chan error // one value: nil once its sessions are in
	result    chan chatReport
	done      chan error // the process ended
}

// startChatWorkers starts procs workers and gives each its share of the
// members (member i to worker i % procs, every member's node already set).
func (c *chatRun) startChatWorkers(procs int) ([]*chatWorker, error) {
	urls := make([]string, len(c.nodes))
	index := map[*chatNode]int{}
	for k, n := range c.nodes {
		urls[k], index[n] = n.base, k
	}
	shares := make([]chatShare, procs)
	for w := range shares {
		shares[w].URLs = urls
	}
	for i, u := range c.users {
		s := &shares[i%procs]
		s.Users = append(s.Users, shareUser{Token: u.token, Node: index[u.node], Huge: u.guild.huge})
	}
	var ws []*chatWorker
	for _, s := range shares {
		w := &chatWorker{cmd: c.o.Worker(), connected: make(chan error, 1), result: make(chan chatReport, 1), done: make(chan error, 1)}
		stdin, err := w.cmd.StdinPipe()
		if err != nil {
			return ws, err
		}
		stdout, err := w.cmd.StdoutPipe()
		if err != nil {
			return ws, err
		}
		if err := w.cmd.Start(); err != nil {
			return ws, fmt.Errorf("loadtest: starting a chat worker: %w", err)
		}
		w.stdin = stdin
		ws = append(ws, w)
		b, _ := json.Marshal(s)
		if _, err := stdin.Write(append(b, '\n')); err != nil {
			return ws, fmt.Errorf("loadtest: giving a chat worker its share: %w", err)
		}
		go w.listen(stdout)
	}
	return ws, nil
}

// listen reads a worker's answers until it exits.
func (w *chatWorker) listen(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	said := false
	for sc.Scan() {
		switch text := sc.Text(); {
		case text == "connected":
			w.connected <- nil
			said = true
		case strings.HasPrefix(text, "result "):
			var r chatReport
			if err := json.Unmarshal([]byte(strings.TrimPrefix(text, "result ")), &r); err == nil {
				w.result <- r
			}
		}
	}
	err := w.cmd.Wait()
	if err == nil {
		err = errors.New("loadtest: a chat worker exited")
	}
	if !said {
		w.connected <- fmt.Errorf("loadtest: a chat worker ended before its sessions were in: %w", err)
	}
	w.done <- err
}

// runWorkers connects the members through worker processes, sends, and
// merges what the workers' sessions received into c.
func (c *chatRun) runWorkers(ctx context.Context) error {
	for i, u := range c.users {
		u.node = c.nodes[i%len(c.nodes)]
		u.node.sessions++
	}
	ws, err := c.startChatWorkers(c.o.Procs)
	defer func() {
		for _, w := range ws {
			w.stdin.Close()
			w.cmd.Process.Kill() // after its result, or on failure
		}
	}()
	if err != nil {
		return err
	}
	for _, w := range ws {
		select {
		case err := <-w.connected:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.all = NewTimed()
	c.drive(ctx)
	for _, w := range ws {
		w.stdin.Close()
	}
	for _, w := range ws {
		var r chatReport
		select {
		case r = <-w.result:
		case err := <-w.done:
			select {
			case r = <-w.result: // listen hands the result over before it sees the exit
			default:
				return fmt.Errorf("loadtest: a chat worker ended without its result: %w", err)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		c.delivered.Add(r.Delivered)
		c.duplicated.Add(r.Duplicated)
		if r.All != nil {
			c.all.Merge(r.All)
		}
		if r.Huge != nil {
			c.hugeH.Merge(r.Huge)
		}
		if r.Small != nil {
			c.small.Merge(r.Small)
		}
		for k, n := range r.Nodes {
			if k < len(c.nodes) && n.Latency != nil {
				c.nodes[k].delivered.Add(n.Delivered)
				c.nodes[k].lat.Merge(n.Latency)
			}
		}
	}
	return nil
}
