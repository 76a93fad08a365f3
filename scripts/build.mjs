// Bundle the CLI into dist/ with esbuild. Commands are split into lazily loaded chunks so that
// start-up (once per WAL segment under archive_command) parses only what the command needs.
import { build } from 'esbuild';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
// Build into a fresh directory and swap it in at the end, so a process running the CLI while
// someone rebuilds never sees a half-written dist/.
const out = `dist.tmp-${process.pid}`;
rmSync(out, { recursive: true, force: true });
await build({
  entryPoints: { holdfast: 'src/cli/entry.ts', 'chunk-worker': 'src/files/chunk-worker.ts', 'restore-worker': 'src/files/restore-worker.ts' },
  outdir: out,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  sourcemap: 'linked',
  chunkNames: 'chunks/[name]-[hash]',
  define: { __HOLDFAST_VERSION__: JSON.stringify(pkg.version) },
  logLevel: 'warning',
});

// pg archive-push and archive-get run once per WAL file (archive_command, restore_command), so a
// call's start-up is most of its cost: bin/holdfast.cjs runs them from dist/holdfast-wal.cjs, the
// same CLI as one CommonJS file with every module it may need inlined (no chunk to resolve, one
// instance of each module) and the other commands left out, compiled from a V8 code cache
// (trainWalCodeCache below). Dynamic imports of packages become require() (all of them ship
// CommonJS), so the file runs in a plain vm.Script.
const walOnly = {
  name: 'wal-commands-only',
  setup(b) {
    b.onResolve({ filter: /^\.\/cmd-/ }, (a) =>
      a.importer.endsWith('/src/cli/commands.ts') && !a.path.startsWith('./cmd-pg-archive.') ? { path: a.path, namespace: 'wal-stub' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'wal-stub' }, (a) => ({
      contents: `export async function run() { throw new Error(${JSON.stringify(`${a.path} is not part of dist/holdfast-wal.cjs (bin/holdfast.cjs sends only pg archive-push and archive-get there)`)}); }`,
      loader: 'js',
    }));
  },
};
await build({
  entryPoints: { 'holdfast-wal': 'src/cli/entry.ts' },
  outdir: out,
  outExtension: { '.js': '.cjs' },
  bundle: true,
  splitting: false,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  supported: { 'dynamic-import': false },
  sourcemap: 'linked',
  define: { __HOLDFAST_VERSION__: JSON.stringify(pkg.version), 'import.meta.url': '__holdfastBundleUrl' },
  banner: { js: 'var __holdfastBundleUrl = require("node:url").pathToFileURL(__filename).href;' },
  plugins: [walOnly],
  logLevel: 'warning',
});

// Optional native helper (glibc mallopt), compiled against Node's own headers. Failure is not an
// error: holdfast runs without it, with a higher peak RSS.
const nodeInclude = ['/usr/include/node', `${process.execPath.replace(/\/bin\/node$/, '')}/include/node`];
const include = nodeInclude.find((d) => { try { readFileSync(`${d}/node_api.h`); return true; } catch { return false; } });
// zstd-sync links the system libzstd (no -dev headers needed); without it workers use the
// async binding.
const natives = [
  ['malloc-tune', []],
  ['zstd-sync', ['-l:libzstd.so.1']],
];
if (include) {
  for (const [name, libs] of natives) {
    try {
      execFileSync('cc', ['-O2', '-shared', '-fPIC', `-I${include}`, '-o', `${out}/${name}.node`, `native/${name}.c`, ...libs], { stdio: 'inherit' });
    } catch {
      console.warn(`build: native/${name}.c did not compile; continuing without it`);
    }
  }
} else {
  console.warn("build: Node's headers (node_api.h) not found; building without the optional native helpers");
}

// The native front of archive-push --async (native/wal-front.c): answers calls whose file the
// async worker already recorded without starting Node, and runs bin/holdfast.cjs with this node
// for every other call. It needs only a C compiler and libcrypto.so.3 (no headers). Optional.
try {
  execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-pthread', `-DHOLDFAST_NODE=${JSON.stringify(process.execPath)}`, '-o', `${out}/holdfast-push`, 'native/wal-front.c', '-l:libcrypto.so.3', '-l:libzstd.so.1'], { stdio: 'inherit' });
} catch {
  console.warn('build: native/wal-front.c did not compile; archive_command runs the Node CLI (bin/holdfast.cjs) directly');
}

