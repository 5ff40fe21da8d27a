package crypto

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testKey() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

// Known-answer vectors of voice.md §12.9: key 00..1f, Opus silence frame
// f8 ff fe, counter 1 big-endian.
func TestKnownAnswers(t *testing.T) {
	plainHeader := "80780001000003c012345678"
	extHeader := "90780001000003c012345678bede0001" + "107f0000" // preamble + extension body
	suffixNonce := "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7"
	tests := []struct {
		mode  Mode
		plain string // RTP packet with plaintext payload
		nonce string
		want  string
	}{
		{XSalsa20Poly1305, plainHeader + "f8fffe", "", plainHeader + "bbaccaadc01c7c7deab2765952b67ef7 840957"},
		{XSalsa20Poly1305Suffix, plainHeader + "f8fffe", suffixNonce, plainHeader + "a645eb9fae22eb933e49a746f5188b60 ce6a49" + suffixNonce},
		{XSalsa20Poly1305Lite, plainHeader + "f8fffe", "00000001", plainHeader + "373c50ba1774f0dedb75d5fd7d642512 36542b 00000001"},
		{AES256GCMRTPSize, plainHeader + "f8fffe", "00000001", plainHeader + "bcc933 53bbc8fff08efdab876263d60ab1a9f3 00000001"},
		{XChaCha20Poly1305RTPSize, plainHeader + "f8fffe", "00000001", plainHeader + "f158af 0187f00713b4dff16ce7956799dbef0f 00000001"},
		{AES256GCMRTPSize, extHeader + "f8fffe", "00000001", "90780001000003c012345678bede0001 5449cdaaf4a50a 4cd59ef62075520b23c14d245268f957 00000001"},
		{XChaCha20Poly1305RTPSize, extHeader + "f8fffe", "00000001", "90780001000003c012345678bede0001 19d8512097ff6f a9f35b62050324b7586bb17aad9e849a 00000001"},
		{XSalsa20Poly1305LiteRTPSize, extHeader + "f8fffe", "00000001", "90780001000003c012345678bede0001 9e9932c852817bf20c89ba756128d2ec ded4d57ebf4e09 00000001"},
		{AES256GCM, extHeader + "f8fffe", "00000001", "90780001000003c012345678 fae8cdab1c25f4a8a7c39b 1587ac0b634b288b06b0cf793656a036 00000001"},
	}
	for _, tt := range tests {
		c, err := NewCipher(tt.mode, testKey())
		if err != nil {
			t.Fatal(err)
		}
		plain, want := unhex(t, tt.plain), unhex(t, tt.want)
		got, err := c.Seal(nil, plain, unhex(t, tt.nonce))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s Seal:\n got %x %v\nwant %x", tt.mode, got, err, want)
			continue
		}
		back, nonce, err := c.Open(nil, want)
		if err != nil || !bytes.Equal(back, plain) {
			t.Errorf("%s Open: %x %v", tt.mode, back, err)
		}
		wantNonce := tt.nonce
		if tt.mode == XSalsa20Poly1305 {
			wantNonce = plainHeader
		}
		if hex.EncodeToString(nonce) != wantNonce {
			t.Errorf("%s nonce %x", tt.mode, nonce)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	for _, m := range Offered {
		c, _ := NewCipher(m, testKey())
		other, _ := NewCipher(m, bytes.Repeat([]byte{7}, 32))
		plain := unhex(t, "80780001000003c012345678f8fffe")
		sealed, err := c.Seal(nil, plain, make([]byte, m.NonceSize()))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := other.Open(nil, sealed); err != ErrAuth {
			t.Errorf("%s: wrong key: %v", m, err)
		}
		for i := 12; i < len(sealed); i++ {
			bad := bytes.Clone(sealed)
			bad[i] ^= 0x01
			if _, _, err := c.Open(nil, bad); err != ErrAuth {
				t.Errorf("%s: flipped byte %d accepted (%v)", m, i, err)
			}
		}
		if m == AES256GCMRTPSize || m == XChaCha20Poly1305RTPSize || m == AES256GCM {
			bad := bytes.Clone(sealed)
			bad[8] ^= 1 // the header (SSRC) is authenticated data
			if _, _, err := c.Open(nil, bad); err != ErrAuth {
				t.Errorf("%s: changed header accepted", m)
			}
		}
		for _, n := range []int{0, 11, 12, 12 + 15 + m.NonceSize()} {
			if _, _, err := c.Open(nil, sealed[:n]); err != ErrShort {
				t.Errorf("%s: %d bytes: %v", m, n, err)
			}
		}
		notRTP := bytes.Clone(sealed)
		notRTP[0] = 0x40
		if _, _, err := c.Open(nil, notRTP); err != ErrNotRTP {
			t.Errorf("%s: version 1: %v", m, err)
		}
		// A failed Open leaves dst as it was.
		dst := []byte("keep")
		if out, _, _ := c.Open(dst, sealed[:len(sealed)-1]); string(out) != "keep" {
			t.Errorf("%s: dst changed to %q", m, out)
		}
	}
}

func TestModeNames(t *testing.T) {
	for _, m := range Offered {
		if p, err := ParseMode(m.String()); err != nil || p != m {
			t.Errorf("%s round trip: %v %v", m, p, err)
		}
	}
	if _, err := ParseMode("aead_aes256_gcm_rtpsize "); err != ErrUnknownMode {
		t.Error("trailing space accepted")
	}
	if Offered[0] != AES256GCMRTPSize || Offered[1] != XChaCha20Poly1305RTPSize {
		t.Error("offer order must start with AES-GCM then XChaCha (clients.md §9)")
	}
	if _, err := NewCipher(AES256GCMRTPSize, make([]byte, 16)); err != ErrKey {
		t.Error("short key accepted")
	}
}

func TestSealOpenAllocationFree(t *testing.T) {
	pkt := append(unhex(t, "80780001000003c012345678"), make([]byte, 160)...)
	for _, m := range Offered {
		c, _ := NewCipher(m, testKey())
		nonce := make([]byte, m.NonceSize())
		dst := make([]byte, 0, 512)
		plain := make([]byte, 0, 512)
		sealed, _ := c.Seal(nil, pkt, nonce)
		if a := testing.AllocsPerRun(50, func() { c.Seal(dst[:0], pkt, nonce) }); a != 0 {
			t.Errorf("%s Seal: %v allocs", m, a)
		}
		if a := testing.AllocsPerRun(50, func() { c.Open(plain[:0], sealed) }); a != 0 {
			t.Errorf("%s Open: %v allocs", m, a)
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	pkt := append(unhex(b, "80780001000003c012345678"), make([]byte, 160)...)
	for _, m := range Offered {
		b.Run(m.String(), func(b *testing.B) {
			c, _ := NewCipher(m, testKey())
			nonce := make([]byte, m.NonceSize())
			dst := make([]byte, 0, 512)
			b.ReportAllocs()
			b.SetBytes(160)
			for i := 0; i < b.N; i++ {
				c.Seal(dst[:0], pkt, nonce)
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	pkt := append(unhex(b, "80780001000003c012345678"), make([]byte, 160)...)
	for _, m := range Offered {
		b.Run(m.String(), func(b *testing.B) {
			c, _ := NewCipher(m, testKey())
			sealed, _ := c.Seal(nil, pkt, make([]byte, m.NonceSize()))
			dst := make([]byte, 0, 512)
			b.ReportAllocs()
			b.SetBytes(160)
			for i := 0; i < b.N; i++ {
				if _, _, err := c.Open(dst[:0], sealed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(uint8(1), unhex(f, "80780001000003c012345678bcc93353bbc8fff08efdab876263d60ab1a9f300000001"))
	f.Add(uint8(2), unhex(f, "90780001000003c012345678bede000119d8512097ff6fa9f35b62050324b7586bb17aad9e849a00000001"))
	f.Add(uint8(7), unhex(f, "80780001000003c012345678bbaccaadc01c7c7deab2765952b67ef7840957"))
	f.Add(uint8(3), []byte{0x9F, 0x78})
	f.Fuzz(func(t *testing.T, mode uint8, pkt []byte) {
		m := Mode(mode%7 + 1)
		c, _ := NewCipher(m, testKey())
		plain, nonce, err := c.Open(nil, pkt)
		if err != nil {
			return
		}
		// Whatever opens must seal back to the same bytes.
		again, err := c.Seal(nil, plain, nonce)
		if m == XSalsa20Poly1305 {
			again, err = c.Seal(nil, plain, nil)
		}
		if err != nil || !bytes.Equal(again, pkt) {
			t.Fatalf("%s: reseal %x != %x (%v)", m, again, pkt, err)
		}
	})
}
