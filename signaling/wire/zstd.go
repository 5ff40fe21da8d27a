package wire

import (
	"encoding/binary"
	"math/bits"
	"sync"
)

// A zstd-stream context (gateway.md §2.2) is one zstd frame (RFC 8878) per
// connection that is flushed after every payload and never ended; the
// client keeps one decompression context for all of it. A general-purpose
// encoder keeps its match tables and window between flushes: about 430 KB
// per connection with klauspost/compress at its smallest settings, which is
// what an idle session would cost. This encoder keeps only the last
// zstdHistory bytes of what it sent; everything else is scratch taken from
// a pool for the length of one Compress.
//
// Each payload becomes compressed blocks of the simplest form the format
// allows: raw literals, and sequences coded with the predefined FSE
// distributions (RFC 8878 §3.1.1.3.2.2), found by a greedy LZ77 parse over
// the history and the payload. Offsets are always sent as real offsets,
// never as repeat codes, so no repeat-offset state needs keeping either.

// zstdHistory is how much of the previous payloads later ones may refer to.
const zstdHistory = 4 << 10

// zstdWindowLog is the window the frame declares: 256 KiB, so that blocks
// can be the format's maximum 128 KiB and refer to the history before them.
const (
	zstdWindowLog = 18
	zstdMaxBlock  = 128 << 10
	zstdMinMatch  = 4
	zstdHashLog   = 12
)

// ZstdStream is one zstd-stream context. The zero value is ready.
type ZstdStream struct {
	started bool
	hist    []byte // the last bytes sent, at most zstdHistory
}

// zstdScratch is one Compress call's working memory.
type zstdScratch struct {
	buf   []byte // history followed by the payload
	table [1 << zstdHashLog]int32
	seqs  []zstdSeq
	lits  []byte
	bw    bitWriter
}

type zstdSeq struct {
	lit, match, offset uint32
}

var zstdScratchPool = sync.Pool{New: func() any { return new(zstdScratch) }}

// Compress appends the compressed form of payload to dst: the frame header
// on the stream's first call, then the payload's blocks, none of them last.
func (z *ZstdStream) Compress(dst, payload []byte) ([]byte, error) {
	if !z.started {
		// Magic, then a descriptor with no content size, no checksum, no
		// dictionary and not single-segment, then the window descriptor.
		dst = binary.LittleEndian.AppendUint32(dst, 0xFD2FB528)
		dst = append(dst, 0x00, byte(zstdWindowLog-10)<<3)
		z.started = true
	}
	sc := zstdScratchPool.Get().(*zstdScratch)
	defer zstdScratchPool.Put(sc)
	sc.buf = append(append(sc.buf[:0], z.hist...), payload...)
	clear(sc.table[:])
	for i := 0; i+zstdMinMatch <= len(z.hist); i++ {
		sc.table[zstdHash(sc.buf[i:])] = int32(i) + 1
	}
	if len(payload) == 0 {
		dst = appendBlockHeader(dst, 0, 0) // an empty raw block
	}
	for start := len(z.hist); start < len(sc.buf); start += zstdMaxBlock {
		end := min(start+zstdMaxBlock, len(sc.buf))
		dst = sc.block(dst, start, end)
	}
	// Keep the tail of what the client has now decoded, in a buffer of
	// exactly zstdHistory bytes.
	if z.hist == nil {
		z.hist = make([]byte, 0, zstdHistory)
	}
	if len(sc.buf) > zstdHistory {
		z.hist = append(z.hist[:0], sc.buf[len(sc.buf)-zstdHistory:]...)
	} else {
		z.hist = append(z.hist[:0], sc.buf...)
	}
	if cap(sc.buf) > 1<<20 {
		sc.buf = nil // a burst's huge buffer is left to the GC
	}
	return dst, nil
}

func zstdHash(b []byte) uint32 {
	return (binary.LittleEndian.Uint32(b) * 2654435761) >> (32 - zstdHashLog)
}

// Block types (RFC 8878 §3.1.1.2).
const (
	blockRaw        = 0
	blockCompressed = 2
)

// appendBlockHeader appends a block header that is never Last_Block.
func appendBlockHeader(dst []byte, typ, size int) []byte {
	h := uint32(size)<<3 | uint32(typ)<<1
	return append(dst, byte(h), byte(h>>8), byte(h>>16))
}

// block appends the block for sc.buf[start:end]: compressed, or raw when
// compressing does not make it smaller.
func (sc *zstdScratch) block(dst []byte, start, end int) []byte {
	sc.parse(start, end)
	headerAt := len(dst)
	dst = appendBlockHeader(dst, blockCompressed, 0)
	dst = sc.appendCompressed(dst)
	if size := len(dst) - headerAt - 3; size < end-start {
		h := appendBlockHeader(nil, blockCompressed, size)
		copy(dst[headerAt:], h)
		return dst
	}
	dst = appendBlockHeader(dst[:headerAt], blockRaw, end-start)
	return append(dst, sc.buf[start:end]...)
}

