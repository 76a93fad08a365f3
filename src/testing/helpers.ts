/**
 * Shared test support: temporary directories, seeded random data, generated file trees, running
 * the bundled CLI, and comparing trees (content and metadata). Used by *.test.ts only.
 */
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = path.join(ROOT, 'bin', 'holdfast.cjs');
/** Cheap scrypt for tests that open repositories many times; one test uses the default. */
export const TEST_KDF = '10';

export async function tmpDir(prefix = 'holdfast-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fsp.rm(dir, { recursive: true, force: true }) };
}

/** xorshift128+ PRNG: the same seed gives the same data on every machine. */
export class Rng {
  private s0: bigint;
  private s1: bigint;
  constructor(seed: number) {
    this.s0 = BigInt(seed) ^ 0x9e3779b97f4a7c15n;
    this.s1 = (BigInt(seed) * 0xbf58476d1ce4e5b9n + 1n) & 0xffffffffffffffffn;
    for (let i = 0; i < 8; i++) this.next();
  }
  next(): bigint {
    let s1 = this.s0;
    const s0 = this.s1;
    this.s0 = s0;
    s1 ^= (s1 << 23n) & 0xffffffffffffffffn;
    this.s1 = s1 ^ s0 ^ (s1 >> 17n) ^ (s0 >> 26n);
    return (this.s1 + s0) & 0xffffffffffffffffn;
  }
  int(max: number): number {
    return Number(this.next() % BigInt(max));
  }
  /** Pseudo-random bytes (fast: expands a 64-bit state with a xorshift32 stream). */
  bytes(n: number): Buffer {
    const buf = Buffer.allocUnsafe(n);
    let x = Number(this.next() & 0xffffffffn) | 1;
    let i = 0;
    for (; i + 4 <= n; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      buf.writeInt32LE(x | 0, i);
    }
    for (; i < n; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      buf[i] = x & 0xff;
    }
    return buf;
  }
  /** Compressible text-like bytes. */
  text(n: number): Buffer {
    const words = ['alpha', 'beta', 'gamma', 'delta', 'wal', 'page', 'tuple', 'index', 'backup', 'restore', '\n'];
    const parts: string[] = [];
    let len = 0;
    while (len < n) {
      const w = words[this.int(words.length)]! + ' ';
      parts.push(w);
      len += w.length;
    }
    return Buffer.from(parts.join('')).subarray(0, n);
  }
}

export interface TreeSpec {
  seed: number;
  /** Large random files (bytes each). */
  big?: number[];
  smallFiles?: number;
  emptyFiles?: number;
  symlinks?: boolean;
}

/** Generate a tree with big files, many small files, empty files, symlinks and odd names. */
export async function generateTree(dir: string, spec: TreeSpec): Promise<void> {
  const rng = new Rng(spec.seed);
  await fsp.mkdir(dir, { recursive: true });
  for (const [i, size] of (spec.big ?? []).entries()) {
    await fsp.writeFile(path.join(dir, `big-${i}.bin`), i % 2 === 0 ? rng.bytes(size) : rng.text(size));
  }
  const names = ['plain', 'with space', 'ümlaut-ñ', '日本語', 'dash-name', 'UPPER', 'dot.name.txt', "quote'd"];
  for (let i = 0; i < (spec.smallFiles ?? 0); i++) {
    const sub = path.join(dir, `d${i % 7}`, i % 3 === 0 ? `nested ${i % 5}` : '');
    await fsp.mkdir(sub, { recursive: true });
    const size = rng.int(20000);
    await fsp.writeFile(path.join(sub, `${names[i % names.length]}-${i}`), i % 2 ? rng.bytes(size) : rng.text(size));
    if (i % 4 === 0) await fsp.chmod(path.join(sub, `${names[i % names.length]}-${i}`), 0o640);
  }
  for (let i = 0; i < (spec.emptyFiles ?? 0); i++) await fsp.writeFile(path.join(dir, `empty-${i}`), '');
  if (spec.symlinks) {
    await fsp.symlink('d0', path.join(dir, 'link-to-dir'));
    await fsp.symlink('/nonexistent/target', path.join(dir, 'dangling'));
    await fsp.symlink('big-0.bin', path.join(dir, 'link to file'));
  }
  await fsp.mkdir(path.join(dir, 'empty dir'), { recursive: true });
  await fsp.chmod(path.join(dir, 'empty dir'), 0o750);
}

export interface TreeEntry {
  type: string;
  mode: number;
  size: number;
  mtimeMs: number;
  uid: number;
  gid: number;
  hash?: string;
  target?: string;
}

/** Describe a tree: relative path -> type, mode, size, mtime, owner, content hash / link target. */
export async function describeTree(dir: string): Promise<Map<string, TreeEntry>> {
  const { createHash } = await import('node:crypto');
  const out = new Map<string, TreeEntry>();
  const stack = [''];
  while (stack.length > 0) {
    const rel = stack.pop()!;
    for (const name of await fsp.readdir(path.join(dir, rel))) {
      const r = rel ? `${rel}/${name}` : name;
      const full = path.join(dir, r);
      const st = await fsp.lstat(full);
      const e: TreeEntry = { type: st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other', mode: st.mode & 0o7777, size: st.isFile() ? st.size : 0, mtimeMs: Math.floor(st.mtimeMs), uid: st.uid, gid: st.gid };
      if (st.isFile()) e.hash = createHash('sha256').update(await fsp.readFile(full)).digest('hex');
      if (st.isSymbolicLink()) {
        e.target = await fsp.readlink(full);
        e.mode = 0;
      }
      if (st.isDirectory()) stack.push(r);
      out.set(r, e);
    }
  }
  return out;
}

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Run the bundled CLI synchronously. */
export function cli(args: readonly string[], env: Record<string, string | undefined> = {}, options: { cwd?: string; input?: string } = {}): CliResult {
  const r: SpawnSyncReturns<string> = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...cleanEnv(), ...env },
    cwd: options.cwd ?? ROOT,
    input: options.input ?? '',
    timeout: 300_000,
    maxBuffer: 256 << 20,
  });
  if (r.error) throw r.error;
  return { status: r.status ?? (r.signal ? 128 : -1), stdout: r.stdout, stderr: r.stderr };
}

/** Start the CLI without waiting (for kill tests). */
export function cliSpawn(args: readonly string[], env: Record<string, string | undefined> = {}): ReturnType<typeof spawn> {
  return spawn(process.execPath, [CLI, ...args], { env: { ...cleanEnv(), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
}

function cleanEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('HOLDFAST_')) env[k] = v;
  env['HOLDFAST_CONFIG'] = '/dev/null';
  // Derived-key cache entries of CLI tests go to a scratch directory, not the runner's home.
  env['HOLDFAST_STATE_DIR'] = path.join(os.tmpdir(), `holdfast-test-state-${process.pid}`);
  return env;
}

export function fileExists(p: string): boolean {
  return fs.existsSync(p);
}
