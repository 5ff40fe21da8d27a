package rtc

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
)

func listen(t testing.TB, cfg Config) *Leg {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	l, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// A pion client joins as a browser does — its offer in, the server's
// fragment back — and media flows both ways over the shared port: the
// client's packets reach onMedia decrypted, and packets the server writes
// under any SSRC reach the client with the client's payload type.
func TestPeerConnectsAndCarriesMediaBothWays(t *testing.T) {
	got := make(chan []byte, 64)
	closed := make(chan error, 1)
	heard := make(chan rtp.Packet, 64)
	l, p, c := connected(t, func(pkt []byte) {
		select {
		case got <- append([]byte(nil), pkt...):
		default:
		}
	}, func(p *rtp.Packet) {
		cp := *p // the client reuses p
		cp.Payload = append([]byte(nil), p.Payload...)
		if cp.SSRC == 0xCAFEBABE {
			select {
			case heard <- cp:
			default:
			}
		}
	}, func(err error) { closed <- err })
	if p.Answer.Addr != l.Addr() {
		t.Fatalf("answer names %v, the port is %v", p.Answer.Addr, l.Addr())
	}
	// Client → server: until one arrives (the first packets may precede
	// the server's SRTP being ready).
	deadline := time.After(10 * time.Second)
	var in []byte
	for seq := uint16(1); in == nil; seq++ {
		if err := c.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 960}, Payload: []byte{0xF8, 0xFF, 0xFE}}); err != nil {
			t.Fatal(err)
		}
		select {
		case in = <-got:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatal("no packet from the client reached the server")
		}
	}
	if len(in) < 15 || in[1]&0x7F != ClientOpusPT || string(in[len(in)-3:]) != "\xF8\xFF\xFE" {
		t.Fatalf("server got % x", in)
	}
	// Server → client, under an SSRC of the server's choosing (a speaker's).
	pkt := []byte{0x80, ClientOpusPT, 0, 1, 0, 0, 3, 0xC0, 0xCA, 0xFE, 0xBA, 0xBE, 1, 2, 3}
	var out rtp.Packet
	for seq := uint16(1); out.SSRC == 0; seq++ {
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		if err := p.WriteRTP(pkt); err != nil && seq%50 == 0 {
			t.Log(err)
		}
		select {
		case out = <-heard:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatal("no packet from the server reached the client")
		}
	}
	if out.SSRC != 0xCAFEBABE || out.PayloadType != ClientOpusPT || string(out.Payload) != "\x01\x02\x03" {
		t.Fatalf("client got %v", out)
	}
	// Once connected the leg encrypts with keys it learned itself (keys.go)
	// and sends on its own path: the client decrypting what comes next
	// proves those keys right.
	for p.own.Load() == nil {
		select {
		case <-deadline:
			t.Fatalf("the peer never went on the leg's own SRTP path (%d on pion's)", l.Stats.PionSRTP.Load())
		case <-time.After(5 * time.Millisecond):
		}
	}
	for len(heard) > 0 {
		<-heard
	}
	pkt[12] = 9 // a payload pion's path never sent
	out = rtp.Packet{}
	for seq := uint16(1000); out.SSRC == 0; seq++ {
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		if err := p.WriteRTP(pkt); err != nil {
			t.Fatal(err)
		}
		select {
		case out = <-heard:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatal("nothing sent on the leg's own path reached the client")
		}
	}
	if out.SSRC != 0xCAFEBABE || string(out.Payload) != "\x09\x02\x03" {
		t.Fatalf("client got %v from the own path", out)
	}
	// What the client sends now is decrypted by the leg itself (take).
	for len(got) > 0 {
		<-got
	}
	in = nil
	for seq := uint16(3000); in == nil || in[len(in)-1] != 0x0A; seq++ {
		if err := c.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 960}, Payload: []byte{0xF8, 0x0A}}); err != nil {
			t.Fatal(err)
		}
		select {
		case in = <-got:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatal("nothing the client sent reached the server on the own path")
		}
	}
	if l.Stats.BadSRTP.Load() != 0 {
		t.Fatalf("%d of the client's packets did not decrypt", l.Stats.BadSRTP.Load())
	}
	// And it reports what it sends (RTCP sender reports, RFC 3550 §6.4.1).
	// pion gives the client the RTCP of its first stream only: SSRC 1 from
	// connected's loop, or 0xCAFEBABE if all of those came before SRTP.
	first := []byte{0x80, ClientOpusPT, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xF8, 0xF9}
	srDeadline := time.After(3 * senderReportEvery)
	for seq := uint16(2000); ; seq++ {
		sr, ok := c.SenderReport(1)
		if !ok {
			sr, ok = c.SenderReport(0xCAFEBABE)
		}
		if ok {
			at := time.Unix(int64(sr.NTPTime>>32)-2208988800, 0)
			if sr.PacketCount == 0 || sr.OctetCount < sr.PacketCount || time.Since(at).Abs() > 10*time.Second {
				t.Fatalf("sender report %+v (at %v)", sr, at)
			}
			break
		}
		first[2], first[3] = byte(seq>>8), byte(seq)
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		p.WriteRTP(first)
		p.WriteRTP(pkt)
		select {
		case <-srDeadline:
			t.Fatal("no sender report reached the client")
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.Close()
	if err := <-closed; err != nil {
		t.Fatalf("Close reported %v", err)
	}
}

// A client that offers but never connects (no ICE, no DTLS) is dropped
// after ConnectTimeout, and counted.
func TestPeerThatNeverConnectsIsDropped(t *testing.T) {
	l := listen(t, Config{ConnectTimeout: 300 * time.Millisecond})
	c, err := NewClient(func(*rtp.Packet) {})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	o, err := ParseOffer(c.Offer, nil)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	var media atomic.Int64
	p, err := l.Connect(o, func([]byte) { media.Add(1) }, func(err error) { closed <- err })
	if err != nil {
		t.Fatal(err)
	}
	// Media for it goes nowhere (pion drops it until SRTP is up).
	if err := p.WriteRTP([]byte{0x80, ClientOpusPT, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xF8}); err != nil {
		t.Fatalf("a write to an unconnected peer: %v", err)
	}
	// The client never applies the answer.
	select {
	case err := <-closed:
		if !errors.Is(err, ErrConnectTimeout) {
			t.Fatalf("closed with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not dropped")
	}
	if l.Stats.TimedOut.Load() != 1 || l.Stats.Connected.Load() != 0 {
		t.Fatalf("timed out %d, connected %d", l.Stats.TimedOut.Load(), l.Stats.Connected.Load())
	}
}

// connected returns a leg, a server peer on it and the pion client it is
// connected to, once the peer can send.
func connected(t testing.TB, onMedia func([]byte), onRTP func(*rtp.Packet), onClose func(error)) (*Leg, *Peer, *Client) {
	t.Helper()
	l := listen(t, Config{})
	c, err := NewClient(onRTP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	o, err := ParseOffer(c.Offer, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.Connect(o, onMedia, onClose)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if err := c.Accept(p.Answer.Fragment()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Connected():
	case <-time.After(10 * time.Second):
		t.Fatal("client did not connect")
	}
	// The server's track is bound once negotiated; until then a write is
	// refused (and before SRTP is up pion drops it silently).
	pkt := []byte{0x80, ClientOpusPT, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xF8}
	for i := 0; p.WriteRTP(pkt) != nil; i++ {
		if i == 1000 {
			t.Fatal("server track never bound")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return l, p, c
}

// BenchmarkPeerWriteRTP is the cost of one forwarded packet to a WebRTC
// receiver on the leg's own SRTP path, outside a fan-out (so with its own
// sendto); issue 12 §2: it must not allocate.
func BenchmarkPeerWriteRTP(b *testing.B) {
	_, p, _ := connected(b, func([]byte) {}, func(*rtp.Packet) {}, func(error) {})
	pkt := make([]byte, 12+80)
	pkt[0], pkt[1], pkt[11] = 0x80, ClientOpusPT, 2
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pkt[2], pkt[3] = byte(i>>8), byte(i)
		if err := p.WriteRTP(pkt); err != nil {
			b.Fatal(err)
		}
	}
}
