package signaling

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/chorus-voice/chorus/guild"
)

func TestErrorResponse(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   int
	}{
		{guild.ErrUnknownGuild, 404, 10004},
		{fmt.Errorf("load: %w", guild.ErrUnknownChannel), 404, 10003}, // wrapped: errors.Is
		{guild.ErrMissingPermissions, 403, 50013},
		{guild.ErrOverloaded, 503, 130000},
		{guild.InvalidForm("nick", "BASE_TYPE_MAX_LENGTH", "too long"), 400, 50035},
		{fmt.Errorf("%w: %w", errStoreUnavailable, errors.New("connection refused")), 503, 0},
		{context.DeadlineExceeded, 503, 0},
		{errBodyTooLarge, 413, 40005},
		{errUnauthorized, 401, 0},
		{errors.New("something unforeseen"), 500, 0},
	}
	for _, tt := range tests {
		status, body := errorResponse(tt.err)
		if status != tt.status || body.Code != tt.code {
			t.Errorf("%v: %d %d, want %d %d", tt.err, status, body.Code, tt.status, tt.code)
		}
	}
	// Every domain error has its row: none falls through to 500.
	for _, err := range []error{guild.ErrUnknownGuild, guild.ErrUnknownChannel, guild.ErrUnknownMember,
		guild.ErrUnknownMessage, guild.ErrUnknownRole, guild.ErrUnknownUser, guild.ErrMissingAccess,
		guild.ErrMissingPermissions, guild.ErrNotAuthor, guild.ErrEmptyMessage, guild.ErrNotTextChannel,
		guild.ErrOverloaded, guild.ErrNotOwner, guild.ErrUnavailable} {
		if status, _ := errorResponse(err); status == 500 {
			t.Errorf("%v has no row in restErrors", err)
		}
	}
}
