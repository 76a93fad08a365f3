/**
 * `pg archive-push --async` when the spool has no answer for the file yet (docs/design.md §12):
 * make sure the background worker (pg-archive-worker.ts) runs, then wait, bounded by a timeout,
 * for it to record the file. Loaded only on that path; the fast path is pg-archive-spool.ts.
 *
 * Why wait rather than push the file here as well: the worker stores every ready file exactly
 * once, `--jobs` at a time, with the repository already open and its locks taken, while a call
 * that stored its own file would pay for opening the repository, a lock round trip and the
 * compression, and race the worker for the same file. Measured (docs/design.md §12): a segment
 * made ready just before its call is archived in ~0.6 of the synchronous time this way.
 *
 * The call archives its file itself (synchronously, the same code as without --async) when the
 * worker cannot be used: the file has no `.ready` marker (the worker would never see it), the lock
 * directory is unusable (nothing would keep two workers apart, and a dead one could not be told
 * from a live one), or the worker stops without recording the file twice in a row.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HoldfastError } from '../errors/catalogue.js';
import { LocalLockStore } from '../locks/local.js';
import { listLocks } from '../locks/protocol.js';
import type { OpContext, RepoRef } from './context.js';
import { type LocalLockSpec, resolveLockDir } from './locking.js';
import type { PushResult } from './pg-archive.js';
import { type Spool, type SpoolMiss, WORKER_LOG, consumeRecord } from './pg-archive-spool.js';

/** The local lock the worker holds; archive-push --async checks it to see whether one runs. */
export function asyncWorkerLock(repoId: string, cluster: string, location: string, walDir: string): LocalLockSpec {
  return {
    key: `pg-archive-async:${repoId}:${cluster}`,
    // The pg_wal it serves: a call for another one (a second server archiving under the same
    // cluster name on this host) cannot rely on it.
    scope: `async archiving of cluster ${cluster} from ${path.resolve(walDir)}`,
    operation: 'pg archive-push --async (worker)',
    location,
    dataDir: path.dirname(path.resolve(walDir)),
    waitMs: 0,
  };
}

/** A worker this call started. */
interface WorkerHandle {
  readonly pid: number | undefined;
  /** False once the process has exited (or could not be started). */
  running(): boolean;
}

/** How to run the worker: `process.execPath` with these arguments and environment (the CLI knows). */
export interface WorkerCommand {
  readonly args: readonly string[];
  readonly env: NodeJS.ProcessEnv;
}

export interface AsyncCallOptions {
  /** Fail with ARCHIVE_TIMEOUT when the worker has not recorded the file by then. */
  readonly timeoutMs: number;
  /** How long the native front already waited for this file (counted against timeoutMs). */
  readonly waitedMs?: number;
  readonly worker: WorkerCommand;
}

/**
 * Start the worker detached (its own session, so it outlives this call and PostgreSQL's signals to
 * the archiver's process group), its output appended to worker.log in the spool.
 */
async function startWorker(spool: Spool, cmd: WorkerCommand): Promise<WorkerHandle> {
  const { spawn } = await import('node:child_process');
  let log: number | 'ignore' = 'ignore';
  try {
    log = spool.openLog();
  } catch {
    // without a log
  }
  let exited = false;
  try {
    const child = spawn(process.execPath, [...cmd.args], { detached: true, stdio: ['ignore', log, log], env: cmd.env });
    child.on('exit', () => (exited = true));
    child.on('error', () => (exited = true));
    child.unref();
    return { pid: child.pid, running: () => !exited && child.pid !== undefined };
  } finally {
    if (typeof log === 'number') fs.closeSync(log);
  }
}

/** Starts per call before the call archives its file itself. */
const MAX_STARTS = 2;

