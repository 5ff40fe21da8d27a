package signaling

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-voice/chorus/auth"
	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/rtc"
	"github.com/chorus-voice/chorus/sfu"
	"github.com/chorus-voice/chorus/transport"
)

type VoiceConfig struct {
	// UDP is the media address announced in Ready (IPv4, voice.md §3).
	UDP netip.AddrPort
	// WebRTC serves Select Protocol "webrtc" (browsers); nil refuses it
	// with 4012. Media is the UDP socket its senders' packets go out on to
	// UDP receivers (required with WebRTC).
	WebRTC *rtc.Leg
	Media  *transport.Server
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
	// LookupState asks the guild's owner for a user's voice state when an
	// Identify names one not known here. In a cluster the states come from
	// the guilds' owners on other nodes, in batches that can trail the
	// client (who heard of this node through its own gateway node), and a
	// node that joined the ring after the user joined the room never heard
	// of it. Nil: a node alone learns of every state before the user hears
	// of the room.
	LookupState func(ctx context.Context, g, user guild.ID) (guild.VoiceChange, error)
}

// lookupTimeout bounds LookupState.
const lookupTimeout = 2 * time.Second

// VoiceGateway serves the Voice Gateway (v8, and the legacy forms of
// voice.md §2) on the same websocket connection layer as the main gateway
// (conn.go, reader.go) and drives the SFU node. It implements
// guild.VoiceHost: the guilds' owners report voice state changes through
// it (the ring places rooms; VOICE_SERVER_UPDATE names the room's node),
// and it reaches the router only through LookupState.
type VoiceGateway struct {
	cfg    VoiceConfig
	signer *auth.Signer
	node   *sfu.Node
	ep     endpoint

	mu       sync.Mutex
	sessions map[*sfu.Participant]*voiceSession
	// states are the voice states of the cluster's users, by guild and
	// user, as the guilds' owners last told them (VoiceChanged): what
	// Identify checks.
	states map[guild.ID]map[guild.ID]guild.VoiceChange

	closes closeCounts
	// webrtcRefused counts Select Protocol "webrtc" refused for its SDP.
	webrtcRefused atomic.Uint64
}

// voiceSession is one user's voice connection to a room. Like a gateway
// Session it outlives its websocket: its eventLog keeps the sequenced
// messages (speaking, clients connect and disconnect) for a v8 resume
// (voice.md §6), and its participant stays in the room meanwhile.
type voiceSession struct {
	eventLog
	p                *sfu.Participant
	guild, user      guild.ID
	sessionID, token string
	ended            atomic.Bool // closed by the server or the client: no resume
	left             atomic.Bool // the participant left the room
	// peer is a WebRTC participant's PeerConnection (webrtc.go).
	peer atomic.Pointer[rtc.Peer]
}

// voiceLog bounds a voice session's log. A room's roster goes out as one
// burst at Identify, so the bound is a room's worth, not a resume's.
var voiceLog = logLimit{events: 1024, bytes: 1 << 20}

// VoiceResumeWindow is how long a voice session whose websocket dropped
// waits for a Resume before its participant leaves the room.
const VoiceResumeWindow = 30 * time.Second

// VoiceTokenTTL is how long a voice token from VOICE_SERVER_UPDATE admits.
const VoiceTokenTTL = 5 * time.Minute

// NewVoiceGateway returns a voice gateway for node.
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
	v := &VoiceGateway{cfg: cfg, signer: signer, node: node, sessions: map[*sfu.Participant]*voiceSession{},
		states: map[guild.ID]map[guild.ID]guild.VoiceChange{}}
	v.ep = endpoint{name: "voice", heartbeatTimeout: heartbeatTimeout(cfg.HeartbeatInterval),
		identifyTimeout: cfg.IdentifyTimeout, writeTimeout: DefaultWriteTimeout, payloadsPerMinute: cfg.PayloadsPerMinute,
		ignoreBinary: true, closeNoIdentify: protocol.VoiceCloseNotAuthenticated,
		closeZombie: protocol.VoiceCloseSessionTimeout, closeTooLarge: protocol.VoiceCloseDecodeError,
		closeServerFault: protocol.VoiceCloseServerCrashed, closeRateLimited: protocol.VoiceCloseRateLimited,
		frame: frameVoice, closes: &v.closes, metrics: cfg.Metrics, logger: cfg.Logger}
	v.ep.init()
	return v
}

