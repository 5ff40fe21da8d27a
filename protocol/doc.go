// Package protocol holds the wire forms of the two client-facing
// protocols Chorus speaks: Discord's Gateway v10 and Voice Gateway v8
// (../shared/protocol/gateway.md and voice.md). It owns their opcodes,
// close codes, event names, intent and speaking flags, and the typed
// payloads both ways, with decoders that validate what a client sends.
//
// Like pion/rtp, it is pure: functions over byte slices and plain values,
// no sockets, so every decoder is table-tested and fuzzed. The server
// (package signaling) and the load tester (package loadtest) both speak
// through it; no opcode or close code is a bare number anywhere else.
// The websocket framing under both protocols lives in signaling/wire.
package protocol
