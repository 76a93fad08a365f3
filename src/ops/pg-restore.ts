/**
 * `pg restore`: write a PostgreSQL backup into a new data directory, ready to recover to a point
 * in time.
 *
 * The backup is chosen by --set, or as the newest that ends before a time or LSN target, or the
 * latest. The target must be empty (or --force: its contents are removed first) and no server may
 * be running in it. The data directory's files are restored with their owner and modes; then
 * backup_label and tablespace_map from the backup, the recovery settings (restore_command calling
 * `holdfast pg archive-get` for this repository and cluster, and the targets) in
 * postgresql.auto.conf between holdfast's markers, and recovery.signal or standby.signal.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { HoldfastError, fsError, systemCode } from '../errors/catalogue.js';
import { newRestoreProgress, restoreTree } from '../files/restorer.js';
import { type PgBackupInfo, type Snapshot, findSnapshot } from '../repository/snapshot.js';
import { writeDurably, writeRecoveryConfig } from '../postgres/recovery.js';
import { compareLsn, parseLsn } from '../wal/names.js';
import { Ticker, formatBytes, rateAndEta } from '../ui/output.js';
import type { OpContext, RepoRef } from './context.js';
import { checkClusterName } from './pg-archive.js';
import { listPgBackups } from './pg-backup.js';
import { openRepository } from './repo.js';
import { restoreTargetLock, withOperationLocks } from './locking.js';
import { fsyncDir } from '../util/fsync.js';

export interface RecoveryTarget {
  readonly time?: string | undefined;
  readonly lsn?: string | undefined;
  readonly xid?: string | undefined;
  readonly name?: string | undefined;
  readonly immediate?: boolean | undefined;
  readonly action?: 'pause' | 'promote' | 'shutdown' | undefined;
  readonly timeline?: string | undefined;
}

export interface PgRestoreParams {
  readonly cluster: string;
  readonly set?: string | undefined;
  readonly targetDir: string;
  readonly target: RecoveryTarget;
  readonly standby: boolean;
  readonly force: boolean;
  /** Keep files that already have the backup's content; rewrite the rest, remove extras. */
  readonly delta?: boolean;
  /** Worker threads (--jobs; undefined: the restorer's default; 0: one file at a time in the main thread). */
  readonly jobs?: number | undefined;
  /** Tablespace oid -> directory to restore it to (default: where it was). */
  readonly tablespaceMap?: ReadonlyMap<string, string>;
  /** The restore_command, built by the caller (it knows how holdfast was invoked). */
  readonly restoreCommand: string;
  /**
   * Write the recovery settings and the signal file (default). False: restore only the files and
   * backup_label (Patroni's recovery_conf writes the settings; `pg patroni-bootstrap`).
   */
  readonly writeRecovery?: boolean;
  /**
   * Called with the chosen backup before the target is touched; throwing refuses the restore
   * (`pg patroni-replica`: the leader must be the backup's PostgreSQL system).
   */
  readonly accept?: (backup: PgBackupInfo) => Promise<void>;
  /** fsync what was restored before returning (default true; --no-sync). */
  readonly sync?: boolean;
  /** Write large files' page-aligned parts with O_DIRECT when that is safe to (default true; --no-direct-io; RestoreOptions.directIo). */
  readonly directIo?: boolean;
}

export interface PgRestoreResult {
  snapshotId: string;
  backup: PgBackupInfo;
  targetDir: string;
  files: number;
  bytes: number;
  settings: Array<[string, string]>;
  /** Delta restore: files kept as they were, and entries removed. */
  kept: number;
  removed: number;
}

