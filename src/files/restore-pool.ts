/**
 * Restore worker threads (restore-worker.ts). With the local storage driver, file contents are
 * read straight from the pack files and decrypted, decompressed, verified and written with
 * synchronous I/O in worker threads. The main thread keeps everything else: walking and
 * validating the snapshot, creating directories, symlinks and special files, delta decisions,
 * progress. Files are created with `createTargetFile` (O_CREAT|O_EXCL|O_NOFOLLOW, never through
 * a symlink or into a directory) only below directories the main thread has created or checked.
 *
 * Creating files is in the workers too: with data being written, ext4 makes each create wait for
 * its journal (measured here: 0.4-0.8 ms per file instead of 0.03 ms), so one creating thread
 * could not keep up with trees of many small files (30,000 files: the main thread spent 25 s in
 * open() while the workers idled half the time).
 *
 * Protocol:
 *   main → worker   init {key, root, location, stop}
 *   main → worker   work {batch, items}       up to BATCH_ITEMS files or ranges
 *   worker → main   results {batch, results}  one per item, once the whole batch is done
 *
 * An item is either
 *   - a whole file: the worker creates it, writes its chunks (all-zero chunks are skipped: holes),
 *     sizes it with ftruncate, sets owner, mode and times and closes it; for a delta restore by
 *     content (`keep`), first checks whether the file there already holds exactly that content
 *     (`sameContent`), and then only sets its metadata; or
 *   - a check of a range of a large file for a delta restore (`sameContent` on that range); or
 *   - a range of a large file: the main thread has created the file and passes the descriptor
 *     (descriptors are shared by all threads of a process); the worker only writes the range's
 *     chunks at their positions, and the main thread sizes the file, sets its metadata and
 *     closes it once every range has reported (or its worker has exited), so the number is
 *     never reused while a worker could still write through it.
 * Each thread closes only descriptors it opened (Node tracks a worker's and closes them when it
 * exits). `stop` is a shared flag: once set, workers cancel what they have not written yet and
 * report, so after `stop()` resolves no worker uses a descriptor it was given.
 *
 * Bounds: each worker holds up to 2 MiB of chunks (and one coalesced read of at most 4 MiB of sealed blobs)
 * at a time, and is sent work only while it has less than SLOT_WEIGHT or SLOT_ITEMS outstanding,
 * so idle workers pick up what is left (large files are cut into RANGE-byte ranges for the same
 * reason). Whole files are sent before ranges (see `files`). The walk waits (`room`) while
 * MAX_ITEMS items are submitted and not done, MAX_LARGE large files are open, or more than
 * QUEUE_WEIGHT bytes wait for a worker; the weight bound is generous on purpose, so that the
 * walk goes on queueing small files while the workers write large ones.
 */
import { Worker } from 'node:worker_threads';
import { closeSync, constants as fsc, existsSync, fchmodSync, fchownSync, fstatSync, fsync, fsyncSync, ftruncateSync, futimesSync, lstatSync, openSync, readSync, unlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CATALOGUE, type ErrorCode, HoldfastError, fsError, systemCode } from '../errors/catalogue.js';
import { sha256 } from '../repository/crypto.js';
import { nativeHelper } from '../util/native.js';

/** Where one blob of a file lives: pack id, byte range, and its plaintext size. */
export interface BlobRef {
  readonly id: string;
  readonly pack: string;
  readonly offset: number;
  readonly length: number;
  readonly rawLength: number;
}

export interface FileMeta {
  readonly uid: number;
  readonly gid: number;
  readonly mode: number;
  /** Seconds (fractional), as fs.futimes takes them. */
  readonly atime: number;
  readonly mtime: number;
  /** Set the owner (only when running as root). */
  readonly chown: boolean;
}

export type WorkItem =
  | { readonly t: 'file'; readonly dest: string; readonly force: boolean; readonly blobs: readonly BlobRef[]; readonly meta: FileMeta; readonly keep?: boolean | undefined }
  | { readonly t: 'range'; readonly fd: number; readonly dest: string; readonly pos: number; readonly blobs: readonly BlobRef[] }
  | { readonly t: 'check'; readonly dest: string; readonly size: number; readonly pos: number; readonly blobs: readonly BlobRef[] };

/** What became of an item: written; kept (a delta restore found the content there); a checked range the same or not. */
export type Outcome = 'written' | 'kept' | 'same' | 'differs';

