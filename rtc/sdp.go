// Package rtc is the voice node's WebRTC leg (issue 12): browsers join the
// same rooms as native clients through the same voice gateway, with Select
// Protocol "webrtc" (../shared/protocol/webrtc.md). Media is DTLS-SRTP
// through pion in ICE-lite, every participant on one shared UDP port; the
// SFU (package sfu) forwards between the two transports. This file is the
// SDP side: pure functions over the strings Select Protocol carries and
// Session Description answers, like the other codecs of the project.
package rtc

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/chorus-voice/chorus/protocol"
)

// MaxSDP bounds the SDP a client may send. Discord's web client sends a
// fragment of a few hundred bytes; a full browser offer is 2–6 KB (and a
// voice payload is at most protocol.MaxPayload anyway).
const MaxSDP = 8 << 10

// Errors of ParseOffer. Each closes the voice connection with 4020 (bad
// request) and the error's text as the reason.
var (
	ErrSDPTooLarge   = errors.New("sdp too large")
	ErrSDPMalformed  = errors.New("sdp malformed")
	ErrNoICE         = errors.New("sdp has no valid ice-ufrag and ice-pwd")
	ErrNoFingerprint = errors.New("sdp has no valid sha-256 fingerprint")
	ErrNoOpus        = errors.New("no opus codec offered")
)

// Codec is one entry of Select Protocol's codecs list (webrtc.md §1).
type Codec = protocol.VoiceCodec

// DefaultOpusPT is the payload type assumed when a client names none
// (webrtc.md §1), the UDP protocol's Opus.
const DefaultOpusPT = 120

// Offer is what the server takes from a client's SDP: its ICE credentials
// and DTLS fingerprint, the payload type it wants Opus on, and the SSRC it
// announced for its audio (0 if none).
type Offer struct {
	Ufrag, Pwd  string
	Fingerprint string // sha-256, upper-case hex pairs with colons
	OpusPT      uint8
	SSRC        uint32
}

// ParseOffer reads a client's SDP: the cut-down fragment Discord's web
// client sends (no v= line, attribute lines only) or a full offer; both
// are read the same way, line by line, and nothing else of them is used.
// codecs is Select Protocol's list; when it is empty the SDP's own
// a=rtpmap lines name Opus, and with neither Opus is DefaultOpusPT.
func ParseOffer(sdp string, codecs []Codec) (Offer, error) {
	var o Offer
	if len(sdp) > MaxSDP {
		return o, ErrSDPTooLarge
	}
	rtpmaps, opus := 0, -1
	for line := range strings.Lines(sdp) {
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			continue
		}
		if len(line) < 2 || line[1] != '=' || line[0] < 'a' || line[0] > 'z' {
			return Offer{}, fmt.Errorf("%w: line %.40q", ErrSDPMalformed, line)
		}
		if line[0] != 'a' {
			continue
		}
		name, value, _ := strings.Cut(line[2:], ":")
		switch name {
		case "ice-ufrag":
			o.Ufrag = value
		case "ice-pwd":
			o.Pwd = value
		case "fingerprint":
			hash, fp, ok := strings.Cut(value, " ")
			if ok && strings.EqualFold(hash, "sha-256") {
				o.Fingerprint = strings.ToUpper(fp)
			}
		case "rtpmap":
			rtpmaps++
			pt, enc, _ := strings.Cut(value, " ")
			if n, err := strconv.Atoi(pt); err == nil && n >= 0 && n < 128 && strings.HasPrefix(strings.ToLower(enc), "opus/48000") && opus < 0 {
				opus = n
			}
		case "ssrc":
			id, _, _ := strings.Cut(value, " ")
			if n, err := strconv.ParseUint(id, 10, 32); err == nil && o.SSRC == 0 {
				o.SSRC = uint32(n)
			}
		}
	}
	if !iceChars(o.Ufrag, 4) || !iceChars(o.Pwd, 22) {
		return Offer{}, ErrNoICE
	}
	if !validFingerprint(o.Fingerprint) {
		return Offer{}, ErrNoFingerprint
	}
	switch {
	case len(codecs) > 0:
		opus = -1
		for _, c := range codecs {
			if strings.EqualFold(c.Name, "opus") && (c.Type == "" || c.Type == "audio") && c.PayloadType >= 0 && c.PayloadType < 128 {
				opus = c.PayloadType
				break
			}
		}
	case rtpmaps == 0:
		opus = DefaultOpusPT
	}
	// 96 is reserved for probes (webrtc.md §1); 64–95 would collide with
	// RTCP packet types under rtcp-mux (RFC 5761 §4).
	if opus < 0 || opus == 96 || (opus >= 64 && opus < 96) {
		return Offer{}, ErrNoOpus
	}
	o.OpusPT = uint8(opus)
	return o, nil
}

// iceChars reports whether s is an ICE ufrag or password: at least min
// ice-chars (ALPHA / DIGIT / "+" / "/", RFC 8839 §5.4), at most 256.
func iceChars(s string, min int) bool {
	if len(s) < min || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '/') {
			return false
		}
	}
	return true
}

