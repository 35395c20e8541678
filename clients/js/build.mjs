// Builds dist/client.js (a minified script defining window.Faye, also written
// to crates/faye-http/assets/client.js, which the server embeds) and
// dist/faye.mjs (an ES module) from src/index.js with esbuild. With --check,
// builds into memory instead and fails unless the committed files are exactly
// that; either way it prints client.js's size, minified and gzipped.
//
//   npm ci && npm run build      (rebuild, after changing src/)
//   npm ci && node build.mjs --check
import { build } from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

const here = path.dirname(fileURLToPath(import.meta.url));
const check = process.argv.includes('--check');
const LIMIT = 8 * 1024; // bytes, gzipped

const common = {
  entryPoints: [path.join(here, 'src', 'index.js')],
  bundle: true,
  write: false,
  target: 'es2020',
  legalComments: 'none',
  logLevel: 'warning',
};
const banner = `/* faye-rs browser client ${JSON.parse(fs.readFileSync(path.join(here, 'package.json'), 'utf8')).version} (MIT OR Apache-2.0) */`;
const outputs = {
  'client.js': await build({
    ...common, format: 'iife', globalName: 'Faye', minify: true, banner: { js: banner },
    // window.Faye = { VERSION, Client, ... }: the module's default export.
    footer: { js: 'Faye=Faye.default;' },
  }),
  'faye.mjs': await build({ ...common, format: 'esm', banner: { js: banner } }),
};

// Where each output goes, relative to this folder.
const files = [
  ['dist/client.js', 'client.js'],
  ['../../crates/faye-http/assets/client.js', 'client.js'],
  ['dist/faye.mjs', 'faye.mjs'],
];
const stale = [];
for (const [name, output] of files) {
  const text = outputs[output].outputFiles[0].text;
  const file = path.join(here, name);
  if (check) {
    const committed = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
    if (committed !== text) stale.push(name);
  } else {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, text);
  }
}
const script = outputs['client.js'].outputFiles[0].contents;
const gzipped = zlib.gzipSync(script, { level: 9 }).length;
console.log(`client.js: ${script.length} bytes minified, ${gzipped} bytes gzipped (limit ${LIMIT})`);
if (stale.length) {
  console.error(`${stale.join(', ')} (from clients/js) differ from what src/ builds to: ` +
    'run `npm run build` in clients/js and commit');
  process.exit(1);
}
if (gzipped > LIMIT) {
  console.error(`client.js is ${gzipped} bytes gzipped, over the ${LIMIT}-byte limit`);
  process.exit(1);
}
