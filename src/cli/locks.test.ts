/**
 * Locks end to end: killed holders never block, concurrent backups exclude each other with the
 * holder named, foreign locks are respected until their heartbeat lapses, a holder that loses its
 * lock commits nothing, and `locks` / `unlock` report and clean up.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Repository } from '../repository/repository.js';
import { LocalBackend } from '../storage/local.js';
import { RepositoryLockStore } from '../locks/repository.js';
import { currentOwner } from '../locks/owner.js';
import { newLockId } from '../locks/protocol.js';
import { Rng, TEST_KDF, cli, cliSpawn } from '../testing/helpers.js';
import { type Env, expectError, initRepo, ok, okJson, show, workspace } from '../testing/e2e.js';

async function waitUntil(what: string, cond: () => boolean, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (let i = 0; i < 1_000_000; i++) {
    if (cond()) return;
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout?.resume();
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, stderr })));
}

function lockObjects(repo: string): string[] {
  try {
    return fs.readdirSync(path.join(repo, 'locks')).filter((n) => !n.startsWith('.'));
  } catch {
    return [];
  }
}

function packCount(repo: string): number {
  let n = 0;
  try {
    for (const d of fs.readdirSync(path.join(repo, 'data'))) n += fs.readdirSync(path.join(repo, 'data', d)).length;
  } catch {
    // no data yet
  }
  return n;
}

/** A source tree big enough that a single-threaded backup runs for a while (incompressible). */
function bigSource(dir: string, mb: number, seed = 7): string {
  const src = path.join(dir, 'src');
  fs.mkdirSync(src, { recursive: true });
  const rng = new Rng(seed);
  for (let i = 0; i < mb; i++) fs.writeFileSync(path.join(src, `f${String(i).padStart(4, '0')}`), rng.bytes(1 << 20));
  return src;
}

async function setup(prefix: string, mb = 40): Promise<{ dir: string; repo: string; src: string; env: Env; cleanup: () => Promise<void> }> {
  const { dir, cleanup } = await workspace(prefix);
  const repo = path.join(dir, 'repo');
  const env: Env = { ...initRepo(repo), HOLDFAST_LOCK_DIR: path.join(dir, 'locks') };
  return { dir, repo, src: bigSource(dir, mb), env, cleanup };
}

/** Add a second key and return its id (an exclusive operation needs something to remove). */
function addSecondKey(env: Env, password: string): string {
  ok(['key', 'add', '--kdf-cost', TEST_KDF], { ...env, HOLDFAST_NEW_PASSWORD: password });
  return okJson<Array<{ id: string; current: boolean }>>(['key', 'list'], env).find((k) => !k.current)!.id;
}

/** A repository with its own lock directory, in a fresh workspace. */
async function plainRepo(prefix: string): Promise<{ dir: string; repo: string; env: Env; cleanup: () => Promise<void> }> {
  const { dir, cleanup } = await workspace(prefix);
  const repo = path.join(dir, 'repo');
  return { dir, repo, env: { ...initRepo(repo), HOLDFAST_LOCK_DIR: path.join(dir, 'locks') }, cleanup };
}

async function openStore(repo: string, password = 'correct horse'): Promise<{ r: Repository; store: RepositoryLockStore }> {
  const r = await Repository.open(new LocalBackend(repo), password);
  return { r, store: new RepositoryLockStore(r, repo) };
}

