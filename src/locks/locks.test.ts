import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HoldfastError } from '../errors/catalogue.js';
import { Repository } from '../repository/repository.js';
import { MemoryBackend } from '../storage/mem.js';
import { tmpDir } from '../testing/helpers.js';
import { RecordingLog } from '../testing/recording-log.js';
import { LocalLock, LocalLockStore, checkLockDirPlacement, defaultLockDir } from './local.js';
import { type LockOwner, currentOwner, ownerLiveness, procStat } from './owner.js';
import { type LockRecord, type LockStore, acquireLock, judge, listLocks, newLockId } from './protocol.js';
import { RepositoryLockStore } from './repository.js';

function foreignOwner(over: Partial<LockOwner> = {}): LockOwner {
  return { host: 'db-other.example', machineId: 'f'.repeat(32), bootId: '00000000-0000-0000-0000-000000000000', pidNs: 'pid:[1]', pid: 4242, startTime: '1234', ...over };
}

function record(over: Partial<LockRecord> = {}): LockRecord {
  const now = Date.now();
  return { id: newLockId(), kind: 'exclusive', operation: 'prune', scope: 'repository test', owner: currentOwner(), created: now, refreshed: now, ttlMs: 60_000, ...over };
}

/** Start a child that stays alive until killed; returns its pid. */
async function sleeper(): Promise<{ pid: number; kill: () => Promise<void> }> {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', reject);
  });
  return {
    pid: child.pid!,
    kill: () =>
      new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGKILL');
      }),
  };
}

// ------------------------------------------------------------------ owner liveness

test('owner: this process is alive; its record names host, boot id, PID and start time', () => {
  const me = currentOwner();
  assert.equal(me.pid, process.pid);
  assert.match(me.startTime, /^\d+$/);
  assert.match(me.bootId, /^[0-9a-f-]{36}$/);
  assert.equal(me.host, os.hostname());
  assert.equal(ownerLiveness(me), 'alive');
});

test('owner: a killed process is dead; a reused PID (other start time) is dead; a live child is alive', async () => {
  const child = await sleeper();
  const st = procStat(child.pid);
  assert.ok(st);
  const owner: LockOwner = { ...currentOwner(), pid: child.pid, startTime: st.startTime };
  assert.equal(ownerLiveness(owner), 'alive');
  assert.equal(ownerLiveness({ ...owner, startTime: String(Number(st.startTime) + 1) }), 'dead', 'same PID, other start time: the PID was reused');
  await child.kill();
  assert.equal(ownerLiveness(owner), 'dead');
});

test('owner: another host or PID namespace is unknown; this host after a reboot is dead', () => {
  const me = currentOwner();
  assert.equal(ownerLiveness(foreignOwner()), 'unknown');
  assert.equal(ownerLiveness({ ...me, pidNs: 'pid:[999]' , pid: 1 }), 'unknown');
  const rebooted = { ...me, bootId: '11111111-2222-3333-4444-555555555555' };
  assert.equal(ownerLiveness(rebooted), me.machineId ? 'dead' : 'unknown');
});

test('judge: dead owner and lapsed heartbeat are stale; a fresh foreign lock is not', () => {
  const now = Date.now();
  assert.equal(judge(record({ owner: foreignOwner(), refreshed: now - 10_000, ttlMs: 60_000 }), now).stale, false);
  const lapsed = judge(record({ owner: foreignOwner(), refreshed: now - 61_000, ttlMs: 60_000 }), now);
  assert.equal(lapsed.stale, true);
  assert.match(lapsed.reason, /not refreshed for 1m01s \(its TTL is 1m00s\)/);
  // Without a heartbeat a foreign lock is never stale by age (local locks judge by liveness only).
  assert.equal(judge(record({ owner: foreignOwner(), refreshed: 0, ttlMs: 0 }), now).stale, false);
});

// ------------------------------------------------------------------ protocol over a repository store

async function memRepo(): Promise<Repository> {
  return Repository.init(new MemoryBackend(), 'pw', { kdf: { N: 1 << 10, r: 8, p: 1 }, chunker: { min: 512 << 10, avg: 1 << 20, max: 8 << 20 } });
}

const base = { operation: 'test', scope: 'repository mem', waitMs: 0, ttlMs: 60_000, refreshMs: 10_000, removeStale: true };

