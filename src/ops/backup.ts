/**
 * File backup: archive paths, make the data durable, then write the snapshot.
 * Order: packs → index (flush) → snapshot. An interrupted backup writes no snapshot.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { hostname } from 'node:os';
import { currentUsername } from '../util/user.js';
import { HoldfastError, fsError, systemCode } from '../errors/catalogue.js';
import { type ArchiveOptions, Archiver, newArchiveProgress } from '../files/archiver.js';
import { ReaderPool } from '../files/reader-pool.js';
import { availableParallelism } from 'node:os';
import { Excluder } from '../files/exclude.js';
import { type Compression, parseCompression } from '../repository/compress.js';
import { type Snapshot, type SnapshotSummary, findSnapshot, listSnapshots, saveSnapshot } from '../repository/snapshot.js';
import { Ticker, formatBytes, rateAndEta } from '../ui/output.js';
import type { OpContext, RepoRef } from './context.js';
import { openRepository } from './repo.js';
import { withLocalLock, withRepoLock } from './locking.js';
import type { Repository } from '../repository/repository.js';
import { VERSION } from '../version.js';

export const PROGRAM = `holdfast ${VERSION}`;

export interface BackupParams {
  readonly paths: readonly string[];
  readonly excludes: readonly string[];
  readonly tags: readonly string[];
  readonly host?: string | undefined;
  readonly parent?: string | undefined;
  readonly readAll: boolean;
  readonly compression: string;
  readonly packSize: number;
  /** Worker threads for reading files; undefined = number of CPUs, 0 = none. */
  readonly jobs?: number | undefined;
  /** Record this time in the snapshot instead of the backup's start (--time). */
  readonly time?: Date | undefined;
}

export interface BackupResult {
  snapshotId: string;
  parent?: string;
  summary: SnapshotSummary;
  /** Paths that could not be read; the snapshot was saved without them. */
  sourceErrors: Array<{ path: string; message: string }>;
}

/**
 * A --time value: `YYYY-MM-DD[( |T)HH:MM[:SS[.fff]]][Z|±HH[:MM]]`. Without a zone it is local
 * time; a date alone is local midnight. Returns undefined when the text is not such a time or
 * names no real date.
 */
export function parseSnapshotTime(text: string): Date | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/i.exec(text.trim());
  if (!m) return undefined;
  const [y, mo, d, h, mi, sec] = [1, 2, 3, 4, 5, 6].map((i) => Number(m[i] ?? 0)) as [number, number, number, number, number, number];
  const ms = Number((m[7] ?? '').padEnd(3, '0').slice(0, 3));
  if (mo < 1 || mo > 12 || d < 1 || d > new Date(Date.UTC(y, mo, 0)).getUTCDate() || h > 23 || mi > 59 || sec > 59) return undefined;
  const zone = m[8];
  if (zone === undefined) {
    const t = new Date(0);
    t.setFullYear(y, mo - 1, d);
    t.setHours(h, mi, sec, ms);
    return t;
  }
  let offset = 0;
  if (zone.toUpperCase() !== 'Z') {
    const z = /^([+-])(\d{2}):?(\d{2})?$/.exec(zone)!;
    const oh = Number(z[2]);
    const om = Number(z[3] ?? 0);
    if (oh > 23 || om > 59) return undefined;
    offset = (z[1] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const t = new Date(0);
  t.setUTCFullYear(y, mo - 1, d);
  t.setUTCHours(h, mi, sec, ms);
  return new Date(t.getTime() - offset * 60_000);
}

export function checkCompression(value: string): Compression {
  const c = parseCompression(value);
  if (!c) throw new HoldfastError('CONFIG_INVALID', `compression ${JSON.stringify(value)} is not one of none, zstd, zstd:LEVEL (-7..22)`, { value });
  return c;
}

export async function backup(ref: RepoRef, p: BackupParams, ctx: OpContext): Promise<BackupResult> {
  const started = Date.now();
  const compression = checkCompression(p.compression);
  if (p.paths.length === 0) throw new HoldfastError('USAGE', 'backup needs at least one path', {});
  const paths = [...new Set(p.paths.map((x) => path.resolve(x)))].sort();
  for (const x of paths) {
    try {
      await fsp.lstat(x);
    } catch (err) {
      // A path that does not exist is a wrong argument, not a storage failure (STORAGE_IO would
      // say "retry" and point at the repository's disk).
      const code = systemCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        throw new HoldfastError('USAGE', `cannot back up ${x}: no such file or directory`, { path: x, hint: 'Check the paths given to backup; nothing was written.' }, { cause: err });
      }
      throw fsError(err, 'back up', x);
    }
  }
  const repo = await openRepository(ref, false);
  const host = p.host ?? hostname();
  try {
    const local = { key: `backup:${repo.config.id}:${host}:${paths.join('\n')}`, scope: `backup of ${paths.join(', ')}`, operation: 'backup', location: ref.location };
    return await withLocalLock(ctx, local, () => withRepoLock(repo, ref.location, ctx, 'shared', 'backup', (lockedCtx) => backupLocked(repo, paths, host, started, compression, p, lockedCtx), { loadIndex: true }));
  } finally {
    await repo.close();
  }
}

