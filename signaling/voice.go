package signaling

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/auth"
	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/sfu"
)

// VoiceConfig configures the voice gateway.
type VoiceConfig struct {
	// Endpoint is the voice gateway's public host:port, which
	// VOICE_SERVER_UPDATE names (voice.md §3).
	Endpoint string
	// UDP is the media address announced in Ready (IPv4, voice.md §3).
	UDP netip.AddrPort
	// HeartbeatInterval is sent in Hello and Ready. Default 41.25 s.
	HeartbeatInterval time.Duration
	// Modes are the encryption modes offered in Ready, in order; others are
	// refused with 4016. Default crypto.Offered.
	Modes []crypto.Mode
	// PayloadsPerMinute is the per-connection client payload limit;
	// over it the connection is closed with 4021. Default 120.
	PayloadsPerMinute int
	// IdentifyTimeout is how long a new connection may go without
	// Identify or Resume before it is closed with 4003. Default 10 s.
	IdentifyTimeout time.Duration
	// Metrics, shared with the main gateway, counts recovered panics;
	// default a private set. (Voice closes are counted by the voice
	// gateway itself: Closes, WriteMetrics.)
	Metrics *Metrics
	Logger  *slog.Logger
}

// VoiceGateway serves the Voice Gateway (v8, and the legacy forms of
// voice.md §2) over websockets and drives the SFU node.
type VoiceGateway struct {
	cfg      VoiceConfig
	signer   *auth.Signer
	node     *sfu.Node
	upgrader websocket.Upgrader

	mu    sync.Mutex
	conns map[*sfu.Participant]*voiceConn
	// states are the voice states of the users in this node's rooms, by
	// guild and user, as the guild layer last told them (VoiceChanged):
	// what Identify checks.
	states map[guild.ID]map[guild.ID]guild.VoiceChange

	closes closeCounts
}

// NewVoiceGateway returns a voice gateway for node. It implements
// guild.VoiceHost: the guild router places rooms and reports voice state
// changes through it, and it never calls the router.
func NewVoiceGateway(cfg VoiceConfig, signer *auth.Signer, node *sfu.Node) *VoiceGateway {
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if len(cfg.Modes) == 0 {
		cfg.Modes = crypto.Offered
	}
	if cfg.Metrics == nil {
		cfg.Metrics = &Metrics{}
	}
	if cfg.IdentifyTimeout == 0 {
		cfg.IdentifyTimeout = DefaultIdentifyTimeout
	}
	if cfg.PayloadsPerMinute == 0 {
		cfg.PayloadsPerMinute = DefaultPayloadsPerMinute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &VoiceGateway{cfg: cfg, signer: signer, node: node, conns: map[*sfu.Participant]*voiceConn{},
		states:   map[guild.ID]map[guild.ID]guild.VoiceChange{},
		upgrader: websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}}
}

// Closes returns how many voice connections were closed with code.
func (v *VoiceGateway) Closes(code protocol.CloseCode) uint64 { return v.closes.get(code) }

// WriteMetrics writes the voice gateway's closes by code in the Prometheus
// text format.
func (v *VoiceGateway) WriteMetrics(w io.Writer) {
	v.closes.write(w, "voice")
}

// VoiceTokenTTL is how long a voice token from VOICE_SERVER_UPDATE admits.
const VoiceTokenTTL = 5 * time.Minute

// VoiceServer answers VOICE_SERVER_UPDATE for a user joining a room of
// this node: the endpoint and a fresh token (guild.VoiceHost).
func (v *VoiceGateway) VoiceServer(_, _, user guild.ID) (endpoint, token string, ok bool) {
	return v.cfg.Endpoint, v.IssueToken(user), true
}

// IssueToken returns the token VOICE_SERVER_UPDATE carries for user.
func (v *VoiceGateway) IssueToken(user guild.ID) string {
	return v.IssueTokenUntil(user, time.Now().Add(VoiceTokenTTL))
}

// IssueTokenUntil returns a voice token that admits user until expires.
func (v *VoiceGateway) IssueTokenUntil(user guild.ID, expires time.Time) string {
	return v.signer.Issue(auth.PurposeVoice, user, uint64(expires.UnixMilli()))
}

