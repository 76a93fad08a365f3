/**
 * Restorer: writes a snapshot's trees into a target directory.
 *
 * Safety: the whole selection is walked and validated before anything is written, so a crafted
 * or corrupt snapshot (names with '/', '..', duplicates) is refused up front. While writing,
 * files are created with O_EXCL|O_NOFOLLOW and every directory is checked with lstat to be a real
 * directory, so no write ever passes through a symlink: nothing outside the target is touched.
 *
 * Sparse-friendly: all-zero chunks are skipped with a seek and the file is sized with ftruncate,
 * so holes stay holes.
 */
import * as fsp from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Repository } from '../repository/repository.js';
import { HoldfastError, fsError as anyFsError, systemCode } from '../errors/catalogue.js';
import { Semaphore } from '../util/semaphore.js';
import { PathSelector, type WalkEntry, walkTree } from './walk.js';
import { type TreeNode, nsToSeconds } from './tree.js';

export interface RestoreProgress {
  /** Delta restore: files kept because they already had the right content. */
  kept?: number;
  /** Delta restore: entries removed because the snapshot does not have them. */
  removed?: number;
  filesTotal: number;
  bytesTotal: number;
  filesDone: number;
  bytesDone: number;
  current: string;
}

export interface RestoreOptions {
  readonly target: string;
  readonly includes: readonly string[];
  readonly force: boolean;
  readonly progress: RestoreProgress;
  readonly onWarning: (message: string) => void;
  readonly signal?: AbortSignal | undefined;
  /**
   * A directory in the snapshot whose contents go directly into the target (PostgreSQL restores:
   * the data directory's path). Without it the snapshot's absolute paths are recreated below the
   * target. Its own metadata (mode, owner) is applied to the target.
   */
  readonly root?: string | undefined;
  /**
   * Delta restore: files whose current content this says is already the node's are kept (only
   * their metadata is set); everything else is rewritten, and entries of the target that the
   * snapshot does not have are removed. Implies force.
   */
  readonly unchanged?: ((dest: string, node: TreeNode) => Promise<boolean>) | undefined;
  /** Files written at once (default 4). */
  readonly parallel?: number | undefined;
}

export function newRestoreProgress(): RestoreProgress {
  return { filesTotal: 0, bytesTotal: 0, filesDone: 0, bytesDone: 0, current: '' };
}

/** Failures writing the target are the target's, not the repository's. */
function fsError(err: unknown, what: string, path: string): HoldfastError {
  return anyFsError(err, what, path, 'TARGET_IO');
}

const ZERO = Buffer.alloc(1 << 20);
const isRoot = process.getuid?.() === 0;
const execFileP = promisify(execFile);

function isZero(buf: Buffer): boolean {
  for (let off = 0; off < buf.length; off += ZERO.length) {
    const part = buf.subarray(off, off + ZERO.length);
    if (!part.equals(ZERO.subarray(0, part.length))) return false;
  }
  return true;
}

