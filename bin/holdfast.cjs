#!/usr/bin/env node
// holdfast's command line.
//
// `pg archive-push` and `pg archive-get` run once per WAL file (archive_command, restore_command),
// so their start-up is most of what a call costs. This entry is CommonJS so that Node does not set
// up its ES-module loader for them (6-18 ms per call measured here). They run from
// dist/holdfast-wal.cjs: the same CLI as one file holding only what these commands may load
// (scripts/build.mjs), compiled from the V8 code cache dist/holdfast-wal.cjs.cache that the build
// made by running it once. The cache is used only when its first 32 bytes are the SHA-256 of this
// very bundle (V8 itself checks just the source's length, its own version and flags); otherwise, or
// when V8 rejects it, the bundle is compiled from source as usual. Every other command loads
// dist/holdfast.mjs, whose commands are lazily loaded chunks.
'use strict';

const [command, sub] = process.argv.slice(2);
if (command === 'pg' && (sub === 'archive-push' || sub === 'archive-get')) runWalBundle();
else {
  import('../dist/holdfast.mjs').catch((err) => {
    process.stderr.write(`holdfast: cannot load dist/holdfast.mjs (run \`npm run build\`): ${err && err.message ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}

function runWalBundle() {
  const { readFileSync, writeFileSync, renameSync } = require('node:fs');
  const { Script } = require('node:vm');
  const { createHash } = require('node:crypto');
  const { createRequire } = require('node:module');
  const file = require.resolve('../dist/holdfast-wal.cjs');
  // esbuild writes ASCII (non-ASCII characters escaped), so latin1 decodes it exactly and cheaply.
  const source = readFileSync(file, 'latin1');
  const digest = createHash('sha256').update(source, 'latin1').digest();
  let cachedData;
  try {
    const cache = readFileSync(`${file}.cache`);
    if (cache.length > 32 && digest.equals(cache.subarray(0, 32))) cachedData = cache.subarray(32);
  } catch {
    // no cache: compile from source
  }
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, { filename: file, cachedData });
  // scripts/build.mjs: keep what this run compiled, bound to the bundle's digest.
  const out = process.env['HOLDFAST_BUILD_WAL_CODE_CACHE'];
  if (out) {
    process.on('exit', () => {
      writeFileSync(`${out}.tmp`, Buffer.concat([digest, script.createCachedData()]));
      renameSync(`${out}.tmp`, out);
    });
  }
  const module = { exports: {} };
  script.runInThisContext()(module.exports, createRequire(file), module, file, require('node:path').dirname(file));
}
