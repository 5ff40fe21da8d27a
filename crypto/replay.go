package crypto

import "encoding/binary"

// ReplayWindow rejects nonces a sender already used. The zero value is
// ready. It is not safe for concurrent use: each sender has its own, used
// by the goroutine that reads that sender's packets.
//
// For the 4-byte counter modes it is a sliding window of 64 counter values
// (as in SRTP, RFC 3711 §3.3.2) that tolerates reordering. Libraries write
// the counter big- or little-endian (voice.md §12.3, clients.md §13), so the
// window learns the sender's byte order from its first two packets instead
// of demanding one. Other nonces (the 24 random bytes of the suffix mode,
// the header of xsalsa20_poly1305) are checked against the last 128 seen.
type ReplayWindow struct {
	state  uint8 // 0 empty, 1 first counter seen, 2 big-endian, 3 little-endian
	first  [4]byte
	top    uint32
	bits   uint64 // bit i set: counter top-i was seen
	recent [128]uint64
	next   int
}

const windowSize = 64

// Fresh reports whether nonce was not seen before, and records it. Call it
// only for packets that authenticated, so forged packets cannot move the
// window.
func (w *ReplayWindow) Fresh(nonce []byte) bool {
	if len(nonce) != 4 {
		return w.freshRecent(nonce)
	}
	switch w.state {
	case 0:
		copy(w.first[:], nonce)
		w.state = 1
		return true
	case 1:
		if [4]byte(nonce) == w.first {
			return false
		}
		// The byte order under which the two counters are closer is the
		// sender's: consecutive packets differ by a small number.
		be := int32(binary.BigEndian.Uint32(nonce) - binary.BigEndian.Uint32(w.first[:]))
		le := int32(binary.LittleEndian.Uint32(nonce) - binary.LittleEndian.Uint32(w.first[:]))
		if abs(be) <= abs(le) {
			w.state = 2
		} else {
			w.state = 3
		}
		w.top, w.bits = w.value(w.first[:]), 1
	}
	return w.slide(w.value(nonce))
}

func abs(x int32) int64 {
	if x < 0 {
		return -int64(x)
	}
	return int64(x)
}

func (w *ReplayWindow) value(b []byte) uint32 {
	if w.state == 3 {
		return binary.LittleEndian.Uint32(b)
	}
	return binary.BigEndian.Uint32(b)
}

// slide is the RFC 3711 window over a wrapping 32-bit counter.
func (w *ReplayWindow) slide(v uint32) bool {
	d := int64(int32(v - w.top)) // in int64, -d cannot overflow at -2^31
	switch {
	case d > 0:
		if d >= windowSize {
			w.bits = 1
		} else {
			w.bits = w.bits<<uint(d) | 1
		}
		w.top = v
		return true
	case -d >= windowSize:
		return false // too old to tell: treated as a replay
	default:
		bit := uint64(1) << uint(-d)
		if w.bits&bit != 0 {
			return false
		}
		w.bits |= bit
		return true
	}
}

// freshRecent remembers a 64-bit digest of the last 128 long nonces.
func (w *ReplayWindow) freshRecent(nonce []byte) bool {
	h := uint64(14695981039346656037)
	for _, b := range nonce {
		h ^= uint64(b)
		h *= 1099511628211
	}
	h |= 1 // zero marks an empty slot
	for _, r := range w.recent {
		if r == h {
			return false
		}
	}
	w.recent[w.next] = h
	w.next = (w.next + 1) % len(w.recent)
	return true
}
