/**
 * The lock protocol shared by local operation locks and repository locks.
 *
 * Every would-be holder creates its own lock object under a unique name (`<s|m|x>-<random id>`),
 * then lists the locks. If it sees a conflicting lock that is not stale it removes its own
 * object again and either fails, naming the holder, or waits and tries again. Conflicts: an
 * exclusive lock conflicts with every other lock; a maintenance lock (prune) with exclusive and
 * other maintenance locks; shared locks only with exclusive ones.
 *
 * Why this is safe: of two conflicting would-be holders, the one that created its object second
 * lists after both objects exist, so it sees the other and backs off (both may back off; they then
 * retry after a random delay). No object is ever overwritten by another process, so a stale lock
 * can be removed by its exact name without the race of "read stale, someone else replaces it, remove
 * the fresh one": a lock object that is stale stays stale (its owner is gone for good, or its
 * holder has stopped trusting it, see below). This needs a store whose listings show every object
 * created before the listing started (local disks; S3 since 2020; SFTP).
 *
 * Staleness: a lock is stale when its owner provably no longer runs (owner.ts), when it has a
 * heartbeat (ttlMs > 0) that is older than its TTL, or when it cannot be read at all (objects are
 * written atomically, so an unreadable one was torn by a power loss that also killed its writer).
 *
 * Heartbeat: a holder with a TTL rewrites its object every `refreshMs`. Before each rewrite it
 * checks that the object still exists; if it was removed, or if no rewrite has succeeded for
 * `ttlMs - refreshMs`, it gives the lock up: its AbortSignal fires and `check()` throws LOCK_LOST.
 * It gives up one refresh interval before others may judge it stale, so host clocks may differ by
 * up to that interval. Operations call `verify()` right before they commit anything (index,
 * snapshot, manifest, deletion), so nothing is committed by a holder that lost its lock.
 */
import { randomBytes } from 'node:crypto';
import { HoldfastError } from '../errors/catalogue.js';
import { type Liveness, type LockOwner, currentOwner, describeOwner, ownerLiveness, parseOwner } from './owner.js';

/** shared: reads and appends; maintenance: prune (one at a time, beside shared holders); exclusive: alone. */
export type LockKind = 'shared' | 'maintenance' | 'exclusive';

const KIND_LETTER: Record<LockKind, string> = { shared: 's', maintenance: 'm', exclusive: 'x' };
const LETTER_KIND: Record<string, LockKind> = { s: 'shared', m: 'maintenance', x: 'exclusive' };

export interface LockRecord {
  readonly id: string;
  readonly kind: LockKind;
  /** What the holder does: "backup", "pg archive-push", "key remove", … */
  readonly operation: string;
  /** What is locked, for messages: "repository /srv/repo", "pg backup of cluster main". */
  readonly scope: string;
  readonly owner: LockOwner;
  /** ms since the epoch */
  readonly created: number;
  refreshed: number;
  /** Heartbeat TTL in ms; 0 = no heartbeat, judged by owner liveness only (local locks). */
  readonly ttlMs: number;
  /**
   * What the holder is committing (repository locks): snapshots it is adding or removing, written
   * durably before the first object of the commit, so an interrupted commit is told apart from
   * damage and can be finished by whoever removes the stale lock (docs/design.md §8.2).
   */
  intent?: LockIntent;
}

/**
 * What a lock holder adds or removes, each a two-object commit (the object and its catalog copy):
 * snapshot ids, and key files as `key:<id>`.
 */
export interface LockIntent {
  add: string[];
  remove: string[];
}

/** Bound on the ids one lock record may announce (a forged record must not cost memory). */
const MAX_INTENT_IDS = 1_000_000;

export interface LockName {
  readonly id: string;
  readonly kind: LockKind;
}

