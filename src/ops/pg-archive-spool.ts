/**
 * The spool of `pg archive-push --async` (docs/design.md §12, §14): a local directory per
 * repository location and cluster in which the background worker (pg-archive-worker.ts) records
 * every file it made durable in the repository, or why it could not. The archive_command call for
 * such a file then only has to check the record against the file's content.
 *
 * This module is what that fast path loads: node built-ins, the error catalogue, WAL names and the
 * storage driver (to fingerprint the repository's `config`), nothing of the repository layer.
 *
 * Layout of `<state dir>/spool/<16 hex digits of SHA-256 of the resolved location>/<cluster>/`
 * (mode 0700, owned by the user; refused when others can write to it):
 *
 *   key            32 random bytes (0600): the spool's MAC key
 *   repository     "<instance> [<repository id>]\n": which repository the records belong to
 *                  (instance = SHA-256 of the stored, encrypted `config` object; the id once a
 *                  worker has opened the repository). Another instance at the location (deleted
 *                  and re-created) discards every record.
 *   <file>.ok      "gmac-aes256 <nonce> <tag>\n": <file> is durable in the repository, with the
 *                  content this fingerprint was computed from (removed by the worker once the
 *                  file is no longer ready)
 *   <file>.error   JSON {code, message, hint, fingerprint|null, time, pid}: the worker's attempt failed
 *   <file>.want    (empty) a call waits for <file>: the worker takes it first
 *   worker.log     the worker's log (stderr), rotated to worker.log.1 beyond 1 MiB
 *   worker         "holdfast-worker-v1 <pid> <start time> <pg_wal>\n": the live worker (start time:
 *                  field 22 of /proc/<pid>/stat, so a reused PID does not pass for it), for the
 *                  native front's wait (native/wal-front.c); removed when it exits
 *
 * Fingerprint: GMAC (AES-256-GCM over no plaintext; the data is additional authenticated data)
 * under the spool key with a fresh random 96-bit nonce per record, over
 * "holdfast-spool-v1\0<file>\0" and the file's content. A record is trusted only when the
 * fingerprint of the content archive_command offers now equals it: any other content matches
 * with probability below 2^-100, and a record copied to another name does not match. GMAC costs
 * ~3 ms per 16 MiB segment where SHA-256 costs ~20 ms, on every call of a burst.
 *
 * Records are written to a temporary name and renamed, so a reader never sees half a record.
 * Losing records (a crash, a cleaned cache) costs only a normal push, never data.
 */
import { type CipherGCM, createCipheriv, createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CATALOGUE, type ErrorCode, HoldfastError, fsError, systemCode } from '../errors/catalogue.js';
import { parseWalName } from '../wal/names.js';
import { isNotFound } from '../storage/backend.js';
import { localDirectory, openBackend } from './backend.js';
import type { StorageSettings } from '../storage/settings.js';

export const WORKER_LOG = 'worker.log';
const LOG_ROTATE_BYTES = 1 << 20;
const FP_PREFIX = 'gmac-aes256';
const FP_RE = /^gmac-aes256 ([0-9a-f]{24}) ([0-9a-f]{32})$/;

const CLUSTER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function checkClusterName(name: string): string {
  if (!CLUSTER_NAME.test(name)) {
    throw new HoldfastError('CONFIG_INVALID', `cluster name ${JSON.stringify(name)} is invalid`, { option: 'cluster', hint: 'Use 1-64 letters, digits, "_", "." or "-", starting with a letter or digit.' });
  }
  return name;
}

/** The spool directory of a repository location and cluster. */
export function spoolDirFor(stateDir: string, location: string, cluster: string): string {
  checkClusterName(cluster);
  // A local location is named by its absolute path; a URL (s3://…) as written.
  const dir = localDirectory(location);
  const key = dir === undefined ? location : path.resolve(dir);
  return path.join(stateDir, 'spool', createHash('sha256').update(key).digest('hex').slice(0, 16), cluster);
}

export type SpoolRecord =
  | { readonly kind: 'ok'; readonly fingerprint: string }
  | { readonly kind: 'error'; readonly fingerprint: string | undefined; readonly code: ErrorCode; readonly message: string; readonly hint: string | undefined; readonly time: string | undefined; readonly pid: number | undefined };

export interface SpoolBinding {
  readonly instance: string;
  readonly id: string | undefined;
}

export class Spool {
  private keyBytes: Buffer | undefined;

  constructor(readonly dir: string) {}

