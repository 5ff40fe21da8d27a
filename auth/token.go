// Package auth issues and checks bearer tokens.
//
// A token has the shape Discord's bot tokens have, because client libraries
// read the user id out of it (clients.md §10):
//
//	base64(decimal user id) "." base64url(8-byte stamp) "." base64url(HMAC-SHA256)
//
// The first segment uses standard base64 without padding, which is what
// disgo and discord.js decode. The stamp means what the purpose says: for
// user tokens it is the user's token generation (raising it revokes every
// older token); for short-lived tokens it is the expiry in Unix milliseconds. The MAC covers the first two segments and a
// purpose string, so a token of one purpose (gateway, voice) never passes as
// another.
package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"

	"github.com/chorus-voice/chorus/snowflake"
)

// Purposes of a token.
const (
	PurposeUser  = "user"
	PurposeVoice = "voice"
)

// ErrInvalid is returned for any token that does not verify: the caller
// must not learn which part was wrong.
var ErrInvalid = errors.New("auth: invalid token")

// KeySize is the length of a signing key.
const KeySize = 32

// Signer issues and verifies tokens with one secret key.
type Signer struct {
	key []byte
}

// NewKey returns a fresh random signing key.
func NewKey() []byte {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		panic(err)
	}
	return k
}

// NewSigner returns a signer for key (KeySize bytes).
func NewSigner(key []byte) *Signer { return &Signer{key: append([]byte(nil), key...)} }

// Issue returns a token for user and purpose carrying stamp.
func (s *Signer) Issue(purpose string, user snowflake.ID, stamp uint64) string {
	head := base64.RawStdEncoding.EncodeToString([]byte(user.String())) + "." +
		base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, stamp))
	return head + "." + base64.RawURLEncoding.EncodeToString(s.mac(purpose, head))
}

func (s *Signer) mac(purpose, head string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write([]byte(head))
	return m.Sum(nil)
}

// Verify checks a token of purpose and returns its user and stamp.
// A "Bot " or "Bearer " prefix is stripped (clients.md §10).
func (s *Signer) Verify(purpose, token string) (snowflake.ID, uint64, error) {
	token = StripScheme(token)
	i := strings.LastIndexByte(token, '.')
	if i < 0 || len(token) > 256 {
		return 0, 0, ErrInvalid
	}
	head, sig := token[:i], token[i+1:]
	// Strict: the unused low bits of the last character must be zero, so
	// each signature has exactly one spelling (a lenient decoder accepts
	// up to 16 spellings of one 32-byte signature).
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(purpose, head)) {
		return 0, 0, ErrInvalid
	}
	j := strings.IndexByte(head, '.')
	if j < 0 {
		return 0, 0, ErrInvalid
	}
	idText, err := base64.RawStdEncoding.Strict().DecodeString(head[:j])
	if err != nil {
		return 0, 0, ErrInvalid
	}
	id, err := snowflake.Parse(string(idText))
	if err != nil {
		return 0, 0, ErrInvalid
	}
	ts, err := base64.RawURLEncoding.Strict().DecodeString(head[j+1:])
	if err != nil || len(ts) != 8 {
		return 0, 0, ErrInvalid
	}
	return id, binary.BigEndian.Uint64(ts), nil
}

// StripScheme removes a leading "Bot " or "Bearer " from a token.
func StripScheme(token string) string {
	for _, p := range []string{"Bot ", "Bearer ", "bot ", "bearer "} {
		if strings.HasPrefix(token, p) {
			return strings.TrimSpace(token[len(p):])
		}
	}
	return token
}
