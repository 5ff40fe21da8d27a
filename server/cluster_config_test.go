package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/chorus-voice/chorus/ring"
)

// A node of a cluster shares its store with the others: --nats without
// --postgres is refused with a clear error, before anything is created.
func TestNATSNeedsPostgres(t *testing.T) {
	dir := t.TempDir()
	_, err := Start(context.Background(), Config{DataDir: dir, NATS: "nats://127.0.0.1:4222", HTTPAddr: "127.0.0.1:0",
		HTTPSAddr: "off", VoiceAddr: "off"})
	if !errors.Is(err, ErrClusterNeedsPostgres) {
		t.Fatalf("err = %v, want ErrClusterNeedsPostgres", err)
	}
}

// --advertise replaces the listeners' host in what the node announces:
// the gateway URL, the voice endpoint and its cluster record.
func TestAdvertisedAddresses(t *testing.T) {
	n, err := Start(context.Background(), Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", HTTPSAddr: "off",
		VoiceAddr: "127.0.0.1:0", Advertise: "127.0.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	_, port, _ := net.SplitHostPort(n.HTTPAddr)
	var gw struct{ URL string }
	resp, err := http.Get("http://" + n.HTTPAddr + "/api/v10/gateway")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&gw)
	resp.Body.Close()
	if gw.URL != "ws://127.0.0.2:"+port {
		t.Fatalf("gateway URL %q", gw.URL)
	}
	_, vport, _ := net.SplitHostPort(n.VoiceAddr)
	// The record's Addr is the voice endpoint VOICE_SERVER_UPDATE names.
	st := n.cluster.Status()
	if len(st.Members) != 1 || st.Members[0].HTTP != "127.0.0.2:"+port || st.Members[0].Addr != "127.0.0.2:"+vport {
		t.Fatalf("cluster record %+v", st.Members)
	}
}

// A node without the gateway role refuses clients with a message saying
// so, and keeps its metrics and admin API; without the voice role it runs
// no voice gateway.
func TestRolesNarrowTheNode(t *testing.T) {
	n, err := Start(context.Background(), Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", HTTPSAddr: "off",
		Roles: ring.RoleGuild})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.Voice() != nil || n.VoiceAddr != "" {
		t.Fatal("a node without the voice role runs voice")
	}
	resp, err := http.Get("http://" + n.HTTPAddr + "/api/v10/gateway")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(b), "does not serve clients") {
		t.Fatalf("REST on a guild-only node: %d %s", resp.StatusCode, b)
	}
	resp, err = http.Get("http://" + n.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	if st := n.cluster.Status(); len(st.Members) != 1 || st.Members[0].Roles != "guild" {
		t.Fatalf("cluster record %+v", st.Members)
	}
}

// --demo on a node that serves no guilds, with no other node that does,
// says so instead of failing on a guild that cannot be placed.
func TestDemoNeedsAGuildNode(t *testing.T) {
	n, err := Start(context.Background(), Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", HTTPSAddr: "off",
		VoiceAddr: "off", Roles: ring.RoleGateway})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, err := n.SeedDemo(context.Background()); err == nil || !strings.Contains(err.Error(), "no node of the cluster serves guilds") {
		t.Fatalf("SeedDemo on a gateway-only node: %v", err)
	}
}
