package guild

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/ring"
	"github.com/chorus-voice/chorus/store"
)

// voiceRec is a VoiceHost that keeps what it hears.
type voiceRec struct {
	mu  sync.Mutex
	got []VoiceChange
	// holds: the node holds every connection it heard of (VoiceStates
	// answers them Connected).
	holds bool
}

func (v *voiceRec) VoiceChanged(ch VoiceChange) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.got = append(v.got, ch)
}

// VoiceStates answers the last change heard of each user of g.
func (v *voiceRec) VoiceStates(g ID) []VoiceChange {
	v.mu.Lock()
	defer v.mu.Unlock()
	last := map[ID]VoiceChange{}
	for _, ch := range v.got {
		if ch.Guild == g {
			last[ch.User] = ch
		}
	}
	var out []VoiceChange
	for _, ch := range last {
		if ch.ChannelID != 0 {
			ch.Connected = v.holds
			out = append(out, ch)
		}
	}
	return out
}

// channels returns the channel of each change heard, once n were heard
// (within 5 s).
func (v *voiceRec) channels(t *testing.T, n int) []ID {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v.mu.Lock()
		var out []ID
		for _, ch := range v.got {
			out = append(out, ch.ChannelID)
		}
		v.mu.Unlock()
		if len(out) >= n || time.Now().After(deadline) {
			return out
		}
		time.Sleep(time.Millisecond)
	}
}

// voicePair is a pair whose nodes both have a voice gateway that records
// what it hears, and a voice channel in the guild b owns.
func voicePair(t *testing.T) (*pair, *voiceRec, *voiceRec, Channel) {
	t.Helper()
	p := newPair(t)
	va, vb := &voiceRec{}, &voiceRec{}
	p.a.voice, p.b.voice = va, vb
	lounge, err := p.a.CreateChannel(p.ctx, store.Channel{GuildID: p.gB.ID, Name: "lounge", Type: ChannelVoice})
	if err != nil {
		t.Fatal(err)
	}
	return p, va, vb, lounge
}

// Every voice node hears every voice change of a guild, in order: the
// owner's own voice gateway directly, the other node's in its batches.
// A voice change that does not decode is refused and counted.
func TestVoiceChangesReachEveryVoiceNode(t *testing.T) {
	p, va, vb, lounge := voicePair(t)
	// Through a; b owns the guild.
	for _, ch := range []ID{lounge.ID, 0} {
		if err := p.a.UpdateVoiceState(p.ctx, p.gB.ID, VoiceUpdate{Node: "a", Session: "s", User: p.owner.ID, ChannelID: ch}); err != nil {
			t.Fatal(err)
		}
	}
	for name, v := range map[string]*voiceRec{"a": va, "b": vb} {
		if got := v.channels(t, 2); len(got) != 2 || got[0] != lounge.ID || got[1] != 0 {
			t.Errorf("node %s's voice gateway heard channels %v, want [%d 0]", name, got, lounge.ID)
		}
	}
	bad := appendItem(appendBatchHeader(nil, BatchRef{From: "b", N: 1}), &Event{Name: voiceChangeEvent, Data: []byte("{")}, nil)
	if err := p.a.ServeBatch(bad); err == nil || p.a.stats.batchMalformed.Load() != 1 {
		t.Errorf("a malformed voice change: %v, %d counted", err, p.a.stats.batchMalformed.Load())
	}
	if got := va.channels(t, 0); len(got) != 2 {
		t.Errorf("a malformed voice change was heard: %v", got)
	}
}

