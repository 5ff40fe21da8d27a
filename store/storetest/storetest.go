// Package storetest is the contract every store backend must pass.
package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
)

// Run runs the contract suite against stores made by open; each subtest gets
// a fresh, empty store.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("Users", func(t *testing.T) { testUsers(t, open(t)) })
	t.Run("GuildGraph", func(t *testing.T) { testGuildGraph(t, open(t)) })
	t.Run("Messages", func(t *testing.T) { testMessages(t, open(t)) })
	t.Run("Pagination", func(t *testing.T) { testPagination(t, open(t)) })
	t.Run("Nonce", func(t *testing.T) { testNonce(t, open(t)) })
	t.Run("Meta", func(t *testing.T) { testMeta(t, open(t)) })
	t.Run("Batch", func(t *testing.T) { testBatch(t, open(t)) })
	t.Run("Fence", func(t *testing.T) { testFence(t, open(t)) })
}

var ctx = context.Background()

func testUsers(t *testing.T, s store.Store) {
	if _, err := s.GetUser(ctx, 1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetUser missing = %v", err)
	}
	u := store.User{ID: 10, Username: "alice", Bot: true, AppFlags: 1 << 14}
	must(t, s.PutUser(ctx, u))
	got, err := s.GetUser(ctx, 10)
	if err != nil || got.Username != "alice" || !got.Bot || got.AppFlags != 1<<14 {
		t.Fatalf("GetUser = %+v %v", got, err)
	}
	u.Username = "alice2"
	must(t, s.PutUser(ctx, u))
	if _, err := s.UserByName(ctx, "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old name still resolves: %v", err)
	}
	if got, err := s.UserByName(ctx, "alice2"); err != nil || got.ID != 10 {
		t.Fatalf("UserByName = %+v %v", got, err)
	}
	must(t, s.PutUser(ctx, store.User{ID: 11, Username: "bob"}))
	all, err := s.ListUsers(ctx)
	if err != nil || len(all) != 2 || all[0].ID != 10 || all[1].ID != 11 {
		t.Fatalf("ListUsers = %+v %v", all, err)
	}
}

func testGuildGraph(t *testing.T, s store.Store) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	must(t, s.PutGuild(ctx, store.Guild{ID: 100, Name: "g", OwnerID: 1, CreatedAt: now}))
	must(t, s.PutGuild(ctx, store.Guild{ID: 200, Name: "h", OwnerID: 1, CreatedAt: now}))
	g, err := s.GetGuild(ctx, 100)
	if err != nil || g.Name != "g" || !g.CreatedAt.Equal(now) {
		t.Fatalf("GetGuild = %+v %v", g, err)
	}
	gs, _ := s.ListGuilds(ctx)
	if len(gs) != 2 {
		t.Fatalf("ListGuilds = %+v", gs)
	}
	ow := []store.Overwrite{{ID: 100, Type: 0, Allow: 0, Deny: 1 << 11}}
	must(t, s.PutChannel(ctx, store.Channel{ID: 101, GuildID: 100, Name: "general", Overwrites: ow}))
	must(t, s.PutChannel(ctx, store.Channel{ID: 102, GuildID: 100, Type: 2, Name: "voice", UserLimit: 5}))
	must(t, s.PutChannel(ctx, store.Channel{ID: 201, GuildID: 200, Name: "other"}))
	cs, err := s.ListChannels(ctx, 100)
	if err != nil || len(cs) != 2 || cs[0].ID != 101 || cs[1].UserLimit != 5 || cs[0].Overwrites[0].Deny != 1<<11 {
		t.Fatalf("ListChannels = %+v %v", cs, err)
	}
	must(t, s.DeleteChannel(ctx, 101))
	if cs, _ := s.ListChannels(ctx, 100); len(cs) != 1 {
		t.Fatalf("after delete: %+v", cs)
	}
	if err := s.DeleteChannel(ctx, 101); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice = %v", err)
	}

	must(t, s.PutRole(ctx, store.Role{ID: 100, GuildID: 100, Name: "@everyone", Permissions: 1<<10 | 1<<11}))
	must(t, s.PutRole(ctx, store.Role{ID: 103, GuildID: 100, Name: "mod", Permissions: 1 << 63}))
	rs, _ := s.ListRoles(ctx, 100)
	if len(rs) != 2 || rs[1].Permissions != 1<<63 {
		t.Fatalf("ListRoles = %+v", rs)
	}
	must(t, s.DeleteRole(ctx, 100, 103))
	if rs, _ := s.ListRoles(ctx, 100); len(rs) != 1 {
		t.Fatalf("after role delete: %+v", rs)
	}

	must(t, s.PutMember(ctx, store.Member{GuildID: 100, UserID: 1, Roles: []store.ID{103}, JoinedAt: now}))
	must(t, s.PutMember(ctx, store.Member{GuildID: 200, UserID: 1, JoinedAt: now}))
	must(t, s.PutMember(ctx, store.Member{GuildID: 100, UserID: 2, JoinedAt: now, Mute: true}))
	ms, _ := s.ListMembers(ctx, 100)
	if len(ms) != 2 || ms[1].UserID != 2 || !ms[1].Mute {
		t.Fatalf("ListMembers = %+v", ms)
	}
	ids, _ := s.UserGuilds(ctx, 1)
	if len(ids) != 2 || ids[0] != 100 || ids[1] != 200 {
		t.Fatalf("UserGuilds = %v", ids)
	}
	m, err := s.GetMember(ctx, 100, 1)
	if err != nil || len(m.Roles) != 1 || m.Roles[0] != 103 {
		t.Fatalf("GetMember = %+v %v", m, err)
	}
	must(t, s.DeleteMember(ctx, 100, 1))
	if ids, _ := s.UserGuilds(ctx, 1); len(ids) != 1 || ids[0] != 200 {
		t.Fatalf("UserGuilds after leave = %v", ids)
	}
	if _, err := s.GetMember(ctx, 100, 1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetMember after delete = %v", err)
	}
}

