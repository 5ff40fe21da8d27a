package guild

import (
	"github.com/chorus-voice/chorus/ring"
	"sync"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/store"
)

// voiceRec is a VoiceHost that keeps what it hears.
type voiceRec struct {
	mu  sync.Mutex
	got []VoiceChange
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
