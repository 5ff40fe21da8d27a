#!/usr/bin/env python3
"""Makes the Opus fixtures of the voice interop tests (run once; the output
is committed): two 3-second stereo tones encoded with a real encoder
(opusenc from Debian's opus-tools, 20 ms frames), unpacked from their Ogg
container into raw Opus packets stored as 2-byte big-endian length + bytes.

    apt-get install opus-tools && python3 make.py
"""
import math, os, struct, subprocess, tempfile, wave


def tone(path, hz, seconds=3.0, rate=48000):
    with wave.open(path, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = bytearray()
        for i in range(int(seconds * rate)):
            v = int(8000 * math.sin(2 * math.pi * hz * i / rate))
            frames += struct.pack("<hh", v, v)
        w.writeframes(bytes(frames))


def ogg_packets(data):
    """Yields the packets of an Ogg stream (RFC 3533)."""
    pos, partial = 0, b""
    while pos < len(data):
        assert data[pos:pos + 4] == b"OggS", "not an Ogg page"
        nseg = data[pos + 26]
        lacing = data[pos + 27:pos + 27 + nseg]
        body = pos + 27 + nseg
        for lace in lacing:
            partial += data[body:body + lace]
            body += lace
            if lace < 255:
                yield partial
                partial = b""
        pos = body


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for name, hz in (("a", 440), ("b", 660)):
        with tempfile.TemporaryDirectory() as tmp:
            wav, opus = os.path.join(tmp, "t.wav"), os.path.join(tmp, "t.opus")
            tone(wav, hz)
            subprocess.run(["opusenc", "--quiet", "--framesize", "20", "--bitrate", "64", wav, opus], check=True)
            packets = list(ogg_packets(open(opus, "rb").read()))
        frames = [p for p in packets if not p.startswith(b"OpusHead") and not p.startswith(b"OpusTags")]
        with open(os.path.join(here, name + ".frames"), "wb") as out:
            for f in frames:
                out.write(struct.pack(">H", len(f)) + f)
        print(name, len(frames), "frames")


if __name__ == "__main__":
    main()
