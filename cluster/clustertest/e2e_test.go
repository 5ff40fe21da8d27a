package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
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
