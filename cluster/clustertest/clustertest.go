// Package clustertest starts a real Chorus cluster on loopback for tests:
// a 3-server NATS cluster with JetStream (natstest, built from the pinned
// module), one PostgreSQL (pgtest) and N `chorus serve` processes built
// from this tree with the race detector, each a process a test can
// kill -9, SIGSTOP and SIGTERM by PID.
package clustertest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/adminapi"
	"github.com/chorus-voice/chorus/cluster/natstest"
	"github.com/chorus-voice/chorus/store/pgtest"
)

// startTimeout bounds a node's start (its first lines on stdout).
const startTimeout = 60 * time.Second

var (
	buildOnce sync.Once
	bin       string
	buildErr  error
)

// Binary builds cmd/chorus with the race detector, once per test process.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "chorus-clustertest")
		if err != nil {
			buildErr = err
			return
		}
		bin = filepath.Join(dir, "chorus")
		cmd := exec.Command("go", "build", "-race", "-o", bin, "./cmd/chorus")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/chorus: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

// RemoveBinary deletes what Binary built; a package whose tests use Binary
// calls it from TestMain after m.Run, or every run leaves 60 MB in $TMPDIR.
func RemoveBinary() {
	if bin != "" {
		os.RemoveAll(filepath.Dir(bin))
	}
}

// Cluster is a running cluster.
type Cluster struct {
	NATS     *natstest.Cluster
	Postgres string
	Nodes    []*Node
	t        testing.TB
	bin      string
}

// Node is one `chorus serve` process.
type Node struct {
	ID   string
	HTTP string // host:port of gateway, REST, admin and metrics
	Data string
	// Demo is the demo data, printed by the node started with it.
	Demo *Demo
	Log  *Log

	// Netns is the network namespace it runs in, nil for the host's.
	Netns *Netns

	args   []string
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Demo is what `chorus serve --demo` prints.
type Demo struct {
	Guild, General, Random, Lounge string
	Tokens, IDs                    map[string]string // by "bot", "alice", "bob"
}

// Start runs NATS, PostgreSQL and n chorus nodes ("n1", "n2", ...); the
// first seeds the demo data. It returns once every node's ring holds all n.
func Start(t testing.TB, n int, extra ...string) *Cluster {
	t.Helper()
	return start(t, same(n, extra), false)
}

// StartEach is Start with node i given the flags each[i] (its --roles,
// say).
func StartEach(t testing.TB, each ...[]string) *Cluster {
	t.Helper()
	return start(t, each, false)
}

// StartPartitionable is Start with each node in a network namespace of
// its own (Node.Netns), whose NATS link the test can cut.
func StartPartitionable(t testing.TB, n int, extra ...string) *Cluster {
	t.Helper()
	return start(t, same(n, extra), true)
}

func same(n int, extra []string) [][]string {
	each := make([][]string, n)
	for i := range each {
		each[i] = extra
	}
	return each
}

func start(t testing.TB, each [][]string, netns bool) *Cluster {
	t.Helper()
	c := &Cluster{t: t, bin: Binary(t), NATS: natstest.Start(t, 3)}
	pg := pgtest.Start(t)
	c.Postgres = pg.NewDatabase(t)
	for i, extra := range each {
		var ns *Netns
		if netns {
			ns = NewNetns(t)
		}
		c.startNode(fmt.Sprintf("n%d", i+1), i == 0, ns, extra)
	}
	c.WaitRing(len(each))
	return c
}

// StartNode starts a node and waits until it serves.
func (c *Cluster) StartNode(id string, demo bool, extra ...string) *Node {
	c.t.Helper()
	return c.startNode(id, demo, nil, extra)
}

func (c *Cluster) startNode(id string, demo bool, ns *Netns, extra []string) *Node {
	c.t.Helper()
	nd := &Node{ID: id, Data: c.t.TempDir(), Log: &Log{}, Netns: ns}
	natsURLs, pg, listen := c.NATS.URLs(), c.Postgres, "127.0.0.1:0"
	if ns != nil {
		natsURLs, pg, listen = ns.natsURLs(c.NATS), ns.postgres(c.Postgres), ns.netPeer+":0"
		// Loopback in the namespace is its own: the node's other
		// listeners (--voice 127.0.0.1:0) go on its client link too.
		extra = append([]string(nil), extra...)
		for i, a := range extra {
			if rest, ok := strings.CutPrefix(a, "127.0.0.1:"); ok {
				extra[i] = ns.netPeer + ":" + rest
			}
		}
	}
	nd.args = append([]string{"serve", "--node-id", id, "--data", nd.Data, "--nats", natsURLs,
		"--postgres", pg, "--http", listen, "--https", "off", "--voice", "off",
		"--max-conns-per-ip", "0"}, extra...)
	if demo {
		nd.args = append(nd.args, "--demo")
	}
	if err := nd.start(c.bin); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { nd.Stop(c.t) })
	c.Nodes = append(c.Nodes, nd)
	return nd
}