type voiceConn struct {
	g       *VoiceGateway
	ws      *websocket.Conn
	version int // 0 when the client named none

	wmu  sync.Mutex // serialises writes; guards ws, seq, done, sent
	seq  int
	done bool
	sent []sentFrame // the last sequenced frames, for a v8 resume (voice.md §6)

	p         *sfu.Participant
	guild     guild.ID
	user      guild.ID
	sessionID string
	token     string
	beat      atomic.Int64
	loggingIn atomic.Bool // Identify or Resume arrived
	resumed   *voiceConn  // set by resume: the session this websocket now serves
}

type sentFrame struct {
	seq   int
	frame []byte
}

// resumeBuffer is how many sequenced messages a voice session keeps.
const resumeBuffer = 64

// VoiceResumeWindow is how long a voice session whose websocket dropped
// waits for a Resume before its participant leaves the room.
const VoiceResumeWindow = 30 * time.Second

// send writes one frame; messages that v8 may re-deliver carry "seq".
func (c *voiceConn) send(op int, d any, sequenced bool) {
	b, err := json.Marshal(d)
	if err != nil {
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.done {
		return
	}
	seq := -1
	if sequenced && c.version >= 8 {
		c.seq = (c.seq + 1) & 0xFFFF
		seq = c.seq
	}
	frame := protocol.AppendVoiceFrame(nil, op, b, seq)
	if seq >= 0 {
		if len(c.sent) == resumeBuffer {
			copy(c.sent, c.sent[1:])
			c.sent = c.sent[:resumeBuffer-1]
		}
		c.sent = append(c.sent, sentFrame{seq, frame})
	}
	c.write(frame)
}

// write sends a frame on the current websocket, if any. Caller holds wmu.
func (c *voiceConn) write(frame []byte) {
	if c.ws == nil {
		return // detached: the frame waits in sent for a resume
	}
	c.ws.SetWriteDeadline(time.Now().Add(voiceWriteTimeout))
	if c.ws.WriteMessage(websocket.TextMessage, frame) != nil {
		c.ws.Close()
	}
}

func (c *voiceConn) close(code protocol.CloseCode, reason string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.done {
		return
	}
	c.done = true
	c.g.closes.add(code)
	if c.ws != nil {
		c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(code), reason), time.Now().Add(controlWriteTimeout))
		// Half-close and let the read loop drain until the client answers
		// or the deadline passes: a socket closed with unread input is
		// reset, and the client may then never read the close frame and
		// its code (RFC 6455 §7.1.1: the server closes TCP last).
		if cw, ok := c.ws.NetConn().(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		c.ws.SetReadDeadline(time.Now().Add(closeDrain))
	}
}

// closing reports whether a close frame was sent.
func (c *voiceConn) closing() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.done
}

// ServeHTTP upgrades a voice connection (voice.md §3: path /, ?v=N or none).
func (v *VoiceGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, err := v.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &voiceConn{g: v, ws: ws}
	c.version, _ = strconv.Atoi(r.URL.Query().Get("v"))
	c.beat.Store(time.Now().UnixNano())
	interval := int(v.cfg.HeartbeatInterval / time.Millisecond)
	c.send(protocol.VoiceHello, protocol.VoiceHelloData{HeartbeatInterval: interval, V: c.version}, false)
	// cur is the session this websocket serves: c, or after a Resume the
	// session it took over.
	var cur atomic.Pointer[voiceConn]
	cur.Store(c)
	timeout := v.cfg.HeartbeatInterval * 3 / 2
	var hb *time.Timer
	hb = time.AfterFunc(timeout, func() {
		s := cur.Load()
		if idle := time.Since(time.Unix(0, s.beat.Load())); idle >= timeout {
			s.close(protocol.VoiceCloseSessionTimeout, "heartbeat timeout")
		} else {
			hb.Reset(timeout - idle)
		}
	})
	// A connection that never identifies holds a socket for nothing.
	deadline := time.AfterFunc(v.cfg.IdentifyTimeout, func() {
		if !c.loggingIn.Load() {
			c.close(protocol.VoiceCloseNotAuthenticated, "no identify in time")
		}
	})
	go func() {
		code := v.guardedReadLoop(ws, &cur)
		hb.Stop()
		deadline.Stop()
		v.disconnected(cur.Load(), ws, code)
	}()
}