/** Where lock objects live: a local directory or the repository's `locks/`. */
export interface LockStore {
  /** For messages: "repository /srv/repo", "lock directory /run/holdfast". */
  readonly where: string;
  /** Create the object for `rec` (its name is new; atomic: never visible half-written). */
  create(rec: LockRecord): Promise<void>;
  /** Rewrite `rec`'s object (heartbeat); `durable`: return only once it survives a power loss. */
  write(rec: LockRecord, durable?: boolean): Promise<void>;
  list(): Promise<LockName[]>;
  /** The record, 'gone' when the object no longer exists, 'unreadable' when it cannot be parsed. */
  read(name: LockName): Promise<LockRecord | 'gone' | 'unreadable'>;
  exists(name: LockName): Promise<boolean>;
  /** Remove; a missing object is not an error. */
  remove(name: LockName): Promise<void>;
}

export function newLockId(): string {
  return randomBytes(12).toString('hex');
}

/** `<s|m|x>-<id>` */
export function lockFileName(name: LockName): string {
  return `${KIND_LETTER[name.kind]}-${name.id}`;
}

export function parseLockFileName(file: string): LockName | undefined {
  const m = /^([smx])-([0-9a-f]{24})$/.exec(file);
  if (!m) return undefined;
  return { id: m[2]!, kind: LETTER_KIND[m[1]!]! };
}

export function encodeRecord(rec: LockRecord): Buffer {
  return Buffer.from(JSON.stringify({ v: 1, ...rec }));
}

export function decodeRecord(name: LockName, bytes: Buffer): LockRecord | 'unreadable' {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch {
    return 'unreadable';
  }
  if (typeof v !== 'object' || v === null) return 'unreadable';
  const o = v as Record<string, unknown>;
  const owner = parseOwner(o['owner']);
  const num = (k: string): number | undefined => (typeof o[k] === 'number' && Number.isFinite(o[k]) ? (o[k] as number) : undefined);
  const created = num('created');
  const refreshed = num('refreshed');
  const ttlMs = num('ttlMs');
  if (o['v'] !== 1 || o['id'] !== name.id || o['kind'] !== name.kind || !owner || created === undefined || refreshed === undefined || ttlMs === undefined) return 'unreadable';
  let intent: LockIntent | undefined;
  if (o['intent'] !== undefined) {
    intent = parseIntent(o['intent']);
    if (!intent) return 'unreadable';
  }
  return {
    ...(intent ? { intent } : {}),
    id: name.id,
    kind: name.kind,
    operation: typeof o['operation'] === 'string' ? o['operation'] : '?',
    scope: typeof o['scope'] === 'string' ? o['scope'] : '?',
    owner,
    created,
    refreshed,
    ttlMs,
  };
}

function parseIntent(v: unknown): LockIntent | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const ids = (x: unknown): string[] | undefined =>
    Array.isArray(x) && x.length <= MAX_INTENT_IDS && x.every((id) => typeof id === 'string' && /^(key:)?[0-9a-f]{64}$/.test(id)) ? (x as string[]) : undefined;
  const add = ids(o['add'] ?? []);
  const remove = ids(o['remove'] ?? []);
  return add && remove ? { add, remove } : undefined;
}

export interface Judgement {
  readonly stale: boolean;
  /** Why it is stale, or why it is held: for logs and `holdfast locks`. */
  readonly reason: string;
  readonly liveness: Liveness;
}

/** Locks this process released whose object it could not remove (they must not block it). */
const releasedHere = new Set<string>();

export function judge(rec: LockRecord, now: number = Date.now()): Judgement {
  const liveness = ownerLiveness(rec.owner);
  if (liveness === 'alive' && releasedHere.has(rec.id) && rec.owner.pid === process.pid) return { stale: true, liveness, reason: 'released by this process (its file could not be removed then)' };
  if (liveness === 'dead') return { stale: true, liveness, reason: `its process (${describeOwner(rec.owner)}) no longer exists` };
  const since = now - rec.refreshed;
  if (rec.ttlMs > 0 && since > rec.ttlMs) return { stale: true, liveness, reason: `not refreshed for ${formatAge(since)} (its TTL is ${formatAge(rec.ttlMs)})` };
  return { stale: false, liveness, reason: liveness === 'alive' ? 'its process is running' : rec.ttlMs > 0 ? 'refreshed within its TTL' : 'held by a process on another host or PID namespace' };
}

