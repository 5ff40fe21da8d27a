package guild

import (
	"fmt"
	"unicode/utf8"
)

// Lengths of the user-supplied strings Chorus stores or fans out, in
// characters (Discord's limits). Every one is checked where it enters, so
// nothing a client sends can make an event or a stored record large.
const (
	MaxNick        = 32   // member nick; "" removes it
	MaxName        = 100  // guild, channel and role names
	MaxTopic       = 1024 // channel topic
	MaxContent     = 2000 // message content
	MaxNonceLength = 25   // message nonce
	MinUsername    = 2    // username (admin API)
	MaxUsername    = 32
	MaxGlobalName  = 32 // display name; "" for none
)

// CheckLength returns a form error unless s is UTF-8 of min to max
// characters.
func CheckLength(field, s string, min, max int) error {
	if n := utf8.RuneCountInString(s); n < min || n > max || !utf8.ValidString(s) {
		return InvalidForm(field, "BASE_TYPE_BAD_LENGTH", fmt.Sprintf("Must be between %d and %d in length.", min, max))
	}
	return nil
}
