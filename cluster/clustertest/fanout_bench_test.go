package clustertest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/cluster"
	"github.com/chorus-voice/chorus/cluster/natstest"
	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/ring"
	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
)

// Cross-node fan-out (issue 10, "Cross-node throughput"): a guild owned by
// one node, fanoutSessions sessions subscribed from two other nodes, messages
// created on the owner. Three routers in this process over a real
// three-server NATS cluster; the sessions only count what they receive.
// Reported: deliveries per second (from the first send to the last
// delivery) and NATS messages per delivered event, with the per-node
// batching every node uses and with one bus message per session per event
// (guild.Config.UnbatchedFanout, which exists for this benchmark only).
//
//	go test -run '^$' -bench CrossNodeFanout -benchtime 300x ./cluster/clustertest/
func BenchmarkCrossNodeFanout(b *testing.B) {
	nc := natstest.Start(b, 3)
	b.Run("batched", func(b *testing.B) { benchFanout(b, nc, "p", false) })
	b.Run("unbatched", func(b *testing.B) { benchFanout(b, nc, "q", true) })
}

const fanoutSessions = 1000

// fanoutRuns numbers the benchmark's runs: each run's nodes have ids of
// their own, since one NATS cluster serves them all (-count).
var fanoutRuns atomic.Int64

// counted is a node's session table that counts MESSAGE_CREATE deliveries.
type counted struct{ n atomic.Int64 }

func (c *counted) Deliver(_ string, ev *guild.Event, sessions []string) {
	if ev.Name == protocol.EventMessageCreate {
		c.n.Add(int64(len(sessions)))
	}
}
func (c *counted) Joined(guild.ID, guild.ID) []guild.Sub { return nil }
func (c *counted) Subscribers(guild.ID) []guild.Sub      { return nil }
func (c *counted) Moved(guild.ID, string)                {}
func (c *counted) ServeGateway(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("no gateway")
}

func benchFanout(b *testing.B, nc *natstest.Cluster, prefix string, unbatched bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := store.OpenPebble(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var routers []*guild.Router
	var nodes []*cluster.Node
	var sessions []*counted
	run := fanoutRuns.Add(1)
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("%s%d-%d", prefix, run, i)
		cn, err := cluster.Start(cluster.Config{NodeID: id, Roles: ring.RoleAll, Addr: id, NATSURLs: nc.Servers[i].URL})
		if err != nil {
			b.Fatal(err)
		}
		defer cn.Close()
		s := &counted{}
		r := guild.NewRouter(guild.Config{UnbatchedFanout: unbatched}, guild.Deps{Placement: cn, Store: st, Sessions: s,
			IDs: snowflake.NewGenerator(uint16(run*4+int64(i)) & 0x3FF), Peers: cn})
		defer r.Close()
		if err := cn.Serve(cluster.Handlers{Call: r.ServeCall, Batch: r.ServeBatch}); err != nil {
			b.Fatal(err)
		}
		nodes, routers, sessions = append(nodes, cn), append(routers, r), append(sessions, s)
	}
	for _, cn := range nodes { // every node places on these three
		for r := cn.Ring(); len(r.Nodes()) != 3 || !r.Has(nodes[0].ID()) || !r.Has(nodes[1].ID()) || !r.Has(nodes[2].ID()); r = cn.Ring() {
			select {
			case <-cn.Changed():
			case <-ctx.Done():
				b.Fatal("the ring never held the three nodes")
			}
		}
	}

	owner := store.User{ID: guild.ID(1<<40 + run), Username: fmt.Sprint("owner-", prefix, run)}
	st.PutUser(ctx, owner)
	var g store.Guild
	for i := 0; i < 64 && g.ID == 0; i++ {
		c, err := routers[0].CreateGuild(ctx, fmt.Sprint("fanout", i), owner.ID)
		if err != nil {
			b.Fatal(err)
		}
		if routers[0].Owner(c.ID) == nodes[0].ID() {
			g = c
		}
	}
	if g.ID == 0 {
		b.Fatal("no guild placed on the first node in 64 tries")
	}
	ch, err := routers[0].CreateChannel(ctx, store.Channel{GuildID: g.ID, Name: "general", Type: guild.ChannelText})
	if err != nil {
		b.Fatal(err)
	}
	intents := protocol.IntentGuilds | protocol.IntentGuildMessages | protocol.IntentMessageContent
	for k := 0; k < fanoutSessions; k++ {
		u := store.User{ID: guild.ID(1<<41 + run<<20 + int64(k)), Username: fmt.Sprintf("%s%d-u%d", prefix, run, k)}
		if err := st.PutUser(ctx, u); err != nil {
			b.Fatal(err)
		}
		if _, _, err := routers[0].PutMember(ctx, store.Member{GuildID: g.ID, UserID: u.ID}); err != nil {
			b.Fatal(err)
		}
		on := 1 + k%2 // the sessions live on the two other nodes
		sub := guild.Sub{Node: nodes[on].ID(), Session: fmt.Sprint("s", k), User: u.ID, Intents: intents}
		if err := routers[on].Subscribe(ctx, g.ID, sub); err != nil {
			b.Fatal(err)
		}
	}

	batchesBefore := batchesSent(b, routers[0])
	sent := 0
	start := time.Now()
	var wg sync.WaitGroup
	slots := make(chan struct{}, 32)
	for b.Loop() {
		slots <- struct{}{}
		wg.Add(1)
		sent++
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if _, err := routers[0].CreateMessage(ctx, guild.CreateMessage{ChannelID: ch.ID, AuthorID: owner.ID, Content: "hello"}); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	want := int64(sent * fanoutSessions)
	got := func() int64 { return sessions[1].n.Load() + sessions[2].n.Load() }
	deadline := time.Now().Add(time.Minute)
	for got() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	delivered := got()
	msgs := batchesSent(b, routers[0]) - batchesBefore
	b.ReportMetric(float64(delivered)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(msgs)/float64(max(delivered, 1)), "nats-msgs/delivery")
	b.ReportMetric(float64(want-delivered), "lost")
}

// batchesSent reads a router's count of event batches sent to other nodes.
func batchesSent(b *testing.B, r *guild.Router) float64 {
	var buf bytes.Buffer
	r.WriteMetrics(&buf)
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), `chorus_cluster_batches_total{dir="sent"} `); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			return f
		}
	}
	b.Fatal("no chorus_cluster_batches_total in the router's metrics")
	return 0
}
