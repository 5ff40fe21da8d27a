package loadtest

import "testing"

func TestOpusFixtures(t *testing.T) {
	for _, name := range []string{"a", "b"} {
		frames, err := OpusFrames(name)
		if err != nil || len(frames) != 151 {
			t.Fatalf("%s: %d frames, %v", name, len(frames), err)
		}
		for i, f := range frames {
			// Every frame is a real Opus packet whose TOC byte (RFC 6716
			// §3.1) says one 20 ms frame, as opusenc was asked for.
			config, code := f[0]>>3, f[0]&3
			if len(f) < 2 || config < 16 || config%4 != 3 || code != 0 {
				t.Fatalf("%s frame %d: TOC %#x", name, i, f[0])
			}
		}
	}
	if _, err := ParseOpusFrames([]byte{0, 5, 1}); err == nil {
		t.Fatal("truncated fixture accepted")
	}
	if _, err := OpusFrames("c"); err == nil {
		t.Fatal("missing fixture")
	}
}
