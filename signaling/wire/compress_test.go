package wire

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// syncReader feeds a streaming decompressor one message at a time, the way a
// client keeps one inflate context for the whole connection.
type syncReader struct{ msgs [][]byte }

func (r *syncReader) Read(p []byte) (int, error) {
	for len(r.msgs) > 0 && len(r.msgs[0]) == 0 {
		r.msgs = r.msgs[1:]
	}
	if len(r.msgs) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.msgs[0])
	r.msgs[0] = r.msgs[0][n:]
	return n, nil
}

func payloads() [][]byte {
	var out [][]byte
	for i := 0; i < 200; i++ {
		out = append(out, []byte(fmt.Sprintf(`{"t":"MESSAGE_CREATE","s":%d,"op":0,"d":{"content":"message number %d %s"}}`, i, i, bytes.Repeat([]byte("x"), i*37%5000))))
	}
	return out
}

func TestZlibStreamRoundTrip(t *testing.T) {
	var z ZlibStream
	var frames [][]byte
	for _, p := range payloads() {
		out, err := z.Compress(nil, p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(out, []byte{0, 0, 0xFF, 0xFF}) {
			t.Fatalf("frame does not end in a sync flush: % x", out[len(out)-4:])
		}
		frames = append(frames, out)
	}
	if frames[0][0] != 0x78 || frames[1][0] == 0x78 && frames[1][1] == 0x9C {
		t.Fatal("zlib header must appear only at the start of the stream")
	}
	// Inflate message by message with one context.
	src := &syncReader{}
	src.msgs = append(src.msgs, frames[0])
	zr, err := zlib.NewReader(src)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range payloads() {
		if i > 0 {
			src.msgs = append(src.msgs, frames[i])
		}
		got := make([]byte, len(p))
		if _, err := io.ReadFull(zr, got); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("payload %d: %v", i, err)
		}
	}
}

func TestZstdStreamRoundTrip(t *testing.T) {
	z := &ZstdStream{}
	// A pipe, so the decoder sees each message only after the previous
	// payload was decoded in full: nothing may depend on later frames.
	pr, pw := io.Pipe()
	dec, err := zstd.NewReader(pr, zstd.WithDecoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	defer pw.Close()
	for i, p := range payloads() {
		out, err := z.Compress(nil, p)
		if err != nil {
			t.Fatal(err)
		}
		go pw.Write(out)
		got := make([]byte, len(p))
		if _, err := io.ReadFull(dec, got); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("payload %d: %v", i, err)
		}
	}
}

func TestNewCompressor(t *testing.T) {
	if c, err := NewCompressor(""); c != nil || err != nil {
		t.Fatal("no compression")
	}
	if _, err := NewCompressor("gzip"); err == nil {
		t.Fatal("unknown mode accepted")
	}
}

func FuzzZlibStream(f *testing.F) {
	f.Add([]byte("hello"), []byte("hello again"))
	f.Add([]byte{}, bytes.Repeat([]byte{0}, 10000))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var z ZlibStream
		fa, err := z.Compress(nil, a)
		if err != nil {
			t.Fatal(err)
		}
		fb, err := z.Compress(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		src := &syncReader{msgs: [][]byte{fa, fb}}
		zr, err := zlib.NewReader(src)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(a)+len(b))
		if _, err := io.ReadFull(zr, got); err != nil || !bytes.Equal(got, append(append([]byte{}, a...), b...)) {
			t.Fatalf("round trip failed: %v", err)
		}
	})
}

func TestAppendFrame(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		f := AppendFrame(nil, FrameText, make([]byte, n))
		if f[0] != 0x81 {
			t.Fatalf("n=%d first byte %x", n, f[0])
		}
		hdr := len(f) - n
		want := map[bool]int{true: 2}[n < 126]
		if n >= 126 && n <= 65535 {
			want = 4
		} else if n > 65535 {
			want = 10
		}
		if hdr != want {
			t.Fatalf("n=%d header %d want %d", n, hdr, want)
		}
	}
	c := AppendClose(nil, 4004, string(bytes.Repeat([]byte("r"), 300)))
	if len(c) != 2+125 || c[2] != 0x0F || c[3] != 0xA4 {
		t.Fatalf("close frame % x", c[:4])
	}
}

// clientFrame builds a masked client frame.
func clientFrame(fin bool, op byte, payload []byte, key [4]byte) []byte {
	b := AppendFrame(nil, op, payload)
	if !fin {
		b[0] &^= 0x80
	}
	hdr := len(b) - len(payload)
	b[1] |= 0x80
	out := append(append(append([]byte{}, b[:hdr]...), key[:]...), payload...)
	Unmask(out[hdr+4:], key, 0)
	return out
}

