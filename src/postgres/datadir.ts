/**
 * What an online backup copies from a PostgreSQL data directory. The rules follow pg_basebackup
 * (src/backend/backup/basebackup.c, excludeDirContents / excludeFiles, PostgreSQL 15):
 *
 * Directories kept but emptied (their contents are rebuilt or meaningless after restore):
 *   pg_wal (WAL comes from the archive), pg_dynshmem, pg_notify, pg_replslot, pg_serial,
 *   pg_snapshots, pg_stat_tmp, pg_subtrans.
 * Files skipped at the top level of the data directory:
 *   postmaster.pid, postmaster.opts (the running server's), backup_label, backup_label.old and
 *   tablespace_map (a backup has its own), recovery.signal and standby.signal (restore writes
 *   them), postgresql.auto.conf.tmp and backup_manifest.
 * Skipped in any directory: pg_internal.init (relation cache, rebuilt at start-up) and anything
 * whose name starts with pgsql_tmp (temporary files and directories).
 */
import * as path from 'node:path';

export const EMPTIED_DIRS: readonly string[] = ['pg_wal', 'pg_dynshmem', 'pg_notify', 'pg_replslot', 'pg_serial', 'pg_snapshots', 'pg_stat_tmp', 'pg_subtrans'];
export const SKIPPED_TOP_FILES: readonly string[] = ['postmaster.pid', 'postmaster.opts', 'backup_label', 'tablespace_map', 'recovery.signal', 'standby.signal', 'postgresql.auto.conf.tmp', 'backup_manifest', 'backup_label.old'];

/** A skip rule for the archiver, for the data directory at `pgdata` (absolute). */
export function dataDirSkipper(pgdata: string): (absPath: string, name: string) => boolean {
  const root = path.resolve(pgdata);
  const emptied = new Set(EMPTIED_DIRS.map((d) => path.join(root, d)));
  const topFiles = new Set(SKIPPED_TOP_FILES.map((f) => path.join(root, f)));
  return (absPath, name) => {
    if (name === 'pg_internal.init' || name.startsWith('pgsql_tmp')) return true;
    if (topFiles.has(absPath)) return true;
    return emptied.has(path.dirname(absPath));
  };
}