test('a backup SIGKILLed at several points never blocks the next backup or an exclusive key removal; each dead lock removal is logged', async () => {
  const w = await setup('holdfast-locks-kill-');
  try {
    const rng = new Rng(4);
    let randomAt: number | undefined;
    const points: Array<[string, (packsBefore: number) => boolean]> = [
      ['its repository lock exists', () => lockObjects(w.repo).length > 0],
      ['its first pack is written', (packsBefore) => lockObjects(w.repo).length > 0 && packCount(w.repo) > packsBefore],
      ['a seeded random moment of the data phase has come', () => lockObjects(w.repo).length > 0 && Date.now() >= (randomAt ??= Date.now() + rng.int(200))],
    ];
    for (const [i, [point, reached]] of points.entries()) {
      // New data each round, so that every backup writes packs (an unchanged tree writes none).
      if (i > 0) bigSource(path.join(w.dir, `round${i}`), 40, i + 10);
      const src = i > 0 ? path.join(w.dir, `round${i}`, 'src') : w.src;
      const packsBefore = packCount(w.repo);
      const cond = (): boolean => reached(packsBefore);
      const child = cliSpawn(['backup', '--jobs', '0', '--pack-size', '4MiB', src], w.env);
      const done = exited(child);
      await waitUntil(point, cond);
      child.kill('SIGKILL');
      const r = await done;
      assert.equal(r.signal, 'SIGKILL', `the backup was killed when ${point}\n${r.stderr}`);
      assert.equal(lockObjects(w.repo).length, 1, 'the killed backup left its repository lock behind');
      assert.equal(fs.readdirSync(path.join(w.dir, 'locks')).length, 1, 'and its local lock');

      // The next backup of the same paths: the dead local lock is removed and logged.
      const next = ok(['backup', '--jobs', '0', src], w.env);
      assert.match(next.stderr, new RegExp(`removed stale lock of backup \\(PID ${child.pid} on [^)]+\\) on backup of ${src.replace(/[/.]/g, '\\$&')}: its process .* no longer exists`), show(['backup'], next));
      // An exclusive operation: the dead shared repository lock is removed and logged.
      const other = addSecondKey(w.env, `second ${point}`);
      const removed = ok(['key', 'remove', other.slice(0, 12)], w.env);
      assert.match(removed.stderr, new RegExp(`removed stale lock of backup \\(PID ${child.pid} on .*no longer exists`), show(['key', 'remove'], removed));
      assert.deepEqual(lockObjects(w.repo), []);
    }
    ok(['check'], w.env);
  } finally {
    await w.cleanup();
  }
});

test('two backups of the same paths: the second fails naming the holder, or waits with --lock-wait; a stopped holder is alive, not stale', async () => {
  const w = await setup('holdfast-locks-two-', 24);
  try {
    const first = cliSpawn(['backup', '--jobs', '0', w.src], w.env);
    const done = exited(first);
    await waitUntil('the first backup holds its locks', () => lockObjects(w.repo).length > 0 && fs.readdirSync(path.join(w.dir, 'locks')).length > 0);
    first.kill('SIGSTOP');
    try {
      const args = ['backup', '--jobs', '0', w.src];
      const second = cli(args, w.env);
      expectError(second, args, 11, 'LOCKED', `locked by backup (PID ${first.pid} on `, '--lock-wait');
      // Other paths are another scope: no conflict (shared repository lock).
      const other = path.join(w.dir, 'other');
      fs.mkdirSync(other);
      fs.writeFileSync(path.join(other, 'x'), 'x');
      ok(['backup', other], w.env);
      // locks lists the holder as live.
      const listed = okJson<{ locks: Array<{ where: string; operation: string; pid: number; stale: boolean }> }>(['locks'], w.env);
      assert.ok(listed.locks.some((l) => l.where === 'repository' && l.pid === first.pid && !l.stale), JSON.stringify(listed));
      assert.ok(listed.locks.some((l) => l.where === 'local' && l.pid === first.pid && !l.stale), JSON.stringify(listed));
      // unlock keeps live locks.
      const u = okJson<{ removed: unknown[]; kept: unknown[] }>(['unlock'], w.env);
      assert.equal(u.removed.length, 0);
      assert.equal(u.kept.length, 2);
    } finally {
      first.kill('SIGCONT');
    }
    const waiting = cliSpawn(['backup', '--jobs', '0', '--lock-wait', '2m', w.src], w.env);
    const waited = exited(waiting);
    const r1 = await done;
    assert.equal(r1.code, 0, r1.stderr);
    const r2 = await waited;
    assert.equal(r2.code, 0, r2.stderr);
    ok(['check'], w.env);
  } finally {
    await w.cleanup();
  }
});