export function recoverySettings(restoreCommand: string, t: RecoveryTarget): Array<[string, string]> {
  const given = [t.time, t.lsn, t.xid, t.name, t.immediate ? 'immediate' : undefined].filter((v) => v !== undefined);
  if (given.length > 1) throw new HoldfastError('USAGE', 'give at most one of --target-time, --target-lsn, --target-xid, --target-name, --target-immediate', {});
  const s: Array<[string, string]> = [['restore_command', restoreCommand]];
  if (t.time !== undefined) {
    if (Number.isNaN(Date.parse(t.time))) throw new HoldfastError('USAGE', `--target-time ${JSON.stringify(t.time)} is not a timestamp`, { hint: 'Use a form such as "2026-11-21 10:15:00+00".' });
    // Without an offset PostgreSQL reads the time in the server's time zone, holdfast in its own:
    // they could pick different backups and stop at different moments. Require the offset.
    if (!/(?:Z|[+-]\d{2}(?::?\d{2})?)$/i.test(t.time.trim())) {
      throw new HoldfastError('USAGE', `--target-time ${JSON.stringify(t.time)} has no UTC offset`, { hint: 'Add the offset, e.g. "2026-11-21 10:15:00+00" or "…+01:00", so holdfast and PostgreSQL read the same moment.' });
    }
    // PostgreSQL's recovery_target_time refuses ISO 8601's "Z" (seen on 15: "invalid value for
    // parameter"); write the same moment as "YYYY-MM-DD HH:MM:SS[.f]+00", which it accepts.
    s.push(['recovery_target_time', t.time.trim().replace(/^(\d{4}-\d{2}-\d{2})T/i, '$1 ').replace(/Z$/i, '+00')]);
  }
  if (t.lsn !== undefined) {
    try {
      parseLsn(t.lsn);
    } catch {
      throw new HoldfastError('USAGE', `--target-lsn ${JSON.stringify(t.lsn)} is not an LSN`, { hint: 'Use the X/Y form, e.g. 0/3000060.' });
    }
    s.push(['recovery_target_lsn', t.lsn]);
  }
  if (t.xid !== undefined) {
    if (!/^\d+$/.test(t.xid)) throw new HoldfastError('USAGE', `--target-xid ${JSON.stringify(t.xid)} is not a transaction id`, {});
    s.push(['recovery_target_xid', t.xid]);
  }
  if (t.name !== undefined) s.push(['recovery_target_name', t.name]);
  if (t.immediate) s.push(['recovery_target', 'immediate']);
  if (t.action !== undefined) {
    if (given.length === 0) throw new HoldfastError('USAGE', '--target-action needs a recovery target', {});
    s.push(['recovery_target_action', t.action]);
  }
  if (t.timeline !== undefined) s.push(['recovery_target_timeline', t.timeline]);
  return s;
}

/** The backup to restore: --set, else the newest ending before a time/LSN target, else the latest. */
async function chooseBackup(backups: Array<Snapshot & { id: string; pg: PgBackupInfo }>, p: PgRestoreParams, pick: (ref: string) => Promise<Snapshot & { id: string }>): Promise<Snapshot & { id: string; pg: PgBackupInfo }> {
  if (p.set && p.set !== 'latest') {
    const sn = await pick(p.set);
    if (!sn.pg || sn.pg.cluster !== p.cluster) throw new HoldfastError('SNAPSHOT_NOT_FOUND', `${sn.id.slice(0, 8)} is not a PostgreSQL backup of cluster "${p.cluster}"`, { set: p.set });
    return sn as Snapshot & { id: string; pg: PgBackupInfo };
  }
  let candidates = backups;
  if (p.target.time !== undefined) {
    const t = Date.parse(p.target.time);
    candidates = candidates.filter((b) => Date.parse(b.pg.stopTime) < t);
  } else if (p.target.lsn !== undefined) {
    const t = parseLsn(p.target.lsn);
    candidates = candidates.filter((b) => compareLsn(parseLsn(b.pg.stopLsn), t) < 0);
  }
  const chosen = candidates.at(-1);
  const oldest = backups[0];
  if (!oldest) {
    throw new HoldfastError('SNAPSHOT_NOT_FOUND', `no PostgreSQL backup of cluster "${p.cluster}" in the repository`, { cluster: p.cluster, hint: 'Take one with `holdfast pg backup`.' });
  }
  if (!chosen) {
    // Only a time or LSN target filters: the target lies before the oldest backup's end.
    const byTime = p.target.time !== undefined;
    const target = byTime ? `--target-time ${p.target.time}` : `--target-lsn ${p.target.lsn}`;
    const end = byTime ? oldest.pg.stopTime : `LSN ${oldest.pg.stopLsn}`;
    throw new HoldfastError('SNAPSHOT_NOT_FOUND', `no backup of cluster "${p.cluster}" ends before the recovery target ${target}: the oldest backup (${oldest.id.slice(0, 8)}) ends at ${end}`, {
      cluster: p.cluster,
      target: byTime ? p.target.time : p.target.lsn,
      oldest: oldest.id,
      oldestStop: byTime ? oldest.pg.stopTime : oldest.pg.stopLsn,
      hint: 'A point before the end of the oldest backup cannot be restored: older backups were expired (`holdfast pg expire` keeps only what its --recovery-window and --retain-full need) or never taken. Choose a later target; `holdfast pg info` lists the backups with their stop times and LSNs.',
    });
  }
  return chosen;
}