export async function pushThroughWorker(ref: RepoRef, cluster: string, walPath: string, miss: SpoolMiss, ctx: OpContext, o: AsyncCallOptions): Promise<PushResult> {
  const { spool, file } = miss;
  const log = ctx.log;
  const walDir = path.dirname(path.resolve(walPath));
  const itself = async (why: string): Promise<PushResult> => {
    log.debug(`${file}: archiving it in this process: ${why}`);
    const { archivePush } = await import('./pg-archive.js');
    return archivePush(ref, cluster, walPath, ctx, { quietDuplicate: true });
  };
  if (!fs.existsSync(path.join(walDir, 'archive_status', `${file}.ready`))) return itself('it has no .ready marker in archive_status, so the async worker would not see it');
  // The spec's key needs the repository id; the placement check does not.
  const lockDir = resolveLockDir(ctx, asyncWorkerLock('-', cluster, ref.location, walDir));

  let child: WorkerHandle | undefined;
  let starts = 0;
  let holder: number | undefined;
  /**
   * Whether a worker for this pg_wal runs, starting one when none does (at most MAX_STARTS per
   * call): 'running', 'gone' (none, and no more starts), or the pg_wal another one serves. Throws
   * LOCK_DIR when the lock directory cannot be read.
   */
  const ensureWorker = async (): Promise<'running' | 'gone' | { elsewhere: string }> => {
    holder = undefined;
    const id = miss.binding.id ?? spool.binding()?.id;
    if (id !== undefined) {
      const spec = asyncWorkerLock(id, cluster, ref.location, walDir);
      const live = (await listLocks(new LocalLockStore(lockDir, spec.key))).find((l) => !l.judgement.stale);
      if (live) {
        if (live.record && live.record.scope !== spec.scope) return { elsewhere: live.record.scope };
        holder = live.record?.owner.pid;
        return 'running';
      }
    }
    if (child?.running()) return 'running';
    if (starts >= MAX_STARTS) return 'gone';
    starts++;
    child = await startWorker(spool, o.worker);
    log.debug(`${file}: started the async worker (PID ${child.pid ?? '?'}; log ${spool.path(WORKER_LOG)})`);
    return child.running() ? 'running' : 'gone';
  };
  const lockDirUnusable = (err: unknown): boolean => err instanceof HoldfastError && err.code === 'LOCK_DIR';

  try {
    const w = await ensureWorker();
    if (w === 'gone') return await itself('the async worker could not be started');
    if (w !== 'running') return await itself(`the async worker of this cluster serves another pg_wal (${w.elsewhere})`);
  } catch (err) {
    if (lockDirUnusable(err)) return itself(`the lock directory is unusable (${(err as Error).message})`);
    throw err;
  }

  spool.want(file);
  const waiter = new SpoolWaiter(spool.dir);
  try {
    const deadline = Date.now() + Math.max(0, o.timeoutMs - (o.waitedMs ?? 0));
    let nextCheck = Date.now() + 250;
    for (;;) {
      ctx.signal?.throwIfAborted();
      if (consumeRecord(spool, file, walPath) === 'archived') return answered(file, walPath);
      const now = Date.now();
      if (now >= deadline) {
        const who = holder ?? child?.pid;
        throw new HoldfastError('ARCHIVE_TIMEOUT', `${file} was not archived within ${Math.round(o.timeoutMs / 1000)} s: the async worker${who ? ` (PID ${who})` : ''} has not recorded it; its log is ${spool.path(WORKER_LOG)}`, {
          file,
          pid: who,
          log: spool.path(WORKER_LOG),
          hint: 'The async worker archives ready WAL oldest first, --jobs at a time. Its log says what it is doing; the repository may be unreachable or slow, or the backlog large (raise --async-timeout). PostgreSQL calls archive_command again.',
        });
      }
      if (now >= nextCheck) {
        nextCheck = now + 250;
        let w: Awaited<ReturnType<typeof ensureWorker>>;
        try {
          w = await ensureWorker();
        } catch (err) {
          if (lockDirUnusable(err)) return await itself(`the lock directory became unusable (${(err as Error).message})`);
          throw err;
        }
        if (w !== 'running') {
          if (consumeRecord(spool, file, walPath) === 'archived') return answered(file, walPath);
          return await itself(w === 'gone' ? 'the async worker stopped without recording it' : `the async worker of this cluster serves another pg_wal (${w.elsewhere})`);
        }
      }
      await waiter.next(Math.min(50, Math.max(1, deadline - Date.now())));
    }
  } finally {
    waiter.close();
  }
}

function answered(file: string, walPath: string): PushResult {
  let bytes = 0;
  try {
    bytes = fs.statSync(walPath).size;
  } catch {
    // only for the report
  }
  return { file, stored: false, duplicate: false, bytes, storedBytes: 0, earlier: true };
}

/** Wakes up when something changes in the spool directory (inotify), or after a timeout. */
class SpoolWaiter {
  private watcher: fs.FSWatcher | undefined;
  private wake: (() => void) | undefined;

  constructor(dir: string) {
    try {
      this.watcher = fs.watch(dir, { persistent: false }, () => this.wake?.());
      this.watcher.on('error', () => this.close());
    } catch {
      this.watcher = undefined; // polling only
    }
  }

  next(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, this.watcher ? ms : Math.min(ms, 10));
      function done(): void {
        clearTimeout(t);
        resolve();
      }
      this.wake = done;
    });
  }

  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
  }
}
