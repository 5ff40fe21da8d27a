package loadtest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/protocol"
)

// A guild the server said was out excuses what the client missed of it
// until the GUILD_CREATE that gave it back, and nothing after.
func TestWasOutUntilTheGuildCameBack(t *testing.T) {
	c := &GatewayClient{}
	t0 := time.Now()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	dispatch := func(name, data string, s int) {
		c.track(Dispatch{T: name, D: json.RawMessage(data), Seen: at(s)})
	}
	if c.WasOut("1", at(0)) {
		t.Fatal("out before any GUILD_DELETE")
	}
	dispatch(protocol.EventGuildDelete, `{"id":"1"}`, 1) // left, not out
	dispatch(protocol.EventGuildDelete, `{"id":"2","unavailable":true}`, 2)
	if c.WasOut("1", at(1)) || !c.WasOut("2", at(3)) || c.GuildsOut.Load() != 1 {
		t.Fatalf("after the deletes: 1 out %v, 2 out %v, %d counted", c.WasOut("1", at(1)), c.WasOut("2", at(3)), c.GuildsOut.Load())
	}
	dispatch(protocol.EventGuildCreate, `{"id":"2","name":"g"}`, 5)
	for _, k := range []struct {
		sent int
		want bool
	}{{0, true}, {4, true}, {5, false}, {9, false}} {
		if got := c.WasOut("2", at(k.sent)); got != k.want {
			t.Errorf("a message sent at %d s: excused %v, want %v", k.sent, got, k.want)
		}
	}
	dispatch(protocol.EventGuildDelete, `{"id":"2","unavailable":true}`, 10) // out again
	if !c.WasOut("2", at(12)) {
		t.Error("a second outage is not seen")
	}
}
