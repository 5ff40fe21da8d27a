package sfu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/chorus-voice/chorus/crypto"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func addr(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port)
}

// member makes a participant with a cipher, ready to send and hear.
func member(t testing.TB, room *Room, user uint64, mode crypto.Mode, port uint16) *Participant {
	p := NewParticipant(user, uint32(1000+user))
	c, err := crypto.NewCipher(mode, key(byte(user)))
	if err != nil {
		t.Fatal(err)
	}
	p.SetCipher(c)
	p.SetFlags(FlagMaySpeak|FlagAnnounced, 0)
	a := addr(port)
	p.addr.Store(&a)
	room.Join(p)
	return p
}

// rtp builds a plain RTP packet from ssrc.
func rtp(ssrc uint32, seq uint16, payload []byte) []byte {
	b := []byte{0x80, 0x78, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(b[2:], seq)
	binary.BigEndian.PutUint32(b[4:], uint32(seq)*960)
	binary.BigEndian.PutUint32(b[8:], ssrc)
	return append(b, payload...)
}

// seal encrypts as the sender's client would, with counter n.
func seal(t testing.TB, p *Participant, plain []byte, n uint32) []byte {
	c := p.Cipher()
	nonce := make([]byte, c.Mode().NonceSize())
	if len(nonce) == 4 {
		binary.BigEndian.PutUint32(nonce, n)
	} else if len(nonce) == 24 {
		binary.BigEndian.PutUint32(nonce, n)
	}
	out, err := c.Seal(nil, plain, nonce)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestForwardEachReceiverOwnKeyAndMode(t *testing.T) {
	room := &Room{}
	var all []*Participant
	for i, m := range crypto.Offered {
		all = append(all, member(t, room, uint64(i+1), m, uint16(5000+i)))
	}
	sender := all[0]
	var f Forwarder
	opus := []byte{0xF8, 0xFF, 0xFE}
	for seq := uint16(1); seq <= 3; seq++ {
		plain := rtp(sender.SSRC, seq, opus)
		out, err := f.Forward(room, sender, addr(5000), seal(t, sender, plain, uint32(seq)))
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != len(all)-1 {
			t.Fatalf("%d datagrams for %d receivers", len(out), len(all)-1)
		}
		for _, d := range out {
			var r *Participant
			for _, p := range all[1:] {
				if a, _ := p.Addr(); a == d.Addr {
					r = p
				}
			}
			got, _, err := r.Cipher().Open(nil, d.Buf)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("receiver %s: %x %v", r.Cipher().Mode(), got, err)
			}
		}
	}
	// Each receiver's nonce counter moved once per packet: no nonce reuse.
	for _, r := range all[1:] {
		if r.Cipher().Mode().NonceSize() == 4 && r.counter.Load() != 3 {
			t.Fatalf("receiver %d counter %d", r.UserID, r.counter.Load())
		}
	}
}

func TestForwardDecisions(t *testing.T) {
	room := &Room{}
	s := member(t, room, 1, crypto.AES256GCMRTPSize, 5001)
	a := member(t, room, 2, crypto.AES256GCMRTPSize, 5002)
	b := member(t, room, 3, crypto.XChaCha20Poly1305RTPSize, 5003)
	var f Forwarder
	n := uint32(0)
	send := func() ([]Datagram, error) {
		n++
		return f.Forward(room, s, addr(5001), seal(t, s, rtp(s.SSRC, uint16(n), []byte{1, 2, 3}), n))
	}
	b.SetFlags(FlagSelfDeaf, 0)
	if out, err := send(); err != nil || len(out) != 1 || out[0].Addr != addr(5002) {
		t.Fatalf("self-deafened receiver: %v %v", out, err)
	}
	b.SetFlags(0, FlagSelfDeaf)
	a.SetFlags(FlagServerDeaf, 0)
	if out, _ := send(); len(out) != 1 || out[0].Addr != addr(5003) {
		t.Fatalf("server-deafened receiver: %v", out)
	}
	a.SetFlags(0, FlagServerDeaf)
	s.SetFlags(FlagServerMute, 0)
	if _, err := send(); !errors.Is(err, ErrMuted) {
		t.Fatalf("server-muted sender: %v", err)
	}
	s.SetFlags(FlagSelfMute, FlagServerMute)
	if out, err := send(); err != nil || len(out) != 2 {
		t.Fatalf("self-muted sender still plays: %v %v", out, err)
	}
	s.SetFlags(0, FlagSelfMute)
	s.SetFlags(0, FlagMaySpeak)
	if _, err := send(); !errors.Is(err, ErrMuted) {
		t.Fatalf("sender without SPEAK: %v", err)
	}
	s.SetFlags(FlagMaySpeak, FlagAnnounced)
	if _, err := send(); !errors.Is(err, ErrMuted) {
		t.Fatalf("sender not announced yet: %v", err)
	}
	s.SetFlags(FlagAnnounced, 0)
	if out, err := send(); err != nil || len(out) != 2 {
		t.Fatalf("back to normal: %v %v", out, err)
	}
}

func TestForwardRejectsBadInput(t *testing.T) {
	room := &Room{}
	s := NewParticipant(1, 1001)
	c, _ := crypto.NewCipher(crypto.AES256GCMRTPSize, key(1))
	s.SetFlags(FlagMaySpeak|FlagAnnounced, 0)
	room.Join(s)
	r := member(t, room, 2, crypto.AES256GCMRTPSize, 5002)
	var f Forwarder
	pkt := func(ssrc uint32, n uint32) []byte {
		out, _ := c.Seal(nil, rtp(ssrc, uint16(n), []byte{9}), binary.BigEndian.AppendUint32(nil, n))
		return out
	}
	if _, err := f.Forward(room, s, addr(6000), pkt(1001, 1)); !errors.Is(err, ErrNoCipher) {
		t.Fatalf("before Select Protocol: %v", err)
	}
	s.SetCipher(c)
	other, _ := crypto.NewCipher(crypto.AES256GCMRTPSize, key(9))
	forged, _ := other.Seal(nil, rtp(1001, 1, []byte{9}), []byte{0, 0, 0, 1})
	if _, err := f.Forward(room, s, addr(6000), forged); !errors.Is(err, crypto.ErrAuth) {
		t.Fatalf("wrong key: %v", err)
	}
	if _, ok := s.Addr(); ok {
		t.Fatal("a forged packet latched the address")
	}
	if _, err := f.Forward(room, s, addr(6000), pkt(1001, 1)[:20]); err == nil {
		t.Fatal("truncated packet accepted")
	}
	if _, err := f.Forward(room, s, addr(6000), pkt(2002, 1)); !errors.Is(err, ErrSSRC) {
		t.Fatalf("another SSRC under this sender's key: %v", err)
	}
	if out, err := f.Forward(room, s, addr(6000), pkt(1001, 2)); err != nil || len(out) != 1 {
		t.Fatalf("good packet: %v %v", out, err)
	}
	if a, _ := s.Addr(); a != addr(6000) {
		t.Fatalf("address not latched: %v", a)
	}
	if _, err := f.Forward(room, s, addr(6000), pkt(1001, 2)); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v", err)
	}
	if _, err := f.Forward(room, s, addr(6001), pkt(1001, 3)); !errors.Is(err, ErrAddress) {
		t.Fatalf("same SSRC from another address: %v", err)
	}
	// The legitimate stream keeps flowing.
	if out, err := f.Forward(room, s, addr(6000), pkt(1001, 4)); err != nil || len(out) != 1 {
		t.Fatalf("after the bad input: %v %v", out, err)
	}
	_ = r
}

