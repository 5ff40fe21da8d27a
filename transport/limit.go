package transport

import (
	"net/netip"
	"time"
)

// The UDP socket answers two kinds of unauthenticated datagrams: IP
// discovery and keep-alives. Each answer goes to the datagram's source,
// which may be spoofed, so answers are rate limited per source IP (not per
// port: a spoofer varies ports for free). A reflection through Chorus is
// then at most sourceRate small datagrams a second to any one victim.

const (
	sourceBurst = 64 // answers a source may get at once (a NAT full of clients)
	sourceRate  = 32 // answers per second after that
	// maxSources bounds a worker's table; a flood of distinct sources
	// empties it, so it never grows past this.
	maxSources = 1 << 14
)

type bucket struct {
	tokens float64
	at     time.Time
}

// sourceLimiter is one worker's per-source token buckets; only its worker
// touches it, so it has no lock.
type sourceLimiter struct {
	buckets map[netip.Addr]bucket
}

// allow takes a token for src and reports whether it had one.
func (l *sourceLimiter) allow(src netip.Addr, now time.Time) bool {
	if l.buckets == nil || len(l.buckets) >= maxSources {
		l.buckets = make(map[netip.Addr]bucket, 64)
	}
	b, ok := l.buckets[src]
	if !ok {
		b = bucket{tokens: sourceBurst, at: now}
	}
	b.tokens = min(sourceBurst, b.tokens+now.Sub(b.at).Seconds()*sourceRate)
	b.at = now
	allowed := b.tokens >= 1
	if allowed {
		b.tokens--
	}
	l.buckets[src] = b
	return allowed
}
