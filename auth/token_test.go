package auth

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func TestIssueVerify(t *testing.T) {
	s := NewSigner(NewKey())
	now := time.Unix(1700000000, 0)
	tok := s.Issue(PurposeUser, 123456789012345678, now)
	// The first segment is what disgo and discord.js decode (clients.md §10).
	seg := strings.Split(tok, ".")
	if len(seg) != 3 {
		t.Fatalf("token %q has %d segments", tok, len(seg))
	}
	raw, err := base64.RawStdEncoding.DecodeString(seg[0])
	if err != nil || string(raw) != "123456789012345678" {
		t.Fatalf("first segment = %q %v", raw, err)
	}
	for _, form := range []string{tok, "Bot " + tok, "Bearer " + tok} {
		id, at, err := s.Verify(PurposeUser, form)
		if err != nil || id != 123456789012345678 || !at.Equal(now) {
			t.Fatalf("Verify(%q) = %d %v %v", form, id, at, err)
		}
	}
}

func TestVerifyRejects(t *testing.T) {
	s := NewSigner(NewKey())
	other := NewSigner(NewKey())
	tok := s.Issue(PurposeUser, 42, time.Now())
	seg := strings.Split(tok, ".")
	forged := base64.RawStdEncoding.EncodeToString([]byte("43")) + "." + seg[1] + "." + seg[2]
	for name, bad := range map[string]string{
		"empty":         "",
		"garbage":       "not a token",
		"other key":     other.Issue(PurposeUser, 42, time.Now()),
		"other purpose": s.Issue(PurposeVoice, 42, time.Now()),
		"forged id":     forged,
		"truncated":     tok[:len(tok)-2],
		"huge":          strings.Repeat("a", 1000) + "." + tok,
	} {
		if _, _, err := s.Verify(PurposeUser, bad); err != ErrInvalid {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func FuzzVerify(f *testing.F) {
	s := NewSigner(make([]byte, KeySize))
	f.Add(s.Issue(PurposeUser, 1, time.Unix(0, 0)))
	f.Add("a.b.c")
	f.Add("Bot ...")
	f.Fuzz(func(t *testing.T, tok string) {
		id, _, err := s.Verify(PurposeUser, tok)
		if err == nil && s.Issue(PurposeUser, id, time.Unix(0, 0)) == "" {
			t.Fatal("unreachable")
		}
	})
}