func TestForwardAllocationFree(t *testing.T) {
	room := &Room{}
	s := member(t, room, 1, crypto.AES256GCMRTPSize, 5001)
	for i := 2; i <= 11; i++ {
		member(t, room, uint64(i), crypto.Offered[i%len(crypto.Offered)], uint16(5000+i))
	}
	var f Forwarder
	n := uint32(0)
	pkts := make([][]byte, 200)
	for i := range pkts {
		n++
		pkts[i] = seal(t, s, rtp(s.SSRC, uint16(n), make([]byte, 160)), n)
	}
	i := 0
	next := func() {
		if _, err := f.Forward(room, s, addr(5001), pkts[i]); err != nil {
			t.Fatal(err)
		}
		i++
	}
	next() // warm-up sizes the buffers
	if a := testing.AllocsPerRun(100, next); a != 0 && !raceEnabled {
		t.Fatalf("%v allocations per forwarded packet", a)
	}
}

func benchmarkForward(b *testing.B, receivers int) {
	room := &Room{}
	s := member(b, room, 1, crypto.AES256GCMRTPSize, 1)
	for i := 0; i < receivers; i++ {
		member(b, room, uint64(i+2), crypto.AES256GCMRTPSize, uint16(i+2))
	}
	pkts := make([][]byte, 1024)
	for i := range pkts {
		pkts[i] = seal(b, s, rtp(s.SSRC, uint16(i), make([]byte, 160)), uint32(i+1))
	}
	var f Forwarder
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%len(pkts) == 0 && i > 0 {
			// Fresh nonces: a new window, as a new sender would have.
			s.mu.Lock()
			s.window = crypto.ReplayWindow{}
			s.mu.Unlock()
		}
		out, err := f.Forward(room, s, addr(1), pkts[i%len(pkts)])
		if err != nil || len(out) != receivers {
			b.Fatal(err, len(out))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*receivers), "ns/forwarded-packet")
}

func BenchmarkForward(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("receivers=%d", n), func(b *testing.B) { benchmarkForward(b, n) })
	}
}
