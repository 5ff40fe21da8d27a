package sfu

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/transport"
)

// Node is the voice rooms of one voice node: the SSRC table the UDP path
// demultiplexes by, and one Forwarder per transport worker.
type Node struct {
	mu     sync.RWMutex
	rooms  map[Key]*Room
	ssrcs  map[uint32]*Participant
	byUser map[userKey]*Participant
	// dests and claims index participants by address, for keep-alives
	// (address.go).
	dests   map[netip.AddrPort]*Participant
	claims  map[netip.AddrPort]*Participant
	workers []Forwarder
	Drops   Drops
}

type userKey struct{ guild, user uint64 }

// Drops counts the media packets that were not forwarded, by reason.
type Drops struct {
	UnknownSSRC, NoCipher, Auth, Replay, WrongSSRC, Address, Muted, Malformed atomic.Uint64
	// DiscoveryUnknown: IP discovery for an SSRC nobody holds;
	// DiscoveryRefused: for a participant that has another address;
	// KeepAliveUnknown: a keep-alive from an address nobody uses.
	DiscoveryUnknown, DiscoveryRefused, KeepAliveUnknown atomic.Uint64
}

// NewNode returns a node for the given number of transport workers.
func NewNode(workers int) *Node {
	return &Node{rooms: map[Key]*Room{}, ssrcs: map[uint32]*Participant{}, byUser: map[userKey]*Participant{},
		dests: map[netip.AddrPort]*Participant{}, claims: map[netip.AddrPort]*Participant{}, workers: make([]Forwarder, workers)}
}

// Join adds a user to a room with a fresh SSRC. A participant the user
// already had in this guild is removed first and returned as old.
func (n *Node) Join(key Key, user uint64) (p, old *Participant) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if prev := n.byUser[userKey{key.Guild, user}]; prev != nil {
		n.leaveLocked(prev)
		old = prev
	}
	var ssrc uint32
	for ssrc == 0 || n.ssrcs[ssrc] != nil {
		var b [4]byte
		rand.Read(b[:])
		ssrc = binary.BigEndian.Uint32(b[:])
	}
	p = NewParticipant(user, ssrc)
	room := n.rooms[key]
	if room == nil {
		room = &Room{Key: key}
		n.rooms[key] = room
	}
	p.room = room
	n.ssrcs[ssrc] = p
	n.byUser[userKey{key.Guild, user}] = p
	room.Join(p)
	return p, old
}

// Leave removes a participant (no-op if already gone).
func (n *Node) Leave(p *Participant) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.leaveLocked(p)
}

func (n *Node) leaveLocked(p *Participant) {
	if n.ssrcs[p.SSRC] != p {
		return
	}
	delete(n.ssrcs, p.SSRC)
	n.forgetAddrs(p)
	k := userKey{p.room.Key.Guild, p.UserID}
	if n.byUser[k] == p {
		delete(n.byUser, k)
	}
	if p.room.Leave(p) == 0 {
		delete(n.rooms, p.room.Key)
	}
}

// Participant returns the user's participant in a guild, if connected.
func (n *Node) Participant(guild, user uint64) *Participant {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.byUser[userKey{guild, user}]
}

// RTP implements transport.Media: demultiplex by SSRC, then Forward.
func (n *Node) RTP(worker int, pkt []byte, from netip.AddrPort) []transport.Datagram {
	ssrc := binary.BigEndian.Uint32(pkt[8:12]) // Classify guaranteed 12 bytes
	n.mu.RLock()
	p := n.ssrcs[ssrc]
	n.mu.RUnlock()
	if p == nil {
		n.Drops.UnknownSSRC.Add(1)
		return nil
	}
	out, err := n.workers[worker].Forward(p.room, p, from, pkt)
	if !p.indexed.Load() {
		n.indexLatched(p)
	}
	if err != nil {
		n.count(err)
		return nil
	}
	return out
}

func (n *Node) count(err error) {
	switch {
	case errors.Is(err, ErrNoCipher):
		n.Drops.NoCipher.Add(1)
	case errors.Is(err, crypto.ErrAuth):
		n.Drops.Auth.Add(1)
	case errors.Is(err, ErrReplay):
		n.Drops.Replay.Add(1)
	case errors.Is(err, ErrSSRC):
		n.Drops.WrongSSRC.Add(1)
	case errors.Is(err, ErrAddress):
		n.Drops.Address.Add(1)
	case errors.Is(err, ErrMuted):
		n.Drops.Muted.Add(1)
	default:
		n.Drops.Malformed.Add(1)
	}
}

// Room returns the participant's room.
func (p *Participant) Room() *Room { return p.room }

// WriteMetrics writes the node's rooms, participants and dropped packets by
// reason in the Prometheus text format.
func (n *Node) WriteMetrics(w io.Writer) {
	n.mu.RLock()
	rooms, participants := len(n.rooms), len(n.ssrcs)
	n.mu.RUnlock()
	fmt.Fprintf(w, "chorus_voice_rooms %d\nchorus_voice_participants %d\n", rooms, participants)
	d := &n.Drops
	for _, c := range []struct {
		reason string
		n      *atomic.Uint64
	}{{"unknown_ssrc", &d.UnknownSSRC}, {"no_cipher", &d.NoCipher}, {"auth", &d.Auth}, {"replay", &d.Replay},
		{"wrong_ssrc", &d.WrongSSRC}, {"address", &d.Address}, {"muted", &d.Muted}, {"malformed", &d.Malformed},
		{"discovery_unknown_ssrc", &d.DiscoveryUnknown}, {"discovery_refused", &d.DiscoveryRefused},
		{"keepalive_unknown_address", &d.KeepAliveUnknown}} {
		fmt.Fprintf(w, "chorus_voice_dropped_total{reason=%q} %d\n", c.reason, c.n.Load())
	}
}
