/**
 * Self-tests of the FUSE fault-injection harness (faultfs.ts, faultfs.py): the passthrough behaves
 * like a local disk (also for the postgres user), each operation fails with the requested errno as
 * Node sees it, count and skip are exact, staleAll and clear switch service off and on, remount
 * and unmount work, and no mount outlives its test process.
 *
 * Nothing here depends on timing: faults are logged before the failing reply, control-file
 * changes apply to the next operation, and the only waits are bounded polls for processes that
 * exit on their own.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { faultfsSkip, hasErrno, isMounted, mountFaultFs, type ErrnoName, type FaultFs, type FaultLogEntry, type FaultOp } from './faultfs.js';
import { pgSkip, postgresIds, runAsPostgres, waitUntil } from './pg.js';

const ESTALE = os.constants.errno.ESTALE;
const HERE = path.dirname(fileURLToPath(import.meta.url));

/** Run `fn`, which must throw a system error with errno `name`; return the error. */
function throwsErrno(fn: () => unknown, name: ErrnoName, what: string): NodeJS.ErrnoException {
  try {
    fn();
  } catch (e) {
    assert.ok(hasErrno(e, name), `${what}: expected ${name}, got ${String(e)}`);
    return e as NodeJS.ErrnoException;
  }
  assert.fail(`${what}: expected ${name}, but it succeeded`);
}

