package signaling

import (
	"testing"

	"github.com/chorus-voice/chorus/guild"
)

func TestBatchGaps(t *testing.T) {
	var g batchGaps
	for i, c := range []struct {
		from string
		n    uint64
		want gap
	}{
		{"a", 7, gap{1, 7, true}}, // the first from a sender: the buddy tells what was missed
		{"a", 8, gap{}},           // the next one
		{"b", 1, gap{}},           // another sender, counted apart, from its start
		{"a", 11, gap{9, 11, false}},
		{"a", 12, gap{}},
		{"b", 2, gap{}},
		{"a", 1, gap{}}, // a restarted, its first batch came
		{"a", 2, gap{}},
		{"a", 1, gap{}}, // restarted again
		{"b", 5, gap{3, 5, false}},
		{"b", 3, gap{1, 3, false}}, // b restarted and its batches 1 and 2 never came
		{"b", 0, gap{}},            // no batch is numbered 0: never a gap
		{"c", 0, gap{}},
		{"d", 1, gap{}},
	} {
		if got := g.see(guild.BatchRef{From: c.from, N: c.n}); got != c.want {
			t.Errorf("%d: batch %s/%d: gap %+v, want %+v", i, c.from, c.n, got, c.want)
		}
	}
}
