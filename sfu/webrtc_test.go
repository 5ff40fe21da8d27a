package sfu

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/rtc"
	"github.com/chorus-voice/chorus/transport"
	pionrtp "github.com/pion/rtp"
)

// recorder is a Sink that keeps copies of what it is given.
type recorder struct{ got [][]byte }

func (r *recorder) WriteRTP(pkt []byte) error {
	r.got = append(r.got, append([]byte(nil), pkt...))
	return nil
}

// A WebRTC sender's packet reaches UDP receivers sealed in their own mode
// under the sender's SSRC from Ready, with Opus's UDP payload type and no
// header extension; WebRTC receivers get it in plain through their sinks,
// each with its own payload type. A muted sender reaches nobody.
func TestForwardPlainReachesBothKinds(t *testing.T) {
	room := &Room{}
	s := NewParticipant(1, 1001)
	s.SetFlags(FlagMaySpeak|FlagAnnounced, 0)
	room.Join(s)
	udp := member(t, room, 2, crypto.XChaCha20Poly1305RTPSize, 2)
	web, web2 := NewParticipant(3, 1003), NewParticipant(4, 1004)
	r3, r4 := &recorder{}, &recorder{}
	web.SetSink(r3, 111)
	web2.SetSink(r4, 109)
	room.Join(web)
	room.Join(web2)
	// The browser's packet: its own SSRC, payload type 111, an audio
	// level extension (id 1).
	in := []byte{0x90, 111, 0, 7, 0, 0, 0x1B, 0x58, 0xDE, 0xAD, 0xBE, 0xEF, 0xBE, 0xDE, 0, 1, 0x10, 0x2A, 0, 0, 0xF8, 0xFF, 0xFE}
	var f Forwarder
	out, err := f.ForwardPlain(room, s, in)
	if err != nil || len(out) != 1 || out[0].Addr != addr(2) {
		t.Fatalf("forward: %v, %d datagrams", err, len(out))
	}
	plain, _, err := udp.Cipher().Open(nil, out[0].Buf)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x80, 0x78, 0, 7, 0, 0, 0x1B, 0x58, 0, 0, 0x03, 0xE9, 0xF8, 0xFF, 0xFE}
	if string(plain) != string(want) {
		t.Fatalf("UDP receiver got % x\nwant % x", plain, want)
	}
	for _, c := range []struct {
		r  *recorder
		pt byte
	}{{r3, 111}, {r4, 109}} {
		want[1] = c.pt
		if len(c.r.got) != 1 || string(c.r.got[0]) != string(want) {
			t.Fatalf("WebRTC receiver with pt %d got % x", c.pt, c.r.got)
		}
	}
	s.SetFlags(FlagServerMute, 0)
	if out, err := f.ForwardPlain(room, s, in); err != ErrMuted || len(out) != 0 || len(r3.got) != 1 {
		t.Fatalf("muted sender: %v, %d datagrams, %d to sinks", err, len(out), len(r3.got))
	}
	// Garbage from a WebRTC sender is refused, not forwarded.
	s.SetFlags(0, FlagServerMute)
	for _, bad := range [][]byte{nil, {0x80}, {0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {0x90, 111, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0xBE}} {
		if _, err := f.ForwardPlain(room, s, bad); err == nil {
			t.Errorf("% x forwarded", bad)
		}
	}
	if len(r3.got) != 1 {
		t.Fatalf("garbage reached a sink")
	}
}

// BenchmarkFanOut forwards one WebRTC sender's packet (already decrypted,
// as pion hands it over) to n receivers of one kind, the system calls
// included: "webrtc" receivers are pion clients connected through the
// leg (SRTP per receiver, one sendmmsg per fan-out through its batching
// socket); "udp" receivers are native clients (sealed with
// aead_aes256_gcm_rtpsize, one sendmmsg). Issue 12 §2's target: the
// WebRTC path within 1.5× of the UDP path.
func BenchmarkFanOut(b *testing.B) {
	for _, kind := range []string{"udp", "webrtc"} {
		for _, n := range []int{5, 10} {
			b.Run(fmt.Sprintf("%s/receivers=%d", kind, n), func(b *testing.B) { benchmarkFanOut(b, kind, n) })
		}
	}
}

func benchmarkFanOut(b *testing.B, kind string, n int) {
	// A socket that swallows what the UDP receivers are sent.
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := sink.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
		}
	}()
	w, err := transport.NewWriter(sink)
	if err != nil {
		b.Fatal(err)
	}
	room := &Room{}
	s := NewParticipant(1, 1001)
	s.SetFlags(FlagMaySpeak|FlagAnnounced, 0)
	room.Join(s)
	var f Forwarder
	var leg *rtc.Leg
	for i := 0; i < n; i++ {
		switch kind {
		case "udp":
			p := member(b, room, uint64(i+2), crypto.AES256GCMRTPSize, 0)
			a := sink.LocalAddr().(*net.UDPAddr).AddrPort()
			p.addr.Store(&a)
		case "webrtc":
			if leg == nil {
				if leg, err = rtc.Listen(rtc.Config{Listen: "127.0.0.1:0"}); err != nil {
					b.Fatal(err)
				}
				defer leg.Close()
				f.Batch = leg.Batch()
			}
			p := NewParticipant(uint64(i+2), uint32(1002+i))
			p.SetSink(connectedPeer(b, leg), rtc.ClientOpusPT)
			room.Join(p)
		}
	}
	pkt := make([]byte, 12+160)
	pkt[0], pkt[1], pkt[11] = 0x80, rtc.ClientOpusPT, 7
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pkt[2], pkt[3] = byte(i>>8), byte(i)
		out, err := f.ForwardPlain(room, s, pkt)
		if err != nil {
			b.Fatal(err)
		}
		w.Write(out)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/forwarded-packet")
}

// connectedPeer connects a pion client to leg and returns the server's
// peer once it can send.
func connectedPeer(t testing.TB, leg *rtc.Leg) *rtc.Peer {
	t.Helper()
	c, err := rtc.NewClient(func(*pionrtp.Packet) {})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	o, err := rtc.ParseOffer(c.Offer, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := leg.Connect(o, func([]byte) {}, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if err := c.Accept(p.Answer.Fragment()); err != nil {
		t.Fatal(err)
	}
	probe := []byte{0x80, rtc.ClientOpusPT, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xF8}
	for i := 0; p.WriteRTP(probe) != nil; i++ {
		if i == 1000 {
			t.Fatal("peer never connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}
