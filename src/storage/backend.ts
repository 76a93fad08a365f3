/**
 * The storage interface every holdfast driver implements (local filesystem, in-memory, and later
 * S3 and SFTP), and every wrapper (concurrency limit, retry, fault injection) implements too.
 *
 * Contract
 * --------
 * Names are relative, '/'-separated paths such as `data/ab/ab12…` or `keys/4f…`. A name never
 * starts with '/', never contains '..' or empty segments; drivers reject such names with
 * `StorageError('invalid')`. The repository layer chooses names; storage knows nothing of their
 * meaning and imports nothing from the repository.
 *
 * - `put(name, data)` stores the whole object atomically: a reader sees either no object or the
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
 * - `delete(name)` removes the object; deleting a missing object is not an error.
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
  put(name: string, data: Uint8Array, options?: PutOptions): Promise<void>;
  get(name: string, range?: ByteRange): Promise<Buffer>;
  stat(name: string): Promise<ObjectInfo>;
  list(prefix: string): AsyncIterable<ObjectInfo>;
  delete(name: string): Promise<void>;
  close(): Promise<void>;
}

export interface Capabilities {
  /** `put(…, {createOnly:true})` is atomic against concurrent writers (O_EXCL/link, If-None-Match). */
  readonly conditionalCreate: boolean;
  /** Requests the driver can usefully run at once; wrappers bound concurrency to this. */
  readonly maxConcurrency: number;
  /** Data survives the process and the machine (false for the in-memory driver). */
  readonly persistent: boolean;
}

export interface PutOptions {
  readonly createOnly?: boolean;
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

  constructor(kind: StorageErrorKind, location: string, objectName: string, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StorageError';
    this.kind = kind;
    this.objectName = objectName;
    this.location = location;
  }

  get permanent(): boolean {
    return this.kind !== 'transient' && this.kind !== 'io';
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof StorageError && err.kind === 'not-found';
}

/** Validate a storage name against the contract; shared by all drivers. */
export function checkName(location: string, name: string, allowPrefix = false): void {
  if (allowPrefix && name === '') return;
  const bad =
    (allowPrefix && !name.endsWith('/')) ||
    name.startsWith('/') ||
    name.includes('\\') ||
    name.includes('\0') ||
    (!allowPrefix && (name === '' || name.endsWith('/'))) ||
    name.split('/').some((seg, i, all) => seg === '..' || seg === '.' || (seg === '' && !(allowPrefix && i === all.length - 1)));
  if (bad) throw new StorageError('invalid', location, name, `invalid storage name ${JSON.stringify(name)}`);
}
