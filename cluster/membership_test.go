package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/chorus-voice/chorus/cluster/natstest"
	"github.com/chorus-voice/chorus/ring"
)

func TestCheckServerVersion(t *testing.T) {
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{"2.11.0", true}, {"2.15.2", true}, {"v2.12.1", true}, {"3.0.0", true}, {"2.11.0-RC.1", true},
		{"2.10.29", false}, {"1.99.99", false}, {"", false}, {"2.x.1", false}, {"2.11", false}, {"2.-1.0", false},
	} {
		err := checkServerVersion(tc.v)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err = %v, want ok=%v", tc.v, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrServerVersion) {
			t.Errorf("%q: %v is not ErrServerVersion", tc.v, err)
		}
	}
}

func TestProposer(t *testing.T) {
	live := map[string]Member{"b": {ID: "b"}, "c": {ID: "c"}}
	cases := []struct {
		view []ring.Node
		want string
	}{
		{nil, "b"},                                // first ring: smallest live id
		{[]ring.Node{{ID: "a"}, {ID: "c"}}, "c"},  // a is gone: the smallest surviving member writes
		{[]ring.Node{{ID: "a"}}, "b"},             // no member survives: smallest live id
		{[]ring.Node{{ID: "b"}, {ID: "c"}}, "b"},  // steady state
		{[]ring.Node{{ID: "c"}, {ID: "zz"}}, "c"}, // a newcomer (b) is added by an old member
	}
	for _, tc := range cases {
		if got := proposer(tc.view, live); got != tc.want {
			t.Errorf("proposer(%v) = %q, want %q", tc.view, got, tc.want)
		}
	}
}

func TestViewRoundTrip(t *testing.T) {
	nodes := []ring.Node{{ID: "n2", Roles: ring.RoleGuild, Addr: "b:1"}, {ID: "n1", Roles: ring.RoleAll, Addr: "a:1"}}
	got, err := decodeView(encodeView(nodes))
	if err != nil || !sameNodes(got, nodes) {
		t.Fatalf("round trip: %v %v", got, err)
	}
	if sameNodes(got, nodes[:1]) || sameNodes(nodes, []ring.Node{nodes[0], {ID: "n1", Roles: ring.RoleGuild, Addr: "a:1"}}) {
		t.Fatal("different views compare equal")
	}
	if _, err := decodeView([]byte("{")); err == nil {
		t.Fatal("garbage decoded")
	}
}

// fast membership timing for tests: the same ratios as the defaults.
func testConfig(id, urls string) Config {
	return Config{NodeID: id, Roles: ring.RoleAll, Addr: id + ":1", NATSURLs: urls,
		HeartbeatEvery: 250 * time.Millisecond, FenceAfter: time.Second, TTL: 2 * time.Second,
		JoinTimeout: 20 * time.Second}
}

// noHandlers serves nothing: membership tests need no bus.
var noHandlers = Handlers{Call: func([]byte) []byte { return nil }, Batch: func([]byte) error { return nil }}

// member starts a node and makes it a member.
func member(cfg Config) (*Node, error) {
	n, err := Start(cfg)
	if err != nil {
		return nil, err
	}
	if err := n.Serve(noHandlers); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// members starts a member per id, the i-th on the i-th NATS server.
func members(t *testing.T, nc *natstest.Cluster, ids ...string) []*Node {
	t.Helper()
	var nodes []*Node
	for i, id := range ids {
		n, err := member(testConfig(id, nc.Servers[i%len(nc.Servers)].URL))
		if err != nil {
			t.Fatalf("start %s: %v", id, err)
		}
		nodes = append(nodes, n)
	}
	return nodes
}

// waitRing waits until n's ring holds exactly ids and returns it.
func waitRing(t *testing.T, n *Node, ids ...string) *ring.Ring {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		ch := n.Changed()
		r := n.Ring()
		if len(r.Nodes()) == len(ids) {
			all := true
			for _, id := range ids {
				all = all && r.Has(id)
			}
			if all {
				return r
			}
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%s: ring %v at revision %d, want %v", n.ID(), r.Nodes(), r.Revision, ids)
		}
	}
}

// abandon stops the node the way kill -9 does, as far as the others can
// tell: no more heartbeats, no goodbye, its subscriptions gone (the
// others' probes evict it within a heartbeat).
func (n *Node) abandon() {
	n.silence()
	n.closeConn()
}

