/**
 * Open storage from a location string. Apart from ops/repo.ts so that callers that only read an
 * object (archive-push --async answering from its spool) do not load the repository code. Only
 * the local driver is loaded up front: remote drivers, the retry wrapper and several-storage
 * support are imported when a location needs them (archive-push on a local repository starts once
 * per WAL segment and pays for every module it loads).
 */
import * as path from 'node:path';
import { HoldfastError } from '../errors/catalogue.js';
import type { Backend } from '../storage/backend.js';
import type { StorageSettings } from '../storage/settings.js';
import { LocalBackend } from '../storage/local.js';
import { LimitBackend } from '../storage/limit.js';
import { CrashBackend, crashSettingsFromEnv } from '../storage/crash.js';

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
export async function openBackend(location: string, settings: StorageSettings = {}): Promise<Backend> {
  const secondaries = settings.secondaries ?? [];
  if (secondaries.length === 0) return openOne(location, settings);
  const all = [location, ...secondaries];
  const twice = all.find((l, i) => all.indexOf(l) !== i);
  if (twice !== undefined) throw new HoldfastError('CONFIG_INVALID', `storage ${twice} is listed twice (--repo and --repo-secondary)`, { option: 'repo-secondary' });
  const [{ MultiBackend }, { FileStatusCache }, { defaultStateDir }] = await Promise.all([import('../storage/multi.js'), import('../state/storage-status.js'), import('../state/key-cache.js')]);
  return new MultiBackend(
    await Promise.all(all.map(async (l) => ({ location: l, backend: await openOne(l, settings) }))),
    { mode: settings.mode ?? 'failover', quorum: settings.quorum, statusTtlMs: settings.statusTtlMs ?? 60_000, probeTimeoutMs: settings.probeTimeoutMs ?? 5_000, log: (m) => settings.log?.('warn', m) },
    new FileStatusCache(settings.stateDir ?? defaultStateDir(), (m) => settings.log?.('debug', m)),
  );
}

/** One storage: remote drivers behind the retry wrapper (their own transient errors and hangs). */
async function openOne(location: string, settings: StorageSettings): Promise<Backend> {
  const dir = localDirectory(location);
  if (dir !== undefined) {
    if (dir === '') throw new HoldfastError('CONFIG_INVALID', 'repository location is empty', { hint: 'Set --repo or HOLDFAST_REPO.' });
    return wrap(new LocalBackend(path.resolve(dir)));
  }
  const remote = /^s3:\/\//i.test(location) ? 's3' : /^sftp:\/\//i.test(location) ? 'sftp' : undefined;
  if (remote === undefined) {
    const scheme = location.slice(0, location.indexOf(':'));
    throw new HoldfastError('CONFIG_INVALID', `repository location ${location}: storage type "${scheme}" is not supported by this version`, {
      location,
      hint: 'Use a local directory path, file:///path, s3://BUCKET/PREFIX or sftp://USER@HOST[:PORT]/PATH.',
    });
  }
  const { DEFAULT_RETRY, RetryBackend } = await import('../storage/retry.js');
  const retry = { ...DEFAULT_RETRY, ...settings.retry };
  const driver = remote === 's3' ? await openS3(location, settings, retry.requestTimeoutMs) : new (await import('../storage/sftp.js')).SftpBackend(location, settings.sftp ?? {});
  return new RetryBackend(wrap(driver), retry, { onRetry: (op, name, attempt, delay, err) => settings.log?.('debug', `${op} ${name} on ${driver.location}: attempt ${attempt} failed (${(err as Error).message}); retrying in ${delay} ms`) });
}

/** The wrappers every driver gets: the concurrency limit, and crash injection in tests. */
function wrap(driver: Backend): Backend {
  const backend = new LimitBackend(driver);
  const crash = crashSettingsFromEnv();
  return crash ? new CrashBackend(backend, crash) : backend;
}

async function openS3(location: string, settings: StorageSettings, requestTimeoutMs: number): Promise<Backend> {
  const { S3Backend, parseS3Location } = await import('../storage/s3.js');
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
  return new S3Backend(location, s3, { maxAttempts: 1, socketTimeoutMs: requestTimeoutMs });
}
