import * as path from 'node:path';
import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { restoreCommand } from './self-command.js';
import { pgBackup } from '../ops/pg-backup.js';
import { type RecoveryTarget, pgRestore } from '../ops/pg-restore.js';
import { patroniManaged, patroniRestoreWarning } from '../ops/pg-patroni.js';
import { expireAfterBackup, expirePolicyAfterBackup } from './cmd-pg-expire.js';
import { CATALOGUE, HoldfastError } from '../errors/catalogue.js';
import { formatBytes, formatDuration } from '../ui/output.js';

export async function run(inv: Invocation): Promise<number> {
  const o = inv.options;
  const cluster = o.str('cluster')!;
  if (inv.command === 'pg backup') {
    const expirePolicy = expirePolicyAfterBackup(inv);
    const r = await pgBackup(
      repoRef(inv),
      {
        cluster,
        type: o.str('type') as 'full' | 'incr',
        pgdata: o.str('pgdata'),
        pgUrl: o.str('pg-url'),
        compression: o.str('compression')!,
        packSize: o.num('pack-size'),
        jobs: typeof o.get('jobs') === 'number' ? o.num('jobs') : undefined,
        archiveTimeoutMs: o.num('archive-timeout') * 1000,
      },
      inv.ctx,
    );
    // --expire-after-backup: after the backup's locks are released.
    const expire = expirePolicy ? await expireAfterBackup(inv, cluster, expirePolicy) : undefined;
    if (inv.json) inv.outJson(expire ? { ...r, expire: expire.json } : r);
    else {
      inv.out(`${r.type} backup ${r.snapshotId.slice(0, 8)} of cluster "${cluster}": LSN ${r.pg.startLsn} .. ${r.pg.stopLsn}, WAL ${r.pg.startWal} .. ${r.pg.stopWal}`);
      inv.out(`read ${formatBytes(r.summary.bytes)} (${r.summary.filesUnchanged} files unchanged), added ${formatBytes(r.summary.bytesAdded)} in ${formatDuration(r.summary.durationMs)}`);
      for (const line of expire?.lines ?? []) inv.out(line);
    }
    if (r.pg.corruptPages?.length) {
      inv.log.error(`${r.pg.corruptPages.length} corrupt page(s) found: the backup was stored and is flagged; the damage is on the server (run pg_amcheck / pg_checksums) [PAGES_CORRUPT]`);
      inv.log.hint(CATALOGUE.PAGES_CORRUPT.hint);
      return CATALOGUE.PAGES_CORRUPT.exit;
    }
    return expire?.exitCode ?? 0;
  }
  const targetDir = o.str('target-dir');
  if (!targetDir) throw new HoldfastError('USAGE', 'pg restore needs --target-dir DIR', {});
  const ref = repoRef(inv);
  const r = await pgRestore(
    ref,
    {
      cluster,
      set: o.str('set'),
      targetDir,
      target: recoveryTarget(inv),
      standby: o.bool('standby'),
      force: o.bool('force'),
      delta: o.bool('delta'),
      jobs: typeof o.get('jobs') === 'number' ? o.num('jobs') : undefined,
      tablespaceMap: tablespaceMap(o.list('tablespace-map')),
      restoreCommand: restoreCommand(inv, cluster),
      sync: o.bool('sync'),
      directIo: o.bool('direct-io'),
    },
    inv.ctx,
  );
  // The restore_command trap (docs/patroni.md): Patroni started on this directory would drop the
  // recovery settings just written.
  const managed = await patroniManaged(r.targetDir);
  if (managed) inv.log.warn(patroniRestoreWarning(r.targetDir, managed));
  if (inv.json) inv.outJson({ ...r, ...(managed ? { patroni: managed } : {}) });
  else {
    inv.out(`restored backup ${r.snapshotId.slice(0, 8)} into ${r.targetDir}: ${r.files} files, ${formatBytes(r.bytes)}${o.bool('delta') ? ` (${r.kept} kept, ${r.files - r.kept} rewritten, ${r.removed} removed)` : ''}`);
    inv.out(`recovery settings: ${r.settings.map(([k, v]) => `${k} = '${v}'`).join('; ')}`);
    inv.out(`start PostgreSQL on ${r.targetDir} to recover`);
  }
  return 0;
}

/** The recovery target of --target-time/-lsn/-xid/-name/-immediate, --target-action and --target-timeline. */
export function recoveryTarget(inv: Invocation): RecoveryTarget {
  const o = inv.options;
  return {
    time: o.str('target-time'),
    lsn: o.str('target-lsn'),
    xid: o.str('target-xid'),
    name: o.str('target-name'),
    immediate: o.bool('target-immediate'),
    action: o.str('target-action') as RecoveryTarget['action'],
    timeline: o.str('target-timeline'),
  };
}

export function tablespaceMap(items: readonly string[]): Map<string, string> {
  const map = new Map<string, string>();
  for (const item of items) {
    const m = /^(\d+)=(.+)$/.exec(item);
    if (!m) throw new HoldfastError('USAGE', `--tablespace-map ${JSON.stringify(item)} is not OID=DIR`, { hint: 'For example --tablespace-map 16385=/srv/pg/ts1' });
    map.set(m[1]!, path.resolve(m[2]!));
  }
  return map;
}
