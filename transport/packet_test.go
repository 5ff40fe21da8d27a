package transport

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
)

func h(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func TestDiscoveryWorkedExample(t *testing.T) {
	// voice.md §9.1.
	req := append(h("0001004612345678"), make([]byte, 66)...)
	ssrc, ok := ParseDiscoveryRequest(req)
	if !ok || ssrc != 0x12345678 {
		t.Fatalf("request: %x %v", ssrc, ok)
	}
	resp, err := AppendDiscoveryResponse(nil, ssrc, netip.MustParseAddrPort("203.0.113.7:50000"))
	if err != nil {
		t.Fatal(err)
	}
	want := append(h("0002004612345678"), []byte("203.0.113.7")...)
	want = append(want, make([]byte, 64-len("203.0.113.7"))...)
	want = append(want, 0xC3, 0x50)
	if !bytes.Equal(resp, want) || len(resp) != DiscoverySize {
		t.Fatalf("response\n got %x\nwant %x", resp, want)
	}
	// An IPv4-mapped IPv6 source is answered as IPv4; real IPv6 is refused.
	if _, err := AppendDiscoveryResponse(nil, 1, netip.MustParseAddrPort("[::ffff:127.0.0.1]:9")); err != nil {
		t.Fatal(err)
	}
	if _, err := AppendDiscoveryResponse(nil, 1, netip.MustParseAddrPort("[::1]:9")); err == nil {
		t.Fatal("IPv6 answered")
	}
	for _, bad := range [][]byte{req[:73], append(req, 0), append(h("0002004612345678"), make([]byte, 66)...), append(h("0001004512345678"), make([]byte, 66)...)} {
		if _, ok := ParseDiscoveryRequest(bad); ok {
			t.Fatalf("accepted %x", bad[:8])
		}
	}
}

func TestClassify(t *testing.T) {
	disc := append(h("0001004612345678"), make([]byte, 66)...)
	tests := []struct {
		b    []byte
		want Kind
	}{
		{disc, KindDiscovery},
		{make([]byte, 8), KindKeepAlive},
		{h("80c80006 12345678 0000000000000000"), KindRTCP},
		{h("81cc0006 12345678 0000000000000000"), KindRTCP},
		{h("80780001000003c012345678 f8fffe"), KindRTP},
		{h("90780001000003c012345678 bede0001"), KindRTP},
		{h("40780001000003c012345678 f8fffe"), KindUnknown},
		{h("8078"), KindUnknown},
		{nil, KindUnknown},
	}
	for _, tt := range tests {
		if got := Classify(tt.b); got != tt.want {
			t.Errorf("%x: %d want %d", tt.b, got, tt.want)
		}
	}
}

func TestForwardNormalises(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"plain", "80780001000003c012345678 f8fffe", "80780001000003c012345678 f8fffe"},
		{"marker and other PT cleared", "80ff0001000003c012345678 f8fffe", "80780001000003c012345678 f8fffe"},
		{"CSRCs dropped", "82780001000003c012345678 aaaaaaaa bbbbbbbb f8fffe", "80780001000003c012345678 f8fffe"},
		{"BEDE extension kept", "90780001000003c012345678 bede0001 107f0000 f8fffe", "90780001000003c012345678 bede0001 107f0000 f8fffe"},
		{"other extension dropped", "90780001000003c012345678 10000001 deadbeef f8fffe", "80780001000003c012345678 f8fffe"},
		{"padding stripped", "a0780001000003c012345678 f8fffe 000003", "80780001000003c012345678 f8fffe"},
		{"all at once", "b1f80001000003c012345678 cccccccc bede0001 107f0000 f8fffe 0002", "90780001000003c012345678 bede0001 107f0000 f8fffe"},
	}
	for _, tt := range tests {
		in := h(tt.in)
		hd, err := ParseRTP(in)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		got, err := AppendForward(nil, in, hd)
		if err != nil || !bytes.Equal(got, h(tt.want)) {
			t.Errorf("%s:\n got %x %v\nwant %s", tt.name, got, err, tt.want)
		}
	}
	for name, bad := range map[string]string{
		"short":             "8078000100",
		"csrc beyond end":   "83780001000003c012345678 aaaaaaaa",
		"ext beyond end":    "90780001000003c012345678 bede0004 00",
		"zero padding":      "a0780001000003c012345678 f8fffe00",
		"padding too large": "a0780001000003c012345678 f809",
	} {
		in := h(bad)
		hd, err := ParseRTP(in)
		if err == nil {
			_, err = AppendForward(nil, in, hd)
		}
		if err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func FuzzParseRTP(f *testing.F) {
	f.Add(h("80780001000003c012345678f8fffe"))
	f.Add(h("b1f80001000003c012345678ccccccccbede0001107f0000f8fffe0002"))
	f.Add(h("90780001000003c01234567810000001deadbeef"))
	f.Fuzz(func(t *testing.T, b []byte) {
		hd, err := ParseRTP(b)
		if err != nil {
			return
		}
		if hd.Len > len(b) || hd.Len < 12 {
			t.Fatalf("header length %d of %d", hd.Len, len(b))
		}
		out, err := AppendForward(nil, b, hd)
		if err != nil {
			return
		}
		back, err := ParseRTP(out)
		if err != nil || back.CSRCCount != 0 || back.Padding || back.Marker || back.PayloadType != 120 ||
			back.SSRC != hd.SSRC || back.Sequence != hd.Sequence || (back.Extension && back.ExtProfile != 0xBEDE) {
			t.Fatalf("forwarded packet %x is not normal: %+v %v", out, back, err)
		}
	})
}

func FuzzDiscovery(f *testing.F) {
	f.Add(append(h("0001004612345678"), make([]byte, 66)...), uint16(50000))
	f.Add([]byte{0, 1}, uint16(1))
	f.Fuzz(func(t *testing.T, b []byte, port uint16) {
		ssrc, ok := ParseDiscoveryRequest(b)
		if !ok {
			return
		}
		resp, err := AppendDiscoveryResponse(nil, ssrc, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port))
		if err != nil || len(resp) != DiscoverySize || len(resp) > len(b) {
			t.Fatalf("response %d bytes to a %d-byte request (%v)", len(resp), len(b), err)
		}
	})
}

// FuzzClassify checks the demultiplexing rule of voice.md §9.3 and the
// RTCP sender field on arbitrary datagrams.
func FuzzClassify(f *testing.F) {
	f.Add(h("80c8000612345678"))
	f.Add(h("80780001000003c012345678f8fffe"))
	f.Add(make([]byte, 8))
	f.Fuzz(func(t *testing.T, b []byte) {
		switch Classify(b) {
		case KindRTCP:
			if ssrc, ok := RTCPSenderSSRC(b); !ok || b[0]>>6 != 2 || b[1] < 200 || b[1] > 204 || len(b) < 12 {
				t.Fatalf("RTCP %x (ssrc %d)", b, ssrc)
			}
		case KindRTP:
			if len(b) < 12 || b[0]>>6 != 2 || (b[1] >= 200 && b[1] <= 204) {
				t.Fatalf("RTP %x", b)
			}
		case KindDiscovery:
			if len(b) != DiscoverySize {
				t.Fatal("discovery of the wrong size")
			}
		}
	})
}