// readLoop reads one websocket until it ends and returns the client's close
// code (0 when there was none).
func (v *VoiceGateway) readLoop(ws *websocket.Conn, cur *atomic.Pointer[voiceConn]) protocol.CloseCode {
	// Answer a client's close with our own normal closure, not an echo of
	// the client's code (gorilla's default).
	ws.SetCloseHandler(func(int, string) error {
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
			time.Now().Add(controlWriteTimeout))
		return nil
	})
	buf := make([]byte, protocol.MaxPayload+1)
	limit := newPayloadBucket(v.cfg.PayloadsPerMinute)
	for {
		mt, rd, err := ws.NextReader()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return protocol.CloseCode(ce.Code)
			}
			return 0
		}
		c := cur.Load()
		if c.closing() {
			continue // drained until the client answers our close (see close)
		}
		n, err := io.ReadFull(rd, buf)
		switch {
		case n > protocol.MaxPayload:
			c.close(protocol.VoiceCloseDecodeError, "payload too large")
		case err != nil && err != io.ErrUnexpectedEOF && err != io.EOF:
			return 0
		case !limit.take(time.Now()):
			// Each payload may be relayed to the whole room (Speaking).
			c.close(protocol.VoiceCloseRateLimited, "rate limited")
		case mt == websocket.BinaryMessage:
			// DAVE binary opcodes: never negotiated, ignored (voice.md §7)
		case !utf8.Valid(buf[:n]): // RFC 6455 §8.1
			c.close(protocol.CloseInvalidData, "text is not UTF-8")
		default:
			cur.Store(v.handle(c, buf[:n]))
		}
	}
}

// guardedReadLoop confines a panic to its connection: counted, its stack
// logged, and the websocket ends as a drop (the session stays resumable).
func (v *VoiceGateway) guardedReadLoop(ws *websocket.Conn, cur *atomic.Pointer[voiceConn]) (code protocol.CloseCode) {
	defer func() {
		if r := recover(); r != nil {
			v.cfg.Metrics.recovered(v.cfg.Logger, "voice read loop", r)
			code = 0
		}
	}()
	return v.readLoop(ws, cur)
}

// disconnected runs when a websocket ended. A session the client or the
// server ended leaves its room; one that merely dropped waits
// VoiceResumeWindow for a Resume.
func (v *VoiceGateway) disconnected(c *voiceConn, ws *websocket.Conn, code protocol.CloseCode) {
	ws.Close()
	c.wmu.Lock()
	if c.ws != ws {
		c.wmu.Unlock()
		return // a Resume on another websocket took this session over
	}
	c.ws = nil
	ended := c.done || c.p == nil || code.EndsSession()
	c.done = c.done || ended
	c.wmu.Unlock()
	if ended {
		v.leave(c)
		return
	}
	time.AfterFunc(VoiceResumeWindow, func() {
		c.wmu.Lock()
		stale := c.ws == nil && !c.done
		if stale {
			c.done = true
		}
		c.wmu.Unlock()
		if stale {
			v.leave(c)
		}
	})
}

// handle processes one payload and returns the session the websocket now
// serves.
func (v *VoiceGateway) handle(c *voiceConn, p []byte) *voiceConn {
	v.handleOp(c, p) // a payload that ends the connection closes it (c.closing)
	if c.resumed != nil {
		next := c.resumed
		c.resumed = nil
		return next
	}
	return c
}

