/**
 * archive-push --async against a real PostgreSQL 15 (docs/design.md §12): a detached background
 * worker per cluster archives the ready WAL and records each file in a local spool; the
 * archive_command calls are answered from it.
 *
 * First PostgreSQL itself archives a burst through --async. The failure cases then drive the
 * calls the way PostgreSQL's archiver does (one call per ready file, oldest first, `.ready`
 * renamed `.done` after each success) over copies of real segments in a directory of their own,
 * so that a test can kill or stop the worker, or break the repository, between two calls.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI } from '../testing/helpers.js';
import { type PgCluster, type RunResult, chownToPostgres, destroyAllClusters, pgSkip, runAsPostgres, startCluster, waitUntil } from '../testing/pg.js';
import { postgresRepository } from '../testing/pg-repo.js';
import { expectError, listFiles, show, workspace } from '../testing/e2e.js';

describe('pg archive-push --async (real PostgreSQL 15)', { skip: pgSkip() }, () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let repo = '';
  let state = '';
  let locks = '';
  let env: Record<string, string> = {};
  let pg: PgCluster;
  let other: PgCluster | undefined;
  let sims = 0;

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-pgasync-'));
    const r = postgresRepository(dir, 'async secret');
    repo = r.repo;
    state = path.join(dir, 'state');
    locks = path.join(dir, 'locks');
    for (const d of [state, locks]) {
      fs.mkdirSync(d, { mode: 0o700 });
      chownToPostgres(d);
    }
    env = { ...r.env, HOLDFAST_STATE_DIR: state, HOLDFAST_LOCK_DIR: locks };
    const archiveCommand = r.archiveCommand(['--async', '--async-batch', '6', '--jobs', '2', '--log-level', 'debug'], { HOLDFAST_STATE_DIR: state, HOLDFAST_LOCK_DIR: locks });
    // Archiving paused while the burst is written, so that many segments are ready at once.
    pg = await startCluster({ conf: { wal_level: 'replica', archive_mode: 'on', archive_command: 'false', wal_keep_size: '1GB' } });
    pg.configure({ archive_command: archiveCommand });
    await pg.psql('CREATE TABLE burst (id int, pad text)');
  });
  after(async () => {
    for (const pid of workerPids()) if (alive(pid)) process.kill(pid, 'SIGKILL');
    await destroyAllClusters();
    await cleanup();
  });

  const archived = (): Set<string> => new Set(listFiles(repo).filter((f) => f.startsWith('wal/main/')).map((f) => f.slice('wal/main/'.length)));
  const workerLog = (): string => {
    const log = listFiles(state).find((f) => f.endsWith('/worker.log'));
    return log ? fs.readFileSync(path.join(state, log), 'utf8') : '';
  };
  /** PIDs of every worker started so far, in order. */
  const workerPids = (): number[] => [...workerLog().matchAll(/async worker for cluster main started \(PID (\d+)\)/g)].map((m) => Number(m[1]));
  const alive = (pid: number): boolean => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      return !/^\S+ \(.*\) [ZX] /.test(stat); // a zombie has exited
    } catch {
      return false;
    }
  };
  const lockFiles = (): string[] => fs.readdirSync(locks).filter((f) => f.startsWith('pg-archive-async'));

  let paused = false;
  /** Write and switch `n` segments; their names. After the first test PostgreSQL does not archive them. */
  async function segments(n: number, opts: { archive?: boolean } = {}): Promise<string[]> {
    if (!opts.archive && !paused) {
      await pg.psql(`ALTER SYSTEM SET archive_command = 'false'`);
      await pg.psql('SELECT pg_reload_conf()');
      paused = true;
    }
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      await pg.psql(`INSERT INTO burst SELECT g, repeat('s', 100) FROM generate_series(1, 2000) g`);
      out.push(await pg.switchWal({ force: true }));
    }
    return out;
  }

  /**
   * A directory laid out like a data directory's pg_wal (segment files and archive_status/*.ready)
   * holding copies of `files` (paths), for calls made the way PostgreSQL's archiver makes them.
   */
  function simulatedWal(files: readonly string[]): { wal: string; push: (name: string, ...args: string[]) => RunResult; ready: () => string[] } {
    const root = path.join(dir, `sim${++sims}`);
    const wal = path.join(root, 'pg_wal');
    fs.mkdirSync(path.join(wal, 'archive_status'), { recursive: true });
    for (const f of files) {
      fs.copyFileSync(f, path.join(wal, path.basename(f)));
      fs.writeFileSync(path.join(wal, 'archive_status', `${path.basename(f)}.ready`), '');
    }
    chownToPostgres(root, true);
    const push = (name: string, ...args: string[]): RunResult => {
      const r = runAsPostgres(process.execPath, [CLI, 'pg', 'archive-push', '--async', '--jobs', '2', '--async-batch', '4', '--log-level', 'debug', ...args, path.join('pg_wal', name)], env, { cwd: root });
      if (r.status === 0) fs.renameSync(path.join(wal, 'archive_status', `${name}.ready`), path.join(wal, 'archive_status', `${name}.done`));
      return r;
    };
    const ready = (): string[] => fs.readdirSync(path.join(wal, 'archive_status')).filter((f) => f.endsWith('.ready')).map((f) => f.slice(0, -'.ready'.length)).sort();
    return { wal, push, ready };
  }

  /** Wait (bounded) until no worker runs and none holds its lock. */
  async function workersGone(): Promise<void> {
    await waitUntil('the async worker to exit', () => workerPids().every((p) => !alive(p)) && lockFiles().length === 0, { timeoutMs: 30_000, intervalMs: 200 });
  }

  test('a burst: every segment arrives, the calls are answered from the spool, one worker starts and exits when idle', async () => {
    const burst = await segments(12, { archive: true });
    await pg.psql('SELECT pg_reload_conf()'); // now archive through holdfast --async
    const last = burst.at(-1)!;
    await waitUntil(`${last} archived`, async () => (await pg.psql('SELECT last_archived_wal FROM pg_stat_archiver')) >= last, { timeoutMs: 120_000 });
    const stored = archived();
    for (const seg of burst) assert.ok(stored.has(seg), `${seg} is in the repository`);

    const log = fs.readFileSync(pg.logFile, 'utf8');
    assert.doesNotMatch(log, /The failed archive command was: .*holdfast/, 'no holdfast call failed');
    assert.equal(log.match(/started the async worker/g)?.length, 1, `one worker for the burst\n${log}`);
    const fromSpool = log.match(/was archived by the async worker \(spool\)/g)?.length ?? 0;
    const waited = log.match(/was archived by the async worker$/gm)?.length ?? 0;
    assert.ok(fromSpool > 0, 'calls were answered straight from the spool');
    assert.ok(fromSpool + waited >= burst.length, `every call of the burst was answered by the worker (${fromSpool} from the spool, ${waited} after waiting)`);
    assert.doesNotMatch(log, /archiving it in this process/, 'no call archived its file itself');

    // The worker exits a few seconds after the last ready file and leaves no lock behind.
    await workersGone();
    assert.match(workerLog(), /async worker for cluster main exits \(idle\): \d+ archived, 0 failed/);
    // What the spool still holds is cleaned up: nothing is ready any more.
    await waitUntil('spool records removed', () => listFiles(state).filter((f) => /\.(ok|error|want)$/.test(f)).length === 0, { timeoutMs: 10_000 });
  });

  test('the worker SIGKILLed mid-burst: no acknowledged file is lost, and a later call starts a new worker (the stale lock is removed)', async () => {
    await workersGone();
    const names = await segments(8);
    const sim = simulatedWal(names.map((n) => path.join(pg.dataDir, 'pg_wal', n)));
    const first = sim.push(names[0]!);
    assert.equal(first.status, 0, show(['pg', 'archive-push', '--async', names[0]!], first));
    const [pid] = workerPids().slice(-1);
    assert.ok(pid !== undefined && alive(pid), 'a worker runs');
    process.kill(pid, 'SIGKILL'); // while it archives the files ahead of the calls
    await waitUntil('the killed worker to be gone', () => !alive(pid));
    const acknowledged = [names[0]!];
    for (const n of names.slice(1)) {
      const r = sim.push(n);
      assert.equal(r.status, 0, show(['pg', 'archive-push', '--async', n], r));
      acknowledged.push(n);
    }
    const stored = archived();
    for (const n of acknowledged) assert.ok(stored.has(n), `${n} (acknowledged) is in the repository`);
    assert.deepEqual(sim.ready(), []);
    const pids = workerPids();
    assert.ok(pids.length >= 2 && pids.at(-1) !== pid, 'a new worker was started after the kill');
    assert.match(workerLog(), new RegExp(`removed stale lock of pg archive-push --async \\(worker\\) \\(PID ${pid} `), 'the killed worker\'s local lock was removed');
    await workersGone();
  });

  test('a WAL of another cluster among the ready files: that call exits 28 with its message, the other segments archive, the next call retries', async () => {
    await workersGone();
    other = await startCluster();
    const foreign = await other.switchWal({ force: true });
    const otherId = await other.systemIdentifier();
    const names = await segments(4);
    const sim = simulatedWal([path.join(other.dataDir, 'pg_wal', foreign), ...names.map((n) => path.join(pg.dataDir, 'pg_wal', n))]);
    assert.equal(sim.ready()[0], foreign, 'PostgreSQL would ask for the foreign file first');
    const stored0 = path.join(repo, 'wal', 'main', foreign);
    const before = fs.existsSync(stored0) ? fs.readFileSync(stored0) : undefined;
    const args = ['pg', 'archive-push', '--async', foreign];
    const bad = sim.push(foreign);
    expectError(bad, args, 28, 'CLUSTER_MISMATCH', otherId);
    for (const n of names) {
      const r = sim.push(n);
      assert.equal(r.status, 0, show(['pg', 'archive-push', '--async', n], r));
      assert.match(r.stderr, /was archived by the async worker/);
    }
    const stored = archived();
    for (const n of names) assert.ok(stored.has(n), `${n} is in the repository`);
    const object = path.join(repo, 'wal', 'main', foreign); // the name may be one of this cluster's
    assert.deepEqual(fs.existsSync(object) ? fs.readFileSync(object) : undefined, before, 'nothing was stored for the foreign file');
    // The failure was consumed: the next call tries again (and fails again, the same way).
    expectError(sim.push(foreign), args, 28, 'CLUSTER_MISMATCH', otherId);
    assert.deepEqual(sim.ready(), [foreign]);
    await workersGone();
  });

  test('a spool record is trusted only for the content it was made from: a file changed after it was archived is a conflict (exit 29)', async () => {
    await workersGone();
    const names = await segments(3);
    const sim = simulatedWal(names.map((n) => path.join(pg.dataDir, 'pg_wal', n)));
    assert.equal(sim.push(names[0]!).status, 0);
    const target = names[2]!;
    await waitUntil(`the worker records ${target}`, () => listFiles(state).some((f) => f.endsWith(`/${target}.ok`)), { timeoutMs: 60_000 }).catch((err: Error) => {
      throw new Error(`${err.message}\n--- worker.log\n${workerLog()}\n--- state\n${listFiles(state).join('\n')}`);
    });
    const file = path.join(sim.wal, target);
    const original = fs.readFileSync(file);
    const changed = Buffer.from(original);
    changed[changed.length - 100] = changed[changed.length - 100]! ^ 0xff; // past the header: still a valid-looking segment
    const replace = (data: Buffer): void => {
      // Atomically, as the worker may be reading it (it retries a failed file once its call took the error).
      fs.writeFileSync(`${file}.new`, data);
      chownToPostgres(`${file}.new`);
      fs.renameSync(`${file}.new`, file);
    };
    replace(changed);
    assert.equal(sim.push(names[1]!).status, 0);
    expectError(sim.push(target), ['pg', 'archive-push', '--async', target], 29, 'WAL_CONFLICT', target);
    replace(original);
    const again = sim.push(target);
    assert.equal(again.status, 0, show(['pg', 'archive-push', '--async', target], again));
    await workersGone();
  });

  test('a repository the worker cannot write to: the call exits with the worker\'s error (16) and message; once fixed the next call archives', async () => {
    await workersGone();
    const names = await segments(1);
    const sim = simulatedWal(names.map((n) => path.join(pg.dataDir, 'pg_wal', n)));
    const walDir = path.join(repo, 'wal', 'main');
    const mode = fs.statSync(walDir).mode & 0o777;
    fs.chmodSync(walDir, 0o555);
    try {
      expectError(sim.push(names[0]!), ['pg', 'archive-push', '--async', names[0]!], 16, 'PERMISSION_DENIED', 'permission denied');
    } finally {
      fs.chmodSync(walDir, mode);
    }
    const r = sim.push(names[0]!);
    assert.equal(r.status, 0, show(['pg', 'archive-push', '--async', names[0]!], r));
    assert.ok(archived().has(names[0]!));
    await workersGone();
  });

  test('an unreachable repository fails the call at once with a clear message; a worker that makes no progress fails it after --async-timeout (exit 30)', async () => {
    await workersGone();
    const names = await segments(2);
    const sim = simulatedWal(names.map((n) => path.join(pg.dataDir, 'pg_wal', n)));
    const away = `${repo}.away`;
    fs.renameSync(repo, away);
    let started = Date.now();
    try {
      expectError(sim.push(names[0]!, '--async-timeout', '20s'), ['pg', 'archive-push', '--async', names[0]!], 10, 'REPO_NOT_FOUND', `no holdfast repository at ${repo}`);
      assert.ok(Date.now() - started < 20_000, 'failed within its timeout');
    } finally {
      fs.renameSync(away, repo);
    }
    assert.equal(sim.push(names[0]!).status, 0);

    // A worker hung on its storage (here: stopped) is alive and holds its lock, but records nothing.
    const [pid] = workerPids().slice(-1);
    assert.ok(pid !== undefined && alive(pid), 'a worker runs');
    process.kill(pid, 'SIGSTOP');
    try {
      fs.rmSync(path.join(state, listFiles(state).find((f) => f.endsWith(`/${names[1]!}.ok`)) ?? 'none'), { force: true }); // whatever it did ahead
      started = Date.now();
      const r = sim.push(names[1]!, '--async-timeout', '3s');
      expectError(r, ['pg', 'archive-push', '--async', names[1]!], 30, 'ARCHIVE_TIMEOUT', `PID ${pid}`, 'worker.log');
      assert.ok(Date.now() - started < 20_000, 'failed after its timeout, not much later');
    } finally {
      process.kill(pid, 'SIGKILL');
    }
    await waitUntil('the stopped worker to be gone', () => !alive(pid));
    const r = sim.push(names[1]!);
    assert.equal(r.status, 0, show(['pg', 'archive-push', '--async', names[1]!], r));
    assert.ok(archived().has(names[1]!));
    await workersGone();
  });

  test('the repository checks clean afterwards', () => {
    const r = runAsPostgres(process.execPath, [CLI, 'check', '--read-data'], env);
    assert.equal(r.status, 0, show(['check', '--read-data'], r));
  });
});
