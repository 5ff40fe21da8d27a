package rtc

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// Config configures the WebRTC leg.
type Config struct {
	// Listen is the UDP address of the shared port every WebRTC
	// participant uses (ICE UDP mux).
	Listen string
	// Advertise is the address announced in the host candidate; the zero
	// value announces the bound address (then Listen must name an IP).
	Advertise netip.AddrPort
	// ConnectTimeout bounds ICE and DTLS: a client that has not connected
	// by then is dropped. Default 10 s.
	ConnectTimeout time.Duration
	Logger         *slog.Logger
}

// DefaultConnectTimeout is Config.ConnectTimeout's default.
const DefaultConnectTimeout = 10 * time.Second

// Leg serves every WebRTC participant of a voice node on one UDP port:
// pion PeerConnections in ICE-lite (the client is the controlling agent),
// DTLS as the server (the answer's implied a=setup:passive, webrtc.md §2),
// one certificate for all, no interceptors (no NACK or congestion control
// for audio; the SFU sends what the sender sent).
type Leg struct {
	cfg  Config
	conn *batchConn
	mux  ice.UDPMux
	addr netip.AddrPort

	certMu sync.Mutex
	cert   webrtc.Certificate

	Stats Stats
	peers atomic.Int64 // open peers
	// live are the peers on the leg's own SRTP path, which the
	// sender-report loop visits; byAddr finds them by the address ICE
	// selected, for what they send (take).
	live   sync.Map // *Peer → struct{}
	inMu   sync.RWMutex
	byAddr map[netip.AddrPort]*Peer
	stop   chan struct{}
	closed sync.Once
}

// Peers is how many peers are open.
func (l *Leg) Peers() int { return int(l.peers.Load()) }

// Stats counts the leg's connections.
type Stats struct {
	Started, Connected, TimedOut, Failed atomic.Uint64
	// PionSRTP: connected peers whose keys the leg could not learn, which
	// are sent through pion's own (slower) path.
	PionSRTP atomic.Uint64
	// BadSRTP: packets from a peer on the own path that did not decrypt
	// (forged, corrupted or replayed), dropped.
	BadSRTP atomic.Uint64
	// WriteErrors: packets to a participant pion refused (its track is
	// unbound: the peer closed). Before DTLS is up pion drops them
	// silently.
	WriteErrors atomic.Uint64
}

// ErrConnectTimeout: the client did not complete ICE and DTLS in time.
var ErrConnectTimeout = errors.New("rtc: ICE and DTLS did not complete in time")

// Listen opens the shared UDP port.
func Listen(cfg Config) (*Leg, error) {
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ua, err := net.ResolveUDPAddr("udp4", cfg.Listen)
	if err != nil {
		return nil, err
	}
	uc, err := net.ListenUDP("udp4", ua)
	if err != nil {
		return nil, err
	}
	conn, err := newBatchConn(uc)
	if err != nil {
		uc.Close()
		return nil, err
	}
	l := &Leg{cfg: cfg, conn: conn, addr: uc.LocalAddr().(*net.UDPAddr).AddrPort(), byAddr: map[netip.AddrPort]*Peer{}}
	conn.take = l.take
	if cfg.Advertise.IsValid() {
		l.addr = cfg.Advertise
	} else if l.addr.Addr().IsUnspecified() {
		conn.Close()
		return nil, fmt.Errorf("rtc: %s binds every address: name the advertised one", cfg.Listen)
	}
	certs, err := newCertificate()
	if err != nil {
		conn.Close()
		return nil, err
	}
	l.cert = certs
	l.mux = webrtc.NewICEUDPMux(quiet.NewLogger("mux"), conn)
	l.stop = make(chan struct{})
	go l.reportSenders()
	return l, nil
}

// reportSenders sends every live peer its sender reports, every
// senderReportEvery, until Close.
func (l *Leg) reportSenders() {
	t := time.NewTicker(senderReportEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case now := <-t.C:
			l.live.Range(func(k, _ any) bool {
				if o := k.(*Peer).own.Load(); o != nil {
					o.reportSenders(l.conn, now)
				}
				return true
			})
		}
	}
}