test('repository locks: shared locks coexist; exclusive excludes and names the holder', async () => {
  const repo = await memRepo();
  const store = new RepositoryLockStore(repo, 'mem');
  const log = new RecordingLog();
  const a = await acquireLock(store, { ...base, kind: 'shared', operation: 'backup', log });
  const b = await acquireLock(store, { ...base, kind: 'shared', operation: 'pg archive-push', log });
  const err = await acquireLock(store, { ...base, kind: 'exclusive', operation: 'key remove', log }).then(
    () => assert.fail('exclusive lock taken while shared ones are held'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof HoldfastError && err.code === 'LOCKED', String(err));
  assert.match(err.message, /locked by (backup|pg archive-push) \(PID \d+ on /);
  assert.match(err.hint, /--lock-wait/);
  assert.equal((await store.list()).length, 2, 'the failed candidate removed its own object');
  await a.release();
  await b.release();
  const x = await acquireLock(store, { ...base, kind: 'exclusive', operation: 'key remove', log });
  await assert.rejects(acquireLock(store, { ...base, kind: 'shared', operation: 'backup', log }), (e: unknown) => e instanceof HoldfastError && e.code === 'LOCKED');
  await x.release();
  assert.deepEqual(await store.list(), []);
});

test('repository locks: a maintenance lock (prune) runs beside shared ones, but not beside another maintenance or an exclusive lock', async () => {
  const repo = await memRepo();
  const store = new RepositoryLockStore(repo, 'mem');
  const log = new RecordingLog();
  const backup = await acquireLock(store, { ...base, kind: 'shared', operation: 'backup', log });
  const prune = await acquireLock(store, { ...base, kind: 'maintenance', operation: 'prune', log });
  assert.deepEqual((await store.list()).map((n) => n.kind).sort(), ['maintenance', 'shared']);
  const archive = await acquireLock(store, { ...base, kind: 'shared', operation: 'pg archive-push', log });
  await assert.rejects(acquireLock(store, { ...base, kind: 'maintenance', operation: 'prune', log }), (e: unknown) => e instanceof HoldfastError && e.code === 'LOCKED' && /locked by prune/.test(e.message));
  await assert.rejects(acquireLock(store, { ...base, kind: 'exclusive', operation: 'key remove', log }), (e: unknown) => e instanceof HoldfastError && e.code === 'LOCKED');
  await Promise.all([backup.release(), archive.release()]);
  await assert.rejects(acquireLock(store, { ...base, kind: 'exclusive', operation: 'key remove', log }), (e: unknown) => e instanceof HoldfastError && e.code === 'LOCKED' && /locked by prune/.test(e.message));
  await prune.release();
  const x = await acquireLock(store, { ...base, kind: 'exclusive', operation: 'key remove', log });
  await assert.rejects(acquireLock(store, { ...base, kind: 'maintenance', operation: 'prune', log }), (e: unknown) => e instanceof HoldfastError && e.code === 'LOCKED');
  await x.release();
});

test('repository locks: --lock-wait waits for the holder to release', async () => {
  const repo = await memRepo();
  const store = new RepositoryLockStore(repo, 'mem');
  const log = new RecordingLog();
  const x = await acquireLock(store, { ...base, kind: 'exclusive', log });
  setTimeout(() => void x.release(), 300);
  const y = await acquireLock(store, { ...base, kind: 'exclusive', waitMs: 20_000, log });
  assert.ok(log.at('info').some((m) => m.includes('waiting for the lock')), 'waiting is announced once');
  await y.release();
});

test('repository locks: a dead local owner, a lapsed foreign heartbeat and an unreadable lock are removed and logged; a fresh foreign lock is kept', async () => {
  const repo = await memRepo();
  const store = new RepositoryLockStore(repo, 'mem');
  const child = await sleeper();
  const st = procStat(child.pid)!;
  await child.kill();
  const dead = record({ owner: { ...currentOwner(), pid: child.pid, startTime: st.startTime }, operation: 'backup', kind: 'shared' });
  const lapsed = record({ owner: foreignOwner(), refreshed: Date.now() - 120_000, ttlMs: 60_000, operation: 'backup', kind: 'shared' });
  await store.create(dead);
  await store.create(lapsed);
  await repo.backend.put(`locks/s-${newLockId()}`, Buffer.from('torn'));
  const log = new RecordingLog();
  const x = await acquireLock(store, { ...base, kind: 'exclusive', operation: 'key remove', log });
  const warns = log.at('warn').join('\n');
  assert.match(warns, new RegExp(`removed stale lock of backup \\(PID ${child.pid} on [^)]*\\) on repository test: its process \\(PID ${child.pid} on .*\\) no longer exists`));
  assert.match(warns, /removed stale lock of backup \(PID 4242 on db-other\.example.*not refreshed for 2m0\ds/);
  assert.match(warns, /removed an unreadable lock/);
  await x.release();
  assert.deepEqual(await store.list(), []);

  // Fresh and foreign: respected, never removed.
  const fresh = record({ owner: foreignOwner(), operation: 'backup', kind: 'shared' });
  await store.create(fresh);
  await assert.rejects(acquireLock(store, { ...base, kind: 'exclusive', log }), /locked by backup \(PID 4242 on db-other\.example/);
  assert.equal((await store.read(fresh)) !== 'gone', true);
});

test('repository locks: --no-remove-stale-locks makes stale locks block', async () => {
  const repo = await memRepo();
  const store = new RepositoryLockStore(repo, 'mem');
  await store.create(record({ owner: foreignOwner(), refreshed: Date.now() - 120_000, kind: 'shared', operation: 'backup' }));
  await assert.rejects(acquireLock(store, { ...base, kind: 'exclusive', removeStale: false, log: new RecordingLog() }), (e: unknown) => e instanceof HoldfastError && e.code === 'LOCKED');
  assert.equal((await store.list()).length, 1);
});

test('repository locks: the heartbeat refreshes; a holder whose lock is deleted loses it and refuses to commit', async () => {
  const repo = await memRepo();
  const store = new RepositoryLockStore(repo, 'mem');
  const log = new RecordingLog();
  const held = await acquireLock(store, { ...base, kind: 'shared', ttlMs: 2000, refreshMs: 50, log });
  repo.setCommitGuard(() => held.verify());
  const first = held.record.refreshed;
  await waitFor(async () => {
    const r = await store.read(held.record);
    return r !== 'gone' && r !== 'unreadable' && r.refreshed > first;
  });
  await repo.saveFile('snapshot', Buffer.from('{}')); // held: commits work
  await store.remove(held.record);
  await assert.rejects(repo.saveFile('snapshot', Buffer.from('{"x":1}')), (e: unknown) => e instanceof HoldfastError && e.code === 'LOCK_LOST');
  assert.equal(held.signal.aborted, true);
  assert.equal((await repo.listFiles('snapshot')).length, 1, 'nothing committed after the lock was lost');
  await held.release();
});

test('repository locks: a holder whose refreshes fail past TTL minus one interval gives up', async () => {
  const repo = await memRepo();
  const inner = new RepositoryLockStore(repo, 'mem');
  let failing = false;
  const store: LockStore = {
    where: inner.where,
    create: (r) => inner.create(r),
    write: (r) => (failing ? Promise.reject(new Error('storage hangs')) : inner.write(r)),
    list: () => inner.list(),
    read: (n) => inner.read(n),
    exists: (n) => (failing ? Promise.reject(new Error('storage hangs')) : inner.exists(n)),
    remove: (n) => inner.remove(n),
  };
  const held = await acquireLock(store, { ...base, kind: 'shared', ttlMs: 400, refreshMs: 50, log: new RecordingLog() });
  failing = true;
  await waitFor(async () => held.signal.aborted);
  assert.throws(() => held.check(), (e: unknown) => e instanceof HoldfastError && e.code === 'LOCK_LOST');
  await held.release();
});

async function waitFor(cond: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (let i = 0; i < 100_000; i++) {
    if (await cond()) return;
    if (Date.now() > deadline) assert.fail('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ------------------------------------------------------------------ local locks

test('local locks: one holder per scope; a SIGKILLed holder never blocks the next; other scopes are independent', async () => {
  const { dir, cleanup } = await tmpDir('holdfast-locks-');
  try {
    const log = new RecordingLog();
    const opts = { lockDir: dir, key: 'pg-backup:repo1:main', scope: 'pg backup of cluster main', operation: 'pg backup', waitMs: 0, removeStale: true, log };
    const a = await LocalLock.acquire(opts);
    await assert.rejects(LocalLock.acquire(opts), (e: unknown) => e instanceof HoldfastError && e.code === 'LOCKED' && e.message.includes(`PID ${process.pid}`));
    const other = await LocalLock.acquire({ ...opts, key: 'pg-backup:repo1:other' });
    await other.release();
    await a.release();
    assert.deepEqual(fs.readdirSync(dir), []);

    // A lock file left by a killed process (written as that process would have).
    const child = await sleeper();
    const st = procStat(child.pid)!;
    const store = new LocalLockStore(dir, opts.key);
    await store.create(record({ owner: { ...currentOwner(), pid: child.pid, startTime: st.startTime }, ttlMs: 0, operation: 'pg backup' }));
    await assert.rejects(LocalLock.acquire(opts), /locked by pg backup/);
    await child.kill();
    const b = await LocalLock.acquire(opts);
    assert.ok(log.at('warn').some((m) => m.includes(`PID ${child.pid}`) && m.includes('no longer exists')), log.lines.map((l) => l.msg).join('\n'));
    await b.release();
  } finally {
    await cleanup();
  }
});

test('local locks: the directory removed under a holder is re-created on verify; removed before acquisition it is re-created', async () => {
  const { dir, cleanup } = await tmpDir('holdfast-locks-');
  try {
    const lockDir = path.join(dir, 'locks');
    const log = new RecordingLog();
    const opts = { lockDir, key: 'k', scope: 'scope', operation: 'op', waitMs: 0, removeStale: true, log };
    const a = await LocalLock.acquire(opts); // directory did not exist: created
    fs.rmSync(lockDir, { recursive: true });
    await a.verify();
    assert.equal(fs.readdirSync(lockDir).length, 1, 'lock file re-created');
    await a.verify();
    assert.equal(log.at('info').filter((m) => m.includes('re-created')).length, 1, 'said once');
    await assert.rejects(LocalLock.acquire(opts), /locked by op/);
    await a.release();
  } finally {
    await cleanup();
  }
});

test('local locks: an unusable lock directory fails once with LOCK_DIR naming it', async () => {
  const { dir, cleanup } = await tmpDir('holdfast-locks-');
  try {
    const file = path.join(dir, 'not-a-dir');
    fs.writeFileSync(file, '');
    await assert.rejects(
      LocalLock.acquire({ lockDir: file, key: 'k', scope: 'scope', operation: 'op', waitMs: 0, removeStale: true, log: new RecordingLog() }),
      (e: unknown) => e instanceof HoldfastError && e.code === 'LOCK_DIR' && e.message.includes(file) && e.exitCode === 36,
    );
  } finally {
    await cleanup();
  }
});

test('local locks: listing every scope and the default directory', async () => {
  const { dir, cleanup } = await tmpDir('holdfast-locks-');
  try {
    const log = new RecordingLog();
    const a = await LocalLock.acquire({ lockDir: dir, key: 'one', scope: 's1', operation: 'backup', waitMs: 0, removeStale: true, log });
    const b = await LocalLock.acquire({ lockDir: dir, key: 'two', scope: 's2', operation: 'restore', waitMs: 0, removeStale: true, log });
    const all = await listLocks(new LocalLockStore(dir, undefined));
    assert.deepEqual(all.map((l) => l.record?.operation).sort(), ['backup', 'restore']);
    assert.ok(all.every((l) => !l.judgement.stale));
    await a.release();
    await b.release();
  } finally {
    await cleanup();
  }
  const d = defaultLockDir({});
  assert.ok(d === '/run/holdfast' || d.startsWith(os.tmpdir()), d);
  assert.ok(fs.statSync(d).isDirectory());
});

test('local locks: a lock directory inside the repository or the data directory is refused', () => {
  assert.throws(() => checkLockDirPlacement('/srv/repo/locks', [{ path: '/srv/repo', what: 'repository' }]), (e: unknown) => e instanceof HoldfastError && e.code === 'CONFIG_INVALID' && e.message.includes('inside the repository'));
  assert.throws(() => checkLockDirPlacement('/var/lib/pg/data', [{ path: '/var/lib/pg/data', what: 'data directory' }]), /inside the data directory/);
  checkLockDirPlacement('/run/holdfast', [{ path: '/srv/repo', what: 'repository' }, { path: '/srv/repository-2', what: 'x' }, { path: undefined, what: 'remote' }]);
  checkLockDirPlacement('/srv/repo2', [{ path: '/srv/repo', what: 'repository' }]);
});