// frameVoice frames a kept voice message with its 16-bit seq for a v8
// client, without one for older clients.
func frameVoice(c *conn, b []byte, ev *guild.Event, seq uint64) []byte {
	b = append(b, ev.Data...)
	if c.version >= 8 {
		return protocol.EndVoiceFrame(b, int(seq&0xFFFF))
	}
	return protocol.EndVoiceFrame(b, -1)
}

// Closes returns how many voice connections were closed with code.
func (v *VoiceGateway) Closes(code protocol.CloseCode) uint64 { return v.closes.get(code) }

// WriteMetrics writes the voice gateway's closes by code in the Prometheus
// text format.
func (v *VoiceGateway) WriteMetrics(w io.Writer) {
	v.closes.write(w, "voice")
	if l := v.cfg.WebRTC; l != nil {
		fmt.Fprintf(w, "chorus_voice_webrtc_refused_total %d\n", v.webrtcRefused.Load())
		fmt.Fprintf(w, "chorus_voice_webrtc_peers_total{state=\"started\"} %d\n", l.Stats.Started.Load())
		fmt.Fprintf(w, "chorus_voice_webrtc_peers_total{state=\"connected\"} %d\n", l.Stats.Connected.Load())
		fmt.Fprintf(w, "chorus_voice_webrtc_peers_total{state=\"timed_out\"} %d\n", l.Stats.TimedOut.Load())
		fmt.Fprintf(w, "chorus_voice_webrtc_peers_total{state=\"failed\"} %d\n", l.Stats.Failed.Load())
		// Connected peers sent through pion's SRTP path (keys unknown to
		// the leg): expected 0; more means the fast path broke.
		fmt.Fprintf(w, "chorus_voice_webrtc_peers_total{state=\"pion_srtp\"} %d\n", l.Stats.PionSRTP.Load())
		// SRTP from a peer's address that did not decrypt: forged,
		// corrupted or replayed, dropped.
		fmt.Fprintf(w, "chorus_voice_webrtc_bad_srtp_total %d\n", l.Stats.BadSRTP.Load())
		fmt.Fprintf(w, "chorus_voice_webrtc_write_errors_total %d\n", l.Stats.WriteErrors.Load())
	}
}

// VoiceToken returns the token VOICE_SERVER_UPDATE carries for user. Every
// voice node of the cluster admits it for VoiceTokenTTL: the signing key
// is the cluster's (kept in the shared store).
func VoiceToken(signer *auth.Signer, user guild.ID) string {
	return VoiceTokenUntil(signer, user, time.Now().Add(VoiceTokenTTL))
}

// VoiceTokenUntil returns a voice token that admits user until expires.
func VoiceTokenUntil(signer *auth.Signer, user guild.ID, expires time.Time) string {
	return signer.Issue(auth.PurposeVoice, user, uint64(expires.UnixMilli()))
}

// IssueTokenUntil is VoiceTokenUntil with this gateway's key.
func (v *VoiceGateway) IssueTokenUntil(user guild.ID, expires time.Time) string {
	return VoiceTokenUntil(v.signer, user, expires)
}

// sendVoice queues a message that is not kept for a resume (Hello, Ready,
// Session Description, Heartbeat ACK).
func sendVoice(c *conn, op int, d any) {
	c.send(protocol.AppendVoiceFrame(nil, op, mustJSON(d), -1))
}

// send queues a sequenced message: kept in the log for a v8 resume.
func (s *voiceSession) send(op int, d any) {
	ev := &guild.Event{Data: protocol.OpenVoiceFrame(nil, op, mustJSON(d))}
	if slow := s.push(ev, voiceLog); slow != nil {
		slow.ep.metrics.SlowConsumers.Add(1)
		slow.closeWith(slow.ep.closeServerFault, "slow consumer")
	}
}