export interface SerializedError {
  readonly code: string;
  readonly message: string;
  readonly data: Record<string, unknown>;
}

export type MainToWorker = { t: 'init'; key: Uint8Array; root: string; location: string; stop: SharedArrayBuffer } & WriteMode | { t: 'work'; batch: number; items: WorkItem[] };

/**
 * How workers write: `sync`, fsync each file; `writeback`, start writing what they write to
 * storage as they go; `direct`, write large files' page-aligned blobs with O_DIRECT.
 */
export interface WriteMode {
  readonly sync: boolean;
  readonly writeback: boolean;
  readonly direct: boolean;
}

export type WorkerToMain = { t: 'results'; batch: number; results: Array<Outcome | SerializedError> };

/** Large files are split into ranges of about this many bytes, written by any free worker. */
export const RANGE = 16 << 20;
/** Extra weight per item, in bytes: creating, sizing and closing a file costs about this much writing. */
export const ITEM_COST = 64 << 10;
const BATCH_ITEMS = 64;
/** sameContent reads and hashes up to this many blobs, and bytes, at once (native/zstd-sync.c takes up to 64). */
const COMPARE_BLOBS = 16;
const COMPARE_BYTES = 2 << 20;
const BATCH_WEIGHT = 8 << 20;
const SLOT_WEIGHT = 32 << 20;
const SLOT_ITEMS = 128;
const QUEUE_WEIGHT = 4 * 2 ** 30;
const MAX_ITEMS = 512;
const MAX_LARGE = 64;

/** Reported for items a stopping worker did not write. */
export const CANCELLED = 'restore stopped before this file was written';

/** The error a worker reported, as the catalogue error it was. */
export function reviveError(e: SerializedError): HoldfastError {
  const code = (Object.hasOwn(CATALOGUE, e.code) ? e.code : 'INTERNAL') as ErrorCode;
  return new HoldfastError(code, e.message, e.data);
}

export function serializeError(err: unknown): SerializedError {
  if (err instanceof Error && err.message === CANCELLED) return { code: 'INTERRUPTED', message: CANCELLED, data: {} };
  if (err instanceof HoldfastError) return { code: err.code, message: err.message, data: err.data };
  const message = err instanceof Error ? err.message : String(err);
  return { code: 'INTERNAL', message: `restore worker: unexpected error: ${message}`, data: {} };
}

const CREATE_FLAGS = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW;

/**
 * Create `dest` for writing with O_CREAT|O_EXCL|O_NOFOLLOW (mode 0600 until its metadata is set).
 * With `force`, a file or symlink standing there is removed first (never followed); a directory
 * is a TARGET_CONFLICT. Synchronous: for worker threads, and for the main thread's few large
 * files (a few microseconds instead of ~70 µs of event-loop time per promise call).
 */
export function createTargetFile(dest: string, force: boolean): number {
  try {
    return openSync(dest, CREATE_FLAGS, 0o600);
  } catch (err) {
    if (systemCode(err) !== 'EEXIST' || !force) throw fsError(err, 'create', dest, 'TARGET_IO');
  }
  try {
    if (lstatSync(dest).isDirectory()) throw new HoldfastError('TARGET_CONFLICT', `${dest} is a directory in the target, but the snapshot has a file or link there`, { path: dest });
    unlinkSync(dest);
    return openSync(dest, CREATE_FLAGS, 0o600);
  } catch (err) {
    throw fsError(err, 'create', dest, 'TARGET_IO');
  }
}

/** Where the worker script is: beside this module (tsc build) or the bundle's entry (dist/). */
function workerScript(): URL | undefined {
  for (const rel of ['./restore-worker.js', '../restore-worker.mjs', './restore-worker.mjs']) {
    const url = new URL(rel, import.meta.url);
    if (existsSync(fileURLToPath(url))) return url;
  }
  return undefined;
}

interface Pending {
  readonly item: WorkItem;
  readonly weight: number;
  readonly resolve: (outcome: Outcome) => void;
  readonly reject: (err: Error) => void;
}

interface Slot {
  readonly worker: Worker;
  weight: number;
  items: number;
  readonly batches: Map<number, Pending[]>;
  exited: boolean;
}

