package sfu

import (
	"net/netip"

	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/transport"
)

// Datagram is one packet for the transport to write.
type Datagram = transport.Datagram

// Forwarder holds the scratch buffers of one forwarding goroutine. Its
// zero value is ready; after warming up it allocates nothing per packet.
type Forwarder struct {
	// Batch, if set, brackets each fan-out that writes to sinks.
	Batch Batch

	plain, fwd, web []byte
	recv            []*Participant
	bufs            [][]byte
	out             []Datagram
	nonces          crypto.Nonces
}

// Forward processes one RTP packet that arrived from addr for sender (found
// by SSRC): it opens it once with the sender's key, checks the replay
// window, the SSRC and the latched address, normalises the header
// (transport.AppendForward) and seals a copy for every receiver with the
// receiver's own cipher and nonce counter. The returned datagrams alias f's
// buffers and are valid until the next call.
func (f *Forwarder) Forward(room *Room, sender *Participant, addr netip.AddrPort, pkt []byte) ([]Datagram, error) {
	c := sender.cipher.Load()
	if c == nil {
		return nil, ErrNoCipher
	}
	if latched := sender.addr.Load(); latched != nil && *latched != addr {
		// Checked before decrypting too: another host sending with this
		// SSRC costs us no crypto.
		return nil, ErrAddress
	}
	plain, nonce, err := c.Open(f.plain[:0], pkt)
	f.plain = plain[:0]
	if err != nil {
		return nil, err
	}
	h, err := transport.ParseRTP(plain)
	if err != nil {
		return nil, err
	}
	if h.SSRC != sender.SSRC {
		return nil, ErrSSRC
	}
	sender.mu.Lock()
	fresh := sender.window.Fresh(nonce)
	sender.mu.Unlock()
	if !fresh {
		return nil, ErrReplay
	}
	if sender.addr.Load() == nil {
		// Latch the address of the first authenticated packet; never the
		// one Select Protocol claims (clients.md §11).
		a := addr
		sender.addr.CompareAndSwap(nil, &a)
		if *sender.addr.Load() != addr {
			return nil, ErrAddress
		}
	}
	if !CanSend(sender.Flags()) {
		return nil, ErrMuted
	}
	fwd, err := transport.AppendForward(f.fwd[:0], plain, h)
	f.fwd = fwd[:0]
	if err != nil {
		return nil, err
	}
	return f.fanOut(room, sender, fwd), nil
}

// fanOut hands fwd, the normalised packet (transport.AppendForward), to
// every receiver of
// sender: sealed per UDP receiver into the returned datagrams, and written
// in place to each WebRTC receiver's sink, with that receiver's payload
// type and without header extensions (their ids are negotiated per
// receiver, and the sender's mean nothing there).
func (f *Forwarder) fanOut(room *Room, sender *Participant, fwd []byte) []Datagram {
	f.recv = room.Receivers(f.recv[:0], sender)
	f.out = f.out[:0]
	var web []byte
	for i, r := range f.recv {
		if sk := r.sink.Load(); sk != nil {
			if web == nil {
				web = transport.AppendBare(f.web[:0], fwd)
				f.web = web[:0]
				if f.Batch != nil {
					f.Batch.Begin()
				}
			}
			web[1] = sk.pt
			sk.s.WriteRTP(web)
			continue
		}
		rc := r.cipher.Load()
		ra := r.dest()
		if rc == nil || ra == nil {
			continue
		}
		for len(f.bufs) <= i {
			f.bufs = append(f.bufs, make([]byte, 0, len(fwd)+64))
		}
		buf, err := rc.Seal(f.bufs[i][:0], fwd, f.nonces.Next(rc.Mode(), &r.counter))
		if err != nil {
			continue
		}
		f.bufs[i] = buf
		f.out = append(f.out, Datagram{Buf: buf, Addr: *ra})
	}
	if web != nil && f.Batch != nil {
		f.Batch.End()
	}
	return f.out
}