func testMessages(t *testing.T, s store.Store) {
	gen := snowflake.NewGenerator(1)
	id := gen.Next()
	m := store.Message{ID: id, ChannelID: 5, GuildID: 4, AuthorID: 3, Content: "hi", Nonce: []byte(`"n1"`)}
	must(t, s.CreateMessages(ctx, m))
	got, err := s.GetMessage(ctx, 5, id)
	if err != nil || got.Content != "hi" || string(got.Nonce) != `"n1"` {
		t.Fatalf("GetMessage = %+v %v", got, err)
	}
	edited := time.Now().UTC()
	got.Content, got.EditedAt = "edited", &edited
	must(t, s.UpdateMessage(ctx, got))
	got, _ = s.GetMessage(ctx, 5, id)
	if got.Content != "edited" || got.EditedAt == nil {
		t.Fatalf("after update: %+v", got)
	}
	if err := s.UpdateMessage(ctx, store.Message{ID: id + 1, ChannelID: 5}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update missing = %v", err)
	}
	must(t, s.DeleteMessage(ctx, 5, id))
	if _, err := s.GetMessage(ctx, 5, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after delete = %v", err)
	}
	if err := s.DeleteMessage(ctx, 5, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice = %v", err)
	}
}

func testPagination(t *testing.T, s store.Store) {
	// Messages 1..30 in channel 7 and noise in channel 8.
	for i := 1; i <= 30; i++ {
		must(t, s.CreateMessages(ctx, store.Message{ID: store.ID(i), ChannelID: 7, AuthorID: 1}))
		must(t, s.CreateMessages(ctx, store.Message{ID: store.ID(i), ChannelID: 8, AuthorID: 1}))
	}
	tests := []struct {
		name string
		page store.Page
		want []store.ID
	}{
		{"newest", store.Page{Limit: 3}, []store.ID{30, 29, 28}},
		{"before", store.Page{Before: 10, Limit: 3}, []store.ID{9, 8, 7}},
		{"before-start", store.Page{Before: 2, Limit: 5}, []store.ID{1}},
		{"after", store.Page{After: 10, Limit: 3}, []store.ID{13, 12, 11}},
		{"after-end", store.Page{After: 29, Limit: 5}, []store.ID{30}},
		{"after-zero", store.Page{After: 0, Limit: 2}, []store.ID{30, 29}},
		{"around", store.Page{Around: 15, Limit: 5}, []store.ID{17, 16, 15, 14, 13}},
		{"around-end", store.Page{Around: 30, Limit: 4}, []store.ID{30, 29, 28, 27}},
		{"all", store.Page{Limit: 100}, nil},
		// Anchors near 2^64 are past the newest message: they never wrap
		// around to the oldest.
		{"after-max", store.Page{After: 1<<64 - 1, Limit: 3}, []store.ID{}},
		{"after-maxid", store.Page{After: store.MaxID, Limit: 3}, []store.ID{}},
		{"before-max", store.Page{Before: 1<<64 - 1, Limit: 2}, []store.ID{30, 29}},
		{"around-max", store.Page{Around: 1<<64 - 1, Limit: 4}, []store.ID{30, 29, 28, 27}},
	}
	for _, tt := range tests {
		got, err := s.ListMessages(ctx, 7, tt.page)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if tt.want == nil {
			if len(got) != 30 {
				t.Fatalf("%s: %d messages", tt.name, len(got))
			}
			continue
		}
		var ids []store.ID
		for _, m := range got {
			ids = append(ids, m.ID)
		}
		if len(ids) != len(tt.want) {
			t.Fatalf("%s: got %v want %v", tt.name, ids, tt.want)
		}
		for i := range ids {
			if ids[i] != tt.want[i] {
				t.Fatalf("%s: got %v want %v", tt.name, ids, tt.want)
			}
		}
	}
	if _, err := s.ListMessages(ctx, 7, store.Page{Limit: 101}); err == nil {
		t.Fatal("limit 101 accepted")
	}
	if _, err := s.ListMessages(ctx, 7, store.Page{Limit: 0}); err == nil {
		t.Fatal("limit 0 accepted")
	}
}

