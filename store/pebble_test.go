package store_test

import (
	"context"
	"testing"

	"github.com/chorus-voice/chorus/store"
	"github.com/chorus-voice/chorus/store/storetest"
)

func TestPebbleContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.OpenPebble(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestPebbleReopenKeepsData(t *testing.T) {
	dir := t.TempDir()
	s, err := store.OpenPebble(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutUser(context.Background(), store.User{ID: 1, Username: "x"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = store.OpenPebble(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if u, err := s.UserByName(context.Background(), "x"); err != nil || u.ID != 1 {
		t.Fatalf("after reopen: %+v %v", u, err)
	}
}
