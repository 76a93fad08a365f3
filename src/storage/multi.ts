/**
 * Several storages behind one repository (docs/design.md §19): `failover` or `replicate`.
 *
 * - failover: a write goes to the first storage that is alive (the objects needed to open the
 *   repository — config, keys, cluster records — to every alive one); reads and lists look in
 *   every alive storage, so objects are found wherever they landed; `storage sync` copies what
 *   landed on a secondary back to the primary.
 * - replicate: a write goes to every alive storage and succeeds when `quorum` of them (default:
 *   all) acknowledged; reads use the first alive storage that has the object; `storage sync`
 *   fills in what a storage missed.
 *
 * Alive status: from a probe (write, read back and delete a small object `probes/<random>`,
 * bounded by `probeTimeoutMs`) and from real operations: a retryable failure marks the storage
 * dead at once (in this process and in the shared status cache); only a successful probe revives
 * it, and a dead storage is probed again once its cached status is older than `statusTtlMs`.
 * The cache (`StatusCache`, a local state file per storage) is shared by every holdfast process
 * on the host, so short-lived processes do not each retry a dead storage.
 *
 * Never "not found" by mistake: a read that finds nothing on the alive storages while another
 * storage is dead or failed is an error (`transient`), not `not-found`: the object may be there.
 * (archive-get must not tell PostgreSQL "end of archive" because a storage is down.)
 * Destructive operations (prune, forget, expire, key removal, sync) call `requireAllAlive()`:
 * a deletion that a dead storage misses could later bring back a forgotten snapshot whose data
 * was pruned elsewhere.
 */
import { randomBytes } from 'node:crypto';
import { type Backend, type ByteRange, type Capabilities, type DeleteOptions, type ObjectInfo, type ObjectWriter, type PutData, type PutOptions, StorageError, UncertainAbsenceError, BufferedWriter, listWhole, putParts } from './backend.js';

export type StorageMode = 'failover' | 'replicate';

/**
 * Objects the repository needs to be opened at all (config, key files, cluster records): in
 * failover mode too they go to every alive storage, so the repository opens from a secondary
 * while the primary is down.
 */
export function everywhere(name: string): boolean {
  return name === 'config' || name.startsWith('keys/') || name.startsWith('catalog/keys/') || name.startsWith('clusters/');
}

/** One storage's health as the cache keeps it. */
export interface StorageHealth {
  readonly alive: boolean;
  /** When it was established (ms since the epoch). */
  readonly checked: number;
  /** Probe latency (ms), when a probe established it. */
  readonly latencyMs?: number | undefined;
  /** Why it is dead. */
  readonly error?: string | undefined;
}

/** Where health is shared between processes (state/storage-status.ts) or kept in memory (tests). */
export interface StatusCache {
  get(location: string): StorageHealth | undefined;
  set(location: string, health: StorageHealth): void;
}

export class MemoryStatusCache implements StatusCache {
  readonly entries = new Map<string, StorageHealth>();
  get(location: string): StorageHealth | undefined {
    return this.entries.get(location);
  }
  set(location: string, health: StorageHealth): void {
    this.entries.set(location, health);
  }
}

export interface MultiSettings {
  readonly mode: StorageMode;
  /** replicate: acknowledgements needed (default: every storage). */
  readonly quorum?: number | undefined;
  /** A cached status older than this is established again (dead storages are probed). */
  readonly statusTtlMs: number;
  readonly probeTimeoutMs: number;
  readonly log?: ((message: string) => void) | undefined;
}

export interface Member {
  readonly location: string;
  readonly backend: Backend;
}

