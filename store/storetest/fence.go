package storetest

import (
	"errors"
	"sync"
	"testing"

	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
)

// testFence: claims return increasing epochs per guild; every guild write
// under an older epoch is refused with ErrFenced and changes nothing, under
// the newest it lands, and other guilds are not affected.
func testFence(t *testing.T, s store.Store) {
	const guild, other store.ID = 10, 20
	e1, err := s.Claim(ctx, guild)
	must(t, err)
	e2, err := s.Claim(ctx, guild)
	must(t, err)
	if e2 <= e1 {
		t.Fatalf("second claim %d is not newer than the first %d", e2, e1)
	}
	o1, err := s.Claim(ctx, other)
	must(t, err)

	ids := snowflake.NewGenerator(4)
	old, cur := store.WithFence(ctx, guild, e1), store.WithFence(ctx, guild, e2)
	msg := store.Message{ID: ids.Next(), ChannelID: 11, GuildID: guild, AuthorID: 1, Content: "new owner", Nonce: []byte(`"n"`)}
	must(t, s.CreateMessages(cur, msg))
	must(t, s.PutChannel(cur, store.Channel{ID: 11, GuildID: guild, Name: "general"}))
	must(t, s.PutMember(cur, store.Member{GuildID: guild, UserID: 1}))

	stale := []struct {
		name  string
		write func() error
	}{
		{"PutGuild", func() error { return s.PutGuild(old, store.Guild{ID: guild, Name: "stale"}) }},
		{"PutChannel", func() error { return s.PutChannel(old, store.Channel{ID: 11, GuildID: guild, Name: "stale"}) }},
		{"DeleteChannel", func() error { return s.DeleteChannel(old, 11) }},
		{"PutRole", func() error { return s.PutRole(old, store.Role{ID: guild, GuildID: guild, Name: "stale"}) }},
		{"DeleteRole", func() error { return s.DeleteRole(old, guild, guild) }},
		{"PutMember", func() error { return s.PutMember(old, store.Member{GuildID: guild, UserID: 2}) }},
		{"DeleteMember", func() error { return s.DeleteMember(old, guild, 1) }},
		{"CreateMessages", func() error {
			return s.CreateMessages(old, store.Message{ID: ids.Next(), ChannelID: 11, GuildID: guild, AuthorID: 1, Content: "stale", Nonce: []byte(`"n"`)})
		}},
		{"UpdateMessage", func() error {
			m := msg
			m.Content = "stale"
			return s.UpdateMessage(old, m)
		}},
		{"DeleteMessage", func() error { return s.DeleteMessage(old, 11, msg.ID) }},
	}
	for _, w := range stale {
		if err := w.write(); !errors.Is(err, store.ErrFenced) {
			t.Errorf("%s under an old epoch: %v, want ErrFenced", w.name, err)
		}
	}
	// Nothing of the stale writes landed.
	if _, err := s.GetGuild(ctx, guild); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("stale PutGuild landed: %v", err)
	}
	if c, err := s.GetChannel(ctx, 11); err != nil || c.Name != "general" {
		t.Errorf("channel after stale writes: %+v %v", c, err)
	}
	if ms, _ := s.ListMembers(ctx, guild); len(ms) != 1 || ms[0].UserID != 1 {
		t.Errorf("members after stale writes: %+v", ms)
	}
	ms, err := s.ListMessages(ctx, 11, store.Page{Limit: 10})
	if err != nil || len(ms) != 1 || ms[0].Content != "new owner" {
		t.Errorf("messages after stale writes: %+v %v", ms, err)
	}
	if id, err := s.MessageByNonce(ctx, 11, 1, []byte(`"n"`), msg.ID.Time().Add(-1)); err != nil || id != msg.ID {
		t.Errorf("the nonce moved to a stale message: %d %v", id, err)
	}
	// Other guilds and unfenced writes are unaffected.
	must(t, s.PutMember(store.WithFence(ctx, other, o1), store.Member{GuildID: other, UserID: 1}))
	must(t, s.PutGuild(ctx, store.Guild{ID: guild, Name: "admin"}))

	// A claim racing writes: every write either lands before the claim or
	// is refused; none lands after it.
	e3 := e2
	var wg sync.WaitGroup
	landed := make(chan store.ID, 64)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 16; j++ {
				m := store.Message{ID: ids.Next(), ChannelID: 12, GuildID: guild, AuthorID: 1}
				if err := s.CreateMessages(cur, m); err == nil {
					landed <- m.ID
				} else if !errors.Is(err, store.ErrFenced) {
					t.Error(err)
					return
				}
			}
		}()
	}
	e3, err = s.Claim(ctx, guild)
	must(t, err)
	// What the new owner sees right after its claim is final.
	seen, err := s.ListMessages(ctx, 12, store.Page{Limit: 100})
	must(t, err)
	wg.Wait()
	close(landed)
	n := 0
	for range landed {
		n++
	}
	if n != len(seen) {
		t.Errorf("%d writes under the old epoch were acknowledged, the new owner saw %d after its claim", n, len(seen))
	}
	if e3 <= e2 {
		t.Errorf("third claim %d not newer than %d", e3, e2)
	}
}
