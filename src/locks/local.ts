/**
 * Local operation locks: serialise operations on one host (one backup per cluster, one async
 * archive-push worker per cluster, one restore per target directory, …).
 *
 * They live in a local runtime directory, never in the repository and never on network storage
 * (see `defaultLockDir`). Each holder creates its own file `<scope>.<s|m|x>-<id>.lock` (protocol.ts)
 * written to a temporary name and renamed, so it is never seen half-written. Liveness is judged
 * by the owner's PID and process start time (owner.ts), so a process killed by SIGKILL, the OOM
 * killer or a power loss never blocks the next run: its file is simply stale.
 *
 * The directory may vanish or go bad under us (tmpfs cleaned, a remount that makes every handle
 * ESTALE). ESTALE, EIO and ENOENT are retried once after re-creating the directory; if the lock
 * cannot be taken then, the operation fails once with LOCK_DIR naming the directory. A holder whose
 * file disappeared re-creates it on `verify()` when no other live holder has appeared meanwhile;
 * release never fails the operation (a leftover file is stale by construction).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HoldfastError, type SystemError } from '../errors/catalogue.js';
import {
  type AcquireOptions,
  type HeldLock,
  type LockName,
  type LockRecord,
  type LockStore,
  acquireLock,
  decodeRecord,
  encodeRecord,
  listLocks,
  lockFileName,
  parseLockFileName,
} from './protocol.js';

const RETRYABLE = new Set(['ENOENT', 'ESTALE', 'EIO']);

/** 'ESTALE' also for Node's "Unknown system error -116". */
export function errnoName(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const e = err as SystemError;
  if (e.errno === -os.constants.errno.ESTALE) return 'ESTALE';
  return e.code;
}

/**
 * The default lock directory: `/run/holdfast` when it exists or can be created and is writable
 * (created mode 1777 so root and the postgres user share it), else `$XDG_RUNTIME_DIR/holdfast`,
 * else `<tmpdir>/holdfast-locks-<uid>`. All are local (tmpfs or local disk).
 */
export function defaultLockDir(env: NodeJS.ProcessEnv = process.env): string {
  const candidates: Array<{ dir: string; shared: boolean }> = [{ dir: '/run/holdfast', shared: true }];
  if (env['XDG_RUNTIME_DIR']) candidates.push({ dir: path.join(env['XDG_RUNTIME_DIR'], 'holdfast'), shared: false });
  const fallback = path.join(os.tmpdir(), `holdfast-locks-${process.getuid?.() ?? 'user'}`);
  for (const c of candidates) {
    if (usable(c.dir, c.shared)) return c.dir;
  }
  return fallback;
}

function usable(dir: string, shared: boolean): boolean {
  try {
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
    return fs.statSync(dir).isDirectory();
  } catch {
    // try to create it below
  }
  try {
    fs.mkdirSync(dir, { mode: shared ? 0o1777 : 0o700 });
    if (shared) fs.chmodSync(dir, 0o1777); // mkdir's mode is filtered by the umask
    return true;
  } catch {
    return false;
  }
}

/** Refuse a lock directory inside the repository or a data directory (CONFIG_INVALID). */
export function checkLockDirPlacement(lockDir: string, forbidden: ReadonlyArray<{ path: string | undefined; what: string }>): void {
  const real = (p: string): string => {
    try {
      return fs.realpathSync(p);
    } catch {
      return path.resolve(p);
    }
  };
  const l = real(lockDir);
  for (const f of forbidden) {
    if (!f.path) continue;
    const r = real(f.path);
    if (l === r || l.startsWith(r.endsWith('/') ? r : `${r}/`)) {
      throw new HoldfastError('CONFIG_INVALID', `lock directory ${lockDir} is inside the ${f.what} ${f.path}`, {
        lockDir,
        hint: 'Local locks must live on a local runtime directory of their own (the default is /run/holdfast); set --lock-dir / HOLDFAST_LOCK_DIR elsewhere.',
      });
    }
  }
}

/** File-name prefix for a scope: readable part plus a hash of the full key. */
export function scopeFilePrefix(key: string): string {
  const readable = key.replace(/[^A-Za-z0-9_-]+/g, '_').slice(0, 40);
  return `${readable}.${createHash('sha256').update(key).digest('hex').slice(0, 12)}`;
}

export class LocalLockStore implements LockStore {
  readonly where: string;
  private readonly prefix: string | undefined;

  /** `key` identifies what is locked (e.g. `pg-backup:<repository id>:main`). */
  /** Lock files found by list(), by id (for a store over every scope, where prefixes differ). */
  private readonly files = new Map<string, string>();

  /** `key` identifies what is locked (e.g. `pg-backup:<repository id>:main`); undefined: every scope (listing, unlock). */
  constructor(
    readonly dir: string,
    key: string | undefined,
  ) {
    this.where = `lock directory ${dir}`;
    this.prefix = key === undefined ? undefined : `${scopeFilePrefix(key)}.`;
  }

  private file(name: LockName): string {
    const known = this.files.get(name.id);
    if (known) return known;
    if (this.prefix === undefined) throw new HoldfastError('INTERNAL', 'a lock store over every scope cannot create locks');
    return path.join(this.dir, `${this.prefix}${lockFileName(name)}.lock`);
  }

