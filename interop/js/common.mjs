// What the interop scripts share: their settings from the environment
// (set by the Go test that runs them), a bound on each wait, and the Opus
// fixture frames.
import fs from 'node:fs';

// env returns a setting the test must have given.
export const env = (k) => {
  if (!process.env[k]) throw new Error(`missing ${k}`);
  return process.env[k];
};

// within settles as p does, or rejects after ms naming what it waited for.
export const within = (p, ms, what) =>
  Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`timeout: ${what}`)), ms))]);

// frames reads loadtest/opus/*.frames: each frame a big-endian u16 length
// and the packet.
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