func TestParseFrameHeader(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	payload := []byte(`{"op":1,"d":null}`)
	f := clientFrame(true, FrameText, payload, key)
	h, err := ParseFrameHeader(f)
	if err != nil || !h.Fin || h.Opcode != FrameText || h.Length != uint64(len(payload)) || h.Size != 6 || h.Mask != key {
		t.Fatalf("%+v %v", h, err)
	}
	p := append([]byte{}, f[h.Size:]...)
	Unmask(p, h.Mask, 0)
	if !bytes.Equal(p, payload) {
		t.Fatalf("unmasked %q", p)
	}
	big := clientFrame(true, FrameBinary, make([]byte, 70000), key)
	if h, err := ParseFrameHeader(big); err != nil || h.Length != 70000 || h.Size != 14 {
		t.Fatalf("64-bit length: %+v %v", h, err)
	}
	if _, err := ParseFrameHeader(f[:1]); err != ErrShortHeader {
		t.Fatal("short header")
	}
	for name, tc := range map[string]struct {
		b   []byte
		err error
	}{
		"unmasked":         {AppendFrame(nil, FrameText, payload), ErrUnmasked},
		"reserved bit":     {append([]byte{0xC1}, f[1:]...), ErrReservedBits},
		"reserved opcode":  {append([]byte{0x83}, f[1:]...), ErrBadOpcode},
		"fragmented ping":  {clientFrame(false, FramePing, nil, key), ErrControlFrame},
		"long close":       {clientFrame(true, FrameClose, make([]byte, 126), key), ErrControlFrame},
		"non-minimal 16":   {[]byte{0x81, 0xFE, 0, 5, 1, 2, 3, 4}, ErrLengthEncoded},
		"non-minimal 64":   {[]byte{0x81, 0xFF, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4}, ErrLengthEncoded},
		"top bit of 64bit": {[]byte{0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, ErrLengthEncoded},
	} {
		if _, err := ParseFrameHeader(tc.b); err != tc.err {
			t.Errorf("%s: %v, want %v", name, err, tc.err)
		}
	}
}

func FuzzParseFrameHeader(f *testing.F) {
	f.Add(clientFrame(true, FrameText, []byte("hi"), [4]byte{9, 8, 7, 6}))
	f.Add(clientFrame(true, FrameBinary, make([]byte, 300), [4]byte{}))
	f.Add([]byte{0x88, 0x82, 0, 0, 0, 0, 3, 0xE8})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseFrameHeader(b)
		if err != nil {
			return
		}
		if h.Size != HeaderSize(b[1]) || h.Size > len(b) || !h.Masked {
			t.Fatalf("bad header %+v from % x", h, b)
		}
		if h.Opcode >= 8 && (h.Length > 125 || !h.Fin) {
			t.Fatalf("invalid control frame accepted: %+v", h)
		}
	})
}

// FuzzZstdStream: any sequence of payloads decodes, payload by payload,
// with one streaming decoder (a library's, not ours).
func FuzzZstdStream(f *testing.F) {
	f.Add([]byte("hello"), []byte("hello again, hello again"), 3)
	f.Add([]byte{}, bytes.Repeat([]byte{0}, 300000), 2)
	f.Add(bytes.Repeat([]byte(`{"op":0,"t":"MESSAGE_CREATE"}`), 50), []byte(`{"op":0,"t":"MESSAGE_CREATE","d":{}}`), 5)
	f.Fuzz(func(t *testing.T, a, b []byte, rounds int) {
		rounds = 1 + rounds&7
		var z ZstdStream
		var msgs [][]byte
		var want []byte
		for i := range rounds {
			p := a
			if i%2 == 1 {
				p = b
			}
			out, err := z.Compress(nil, p)
			if err != nil {
				t.Fatal(err)
			}
			if len(z.hist) > zstdHistory {
				t.Fatalf("history of %d bytes", len(z.hist))
			}
			msgs = append(msgs, out)
			want = append(want, p...)
		}
		dec, err := zstd.NewReader(&syncReader{msgs: msgs}, zstd.WithDecoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		defer dec.Close()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(dec, got); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("round trip failed: %v", err)
		}
	})
}

// An idle compressed session keeps only the history: at most zstdHistory
// bytes, however large the payloads were.
func TestZstdStreamStateIsSmall(t *testing.T) {
	var z ZstdStream
	for _, p := range payloads() {
		z.Compress(nil, p)
	}
	z.Compress(nil, bytes.Repeat([]byte("y"), 1<<20))
	if cap(z.hist) != zstdHistory {
		t.Fatalf("history holds %d bytes", cap(z.hist))
	}
}

// The stream compresses: gateway payloads that repeat keys and values
// shrink several times over.
func TestZstdStreamRatio(t *testing.T) {
	var z ZstdStream
	in, out := 0, 0
	for i := range 100 {
		p := []byte(fmt.Sprintf(`{"t":"MESSAGE_CREATE","s":%d,"op":0,"d":{"type":0,"tts":false,"pinned":false,"mentions":[],"mention_roles":[],"mention_everyone":false,"id":"15781%014d","content":"hello %d","channel_id":"1578126684689281024","author":{"id":"1578126684664115200","username":"bob","global_name":"Bob","avatar":null}}}`, i, i*7919, i))
		c, _ := z.Compress(nil, p)
		in, out = in+len(p), out+len(c)
	}
	if ratio := float64(in) / float64(out); ratio < 2.5 {
		t.Fatalf("ratio %.2f", ratio)
	} else {
		t.Logf("ratio %.2f", ratio)
	}
}

// BenchmarkCompress is the per-session cost of one ~400-byte dispatch in
// each transport compression (each session compresses its own copy).
func BenchmarkCompress(b *testing.B) {
	msg := []byte(`{"t":"MESSAGE_CREATE","s":42,"op":0,"d":{"type":0,"tts":false,"pinned":false,"mentions":[],"mention_roles":[],"mention_everyone":false,"id":"1578126684689281999","content":"hello there, how is it going","channel_id":"1578126684689281024","author":{"id":"1578126684664115200","username":"bob","global_name":"Bob","avatar":null}}}`)
	for _, c := range []struct {
		name string
		comp Compressor
	}{{"zlib-stream", &ZlibStream{}}, {"zstd-stream", &ZstdStream{}}} {
		b.Run(c.name, func(b *testing.B) {
			var out []byte
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				msg[40] = byte('0' + i%10)
				out, _ = c.comp.Compress(out[:0], msg)
			}
			b.ReportMetric(float64(len(out)), "bytes/msg")
		})
	}
}
