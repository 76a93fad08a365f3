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
import { S3Backend, parseS3Location } from '../storage/s3.js';
import { LimitBackend } from '../storage/limit.js';
import { CrashBackend, crashSettingsFromEnv } from '../storage/crash.js';
import { DEFAULT_RETRY, RetryBackend } from '../storage/retry.js';
import { MultiBackend } from '../storage/multi.js';
import { FileStatusCache } from '../state/storage-status.js';
import { defaultStateDir } from '../state/key-cache.js';

/** The directory of a local location (a path or file:///path); undefined for other schemes. */
export function localDirectory(location: string): string | undefined {
  if (location.startsWith('file://')) return decodeURIComponent(location.slice('file://'.length));
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) return undefined;
  return location;
}

/**
 * The storage at `location` (a path, file://, s3://bucket/prefix or sftp://user@host:port/path),
 * or, with secondary storages, all of them behind one MultiBackend (failover or replicate, with
 * the status cache shared by the host's processes; docs/design.md §19).
 */
export function openBackend(location: string, settings: StorageSettings = {}): Backend {
  const secondaries = settings.secondaries ?? [];
  if (secondaries.length === 0) return openOne(location, settings);
  const all = [location, ...secondaries];
  const twice = all.find((l, i) => all.indexOf(l) !== i);
  if (twice !== undefined) throw new HoldfastError('CONFIG_INVALID', `storage ${twice} is listed twice (--repo and --repo-secondary)`, { option: 'repo-secondary' });
  return new MultiBackend(
    all.map((l) => ({ location: l, backend: openOne(l, settings) })),
    { mode: settings.mode ?? 'failover', quorum: settings.quorum, statusTtlMs: settings.statusTtlMs ?? 60_000, probeTimeoutMs: settings.probeTimeoutMs ?? 5_000, log: (m) => settings.log?.('warn', m) },
    new FileStatusCache(settings.stateDir ?? defaultStateDir(), (m) => settings.log?.('debug', m)),
  );
}

/** One storage: remote drivers behind the retry wrapper (their own transient errors and hangs). */
function openOne(location: string, settings: StorageSettings): Backend {
  const dir = localDirectory(location);
  const retried = (driver: Backend): Backend =>
    new RetryBackend(driver, settings.retry ?? DEFAULT_RETRY, { onRetry: (op, name, attempt, delay, err) => settings.log?.('debug', `${op} ${name} on ${driver.location}: attempt ${attempt} failed (${(err as Error).message}); retrying in ${delay} ms`) });
  if (dir === undefined && /^s3:\/\//i.test(location)) return retried(wrap(openS3(location, settings)));
  if (dir === undefined && /^sftp:\/\//i.test(location)) return retried(wrap(new SftpBackend(location, settings.sftp ?? {})));
  if (dir === undefined) {
    const scheme = location.slice(0, location.indexOf(':'));
    throw new HoldfastError('CONFIG_INVALID', `repository location ${location}: storage type "${scheme}" is not supported by this version`, {
      location,
      hint: 'Use a local directory path, file:///path, s3://BUCKET/PREFIX or sftp://USER@HOST[:PORT]/PATH.',
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

function openS3(location: string, settings: StorageSettings): Backend {
  const parsed = parseS3Location(location);
  if ('error' in parsed) throw new HoldfastError('CONFIG_INVALID', `repository location ${location}: ${parsed.error}`, { location, hint: 'Write S3 locations as s3://BUCKET or s3://BUCKET/PREFIX; the endpoint and region are options (--s3-endpoint, --s3-region).' });
  const s3 = settings.s3 ?? {};
  if (s3.endpoint !== undefined && !/^https?:\/\/[^/]+/i.test(s3.endpoint)) {
    throw new HoldfastError('CONFIG_INVALID', `S3 endpoint ${s3.endpoint} is not an http:// or https:// URL`, { option: 's3-endpoint', hint: 'Give the service URL, e.g. --s3-endpoint https://s3.example.com or http://127.0.0.1:9000.' });
  }
  if (s3.sseKmsKeyId !== undefined && !(s3.sse ?? '').startsWith('aws:kms')) {
    throw new HoldfastError('CONFIG_INVALID', '--s3-sse-kms-key-id needs --s3-sse aws:kms', { option: 's3-sse-kms-key-id', hint: 'Add --s3-sse aws:kms (or HOLDFAST_S3_SSE=aws:kms), or drop the key id.' });
  }
  // One attempt per request, its socket timing out with --storage-timeout: a request the retry
  // wrapper gave up on must not live on (holding a connection slot) while it retries.
  return new S3Backend(location, s3, { maxAttempts: 1, socketTimeoutMs: (settings.retry ?? DEFAULT_RETRY).requestTimeoutMs });
}