// parse finds matches for sc.buf[start:end] greedily, referring back as far
// as the window allows, and leaves sequences and literals in sc.
func (sc *zstdScratch) parse(start, end int) {
	sc.seqs, sc.lits = sc.seqs[:0], sc.lits[:0]
	buf := sc.buf[:end]
	anchor, i := start, start
	for i+zstdMinMatch <= end {
		h := zstdHash(buf[i:])
		cand := int(sc.table[h]) - 1
		sc.table[h] = int32(i) + 1
		if cand < 0 || i-cand > 1<<zstdWindowLog ||
			binary.LittleEndian.Uint32(buf[cand:]) != binary.LittleEndian.Uint32(buf[i:]) {
			i++
			continue
		}
		n := zstdMinMatch
		for i+n < end && buf[cand+n] == buf[i+n] {
			n++
		}
		for i > anchor && cand > 0 && buf[i-1] == buf[cand-1] {
			i, cand, n = i-1, cand-1, n+1
		}
		sc.lits = append(sc.lits, buf[anchor:i]...)
		sc.seqs = append(sc.seqs, zstdSeq{lit: uint32(i - anchor), match: uint32(n), offset: uint32(i - cand)})
		i += n
		anchor = i
	}
	sc.lits = append(sc.lits, buf[anchor:end]...)
}

// appendCompressed appends the literals and sequences sections.
func (sc *zstdScratch) appendCompressed(dst []byte) []byte {
	// Raw literals section header (RFC 8878 §3.1.1.3.1.1).
	switch n := len(sc.lits); {
	case n < 32:
		dst = append(dst, byte(n<<3))
	case n < 4096:
		dst = append(dst, byte(1<<2|n<<4), byte(n>>4))
	default:
		dst = append(dst, byte(3<<2|n<<4), byte(n>>4), byte(n>>12))
	}
	dst = append(dst, sc.lits...)
	// Sequences section header (§3.1.1.3.2.1).
	switch n := len(sc.seqs); {
	case n == 0:
		return append(dst, 0)
	case n < 128:
		dst = append(dst, byte(n))
	case n < 0x7F00:
		dst = append(dst, byte(n>>8)+0x80, byte(n))
	default:
		dst = append(dst, 0xFF, byte(n-0x7F00), byte((n-0x7F00)>>8))
	}
	dst = append(dst, 0) // all three codes use their predefined distributions
	return sc.appendSequences(dst)
}

// appendSequences writes the sequences' bitstream, last sequence first, as
// the decoder reads it backwards (§3.1.1.3.2.2, §4.1).
func (sc *zstdScratch) appendSequences(dst []byte) []byte {
	tabs := predefinedFSE()
	w := &sc.bw
	w.reset(dst)
	last := sc.seqs[len(sc.seqs)-1]
	llc, mlc, ofc := llCode(last.lit), mlCode(last.match), ofCode(last.offset)
	var llState, mlState, ofState uint32
	mlState = tabs.ml.init(mlc)
	ofState = tabs.of.init(ofc)
	llState = tabs.ll.init(llc)
	w.add(last.lit-llBase[llc], llBits[llc])
	w.add(last.match-mlBase[mlc], mlBits[mlc])
	w.add(last.offset+3-1<<ofc, uint8(ofc))
	for n := len(sc.seqs) - 2; n >= 0; n-- {
		s := sc.seqs[n]
		llc, mlc, ofc := llCode(s.lit), mlCode(s.match), ofCode(s.offset)
		ofState = tabs.of.encode(w, ofState, ofc)
		mlState = tabs.ml.encode(w, mlState, mlc)
		llState = tabs.ll.encode(w, llState, llc)
		w.add(s.lit-llBase[llc], llBits[llc])
		w.add(s.match-mlBase[mlc], mlBits[mlc])
		w.add(s.offset+3-1<<ofc, uint8(ofc))
	}
	w.add(mlState, tabs.ml.log)
	w.add(ofState, tabs.of.log)
	w.add(llState, tabs.ll.log)
	return w.close()
}

