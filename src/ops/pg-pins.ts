/**
 * Pins of PostgreSQL backups (docs/design.md §17): `pg pin SET` keeps a backup from ever being
 * expired, `pg unpin SET` lets the retention policy decide again.
 *
 * A pin is the named object `pins/<cluster>/<snapshot id>`, sealed like every named object (§12),
 * holding `{version: 1, cluster, snapshot, created, host, username}`. Only its existence matters.
 * Pinning and `pg expire` of one cluster take the same local lock (they never interleave on one
 * host) and a shared repository lock; across hosts, a pin written while an expire deletes the same
 * backup is detected by both sides (pg pin checks the backup still exists after writing its pin,
 * pg expire lists the pins again after deleting and warns).
 */
import { hostname } from 'node:os';
import { HoldfastError } from '../errors/catalogue.js';
import type { Repository } from '../repository/repository.js';
import { currentUsername } from '../util/user.js';
import type { OpContext, RepoRef } from './context.js';
import { type LocalLockSpec, withOperationLocks } from './locking.js';
import { checkClusterName } from './pg-archive.js';
import { listPgBackups } from './pg-backup.js';
import { openRepository } from './repo.js';

export function pinObjectName(cluster: string, snapshotId: string): string {
  return `pins/${cluster}/${snapshotId}`;
}

/** Snapshot ids pinned for `cluster`, sorted. */
export async function listPins(repo: Repository, cluster: string): Promise<string[]> {
  return (await repo.listNamed(`pins/${cluster}/`)).filter((n) => /^[0-9a-f]{64}$/.test(n));
}

/**
 * The local lock pg expire and pg pin/unpin share: one of them at a time per repository and
 * cluster on this host.
 */
export function retentionLock(repo: Repository, location: string, cluster: string, operation: string): LocalLockSpec {
  return { key: `pg-expire:${repo.config.id}:${cluster}`, scope: `retention of cluster ${cluster}`, operation, location };
}

export interface PinResult {
  cluster: string;
  snapshotId: string;
  /** Whether the backup is pinned now. */
  pinned: boolean;
  /** False when it already was in that state. */
  changed: boolean;
}

/** `pg pin` (pin = true) and `pg unpin`: SET is a backup id, a unique prefix, or latest. */
export async function pgPin(ref: RepoRef, cluster: string, set: string, pin: boolean, ctx: OpContext): Promise<PinResult> {
  checkClusterName(cluster);
  const operation = pin ? 'pg pin' : 'pg unpin';
  const repo = await openRepository(ref, false);
  try {
    return await withOperationLocks(repo, ref.location, ctx, { local: retentionLock(repo, ref.location, cluster, operation), kind: 'shared', operation }, async () => {
      const backups = (await listPgBackups(repo, cluster)).map((b) => b.id);
      const pins = await listPins(repo, cluster);
      // Unpinning also finds pins whose backup is gone (removed by other means).
      const id = resolveBackup(cluster, set, backups, pin ? [] : pins);
      const name = pinObjectName(cluster, id);
      const was = pins.includes(id);
      if (!pin) {
        if (was) await repo.deleteNamed(name);
        return { cluster, snapshotId: id, pinned: false, changed: was };
      }
      if (was) return { cluster, snapshotId: id, pinned: true, changed: false };
      const record = { version: 1, cluster, snapshot: id, created: new Date().toISOString(), host: hostname(), username: currentUsername() };
      await repo.putNamed(name, Buffer.from(JSON.stringify(record)), { createOnly: true });
      // An expire on another host may have deleted the backup meanwhile: then the pin is void.
      if (!(await repo.listFiles('snapshot')).includes(id)) {
        await repo.deleteNamed(name);
        throw new HoldfastError('SNAPSHOT_NOT_FOUND', `backup ${id.slice(0, 8)} of cluster "${cluster}" was expired while it was being pinned`, { cluster, set, hint: 'Run `holdfast pg info` to list the backups that are left.' });
      }
      return { cluster, snapshotId: id, pinned: true, changed: true };
    });
  } finally {
    await repo.close();
  }
}

/** The backup id SET names among `backups` (and, for unpin, dangling `pins`). */
function resolveBackup(cluster: string, set: string, backups: readonly string[], pins: readonly string[]): string {
  if (set === 'latest') {
    const last = backups.at(-1);
    if (!last) throw new HoldfastError('SNAPSHOT_NOT_FOUND', `no PostgreSQL backup of cluster "${cluster}" in the repository, so "latest" names nothing`, { cluster, set });
    return last;
  }
  if (!/^[0-9a-f]{1,64}$/.test(set)) throw new HoldfastError('SNAPSHOT_NOT_FOUND', `${JSON.stringify(set)} is not a backup id (hex digits) nor "latest"`, { cluster, set, hint: 'Run `holdfast pg info` to list the backups of the cluster with their ids.' });
  const matches = [...new Set([...backups, ...pins])].filter((id) => id.startsWith(set));
  if (matches.length === 0) {
    throw new HoldfastError('SNAPSHOT_NOT_FOUND', `no backup of cluster "${cluster}" with id ${set}`, { cluster, set, hint: 'Run `holdfast pg info` to list the backups of the cluster with their ids.' });
  }
  if (matches.length > 1) throw new HoldfastError('SNAPSHOT_NOT_FOUND', `backup id prefix ${set} is ambiguous: it matches ${matches.length} backups`, { cluster, set, matches, hint: 'Give more characters of the id.' });
  return matches[0]!;
}
