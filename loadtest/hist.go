package loadtest

import (
	"math"
	"math/bits"
	"sync"
	"time"
)

// Histogram records durations in log-linear buckets: 64 sub-buckets per
// power of two, so any quantile is within 1/64 (1.6 %) of the true value,
// from 1 µs to about 4 hours, in a fixed 2 KiB-per-octave table. Safe for
// concurrent use.
type Histogram struct {
	mu     sync.Mutex
	counts [40 * subBuckets]uint64
	n      uint64
	sum    time.Duration
	max    time.Duration
	min    time.Duration
}

const subBuckets = 64

func bucketOf(us uint64) int {
	if us < subBuckets {
		return int(us)
	}
	exp := bits.Len64(us) - 7 // us >= 64: top 6 bits after the leading one select the sub-bucket
	return (exp+1)*subBuckets + int(us>>uint(exp)) - subBuckets
}

func bucketValue(b int) time.Duration {
	if b < subBuckets {
		return time.Duration(b) * time.Microsecond
	}
	exp := b/subBuckets - 1
	sub := b%subBuckets + subBuckets
	// The middle of the bucket.
	lo := uint64(sub) << uint(exp)
	return time.Duration(lo+(uint64(1)<<uint(exp))/2) * time.Microsecond
}

// Record adds one observation.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	us := uint64(d / time.Microsecond)
	b := bucketOf(us)
	h.mu.Lock()
	if b >= len(h.counts) {
		b = len(h.counts) - 1
	}
	h.counts[b]++
	h.n++
	h.sum += d
	if d > h.max {
		h.max = d
	}
	if h.n == 1 || d < h.min {
		h.min = d
	}
	h.mu.Unlock()
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Quantile returns the q-quantile (0..1); the max for q >= 1.
func (h *Histogram) Quantile(q float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return h.max
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			v := bucketValue(b)
			if v > h.max {
				v = h.max
			}
			if v < h.min {
				v = h.min
			}
			return v
		}
	}
	return h.max
}

// Summary is a histogram's percentiles in milliseconds, for reports.
type Summary struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Summarize returns the percentiles.
func (h *Histogram) Summarize() Summary {
	s := Summary{Count: h.Count(), P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)), P99: ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)), Max: ms(h.Quantile(1))}
	h.mu.Lock()
	if h.n > 0 {
		s.Mean = ms(h.sum / time.Duration(h.n))
	}
	h.mu.Unlock()
	return s
}

// Timed is a Histogram that also keeps one histogram per second since
// Start, for latency-over-time charts.
type Timed struct {
	Histogram
	Start time.Time
	mu    sync.Mutex
	secs  []*Histogram
}

// NewTimed starts a timed histogram now.
func NewTimed() *Timed { return &Timed{Start: time.Now()} }

// RecordAt adds an observation made at time at.
func (t *Timed) RecordAt(at time.Time, d time.Duration) {
	t.Record(d)
	s := int(at.Sub(t.Start) / time.Second)
	if s < 0 {
		s = 0
	}
	t.mu.Lock()
	for len(t.secs) <= s {
		t.secs = append(t.secs, &Histogram{})
	}
	h := t.secs[s]
	t.mu.Unlock()
	h.Record(d)
}

// TimePoint is one second of a timeline.
type TimePoint struct {
	Second int     `json:"second"`
	Count  uint64  `json:"count"`
	P50    float64 `json:"p50_ms"`
	P99    float64 `json:"p99_ms"`
	Max    float64 `json:"max_ms"`
}

// Timeline returns the per-second points.
func (t *Timed) Timeline() []TimePoint {
	t.mu.Lock()
	secs := append([]*Histogram(nil), t.secs...)
	t.mu.Unlock()
	out := make([]TimePoint, 0, len(secs))
	for i, h := range secs {
		out = append(out, TimePoint{Second: i, Count: h.Count(), P50: ms(h.Quantile(0.5)), P99: ms(h.Quantile(0.99)), Max: ms(h.Quantile(1))})
	}
	return out
}
