package sfu

import (
	"net/netip"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/crypto"
)

func hostPort(host string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(host), port)
}

func dest(p *Participant) netip.AddrPort {
	a, _ := p.Addr()
	return a
}

// An attacker who knows a listener's SSRC sends IP discovery for it from
// its own address: it gets an answer, but the media goes where the
// listener confirmed, and later discovery never moves it.
func TestDiscoveryIsOnlyAHint(t *testing.T) {
	n := NewNode(1)
	victim, _ := n.Join(Key{1, 2}, 10)
	attacker, victimAddr := hostPort("127.0.0.66", 4000), hostPort("127.0.0.5", 5000)

	if !n.Discovery(victim.SSRC, attacker) {
		t.Fatal("discovery for an SSRC without an address is answered")
	}
	if _, ok := victim.Addr(); ok {
		t.Fatal("a discovery request alone set the address")
	}
	n.Discovery(victim.SSRC, victimAddr)
	n.Claim(victim, victimAddr) // Select Protocol, authenticated
	if dest(victim) != victimAddr {
		t.Fatalf("media goes to %v", dest(victim))
	}
	if n.Discovery(victim.SSRC, attacker) || n.Drops.DiscoveryRefused.Load() != 1 {
		t.Fatal("discovery from elsewhere was answered once the address was confirmed")
	}
	if !n.Discovery(victim.SSRC, victimAddr) {
		t.Fatal("the listener's own repeated discovery was refused")
	}
	if dest(victim) != victimAddr {
		t.Fatal("the address moved")
	}
	if n.Discovery(12345, victimAddr) || n.Drops.DiscoveryUnknown.Load() != 1 {
		t.Fatal("an unassigned SSRC was answered")
	}
}

func TestClaimConfirmsACandidate(t *testing.T) {
	src := hostPort("127.0.0.5", 0x1234)
	tests := []struct {
		name       string
		candidates []netip.AddrPort
		claim      netip.AddrPort
		want       netip.AddrPort // zero: nothing confirmed
	}{
		{"claim matches", []netip.AddrPort{src}, src, src},
		{"port byte-swapped (clients.md §11)", []netip.AddrPort{src}, hostPort("127.0.0.5", 0x3412), src},
		{"claim matches among several", []netip.AddrPort{hostPort("127.0.0.66", 1), src}, src, src},
		{"wrong claim, one candidate", []netip.AddrPort{src}, hostPort("127.9.9.9", 1), src},
		{"no claim, one candidate", []netip.AddrPort{src}, netip.AddrPort{}, src},
		{"wrong claim, two candidates", []netip.AddrPort{hostPort("127.0.0.66", 1), src}, hostPort("127.9.9.9", 1), netip.AddrPort{}},
		{"no candidate", nil, src, netip.AddrPort{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := NewNode(1)
			p, _ := n.Join(Key{1, 2}, 10)
			for _, c := range tt.candidates {
				n.Discovery(p.SSRC, c)
			}
			n.Claim(p, tt.claim)
			if got := dest(p); got != tt.want {
				t.Fatalf("media goes to %v, want %v", got, tt.want)
			}
		})
	}
}

// A claim made before its discovery (or without a candidate) is confirmed
// by a later discovery or keep-alive from the claimed address.
func TestClaimConfirmedLater(t *testing.T) {
	n := NewNode(1)
	p, _ := n.Join(Key{1, 2}, 10)
	q, _ := n.Join(Key{1, 2}, 11)
	a, b := hostPort("127.0.0.5", 5000), hostPort("127.0.0.6", 6000)
	n.Claim(p, a)
	n.Claim(q, b)
	n.Discovery(p.SSRC, a)
	if dest(p) != a {
		t.Fatal("discovery from the claimed address did not confirm it")
	}
	if n.KeepAlive(hostPort("127.0.0.7", 7000)) || n.Drops.KeepAliveUnknown.Load() != 1 {
		t.Fatal("a keep-alive from a stranger is echoed")
	}
	if !n.KeepAlive(b) || dest(q) != b {
		t.Fatal("a keep-alive from the claimed address did not confirm it")
	}
	if !n.KeepAlive(a) {
		t.Fatal("a keep-alive from a confirmed address is not echoed")
	}
	n.Leave(p)
	if n.KeepAlive(a) {
		t.Fatal("a keep-alive from a departed participant's address is echoed")
	}
}

// The latched address (first authenticated packet) wins over a confirmed
// one and answers keep-alives.
func TestLatchedAddressIsIndexed(t *testing.T) {
	n := NewNode(1)
	s, _ := n.Join(Key{1, 2}, 10)
	c, _ := crypto.NewCipher(crypto.AES256GCMRTPSize, key(1))
	s.SetCipher(c)
	s.SetFlags(FlagMaySpeak|FlagAnnounced, 0)
	claimed, real := hostPort("127.0.0.5", 5000), hostPort("127.0.0.5", 5001)
	n.Discovery(s.SSRC, claimed)
	n.Claim(s, claimed)
	n.RTP(0, seal(t, s, rtp(s.SSRC, 1, []byte{1}), 1), real)
	if dest(s) != real {
		t.Fatalf("media goes to %v, want the latched %v", dest(s), real)
	}
	if !n.KeepAlive(real) {
		t.Fatal("the latched address gets no keep-alive echo")
	}
	if n.Discovery(s.SSRC, hostPort("127.0.0.66", 1)) {
		t.Fatal("discovery answered for a latched participant from elsewhere")
	}
}

func TestCandidatesExpireAndAreBounded(t *testing.T) {
	p := NewParticipant(1, 1)
	now := time.Unix(1000, 0)
	for i := range 10 {
		p.addCandidate(hostPort("127.0.0.1", uint16(1000+i)), now.Add(time.Duration(i)*time.Second))
	}
	// Only the four newest are kept: none of the first six is picked.
	if a, ok := p.pickCandidate(hostPort("127.0.0.1", 1000), now.Add(10*time.Second)); ok && a.Port() == 1000 {
		t.Fatal("an evicted candidate was picked")
	}
	if a, ok := p.pickCandidate(hostPort("127.0.0.1", 1009), now.Add(10*time.Second)); !ok || a.Port() != 1009 {
		t.Fatalf("kept candidate not picked: %v %v", a, ok)
	}
	if _, ok := p.pickCandidate(hostPort("127.0.0.1", 1009), now.Add(10*time.Second+candidateTTL)); ok {
		t.Fatal("an expired candidate was picked")
	}
}
