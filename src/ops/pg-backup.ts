/**
 * `pg backup`: an online backup through the non-exclusive backup API.
 *
 * 1. Connect; check the server (not a standby, wal_level, archiving) and bind the cluster name to
 *    its system identifier and major version (the same record archive-push uses).
 * 2. pg_backup_start (immediate checkpoint) in one session that stays open.
 * 3. Archive the data directory with pg_basebackup's exclusions (datadir.ts), in worker threads,
 *    while the database keeps taking writes. Files not changed since the parent backup (size,
 *    mtime, ctime, inode) are not read again, unless modified after the parent started.
 * 4. pg_backup_stop: the stop LSN, backup_label and tablespace_map.
 * 5. Wait (bounded by --archive-timeout) until every WAL segment from start to stop is durable in
 *    the repository: without them the backup cannot be made consistent.
 * 6. Only then write the snapshot, with the backup's PostgreSQL metadata.
 */
import * as path from 'node:path';
import * as fsp from 'node:fs/promises';
import { hostname } from 'node:os';
import { currentUsername } from '../util/user.js';
import { HoldfastError } from '../errors/catalogue.js';
import type { Repository } from '../repository/repository.js';
import { type PgBackupInfo, type Snapshot, type SnapshotSummary, listSnapshots, saveSnapshot } from '../repository/snapshot.js';
import { PgConnection } from '../postgres/connection.js';
import { dataDirSkipper } from '../postgres/datadir.js';
import { isChecksummedRelationFile } from '../postgres/page-checksum.js';
import type { FileMode } from '../files/file-mode.js';

/** Chunk size for relation files: 16 pages. */
const RELATION_CHUNK = 128 << 10;
import { nextSegmentName, parseLsn, segmentName, segNoOfEndLsn } from '../wal/names.js';
import { PROGRAM, archiveTrees, checkCompression } from './backup.js';
import type { OpContext, RepoRef } from './context.js';
import { bindClusterRecord, checkClusterName, walObjectName } from './pg-archive.js';
import { openRepository } from './repo.js';
import { withOperationLocks } from './locking.js';

export interface PgBackupParams {
  readonly cluster: string;
  readonly type: 'full' | 'incr';
  readonly pgdata?: string | undefined;
  readonly pgUrl?: string | undefined;
  readonly compression: string;
  readonly packSize: number;
  readonly jobs?: number | undefined;
  readonly archiveTimeoutMs: number;
}

export interface PgBackupResult {
  snapshotId: string;
  type: 'full' | 'incr';
  parent?: string;
  pg: PgBackupInfo;
  summary: SnapshotSummary;
}

/**
 * How a file of the data directory (path relative to it) is read: relation files in fixed,
 * page-aligned chunks, their pages verified when `verifySkipLsn` (the backup's start LSN) is given.
 * Restore uses the same rule to compare files chunk by chunk (--delta).
 */
function relationFileMode(rel: string, verifySkipLsn: string | undefined): FileMode | undefined {
  if (!isChecksummedRelationFile(rel)) return undefined;
  return { fixedChunk: RELATION_CHUNK, ...(verifySkipLsn !== undefined ? { verify: { relPath: rel, skipLsnAtOrAfter: verifySkipLsn } } : {}) };
}

/** PostgreSQL backups of `cluster` in the repository, oldest first. */
export async function listPgBackups(repo: Repository, cluster: string): Promise<Array<Snapshot & { id: string; pg: PgBackupInfo }>> {
  return (await listSnapshots(repo)).filter((s): s is typeof s & { pg: PgBackupInfo } => s.pg?.cluster === cluster);
}

