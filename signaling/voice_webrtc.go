package signaling

import (
	"crypto/rand"
	"encoding/hex"
	"errors"

	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/rtc"
	"github.com/chorus-voice/chorus/sfu"
)

// selectWebRTC answers Select Protocol "webrtc" (webrtc.md §1–2): the
// client's SDP is read (rtc.ParseOffer), a PeerConnection is made on the
// node's shared WebRTC port, and Session Description carries the server's
// fragment. The participant is the same sfu participant as a UDP one —
// same SSRC from Ready, same room, flags and speaking — with a sink in
// place of a key and an address. Bad SDP closes with 4020 and the reason;
// a second Select Protocol replaces the first connection.
func (v *VoiceGateway) selectWebRTC(c *conn, s *voiceSession, sp protocol.SelectProtocolData) bool {
	o, err := rtc.ParseOffer(sp.SDP, sp.Codecs)
	if err != nil {
		v.webrtcRefused.Add(1)
		c.closeWith(protocol.VoiceCloseBadRequest, err.Error())
		return false
	}
	w, err := v.cfg.Media.NewWriter()
	if err != nil {
		c.closeWith(protocol.VoiceCloseServerCrashed, "media socket")
		return false
	}
	// One forwarder per peer: its packets arrive on one goroutine of
	// pion's (the track's reader).
	fw := &sfu.Forwarder{Batch: v.cfg.WebRTC.Batch()}
	p := s.p
	peer, err := v.cfg.WebRTC.Connect(o, func(pkt []byte) {
		w.Write(v.node.ForwardPlain(fw, p, pkt))
	}, func(err error) {
		if err == nil {
			return // closed by us
		}
		code := protocol.VoiceCloseSessionTimeout
		if !errors.Is(err, rtc.ErrConnectTimeout) {
			code = protocol.VoiceCloseDisconnected
		}
		v.cfg.Logger.Debug("voice: webrtc peer ended", "user", s.user, "err", err)
		v.end(s, code, err.Error())
	})
	if err != nil {
		v.cfg.Logger.Warn("voice: webrtc connect", "user", s.user, "err", err)
		c.closeWith(protocol.VoiceCloseBadRequest, "sdp refused")
		return false
	}
	if old := s.peer.Swap(peer); old != nil {
		old.Close()
	}
	p.SetCipher(nil)
	p.SetSink(peer, o.OpusPT)
	var id [16]byte
	rand.Read(id[:])
	sendVoice(c, protocol.VoiceSessionDescription, protocol.WebRTCSessionDescriptionData{SDP: peer.Answer.Fragment(),
		AudioCodec: "opus", MediaSessionID: hex.EncodeToString(id[:]), DAVEProtocolVersion: 0})
	return true
}