  /**
   * Create the directory (0700) when missing and make sure it can be trusted: a directory, owned by
   * this user, writable by nobody else. PERMISSION_DENIED otherwise (nothing is read from it).
   */
  open(): this {
    try {
      fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw fsError(err, 'create the async archiving spool', this.dir);
    }
    let st: fs.Stats;
    try {
      st = fs.lstatSync(this.dir);
    } catch (err) {
      throw fsError(err, 'inspect the async archiving spool', this.dir);
    }
    const uid = process.getuid?.();
    if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o022) !== 0) {
      throw new HoldfastError('PERMISSION_DENIED', `the async archiving spool ${this.dir} is not a private directory of this user (owner uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)})`, {
        path: this.dir,
        hint: 'Its records decide what counts as archived: it must be a directory owned by the user running archive-push and writable only by it (chmod 700). Fix or remove it (HOLDFAST_STATE_DIR sets where it lives).',
      });
    }
    return this;
  }

  path(name: string): string {
    return path.join(this.dir, name);
  }

  binding(): SpoolBinding | undefined {
    let text: string;
    try {
      text = fs.readFileSync(this.path('repository'), 'utf8');
    } catch {
      return undefined;
    }
    const [instance, id] = text.trim().split(/\s+/);
    if (!instance || !/^[0-9a-f]{64}$/.test(instance)) return undefined;
    return { instance, id: id && /^[0-9a-f]{1,128}$/.test(id) ? id : undefined };
  }

  /**
   * Bind the spool to a repository instance (and id, when known). Records of another instance
   * are removed first: they speak of a repository that no longer is at this location.
   */
  bind(instance: string, id?: string): SpoolBinding {
    const current = this.binding();
    if (current && current.instance === instance && (id === undefined || current.id === id)) return current;
    if (current?.instance !== instance) this.clearRecords();
    const next = { instance, id: id ?? (current?.instance === instance ? current.id : undefined) };
    this.writeAtomic('repository', `${next.instance}${next.id ? ` ${next.id}` : ''}\n`);
    return next;
  }

  /** Remove every record and request (not the key or the log). */
  clearRecords(): void {
    for (const name of this.names()) {
      if (name.endsWith('.ok') || name.endsWith('.error') || name.endsWith('.want')) unlinkQuietly(this.path(name));
    }
  }

  /** Directory entries, [] when unreadable. */
  names(): string[] {
    try {
      return fs.readdirSync(this.dir);
    } catch {
      return [];
    }
  }

  /** The spool's MAC key, created on first use (whoever creates it first wins a race). */
  key(): Buffer {
    if (this.keyBytes) return this.keyBytes;
    const file = this.path('key');
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const k = fs.readFileSync(file);
        if (k.length === 32) return (this.keyBytes = k);
        fs.rmSync(file, { force: true }); // damaged: records made with it simply stop matching
      } catch (err) {
        if (systemCode(err) !== 'ENOENT') throw fsError(err, 'read the spool key', file);
      }
      const tmp = this.path(`.key.${randomBytes(6).toString('hex')}`);
      try {
        fs.writeFileSync(tmp, randomBytes(32), { mode: 0o600 });
        fs.linkSync(tmp, file); // create-only
      } catch (err) {
        if (systemCode(err) !== 'EEXIST') throw fsError(err, 'create the spool key', file);
      } finally {
        fs.rmSync(tmp, { force: true });
      }
    }
    throw new HoldfastError('STORAGE_IO', `cannot establish the spool key ${file}`, { path: file });
  }

  /**
   * A new fingerprint of the content of `file` as the worker reads it to store it: a tap for
   * storeWal that restarts with each read (with a fresh nonce) and gives the fingerprint of the
   * last one, i.e. of exactly the content stored or found archived.
   */
  fingerprinter(file: string): Fingerprinter {
    return new Fingerprinter(this.key(), file);
  }

  /** A new fingerprint of the content of `walPath` now (an error record's). */
  fingerprintFile(file: string, walPath: string): string {
    const f = this.fingerprinter(file);
    readPieces(walPath, f);
    return f.value();
  }

  /**
   * Whether the content of `walPath` has `fingerprint` (computed with its nonce). Reads the file
   * in 1 MiB pieces into one buffer; read errors are the caller's (as prepareWal reports them).
   */
  matches(file: string, walPath: string, fingerprint: string): boolean {
    const m = FP_RE.exec(fingerprint);
    if (!m) return false;
    const f = new Fingerprinter(this.key(), file, Buffer.from(m[1]!, 'hex'));
    readPieces(walPath, f);
    return f.value() === fingerprint;
  }

  readRecord(file: string): SpoolRecord | undefined {
    let ok: string | undefined;
    try {
      ok = fs.readFileSync(this.path(`${file}.ok`), 'utf8').trim();
    } catch {
      // no success record
    }
    if (ok !== undefined) {
      if (FP_RE.test(ok)) return { kind: 'ok', fingerprint: ok };
      unlinkQuietly(this.path(`${file}.ok`)); // not ours (an older format): worthless
    }
    let raw: string;
    try {
      raw = fs.readFileSync(this.path(`${file}.error`), 'utf8');
    } catch {
      return undefined;
    }
    try {
      const v = JSON.parse(raw) as Record<string, unknown>;
      const code = typeof v['code'] === 'string' && v['code'] in CATALOGUE ? (v['code'] as ErrorCode) : 'INTERNAL';
      const fp = typeof v['fingerprint'] === 'string' && FP_RE.test(v['fingerprint']) ? v['fingerprint'] : undefined;
      return {
        kind: 'error',
        fingerprint: fp,
        code,
        message: typeof v['message'] === 'string' ? v['message'] : `${file}: the async worker failed`,
        hint: typeof v['hint'] === 'string' ? v['hint'] : undefined,
        time: typeof v['time'] === 'string' ? v['time'] : undefined,
        pid: typeof v['pid'] === 'number' ? v['pid'] : undefined,
      };
    } catch {
      unlinkQuietly(this.path(`${file}.error`));
      return undefined;
    }
  }

  writeOk(file: string, fingerprint: string): void {
    unlinkQuietly(this.path(`${file}.error`));
    this.writeAtomic(`${file}.ok`, `${fingerprint}\n`);
    unlinkQuietly(this.path(`${file}.want`));
  }

  writeError(file: string, err: HoldfastError, fingerprint: string | undefined): void {
    const rec = { code: err.code, message: err.message, hint: err.hint, fingerprint: fingerprint ?? null, time: new Date().toISOString(), pid: process.pid };
    this.writeAtomic(`${file}.error`, JSON.stringify(rec) + '\n');
    unlinkQuietly(this.path(`${file}.want`));
  }

  /** Ask the worker to take `file` next (a call waits for it). */
  want(file: string): void {
    try {
      fs.closeSync(fs.openSync(this.path(`${file}.want`), 'a', 0o600));
    } catch {
      // only a priority hint
    }
  }

  /** Remove both records of `file`. */
  remove(file: string): void {
    unlinkQuietly(this.path(`${file}.ok`));
    unlinkQuietly(this.path(`${file}.error`));
  }

  /** Record this process as the spool's live worker, serving `walDir` (absolute). Quiet: only the native front's wait uses it. */
  writeWorker(walDir: string): void {
    const start = processStartTime(process.pid);
    if (start === undefined || walDir.includes('\n')) return;
    try {
      this.writeAtomic('worker', `${WORKER_RECORD} ${process.pid} ${start} ${walDir}\n`);
    } catch {
      // the front then leaves waiting to Node
    }
  }

  /** Remove the worker record if it is this process's. */
  clearWorker(): void {
    try {
      const [tag, pid] = fs.readFileSync(this.path('worker'), 'utf8').split(' ');
      if (tag === WORKER_RECORD && Number(pid) === process.pid) fs.rmSync(this.path('worker'), { force: true });
    } catch {
      // none
    }
  }

  /** Open the worker log for appending (rotated when large); returns its descriptor. */
  openLog(): number {
    const log = this.path(WORKER_LOG);
    try {
      if (fs.statSync(log).size > LOG_ROTATE_BYTES) fs.renameSync(log, `${log}.1`);
    } catch {
      // no log yet
    }
    return fs.openSync(log, 'a', 0o600);
  }

  /** Write `name` in the spool: a temporary name, then renamed (not fsynced). */
  writeAtomic(name: string, text: string | Buffer): void {
    const tmp = this.path(`.${name}.${randomBytes(6).toString('hex')}`);
    try {
      fs.writeFileSync(tmp, text, { mode: 0o600 });
      fs.renameSync(tmp, this.path(name));
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw fsError(err, 'write', this.path(name));
    }
  }
}