// When a guild's owner dies, its voice states die with its memory; the
// new owner takes them over from what the voice nodes heard, so a user
// still connected at a voice node can leave (and the voice node hears
// it) as if nothing had happened.
func TestNewOwnerAdoptsVoiceStates(t *testing.T) {
	p := newPair(t)
	va := &voiceRec{}
	p.a.voice = va
	lounge, err := p.a.CreateChannel(p.ctx, store.Channel{GuildID: p.gB.ID, Name: "lounge", Type: ChannelVoice})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.a.UpdateVoiceState(p.ctx, p.gB.ID, VoiceUpdate{Node: "a", Session: "s", User: p.owner.ID, ChannelID: lounge.ID}); err != nil {
		t.Fatal(err)
	}
	if got := va.channels(t, 1); len(got) != 1 {
		t.Fatalf("a's voice gateway heard %v", got)
	}
	// b dies: only a is left, and loads the guild.
	onlyA := ring.New(9, []ring.Node{{ID: "a", Roles: ring.RoleAll}})
	delete(p.net.routers, "b")
	p.va.set(onlyA)
	if err := p.a.UpdateVoiceState(p.ctx, p.gB.ID, VoiceUpdate{Node: "a", Session: "s", User: p.owner.ID}); err != nil {
		t.Fatal(err)
	}
	if got := va.channels(t, 2); len(got) != 2 || got[1] != 0 {
		t.Fatalf("after the move a's voice gateway heard %v, want the leave last", got)
	}
}

// A guild's owner that leaves the ring gracefully (drained) while users are
// in voice may be the only voice node that heard their joins: in a rolling
// restart, every other voice node restarted since, and a voice node hears
// only the changes after it joined. The new owner asks the previous one
// too, so it knows who is in voice: a leave after the move reaches the
// voice nodes, and rooms the ring moved get their VOICE_SERVER_UPDATE.
func TestNewOwnerAsksTheDrainedOwnerForVoiceStates(t *testing.T) {
	p, va, vb, lounge := voicePair(t)
	if err := p.a.UpdateVoiceState(p.ctx, p.gB.ID, VoiceUpdate{Node: "a", Session: "s", User: p.owner.ID, ChannelID: lounge.ID}); err != nil {
		t.Fatal(err)
	}
	if len(va.channels(t, 1)) != 1 || len(vb.channels(t, 1)) != 1 {
		t.Fatal("the join did not reach both voice gateways")
	}
	// a restarted: its voice gateway has heard nothing. Then b drains: it
	// leaves the ring but still answers.
	va.mu.Lock()
	va.got = nil
	va.mu.Unlock()
	onlyA := ring.New(9, []ring.Node{{ID: "a", Roles: ring.RoleAll}})
	p.vb.set(onlyA)
	p.va.set(onlyA)
	if err := p.a.UpdateVoiceState(p.ctx, p.gB.ID, VoiceUpdate{Node: "a", Session: "s", User: p.owner.ID}); err != nil {
		t.Fatal(err)
	}
	if got := va.channels(t, 1); len(got) != 1 || got[0] != 0 {
		t.Fatalf("after the move a's voice gateway heard %v, want the leave", got)
	}
}

// endpoints returns the endpoints of the VOICE_SERVER_UPDATEs session got.
func endpoints(t *testing.T, rec *recorder, session string) []string {
	t.Helper()
	var out []string
	for _, ev := range rec.events(session, protocol.EventVoiceServerUpdate) {
		var d struct{ Endpoint string }
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatal(err)
		}
		out = append(out, d.Endpoint)
	}
	return out
}

