/**
 * PostgreSQL WAL archiving: `pg archive-push` (archive_command) and `pg archive-get`
 * (restore_command).
 *
 * Storage (see docs/design.md §12): each cluster name has a record `clusters/<name>` binding it to
 * a system identifier, major version and WAL segment size on first push; every archived file is a
 * named object `wal/<name>/<file>`. archive-push exits 0 only after the object is durable.
 */
import { readFileSync, readdirSync, mkdirSync, rmSync, writeFileSync, openSync, writeSync, fsyncSync, closeSync, renameSync, unlinkSync } from 'node:fs';
import { sha256Hex } from '../repository/crypto.js';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { HoldfastError, fsError } from '../errors/catalogue.js';
import type { Repository } from '../repository/repository.js';
import { checkSegment, parseWalHeader } from '../wal/header.js';
import { WalFormatError, WalMismatchError } from '../wal/errors.js';
import { parseTimelineHistory, parseWalName } from '../wal/names.js';
import type { OpContext, RepoRef } from './context.js';
import { openBackend, openRepository } from './repo.js';
import { isNotFound } from '../storage/backend.js';
import { storageToHoldfast } from '../repository/repository.js';
import { repositoryPath, withLocalLock, withRepoLock } from './locking.js';

export interface ClusterRecord {
  version: 1;
  name: string;
  /** Decimal system identifier. */
  systemId: string;
  pgVersion: number;
  segSize: number;
  created: string;
}

const CLUSTER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function checkClusterName(name: string): string {
  if (!CLUSTER_NAME.test(name)) {
    throw new HoldfastError('CONFIG_INVALID', `cluster name ${JSON.stringify(name)} is invalid`, { option: 'cluster', hint: 'Use 1-64 letters, digits, "_", "." or "-", starting with a letter or digit.' });
  }
  return name;
}

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
  /** Async mode: an earlier call had already archived it (spool record matched). */
  earlier?: boolean;
}

interface PreparedWal {
  file: string;
  data: Buffer;
  header: ReturnType<typeof parseWalHeader> | undefined;
}

/** Read a WAL-archive file and validate what needs no repository: a bad file fails fast. */
function prepareWal(walPath: string): PreparedWal {
  const file = path.basename(walPath);
  const name = parseWalName(file);
  if (!name) {
    throw new HoldfastError('WAL_INVALID', `${file} is not a WAL segment, .partial, timeline history or backup history file name`, {
      file,
      hint: 'archive_command must pass %p of a file PostgreSQL archives. Nothing was stored.',
    });
  }
  let data: Buffer;
  try {
    data = readFileSync(walPath);
  } catch (err) {
    throw fsError(err, 'read WAL file', walPath);
  }
  let header: ReturnType<typeof parseWalHeader> | undefined;
  try {
    if (name.kind === 'segment' || name.kind === 'partial') header = checkSegment(data, { segmentName: file.replace(/\.partial$/, '') });
    else if (name.kind === 'history') parseTimelineHistory(data, name.timeline);
    else if (!data.toString('latin1', 0, 64).startsWith('START WAL LOCATION:')) throw new WalFormatError('invalid-name', 'a backup history file starts with "START WAL LOCATION:"');
  } catch (err) {
    walError(err, file);
  }
  return { file, data, header };
}

/** Check a prepared file against the cluster (binding it on first use) and store it durably. */
async function storeWal(repo: Repository, cluster: string, w: PreparedWal, ctx: OpContext): Promise<PushResult> {
  const { file, data, header } = w;
  let record = await readClusterRecord(repo, cluster);
  if (header) {
    if (!record) record = await bindCluster(repo, cluster, { systemId: header.systemId.toString(), pgVersion: header.pgVersion, segSize: header.segSize }, ctx.log);
    try {
      checkSegment(data, { segmentName: file.replace(/\.partial$/, ''), systemId: BigInt(record.systemId), pgVersion: record.pgVersion, segSize: record.segSize, fileSize: data.length });
    } catch (err) {
      walError(err, file);
    }
  }
  const object = walObjectName(cluster, file);
  const existing = await repo.getNamed(object);
  if (existing) return sameOrConflict(existing, data, file, object, ctx);
  const { created, size } = await repo.putNamed(object, data, { createOnly: true });
  if (!created) {
    // Another process archived it between our look and our write.
    return sameOrConflict((await repo.getNamed(object))!, data, file, object, ctx);
  }
  return { file, stored: true, duplicate: false, bytes: data.length, storedBytes: size };
}