// quiet keeps pion's own logging out of the node's log.
var quiet = &logging.DefaultLoggerFactory{Writer: io.Discard, DefaultLogLevel: logging.LogLevelDisabled}

// SetAdvertise changes the address announced in answers (the node's
// --advertise address with the bound port); call it before Connect.
func (l *Leg) SetAdvertise(a netip.AddrPort) { l.addr = a }

// Addr is the advertised address of the shared port.
func (l *Leg) Addr() netip.AddrPort { return l.addr }

// LocalAddr is the bound address of the shared port.
func (l *Leg) LocalAddr() netip.AddrPort { return l.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Batch is what forwarders bracket a fan-out with (sfu.Forwarder.Batch):
// the fan-out's writes to WebRTC receivers go out in one system call.
func (l *Leg) Batch() interface {
	Begin()
	End()
} {
	return l.conn
}

// Close closes the shared port; every peer stops with it.
func (l *Leg) Close() error {
	l.closed.Do(func() { close(l.stop) })
	return l.mux.Close()
}

// Peer is one participant's PeerConnection: it receives the participant's
// audio (handed to onMedia decrypted) and sends it the room's (WriteRTP).
type Peer struct {
	pc    *webrtc.PeerConnection
	track sendTrack // until own is set, and for peers whose keys are unknown
	tap   keyTap
	own   atomic.Pointer[ownSRTP]
	// in decrypts what the peer sends once it is on the own path; only
	// the mux's read loop uses it and inBuf (take).
	in      *srtp.Context
	at      netip.AddrPort // where byAddr files it (under Leg.inMu)
	inHdr   rtp.Header
	inBuf   []byte
	onMedia func([]byte)
	// mediaMu keeps onMedia to one call at a time: pion's track reader
	// may still hand over a packet it had queued when take starts.
	mediaMu sync.Mutex
	// Answer is what Session Description tells the client.
	Answer Answer

	closed  atomic.Bool
	onClose func(error)
	leg     *Leg
}

// Connect answers a client's offer. onMedia gets each RTP packet the client
// sends, decrypted, one call at a time (pion's reader until the peer is on
// the own path, then the mux's read loop; the buffer is reused after it
// returns); onClose is called once when the peer ends — it failed, timed
// out, or Close was called (then with nil).
func (l *Leg) Connect(o Offer, onMedia func(pkt []byte), onClose func(error)) (*Peer, error) {
	var me webrtc.MediaEngine
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
			SDPFmtpLine: "minptime=10;useinbandfec=1"},
		PayloadType: webrtc.PayloadType(o.OpusPT)}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	var se webrtc.SettingEngine
	se.LoggerFactory = quiet
	se.SetLite(true)
	se.SetICEUDPMux(l.mux)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if err := se.SetAnsweringDTLSRole(webrtc.DTLSRoleServer); err != nil {
		return nil, err
	}
	p := &Peer{onClose: onClose, leg: l, onMedia: onMedia, inBuf: make([]byte, 0, 1500)}
	se.SetDTLSKeyLogWriter(&p.tap)
	se.SetDTLSServerHelloMessageHook(p.tap.serverHello)
	api := webrtc.NewAPI(webrtc.WithMediaEngine(&me), webrtc.WithSettingEngine(se),
		webrtc.WithInterceptorRegistry(&interceptor.Registry{}))
	cert, err := l.certificate()
	if err != nil {
		return nil, err
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{Certificates: []webrtc.Certificate{cert}})
	if err != nil {
		return nil, err
	}
	p.pc = pc
	l.peers.Add(1)
	p.track.pt = o.OpusPT
	l.Stats.Started.Add(1)
	sender, err := pc.AddTrack(&p.track)
	if err != nil {
		p.end(nil)
		return nil, err
	}
	go drainRTCP(sender)
	pc.OnTrack(func(tr *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
		if tr.Kind() != webrtc.RTPCodecTypeAudio {
			return
		}
		go drainRTCP(r)
		buf := make([]byte, 1500)
		for {
			n, _, err := tr.Read(buf)
			if err != nil {
				return
			}
			p.media(buf[:n])
		}
	})
	connected := make(chan struct{})
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			p.sendOwn(sender)
			once.Do(func() { close(connected) })
			l.Stats.Connected.Add(1)
		case webrtc.PeerConnectionStateFailed:
			l.Stats.Failed.Add(1)
			p.end(errors.New("rtc: connection failed"))
		}
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: o.RemoteOffer()}); err != nil {
		p.end(nil)
		return nil, err
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		p.end(nil)
		return nil, err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		p.end(nil)
		return nil, err
	}
	<-gathered // ICE-lite on a mux: immediate
	ours, err := ParseOffer(pc.LocalDescription().SDP, []Codec{{Name: "opus", PayloadType: int(o.OpusPT)}})
	if err != nil {
		p.end(nil)
		return nil, fmt.Errorf("rtc: our own answer: %w", err)
	}
	p.Answer = Answer{Ufrag: ours.Ufrag, Pwd: ours.Pwd, Fingerprint: ours.Fingerprint, Addr: l.addr}
	time.AfterFunc(l.cfg.ConnectTimeout, func() {
		select {
		case <-connected:
		default:
			l.Stats.TimedOut.Add(1)
			p.end(ErrConnectTimeout)
		}
	})
	return p, nil
}