export async function restoreTree(repo: Repository, rootTree: string, opts: RestoreOptions): Promise<void> {
  const rootPrefix = opts.root ? '/' + opts.root.split('/').filter((x) => x !== '').join('/') : '';
  const select = new PathSelector(rootPrefix ? (opts.includes.length ? opts.includes.map((i) => rootPrefix + '/' + i.replace(/^\/+/, '')) : [rootPrefix]) : opts.includes);
  const descend = (e: WalkEntry): boolean => select.classify(e.path) !== 'out';
  const p = opts.progress;

  // Pass 1: validate the selection and count it, before anything is written.
  let matched = 0;
  for await (const e of walkTree(repo, rootTree, descend)) {
    opts.signal?.throwIfAborted();
    if (select.classify(e.path) !== 'in') continue;
    matched++;
    if (e.node.type === 'file') {
      p.filesTotal++;
      p.bytesTotal += e.node.size ?? 0;
    }
  }
  if (!select.all && matched === 0) {
    throw new HoldfastError('SNAPSHOT_NOT_FOUND', `no path in the snapshot matches ${opts.includes.join(', ')}`, { includes: opts.includes, hint: 'Use `holdfast ls SNAPSHOT` to see the paths it holds.' });
  }

  const target = path.resolve(opts.target);
  await prepareTarget(target, opts.force);

  // Pass 2: write. Directories are created on the way down and get their metadata at the end,
  // deepest first, so writing their contents does not disturb their mtimes.
  const dirs: Array<{ dest: string; node: TreeNode }> = [];
  const present = opts.unchanged ? new Set<string>([target]) : undefined;
  const slots = new Semaphore(Math.max(1, opts.parallel ?? 4));
  const files: Array<Promise<void>> = [];
  let firstError: unknown;
  for await (const e of walkTree(repo, rootTree, descend)) {
    opts.signal?.throwIfAborted();
    if (firstError) break;
    const cls = select.classify(e.path);
    if (cls === 'out') continue;
    const node = e.node;
    if (rootPrefix && (e.path === rootPrefix || !e.path.startsWith(rootPrefix + '/'))) {
      // The root itself becomes the target; its ancestors are not restored.
      if (e.path === rootPrefix) dirs.push({ dest: target, node });
      continue;
    }
    const rel = rootPrefix ? e.path.slice(rootPrefix.length) : e.path;
    const dest = path.join(target, ...rel.split('/').filter((s) => s !== ''));
    present?.add(dest);
    if (cls === 'ancestor') {
      if (node.type === 'dir') {
        await makeDir(dest, opts.force);
        dirs.push({ dest, node });
      }
      continue;
    }
    switch (node.type) {
      case 'dir':
        await makeDir(dest, opts.force);
        dirs.push({ dest, node });
        break;
      case 'file': {
        await slots.acquire();
        const task = restoreFile(repo, dest, node, opts)
          .catch((err: unknown) => {
            firstError ??= err;
          })
          .finally(() => slots.release());
        files.push(task);
        if (files.length > 256) await Promise.all(files.splice(0, 128));
        break;
      }
      case 'symlink':
        await makeSymlink(dest, node, opts.force);
        break;
      case 'fifo':
      case 'chardev':
      case 'blockdev':
        await makeSpecial(dest, node, opts);
        break;
      case 'socket':
        opts.onWarning(`${e.path}: sockets are not restored (they only exist while a program listens on them)`);
        break;
    }
  }
  await Promise.all(files);
  if (firstError) throw firstError;
  if (present) opts.progress.removed = await removeExtras(target, present);
  for (let i = dirs.length - 1; i >= 0; i--) {
    const { dest, node } = dirs[i]!;
    await applyMeta(dest, node, false);
  }
}

/** Delta restore: remove what is below `target` but not in `keep` (iteratively, no symlink followed). */
async function removeExtras(target: string, keep: Set<string>): Promise<number> {
  let removed = 0;
  const stack = [target];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const ent of await fsp.readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, ent.name);
      if (!keep.has(p)) {
        await fsp.rm(p, { recursive: true, force: true });
        removed++;
      } else if (ent.isDirectory()) stack.push(p);
    }
  }
  return removed;
}