func (v *VoiceGateway) handleOp(c *voiceConn, p []byte) {
	env, err := protocol.DecodeEnvelope(p)
	if err != nil {
		c.close(protocol.VoiceCloseDecodeError, "decode error")
		return
	}
	switch env.Op {
	case protocol.VoiceHeartbeat:
		hb, err := protocol.DecodeVoiceHeartbeat(env.D)
		if err != nil {
			c.close(protocol.VoiceCloseDecodeError, "invalid heartbeat")
			return
		}
		c.beat.Store(time.Now().UnixNano())
		// Echo t exactly as it came (clients.md §17), in the form it came.
		if hb.Legacy {
			c.send(protocol.VoiceHeartbeatACK, hb.T, false)
		} else {
			c.send(protocol.VoiceHeartbeatACK, protocol.VoiceHeartbeatACKData{T: hb.T}, false)
		}
	case protocol.VoiceIdentify:
		if c.p != nil {
			c.close(protocol.VoiceCloseAlreadyAuthed, "already authenticated")
			return
		}
		c.loggingIn.Store(true)
		v.identify(c, env.D)
	case protocol.VoiceResume:
		if c.p != nil {
			c.close(protocol.VoiceCloseAlreadyAuthed, "already authenticated")
			return
		}
		c.loggingIn.Store(true)
		v.resume(c, env.D)
	case protocol.VoiceSelectProtocol, protocol.VoiceSpeaking:
		if c.p == nil {
			c.close(protocol.VoiceCloseNotAuthenticated, "not authenticated")
			return
		}
		if env.Op == protocol.VoiceSelectProtocol {
			v.selectProtocol(c, env.D)
		} else {
			v.speaking(c, env.D)
		}
	}
	// Unknown and DAVE opcodes are ignored silently (voice.md §4.2, §7).
}

func (v *VoiceGateway) identify(c *voiceConn, d json.RawMessage) {
	id, err := protocol.DecodeVoiceIdentify(d)
	if err != nil {
		c.close(protocol.VoiceCloseDecodeError, "invalid identify")
		return
	}
	user, expires, err := v.signer.Verify(auth.PurposeVoice, id.Token)
	if err != nil || user != id.UserID || time.Now().UnixMilli() > int64(expires) {
		c.close(protocol.VoiceCloseAuthFailed, "authentication failed")
		return
	}
	v.mu.Lock()
	room, known := v.states[id.ServerID]
	st, ok := room[user]
	v.mu.Unlock()
	if !known {
		// No room of that guild is placed here (voice.md §8).
		c.close(protocol.VoiceCloseServerNotFound, "server not found")
		return
	}
	if !ok || st.SessionID != id.SessionID {
		c.close(protocol.VoiceCloseSessionInvalid, "session no longer valid")
		return
	}
	p, old := v.node.Join(sfu.Key{Guild: uint64(id.ServerID), Channel: uint64(st.ChannelID)}, uint64(user))
	applyFlags(p, st)
	c.p, c.guild, c.user, c.sessionID, c.token = p, id.ServerID, user, id.SessionID, id.Token
	v.mu.Lock()
	var oldConn *voiceConn
	if old != nil {
		oldConn = v.conns[old]
		delete(v.conns, old)
	}
	v.conns[p] = c
	v.mu.Unlock()
	if oldConn != nil {
		oldConn.close(protocol.VoiceCloseDisconnected, "replaced by a new connection")
	}
	modes := make([]string, len(v.cfg.Modes))
	for i, m := range v.cfg.Modes {
		modes[i] = m.String()
	}
	c.send(protocol.VoiceReady, protocol.VoiceReadyData{SSRC: p.SSRC, IP: v.cfg.UDP.Addr().String(), Port: int(v.cfg.UDP.Port()),
		Modes: modes, HeartbeatInterval: int(v.cfg.HeartbeatInterval / time.Millisecond), Experiments: []string{}}, false)

	// The roster both ways, and the SSRCs already known (voice.md §5.7, §5.9).
	var others []string
	for _, q := range p.Room().Members() {
		if q == p {
			continue
		}
		others = append(others, strconv.FormatUint(q.UserID, 10))
		if q.Flags()&sfu.FlagAnnounced != 0 {
			c.send(protocol.VoiceSpeaking, protocol.SpeakingEvent{UserID: strconv.FormatUint(q.UserID, 10), SSRC: q.SSRC, Speaking: speakingOf(q)}, true)
		}
		if oc := v.conn(q); oc != nil {
			oc.send(protocol.VoiceClientsConnect, protocol.ClientsConnectData{UserIDs: []string{user.String()}}, true)
		}
	}
	if len(others) > 0 {
		c.send(protocol.VoiceClientsConnect, protocol.ClientsConnectData{UserIDs: others}, true)
	}
	// The SSRC is known now: tell everyone whose it is, long before any
	// audio can follow it (clients.md §15; a receiver drops packets of
	// SSRCs it cannot map). Only then may the SFU forward it.
	v.announce(c, 0)
}