// Close ends the peer; onClose is called with nil.
func (p *Peer) Close() { p.end(nil) }

// end closes the peer once; onClose may call Close again (it returns at
// once).
func (p *Peer) end(err error) {
	if !p.closed.CompareAndSwap(false, true) {
		return
	}
	p.leg.peers.Add(-1)
	p.leg.live.Delete(p)
	p.leg.place(p, netip.AddrPort{})
	go func() {
		// pion's Close waits for its own goroutines, some of which may be
		// the caller (a state callback).
		p.pc.Close()
	}()
	if p.onClose != nil {
		p.onClose(err)
	}
}

// sendOwn puts the peer on the leg's own SRTP path (srtp.go) once DTLS is
// up, if its keys and the selected address are known; otherwise it stays
// on pion's (counted).
func (p *Peer) sendOwn(sender *webrtc.RTPSender) {
	if p.own.Load() != nil {
		return // connected again after a disconnection: keys are the same
	}
	out, in, err := p.tap.contexts()
	ice := sender.Transport().ICETransport()
	pair, perr := ice.GetSelectedCandidatePair()
	remote, ok := candidateAddr(pair, perr)
	if err != nil || !ok {
		p.leg.Stats.PionSRTP.Add(1)
		p.leg.cfg.Logger.Warn("webrtc peer sent through pion's SRTP path", "keys", err, "pair", perr)
		return
	}
	o := newOwnSRTP(out, remote)
	l := p.leg
	l.inMu.Lock()
	p.in = in // before take can find p
	l.inMu.Unlock()
	if !l.place(p, remote) {
		return // closed meanwhile
	}
	ice.OnSelectedCandidatePairChange(func(pair *webrtc.ICECandidatePair) {
		if a, ok := candidateAddr(pair, nil); ok {
			o.setRemote(a)
			l.place(p, a)
		}
	})
	p.own.Store(o)
	l.live.Store(p, struct{}{})
}

// place files p under the address it sends from (the zero address: under
// none), for take; a closed peer is filed under none. It reports whether p
// is filed.
func (l *Leg) place(p *Peer, at netip.AddrPort) bool {
	l.inMu.Lock()
	defer l.inMu.Unlock()
	if l.byAddr[p.at] == p {
		delete(l.byAddr, p.at)
	}
	p.at = netip.AddrPort{}
	if !at.IsValid() || p.closed.Load() {
		return false
	}
	p.at = at
	l.byAddr[at] = p
	return true
}

// media hands the participant's packet on, one at a time.
func (p *Peer) media(pkt []byte) {
	p.mediaMu.Lock()
	p.onMedia(pkt)
	p.mediaMu.Unlock()
}

