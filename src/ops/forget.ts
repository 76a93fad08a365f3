/**
 * `forget`: remove the manifests of file snapshots that a retention policy does not keep, or of
 * the snapshots named (docs/design.md §16). Only manifests go: the data they referenced stays
 * until `prune` frees what no snapshot uses any more. PostgreSQL backups (snapshots with a `pg`
 * record or a `pg:<cluster>` tag) are never considered: `pg expire` owns them.
 *
 * Deletions happen under the shared repository lock `forget`, so each one passes the repository's
 * commit guard (no deletion by a holder that lost its lock) and none overlaps a prune.
 */
import { HoldfastError } from '../errors/catalogue.js';
import type { Repository } from '../repository/repository.js';
import { type Snapshot, type SnapshotFilter, type SnapshotWithId, findSnapshot, listSnapshots, matchesFilter } from '../repository/snapshot.js';
import { type GroupField, type GroupKey, type RetentionPolicy, type RetentionSnapshot, type Zone, applyRetention, isEmptyPolicy, newestFirst } from '../retention/policy.js';
import type { OpContext, RepoRef } from './context.js';
import { withRepoLock } from './locking.js';
import { openRepository } from './repo.js';

export interface ForgetParams {
  /** Snapshot ids or unique prefixes to remove; when given, no policy, filter or grouping applies. */
  readonly ids: readonly string[];
  readonly policy: RetentionPolicy;
  readonly groupBy: readonly GroupField[];
  /** Zone of the calendar buckets and of --keep-within's calendar units. */
  readonly zone: Zone;
  /** Which snapshots the policy considers at all (the others are neither kept nor removed). */
  readonly filter: SnapshotFilter;
  readonly dryRun: boolean;
}

/** A snapshot as forget reports it. */
export type ForgetSnapshot = Omit<RetentionSnapshot, 'time'> & {
  /** As recorded in the manifest (ISO 8601, UTC). */
  readonly time: string;
};

export interface ForgetGroup {
  /** The grouping fields' values (only those grouped by). */
  readonly key: GroupKey;
  /** Newest first, each with every rule that keeps it. */
  readonly keep: Array<ForgetSnapshot & { readonly reasons: string[] }>;
  /** Newest first. */
  readonly remove: ForgetSnapshot[];
}

export interface ForgetResult {
  readonly dryRun: boolean;
  /** One entry per group the policy was applied to (none when snapshot ids were given). */
  readonly groups: ForgetGroup[];
  /** Every snapshot to remove (removed unless dryRun). */
  readonly remove: ForgetSnapshot[];
  /** Ids actually removed (empty for a dry run). */
  readonly removed: string[];
}

/** PostgreSQL backups belong to `pg expire`, never to `forget`. */
export function isPgBackup(sn: Snapshot): boolean {
  return sn.pg !== undefined || sn.tags.some((t) => t.startsWith('pg:'));
}

function brief(sn: SnapshotWithId): ForgetSnapshot {
  return { id: sn.id, time: sn.time, host: sn.host, paths: sn.paths, tags: sn.tags };
}

export function checkForgetParams(p: ForgetParams): void {
  if (p.ids.length > 0) {
    if (!isEmptyPolicy(p.policy)) {
      throw new HoldfastError('USAGE', 'forget takes either snapshot ids or --keep-… options, not both', { hint: 'Run forget with the ids alone to remove exactly those snapshots, or with the policy alone.' });
    }
    if (p.filter.host !== undefined || (p.filter.tags ?? []).length > 0 || (p.filter.paths ?? []).length > 0) {
      throw new HoldfastError('USAGE', '--host, --path and --tag select the snapshots a policy considers; they do not apply to snapshot ids', { hint: 'Give the ids alone (`holdfast snapshots --host NAME` lists the ids of a host).' });
    }
    const latest = p.ids.find((id) => id === 'latest');
    if (latest) throw new HoldfastError('USAGE', 'forget takes snapshot ids, not "latest"', { hint: 'Name the snapshot by its id (`holdfast snapshots` lists them), so that a repeated command never removes another snapshot.' });
    return;
  }
  if (isEmptyPolicy(p.policy)) {
    throw new HoldfastError('USAGE', 'forget needs a policy (--keep-…) or snapshot ids: with neither it would remove every snapshot', {
      hint: 'Say what to keep, e.g. `holdfast forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --dry-run`, or name the snapshots to remove by id.',
    });
  }
}

