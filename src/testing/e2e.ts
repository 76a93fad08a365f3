/**
 * Support for the CLI end-to-end tests (src/cli/*.test.ts): assertions on CLI results, repository
 * size on disk, tree comparison with readable failure messages, and running the CLI as another
 * user (permission tests). Used by *.test.ts only.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, ROOT, type CliResult, type TreeEntry, TEST_KDF, cli, describeTree, tmpDir } from './helpers.js';

export type Env = Record<string, string | undefined>;

/** What a failed CLI call printed, for assertion messages. */
export function show(args: readonly string[], r: CliResult): string {
  const cut = (s: string): string => (s.length > 4000 ? `${s.slice(0, 2000)}\n…\n${s.slice(-2000)}` : s);
  return `holdfast ${args.join(' ')} → exit ${r.status}\n--- stdout\n${cut(r.stdout)}\n--- stderr\n${cut(r.stderr)}`;
}

/** Run the CLI and require exit 0. */
export function ok(args: readonly string[], env: Env, options: { cwd?: string } = {}): CliResult {
  const r = cli(args, env, options);
  assert.equal(r.status, 0, show(args, r));
  return r;
}

/** Run the CLI and parse its JSON stdout, requiring exit 0. */
export function okJson<T = unknown>(args: readonly string[], env: Env): T {
  const r = ok([...args, '--json'], env);
  try {
    return JSON.parse(r.stdout) as T;
  } catch (err) {
    assert.fail(`stdout is not JSON (${(err as Error).message})\n${show(args, r)}`);
  }
}

/**
 * Require a specific failure: the exit code, the catalogue code in brackets on stderr
 * (`... [CODE]`) and a hint line. `mentions` must also appear on stderr (e.g. the object named).
 */
export function expectError(r: CliResult, args: readonly string[], exit: number, code: string, ...mentions: string[]): void {
  assert.equal(r.status, exit, `expected exit ${exit} (${code})\n${show(args, r)}`);
  assert.match(r.stderr, new RegExp(`\\[${code}\\]`), `stderr should name ${code}\n${show(args, r)}`);
  assert.match(r.stderr, /^hint: \S/m, `stderr should carry a hint\n${show(args, r)}`);
  for (const m of mentions) assert.ok(r.stderr.includes(m), `stderr should mention ${JSON.stringify(m)}\n${show(args, r)}`);
}

export function fails(args: readonly string[], env: Env, exit: number, code: string, ...mentions: string[]): CliResult {
  const r = cli(args, env);
  expectError(r, args, exit, code, ...mentions);
  return r;
}

/** Create a repository (cheap KDF unless `kdfCost` is given) and return the env that opens it. */
export function initRepo(repo: string, password = 'correct horse', extra: readonly string[] = []): Env {
  const env: Env = { HOLDFAST_REPO: repo, HOLDFAST_PASSWORD: password };
  ok(['init', '--kdf-cost', TEST_KDF, ...extra], env);
  return env;
}

/** Bytes on disk under `dir` (sum of lstat sizes of regular files, recursively). */
export function dirSize(dir: string): number {
  let total = 0;
  const stack = [dir];
  for (let guard = 0; stack.length > 0 && guard < 1_000_000; guard++) {
    const d = stack.pop()!;
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else if (e.isFile()) total += fs.lstatSync(p).size;
    }
  }
  return total;
}

/** Regular files below `dir`, as paths relative to it (temporary files included). */
export function listFiles(dir: string): string[] {
  const out: string[] = [];
  if (!fs.existsSync(dir)) return out;
  const stack = [''];
  for (let guard = 0; stack.length > 0 && guard < 1_000_000; guard++) {
    const rel = stack.pop()!;
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) stack.push(r);
      else out.push(r);
    }
  }
  return out.sort();
}

/** Pack files of a local repository: `data/xx/<64 hex>` paths, absolute. */
export function packFiles(repo: string): string[] {
  return listFiles(path.join(repo, 'data'))
    .filter((f) => /^[0-9a-f]{2}\/[0-9a-f]{64}$/.test(f))
    .map((f) => path.join(repo, 'data', f));
}

/** Where `abs` (an absolute source path) lands when restored into `target`. */
export function restoredPath(target: string, abs: string): string {
  return path.join(target, ...abs.split('/').filter((s) => s !== ''));
}

function fmt(e: TreeEntry | undefined): string {
  return e === undefined ? '(absent)' : JSON.stringify(e);
}

/** Assert two trees are identical in content and metadata; the message lists the first differences. */
export async function assertSameTree(expected: string, actual: string): Promise<void> {
  const a = await describeTree(expected);
  const b = await describeTree(actual);
  const diffs: string[] = [];
  for (const key of [...new Set([...a.keys(), ...b.keys()])].sort()) {
    const x = a.get(key);
    const y = b.get(key);
    if (JSON.stringify(x) !== JSON.stringify(y)) diffs.push(`${key}\n    source:   ${fmt(x)}\n    restored: ${fmt(y)}`);
  }
  assert.ok(a.size > 0, `${expected} is empty: nothing was compared`);
  assert.equal(diffs.length, 0, `${diffs.length} of ${a.size} entries differ between ${expected} and ${actual}:\n${diffs.slice(0, 15).join('\n')}`);
}

/** `promise`'s value, or undefined after `ms`; the timer never outlives the promise. */
export async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Whether the CLI can be run as an unprivileged user here (root with runuser, or already not root). */
export function unprivilegedAvailable(): boolean {
  if (process.getuid?.() !== 0) return true;
  const r = spawnSync('runuser', ['-u', 'nobody', '--', process.execPath, '-e', '0'], { encoding: 'utf8' });
  return r.status === 0;
}

/** The uid the unprivileged runs have (nobody when we are root, else ourselves). */
export function unprivilegedUid(): { uid: number; gid: number } {
  if (process.getuid?.() !== 0) return { uid: process.getuid!(), gid: process.getgid!() };
  const r = spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' });
  const g = spawnSync('id', ['-g', 'nobody'], { encoding: 'utf8' });
  return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) };
}

/**
 * Run the CLI as an unprivileged user: `nobody` through runuser when we are root (root would
 * read past any file mode), directly otherwise. Same environment rules as `cli`.
 */
export function cliUnprivileged(args: readonly string[], env: Env): CliResult {
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('HOLDFAST_')) clean[k] = v;
  clean['HOLDFAST_CONFIG'] = '/dev/null';
  for (const [k, v] of Object.entries(env)) if (v !== undefined) clean[k] = v;
  const argv = [process.execPath, CLI, ...args];
  const [cmd, ...rest] = process.getuid?.() === 0 ? ['runuser', '-u', 'nobody', '--', ...argv] : argv;
  const r = spawnSync(cmd!, rest, { encoding: 'utf8', env: clean, cwd: ROOT, input: '', timeout: 120_000 });
  if (r.error) throw r.error;
  return { status: r.status ?? (r.signal ? 128 : -1), stdout: r.stdout, stderr: r.stderr };
}

/**
 * A temporary directory whose cleanup also works when tests left read-only or mode-000 entries
 * (restored trees keep their modes), even when not running as root.
 */
export async function workspace(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const { dir, cleanup } = await tmpDir(prefix);
  return {
    dir,
    cleanup: async () => {
      spawnSync('chmod', ['-R', 'u+rwX', dir]);
      await cleanup();
    },
  };
}
