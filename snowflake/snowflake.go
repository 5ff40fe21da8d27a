// Package snowflake implements Discord-style 64-bit ids (gateway.md §17):
// 42 bits of milliseconds since the Discord epoch, 5 bits worker, 5 bits
// process, 12 bits increment. Ids travel as decimal strings in JSON but are
// accepted as strings or numbers on input (gateway.md §16.4).
package snowflake

import (
	"errors"
	"strconv"
	"sync"
	"time"
)

// Epoch is the Discord epoch, 2015-01-01T00:00:00Z, in Unix milliseconds.
const Epoch = 1420070400000

// ID is a snowflake. The zero value means "no id".
type ID uint64

// ErrSyntax is returned when a value is neither a decimal string nor a number.
var ErrSyntax = errors.New("snowflake: invalid id")

// Time returns the creation time encoded in the id.
func (id ID) Time() time.Time { return time.UnixMilli(int64(id>>22) + Epoch).UTC() }

// String returns the decimal form.
func (id ID) String() string { return strconv.FormatUint(uint64(id), 10) }

// AppendJSON appends the id as a JSON string.
func (id ID) AppendJSON(b []byte) []byte {
	b = append(b, '"')
	b = strconv.AppendUint(b, uint64(id), 10)
	return append(b, '"')
}

// MarshalJSON always emits a string (gateway.md §17).
func (id ID) MarshalJSON() ([]byte, error) { return id.AppendJSON(make([]byte, 0, 22)), nil }

// UnmarshalJSON accepts "123", 123 and null (which leaves zero).
func (id *ID) UnmarshalJSON(b []byte) error {
	v, err := ParseJSON(b)
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ParseJSON parses a JSON token holding an id: a quoted decimal string, a bare
// non-negative integer, or null (zero).
func ParseJSON(b []byte) (ID, error) {
	if len(b) == 4 && string(b) == "null" {
		return 0, nil
	}
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' {
		b = b[1 : len(b)-1]
	}
	return parse(b)
}

// Parse parses a decimal id such as a path segment.
func Parse(s string) (ID, error) { return parse([]byte(s)) }

func parse(b []byte) (ID, error) {
	if len(b) == 0 || len(b) > 20 {
		return 0, ErrSyntax
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, ErrSyntax
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, ErrSyntax
		}
		v = v*10 + d
	}
	return ID(v), nil
}

// FromTime returns the smallest id of the given time, for pagination bounds.
func FromTime(t time.Time) ID {
	ms := t.UnixMilli() - Epoch
	if ms < 0 {
		return 0
	}
	return ID(uint64(ms) << 22)
}

// Generator hands out strictly increasing ids for one worker. The zero value
// is usable and uses worker 0.
type Generator struct {
	mu     sync.Mutex
	worker uint64 // 10 bits: worker<<5 | process
	lastMS int64
	seq    uint64
	now    func() time.Time
}

// NewGenerator returns a generator for a node id in [0, 1023].
func NewGenerator(node uint16) *Generator {
	return &Generator{worker: uint64(node & 0x3FF)}
}

// Next returns a new id. When more than 4096 ids are asked for in one
// millisecond, or the clock steps back, it borrows from the next millisecond so
// ids stay unique and ordered.
func (g *Generator) Next() ID {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now
	if g.now != nil {
		now = g.now
	}
	ms := now().UnixMilli() - Epoch
	if ms <= g.lastMS {
		g.seq++
		if g.seq > 0xFFF {
			g.lastMS++
			g.seq = 0
		}
	} else {
		g.lastMS = ms
		g.seq = 0
	}
	return ID(uint64(g.lastMS)<<22 | g.worker<<12 | g.seq)
}
