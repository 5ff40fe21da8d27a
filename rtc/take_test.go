package rtc

import (
	"net"
	"net/netip"
	"testing"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// What a peer on the leg's own path sends is decrypted on the read loop
// and forwarded; a replay, a forgery and a stranger's packet are not:
// the first two are counted and dropped, the stranger's is left to pion.
func TestTakeDecryptsOnceAndCountsTheRest(t *testing.T) {
	key, salt := make([]byte, 16), make([]byte, 12)
	for i := range key {
		key[i] = byte(i)
	}
	profile := srtp.ProtectionProfileAeadAes128Gcm
	client, err := srtp.CreateContext(key, salt, profile)
	if err != nil {
		t.Fatal(err)
	}
	in, err := srtp.CreateContext(key, salt, profile, srtp.SRTPReplayProtection(replayWindow))
	if err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	from := netip.MustParseAddrPort("127.0.0.1:40000")
	l := &Leg{byAddr: map[netip.AddrPort]*Peer{}}
	p := &Peer{leg: l, in: in, inBuf: make([]byte, 0, 1500), onMedia: func(b []byte) { got = append(got, append([]byte(nil), b...)) }}
	l.byAddr[from] = p

	plain, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: 7, SSRC: 42}, Payload: []byte{0xF8, 1, 2}}).Marshal()
	sealed, err := client.EncryptRTP(nil, plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !isRTP(sealed) || !l.take(sealed, from) || len(got) != 1 || string(got[0]) != string(plain) {
		t.Fatalf("a good packet: got %x", got)
	}
	if !l.take(append([]byte(nil), sealed...), from) || len(got) != 1 || l.Stats.BadSRTP.Load() != 1 {
		t.Fatalf("a replay: forwarded %d, bad %d", len(got), l.Stats.BadSRTP.Load())
	}
	forged := append([]byte(nil), sealed...)
	forged[2], forged[3] = 0, 8 // next sequence number, same ciphertext
	forged[len(forged)-1] ^= 1
	if !l.take(forged, from) || len(got) != 1 || l.Stats.BadSRTP.Load() != 2 {
		t.Fatalf("a forgery: forwarded %d, bad %d", len(got), l.Stats.BadSRTP.Load())
	}
	if l.take(sealed, netip.MustParseAddrPort("127.0.0.1:40001")) {
		t.Fatal("a packet from an address no peer is at was taken")
	}
}

func TestIsRTP(t *testing.T) {
	for _, tc := range []struct {
		b    []byte
		want bool
	}{
		{[]byte{0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1}, true},
		{[]byte{0x80, 200, 0, 6, 0, 0, 0, 0, 0, 0, 0, 1}, false},              // RTCP sender report
		{[]byte{0x81, 201, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1}, false},              // RTCP receiver report
		{[]byte{0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42, 0, 0, 0, 0}, false}, // STUN
		{[]byte{22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false},            // DTLS
		{[]byte{0x80, 111}, false},
	} {
		if got := isRTP(tc.b); got != tc.want {
			t.Errorf("isRTP(% x) = %v", tc.b, got)
		}
	}
}

// The own path's hot work allocates nothing per packet: encrypting and
// queueing one for a receiver, and decrypting and handing on one from a
// sender (issue 12 §2).
func TestOwnSRTPAllocation(t *testing.T) {
	key, salt := make([]byte, 16), make([]byte, 12)
	profile := srtp.ProtectionProfileAeadAes128Gcm
	out, err := srtp.CreateContext(key, salt, profile)
	if err != nil {
		t.Fatal(err)
	}
	l := listen(t, Config{})
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	o := newOwnSRTP(out, sink.LocalAddr().(*net.UDPAddr).AddrPort())
	pkt, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SSRC: 42}, Payload: make([]byte, 80)}).Marshal()
	o.write(l.conn, pkt) // the stream's first packet makes its counters
	seq := uint16(1)
	if n := testing.AllocsPerRun(500, func() {
		seq++
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		l.conn.Begin()
		if err := o.write(l.conn, pkt); err != nil {
			t.Fatal(err)
		}
		l.conn.End()
	}); n != 0 && !raceEnabled {
		t.Errorf("sending: %v allocations per packet", n)
	}

	sender, _ := srtp.CreateContext(key, salt, profile)
	in, _ := srtp.CreateContext(key, salt, profile, srtp.SRTPReplayProtection(replayWindow))
	from := netip.MustParseAddrPort("127.0.0.1:40000")
	sealed := make([][]byte, 502)
	for i := range sealed {
		pkt[2], pkt[3] = byte(i>>8), byte(i)
		sealed[i], _ = sender.EncryptRTP(nil, pkt, nil)
	}
	var forwarded int
	p := &Peer{leg: l, in: in, inBuf: make([]byte, 0, 1500), onMedia: func([]byte) { forwarded++ }}
	l.inMu.Lock()
	l.byAddr[from] = p
	l.inMu.Unlock()
	i := 0
	if n := testing.AllocsPerRun(500, func() {
		l.take(sealed[i], from)
		i++
	}); (n != 0 && !raceEnabled) || forwarded != i {
		t.Errorf("receiving: %v allocations per packet, %d of %d forwarded", n, forwarded, i)
	}
}