export async function pgBackup(ref: RepoRef, p: PgBackupParams, ctx: OpContext): Promise<PgBackupResult> {
  checkClusterName(p.cluster);
  const compression = checkCompression(p.compression);
  const conn = await PgConnection.open(p.pgUrl);
  try {
    const info = await conn.info();
    if (info.inRecovery) {
      // A standby: refuse, naming where it replicates from (with Patroni, the leader).
      const up = await conn.upstream();
      const leader = up ? `${up.host}:${up.port}` : undefined;
      throw new HoldfastError('PG_STANDBY', `the server is a standby (in recovery)${leader ? `, replicating from the primary at ${leader}` : ''}: back up the primary${leader ? ` (e.g. PGHOST=${up!.host} PGPORT=${up!.port})` : ''}`, { leader: leader ?? null });
    }
    if (info.walLevel === 'minimal') throw new HoldfastError('PG_ERROR', 'wal_level is minimal: an online backup needs replica or logical', { hint: 'Set wal_level = replica and restart PostgreSQL.' });
    if (info.archiveMode === 'off') {
      throw new HoldfastError('PG_ERROR', 'archive_mode is off: the WAL that makes the backup consistent would never reach the repository', {
        hint: "Set archive_mode = on and archive_command = 'holdfast pg archive-push --cluster NAME %p', restart, then check with `holdfast pg check`.",
      });
    }
    const pgdata = path.resolve(p.pgdata ?? info.dataDirectory);
    if (p.pgdata && path.resolve(info.dataDirectory) !== pgdata) {
      throw new HoldfastError('CONFIG_INVALID', `--pgdata ${pgdata} is not the data directory of the server holdfast connected to (${info.dataDirectory})`, { hint: 'Point PGHOST/PGPORT (or --pg-url) at the server that owns --pgdata.' });
    }

    const repo = await openRepository(ref, false);
    try {
      const local = { key: `pg-backup:${repo.config.id}:${p.cluster}`, scope: `pg backup of cluster ${p.cluster}`, operation: 'pg backup', location: ref.location, dataDir: pgdata };
      return await withOperationLocks(repo, ref.location, ctx, { local, kind: 'shared', operation: 'pg backup', loadIndex: true }, async (ctx) => {
        repo.setWriteOptions({ compression, packSize: p.packSize });
        await bindClusterRecord(repo, p.cluster, { systemId: info.systemId, pgVersion: info.major, segSize: info.walSegmentSize }, ctx.log);
        const previous = (await listPgBackups(repo, p.cluster)).filter((b) => b.pg.systemId === info.systemId).at(-1);
        const parent = p.type === 'incr' ? previous : undefined;
        if (p.type === 'incr' && !parent) ctx.log.warn(`no earlier backup of cluster "${p.cluster}": taking a full backup`);
        const type = parent ? 'incr' : 'full';

        const start = await conn.backupStart(`holdfast ${new Date().toISOString()}`, info.major);
        ctx.log.info(`backup started at ${start.lsn} on timeline ${start.timeline} (WAL ${start.walFile})`);
        // Tablespaces: pg_tblspc/<oid> are symlinks; their directories are backed up as further
        // paths, and their files are named pg_tblspc/<oid>/… for the relation-file rules.
        const tablespaces = await readTablespaces(pgdata);
        const relName = (absPath: string): string => {
          for (const t of tablespaces) if (absPath === t.path || absPath.startsWith(t.path + '/')) return path.posix.join('pg_tblspc', t.oid, path.relative(t.path, absPath));
          return path.relative(pgdata, absPath);
        };
        const corruptPages: NonNullable<PgBackupInfo['corruptPages']> = [];
        const skipLsn = parseLsn(start.lsn).toString();
        let run;
        try {
          run = await archiveTrees(repo, ctx, {
            // Relation files: fixed 128 KiB chunks (whole pages, so a changed page costs one chunk),
            // and with data checksums on, every page verified as it is read; pages changed since the
            // backup started are skipped (recovery rewrites them from WAL).
            fileMode: (absPath) => relationFileMode(relName(absPath), info.dataChecksums ? skipLsn : undefined),
            onCorrupt: (absPath, pages) => {
              const rel = relName(absPath);
              for (const pg of pages) corruptPages.push({ file: rel, block: pg.block, expected: pg.expected, actual: pg.actual, reason: pg.reason });
              ctx.log.warn(`${rel}: ${pages.length} page(s) fail verification (block ${pages.slice(0, 5).map((x) => x.block).join(', ')}${pages.length > 5 ? ', …' : ''})`);
            },
            paths: [pgdata, ...tablespaces.map((t) => t.path)],
            excludes: [],
            parentTree: parent?.tree,
            jobs: p.jobs,
            skip: dataDirSkipper(pgdata),
            // Files written while the parent backup ran may have kept size and mtime: read them again.
            rereadModifiedSince: parent ? BigInt(Date.parse(parent.pg.startTime)) * 1_000_000n - 1_000_000_000n : undefined,
          });
        } catch (err) {
          await conn.backupStop(info.major).catch(() => undefined);
          throw err;
        }
        const stop = await conn.backupStop(info.major);
        const startWal = start.walFile;
        // The last segment needed holds the byte before the stop LSN.
        const stopWal = segmentName(start.timeline, segNoOfEndLsn(parseLsn(stop.lsn), info.walSegmentSize), info.walSegmentSize);
        ctx.log.info(`backup stopped at ${stop.lsn}; waiting until WAL ${startWal}..${stopWal} is in the repository`);
        await waitForWal(repo, p.cluster, startWal, stopWal, info.walSegmentSize, p.archiveTimeoutMs, ctx);

        const pg: PgBackupInfo = {
          cluster: p.cluster,
          type,
          systemId: info.systemId,
          pgVersion: info.major,
          pgdata,
          timeline: start.timeline,
          startLsn: start.lsn,
          stopLsn: stop.lsn,
          startWal,
          stopWal,
          startTime: new Date(start.time).toISOString(),
          stopTime: new Date(stop.time).toISOString(),
          labelFile: stop.labelFile,
          spcmapFile: stop.spcmapFile,
          dataChecksums: info.dataChecksums,
          ...(corruptPages.length ? { corruptPages } : {}),
          ...(tablespaces.length ? { tablespaces } : {}),
        };
        const username = currentUsername();
        const sn: Snapshot = {
          version: 1,
          time: pg.startTime,
          host: hostname(),
          username,
          paths: [pgdata, ...tablespaces.map((t) => t.path)],
          tags: [`pg:${p.cluster}`, `pg-${type}`],
          excludes: [],
          tree: run.tree,
          ...(parent ? { parent: parent.id } : {}),
          program: PROGRAM,
          summary: run.summary,
          pg,
        };
        const snapshotId = await saveSnapshot(repo, sn);
        return { snapshotId, type, ...(parent ? { parent: parent.id } : {}), pg, summary: run.summary };
      });
    } finally {
      await repo.close();
    }
  } finally {
    await conn.close();
  }
}

