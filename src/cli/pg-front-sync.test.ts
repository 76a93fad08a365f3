/**
 * The native push (native/wal-front.c sync_push, dist/holdfast-push; docs/design.md §12): a
 * synchronous `pg archive-push` through the front stores the segment itself once a Node call left
 * its sync ticket, exactly as the Node CLI would (same object, same lock, same durability), and
 * hands every other case to Node before storing anything. Against real PostgreSQL 15 WAL.
 * HOLDFAST_FRONT=trace makes the front say on stderr what it did (outside the ticket key).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI } from '../testing/helpers.js';
import { FRONT, assertToNode, finishedSegments, frontSkip, walCluster } from '../testing/front.js';
import { type PgCluster, type RunResult, argvAsPostgres, baseEnv, chownToPostgres, destroyAllClusters, runAsPostgres, waitUntil } from '../testing/pg.js';
import { postgresRepository } from '../testing/pg-repo.js';
import { expectError, listFiles, show, workspace } from '../testing/e2e.js';
import { openRepository } from '../ops/repo.js';
import { RepositoryLockStore } from '../locks/repository.js';
import { newLockId } from '../locks/protocol.js';
import { currentOwner } from '../locks/owner.js';

const STORED = /holdfast-push: stored (\S+) in the repository without Node/;

describe('synchronous archive-push stored by the native front (real PostgreSQL 15)', { skip: frontSkip() }, () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let repo = '';
  let pwFile = '';
  let state = '';
  let wal = '';
  let env: Record<string, string> = {};
  let pg: PgCluster;

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-pgfront-sync-'));
    const r = postgresRepository(dir, 'front sync secret');
    repo = r.repo;
    pwFile = r.pwFile;
    state = path.join(dir, 'state');
    wal = path.join(dir, 'wal');
    for (const d of [state, path.join(dir, 'locks'), wal, path.join(dir, 'got')]) {
      fs.mkdirSync(d, { mode: 0o700 });
      chownToPostgres(d);
    }
    env = { ...r.env, HOLDFAST_STATE_DIR: state, HOLDFAST_LOCK_DIR: path.join(dir, 'locks'), HOLDFAST_FRONT: 'trace' };
    pg = await walCluster();
  });
  after(async () => {
    await destroyAllClusters();
    await cleanup();
  });

  /** `n` finished segments, copied out of pg_wal (PostgreSQL's own archive_command stays `false`). */
  async function segments(n: number): Promise<string[]> {
    const names = await finishedSegments(pg, n, 3000, "md5(g::text) || repeat('s', 200)");
    for (const name of names) {
      fs.copyFileSync(path.join(pg.dataDir, 'pg_wal', name), path.join(wal, name));
      chownToPostgres(path.join(wal, name));
    }
    return names;
  }
  const call = (name: string): string[] => ['pg', 'archive-push', path.join(wal, name)];
  const push = (name: string, extraEnv: Record<string, string> = {}): RunResult => runAsPostgres(FRONT, call(name), { ...env, ...extraEnv }, { cwd: dir });
  const stored = (r: RunResult, name: string): void => {
    assert.equal(r.status, 0, show(call(name), r));
    assert.equal(STORED.exec(r.stderr)?.[1], name, `the front stored ${name} itself\n${show(call(name), r)}`);
  };
  const toNode = (r: RunResult, why: RegExp, name: string): void => assertToNode(r, why, call(name));
  const toNodeGet = (r: RunResult, why: RegExp, name: string): void => assertToNode(r, why, ['pg', 'archive-get', '--prefetch', '3', name]);
  /** The archived copy of `name`, fetched by the Node CLI's archive-get. */
  const fetched = (name: string): Buffer => {
    const dest = path.join(dir, 'got', name);
    const r = runAsPostgres(process.execPath, [CLI, 'pg', 'archive-get', name, dest], env, { cwd: dir });
    assert.equal(r.status, 0, show(['pg', 'archive-get', name, dest], r));
    const data = fs.readFileSync(dest);
    fs.rmSync(dest);
    return data;
  };
  /**
   * Start the front for `name` as postgres, without waiting. `kill()` SIGKILLs the front itself:
   * runuser, when it is in between, does not pass SIGKILL on to its child.
   */
  const startFront = (name: string, extraEnv: Record<string, string> = {}): { exited: Promise<number | null>; kill: () => void } => {
    const [file, argv] = argvAsPostgres(FRONT, call(name));
    const child = spawn(file, argv, { env: baseEnv({ ...env, ...extraEnv }), cwd: dir, stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const kill = (): void => {
      const pid = child.pid!;
      let pids = [pid];
      try {
        pids = [...fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number), pid];
      } catch {
        // already gone
      }
      for (const p of pids) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          // gone
        }
      }
    };
    return { exited, kill };
  };
  const leftovers = (): string[] => listFiles(repo).filter((f) => f.startsWith('locks/') || path.basename(f).startsWith('.tmp-'));

  test('after one Node call leaves its sync ticket, the front stores segments itself: the same objects, no lock or temporary file left, check clean', async () => {
    const names = await segments(5);
    const first = push(names[0]!);
    assert.equal(first.status, 0, show(call(names[0]!), first));
    toNode(first, /no ticket for this call/, names[0]!);
    const tickets = listFiles(state).filter((f) => f.startsWith('spool/tickets/'));
    assert.equal(tickets.length, 1, 'the CLI left one ticket');
    const ticket = fs.readFileSync(path.join(state, tickets[0]!), 'utf8');
    assert.match(ticket, new RegExp(`^holdfast-ticket-v1\\nsync\\nrepo ${repo}\\ninstance [0-9a-f]{64}\\nkey [0-9a-f]{64}\\nkey-cache ${state}/keys\\npassword-file ${pwFile}\\ncluster main\\ncompression zstd:3\\nlock-ttl 300000\\nconfig [0-9a-f]{64} /dev/null\\n$`));
    assert.doesNotMatch(ticket, /front sync secret/, 'the ticket holds no secret');
    for (const n of names.slice(1)) stored(push(n), n);
    for (const n of names) assert.ok(fetched(n).equals(fs.readFileSync(path.join(wal, n))), `${n} comes back identical`);
    assert.deepEqual(leftovers(), [], 'no lock or temporary file is left');
    const check = runAsPostgres(process.execPath, [CLI, 'check'], env, { cwd: dir });
    assert.equal(check.status, 0, show(['check'], check));
    assert.match(check.stdout, /no problems found/);
  });

  test('every case that is not the plain one goes to Node, which answers as always; nothing is stored by the front', async () => {
    const names = await segments(4);
    assert.equal(push(names[0]!).status, 0); // by Node or the front: there is a ticket afterwards

    // Already archived: the same content is a warning and exit 0, other content WAL_CONFLICT.
    const again = push(names[0]!);
    toNode(again, /already archived/, names[0]!);
    assert.equal(again.status, 0, show(call(names[0]!), again));
    assert.match(again.stderr, /already archived with identical content/);
    const file = path.join(wal, names[0]!);
    const original = fs.readFileSync(file);
    const changed = Buffer.from(original);
    changed[changed.length - 100] = changed[changed.length - 100]! ^ 0xff;
    fs.writeFileSync(file, changed);
    const conflict = push(names[0]!);
    toNode(conflict, /already archived/, names[0]!);
    expectError(conflict, call(names[0]!), 29, 'WAL_CONFLICT', names[0]!);
    fs.writeFileSync(file, original);

    // Another cluster's segment (another system identifier in the header): CLUSTER_MISMATCH.
    const foreign = path.join(wal, names[1]!);
    const seg = fs.readFileSync(foreign);
    const alien = Buffer.from(seg);
    alien.writeBigUInt64LE(alien.readBigUInt64LE(24) ^ 0x5a5an, 24);
    fs.writeFileSync(foreign, alien);
    const mismatch = push(names[1]!);
    toNode(mismatch, /another cluster's WAL/, names[1]!);
    expectError(mismatch, call(names[1]!), 28, 'CLUSTER_MISMATCH', 'system identifier');
    fs.writeFileSync(foreign, seg);

    // A wrong password in the file: Node's WRONG_PASSWORD, not a push with a cached key.
    const pw = fs.readFileSync(pwFile);
    fs.writeFileSync(pwFile, 'not the password\n');
    const wrong = push(names[1]!);
    toNode(wrong, /no cached key for this password and key/, names[1]!);
    expectError(wrong, call(names[1]!), 12, 'WRONG_PASSWORD');
    fs.writeFileSync(pwFile, pw);

    // HOLDFAST_PASSWORD takes precedence over the file in Node: the front does not guess.
    const direct = push(names[1]!, { HOLDFAST_PASSWORD: 'not the password' });
    toNode(direct, /HOLDFAST_PASSWORD is set/, names[1]!);
    expectError(direct, call(names[1]!), 12, 'WRONG_PASSWORD');

    // A live exclusive lock: Node reports LOCKED, and the front's own shared lock is gone again.
    const r = await openRepository({ location: repo, password: 'front sync secret' }, false);
    const store = new RepositoryLockStore(r, repo);
    const x = { id: newLockId(), kind: 'exclusive' as const, operation: 'key remove', scope: `repository ${repo}`, owner: currentOwner(), created: Date.now(), refreshed: Date.now(), ttlMs: 300_000 };
    await store.create(x);
    chownToPostgres(path.join(repo, 'locks', `x-${x.id}`)); // made by this (root) process
    try {
      const locked = push(names[1]!);
      toNode(locked, /an exclusive lock is in the repository/, names[1]!);
      expectError(locked, call(names[1]!), 11, 'LOCKED', 'key remove');
      assert.deepEqual(listFiles(repo).filter((f) => f.startsWith('locks/')), [`locks/x-${x.id}`], 'only the exclusive lock is left');
    } finally {
      await store.remove(x);
      await r.close();
    }

    // The cluster record damaged: Node reports it; the front never reads past a bad tag.
    const record = path.join(repo, 'clusters', 'main');
    const rec = fs.readFileSync(record);
    const bad = Buffer.from(rec);
    bad[20] = bad[20]! ^ 1;
    fs.writeFileSync(record, bad);
    const damaged = push(names[1]!);
    toNode(damaged, /cannot open clusters\/main/, names[1]!);
    assert.notEqual(damaged.status, 0, show(call(names[1]!), damaged));
    fs.writeFileSync(record, rec);

    // A .partial file and a history file are Node's to validate.
    fs.copyFileSync(path.join(wal, names[2]!), path.join(wal, `${names[2]!}.partial`));
    chownToPostgres(path.join(wal, `${names[2]!}.partial`));
    const partial = push(`${names[2]!}.partial`);
    toNode(partial, /not a WAL segment name/, `${names[2]!}.partial`);
    assert.equal(partial.status, 0, show(call(`${names[2]!}.partial`), partial));

    // Nothing above was stored by the front; with everything restored it stores again.
    stored(push(names[1]!), names[1]!);
    assert.ok(fetched(names[1]!).equals(seg));
    assert.deepEqual(leftovers(), []);
  });

  test("the front's lock is one the CLI reads as live; killed while holding it, the lock is stale and the next push goes ahead", async () => {
    const names = await segments(2);
    const hold = { HOLDFAST_TEST_FRONT_HOLD_MS: '20000' };
    // a ticket for this environment (the first call goes to Node)
    assert.equal(push(names[0]!, hold).status, 0);
    const front = startFront(names[1]!, hold);
    try {
      await waitUntil('the front to take its lock', () => listFiles(repo).some((f) => /^locks\/s-[0-9a-f]{24}$/.test(f)), { timeoutMs: 30_000, intervalMs: 20 });
      const view = runAsPostgres(process.execPath, [CLI, 'locks', '--json'], env, { cwd: dir });
      assert.equal(view.status, 0, show(['locks', '--json'], view));
      const live = (JSON.parse(view.stdout) as { locks: Array<{ where: string; kind: string; operation: string; stale: boolean; pid: number }> }).locks.filter((l) => l.where === 'repository');
      assert.equal(live.length, 1, view.stdout);
      assert.deepEqual({ kind: live[0]!.kind, operation: live[0]!.operation, stale: live[0]!.stale }, { kind: 'shared', operation: 'pg archive-push', stale: false }, view.stdout);
    } finally {
      front.kill();
      await front.exited;
    }
    await waitUntil('the killed front to be gone', () => {
      const v = runAsPostgres(process.execPath, [CLI, 'locks', '--json'], env, { cwd: dir });
      return (JSON.parse(v.stdout) as { locks: Array<{ where: string; stale: boolean }> }).locks.filter((l) => l.where === 'repository').every((l) => l.stale);
    }, { timeoutMs: 30_000, intervalMs: 100 });
    assert.ok(!fs.existsSync(path.join(repo, 'wal', 'main', names[1]!)), 'nothing was stored');
    // An exclusive holder removes the stale lock; a shared one (Node or the front) just goes ahead.
    stored(push(names[1]!), names[1]!);
    assert.ok(fetched(names[1]!).equals(fs.readFileSync(path.join(wal, names[1]!))));
  });

  test('killed at random points, the front never acknowledges a segment it did not store; PostgreSQL retrying stores every one', async () => {
    const names = await segments(8);
    assert.equal(push(names[0]!).status, 0); // the ticket (already there from the first test; stored by either)
    let acknowledged = 0;
    let killed = 0;
    for (const [i, n] of names.slice(1).entries()) {
      const front = startFront(n);
      await new Promise((resolve) => setTimeout(resolve, 2 + ((i * 7) % 40)));
      front.kill();
      const code = await front.exited;
      if (code === 0) {
        acknowledged++;
        assert.ok(fetched(n).equals(fs.readFileSync(path.join(wal, n))), `${n} was acknowledged, so it is archived intact`);
      } else killed++;
      // PostgreSQL calls again until exit 0: the retry finds it stored (identical) or stores it
      const retry = push(n);
      assert.equal(retry.status, 0, show(call(n), retry));
      assert.ok(fetched(n).equals(fs.readFileSync(path.join(wal, n))), `${n} is archived intact after the retry`);
    }
    assert.equal(acknowledged + killed, names.length - 1);
    const check = runAsPostgres(process.execPath, [CLI, 'check'], env, { cwd: dir });
    assert.equal(check.status, 0, show(['check'], check));
  });

  test('archive-get --prefetch: one call reads the repository and queues the next segments, the front hands those over without Node; a bad queued copy or another repository instance is never handed over', async () => {
    const names = await segments(8);
    for (const n of names.slice(0, 7)) assert.equal(push(n).status, 0);
    const got = path.join(dir, 'got');
    const get = (name: string, extraEnv: Record<string, string> = {}): RunResult => runAsPostgres(FRONT, ['pg', 'archive-get', '--prefetch', '3', name, path.join(got, name)], { ...env, ...extraEnv }, { cwd: dir });
    const args = (name: string): string[] => ['pg', 'archive-get', '--prefetch', '3', name, path.join(got, name)];
    const same = (name: string): void => {
      assert.ok(fs.readFileSync(path.join(got, name)).equals(fs.readFileSync(path.join(wal, name))), `${name} is handed over intact`);
      fs.rmSync(path.join(got, name));
    };
    const queued = (): string[] => listFiles(state).filter((f) => f.includes('/prefetch/') && /\/[0-9A-F]{24}$/.test(f)).map((f) => path.basename(f)).sort();
    const queuedPath = (name: string): string => path.join(state, listFiles(state).find((f) => f.endsWith(`/prefetch/${name}`))!);
    const taken = /holdfast-push: (\S+) taken from the prefetch queue without Node/;

    const first = get(names[0]!);
    assert.equal(first.status, 0, show(args(names[0]!), first));
    toNodeGet(first, /no ticket for this call/, names[0]!);
    same(names[0]!);
    assert.deepEqual(queued(), names.slice(1, 4), 'the next three segments are queued');
    for (const n of names.slice(1, 4)) {
      const r = get(n);
      assert.equal(r.status, 0, show(args(n), r));
      assert.equal(taken.exec(r.stderr)?.[1], n, show(args(n), r));
      same(n);
    }
    assert.deepEqual(queued(), [], 'taken segments leave the queue');

    // Not queued: Node reads the repository and queues the rest (only what the archive has).
    const refill = get(names[4]!);
    toNodeGet(refill, /is not in the prefetch queue/, names[4]!);
    same(names[4]!);
    assert.deepEqual(queued(), names.slice(5, 7), 'the two archived segments after it, and nothing for the one not archived yet');

    // A queued copy that is not whole, or not what was queued (its fingerprint), is dropped, and
    // the segment comes from the repository.
    const q = queuedPath(names[5]!);
    fs.truncateSync(q, 8192);
    const torn = get(names[5]!);
    toNodeGet(torn, /the queued copy: its size is not the segment size its header declares/, names[5]!);
    assert.equal(torn.status, 0, show(args(names[5]!), torn));
    same(names[5]!);
    const flipped = fs.readFileSync(queuedPath(names[6]!));
    flipped[flipped.length - 5000] = flipped[flipped.length - 5000]! ^ 0x40;
    fs.writeFileSync(queuedPath(names[6]!), flipped);
    const changed = get(names[6]!);
    toNodeGet(changed, /has other content/, names[6]!);
    assert.equal(changed.status, 0, show(args(names[6]!), changed));
    same(names[6]!);

    // Another repository instance at the location: the queue is not used (Node empties it).
    assert.equal(push(names[7]!).status, 0);
    const binding = path.join(path.dirname(q), 'repository');
    fs.writeFileSync(binding, `${'0'.repeat(64)}\n`);
    const other = get(names[7]!);
    toNodeGet(other, /the prefetch queue is not bound to the repository instance at this location/, names[7]!);
    assert.equal(other.status, 0, show(args(names[7]!), other));
    same(names[7]!);
    assert.match(fs.readFileSync(binding, 'utf8'), /^[0-9a-f]{64}\n$/);
    assert.notEqual(fs.readFileSync(binding, 'utf8').trim(), '0'.repeat(64), 'Node bound the queue to the instance at the location');

    // The end of the archive: exit 1, quietly, as without prefetch.
    const end = get('0000000100000000000000FF');
    assert.equal(end.status, 1, show(args('0000000100000000000000FF'), end));
  });

  test('PostgreSQL archiving through the front synchronously: every segment arrives intact', async () => {
    const command = [...Object.entries({ ...env, HOLDFAST_ZZ_NOTE: 'archiver' }).map(([k, v]) => `${k}='${v}'`), FRONT, 'pg', 'archive-push', '%p'].join(' ');
    pg.configure({ archive_command: command });
    await pg.psql('SELECT pg_reload_conf()');
    const burst: string[] = [];
    for (let i = 0; i < 6; i++) {
      await pg.psql(`INSERT INTO t SELECT g, repeat('p', 300) FROM generate_series(1, 3000) g`);
      burst.push(await pg.switchWal({ force: true }));
    }
    const last = burst.at(-1)!;
    await waitUntil(`${last} archived`, async () => (await pg.psql('SELECT last_archived_wal FROM pg_stat_archiver')) >= last, { timeoutMs: 120_000 });
    for (const seg of burst) assert.ok(fetched(seg).equals(fs.readFileSync(path.join(pg.dataDir, 'pg_wal', seg))), `${seg} is archived intact`);
    const log = fs.readFileSync(pg.logFile, 'utf8');
    assert.doesNotMatch(log, /The failed archive command was: .*holdfast/, 'no call failed');
    assert.ok((log.match(new RegExp(STORED.source, 'g'))?.length ?? 0) > 0, `some segments were stored without Node\n${log.slice(-4000)}`);
  });
});