export function formatAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, '0')}h`;
}

export function describeRecord(rec: LockRecord, now: number = Date.now()): string {
  return `${rec.operation} (${describeOwner(rec.owner)}, ${rec.kind}, age ${formatAge(now - rec.created)}${rec.ttlMs > 0 ? `, refreshed ${formatAge(now - rec.refreshed)} ago` : ''})`;
}

export interface LockLog {
  info(msg: string): void;
  warn(msg: string): void;
  debug(msg: string): void;
}

export interface AcquireOptions {
  readonly kind: LockKind;
  readonly operation: string;
  readonly scope: string;
  /** How long to keep trying while a live lock conflicts (0: fail at once). */
  readonly waitMs: number;
  /** Heartbeat TTL (0 = no heartbeat). */
  readonly ttlMs: number;
  /** Heartbeat interval (ignored without TTL). */
  readonly refreshMs: number;
  /** Remove stale conflicting locks (default true); off: they block like live ones. */
  readonly removeStale: boolean;
  readonly log: LockLog;
  readonly signal?: AbortSignal | undefined;
  /** Hint for the blocked error. */
  readonly blockedHint?: string | undefined;
  /**
   * Called before a stale lock that announced an intent is removed: finish (or undo) its
   * interrupted commit. When it throws, the lock is kept (it still does not block).
   */
  readonly finishIntent?: ((rec: LockRecord) => Promise<void>) | undefined;
}

export function conflicts(mine: LockKind, theirs: LockKind): boolean {
  return mine === 'exclusive' || theirs === 'exclusive' || (mine === 'maintenance' && theirs === 'maintenance');
}

/** Attempts with no wait: conflicts younger than this may be a racing candidate, retried briefly. */
const YOUNG_MS = 2000;
const QUICK_RETRIES = 3;

export async function acquireLock(store: LockStore, opts: AcquireOptions): Promise<HeldLock> {
  const deadline = Date.now() + opts.waitMs;
  let delay = 50;
  let quick = 0;
  let waitedLogged = false;
  for (let attempt = 1; ; attempt++) {
    opts.signal?.throwIfAborted();
    const now = Date.now();
    const rec: LockRecord = { id: newLockId(), kind: opts.kind, operation: opts.operation, scope: opts.scope, owner: currentOwner(), created: now, refreshed: now, ttlMs: opts.ttlMs };
    await store.create(rec);
    let blockers: LockRecord[];
    try {
      blockers = await liveConflicts(store, rec, opts);
    } catch (err) {
      await store.remove(rec).catch(() => undefined);
      throw err;
    }
    if (blockers.length === 0) return new HeldLock(store, rec, opts);
    await store.remove(rec);
    const t = Date.now();
    const young = blockers.every((b) => t - b.created < YOUNG_MS);
    if (t >= deadline && !(young && quick < QUICK_RETRIES)) throw lockedError(store, opts, blockers, t);
    if (t >= deadline) quick++;
    if (!waitedLogged && t < deadline) {
      opts.log.info(`waiting for the lock on ${opts.scope}: held by ${blockers.map((b) => describeRecord(b, t)).join('; ')}`);
      waitedLogged = true;
    }
    const pause = Math.min(delay * (0.5 + Math.random()), Math.max(10, deadline - t));
    delay = Math.min(delay * 2, 5000);
    await sleep(pause, opts.signal);
    if (attempt > 100_000) throw new HoldfastError('INTERNAL', 'lock acquisition did not terminate');
  }
}

/** Conflicting locks that are not stale; stale ones are removed (when allowed) and logged. */
async function liveConflicts(store: LockStore, mine: LockRecord, opts: AcquireOptions): Promise<LockRecord[]> {
  const out: LockRecord[] = [];
  for (const name of await store.list()) {
    if (name.id === mine.id || !conflicts(mine.kind, name.kind)) continue;
    const rec = await store.read(name);
    if (rec === 'gone') continue;
    if (rec === 'unreadable') {
      if (!opts.removeStale) {
        out.push(unreadableRecord(name));
        continue;
      }
      await store.remove(name);
      opts.log.warn(`removed an unreadable lock ${lockFileName(name)} in ${store.where} (torn by a crash or damaged)`);
      continue;
    }
    const j = judge(rec);
    if (!j.stale) {
      out.push(rec);
      continue;
    }
    if (!opts.removeStale) {
      out.push(rec);
      continue;
    }
    try {
      if (rec.intent && opts.finishIntent) await opts.finishIntent(rec);
      await store.remove(name);
      opts.log.warn(`removed stale lock of ${describeRecord(rec)} on ${rec.scope}: ${j.reason}`);
    } catch (err) {
      // Stale either way: it does not block us. Say once why it stays.
      opts.log.warn(`stale lock of ${describeRecord(rec)} (${j.reason}) could not be removed: ${(err as Error).message}`);
    }
  }
  return out;
}

function unreadableRecord(name: LockName): LockRecord {
  return { id: name.id, kind: name.kind, operation: 'unreadable lock', scope: '?', owner: { host: '?', machineId: '', bootId: '', pidNs: '', pid: 0, startTime: '' }, created: 0, refreshed: 0, ttlMs: 0 };
}

function lockedError(store: LockStore, opts: AcquireOptions, blockers: readonly LockRecord[], now: number): HoldfastError {
  const b = blockers[0]!;
  const more = blockers.length > 1 ? ` and ${blockers.length - 1} more` : '';
  const ttlNote = b.ttlMs > 0 && ownerLiveness(b.owner) !== 'alive' ? ` If that process is gone, its lock becomes stale ${formatAge(Math.max(0, b.ttlMs - (now - b.refreshed)))} from now and is then removed automatically.` : '';
  return new HoldfastError(
    'LOCKED',
    `${opts.operation}: ${opts.scope} is locked by ${describeRecord(b, now)}${more}`,
    {
      where: store.where,
      holders: blockers.map((r) => ({ operation: r.operation, kind: r.kind, host: r.owner.host, pid: r.owner.pid, created: new Date(r.created).toISOString(), refreshed: new Date(r.refreshed).toISOString(), ageSeconds: Math.round((now - r.created) / 1000) })),
      hint: `${opts.blockedHint ?? 'Wait for it to finish, or pass --lock-wait DURATION (e.g. 10m) to wait for it.'}${ttlNote} \`holdfast locks\` lists locks; \`holdfast unlock\` removes stale ones.`,
    },
  );
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A lock this process holds. */
export class HeldLock {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private lastRefresh: number;
  private refreshing: Promise<void> | undefined;
  private released = false;