// roomOnB is a voicePair whose rings carry voice addresses, with session
// "s" (through a) in a voice channel the ring places on b, in the guild b
// owns; the session has had its VOICE_SERVER_UPDATE naming b.
func roomOnB(t *testing.T) (*pair, *voiceRec, *voiceRec, Sub) {
	t.Helper()
	p, va, vb, _ := voicePair(t)
	tok := func(ID) string { return "tok" }
	p.a.voiceTok, p.b.voiceTok = tok, tok
	both := ring.New(7, []ring.Node{{ID: "a", Roles: ring.RoleAll, Addr: "a.voice:1"}, {ID: "b", Roles: ring.RoleAll, Addr: "b.voice:1"}})
	p.va.set(both)
	p.vb.set(both)
	var room Channel
	for i := 0; i < 64 && room.ID == 0; i++ {
		c, err := p.a.CreateChannel(p.ctx, store.Channel{GuildID: p.gB.ID, Name: "room", Type: ChannelVoice})
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := both.Owner(ring.RoleVoice, ring.VoiceKey(uint64(p.gB.ID), uint64(c.ID))); n.ID == "b" {
			room = c
		}
	}
	if room.ID == 0 {
		t.Fatal("no voice channel placed on b in 64 tries")
	}
	s := Sub{Node: "a", Session: "s", User: p.owner.ID, Intents: protocol.IntentGuilds}
	if err := p.a.Subscribe(p.ctx, p.gB.ID, s); err != nil {
		t.Fatal(err)
	}
	if err := p.a.UpdateVoiceState(p.ctx, p.gB.ID, VoiceUpdate{Node: "a", Session: "s", User: p.owner.ID, ChannelID: room.ID}); err != nil {
		t.Fatal(err)
	}
	if len(va.channels(t, 1)) != 1 || len(vb.channels(t, 1)) != 1 {
		t.Fatal("the join did not reach both voice gateways")
	}
	if got := waitEndpoints(t, p.ra, "s", 1); len(got) != 1 || got[0] != "b.voice:1" {
		t.Fatalf("after the join the session was sent to %v, want [b.voice:1]", got)
	}
	return p, va, vb, s
}

// onlyA is the ring once b has left.
var onlyA = ring.New(8, []ring.Node{{ID: "a", Roles: ring.RoleAll, Addr: "a.voice:1"}})

// A participant whose gateway session is moving between gateway nodes at
// the moment its room's node and its guild's owner die is not registered
// with the new owner when the owner sends the room's
// VOICE_SERVER_UPDATEs. It hears when its session registers again: the
// owner keeps, per participant, the node it was sent to, and never marks a
// room done for participants it could not tell.
func TestParticipantMovingWhileItsRoomMovesHearsTheNewNode(t *testing.T) {
	p, _, _, s := roomOnB(t)
	// b dies; no gateway node names the session (it is between nodes).
	p.net.mu.Lock()
	delete(p.net.routers, "b")
	p.net.mu.Unlock()
	p.va.set(onlyA)
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	if _, err := p.a.GetGuild(ctx, p.gB.ID, p.owner.ID); err != nil {
		t.Fatal(err)
	}
	if got := endpoints(t, p.ra, "s"); len(got) != 1 {
		t.Fatalf("an unregistered session was sent %v", got)
	}
	// The session arrives at its new gateway node and registers again.
	s.Gen = 1
	if _, err := p.a.Move(ctx, p.gB.ID, s); err != nil {
		t.Fatal(err)
	}
	if got := waitEndpoints(t, p.ra, "s", 2); len(got) != 2 || got[1] != "a.voice:1" {
		t.Fatalf("after its session moved the participant was sent to %v, want [b.voice:1 a.voice:1]", got)
	}
	// Registering again where the room already is sends nothing more.
	s.Gen = 2
	if _, err := p.a.Move(ctx, p.gB.ID, s); err != nil {
		t.Fatal(err)
	}
	if got := endpoints(t, p.ra, "s"); len(got) != 2 {
		t.Fatalf("a second registration sent the participant %v", got)
	}
}

// An owner that drains hands its voice over as its actor retires: its
// participants whose rooms moved hear where to go, and the new owner gets
// the states even if no voice node it can ask heard of them (in a rolling
// restart the others restarted after the joins) and the old owner is gone
// before anything else loads the guild there.
func TestDrainedOwnerHandsItsVoiceOver(t *testing.T) {
	p, va, _, s := roomOnB(t)
	// a restarted since the join: its voice gateway heard nothing.
	va.mu.Lock()
	va.got = nil
	va.mu.Unlock()
	// b drains: it leaves the ring, hands over, and then is gone.
	p.vb.set(onlyA)
	p.va.set(onlyA)
	if got := waitEndpoints(t, p.ra, "s", 2); len(got) != 2 || got[1] != "a.voice:1" {
		t.Fatalf("after b drained the participant was sent to %v, want [b.voice:1 a.voice:1]", got)
	}
	p.net.mu.Lock()
	delete(p.net.routers, "b")
	p.net.mu.Unlock()
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	st := newOwnerState(t, p)
	if st.SessionID != "s" {
		t.Fatalf("the new owner's state of the participant: %+v", st)
	}
	// The session moves too; it was told already and hears nothing more.
	s.Gen = 1
	if _, err := p.a.Move(ctx, p.gB.ID, s); err != nil {
		t.Fatal(err)
	}
	if got := endpoints(t, p.ra, "s"); len(got) != 2 {
		t.Fatalf("after its session moved the participant was sent %v", got)
	}
}

