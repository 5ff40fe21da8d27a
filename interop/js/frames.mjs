// Opus fixture frames (loadtest/opus/*.frames: each frame a big-endian
// u16 length and the packet), shared by the voice scripts.
import fs from 'node:fs';

export function frames(path) {
  const b = fs.readFileSync(path);
  const out = [];
  for (let i = 0; i < b.length;) {
    const n = b.readUInt16BE(i);
    out.push(b.subarray(i + 2, i + 2 + n));
    i += 2 + n;
  }
  return out;
}
