package clustertest

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"os/exec"
	"strings"
	"testing"

	"github.com/chorus-voice/chorus/cluster/natstest"
)

// Netns is a network namespace of the test's own for one node, joined to
// the host's by two veth pairs: one carries the node's NATS connections,
// the other PostgreSQL and the clients' HTTP. Cutting the first is a
// network partition between the node and the whole NATS cluster while the
// database and the node's clients still reach it — the case the ownership
// epochs exist for. NATS and PostgreSQL listen on loopback only; proxies
// on the host ends of the pairs carry the node's connections to them.
//
// It needs root (CAP_NET_ADMIN) and iproute2's ip, as CI has.
type Netns struct {
	Name string
	// natsLink is the host end of the NATS pair; natsHost and netHost are
	// the host ends' addresses, netPeer the node's address for clients.
	natsLink                   string
	natsHost, netHost, netPeer string
	proxies                    []*natstest.Proxy // to each NATS server
	t                          testing.TB
}

// NewNetns creates a namespace with its two links; it is removed with the
// test (after the nodes in it, which stop first).
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("clustertest: network namespaces need iproute2's ip (apt-get install iproute2)")
	}
	used, _ := exec.Command("ip", "-o", "-4", "addr", "show").Output()
	var a, b int64
	for tries := 0; ; tries++ {
		// 10.a.b.0/29 holds the two /30 links; pick one no interface uses.
		x, _ := rand.Int(rand.Reader, big.NewInt(200*256))
		a, b = 32+x.Int64()/256, x.Int64()%256
		if !strings.Contains(string(used), fmt.Sprintf(" 10.%d.%d.", a, b)) {
			break
		}
		if tries == 100 {
			t.Fatal("clustertest: no free 10.x.y.0/29 for a network namespace")
		}
	}
	tag := fmt.Sprintf("%d%d", a, b)
	ns := &Netns{
		Name:     "chorus" + tag,
		natsLink: "chn" + tag,
		natsHost: fmt.Sprintf("10.%d.%d.1", a, b),
		netHost:  fmt.Sprintf("10.%d.%d.5", a, b),
		netPeer:  fmt.Sprintf("10.%d.%d.6", a, b),
		t:        t,
	}
	netLink := "chh" + tag
	steps := [][]string{
		{"netns", "add", ns.Name},
		{"-n", ns.Name, "link", "set", "lo", "up"},
		{"link", "add", ns.natsLink, "type", "veth", "peer", "name", "nats0", "netns", ns.Name},
		{"addr", "add", ns.natsHost + "/30", "dev", ns.natsLink},
		{"link", "set", ns.natsLink, "up"},
		{"-n", ns.Name, "addr", "add", fmt.Sprintf("10.%d.%d.2/30", a, b), "dev", "nats0"},
		{"-n", ns.Name, "link", "set", "nats0", "up"},
		{"link", "add", netLink, "type", "veth", "peer", "name", "net0", "netns", ns.Name},
		{"addr", "add", ns.netHost + "/30", "dev", netLink},
		{"link", "set", netLink, "up"},
		{"-n", ns.Name, "addr", "add", ns.netPeer + "/30", "dev", "net0"},
		{"-n", ns.Name, "link", "set", "net0", "up"},
	}
	t.Cleanup(func() {
		// Deleting the namespace destroys the veth ends in it, and with
		// them their host ends.
		exec.Command("ip", "netns", "del", ns.Name).Run()
		exec.Command("ip", "link", "del", ns.natsLink).Run()
		exec.Command("ip", "link", "del", netLink).Run()
	})
	for _, s := range steps {
		ns.ip(s...)
	}
	return ns
}

func (ns *Netns) ip(args ...string) {
	ns.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		ns.t.Fatalf("clustertest: ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// CutNATS takes the NATS link down: nothing moves between the node and any
// NATS server (connections stay open, as across a real partition) while
// PostgreSQL and the node's clients still reach it.
func (ns *Netns) CutNATS() { ns.ip("link", "set", ns.natsLink, "down") }

// HealNATS brings the NATS link back up.
func (ns *Netns) HealNATS() { ns.ip("link", "set", ns.natsLink, "up") }

// CutCommand and HealCommand are CutNATS and HealNATS as shell commands,
// for `loadtest fault --command … --heal-command …`.
func (ns *Netns) CutCommand() string  { return "ip link set " + ns.natsLink + " down" }
func (ns *Netns) HealCommand() string { return "ip link set " + ns.natsLink + " up" }

// DropNATS breaks the node's NATS connections and holds its attempts to
// reconnect until RestoreNATS: unlike CutNATS, after which TCP delivers
// what was held, NATS forgets the node's subscriptions, so what is
// published to it in between never reaches it.
func (ns *Netns) DropNATS() {
	for _, p := range ns.proxies {
		p.Cut()
		p.Reset()
	}
}

// RestoreNATS lets the node's reconnections through.
func (ns *Netns) RestoreNATS() {
	for _, p := range ns.proxies {
		p.Heal()
	}
}

// natsURLs starts a proxy per NATS server on the NATS link's host end and
// returns the servers' addresses as the node in the namespace sees them.
func (ns *Netns) natsURLs(c *natstest.Cluster) string {
	var urls []string
	for _, s := range c.Servers {
		p := natstest.ListenProxy(ns.t, ns.natsHost+":0", s.URL)
		ns.proxies = append(ns.proxies, p)
		urls = append(urls, p.URL)
	}
	return strings.Join(urls, ",")
}

// postgres starts a proxy to the database on the other link's host end and
// returns dsn rewritten to reach it from the namespace.
func (ns *Netns) postgres(dsn string) string {
	ns.t.Helper()
	rest, ok := strings.CutPrefix(dsn, "postgres://")
	at, slash := strings.IndexByte(rest, '@'), strings.IndexByte(rest, '/')
	if !ok || at < 0 || slash < at {
		ns.t.Fatalf("clustertest: unexpected PostgreSQL address %q", dsn)
	}
	p := natstest.ListenProxy(ns.t, ns.netHost+":0", rest[at+1:slash])
	return "postgres://" + rest[:at+1] + p.Addr + rest[slash:]
}
