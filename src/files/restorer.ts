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
 *
 * Throughput: with the local storage driver, file contents are written by worker threads
 * (restore-pool.ts) that read the packs directly with synchronous I/O; large files are cut into
 * ranges written by whichever worker is free. The main thread walks, validates, creates
 * directories, links and special files, decides delta restores and applies directory metadata.
 * Other storage drivers (and `parallel: 0`) write in the main thread through the repository.
 */
import * as fsp from 'node:fs/promises';
import { constants as fsc, ftruncateSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Repository } from '../repository/repository.js';
import { HoldfastError, fsError as anyFsError, systemCode } from '../errors/catalogue.js';
import { Semaphore } from '../util/semaphore.js';
import { PathSelector, type WalkEntry, walkTree } from './walk.js';
import { type TreeNode, nsToSeconds } from './tree.js';
import { type BlobRef, type FileMeta, RANGE, RestorePool, closeQuietly, createTargetFile, finishAndCloseAsync, finishTargetFile, sameContent } from './restore-pool.js';
import { fsyncDir, syncTree, syncfsCovers } from '../util/fsync.js';

export interface RestoreProgress {
  /** Delta restore: files kept because they already had the right content. */
  kept?: number;
  /** Delta restore: entries removed because the snapshot does not have them. */
  removed?: number;
  /** Worker threads writing file contents (absent: written in the main thread). */
  workers?: number;
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
   * Delta restore, decided by content: a file is kept (only its metadata is set) when it is a
   * regular file with one link, of the node's size, whose byte ranges have the SHA-256 of the
   * node's blobs at their places (blob sizes come from the index): its content is the snapshot's.
   * Everything else is rewritten, and entries the snapshot does not have are removed. With worker
   * threads the comparisons run in them, large files in ranges.
   */
  readonly deltaByContent?: boolean | undefined;
  /**
   * Files written at once. With the local storage driver: worker threads writing file contents
   * (default: the number of CPUs, at most MAX_DEFAULT_WORKERS; never more than MAX_WORKERS).
   * Otherwise files written concurrently by the main thread (default 4). 0: one file at a time,
   * in the main thread.
   */
  readonly parallel?: number | undefined;
  /**
   * Worker threads: 'auto' (default) uses them with the local storage driver when the selection is
   * large enough to repay starting them (WORKER_MIN_FILES files or WORKER_MIN_BYTES bytes);
   * 'always' whenever the storage allows; 'never' writes in the main thread.
   */
  readonly workers?: 'auto' | 'always' | 'never' | undefined;
  /**
   * Make the restored tree durable before returning (default true). On ext4, XFS, Btrfs or F2FS:
   * one syncfs of the target's file system at the end. Elsewhere (FUSE, NFS, …): every file
   * written or kept is fsynced by the thread that finished it, then every directory of the tree,
   * deepest first. Either way then the entries of the target and of the ancestors created for
   * it. false: faster, but a power loss soon after may leave empty or missing files although the
   * restore reported success.
   */
  readonly sync?: boolean | undefined;
  /**
   * When the restore is made durable by one syncfs (see `sync`), the worker threads write the
   * page-aligned blobs of files (or ranges) of 1 MiB or more with O_DIRECT (default true): the
   * data must reach the disk before the restore returns anyway, and this skips copying it into the
   * page cache, which was about half of the restore's kernel time on this project's VM. A file
   * system that refuses O_DIRECT turns it off for the rest of the restore. false: everything
   * through the page cache.
   */
  readonly directIo?: boolean | undefined;
}

/** Below both of these, starting worker threads costs more than it saves. */
export const WORKER_MIN_FILES = 64;
export const WORKER_MIN_BYTES = 8 << 20;
/**
 * Each worker adds about 45 MB to the peak RSS (measured: 140 MB with one, 187 MB with two, 285
 * MB with four; mostly decompressed chunks awaiting V8's external-memory GC), so the default stops
 * at 4; more take an explicit `parallel`.
 */