export interface AsyncOptions {
  /** Local spool directory for this repository and cluster (never on network storage). */
  readonly spoolDir: string;
  /** At most this many files per call, the requested one included. */
  readonly batch: number;
  /** Files stored at once. */
  readonly parallel: number;
}

/**
 * Validate and archive one WAL, history, backup history or `.partial` file; exits (resolves)
 * only once it is durable in the repository.
 *
 * With `async`, the call also archives other files PostgreSQL has marked ready
 * (pg_wal/archive_status/*.ready beside %p), several at once, and records each one stored in the
 * spool directory as `<file>.ok` holding its SHA-256. When PostgreSQL later asks for such a file,
 * its content is hashed and compared with the record: equal means it is already durable in the
 * repository and the call returns at once. A lost or stale record only costs a normal push.
 */
export async function archivePush(ref: RepoRef, cluster: string, walPath: string, ctx: OpContext, async?: AsyncOptions): Promise<PushResult> {
  checkClusterName(cluster);
  const own = prepareWal(walPath);
  if (async) {
    const instance = await repositoryInstance(ref.location);
    if (readSpoolInstance(async.spoolDir) !== instance) {
      // Records of another repository at this location (deleted and re-created) mean nothing.
      rmSync(async.spoolDir, { recursive: true, force: true });
      mkdirSync(async.spoolDir, { recursive: true, mode: 0o700 });
      writeFileSync(path.join(async.spoolDir, 'repository'), instance + '\n', { mode: 0o600 });
    }
    const done = spoolRecord(async.spoolDir, own.file);
    if (done !== undefined) {
      if (done === sha256Hex(own.data)) {
        rmSync(path.join(async.spoolDir, `${own.file}.ok`), { force: true });
        ctx.log.debug(`${own.file} was archived by an earlier call (spool)`);
        return { file: own.file, stored: false, duplicate: false, bytes: own.data.length, storedBytes: 0, earlier: true };
      }
      rmSync(path.join(async.spoolDir, `${own.file}.ok`), { force: true });
    }
  }
  const repo = await openRepository(ref, false);
  try {
    return await withRepoLock(repo, ref.location, ctx, 'shared', 'pg archive-push', async (ctx) => {
      const result = await storeWal(repo, cluster, own, ctx);
      if (async) await lookAhead(repo, ref.location, cluster, path.dirname(walPath), own.file, async, ctx);
      return result;
    });
  } finally {
    await repo.close();
  }
}

/** Identifies a repository instance without its key: the SHA-256 of its (encrypted) config object. */
async function repositoryInstance(location: string): Promise<string> {
  const backend = openBackend(location);
  try {
    return sha256Hex(await backend.get('config'));
  } catch (err) {
    if (isNotFound(err)) throw new HoldfastError('REPO_NOT_FOUND', `no holdfast repository at ${backend.location}`, { location: backend.location });
    throw storageToHoldfast(err, backend);
  } finally {
    await backend.close();
  }
}

function readSpoolInstance(dir: string): string | undefined {
  try {
    return readFileSync(path.join(dir, 'repository'), 'utf8').trim();
  } catch {
    return undefined;
  }
}

