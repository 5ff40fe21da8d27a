package loadtest

import (
	"encoding/json"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestHistogramQuantilesWithinOnePointSixPercent(t *testing.T) {
	var h Histogram
	r := rand.New(rand.NewPCG(1, 2))
	var vals []time.Duration
	for i := 0; i < 100000; i++ {
		// Log-normal-ish latencies from 50 µs to seconds.
		d := time.Duration(float64(50*time.Microsecond) * (1 + r.ExpFloat64()*r.ExpFloat64()*200))
		vals = append(vals, d)
		h.Record(d)
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := h.Quantile(q)
		if diff := float64(got-exact) / float64(exact); diff > 0.02 || diff < -0.02 {
			t.Errorf("q%.3f: %v vs exact %v (%.2f%%)", q, got, exact, diff*100)
		}
	}
	if h.Quantile(1) != vals[len(vals)-1] || h.Count() != 100000 {
		t.Fatal("max or count wrong")
	}
	var empty Histogram
	if empty.Quantile(0.99) != 0 || empty.Summarize().Count != 0 {
		t.Fatal("empty histogram")
	}
}

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for us := uint64(0); us < 1<<30; us = us*9/8 + 1 {
		b := bucketOf(us)
		if b < prev {
			t.Fatalf("bucket of %d µs went down to %d", us, b)
		}
		prev = b
		v := uint64(bucketValue(b) / time.Microsecond)
		if us >= 64 && (v < us*63/64 || v > us*65/64) {
			t.Fatalf("%d µs lands in a bucket valued %d", us, v)
		}
	}
}

// Histograms from several workers, shipped as JSON and merged, give the
// quantiles of all their observations together.
func TestHistogramMergeThroughJSON(t *testing.T) {
	var whole Histogram
	parts := make([]*Timed, 3)
	start := time.Now()
	r := rand.New(rand.NewPCG(3, 4))
	for i := range parts {
		parts[i] = &Timed{Start: start.Add(time.Duration(i) * time.Second)}
		for j := 0; j < 5000; j++ {
			d := time.Duration(r.IntN(int(time.Second)))
			parts[i].RecordAt(parts[i].Start.Add(time.Duration(j%3)*time.Second), d)
			whole.Record(d)
		}
	}
	merged := &Timed{Start: start}
	for _, p := range parts {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		var back Timed
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		merged.Merge(&back)
	}
	if merged.Count() != 15000 || merged.Summarize() != whole.Summarize() {
		t.Fatalf("merged %+v, want %+v", merged.Summarize(), whole.Summarize())
	}
	// Worker i started i seconds late: its seconds land i seconds on.
	tl := merged.Timeline()
	if len(tl) != 5 || tl[0].Count == 0 || tl[4].Count == 0 {
		t.Fatalf("timeline %+v", tl)
	}
	var bad Histogram
	for _, in := range []string{`{"n":1,"bins":[[999999,1]]}`, `{"n":2,"bins":[[1,1]]}`, `[`} {
		if err := json.Unmarshal([]byte(in), &bad); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
}
