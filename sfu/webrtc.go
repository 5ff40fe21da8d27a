package sfu

import (
	"github.com/chorus-voice/chorus/transport"
)

// A WebRTC participant (package rtc) has no cipher and no address here:
// pion's DTLS-SRTP session encrypts and writes its media, so the room
// hands it plain RTP through a Sink, and its own packets arrive already
// decrypted (ForwardPlain). The forwarding decisions are the same for
// both kinds.

// Sink takes the media of a participant whose transport encrypts it
// itself (the WebRTC leg). WriteRTP must not keep pkt past the call; it is
// called from forwarding goroutines, concurrently.
type Sink interface {
	WriteRTP(pkt []byte) error
}

// Batch brackets a fan-out: the WebRTC leg queues the sinks' writes from
// Begin and sends them together at End (one system call, not one per
// receiver).
type Batch interface {
	Begin()
	End()
}

type sinkRef struct {
	s  Sink
	pt byte // the receiver's Opus payload type, written into each packet
}

// SetSink makes p a WebRTC participant: its media goes to s with Opus on
// payload type pt (webrtc.md §3: forwarding keeps the sender's SSRC and
// rewrites the payload type to each receiver's). A nil s removes it.
func (p *Participant) SetSink(s Sink, pt uint8) {
	if s == nil {
		p.sink.Store(nil)
		return
	}
	p.sink.Store(&sinkRef{s: s, pt: pt & 0x7F})
}

// ForwardPlain forwards one RTP packet a WebRTC sender's transport already
// decrypted and authenticated (SRTP, with its own replay window). The
// packet goes out under the sender's SSRC from Ready — browsers pick
// their own, and receivers know the participant by the SSRC the room was
// told (voice op 5) — with Opus's UDP payload type and the sender's
// sequence and timestamp. The datagrams for UDP receivers alias f's
// buffers and are valid until the next call.
func (f *Forwarder) ForwardPlain(room *Room, sender *Participant, pkt []byte) ([]Datagram, error) {
	h, err := transport.ParseRTP(pkt)
	if err != nil {
		return nil, err
	}
	if !CanSend(sender.Flags()) {
		return nil, ErrMuted
	}
	fwd, err := transport.AppendForward(f.fwd[:0], pkt, h)
	f.fwd = fwd[:0]
	if err != nil {
		return nil, err
	}
	fwd = transport.AppendBare(f.plain[:0], fwd) // browsers' extension ids mean nothing to the room
	f.plain = fwd[:0]
	putSSRC(fwd, sender.SSRC)
	return f.fanOut(room, sender, fwd), nil
}

func putSSRC(b []byte, ssrc uint32) {
	b[8], b[9], b[10], b[11] = byte(ssrc>>24), byte(ssrc>>16), byte(ssrc>>8), byte(ssrc)
}

// ForwardPlain is Forwarder.ForwardPlain with a forwarder of the
// caller's (one per reading goroutine), counting drops as RTP does.
func (n *Node) ForwardPlain(f *Forwarder, p *Participant, pkt []byte) []Datagram {
	out, err := f.ForwardPlain(p.room, p, pkt)
	if err != nil {
		n.count(err)
		return nil
	}
	return out
}