const WORKER_RECORD = 'holdfast-worker-v1';

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or undefined. */
function processStartTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const start = fields[19]; // fields[0] is field 3 (state)
    return start && /^\d+$/.test(start) ? start : undefined;
  } catch {
    return undefined;
  }
}

function header(file: string): Buffer {
  return Buffer.from(`holdfast-spool-v1\0${file}\0`, 'utf8');
}

/** The GMAC fingerprint of one read of a file's content, given piece by piece after `begin`. */
export class Fingerprinter {
  private gmac: CipherGCM | undefined;
  private nonce: Buffer = Buffer.alloc(0);

  /** `nonce`: recompute a fingerprint made with it; else each read gets a fresh one. */
  constructor(
    private readonly key: Buffer,
    private readonly file: string,
    private readonly fixedNonce?: Buffer,
  ) {}

  begin(): void {
    this.nonce = this.fixedNonce ?? randomBytes(12);
    this.gmac = createCipheriv('aes-256-gcm', this.key, this.nonce);
    this.gmac.setAAD(header(this.file));
  }

  update(piece: Buffer): void {
    this.gmac!.setAAD(piece);
  }

  /** The fingerprint of the last read (once it is complete). */
  value(): string {
    if (!this.gmac) throw new Error('Fingerprinter.value() before any read');
    this.gmac.final();
    const tag = this.gmac.getAuthTag();
    this.gmac = undefined;
    return `${FP_PREFIX} ${this.nonce.toString('hex')} ${tag.toString('hex')}`;
  }
}

