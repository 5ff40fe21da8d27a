// Builds src/ into dist/ (committed; embedded into the chorus binary with
// go:embed): one bundled script, the page and the stylesheet, and
// dist/source.sha256, the digest of everything the build read. web's Go
// test recomputes that digest, so committed output that no longer matches
// its sources fails the suite: run `npm ci && npm run build` in web/.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';

export function sourceDigest() {
  const files = ['build.mjs', 'package-lock.json', ...readdirSync('src').sort().map((f) => 'src/' + f)];
  const h = createHash('sha256');
  for (const f of files) h.update(f + '\0').update(readFileSync(f)).update('\0');
  return h.digest('hex');
}

rmSync('dist', { recursive: true, force: true });
mkdirSync('dist');
await build({
  entryPoints: ['src/app.js'], bundle: true, format: 'esm', target: 'es2020',
  minify: true, legalComments: 'none', outfile: 'dist/app.js', logLevel: 'warning',
});
copyFileSync('src/index.html', 'dist/index.html');
copyFileSync('src/app.css', 'dist/app.css');
writeFileSync('dist/source.sha256', sourceDigest() + '\n');
console.log('web/dist built');
