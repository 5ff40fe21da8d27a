// Package crypto implements the voice transport encryption modes of the
// Discord voice protocol (voice.md §12) as Seal and Open into caller
// buffers, with no allocation per packet, and the replay windows that go
// with them. It does no I/O.
package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/nacl/secretbox"
)

// Mode is a transport encryption mode.
type Mode uint8

// The modes, voice.md §12.1.
const (
	AES256GCMRTPSize            Mode = iota + 1 // aead_aes256_gcm_rtpsize
	XChaCha20Poly1305RTPSize                    // aead_xchacha20_poly1305_rtpsize
	XSalsa20Poly1305LiteRTPSize                 // xsalsa20_poly1305_lite_rtpsize
	AES256GCM                                   // aead_aes256_gcm
	XSalsa20Poly1305Lite                        // xsalsa20_poly1305_lite
	XSalsa20Poly1305Suffix                      // xsalsa20_poly1305_suffix
	XSalsa20Poly1305                            // xsalsa20_poly1305
)

// Offered lists the modes in the order voice Ready announces them: the two
// supported AEAD modes first, AES-GCM first of all (clients.md §9; it is
// also the cheapest here), then the deprecated ones for old clients.
var Offered = []Mode{AES256GCMRTPSize, XChaCha20Poly1305RTPSize, XSalsa20Poly1305LiteRTPSize,
	AES256GCM, XSalsa20Poly1305Lite, XSalsa20Poly1305Suffix, XSalsa20Poly1305}

var names = [...]string{"", "aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize",
	"xsalsa20_poly1305_lite_rtpsize", "aead_aes256_gcm", "xsalsa20_poly1305_lite",
	"xsalsa20_poly1305_suffix", "xsalsa20_poly1305"}

