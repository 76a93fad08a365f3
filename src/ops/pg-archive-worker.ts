/**
 * The background worker of `pg archive-push --async` (docs/design.md §12): one detached process
 * per repository and cluster that archives the files PostgreSQL has marked ready
 * (pg_wal/archive_status/*.ready) ahead of the archive_command calls that ask for them, several at
 * once, and records each outcome in the spool (pg-archive-spool.ts).
 *
 * - At most one runs per repository and cluster: it holds the local lock
 *   `pg-archive-async:<repository id>:<cluster>` for its whole life (a second one exits at once),
 *   and a shared repository lock with a heartbeat while it works.
 * - Files are taken in the order PostgreSQL archives them (timeline history files first, then by
 *   name), `jobs` at a time, never more than `ahead` records waiting for their call. Each is
 *   validated and stored by exactly the code of the synchronous path (prepareWal, storeWal).
 * - `<file>.ok` is written only after storeWal resolved, i.e. after the object is durable; a
 *   failure is recorded as `<file>.error` with its catalogue code and message for that file's
 *   call to report; the call consumes it, and the file is tried again when the next call asks
 *   for it (a `.want` request). A failure that is not
 *   about one file (the repository cannot be opened or locked) is recorded for the file
 *   PostgreSQL asks for first.
 * - It exits after `idleMs` without anything to do, after `lifeMs` in any case (finishing the
 *   files it has started), on SIGTERM/SIGINT, or when it loses a lock. A worker killed at any
 *   moment leaves at worst a file stored without its record: the next call pushes it again and
 *   finds it archived with identical content.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HoldfastError } from '../errors/catalogue.js';
import type { LocalLock } from '../locks/local.js';
import { nativeCompression } from '../repository/compress.js';
import type { Repository } from '../repository/repository.js';
import { parseWalName } from '../wal/names.js';
import type { OpContext, RepoRef } from './context.js';
import { withLocalLock, withRepoLock } from './locking.js';
import { asyncWorkerLock } from './pg-archive-async.js';
import { checkClusterName, prepareWal, storeWal } from './pg-archive.js';
import { Spool, repositoryInstance } from './pg-archive-spool.js';
import { openRepository } from './repo.js';

export interface WorkerOptions {
  readonly spoolDir: string;
  /** The cluster's pg_wal directory (archive_status/ inside it). */
  readonly walDir: string;
  /** Files stored at once. */
  readonly jobs: number;
  /** At most this many records waiting in the spool for their archive_command call. */
  readonly ahead: number;
  /** Exit after this long with nothing to do. */
  readonly idleMs: number;
  /** Exit after this long in any case. */
  readonly lifeMs: number;
  /** How often to look for new ready files while idle. */
  readonly pollMs?: number;
}

export interface WorkerSummary {
  readonly archived: number;
  readonly failed: number;
  readonly exit: 'idle' | 'lifetime' | 'another worker runs' | 'stopped';
}

/**
 * Names of the ready files in `walDir`, in the order PostgreSQL's archiver takes them: timeline
 * history files first, then by name. [] when there is no archive_status directory.
 */
export function readyFiles(walDir: string): string[] {
  let entries: string[];
  try {
    entries = fs.readdirSync(path.join(walDir, 'archive_status'));
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const e of entries) {
    if (!e.endsWith('.ready')) continue;
    const name = e.slice(0, -'.ready'.length);
    if (parseWalName(name)) out.push(name);
  }
  const history = (n: string): number => (n.endsWith('.history') ? 0 : 1);
  return out.sort((a, b) => history(a) - history(b) || (a < b ? -1 : a > b ? 1 : 0));
}

/** Errors that say nothing about a file and are not for a call to report: the waiting call sees the worker gone and acts itself. */
function unrecorded(err: unknown): boolean {
  return err instanceof HoldfastError && (err.code === 'INTERRUPTED' || err.code === 'LOCK_DIR' || err.code === 'LOCK_LOST');
}

