package guild

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/store"
)

// bigGuild creates a guild of n members (users 1000…) owned by user 1.
func bigGuild(tb testing.TB, r *Router, st store.Store, n int) ID {
	tb.Helper()
	ctx := context.Background()
	st.PutUser(ctx, store.User{ID: 1, Username: "owner"})
	g, err := r.CreateGuild(ctx, "big", 1)
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < n; i++ {
		u := store.User{ID: store.ID(1000 + i), Username: fmt.Sprintf("user%05d", i)}
		st.PutUser(ctx, u)
		st.PutMember(ctx, store.Member{GuildID: g.ID, UserID: u.ID, JoinedAt: time.Now()})
	}
	return g.ID
}

// Presences go to the sessions that asked for them (GUILD_PRESENCES), and
// a session registering again with other intents is heard, or not, as it
// asks now.
func TestPresenceGoesToWatchersOnly(t *testing.T) {
	r, rec, st := newTestRouter(t)
	ctx := context.Background()
	g := bigGuild(t, r, st, 4)
	watch := Sub{Node: "n", Session: "watcher", User: 1000, Status: "online", Intents: protocol.IntentGuildPresences}
	quiet := Sub{Node: "n", Session: "quiet", User: 1001, Status: "online", Intents: protocol.IntentGuildMessages}
	for _, s := range []Sub{watch, quiet} {
		if err := r.Subscribe(ctx, g, s); err != nil {
			t.Fatal(err)
		}
	}
	online := func(session string, user ID) {
		t.Helper()
		if err := r.Subscribe(ctx, g, Sub{Node: "n", Session: session, User: user, Status: "online", Intents: protocol.IntentGuildMessages}); err != nil {
			t.Fatal(err)
		}
	}
	count := func(session string) int {
		r.call(ctx, g, func(*actor) error { return nil }) // what came before has been delivered
		return len(rec.events(session, protocol.EventPresenceUpdate))
	}
	// The watcher has heard itself and quiet come online.
	if w, q := count("watcher"), count("quiet"); w != 2 || q != 0 {
		t.Fatalf("watcher got %d presences, quiet %d; want 2 and 0", w, q)
	}
	online("s2", 1002)
	if w, q := count("watcher"), count("quiet"); w != 3 || q != 0 {
		t.Fatalf("after one member came online: watcher got %d presences, quiet %d; want 3 and 0", w, q)
	}
	// The two swap: watcher stops asking for presences, quiet starts.
	watch.Intents, quiet.Intents = quiet.Intents, watch.Intents
	for _, s := range []Sub{watch, quiet} {
		if err := r.Subscribe(ctx, g, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Unsubscribe(ctx, g, "s2"); err != nil { // 1002 goes offline
		t.Fatal(err)
	}
	if w, q := count("watcher"), count("quiet"); w != 3 || q != 1 {
		t.Fatalf("after the swap and one member going offline: watcher got %d presences, quiet %d; want 3 and 1", w, q)
	}
	if err := r.Unsubscribe(ctx, g, "quiet"); err != nil {
		t.Fatal(err)
	}
	online("s3", 1003)
	if q := count("quiet"); q != 1 {
		t.Fatalf("an unsubscribed session got presences: %d", q)
	}
}

// BenchmarkPresenceInBigGuild is one member coming online and going
// offline again in a guild of 20,000 online sessions that do not ask for
// presences (as in an identify storm of bots or the load tester): two
// presence updates, each for nobody.
func BenchmarkPresenceInBigGuild(b *testing.B) {
	const n = 20000
	r, _, st := newTestRouter(b)
	ctx := context.Background()
	g := bigGuild(b, r, st, n+1)
	for i := 0; i < n; i++ {
		s := Sub{Node: "n", Session: fmt.Sprint("s", i), User: ID(1000 + i), Status: "online", Intents: protocol.IntentGuildMessages}
		if err := r.Subscribe(ctx, g, s); err != nil {
			b.Fatal(err)
		}
	}
	late := Sub{Node: "n", Session: "late", User: ID(1000 + n), Status: "online", Intents: protocol.IntentGuildMessages}
	// A benchmark with sub-benchmarks runs once: the guild is built once.
	b.Run(fmt.Sprint("members=", n), func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if err := r.Subscribe(ctx, g, late); err != nil {
				b.Fatal(err)
			}
			if err := r.Unsubscribe(ctx, g, late.Session); err != nil {
				b.Fatal(err)
			}
		}
	})
}
