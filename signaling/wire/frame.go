package wire

import "encoding/binary"

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
func AppendClose(b []byte, code int, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	var p [125]byte
	binary.BigEndian.PutUint16(p[:2], uint16(code))
	n := 2 + copy(p[2:], reason)
	return AppendFrame(b, FrameClose, p[:n])
}
