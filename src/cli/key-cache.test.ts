/** The CLI caches derived keys only for passwords stored in a file, and not with --no-key-cache. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { TEST_KDF, cli, tmpDir } from '../testing/helpers.js';

test('key cache: used with --password-file (from init on), never with HOLDFAST_PASSWORD, off with --no-key-cache', async () => {
  const { dir, cleanup } = await tmpDir();
  try {
    const repo = path.join(dir, 'repo');
    const pw = path.join(dir, 'pw');
    fs.writeFileSync(pw, 'filed secret\n', { mode: 0o600 });
    const state = (name: string): string => path.join(dir, name);
    const entries = (name: string): string[] => (fs.existsSync(path.join(state(name), 'keys')) ? fs.readdirSync(path.join(state(name), 'keys')).filter((n) => n !== 'secret') : []);
    assert.equal(cli(['init', '--repo', repo, '--password-file', pw, '--kdf-cost', TEST_KDF], { HOLDFAST_STATE_DIR: state('s0') }).status, 0);
    assert.equal(entries('s0').length, 1, 'init caches the key it derived for a password file');
    // The next command opens with that entry: a miss would run scrypt and write the entry again.
    const entry = path.join(state('s0'), 'keys', entries('s0')[0]!);
    const before = fs.statSync(entry);
    assert.equal(cli(['snapshots', '--repo', repo, '--password-file', pw], { HOLDFAST_STATE_DIR: state('s0') }).status, 0);
    const after = fs.statSync(entry);
    assert.deepEqual([after.ino, after.mtimeMs], [before.ino, before.mtimeMs], 'the entry init wrote is used as it is');
    const other = path.join(dir, 'repo-env');
    assert.equal(cli(['init', '--repo', other, '--kdf-cost', TEST_KDF], { HOLDFAST_PASSWORD: 'filed secret', HOLDFAST_STATE_DIR: state('init-env') }).status, 0);
    assert.deepEqual(entries('init-env'), [], 'init caches nothing for a password from the environment');

    assert.equal(cli(['snapshots', '--repo', repo], { HOLDFAST_PASSWORD: 'filed secret', HOLDFAST_STATE_DIR: state('env') }).status, 0);
    assert.deepEqual(entries('env'), [], 'a password from the environment is not cached');

    assert.equal(cli(['snapshots', '--repo', repo, '--password-file', pw, '--no-key-cache'], { HOLDFAST_STATE_DIR: state('off') }).status, 0);
    assert.deepEqual(entries('off'), []);

    assert.equal(cli(['snapshots', '--repo', repo, '--password-file', pw], { HOLDFAST_STATE_DIR: state('on') }).status, 0);
    assert.equal(entries('on').length, 1, 'a password file is cached');
    // The cached key opens the repository; a changed password file does not ride on it.
    assert.equal(cli(['snapshots', '--repo', repo, '--password-file', pw], { HOLDFAST_STATE_DIR: state('on') }).status, 0);
    fs.writeFileSync(pw, 'another secret\n');
    assert.equal(cli(['snapshots', '--repo', repo, '--password-file', pw], { HOLDFAST_STATE_DIR: state('on') }).status, 12);
  } finally {
    await cleanup();
  }
});