var (
	reHTTP  = regexp.MustCompile(`gateway \+ REST\s+http://(\S+)`)
	reGuild = regexp.MustCompile(`Demo guild .* \(id (\d+)\)`)
	reChans = regexp.MustCompile(`#general (\d+)\s+#random (\d+)\s+voice Lounge (\d+)`)
	reUser  = regexp.MustCompile(`(?:bot|user)\s+(\S+)\s+id (\d+)\s+token (\S+)`)
)

func (nd *Node) start(bin string) error {
	cmd := exec.Command(bin, nd.args...)
	if nd.Netns != nil {
		// ip execs the binary in place: the pid is the node's.
		cmd = exec.Command("ip", append([]string{"netns", "exec", nd.Netns.Name, bin}, nd.args...)...)
	}
	lines := make(chan string, 64)
	cmd.Stdout = &lineWriter{log: nd.Log, lines: lines}
	cmd.Stderr = nd.Log
	if err := cmd.Start(); err != nil {
		return err
	}
	nd.mu.Lock()
	nd.cmd, nd.exited = cmd, make(chan struct{})
	nd.mu.Unlock()
	exited := nd.exited
	go func() { cmd.Wait(); close(exited) }()
	demo := false
	for _, a := range nd.args {
		demo = demo || a == "--demo"
	}
	d := &Demo{Tokens: map[string]string{}, IDs: map[string]string{}}
	deadline := time.After(startTimeout)
	for nd.HTTP == "" || (demo && len(d.Tokens) < 3) {
		select {
		case <-exited:
			return fmt.Errorf("clustertest: %s exited before it was ready:\n%s", nd.ID, nd.Log.String())
		case l := <-lines:
			if m := reHTTP.FindStringSubmatch(l); m != nil {
				nd.HTTP = m[1]
			} else if m := reGuild.FindStringSubmatch(l); m != nil {
				d.Guild = m[1]
			} else if m := reChans.FindStringSubmatch(l); m != nil {
				d.General, d.Random, d.Lounge = m[1], m[2], m[3]
			} else if m := reUser.FindStringSubmatch(l); m != nil && !strings.HasPrefix(l, "Try") {
				name := strings.TrimPrefix(m[1], "chorus-")
				d.Tokens[name], d.IDs[name] = m[3], m[2]
			}
		case <-deadline:
			return fmt.Errorf("clustertest: %s did not start in %v:\n%s", nd.ID, startTimeout, nd.Log.String())
		}
	}
	if demo {
		nd.Demo = d
	}
	return nil
}

// Restart starts a stopped or killed node again with the same arguments
// and data directory (its HTTP port is new).
func (nd *Node) Restart(t testing.TB) {
	t.Helper()
	nd.HTTP = ""
	if err := nd.start(Binary(t)); err != nil {
		t.Fatal(err)
	}
}

// PID returns the process id.
func (nd *Node) PID() int {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.cmd.Process.Pid
}

// Kill sends SIGKILL and waits for the process to be gone.
func (nd *Node) Kill() {
	nd.mu.Lock()
	cmd, exited := nd.cmd, nd.exited
	nd.mu.Unlock()
	cmd.Process.Signal(syscall.SIGCONT)
	cmd.Process.Kill()
	<-exited
}