function asHoldfast(err: unknown): HoldfastError {
  if (err instanceof HoldfastError) return err;
  return new HoldfastError('INTERNAL', `internal error in the async worker: ${err instanceof Error ? err.message : String(err)}`, {}, { cause: err });
}

/** Run the worker until it is idle, old, stopped or superfluous. */
export async function runArchiveWorker(ref: RepoRef, cluster: string, o: WorkerOptions, ctx: OpContext): Promise<WorkerSummary> {
  checkClusterName(cluster);
  const walDir = path.resolve(o.walDir);
  const spool = new Spool(o.spoolDir).open();
  const log = ctx.log;
  // Segments are compressed in 1 MiB pieces on the thread pool (storeWal), so `jobs` files and
  // the pieces of each use every core; reads, writes and fsyncs overlap.
  const nativeZstd = nativeCompression();
  let repo: Repository;
  let instance: string;
  try {
    instance = await repositoryInstance(ref.location, ref.storage);
    repo = await openRepository(ref, false);
  } catch (err) {
    recordForFirst(spool, walDir, err);
    throw err;
  }
  const at: { phase: 'local lock' | 'repository lock' | 'work' } = { phase: 'local lock' };
  try {
    return await withLocalLock(ctx, asyncWorkerLock(repo.config.id, cluster, ref.location, walDir), async (lock) => {
      at.phase = 'repository lock';
      spool.bind(instance, repo.config.id);
      log.info(`async worker for cluster ${cluster} started (PID ${process.pid}): ${walDir} -> ${ref.location}, ${o.jobs} at a time${nativeZstd ? '' : ' (native zstd helper missing: the zstd binding compresses)'}`);
      spool.writeWorker(path.resolve(walDir));
      try {
        return await withRepoLock(repo, ref.location, ctx, 'shared', 'pg archive-push --async (worker)', (ctx) => {
          at.phase = 'work';
          return work(repo, ref.location, cluster, walDir, spool, instance, lock, o, ctx, ref.storage);
        });
      } finally {
        spool.clearWorker();
      }
    });
  } catch (err) {
    if (at.phase === 'local lock' && err instanceof HoldfastError && err.code === 'LOCKED') {
      log.debug(`another async worker runs: ${err.message}`);
      return { archived: 0, failed: 0, exit: 'another worker runs' };
    }
    if (at.phase !== 'work') recordForFirst(spool, walDir, err); // while working, failures are recorded per file
    throw err;
  } finally {
    await repo.close();
  }
}

/** A failure that is not about one file: record it for the file a call waits for, else the one PostgreSQL asks for first. */
function recordForFirst(spool: Spool, walDir: string, err: unknown): void {
  if (unrecorded(err)) return;
  const names = new Set(spool.names());
  const first = readyFiles(walDir).find((f) => names.has(`${f}.want`)) ?? readyFiles(walDir).find((f) => !names.has(`${f}.ok`));
  if (!first) return;
  try {
    spool.writeError(first, asHoldfast(err), undefined);
  } catch {
    // the waiting call times out and says where the worker's log is
  }
}

