package guild

import "fmt"

// Error is a failed guild operation with its Discord JSON error code and
// HTTP status (gateway.md §18.1), so the REST layer can answer it as is.
type Error struct {
	Status  int
	Code    int
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d)", e.Message, e.Code) }

// Errors the guild layer returns.
var (
	ErrUnknownGuild       = &Error{404, 10004, "Unknown Guild"}
	ErrUnknownChannel     = &Error{404, 10003, "Unknown Channel"}
	ErrUnknownMember      = &Error{404, 10007, "Unknown Member"}
	ErrUnknownMessage     = &Error{404, 10008, "Unknown Message"}
	ErrUnknownRole        = &Error{404, 10011, "Unknown Role"}
	ErrUnknownUser        = &Error{404, 10013, "Unknown User"}
	ErrMissingAccess      = &Error{403, 50001, "Missing Access"}
	ErrMissingPermissions = &Error{403, 50013, "Missing Permissions"}
	ErrNotAuthor          = &Error{403, 50005, "Cannot edit a message authored by another user"}
	ErrEmptyMessage       = &Error{400, 50006, "Cannot send an empty message"}
	ErrNotTextChannel     = &Error{400, 50008, "Cannot send messages in a non-text channel"}
	ErrOverloaded         = &Error{503, 130000, "API resource is currently overloaded. Try again a little later."}
	ErrNotOwner           = &Error{503, 0, "guild is not served by this node"}
)

// InvalidForm is a 50035 Invalid Form Body error for one field.
func InvalidForm(field, code, msg string) *FormError {
	return &FormError{Field: field, ErrCode: code, Msg: msg}
}

// FormError is a validation failure of one request field.
type FormError struct {
	Field, ErrCode, Msg string
}

func (e *FormError) Error() string { return "Invalid Form Body: " + e.Field + ": " + e.Msg }