async function backupLocked(repo: Repository, paths: string[], host: string, started: number, compression: ReturnType<typeof checkCompression>, p: BackupParams, ctx: OpContext): Promise<BackupResult> {
  repo.setWriteOptions({ compression, packSize: p.packSize });
  let parentId: string | undefined;
  let parentTree: string | undefined;
  if (!p.readAll) {
    const parent = p.parent
      ? await findSnapshot(repo, p.parent)
      : (await listSnapshots(repo)).filter((s) => s.host === host && s.paths.length === paths.length && s.paths.every((x, i) => x === paths[i])).at(-1);
    parentId = parent?.id;
    parentTree = parent?.tree;
  }
  if (parentId) ctx.log.debug(`using parent snapshot ${parentId.slice(0, 8)}`);

  const run = await archiveTrees(repo, ctx, { paths, excludes: p.excludes, parentTree, jobs: p.jobs });
  const { tree, summary, sourceErrors } = run;
  const username = currentUsername();
  const sn: Snapshot = {
    version: 1,
    time: (p.time ?? new Date(started)).toISOString(),
    host,
    username,
    paths,
    tags: [...p.tags],
    excludes: [...p.excludes],
    tree,
    ...(parentId ? { parent: parentId } : {}),
    program: PROGRAM,
    summary,
  };
  summary.durationMs = Date.now() - started;
  const snapshotId = await saveSnapshot(repo, sn);
  summary.bytesAdded = repo.addedBytes;
  return { snapshotId, ...(parentId ? { parent: parentId } : {}), summary, sourceErrors };
}

export interface ArchiveRun {
  tree: string;
  summary: SnapshotSummary;
  sourceErrors: Array<{ path: string; message: string }>;
}

export interface ArchiveParams {
  readonly paths: readonly string[];
  readonly excludes: readonly string[];
  readonly parentTree?: string | undefined;
  readonly jobs?: number | undefined;
  readonly skip?: ((absPath: string, name: string) => boolean) | undefined;
  readonly rereadModifiedSince?: bigint | undefined;
  readonly fileMode?: ArchiveOptions['fileMode'];
  readonly onCorrupt?: ArchiveOptions['onCorrupt'];
}

/**
 * The data phase shared by file and PostgreSQL backups: archive `paths` (workers, progress on a
 * terminal), then make everything durable (packs, index). On failure the durable packs are
 * indexed and the error rethrown; no snapshot is written here.
 */
export async function archiveTrees(repo: Repository, ctx: OpContext, a: ArchiveParams): Promise<ArchiveRun> {
  const started = Date.now();
  const excluder = new Excluder(a.excludes);
  const progress = newArchiveProgress();
  const sourceErrors: ArchiveRun['sourceErrors'] = [];
  const totals = { files: 0, bytes: 0, done: false };
  if (ctx.progress) void scanTotals(a.paths, excluder, totals, ctx.signal, a.skip);
  const ticker = new Ticker(
    ctx.log,
    (ms) =>
      `${progress.filesDone}${totals.done ? `/${totals.files}` : ''} files, ${formatBytes(progress.bytesDone)}${totals.done ? ` of ${formatBytes(totals.bytes)}` : ''}, ` +
      `${rateAndEta(progress.bytesDone, totals.done ? totals.bytes : undefined, ms)}, added ${formatBytes(repo.addedBytes)}${progress.errors ? `, ${progress.errors} errors` : ''}`,
    ctx.progress,
  );
  let tree: string;
  const jobs = a.jobs ?? Math.min(availableParallelism(), 8);
  const pool = ReaderPool.start(repo, jobs);
  ctx.log.debug(pool ? `reading files in ${jobs} worker thread(s)` : 'reading files in the main thread');
  try {
    const archiver = new Archiver(repo, {
      pool,
      excluder,
      parentTree: a.parentTree,
      skip: a.skip,
      rereadModifiedSince: a.rereadModifiedSince,
      fileMode: a.fileMode,
      onCorrupt: a.onCorrupt,
      progress,
      signal: ctx.signal,
      onError: (x, err) => {
        const message = fsError(err, 'read', x).message;
        sourceErrors.push({ path: x, message });
        ctx.log.warn(message);
      },
    });
    tree = await archiver.archive(a.paths);
    await repo.flush();
  } catch (err) {
    // Keep what is already durable usable: index finished packs, write no snapshot.
    await repo.abandon();
    throw err;
  } finally {
    ticker.stop();
    await pool?.close();
  }
  ctx.signal?.throwIfAborted();
  const summary: SnapshotSummary = {
    files: progress.filesDone,
    dirs: progress.dirsDone,
    bytes: progress.bytesDone,
    filesNew: progress.filesNew,
    filesChanged: progress.filesChanged,
    filesUnchanged: progress.filesUnchanged,
    blobsAdded: progress.blobsAdded,
    bytesAdded: repo.addedBytes,
    errors: progress.errors,
    durationMs: Date.now() - started,
  };
  return { tree, summary, sourceErrors };
}

/** Count what a backup will read, for the ETA. Runs beside the backup; errors are ignored here. */
async function scanTotals(paths: readonly string[], excluder: Excluder, totals: { files: number; bytes: number; done: boolean }, signal?: AbortSignal, skip?: (absPath: string, name: string) => boolean): Promise<void> {
  const stack = [...paths];
  while (stack.length > 0 && !signal?.aborted) {
    const p = stack.pop()!;
    try {
      const st = await fsp.lstat(p);
      if (st.isDirectory()) {
        for (const name of await fsp.readdir(p)) {
          const child = p === '/' ? `/${name}` : `${p}/${name}`;
          if (!excluder.excluded(child, name) && !skip?.(child, name)) stack.push(child);
        }
      } else if (st.isFile()) {
        totals.files++;
        totals.bytes += st.size;
      }
    } catch {
      // reported by the archiver
    }
  }
  totals.done = true;
}