func (m Mode) String() string {
	if int(m) < len(names) && m != 0 {
		return names[m]
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// ErrUnknownMode is returned for a mode name this server does not know.
var ErrUnknownMode = errors.New("crypto: unknown encryption mode")

// ParseMode returns the mode with the given protocol name.
func ParseMode(s string) (Mode, error) {
	for i := 1; i < len(names); i++ {
		if names[i] == s {
			return Mode(i), nil
		}
	}
	return 0, ErrUnknownMode
}

// rtpsize reports whether the clear part of a packet is the SRTP-style
// header (voice.md §12.2) rather than the fixed 12 bytes.
func (m Mode) rtpsize() bool {
	return m == AES256GCMRTPSize || m == XChaCha20Poly1305RTPSize || m == XSalsa20Poly1305LiteRTPSize
}

// NonceSize is how many nonce bytes travel after the ciphertext.
func (m Mode) NonceSize() int {
	switch m {
	case XSalsa20Poly1305:
		return 0
	case XSalsa20Poly1305Suffix:
		return 24
	}
	return 4
}

// Overhead is how many bytes a sealed packet has beyond the plain one.
func (m Mode) Overhead() int { return 16 + m.NonceSize() }

// Errors of Seal and Open.
var (
	ErrShort  = errors.New("crypto: packet too short")
	ErrNotRTP = errors.New("crypto: not an RTP version 2 packet")
	ErrAuth   = errors.New("crypto: message authentication failed")
	ErrNonce  = errors.New("crypto: wrong nonce length")
	ErrKey    = errors.New("crypto: key must be 32 bytes")
)

// ClearLen returns how many leading bytes of an RTP packet stay in the
// clear under mode m: 12, or for the rtpsize modes 12 + 4·CC, plus the
// 4-byte extension preamble when the X bit is set (voice.md §12.2).
func ClearLen(m Mode, pkt []byte) (int, error) {
	if len(pkt) < 12 {
		return 0, ErrShort
	}
	if pkt[0]>>6 != 2 {
		return 0, ErrNotRTP
	}
	n := 12
	if m.rtpsize() {
		n += 4 * int(pkt[0]&0x0F)
		if pkt[0]&0x10 != 0 {
			n += 4
		}
	}
	if len(pkt) < n {
		return 0, ErrShort
	}
	return n, nil
}

// nonces are scratch nonce buffers. A nonce handed to an AEAD through its
// interface escapes to the heap, so a stack array would cost an allocation
// per packet; a pooled one costs none.
var nonces = sync.Pool{New: func() any { return new([24]byte) }}

// getNonce returns a zeroed 24-byte nonce buffer.
func getNonce() *[24]byte { return nonces.Get().(*[24]byte) }

func putNonce(n *[24]byte) {
	*n = [24]byte{}
	nonces.Put(n)
}

// Cipher is one key in one mode. It is safe for concurrent use.
type Cipher struct {
	mode Mode
	aead cipher.AEAD // AES-GCM or XChaCha20-Poly1305
	key  [32]byte    // secretbox modes
}

// NewCipher returns a cipher for mode with a 32-byte key.
func NewCipher(m Mode, key []byte) (*Cipher, error) {
	if len(key) != 32 {
		return nil, ErrKey
	}
	c := &Cipher{mode: m}
	copy(c.key[:], key)
	switch m {
	case AES256GCMRTPSize, AES256GCM:
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		if c.aead, err = cipher.NewGCM(b); err != nil {
			return nil, err
		}
	case XChaCha20Poly1305RTPSize:
		var err error
		if c.aead, err = chacha20poly1305.NewX(key); err != nil {
			return nil, err
		}
	case XSalsa20Poly1305LiteRTPSize, XSalsa20Poly1305Lite, XSalsa20Poly1305Suffix, XSalsa20Poly1305:
	default:
		return nil, ErrUnknownMode
	}
	return c, nil
}

// Mode returns the cipher's mode.
func (c *Cipher) Mode() Mode { return c.mode }

// Seal appends to dst the encrypted form of pkt, an RTP packet whose
// payload (everything after the clear part) is plaintext. nonce is the
// 4 counter bytes for the counter modes (copied as they are: their byte
// order is the sender's business, voice.md §12.3), 24 random bytes for the
// suffix mode, and ignored by xsalsa20_poly1305, whose nonce is the header.
// dst and pkt must not overlap.
func (c *Cipher) Seal(dst, pkt, nonce []byte) ([]byte, error) {
	clear, err := ClearLen(c.mode, pkt)
	if err != nil {
		return dst, err
	}
	if len(nonce) != c.mode.NonceSize() && c.mode != XSalsa20Poly1305 {
		return dst, ErrNonce
	}
	head, body := pkt[:clear], pkt[clear:]
	dst = append(dst, head...)
	switch c.mode {
	case AES256GCMRTPSize, AES256GCM, XChaCha20Poly1305RTPSize:
		n := getNonce()
		copy(n[:], nonce)
		dst = c.aead.Seal(dst, n[:c.aead.NonceSize()], body, head)
		putNonce(n)
	default: // secretbox: tag first, no additional data
		var n [24]byte
		if c.mode == XSalsa20Poly1305 {
			copy(n[:], head[:12])
		} else {
			copy(n[:], nonce)
		}
		dst = secretbox.Seal(dst, body, &n, &c.key)
	}
	if c.mode != XSalsa20Poly1305 {
		dst = append(dst, nonce...)
	}
	return dst, nil
}

// Open appends to dst the plain RTP packet (clear part, then the decrypted
// rest) of a received packet, and returns the nonce bytes it carried (a
// slice of pkt; for xsalsa20_poly1305 the 12-byte header) for the replay
// window. dst and pkt must not overlap.
func (c *Cipher) Open(dst, pkt []byte) (plain, nonce []byte, err error) {
	clear, err := ClearLen(c.mode, pkt)
	if err != nil {
		return dst, nil, err
	}
	ns := c.mode.NonceSize()
	if len(pkt) < clear+16+ns {
		return dst, nil, ErrShort
	}
	head := pkt[:clear]
	sealed := pkt[clear : len(pkt)-ns]
	nonce = pkt[len(pkt)-ns:]
	orig := dst
	dst = append(dst, head...)
	var ok bool
	switch c.mode {
	case AES256GCMRTPSize, AES256GCM, XChaCha20Poly1305RTPSize:
		n := getNonce()
		copy(n[:], nonce)
		var e error
		dst, e = c.aead.Open(dst, n[:c.aead.NonceSize()], sealed, head)
		putNonce(n)
		ok = e == nil
	default:
		var n [24]byte
		if c.mode == XSalsa20Poly1305 {
			copy(n[:], head[:12])
			nonce = head[:12]
		} else {
			copy(n[:], nonce)
		}
		dst, ok = secretbox.Open(dst, sealed, &n, &c.key)
	}
	if !ok {
		return orig, nil, ErrAuth
	}
	return dst, nonce, nil
}
