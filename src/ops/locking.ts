/**
 * How operations take locks (docs/design.md §15): a local operation lock serialising work on this
 * host, and a repository lock (shared or exclusive) with a heartbeat that is bound to the
 * operation's AbortSignal and to every commit the repository makes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HoldfastError } from '../errors/catalogue.js';
import { type Repository, storageToHoldfast } from '../repository/repository.js';
import { LocalLock, checkLockDirPlacement, defaultLockDir } from '../locks/local.js';
import { type LockKind, type LockRecord, acquireLock } from '../locks/protocol.js';
import { RepositoryLockStore } from '../locks/repository.js';
import { localDirectory } from './backend.js';
import { DEFAULT_LOCK_SETTINGS, type LockSettings, type OpContext } from './context.js';

export function lockSettings(ctx: OpContext): LockSettings {
  return ctx.locks ?? DEFAULT_LOCK_SETTINGS;
}

/** The lock directory for `spec`, refused inside the repository or the data directory. */
export function resolveLockDir(ctx: OpContext, spec: Pick<LocalLockSpec, 'location' | 'dataDir'>): string {
  const dir = lockSettings(ctx).lockDir ?? defaultLockDir();
  const repoDir = localDirectory(spec.location);
  checkLockDirPlacement(dir, [
    { path: repoDir === undefined ? undefined : path.resolve(repoDir), what: 'repository' },
    { path: spec.dataDir, what: 'data directory' },
  ]);
  return dir;
}

/** Signal that fires when either the operation is interrupted or the lock is lost. */
function combined(ctx: OpContext, lockSignal: AbortSignal): AbortSignal {
  return ctx.signal ? AbortSignal.any([ctx.signal, lockSignal]) : lockSignal;
}

/** When the work failed because the lock was lost, report that rather than the abort it caused. */
function lostOr(err: unknown, lockSignal: AbortSignal): unknown {
  if (!lockSignal.aborted) return err;
  if (err instanceof HoldfastError && err.code !== 'INTERRUPTED') return err;
  return lockSignal.reason;
}

/**
 * Operations whose repository lock does not keep prune from deleting packs: they never read the
 * index or a pack (WAL is stored as named objects; forget and expire delete manifests and WAL).
 */
const WITHOUT_BLOBS = new Set(['pg archive-push', 'pg archive-push --async (worker)', 'forget', 'pg expire']);

/** Whether a lock holder doing `operation` may use blobs (anything not known not to). */
export function usesBlobs(operation: string): boolean {
  return !WITHOUT_BLOBS.has(operation);
}

export interface RepoLockOptions {
  /**
   * Load the repository's index once the lock is held (before `fn`). Operations that use blobs
   * (look them up, store them deduplicated, read them) MUST load the index only while holding
   * their lock: prune deletes a pack only after every lock that existed when the index stopped
   * listing it is gone (docs/design.md §18), which is sound only if no holder read the index
   * before taking its lock.
   */
  readonly loadIndex?: boolean | undefined;
  /**
   * The operation deletes data: with several storages, every one must be usable (a deletion a
   * dead storage missed could later bring back what was deleted; docs/design.md §19).
   */
  readonly allStorages?: boolean | undefined;
}

/**
 * Run `fn` holding a repository lock. The repository refuses to commit (index, snapshot, named
 * objects, deletions) unless the lock is verified held right before; `fn` gets a context whose
 * signal also fires when the lock is lost.
 */