// validFingerprint reports whether fp is a sha-256 fingerprint: 32
// upper-case hex pairs separated by colons (RFC 8122 §5).
func validFingerprint(fp string) bool {
	if len(fp) != 32*3-1 {
		return false
	}
	for i := 0; i < len(fp); i++ {
		c := fp[i]
		if i%3 == 2 {
			if c != ':' {
				return false
			}
		} else if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// RemoteOffer is the full offer pion is given for a client: one bundled
// audio section with the client's credentials. The client's own SDP is
// never passed on — it is read (ParseOffer) and rebuilt, so whatever else
// it says cannot reach pion's parser or change what the server answers.
func (o Offer) RemoteOffer() string {
	var b strings.Builder
	pt := strconv.Itoa(int(o.OpusPT))
	b.WriteString("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n")
	b.WriteString("m=audio 9 UDP/TLS/RTP/SAVPF " + pt + "\r\nc=IN IP4 0.0.0.0\r\n")
	b.WriteString("a=ice-ufrag:" + o.Ufrag + "\r\na=ice-pwd:" + o.Pwd + "\r\n")
	b.WriteString("a=fingerprint:sha-256 " + o.Fingerprint + "\r\n")
	b.WriteString("a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n")
	b.WriteString("a=rtpmap:" + pt + " opus/48000/2\r\na=fmtp:" + pt + " minptime=10;useinbandfec=1\r\n")
	if o.SSRC != 0 {
		b.WriteString("a=ssrc:" + strconv.FormatUint(uint64(o.SSRC), 10) + " cname:chorus\r\n")
	}
	return b.String()
}

// Answer is what the server tells a client in Session Description.
type Answer struct {
	Ufrag, Pwd  string
	Fingerprint string // sha-256
	Addr        netip.AddrPort
}

// Fragment is the answer in the form Discord's voice server sends
// (webrtc.md §2): the ICE-lite host candidate of the shared port, the
// credentials and the fingerprint, from which the client builds its
// remote description. The fingerprint line appears twice, as Discord's
// does; clients read either.
func (a Answer) Fragment() string {
	ip, port := a.Addr.Addr().String(), strconv.Itoa(int(a.Addr.Port()))
	fp := "a=fingerprint:sha-256 " + a.Fingerprint + "\n"
	return "m=audio " + port + " ICE/SDP\n" + fp + "c=IN IP4 " + ip + "\n" + "a=rtcp:" + port + "\n" +
		"a=ice-ufrag:" + a.Ufrag + "\n" + "a=ice-pwd:" + a.Pwd + "\n" + fp +
		"a=candidate:1 1 UDP 4261412862 " + ip + " " + port + " typ host\n"
}

// ParseAnswer reads a Session Description fragment (the client's side of
// Fragment): the credentials, the fingerprint and the host candidate.
func ParseAnswer(fragment string) (Answer, error) {
	o, err := ParseOffer(fragment, []Codec{{Name: "opus", PayloadType: DefaultOpusPT}})
	if err != nil {
		return Answer{}, err
	}
	a := Answer{Ufrag: o.Ufrag, Pwd: o.Pwd, Fingerprint: o.Fingerprint}
	for line := range strings.Lines(fragment) {
		// a=candidate:<foundation> <component> <transport> <priority> <ip> <port> typ host
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "a=candidate:"))
		if !strings.HasPrefix(strings.TrimSpace(line), "a=candidate:") || len(f) < 8 || !strings.EqualFold(f[2], "udp") {
			continue
		}
		ip, err := netip.ParseAddr(f[4])
		port, perr := strconv.ParseUint(f[5], 10, 16)
		if err == nil && perr == nil && ip.Is4() && port != 0 {
			a.Addr = netip.AddrPortFrom(ip, uint16(port))
			return a, nil
		}
	}
	return Answer{}, ErrNoCandidate
}

// ErrNoCandidate: an answer fragment without a usable IPv4 UDP candidate.
var ErrNoCandidate = errors.New("sdp has no ipv4 udp host candidate")

// RemoteAnswer is the full answer a client gives its PeerConnection for
// the server's fragment, as Discord's web client builds one (webrtc.md
// §2): an ICE-lite, DTLS-passive, bundled audio section with the client's
// own mid and Opus payload type.
func (a Answer) RemoteAnswer(mid string, opusPT uint8) string {
	ip, port, pt := a.Addr.Addr().String(), strconv.Itoa(int(a.Addr.Port())), strconv.Itoa(int(opusPT))
	return "v=0\r\no=- 1 1 IN IP4 " + ip + "\r\ns=-\r\nt=0 0\r\na=ice-lite\r\na=group:BUNDLE " + mid + "\r\n" +
		"m=audio " + port + " UDP/TLS/RTP/SAVPF " + pt + "\r\nc=IN IP4 " + ip + "\r\na=rtcp:" + port + "\r\n" +
		"a=ice-ufrag:" + a.Ufrag + "\r\na=ice-pwd:" + a.Pwd + "\r\na=fingerprint:sha-256 " + a.Fingerprint + "\r\n" +
		"a=setup:passive\r\na=mid:" + mid + "\r\na=sendrecv\r\na=rtcp-mux\r\n" +
		"a=rtpmap:" + pt + " opus/48000/2\r\na=fmtp:" + pt + " minptime=10;useinbandfec=1\r\n" +
		"a=candidate:1 1 UDP 4261412862 " + ip + " " + port + " typ host\r\na=end-of-candidates\r\n"
}
