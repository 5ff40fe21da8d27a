package guild

import "errors"

// Errors the guild layer returns. They say what went wrong in the domain;
// the edge (signaling/errors.go) maps each to Discord's JSON error code and
// an HTTP status in one table. Compare with errors.Is.
var (
	ErrUnknownGuild       = errors.New("guild: unknown guild")
	ErrUnknownChannel     = errors.New("guild: unknown channel")
	ErrUnknownMember      = errors.New("guild: unknown member")
	ErrUnknownMessage     = errors.New("guild: unknown message")
	ErrUnknownRole        = errors.New("guild: unknown role")
	ErrUnknownUser        = errors.New("guild: unknown user")
	ErrMissingAccess      = errors.New("guild: missing access")
	ErrMissingPermissions = errors.New("guild: missing permissions")
	ErrNotAuthor          = errors.New("guild: cannot edit a message authored by another user")
	ErrEmptyMessage       = errors.New("guild: cannot send an empty message")
	ErrNotTextChannel     = errors.New("guild: cannot send messages in a non-text channel")
	// ErrOverloaded is a full actor mailbox: try again a little later.
	ErrOverloaded = errors.New("guild: overloaded")
	// ErrNotOwner is a call for a guild the ring places on another node.
	ErrNotOwner = errors.New("guild: guild is not served by this node")
)

// InvalidForm is a validation failure of one request field: the field's
// name, Discord's error code for it (BASE_TYPE_MAX_LENGTH, ...) and a
// message. The edge answers it as 50035 Invalid Form Body.
func InvalidForm(field, code, msg string) *FormError {
	return &FormError{Field: field, ErrCode: code, Msg: msg}
}

// FormError is a validation failure of one request field.
type FormError struct {
	Field, ErrCode, Msg string
}

func (e *FormError) Error() string { return "Invalid Form Body: " + e.Field + ": " + e.Msg }
