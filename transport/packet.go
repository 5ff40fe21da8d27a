// Package transport owns the voice UDP path: sockets, batched reads and
// writes, IP discovery, keep-alives and demultiplexing. The packet formats
// are pure functions over byte slices in this file (voice.md §9, §10, §11).
package transport

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Kind is what a datagram is, by its first bytes and length (voice.md §9.3).
type Kind uint8

// Datagram kinds.
const (
	KindUnknown   Kind = iota // dropped
	KindDiscovery             // IP discovery request
	KindKeepAlive             // 8-byte keep-alive, echoed
	KindRTCP                  // RTCP (RFC 5761: payload type 200-204)
	KindRTP                   // RTP
)

// DiscoverySize is the size of IP discovery requests and responses.
const DiscoverySize = 74

// KeepAliveSize is the size of a keep-alive datagram.
const KeepAliveSize = 8

// Classify tells what a datagram is.
func Classify(b []byte) Kind {
	switch {
	case len(b) == DiscoverySize && b[0] == 0 && b[1] == 1:
		return KindDiscovery
	case len(b) == KeepAliveSize:
		return KindKeepAlive
	case len(b) < 12 || b[0]>>6 != 2:
		return KindUnknown
	case b[1] >= 200 && b[1] <= 204:
		return KindRTCP
	}
	return KindRTP
}

// ParseDiscoveryRequest returns the SSRC of an IP discovery request:
// type 1, length 70, the SSRC, then zeros (voice.md §9.1).
func ParseDiscoveryRequest(b []byte) (ssrc uint32, ok bool) {
	if len(b) != DiscoverySize || binary.BigEndian.Uint16(b) != 1 || binary.BigEndian.Uint16(b[2:]) != 70 {
		return 0, false
	}
	return binary.BigEndian.Uint32(b[4:]), true
}

// AppendDiscoveryResponse appends the 74-byte answer for ssrc seen from
// addr: type 2, length 70, the SSRC, the IPv4 address as NUL-padded text
// from byte 8, the port big-endian in the last two bytes (clients.md §11).
// It fails for an address that is not IPv4 (discord.js accepts only IPv4).
func AppendDiscoveryResponse(dst []byte, ssrc uint32, addr netip.AddrPort) ([]byte, error) {
	ip := addr.Addr().Unmap()
	if !ip.Is4() {
		return dst, errors.New("transport: IP discovery needs an IPv4 address")
	}
	start := len(dst)
	dst = append(dst, make([]byte, DiscoverySize)...)
	p := dst[start:]
	binary.BigEndian.PutUint16(p, 2)
	binary.BigEndian.PutUint16(p[2:], 70)
	binary.BigEndian.PutUint32(p[4:], ssrc)
	ip.AppendTo(p[8:8])
	binary.BigEndian.PutUint16(p[72:], addr.Port())
	return dst, nil
}

// RTP packet errors.
var (
	ErrShort   = errors.New("transport: packet too short")
	ErrVersion = errors.New("transport: not RTP version 2")
	ErrPadding = errors.New("transport: bad RTP padding")
)

// RTPHeader is a parsed RTP header (RFC 3550 §5.1, RFC 8285).
type RTPHeader struct {
	Padding     bool
	Extension   bool
	CSRCCount   int
	Marker      bool
	PayloadType uint8
	Sequence    uint16
	Timestamp   uint32
	SSRC        uint32
	ExtProfile  uint16 // 0xBEDE for one-byte extensions
	ExtWords    int    // extension length in 32-bit words
	// Len is the header length: fixed part, CSRCs and the whole extension.
	Len int
}

// ParseRTP parses the header of a plain (decrypted) RTP packet.
func ParseRTP(b []byte) (RTPHeader, error) {
	if len(b) < 12 {
		return RTPHeader{}, ErrShort
	}
	if b[0]>>6 != 2 {
		return RTPHeader{}, ErrVersion
	}
	h := RTPHeader{
		Padding:     b[0]&0x20 != 0,
		Extension:   b[0]&0x10 != 0,
		CSRCCount:   int(b[0] & 0x0F),
		Marker:      b[1]&0x80 != 0,
		PayloadType: b[1] & 0x7F,
		Sequence:    binary.BigEndian.Uint16(b[2:]),
		Timestamp:   binary.BigEndian.Uint32(b[4:]),
		SSRC:        binary.BigEndian.Uint32(b[8:]),
	}
	h.Len = 12 + 4*h.CSRCCount
	if h.Extension {
		if len(b) < h.Len+4 {
			return h, ErrShort
		}
		h.ExtProfile = binary.BigEndian.Uint16(b[h.Len:])
		h.ExtWords = int(binary.BigEndian.Uint16(b[h.Len+2:]))
		h.Len += 4 + 4*h.ExtWords
	}
	if len(b) < h.Len {
		return h, ErrShort
	}
	return h, nil
}

// Payload returns the payload of a plain RTP packet with its padding
// removed (RFC 3550 §5.1: the last byte counts the padding bytes).
func Payload(b []byte, h RTPHeader) ([]byte, error) {
	p := b[h.Len:]
	if h.Padding {
		if len(p) == 0 || int(p[len(p)-1]) == 0 || int(p[len(p)-1]) > len(p) {
			return nil, ErrPadding
		}
		p = p[:len(p)-int(p[len(p)-1])]
	}
	return p, nil
}

// AppendForward appends the packet a receiver gets for the plain RTP
// packet b: version 2, payload type 120 (Opus), marker clear, no CSRCs, no
// padding, and at most a 0xBEDE one-byte header extension (clients.md §14).
// Sequence, timestamp and SSRC are the sender's.
func AppendForward(dst, b []byte, h RTPHeader) ([]byte, error) {
	payload, err := Payload(b, h)
	if err != nil {
		return dst, err
	}
	keepExt := h.Extension && h.ExtProfile == 0xBEDE
	first := byte(0x80)
	if keepExt {
		first |= 0x10
	}
	dst = append(dst, first, 0x78)
	dst = append(dst, b[2:12]...)
	if keepExt {
		ext := 12 + 4*h.CSRCCount
		dst = append(dst, b[ext:ext+4+4*h.ExtWords]...)
	}
	return append(dst, payload...), nil
}

// AppendBare appends fwd, a packet made by AppendForward, without its
// header extension: the 12-byte header and the payload.
func AppendBare(dst, fwd []byte) []byte {
	dst = append(dst, fwd[:12]...)
	dst[len(dst)-12] &^= 0x10
	if fwd[0]&0x10 == 0 {
		return append(dst, fwd[12:]...)
	}
	words := int(binary.BigEndian.Uint16(fwd[14:16]))
	return append(dst, fwd[16+4*words:]...)
}

// RTCPSenderSSRC returns the SSRC of an RTCP packet's sender (bytes 4-7).
func RTCPSenderSSRC(b []byte) (uint32, bool) {
	if len(b) < 8 {
		return 0, false
	}
	return binary.BigEndian.Uint32(b[4:]), true
}