// mustJSON encodes one of our own payload types; failing to is a
// programming error.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("signaling: encode %T: %v", v, err))
	}
	return b
}

// ServeHTTP upgrades a voice connection (voice.md §3: path /, ?v=N or none).
func (v *VoiceGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := v.ep.accept(w, r)
	if c == nil {
		return // gorilla already answered with an HTTP error
	}
	if n, err := strconv.Atoi(r.URL.Query().Get("v")); err == nil && n > 0 {
		c.version = n // otherwise 0: the client named none (voice.md §2)
	}
	interval := int(v.cfg.HeartbeatInterval / time.Millisecond)
	sendVoice(c, protocol.VoiceHello, protocol.VoiceHelloData{HeartbeatInterval: interval, V: c.version})
	c.startTimers()
	go v.run(c)
}

func (v *VoiceGateway) run(c *conn) {
	code := closeNoResponse
	defer func() {
		// As in Gateway.run: a panic ends this connection as a drop.
		if r := recover(); r != nil {
			v.cfg.Metrics.recovered(v.cfg.Logger, "voice read loop", r)
		}
		v.ended(c, code)
	}()
	code = readLoop(c, v.handle)
}

// ended releases a connection whose read loop is over. A session the
// client or the server ended leaves its room; one that merely dropped (or
// that a server fault closed) waits VoiceResumeWindow for a Resume.
func (v *VoiceGateway) ended(c *conn, code protocol.CloseCode) {
	c.hb.Stop()
	c.nc.Close()
	s := c.voice.Load()
	if s == nil || !s.detach(c) {
		return // never identified, or a Resume on another websocket took the session over
	}
	closed := c.closedWith()
	if s.ended.Load() || code.EndsSession() || (closed != 0 && closed != v.ep.closeServerFault) {
		v.leave(s)
		return
	}
	time.AfterFunc(VoiceResumeWindow, func() {
		if s.stale(VoiceResumeWindow) {
			v.leave(s)
		}
	})
}

// end closes a session for good with code: its websocket, if it has one,
// and otherwise its place in the room at once.
func (v *VoiceGateway) end(s *voiceSession, code protocol.CloseCode, reason string) {
	s.ended.Store(true)
	s.invalidate()
	if c := s.current(); c != nil {
		c.closeWith(code, reason)
		return // ended() leaves the room once the websocket is done
	}
	v.leave(s)
}

// handle processes one payload; false once the connection is closing.
func (v *VoiceGateway) handle(c *conn, p []byte) bool {
	if !c.allow() {
		// Each payload may be relayed to the whole room (Speaking).
		c.closeWith(protocol.VoiceCloseRateLimited, "rate limited")
		return false
	}
	env, err := protocol.DecodeEnvelope(p)
	if err != nil {
		c.closeWith(protocol.VoiceCloseDecodeError, "decode error")
		return false
	}
	s := c.voice.Load()
	switch env.Op {
	case protocol.VoiceHeartbeat:
		hb, err := protocol.DecodeVoiceHeartbeat(env.D)
		if err != nil {
			c.closeWith(protocol.VoiceCloseDecodeError, "invalid heartbeat")
			return false
		}
		c.lastBeat.Store(time.Now().UnixNano())
		if s != nil && hb.SeqAck >= 0 {
			if seq, ok := s.seqOf16(int(hb.SeqAck)); ok {
				s.ack(c, seq) // the client holds these: they need not be kept
			}
		}
		// Echo t exactly as it came (clients.md §17), in the form it came.
		if hb.Legacy {
			c.send(protocol.AppendVoiceFrame(nil, protocol.VoiceHeartbeatACK, hb.T, -1))
		} else {
			sendVoice(c, protocol.VoiceHeartbeatACK, protocol.VoiceHeartbeatACKData{T: hb.T})
		}
		return true
	case protocol.VoiceIdentify, protocol.VoiceResume:
		if s != nil {
			c.closeWith(protocol.VoiceCloseAlreadyAuthed, "already authenticated")
			return false
		}
		c.loggingIn.Store(true)
		if env.Op == protocol.VoiceIdentify {
			return v.identify(c, env.D)
		}
		return v.resume(c, env.D)
	case protocol.VoiceSelectProtocol, protocol.VoiceSpeaking:
		if s == nil {
			c.closeWith(protocol.VoiceCloseNotAuthenticated, "not authenticated")
			return false
		}
		if env.Op == protocol.VoiceSelectProtocol {
			return v.selectProtocol(c, s, env.D)
		}
		return v.speaking(c, s, env.D)
	}
	// Unknown and DAVE opcodes are ignored silently (voice.md §4.2, §7).
	return true
}

