package interop

import (
	"fmt"
	"testing"
	"time"

	"github.com/disgoorg/disgo/discord"
	"github.com/disgoorg/disgo/gateway"
	"github.com/disgoorg/snowflake/v2"

	"github.com/chorus-voice/chorus/cluster/clustertest"
)

// An unmodified disgo bot behind a TCP balancer while all three nodes of a
// cluster restart one after another (SIGTERM, then started again): each
// time its node stops it gets op 7, resumes through the balancer at another
// node, which takes its session over, and it never identifies again. Every
// message sent — between the restarts and right after each SIGTERM — reaches
// it exactly once, in order.
func TestDisgoRollingRestart(t *testing.T) {
	c, lb := clustertest.StartBalanced(t, 3)
	demo := c.Nodes[0].Demo
	d := newDisgo(t, &chorus{HTTP: lb.Addr()}, demo.Tokens["bot"], gateway.CompressionNone)
	d.waitReady(t, demo.Guild)
	general, _ := snowflake.Parse(demo.General)

	var sent []string
	send := func(content string) {
		t.Helper()
		retrySend(t, content, func() error {
			_, err := d.client.Rest.CreateMessage(general, discord.NewMessageCreate().WithContent(content).WithNonce(content).WithEnforceNonce(true))
			return err
		})
		sent = append(sent, content)
	}
	send("before the restarts")
	c.RollingRestart(t, lb, func(nd *clustertest.Node) { send("after " + nd.ID + " stopped") })
	send("last")
	for _, want := range sent {
		select {
		case m := <-d.messages:
			if m.Content != want {
				t.Fatalf("got %q, want %q (sent: %v)", m.Content, want, sent)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no %q (sent: %v)", want, sent)
		}
	}
	select {
	case m := <-d.messages:
		t.Fatalf("a message twice or unexpected: %q", m.Content)
	case <-d.ready:
		t.Fatal("disgo identified again: a READY after the first")
	default:
	}
	resumed := len(d.resumed)
	if resumed == 0 {
		t.Fatal("disgo never resumed: its node was never stopped?")
	}
	t.Log(fmt.Sprintf("disgo resumed %d times at another node, never identified again", resumed))
}

// retrySend calls try until it succeeds, for at most 20 s: a send that
// reaches a stopping node as it closes is retried with its nonce (and
// enforce_nonce), so it is stored once.
func retrySend(t *testing.T, content string, try func() error) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; {
		err := try()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("send %q: %v", content, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