  constructor(
    private readonly store: LockStore,
    readonly record: LockRecord,
    private readonly opts: Pick<AcquireOptions, 'refreshMs' | 'log' | 'operation' | 'scope'>,
  ) {
    this.lastRefresh = record.refreshed;
    if (record.ttlMs > 0) {
      this.timer = setInterval(() => void this.refresh(), Math.max(10, opts.refreshMs));
      this.timer.unref();
    }
  }

  /** Fires (with a LOCK_LOST error as reason) when the lock is lost. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** After this long without a successful refresh the holder gives the lock up. */
  private get giveUpMs(): number {
    return Math.max(this.record.ttlMs - this.opts.refreshMs, this.record.ttlMs / 2);
  }

  private lose(why: string): void {
    if (this.controller.signal.aborted) return;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.controller.abort(
      new HoldfastError('LOCK_LOST', `${this.opts.operation}: lost the lock on ${this.opts.scope} (${why}); stopped before committing anything`, { where: this.store.where, lock: this.record.id }),
    );
  }

  /** Throw LOCK_LOST when the lock is lost or its heartbeat has lapsed (no I/O). */
  check(): void {
    if (this.record.ttlMs > 0 && !this.controller.signal.aborted && Date.now() - this.lastRefresh > this.giveUpMs) {
      this.lose(`not refreshed for ${formatAge(Date.now() - this.lastRefresh)}`);
    }
    if (this.controller.signal.aborted) throw this.controller.signal.reason;
  }