export const MAX_DEFAULT_WORKERS = 4;
/** An explicit `parallel` above this still starts this many (about 0.8 GB of RSS already). */
export const MAX_WORKERS = 16;

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
  const created = await prepareTarget(target, opts.force);
  // Durability (RestoreOptions.sync): on a local block file system one syncfs at the end; else an
  // fsync of each file as it is finished and of each directory at the end.
  const durability = opts.sync === false ? 'none' : (await syncfsCovers(target)) ? 'filesystem' : 'files';
  opts = { ...opts, sync: durability === 'files' };

  // Workers start the writeback of what they write as they go, so that the final syncfs (or the
  // fsync of each file) waits for little: otherwise a machine with much memory keeps a whole
  // restore dirty in the page cache and writes it all at the end (measured: 1.9 s for 2.1 GB).
  const pool = await startPool(repo, opts, durability !== 'none', durability === 'filesystem' && opts.directIo !== false);
  if (pool) p.workers = pool.size;
  try {
    await writeSelection(repo, rootTree, opts, { target, rootPrefix, select, descend, pool });
  } finally {
    await pool?.stop();
  }
  if (durability === 'filesystem') {
    try {
      await syncTree(target);
    } catch (err) {
      throw fsError(err, 'make durable', target);
    }
  }
  // The target's own entry, and those of the ancestors created for it (innermost first).
  if (durability !== 'none') await syncDirectories([...created.reverse().map((d) => path.dirname(d)), path.dirname(target)]);
}

interface Selection {
  readonly target: string;
  readonly rootPrefix: string;
  readonly select: PathSelector;
  readonly descend: (e: WalkEntry) => boolean;
  readonly pool: RestorePool | undefined;
}

/** Worker threads for this restore, or undefined to write in the main thread. */
async function startPool(repo: Repository, opts: RestoreOptions, writeback: boolean, direct: boolean): Promise<RestorePool | undefined> {
  const mode = opts.workers ?? 'auto';
  if (mode === 'never' || opts.parallel === 0) return undefined;
  const p = opts.progress;
  if (mode === 'auto' && p.filesTotal < WORKER_MIN_FILES && p.bytesTotal < WORKER_MIN_BYTES) return undefined;
  const root = await localRoot(repo);
  if (!root) return undefined;
  const wanted = Math.min(MAX_WORKERS, opts.parallel ?? Math.min(MAX_DEFAULT_WORKERS, availableParallelism()));
  // No more workers than there are items to give them.
  const count = Math.max(1, Math.min(wanted, p.filesTotal + Math.ceil(p.bytesTotal / RANGE)));
  return RestorePool.start(repo.packKey(), root, repo.backend.location, count, { sync: opts.sync !== false, writeback, direct });
}

/**
 * The directory holding the repository's objects in the local driver's layout (data/xx/<id>), or
 * undefined for other storage. The backend's location must be an absolute path whose `config`
 * is byte for byte the object the backend returns as `config` (the config is written once, with a
 * random nonce): then the packs below it are the backend's packs. Reads from there are verified
 * like every other read (AEAD tag, SHA-256 of the plaintext).
 */
async function localRoot(repo: Repository): Promise<string | undefined> {
  const loc = repo.backend.location;
  if (!path.isAbsolute(loc)) return undefined;
  try {
    const [onDisk, stored] = await Promise.all([fsp.readFile(path.join(loc, 'config')), repo.backend.get('config')]);
    return onDisk.equals(stored) ? loc : undefined;
  } catch {
    return undefined;
  }
}

