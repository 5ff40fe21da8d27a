package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/loadtest"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/ring"
)

// owner computes the node the ring places a guild on, as every node does
// (the ring depends only on the members' ids and roles).
func owner(c *Cluster, guild uint64) string {
	var nodes []ring.Node
	for _, nd := range c.Nodes {
		select {
		case <-nd.Exited():
			continue
		default:
		}
		nodes = append(nodes, ring.Node{ID: nd.ID, Roles: ring.RoleAll})
	}
	n, _ := ring.New(0, nodes).Owner(ring.RoleGuild, guild)
	return n.ID
}

// send posts a message through node's REST API; it returns the message id
// or the HTTP status of a refusal.
func send(ctx context.Context, nd *Node, token, channel, content, nonce string) (string, int, error) {
	body, _ := json.Marshal(map[string]any{"content": content, "nonce": nonce, "enforce_nonce": true})
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+nd.HTTP+"/api/v10/channels/"+channel+"/messages", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bot "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", resp.StatusCode, fmt.Errorf("%s: %d %s", nd.ID, resp.StatusCode, b)
	}
	var m struct{ ID string }
	if err := json.Unmarshal(b, &m); err != nil {
		return "", resp.StatusCode, err
	}
	return m.ID, 200, nil
}

// session is alice's gateway session on node, subscribed to the demo guild.
func session(t *testing.T, ctx context.Context, nd *Node, token, guild string) *loadtest.GatewayClient {
	t.Helper()
	gc, err := loadtest.DialGateway(ctx, nil, "ws://"+nd.HTTP, token, int(protocol.IntentGuilds|protocol.IntentGuildMessages))
	if err != nil {
		t.Fatalf("%s: %v", nd.ID, err)
	}
	t.Cleanup(func() { gc.Close() })
	for {
		ev, err := gc.Next(ctx, protocol.EventGuildCreate)
		if err != nil {
			t.Fatalf("%s: no GUILD_CREATE: %v", nd.ID, err)
		}
		var g struct{ ID string }
		json.Unmarshal(ev.D, &g)
		if g.ID == guild {
			return gc
		}
	}
}

