package crypto

import (
	"sync/atomic"
	"testing"
)

func TestNonces(t *testing.T) {
	var n Nonces
	var counter atomic.Uint32
	for want := uint32(1); want <= 3; want++ {
		got := n.Next(AES256GCMRTPSize, &counter)
		if len(got) != 4 || uint32(got[0])<<24|uint32(got[1])<<16|uint32(got[2])<<8|uint32(got[3]) != want {
			t.Fatalf("counter nonce %x, want %d", got, want)
		}
	}
	seen := map[[24]byte]bool{}
	for range 1000 {
		var k [24]byte
		copy(k[:], n.Next(XSalsa20Poly1305Suffix, &counter))
		if seen[k] {
			t.Fatal("a suffix nonce repeated")
		}
		seen[k] = true
	}
	if counter.Load() != 3 {
		t.Fatalf("suffix nonces moved the counter to %d", counter.Load())
	}
	if got := n.Next(XSalsa20Poly1305, &counter); len(got) != 0 {
		t.Fatalf("legacy mode nonce of %d bytes", len(got))
	}
	if a := testing.AllocsPerRun(100, func() { n.Next(XSalsa20Poly1305Suffix, &counter) }); a != 0 {
		t.Fatalf("%v allocations per nonce", a)
	}
}
