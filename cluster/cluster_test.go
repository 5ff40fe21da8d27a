package cluster

import (
	"testing"
	"time"

	"github.com/chorus-voice/chorus/ring"
)

func TestEmbeddedNodeRoundTrip(t *testing.T) {
	n, err := member(Config{NodeID: "n1", Roles: ring.RoleAll, DataDir: t.TempDir(), Addr: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	// The embedded server really carries messages.
	sub, err := n.Conn().SubscribeSync("t")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Conn().Publish("t", []byte("x")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil || string(m.Data) != "x" {
		t.Fatalf("got %v %v", m, err)
	}
	// JetStream is on.
	js, err := n.Conn().JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(); err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	owner, ok := n.Ring().Owner(ring.RoleGuild, 12345)
	if !ok || owner.ID != "n1" {
		t.Fatalf("owner = %+v", owner)
	}
}

func TestRejectsEmptyID(t *testing.T) {
	if _, err := Start(Config{DataDir: t.TempDir()}); err == nil {
		t.Fatal("started without id")
	}
}
