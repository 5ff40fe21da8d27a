package wire

import (
	"errors"

	"github.com/klauspost/compress/flate"
)

// ErrUnknownCompression is a compress= value that names no stream.
var ErrUnknownCompression = errors.New("wire: unknown compression")

// Compressor turns each gateway payload into the bytes of one binary frame
// of a transport-compressed stream (gateway.md §2.2).
type Compressor interface {
	Compress(dst, payload []byte) ([]byte, error)
}

// NewCompressor returns the compressor for a compress= query value, nil for
// none, or ErrUnknownCompression for an unknown value.
func NewCompressor(mode string) (Compressor, error) {
	switch mode {
	case "":
		return nil, nil
	case "zlib-stream":
		return &ZlibStream{}, nil
	case "zstd-stream":
		return &ZstdStream{}, nil
	}
	return nil, ErrUnknownCompression
}

// appender is an io.Writer that appends to a slice.
type appender struct{ b []byte }

func (a *appender) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// zlibDict is how much history ZlibStream keeps per connection. The standard
// library's zlib writer holds about 1 MB per stream; a stateless deflate with
// a small rolling dictionary keeps memory per session at this many bytes
// (DESIGN.md, "Transport compression").
const zlibDict = 4 << 10

// ZlibStream is one zlib-stream context: an RFC 1950 header once, then each
// payload as deflate blocks ending in a sync flush (00 00 FF FF), with back
// references into the previous payloads' last zlibDict bytes. The stream is
// never finished, so no Adler-32 trailer is ever due. The zero value is ready.
type ZlibStream struct {
	started bool
	dict    []byte
	out     appender
}

// Compress appends the compressed form of payload to dst.
func (z *ZlibStream) Compress(dst, payload []byte) ([]byte, error) {
	z.out.b = dst
	if !z.started {
		z.out.b = append(z.out.b, 0x78, 0x9C)
		z.started = true
	}
	if err := flate.StatelessDeflate(&z.out, payload, false, z.dict); err != nil {
		return dst, err
	}
	if z.dict == nil {
		z.dict = make([]byte, 0, zlibDict) // exactly: append would round up
	}
	if len(payload) >= zlibDict {
		z.dict = append(z.dict[:0], payload[len(payload)-zlibDict:]...)
	} else {
		if keep := zlibDict - len(payload); len(z.dict) > keep {
			z.dict = append(z.dict[:0], z.dict[len(z.dict)-keep:]...)
		}
		z.dict = append(z.dict, payload...)
	}
	out := z.out.b
	z.out.b = nil
	return out, nil
}
