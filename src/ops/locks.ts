/** `holdfast locks` and `holdfast unlock`: list locks, remove stale ones (or, on request, all). */
import * as fs from 'node:fs';
import { LocalLockStore, defaultLockDir } from '../locks/local.js';
import { type ListedLock, type LockStore, describeRecord, formatAge, listLocks, lockFileName } from '../locks/protocol.js';
import { RepositoryLockStore } from '../locks/repository.js';
import type { OpContext, RepoRef } from './context.js';
import { finishInterruptedCommit, lockSettings } from './locking.js';
import { openRepository } from './repo.js';

export interface LockView {
  readonly where: 'repository' | 'local';
  readonly name: string;
  readonly kind: string;
  readonly operation: string;
  readonly scope: string;
  readonly host: string;
  readonly pid: number;
  readonly created?: string;
  readonly refreshed?: string;
  readonly ageSeconds?: number;
  readonly refreshAgeSeconds?: number;
  readonly ttlSeconds?: number;
  readonly stale: boolean;
  readonly reason: string;
}

export interface LocksReport {
  readonly repository: string;
  readonly lockDir: string;
  readonly locks: LockView[];
}

function view(where: LockView['where'], l: ListedLock, now: number): LockView {
  const r = l.record;
  return {
    where,
    name: lockFileName(l.name),
    kind: l.name.kind,
    operation: r?.operation ?? '?',
    scope: r?.scope ?? '?',
    host: r?.owner.host ?? '?',
    pid: r?.owner.pid ?? 0,
    ...(r
      ? {
          created: new Date(r.created).toISOString(),
          refreshed: new Date(r.refreshed).toISOString(),
          ageSeconds: Math.round((now - r.created) / 1000),
          refreshAgeSeconds: Math.round((now - r.refreshed) / 1000),
          ttlSeconds: Math.round(r.ttlMs / 1000),
        }
      : {}),
    stale: l.judgement.stale,
    reason: l.judgement.reason,
  };
}

/** Local lock directory listing; a missing directory has no locks. */
async function localLocks(dir: string): Promise<{ store: LockStore; locks: ListedLock[] }> {
  const store = new LocalLockStore(dir, undefined);
  if (!fs.existsSync(dir)) return { store, locks: [] };
  return { store, locks: await listLocks(store) };
}

export async function locks(ref: RepoRef, ctx: OpContext): Promise<LocksReport> {
  const repo = await openRepository(ref, false);
  try {
    const now = Date.now();
    const repoLocks = await listLocks(new RepositoryLockStore(repo, ref.location));
    const dir = lockSettings(ctx).lockDir ?? defaultLockDir();
    const local = await localLocks(dir);
    return { repository: ref.location, lockDir: dir, locks: [...repoLocks.map((l) => view('repository', l, now)), ...local.locks.map((l) => view('local', l, now))] };
  } finally {
    await repo.close();
  }
}

export interface UnlockResult {
  readonly removed: LockView[];
  /** Live locks left in place (without --all). */
  readonly kept: LockView[];
}

/**
 * Remove stale repository and local locks. With `all`, remove every repository lock, live ones
 * included, each logged as a warning first; live local locks are never removed (their holders run
 * on this host: stop them instead).
 */
export async function unlock(ref: RepoRef, all: boolean, ctx: OpContext): Promise<UnlockResult> {
  const repo = await openRepository(ref, false);
  try {
    const removed: LockView[] = [];
    const kept: LockView[] = [];
    const now = Date.now();
    const repoStore = new RepositoryLockStore(repo, ref.location);
    const dir = lockSettings(ctx).lockDir ?? defaultLockDir();
    const local = await localLocks(dir);
    const sets: Array<{ where: LockView['where']; store: LockStore; locks: ListedLock[]; force: boolean }> = [
      { where: 'repository', store: repoStore, locks: await listLocks(repoStore), force: all },
      { where: 'local', store: local.store, locks: local.locks, force: false },
    ];
    for (const set of sets) {
      for (const l of set.locks) {
        const v = view(set.where, l, now);
        if (!l.judgement.stale && !set.force) {
          kept.push(v);
          continue;
        }
        const what = l.record ? `${describeRecord(l.record, now)} on ${l.record.scope}` : `unreadable lock ${v.name}`;
        if (l.judgement.stale) ctx.log.info(`removing stale ${set.where} lock of ${what}: ${l.judgement.reason}`);
        else ctx.log.warn(`removing LIVE repository lock of ${what} (--all); that process will stop before committing when it notices`);
        // A stale holder's interrupted commit is finished first (a live one's is its own business).
        if (set.where === 'repository' && l.record?.intent && l.judgement.stale) await finishInterruptedCommit(repo, l.record, ctx);
        await set.store.remove(l.name);
        removed.push(v);
      }
    }
    return { removed, kept };
  } finally {
    await repo.close();
  }
}

export { formatAge };
