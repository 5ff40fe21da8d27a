package signaling

import (
	"context"
	"errors"
	"net/http"

	"github.com/chorus-voice/chorus/guild"
)

// The edge's own REST errors; guild's domain errors come from below.
var (
	errBadVersion   = errors.New("rest: invalid API version")
	errUnauthorized = errors.New("rest: unauthorized")
	errBodyTooLarge = errors.New("rest: request entity too large")
)

// apiError is Discord's JSON error body (gateway.md §18.1).
type apiError struct {
	Message string `json:"message"`
	Code    int    `json:"code"`
	Errors  any    `json:"errors,omitempty"`
}

// restErrors is the one table from an error to its HTTP status and
// Discord's JSON error (gateway.md §18.1). The first entry err Is wins.
var restErrors = []struct {
	err    error
	status int
	body   apiError
}{
	{errBadVersion, http.StatusBadRequest, apiError{Code: 50041, Message: "Invalid API version provided"}},
	{errUnauthorized, http.StatusUnauthorized, apiError{Code: 0, Message: "401: Unauthorized"}},
	{errBodyTooLarge, http.StatusRequestEntityTooLarge, apiError{Code: 40005, Message: "Request entity too large"}},
	{guild.ErrUnknownGuild, http.StatusNotFound, apiError{Code: 10004, Message: "Unknown Guild"}},
	{guild.ErrUnknownChannel, http.StatusNotFound, apiError{Code: 10003, Message: "Unknown Channel"}},
	{guild.ErrUnknownMember, http.StatusNotFound, apiError{Code: 10007, Message: "Unknown Member"}},
	{guild.ErrUnknownMessage, http.StatusNotFound, apiError{Code: 10008, Message: "Unknown Message"}},
	{guild.ErrUnknownRole, http.StatusNotFound, apiError{Code: 10011, Message: "Unknown Role"}},
	{guild.ErrUnknownUser, http.StatusNotFound, apiError{Code: 10013, Message: "Unknown User"}},
	{guild.ErrMissingAccess, http.StatusForbidden, apiError{Code: 50001, Message: "Missing Access"}},
	{guild.ErrMissingPermissions, http.StatusForbidden, apiError{Code: 50013, Message: "Missing Permissions"}},
	{guild.ErrNotAuthor, http.StatusForbidden, apiError{Code: 50005, Message: "Cannot edit a message authored by another user"}},
	{guild.ErrEmptyMessage, http.StatusBadRequest, apiError{Code: 50006, Message: "Cannot send an empty message"}},
	{guild.ErrNotTextChannel, http.StatusBadRequest, apiError{Code: 50008, Message: "Cannot send messages in a non-text channel"}},
	{guild.ErrOverloaded, http.StatusServiceUnavailable, apiError{Code: 130000, Message: "API resource is currently overloaded. Try again a little later."}},
	{guild.ErrNotOwner, http.StatusServiceUnavailable, apiError{Code: 0, Message: "guild is not served by this node"}},
	{guild.ErrUnavailable, http.StatusServiceUnavailable, apiError{Code: 0, Message: "503: Service Unavailable (the guild is moving between nodes; retry)"}},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, apiError{Code: 0, Message: "timed out"}},
	{context.Canceled, http.StatusServiceUnavailable, apiError{Code: 0, Message: "timed out"}},
	{errStoreUnavailable, http.StatusServiceUnavailable, apiError{Code: 0, Message: "503: Service Unavailable"}},
	{errNoCluster, http.StatusNotFound, apiError{Code: 0, Message: "404: this node has no cluster membership"}},
	{errUnknownNode, http.StatusNotFound, apiError{Code: 0, Message: "404: no such node in the cluster"}},
}

// errorResponse returns the status and body that answer err: a table
// entry, a form error as 50035 with its field, or 500.
func errorResponse(err error) (int, apiError) {
	var fe *guild.FormError
	if errors.As(err, &fe) {
		return http.StatusBadRequest, apiError{Message: "Invalid Form Body", Code: 50035,
			Errors: map[string]any{fe.Field: map[string]any{"_errors": []map[string]string{{"code": fe.ErrCode, "message": fe.Msg}}}}}
	}
	for _, e := range restErrors {
		if errors.Is(err, e.err) {
			return e.status, e.body
		}
	}
	return http.StatusInternalServerError, apiError{Message: "500: Internal Server Error", Code: 0}
}
