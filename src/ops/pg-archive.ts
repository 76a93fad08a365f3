/**
 * PostgreSQL WAL archiving: `pg archive-push` (archive_command) and `pg archive-get`
 * (restore_command).
 *
 * Storage (see docs/design.md §12): each cluster name has a record `clusters/<name>` binding it to
 * a system identifier, major version and WAL segment size on first push; every archived file is a
 * named object `wal/<name>/<file>`. archive-push exits 0 only after the object is durable.
 * `--async` runs the same prepareWal/storeWal in a background worker (pg-archive-worker.ts) and
 * answers calls from its spool (pg-archive-spool.ts, pg-archive-async.ts).
 */
import { readFileSync, readSync, fstatSync, openSync, closeSync } from 'node:fs';
import * as path from 'node:path';
import { HoldfastError, fsError } from '../errors/catalogue.js';
import type { PieceReader, Repository } from '../repository/repository.js';
import { checkSegment, parseWalHeader } from '../wal/header.js';
import { WalFormatError, WalMismatchError } from '../wal/errors.js';
import { parseTimelineHistory, parseWalName } from '../wal/names.js';
import type { OpContext, RepoRef } from './context.js';
import { openRepository } from './repo.js';
import { withRepoLock } from './locking.js';
import { isUncertainAbsence } from '../storage/backend.js';
import { checkClusterName } from './pg-archive-spool.js';
import { PrefetchQueue, wantedAfter, writeFileDurably } from './pg-archive-prefetch.js';

export interface ClusterRecord {
  version: 1;
  name: string;
  /** Decimal system identifier. */
  systemId: string;
  pgVersion: number;
  segSize: number;
  created: string;
}

// Defined beside the spool (a path component there), which must not load this module.
export { checkClusterName };

export function walObjectName(cluster: string, file: string): string {
  return `wal/${cluster}/${file}`;
}

/** The cluster record of `cluster`, validated; undefined when the name is not bound yet. */
export async function readClusterRecord(repo: Repository, cluster: string): Promise<ClusterRecord | undefined> {
  const object = `clusters/${cluster}`;
  const raw = await repo.getNamed(object);
  if (!raw) return undefined;
  let rec: Partial<ClusterRecord>;
  try {
    rec = JSON.parse(raw.toString('utf8')) as Partial<ClusterRecord>;
  } catch {
    throw new HoldfastError('INTEGRITY', `${object} is not valid JSON`, { object });
  }
  if (typeof rec !== 'object' || rec === null || typeof rec.systemId !== 'string' || typeof rec.pgVersion !== 'number' || typeof rec.segSize !== 'number') {
    throw new HoldfastError('INTEGRITY', `${object} lacks systemId, pgVersion or segSize`, { object });
  }
  return rec as ClusterRecord;
}

/** Bind the cluster name on first use (create-only, so two first pushes cannot disagree). */
async function bindCluster(repo: Repository, cluster: string, fields: Omit<ClusterRecord, 'version' | 'name' | 'created'>, log: OpContext['log']): Promise<ClusterRecord> {
  const record: ClusterRecord = { version: 1, name: cluster, ...fields, created: new Date().toISOString() };
  const { created } = await repo.putNamed(`clusters/${cluster}`, Buffer.from(JSON.stringify(record)), { createOnly: true });
  if (created) {
    log.info(`cluster "${cluster}" bound to system identifier ${record.systemId}, PostgreSQL ${record.pgVersion}`);
    return record;
  }
  return (await readClusterRecord(repo, cluster))!;
}

/**
 * The cluster record for `cluster`, created from `fields` on first use; CLUSTER_MISMATCH when the
 * name is bound to another system identifier, major version or segment size.
 */
export async function bindClusterRecord(repo: Repository, cluster: string, fields: Omit<ClusterRecord, 'version' | 'name' | 'created'>, log: OpContext['log']): Promise<ClusterRecord> {
  const record = (await readClusterRecord(repo, cluster)) ?? (await bindCluster(repo, cluster, fields, log));
  for (const k of ['systemId', 'pgVersion', 'segSize'] as const) {
    if (String(record[k]) !== String(fields[k])) {
      throw new HoldfastError('CLUSTER_MISMATCH', `cluster "${cluster}" is bound to ${k} ${record[k]}, but this server has ${fields[k]}`, { cluster, field: k, expected: String(record[k]), actual: String(fields[k]) });
    }
  }
  return record;
}

