/**
 * The storage interface every holdfast driver implements (local filesystem, in-memory, and later
 * S3 and SFTP), and every wrapper (concurrency limit, retry, fault injection) implements too.
 *
 * Contract
 * --------
 * Names are relative, '/'-separated paths such as `data/ab/ab12…` or `keys/4f…`. A name never
 * starts with '/', never contains '..' or empty segments, and no segment starts with `.tmp-`
 * (reserved for drivers' temporary objects); drivers reject such names with
 * `StorageError('invalid')`. The repository layer chooses names; storage knows nothing of their
 * meaning and imports nothing from the repository.
 *
 * - `put(name, data)` stores the whole object atomically (`data` may be one buffer or a list of
 *   buffers written back to back, so callers need not concatenate large objects): a reader sees either no object or the
 *   complete new one, never a prefix. When `put` resolves the object is durable (fsynced file and
 *   directory on local disk; acknowledged by the server on remote stores). With
 *   `{ createOnly: true }` the put fails with `StorageError('exists')` if the name already exists,
 *   and two concurrent createOnly puts of the same name cannot both succeed where
 *   `capabilities.conditionalCreate` is true. Without createOnly an existing object is replaced.
 *   A put is idempotent: repeating it with the same bytes is safe, so it may be retried.
 * - `get(name, range?)` returns the object's bytes, or exactly `range.length` bytes from
 *   `range.offset`. A missing object is `StorageError('not-found')`; a range that reaches past
 *   the end is `StorageError('short-read')` (a truncated object), never a shorter buffer.
 * - `stat(name)` returns the size, or `not-found`.
 * - `list(prefix)` yields every object below `prefix`, which is '' (everything) or a directory
 *   prefix ending in '/' such as `snapshots/`, in no particular order, with sizes. Temporary files a crashed writer left
 *   behind are never listed.
 * - `delete(name)` removes the object; deleting a missing object is not an error. Once it resolves
 *   the removal is durable, unless `{ durable: false }` was given.
 * - `{ durable: false }` on `put` or `delete` lets the driver skip the durability step (fsync):
 *   the change is still atomic and visible to every later call, but a crash of the machine may
 *   undo it or leave an empty or unreadable object. Only for objects whose loss in a crash is
 *   harmless (lock objects: their holder died in that crash too).
 * - `openWriter()` returns an `ObjectWriter` for an object whose name is known only at the end
 *   (packs are named by their hash): `write` appends bytes in call order, `commit(name)` makes the
 *   whole object durable under `name` with the same atomicity and createOnly semantics as `put`,
 *   `abort` discards it. Nothing is visible before `commit` resolves. Drivers that cannot stream
 *   use `BufferedWriter`, which collects the parts and calls `put`.
 * - `close()` releases connections; the backend must not be used afterwards.
 *
 * Errors: every failure is a `StorageError` with a `kind`. `not-found`, `exists`, `short-read`,
 * `invalid` and `permission` are permanent (retrying will not help). `transient` errors may be
 * retried by a wrapper; `io` errors are not retried automatically but may succeed later.
 */
export interface Backend {
  /** Human-readable location, used in messages (`/srv/repo`, `s3://bucket/prefix`). */
  readonly location: string;
  readonly capabilities: Capabilities;
  put(name: string, data: PutData, options?: PutOptions): Promise<void>;
  get(name: string, range?: ByteRange): Promise<Buffer>;
  stat(name: string): Promise<ObjectInfo>;
  list(prefix: string): AsyncIterable<ObjectInfo>;
  delete(name: string, options?: DeleteOptions): Promise<void>;
  openWriter(): Promise<ObjectWriter>;
  close(): Promise<void>;
  /**
   * Backends made of several storages (multi.ts): fail unless every storage is usable. Operations
   * that delete call it first (docs/design.md §19); single storages do not have it.
   */
  requireAllAlive?(): Promise<void>;
}

export interface ObjectWriter {
  write(parts: readonly Uint8Array[]): Promise<void>;
  commit(name: string, options?: PutOptions): Promise<void>;
  abort(): Promise<void>;
}

/** ObjectWriter for drivers without streaming writes: collects parts in memory, then `put`s them. */
export class BufferedWriter implements ObjectWriter {
  private parts: Uint8Array[] = [];
  constructor(private readonly backend: Backend) {}