// Literal and match length codes (§3.1.1.3.2.1.1): the number of extra
// bits of each code; baselines follow from them.
var (
	llBits = [36]uint8{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		1, 1, 1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	mlBits = [53]uint8{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	llBase = baselines(llBits[:], 0)
	mlBase = baselines(mlBits[:], 3)
)

func baselines(extra []uint8, first uint32) []uint32 {
	out := make([]uint32, len(extra))
	next := first
	for i, b := range extra {
		out[i] = next
		next += 1 << b
	}
	return out
}

// code returns the largest code whose baseline is at most v.
func code(base []uint32, v uint32) uint8 {
	lo, hi := 0, len(base)-1
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if base[mid] <= v {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return uint8(lo)
}

func llCode(v uint32) uint8 { return code(llBase, v) }
func mlCode(v uint32) uint8 { return code(mlBase, v) }

// ofCode is the offset code of a real offset: its value is offset+3 (1 to
// 3 would name repeat offsets), and the code is that value's top bit.
func ofCode(offset uint32) uint8 { return uint8(bits.Len32(offset+3) - 1) }

// fseTable encodes the symbols of one predefined distribution (the
// construction of the FSE reference encoder, FSE_buildCTable).
type fseTable struct {
	log   uint8
	state []uint32 // next state, by (state >> bits) + findState
	sym   []fseSymbol
}

type fseSymbol struct {
	deltaBits uint32 // (bits << 16) - minimum state for that many bits
	findState int32
}

func newFSETable(norm []int16, log uint8) *fseTable {
	size := 1 << log
	symbols := make([]uint8, size)
	cumul := make([]int, len(norm)+1)
	high := size - 1
	for s, n := range norm {
		if n == -1 { // "less than one": one cell at the top of the table
			cumul[s+1] = cumul[s] + 1
			symbols[high] = uint8(s)
			high--
		} else {
			cumul[s+1] = cumul[s] + int(n)
		}
	}
	step, pos := size>>1+size>>3+3, 0
	for s, n := range norm {
		for range max(int(n), 0) {
			symbols[pos] = uint8(s)
			for pos = (pos + step) & (size - 1); pos > high; pos = (pos + step) & (size - 1) {
			}
		}
	}
	t := &fseTable{log: log, state: make([]uint32, size), sym: make([]fseSymbol, len(norm))}
	next := append([]int(nil), cumul...)
	for u, s := range symbols {
		t.state[next[s]] = uint32(size + u)
		next[s]++
	}
	total := 0
	for s, n := range norm {
		switch n {
		case 0:
		case -1, 1:
			t.sym[s] = fseSymbol{deltaBits: uint32(log)<<16 - uint32(size), findState: int32(total - 1)}
			total++
		default:
			maxOut := uint32(log) - uint32(bits.Len32(uint32(n-1))-1)
			t.sym[s] = fseSymbol{deltaBits: maxOut<<16 - uint32(n)<<maxOut, findState: int32(total - int(n))}
			total += int(n)
		}
	}
	return t
}

// init returns the state that starts encoding with symbol s.
func (t *fseTable) init(s uint8) uint32 {
	sym := t.sym[s]
	nb := (sym.deltaBits + 1<<15) >> 16
	v := nb<<16 - sym.deltaBits
	return t.state[int32(v>>nb)+sym.findState]
}

// encode writes the bits that lead from state to symbol s and returns the
// new state.
func (t *fseTable) encode(w *bitWriter, state uint32, s uint8) uint32 {
	sym := t.sym[s]
	nb := (state + sym.deltaBits) >> 16
	w.add(state, uint8(nb))
	return t.state[int32(state>>nb)+sym.findState]
}

type fseTables struct{ ll, ml, of *fseTable }

// predefinedFSE builds the three predefined distributions once (§3.1.1.3.2.2).
var predefinedFSE = sync.OnceValue(func() fseTables {
	return fseTables{
		ll: newFSETable([]int16{4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1,
			2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1, -1, -1, -1, -1}, 6),
		ml: newFSETable([]int16{1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1,
			1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
			1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1}, 6),
		of: newFSETable([]int16{1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1,
			1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1}, 5),
	}
})

// bitWriter appends bits least significant first, as zstd's backward
// bitstreams are written (§4.1).
type bitWriter struct {
	out  []byte
	acc  uint64
	nacc uint8
}

func (w *bitWriter) reset(dst []byte) { w.out, w.acc, w.nacc = dst, 0, 0 }

// add appends the low n bits of v (n ≤ 32).
func (w *bitWriter) add(v uint32, n uint8) {
	w.acc |= uint64(v&(1<<n-1)) << w.nacc
	w.nacc += n
	for w.nacc >= 8 {
		w.out = append(w.out, byte(w.acc))
		w.acc >>= 8
		w.nacc -= 8
	}
}

// close appends the end mark (a single 1 bit) and the last partial byte.
func (w *bitWriter) close() []byte {
	w.add(1, 1)
	if w.nacc > 0 {
		w.out = append(w.out, byte(w.acc))
	}
	out := w.out
	w.out = nil
	return out
}