/** The tablespaces of a data directory: pg_tblspc/<oid> symlinks and the directories they name. */
async function readTablespaces(pgdata: string): Promise<Array<{ oid: string; path: string }>> {
  const dir = path.join(pgdata, 'pg_tblspc');
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return [];
  }
  const out: Array<{ oid: string; path: string }> = [];
  for (const oid of names.filter((n) => /^\d+$/.test(n)).sort()) {
    const link = path.join(dir, oid);
    const st = await fsp.lstat(link);
    if (!st.isSymbolicLink()) continue; // in-place tablespace: inside the data directory already
    out.push({ oid, path: path.resolve(dir, await fsp.readlink(link)) });
  }
  return out;
}

/** Wait until every segment from `startWal` to `last` is stored (bounded by `timeoutMs`). */
async function waitForWal(repo: Repository, cluster: string, startWal: string, last: string, segSize: number, timeoutMs: number, ctx: OpContext): Promise<void> {
  const needed: string[] = [];
  for (let seg = startWal; ; seg = nextSegmentName(seg, segSize)) {
    needed.push(seg);
    if (seg === last || needed.length > 1_000_000) break;
  }
  const deadline = Date.now() + timeoutMs;
  let missing = needed;
  for (;;) {
    // Look up only the names still missing (listing the whole archive would grow with it).
    const still: string[] = [];
    for (const seg of missing) if (!(await repo.hasNamed(walObjectName(cluster, seg)))) still.push(seg);
    missing = still;
    if (missing.length === 0) return;
    ctx.signal?.throwIfAborted();
    if (Date.now() >= deadline) {
      throw new HoldfastError('ARCHIVE_TIMEOUT', `WAL ${missing[0]}${missing.length > 1 ? ` and ${missing.length - 1} more` : ''} did not reach the repository within ${Math.round(timeoutMs / 1000)} s`, {
        cluster,
        missing: missing.slice(0, 10),
        object: walObjectName(cluster, missing[0]!),
      });
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
