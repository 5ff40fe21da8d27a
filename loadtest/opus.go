package loadtest

import (
	"embed"
	"encoding/binary"
	"fmt"
)

// The Opus fixtures (opus/make.py): two 3-second stereo tones encoded once
// with opusenc, 20 ms frames, stored as 2-byte big-endian length + packet.
//
//go:embed opus/*.frames
var opusFiles embed.FS

// OpusFrames returns the frames of fixture "a" or "b".
func OpusFrames(name string) ([][]byte, error) {
	b, err := opusFiles.ReadFile("opus/" + name + ".frames")
	if err != nil {
		return nil, err
	}
	return ParseOpusFrames(b)
}

// ParseOpusFrames splits the fixture format into frames.
func ParseOpusFrames(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
			return nil, fmt.Errorf("loadtest: truncated Opus fixture")
		}
		n := int(binary.BigEndian.Uint16(b))
		out = append(out, b[2:2+n])
		b = b[2+n:]
	}
	return out, nil
}
