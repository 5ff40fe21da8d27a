package crypto

import (
	"crypto/rand"
	"encoding/binary"
	mrand "math/rand/v2"
	"sync/atomic"
)

// Nonces makes the nonces a sender seals packets with, per mode
// (voice.md §12): in the counter modes the receiver's 32-bit counter,
// big-endian, incremented once per packet so that no nonce repeats under
// one key; in the suffix mode 24 random bytes from ChaCha8 seeded by
// crypto/rand, unpredictable and unique without a system call per packet;
// in the legacy mode none (the RTP header is the nonce). One Nonces serves
// one goroutine; its zero value is ready and it allocates nothing after
// the first suffix-mode nonce.
type Nonces struct {
	buf [24]byte
	rng *mrand.ChaCha8
}

// Next returns the nonce for the next packet sealed in mode for the
// receiver whose counter is counter. It is valid until the next call.
func (n *Nonces) Next(m Mode, counter *atomic.Uint32) []byte {
	size := m.NonceSize()
	switch size {
	case 4:
		binary.BigEndian.PutUint32(n.buf[:4], counter.Add(1))
	case 24:
		if n.rng == nil {
			var seed [32]byte
			rand.Read(seed[:]) // never fails (crypto/rand, Go 1.24)
			n.rng = mrand.NewChaCha8(seed)
		}
		n.rng.Read(n.buf[:])
	}
	return n.buf[:size]
}