interface Candidate extends RetentionSnapshot {
  readonly sn: SnapshotWithId;
}

function candidate(sn: SnapshotWithId): Candidate {
  return { sn, id: sn.id, time: new Date(sn.time), host: sn.host, paths: sn.paths, tags: sn.tags };
}

/** What forget would remove: the policy's decision per group, or the named snapshots. */
async function plan(repo: Repository, p: ForgetParams, ctx: OpContext): Promise<Pick<ForgetResult, 'groups' | 'remove'>> {
  if (p.ids.length > 0) {
    const found = new Map<string, SnapshotWithId>();
    for (const ref of p.ids) {
      const sn = await findSnapshot(repo, ref);
      if (isPgBackup(sn)) {
        throw new HoldfastError('USAGE', `snapshot ${sn.id.slice(0, 8)} is a PostgreSQL backup${sn.pg ? ` of cluster ${sn.pg.cluster}` : ''}: forget does not remove those`, { snapshot: sn.id, hint: 'PostgreSQL backups are removed by `holdfast pg expire`, which keeps the WAL they need consistent. Nothing was removed.' });
      }
      found.set(sn.id, sn);
    }
    return { groups: [], remove: newestFirst([...found.values()].map(candidate)).map((x) => brief(x.sn)) };
  }
  const candidates: Candidate[] = [];
  for (const sn of await listSnapshots(repo)) {
    if (isPgBackup(sn) || !matchesFilter(sn, p.filter)) continue;
    const c = candidate(sn);
    if (Number.isNaN(c.time.getTime())) {
      ctx.log.warn(`snapshot ${sn.id.slice(0, 8)} has an unreadable time ${JSON.stringify(sn.time)}: left out of the policy (kept)`);
      continue;
    }
    candidates.push(c);
  }
  const groups = applyRetention(candidates, p.policy, { groupBy: p.groupBy, zone: p.zone }).map((g) => ({
    key: g.key,
    keep: g.keep.map((k) => ({ ...brief(k.snapshot.sn), reasons: k.reasons })),
    remove: g.remove.map((x) => brief(x.sn)),
  }));
  return { groups, remove: groups.flatMap((g) => g.remove) };
}

export async function forget(ref: RepoRef, p: ForgetParams, ctx: OpContext): Promise<ForgetResult> {
  checkForgetParams(p);
  // Manifests only: the index is never needed.
  const repo = await openRepository(ref, false);
  try {
    if (p.dryRun) return { dryRun: true, ...(await plan(repo, p, ctx)), removed: [] };
    return await withRepoLock(repo, ref.location, ctx, 'shared', 'forget', async (locked) => {
      const decided = await plan(repo, p, locked);
      const removed: string[] = [];
      try {
        await repo.announce([], decided.remove.map((sn) => sn.id));
        for (const sn of decided.remove) {
          locked.signal?.throwIfAborted();
          await repo.deleteFile('snapshot', sn.id);
          removed.push(sn.id);
          locked.log.debug(`removed snapshot ${sn.id.slice(0, 8)}`);
        }
      } catch (err) {
        if (removed.length > 0) locked.log.warn(`${removed.length} of ${decided.remove.length} snapshots were removed before forget stopped; the others are still there`);
        throw err;
      }
      return { dryRun: false, ...decided, removed };
    }, { allStorages: true });
  } finally {
    await repo.close();
  }
}
