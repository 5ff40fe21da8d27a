package signaling

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/chorus-voice/chorus/auth"
	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/sfu"
)

// The voice gateway's side of a room: joining it (Identify), the media
// session (Select Protocol), speaking, and leaving.

func (v *VoiceGateway) identify(c *conn, d json.RawMessage) bool {
	id, err := protocol.DecodeVoiceIdentify(d)
	if err != nil {
		c.closeWith(protocol.VoiceCloseDecodeError, "invalid identify")
		return false
	}
	user, expires, err := v.signer.Verify(auth.PurposeVoice, id.Token)
	if err != nil || user != id.UserID || time.Now().UnixMilli() > int64(expires) {
		c.closeWith(protocol.VoiceCloseAuthFailed, "authentication failed")
		return false
	}
	known, st, ok := v.state(id.ServerID, user, id.SessionID)
	if !known {
		// No voice state of that guild is known here (voice.md §8).
		c.closeWith(protocol.VoiceCloseServerNotFound, "server not found")
		return false
	}
	if !ok || st.SessionID != id.SessionID {
		c.closeWith(protocol.VoiceCloseSessionInvalid, "session no longer valid")
		return false
	}
	p, old := v.node.Join(sfu.Key{Guild: uint64(id.ServerID), Channel: uint64(st.ChannelID)}, uint64(user))
	applyFlags(p, st)
	s := &voiceSession{eventLog: newEventLog(), p: p, guild: id.ServerID, user: user, sessionID: id.SessionID,
		token: id.Token}
	s.attach(c, false, 0)
	modes := make([]string, len(v.cfg.Modes))
	for i, m := range v.cfg.Modes {
		modes[i] = m.String()
	}
	// Ready is queued before the session is visible to the writer, so it
	// precedes every sequenced message.
	sendVoice(c, protocol.VoiceReady, protocol.VoiceReadyData{SSRC: p.SSRC, IP: v.cfg.UDP.Addr().String(),
		Port: int(v.cfg.UDP.Port()), Modes: modes, HeartbeatInterval: int(v.cfg.HeartbeatInterval / time.Millisecond),
		Experiments: []string{}})
	c.voice.Store(s)
	v.mu.Lock()
	var replaced *voiceSession
	if old != nil {
		replaced = v.sessions[old]
		delete(v.sessions, old)
	}
	v.sessions[p] = s
	v.mu.Unlock()
	if replaced != nil {
		v.end(replaced, protocol.VoiceCloseDisconnected, "replaced by a new connection")
	}

	// The roster both ways, and the SSRCs already known (voice.md §5.7, §5.9).
	var others []string
	for _, q := range p.Room().Members() {
		if q == p {
			continue
		}
		others = append(others, strconv.FormatUint(q.UserID, 10))
		if q.Flags()&sfu.FlagAnnounced != 0 {
			s.send(protocol.VoiceSpeaking, protocol.SpeakingEvent{UserID: strconv.FormatUint(q.UserID, 10), SSRC: q.SSRC,
				Speaking: speakingOf(q)})
		}
		if os := v.session(q); os != nil {
			os.send(protocol.VoiceClientsConnect, protocol.ClientsConnectData{UserIDs: []string{user.String()}})
		}
	}
	if len(others) > 0 {
		s.send(protocol.VoiceClientsConnect, protocol.ClientsConnectData{UserIDs: others})
	}
	// The SSRC is known now: tell everyone whose it is, long before any
	// audio can follow it (clients.md §15; a receiver drops packets of
	// SSRCs it cannot map). Only then may the SFU forward it.
	v.announce(s, 0)
	return true
}

// announce sends op 5 for s's participant to everyone else in the room and
// marks the SSRC as announced.
func (v *VoiceGateway) announce(s *voiceSession, speaking int) {
	out := protocol.SpeakingEvent{UserID: s.user.String(), SSRC: s.p.SSRC, Speaking: speaking}
	for _, q := range s.p.Room().Members() {
		if os := v.session(q); q != s.p && os != nil {
			os.send(protocol.VoiceSpeaking, out)
		}
	}
	s.p.SetFlags(sfu.FlagAnnounced, 0)
}