  async write(parts: readonly Uint8Array[]): Promise<void> {
    // Copy: the caller may reuse its buffers once write() resolved.
    for (const p of parts) this.parts.push(Uint8Array.prototype.slice.call(p));
  }

  async commit(name: string, options?: PutOptions): Promise<void> {
    await this.backend.put(name, this.parts, options);
    this.parts = [];
  }

  async abort(): Promise<void> {
    this.parts = [];
  }
}

export interface Capabilities {
  /** `put(…, {createOnly:true})` is atomic against concurrent writers (O_EXCL/link, If-None-Match). */
  readonly conditionalCreate: boolean;
  /** Requests the driver can usefully run at once; wrappers bound concurrency to this. */
  readonly maxConcurrency: number;
  /** Data survives the process and the machine (false for the in-memory driver). */
  readonly persistent: boolean;
}

export type PutData = Uint8Array | readonly Uint8Array[];

export function putParts(data: PutData): readonly Uint8Array[] {
  return data instanceof Uint8Array ? [data] : data;
}

export function putSize(data: PutData): number {
  let n = 0;
  for (const p of putParts(data)) n += p.byteLength;
  return n;
}

export interface PutOptions {
  readonly createOnly?: boolean;
  /** false: atomic and visible, but not made durable (see the contract). Default true. */
  readonly durable?: boolean;
}

export interface DeleteOptions {
  /** false: the removal need not survive a machine crash. Default true. */
  readonly durable?: boolean;
}

export interface ByteRange {
  readonly offset: number;
  readonly length: number;
}

export interface ObjectInfo {
  readonly name: string;
  readonly size: number;
}

export type StorageErrorKind = 'not-found' | 'exists' | 'short-read' | 'invalid' | 'permission' | 'transient' | 'io';

export class StorageError extends Error {
  readonly kind: StorageErrorKind;
  readonly objectName: string;
  readonly location: string;
  /** What the user should do, when the driver knows better than the generic hint of the kind. */
  readonly hint: string | undefined;

  constructor(kind: StorageErrorKind, location: string, objectName: string, message: string, options?: { cause?: unknown; hint?: string | undefined }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StorageError';
    this.kind = kind;
    this.objectName = objectName;
    this.location = location;
    this.hint = options?.hint ?? (options?.cause instanceof StorageError ? options.cause.hint : undefined);
  }

  get permanent(): boolean {
    return this.kind !== 'transient' && this.kind !== 'io';
  }
}

/**
 * A read found nothing on the storages that answered while another storage could not be asked
 * (multi.ts): the object may well be there. Callers that only look for an object to avoid storing
 * it twice (archive-push) may go on; everything else treats it as the storage failure it is.
 */
export class UncertainAbsenceError extends StorageError {}

/** Whether `err` (or an error it was made from) is an UncertainAbsenceError. */
export function isUncertainAbsence(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof UncertainAbsenceError) return true;
  }
  return false;
}

/** Every entry of a listing, gathered (wrappers that hold a slot or retry a listing as a whole). */
export async function listWhole(backend: Backend, prefix: string): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const o of backend.list(prefix)) out.push(o);
  return out;
}

export function isNotFound(err: unknown): boolean {
  return err instanceof StorageError && err.kind === 'not-found';
}

/** Names with a segment starting with this are reserved for drivers' temporary objects. */
export const RESERVED_PREFIX = '.tmp-';

/** Validate a storage name against the contract; shared by all drivers. */
export function checkName(location: string, name: string, allowPrefix = false): void {
  if (allowPrefix && name === '') return;
  const bad =
    (allowPrefix && !name.endsWith('/')) ||
    name.startsWith('/') ||
    name.includes('\\') ||
    name.includes('\0') ||
    (!allowPrefix && (name === '' || name.endsWith('/'))) ||
    name.split('/').some((seg, i, all) => seg === '..' || seg === '.' || seg.startsWith(RESERVED_PREFIX) || (seg === '' && !(allowPrefix && i === all.length - 1)));
  if (bad) throw new StorageError('invalid', location, name, `invalid storage name ${JSON.stringify(name)}`);
}
