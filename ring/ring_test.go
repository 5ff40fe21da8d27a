package ring

import (
	"fmt"
	"testing"
)

func nodes(n int) []Node {
	var ns []Node
	for i := 0; i < n; i++ {
		ns = append(ns, Node{ID: fmt.Sprintf("node-%d", i), Roles: RoleAll})
	}
	return ns
}

func TestEmpty(t *testing.T) {
	var r *Ring
	if _, ok := r.Owner(RoleGuild, 1); ok {
		t.Fatal("nil ring placed a key")
	}
	if _, ok := New(1, nil).Owner(RoleGuild, 1); ok {
		t.Fatal("empty ring placed a key")
	}
}

func TestOrderIndependent(t *testing.T) {
	ns := nodes(5)
	rev := []Node{ns[4], ns[2], ns[0], ns[3], ns[1]}
	a, b := New(1, ns), New(1, rev)
	for k := uint64(0); k < 1000; k++ {
		x, _ := a.Owner(RoleGuild, k<<22)
		y, _ := b.Owner(RoleGuild, k<<22)
		if x.ID != y.ID {
			t.Fatalf("key %d: %s vs %s", k, x.ID, y.ID)
		}
	}
}

func TestBalanceAndMinimalMovement(t *testing.T) {
	const keys = 20000
	a := New(1, nodes(4))
	b := New(2, nodes(5))
	count := map[string]int{}
	moved := 0
	for k := uint64(0); k < keys; k++ {
		key := (k + 1000) << 22 // snowflake-like keys share low bits
		x, _ := a.Owner(RoleGuild, key)
		y, _ := b.Owner(RoleGuild, key)
		count[x.ID]++
		if x.ID != y.ID {
			moved++
			if y.ID != "node-4" {
				t.Fatalf("key moved between surviving nodes %s -> %s", x.ID, y.ID)
			}
		}
	}
	for id, c := range count {
		if c < keys/4*7/10 || c > keys/4*13/10 {
			t.Errorf("%s owns %d of %d keys", id, c, keys)
		}
	}
	// Adding a fifth node should move about a fifth of the keys.
	if moved < keys/10 || moved > keys*3/10 {
		t.Errorf("moved %d of %d keys", moved, keys)
	}
}

func TestRoles(t *testing.T) {
	r := New(1, []Node{{ID: "g", Roles: RoleGuild | RoleGateway}, {ID: "v", Roles: RoleVoice, Addr: "v:1"}})
	for k := uint64(0); k < 100; k++ {
		if n, _ := r.Owner(RoleVoice, VoiceKey(k, k+1)); n.ID != "v" || n.Addr != "v:1" {
			t.Fatalf("voice placed on %+v", n)
		}
		if n, _ := r.Owner(RoleGuild, k); n.ID != "g" {
			t.Fatalf("guild placed on %+v", n)
		}
	}
}

// Placement is looked up on every guild command and every event batch:
// it must cost little and allocate nothing.
func BenchmarkOwner(b *testing.B) {
	for _, n := range []int{3, 6, 32} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			r := New(1, nodes(n))
			b.ReportAllocs()
			var key uint64 = 1000 << 22
			for b.Loop() {
				key += 1 << 22
				if _, ok := r.Owner(RoleGuild, key); !ok {
					b.Fatal("no owner")
				}
			}
		})
	}
}