async function work(repo: Repository, location: string, cluster: string, walDir: string, spool: Spool, instance: string, lock: LocalLock, o: WorkerOptions, ctx: OpContext, storage: RepoRef['storage']): Promise<WorkerSummary> {
  const log = ctx.log;
  const pollMs = o.pollMs ?? 20;
  const started = Date.now();
  let lastBusy = started;
  let lastCheck = started;
  let archived = 0;
  let failures = 0;
  let exit: WorkerSummary['exit'] = 'stopped';
  const inFlight = new Map<string, Promise<void>>();
  /** Failed in this life: tried again only when a call asks for it (the call after the one that reported it). */
  const failed = new Set<string>();
  let fatal: unknown;

  const push = async (file: string): Promise<void> => {
    const walPath = path.join(walDir, file);
    try {
      const w = prepareWal(walPath);
      // The record's fingerprint is of exactly the content stored (or found archived).
      const tap = spool.fingerprinter(file);
      const r = await storeWal(repo, cluster, w, ctx, { quietDuplicate: true, tap });
      // The records speak of this repository instance only (it may have been re-created).
      if ((await repositoryInstance(location, storage)) !== instance) throw new HoldfastError('REPO_NOT_FOUND', `the repository at ${location} was replaced while the async worker ran`, { location });
      spool.writeOk(file, tap.value());
      archived++;
      log.debug(r.stored ? `archived ${file}: ${r.bytes} bytes, ${r.storedBytes} stored` : `${file} was already archived`);
    } catch (err) {
      if (unrecorded(err) || ctx.signal?.aborted) {
        fatal ??= err;
        return;
      }
      const e = asHoldfast(err);
      failures++;
      failed.add(file);
      log.warn(`${file}: ${e.message} [${e.code}]`);
      try {
        // Tied to the content it failed for (none when the file cannot be read).
        let fingerprint: string | undefined;
        try {
          fingerprint = spool.fingerprintFile(file, walPath);
        } catch {
          fingerprint = undefined;
        }
        spool.writeError(file, e, fingerprint);
      } catch (again) {
        log.warn(`cannot record the failure of ${file}: ${(again as Error).message}`);
      }
      if (e.code === 'REPO_NOT_FOUND') fatal ??= err;
    }
  };

  try {
    for (;;) {
      if (ctx.signal?.aborted || fatal !== undefined) break;
      const now = Date.now();
      if (now - started >= o.lifeMs) {
        exit = 'lifetime';
        break;
      }
      if (now - lastCheck >= 1000) {
        lastCheck = now;
        await lock.verify();
      }
      // Not yet recorded: the files calls wait for (`.want`) first, whatever `ahead` says (their
      // call may be the one PostgreSQL retries while newer files wait), then the rest in order; a
      // file that failed only when a call asks for it again.
      const names = new Set(spool.names());
      let waiting = 0;
      const wanted: string[] = [];
      const todo: string[] = [];
      for (const f of readyFiles(walDir)) {
        if (names.has(`${f}.ok`)) waiting++;
        else if (inFlight.has(f) || names.has(`${f}.error`)) continue;
        else if (names.has(`${f}.want`)) wanted.push(f);
        else if (!failed.has(f)) todo.push(f);
      }
      let slots = o.jobs - inFlight.size;
      let ahead = o.ahead - waiting - inFlight.size;
      for (const f of [...wanted, ...todo]) {
        if (slots <= 0 || (ahead <= 0 && !wanted.includes(f))) break;
        slots--;
        ahead--;
        failed.delete(f);
        inFlight.set(
          f,
          push(f).finally(() => inFlight.delete(f)),
        );
      }
      if (inFlight.size > 0) lastBusy = Date.now();
      else if (Date.now() - lastBusy >= o.idleMs) {
        exit = 'idle';
        break;
      }
      await Promise.race([...inFlight.values(), sleep(pollMs)]);
    }
  } finally {
    await Promise.allSettled([...inFlight.values()]);
    cleanSpool(spool, walDir);
  }
  if (fatal !== undefined && !ctx.signal?.aborted) throw fatal;
  log.info(`async worker for cluster ${cluster} exits (${exit}): ${archived} archived, ${failures} failed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return { archived, failed: failures, exit };
}

/** Remove records no call will ask for (their file is no longer ready). */
function cleanSpool(spool: Spool, walDir: string): void {
  const ready = new Set(readyFiles(walDir));
  for (const n of spool.names()) {
    const m = /^(.*)\.(ok|error|want)$/.exec(n);
    if (m && !ready.has(m[1]!)) fs.rmSync(spool.path(n), { force: true });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
