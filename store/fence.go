package store

import (
	"context"
	"errors"
)

// Ownership epochs fence a guild's writes (issue 10, "Ownership that cannot
// split"). The ring names one owner per guild, but a node that was paused
// (SIGSTOP, a long GC, a partition) may wake still believing it owns a
// guild that has since moved: its ring view and its self-fence timer both
// lag. So each owner claims the guild in the store when it loads it and
// gets a new epoch, greater than every earlier claim, and makes its writes
// under that epoch (WithFence). The store refuses a write whose epoch is
// older than the guild's newest claim, atomically with the write: a write
// either commits before the newer owner's claim, and that owner then loads
// it, or it does not commit at all.
//
// The epoch comes from the store, not from the ring's revision, because
// the ring lives in NATS memory and starts again at 1 when a whole NATS
// cluster restarts, while the store's record of claims does not.

// ErrFenced is returned for a write made under an ownership epoch older
// than the guild's newest claim: another node owns the guild now.
var ErrFenced = errors.New("store: a newer owner has claimed the guild")

type fence struct {
	guild ID
	epoch uint64
}

type fenceKey struct{}

// WithFence returns a context whose writes to the guild's records are made
// under epoch, the value Claim returned, and are refused with ErrFenced once
// a newer claim exists. Writes without a fence (creating a guild, users,
// meta) are not checked.
func WithFence(ctx context.Context, guild ID, epoch uint64) context.Context {
	return context.WithValue(ctx, fenceKey{}, fence{guild, epoch})
}

func fenceOf(ctx context.Context) (fence, bool) {
	f, ok := ctx.Value(fenceKey{}).(fence)
	return f, ok
}