async function prepareTarget(target: string, force: boolean): Promise<void> {
  try {
    const st = await fsp.lstat(target);
    if (!st.isDirectory()) throw new HoldfastError('TARGET_NOT_EMPTY', `restore target ${target} exists and is not a directory`, { target });
    const entries = await fsp.readdir(target);
    if (entries.length > 0 && !force) throw new HoldfastError('TARGET_NOT_EMPTY', `restore target ${target} is not empty (${entries.length} entries)`, { target });
  } catch (err) {
    if (systemCode(err) !== 'ENOENT') throw fsError(err, 'use restore target', target);
    try {
      await fsp.mkdir(target, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw fsError(e, 'create restore target', target);
    }
  }
}

/** Create a directory, or accept an existing real directory; never follow a symlink. */
async function makeDir(dest: string, force: boolean): Promise<void> {
  try {
    await fsp.mkdir(dest, { mode: 0o700 });
    return;
  } catch (err) {
    if (systemCode(err) !== 'EEXIST') throw fsError(err, 'create directory', dest);
  }
  const st = await fsp.lstat(dest);
  if (st.isDirectory()) return;
  if (!force) throw new HoldfastError('TARGET_CONFLICT', `${dest} exists and is not a directory; refusing to write through it`, { path: dest });
  await fsp.unlink(dest).catch((e: unknown) => {
    throw fsError(e, 'replace', dest);
  });
  await fsp.mkdir(dest, { mode: 0o700 });
}

/** Remove what stands at `dest` (a file or symlink, never a directory) when --force allows it. */
async function clearForReplace(dest: string, force: boolean, err: unknown): Promise<void> {
  if (systemCode(err) !== 'EEXIST' || !force) throw fsError(err, 'create', dest);
  const st = await fsp.lstat(dest);
  if (st.isDirectory()) throw new HoldfastError('TARGET_CONFLICT', `${dest} is a directory in the target, but the snapshot has a file or link there`, { path: dest });
  await fsp.unlink(dest);
}

async function restoreFile(repo: Repository, dest: string, node: TreeNode, opts: RestoreOptions): Promise<void> {
  if (opts.unchanged && (await opts.unchanged(dest, node))) {
    await applyMeta(dest, node, false);
    opts.progress.bytesDone += node.size ?? 0;
    opts.progress.filesDone++;
    opts.progress.kept = (opts.progress.kept ?? 0) + 1;
    return;
  }
  const flags = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW;
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(dest, flags, 0o600);
  } catch (err) {
    await clearForReplace(dest, opts.force, err);
    fh = await fsp.open(dest, flags, 0o600);
  }
  opts.progress.current = dest;
  try {
    const ids = node.content ?? [];
    const ahead: Array<Promise<Buffer>> = [];
    const fetch = (i: number): void => {
      if (i < ids.length) {
        const pr = repo.loadBlob('data', ids[i]!);
        pr.catch(() => undefined); // awaited in order below
        ahead.push(pr);
      }
    };
    for (let i = 0; i < Math.min(3, ids.length); i++) fetch(i);
    let pos = 0;
    for (let i = 0; i < ids.length; i++) {
      opts.signal?.throwIfAborted();
      const data = await ahead.shift()!;
      fetch(i + 3);
      if (!isZero(data)) {
        let off = 0;
        while (off < data.length) {
          const { bytesWritten } = await fh.write(data, off, data.length - off, pos + off);
          off += bytesWritten;
        }
      }
      pos += data.length;
      opts.progress.bytesDone += data.length;
    }
    await fh.truncate(pos);
    if (pos !== node.size) opts.onWarning(`${dest}: restored ${pos} bytes but the snapshot recorded ${node.size}`);
    await applyMetaFh(fh, node);
  } catch (err) {
    throw err instanceof HoldfastError ? err : fsError(err, 'write', dest);
  } finally {
    await fh.close();
  }
  opts.progress.filesDone++;
}

async function makeSymlink(dest: string, node: TreeNode, force: boolean): Promise<void> {
  try {
    await fsp.symlink(node.target!, dest);
  } catch (err) {
    await clearForReplace(dest, force, err);
    await fsp.symlink(node.target!, dest);
  }
  await applyMeta(dest, node, true);
}

async function makeSpecial(dest: string, node: TreeNode, opts: RestoreOptions): Promise<void> {
  try {
    if (node.type === 'fifo') await execFileP('mkfifo', ['-m', '600', '--', dest]);
    else {
      if (!isRoot) {
        opts.onWarning(`${dest}: device nodes are restored only when running as root`);
        return;
      }
      const rdev = node.rdev ?? 0;
      const major = ((rdev >> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
      const minor = (rdev & 0xff) | ((rdev >> 12) & ~0xff & 0xfffff);
      await execFileP('mknod', ['-m', '600', '--', dest, node.type === 'chardev' ? 'c' : 'b', String(major), String(minor)]);
    }
  } catch (err) {
    opts.onWarning(`${dest}: cannot create ${node.type}: ${(err as Error).message}`);
    return;
  }
  await applyMeta(dest, node, false);
}

async function applyMetaFh(fh: fsp.FileHandle, node: TreeNode): Promise<void> {
  if (isRoot) await fh.chown(node.uid, node.gid);
  await fh.chmod(node.mode);
  await fh.utimes(nsToSeconds(node.atime), nsToSeconds(node.mtime));
}

async function applyMeta(dest: string, node: TreeNode, link: boolean): Promise<void> {
  try {
    if (link) {
      if (isRoot) await fsp.lchown(dest, node.uid, node.gid);
      await fsp.lutimes(dest, nsToSeconds(node.atime), nsToSeconds(node.mtime));
      return;
    }
    if (isRoot) await fsp.lchown(dest, node.uid, node.gid);
    await fsp.chmod(dest, node.mode);
    await fsp.utimes(dest, nsToSeconds(node.atime), nsToSeconds(node.mtime));
  } catch (err) {
    throw fsError(err, 'set metadata of', dest);
  }
}