func testNonce(t *testing.T, s store.Store) {
	gen := snowflake.NewGenerator(1)
	id := gen.Next()
	must(t, s.CreateMessages(ctx, store.Message{ID: id, ChannelID: 1, AuthorID: 2, Nonce: []byte(`"abc"`)}))
	got, err := s.MessageByNonce(ctx, 1, 2, []byte(`"abc"`), time.Now().Add(-time.Minute))
	if err != nil || got != id {
		t.Fatalf("MessageByNonce = %d %v", got, err)
	}
	for _, tc := range []struct {
		ch, author store.ID
		nonce      string
		since      time.Time
	}{
		{1, 3, `"abc"`, time.Time{}},                 // other author
		{9, 2, `"abc"`, time.Time{}},                 // other channel
		{1, 2, `"abd"`, time.Time{}},                 // other nonce
		{1, 2, `"abc"`, time.Now().Add(time.Minute)}, // outside the window
	} {
		if _, err := s.MessageByNonce(ctx, tc.ch, tc.author, []byte(tc.nonce), tc.since); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%+v: %v", tc, err)
		}
	}
}

func testMeta(t *testing.T, s store.Store) {
	if _, err := s.GetMeta(ctx, "secret"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing meta = %v", err)
	}
	must(t, s.PutMeta(ctx, "secret", []byte{1, 2, 3}))
	v, err := s.GetMeta(ctx, "secret")
	if err != nil || len(v) != 3 || v[2] != 3 {
		t.Fatalf("GetMeta = %v %v", v, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// testBatch: CreateMessages writes all of a batch or none of it.
func testBatch(t *testing.T, s store.Store) {
	must(t, s.CreateMessages(ctx))
	g := snowflake.NewGenerator(3)
	a, b, c := g.Next(), g.Next(), g.Next()
	must(t, s.CreateMessages(ctx,
		store.Message{ID: a, ChannelID: 1, AuthorID: 9, Content: "a", Nonce: []byte(`"x"`)},
		store.Message{ID: b, ChannelID: 2, AuthorID: 9, Content: "b", Nonce: []byte(`"x"`)},
		store.Message{ID: c, ChannelID: 1, AuthorID: 9, Content: "c"}))
	ms, err := s.ListMessages(ctx, 1, store.Page{Limit: 10})
	if err != nil || len(ms) != 2 || ms[0].ID != c || ms[1].ID != a {
		t.Fatalf("channel 1 after a batch: %+v %v", ms, err)
	}
	for ch, want := range map[store.ID]store.ID{1: a, 2: b} {
		if got, err := s.MessageByNonce(ctx, ch, 9, []byte(`"x"`), time.Now().Add(-time.Minute)); err != nil || got != want {
			t.Fatalf("nonce in channel %d: %d %v", ch, got, err)
		}
	}
	// A record that cannot be encoded fails the whole batch.
	d, e := g.Next(), g.Next()
	if err := s.CreateMessages(ctx, store.Message{ID: d, ChannelID: 3, Content: "d"},
		store.Message{ID: e, ChannelID: 3, Nonce: []byte(`{not json`)}); err == nil {
		t.Fatal("a batch with an unencodable message was accepted")
	}
	if _, err := s.GetMessage(ctx, 3, d); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("half a batch was written: %v", err)
	}
}