// A new owner that loads the guild while the old one is still handing
// its voice over (here: before the handover arrives) learns from the old
// owner where the participants were sent, and does not send them again —
// a second VOICE_SERVER_UPDATE makes a client reconnect once more.
func TestNewOwnerLoadingDuringTheHandoverSendsNothingMore(t *testing.T) {
	p, va, _, s := roomOnB(t)
	va.mu.Lock()
	va.got = nil
	va.mu.Unlock()
	handing, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	p.net.mu.Lock()
	p.net.before = func(node string, req []byte) {
		if node == "a" && bytes.Contains(req, []byte(opHandVoice.name)) {
			once.Do(func() { close(handing) })
			<-release
		}
	}
	p.net.mu.Unlock()
	p.vb.set(onlyA)
	p.va.set(onlyA)
	select {
	case <-handing:
	case <-time.After(5 * time.Second):
		t.Fatal("b did not hand its voice over")
	}
	if got := waitEndpoints(t, p.ra, "s", 2); len(got) != 2 || got[1] != "a.voice:1" {
		t.Fatalf("before the handover the participant was sent to %v, want [b.voice:1 a.voice:1]", got)
	}
	if st := newOwnerState(t, p); st.SessionID != "s" {
		t.Fatalf("the new owner's state of the participant: %+v", st)
	}
	close(release)
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s.Gen = 1
	if _, err := p.a.Move(ctx, p.gB.ID, s); err != nil {
		t.Fatal(err)
	}
	if got := endpoints(t, p.ra, "s"); len(got) != 2 {
		t.Fatalf("a new owner loading during the handover sent the participant %v", got)
	}
}

// waitEndpoints waits (within 5 s) until session got n
// VOICE_SERVER_UPDATEs and returns their endpoints.
func waitEndpoints(t *testing.T, rec *recorder, session string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := endpoints(t, rec, session)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(time.Millisecond)
	}
}

// A draining node may close its router right after it left the ring,
// before the router's own follower has seen the ring without it: Close
// applies the newest ring first, so the voice is handed over all the same.
func TestOwnerClosingRightAfterLeavingHandsItsVoiceOver(t *testing.T) {
	p, va, _, _ := roomOnB(t)
	va.mu.Lock()
	va.got = nil
	va.mu.Unlock()
	p.va.set(onlyA)
	p.vb.set(onlyA)
	p.b.Close()
	if got := waitEndpoints(t, p.ra, "s", 2); len(got) != 2 || got[1] != "a.voice:1" {
		t.Fatalf("after b closed the participant was sent to %v, want [b.voice:1 a.voice:1]", got)
	}
	p.net.mu.Lock()
	delete(p.net.routers, "b")
	p.net.mu.Unlock()
	newOwnerState(t, p)
}

// newOwnerState waits (within 5 s) until a, the new owner, has the
// participant's voice state — the handover is a call still in flight when
// the participant hears its update — and returns it. b is gone by then:
// the state can only have come from the handover.
func newOwnerState(t *testing.T, p *pair) VoiceChange {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, time.Second)
		st, err := p.a.VoiceState(ctx, p.gB.ID, p.owner.ID)
		cancel()
		if err == nil && st.ChannelID != 0 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new owner has no voice state of the participant: %+v, %v", st, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