const old = `dist.old-${process.pid}`;
try {
  renameSync('dist', old);
} catch {
  // no previous build
}
renameSync(out, 'dist');
rmSync(old, { recursive: true, force: true });
trainWalCodeCache();

// Tests run the type-checked modules in build/; give them the same optional helpers.
for (const [name] of natives) {
  // To a temporary name, then renamed: a test process that has the old file mapped keeps it intact
  // (copying over it in place crashed running tests inside the native helper).
  if (existsSync(`dist/${name}.node`) && existsSync('build')) {
    copyFileSync(`dist/${name}.node`, `build/.${name}.node.${process.pid}`);
    renameSync(`build/.${name}.node.${process.pid}`, `build/${name}.node`);
  }
}

/**
 * The V8 code cache of dist/holdfast-wal.cjs: bin/holdfast.cjs runs an `archive-push --async` (its
 * spool is empty and the file has no .ready marker, so the call checks the spool and then archives
 * the file itself, the synchronous path) and an `archive-get` of a small synthetic segment into a
 * throw-away repository, and keeps the bytecode of every function those runs compiled (the second
 * run starts from the first one's cache). Without it the commands work the same, compiling the
 * bundle on every call.
 */
function trainWalCodeCache() {
  const cache = 'dist/holdfast-wal.cjs.cache';
  const tmp = mkdtempSync(join(tmpdir(), 'holdfast-build-'));
  const env = { ...process.env, HOLDFAST_CONFIG: '/dev/null', HOLDFAST_REPO: join(tmp, 'repo'), HOLDFAST_PASSWORD_FILE: join(tmp, 'password'), HOLDFAST_STATE_DIR: join(tmp, 'state'), HOLDFAST_LOCK_DIR: join(tmp, 'locks'), HOLDFAST_LOG_LEVEL: 'warn' };
  // V8 accepts a cache only under the flags it was made with: train with node's defaults.
  delete env.NODE_OPTIONS;
  const cli = (args, extra = {}) => execFileSync(process.execPath, ['bin/holdfast.cjs', ...args], { env: { ...env, ...extra }, stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    rmSync(cache, { force: true });
    writeFileSync(join(tmp, 'password'), 'holdfast build\n', { mode: 0o600 });
    const segment = trainingSegment(join(tmp, 'pg_wal'));
    cli(['init', '--kdf-cost', '10']);
    const train = { HOLDFAST_BUILD_WAL_CODE_CACHE: cache };
    cli(['pg', 'archive-push', '--async', '--cluster', 'build', segment], train);
    cli(['pg', 'archive-get', '--cluster', 'build', '000000010000000000000001', join(tmp, 'restored')], train);
  } catch (err) {
    rmSync(cache, { force: true });
    console.warn(`build: no code cache for dist/holdfast-wal.cjs (${String(err.stderr ?? err.message).trim().split('\n')[0]}); archive-push compiles it on every call`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** A 1 MiB WAL segment (000000010000000000000001 of PostgreSQL 16) whose header holdfast accepts. */
function trainingSegment(dir) {
  const segSize = 1 << 20;
  const buf = Buffer.alloc(segSize);
  buf.writeUInt16LE(0xd113, 0); // XLOG_PAGE_MAGIC of PostgreSQL 16
  buf.writeUInt16LE(0x0002, 2); // XLP_LONG_HEADER
  buf.writeUInt32LE(1, 4); // timeline
  buf.writeBigUInt64LE(BigInt(segSize), 8); // page address: the start of segment 1
  buf.writeBigUInt64LE(7_300_000_000_000_000_001n, 24); // system identifier
  buf.writeUInt32LE(segSize, 32);
  buf.writeUInt32LE(8192, 36); // WAL block size
  for (let i = 8192; i < 65536; i++) buf[i] = (i * 2654435761) >>> 24; // something to compress
  mkdirSync(dir, { recursive: true });
  const file = join(dir, '000000010000000000000001');
  writeFileSync(file, buf);
  return file;
}
