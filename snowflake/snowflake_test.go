package snowflake

import (
	"encoding/json"
	"testing"
	"time"
)

func TestWorkedExample(t *testing.T) {
	// gateway.md §17.
	id := ID(175928847299117063)
	if got := id.Time().Format(time.RFC3339Nano); got != "2016-04-30T11:18:25.796Z" {
		t.Fatalf("time = %s", got)
	}
	if w := (uint64(id) & 0x3E0000) >> 17; w != 1 {
		t.Fatalf("worker = %d", w)
	}
	if inc := uint64(id) & 0xFFF; inc != 7 {
		t.Fatalf("increment = %d", inc)
	}
}

func TestParseJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    ID
		wantErr bool
	}{
		{`"175928847299117063"`, 175928847299117063, false},
		{`175928847299117063`, 175928847299117063, false},
		{`null`, 0, false},
		{`"18446744073709551615"`, 18446744073709551615, false},
		{`"18446744073709551616"`, 0, true},
		{`""`, 0, true},
		{`"-1"`, 0, true},
		{`1.5`, 0, true},
		{`true`, 0, true},
	}
	for _, tt := range tests {
		got, err := ParseJSON([]byte(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseJSON(%s) = %d, %v", tt.in, got, err)
		}
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	type obj struct {
		ID  ID   `json:"id"`
		IDs []ID `json:"ids"`
	}
	b, err := json.Marshal(obj{ID: 42, IDs: []ID{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"id":"42","ids":["1","2"]}` {
		t.Fatalf("got %s", b)
	}
	var o obj
	if err := json.Unmarshal([]byte(`{"id":42,"ids":["1",2]}`), &o); err != nil || o.ID != 42 || o.IDs[1] != 2 {
		t.Fatalf("got %+v %v", o, err)
	}
}

func TestGeneratorMonotonic(t *testing.T) {
	g := NewGenerator(3)
	fixed := time.UnixMilli(Epoch + 1000)
	g.now = func() time.Time { return fixed }
	var last ID
	for i := 0; i < 10000; i++ { // more than 4096 in one millisecond
		id := g.Next()
		if id <= last {
			t.Fatalf("id %d not above %d at %d", id, last, i)
		}
		last = id
	}
	if w := (uint64(last) >> 12) & 0x3FF; w != 3 {
		t.Fatalf("worker bits = %d", w)
	}
}

func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{`"1"`, `1`, `null`, `"18446744073709551615"`, `"x"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := ParseJSON(b)
		if err != nil {
			return
		}
		back, err := ParseJSON(id.AppendJSON(nil))
		if err != nil || back != id {
			t.Fatalf("round trip %q -> %d -> %d, %v", b, id, back, err)
		}
	})
}
