/**
 * End to end through the bundled CLI with the repository on an SFTP server (a private sshd on
 * loopback, testing/sshd.ts): `--repo sftp://root@127.0.0.1:PORT/dir --sftp-identity KEY
 * --sftp-known-hosts FILE`. init, backup (twice), restore compared with the source, check
 * --read-data, no lock or temporary file left behind; the options from the environment; an
 * unknown host key refused before anything is written.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateTree, TEST_KDF } from '../testing/helpers.js';
import { type Env, assertSameTree, fails, ok, okJson, restoredPath, workspace } from '../testing/e2e.js';
import { type Sshd, sshdSkip, startSshd } from '../testing/sshd.js';

const MiB = 1 << 20;

interface BackupJson {
  snapshot: string;
  summary: { files: number; bytesAdded: number };
}

/** Every file below `dir` (relative), hidden ones included. */
function filesBelow(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
}

describe('CLI with an SFTP repository (private sshd)', { skip: sshdSkip() }, () => {
  let sshd: Sshd;
  let ws: { dir: string; cleanup: () => Promise<void> };
  let env: Env;
  let src: string;

  before(async () => {
    sshd = await startSshd();
    ws = await workspace('holdfast-sftp-e2e-');
    src = path.join(ws.dir, 'src');
    await generateTree(src, { seed: 811, big: [3 * MiB, 300_000], smallFiles: 60, emptyFiles: 3, symlinks: true });
    // No agent: the identity file given is the only key.
    env = { HOLDFAST_PASSWORD: 'correct horse', HOLDFAST_LOCK_DIR: path.join(ws.dir, 'locks'), SSH_AUTH_SOCK: undefined };
  });

  after(async () => {
    await sshd?.stop();
    await ws?.cleanup();
  });

  const remoteDir = (): string => path.join(ws.dir, 'remote', 'repo');
  const repo = (): string[] => ['--repo', sshd.url(remoteDir()), '--sftp-identity', sshd.clientKey, '--sftp-known-hosts', sshd.knownHosts];

  test('init, backup, restore, check --read-data against sftp://', async () => {
    ok(['init', '--kdf-cost', TEST_KDF, ...repo()], env);
    fails(['init', '--kdf-cost', TEST_KDF, ...repo()], env, 13, 'REPO_EXISTS');
    assert.ok(fs.existsSync(path.join(remoteDir(), 'config')), 'the repository is on the server, in the directory of the URL');

    const first = okJson<BackupJson>(['backup', src, '--pack-size', '1MiB', ...repo()], env);
    assert.ok(first.summary.files > 60);
    const second = okJson<BackupJson>(['backup', src, ...repo()], env);
    assert.ok(second.summary.bytesAdded < 64 << 10, `unchanged backup added ${second.summary.bytesAdded} bytes`);

    const target = path.join(ws.dir, 'restored');
    ok(['restore', first.snapshot, '--target', target, ...repo()], env);
    await assertSameTree(src, restoredPath(target, src));

    const check = okJson<{ ok: boolean; problems: unknown[] }>(['check', '--read-data', ...repo()], env);
    assert.equal(check.ok, true, JSON.stringify(check.problems));
    const locks = okJson<{ locks: Array<{ where: string }> }>(['locks', ...repo()], env);
    assert.deepEqual(locks.locks.filter((l) => l.where === 'repository'), [], 'no repository lock is left behind');
    const leftovers = filesBelow(remoteDir()).filter((f) => f.split('/').some((seg) => seg.startsWith('.tmp-')));
    assert.deepEqual(leftovers, [], 'no temporary file is left on the server');
  });

  test('the SFTP options come from the environment too', () => {
    const viaEnv: Env = { ...env, HOLDFAST_REPO: sshd.url(remoteDir()), HOLDFAST_SFTP_IDENTITY: sshd.clientKey, HOLDFAST_SFTP_KNOWN_HOSTS: sshd.knownHosts };
    const snaps = okJson<Array<{ id: string }>>(['snapshots'], viaEnv);
    assert.equal(snaps.length, 2);
  });

  test('an unknown host key is refused with its fingerprint, and nothing is written', () => {
    const empty = path.join(ws.dir, 'empty_known_hosts');
    fs.writeFileSync(empty, '');
    const fresh = path.join(ws.dir, 'remote', 'never');
    const args = ['init', '--kdf-cost', TEST_KDF, '--repo', sshd.url(fresh), '--sftp-identity', sshd.clientKey, '--sftp-known-hosts', empty];
    const r = fails(args, env, 16, 'PERMISSION_DENIED', 'host key', 'SHA256:', `ssh-keyscan -p ${sshd.port} -t ed25519 127.0.0.1 >> ${empty}`);
    assert.doesNotMatch(r.stderr, /at .*\.js:\d+/, 'no stack trace');
    assert.equal(fs.existsSync(fresh), false);
  });
});
