package auth

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestIssueVerify(t *testing.T) {
	s := NewSigner(NewKey())
	tok := s.Issue(PurposeUser, 123456789012345678, 7)
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
		id, stamp, err := s.Verify(PurposeUser, form)
		if err != nil || id != 123456789012345678 || stamp != 7 {
			t.Fatalf("Verify(%q) = %d %v %v", form, id, stamp, err)
		}
	}
}

func TestVerifyRejects(t *testing.T) {
	s := NewSigner(NewKey())
	other := NewSigner(NewKey())
	tok := s.Issue(PurposeUser, 42, 1)
	seg := strings.Split(tok, ".")
	forged := base64.RawStdEncoding.EncodeToString([]byte("43")) + "." + seg[1] + "." + seg[2]
	for name, bad := range map[string]string{
		"empty":         "",
		"garbage":       "not a token",
		"other key":     other.Issue(PurposeUser, 42, 1),
		"other purpose": s.Issue(PurposeVoice, 42, 1),
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
	f.Add(s.Issue(PurposeUser, 1, 0))
	f.Add("a.b.c")
	f.Add("Bot ...")
	f.Fuzz(func(t *testing.T, tok string) {
		id, _, err := s.Verify(PurposeUser, tok)
		if err == nil && s.Issue(PurposeUser, id, 0) == "" {
			t.Fatal("unreachable")
		}
	})
}

// A signature has one spelling: changing the unused low bits of its last
// base64 character gives a token that decodes to the same bytes under a
// lenient decoder, and must be refused.
func TestVerifyOneSpelling(t *testing.T) {
	s := NewSigner(NewKey())
	tok := s.Issue(PurposeUser, 42, 1)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	accepted := 0
	for v := last &^ 0xF; v < last&^0xF+16; v++ { // 32 bytes: the last character carries 2 bits
		if _, _, err := s.Verify(PurposeUser, tok[:len(tok)-1]+string(alphabet[v])); err == nil {
			accepted++
		}
	}
	if accepted != 1 {
		t.Fatalf("%d spellings of one signature accepted", accepted)
	}
}