// announce sends op 5 for c's participant to everyone else in the room and
// marks the SSRC as announced.
func (v *VoiceGateway) announce(c *voiceConn, speaking int) {
	out := protocol.SpeakingEvent{UserID: c.user.String(), SSRC: c.p.SSRC, Speaking: speaking}
	for _, q := range c.p.Room().Members() {
		if oc := v.conn(q); q != c.p && oc != nil {
			oc.send(protocol.VoiceSpeaking, out, true)
		}
	}
	c.p.SetFlags(sfu.FlagAnnounced, 0)
}

func (v *VoiceGateway) conn(p *sfu.Participant) *voiceConn {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.conns[p]
}

// speakingOf is the last speaking bitmask a participant sent.
func speakingOf(p *sfu.Participant) int { return int(p.Flags() >> 16 & protocol.SpeakingAll) }

func (v *VoiceGateway) selectProtocol(c *voiceConn, d json.RawMessage) {
	sp, err := protocol.DecodeSelectProtocol(d)
	if err != nil {
		c.close(protocol.VoiceCloseDecodeError, "invalid select protocol")
		return
	}
	if sp.Protocol != "udp" {
		c.close(protocol.VoiceCloseUnknownProtocol, "unknown protocol")
		return
	}
	mode, err := crypto.ParseMode(sp.Data.Mode)
	if err != nil || !slices.Contains(v.cfg.Modes, mode) {
		c.close(protocol.VoiceCloseUnknownEncryption, "unknown encryption mode")
		return
	}
	var key [32]byte
	rand.Read(key[:])
	ci, err := crypto.NewCipher(mode, key[:])
	if err != nil {
		c.close(protocol.VoiceCloseUnknownEncryption, "unknown encryption mode")
		return
	}
	c.p.SetCipher(ci)
	// The address the client says IP discovery told it confirms where its
	// media goes (sfu/address.go); a missing or malformed one confirms
	// nothing by itself.
	host := sp.Data.Address
	if host == "" {
		host = sp.Data.IP
	}
	var claim netip.AddrPort
	if ip, err := netip.ParseAddr(host); err == nil && sp.Data.Port > 0 && sp.Data.Port <= 0xFFFF {
		claim = netip.AddrPortFrom(ip, uint16(sp.Data.Port))
	}
	v.node.Claim(c.p, claim)
	// dave_protocol_version 0 keeps the call out of DAVE (voice.md §7).
	c.send(protocol.VoiceSessionDescription, protocol.SessionDescriptionData{Mode: mode.String(), SecretKey: key,
		DAVEProtocolVersion: 0, AudioCodec: "opus"}, false)
}

func (v *VoiceGateway) speaking(c *voiceConn, d json.RawMessage) {
	sp, err := protocol.DecodeSpeaking(d)
	if err != nil {
		c.close(protocol.VoiceCloseDecodeError, "invalid speaking")
		return
	}
	p := c.p
	before := speakingOf(p)
	p.SetFlags(uint32(sp.Speaking)<<16, protocol.SpeakingAll<<16)
	if sp.Speaking != before {
		v.announce(c, sp.Speaking)
	}
}

// leave removes a closed connection's participant and tells the room.
func (v *VoiceGateway) leave(c *voiceConn) {
	if c.p == nil {
		return
	}
	v.mu.Lock()
	if v.conns[c.p] == c {
		delete(v.conns, c.p)
	}
	v.mu.Unlock()
	v.node.Leave(c.p)
	if v.node.Participant(uint64(c.guild), uint64(c.user)) != nil {
		return // the user is back on a newer connection: not a departure
	}
	for _, q := range c.p.Room().Members() {
		if oc := v.conn(q); oc != nil {
			oc.send(protocol.VoiceClientDisconnect, protocol.ClientDisconnectData{UserID: c.user.String()}, true)
		}
	}
}

func applyFlags(p *sfu.Participant, st guild.VoiceChange) {
	var set, clear uint32
	for _, f := range []struct {
		on   bool
		flag uint32
	}{{st.Mute, sfu.FlagServerMute}, {st.Deaf, sfu.FlagServerDeaf}, {st.SelfMute, sfu.FlagSelfMute},
		{st.SelfDeaf, sfu.FlagSelfDeaf}, {st.MaySpeak, sfu.FlagMaySpeak}} {
		if f.on {
			set |= f.flag
		} else {
			clear |= f.flag
		}
	}
	p.SetFlags(set, clear)
}