  /** check(), and that the lock object still exists: call right before committing. */
  async verify(): Promise<void> {
    this.check();
    let exists: boolean;
    try {
      exists = await this.store.exists(this.record);
    } catch (err) {
      this.opts.log.debug(`lock ${this.record.id}: existence check failed: ${(err as Error).message}`);
      exists = true; // cannot tell; the heartbeat deadline still applies
    }
    if (!exists) this.lose('its lock object was removed by another process');
    this.check();
  }

  /**
   * Record what this holder is about to commit (merged into earlier announcements), durably,
   * before the commit's first object is written. Throws when the record cannot be written.
   */
  async announce(add: readonly string[], remove: readonly string[]): Promise<void> {
    this.check();
    const cur = this.record.intent ?? { add: [], remove: [] };
    const next = { add: [...new Set([...cur.add, ...add])], remove: [...new Set([...cur.remove, ...remove])] };
    if (next.add.length === cur.add.length && next.remove.length === cur.remove.length) return;
    await this.refreshing;
    this.record.intent = next;
    await this.store.write(this.record, true);
  }

  private async refresh(): Promise<void> {
    if (this.refreshing || this.released || this.controller.signal.aborted) return;
    this.refreshing = (async () => {
      try {
        if (Date.now() - this.lastRefresh > this.giveUpMs) {
          this.lose(`not refreshed for ${formatAge(Date.now() - this.lastRefresh)}`);
          return;
        }
        if (!(await this.store.exists(this.record))) {
          this.lose('its lock object was removed by another process');
          return;
        }
        const now = Date.now();
        this.record.refreshed = now;
        // Once it carries an intent, a torn rewrite would lose it: write durably from then on.
        await this.store.write(this.record, this.record.intent !== undefined);
        this.lastRefresh = now;
      } catch (err) {
        this.opts.log.debug(`lock ${this.record.id}: refresh failed: ${(err as Error).message}`);
        if (Date.now() - this.lastRefresh > this.giveUpMs) this.lose(`could not refresh it: ${(err as Error).message}`);
      } finally {
        this.refreshing = undefined;
      }
    })();
    await this.refreshing;
  }

  /** Remove the lock object. Failures are logged at debug level only: a leftover lock is stale. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    releasedHere.add(this.record.id);
    if (this.timer) clearInterval(this.timer);
    await this.refreshing;
    try {
      await this.store.remove(this.record);
    } catch (err) {
      this.opts.log.debug(`lock ${this.record.id}: release failed (the leftover is stale): ${(err as Error).message}`);
    }
  }
}

export interface ListedLock {
  readonly name: LockName;
  readonly record: LockRecord | undefined;
  readonly judgement: Judgement;
}

export async function listLocks(store: LockStore): Promise<ListedLock[]> {
  const out: ListedLock[] = [];
  const now = Date.now();
  for (const name of await store.list()) {
    const rec = await store.read(name);
    if (rec === 'gone') continue;
    if (rec === 'unreadable') out.push({ name, record: undefined, judgement: { stale: true, liveness: 'unknown', reason: 'unreadable (torn by a crash or damaged)' } });
    else out.push({ name, record: rec, judgement: judge(rec, now) });
  }
  return out.sort((a, b) => (a.record?.created ?? 0) - (b.record?.created ?? 0));
}