/** Refuse a running server and, without --force, a non-empty target. */
async function prepareTarget(dir: string, force: boolean, delta: boolean): Promise<void> {
  let entries: string[];
  try {
    entries = await fsp.readdir(dir);
  } catch (err) {
    if (systemCode(err) === 'ENOENT') return;
    throw fsError(err, 'use restore target', dir, 'TARGET_IO');
  }
  try {
    const pid = Number((await fsp.readFile(path.join(dir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    if (pid > 0) {
      try {
        process.kill(pid, 0);
        throw new HoldfastError('PG_RUNNING', `a PostgreSQL server (pid ${pid}) is running in ${dir}`, { pid, dir });
      } catch (err) {
        if (err instanceof HoldfastError) throw err;
        if (systemCode(err) === 'EPERM') throw new HoldfastError('PG_RUNNING', `a PostgreSQL server (pid ${pid}) is running in ${dir}`, { pid, dir });
      }
    }
  } catch (err) {
    if (err instanceof HoldfastError) throw err;
  }
  if (entries.length === 0 || delta) return;
  if (!force) throw new HoldfastError('TARGET_NOT_EMPTY', `restore target ${dir} is not empty (${entries.length} entries)`, { target: dir, hint: 'Restore into an empty directory, or pass --force to delete its contents first.' });
  for (const e of entries) await fsp.rm(path.join(dir, e), { recursive: true, force: true });
}

export async function pgRestore(ref: RepoRef, p: PgRestoreParams, ctx: OpContext): Promise<PgRestoreResult> {
  checkClusterName(p.cluster);
  const settings = recoverySettings(p.restoreCommand, p.target);
  const targetDir = path.resolve(p.targetDir);
  const repo = await openRepository(ref, false);
  try {
    return await withOperationLocks(repo, ref.location, ctx, { local: restoreTargetLock(targetDir, ref.location, 'pg restore'), kind: 'shared', operation: 'pg restore', loadIndex: true }, async (ctx) => {
      const backups = await listPgBackups(repo, p.cluster);
      const sn = await chooseBackup(backups, p, (r) => findSnapshot(repo, r));
      await p.accept?.(sn.pg);
      ctx.log.info(`restoring backup ${sn.id.slice(0, 8)} (${sn.pg.type}, ${sn.pg.startTime} .. ${sn.pg.stopTime}, LSN ${sn.pg.startLsn} .. ${sn.pg.stopLsn})`);
      await prepareTarget(targetDir, p.force, p.delta === true);
      const progress = newRestoreProgress();
      const ticker = new Ticker(ctx.log, (ms) => `${progress.filesDone}/${progress.filesTotal} files, ${formatBytes(progress.bytesDone)} of ${formatBytes(progress.bytesTotal)}, ${rateAndEta(progress.bytesDone, progress.bytesTotal, ms)}`, ctx.progress);
      /**
       * Restore the snapshot directory `root` into `dest`. With --delta, an existing file is kept
       * when each of its byte ranges hashes to the backup's blob for that range (compared in the
       * restore workers, large files in parallel ranges).
       */
      const restoreDir = (dest: string, root: string): Promise<void> =>
        restoreTree(repo, sn.tree, {
          target: dest,
          root,
          includes: [],
          force: true,
          progress,
          parallel: p.jobs,
          signal: ctx.signal,
          onWarning: (m) => ctx.log.warn(m),
          deltaByContent: p.delta === true,
          sync: p.sync !== false,
          directIo: p.directIo !== false,
        });
      const spaces = sn.pg.tablespaces ?? [];
      for (const oid of p.tablespaceMap?.keys() ?? []) {
        if (!spaces.some((t) => t.oid === oid)) throw new HoldfastError('USAGE', `--tablespace-map ${oid}=…: the backup has no tablespace ${oid}`, { hint: `Its tablespaces: ${spaces.map((t) => `${t.oid} (${t.path})`).join(', ') || 'none'}.` });
      }
      const mapLines: string[] = [];
      let owner: { uid: number; gid: number };
      try {
        await restoreDir(targetDir, sn.pg.pgdata);
        const st = await fsp.stat(targetDir);
        owner = { uid: st.uid, gid: st.gid };
        // Tablespaces: each directory to its (possibly remapped) place, the pg_tblspc symlink and
        // tablespace_map pointing there (PostgreSQL recreates the links from tablespace_map).
        for (const t of spaces) {
          const dest = path.resolve(p.tablespaceMap?.get(t.oid) ?? t.path);
          if (dest === targetDir || dest.startsWith(targetDir + path.sep)) throw new HoldfastError('USAGE', `tablespace ${t.oid} would be restored inside the data directory (${dest})`, {});
          await prepareTarget(dest, p.force, p.delta === true);
          await restoreDir(dest, t.path);
          const link = path.join(targetDir, 'pg_tblspc', t.oid);
          await fsp.rm(link, { force: true });
          await fsp.symlink(dest, link);
          if (process.getuid?.() === 0) await fsp.lchown(link, owner.uid, owner.gid);
          mapLines.push(`${t.oid} ${dest}`);
          ctx.log.info(`tablespace ${t.oid} restored to ${dest}`);
        }
        if (spaces.length > 0 && p.sync !== false) await fsyncDir(path.join(targetDir, 'pg_tblspc')); // the links
      } finally {
        ticker.stop();
      }
      await writeDurably(path.join(targetDir, 'backup_label'), sn.pg.labelFile, owner);
      if (mapLines.length > 0) await writeDurably(path.join(targetDir, 'tablespace_map'), mapLines.join('\n') + '\n', owner);
      else if (sn.pg.spcmapFile) await writeDurably(path.join(targetDir, 'tablespace_map'), sn.pg.spcmapFile, owner);
      if (p.writeRecovery !== false) await writeRecoveryConfig(targetDir, settings, p.standby, owner);
      await fsp.chmod(targetDir, 0o700);
      if (p.delta) ctx.log.info(`delta restore: ${progress.kept ?? 0} files already had the backup's content, ${progress.filesDone - (progress.kept ?? 0)} rewritten, ${progress.removed ?? 0} entries removed`);
      return { snapshotId: sn.id, backup: sn.pg, targetDir, files: progress.filesDone, bytes: progress.bytesDone, settings: p.writeRecovery !== false ? settings : [], kept: progress.kept ?? 0, removed: progress.removed ?? 0 };
    });
  } finally {
    await repo.close();
  }
}
