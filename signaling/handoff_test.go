package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/store"
)

func handoffStep(t *testing.T, h *Hub, req handoffRequest) ([]byte, error) {
	t.Helper()
	b, _ := json.Marshal(req)
	return h.ServeGateway(context.Background(), b)
}

// The holder's side of a handoff: find answers only for the right user and
// marks the session leaving; release waits for the moved markers, then
// hands the log over with its numbers and forgets the session.
func TestHubHandsASessionOver(t *testing.T) {
	lim := logLimit{events: 64, bytes: 1 << 20}
	h := newHub("old", lim, &Metrics{})
	s := newSession("abc.old", store.User{ID: 7})
	s.guilds = []guild.ID{100, 200}
	h.add(s)
	for i := range 3 {
		s.push(&guild.Event{Name: "E", Data: []byte(fmt.Sprint(i))}, lim)
	}

	for _, bad := range [][]byte{[]byte("{"), []byte(`{"op":"steal"}`)} {
		if _, err := h.ServeGateway(context.Background(), bad); err == nil {
			t.Fatalf("%s: no error", bad)
		}
	}
	var f foundSession
	b, _ := handoffStep(t, h, handoffRequest{Op: "find", Session: "abc.old", User: 8, To: "new"})
	if json.Unmarshal(b, &f); f.Found {
		t.Fatal("found for another user")
	}
	if _, err := handoffStep(t, h, handoffRequest{Op: "release", Session: "abc.old", User: 7, To: "new"}); err == nil {
		t.Fatal("released without find")
	}
	b, _ = handoffStep(t, h, handoffRequest{Op: "find", Session: "abc.old", User: 7, To: "new"})
	if json.Unmarshal(b, &f); !f.Found || len(f.Guilds) != 2 {
		t.Fatalf("find: %+v", f)
	}
	b, _ = handoffStep(t, h, handoffRequest{Op: "find", Session: "abc.old", User: 7, To: "third"})
	if json.Unmarshal(b, &f); f.Found {
		t.Fatal("a second node found a session already leaving")
	}

	// An event after the find and before the marker still goes in the log.
	done := make(chan releasedLog)
	go func() {
		b, err := handoffStep(t, h, handoffRequest{Op: "release", Session: "abc.old", User: 7, To: "new", Expect: []guild.ID{100, 200}})
		var rel releasedLog
		if err == nil {
			json.Unmarshal(b, &rel)
		}
		done <- rel
	}()
	h.Moved(100, "abc.old")
	s.push(&guild.Event{Name: "E", Data: []byte("3")}, lim)
	select {
	case <-done:
		t.Fatal("released before every marker arrived")
	case <-time.After(50 * time.Millisecond):
	}
	h.Moved(200, "abc.old")
	rel := <-done
	if rel.Base != 1 || len(rel.Events) != 4 || string(rel.Events[3].Data) != "3" {
		t.Fatalf("released %+v", rel)
	}
	if h.get("abc.old") != nil {
		t.Fatal("the old node still holds the session")
	}
}

// adopt puts the handed-over log in front of what the new node gathered:
// the old numbers stay, the gathered events follow them.
func TestEventLogAdopt(t *testing.T) {
	lim := logLimit{events: 64, bytes: 1 << 20}
	s := newSession("x", store.User{ID: 1})
	s.push(&guild.Event{Name: "NEW", Data: []byte("n")}, lim)
	old := []*guild.Event{{Name: "OLD", Data: []byte("a")}, {Name: "OLD", Data: []byte("b")}}
	if !s.adopt(41, old, lim) {
		t.Fatal("adopt refused")
	}
	base, evs := s.snapshot()
	if base != 41 || len(evs) != 3 || string(evs[0].Data) != "a" || evs[2].Name != "NEW" || s.lastSeq() != 43 {
		t.Fatalf("base %d, %d events, last %d", base, len(evs), s.lastSeq())
	}
	if s.adopt(1, make([]*guild.Event, 64), lim) {
		t.Fatal("adopted a log past the limit")
	}
}

func TestRetryOverloaded(t *testing.T) {
	other := errors.New("other")
	for _, c := range []struct {
		name      string
		fails     int   // ErrOverloaded this many times, then last
		last      error // what follows
		wantCalls int
		want      error
	}{
		{"at once", 0, nil, 1, nil},
		{"after two", 2, nil, 3, nil},
		{"another error is not retried", 0, other, 1, other},
		{"gives up", 10, nil, overloadedTries, guild.ErrOverloaded},
	} {
		calls := 0
		err := retryOverloaded(context.Background(), func() error {
			calls++
			if calls <= c.fails {
				return fmt.Errorf("wrapped: %w", guild.ErrOverloaded)
			}
			return c.last
		})
		if calls != c.wantCalls || !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("%s: %d calls, %v; want %d, %v", c.name, calls, err, c.wantCalls, c.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	err := retryOverloaded(ctx, func() error { calls++; return guild.ErrOverloaded })
	if calls != 1 || !errors.Is(err, guild.ErrOverloaded) {
		t.Errorf("ended context: %d calls, %v", calls, err)
	}
}
