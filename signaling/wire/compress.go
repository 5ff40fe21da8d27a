package wire

import (
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
)

// Compressor turns each gateway payload into the bytes of one binary frame
// of a transport-compressed stream (gateway.md §2.2).
type Compressor interface {
	Compress(dst, payload []byte) ([]byte, error)
}

// NewCompressor returns the compressor for a compress= query value, nil for
// none, or ErrPayload for an unknown value.
func NewCompressor(mode string) (Compressor, error) {
	switch mode {
	case "":
		return nil, nil
	case "zlib-stream":
		return &ZlibStream{}, nil
	case "zstd-stream":
		return NewZstdStream()
	}
	return nil, ErrPayload
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

// zstdWindow is the zstd window; the smallest windows keep per-session
// encoder memory low at some cost in ratio.
const zstdWindow = 32 << 10

// ZstdStream is one zstd-stream context: a single frame that is flushed
// after each payload and never ended.
type ZstdStream struct {
	out appender
	enc *zstd.Encoder
}

// NewZstdStream returns a fresh context.
func NewZstdStream() (*ZstdStream, error) {
	z := &ZstdStream{}
	enc, err := zstd.NewWriter(&z.out, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(zstdWindow),
		zstd.WithLowerEncoderMem(true), zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, err
	}
	z.enc = enc
	return z, nil
}

// Compress appends the compressed form of payload to dst.
func (z *ZstdStream) Compress(dst, payload []byte) ([]byte, error) {
	z.out.b = dst
	if _, err := z.enc.Write(payload); err != nil {
		return dst, err
	}
	if err := z.enc.Flush(); err != nil {
		return dst, err
	}
	out := z.out.b
	z.out.b = nil
	return out, nil
}
