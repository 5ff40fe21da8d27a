// Package wire holds the websocket framing both gateways share: frame
// headers (RFC 6455 §5.2), close payloads, and the transport compression
// streams of gateway.md §2.2. Nothing here does I/O, so every function is
// testable and fuzzable on byte slices. What the frames carry, the two
// protocols' payloads, lives in package protocol.
package wire

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"

	"github.com/chorus-voice/chorus/protocol"
)

// WebSocket opcodes (RFC 6455 §5.2).
const (
	FrameText   = 0x1
	FrameBinary = 0x2
	FrameClose  = 0x8
	FramePing   = 0x9
	FramePong   = 0xA
)

// AppendFrame appends one final, unmasked server frame (RFC 6455 §5.2:
// servers never mask) carrying payload.
func AppendFrame(b []byte, opcode byte, payload []byte) []byte {
	b = append(b, 0x80|opcode)
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// AppendClose appends a close frame with a status code and a reason
// (truncated so the control frame stays within 125 bytes, RFC 6455 §5.5).
func AppendClose(b []byte, code protocol.CloseCode, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	var p [125]byte
	binary.BigEndian.PutUint16(p[:2], uint16(code))
	n := 2 + copy(p[2:], reason)
	return AppendFrame(b, FrameClose, p[:n])
}

// FrameHeader is a decoded client frame header (RFC 6455 §5.2).
type FrameHeader struct {
	Fin    bool
	Opcode byte
	Masked bool
	Length uint64
	Mask   [4]byte
	// Size is the number of header bytes, extended length and mask included.
	Size int
}

// Frame header errors. Each one is a protocol error (close 1002) except
// ErrShortHeader, which asks the caller for more bytes.
var (
	ErrShortHeader   = errors.New("wire: frame header incomplete")
	ErrReservedBits  = errors.New("wire: reserved bits set")
	ErrUnmasked      = errors.New("wire: client frame not masked")
	ErrBadOpcode     = errors.New("wire: reserved opcode")
	ErrControlFrame  = errors.New("wire: control frame fragmented or longer than 125 bytes")
	ErrLengthEncoded = errors.New("wire: frame length not minimally encoded")
)

// HeaderSize returns how many header bytes a frame whose first two bytes
// are b0 and b1 has in total.
func HeaderSize(b1 byte) int {
	n := 2
	switch b1 & 0x7F {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// ParseFrameHeader decodes the header of a frame a client sent. Clients
// must mask every frame (RFC 6455 §5.1) and no extension is negotiated, so
// reserved bits are errors.
func ParseFrameHeader(b []byte) (FrameHeader, error) {
	if len(b) < 2 {
		return FrameHeader{}, ErrShortHeader
	}
	h := FrameHeader{Fin: b[0]&0x80 != 0, Opcode: b[0] & 0x0F, Masked: b[1]&0x80 != 0, Size: HeaderSize(b[1])}
	if len(b) < h.Size {
		return h, ErrShortHeader
	}
	if b[0]&0x70 != 0 {
		return h, ErrReservedBits
	}
	switch h.Opcode {
	case 0x0, FrameText, FrameBinary:
	case FrameClose, FramePing, FramePong:
		if !h.Fin || b[1]&0x7F > 125 {
			return h, ErrControlFrame
		}
	default:
		return h, ErrBadOpcode
	}
	if !h.Masked {
		return h, ErrUnmasked
	}
	switch n := b[1] & 0x7F; n {
	case 126:
		h.Length = uint64(binary.BigEndian.Uint16(b[2:4]))
		if h.Length < 126 {
			return h, ErrLengthEncoded
		}
	case 127:
		h.Length = binary.BigEndian.Uint64(b[2:10])
		if h.Length <= 0xFFFF || h.Length>>63 != 0 {
			return h, ErrLengthEncoded
		}
	default:
		h.Length = uint64(n)
	}
	copy(h.Mask[:], b[h.Size-4:h.Size])
	return h, nil
}

// Unmask XORs p with the mask key, p starting at offset pos of the payload.
func Unmask(p []byte, key [4]byte, pos int) {
	for i := range p {
		p[i] ^= key[(pos+i)&3]
	}
}

// Close payload errors; each is answered with protocol.CloseProtocol
// except ErrCloseReasonUTF8, which is answered with
// protocol.CloseInvalidData.
var (
	ErrCloseLength     = errors.New("wire: close frame body of one byte")
	ErrCloseCode       = errors.New("wire: close status code that may not be sent")
	ErrCloseReasonUTF8 = errors.New("wire: close reason is not UTF-8")
)

// ParseClosePayload returns the status code of a client's close frame
// body (RFC 6455 §5.5.1): protocol.CloseNoStatus for an empty body. Codes an
// endpoint may not send (below 1000, 1004–1006, 1015, 1016–2999, 5000 and
// above; RFC 6455 §7.4) and a reason that is not UTF-8 (§5.5.1) are errors.
func ParseClosePayload(p []byte) (protocol.CloseCode, error) {
	switch len(p) {
	case 0:
		return protocol.CloseNoStatus, nil
	case 1:
		return 0, ErrCloseLength
	}
	code := int(binary.BigEndian.Uint16(p))
	if !SendableCloseCode(code) {
		return 0, ErrCloseCode
	}
	if !utf8.Valid(p[2:]) {
		return 0, ErrCloseReasonUTF8
	}
	return protocol.CloseCode(code), nil
}

// SendableCloseCode reports whether a peer may put code in a close frame:
// the defined codes 1000–1003 and 1007–1014, and 3000–4999 (registered and
// private use).
func SendableCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