/** A FIFO with O(1) shift. */
class Fifo<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(x: T): void {
    this.items.push(x);
  }

  peek(): T | undefined {
    return this.items[this.head];
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const x = this.items[this.head]!;
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return x;
  }

  drain(): T[] {
    const all = this.items.slice(this.head);
    this.items = [];
    this.head = 0;
    return all;
  }
}

export class RestorePool {
  private readonly slots: Slot[] = [];
  /**
   * Whole files go out before ranges of large files: ranges are what can be shared evenly, so
   * they are best kept for the end (and for when no files are queued), and a large file's queue
   * of ranges does not hold up the small files behind it.
   */
  private readonly files = new Fifo<Pending>();
  private readonly ranges = new Fifo<Pending>();
  private queuedWeight = 0;
  /** Items submitted and not yet settled. */
  private unsettled = 0;
  /** Large files' descriptors referenced by ranges not yet settled, with their range counts. */
  private readonly openFds = new Map<number, number>();
  private roomWaiters: Array<() => void> = [];
  private idleWaiters: Array<() => void> = [];
  private scheduled = false;
  private nextBatch = 1;
  private failure: Error | undefined;
  private readonly stopFlag = new Int32Array(new SharedArrayBuffer(4));
  private stopping: Promise<void> | undefined;

  private constructor() {}

  /**
   * Start `count` workers reading packs below `root` (a local repository directory, reported as
   * `location` in messages). Undefined when worker threads cannot be used here (no worker script).
   * `mode`: how they write (WriteMode).
   */
  static start(key: Buffer, root: string, location: string, count: number, mode: WriteMode): RestorePool | undefined {
    const script = workerScript();
    if (!script || count < 1) return undefined;
    const pool = new RestorePool();
    for (let i = 0; i < count; i++) {
      // A small young generation: workers allocate short-lived chunk buffers, and V8's default
      // keeps tens of MB of them alive per isolate between scavenges.
      const worker = new Worker(script, { resourceLimits: { maxYoungGenerationSizeMb: 8 } });
      const slot: Slot = { worker, weight: 0, items: 0, batches: new Map(), exited: false };
      worker.on('message', (msg: WorkerToMain) => pool.onResults(slot, msg));
      worker.on('error', (err) => pool.fail(new HoldfastError('INTERNAL', `restore worker failed: ${err.message}`, {}, { cause: err })));
      // Only once the thread is gone is nothing written through its descriptors any more: its
      // unreported items are rejected then (Node closes the files it had opened).
      worker.on('exit', (code) => {
        slot.exited = true;
        if (code !== 0 && !pool.stopping) pool.fail(new HoldfastError('INTERNAL', `restore worker exited with code ${code}`, {}));
        const lost = new HoldfastError('INTERNAL', `restore worker exited with code ${code} before finishing its work`, {});
        for (const batch of slot.batches.values()) for (const p of batch) p.reject(pool.failure ?? lost);
        slot.batches.clear();
        pool.wakeIdleWaiters();
      });
      worker.postMessage({ t: 'init', key: Uint8Array.from(key), root, location, stop: pool.stopFlag.buffer as SharedArrayBuffer, ...mode } satisfies MainToWorker);
      pool.slots.push(slot);
    }
    return pool;
  }

  get size(): number {
    return this.slots.length;
  }

