package signaling

import (
	"context"
	"errors"
	"testing"

	"github.com/chorus-voice/chorus/auth"
	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/sfu"
)

// An Identify naming a voice state this node has not heard of asks the
// guild's owner (LookupState) and keeps the answer, unless a change came
// meanwhile, which is newer; a failed lookup admits nothing.
func TestVoiceStateLookedUpWhenUnknown(t *testing.T) {
	want := guild.VoiceChange{Guild: 1, User: 2, ChannelID: 3, SessionID: "s"}
	var v *VoiceGateway
	var lookup func() (guild.VoiceChange, error)
	v = NewVoiceGateway(VoiceConfig{LookupState: func(ctx context.Context, g, user guild.ID) (guild.VoiceChange, error) {
		return lookup()
	}}, auth.NewSigner(auth.NewKey()), sfu.NewNode(1))

	lookup = func() (guild.VoiceChange, error) { return guild.VoiceChange{}, errors.New("owner unreachable") }
	if known, _, ok := v.state(1, 2, "s"); known || ok {
		t.Fatal("a failed lookup admitted the state")
	}
	lookup = func() (guild.VoiceChange, error) { return guild.VoiceChange{Guild: 1, User: 2}, nil }
	if _, _, ok := v.state(1, 2, "s"); ok {
		t.Fatal("a user the owner says is not in voice was admitted")
	}

	lookup = func() (guild.VoiceChange, error) { return want, nil }
	if known, st, ok := v.state(1, 2, "s"); !known || !ok || st != want {
		t.Fatalf("looked up: %v %+v %v", known, st, ok)
	}
	lookup = func() (guild.VoiceChange, error) { t.Fatal("asked again for a state it keeps"); return want, nil }
	if _, st, ok := v.state(1, 2, "s"); !ok || st != want {
		t.Fatalf("kept: %+v %v", st, ok)
	}

	// A move to another channel arrives while the lookup is under way.
	moved := guild.VoiceChange{Guild: 1, User: 2, ChannelID: 4, SessionID: "s2"}
	lookup = func() (guild.VoiceChange, error) {
		v.VoiceChanged(moved)
		return guild.VoiceChange{Guild: 1, User: 2, ChannelID: 3, SessionID: "s2"}, nil
	}
	if _, st, ok := v.state(1, 2, "s2"); !ok || st != moved {
		t.Fatalf("the lookup's older answer won over a newer change: %+v", st)
	}
}
