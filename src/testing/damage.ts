/**
 * Damage injection for the crash harness (issue 7, item 2; src/cli/damage.test.ts): choose a
 * repository object of a given kind and damage it in one of four ways, reproducibly from a seed,
 * and digest restored trees so a restore can be compared with a reference. Used by *.test.ts only.
 *
 * Object kinds follow the repository layout (docs/design.md §2); every path is relative to the
 * repository directory of the local driver.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Repository } from '../repository/repository.js';
import { loadTree } from '../files/walk.js';
import { CLI, ROOT, type Rng } from './helpers.js';

export const OBJECT_KINDS = ['pack', 'index', 'snapshot', 'catalog', 'key', 'key-copy', 'config', 'wal', 'wal-history', 'cluster'] as const;
export type ObjectKind = (typeof OBJECT_KINDS)[number];

export const DAMAGE_KINDS = ['truncate', 'zero', 'flip', 'delete'] as const;
export type DamageKind = (typeof DAMAGE_KINDS)[number];

const HEX64 = /^[0-9a-f]{64}$/;
const SEGMENT = /^[0-9A-F]{24}$/;
const HISTORY = /^[0-9A-F]{8}\.history$/;

function files(dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
}

/** Every object of each kind in a local repository (paths relative to it, sorted). */
export function repositoryObjects(repo: string): Record<ObjectKind, string[]> {
  const packs: string[] = [];
  for (const xx of files(path.join(repo, 'data'))) for (const f of files(path.join(repo, 'data', xx))) if (HEX64.test(f)) packs.push(`data/${xx}/${f}`);
  const wal: string[] = [];
  const history: string[] = [];
  for (const cluster of files(path.join(repo, 'wal'))) {
    for (const f of files(path.join(repo, 'wal', cluster))) {
      if (SEGMENT.test(f)) wal.push(`wal/${cluster}/${f}`);
      else if (HISTORY.test(f)) history.push(`wal/${cluster}/${f}`);
    }
  }
  const hex = (d: string): string[] => files(path.join(repo, d)).filter((f) => HEX64.test(f)).map((f) => `${d}/${f}`);
  return {
    pack: packs,
    index: hex('index'),
    snapshot: hex('snapshots'),
    catalog: hex('catalog'),
    key: hex('keys'),
    'key-copy': hex('catalog/keys'),
    config: fs.existsSync(path.join(repo, 'config')) ? ['config'] : [],
    wal,
    'wal-history': history,
    cluster: files(path.join(repo, 'clusters')).map((f) => `clusters/${f}`),
  };
}

export interface AppliedDamage {
  readonly object: string;
  readonly damage: DamageKind;
  /** What exactly was done, for failure messages and reproduction. */
  readonly detail: string;
  readonly sizeBefore: number;
}

/**
 * Damage `object` (relative to `repo`) in place: truncate it at a random point (to 0 .. size-1
 * bytes), zero-fill a random range of 1..4096 bytes that is not all zero already, flip 1–3 random
 * distinct bits, or delete it. Every kind changes the object's bytes.
 */
export function applyDamage(repo: string, object: string, damage: DamageKind, rng: Rng): AppliedDamage {
  const file = path.join(repo, object);
  const data = fs.readFileSync(file);
  const size = data.length;
  if (size === 0) throw new Error(`${object} is empty: nothing to damage`);
  switch (damage) {
    case 'delete':
      fs.rmSync(file);
      return { object, damage, detail: `deleted (${size} bytes)`, sizeBefore: size };
    case 'truncate': {
      const to = rng.int(size);
      fs.truncateSync(file, to);
      return { object, damage, detail: `truncated from ${size} to ${to} bytes`, sizeBefore: size };
    }
    case 'zero': {
      for (let attempt = 0; attempt < 1000; attempt++) {
        const at = rng.int(size);
        const len = 1 + rng.int(Math.min(4096, size - at));
        if (data.subarray(at, at + len).every((b) => b === 0)) continue;
        data.fill(0, at, at + len);
        fs.writeFileSync(file, data);
        return { object, damage, detail: `zeroed bytes ${at}..${at + len - 1} of ${size}`, sizeBefore: size };
      }
      throw new Error(`${object}: found no range that is not all zero`);
    }
    case 'flip': {
      const n = 1 + rng.int(3);
      const bits = new Set<number>();
      while (bits.size < Math.min(n, size * 8)) bits.add(rng.int(size * 8));
      for (const b of bits) data[b >> 3] = data[b >> 3]! ^ (1 << (b & 7));
      fs.writeFileSync(file, data);
      return { object, damage, detail: `flipped bit(s) ${[...bits].sort((a, b) => a - b).map((b) => `${b >> 3}.${b & 7}`).join(', ')} of ${size} bytes`, sizeBefore: size };
    }
  }
}