function walError(err: unknown, file: string): never {
  if (err instanceof WalMismatchError && (err.reason === 'system-id' || err.reason === 'pg-version' || err.reason === 'seg-size')) {
    throw new HoldfastError('CLUSTER_MISMATCH', err.message, { file, reason: err.reason, actual: err.actual, expected: err.expected });
  }
  if (err instanceof WalMismatchError || err instanceof WalFormatError) {
    throw new HoldfastError('WAL_INVALID', `${file}: ${err.message}`, { file, reason: err.reason });
  }
  throw err;
}

export interface PushResult {
  file: string;
  stored: boolean;
  /** Already archived with identical content (a retried push). */
  duplicate: boolean;
  bytes: number;
  storedBytes: number;
  /** Async mode: the background worker archived it (its spool record matched the content). */
  earlier?: boolean;
}

export interface PreparedWal {
  file: string;
  path: string;
  /** Its size when validated. */
  size: number;
  /** The whole content of a history or backup history file; undefined for a segment or `.partial`, read in pieces when stored. */
  data: Buffer | undefined;
  /** A segment's first page (what validation reads). */
  head: Buffer | undefined;
  header: ReturnType<typeof parseWalHeader> | undefined;
}

/**
 * Read a WAL-archive file's name and what validation needs (a segment's first page and size, a
 * small file whole), and validate what needs no repository: a bad file fails fast.
 */
export function prepareWal(walPath: string): PreparedWal {
  const file = path.basename(walPath);
  const name = parseWalName(file);
  if (!name) {
    throw new HoldfastError('WAL_INVALID', `${file} is not a WAL segment, .partial, timeline history or backup history file name`, {
      file,
      hint: 'archive_command must pass %p of a file PostgreSQL archives. Nothing was stored.',
    });
  }
  const segment = name.kind === 'segment' || name.kind === 'partial';
  let data: Buffer | undefined;
  let head: Buffer | undefined;
  let size: number;
  try {
    if (segment) {
      const fd = openSync(walPath, 'r');
      try {
        size = fstatSync(fd).size;
        head = Buffer.allocUnsafe(Math.min(size, 8192));
        head = head.subarray(0, readFull(fd, head));
      } finally {
        closeSync(fd);
      }
    } else {
      data = readFileSync(walPath);
      size = data.length;
    }
  } catch (err) {
    throw fsError(err, 'read WAL file', walPath);
  }
  let header: ReturnType<typeof parseWalHeader> | undefined;
  try {
    if (head) header = checkSegment(head, { segmentName: file.replace(/\.partial$/, ''), fileSize: size });
    else if (name.kind === 'history') parseTimelineHistory(data!, name.timeline);
    else if (!data!.toString('latin1', 0, 64).startsWith('START WAL LOCATION:')) throw new WalFormatError('invalid-name', 'a backup history file starts with "START WAL LOCATION:"');
  } catch (err) {
    walError(err, file);
  }
  return { file, path: walPath, size, data, head, header };
}

/** Fill `buf` from the current position of `fd`; the count read (less at the end of the file). */
function readFull(fd: number, buf: Buffer): number {
  let n = 0;
  while (n < buf.length) {
    const r = readSync(fd, buf, n, buf.length - n, null);
    if (r === 0) break;
    n += r;
  }
  return n;
}

/** Sees every read of a file's content: `begin` at the start of each, then its pieces in order. */
export interface ContentTap {
  begin(): void;
  update(piece: Buffer): void;
}

function changedError(w: PreparedWal, detail: string): HoldfastError {
  return new HoldfastError('WAL_INVALID', `${w.file} changed while it was being archived (${detail})`, {
    file: w.file,
    hint: 'PostgreSQL does not modify a file it archives: something else is writing to it. Nothing was stored.',
  });
}

/**
 * Reads a prepared segment for putNamedPieces: a file that is no longer what was validated (size,
 * first page) is WAL_INVALID; read errors are reported as prepareWal's.
 */
class SegmentReader implements PieceReader {
  private readonly fd: number;
  private total = 0;

  constructor(
    private readonly w: PreparedWal,
    private readonly tap: ContentTap | undefined,
  ) {
    try {
      this.fd = openSync(w.path, 'r');
    } catch (err) {
      throw fsError(err, 'read WAL file', w.path);
    }
    tap?.begin();
  }