// A message sent on a node that does not own the guild reaches sessions
// on every node, in the order the owner stored them.
func TestMessageCrossesNodes(t *testing.T) {
	c := Start(t, 3)
	demo := c.Nodes[0].Demo
	gid, _ := strconv.ParseUint(demo.Guild, 10, 64)
	own := owner(c, gid)
	var via *Node
	for _, nd := range c.Nodes {
		if nd.ID != own {
			via = nd
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var sessions []*loadtest.GatewayClient
	for _, nd := range c.Nodes {
		sessions = append(sessions, session(t, ctx, nd, demo.Tokens["alice"], demo.Guild))
	}
	const n = 50
	var ids []string
	for i := 0; i < n; i++ {
		id, _, err := send(ctx, via, demo.Tokens["bot"], demo.General, fmt.Sprint("m", i), fmt.Sprint("x", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for k, gc := range sessions {
		for i := 0; i < n; i++ {
			ev, err := gc.Next(ctx, protocol.EventMessageCreate)
			if err != nil {
				t.Fatalf("session on %s: message %d: %v", c.Nodes[k].ID, i, err)
			}
			var m struct{ ID string }
			json.Unmarshal(ev.D, &m)
			if m.ID != ids[i] {
				t.Fatalf("session on %s: message %d is %s, want %s", c.Nodes[k].ID, i, m.ID, ids[i])
			}
		}
	}
	var ownNode *Node
	for _, nd := range c.Nodes {
		if nd.ID == own {
			ownNode = nd
		}
	}
	if v, _ := via.Metric("chorus_cluster_calls_sent_total"); v < n {
		t.Errorf("%s sent %v calls for %d messages", via.ID, v, n)
	}
	if v, _ := ownNode.Metric("chorus_cluster_calls_served_total"); v < n {
		t.Errorf("owner %s served %v calls", own, v)
	}
	if v, _ := ownNode.Metric(`chorus_cluster_batches_total{dir="sent"}`); v == 0 {
		t.Error("the owner sent no event batches to the other nodes")
	}
	t.Logf("guild on %s, sent via %s", own, via.ID)
}

// acked is a message the API acknowledged.
type acked struct {
	id    string
	nonce string
	at    time.Time
}

// sendRetrying sends one message, retrying with the same nonce until the
// API acknowledges it (a 503 while the guild moves, a refused connection)
// or ctx ends.
func sendRetrying(ctx context.Context, nd *Node, token, channel, content, nonce string) (acked, int, error) {
	for tries := 1; ; tries++ {
		id, _, err := send(ctx, nd, token, channel, content, nonce)
		if err == nil {
			return acked{id: id, nonce: nonce, at: time.Now()}, tries, nil
		}
		select {
		case <-ctx.Done():
			return acked{}, tries, fmt.Errorf("%s: not acknowledged: %v", nonce, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// listMessages reads all of a channel's messages through node, newest
// first, a page of 100 at a time.
func listMessages(ctx context.Context, nd *Node, token, channel string) ([]struct{ ID, Content string }, error) {
	var all []struct{ ID, Content string }
	before := ""
	for pages := 0; pages < 1000; pages++ {
		url := "http://" + nd.HTTP + "/api/v10/channels/" + channel + "/messages?limit=100"
		if before != "" {
			url += "&before=" + before
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		req.Header.Set("Authorization", "Bot "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		var ms []struct{ ID, Content string }
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return nil, fmt.Errorf("list: %d %s", resp.StatusCode, b)
		}
		err = json.NewDecoder(resp.Body).Decode(&ms)
		resp.Body.Close()
		if err != nil || len(ms) == 0 {
			return all, err
		}
		all = append(all, ms...)
		before = ms[len(ms)-1].ID
	}
	return nil, errors.New("list: more than 1000 pages")
}

// split returns the node that owns guild and the others, for a cluster
// whose nodes all serve guilds.
func split(c *Cluster, guild string) (*Node, []*Node) {
	gid, _ := strconv.ParseUint(guild, 10, 64)
	own := owner(c, gid)
	var victim *Node
	var others []*Node
	for _, nd := range c.Nodes {
		if nd.ID == own {
			victim = nd
		} else {
			others = append(others, nd)
		}
	}
	return victim, others
}

// watched is alice's session on each of some nodes, with the ids of the
// MESSAGE_CREATEs each receives, in arrival order. (Without the message
// content intent the content is empty, so messages are known by the ids
// the API acknowledged.)
type watched struct {
	nodes    []*Node
	sessions []*loadtest.GatewayClient
	arrivals []chan string
	stop     context.CancelFunc
}

// watch opens alice's session on each node, subscribed to the demo guild,
// and records what arrives until stop or ctx ends.
func watch(t *testing.T, ctx context.Context, nodes []*Node, demo *Demo) *watched {
	t.Helper()
	w := &watched{nodes: nodes}
	readCtx, stop := context.WithCancel(ctx)
	w.stop = stop
	t.Cleanup(stop)
	for _, nd := range nodes {
		w.sessions = append(w.sessions, session(t, ctx, nd, demo.Tokens["alice"], demo.Guild))
	}
	for _, gc := range w.sessions {
		ch := make(chan string, 4096)
		w.arrivals = append(w.arrivals, ch)
		go func() {
			for {
				ev, err := gc.Next(readCtx, protocol.EventMessageCreate)
				if err != nil {
					return
				}
				var m struct{ ID string }
				json.Unmarshal(ev.D, &m)
				ch <- m.ID
			}
		}()
	}
	return w
}

// until gathers each session's arrivals up to (not including) the message
// last, waiting at most 15 s in all, then stops watching. It returns, per
// session, where each message arrived in its stream (from 1), reporting a
// message delivered twice and a session that dropped.
func (w *watched) until(t *testing.T, last string) []map[string]int {
	t.Helper()
	defer w.stop()
	pos := make([]map[string]int, len(w.arrivals))
	drain := time.After(15 * time.Second)
	for k, ch := range w.arrivals {
		node := w.nodes[k].ID
		pos[k] = map[string]int{}
	collect:
		for n := 1; ; n++ {
			select {
			case id := <-ch:
				if id == last {
					break collect
				}
				if pos[k][id] != 0 {
					t.Errorf("session on %s: message %s delivered twice", node, id)
				}
				pos[k][id] = n
			case <-drain:
				t.Errorf("session on %s did not get the last message within 15 s", node)
				break collect
			}
		}
		if d := w.sessions[k].Drops.Load(); d != 0 {
			t.Errorf("session on %s dropped %d times", node, d)
		}
	}
	return pos
}

// inOrder checks that a session (k) received every message of acks, in
// the order given.
func (w *watched) inOrder(t *testing.T, pos []map[string]int, k int, acks []acked, why string) {
	t.Helper()
	prev := 0
	for _, a := range acks {
		p := pos[k][a.id]
		if p == 0 {
			t.Errorf("session on %s missed %s (%s)", w.nodes[k].ID, a.nonce, why)
			continue
		}
		if p < prev {
			t.Errorf("session on %s: %s out of order (%s)", w.nodes[k].ID, a.nonce, why)
		}
		prev = p
	}
}

// kill -9 of the node that owns the guild, while messages are being sent
// through another: the sessions on the other nodes stay connected, every
// acknowledged message is stored once (retries carry their nonce), and
// every message acknowledged after the new owner took over reaches every
// session, in order.
func TestOwnerKilledUnderLoad(t *testing.T) {
	c := Start(t, 3)
	demo := c.Nodes[0].Demo
	victim, survivors := split(c, demo.Guild)
	own := victim.ID
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	w := watch(t, ctx, survivors, demo)

	const before, total = 20, 60
	var acks []acked
	var killedAt time.Time
	retried := 0
	for i := 0; i < total; i++ {
		if i == before {
			killedAt = time.Now()
			victim.Kill()
		}
		a, tries, err := sendRetrying(ctx, survivors[0], demo.Tokens["bot"], demo.General, fmt.Sprint("m", i), fmt.Sprint("k", i))
		if err != nil {
			t.Fatal(err)
		}
		retried += tries - 1
		acks = append(acks, a)
	}
	failover := acks[before].at.Sub(killedAt)
	t.Logf("owner %s killed; first message acknowledged by the new owner %v later (%d retries in all)", own, failover, retried)
	last, _, err := sendRetrying(ctx, survivors[0], demo.Tokens["bot"], demo.General, "last", "last")
	if err != nil {
		t.Fatal(err)
	}
	pos := w.until(t, last.id)

	// Stored once each, nothing else stored.
	stored, err := listMessages(ctx, survivors[1], demo.Tokens["bot"], demo.General)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, m := range stored {
		count[m.Content]++
	}
	for i := 0; i < total; i++ {
		if n := count[fmt.Sprint("m", i)]; n != 1 {
			t.Errorf("message m%d stored %d times", i, n)
		}
	}
	// Sessions stayed connected and got every message acknowledged after
	// the new owner took over, in order.
	for k := range w.sessions {
		w.inOrder(t, pos, k, acks[before:], "acknowledged after the takeover")
		missedBefore := 0
		for _, a := range acks[:before] {
			if pos[k][a.id] == 0 {
				missedBefore++
			}
		}
		t.Logf("session on %s: %d messages, %d of those acknowledged before the kill missed", survivors[k].ID, len(pos[k]), missedBefore)
	}
}
