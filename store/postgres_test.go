package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
	"github.com/chorus-voice/chorus/store/pgtest"
	"github.com/chorus-voice/chorus/store/storetest"
)

// The PostgreSQL backend passes the same contract as the embedded one,
// against a real server.
func TestPostgresContract(t *testing.T) {
	srv := pgtest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.OpenPostgres(context.Background(), srv.NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// What PostgreSQL adds beyond the contract: data survives reopening, the
// schema is applied idempotently, names are unique, and bad addresses are
// clear errors.
func TestPostgresBackend(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	dsn := srv.NewDatabase(t)
	s, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.PutUser(ctx, store.User{ID: 1, Username: "ann"}))
	if err := s.PutUser(ctx, store.User{ID: 2, Username: "ann"}); !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("duplicate name: %v", err)
	}
	id := snowflake.NewGenerator(1).Next()
	must(s.CreateMessages(ctx, store.Message{ID: id, ChannelID: 7, AuthorID: 1, Content: "kept", Nonce: []byte(`42`)}))
	s.Close()

	s, err = store.OpenPostgres(ctx, dsn) // the schema again, over existing tables
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if m, err := s.GetMessage(ctx, 7, id); err != nil || m.Content != "kept" || string(m.Nonce) != "42" {
		t.Fatalf("after reopen: %+v %v", m, err)
	}
	if got, err := s.MessageByNonce(ctx, 7, 1, []byte(`42`), time.Now().Add(-time.Minute)); err != nil || got != id {
		t.Fatalf("nonce after reopen: %v %v", got, err)
	}
	if _, err := store.OpenPostgres(ctx, "postgres://chorus@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"); err == nil {
		t.Fatal("unreachable server accepted")
	}
	if _, err := store.OpenPostgres(ctx, "::not a dsn::"); err == nil {
		t.Fatal("malformed address accepted")
	}
}