  /**
   * Queue an item; resolves once it is written, rejects with the catalogue error. Either way no
   * worker uses a range's descriptor any more by then (it stays open for the caller).
   */
  submit(item: WorkItem, bytes: number): Promise<Outcome> {
    if (this.failure) return Promise.reject(this.failure);
    this.unsettled++;
    if (item.t === 'range') this.openFds.set(item.fd, (this.openFds.get(item.fd) ?? 0) + 1);
    return new Promise<Outcome>((resolve, reject) => {
      const settled = (): void => {
        this.unsettled--;
        if (item.t === 'range') {
          const n = this.openFds.get(item.fd)! - 1;
          if (n > 0) this.openFds.set(item.fd, n);
          else this.openFds.delete(item.fd);
        }
        this.wakeRoomWaiters();
      };
      const p: Pending = {
        item,
        weight: bytes + ITEM_COST,
        resolve: (outcome) => {
          settled();
          resolve(outcome);
        },
        reject: (err) => {
          settled();
          reject(err);
        },
      };
      (item.t === 'file' ? this.files : this.ranges).push(p);
      this.queuedWeight += p.weight;
      if (this.files.length >= BATCH_ITEMS) this.pump();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.pump());
      }
    });
  }

  /**
   * Resolves when another file may be queued: the walk waits here while MAX_ITEMS items or
   * MAX_LARGE large files are pending or QUEUE_WEIGHT bytes wait for a worker, so memory and
   * descriptors stay bounded.
   */
  async room(): Promise<void> {
    while (!this.failure && this.full()) {
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    }
    if (this.failure) throw this.failure;
  }

  private pump(): void {
    this.scheduled = false;
    while (this.files.length + this.ranges.length > 0 && !this.failure) {
      let slot: Slot | undefined;
      for (const s of this.slots) if (s.weight < SLOT_WEIGHT && s.items < SLOT_ITEMS && (!slot || s.weight < slot.weight)) slot = s;
      if (!slot) break;
      const batch: Pending[] = [];
      let weight = 0;
      for (const q of [this.files, this.ranges]) {
        for (let p = q.peek(); p && batch.length < BATCH_ITEMS && slot.items + batch.length < SLOT_ITEMS; p = q.peek()) {
          if (batch.length > 0 && (weight + p.weight > BATCH_WEIGHT || slot.weight + weight + p.weight > SLOT_WEIGHT)) break;
          batch.push(p);
          weight += p.weight;
          q.shift();
        }
      }
      this.queuedWeight -= weight;
      slot.weight += weight;
      slot.items += batch.length;
      const id = this.nextBatch++;
      slot.batches.set(id, batch);
      slot.worker.postMessage({ t: 'work', batch: id, items: batch.map((p) => p.item) } satisfies MainToWorker);
    }
    this.wakeRoomWaiters();
  }

  private full(): boolean {
    return this.queuedWeight > QUEUE_WEIGHT || this.unsettled >= MAX_ITEMS || this.openFds.size >= MAX_LARGE;
  }

  private wakeRoomWaiters(): void {
    if (this.failure || !this.full()) {
      const waiters = this.roomWaiters;
      this.roomWaiters = [];
      for (const w of waiters) w();
    }
  }

  private wakeIdleWaiters(): void {
    if (this.slots.every((s) => s.batches.size === 0 || s.exited)) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private onResults(slot: Slot, msg: WorkerToMain): void {
    const batch = slot.batches.get(msg.batch);
    if (!batch) return;
    slot.batches.delete(msg.batch);
    for (const [i, p] of batch.entries()) {
      slot.weight -= p.weight;
      slot.items--;
      const result = msg.results[i] ?? { code: 'INTERNAL', message: 'restore worker: a result is missing', data: {} };
      if (typeof result === 'string') p.resolve(result);
      else p.reject(this.failure && result.message === CANCELLED ? this.failure : reviveError(result));
    }
    this.pump();
    this.wakeIdleWaiters();
  }

  /**
   * From now on nothing more is written: queued items are rejected (their descriptors closed),
   * workers cancel what they have. The first failure is what every later call rejects with.
   */
  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    Atomics.store(this.stopFlag, 0, 1);
    for (const p of [...this.files.drain(), ...this.ranges.drain()]) p.reject(err);
    this.queuedWeight = 0;
    this.wakeRoomWaiters();
  }

  /**
   * Stop: cancel what is queued or not yet written, wait until every worker has reported (or
   * exited), so none holds or uses a descriptor any more, then end the threads. `reason` is what
   * pending items reject with. Idempotent.
   */
  stop(reason: Error = new HoldfastError('INTERNAL', 'restore worker pool closed', {})): Promise<void> {
    this.stopping ??= (async () => {
      this.fail(reason);
      await new Promise<void>((resolve) => {
        this.idleWaiters.push(resolve);
        this.wakeIdleWaiters();
      });
      await Promise.all(this.slots.map((s) => s.worker.terminate()));
    })();
    return this.stopping;
  }
}

const READ_FLAGS = fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK;
/** Reused for comparisons (one per thread: each worker has its own copy of this module). */
let scratch = Buffer.allocUnsafe(COMPARE_BYTES);

