/**
 * The native front of archive-push --async (native/wal-front.c, dist/holdfast-push; docs/design.md
 * §12) against real PostgreSQL 15 WAL: it answers a call only when the Node CLI would answer it
 * from the spool, and hands everything else to Node unchanged. HOLDFAST_FRONT=trace makes it say on
 * stderr which it did (that variable is outside the ticket key, so tracing does not change what
 * the front finds).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI } from '../testing/helpers.js';
import { FRONT, TO_NODE, assertToNode, finishedSegments, frontSkip, walCluster } from '../testing/front.js';
import { type PgCluster, type RunResult, chownToPostgres, destroyAllClusters, runAsPostgres, runAsPostgresAsync, waitUntil } from '../testing/pg.js';
import { postgresRepository } from '../testing/pg-repo.js';
import { expectError, listFiles, show, workspace } from '../testing/e2e.js';
import { TEST_KDF } from '../testing/helpers.js';

const ANSWERED = /holdfast-push: (\S+) was archived by the async worker \(its spool record matches the content\); answered without Node( after waiting for the worker)?/;

describe('archive-push --async through the native front (real PostgreSQL 15)', { skip: frontSkip() }, () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let repo = '';
  let state = '';
  let config = '';
  let env: Record<string, string> = {};
  let pg: PgCluster;
  let sims = 0;

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-pgfront-'));
    const r = postgresRepository(dir, 'front secret');
    repo = r.repo;
    state = path.join(dir, 'state');
    const locks = path.join(dir, 'locks');
    for (const d of [state, locks]) {
      fs.mkdirSync(d, { mode: 0o700 });
      chownToPostgres(d);
    }
    config = path.join(dir, 'holdfast.conf');
    fs.writeFileSync(config, '# the front test\n[global]\njobs = 2\n');
    // A variable with non-ASCII bytes, which the key sorts and hashes bytewise on both sides.
    env = { ...r.env, HOLDFAST_CONFIG: config, HOLDFAST_STATE_DIR: state, HOLDFAST_LOCK_DIR: locks, HOLDFAST_ASYNC_TIMEOUT: '120s', HOLDFAST_ZZ_NOTE: 'sauvegarde – été', HOLDFAST_FRONT: 'trace' };
    pg = await walCluster();
  });
  after(async () => {
    await destroyAllClusters();
    await cleanup();
  });

  const segments = (n: number): Promise<string[]> => finishedSegments(pg, n, 2000, "repeat('f', 100)");

  /** Copies of `names` in a pg_wal of their own with .ready markers; calls made as PostgreSQL's archiver makes them. */
  function simulatedWal(names: readonly string[]): { wal: string; root: string; push: (name: string, extraEnv?: Record<string, string>, cmd?: string) => RunResult } {
    const root = path.join(dir, `sim${++sims}`);
    const wal = path.join(root, 'pg_wal');
    fs.mkdirSync(path.join(wal, 'archive_status'), { recursive: true });
    for (const n of names) {
      fs.copyFileSync(path.join(pg.dataDir, 'pg_wal', n), path.join(wal, n));
      fs.writeFileSync(path.join(wal, 'archive_status', `${n}.ready`), '');
    }
    chownToPostgres(root, true);
    const push = (name: string, extraEnv: Record<string, string> = {}, cmd = FRONT): RunResult => {
      const args = cmd === FRONT ? [] : [CLI];
      const r = runAsPostgres(cmd === FRONT ? FRONT : process.execPath, [...args, 'pg', 'archive-push', '--async', '--async-batch', '8', path.join('pg_wal', name)], { ...env, ...extraEnv }, { cwd: root });
      if (r.status === 0) fs.renameSync(path.join(wal, 'archive_status', `${name}.ready`), path.join(wal, 'archive_status', `${name}.done`));
      return r;
    };
    return { wal, root, push };
  }

  /** One async worker serves one pg_wal: each test waits until the previous one's has exited. */
  const workersGone = (): Promise<unknown> =>
    waitUntil('the async worker to exit', () => !listFiles(dir).some((f) => f.startsWith('locks/pg-archive-async')), { timeoutMs: 30_000, intervalMs: 200 });
  const recorded = (name: string): boolean => listFiles(state).some((f) => f.endsWith(`/${name}.ok`));
  const waitRecorded = (name: string): Promise<unknown> => waitUntil(`the worker records ${name}`, () => recorded(name), { timeoutMs: 60_000 });
  const tickets = (): string[] => listFiles(state).filter((f) => f.startsWith('spool/tickets/') && !f.endsWith('.tmp'));
  const archived = (): Set<string> => new Set(listFiles(repo).filter((f) => f.startsWith('wal/main/')).map((f) => f.slice('wal/main/'.length)));
  const answered = (r: RunResult, name: string, args: readonly string[]): void => {
    assert.equal(r.status, 0, show(args, r));
    assert.equal(ANSWERED.exec(r.stderr)?.[1], name, `the front answered ${name} itself\n${show(args, r)}`);
  };
  const toNode = assertToNode;

  test('a call whose file the worker recorded is answered without Node once the CLI left its ticket; the key agrees on both sides', async () => {
    const names = await segments(5);
    const sim = simulatedWal(names);
    const args = ['pg', 'archive-push', '--async', names[0]!];
    assert.deepEqual(tickets(), []);
    const first = sim.push(names[0]!);
    assert.equal(first.status, 0, show(args, first));
    toNode(first, /no ticket for this call/, args);
    assert.equal(tickets().length, 1, 'the CLI left one ticket');
    const ticket = fs.readFileSync(path.join(state, tickets()[0]!), 'utf8');
    assert.match(ticket, new RegExp(`^holdfast-ticket-v1\\nspool /\\S+\\nrepo-config ${repo}/config\\nconfig [0-9a-f]{64} ${config}\\nasync-timeout 120000\\n$`));
    for (const n of names.slice(1)) {
      await waitRecorded(n);
      answered(sim.push(n), n, ['pg', 'archive-push', '--async', n]);
    }
    const stored = archived();
    for (const n of names) assert.ok(stored.has(n), `${n} is in the repository`);
    assert.equal(tickets().length, 1, 'the same call leaves no second ticket');
  });

  test('the front hands the call to Node when the content, the config file, the environment, the spool or the ticket is not what the record and ticket speak of', async () => {
    await workersGone();
    const names = await segments(7);
    const sim = simulatedWal(names);
    assert.equal(sim.push(names[0]!).status, 0);
    for (const n of names.slice(1)) await waitRecorded(n);
    const call = (n: string): string[] => ['pg', 'archive-push', '--async', n];

    // Other content than the worker archived: Node reports the conflict as it always does.
    const file = path.join(sim.wal, names[1]!);
    const original = fs.readFileSync(file);
    const changed = Buffer.from(original);
    changed[changed.length - 100] = changed[changed.length - 100]! ^ 0xff;
    fs.writeFileSync(file, changed);
    const conflict = sim.push(names[1]!);
    toNode(conflict, /has other content than the async worker archived/, call(names[1]!));
    expectError(conflict, call(names[1]!), 29, 'WAL_CONFLICT', names[1]!);
    fs.writeFileSync(file, original);
    assert.equal(sim.push(names[1]!).status, 0);

    // The config file changed: Node decides (and leaves a new ticket), then the front answers again.
    fs.appendFileSync(config, '# edited\n');
    await waitRecorded(names[2]!);
    const edited = sim.push(names[2]!);
    assert.equal(edited.status, 0, show(call(names[2]!), edited));
    toNode(edited, /config file .* changed since the ticket was made/, call(names[2]!));
    answered(sim.push(names[3]!), names[3]!, call(names[3]!));

    // Another environment is another key: no ticket for it yet.
    const other = sim.push(names[4]!, { HOLDFAST_ZZ_NOTE: 'autre' });
    assert.equal(other.status, 0, show(call(names[4]!), other));
    toNode(other, /no ticket for this call/, call(names[4]!));

    // A ticket others can write is not trusted; nor is a malformed one.
    const tickets0 = tickets().map((t) => path.join(state, t));
    for (const t of tickets0) fs.chmodSync(t, 0o666);
    await waitRecorded(names[5]!);
    const loose = sim.push(names[5]!);
    assert.equal(loose.status, 0, show(call(names[5]!), loose));
    toNode(loose, /is not a private file of this user/, call(names[5]!));
    for (const t of tickets0) {
      fs.chmodSync(t, 0o600);
      fs.writeFileSync(t, fs.readFileSync(t, 'utf8').replace('spool /', 'spool relative/'));
    }
    const malformed = sim.push(names[6]!, {}, FRONT);
    assert.equal(malformed.status, 0, show(call(names[6]!), malformed));
    toNode(malformed, /is malformed/, call(names[6]!));
  });

  test('a spool others can write, and a repository re-created at the location, are left to Node', async () => {
    await workersGone();
    const names = await segments(3);
    const sim = simulatedWal(names);
    assert.equal(sim.push(names[0]!).status, 0);
    await waitRecorded(names[1]!);
    const spool = path.dirname(path.join(state, listFiles(state).find((f) => f.endsWith(`/${names[1]!}.ok`))!));
    fs.chmodSync(spool, 0o770);
    const open = sim.push(names[1]!);
    toNode(open, /the spool .* is not a private directory of this user/, ['pg', 'archive-push', '--async', names[1]!]);
    fs.chmodSync(spool, 0o700);
    // The spool key is in place and the records stay; only the repository changes.
    await waitRecorded(names[2]!);
    await workersGone();
    fs.rmSync(repo, { recursive: true });
    fs.mkdirSync(repo);
    chownToPostgres(repo, true);
    const init = runAsPostgres(process.execPath, [CLI, 'init', '--kdf-cost', TEST_KDF], env);
    assert.equal(init.status, 0, init.stderr);
    const fresh = sim.push(names[2]!);
    toNode(fresh, /the spool is not bound to the repository instance at this location/, ['pg', 'archive-push', '--async', names[2]!]);
    assert.equal(fresh.status, 0, show(['pg', 'archive-push', '--async', names[2]!], fresh));
    assert.ok(archived().has(names[2]!), 'Node archived the file into the new repository');
  });

  /** The PID in the spool's worker record (pg-archive-spool.ts writeWorker). */
  const workerPid = (): number => {
    const rec = listFiles(state).find((f) => f.endsWith('/worker'));
    const pid = rec ? Number(fs.readFileSync(path.join(state, rec), 'utf8').split(' ')[1]) : NaN;
    assert.ok(Number.isInteger(pid) && pid > 0, 'the worker recorded itself in the spool');
    return pid;
  };
  /** Add a copy of segment `name` to the simulated pg_wal, marked ready. */
  const addReady = (wal: string, name: string): void => {
    fs.copyFileSync(path.join(pg.dataDir, 'pg_wal', name), path.join(wal, name));
    fs.writeFileSync(path.join(wal, 'archive_status', `${name}.ready`), '');
    chownToPostgres(path.join(wal, name));
    chownToPostgres(path.join(wal, 'archive_status', `${name}.ready`));
  };
  const frontCall = (root: string, name: string, extraEnv: Record<string, string> = {}): Promise<RunResult> =>
    runAsPostgresAsync(FRONT, ['pg', 'archive-push', '--async', '--async-batch', '8', path.join('pg_wal', name)], { ...env, ...extraEnv }, { cwd: root, timeoutMs: 120_000 });
  const wanted = (name: string): Promise<unknown> => waitUntil(`a call to wait for ${name}`, () => listFiles(state).some((f) => f.endsWith(`/${name}.want`)), { timeoutMs: 30_000, intervalMs: 20 });

  test('a call for a file the worker has not recorded yet waits for it without Node; a worker that dies, or the timeout, hands it to Node', async () => {
    await workersGone();
    const names = await segments(5);
    const sim = simulatedWal(names.slice(0, 2));
    const fast = { HOLDFAST_ASYNC_TIMEOUT: '3s' };
    // Tickets for both environments (each call hands over to Node the first time, or is answered).
    assert.equal(sim.push(names[0]!).status, 0);
    await waitRecorded(names[1]!);
    assert.equal(sim.push(names[1]!, fast).status, 0);

    // The worker stopped: a call for a newly ready file waits; once the worker goes on, it answers.
    let pid = workerPid();
    process.kill(pid, 'SIGSTOP');
    addReady(sim.wal, names[2]!);
    let call = frontCall(sim.root, names[2]!);
    await wanted(names[2]!);
    process.kill(pid, 'SIGCONT');
    let r = await call;
    assert.equal(r.status, 0, show(['pg', 'archive-push', '--async', names[2]!], r));
    assert.deepEqual([...(ANSWERED.exec(r.stderr) ?? [])].slice(1), [names[2]!, ' after waiting for the worker'], r.stderr);

    // The worker dies while a call waits: Node takes over, starts another worker, and the file is archived.
    pid = workerPid();
    process.kill(pid, 'SIGSTOP');
    addReady(sim.wal, names[3]!);
    call = frontCall(sim.root, names[3]!);
    await wanted(names[3]!);
    process.kill(pid, 'SIGKILL');
    r = await call;
    assert.equal(r.status, 0, show(['pg', 'archive-push', '--async', names[3]!], r));
    toNode(r, new RegExp(`the async worker serving .* stopped before recording ${names[3]!}`), ['pg', 'archive-push', '--async', names[3]!]);
    assert.ok(archived().has(names[3]!), `${names[3]!} is in the repository`);
    assert.notEqual(workerPid(), pid, 'a new worker runs');

    // --async-timeout (3 s here) spent waiting in the front is not waited again by Node.
    pid = workerPid();
    process.kill(pid, 'SIGSTOP');
    try {
      addReady(sim.wal, names[4]!);
      r = await frontCall(sim.root, names[4]!, fast);
      toNode(r, new RegExp(`the async worker has not recorded ${names[4]!} after \\d+ ms`), ['pg', 'archive-push', '--async', names[4]!]);
      expectError(r, ['pg', 'archive-push', '--async', names[4]!], 30, 'ARCHIVE_TIMEOUT', `${names[4]!} was not archived within 3 s`);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
  });

  test('other commands, HOLDFAST_FRONT=off and a sync archive-push run Node with the same arguments and the same result', () => {
    const version = runAsPostgres(FRONT, ['--version'], env);
    const direct = runAsPostgres(process.execPath, [CLI, '--version'], env);
    assert.equal(version.status, 0, version.stderr);
    assert.equal(version.stdout, direct.stdout);
    toNode(version, /not a pg archive-push call/, ['--version']);
    const get = ['pg', 'archive-get', '000000010000000000000099', path.join(dir, 'never')];
    const viaFront = runAsPostgres(FRONT, get, env);
    const viaNode = runAsPostgres(process.execPath, [CLI, ...get], env);
    toNode(viaFront, /no ticket for this call/, get); // archive-get is the front's only with --prefetch and a ticket
    assert.equal(viaFront.status, 1, show(get, viaFront));
    assert.deepEqual([viaFront.status, viaFront.stdout, viaFront.stderr.replace(TO_NODE, '').trim()], [viaNode.status, viaNode.stdout, viaNode.stderr.trim()]);
    const off = runAsPostgres(FRONT, ['pg', 'archive-push', 'pg_wal/000000010000000000000001'], { ...env, HOLDFAST_FRONT: 'off' });
    assert.doesNotMatch(off.stderr, /holdfast-push:/, 'HOLDFAST_FRONT=off says nothing and decides nothing');
    assert.notEqual(off.status, 0, 'Node reports the missing file');
  });

  test('PostgreSQL archives a burst through the front: every segment arrives and calls are answered without Node', async () => {
    const command = [...Object.entries({ ...env, HOLDFAST_ZZ_NOTE: 'burst' }).map(([k, v]) => `${k}='${v}'`), FRONT, 'pg', 'archive-push', '--async', '%p'].join(' ');
    await workersGone();
    const burst = await segments(10);
    pg.configure({ archive_command: command });
    await pg.psql('SELECT pg_reload_conf()');
    const last = burst.at(-1)!;
    await waitUntil(`${last} archived`, async () => (await pg.psql('SELECT last_archived_wal FROM pg_stat_archiver')) >= last, { timeoutMs: 120_000 });
    const stored = archived();
    for (const seg of burst) assert.ok(stored.has(seg), `${seg} is in the repository`);
    const log = fs.readFileSync(pg.logFile, 'utf8');
    assert.doesNotMatch(log, /The failed archive command was: .*holdfast/, 'no call failed');
    assert.ok((log.match(new RegExp(ANSWERED.source, 'g'))?.length ?? 0) > 0, `some calls were answered without Node\n${log.slice(-4000)}`);
  });
});
