package rtc

import (
	"errors"
	"sync"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Client is a WebRTC voice client built on pion, the way a browser joins:
// it offers one bundled audio section, sends the offer as Select
// Protocol's SDP, and builds its remote description from the server's
// fragment (Answer.RemoteAnswer). The load tester and the tests use it.
type Client struct {
	pc    *webrtc.PeerConnection
	track *webrtc.TrackLocalStaticRTP
	// Offer is what to send in Select Protocol (data and sdp).
	Offer string
	pt    uint8

	srMu sync.Mutex
	srs  map[uint32]rtcp.SenderReport // the newest per SSRC
}

// SenderReport returns the newest RTCP sender report received for ssrc;
// pion hands a client the RTCP of the first stream it received only.
func (c *Client) SenderReport(ssrc uint32) (rtcp.SenderReport, bool) {
	c.srMu.Lock()
	defer c.srMu.Unlock()
	sr, ok := c.srs[ssrc]
	return sr, ok
}

// readRTCP keeps a receiver's sender reports.
func (c *Client) readRTCP(r *webrtc.RTPReceiver) {
	for {
		pkts, _, err := r.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			if sr, ok := p.(*rtcp.SenderReport); ok {
				c.srMu.Lock()
				c.srs[sr.SSRC] = *sr
				c.srMu.Unlock()
			}
		}
	}
}

// ClientOpusPT is the payload type a Client offers Opus on, a browser's.
const ClientOpusPT = 111

// NewClient makes a client whose received packets (decrypted) go to
// onRTP, from one goroutine per incoming stream; the packet and its
// payload are reused after onRTP returns.
func NewClient(onRTP func(*rtp.Packet)) (*Client, error) {
	var me webrtc.MediaEngine
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
			SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: ClientOpusPT}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	var se webrtc.SettingEngine
	se.LoggerFactory = quiet
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	// Every speaker arrives under its own SSRC, announced over the voice
	// gateway (op 5), never in SDP: each new SSRC becomes a new track.
	se.SetHandleUndeclaredSSRCWithoutAnswer(true)
	api := webrtc.NewAPI(webrtc.WithMediaEngine(&me), webrtc.WithSettingEngine(se),
		webrtc.WithInterceptorRegistry(&interceptor.Registry{}))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	c := &Client{pc: pc, pt: ClientOpusPT, srs: map[uint32]rtcp.SenderReport{}}
	c.track, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "client")
	if err != nil {
		pc.Close()
		return nil, err
	}
	if _, err := pc.AddTrack(c.track); err != nil {
		pc.Close()
		return nil, err
	}
	var rtcpOnce sync.Once
	pc.OnTrack(func(tr *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
		// One packet and buffer per stream, reused: a load tester's
		// thousands of clients must not allocate per packet.
		rtcpOnce.Do(func() { go c.readRTCP(r) })
		buf := make([]byte, 1500)
		var p rtp.Packet
		for {
			n, _, err := tr.Read(buf)
			if err != nil {
				return
			}
			if p.Unmarshal(buf[:n]) == nil {
				onRTP(&p)
			}
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		pc.Close()
		return nil, err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		pc.Close()
		return nil, err
	}
	<-gathered
	c.Offer = pc.LocalDescription().SDP
	return c, nil
}

// Accept applies the server's Session Description fragment.
func (c *Client) Accept(fragment string) error {
	a, err := ParseAnswer(fragment)
	if err != nil {
		return err
	}
	return c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: a.RemoteAnswer("0", c.pt)})
}

// Connected returns a channel closed once ICE and DTLS are up.
func (c *Client) Connected() <-chan struct{} {
	ch := make(chan struct{})
	var once sync.Once
	c.pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(ch) })
		}
	})
	if c.pc.ConnectionState() == webrtc.PeerConnectionStateConnected {
		once.Do(func() { close(ch) })
	}
	return ch
}

// WriteRTP sends an RTP packet (the track sets its SSRC and payload type).
func (c *Client) WriteRTP(p *rtp.Packet) error {
	if c.track == nil {
		return errors.New("rtc: client closed")
	}
	return c.track.WriteRTP(p)
}

// SSRC is the SSRC the client sends with.
func (c *Client) SSRC() uint32 {
	for _, s := range c.pc.GetSenders() {
		if ps := s.GetParameters().Encodings; len(ps) > 0 {
			return uint32(ps[0].SSRC)
		}
	}
	return 0
}

// Close ends the client.
func (c *Client) Close() error { return c.pc.Close() }