// Signal sends sig (SIGSTOP, SIGCONT, SIGTERM) to the process.
func (nd *Node) Signal(sig syscall.Signal) error {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.cmd.Process.Signal(sig)
}

// Exited is closed when the process has ended.
func (nd *Node) Exited() <-chan struct{} {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.exited
}

// Stop ends a running node with SIGTERM and waits for it; a node built with the race
// detector exits 66 when it saw a race, which fails the test. The node's log
// is shown when the test failed, or always with CHORUS_TEST_LOGS set; with
// CHORUS_TEST_LOGDIR set, the whole log of a failed test is written there.
func (nd *Node) Stop(t testing.TB) {
	nd.mu.Lock()
	cmd, exited := nd.cmd, nd.exited
	nd.mu.Unlock()
	select {
	case <-exited:
		return // killed by the test
	default:
	}
	cmd.Process.Signal(syscall.SIGCONT)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("%s exited with %d after SIGTERM (66 = data race):\n%s", nd.ID, code, nd.Log.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Errorf("%s did not stop within 20 s of SIGTERM", nd.ID)
	}
	if t.Failed() || os.Getenv("CHORUS_TEST_LOGS") != "" {
		t.Logf("%s log (last 64 KiB):\n%s", nd.ID, tail(nd.Log.String(), 64<<10))
	}
	if dir := os.Getenv("CHORUS_TEST_LOGDIR"); dir != "" && t.Failed() {
		name := filepath.Join(dir, fmt.Sprintf("%s-%s-%d.log", strings.ReplaceAll(t.Name(), "/", "_"), nd.ID, cmd.Process.Pid))
		if err := os.WriteFile(name, []byte(nd.Log.String()), 0o644); err != nil {
			t.Log(err)
		}
	}
}

// URLs lists the running nodes' HTTP bases, comma-separated (the load
// tester's --url).
func (c *Cluster) URLs() string {
	var urls []string
	for _, nd := range c.Nodes {
		select {
		case <-nd.Exited():
		default:
			urls = append(urls, "http://"+nd.HTTP)
		}
	}
	return strings.Join(urls, ",")
}

// Admin returns an admin API client for the node.
func (nd *Node) Admin(t testing.TB) *adminapi.Client {
	t.Helper()
	tok, err := adminapi.ReadToken(nd.Data)
	if err != nil {
		t.Fatal(err)
	}
	return adminapi.New("http://"+nd.HTTP, tok)
}

// Metric reads one sample of the node's /metrics by its full name
// (with labels, as written there).
func (nd *Node) Metric(name string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+nd.HTTP+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("clustertest: %s has no metric %s", nd.ID, name)
}

// WaitRing waits until every running node's ring holds n nodes at one
// revision, and returns that revision.
func (c *Cluster) WaitRing(n int) uint64 {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var revs []float64
		ok := true
		for _, nd := range c.Nodes {
			select {
			case <-nd.Exited():
				continue
			default:
			}
			k, err1 := nd.Metric("chorus_cluster_ring_nodes")
			rev, err2 := nd.Metric("chorus_cluster_ring_revision")
			if err1 != nil || err2 != nil || int(k) != n {
				ok = false
				break
			}
			revs = append(revs, rev)
		}
		for _, r := range revs {
			ok = ok && r == revs[0]
		}
		if ok && len(revs) > 0 {
			return uint64(revs[0])
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("clustertest: the nodes do not agree on a ring of %d within 30 s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lineWriter is a process's stdout: everything goes to the log, and each
// complete line to lines while someone reads them (the start-up wait).
type lineWriter struct {
	log     io.Writer
	lines   chan string
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.log.Write(p)
	w.partial = append(w.partial, p...)
	for {
		i := strings.IndexByte(string(w.partial), '\n')
		if i < 0 {
			return len(p), nil
		}
		select {
		case w.lines <- string(w.partial[:i]):
		default:
		}
		w.partial = w.partial[i+1:]
	}
}

// Log is a process's output, written by the process while the test
// reads it (for any process a test runs beside the cluster too).
type Log struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