function retryable(err: unknown): boolean {
  return err instanceof StorageError && !err.permanent;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class MultiBackend implements Backend {
  readonly location: string;
  readonly capabilities: Capabilities;
  /** This process's view: established once per member, updated by failures and probes. */
  private readonly known = new Map<number, Promise<boolean>>();

  constructor(
    readonly members: readonly Member[],
    private readonly settings: MultiSettings,
    private readonly cache: StatusCache,
    private readonly now: () => number = Date.now,
  ) {
    if (members.length === 0) throw new Error('MultiBackend needs at least one storage');
    this.location = members.map((m) => m.location).join(' + ');
    this.capabilities = {
      // replicate: two racing createOnly writers may each win on different storages (both are
      // then refused on the other and fail), so exclusion is not promised.
      conditionalCreate: (settings.mode === 'failover' || members.length === 1) && members.every((m) => m.backend.capabilities.conditionalCreate),
      maxConcurrency: Math.min(...members.map((m) => m.backend.capabilities.maxConcurrency)),
      persistent: members.every((m) => m.backend.capabilities.persistent),
    };
  }

  /** A member's permanent error, as this backend's (its location named in the message). */
  private own(err: unknown): unknown {
    if (!(err instanceof StorageError) || err.location === this.location) return err;
    return new StorageError(err.kind, this.location, err.objectName, err.message.includes(err.location) ? err.message : `${err.message} (on ${err.location})`, { cause: err });
  }

  private get quorum(): number {
    return Math.min(this.members.length, Math.max(1, this.settings.quorum ?? this.members.length));
  }

  /** Write, read back and delete a small object, within the probe timeout. */
  async probe(i: number): Promise<StorageHealth> {
    const m = this.members[i]!;
    const name = `probes/${randomBytes(12).toString('hex')}`;
    const data = randomBytes(32);
    const start = this.now();
    let timer: NodeJS.Timeout | undefined;
    const work = (async () => {
      await m.backend.put(name, data, { durable: false });
      const back = await m.backend.get(name);
      await m.backend.delete(name, { durable: false });
      if (!back.equals(data)) throw new StorageError('io', m.location, name, 'the probe object read back differs from what was written');
    })();
    work.catch(() => undefined);
    try {
      await Promise.race([work, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new StorageError('transient', m.location, name, `no answer within ${this.settings.probeTimeoutMs} ms`)), this.settings.probeTimeoutMs)))]);
      const h = { alive: true, checked: this.now(), latencyMs: this.now() - start };
      this.cache.set(m.location, h);
      return h;
    } catch (err) {
      const h = { alive: false, checked: this.now(), latencyMs: this.now() - start, error: describe(err) };
      this.cache.set(m.location, h);
      this.settings.log?.(`storage ${m.location} is not usable: ${h.error}`);
      return h;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Whether member i is alive: the process's view, else a fresh cached status, else a probe. */
  alive(i: number): Promise<boolean> {
    let p = this.known.get(i);
    if (!p) {
      const cached = this.cache.get(this.members[i]!.location);
      p = cached && this.now() - cached.checked < this.settings.statusTtlMs ? Promise.resolve(cached.alive) : this.probe(i).then((h) => h.alive);
      this.known.set(i, p);
    }
    return p;
  }

  /** What the shared cache says of member i (undefined: nothing yet). */
  cached(i: number): StorageHealth | undefined {
    return this.cache.get(this.members[i]!.location);
  }

  /** A real operation failed on member i: dead for this process and for the cache, at once. */
  private markDead(i: number, err: unknown): void {
    const m = this.members[i]!;
    this.known.set(i, Promise.resolve(false));
    this.cache.set(m.location, { alive: false, checked: this.now(), error: describe(err) });
    this.settings.log?.(`storage ${m.location} failed and is marked dead: ${describe(err)}`);
  }

  private async aliveMembers(): Promise<number[]> {
    const flags = await Promise.all(this.members.map((_, i) => this.alive(i)));
    return flags.flatMap((a, i) => (a ? [i] : []));
  }

  private noneAlive(name: string, errors: string[]): StorageError {
    return new StorageError('transient', this.location, name, `no storage of ${this.location} is usable${errors.length ? `: ${errors.join('; ')}` : ''}`);
  }

  /** For destructive operations: every storage must be alive (probed now unless freshly known). */
  async requireAllAlive(): Promise<void> {
    const dead: string[] = [];
    for (const [i, m] of this.members.entries()) {
      if (!(await this.alive(i))) dead.push(`${m.location} (${this.cache.get(m.location)?.error ?? 'not usable'})`);
    }
    if (dead.length > 0) {
      throw new StorageError('transient', this.location, '', `this operation deletes data and needs every storage of the repository, but ${dead.join(', ')} ${dead.length === 1 ? 'is' : 'are'} not usable`);
    }
  }

  async put(name: string, data: PutData, options?: PutOptions): Promise<void> {
    if (this.settings.mode === 'failover' && !everywhere(name)) {
      const errors: string[] = [];
      for (const [i, m] of this.members.entries()) {
        if (!(await this.alive(i))) continue;
        try {
          await m.backend.put(name, data, options);
          return;
        } catch (err) {
          if (!retryable(err)) throw this.own(err);
          this.markDead(i, err);
          errors.push(`${m.location}: ${describe(err)}`);
        }
      }
      throw this.noneAlive(name, errors);
    }
    const targets = await this.aliveMembers();
    const results = await Promise.allSettled(targets.map((i) => this.members[i]!.backend.put(name, data, options)));
    let acks = 0;
    const errors: string[] = [];
    // An object that every storage already had is simply `exists`; one that only some had (an
    // earlier write that reached only those) counts where it holds the same bytes.
    const existing = results.filter((r) => r.status === 'rejected' && r.reason instanceof StorageError && r.reason.kind === 'exists');
    if (existing.length > 0 && existing.length === results.length) throw this.own((existing[0] as PromiseRejectedResult).reason);
    for (const [k, r] of results.entries()) {
      const i = targets[k]!;
      if (r.status === 'fulfilled') acks++;
      else if (r.reason instanceof StorageError && r.reason.kind === 'exists' && options?.createOnly) {
        // Already there (a partial earlier write): an acknowledgement only with the same bytes.
        const stored = await this.members[i]!.backend.get(name).catch(() => undefined);
        if (stored?.equals(Buffer.concat(putParts(data)))) acks++;
        else throw this.own(r.reason);
      } else if (!retryable(r.reason)) throw this.own(r.reason);
      else {
        this.markDead(i, r.reason);
        errors.push(`${this.members[i]!.location}: ${describe(r.reason)}`);
      }
    }
    const needed = this.settings.mode === 'replicate' ? this.quorum : 1;
    if (acks < needed) {
      throw new StorageError('transient', this.location, name, `put ${name}: ${acks} of ${this.members.length} storages acknowledged, ${needed} needed${errors.length ? ` (${errors.join('; ')})` : ''}`);
    }
  }

  /** The first alive storage that has the object; uncertain absence is an error, not not-found. */
  private async first<T>(name: string, op: (b: Backend) => Promise<T>): Promise<T> {
    const errors: string[] = [];
    let notFound: StorageError | undefined;
    for (const [i, m] of this.members.entries()) {
      if (!(await this.alive(i))) {
        errors.push(`${m.location} is not usable`);
        continue;
      }
      try {
        return await op(m.backend);
      } catch (err) {
        if (err instanceof StorageError && err.kind === 'not-found') {
          notFound = err;
          continue;
        }
        if (!retryable(err)) throw this.own(err);
        this.markDead(i, err);
        errors.push(`${m.location}: ${describe(err)}`);
      }
    }
    if (errors.length === 0 && notFound) throw new StorageError('not-found', this.location, name, `${name} is on none of the storages of ${this.location}`);
    const message = `${name} is not on the usable storages of ${this.location}, and it may be on the others: ${errors.join('; ')}`;
    if (notFound) throw new UncertainAbsenceError('transient', this.location, name, message);
    throw new StorageError('transient', this.location, name, message);
  }

  get(name: string, range?: ByteRange): Promise<Buffer> {
    return this.first(name, (b) => b.get(name, range));
  }

  stat(name: string): Promise<ObjectInfo> {
    return this.first(name, (b) => b.stat(name));
  }

  /** The union over the alive storages (an object on several is listed once). */
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const seen = new Map<string, ObjectInfo>();
    let usable = 0;
    for (const [i, m] of this.members.entries()) {
      if (!(await this.alive(i))) continue;
      try {
        for (const o of await listWhole(m.backend, prefix)) if (!seen.has(o.name)) seen.set(o.name, o);
        usable++;
      } catch (err) {
        if (!retryable(err)) throw this.own(err);
        this.markDead(i, err);
      }
    }
    if (usable === 0) throw this.noneAlive(prefix, []);
    yield* seen.values();
  }

  /** Delete on every alive storage; a failure marks that storage dead and fails the deletion. */
  async delete(name: string, options?: DeleteOptions): Promise<void> {
    const targets = await this.aliveMembers();
    const results = await Promise.allSettled(targets.map((i) => this.members[i]!.backend.delete(name, options)));
    for (const [k, r] of results.entries()) {
      if (r.status === 'rejected') {
        if (retryable(r.reason)) this.markDead(targets[k]!, r.reason);
        throw this.own(r.reason);
      }
    }
  }

  /** Parts are kept (copied) and committed with `put`, so they can go to whichever storage is alive. */
  async openWriter(): Promise<ObjectWriter> {
    return new BufferedWriter(this);
  }

  async close(): Promise<void> {
    await Promise.all(this.members.map((m) => m.backend.close()));
  }
}