export async function withRepoLock<T>(repo: Repository, location: string, ctx: OpContext, kind: LockKind, operation: string, fn: (ctx: OpContext) => Promise<T>, opts: RepoLockOptions = {}): Promise<T> {
  const s = lockSettings(ctx);
  if (s.refreshMs * 2 > s.ttlMs) {
    throw new HoldfastError('CONFIG_INVALID', `--lock-refresh (${s.refreshMs} ms) must be at most half of --lock-ttl (${s.ttlMs} ms)`, { option: 'lock-refresh' });
  }
  const store = new RepositoryLockStore(repo, location);
  const held = await acquireLock(store, {
    kind,
    operation,
    scope: `repository ${location}`,
    waitMs: s.waitMs,
    ttlMs: s.ttlMs,
    refreshMs: s.refreshMs,
    removeStale: s.removeStale,
    log: ctx.log,
    signal: ctx.signal,
    finishIntent: (rec) => finishInterruptedCommit(repo, rec, ctx),
  });
  repo.setCommitGuard(() => held.verify());
  repo.setIntentLog((add, remove) => held.announce(add, remove));
  try {
    if (opts.allStorages && repo.backend.requireAllAlive) {
      try {
        await repo.backend.requireAllAlive();
      } catch (err) {
        throw storageToHoldfast(err, repo.backend);
      }
    }
    if (opts.loadIndex && !repo.indexLoaded) {
      // An unreadable index file costs only the blobs it alone lists (a restore that needs one
      // fails naming it; a backup stores it again): go on, and say how to mend it.
      await repo.loadIndex((id, err) => {
        ctx.log.warn(`index file ${id.slice(0, 12)} is unreadable and skipped (${err.message}); \`holdfast check\` names what it affects, \`holdfast repair index\` rebuilds the index from the packs`);
      });
    }
    return await fn({ ...ctx, signal: combined(ctx, held.signal) });
  } catch (err) {
    throw lostOr(err, held.signal);
  } finally {
    repo.setCommitGuard(undefined);
    repo.setIntentLog(undefined);
    await held.release();
  }
}

/** Before a stale lock that announced snapshots is removed: finish what its holder committed. */
export async function finishInterruptedCommit(repo: Repository, rec: LockRecord, ctx: Pick<OpContext, 'log'>): Promise<void> {
  if (!rec.intent) return;
  await repo.finishIntent(rec.intent);
  const n = rec.intent.add.length + rec.intent.remove.length;
  if (n > 0) ctx.log.info(`finished the interrupted commit of ${rec.operation} (PID ${rec.owner.pid} on ${rec.owner.host}): ${rec.intent.add.length} snapshot(s) added, ${rec.intent.remove.length} removed`);
}

export interface LocalLockSpec {
  /** Unique key of what is locked, e.g. `pg-backup:<repository id>:main`. */
  readonly key: string;
  /** For messages: "pg backup of cluster main". */
  readonly scope: string;
  readonly operation: string;
  /** The repository's location: the lock directory must not be inside it. */
  readonly location: string;
  /** The PostgreSQL data directory, when there is one: nor inside it. */
  readonly dataDir?: string | undefined;
  /** Override --lock-wait (0: fail at once when held). */
  readonly waitMs?: number | undefined;
}

/** Run `fn` holding a local operation lock. */
export async function withLocalLock<T>(ctx: OpContext, spec: LocalLockSpec, fn: (lock: LocalLock) => Promise<T>): Promise<T> {
  const lockDir = resolveLockDir(ctx, spec);
  const s = lockSettings(ctx);
  const lock = await LocalLock.acquire({ lockDir, key: spec.key, scope: spec.scope, operation: spec.operation, waitMs: spec.waitMs ?? s.waitMs, removeStale: true, log: ctx.log, signal: ctx.signal });
  try {
    return await fn(lock);
  } finally {
    await lock.release();
  }
}

/** Real path of a directory that may not exist yet (its nearest existing parent, resolved). */
export function canonicalTarget(dir: string): string {
  const abs = path.resolve(dir);
  const rest: string[] = [];
  let cur = abs;
  for (let i = 0; i < 4096; i++) {
    try {
      return path.join(fs.realpathSync(cur), ...rest.reverse());
    } catch {
      const parent = path.dirname(cur);
      if (parent === cur) return abs;
      rest.push(path.basename(cur));
      cur = parent;
    }
  }
  return abs;
}

export interface OperationLocks extends RepoLockOptions {
  /** Also hold this local operation lock (taken first). */
  readonly local?: LocalLockSpec | undefined;
  readonly kind: LockKind;
  readonly operation: string;
}

/** The usual pair: the local operation lock (if any), then the repository lock. */
export async function withOperationLocks<T>(repo: Repository, location: string, ctx: OpContext, o: OperationLocks, fn: (ctx: OpContext) => Promise<T>): Promise<T> {
  const inner = (): Promise<T> => withRepoLock(repo, location, ctx, o.kind, o.operation, fn, o);
  return o.local ? withLocalLock(ctx, o.local, inner) : inner();
}

/** The local lock that keeps two restores from writing into the same directory. */
export function restoreTargetLock(target: string, location: string, operation: string): LocalLockSpec {
  const real = canonicalTarget(target);
  return { key: `restore:${real}`, scope: `restore into ${real}`, operation, location };
}