// resume lets a new websocket take over a dropped voice session (op 7):
// op 9 Resumed, then every kept message after seq_ack (voice.md §5.8,
// §6). The UDP side never stopped. A session that is gone, or whose log
// no longer reaches back to seq_ack, is closed with 4006.
func (v *VoiceGateway) resume(c *conn, d json.RawMessage) bool {
	r, err := protocol.DecodeVoiceResume(d)
	if err != nil {
		c.closeWith(protocol.VoiceCloseDecodeError, "invalid resume")
		return false
	}
	var s *voiceSession
	v.mu.Lock()
	for _, vs := range v.sessions {
		if vs.guild == r.ServerID && vs.sessionID == r.SessionID {
			s = vs
		}
	}
	v.mu.Unlock()
	if s == nil {
		c.closeWith(protocol.VoiceCloseSessionInvalid, "session no longer valid")
		return false
	}
	if subtle.ConstantTimeCompare([]byte(s.token), []byte(r.Token)) != 1 {
		c.closeWith(protocol.VoiceCloseAuthFailed, "authentication failed")
		return false
	}
	seq, ok := s.lastSeq(), true
	if r.SeqAck != nil && *r.SeqAck >= 0 {
		seq, ok = s.seqOf16(int(*r.SeqAck))
	}
	var old *conn
	result := resumeGone
	if ok {
		old, result = s.attach(c, true, seq)
	}
	if result != resumeOK {
		c.closeWith(protocol.VoiceCloseSessionInvalid, "session no longer valid")
		return false
	}
	// Resumed is queued before the session is visible to the writer, so it
	// precedes every replayed message.
	c.send(protocol.VoiceResumedFrame)
	c.voice.Store(s)
	c.wake()
	if old != nil {
		old.nc.Close() // its read loop finds the session taken over and leaves it be
	}
	return true
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
		if s := v.session(p); s != nil {
			v.cfg.Logger.Debug("voice: connection ended by a state change", "guild", ch.Guild, "user", ch.User, "channel", ch.ChannelID)
			v.end(s, protocol.VoiceCloseDisconnected, "disconnected")
		}
		return
	}
	applyFlags(p, ch)
}

// VoiceStates lists the voice states heard of a guild (guild.VoiceHost).
func (v *VoiceGateway) VoiceStates(g guild.ID) []guild.VoiceChange {
	v.mu.Lock()
	out := make([]guild.VoiceChange, 0, len(v.states[g]))
	for _, ch := range v.states[g] {
		out = append(out, ch)
	}
	v.mu.Unlock()
	// The SFU is asked outside v.mu, as VoiceChanged does.
	for i, ch := range out {
		p := v.node.Participant(uint64(g), uint64(ch.User))
		out[i].Connected = p != nil && p.Room().Key.Channel == uint64(ch.ChannelID)
	}
	return out
}

// Revoke closes every voice connection of user with 4004: its tokens were
// revoked.
func (v *VoiceGateway) Revoke(user guild.ID) {
	v.mu.Lock()
	var ss []*voiceSession
	for _, s := range v.sessions {
		if s.user == user {
			ss = append(ss, s)
		}
	}
	v.mu.Unlock()
	for _, s := range ss {
		v.end(s, protocol.VoiceCloseAuthFailed, "token revoked")
		v.leave(s)
	}
}

func (v *VoiceGateway) session(p *sfu.Participant) *voiceSession {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.sessions[p]
}
