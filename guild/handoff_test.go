package guild

import (
	"context"
	"testing"

	"github.com/chorus-voice/chorus/protocol"
)

// A session registered again from another node (Move, one Gen later)
// gets its events there from then on; its old node hears a moved marker
// after the last event it was sent; a late registration from the old node
// (an older Gen) changes nothing.
func TestMoveSendsMarkerAndIgnoresOlderRegistrations(t *testing.T) {
	r, rec, _, _, ch := groupFixture(t) // session "s" registered from node "n"
	ctx := context.Background()
	gid, err := r.GuildOfChannel(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	send := func(content string) {
		t.Helper()
		if _, err := r.CreateMessage(ctx, CreateMessage{ChannelID: ch, AuthorID: 1, Content: content}); err != nil {
			t.Fatal(err)
		}
	}
	sub := Sub{Node: "n", Session: "s", User: 1,
		Intents: protocol.IntentGuildMessages | protocol.IntentMessageContent}
	send("before")
	moved := sub
	moved.Node, moved.Gen = "m", 1
	from, err := r.Move(ctx, gid, moved)
	if err != nil || from != "n" {
		t.Fatalf("Move: from %q, %v", from, err)
	}
	send("after")
	late := sub // the old node re-registering, as after a ring change
	if err := r.Subscribe(ctx, gid, late); err != nil {
		t.Fatal(err)
	}
	send("after the late registration")

	rec.mu.Lock()
	defer rec.mu.Unlock()
	var got []string
	for i, ev := range rec.got["s"] {
		got = append(got, ev.Name+"@"+rec.via["s"][i])
	}
	want := []string{"MESSAGE_CREATE@n", movedEvent + "@", "MESSAGE_CREATE@m", "MESSAGE_CREATE@m"}
	if len(got) != len(want) {
		t.Fatalf("stream %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("stream %v, want %v", got, want)
		}
	}
}