// silence stops the node's heartbeats and keeps its connection and
// subscriptions, as for a process that is paused: only its heartbeat's
// TTL takes it off the ring. The test closes the connection.
func (n *Node) silence() {
	close(n.stop)
	n.mu.Lock()
	n.fence.Stop()
	n.mu.Unlock()
	n.wg.Wait()
}

func TestMembershipOnNATSCluster(t *testing.T) {
	nc := natstest.Start(t, 3)
	nodes := members(t, nc, "a", "b", "c")
	defer func() {
		for _, n := range nodes[:2] {
			n.Close()
		}
	}()
	// Every node builds the same ring at the same revision.
	var rev uint64
	for _, n := range nodes {
		r := waitRing(t, n, "a", "b", "c")
		if rev != 0 && r.Revision != rev {
			t.Fatalf("%s at revision %d, another at %d", n.ID(), r.Revision, rev)
		}
		rev = r.Revision
	}
	for k := uint64(1); k < 200; k++ {
		x, _ := nodes[0].Ring().Owner(ring.RoleGuild, k<<22)
		y, _ := nodes[2].Ring().Owner(ring.RoleGuild, k<<22)
		if x.ID != y.ID {
			t.Fatalf("key %d placed on %s by a, on %s by c", k, x.ID, y.ID)
		}
	}
	if ms := nodes[1].Members(); len(ms) != 3 || ms[2].ID != "c" || ms[2].Beat == 0 {
		t.Fatalf("members: %+v", ms)
	}

	// c falls silent (paused: its connection stays, so no probe evicts
	// it): its key expires, the markers reach a and b, and both build the
	// same two-node ring at a newer revision.
	killed := time.Now()
	nodes[2].silence()
	defer nodes[2].closeConn()
	ra := waitRing(t, nodes[0], "a", "b")
	rb := waitRing(t, nodes[1], "a", "b")
	if ra.Revision != rb.Revision || ra.Revision <= rev {
		t.Fatalf("after the death: revisions %d and %d, before %d", ra.Revision, rb.Revision, rev)
	}
	gone := time.Since(killed)
	t.Logf("a dead member left the ring after %v (TTL %v)", gone, nodes[0].cfg.TTL)
	if gone < nodes[0].cfg.TTL/2 {
		t.Fatalf("the ring dropped c after %v, before its TTL could pass", gone)
	}

	// c comes back under the same id and is placed again.
	c, err := member(testConfig("c", nc.Servers[2].URL))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := waitRing(t, nodes[0], "a", "b", "c")
	if r.Revision <= ra.Revision {
		t.Fatalf("rejoin at revision %d, not after %d", r.Revision, ra.Revision)
	}
	// A node that leaves cleanly is gone at once, not after its TTL: Leave
	// returns once c's own ring no longer names it.
	left := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), nodes[0].cfg.TTL)
	defer cancel()
	err = c.Leave(ctx)
	t.Logf("Leave returned after %v", time.Since(left))
	if err != nil {
		t.Fatal(err)
	}
	if c.Ring().Has("c") {
		t.Fatal("Leave returned with c still on its ring")
	}
	waitRing(t, nodes[0], "a", "b")
	if d := time.Since(left); d > nodes[0].cfg.TTL {
		t.Fatalf("a clean leave took %v to reach the ring (TTL %v)", d, nodes[0].cfg.TTL)
	}
	c.Close()

	// The last member leaves at once: there is nobody to hand over to.
	for _, n := range nodes[1:2] {
		n.Close()
	}
	waitRing(t, nodes[0], "a")
	if err := nodes[0].Leave(ctx); err != nil {
		t.Fatalf("the last member's Leave: %v", err)
	}
}

// A node cut off from NATS fences itself before its key can expire: by the
// time the others take its share, it owns nothing. When the link heals it
// renews, catches up with the current view and is placed again.
func TestSelfFenceBeforeExpiry(t *testing.T) {
	nc := natstest.Start(t, 3)
	a, err := member(testConfig("a", nc.Servers[0].URL))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	link := natstest.NewProxy(t, nc.Servers[1].URL)
	b, err := member(testConfig("b", link.URL))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitRing(t, a, "a", "b")
	waitRing(t, b, "a", "b")

	link.Cut()
	defer link.Heal()
	// a sees b leave. b must have fenced itself before that.
	waitRing(t, a, "a")
	if !b.Fenced() {
		t.Fatal("the others dropped b while b still served")
	}
	if b.Ring().Has("b") || len(b.Ring().Nodes()) != 0 {
		t.Fatalf("fenced b still places: %v", b.Ring().Nodes())
	}
	link.Heal()
	rb := waitRing(t, b, "a", "b")
	ra := waitRing(t, a, "a", "b")
	if ra.Revision != rb.Revision {
		t.Fatalf("after the heal: a at %d, b at %d", ra.Revision, rb.Revision)
	}
}

