package signaling

import (
	"context"
	"errors"
	"fmt"

	"github.com/chorus-voice/chorus/auth"
	"github.com/chorus-voice/chorus/store"
)

// errStoreUnavailable means a token could not be checked because the store
// did not answer: the client should retry (REST 503, gateway close 4000),
// not drop its token as it would on 401 or close 4004.
var errStoreUnavailable = errors.New("store unavailable")

// tokens resolves gateway and REST tokens to their users; the gateway's
// Identify and Resume and every REST route share it.
type tokens struct {
	signer *auth.Signer
	store  store.Store
}

// authenticate returns the user a token admits: auth.ErrInvalid (or
// another auth error) for a bad, forged or revoked token.
func (t tokens) authenticate(ctx context.Context, token string) (store.User, error) {
	id, gen, err := t.signer.Verify(auth.PurposeUser, token)
	if err != nil {
		return store.User{}, err
	}
	u, err := t.store.GetUser(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.User{}, auth.ErrInvalid
	}
	if err != nil {
		return store.User{}, fmt.Errorf("%w: %w", errStoreUnavailable, err)
	}
	if gen != u.TokenGen {
		return store.User{}, auth.ErrInvalid
	}
	return u, nil
}