// VoiceChanged applies a voice state change from the guild layer
// (guild.VoiceHost): it admits the user's next Identify, applies new mute
// and deafen flags at once, or ends a connection whose user left or moved
// (4014: the client then follows its new VOICE_SERVER_UPDATE).
func (v *VoiceGateway) VoiceChanged(ch guild.VoiceChange) {
	v.mu.Lock()
	room := v.states[ch.Guild]
	switch {
	case ch.ChannelID != 0 && room == nil:
		v.states[ch.Guild] = map[guild.ID]guild.VoiceChange{ch.User: ch}
	case ch.ChannelID != 0:
		room[ch.User] = ch
	default:
		delete(room, ch.User)
		if len(room) == 0 {
			delete(v.states, ch.Guild)
		}
	}
	v.mu.Unlock()
	p := v.node.Participant(uint64(ch.Guild), uint64(ch.User))
	if p == nil {
		return
	}
	if ch.ChannelID == 0 || uint64(ch.ChannelID) != p.Room().Key.Channel {
		if c := v.conn(p); c != nil {
			go c.close(protocol.VoiceCloseDisconnected, "disconnected")
		}
		return
	}
	applyFlags(p, ch)
}

// Revoke closes every voice connection of user with 4004: its tokens were
// revoked.
func (v *VoiceGateway) Revoke(user guild.ID) {
	v.mu.Lock()
	var cs []*voiceConn
	for _, c := range v.conns {
		if c.user == user {
			cs = append(cs, c)
		}
	}
	v.mu.Unlock()
	for _, c := range cs {
		c.close(protocol.VoiceCloseAuthFailed, "token revoked")
		v.leave(c)
	}
}

// resume lets a new websocket take over a dropped voice session (op 7):
// op 9 Resumed, then every buffered message after seq_ack (voice.md §5.8,
// §6). The UDP side never stopped. A session that is gone, or whose
// buffer no longer reaches back to seq_ack, is closed with 4006.
func (v *VoiceGateway) resume(c *voiceConn, d json.RawMessage) {
	r, err := protocol.DecodeVoiceResume(d)
	if err != nil {
		c.close(protocol.VoiceCloseDecodeError, "invalid resume")
		return
	}
	var s *voiceConn
	v.mu.Lock()
	for _, sc := range v.conns {
		if sc.guild == r.ServerID && sc.sessionID == r.SessionID {
			s = sc
		}
	}
	v.mu.Unlock()
	if s == nil {
		c.close(protocol.VoiceCloseSessionInvalid, "session no longer valid")
		return
	}
	if subtle.ConstantTimeCompare([]byte(s.token), []byte(r.Token)) != 1 {
		c.close(protocol.VoiceCloseAuthFailed, "authentication failed")
		return
	}
	s.wmu.Lock()
	var replay [][]byte
	ok := !s.done
	if ok && r.SeqAck != nil && *r.SeqAck >= 0 {
		ack := int(*r.SeqAck) & 0xFFFF
		after := func(seq int) bool { d := (seq - ack) & 0xFFFF; return d != 0 && d < 0x8000 }
		for _, f := range s.sent {
			if after(f.seq) {
				replay = append(replay, f.frame)
			}
		}
		// The oldest kept message must directly follow what the client has.
		if len(replay) > 0 && len(replay) == len(s.sent) && (s.sent[0].seq-ack)&0xFFFF != 1 {
			ok = false
		}
	}
	if !ok {
		s.wmu.Unlock()
		c.close(protocol.VoiceCloseSessionInvalid, "session no longer valid")
		return
	}
	old := s.ws
	s.ws = c.ws
	s.version = max(s.version, c.version)
	s.beat.Store(time.Now().UnixNano())
	s.write(protocol.VoiceResumedFrame)
	for _, f := range replay {
		s.write(f)
	}
	s.wmu.Unlock()
	if old != nil {
		old.Close() // its read loop sees the session taken over and leaves it be
	}
	c.resumed = s
}
