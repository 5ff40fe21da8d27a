package signaling

import (
	"sync"
	"time"
)

// limiter is a set of fixed-window counters keyed by string, for identify
// concurrency and REST buckets.
type limiter struct {
	mu      sync.Mutex
	windows map[string]*window
	sweep   time.Time
}

type window struct {
	start time.Time
	count int
	per   time.Duration
}

func newLimiter() *limiter { return &limiter{windows: map[string]*window{}} }

// take counts one request against key and reports what is left in the
// window, when the window resets, and whether the request is allowed.
func (l *limiter) take(key string, limit int, per time.Duration) (remaining int, reset time.Time, ok bool) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.sweep) > time.Minute {
		for k, w := range l.windows {
			if now.Sub(w.start) >= w.per {
				delete(l.windows, k)
			}
		}
		l.sweep = now
	}
	w := l.windows[key]
	if w == nil || now.Sub(w.start) >= per {
		w = &window{start: now, per: per}
		l.windows[key] = w
	}
	reset = w.start.Add(per)
	if w.count >= limit {
		return 0, reset, false
	}
	w.count++
	return limit - w.count, reset, true
}

func (l *limiter) allow(key string, limit int, per time.Duration) bool {
	_, _, ok := l.take(key, limit, per)
	return ok
}

// payloadBucket is a connection's client payload limit (gateway.md §13:
// 120 per 60 s) as a token bucket: a full minute's worth at once, then
// refilled evenly. Only the connection's reader uses it.
type payloadBucket struct {
	perMinute float64
	tokens    float64
	at        time.Time
}

func newPayloadBucket(perMinute int) payloadBucket {
	return payloadBucket{perMinute: float64(perMinute), tokens: float64(perMinute), at: time.Now()}
}

// take spends one token and reports whether there was one.
func (b *payloadBucket) take(now time.Time) bool {
	b.tokens = min(b.perMinute, b.tokens+now.Sub(b.at).Seconds()*b.perMinute/60)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
