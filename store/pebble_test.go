package store_test

import (
	"context"
	"sync/atomic"
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

// FuzzPagination compares ListMessages with a reference model of
// gateway.md §18.7 over an arbitrary set of message ids.
func FuzzPagination(f *testing.F) {
	f.Add([]byte{1, 5, 9, 200, 3}, uint8(0), uint8(9), uint8(3))
	f.Add([]byte{10, 20, 30}, uint8(1), uint8(20), uint8(2))
	f.Add([]byte{10, 20, 30}, uint8(2), uint8(25), uint8(100))
	f.Add([]byte{7}, uint8(3), uint8(7), uint8(1))
	// One store per fuzzing process, and a channel and id range of its own
	// per input: opening a store (and syncing each message) per input made
	// this target the slowest of the suite by far.
	s, err := store.OpenPebble(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	var inputs atomic.Uint64
	f.Fuzz(func(t *testing.T, raw []byte, mode, anchor, limit uint8) {
		if limit == 0 || limit > 100 || len(raw) > 200 {
			return
		}
		n := inputs.Add(1)
		channel, off := store.ID(n), store.ID(n<<10)
		ctx := context.Background()
		set := map[store.ID]bool{}
		var ms []store.Message
		for _, b := range raw {
			id := off + store.ID(b) + 1
			if !set[id] {
				set[id] = true
				ms = append(ms, store.Message{ID: id, ChannelID: channel})
			}
		}
		if err := s.CreateMessages(ctx, ms...); err != nil {
			t.Fatal(err)
		}
		var all []store.ID // newest first
		for id := off + 300; id > off; id-- {
			if set[id] {
				all = append(all, id)
			}
		}
		a := off + store.ID(anchor) + 1
		p := store.Page{Limit: int(limit)}
		var want []store.ID
		switch mode % 4 {
		case 0:
			want = all[:min(len(all), int(limit))]
		case 1:
			p.Before = a
			for _, id := range all {
				if id < a && len(want) < int(limit) {
					want = append(want, id)
				}
			}
		case 2:
			p.After = a
			var newer []store.ID
			for i := len(all) - 1; i >= 0; i-- {
				if all[i] > a && len(newer) < int(limit) {
					newer = append(newer, all[i])
				}
			}
			for i := len(newer) - 1; i >= 0; i-- {
				want = append(want, newer[i])
			}
		case 3:
			p.Around = a
			var newer, older []store.ID
			for i := len(all) - 1; i >= 0; i-- {
				if all[i] > a && len(newer) < int(limit)/2 {
					newer = append(newer, all[i])
				}
			}
			for _, id := range all {
				if id <= a && len(older)+len(newer) < int(limit) {
					older = append(older, id)
				}
			}
			for i := len(newer) - 1; i >= 0; i-- {
				want = append(want, newer[i])
			}
			want = append(want, older...)
		}
		got, err := s.ListMessages(ctx, channel, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%+v: got %d messages, want %v", p, len(got), want)
		}
		for i := range got {
			if got[i].ID != want[i] {
				t.Fatalf("%+v: message %d is %d, want %v", p, i, got[i].ID, want)
			}
		}
	})
}
