package crypto

import (
	"encoding/binary"
	"testing"
)

func be(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func le(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func TestReplayWindowBothByteOrders(t *testing.T) {
	for name, enc := range map[string]func(uint32) []byte{"big-endian": be, "little-endian": le} {
		t.Run(name, func(t *testing.T) {
			var w ReplayWindow
			steps := []struct {
				v    uint32
				want bool
			}{
				{1, true}, {2, true}, {2, false}, {1, false}, // duplicates
				{5, true}, {4, true}, {3, true}, {4, false}, // reordering within the window
				{100, true}, {37, true}, {36, false}, // 100-64 = 36 is outside the window
				{99, true}, {99, false},
			}
			for i, s := range steps {
				if got := w.Fresh(enc(s.v)); got != s.want {
					t.Fatalf("step %d counter %d: fresh=%v want %v", i, s.v, got, s.want)
				}
			}
		})
	}
}

func TestReplayWindowWraps(t *testing.T) {
	var w ReplayWindow
	for _, v := range []uint32{0xFFFFFFFE, 0xFFFFFFFF, 0, 1} {
		if !w.Fresh(be(v)) {
			t.Fatalf("%x rejected across the wrap", v)
		}
	}
	if w.Fresh(be(0xFFFFFFFF)) || w.Fresh(be(0)) {
		t.Fatal("replay across the wrap accepted")
	}
}

func TestReplayWindowRandomStart(t *testing.T) {
	// songbird starts at a random value; discord.js at 1, others at 0.
	var w ReplayWindow
	start := uint32(0x7A3F0010)
	for i := uint32(0); i < 200; i++ {
		if !w.Fresh(be(start + i)) {
			t.Fatalf("packet %d rejected", i)
		}
	}
	for i := uint32(150); i < 200; i++ {
		if w.Fresh(be(start + i)) {
			t.Fatalf("replay of %d accepted", i)
		}
	}
}

func TestReplayWindowLongNonces(t *testing.T) {
	var w ReplayWindow
	n := make([]byte, 24)
	for i := 0; i < 300; i++ {
		binary.BigEndian.PutUint32(n, uint32(i))
		if !w.Fresh(n) {
			t.Fatalf("nonce %d rejected", i)
		}
	}
	binary.BigEndian.PutUint32(n, 299)
	if w.Fresh(n) {
		t.Fatal("recent 24-byte nonce replay accepted")
	}
	// A random nonce replayed within the memory is refused.
	binary.BigEndian.PutUint32(n, 0)
	if w.Fresh(n) {
		t.Fatal("a 24-byte nonce 300 packets old was accepted again")
	}
}

// xsalsa20_poly1305's nonce is the RTP header: its sequence number counts,
// across wraps, so a replay is refused however much later it comes.
func TestReplayWindowHeaderNonces(t *testing.T) {
	var w ReplayWindow
	header := func(seq uint16) []byte {
		h := []byte{0x80, 0x78, 0, 0, 0, 0, 3, 0xC0, 1, 2, 3, 4}
		binary.BigEndian.PutUint16(h[2:], seq)
		return h
	}
	start := uint16(0xFF00) // wraps after 256 packets
	for i := range 70000 {
		if !w.Fresh(header(start + uint16(i))) {
			t.Fatalf("packet %d refused", i)
		}
		if i == 200 && (w.Fresh(header(start)) || w.Fresh(header(start+199))) {
			t.Fatal("a packet 200 (or 1) old was accepted again")
		}
	}
	at := func(i int) []byte { return header(start + uint16(i%65536)) }
	if w.Fresh(at(69999 - 64)) {
		t.Fatal("a packet older than the window was accepted")
	}
	if !w.Fresh(at(70001)) || !w.Fresh(at(70000)) {
		t.Fatal("reordered packets after the wrap refused")
	}
}

func TestReplayAllocationFree(t *testing.T) {
	var w ReplayWindow
	var i uint32
	n := make([]byte, 4)
	if a := testing.AllocsPerRun(100, func() { i++; binary.BigEndian.PutUint32(n, i); w.Fresh(n) }); a != 0 {
		t.Fatalf("%v allocs", a)
	}
}

// FuzzReplayWindow drives the window with a sender whose counter moves by
// small steps back and forth (loss and reordering) in either byte order,
// from any start, and checks that no counter is ever accepted twice.
// (Counters more than 2^31 apart are indistinguishable on a wrapping 32-bit
// counter; a real sender needs 497 days at 50 packets/s to get there.)
func FuzzReplayWindow(f *testing.F) {
	f.Add(uint32(0), false, []byte{1, 1, 0, 255, 3, 254})
	f.Add(uint32(0xFFFFFFF0), true, []byte{5, 5, 5, 5, 128, 1})
	f.Fuzz(func(t *testing.T, start uint32, little bool, steps []byte) {
		enc := be
		if little {
			enc = le
		}
		var w ReplayWindow
		seen := map[uint32]bool{}
		v := start
		for _, s := range steps {
			v += uint32(int32(int8(s)))
			if w.Fresh(enc(v)) && seen[v] {
				t.Fatalf("counter %#x accepted twice", v)
			}
			seen[v] = true
		}
	})
}
