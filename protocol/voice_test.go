package protocol

import (
	"encoding/json"
	"testing"
)

func TestDecodeVoiceHeartbeat(t *testing.T) {
	v8, err := DecodeVoiceHeartbeat([]byte(`{"t":1501184119561,"seq_ack":10}`))
	if err != nil || string(v8.T) != "1501184119561" || v8.SeqAck != 10 || v8.Legacy {
		t.Fatalf("v8: %+v %v", v8, err)
	}
	noAck, _ := DecodeVoiceHeartbeat([]byte(`{"t":5}`))
	if noAck.SeqAck != -1 {
		t.Fatalf("missing seq_ack = %d", noAck.SeqAck)
	}
	old, err := DecodeVoiceHeartbeat([]byte(`1501184119561`))
	if err != nil || !old.Legacy || string(old.T) != "1501184119561" {
		t.Fatalf("legacy: %+v %v", old, err)
	}
	for _, bad := range []string{`null`, `"x"`, `{`, ``} {
		if _, err := DecodeVoiceHeartbeat([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestDecodeSpeaking(t *testing.T) {
	for in, want := range map[string]SpeakingData{
		`{"speaking":5,"delay":0,"ssrc":1}`: {Speaking: 5, SSRC: 1, HasSSRC: true},
		`{"speaking":true}`:                 {Speaking: 1},
		`{"speaking":false,"ssrc":9}`:       {SSRC: 9, HasSSRC: true},
	} {
		got, err := DecodeSpeaking([]byte(in))
		if err != nil || got != want {
			t.Errorf("%s: %+v %v", in, got, err)
		}
	}
	for _, bad := range []string{`{"speaking":"yes"}`, `{"speaking":99}`, `{"speaking":1,"ssrc":-1}`, `null`} {
		if _, err := DecodeSpeaking([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestDecodeVoiceIdentifyAndSelect(t *testing.T) {
	id, err := DecodeVoiceIdentify([]byte(`{"server_id":"1","user_id":2,"session_id":"s","token":"t","max_dave_protocol_version":1}`))
	if err != nil || id.ServerID != 1 || id.UserID != 2 || id.MaxDAVE != 1 {
		t.Fatalf("%+v %v", id, err)
	}
	if _, err := DecodeVoiceIdentify([]byte(`{"server_id":"1","user_id":2,"session_id":"s"}`)); err == nil {
		t.Fatal("identify without token accepted")
	}
	sp, err := DecodeSelectProtocol([]byte(`{"protocol":"udp","data":{"address":"1.2.3.4","port":5,"mode":"aead_aes256_gcm_rtpsize"}}`))
	if err != nil || sp.Protocol != "udp" || sp.Data.Mode != "aead_aes256_gcm_rtpsize" || sp.Data.Port != 5 {
		t.Fatalf("%+v %v", sp, err)
	}
	web, err := DecodeSelectProtocol([]byte(`{"protocol":"webrtc","data":"a=ice-ufrag:x\n","sdp":"a=ice-ufrag:x\n",` +
		`"codecs":[{"name":"opus","type":"audio","priority":1000,"payload_type":111}],"rtc_connection_id":"d6b9"}`))
	if err != nil || web.Protocol != "webrtc" || web.SDP != "a=ice-ufrag:x\n" || len(web.Codecs) != 1 ||
		web.Codecs[0].PayloadType != 111 || web.RTCConnectionID != "d6b9" {
		t.Fatalf("webrtc: %+v %v", web, err)
	}
	// The SDP in sdp alone (data missing) is read too.
	if web, err := DecodeSelectProtocol([]byte(`{"protocol":"webrtc","sdp":"v=0"}`)); err != nil || web.SDP != "v=0" {
		t.Fatalf("webrtc with sdp only: %+v %v", web, err)
	}
	if _, err := DecodeSelectProtocol([]byte(`{"data":{}}`)); err == nil {
		t.Fatal("no protocol accepted")
	}
}

func TestAppendVoiceFrame(t *testing.T) {
	var v struct {
		Op  int             `json:"op"`
		D   json.RawMessage `json:"d"`
		Seq *int            `json:"seq"`
	}
	b := AppendVoiceFrame(nil, VoiceSpeaking, []byte(`{"ssrc":1}`), 7)
	if err := json.Unmarshal(b, &v); err != nil || v.Op != 5 || *v.Seq != 7 {
		t.Fatalf("%s %v", b, err)
	}
	v.Seq = nil
	b = AppendVoiceFrame(nil, VoiceHello, []byte(`{}`), -1)
	if err := json.Unmarshal(b, &v); err != nil || v.Seq != nil {
		t.Fatalf("%s %v", b, err)
	}
}

func FuzzDecodeVoicePayload(f *testing.F) {
	for _, s := range []string{
		`{"op":0,"d":{"server_id":"1","user_id":"2","session_id":"s","token":"t"}}`,
		`{"op":1,"d":{"protocol":"udp","data":{"address":"1.2.3.4","port":5,"mode":"x"}}}`,
		`{"op":3,"d":{"t":1,"seq_ack":2}}`, `{"op":3,"d":12}`, `{"op":5,"d":{"speaking":true}}`,
		`{"op":7,"d":{"server_id":"1","session_id":"s","token":"t","seq_ack":3}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEnvelope(b)
		if err != nil {
			return
		}
		switch e.Op {
		case VoiceIdentify:
			if v, err := DecodeVoiceIdentify(e.D); err == nil && v.Token == "" {
				t.Fatal("identify without token")
			}
		case VoiceSelectProtocol:
			if v, err := DecodeSelectProtocol(e.D); err == nil && v.Protocol == "" {
				t.Fatal("select without protocol")
			}
		case VoiceHeartbeat:
			DecodeVoiceHeartbeat(e.D)
		case VoiceSpeaking:
			if v, err := DecodeSpeaking(e.D); err == nil && (v.Speaking < 0 || v.Speaking > 7) {
				t.Fatal("bad speaking flags")
			}
		case VoiceResume:
			DecodeVoiceResume(e.D)
		}
	})
}
