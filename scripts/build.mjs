// Bundle the CLI into dist/ with esbuild. Commands are split into lazily loaded chunks so that
// start-up (once per WAL segment under archive_command) parses only what the command needs.
import { build } from 'esbuild';
import { copyFileSync, existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

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

const old = `dist.old-${process.pid}`;
try {
  renameSync('dist', old);
} catch {
  // no previous build
}
renameSync(out, 'dist');
rmSync(old, { recursive: true, force: true });

// Tests run the type-checked modules in build/; give them the same optional helpers.
for (const [name] of natives) {
  if (existsSync(`dist/${name}.node`) && existsSync('build')) copyFileSync(`dist/${name}.node`, `build/${name}.node`);
}
