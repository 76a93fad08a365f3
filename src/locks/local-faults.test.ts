/**
 * Local locks on a lock directory that fails like a remounted network share: ESTALE, EIO and
 * ENOENT injected (by a real FUSE filesystem, src/testing/faultfs.ts) on the lock file at
 * create/open, read, write and unlink, and on everything at once. Each is either absorbed (retry,
 * re-create) or fails once with LOCK_DIR naming the directory; never an unhandled exception.
 */
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HoldfastError } from '../errors/catalogue.js';
import { type FaultFs, faultfsSkip, mountFaultFs } from '../testing/faultfs.js';
import { RecordingLog } from '../testing/recording-log.js';
import { LocalLock, LocalLockStore } from './local.js';
import { listLocks } from './protocol.js';

describe('local locks on a failing lock directory (FUSE)', { skip: faultfsSkip() }, () => {
  let ff: FaultFs;
  let lockDir = '';
  let n = 0;
  before(async () => {
    ff = await mountFaultFs();
  });
  after(async () => {
    await ff?.unmount();
  });
  beforeEach(() => {
    ff.clear();
    lockDir = path.join(ff.mountpoint, `locks${n++}`);
    fs.mkdirSync(lockDir);
  });

  const opts = (log: RecordingLog, key = 'pg-backup:r:main') => ({ lockDir, key, scope: 'pg backup of cluster main', operation: 'pg backup', waitMs: 0, removeStale: true, log });
  const lockFiles = (): string[] => fs.readdirSync(lockDir).filter((f) => f.endsWith('.lock'));
  const fired = async (op: string): Promise<number> => (await ff.fired()).filter((e) => e.op === op).length;

  test('ESTALE and ENOENT on creating the lock file are retried once; the lock is taken', async () => {
    for (const errno of ['ESTALE', 'ENOENT'] as const) {
      // ESTALE: Linux itself retries a path operation once, so two faults make one failed call.
      ff.setRules([{ op: 'create', errno, path: '*.tmp-*', count: errno === 'ESTALE' ? 2 : 1 }]);
      const log = new RecordingLog();
      const lock = await LocalLock.acquire(opts(log));
      assert.ok((await fired('create')) >= 1, `${errno} fired`);
      assert.equal(lockFiles().length, 1);
      await lock.release();
      assert.deepEqual(lockFiles(), []);
      assert.deepEqual(log.at('warn'), [], 'no warning for a fault that was absorbed');
      ff.clear();
    }
  });

  test('EIO on writing the lock file is retried once; the lock is taken', async () => {
    ff.setRules([{ op: 'write', errno: 'EIO', count: 1 }]);
    const lock = await LocalLock.acquire(opts(new RecordingLog()));
    assert.equal(await fired('write'), 1);
    assert.equal(lockFiles().length, 1);
    await lock.release();
  });

  test('ESTALE on opening and EIO on reading another holder\'s lock file: retried, the holder is still seen', async () => {
    const holder = await LocalLock.acquire(opts(new RecordingLog()));
    const store = new LocalLockStore(lockDir, 'pg-backup:r:main');
    const [name] = await store.list();
    assert.ok(name);
    // A second acquirer must read the holder's file despite the fault, and still see it as live.
    for (const rule of [{ op: 'open' as const, errno: 'ESTALE' as const, path: '*.lock', count: 2 }, { op: 'read' as const, errno: 'EIO' as const, path: '*.lock', count: 1 }]) {
      ff.setRules([rule]);
      await assert.rejects(LocalLock.acquire(opts(new RecordingLog())), (e: unknown) => e instanceof HoldfastError && e.code === 'LOCKED' && e.message.includes('locked by pg backup'));
      assert.ok((await fired(rule.op)) >= 1, `${rule.errno} on ${rule.op} fired`);
      ff.clear();
    }
    await holder.release();
  });

  test('ESTALE on unlinking at release: release does not fail; the leftover does not block', async () => {
    const log = new RecordingLog();
    const lock = await LocalLock.acquire(opts(log));
    ff.setRules([{ op: 'unlink', errno: 'ESTALE', path: '*.lock' }]);
    await lock.release();
    assert.ok((await fired('unlink')) >= 1);
    assert.equal(lockFiles().length, 1, 'the file stayed');
    assert.ok(log.at('debug').some((m) => m.includes('release failed')), 'logged at debug level only');
    assert.deepEqual(log.at('warn'), []);
    ff.clear();
    const again = await LocalLock.acquire(opts(log));
    await again.release();
    assert.deepEqual(lockFiles(), [], 'the leftover was removed as stale by the next acquisition');
  });

  test('a lock directory where everything is ESTALE: acquisition fails once with LOCK_DIR; a holder goes on and says so once', async () => {
    ff.staleAll(true);
    await assert.rejects(
      LocalLock.acquire(opts(new RecordingLog())),
      (e: unknown) => e instanceof HoldfastError && e.code === 'LOCK_DIR' && e.exitCode === 36 && e.message.includes(lockDir) && e.message.includes('stale file handle'),
    );
    ff.staleAll(false);

    const log = new RecordingLog();
    const lock = await LocalLock.acquire(opts(log));
    ff.staleAll(true);
    await lock.verify();
    await lock.verify();
    assert.equal(log.at('info').filter((m) => m.includes('not usable right now')).length, 1, 'said once');
    await lock.release(); // never throws
    ff.staleAll(false);
    // The share "comes back" empty (remounted elsewhere): the holder re-creates its file.
    const lock2 = await LocalLock.acquire(opts(log, 'other-scope'));
    for (const f of lockFiles()) fs.rmSync(path.join(lockDir, f));
    await lock2.verify();
    assert.equal(lockFiles().length, 1, 're-created');
    assert.equal((await listLocks(new LocalLockStore(lockDir, undefined))).filter((l) => !l.judgement.stale).length, 1);
    await lock2.release();
  });

  test('persistent EIO on creating lock files: LOCK_DIR, with the errno', async () => {
    ff.setRules([{ op: 'create', errno: 'EIO' }]);
    await assert.rejects(LocalLock.acquire(opts(new RecordingLog())), (e: unknown) => e instanceof HoldfastError && e.code === 'LOCK_DIR' && e.message.includes('EIO'));
  });
});
