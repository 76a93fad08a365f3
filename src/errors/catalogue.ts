/**
 * The one error catalogue of holdfast.
 *
 * Every failure a user can see has a stable `code`, a stable process exit code, a retryable flag
 * and a hint that says what to do. Errors carry structured `data` and an optional `cause`, and
 * serialise with `toJSON()`. They are turned into messages and exit codes in exactly one place:
 * `src/cli/main.ts`. This module imports nothing from the rest of holdfast, so every layer may use
 * it.
 *
 * Exit codes are part of the public interface (scripts and archive_command depend on them):
 * never renumber an entry, only add new ones.
 */

export interface ErrorSpec {
  /** Process exit code. 1 means only "no such WAL file" (archive-get), as PostgreSQL expects. */
  readonly exit: number;
  /** True when repeating the same operation later may succeed without a human doing anything. */
  readonly retryable: boolean;
  /** What the user should do. */
  readonly hint: string;
}

export const CATALOGUE = {
  INTERNAL: { exit: 70, retryable: false, hint: 'This is a bug in holdfast. Please report it with the output of the command run with --log-level debug.' },
  WAL_NOT_FOUND: { exit: 1, retryable: false, hint: 'The repository has no such WAL file; for restore_command this is the normal end of archive recovery.' },
  USAGE: { exit: 2, retryable: false, hint: 'Run the command with --help to see its arguments and options.' },
  CONFIG_INVALID: { exit: 3, retryable: false, hint: 'Fix the named option in the config file, environment variable or flag; `holdfast help config` lists every option.' },
  REPO_NOT_FOUND: { exit: 10, retryable: false, hint: 'Check --repo / HOLDFAST_REPO, or create a repository there with `holdfast init`.' },
  LOCKED: { exit: 11, retryable: true, hint: 'Another holdfast process holds a conflicting lock; wait for it to finish (or pass --lock-wait DURATION), then run the command again. `holdfast locks` lists locks.' },
  WRONG_PASSWORD: { exit: 12, retryable: false, hint: 'No key of this repository opens with the given password. Check HOLDFAST_PASSWORD / --password-file, or `holdfast key list` with a working password.' },
  REPO_EXISTS: { exit: 13, retryable: false, hint: 'A repository already exists at that location; use it, or choose an empty location for a new one.' },
  INTEGRITY: { exit: 14, retryable: false, hint: 'A stored object failed verification. Run `holdfast check --read-data` to see what is affected.' },
  OBJECT_MISSING: { exit: 15, retryable: false, hint: 'An object the repository refers to is missing from storage. Run `holdfast check` to see what is affected.' },
  PERMISSION_DENIED: { exit: 16, retryable: false, hint: 'Check the ownership and mode of the named path, and which user runs holdfast.' },
  SNAPSHOT_NOT_FOUND: { exit: 17, retryable: false, hint: 'Run `holdfast snapshots` to list snapshot ids; `latest` and unique id prefixes are accepted.' },
  UNSAFE_PATH: { exit: 18, retryable: false, hint: 'The snapshot contains a path that would leave the restore target. The repository may be corrupt or crafted; nothing outside the target was written.' },
  STORAGE_IO: { exit: 19, retryable: true, hint: 'The storage failed to read or write. Check the disk or mount holding the repository, then run the command again.' },
  FORMAT_UNSUPPORTED: { exit: 20, retryable: false, hint: 'The repository was written by a newer holdfast; upgrade holdfast to read it.' },
  SOURCE_UNREADABLE: { exit: 21, retryable: false, hint: 'Some source files could not be read; the snapshot was saved without them. Check the listed paths.' },
  TARGET_NOT_EMPTY: { exit: 22, retryable: false, hint: 'Restore into an empty or new directory, or pass --force to overwrite files in place.' },
  CHECK_FAILED: { exit: 23, retryable: false, hint: 'The repository has the problems listed above. Back up again to a healthy repository if data is missing.' },
  TARGET_CONFLICT: { exit: 25, retryable: false, hint: 'Something in the restore target stands where the snapshot has an entry of another kind (a directory where it has a file, or a file where it has a directory). Move it away or restore into an empty directory.' },
  TARGET_IO: { exit: 26, retryable: true, hint: 'Writing the restore target failed. Check free space and the filesystem holding the target, then run the restore again (--force to overwrite what was already written).' },
  WAL_INVALID: { exit: 27, retryable: false, hint: 'The file is not a PostgreSQL WAL, history or backup history file holdfast accepts (wrong name, damaged or renamed). Nothing was stored.' },
  CLUSTER_MISMATCH: { exit: 28, retryable: false, hint: 'This WAL belongs to another PostgreSQL cluster than the one this repository binds to --cluster (another system identifier, major version or segment size). Check --cluster and the repository; after initdb or pg_upgrade use a new cluster name. Nothing was stored.' },
  WAL_CONFLICT: { exit: 29, retryable: false, hint: 'A WAL file with this name but different content is already archived; the stored copy was left untouched. Two clusters may be archiving into the same --cluster name.' },
  ARCHIVE_TIMEOUT: { exit: 30, retryable: true, hint: 'The WAL this backup needs did not reach the repository in time. Check that archive_command runs `holdfast pg archive-push` for this repository and --cluster (`holdfast pg check`), and the server log for archive failures; or raise --archive-timeout.' },
  PG_ERROR: { exit: 31, retryable: false, hint: 'PostgreSQL refused a request; see its message. The backup user needs the right to run pg_backup_start/pg_backup_stop (superuser, or granted EXECUTE on them).' },
  PG_RUNNING: { exit: 32, retryable: false, hint: 'A PostgreSQL server is running in the restore target (postmaster.pid names a live process). Stop it first; restoring under a running server would corrupt it.' },
  PG_CHECK_FAILED: { exit: 33, retryable: false, hint: 'pg check found problems: the items marked FAIL (status "fail" with --json). Fix each as its message says (postgresql.conf changes to wal_level and archive_mode need a restart; archive_command needs a reload), then run `holdfast pg check` again.' },
  PAGES_CORRUPT: { exit: 34, retryable: false, hint: 'PostgreSQL data pages failed their checksums while being backed up: the damage is in the running cluster, not the repository. The backup was stored and flagged (see `holdfast pg info`); check the listed relation files with pg_amcheck and restore them from an older backup if needed.' },
  LOCK_LOST: { exit: 35, retryable: true, hint: 'This operation lost its lock (removed by another process, or its heartbeat could not be refreshed within --lock-ttl, e.g. because the storage hung) and stopped before committing anything. Run it again; if it recurs, check the storage and raise --lock-ttl.' },
  LOCK_DIR: { exit: 36, retryable: true, hint: 'The local lock directory cannot be used (removed, remounted, read-only or failing). Check it, or point --lock-dir / HOLDFAST_LOCK_DIR at a local directory such as /run/holdfast.' },
  PG_STANDBY: { exit: 37, retryable: false, hint: 'holdfast takes backups from the primary (leader) only: a standby cannot force the WAL switch the backup must wait for, and its archive is the leader\'s. Point PGHOST/PGPORT (or --pg-url) at the primary; with Patroni, `patronictl list` names the leader.' },
  KEY_IN_USE: { exit: 24, retryable: false, hint: 'A repository must keep at least one key, and you cannot remove the key you opened it with; add another key first or open with a different password.' },
  INTERRUPTED: { exit: 130, retryable: true, hint: 'The operation was interrupted; nothing partial was committed. Run it again.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof CATALOGUE;

export class HoldfastError extends Error {
  readonly code: ErrorCode;
  readonly data: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, data: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HoldfastError';
    this.code = code;
    this.data = data;
  }

  get exitCode(): number {
    return CATALOGUE[this.code].exit;
  }

  get retryable(): boolean {
    return CATALOGUE[this.code].retryable;
  }

  get hint(): string {
    return typeof this.data['hint'] === 'string' ? this.data['hint'] : CATALOGUE[this.code].hint;
  }

  toJSON(): Record<string, unknown> {
    const cause = this.cause instanceof Error ? this.cause.message : this.cause;
    return { code: this.code, exitCode: this.exitCode, message: this.message, hint: this.hint, retryable: this.retryable, data: this.data, ...(cause === undefined ? {} : { cause }) };
  }
}

export function isHoldfastError(err: unknown, code?: ErrorCode): err is HoldfastError {
  return err instanceof HoldfastError && (code === undefined || err.code === code);
}

/** Node system error with errno/code, as thrown by node:fs. */
export interface SystemError extends Error {
  code?: string;
  errno?: number;
  path?: string;
  syscall?: string;
}

export function systemCode(err: unknown): string | undefined {
  return err instanceof Error ? (err as SystemError).code : undefined;
}

/**
 * Turn a filesystem error met while reading sources or writing restore targets into the catalogue.
 * Permission problems get their own code; everything else is a storage/IO error.
 */
export function fsError(err: unknown, what: string, path: string, ioCode: 'STORAGE_IO' | 'TARGET_IO' = 'STORAGE_IO'): HoldfastError {
  if (err instanceof HoldfastError) return err;
  const code = systemCode(err);
  if (code === 'EACCES' || code === 'EPERM') {
    return new HoldfastError('PERMISSION_DENIED', `permission denied: cannot ${what} ${path}`, { path, errno: code }, { cause: err });
  }
  const msg = err instanceof Error ? err.message : String(err);
  return new HoldfastError(ioCode, `cannot ${what} ${path}: ${msg}`, { path, errno: code }, { cause: err });
}