function spoolRecord(dir: string, file: string): string | undefined {
  try {
    const v = readFileSync(path.join(dir, `${file}.ok`), 'utf8').trim();
    return /^[0-9a-f]{64}$/.test(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Look-ahead archiving, one process per cluster at a time (a local lock): when another process is
 * already doing it, this call only archives its own file.
 */
async function lookAhead(repo: Repository, location: string, cluster: string, walDir: string, own: string, a: AsyncOptions, ctx: OpContext): Promise<void> {
  const spec = { key: `pg-archive-async:${repo.config.id}:${cluster}`, scope: `async archiving of cluster ${cluster}`, operation: 'pg archive-push --async', forbidden: [{ path: repositoryPath(location), what: 'repository' }, { path: path.dirname(walDir), what: 'data directory' }], waitMs: 0 };
  try {
    await withLocalLock(ctx, spec, () => pushReady(repo, cluster, walDir, own, a, ctx));
  } catch (err) {
    if (!(err instanceof HoldfastError) || (err.code !== 'LOCKED' && err.code !== 'LOCK_DIR')) throw err;
    ctx.log.debug(`no look-ahead this call: ${err.message}`);
  }
}

/** Archive other ready files beside `own`, record each stored one in the spool. Never throws. */
async function pushReady(repo: Repository, cluster: string, walDir: string, own: string, a: AsyncOptions, ctx: OpContext): Promise<void> {
  let ready: string[];
  try {
    ready = readdirSync(path.join(walDir, 'archive_status'))
      .filter((n) => n.endsWith('.ready'))
      .map((n) => n.slice(0, -'.ready'.length))
      .filter((n) => n !== own && parseWalName(n) !== undefined && spoolRecord(a.spoolDir, n) === undefined)
      .sort()
      .slice(0, Math.max(0, a.batch - 1));
  } catch {
    return; // no archive_status beside %p: nothing to look ahead at
  }
  if (ready.length === 0) return;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < ready.length) {
      const name = ready[next++]!;
      try {
        const w = prepareWal(path.join(walDir, name));
        await storeWal(repo, cluster, w, ctx);
        writeFileSync(path.join(a.spoolDir, `${name}.ok`), sha256Hex(w.data) + '\n', { mode: 0o600 });
      } catch (err) {
        // PostgreSQL will ask for it again, and the error is reported then.
        ctx.log.debug(`look-ahead archiving of ${name} failed: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(a.parallel, ready.length) }, worker));
  ctx.log.debug(`archived ${ready.length} more ready file(s) ahead of PostgreSQL`);
}

function sameOrConflict(existing: Buffer, data: Buffer, file: string, object: string, ctx: OpContext): PushResult {
  if (existing.equals(data)) {
    ctx.log.warn(`${file} was already archived with identical content; nothing to do`);
    return { file, stored: false, duplicate: true, bytes: data.length, storedBytes: 0 };
  }
  throw new HoldfastError('WAL_CONFLICT', `${file} is already archived with different content (${existing.length} bytes stored, ${data.length} offered)`, { file, object });
}

/**
 * Fetch an archived file to `dest` (restore_command's %p): written to a temporary name beside it,
 * fsynced and renamed, so PostgreSQL never sees a partial file. A missing file is WAL_NOT_FOUND
 * (exit 1), which tells PostgreSQL the archive has nothing more.
 */
export async function archiveGet(ref: RepoRef, cluster: string, file: string, dest: string): Promise<{ file: string; bytes: number }> {
  checkClusterName(cluster);
  if (!parseWalName(file)) {
    throw new HoldfastError('WAL_INVALID', `${file} is not a WAL segment, .partial, timeline history or backup history file name`, { file, hint: 'restore_command must pass %f and %p.' });
  }
  const repo = await openRepository(ref, false);
  let data: Buffer | undefined;
  try {
    data = await repo.getNamed(walObjectName(cluster, file));
  } finally {
    await repo.close();
  }
  if (!data) throw new HoldfastError('WAL_NOT_FOUND', `${file} is not in the archive of cluster "${cluster}"`, { file, cluster });
  const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.holdfast-${randomBytes(4).toString('hex')}`);
  try {
    const fd = openSync(tmp, 'wx', 0o600);
    try {
      for (let off = 0; off < data.length; ) off += writeSync(fd, data, off, data.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, dest);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // nothing to remove
    }
    throw fsError(err, 'write', dest, 'TARGET_IO');
  }
  return { file, bytes: data.length };
}
