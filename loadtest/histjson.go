package loadtest

import (
	"encoding/json"
	"errors"
	"time"
)

// A run spread over several load-tester processes (the gateway scenario's
// --procs) merges its workers' histograms exactly: workers ship the
// bucket counts, not percentiles, which cannot be combined.

type histJSON struct {
	N    uint64      `json:"n"`
	Sum  int64       `json:"sum_ns"`
	Max  int64       `json:"max_ns"`
	Min  int64       `json:"min_ns"`
	Bins [][2]uint64 `json:"bins"` // [bucket, count] for non-empty buckets
}

// MarshalJSON encodes the bucket counts sparsely.
func (h *Histogram) MarshalJSON() ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	j := histJSON{N: h.n, Sum: int64(h.sum), Max: int64(h.max), Min: int64(h.min), Bins: [][2]uint64{}}
	for b, c := range h.counts {
		if c != 0 {
			j.Bins = append(j.Bins, [2]uint64{uint64(b), c})
		}
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes what MarshalJSON wrote, rejecting buckets out of
// range.
func (h *Histogram) UnmarshalJSON(b []byte) error {
	var j histJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.counts = [len(h.counts)]uint64{}
	var n uint64
	for _, bc := range j.Bins {
		if bc[0] >= uint64(len(h.counts)) {
			return errors.New("loadtest: histogram bucket out of range")
		}
		h.counts[bc[0]] += bc[1]
		n += bc[1]
	}
	if n != j.N {
		return errors.New("loadtest: histogram count does not match its buckets")
	}
	h.n, h.sum, h.max, h.min = j.N, time.Duration(j.Sum), time.Duration(j.Max), time.Duration(j.Min)
	return nil
}

// Merge adds o's observations to h.
func (h *Histogram) Merge(o *Histogram) {
	o.mu.Lock()
	counts, n, sum, mx, mn := o.counts, o.n, o.sum, o.max, o.min
	o.mu.Unlock()
	if n == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for b, c := range counts {
		h.counts[b] += c
	}
	if h.n == 0 || mn < h.min {
		h.min = mn
	}
	if mx > h.max {
		h.max = mx
	}
	h.n += n
	h.sum += sum
}

type timedJSON struct {
	Start time.Time    `json:"start"`
	All   *Histogram   `json:"all"`
	Secs  []*Histogram `json:"secs"`
}

// MarshalJSON encodes the whole histogram and its seconds.
func (t *Timed) MarshalJSON() ([]byte, error) {
	t.mu.Lock()
	secs := append([]*Histogram(nil), t.secs...)
	t.mu.Unlock()
	return json.Marshal(timedJSON{Start: t.Start, All: &t.Histogram, Secs: secs})
}

// UnmarshalJSON decodes what MarshalJSON wrote.
func (t *Timed) UnmarshalJSON(b []byte) error {
	var j timedJSON
	j.All = &t.Histogram
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	t.mu.Lock()
	t.Start, t.secs = j.Start, j.Secs
	for i, s := range t.secs {
		if s == nil {
			t.secs[i] = &Histogram{}
		}
	}
	t.mu.Unlock()
	return nil
}

// Merge adds o's observations to t, second by second on t's clock.
func (t *Timed) Merge(o *Timed) {
	t.Histogram.Merge(&o.Histogram)
	o.mu.Lock()
	secs, start := append([]*Histogram(nil), o.secs...), o.Start
	o.mu.Unlock()
	shift := int(start.Sub(t.Start).Round(time.Second) / time.Second)
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, h := range secs {
		s := max(0, i+shift)
		for len(t.secs) <= s {
			t.secs = append(t.secs, &Histogram{})
		}
		t.secs[s].Merge(h)
	}
}
