package protocol

import (
	"encoding/json"
	"strconv"
)

// Speaking flags, the bits of op 5's "speaking" (voice.md §5.7).
const (
	SpeakingMicrophone = 1 << 0
	SpeakingSoundshare = 1 << 1
	SpeakingPriority   = 1 << 2
	SpeakingAll        = SpeakingMicrophone | SpeakingSoundshare | SpeakingPriority
)

// VoiceHelloData is voice op 8. V echoes the version the client asked for
// and is absent when it named none (voice.md §2).
type VoiceHelloData struct {
	HeartbeatInterval int `json:"heartbeat_interval"`
	V                 int `json:"v,omitempty"`
}

// VoiceReadyData is voice op 2 (voice.md §5.3): the client's SSRC and
// where its media goes.
type VoiceReadyData struct {
	SSRC              uint32   `json:"ssrc"`
	IP                string   `json:"ip"`
	Port              int      `json:"port"`
	Modes             []string `json:"modes"`
	HeartbeatInterval int      `json:"heartbeat_interval"`
	Experiments       []string `json:"experiments"`
}

// SessionDescriptionData is voice op 4 (voice.md §5.6). The key is a JSON
// array of numbers, as an array (not a slice) of bytes encodes; a DAVE
// version of 0 keeps the call out of DAVE (voice.md §7).
type SessionDescriptionData struct {
	Mode                string   `json:"mode"`
	SecretKey           [32]byte `json:"secret_key"`
	DAVEProtocolVersion int      `json:"dave_protocol_version"`
	AudioCodec          string   `json:"audio_codec"`
}

// WebRTCSessionDescriptionData is voice op 4 for a webrtc client
// (webrtc.md §2): the server's SDP fragment, no mode and no key (media is
// DTLS-SRTP).
type WebRTCSessionDescriptionData struct {
	SDP                 string `json:"sdp"`
	AudioCodec          string `json:"audio_codec"`
	VideoCodec          string `json:"video_codec"`
	MediaSessionID      string `json:"media_session_id"`
	DAVEProtocolVersion int    `json:"dave_protocol_version"`
}

// VoiceHeartbeatACKData is voice op 6 in the v8 form; the legacy form is
// the bare value the client sent.
type VoiceHeartbeatACKData struct {
	T json.RawMessage `json:"t"`
}

// SpeakingEvent is voice op 5 from the server: whose SSRC it is and what
// they are sending (voice.md §5.7).
type SpeakingEvent struct {
	UserID   string `json:"user_id"`
	SSRC     uint32 `json:"ssrc"`
	Speaking int    `json:"speaking"`
}

// ClientsConnectData is voice op 11: users already in, or now in, the room.
type ClientsConnectData struct {
	UserIDs []string `json:"user_ids"`
}

// ClientDisconnectData is voice op 13: a user left the room.
type ClientDisconnectData struct {
	UserID string `json:"user_id"`
}

// VoiceResumedFrame is voice op 9, which carries no data.
var VoiceResumedFrame = AppendVoiceFrame(nil, VoiceResumed, []byte("null"), -1)

// AppendVoiceFrame appends {"op":op,"d":d} and, when seq >= 0, the v8
// "seq" key (voice.md §6).
func AppendVoiceFrame(b []byte, op int, d []byte, seq int) []byte {
	return EndVoiceFrame(OpenVoiceFrame(b, op, d), seq)
}

// OpenVoiceFrame appends a voice frame without its end: {"op":op,"d":d.
// A message kept for a resume is stored so; EndVoiceFrame completes it
// with the seq it is sent under.
func OpenVoiceFrame(b []byte, op int, d []byte) []byte {
	b = append(b, `{"op":`...)
	b = strconv.AppendInt(b, int64(op), 10)
	b = append(b, `,"d":`...)
	return append(b, d...)
}

// EndVoiceFrame ends a frame OpenVoiceFrame began, with "seq" when
// seq >= 0 (v8 clients; older ones know no seq).
func EndVoiceFrame(b []byte, seq int) []byte {
	if seq >= 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendInt(b, int64(seq), 10)
	}
	return append(b, '}')
}
