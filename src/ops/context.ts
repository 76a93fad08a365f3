/** What every operation receives from its caller (CLI today; daemon and web API later). */
import type { Logger } from '../ui/output.js';
import type { StorageSettings } from '../storage/settings.js';

export interface OpContext {
  readonly log: Logger;
  /** Draw live progress on stderr. */
  readonly progress: boolean;
  readonly signal?: AbortSignal | undefined;
  /** Lock options (--lock-dir, --lock-wait, …); defaults when absent. */
  readonly locks?: LockSettings | undefined;
}

export interface RepoRef {
  readonly location: string;
  readonly password: string;
  /** Where to cache derived keys (set only when the password comes from a file). */
  readonly keyCacheDir?: string | undefined;
  /** Storage driver settings (S3 endpoint, SFTP keys, …) beyond what the location says. */
  readonly storage?: StorageSettings | undefined;
}

export interface LockSettings {
  /** Local lock directory (default: defaultLockDir() in locks/local.ts). */
  readonly lockDir?: string | undefined;
  /** How long to retry while a live lock conflicts. */
  readonly waitMs: number;
  /** Repository lock heartbeat TTL. */
  readonly ttlMs: number;
  /** Repository lock heartbeat interval (at most ttlMs / 2). */
  readonly refreshMs: number;
  /** Remove stale repository locks when acquiring. */
  readonly removeStale: boolean;
}

export const DEFAULT_LOCK_SETTINGS: LockSettings = { waitMs: 0, ttlMs: 5 * 60_000, refreshMs: 60_000, removeStale: true };