/**
 * A digest of a directory tree: every entry's relative path, type, mode, owner, size, content
 * hash (files) or target (symlinks). Timestamps are left out (a restore sets file mtimes as
 * backed up, but directories it writes into change). `content` may normalise a file's bytes
 * (e.g. a path that differs between two restores) before they are hashed.
 */
export function digestTree(dir: string, content: (rel: string, data: Buffer) => Buffer = (_rel, data) => data): string {
  const lines: string[] = [];
  const stack = [''];
  while (stack.length > 0) {
    const rel = stack.pop()!;
    for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const full = path.join(dir, r);
      const st = fs.lstatSync(full);
      let what: string;
      if (st.isDirectory()) {
        what = 'dir';
        stack.push(r);
      } else if (st.isSymbolicLink()) what = `symlink ${fs.readlinkSync(full)}`;
      else if (st.isFile()) {
        const data = content(r, fs.readFileSync(full));
        what = `file ${data.length} ${createHash('sha256').update(data).digest('hex')}`;
      }
      else what = 'other';
      lines.push(`${JSON.stringify(r)} ${what} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`);
    }
  }
  return createHash('sha256').update(lines.sort().join('\n')).digest('hex');
}

export function sha256File(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/**
 * Run the bundled CLI without blocking the event loop (trials run two at a time), with the
 * environment rules of helpers.ts `cli`: no inherited HOLDFAST_* variables, no config file, a
 * scratch state directory.
 */
export function cliAsync(args: readonly string[], env: Record<string, string | undefined> = {}, timeoutMs = 300_000): Promise<{ status: number; stdout: string; stderr: string }> {
  const base: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('HOLDFAST_')) base[k] = v;
  base['HOLDFAST_CONFIG'] = '/dev/null';
  base['HOLDFAST_STATE_DIR'] = path.join(os.tmpdir(), `holdfast-test-state-${process.pid}`);
  for (const [k, v] of Object.entries(env)) if (v !== undefined) base[k] = v;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: base, cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stderr = Buffer.concat(err).toString('utf8');
      resolve({ status: code ?? 128, stdout: Buffer.concat(out).toString('utf8'), stderr: signal ? `${stderr}\n(killed by ${signal}${signal === 'SIGKILL' ? `: ran past ${timeoutMs} ms` : ''})` : stderr });
    });
  });
}

/**
 * What a restore of a snapshot's tree would write, without writing it: a digest over every
 * entry's name, type, mode, owner and mtime, and for files the SHA-256 of their content read blob
 * by blob through the repository (each blob verified as restore verifies it). Rejects where
 * restore would fail (a tree or blob missing or damaged, content not of the size the tree says).
 *
 * Digests are memoised per tree and per blob (rejections too): ids are content hashes and every
 * read is verified, so within one repository state the same id always reads the same or fails
 * the same way, and backups sharing most of their trees cost little more than one.
 */
export class ContentDigests {
  private readonly trees = new Map<string, Promise<string>>();
  private readonly blobs = new Map<string, Promise<{ size: number; sha: string }>>();

  constructor(private readonly repo: Repository) {}

  tree(id: string): Promise<string> {
    let d = this.trees.get(id);
    if (!d) {
      d = this.readTree(id);
      d.catch(() => undefined); // memoised; each caller sees the rejection
      this.trees.set(id, d);
    }
    return d;
  }

  private blob(id: string): Promise<{ size: number; sha: string }> {
    let d = this.blobs.get(id);
    if (!d) {
      d = this.repo.loadBlob('data', id).then((data) => ({ size: data.length, sha: createHash('sha256').update(data).digest('hex') }));
      d.catch(() => undefined);
      this.blobs.set(id, d);
    }
    return d;
  }

  private async readTree(id: string): Promise<string> {
    const lines: string[] = [];
    for (const n of await loadTree(this.repo, id)) {
      let what = `${JSON.stringify(n.name)} ${n.type} ${n.mode.toString(8)} ${n.uid}:${n.gid} ${n.mtime}`;
      if (n.type === 'file') {
        let size = 0;
        const parts: string[] = [];
        for (const b of n.content ?? []) {
          const got = await this.blob(b);
          size += got.size;
          parts.push(got.sha);
        }
        if (size !== (n.size ?? 0)) throw new Error(`${n.name}: content is ${size} bytes, the tree says ${n.size}`);
        what += ` ${size} ${parts.join(',')}`;
      } else if (n.type === 'dir') what += ` {${n.subtree ? await this.tree(n.subtree) : ''}}`;
      else if (n.type === 'symlink') what += ` -> ${n.target}`;
      else if (n.rdev !== undefined) what += ` rdev ${n.rdev}`;
      lines.push(what);
    }
    return createHash('sha256').update(lines.join('\n')).digest('hex');
  }
}
