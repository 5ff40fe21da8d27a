package sfu

import (
	"net/netip"
	"time"
)

// Where a participant's media goes. An IP discovery request (voice.md
// §9.1) names an SSRC and comes from some address, but it is not
// authenticated: anyone who knows an SSRC (the room hears them in op 5)
// can send one, from any source if they spoof it. So a discovery source is
// only a candidate. Media goes to a candidate once the client confirmed it
// over its authenticated websocket or with authenticated media:
//
//   - Select Protocol names the address the client was told: a candidate
//     with that IP and that port (or the port byte-swapped, as one library
//     reads it, clients.md §11) is confirmed. If none matches and the
//     session asked from exactly one address, that one is confirmed: an
//     attacker's extra request would make it two.
//   - A keep-alive from the claimed address confirms it too.
//   - The first authenticated RTP packet latches its source (Forward); the
//     latched address wins over a confirmed one.
//
// Once a participant has an address, discovery from elsewhere is refused
// and never moves it. Candidates expire after candidateTTL.

// maxCandidates is how many discovery sources a participant remembers.
const maxCandidates = 4

// candidateTTL is how long an unconfirmed discovery source stays a candidate.
const candidateTTL = time.Minute

type candidate struct {
	addr netip.AddrPort
	at   time.Time
}

// addCandidate remembers a discovery source. Caller holds p.mu.
func (p *Participant) addCandidate(a netip.AddrPort, now time.Time) {
	oldest := 0
	for i, c := range p.candidates {
		if c.addr == a {
			p.candidates[i].at = now
			return
		}
		if c.at.Before(p.candidates[oldest].at) {
			oldest = i
		}
	}
	p.candidates[oldest] = candidate{a, now}
}

// pickCandidate returns the fresh candidate that claim names, else the only
// fresh candidate. Caller holds p.mu.
func (p *Participant) pickCandidate(claim netip.AddrPort, now time.Time) (netip.AddrPort, bool) {
	var only netip.AddrPort
	fresh := 0
	for _, c := range p.candidates {
		if !c.addr.IsValid() || now.Sub(c.at) > candidateTTL {
			continue
		}
		if claims(claim, c.addr) {
			return c.addr, true
		}
		fresh++
		only = c.addr
	}
	return only, fresh == 1
}

// claims reports whether a Select Protocol address names a: the same IP and
// port, or the port byte-swapped.
func claims(claim, a netip.AddrPort) bool {
	return claim.Addr().Unmap() == a.Addr().Unmap() && (claim.Port() == a.Port() || claim.Port() == swap16(a.Port()))
}

func swap16(v uint16) uint16 { return v<<8 | v>>8 }

// Discovery implements transport.Media: it answers for a participant that
// has no address yet, or from the address it has, and remembers the
// source as a candidate.
func (n *Node) Discovery(ssrc uint32, from netip.AddrPort) bool {
	n.mu.RLock()
	p := n.ssrcs[ssrc]
	n.mu.RUnlock()
	if p == nil {
		n.Drops.DiscoveryUnknown.Add(1)
		return false
	}
	if d := p.dest(); d != nil {
		if *d == from {
			return true
		}
		n.Drops.DiscoveryRefused.Add(1)
		return false
	}
	p.mu.Lock()
	p.addCandidate(from, time.Now())
	claim := p.claim
	p.mu.Unlock()
	if claim.IsValid() && claims(claim, from) {
		n.confirm(p, from)
	}
	return true
}

// Claim records the address a participant's Select Protocol names and
// confirms the candidate it picks (see above).
func (n *Node) Claim(p *Participant, claim netip.AddrPort) {
	p.mu.Lock()
	p.claim = claim
	pick, ok := p.pickCandidate(claim, time.Now())
	p.mu.Unlock()
	n.mu.Lock()
	if n.ssrcs[p.SSRC] == p && claim.IsValid() {
		n.claims[claim] = p
		n.claims[netip.AddrPortFrom(claim.Addr(), swap16(claim.Port()))] = p
	}
	n.mu.Unlock()
	if ok {
		n.confirm(p, pick)
	}
}

// KeepAlive implements transport.Media: a keep-alive is echoed only to an
// address a participant receives at, or one a participant claimed (which
// it then confirms).
func (n *Node) KeepAlive(from netip.AddrPort) bool {
	n.mu.RLock()
	p, q := n.dests[from], n.claims[from]
	n.mu.RUnlock()
	switch {
	case p != nil:
		return true
	case q != nil && q.dest() == nil:
		n.confirm(q, from)
		return true
	}
	n.Drops.KeepAliveUnknown.Add(1)
	return false
}

// confirm makes a the participant's destination unless it already has one.
func (n *Node) confirm(p *Participant, a netip.AddrPort) {
	if p.addr.Load() != nil || !p.confirmed.CompareAndSwap(nil, &a) {
		return
	}
	n.mu.Lock()
	if n.ssrcs[p.SSRC] == p {
		n.dests[a] = p
	}
	n.mu.Unlock()
}

// indexLatched puts a participant's latched address in the address index
// once, after its first authenticated packet.
func (n *Node) indexLatched(p *Participant) {
	a := p.addr.Load()
	if a == nil || !p.indexed.CompareAndSwap(false, true) {
		return
	}
	n.mu.Lock()
	if n.ssrcs[p.SSRC] == p {
		n.dests[*a] = p
	}
	n.mu.Unlock()
}

// forgetAddrs removes a leaving participant from the address indexes.
// Caller holds n.mu.
func (n *Node) forgetAddrs(p *Participant) {
	for _, a := range []*netip.AddrPort{p.addr.Load(), p.confirmed.Load()} {
		if a != nil && n.dests[*a] == p {
			delete(n.dests, *a)
		}
	}
	p.mu.Lock()
	claim := p.claim
	p.mu.Unlock()
	for _, a := range []netip.AddrPort{claim, netip.AddrPortFrom(claim.Addr(), swap16(claim.Port()))} {
		if n.claims[a] == p {
			delete(n.claims, a)
		}
	}
}