  fill(buf: Buffer): number {
    const { w } = this;
    let n: number;
    try {
      n = readFull(this.fd, buf);
    } catch (err) {
      throw fsError(err, 'read WAL file', w.path);
    }
    if (this.total === 0 && w.head && !buf.subarray(0, w.head.length).equals(w.head)) throw changedError(w, 'its first page differs');
    this.total += n;
    if (this.total > w.size) throw changedError(w, `more than the ${w.size} bytes validated`);
    if (n < buf.length && this.total !== w.size) throw changedError(w, `${this.total} bytes instead of ${w.size}`);
    this.tap?.update(buf.subarray(0, n));
    return n;
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** The whole content of a prepared file (small files as read; a segment read again). */
function wholeContent(w: PreparedWal, tap: ContentTap | undefined): Buffer {
  let data = w.data;
  if (!data) {
    try {
      data = readFileSync(w.path);
    } catch (err) {
      throw fsError(err, 'read WAL file', w.path);
    }
    if (data.length !== w.size) throw changedError(w, `${data.length} bytes instead of ${w.size}`);
  }
  tap?.begin();
  tap?.update(data);
  return data;
}

export interface StoreOptions {
  /** Log "already archived with identical content" at debug level instead of as a warning. */
  readonly quietDuplicate?: boolean;
  /** Sees the content as it is stored or compared (the async worker's spool fingerprint). */
  readonly tap?: ContentTap;
}

/**
 * Check a prepared file against the cluster (binding it on first use) and store it durably: the
 * one code path of archive-push, synchronous or through the async worker. Resolves only once the
 * object is durable (or already was, with identical content). A segment is read, compressed and
 * encrypted in 1 MiB pieces, never held whole (unless it is already archived and must be compared).
 */
export async function storeWal(repo: Repository, cluster: string, w: PreparedWal, ctx: OpContext, opts: StoreOptions = {}): Promise<PushResult> {
  const { file, header } = w;
  let record = await readClusterRecord(repo, cluster);
  if (header) {
    if (!record) record = await bindCluster(repo, cluster, { systemId: header.systemId.toString(), pgVersion: header.pgVersion, segSize: header.segSize }, ctx.log);
    try {
      checkSegment(w.head!, { segmentName: file.replace(/\.partial$/, ''), systemId: BigInt(record.systemId), pgVersion: record.pgVersion, segSize: record.segSize, fileSize: w.size });
    } catch (err) {
      walError(err, file);
    }
  }
  const object = walObjectName(cluster, file);
  let existing: Buffer | undefined;
  try {
    existing = await repo.getNamed(object);
  } catch (err) {
    // A storage of the repository is down (failover): the file may be archived there. Storing it
    // on the usable storage is what failover is for; an identical copy there is harmless, and
    // `storage sync` reports a differing one as a conflict once every storage answers.
    if (!isUncertainAbsence(err)) throw err;
    ctx.log.debug(`${file}: not on the usable storages, and another storage cannot be asked; storing it on the usable one`);
  }
  if (existing) return sameOrConflict(existing, wholeContent(w, opts.tap), file, object, ctx, opts);
  const { created, size } = w.data ? await repo.putNamed(object, wholeContent(w, opts.tap), { createOnly: true }) : await repo.putNamedPieces(object, () => new SegmentReader(w, opts.tap), { createOnly: true });
  if (!created) {
    // Another process archived it between our look and our write.
    return sameOrConflict((await repo.getNamed(object))!, wholeContent(w, opts.tap), file, object, ctx, opts);
  }
  return { file, stored: true, duplicate: false, bytes: w.size, storedBytes: size };
}

/**
 * Validate and archive one WAL, history, backup history or `.partial` file; exits (resolves)
 * only once it is durable in the repository. `quietDuplicate`: a file already archived with the
 * same content is logged at debug level, not as a warning (async mode, where the background
 * worker may have archived it meanwhile). `opened` sees the repository once it is open (the
 * native front's sync ticket records its key id and compression).
 */
export async function archivePush(ref: RepoRef, cluster: string, walPath: string, ctx: OpContext, opts: StoreOptions = {}, opened?: (repo: Pick<Repository, 'keyId' | 'compression'>) => void): Promise<PushResult> {
  checkClusterName(cluster);
  const own = prepareWal(walPath);
  const repo = await openRepository(ref, false);
  opened?.(repo);
  try {
    return await withRepoLock(repo, ref.location, ctx, 'shared', 'pg archive-push', (ctx) => storeWal(repo, cluster, own, ctx, opts));
  } finally {
    await repo.close();
  }
}

function sameOrConflict(existing: Buffer, data: Buffer, file: string, object: string, ctx: OpContext, opts: StoreOptions): PushResult {
  if (existing.equals(data)) {
    ctx.log[opts.quietDuplicate ? 'debug' : 'warn'](`${file} was already archived with identical content; nothing to do`);
    return { file, stored: false, duplicate: true, bytes: data.length, storedBytes: 0 };
  }
  throw new HoldfastError('WAL_CONFLICT', `${file} is already archived with different content (${existing.length} bytes stored, ${data.length} offered)`, { file, object });
}

export interface GetOptions {
  /** Fetch up to this many following segments into the prefetch queue (pg-archive-prefetch.ts). */
  readonly prefetch?: number;
  /** The prefetch queue directory (private to the user). */
  readonly queueDir?: string | undefined;
}

/**
 * Fetch an archived file to `dest` (restore_command's %p): written to a temporary name beside it,
 * fsynced and renamed, so PostgreSQL never sees a partial file. A missing file is WAL_NOT_FOUND
 * (exit 1), which tells PostgreSQL the archive has nothing more. With `prefetch`, a segment is
 * taken from the local queue when it is there (the repository is not opened), and a call that
 * reads the repository queues the segments after its own.
 */
export async function archiveGet(ref: RepoRef, cluster: string, file: string, dest: string, ctx?: Pick<OpContext, 'log'>, opts: GetOptions = {}): Promise<{ file: string; bytes: number; from?: 'queue' | 'repository'; queued?: number }> {
  checkClusterName(cluster);
  const name = parseWalName(file);
  if (!name) {
    throw new HoldfastError('WAL_INVALID', `${file} is not a WAL segment, .partial, timeline history or backup history file name`, { file, hint: 'restore_command must pass %f and %p.' });
  }
  const n = opts.prefetch ?? 0;
  let queue: PrefetchQueue | undefined;
  if (n > 0 && name.kind === 'segment' && opts.queueDir) {
    try {
      queue = new PrefetchQueue(opts.queueDir);
      await queue.bind(ref.location, ref.storage);
    } catch (err) {
      if (!(err instanceof HoldfastError) || err.code !== 'PERMISSION_DENIED') throw err;
      ctx?.log.warn(`${err.message}; fetching without prefetch`);
      queue = undefined;
    }
    const segSize = queue?.take(file, dest);
    if (queue && segSize !== undefined) {
      queue.prune(file, wantedAfter(file, n, segSize));
      return { file, bytes: segSize, from: 'queue' };
    }
  }
  const repo = await openRepository(ref, false);
  try {
    const data = await repo.getNamed(walObjectName(cluster, file));
    if (!data) throw new HoldfastError('WAL_NOT_FOUND', `${file} is not in the archive of cluster "${cluster}"`, { file, cluster });
    writeFileDurably(dest, data, 'write');
    if (!queue) return { file, bytes: data.length, from: 'repository' };
    return { file, bytes: data.length, from: 'repository', queued: await refill(repo, cluster, file, n, queue, ctx) };
  } finally {
    await repo.close();
  }
}

/**
 * Queue the segments after `file` that are not queued yet, in order, two at a time, stopping at the
 * first the archive does not have. A failure here is not the call's: its own file is written.
 */
async function refill(repo: Repository, cluster: string, file: string, n: number, queue: PrefetchQueue, ctx?: Pick<OpContext, 'log'>): Promise<number> {
  let queued = 0;
  try {
    const segSize = (await readClusterRecord(repo, cluster))?.segSize;
    if (!segSize) return 0;
    const wanted = wantedAfter(file, n, segSize);
    queue.prune(file, wanted);
    const have = new Set(queue.segments());
    const missing = wanted.filter((w) => !have.has(w));
    for (let i = 0; i < missing.length; i += 2) {
      const batch = missing.slice(i, i + 2);
      const got = await Promise.all(batch.map((w) => repo.getNamed(walObjectName(cluster, w))));
      for (const [j, data] of got.entries()) {
        if (!data) return queued; // not archived (yet): nothing after it either
        queue.put(batch[j]!, data);
        queued++;
      }
    }
  } catch (err) {
    ctx?.log.debug(`prefetch after ${file} stopped: ${err instanceof Error ? err.message : String(err)}`);
  }
  return queued;
}
