package rtc

import (
	"net/netip"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// ownSRTP is a peer's send side once DTLS is up: the leg encrypts each
// packet with the peer's SRTP context (keys from keyTap) and queues it on
// the shared socket itself, to the address ICE selected — one AES-GCM
// seal and a copy per receiver, as on the UDP transport. It also keeps
// what RTCP sender reports need (RFC 3550 §6.4.1) per forwarded stream.
type ownSRTP struct {
	mu      sync.Mutex // guards everything below
	ctx     *srtp.Context
	remote  netip.AddrPort
	hdr     rtp.Header
	buf     []byte
	streams map[uint32]*sentStream
}

// sentStream is what a peer was sent of one SSRC, for its sender reports.
type sentStream struct {
	packets, octets uint32
	ts              uint32 // RTP timestamp of the newest packet
	at              int64  // when it was sent (Unix ns)
}

func newOwnSRTP(ctx *srtp.Context, remote netip.AddrPort) *ownSRTP {
	return &ownSRTP{ctx: ctx, remote: remote, buf: make([]byte, 0, 1500), streams: map[uint32]*sentStream{}}
}

// write encrypts pkt (a plain RTP packet) and hands it to the socket,
// which queues it while a fan-out is open (batch.go). mu is held across
// the write because buf is reused: inside a fan-out the write is a copy
// into the queue; outside one it is a sendto, and mu is the peer's own.
func (o *ownSRTP) write(c *batchConn, pkt []byte) error {
	o.mu.Lock()
	out, err := o.ctx.EncryptRTP(o.buf[:0], pkt, &o.hdr) // fills hdr
	if err != nil {
		o.mu.Unlock()
		return err
	}
	o.buf = out
	s := o.streams[o.hdr.SSRC]
	if s == nil {
		s = &sentStream{}
		o.streams[o.hdr.SSRC] = s
	}
	s.packets++
	s.octets += uint32(len(pkt) - o.hdr.MarshalSize())
	s.ts, s.at = o.hdr.Timestamp, time.Now().UnixNano()
	remote := o.remote
	_, err = c.WriteToAddrPort(out, remote)
	o.mu.Unlock()
	return err
}

// setRemote follows ICE to a newly selected pair.
func (o *ownSRTP) setRemote(a netip.AddrPort) {
	o.mu.Lock()
	o.remote = a
	o.mu.Unlock()
}

// senderReportEvery is how often a peer gets a sender report for each
// stream it was sent lately; a stream silent that long gets none.
const senderReportEvery = 2 * time.Second

// forgetStreamAfter bounds how long a silent stream's counts are kept.
const forgetStreamAfter = 5 * time.Minute

// reportSenders sends one sender report per stream sent since the last
// round: the stream's SSRC, its counts, and the NTP time of now with the
// RTP timestamp extrapolated to it (Opus: 48 kHz), so the receiver can
// map the stream's clock to wall time and report round trips.
func (o *ownSRTP) reportSenders(c *batchConn, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ntp := ntpTime(now)
	for ssrc, s := range o.streams {
		age := now.UnixNano() - s.at
		if age > int64(forgetStreamAfter) {
			delete(o.streams, ssrc) // the speaker left, most likely
			continue
		}
		if age > int64(senderReportEvery) {
			continue // silent: nothing new to report
		}
		sr := rtcp.SenderReport{SSRC: ssrc, NTPTime: ntp, RTPTime: s.ts + uint32(age*48000/int64(time.Second)),
			PacketCount: s.packets, OctetCount: s.octets}
		plain, err := sr.Marshal()
		if err != nil {
			continue
		}
		out, err := o.ctx.EncryptRTCP(nil, plain, nil)
		if err != nil {
			continue
		}
		c.WriteToAddrPort(out, o.remote)
	}
}

// ntpTime is t in NTP's 64-bit fixed point (RFC 3550 §4).
func ntpTime(t time.Time) uint64 {
	const ntpEpochOffset = 2208988800 // 1900 to 1970
	s := uint64(t.Unix()) + ntpEpochOffset
	f := uint64(t.Nanosecond()) << 32 / 1e9
	return s<<32 | f
}
