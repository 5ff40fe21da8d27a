package protocol

import "strconv"

// CloseCode is a websocket close status one of the gateways sends or
// receives: RFC 6455's 1000–1015 and the protocols' own 4000–4999
// (gateway.md §11, voice.md §8). Both gateways close through the same
// type and count closes in one metric family, labelled by code.
type CloseCode int

// Websocket close codes the gateways use (RFC 6455 §7.4.1).
const (
	CloseNormal      CloseCode = 1000
	CloseGoingAway   CloseCode = 1001
	CloseProtocol    CloseCode = 1002
	CloseNoStatus    CloseCode = 1005 // never on the wire: a close frame without a body
	CloseInvalidData CloseCode = 1007 // a text message that is not UTF-8
	CloseTooBig      CloseCode = 1009
)

// String returns the code in decimal, as metrics label it.
func (c CloseCode) String() string { return strconv.Itoa(int(c)) }

// EndsSession reports whether a client's close with code ends its session
// for good: a normal closure or going away (gateway.md §10). After any
// other code, or none, the session stays resumable.
func (c CloseCode) EndsSession() bool { return c == CloseNormal || c == CloseGoingAway }
