package signaling

import (
	"encoding/binary"
	"errors"

	"github.com/chorus-voice/chorus/guild"
)

// The replication stream (replicate.go) is a sequence of messages, each
//
//	u64 incarnation (random, per start of the sending node's process)
//	u64 stream sequence number (1, 2, ... per incarnation)
//
// followed by records, each a kind byte and its fields:
//
//	'B' batch:    u16+from, u64 n            deliver the batch BatchRef{from, n}
//	'L' local:    u16+name, u32+data, u16 count, count × u16+session
//	'D' describe: u16+session, u32+state JSON
//	'S' snapshot: u16+session, u32+state JSON, u64 base, u32 count, count × (u16+name, u32+data)
//	'A' ack:      u16+session, u64 seq
//	'E' end:      u16+session
//	'Z' sync:     (none) — the records after it rebuild every session
//
// u16+x is x's length as u16 then x; u32+x likewise. Integers are
// big-endian. The codec has no I/O and is fuzzed (replwire_test.go).

// Record kinds.
const (
	recBatch    = 'B'
	recLocal    = 'L'
	recDescribe = 'D'
	recSnapshot = 'S'
	recAck      = 'A'
	recEnd      = 'E'
	recSync     = 'Z'
)

// record is one decoded record; fields alias the message.
type record struct {
	kind     byte
	ref      guild.BatchRef
	ev       guild.Event // local
	sessions []string    // local
	session  string
	state    []byte
	seq      uint64 // ack: seq; snapshot: base
	events   []guild.Event
}

var errMalformedReplica = errors.New("signaling: malformed replication message")

func appendStr16(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendBytes32(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func appendBatchRec(b []byte, ref guild.BatchRef) []byte {
	b = appendStr16(append(b, recBatch), ref.From)
	return binary.BigEndian.AppendUint64(b, ref.N)
}

func appendLocalRec(b []byte, ev *guild.Event, sessions []string) []byte {
	b = appendStr16(append(b, recLocal), ev.Name)
	b = appendBytes32(b, ev.Data)
	b = binary.BigEndian.AppendUint16(b, uint16(len(sessions)))
	for _, s := range sessions {
		b = appendStr16(b, s)
	}
	return b
}

func appendDescribeRec(b []byte, session string, state []byte) []byte {
	return appendBytes32(appendStr16(append(b, recDescribe), session), state)
}

func appendSnapshotRec(b []byte, session string, state []byte, base uint64, evs []*guild.Event) []byte {
	b = appendBytes32(appendStr16(append(b, recSnapshot), session), state)
	b = binary.BigEndian.AppendUint64(b, base)
	b = binary.BigEndian.AppendUint32(b, uint32(len(evs)))
	for _, ev := range evs {
		b = appendBytes32(appendStr16(b, ev.Name), ev.Data)
	}
	return b
}

func appendAckRec(b []byte, session string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendStr16(append(b, recAck), session), seq)
}

func appendEndRec(b []byte, session string) []byte { return appendStr16(append(b, recEnd), session) }

// reader decodes fields off the front of a message.
type reader struct {
	b  []byte
	ok bool
}

func (r *reader) n(size int) []byte {
	if !r.ok || len(r.b) < size {
		r.ok = false
		return nil
	}
	f := r.b[:size:size]
	r.b = r.b[size:]
	return f
}

func (r *reader) u16() int {
	if f := r.n(2); f != nil {
		return int(binary.BigEndian.Uint16(f))
	}
	return 0
}

func (r *reader) u32() int {
	if f := r.n(4); f != nil {
		return int(binary.BigEndian.Uint32(f))
	}
	return 0
}

func (r *reader) u64() uint64 {
	if f := r.n(8); f != nil {
		return binary.BigEndian.Uint64(f)
	}
	return 0
}

func (r *reader) str16() string   { return string(r.n(r.u16())) }
func (r *reader) bytes32() []byte { return r.n(r.u32()) }

// replicaHeader is a message's header: the sender's incarnation and the
// message's number.
func replicaHeader(msg []byte) (inc, seq uint64, err error) {
	if len(msg) < replicaHeaderLen {
		return 0, 0, errMalformedReplica
	}
	return binary.BigEndian.Uint64(msg), binary.BigEndian.Uint64(msg[8:]), nil
}

const replicaHeaderLen = 16

// readReplica decodes a message's records, passing them to fn one at a
// time (the record is reused: fn must copy what it keeps). A malformed
// message is an error after the records before the fault.
func readReplica(msg []byte, fn func(*record) error) error {
	if len(msg) < replicaHeaderLen {
		return errMalformedReplica
	}
	r := reader{b: msg[replicaHeaderLen:], ok: true}
	var rec record
	for len(r.b) > 0 {
		rec = record{kind: r.n(1)[0], sessions: rec.sessions[:0], events: rec.events[:0]}
		switch rec.kind {
		case recBatch:
			rec.ref.From = r.str16()
			rec.ref.N = r.u64()
		case recLocal:
			rec.ev.Name = r.str16()
			rec.ev.Data = r.bytes32()
			for n := r.u16(); n > 0 && r.ok; n-- {
				rec.sessions = append(rec.sessions, r.str16())
			}
		case recDescribe:
			rec.session = r.str16()
			rec.state = r.bytes32()
		case recSnapshot:
			rec.session = r.str16()
			rec.state = r.bytes32()
			rec.seq = r.u64()
			n := r.u32()
			if n > len(r.b)/6 { // each event takes six bytes at least
				return errMalformedReplica
			}
			for ; n > 0 && r.ok; n-- {
				rec.events = append(rec.events, guild.Event{Name: r.str16(), Data: r.bytes32()})
			}
		case recAck:
			rec.session = r.str16()
			rec.seq = r.u64()
		case recEnd:
			rec.session = r.str16()
		case recSync:
		default:
			return errMalformedReplica
		}
		if !r.ok {
			return errMalformedReplica
		}
		if err := fn(&rec); err != nil {
			return err
		}
	}
	return nil
}