  /** Run `fn`; on ENOENT/ESTALE/EIO re-create the directory and try once more. */
  private retry<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (!RETRYABLE.has(errnoName(err) ?? '')) throw this.error(what, err);
      try {
        fs.mkdirSync(this.dir, { recursive: true, mode: 0o1777 });
      } catch {
        // the retry below reports the problem
      }
      try {
        return fn();
      } catch (again) {
        throw this.error(what, again);
      }
    }
  }

  private error(what: string, err: unknown): HoldfastError {
    if (err instanceof HoldfastError) return err;
    const code = errnoName(err);
    return new HoldfastError('LOCK_DIR', `cannot ${what} in the lock directory ${this.dir}: ${code ?? (err as Error).message}${code === 'ESTALE' ? ' (stale file handle: the directory was remounted or replaced)' : ''}`, { lockDir: this.dir, errno: code }, { cause: err });
  }

  async create(rec: LockRecord): Promise<void> {
    this.writeFile(rec, 'create a lock file');
  }

  async write(rec: LockRecord): Promise<void> {
    this.writeFile(rec, 'refresh a lock file');
  }

  private writeFile(rec: LockRecord, what: string): void {
    const dest = this.file(rec);
    const tmp = path.join(this.dir, `.tmp-${path.basename(dest)}`);
    const bytes = encodeRecord(rec);
    this.retry(what, () => {
      const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW, 0o644);
      try {
        fs.writeSync(fd, bytes);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(tmp, dest);
    });
  }

  async list(): Promise<LockName[]> {
    const names = this.retry('list lock files', () => fs.readdirSync(this.dir));
    const out: LockName[] = [];
    for (const n of names) {
      if (!n.endsWith('.lock') || n.startsWith('.')) continue;
      if (this.prefix !== undefined && !n.startsWith(this.prefix)) continue;
      const base = n.slice(0, -'.lock'.length);
      const parsed = parseLockFileName(base.slice(base.lastIndexOf('.') + 1));
      if (!parsed) continue;
      if (this.prefix === undefined) this.files.set(parsed.id, path.join(this.dir, n));
      out.push(parsed);
    }
    return out;
  }

  async read(name: LockName): Promise<LockRecord | 'gone' | 'unreadable'> {
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(this.file(name));
    } catch (err) {
      if (errnoName(err) === 'ENOENT') return 'gone';
      try {
        bytes = this.retry('read a lock file', () => fs.readFileSync(this.file(name)));
      } catch (again) {
        if (again instanceof HoldfastError && again.data['errno'] === 'ENOENT') return 'gone';
        throw again;
      }
    }
    return decodeRecord(name, bytes);
  }

  async exists(name: LockName): Promise<boolean> {
    try {
      fs.statSync(this.file(name));
      return true;
    } catch (err) {
      if (errnoName(err) === 'ENOENT') return false;
      try {
        fs.statSync(this.file(name));
        return true;
      } catch (again) {
        if (errnoName(again) === 'ENOENT') return false;
        throw this.error('check a lock file', again);
      }
    }
  }

  async remove(name: LockName): Promise<void> {
    try {
      fs.unlinkSync(this.file(name));
    } catch (err) {
      if (errnoName(err) === 'ENOENT') return;
      throw this.error('remove a lock file', err);
    }
  }
}

export interface LocalLockOptions {
  readonly lockDir: string;
  /** What is locked, unique per scope (e.g. `pg-backup:<repository id>:main`). */
  readonly key: string;
  /** For messages: "pg backup of cluster main". */
  readonly scope: string;
  readonly operation: string;
  readonly waitMs: number;
  readonly removeStale: boolean;
  readonly log: AcquireOptions['log'];
  readonly signal?: AbortSignal | undefined;
}

/** A held local lock; `verify()` re-creates a vanished lock file when that is safe. */
export class LocalLock {
  private recreatedLogged = false;

  private constructor(
    private readonly store: LocalLockStore,
    private readonly held: HeldLock,
    private readonly opts: LocalLockOptions,
  ) {}

  static async acquire(opts: LocalLockOptions): Promise<LocalLock> {
    const store = new LocalLockStore(opts.lockDir, opts.key);
    const held = await acquireLock(store, { kind: 'exclusive', operation: opts.operation, scope: opts.scope, waitMs: opts.waitMs, ttlMs: 0, refreshMs: 0, removeStale: opts.removeStale, log: opts.log, signal: opts.signal });
    return new LocalLock(store, held, opts);
  }

  get signal(): AbortSignal {
    return this.held.signal;
  }

  /**
   * Make sure this process still holds the lock. When the lock file vanished (the directory was
   * cleaned or remounted), re-create it if no other live holder appeared; if one did, fail with
   * LOCK_LOST. Lock-directory errors while checking are logged once and ignored: the lock was
   * taken properly, and the directory being unusable now cannot let a second holder in either.
   */
  async verify(): Promise<void> {
    this.held.check();
    let present: boolean;
    try {
      present = await this.store.exists(this.held.record);
    } catch (err) {
      this.logOnce(`lock directory ${this.opts.lockDir} is not usable right now (${(err as Error).message}); going on with the lock taken at start`);
      return;
    }
    if (present) return;
    const others = (await listLocks(this.store).catch(() => [])).filter((l) => l.name.id !== this.held.record.id && !l.judgement.stale);
    if (others.length > 0) {
      throw new HoldfastError('LOCK_LOST', `${this.opts.operation}: the lock file for ${this.opts.scope} vanished and another process (${others[0]!.record?.owner.pid ?? '?'}) has taken the lock; stopping`, { lockDir: this.opts.lockDir });
    }
    try {
      await this.store.create(this.held.record);
      this.logOnce(`lock file for ${this.opts.scope} vanished from ${this.opts.lockDir} (directory cleaned or remounted?); re-created it`);
    } catch (err) {
      this.logOnce(`lock file for ${this.opts.scope} vanished and could not be re-created (${(err as Error).message}); going on with the lock taken at start`);
    }
  }

  private logOnce(msg: string): void {
    if (this.recreatedLogged) return;
    this.recreatedLogged = true;
    this.opts.log.info(msg);
  }

  async release(): Promise<void> {
    await this.held.release();
  }
}
