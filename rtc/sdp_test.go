package rtc

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
)

const fp = "4A:79:94:16:44:3F:BD:05:41:5A:C7:20:F3:12:54:70:00:73:5D:33:00:2D:2C:80:9B:39:E1:9F:2D:A7:49:87"

// fragment is the cut-down SDP Discord's web client sends (webrtc.md §1).
const fragment = "a=extmap-allow-mixed\na=ice-ufrag:vNxb\na=ice-pwd:tZvpaVbtPNYmaiyVrBQWFdqE\na=ice-options:trickle\n" +
	"a=fingerprint:sha-256 " + fp + "\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\n" +
	"a=rtpmap:111 opus/48000/2\na=extmap:14 urn:ietf:params:rtp-hdrext:toffset\n"

// full is a browser's whole offer, as some clients send it.
var full = "v=0\r\no=- 4215775240449105457 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n" +
	"a=ice-ufrag:Jx8f\r\na=ice-pwd:Mq4T3P1bY8kCcYq0o3c5mQhE\r\na=fingerprint:sha-256 " + strings.ToLower(fp) + "\r\n" +
	"a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n" +
	"a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\na=ssrc:3735928559 cname:x\r\n"

func TestParseOffer(t *testing.T) {
	opus := []Codec{{Name: "opus", Type: "audio", Priority: 1000, PayloadType: 109}}
	for _, tc := range []struct {
		name   string
		sdp    string
		codecs []Codec
		want   Offer
		err    error
	}{
		{"fragment", fragment, nil, Offer{Ufrag: "vNxb", Pwd: "tZvpaVbtPNYmaiyVrBQWFdqE", Fingerprint: fp, OpusPT: 111}, nil},
		{"fragment, codecs list wins", fragment, opus, Offer{Ufrag: "vNxb", Pwd: "tZvpaVbtPNYmaiyVrBQWFdqE", Fingerprint: fp, OpusPT: 109}, nil},
		{"full offer, lower-case fingerprint", full, nil, Offer{Ufrag: "Jx8f", Pwd: "Mq4T3P1bY8kCcYq0o3c5mQhE", Fingerprint: fp, OpusPT: 111, SSRC: 0xDEADBEEF}, nil},
		{"no rtpmap and no codecs: 120", "a=ice-ufrag:abcd\na=ice-pwd:0123456789012345678901\na=fingerprint:sha-256 " + fp, nil,
			Offer{Ufrag: "abcd", Pwd: "0123456789012345678901", Fingerprint: fp, OpusPT: 120}, nil},
		{"codecs without opus", fragment, []Codec{{Name: "H264", Type: "video", PayloadType: 103}, {Name: "speex", Type: "audio", PayloadType: 100}}, Offer{}, ErrNoOpus},
		{"rtpmap without opus", strings.ReplaceAll(fragment, "opus/48000/2", "PCMU/8000"), nil, Offer{}, ErrNoOpus},
		{"opus on the probe type", fragment, []Codec{{Name: "opus", Type: "audio", PayloadType: 96}}, Offer{}, ErrNoOpus},
		{"opus on an RTCP type", fragment, []Codec{{Name: "opus", Type: "audio", PayloadType: 72}}, Offer{}, ErrNoOpus},
		{"no password", strings.ReplaceAll(fragment, "a=ice-pwd:", "a=x:"), nil, Offer{}, ErrNoICE},
		{"short ufrag", strings.ReplaceAll(fragment, "vNxb", "vN"), nil, Offer{}, ErrNoICE},
		{"ufrag with a space", strings.ReplaceAll(fragment, "vNxb", "vN xb"), nil, Offer{}, ErrNoICE},
		{"sha-1 only", strings.ReplaceAll(fragment, "sha-256", "sha-1"), nil, Offer{}, ErrNoFingerprint},
		{"short fingerprint", strings.ReplaceAll(fragment, fp, fp[:20]), nil, Offer{}, ErrNoFingerprint},
		{"fingerprint not hex", strings.ReplaceAll(fragment, fp, strings.ReplaceAll(fp, "4A", "ZZ")), nil, Offer{}, ErrNoFingerprint},
		{"garbage", "hello, world", nil, Offer{}, ErrSDPMalformed},
		{"binary", "a=ice-ufrag:abcd\n\x00\x01\x02", nil, Offer{}, ErrSDPMalformed},
		{"empty", "", nil, Offer{}, ErrNoICE},
		{"huge", fragment + strings.Repeat("a=x:y\n", MaxSDP/6), nil, Offer{}, ErrSDPTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseOffer(tc.sdp, tc.codecs)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("ParseOffer = %+v, %v; want %+v, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

// The offer pion is given is a valid SDP with what the client said.
func TestRemoteOfferParses(t *testing.T) {
	o, err := ParseOffer(full, nil)
	if err != nil {
		t.Fatal(err)
	}
	var d sdp.SessionDescription
	if err := d.UnmarshalString(o.RemoteOffer()); err != nil {
		t.Fatal(err)
	}
	if len(d.MediaDescriptions) != 1 {
		t.Fatalf("%d media sections", len(d.MediaDescriptions))
	}
	m := d.MediaDescriptions[0]
	for attr, want := range map[string]string{"ice-ufrag": "Jx8f", "ice-pwd": "Mq4T3P1bY8kCcYq0o3c5mQhE", "fingerprint": "sha-256 " + fp,
		"rtpmap": "111 opus/48000/2", "ssrc": "3735928559 cname:chorus", "mid": "0"} {
		if got, _ := m.Attribute(attr); got != want {
			t.Errorf("a=%s: %q, want %q", attr, got, want)
		}
	}
}

func TestAnswerFragment(t *testing.T) {
	a := Answer{Ufrag: "mYAf", Pwd: "CGcfCStdC5IY+I9NaTsR7X", Fingerprint: fp, Addr: netip.MustParseAddrPort("203.0.113.21:50029")}
	want := "m=audio 50029 ICE/SDP\na=fingerprint:sha-256 " + fp + "\nc=IN IP4 203.0.113.21\na=rtcp:50029\n" +
		"a=ice-ufrag:mYAf\na=ice-pwd:CGcfCStdC5IY+I9NaTsR7X\na=fingerprint:sha-256 " + fp + "\n" +
		"a=candidate:1 1 UDP 4261412862 203.0.113.21 50029 typ host\n"
	if got := a.Fragment(); got != want {
		t.Fatalf("fragment:\n%s\nwant:\n%s", got, want)
	}
	// A client reading our fragment as we read theirs finds the same.
	o, err := ParseOffer(a.Fragment(), nil)
	if err != nil || o.Ufrag != a.Ufrag || o.Pwd != a.Pwd || o.Fingerprint != fp {
		t.Fatalf("read back: %+v %v", o, err)
	}
}

// FuzzParseOffer: any input is refused with one of the documented errors or
// gives an offer whose rebuilt SDP pion parses with the same credentials.
func FuzzParseOffer(f *testing.F) {
	f.Add(fragment, "opus", 111)
	f.Add(full, "", 0)
	f.Add("a=ice-ufrag:abcd\na=ice-pwd:0123456789012345678901\na=fingerprint:sha-256 "+fp, "H264", 103)
	f.Fuzz(func(t *testing.T, s, codec string, pt int) {
		var codecs []Codec
		if codec != "" {
			codecs = []Codec{{Name: codec, Type: "audio", PayloadType: pt}}
		}
		o, err := ParseOffer(s, codecs)
		if err != nil {
			for _, known := range []error{ErrSDPTooLarge, ErrSDPMalformed, ErrNoICE, ErrNoFingerprint, ErrNoOpus} {
				if errors.Is(err, known) {
					return
				}
			}
			t.Fatalf("undocumented error %v", err)
		}
		var d sdp.SessionDescription
		if err := d.UnmarshalString(o.RemoteOffer()); err != nil {
			t.Fatalf("rebuilt offer does not parse: %v\n%s", err, o.RemoteOffer())
		}
		if u, _ := d.MediaDescriptions[0].Attribute("ice-ufrag"); u != o.Ufrag {
			t.Fatalf("ufrag %q became %q", o.Ufrag, u)
		}
	})
}
