/**
 * The SFTP driver against a real OpenSSH server (a private sshd on a loopback port, see
 * testing/sshd.ts): the storage contract, host-key verification, authentication, connection
 * reuse and loss, streaming of a large object, and the location syntax.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { StorageError, type StorageErrorKind } from './backend.js';
import { assertBytes, backendContract, listAll } from './contract.js';
import { LimitBackend } from './limit.js';
import { SftpBackend, parseSftpLocation } from './sftp.js';
import { HoldfastError } from '../errors/catalogue.js';
import { Rng, tmpDir } from '../testing/helpers.js';
import { type Sshd, generateKey, sshdSkip, startSshd } from '../testing/sshd.js';

const skip = sshdSkip();

/** Every file below `dir` (relative), hidden ones included. */
async function filesBelow(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const ent of await fsp.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (ent.isFile()) out.push(path.relative(dir, path.join(ent.parentPath, ent.name)));
  }
  return out.sort();
}

async function rejectsWith(p: Promise<unknown>, kind: StorageErrorKind, ...mentions: Array<string | RegExp>): Promise<StorageError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof StorageError, `expected StorageError(${kind}), got ${String(err)}`);
    assert.equal(err.kind, kind, `kind of: ${err.message}`);
    for (const m of mentions) {
      if (typeof m === 'string') assert.ok(err.message.includes(m), `message should mention ${JSON.stringify(m)}: ${err.message}`);
      else assert.match(err.message, m);
    }
    return err;
  }
  assert.fail(`expected StorageError(${kind}), but the call resolved`);
}

/** The fingerprint ssh-keygen prints for a public key file. */
function sshKeygenFingerprint(pubFile: string): string {
  const r = spawnSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', pubFile], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split(/\s+/)[1]!;
}