async function writeSelection(repo: Repository, rootTree: string, opts: RestoreOptions, sel: Selection): Promise<void> {
  const { target, rootPrefix, select, descend, pool } = sel;
  // Pass 2: write. Directories are created on the way down and get their metadata at the end,
  // deepest first, so writing their contents does not disturb their mtimes.
  const dirs: Array<{ dest: string; node: TreeNode }> = [];
  const present = opts.deltaByContent ? new Set<string>([target]) : undefined;
  // Files written at once by the main thread (without workers).
  const slots = new Semaphore(Math.max(1, opts.parallel ?? 4));
  const ctx: PoolWriter | undefined = pool ? { pool, repo, opts, replacing: new Semaphore(2) } : undefined;
  const inflight = new Set<Promise<void>>();
  let firstError: unknown;
  const track = (task: Promise<void>): void => {
    const t = task.catch((err: unknown) => {
      firstError ??= err;
      void pool?.stop(err instanceof Error ? err : new Error(String(err)));
    });
    inflight.add(t);
    void t.finally(() => inflight.delete(t));
  };
  // Cancellation reaches the workers at once, also once the walk is over and writes are pending.
  const onAbort = (): void => {
    const reason: unknown = opts.signal?.reason;
    firstError ??= reason;
    void pool?.stop(reason instanceof Error ? reason : new Error(String(reason)));
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    try {
      await walkAndCreate();
    } catch (err) {
      firstError ??= err;
    }
    // On failure, stop the workers: what they have not written yet is cancelled.
    if (firstError) await pool?.stop(firstError instanceof Error ? firstError : new Error(String(firstError)));
    while (inflight.size > 0) await Promise.all([...inflight]);
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
  if (firstError) throw firstError;
  if (present) opts.progress.removed = await removeExtras(target, present);
  for (let i = dirs.length - 1; i >= 0; i--) {
    const { dest, node } = dirs[i]!;
    await applyMeta(dest, node, false);
  }
  if (opts.sync !== false) await syncDirectories([...dirs.map((d) => d.dest).reverse(), target]);

  async function walkAndCreate(): Promise<void> {
    for await (const e of walkTree(repo, rootTree, descend)) {
      opts.signal?.throwIfAborted();
      if (firstError) return;
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
          if (ctx) {
            if (opts.deltaByContent) {
              await ctx.pool.room();
              track(writeWithPool(ctx, dest, node, true));
            } else {
              await ctx.pool.room();
              track(writeWithPool(ctx, dest, node));
            }
            break;
          }
          await slots.acquire();
          track(restoreFile(repo, dest, node, opts).finally(() => slots.release()));
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
  }
}

/** The pack locations of a file's blobs (OBJECT_MISSING for one the index does not have). */
function blobRefs(repo: Repository, node: TreeNode): { blobs: BlobRef[]; size: number } {
  const blobs: BlobRef[] = [];
  let size = 0;
  for (const id of node.content ?? []) {
    const loc = repo.index.get(id, 'data');
    if (!loc) throw new HoldfastError('OBJECT_MISSING', `data blob ${id} is not in the index`, { blob: id });
    blobs.push({ id, pack: loc.pack, offset: loc.offset, length: loc.length, rawLength: loc.rawLength });
    size += loc.rawLength;
  }
  return { blobs, size };
}

function fileMeta(node: TreeNode): FileMeta {
  return { uid: node.uid, gid: node.gid, mode: node.mode, atime: nsToSeconds(node.atime), mtime: nsToSeconds(node.mtime), chown: isRoot };
}

interface PoolWriter {
  readonly pool: RestorePool;
  readonly repo: Repository;
  readonly opts: RestoreOptions;
  /** Large files being replaced at once (see createLargeFile). */
  readonly replacing: Semaphore;
}

/**
 * Create a large file in the main thread. Replacing one (delta restore, --force) frees all its
 * blocks, which takes long (~0.6 s for 1 GiB here), so that unlink runs on the thread pool while
 * the walk goes on; at most `replacing` at once.
 */
async function createLargeFile(w: PoolWriter, dest: string): Promise<number> {
  try {
    return createTargetFile(dest, false);
  } catch (err) {
    if (!w.opts.force || !(err instanceof HoldfastError) || err.data['errno'] !== 'EEXIST') throw err;
  }
  await w.replacing.acquire();
  try {
    const st = await fsp.lstat(dest).catch(() => undefined);
    if (st?.isDirectory()) throw new HoldfastError('TARGET_CONFLICT', `${dest} is a directory in the target, but the snapshot has a file or link there`, { path: dest });
    await fsp.unlink(dest).catch((err: unknown) => {
      if (systemCode(err) !== 'ENOENT') throw fsError(err, 'replace', dest);
    });
  } finally {
    w.replacing.release();
  }
  return createTargetFile(dest, true);
}

/**
 * Write one file through the worker pool. A file of up to RANGE bytes is one item, queued before
 * the first await (callers bound the queue with `room`); a larger one is created here and written
 * in ranges by any free worker, then sized, given its metadata and closed here. With `keep`
 * (deltaByContent) a file that already has the snapshot's content is kept instead: a small one
 * is checked by the worker that would write it, a large one in ranges by all of them.
 */
async function writeWithPool(w: PoolWriter, dest: string, node: TreeNode, keep = false): Promise<void> {
  const { pool, opts } = w;
  const p = opts.progress;
  p.current = dest;
  if ((node.size ?? 0) <= RANGE) {
    const { blobs, size } = blobRefs(w.repo, node);
    const outcome = await pool.submit({ t: 'file', dest, force: opts.force, blobs, meta: fileMeta(node), keep }, size);
    if (outcome === 'kept') {
      countKept(node, opts);
      return;
    }
    p.bytesDone += size;
    if (size !== node.size) opts.onWarning(`${dest}: restored ${size} bytes but the snapshot recorded ${node.size}`);
    p.filesDone++;
    return;
  }
  const refs = blobRefs(w.repo, node);
  const { blobs, size } = refs;
  if (keep) {
    const checks = splitRanges(blobs).map((r) => pool.submit({ t: 'check', dest, size, pos: r.pos, blobs: r.blobs }, r.bytes));
    const outcomes = await Promise.all(checks);
    // The ranges were compared; what is left is checking it is still the same single-link file.
    if (outcomes.every((o) => o === 'same') && keepIfSame(dest, node, refs, opts.sync !== false, true)) {
      countKept(node, opts);
      return;
    }
  }
  const fd = await createLargeFile(w, dest);
  // Sized before the ranges are written: a direct write that extends a file waits for the device
  // even when submitted asynchronously (ext4, XFS); one within the file's size does not.
  try {
    ftruncateSync(fd, size);
  } catch (err) {
    closeQuietly(fd);
    throw fsError(err, 'write', dest);
  }
  const ranges = splitRanges(blobs).map((r) =>
    pool.submit({ t: 'range', fd, dest, pos: r.pos, blobs: r.blobs }, r.bytes).then(
      () => void (p.bytesDone += r.bytes),
      (err: unknown) => {
        // The other ranges need not be written any more: cancel them now.
        void pool.stop(err instanceof Error ? err : new Error(String(err)));
        throw err;
      },
    ),
  );
  // Every range has reported (or its worker has exited) before the descriptor is closed: no
  // thread writes through it any more, and its number cannot be reused under a writer.
  const results = await Promise.allSettled(ranges);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    closeQuietly(fd);
    throw failed.reason;
  }
  await finishAndCloseAsync(fd, size, fileMeta(node), dest, opts.sync !== false);
  if (size !== node.size) opts.onWarning(`${dest}: restored ${size} bytes but the snapshot recorded ${node.size}`);
  p.filesDone++;
}

function countKept(node: TreeNode, opts: RestoreOptions): void {
  opts.progress.bytesDone += node.size ?? 0;
  opts.progress.filesDone++;
  opts.progress.kept = (opts.progress.kept ?? 0) + 1;
}

/**
 * deltaByContent: keep `dest` if it holds exactly these blobs (`compared`: its ranges were
 * checked already, only check it is still a single-link regular file of that size), setting its
 * metadata through the descriptor that checked it.
 */
function keepIfSame(dest: string, node: TreeNode, { blobs, size }: { blobs: readonly BlobRef[]; size: number }, sync: boolean, compared = false): boolean {
  const fd = sameContent(dest, size, 0, compared ? [] : blobs, true);
  if (typeof fd !== 'number') return false;
  try {
    finishTargetFile(fd, undefined, fileMeta(node), dest, sync);
  } finally {
    closeQuietly(fd);
  }
  return true;
}

/** A large file's blobs in ranges of about RANGE bytes. */
function splitRanges(blobs: readonly BlobRef[]): Array<{ pos: number; bytes: number; blobs: BlobRef[] }> {
  const out: Array<{ pos: number; bytes: number; blobs: BlobRef[] }> = [];
  let start = 0;
  let pos = 0;
  let bytes = 0;
  for (let i = 0; i < blobs.length; i++) {
    bytes += blobs[i]!.rawLength;
    if (bytes < RANGE && i < blobs.length - 1) continue;
    out.push({ pos, bytes, blobs: blobs.slice(start, i + 1) });
    pos += bytes;
    start = i + 1;
    bytes = 0;
  }
  return out;
}

/**
 * fsync each directory once, in the order given (deepest first), several at once: their entries
 * (files, links, removals) are then durable. The files themselves were fsynced when finished.
 */
async function syncDirectories(dirs: readonly string[]): Promise<void> {
  const unique = [...new Set(dirs)];
  const slots = new Semaphore(8);
  await Promise.all(
    unique.map(async (dir) => {
      await slots.acquire();
      try {
        await fsyncDir(dir);
      } catch (err) {
        throw fsError(err, 'make durable', dir);
      } finally {
        slots.release();
      }
    }),
  );
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

/** Check or create the restore target; returns the directories it created (the target and new ancestors), outermost first. */
async function prepareTarget(target: string, force: boolean): Promise<string[]> {
  try {
    const st = await fsp.lstat(target);
    if (!st.isDirectory()) throw new HoldfastError('TARGET_NOT_EMPTY', `restore target ${target} exists and is not a directory`, { target });
    const entries = await fsp.readdir(target);
    if (entries.length > 0 && !force) throw new HoldfastError('TARGET_NOT_EMPTY', `restore target ${target} is not empty (${entries.length} entries)`, { target });
    return [];
  } catch (err) {
    if (systemCode(err) !== 'ENOENT') throw fsError(err, 'use restore target', target);
    let first: string | undefined;
    try {
      first = await fsp.mkdir(target, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw fsError(e, 'create restore target', target);
    }
    const created: string[] = [];
    for (let d = target; first !== undefined && d.length >= first.length && d !== path.dirname(d); d = path.dirname(d)) created.unshift(d);
    return created;
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
  if (opts.deltaByContent) {
    if (keepIfSame(dest, node, blobRefs(repo, node), opts.sync !== false)) {
      countKept(node, opts);
      return;
    }
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
    if (opts.sync !== false) await fh.sync();
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