test('a lock written by another host: respected while fresh, removed once its heartbeat is older than its TTL', async () => {
  const { repo, env, cleanup } = await plainRepo('holdfast-locks-foreign-');
  try {
    const other = addSecondKey(env, 'second');
    const { r, store } = await openStore(repo);
    const owner = { ...currentOwner(), host: 'db7.other.example', machineId: 'e'.repeat(32), pid: 31337 };
    const now = Date.now();
    const fresh = { id: newLockId(), kind: 'shared' as const, operation: 'backup', scope: `repository ${repo}`, owner, created: now - 3_600_000, refreshed: now - 30_000, ttlMs: 300_000 };
    await store.create(fresh);
    const args = ['key', 'remove', other.slice(0, 12)];
    const blocked = cli(args, env);
    expectError(blocked, args, 11, 'LOCKED', 'locked by backup (PID 31337 on db7.other.example', 'age 1h00m', 'becomes stale');
    assert.match(blocked.stderr, /refreshed 3\ds ago/);
    const listed = okJson<{ locks: Array<{ host: string; stale: boolean }> }>(['locks'], env);
    assert.deepEqual(listed.locks.map((l) => [l.host, l.stale]), [['db7.other.example', false]]);

    await store.write({ ...fresh, refreshed: now - 301_000 });
    const removed = ok(args, env);
    assert.match(removed.stderr, /removed stale lock of backup \(PID 31337 on db7\.other\.example.*not refreshed for 5m0\ds \(its TTL is 5m00s\)/, show(args, removed));
    assert.deepEqual(lockObjects(repo), []);
    await r.close();
  } finally {
    await cleanup();
  }
});

test('--no-remove-stale-locks keeps stale locks blocking; unlock removes stale ones; unlock --all removes live ones with a warning', async () => {
  const { repo, env, cleanup } = await plainRepo('holdfast-locks-unlock-');
  try {
    const other = addSecondKey(env, 'second');
    const { r, store } = await openStore(repo);
    const now = Date.now();
    const owner = { ...currentOwner(), host: 'far.example', machineId: 'd'.repeat(32), pid: 77 };
    await store.create({ id: newLockId(), kind: 'shared', operation: 'backup', scope: 'x', owner, created: now, refreshed: now - 900_000, ttlMs: 300_000 });
    await store.create({ id: newLockId(), kind: 'exclusive', operation: 'key remove', scope: 'x', owner: { ...owner, pid: 78 }, created: now, refreshed: now, ttlMs: 300_000 });
    const args = ['key', 'remove', other.slice(0, 12), '--no-remove-stale-locks'];
    expectError(cli(args, env), args, 11, 'LOCKED');
    assert.equal(lockObjects(repo).length, 2);

    const u = okJson<{ removed: Array<{ pid: number }>; kept: Array<{ pid: number }> }>(['unlock'], env);
    assert.deepEqual(u.removed.map((l) => l.pid), [77]);
    assert.deepEqual(u.kept.map((l) => l.pid), [78]);
    const all = ok(['unlock', '--all'], env);
    assert.match(all.stderr, /removing LIVE repository lock of key remove \(PID 78 on far\.example/);
    assert.deepEqual(lockObjects(repo), []);
    ok(['key', 'remove', other.slice(0, 12)], env);
    await r.close();
  } finally {
    await cleanup();
  }
});

test('a backup whose lock is deleted from under it stops before committing (exit 35); the repository stays consistent', async () => {
  const w = await setup('holdfast-locks-lost-', 24);
  try {
    ok(['backup', path.join(w.src, 'f0000')], w.env);
    const before = okJson<unknown[]>(['snapshots'], w.env).length;
    const child = cliSpawn(['backup', '--jobs', '0', w.src], w.env);
    const done = exited(child);
    await waitUntil('the backup holds its repository lock', () => lockObjects(w.repo).length > 0);
    child.kill('SIGSTOP');
    for (const n of lockObjects(w.repo)) fs.rmSync(path.join(w.repo, 'locks', n));
    child.kill('SIGCONT');
    const r = await done;
    assert.equal(r.code, 35, r.stderr);
    assert.match(r.stderr, /lost the lock on repository .*removed by another process.*\[LOCK_LOST\]/s);
    assert.equal(okJson<unknown[]>(['snapshots'], w.env).length, before, 'no snapshot written');
    ok(['check'], w.env);
    ok(['backup', '--jobs', '0', w.src], w.env);
  } finally {
    await w.cleanup();
  }
});

test('a lock directory inside the repository is refused; the default lock directory is outside the repository', async () => {
  const { dir, cleanup } = await workspace('holdfast-locks-dir-');
  try {
    const repo = path.join(dir, 'repo');
    const env = initRepo(repo);
    fs.writeFileSync(path.join(dir, 'f'), 'x');
    const args = ['backup', path.join(dir, 'f')];
    expectError(cli(args, { ...env, HOLDFAST_LOCK_DIR: path.join(repo, 'locks-here') }), args, 3, 'CONFIG_INVALID', 'inside the repository');
    const listed = okJson<{ lockDir: string }>(['locks'], env);
    assert.ok(!listed.lockDir.startsWith(repo), listed.lockDir);
    ok(args, env);
  } finally {
    await cleanup();
  }
});