describe('faultfs: FUSE fault injection harness', { skip: faultfsSkip(), timeout: 120_000 }, () => {
  let ff: FaultFs;
  let dir: string; // a fresh directory in the mount for each test
  let rel: string; // its path relative to the mount root
  let n = 0;

  /** Faults fired since the start of the current test. */
  let base = 0;
  const firedNow = async (): Promise<FaultLogEntry[]> => (await ff.fired()).slice(base);

  before(async () => {
    ff = await mountFaultFs();
  });
  after(() => ff?.unmount());
  beforeEach(async () => {
    ff.clear();
    rel = `t${++n}`;
    dir = path.join(ff.mountpoint, rel);
    fs.mkdirSync(dir);
    base = (await ff.fired()).length;
  });

  it('mounts a passthrough of the backing directory that behaves like a local disk', async () => {
    assert.ok(isMounted(ff.mountpoint));
    const a = path.join(dir, 'a.tmp');
    const fd = fs.openSync(a, 'wx');
    fs.writeSync(fd, 'hello ');
    fs.writeSync(fd, Buffer.alloc(256 * 1024, 7)); // more than one FUSE write
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    throwsErrno(() => fs.openSync(a, 'wx'), 'EEXIST', 'O_EXCL on an existing file');
    fs.renameSync(a, path.join(dir, 'a'));
    const dfd = fs.openSync(dir, 'r');
    fs.fsyncSync(dfd); // directory fsync, as durable writes do after a rename
    fs.closeSync(dfd);
    assert.deepEqual(fs.readdirSync(dir), ['a']);
    const data = fs.readFileSync(path.join(dir, 'a'));
    assert.equal(data.length, 6 + 256 * 1024);
    assert.equal(data.subarray(0, 6).toString(), 'hello ');

    // The backing directory has the same file: same bytes, same inode (use_ino).
    const b = path.join(ff.backing, rel, 'a');
    assert.deepEqual(fs.readFileSync(b), data);
    assert.equal(fs.statSync(path.join(dir, 'a')).ino, fs.statSync(b).ino);

    // Hard links, symlinks, modes, times, truncate.
    fs.linkSync(path.join(dir, 'a'), path.join(dir, 'h'));
    assert.equal(fs.statSync(path.join(dir, 'a')).nlink, 2);
    fs.symlinkSync('a', path.join(dir, 's'));
    assert.equal(fs.readlinkSync(path.join(dir, 's')), 'a');
    fs.chmodSync(path.join(dir, 'a'), 0o600);
    assert.equal(fs.statSync(b).mode & 0o777, 0o600);
    fs.utimesSync(path.join(dir, 'a'), 1_000_000, 2_000_000);
    assert.equal(fs.statSync(path.join(dir, 'a')).mtimeMs, 2_000_000_000);
    fs.truncateSync(path.join(dir, 'a'), 3);
    assert.equal(fs.readFileSync(path.join(dir, 'h'), 'utf8'), 'hel');

    // An unlinked open file stays readable, and leaves no .fuse_hidden file behind (hard_remove).
    // fstat of it fails with ENOENT, a libfuse 2 limitation (see faultfs.ts).
    const keep = fs.openSync(path.join(dir, 'h'), 'r');
    for (const f of ['a', 'h', 's']) fs.unlinkSync(path.join(dir, f));
    throwsErrno(() => fs.fstatSync(keep), 'ENOENT', 'fstat of an unlinked file');
    const buf = Buffer.alloc(3);
    assert.equal(fs.readSync(keep, buf, 0, 3, 0), 3);
    assert.equal(buf.toString(), 'hel');
    assert.deepEqual(fs.readdirSync(dir), []);
    fs.closeSync(keep);
    fs.rmdirSync(dir);
    assert.equal(fs.existsSync(path.join(ff.backing, rel)), false);
    assert.ok(fs.statfsSync(ff.mountpoint).bsize > 0);
    assert.deepEqual(await firedNow(), [], 'no rules, no faults');
  });

  it('lets the postgres user work in its own directory, with the kernel checking permissions', { skip: pgSkip() }, () => {
    const { uid, gid } = postgresIds();
    fs.chownSync(dir, uid, gid); // through the mount
    const r = runAsPostgres('sh', [
      '-c',
      'set -e; cd "$1"; printf lock > a.tmp; sync a.tmp; mv a.tmp a.lock; mkdir sub; cat a.lock; ls; rm -r sub',
      'sh',
      dir,
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'locka.lock\nsub\n');
    for (const p of [path.join(dir, 'a.lock'), path.join(ff.backing, rel, 'a.lock')]) {
      const st = fs.statSync(p);
      assert.equal(st.uid, uid, `${p} belongs to postgres`);
      assert.equal(st.gid, gid);
    }
    // The mount root belongs to root (0755): postgres may not create files there.
    const denied = runAsPostgres('sh', ['-c', 'printf x > "$1"', 'sh', path.join(ff.mountpoint, 'nope')]);
    assert.notEqual(denied.status, 0);
    assert.match(denied.stderr, /Permission denied/);
    assert.equal(fs.existsSync(path.join(ff.backing, 'nope')), false);
  });

  it('fails open with ESTALE, which Node reports as errno -116', async () => {
    fs.writeFileSync(path.join(dir, 'x.lock'), 'x');
    // count 2: the kernel retries a path operation once after ESTALE (see faultfs.ts).
    ff.setRules([{ op: 'open', errno: 'ESTALE', path: `${rel}/*.lock`, count: 2 }]);
    const e = throwsErrno(() => fs.openSync(path.join(dir, 'x.lock'), 'r'), 'ESTALE', 'open');
    assert.equal(e.errno, -ESTALE);
    assert.equal(e.code, `Unknown system error -${ESTALE}`);
    const fired = await firedNow();
    assert.equal(fired.length, 2);
    for (const f of fired) {
      assert.equal(f.op, 'open');
      assert.equal(f.path, `${rel}/x.lock`);
      assert.equal(f.errno, ESTALE);
      assert.equal(f.code, 'ESTALE');
      assert.equal(f.rule, 0);
      assert.equal(f.pid, process.pid);
      assert.equal(f.uid, 0);
    }
    // Spent: service is back.
    assert.equal(fs.readFileSync(path.join(dir, 'x.lock'), 'utf8'), 'x');
  });

  it('shows that the kernel hides a single ESTALE on a path operation by retrying it', async () => {
    fs.writeFileSync(path.join(dir, 'x.lock'), 'x');
    ff.setRules([{ op: 'open', errno: 'ESTALE', path: '*.lock', count: 1 }]);
    assert.equal(fs.readFileSync(path.join(dir, 'x.lock'), 'utf8'), 'x');
    const fired = await firedNow();
    assert.equal(fired.length, 1, 'the fault fired once and the retry succeeded');
    // On an open descriptor there is no retry: one fault, one failed call.
    const fd = fs.openSync(path.join(dir, 'x.lock'), 'r+');
    ff.setRules([{ op: 'fsync', errno: 'ESTALE', count: 1 }]);
    throwsErrno(() => fs.fsyncSync(fd), 'ESTALE', 'fsync');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    assert.equal((await firedNow()).length, 2);
  });

  it('fails reads and writes with EIO, and open of an existing file with ENOENT', async () => {
    const p = path.join(dir, 'state');
    fs.writeFileSync(p, 'v1');
    ff.setRules([{ op: 'write', errno: 'EIO', path: `${rel}/state` }]);
    const e = throwsErrno(() => fs.writeFileSync(p, 'v2'), 'EIO', 'write');
    assert.equal(e.code, 'EIO');
    ff.setRules([{ op: 'read', errno: 'EIO' }]);
    assert.equal(throwsErrno(() => fs.readFileSync(p), 'EIO', 'read').code, 'EIO');
    ff.setRules([{ op: 'open', errno: 'ENOENT', path: `${rel}/state` }]);
    assert.equal(throwsErrno(() => fs.readFileSync(p), 'ENOENT', 'open').code, 'ENOENT');
    assert.ok(fs.existsSync(path.join(ff.backing, rel, 'state')), 'the file is there all the same');
    ff.clear();
    assert.equal(fs.readFileSync(p, 'utf8'), '', 'the failed write had truncated it (O_TRUNC) first');
    assert.deepEqual(
      (await firedNow()).map((f) => [f.op, f.code]),
      [['write', 'EIO'], ['read', 'EIO'], ['open', 'ENOENT']],
    );
  });

  it('fires a count-limited rule exactly count times, after skip', async () => {
    const fd = fs.openSync(path.join(dir, 'f'), 'w');
    ff.setRules([{ op: 'write', errno: 'EIO', count: 3 }]);
    const results = Array.from({ length: 5 }, () => {
      try {
        fs.writeSync(fd, 'x');
        return 'ok';
      } catch (e) {
        return hasErrno(e, 'EIO') ? 'EIO' : String(e);
      }
    });
    assert.deepEqual(results, ['EIO', 'EIO', 'EIO', 'ok', 'ok']);
    ff.setRules([{ op: 'write', errno: 'EIO', skip: 2, count: 1 }]);
    const results2 = Array.from({ length: 4 }, () => {
      try {
        fs.writeSync(fd, 'y');
        return 'ok';
      } catch (e) {
        return hasErrno(e, 'EIO') ? 'EIO' : String(e);
      }
    });
    assert.deepEqual(results2, ['ok', 'ok', 'EIO', 'ok']);
    fs.closeSync(fd);
    assert.equal(fs.readFileSync(path.join(dir, 'f'), 'utf8'), 'xxyyy');
    assert.equal((await firedNow()).length, 4);
  });

  it('matches rules in order, by op list and path glob, and applies each new rule set at once', async () => {
    fs.writeFileSync(path.join(dir, 'a.lock'), '');
    fs.writeFileSync(path.join(dir, 'b.json'), '');
    ff.setRules([
      { op: ['open', 'create'], errno: 'ENOENT', path: '*.lock', count: 1 },
      { op: '*', errno: 'EIO', path: `${rel}/b.*` },
    ]);
    throwsErrno(() => fs.openSync(path.join(dir, 'a.lock'), 'r'), 'ENOENT', 'rule 0');
    fs.closeSync(fs.openSync(path.join(dir, 'a.lock'), 'r')); // rule 0 spent
    throwsErrno(() => fs.statSync(path.join(dir, 'b.json')), 'EIO', 'rule 1 (getattr)');
    // A failed lookup of a cached name is sent twice (revalidation, then a fresh lookup): count
    // what the rule hit, not how often the kernel asked.
    const fired = (await firedNow()).map((f) => `${f.op}:${f.rule}:${f.path}`);
    assert.equal(fired[0], `open:0:${rel}/a.lock`);
    assert.ok(fired.length >= 2);
    assert.deepEqual(new Set(fired.slice(1)), new Set([`getattr:1:${rel}/b.json`]));
    // Back-to-back rule changes, each visible to the very next operation (no clock involved).
    for (let i = 0; i < 20; i++) {
      const bad = i % 2 === 0 ? 'a.lock' : 'b.json';
      const good = i % 2 === 0 ? 'b.json' : 'a.lock';
      ff.setRules([{ op: 'open', errno: 'EIO', path: `${rel}/${bad}` }]);
      throwsErrno(() => fs.openSync(path.join(dir, bad), 'r'), 'EIO', `round ${i}`);
      fs.closeSync(fs.openSync(path.join(dir, good), 'r'));
    }
  });

  // One case per operation: what makes Node send it, on a path that only the case uses.
  const cases: { op: FaultOp; prepare?: (p: string) => void; act: (p: string) => void }[] = [
    { op: 'getattr', prepare: (p) => fs.writeFileSync(p, 'x'), act: (p) => fs.statSync(p) },
    { op: 'opendir', prepare: (p) => fs.mkdirSync(p), act: (p) => fs.readdirSync(p) },
    { op: 'readdir', prepare: (p) => fs.mkdirSync(p), act: (p) => fs.readdirSync(p) },
    { op: 'open', prepare: (p) => fs.writeFileSync(p, 'x'), act: (p) => withFd(p, 'r', () => undefined) },
    { op: 'create', act: (p) => withFd(p, 'wx', () => undefined) },
    { op: 'read', prepare: (p) => fs.writeFileSync(p, 'x'), act: (p) => fs.readFileSync(p) },
    { op: 'write', prepare: (p) => fs.writeFileSync(p, 'x'), act: (p) => fs.appendFileSync(p, 'y') },
    { op: 'truncate', prepare: (p) => fs.writeFileSync(p, 'x'), act: (p) => fs.truncateSync(p, 0) },
    { op: 'fsync', prepare: (p) => fs.writeFileSync(p, 'x'), act: (p) => withFd(p, 'r+', (fd) => fs.fsyncSync(fd)) },
    { op: 'fsyncdir', prepare: (p) => fs.mkdirSync(p), act: (p) => withFd(p, 'r', (fd) => fs.fsyncSync(fd)) },
    { op: 'flush', prepare: (p) => fs.writeFileSync(p, 'x'), act: (p) => fs.closeSync(fs.openSync(p, 'r')) },
    { op: 'unlink', prepare: (p) => fs.writeFileSync(p, 'x'), act: (p) => fs.unlinkSync(p) },
    { op: 'rename', prepare: (p) => fs.writeFileSync(p, 'x'), act: (p) => fs.renameSync(p, `${p}.new`) },
    { op: 'mkdir', act: (p) => fs.mkdirSync(p) },
    { op: 'rmdir', prepare: (p) => fs.mkdirSync(p), act: (p) => fs.rmdirSync(p) },
    { op: 'link', prepare: (p) => fs.writeFileSync(`${p}.src`, 'x'), act: (p) => fs.linkSync(`${p}.src`, p) },
    { op: 'symlink', act: (p) => fs.symlinkSync('anywhere', p) },
    { op: 'readlink', prepare: (p) => fs.symlinkSync('anywhere', p), act: (p) => fs.readlinkSync(p) },
    { op: 'utimens', prepare: (p) => fs.writeFileSync(p, 'x'), act: (p) => fs.utimesSync(p, 1, 1) },
    { op: 'chmod', prepare: (p) => fs.writeFileSync(p, 'x'), act: (p) => fs.chmodSync(p, 0o600) },
    { op: 'chown', prepare: (p) => fs.writeFileSync(p, 'x'), act: (p) => fs.chownSync(p, 0, 0) },
    { op: 'statfs', prepare: (p) => fs.writeFileSync(p, 'x'), act: (p) => fs.statfsSync(p) },
  ];
  // Not covered: `access` (with default_permissions the kernel checks access(2) itself and never
  // asks) and `mknod` (Node cannot make device nodes or FIFOs).

  for (const errno of ['EIO', 'ESTALE'] as const) {
    it(`fails each operation with ${errno} as Node sees it`, async () => {
      for (const c of cases) {
        const name = `${c.op}-${errno}`;
        const p = path.join(dir, name);
        ff.clear();
        c.prepare?.(p);
        ff.setRules([{ op: c.op, errno, path: `${rel}/${name}` }]);
        throwsErrno(() => c.act(p), errno, c.op);
        const fired = (await firedNow()).filter((f) => f.path === `${rel}/${name}`);
        assert.ok(fired.length >= 1, `${c.op}: a fault was logged`);
        assert.ok(fired.every((f) => f.op === c.op && f.code === errno), `${c.op}: ${JSON.stringify(fired)}`);
        ff.clear();
        c.act(p); // and works once the rule is gone
        base = (await ff.fired()).length;
      }
    });
  }

  it('staleAll fails every operation with ESTALE until clear()', async () => {
    const p = path.join(dir, 'state');
    fs.writeFileSync(p, 'v1');
    const fd = fs.openSync(p, 'r+'); // a handle from before the share "went away"
    ff.staleAll(true);
    const attempts: [string, () => unknown][] = [
      ['stat root', () => fs.statSync(ff.mountpoint)],
      ['readdir', () => fs.readdirSync(dir)],
      ['open', () => fs.openSync(p, 'r')],
      ['create', () => fs.openSync(path.join(dir, 'new'), 'wx')],
      ['mkdir', () => fs.mkdirSync(path.join(dir, 'd'))],
      ['rename', () => fs.renameSync(p, `${p}.2`)],
      ['unlink', () => fs.unlinkSync(p)],
      ['fstat', () => fs.fstatSync(fd)],
      ['read', () => fs.readSync(fd, Buffer.alloc(2), 0, 2, 0)],
      ['write', () => fs.writeSync(fd, 'v2', 0)],
      ['fsync', () => fs.fsyncSync(fd)],
      ['statfs', () => fs.statfsSync(ff.mountpoint)],
    ];
    for (const [what, f] of attempts) throwsErrno(f, 'ESTALE', `${what} under staleAll`);
    const fired = await firedNow();
    assert.ok(fired.length >= attempts.length);
    assert.ok(fired.every((f) => f.code === 'ESTALE' && f.rule === null));

    ff.clear();
    assert.equal(fs.readFileSync(p, 'utf8'), 'v1');
    assert.equal(fs.writeSync(fd, 'v2', 0), 2);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    assert.equal(fs.readFileSync(p, 'utf8'), 'v2');
    assert.deepEqual(fs.readdirSync(dir), ['state']);

    ff.failAll('EIO');
    assert.equal(throwsErrno(() => fs.statSync(p), 'EIO', 'failAll').code, 'EIO');
    ff.failAll(null);
    fs.statSync(p);
  });

  it('rejects rules it does not understand instead of ignoring them', () => {
    assert.throws(() => ff.setRules([{ op: 'opne' as FaultOp, errno: 'EIO' }]), /unknown op "opne"/);
    assert.throws(() => ff.setRules([{ op: 'open', errno: 'ESTAEL' as ErrnoName }]), /unknown errno/);
    assert.throws(() => ff.setRules([{ op: 'open', errno: 'EIO', count: -1 }]), /count must be/);
    assert.throws(() => ff.failAll(0), /unknown errno/);
  });

  it('remount: old descriptors die, paths work again, the files are intact', async () => {
    const p = path.join(dir, 'state');
    fs.writeFileSync(p, 'kept');
    const fd = fs.openSync(p, 'r');
    ff.setRules([{ op: 'open', errno: 'EIO' }]);
    await ff.remount();
    assert.ok(isMounted(ff.mountpoint));
    assert.equal(mountCount(ff.mountpoint), 1, 'one mount, not two stacked');
    // The old daemon is gone: its descriptors fail, even on close (which still frees them).
    throwsErrno(() => fs.readSync(fd, Buffer.alloc(4), 0, 4, 0), 'ENOTCONN', 'read on an old descriptor');
    throwsErrno(() => fs.closeSync(fd), 'ENOTCONN', 'close of an old descriptor');
    assert.equal(fs.readFileSync(p, 'utf8'), 'kept', 'rules were cleared by remount');
  });
});

describe('faultfs: unmounting', { skip: faultfsSkip(), timeout: 120_000 }, () => {
  it('unmount() leaves no mount, no process and no temporary directory; a given backing stays', async () => {
    const backing = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-faultfs-test-'));
    try {
      const ff = await mountFaultFs({ backing });
      const root = path.dirname(ff.mountpoint);
      fs.writeFileSync(path.join(ff.mountpoint, 'f'), 'data');
      const busy = fs.openSync(path.join(ff.mountpoint, 'f'), 'r'); // forces the lazy fallback
      ff.setRules([{ op: 'getattr', errno: 'EIO', count: 1 }]);
      await assert.rejects(fs.promises.stat(path.join(ff.mountpoint, 'f')));
      ff.staleAll(true); // unmounting must not need the filesystem's cooperation
      await ff.unmount();
      throwsErrno(() => fs.closeSync(busy), 'ENOTCONN', 'close after unmount');
      assert.equal(isMounted(ff.mountpoint), false);
      assert.equal(mountCount(ff.mountpoint), 0);
      assert.equal(fs.existsSync(root), false, 'temporary directory removed');
      assert.equal(fs.readFileSync(path.join(backing, 'f'), 'utf8'), 'data', 'backing kept');
      assert.equal((await ff.fired()).length >= 1, true, 'the log outlives the mount');
      assert.equal(pgrepFaultfs(ff.mountpoint), false, 'faultfs.py has exited');
      await ff.unmount(); // idempotent
      assert.throws(() => ff.clear(), /already unmounted/);
    } finally {
      fs.rmSync(backing, { recursive: true, force: true });
    }
  });

  it('owner gives the new mount root to a user', { skip: pgSkip() }, async () => {
    const ids = postgresIds();
    const ff = await mountFaultFs({ owner: ids });
    try {
      assert.equal(fs.statSync(ff.mountpoint).uid, ids.uid);
      const r = runAsPostgres('sh', ['-c', 'printf x > "$1/f"', 'sh', ff.mountpoint]);
      assert.equal(r.status, 0, r.stderr);
    } finally {
      await ff.unmount();
    }
  });

  for (const how of ['exits without unmounting', 'is killed with SIGKILL'] as const) {
    it(`leaves no mount behind when a test process ${how}`, async () => {
      const mod = JSON.stringify(new URL('./faultfs.js', `file://${HERE}/`).href);
      const script =
        `import { mountFaultFs } from ${mod};\n` +
        `const ff = await mountFaultFs();\n` +
        `console.log(ff.mountpoint);\n` +
        (how === 'exits without unmounting' ? 'process.exit(0);\n' : 'setInterval(() => {}, 1000);\n');
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      let out = '';
      child.stdout.setEncoding('utf8');
      const mountpoint = await new Promise<string>((resolve, reject) => {
        child.stdout.on('data', (d: string) => {
          out += d;
          if (out.includes('\n')) resolve(out.trim());
        });
        child.on('close', (code) => reject(new Error(`child exited ${code} before mounting`)));
      });
      assert.ok(mountpoint.includes('holdfast-faultfs-'), mountpoint);
      if (how === 'is killed with SIGKILL') {
        assert.ok(isMounted(mountpoint));
        child.kill('SIGKILL');
        await exited;
        // faultfs.py sees its stdin close and unmounts itself (bounded wait, not a timing bet).
        await waitUntil('the orphaned mount to go away', () => !isMounted(mountpoint), { timeoutMs: 30_000, intervalMs: 50 });
        await waitUntil('faultfs.py to exit', () => !pgrepFaultfs(mountpoint), { timeoutMs: 30_000, intervalMs: 50 });
        fs.rmSync(path.dirname(mountpoint), { recursive: true, force: true }); // nobody else will
      } else {
        assert.equal(await exited, 0);
        // The exit handler unmounted synchronously, before the process ended.
        assert.equal(isMounted(mountpoint), false);
        assert.equal(fs.existsSync(path.dirname(mountpoint)), false);
      }
    });
  }
});

function withFd(p: string, flags: string, f: (fd: number) => void): void {
  const fd = fs.openSync(p, flags);
  try {
    f(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** How many mounts /proc/self/mountinfo lists at `mountpoint`. */
function mountCount(mountpoint: string): number {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.split(' ')[4] === mountpoint).length;
}

/** Whether a faultfs.py for this mountpoint is still running. */
function pgrepFaultfs(mountpoint: string): boolean {
  const r = spawnSync('pgrep', ['-f', `faultfs.py .*${mountpoint}$`], { encoding: 'utf8', timeout: 10_000 });
  return r.status === 0;
}