// take decrypts an SRTP packet from a peer on the own path and hands it
// to the peer's onMedia, on the mux's read loop (batchConn). It reports
// whether the packet was the leg's: false leaves it to pion.
func (l *Leg) take(pkt []byte, from netip.AddrPort) bool {
	l.inMu.RLock()
	p := l.byAddr[from]
	l.inMu.RUnlock()
	if p == nil {
		return false
	}
	plain, err := p.in.DecryptRTP(p.inBuf[:0], pkt, &p.inHdr)
	if err != nil {
		l.Stats.BadSRTP.Add(1)
		return true
	}
	p.inBuf = plain
	p.media(plain)
	return true
}

// candidateAddr is the remote address of an ICE pair.
func candidateAddr(pair *webrtc.ICECandidatePair, err error) (netip.AddrPort, bool) {
	if err != nil || pair == nil || pair.Remote == nil {
		return netip.AddrPort{}, false
	}
	ip, perr := netip.ParseAddr(pair.Remote.Address)
	if perr != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), pair.Remote.Port), true
}

// WriteRTP sends one plain RTP packet to the participant (sfu.Sink).
func (p *Peer) WriteRTP(pkt []byte) error {
	var err error
	if o := p.own.Load(); o != nil && !p.closed.Load() {
		err = o.write(p.leg.conn, pkt)
	} else {
		err = p.track.write(pkt)
	}
	if err != nil {
		p.leg.Stats.WriteErrors.Add(1)
	}
	return err
}

type rtcpReader interface {
	Read([]byte) (int, interceptor.Attributes, error)
}

// drainRTCP reads and drops a sender's or receiver's RTCP (receiver and
// sender reports): unread, pion would buffer it.
func drainRTCP(r rtcpReader) {
	buf := make([]byte, 1500)
	for {
		if _, _, err := r.Read(buf); err != nil {
			return
		}
	}
}

// sendTrack is the one outgoing track of a peer. It is bound once; every
// speaker of the room is written through it under the speaker's own SSRC
// (the SRTP session keeps a context per SSRC), so later speakers need no
// renegotiation (webrtc.md §3).
type sendTrack struct {
	pt  uint8
	mu  sync.Mutex // guards w and hdr
	w   webrtc.TrackLocalWriter
	hdr rtp.Header
}

var errNotBound = errors.New("rtc: not connected yet")

func (t *sendTrack) write(pkt []byte) error {
	if len(pkt) < 12 {
		return errNotBound
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.w == nil {
		return errNotBound
	}
	h := &t.hdr
	h.Version = 2
	h.Marker = pkt[1]&0x80 != 0
	h.PayloadType = pkt[1] & 0x7F
	h.SequenceNumber = uint16(pkt[2])<<8 | uint16(pkt[3])
	h.Timestamp = uint32(pkt[4])<<24 | uint32(pkt[5])<<16 | uint32(pkt[6])<<8 | uint32(pkt[7])
	h.SSRC = uint32(pkt[8])<<24 | uint32(pkt[9])<<16 | uint32(pkt[10])<<8 | uint32(pkt[11])
	_, err := t.w.WriteRTP(h, pkt[12:])
	return err
}

func (t *sendTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	for _, c := range ctx.CodecParameters() {
		if strings.EqualFold(c.MimeType, webrtc.MimeTypeOpus) {
			t.mu.Lock()
			t.w = ctx.WriteStream()
			t.mu.Unlock()
			return c, nil
		}
	}
	return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
}

func (t *sendTrack) Unbind(webrtc.TrackLocalContext) error {
	t.mu.Lock()
	t.w = nil
	t.mu.Unlock()
	return nil
}

func (t *sendTrack) ID() string                { return "audio" }
func (t *sendTrack) RID() string               { return "" }
func (t *sendTrack) StreamID() string          { return "chorus" }
func (t *sendTrack) Kind() webrtc.RTPCodecType { return webrtc.RTPCodecTypeAudio }