func TestRefusesBadConfig(t *testing.T) {
	if _, err := Start(Config{NodeID: "a.b", DataDir: t.TempDir()}); err == nil {
		t.Fatal("a dotted id was accepted (it would be a NATS subject token)")
	}
	if _, err := Start(Config{NodeID: "a", DataDir: t.TempDir(), FenceAfter: 3 * time.Second, TTL: 2 * time.Second}); err == nil {
		t.Fatal("a fence time past the TTL was accepted")
	}
	if _, err := Start(Config{NodeID: "a", DataDir: t.TempDir(), TTL: 1500 * time.Millisecond, FenceAfter: time.Second}); err == nil {
		t.Fatal("a TTL of a fraction of a second was accepted")
	}
	if _, err := Start(Config{NodeID: "a", NATSURLs: "nats://127.0.0.1:1"}); err == nil {
		t.Fatal("joined a NATS that is not there")
	}
}

// The bus between two nodes of a real NATS cluster: calls are answered,
// batches arrive in the order sent, a call to a node that is not there
// fails at once.
func TestBus(t *testing.T) {
	nc := natstest.Start(t, 3)
	a, err := member(testConfig("a", nc.Servers[0].URL))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Start(testConfig("b", nc.Servers[2].URL))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const n = 2000
	got := make(chan string, n)
	err = b.Serve(Handlers{
		Call:  func(req []byte) []byte { return append([]byte("re: "), req...) },
		Batch: func(batch []byte) error { got <- string(batch); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(noHandlers); !errors.Is(err, ErrServing) {
		t.Fatalf("second Serve: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := a.Call(ctx, "b", []byte("hello"))
	if err != nil || string(rep) != "re: hello" {
		t.Fatalf("call: %q %v", rep, err)
	}
	for i := 0; i < n; i++ {
		if err := a.Send("b", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		select {
		case s := <-got:
			if s != fmt.Sprint(i) {
				t.Fatalf("batch %d arrived as %s", i, s)
			}
		case <-ctx.Done():
			t.Fatalf("%d of %d batches arrived", i, n)
		}
	}
	start := time.Now()
	if _, err := a.Call(ctx, "nobody", []byte("x")); err == nil {
		t.Fatal("a call to no node was answered")
	}
	if time.Since(start) > time.Second {
		t.Fatal("a call to no node waited for its deadline instead of failing at once")
	}
}

// A member that died is evicted as soon as a call to it meets no
// responders, well before its heartbeat's TTL; a live member is not.
func TestDeadMemberEvicted(t *testing.T) {
	nc := natstest.Start(t, 3)
	nodes := members(t, nc, "a", "b", "c")
	defer nodes[0].Close()
	defer nodes[1].Close()
	waitRing(t, nodes[0], "a", "b", "c")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	nodes[1].suspect("a") // a live member survives a suspicion
	killed := time.Now()
	nodes[2].abandon()
	// Until the servers' routes learn that c's subscriptions are gone, a
	// call may be forwarded to where c was and go unanswered: call until
	// one meets "no responders", as a router's traffic would.
	for i := 0; ; i++ {
		cctx, ccancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, err := nodes[0].Call(cctx, "c", []byte("x"))
		ccancel()
		if errors.Is(err, nats.ErrNoResponders) {
			break
		}
		if err == nil || i == 50 {
			t.Fatalf("call %d to a dead node: %v", i, err)
		}
	}
	waitRing(t, nodes[0], "a", "b")
	waitRing(t, nodes[1], "a", "b")
	gone := time.Since(killed)
	t.Logf("a dead member left the ring %v after it died (TTL %v)", gone, nodes[0].cfg.TTL)
	if gone >= nodes[0].cfg.TTL {
		t.Fatalf("the ring dropped c after %v: its TTL, not the eviction", gone)
	}
	if nodes[0].evicted.Load() != 1 {
		t.Fatalf("a evicted %d members", nodes[0].evicted.Load())
	}
	if !nodes[1].Ring().Has("a") || nodes[1].evicted.Load() != 0 {
		t.Fatal("a live member was evicted")
	}
}