// speakingOf is the last speaking bitmask a participant sent.
func speakingOf(p *sfu.Participant) int { return int(p.Flags() >> 16 & protocol.SpeakingAll) }

func (v *VoiceGateway) selectProtocol(c *conn, s *voiceSession, d json.RawMessage) bool {
	sp, err := protocol.DecodeSelectProtocol(d)
	if err != nil {
		c.closeWith(protocol.VoiceCloseDecodeError, "invalid select protocol")
		return false
	}
	if sp.Protocol == "webrtc" && v.cfg.WebRTC != nil {
		return v.selectWebRTC(c, s, sp)
	}
	if sp.Protocol != "udp" {
		c.closeWith(protocol.VoiceCloseUnknownProtocol, "unknown protocol")
		return false
	}
	mode, err := crypto.ParseMode(sp.Data.Mode)
	if err != nil || !slices.Contains(v.cfg.Modes, mode) {
		c.closeWith(protocol.VoiceCloseUnknownEncryption, "unknown encryption mode")
		return false
	}
	var key [32]byte
	rand.Read(key[:]) // never fails (crypto/rand, Go 1.24)
	ci, err := crypto.NewCipher(mode, key[:])
	if err != nil {
		c.closeWith(protocol.VoiceCloseUnknownEncryption, "unknown encryption mode")
		return false
	}
	s.p.SetCipher(ci)
	if peer := s.peer.Swap(nil); peer != nil {
		// It was a WebRTC participant: no more.
		s.p.SetSink(nil, 0)
		peer.Close()
	}
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
	v.node.Claim(s.p, claim)
	// dave_protocol_version 0 keeps the call out of DAVE (voice.md §7).
	sendVoice(c, protocol.VoiceSessionDescription, protocol.SessionDescriptionData{Mode: mode.String(), SecretKey: key,
		DAVEProtocolVersion: 0, AudioCodec: "opus"})
	return true
}

func (v *VoiceGateway) speaking(c *conn, s *voiceSession, d json.RawMessage) bool {
	sp, err := protocol.DecodeSpeaking(d)
	if err != nil {
		c.closeWith(protocol.VoiceCloseDecodeError, "invalid speaking")
		return false
	}
	before := speakingOf(s.p)
	s.p.SetFlags(uint32(sp.Speaking)<<16, protocol.SpeakingAll<<16)
	if sp.Speaking != before {
		v.announce(s, sp.Speaking)
	}
	return true
}

// leave removes a session's participant from its room, once, and tells
// the room.
func (v *VoiceGateway) leave(s *voiceSession) {
	if !s.left.CompareAndSwap(false, true) {
		return
	}
	s.invalidate()
	if peer := s.peer.Swap(nil); peer != nil {
		peer.Close()
	}
	v.mu.Lock()
	if v.sessions[s.p] == s {
		delete(v.sessions, s.p)
	}
	v.mu.Unlock()
	v.node.Leave(s.p)
	if v.node.Participant(uint64(s.guild), uint64(s.user)) != nil {
		return // the user is back on a newer connection: not a departure
	}
	for _, q := range s.p.Room().Members() {
		if os := v.session(q); os != nil {
			os.send(protocol.VoiceClientDisconnect, protocol.ClientDisconnectData{UserID: s.user.String()})
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

// state returns the voice state an Identify names. One not known here, or
// of another session, is asked of the guild's owner (LookupState) and kept
// unless a change arrived meanwhile.
func (v *VoiceGateway) state(g, user guild.ID, session string) (known bool, st guild.VoiceChange, ok bool) {
	v.mu.Lock()
	room, known := v.states[g]
	st, ok = room[user]
	v.mu.Unlock()
	if (ok && st.SessionID == session) || v.cfg.LookupState == nil {
		return known, st, ok
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	got, err := v.cfg.LookupState(ctx, g, user)
	if err != nil || got.ChannelID == 0 {
		return known, st, ok
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur, seen := v.states[g][user]; seen && cur != st {
		return true, cur, true // a change arrived meanwhile: it is newer
	}
	if v.states[g] == nil {
		v.states[g] = map[guild.ID]guild.VoiceChange{}
	}
	v.states[g][user] = got
	return true, got, true
}