/** Feed the content of `walPath` to `f` in 1 MiB pieces through one buffer; read errors are the caller's (as prepareWal reports them). */
function readPieces(walPath: string, f: Fingerprinter): void {
  let fd: number;
  try {
    fd = fs.openSync(walPath, 'r');
  } catch (err) {
    throw fsError(err, 'read WAL file', walPath);
  }
  f.begin();
  const buf = Buffer.allocUnsafe(1 << 20);
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      f.update(buf.subarray(0, n));
    }
  } catch (err) {
    throw fsError(err, 'read WAL file', walPath);
  } finally {
    fs.closeSync(fd);
  }
}

/** Identifies a repository instance without its key: the SHA-256 of its stored (encrypted) config object. */
export async function repositoryInstance(location: string, settings?: StorageSettings): Promise<string> {
  const backend = await openBackend(location, settings);
  try {
    return createHash('sha256').update(await backend.get('config')).digest('hex');
  } catch (err) {
    if (isNotFound(err)) throw new HoldfastError('REPO_NOT_FOUND', `no holdfast repository at ${backend.location}`, { location: backend.location });
    throw storageError(err, backend.location);
  } finally {
    await backend.close();
  }
}

function storageError(err: unknown, location: string): HoldfastError {
  if (err instanceof HoldfastError) return err;
  const kind = (err as { kind?: string }).kind;
  const msg = err instanceof Error ? err.message : String(err);
  if (kind === 'permission') return new HoldfastError('PERMISSION_DENIED', msg, { location }, { cause: err });
  return new HoldfastError('STORAGE_IO', msg, { location }, { cause: err });
}

/** What the fast path learnt when it could not answer. */
export interface SpoolMiss {
  readonly spool: Spool;
  readonly file: string;
  readonly binding: SpoolBinding;
}

/** Why a call archives its file itself; `warn` when that is a problem to fix. */
export interface SyncReason {
  readonly sync: string;
  readonly warn: boolean;
}

/**
 * The fast path of an async call: 'archived' when the spool records `walPath`'s current content as
 * durable in this repository, a SpoolMiss when the worker has to be asked, `{ sync }` (with the
 * reason) when the file is to be archived synchronously: a name PostgreSQL would not archive (the
 * synchronous path reports it), or a spool that cannot be used. A failure the worker recorded for
 * this content is thrown (and consumed, so that the next call tries again). An unreachable
 * repository fails here, before anything else.
 */
export async function answerFromSpool(spoolDir: string, location: string, walPath: string, settings?: StorageSettings): Promise<'archived' | SpoolMiss | SyncReason> {
  const file = path.basename(walPath);
  if (!parseWalName(file)) return { sync: 'not a WAL file name', warn: false };
  const instance = await repositoryInstance(location, settings);
  let spool: Spool;
  let binding: SpoolBinding;
  try {
    spool = new Spool(spoolDir).open();
    binding = spool.bind(instance);
    spool.key();
  } catch (err) {
    if (!(err instanceof HoldfastError)) throw err;
    return { sync: `the spool cannot be used: ${err.message}`, warn: true };
  }
  if (consumeRecord(spool, file, walPath) === 'archived') return 'archived';
  return { spool, file, binding };
}

/**
 * Check the record of `file` against the content of `walPath`: 'archived' when a success record
 * matches (it stays: it remains true, and the worker removes it once the file is no longer ready),
 * undefined when there is none or it does not match (then it is removed). A matching error record
 * is consumed, so that the next call tries again, and thrown.
 */
export function consumeRecord(spool: Spool, file: string, walPath: string): 'archived' | undefined {
  const rec = spool.readRecord(file);
  if (!rec) return undefined;
  if (rec.kind === 'ok') {
    if (spool.matches(file, walPath, rec.fingerprint)) return 'archived';
    unlinkQuietly(spool.path(`${file}.ok`));
    return undefined;
  }
  unlinkQuietly(spool.path(`${file}.error`));
  if (rec.fingerprint !== undefined && !spool.matches(file, walPath, rec.fingerprint)) return undefined;
  throw new HoldfastError(rec.code, rec.message, { file, asyncWorker: rec.pid ?? true, at: rec.time, ...(rec.hint ? { hint: rec.hint } : {}) });
}

function unlinkQuietly(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch {
    // already gone
  }
}
