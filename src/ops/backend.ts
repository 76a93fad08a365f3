/**
 * Open storage from a location string. Apart from ops/repo.ts so that callers that only read an
 * object (archive-push --async answering from its spool) do not load the repository code.
 */
import * as path from 'node:path';
import { HoldfastError } from '../errors/catalogue.js';
import type { Backend } from '../storage/backend.js';
import type { StorageSettings } from '../storage/settings.js';
import { LocalBackend } from '../storage/local.js';
import { SftpBackend } from '../storage/sftp.js';
import { LimitBackend } from '../storage/limit.js';
import { CrashBackend, crashSettingsFromEnv } from '../storage/crash.js';

/** The directory of a local location (a path or file:///path); undefined for other schemes. */
export function localDirectory(location: string): string | undefined {
  if (location.startsWith('file://')) return decodeURIComponent(location.slice('file://'.length));
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) return undefined;
  return location;
}

/** The storage at `location` (a path, file://, sftp://user@host:port/path, and later s3:// URLs). */
export function openBackend(location: string, settings: StorageSettings = {}): Backend {
  const dir = localDirectory(location);
  if (dir === undefined && /^sftp:\/\//i.test(location)) return wrap(new SftpBackend(location, settings.sftp ?? {}));
  if (dir === undefined) {
    const scheme = location.slice(0, location.indexOf(':'));
    throw new HoldfastError('CONFIG_INVALID', `repository location ${location}: storage type "${scheme}" is not supported by this version`, {
      location,
      hint: 'Use a local directory path, file:///path or sftp://USER@HOST[:PORT]/PATH. S3 storage is planned.',
    });
  }
  if (dir === '') throw new HoldfastError('CONFIG_INVALID', 'repository location is empty', { hint: 'Set --repo or HOLDFAST_REPO.' });
  return wrap(new LocalBackend(path.resolve(dir)));
}

/** The wrappers every driver gets: the concurrency limit, and crash injection in tests. */
function wrap(driver: Backend): Backend {
  const backend = new LimitBackend(driver);
  const crash = crashSettingsFromEnv();
  return crash ? new CrashBackend(backend, crash) : backend;
}
