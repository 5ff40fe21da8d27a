package protocol

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestDecodeEnvelope(t *testing.T) {
	tests := []struct {
		in   string
		op   int
		err  error
		data string
	}{
		{`{"op":1,"d":null}`, 1, nil, "null"},
		{`{"op":2,"d":{"token":"x"}}`, 2, nil, `{"token":"x"}`},
		{`{"d":1}`, 0, ErrPayload, ""},
		{`{"op":"1"}`, 0, ErrPayload, ""},
		{`{"op":1`, 0, ErrSyntax, ""},
		{`not json`, 0, ErrSyntax, ""},
		{`[]`, 0, ErrPayload, ""},
		{``, 0, ErrSyntax, ""},
	}
	for _, tt := range tests {
		e, err := DecodeEnvelope([]byte(tt.in))
		if !errors.Is(err, tt.err) {
			t.Errorf("%q: err %v want %v", tt.in, err, tt.err)
			continue
		}
		if err == nil && (e.Op != tt.op || string(e.D) != tt.data) {
			t.Errorf("%q: got %d %s", tt.in, e.Op, e.D)
		}
	}
}

func TestDecodeHeartbeat(t *testing.T) {
	for in, want := range map[string]int64{"null": -1, "": -1, "0": 0, "251": 251} {
		if got, err := DecodeHeartbeat([]byte(in)); err != nil || got != want {
			t.Errorf("%q: %d %v", in, got, err)
		}
	}
	if _, err := DecodeHeartbeat([]byte(`"x"`)); err == nil {
		t.Error("string heartbeat accepted")
	}
}

func TestDecodeIdentify(t *testing.T) {
	ok := `{"token":"Bot abc","intents":513,"properties":{"$os":"linux"},"shard":[0,1],"large_threshold":250,
		"presence":{"status":"idle","since":0,"afk":false,"game":{"name":"chess","type":0}}}`
	id, err := DecodeIdentify([]byte(ok))
	if err != nil || *id.Intents != 513 || id.Shard[1] != 1 || *id.LargeThreshold != 250 {
		t.Fatalf("%+v %v", id, err)
	}
	if id.Presence.Status != "idle" || len(id.Presence.Activities) != 1 || id.Presence.Activities[0].Name != "chess" {
		t.Fatalf("legacy game not folded: %+v", id.Presence)
	}
	for _, bad := range []string{
		`null`, `{}`, `{"token":""}`, `{"token":"x","large_threshold":10}`, `{"token":"x","large_threshold":251}`,
		`{"token":"x","presence":{"status":"sleeping"}}`, `{"token":5}`,
	} {
		if _, err := DecodeIdentify([]byte(bad)); !errors.Is(err, ErrPayload) {
			t.Errorf("%s: err %v", bad, err)
		}
	}
}

func TestDecodeResume(t *testing.T) {
	r, err := DecodeResume([]byte(`{"token":"t","session_id":"s","seq":0}`))
	if err != nil || *r.Seq != 0 {
		t.Fatalf("%+v %v", r, err)
	}
	for _, bad := range []string{`{"token":"t","session_id":"s"}`, `{"token":"t","seq":1}`, `{"token":"t","session_id":"s","seq":-1}`} {
		if _, err := DecodeResume([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestDecodeRequestMembers(t *testing.T) {
	r, err := DecodeRequestMembers([]byte(`{"guild_id":123,"user_ids":[1,"2"],"nonce":"n"}`))
	if err != nil || r.GuildID != 123 || len(r.IDs) != 2 || r.IDs[1] != 2 || r.Nonce != "n" {
		t.Fatalf("%+v %v", r, err)
	}
	r, err = DecodeRequestMembers([]byte(`{"guild_id":"5","user_ids":"7"}`))
	if err != nil || len(r.IDs) != 1 || r.IDs[0] != 7 {
		t.Fatalf("single id: %+v %v", r, err)
	}
	r, err = DecodeRequestMembers([]byte(`{"guild_id":"5","query":"","limit":0,"nonce":"0123456789012345678901234567890123"}`))
	if err != nil || r.Query == nil || r.Nonce != "" {
		t.Fatalf("long nonce not dropped: %+v %v", r, err)
	}
	for _, bad := range []string{`{"guild_id":"5"}`, `{"query":""}`, `{"guild_id":"5","query":"","user_ids":["1"]}`} {
		if _, err := DecodeRequestMembers([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestAppendDispatchAllocationFree(t *testing.T) {
	buf := make([]byte, 0, 512)
	data := []byte(`{"content":"hi"}`)
	got := AppendDispatch(buf, "MESSAGE_CREATE", 42, data)
	var env struct {
		T  string          `json:"t"`
		S  int             `json:"s"`
		Op int             `json:"op"`
		D  json.RawMessage `json:"d"`
	}
	if err := json.Unmarshal(got, &env); err != nil || env.T != "MESSAGE_CREATE" || env.S != 42 || string(env.D) != string(data) {
		t.Fatalf("%s %v", got, err)
	}
	if n := testing.AllocsPerRun(100, func() { buf = AppendDispatch(buf[:0], "MESSAGE_CREATE", 42, data) }); n != 0 {
		t.Fatalf("AppendDispatch allocates %v", n)
	}
}

func TestAllowedIntents(t *testing.T) {
	if AllowedIntents(0)&PrivilegedIntents != 0 {
		t.Fatal("no flags grant privileged intents")
	}
	if AllowedIntents(AppFlagsAllPrivileged) != PrivilegedIntents {
		t.Fatal("all flags must grant all privileged intents")
	}
	if AllowedIntents(AppFlagGatewayGuildMembersLimited) != 1<<1 {
		t.Fatal("limited flag")
	}
}

func FuzzDecodeClientPayload(f *testing.F) {
	for _, s := range []string{
		`{"op":1,"d":null}`, `{"op":2,"d":{"token":"x","intents":513}}`, `{"op":6,"d":{"token":"t","session_id":"s","seq":3}}`,
		`{"op":8,"d":{"guild_id":"1","query":"","limit":0}}`, `{"op":3,"d":{"status":"online","activities":[]}}`,
		`{"op":4,"d":{"guild_id":1,"channel_id":null}}`, `{`, `{"op":1e99}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEnvelope(b)
		if err != nil {
			return
		}
		switch e.Op {
		case OpHeartbeat:
			DecodeHeartbeat(e.D)
		case OpIdentify:
			if id, err := DecodeIdentify(e.D); err == nil && id.Token == "" {
				t.Fatal("identify without token accepted")
			}
		case OpResume:
			if r, err := DecodeResume(e.D); err == nil && (r.Seq == nil || *r.Seq < 0) {
				t.Fatal("bad resume accepted")
			}
		case OpRequestMembers:
			if r, err := DecodeRequestMembers(e.D); err == nil && len(r.Nonce) > 32 {
				t.Fatal("long nonce kept")
			}
		case OpPresenceUpdate:
			if p, err := DecodePresence(e.D); err == nil && !ValidStatus(p.Status) {
				t.Fatal("bad status accepted")
			}
		case OpVoiceState:
			DecodeVoiceStateUpdate(e.D)
		}
	})
}