/**
 * Delta restore: whether `dest` already holds `blobs` from byte `pos` on, each byte range having
 * the SHA-256 its blob id names, in a file of `size` bytes. Only a regular file with a single
 * link qualifies, opened without following a symlink (a FIFO is not waited for): anything else is
 * rewritten, never written through. With `keepOpen`, a match returns the open read-only
 * descriptor (to set metadata through); otherwise true or false.
 * Up to COMPARE_BLOBS blobs (COMPARE_BYTES) are read at once and hashed together, in the SHA-256
 * lanes of the native helper where it has them (twice OpenSSL's speed here: comparing is most of
 * a delta restore's work when little has changed).
 */
export function sameContent(dest: string, size: number, pos: number, blobs: readonly BlobRef[], keepOpen: boolean): number | boolean {
  let fd: number;
  try {
    fd = openSync(dest, READ_FLAGS);
  } catch {
    return false;
  }
  let same = false;
  try {
    const st = fstatSync(fd);
    same = st.isFile() && st.nlink === 1 && st.size === size;
    const many = nativeHelper()?.sha256Many;
    for (let i = 0; same && i < blobs.length; ) {
      let j = i;
      let bytes = 0;
      while (j < blobs.length && j - i < COMPARE_BLOBS && (j === i || bytes + blobs[j]!.rawLength <= COMPARE_BYTES)) bytes += blobs[j++]!.rawLength;
      if (scratch.length < bytes) scratch = Buffer.allocUnsafe(bytes);
      let got = 0;
      while (got < bytes) {
        const n = readSync(fd, scratch, got, bytes - got, pos + got);
        if (n === 0) break;
        got += n;
      }
      if (got < bytes) {
        same = false;
        break;
      }
      const parts: Buffer[] = [];
      for (let at = 0, t = i; t < j; at += blobs[t++]!.rawLength) parts.push(scratch.subarray(at, at + blobs[t]!.rawLength));
      const digests = many && parts.length > 1 ? many(parts) : undefined;
      for (let t = 0; same && t < parts.length; t++) {
        const digest = digests ? digests.subarray(32 * t, 32 * t + 32) : sha256(parts[t]!);
        same = digest.toString('hex') === blobs[i + t]!.id;
      }
      pos += bytes;
      i = j;
    }
  } catch {
    same = false;
  }
  if (same && keepOpen) return fd;
  closeQuietly(fd);
  return same;
}

/**
 * Size a written file (unless `size` is undefined: a kept file, or one already that long) and set its owner, mode and times
 * (chown before chmod: it clears setuid); with `sync`, then fsync it (content and metadata: a
 * restore that reports success must survive a power loss).
 */
export function finishTargetFile(fd: number, size: number | undefined, meta: FileMeta, dest: string, sync = false): void {
  try {
    if (size !== undefined) ftruncateSync(fd, size);
    if (meta.chown) fchownSync(fd, meta.uid, meta.gid);
    fchmodSync(fd, meta.mode);
    futimesSync(fd, meta.atime, meta.mtime);
    if (sync) fsyncSync(fd);
  } catch (err) {
    throw fsError(err, 'write', dest, 'TARGET_IO');
  }
}

/** finishTargetFile, then close (TARGET_IO on failure); the descriptor is closed either way. */
export function finishAndClose(fd: number, size: number | undefined, meta: FileMeta, dest: string, sync = false): void {
  try {
    finishTargetFile(fd, size, meta, dest, sync);
  } catch (err) {
    closeQuietly(fd);
    throw err;
  }
  closeTarget(fd, dest);
}

/**
 * finishAndClose for the main thread: the fsync (seconds for a large file) runs on the thread
 * pool, so the main thread goes on feeding the workers meanwhile.
 */
export async function finishAndCloseAsync(fd: number, size: number, meta: FileMeta, dest: string, sync: boolean): Promise<void> {
  try {
    finishTargetFile(fd, size, meta, dest);
    if (sync) await new Promise<void>((resolve, reject) => fsync(fd, (err) => (err ? reject(fsError(err, 'write', dest, 'TARGET_IO')) : resolve())));
  } catch (err) {
    closeQuietly(fd);
    throw err;
  }
  closeTarget(fd, dest);
}

function closeTarget(fd: number, dest: string): void {
  try {
    closeSync(fd);
  } catch (err) {
    throw fsError(err, 'write', dest, 'TARGET_IO');
  }
}

/** Close a descriptor, ignoring errors (cleanup after another failure). */
export function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // nothing more to do
  }
}
