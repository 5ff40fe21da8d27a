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
// of demanding one.
//
// xsalsa20_poly1305's nonce is the RTP header, which it therefore
// authenticates: its sequence number, extended past each wrap to 32 bits
// (the rollover counter of RFC 3711 §3.3.1), is the counter of the same
// sliding window, so a packet replayed any time later is refused.
//
// xsalsa20_poly1305_suffix (deprecated by Discord) sends 24 random bytes,
// with nothing to count: the last recentSize of them are remembered, which
// refuses a replay within that many packets (20 s of audio) and costs 8 KiB
// only for senders in that mode.
type ReplayWindow struct {
	state  uint8 // 0 empty, 1 first counter seen, 2 big-endian, 3 little-endian
	first  [4]byte
	top    uint32
	bits   uint64   // bit i set: counter top-i was seen
	recent []uint64 // digests of random nonces, allocated on first use
	next   int
}

// recentSize is how many random nonces a window remembers.
const recentSize = 1024

const windowSize = 64

// Fresh reports whether nonce was not seen before, and records it. Call it
// only for packets that authenticated, so forged packets cannot move the
// window.
func (w *ReplayWindow) Fresh(nonce []byte) bool {
	switch len(nonce) {
	case 4:
	case 12:
		return w.freshHeader(nonce)
	default:
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

// freshHeader checks an RTP header nonce by its sequence number, extended
// to the 32-bit index nearest the highest one seen.
func (w *ReplayWindow) freshHeader(header []byte) bool {
	seq := binary.BigEndian.Uint16(header[2:4])
	if w.state == 0 {
		w.state, w.top, w.bits = 2, uint32(seq), 1
		return true
	}
	return w.slide(w.top + uint32(int32(int16(seq-uint16(w.top)))))
}

// freshRecent remembers a 64-bit digest of the last recentSize nonces.
func (w *ReplayWindow) freshRecent(nonce []byte) bool {
	if w.recent == nil {
		w.recent = make([]uint64, recentSize)
	}
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
