package protocol

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/chorus-voice/chorus/snowflake"
)

// Voice gateway opcodes (voice.md §4.1).
const (
	VoiceIdentify           = 0
	VoiceSelectProtocol     = 1
	VoiceReady              = 2
	VoiceHeartbeat          = 3
	VoiceSessionDescription = 4
	VoiceSpeaking           = 5
	VoiceHeartbeatACK       = 6
	VoiceResume             = 7
	VoiceHello              = 8
	VoiceResumed            = 9
	VoiceClientsConnect     = 11
	VoiceClientDisconnect   = 13
)

// Voice close codes (voice.md §8).
const (
	VoiceCloseUnknownOpcode     CloseCode = 4001
	VoiceCloseDecodeError       CloseCode = 4002
	VoiceCloseNotAuthenticated  CloseCode = 4003
	VoiceCloseAuthFailed        CloseCode = 4004
	VoiceCloseAlreadyAuthed     CloseCode = 4005
	VoiceCloseSessionInvalid    CloseCode = 4006
	VoiceCloseSessionTimeout    CloseCode = 4009
	VoiceCloseServerNotFound    CloseCode = 4011
	VoiceCloseUnknownProtocol   CloseCode = 4012
	VoiceCloseDisconnected      CloseCode = 4014
	VoiceCloseServerCrashed     CloseCode = 4015
	VoiceCloseUnknownEncryption CloseCode = 4016
	VoiceCloseBadRequest        CloseCode = 4020
	VoiceCloseRateLimited       CloseCode = 4021
	VoiceCloseCallTerminated    CloseCode = 4022
)

// VoiceIdentifyData is voice op 0.
type VoiceIdentifyData struct {
	ServerID  snowflake.ID `json:"server_id"`
	UserID    snowflake.ID `json:"user_id"`
	SessionID string       `json:"session_id"`
	Token     string       `json:"token"`
	MaxDAVE   int          `json:"max_dave_protocol_version"`
}

// DecodeVoiceIdentify parses voice Identify; every field but the DAVE
// version is required.
func DecodeVoiceIdentify(d []byte) (VoiceIdentifyData, error) {
	var v VoiceIdentifyData
	if err := decode(d, &v); err != nil {
		return v, err
	}
	if v.ServerID == 0 || v.UserID == 0 || v.SessionID == "" || v.Token == "" {
		return v, ErrPayload
	}
	return v, nil
}

// SelectProtocolData is voice op 1 (voice.md §5.5, webrtc.md §1). For
// "udp", data.address and data.port are what the client claims and are
// never trusted for sending (clients.md §11). For "webrtc", data is the
// client's SDP (a string; sdp repeats it) and codecs names its payload
// types.
type SelectProtocolData struct {
	Protocol string `json:"protocol"`
	Data     struct {
		Address string `json:"address"`
		IP      string `json:"ip"`
		Port    int    `json:"port"`
		Mode    string `json:"mode"`
	} `json:"data"`
	// SDP is the webrtc client's SDP: data when it is a string, else sdp.
	SDP             string       `json:"-"`
	Codecs          []VoiceCodec `json:"codecs"`
	RTCConnectionID string       `json:"rtc_connection_id"`
}

// VoiceCodec is one entry of Select Protocol's codecs (webrtc.md §1).
type VoiceCodec struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Priority    int    `json:"priority"`
	PayloadType int    `json:"payload_type"`
}

// DecodeSelectProtocol parses Select Protocol: data is an object for udp
// and a string (the SDP) for webrtc; the caller answers by protocol.
func DecodeSelectProtocol(d []byte) (SelectProtocolData, error) {
	var v SelectProtocolData
	var probe struct {
		Protocol        string          `json:"protocol"`
		Data            json.RawMessage `json:"data"`
		SDP             *string         `json:"sdp"`
		Codecs          []VoiceCodec    `json:"codecs"`
		RTCConnectionID string          `json:"rtc_connection_id"`
	}
	if err := decode(d, &probe); err != nil {
		return v, err
	}
	v.Protocol, v.Codecs, v.RTCConnectionID = probe.Protocol, probe.Codecs, probe.RTCConnectionID
	if v.Protocol == "" {
		return v, ErrPayload
	}
	switch {
	case len(probe.Data) > 0 && probe.Data[0] == '{':
		if err := json.Unmarshal(probe.Data, &v.Data); err != nil {
			return v, ErrPayload
		}
	case len(probe.Data) > 0 && probe.Data[0] == '"':
		if err := json.Unmarshal(probe.Data, &v.SDP); err != nil {
			return v, ErrPayload
		}
	}
	if v.SDP == "" && probe.SDP != nil {
		v.SDP = *probe.SDP
	}
	return v, nil
}

// VoiceHeartbeatData is voice op 3 in either form: v8 {"t":…,"seq_ack":…}
// or the older bare integer (voice.md §5.4). T is echoed back exactly as
// it came.
type VoiceHeartbeatData struct {
	T      json.RawMessage
	SeqAck int64 // -1 when absent
	Legacy bool  // the bare-integer form: answer with a bare value
}

// DecodeVoiceHeartbeat parses voice op 3.
func DecodeVoiceHeartbeat(d []byte) (VoiceHeartbeatData, error) {
	d = bytes.TrimSpace(d)
	h := VoiceHeartbeatData{SeqAck: -1}
	if len(d) == 0 || string(d) == "null" {
		return h, ErrPayload
	}
	if d[0] != '{' {
		if _, err := strconv.ParseFloat(string(d), 64); err != nil {
			return h, ErrPayload
		}
		h.T, h.Legacy = d, true
		return h, nil
	}
	var v struct {
		T      json.RawMessage `json:"t"`
		SeqAck *int64          `json:"seq_ack"`
	}
	if err := json.Unmarshal(d, &v); err != nil {
		return h, ErrPayload
	}
	h.T = v.T
	if v.SeqAck != nil {
		h.SeqAck = *v.SeqAck
	}
	return h, nil
}

// SpeakingData is voice op 5 from a client. Speaking accepts a bitmask or
// a boolean (voice.md §5.7); SSRC may be absent.
type SpeakingData struct {
	Speaking int
	SSRC     uint32
	HasSSRC  bool
}

// DecodeSpeaking parses voice op 5.
func DecodeSpeaking(d []byte) (SpeakingData, error) {
	var v struct {
		Speaking json.RawMessage `json:"speaking"`
		SSRC     *uint32         `json:"ssrc"`
	}
	if err := decode(d, &v); err != nil {
		return SpeakingData{}, err
	}
	var s SpeakingData
	switch string(bytes.TrimSpace(v.Speaking)) {
	case "true":
		s.Speaking = 1
	case "false", "", "null":
	default:
		n, err := strconv.Atoi(string(v.Speaking))
		if err != nil || n < 0 || n > 7 {
			return s, ErrPayload
		}
		s.Speaking = n
	}
	if v.SSRC != nil {
		s.SSRC, s.HasSSRC = *v.SSRC, true
	}
	return s, nil
}

// VoiceResumeData is voice op 7.
type VoiceResumeData struct {
	ServerID  snowflake.ID `json:"server_id"`
	SessionID string       `json:"session_id"`
	Token     string       `json:"token"`
	SeqAck    *int64       `json:"seq_ack"`
}

// DecodeVoiceResume parses voice Resume.
func DecodeVoiceResume(d []byte) (VoiceResumeData, error) {
	var v VoiceResumeData
	if err := decode(d, &v); err != nil {
		return v, err
	}
	if v.ServerID == 0 || v.SessionID == "" || v.Token == "" {
		return v, ErrPayload
	}
	return v, nil
}