describe('sftp driver', { skip }, () => {
  let sshd: Sshd;
  before(async () => {
    sshd = await startSshd();
  });
  after(async () => {
    await sshd?.stop();
  });

  /** A fresh remote directory (the server is on this machine) and a backend on it. */
  async function fresh(settings: { identityFile?: string; knownHosts?: string } = {}): Promise<{ b: SftpBackend; dir: string; cleanup: () => Promise<void> }> {
    const { dir, cleanup } = await tmpDir('holdfast-sftp-');
    const b = new SftpBackend(sshd.url(`${dir}/repo`), { identityFile: sshd.clientKey, knownHosts: sshd.knownHosts, ...settings });
    return { b, dir: `${dir}/repo`, cleanup };
  }

  // The contract runs through LimitBackend as openBackend stacks it; the driver alone below.
  backendContract('sftp', async () => {
    const f = await fresh();
    return { backend: new LimitBackend(f.b), cleanup: f.cleanup };
  });
  backendContract('sftp (unwrapped)', async () => {
    const f = await fresh();
    return { backend: f.b, cleanup: f.cleanup };
  }, { largeObjectBytes: 4 << 20, concurrentPuts: 60 });

  test('objects are plain files under the remote directory; temporary files are neither left nor listed', async () => {
    const { b, dir, cleanup } = await fresh();
    try {
      const rng = new Rng(7);
      const data = rng.bytes(1000);
      await b.put('data/ab/ab01', data);
      await b.put('keys/k', rng.bytes(10), { createOnly: true });
      await rejectsWith(b.put('keys/k', rng.bytes(10), { createOnly: true }), 'exists');
      const w = await b.openWriter();
      await w.write([rng.bytes(5000)]);
      await w.commit('data/cd/cd01', { createOnly: true });
      assertBytes(await fsp.readFile(path.join(dir, 'data/ab/ab01')), data, 'file on the server');
      assert.deepEqual(await filesBelow(dir), ['data/ab/ab01', 'data/cd/cd01', 'keys/k']);
      // What a writer killed between open and rename leaves behind is never listed.
      await fsp.writeFile(path.join(dir, 'data/ab/.tmp-ab02-0123456789ab'), 'x');
      await fsp.writeFile(path.join(dir, '.tmp-writer-0123456789ab'), 'x');
      assert.deepEqual((await listAll(b, '')).map((o) => o.name), ['data/ab/ab01', 'data/cd/cd01', 'keys/k']);
      // A symlink is not an object.
      await fsp.symlink(path.join(dir, 'keys/k'), path.join(dir, 'keys/link'));
      assert.deepEqual((await listAll(b, 'keys/')).map((o) => o.name), ['keys/k']);
    } finally {
      await b.close();
      await cleanup();
    }
  });

  test('one SSH connection serves every operation of a backend', async () => {
    const { b, cleanup } = await fresh();
    const loginsBefore = sshd.acceptedLogins();
    try {
      const rng = new Rng(11);
      await Promise.all(Array.from({ length: 40 }, (_, i) => b.put(`data/${i % 4}/o${i}`, rng.bytes(2000 + i))));
      for (let i = 0; i < 10; i++) await b.get(`data/${i % 4}/o${i}`, { offset: 10, length: 100 });
      await Promise.all(Array.from({ length: 20 }, (_, i) => b.stat(`data/${i % 4}/o${i}`)));
      assert.equal((await listAll(b, 'data/')).length, 40);
      const w = await b.openWriter();
      await w.write([rng.bytes(100)]);
      await w.commit('data/w');
      await b.delete('data/w');
      assert.equal(b.stats.connections, 1, 'the backend opened one connection');
    } finally {
      await b.close();
      await cleanup();
    }
    // The server's own count: sshd logs one "Accepted publickey" per login. Its log may lag.
    for (let i = 0; i < 50 && sshd.acceptedLogins() === loginsBefore; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(sshd.acceptedLogins() - loginsBefore, 1, 'sshd accepted one login for the whole test');
  });

  test('close() completes in a process with nothing else to do, and an unclosed backend does not keep a process alive', async () => {
    const { dir, cleanup } = await tmpDir('holdfast-sftp-exit-');
    try {
      const script = (close: boolean): string => `
        import { SftpBackend } from ${JSON.stringify(new URL('./sftp.js', import.meta.url).href)};
        const [url, identityFile, knownHosts] = process.argv.slice(1);
        const b = new SftpBackend(url, { identityFile, knownHosts });
        await b.put('x', Buffer.from('hello'));
        console.log((await b.get('x')).toString());
        ${close ? "await b.close(); console.log('closed');" : ''}`;
      for (const close of [true, false]) {
        const r = spawnSync(process.execPath, ['--input-type=module', '-e', script(close), sshd.url(`${dir}/repo`), sshd.clientKey, sshd.knownHosts], { encoding: 'utf8', timeout: 30_000 });
        assert.equal(r.error, undefined, `the process ended by itself (close: ${close})`);
        assert.equal(r.status, 0, `exit status (close: ${close}; 13 means a promise never settled): ${r.stderr}`);
        assert.equal(r.stdout, close ? 'hello\nclosed\n' : 'hello\n');
      }
    } finally {
      await cleanup();
    }
  });

  test('a large object is streamed through openWriter in pieces and read back whole and by ranges', async () => {
    const { b, dir, cleanup } = await fresh();
    try {
      const rng = new Rng(23);
      const piece = 1 << 20;
      const pieces = 48;
      const hash = createHash('sha256');
      const w = await b.openWriter();
      const sample: Buffer[] = [];
      for (let i = 0; i < pieces; i++) {
        const buf = rng.bytes(piece);
        hash.update(buf);
        if (i === 0 || i === pieces - 1) sample.push(Buffer.from(buf));
        await w.write([buf.subarray(0, 1000), buf.subarray(1000)]);
        buf.fill(0); // reused by the caller once write resolved
      }
      await w.commit('data/ff/large', { createOnly: true });
      const expected = hash.digest('hex');
      assert.equal((await b.stat('data/ff/large')).size, piece * pieces);
      const whole = await b.get('data/ff/large');
      assert.equal(createHash('sha256').update(whole).digest('hex'), expected, 'content read through SFTP');
      const onDisk = await fsp.readFile(path.join(dir, 'data/ff/large'));
      assert.equal(createHash('sha256').update(onDisk).digest('hex'), expected, 'content of the file on the server');
      assertBytes(await b.get('data/ff/large', { offset: 0, length: piece }), sample[0]!, 'first piece by range');
      assertBytes(await b.get('data/ff/large', { offset: (pieces - 1) * piece, length: piece }), sample[1]!, 'last piece by range');
    } finally {
      await b.close();
      await cleanup();
    }
  });

  test('an unknown host key is refused with its fingerprint and the command that would add it', async () => {
    const { dir, cleanup } = await tmpDir('holdfast-sftp-kh-');
    const empty = path.join(dir, 'known_hosts');
    await fsp.writeFile(empty, '');
    const fp = sshKeygenFingerprint(path.join(sshd.dir, 'host_ed25519_key.pub'));
    const b = new SftpBackend(sshd.url(`${dir}/repo`), { identityFile: sshd.clientKey, knownHosts: empty });
    try {
      const err = await rejectsWith(b.put('x', Buffer.from('x')), 'permission', fp, `[127.0.0.1]:${sshd.port}`, 'unknown', `ssh-keyscan -p ${sshd.port} -t ed25519 127.0.0.1 >> ${empty}`);
      assert.equal(err.permanent, true);
      // A missing file is the same refusal, saying so.
      const none = new SftpBackend(sshd.url(`${dir}/repo`), { identityFile: sshd.clientKey, knownHosts: path.join(dir, 'absent') });
      await rejectsWith(none.stat('x'), 'permission', fp, 'does not exist');
      await none.close();
      // Nothing was written, and the file was not changed behind our back.
      assert.equal(await fsp.readFile(empty, 'utf8'), '');
      await assert.rejects(fsp.stat(path.join(dir, 'repo')));
      // Adding the key the way the message says makes it work.
      await fsp.writeFile(empty, `[127.0.0.1]:${sshd.port} ${sshd.hostKeys.get('ed25519')}\n`);
      const ok = new SftpBackend(sshd.url(`${dir}/repo`), { identityFile: sshd.clientKey, knownHosts: empty });
      await ok.put('x', Buffer.from('x'));
      await ok.close();
    } finally {
      await b.close();
      await cleanup();
    }
  });

  test('a changed host key is refused loudly, naming both fingerprints', async () => {
    const { dir, cleanup } = await tmpDir('holdfast-sftp-kh-');
    const other = generateKey(path.join(dir, 'other_host_key'));
    const file = path.join(dir, 'known_hosts');
    await fsp.writeFile(file, `# an old key of this server\n[127.0.0.1]:${sshd.port} ${other}\n`);
    const b = new SftpBackend(sshd.url(`${dir}/repo`), { identityFile: sshd.clientKey, knownHosts: file });
    try {
      await rejectsWith(
        b.get('x'),
        'permission',
        'HAS CHANGED',
        'man-in-the-middle',
        sshKeygenFingerprint(path.join(sshd.dir, 'host_ed25519_key.pub')),
        sshKeygenFingerprint(path.join(dir, 'other_host_key.pub')),
        'line 2',
        `ssh-keygen -R '[127.0.0.1]:${sshd.port}'`,
      );
      // The same key for another port of the host, or for port 22, does not count.
      await fsp.writeFile(file, `127.0.0.1 ${sshd.hostKeys.get('ed25519')}\n[127.0.0.1]:${sshd.port + 1} ${sshd.hostKeys.get('ed25519')}\n`);
      const b2 = new SftpBackend(sshd.url(`${dir}/repo`), { identityFile: sshd.clientKey, knownHosts: file });
      await rejectsWith(b2.get('x'), 'permission', 'unknown');
      await b2.close();
      // A revoked key is refused even when it is also listed as trusted.
      await fsp.writeFile(file, `[127.0.0.1]:${sshd.port} ${sshd.hostKeys.get('ed25519')}\n@revoked * ${sshd.hostKeys.get('ed25519')}\n`);
      const b3 = new SftpBackend(sshd.url(`${dir}/repo`), { identityFile: sshd.clientKey, knownHosts: file });
      await rejectsWith(b3.get('x'), 'permission', '@revoked');
      await b3.close();
    } finally {
      await b.close();
      await cleanup();
    }
  });

  test('hashed known_hosts entries (ssh-keygen -H) are recognised', async () => {
    const { dir, cleanup } = await tmpDir('holdfast-sftp-kh-');
    const file = path.join(dir, 'known_hosts');
    await fsp.copyFile(sshd.knownHosts, file);
    const r = spawnSync('ssh-keygen', ['-H', '-f', file], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(await fsp.readFile(file, 'utf8'), /^\|1\|/, 'the file is hashed');
    const b = new SftpBackend(sshd.url(`${dir}/repo`), { identityFile: sshd.clientKey, knownHosts: file });
    try {
      await b.put('x', Buffer.from('hashed'));
      assert.equal((await b.get('x')).toString(), 'hashed');
    } finally {
      await b.close();
      await cleanup();
    }
  });

  test('a wrong client key is a permission error naming the login', async () => {
    const { dir, cleanup } = await tmpDir('holdfast-sftp-key-');
    const wrong = path.join(dir, 'wrong_key');
    generateKey(wrong);
    const b = new SftpBackend(sshd.url(`${dir}/repo`), { identityFile: wrong, knownHosts: sshd.knownHosts });
    const saved = process.env['SSH_AUTH_SOCK'];
    delete process.env['SSH_AUTH_SOCK']; // only the wrong key may be tried
    try {
      const err = await rejectsWith(b.put('x', Buffer.from('x')), 'permission', `${sshd.user}@[127.0.0.1]:${sshd.port}`, 'refused the SSH login', wrong);
      assert.equal(err.permanent, true);
      const missing = new SftpBackend(sshd.url(`${dir}/repo`), { identityFile: path.join(dir, 'no-such-key'), knownHosts: sshd.knownHosts });
      await rejectsWith(missing.stat('x'), 'permission', 'no-such-key', '--sftp-identity');
      await missing.close();
      // A key with a passphrase cannot be used without an agent; the message says so.
      const locked = path.join(dir, 'locked_key');
      assert.equal(spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'secret', '-f', locked]).status, 0);
      const withPass = new SftpBackend(sshd.url(`${dir}/repo`), { identityFile: locked, knownHosts: sshd.knownHosts });
      await rejectsWith(withPass.stat('x'), 'permission', 'passphrase', 'ssh-agent');
      await withPass.close();
    } finally {
      if (saved !== undefined) process.env['SSH_AUTH_SOCK'] = saved;
      await b.close();
      await cleanup();
    }
  });

  test('a server with several host keys presents the type known_hosts has', async () => {
    const multi = await startSshd({ hostKeyTypes: ['ed25519', 'ecdsa'] });
    const { dir, cleanup } = await tmpDir('holdfast-sftp-kh-');
    try {
      const file = path.join(dir, 'known_hosts');
      await fsp.writeFile(file, `[127.0.0.1]:${multi.port} ${multi.hostKeys.get('ecdsa')}\n`);
      const b = new SftpBackend(multi.url(`${dir}/repo`), { identityFile: multi.clientKey, knownHosts: file });
      await b.put('x', Buffer.from('ecdsa'));
      await b.close();
    } finally {
      await multi.stop();
      await cleanup();
    }
  });

  test('a lost connection fails the next request as transient; a new connection is opened when the server is back', async () => {
    const own = await startSshd();
    const { dir, cleanup } = await tmpDir('holdfast-sftp-lost-');
    // The server's directory goes when it stops; the backend's key and known_hosts must stay.
    await fsp.copyFile(own.clientKey, path.join(dir, 'key'));
    await fsp.copyFile(own.knownHosts, path.join(dir, 'known_hosts'));
    const b = new SftpBackend(own.url(`${dir}/repo`), { identityFile: path.join(dir, 'key'), knownHosts: path.join(dir, 'known_hosts') }, { connectTimeoutMs: 5000 });
    try {
      await b.put('x', Buffer.from('before'));
      await own.stop(); // kills the session process too: the connection drops
      const err = await rejectsWith(b.get('x'), 'transient');
      assert.equal(err.permanent, false);
      assert.ok(b.stats.connections >= 1);
    } finally {
      await b.close();
      await cleanup();
    }
    // Reconnecting: a second server, and a backend whose first connection is dropped by the client side.
    const again = await startSshd();
    const { dir: dir2, cleanup: cleanup2 } = await tmpDir('holdfast-sftp-lost-');
    const b2 = new SftpBackend(again.url(`${dir2}/repo`), { identityFile: again.clientKey, knownHosts: again.knownHosts });
    try {
      await b2.put('x', Buffer.from('one'));
      // Kill the server-side session, as a network failure would cut it.
      assert.ok(again.sessionPids().length >= 1, 'the session has a server process');
      again.killSessions();
      let lost: unknown;
      for (let i = 0; i < 100; i++) {
        try {
          await b2.stat('x');
        } catch (e) {
          lost = e;
          break;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(lost instanceof StorageError && lost.kind === 'transient', `a request on the dead connection fails as transient: ${String(lost)}`);
      assert.equal((await b2.get('x')).toString(), 'one', 'the next request reconnects');
      assert.equal(b2.stats.connections, 2);
    } finally {
      await b2.close();
      await again.stop();
      await cleanup2();
    }
  });
});

describe('sftp locations', () => {
  test('sftp://user@host:port/path, defaults, ~ and IPv6', () => {
    assert.deepEqual(parseSftpLocation('sftp://backup@example.org:2222/srv/repo'), { user: 'backup', host: 'example.org', port: 2222, root: '/srv/repo' });
    assert.deepEqual(parseSftpLocation('sftp://backup@example.org/srv/repo/'), { user: 'backup', host: 'example.org', port: 22, root: '/srv/repo' });
    assert.deepEqual(parseSftpLocation('sftp://b@h/~/repos/one'), { user: 'b', host: 'h', port: 22, root: 'repos/one' });
    assert.deepEqual(parseSftpLocation('sftp://b@h/~'), { user: 'b', host: 'h', port: 22, root: '.' });
    assert.deepEqual(parseSftpLocation('sftp://b@[::1]:2022/r'), { user: 'b', host: '::1', port: 2022, root: '/r' });
    assert.deepEqual(parseSftpLocation('sftp://b%40corp@h/with%20space'), { user: 'b@corp', host: 'h', port: 22, root: '/with space' });
    assert.equal(parseSftpLocation('sftp://h/r').user.length > 0, true, 'the local user by default');
    assert.equal(new SftpBackend('sftp://b@h:22/srv/repo').location, 'sftp://b@h/srv/repo');
    assert.equal(new SftpBackend('sftp://b@[::1]:2022/~/r').location, 'sftp://b@[::1]:2022/~/r');
  });

  test('invalid locations are CONFIG_INVALID naming the problem', () => {
    const cases: Array<[string, RegExp]> = [
      ['sftp://b@h', /no directory/],
      ['sftp://b@h/', /no directory/],
      ['sftp://b:pw@h/r', /passwords/],
      ['sftp://b@h/a/../r', /"\.\."/],
      ['sftp://b@h/a//r', /empty/],
      ['sftp://b@h/r?x=1', /query/],
      ['sftp:///r', /no host/],
    ];
    for (const [loc, re] of cases) {
      assert.throws(
        () => parseSftpLocation(loc),
        (err: unknown) => err instanceof HoldfastError && err.code === 'CONFIG_INVALID' && re.test(err.message),
        loc,
      );
    }
  });
});
