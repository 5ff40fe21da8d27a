// Package sfu holds voice rooms: who is in them, what each may send and
// hear, and the forwarding of one sender's packet to every receiver, each
// sealed with the receiver's own key and mode. It owns no sockets: the
// decisions are plain functions over room state (like LiveKit's pkg/sfu),
// and Forward hands back datagrams for the transport to write.
package sfu

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/chorus-voice/chorus/crypto"
)

// Flags of a participant. Server mute and deafen come from the guild
// (PATCH /guilds/{id}/members/{user}); self mute and deafen from the
// client's voice state; MaySpeak from the SPEAK permission.
const (
	FlagServerMute uint32 = 1 << iota
	FlagServerDeaf
	FlagSelfMute
	FlagSelfDeaf
	FlagMaySpeak
	// FlagAnnounced is set once every other participant was told this
	// sender's SSRC (voice op 5): receivers drop audio from unknown SSRCs
	// (clients.md §15), so nothing is forwarded before.
	FlagAnnounced
)

// Participant is one voice connection in a room.
type Participant struct {
	UserID uint64
	SSRC   uint32

	cipher atomic.Pointer[crypto.Cipher]  // nil until Select Protocol
	addr   atomic.Pointer[netip.AddrPort] // latched from the first authenticated packet
	// confirmed is where media goes until addr is latched: an IP
	// discovery source that the client confirmed (address.go).
	confirmed atomic.Pointer[netip.AddrPort]
	indexed   atomic.Bool   // addr is in the node's address index
	counter   atomic.Uint32 // nonce counter of packets sent to this participant
	flags     atomic.Uint32
	// sink, for a WebRTC participant, takes its media instead of cipher
	// and address (webrtc.go).
	sink atomic.Pointer[sinkRef]

	mu     sync.Mutex // guards window, candidates and claim
	window crypto.ReplayWindow
	// candidates are recent IP discovery sources, only hints until the
	// client confirms one; claim is what Select Protocol said.
	candidates [maxCandidates]candidate
	claim      netip.AddrPort
	room       *Room
}

// NewParticipant returns a participant with the given SSRC.
func NewParticipant(user uint64, ssrc uint32) *Participant {
	return &Participant{UserID: user, SSRC: ssrc}
}

// SetCipher sets the key and mode chosen in Select Protocol.
func (p *Participant) SetCipher(c *crypto.Cipher) { p.cipher.Store(c) }

// Cipher returns the participant's cipher, nil before Select Protocol.
func (p *Participant) Cipher() *crypto.Cipher { return p.cipher.Load() }

// Addr returns where the participant receives media: the latched address,
// else the confirmed IP discovery source.
func (p *Participant) Addr() (netip.AddrPort, bool) {
	a := p.dest()
	if a == nil {
		return netip.AddrPort{}, false
	}
	return *a, true
}

func (p *Participant) dest() *netip.AddrPort {
	if a := p.addr.Load(); a != nil {
		return a
	}
	return p.confirmed.Load()
}

// SetFlags sets and clears flags atomically.
func (p *Participant) SetFlags(set, clear uint32) {
	for {
		old := p.flags.Load()
		if p.flags.CompareAndSwap(old, old&^clear|set) {
			return
		}
	}
}

// Flags returns the current flags.
func (p *Participant) Flags() uint32 { return p.flags.Load() }

// CanSend reports whether the participant's audio is forwarded at all.
// Self mute is the client's own business (it stops sending; libraries
// join self-muted by default and still play): only server mute, the SPEAK
// permission and the SSRC announcement gate forwarding.
func CanSend(flags uint32) bool {
	return flags&FlagServerMute == 0 && flags&FlagMaySpeak != 0 && flags&FlagAnnounced != 0
}

// CanHear reports whether the participant receives audio.
func CanHear(flags uint32) bool { return flags&(FlagServerDeaf|FlagSelfDeaf) == 0 }

// Key names a room: a voice channel of a guild.
type Key struct{ Guild, Channel uint64 }

// Room is a voice channel's participants. Membership changes copy the
// slice; forwarding reads an immutable snapshot without a lock.
type Room struct {
	Key     Key
	mu      sync.Mutex
	members atomic.Pointer[[]*Participant]
}

// Join adds p; it replaces an earlier participant of the same user.
func (r *Room) Join(p *Participant) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.Members()
	next := make([]*Participant, 0, len(old)+1)
	for _, q := range old {
		if q.UserID != p.UserID {
			next = append(next, q)
		}
	}
	next = append(next, p)
	r.members.Store(&next)
}

// Leave removes p and reports how many remain.
func (r *Room) Leave(p *Participant) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.Members()
	next := make([]*Participant, 0, len(old))
	for _, q := range old {
		if q != p {
			next = append(next, q)
		}
	}
	r.members.Store(&next)
	return len(next)
}

// Members returns the current snapshot; do not modify it.
func (r *Room) Members() []*Participant {
	if m := r.members.Load(); m != nil {
		return *m
	}
	return nil
}

// Receivers appends to dst every participant that gets sender's audio:
// everyone else who can hear and has a key and an address, or a sink.
func (r *Room) Receivers(dst []*Participant, sender *Participant) []*Participant {
	for _, p := range r.Members() {
		if p == sender || !CanHear(p.Flags()) {
			continue
		}
		if p.sink.Load() == nil && (p.cipher.Load() == nil || p.dest() == nil) {
			continue
		}
		dst = append(dst, p)
	}
	return dst
}

// Errors of Forward; each is a reason to drop a packet, and is counted.
var (
	ErrNoCipher = errors.New("sfu: sender has not selected a protocol")
	ErrReplay   = errors.New("sfu: replayed nonce")
	ErrSSRC     = errors.New("sfu: packet SSRC is not the sender's")
	ErrAddress  = errors.New("sfu: packet from another address than the sender's")
	ErrMuted    = errors.New("sfu: sender may not send now")
)
