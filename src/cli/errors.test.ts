/**
 * Every user-facing failure through the CLI has its own exit code, names its catalogue code on
 * stderr with a hint, and leaves the repository as it was: wrong password, missing repository,
 * existing repository, snapshot not found, invalid configuration, permission denied, unreadable
 * sources, restore target not empty.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Rng, cli } from '../testing/helpers.js';
import { type Env, cliUnprivileged, dirSize, expectError, fails, initRepo, ok, okJson, restoredPath, show, unprivilegedAvailable, unprivilegedUid, workspace } from '../testing/e2e.js';

const PASSWORD = 'correct horse';

describe('error codes', { timeout: 120_000 }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let repo: string;
  let src: string;
  let env: Env;

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-e2e-err-'));
    await fsp.chmod(dir, 0o755); // the unprivileged runs must reach into it
    repo = path.join(dir, 'repo');
    src = path.join(dir, 'src');
    const rng = new Rng(12);
    await fsp.mkdir(path.join(src, 'sub'), { recursive: true });
    await fsp.writeFile(path.join(src, 'a.txt'), rng.text(3000));
    await fsp.writeFile(path.join(src, 'b.tmp'), rng.bytes(300));
    await fsp.writeFile(path.join(src, 'sub/c.bin'), rng.bytes(30_000));
    env = initRepo(repo, PASSWORD);
    ok(['backup', src], env);
  });
  after(() => cleanup());

  test('wrong password: exit 12, WRONG_PASSWORD, nothing written', async () => {
    const bad = { ...env, HOLDFAST_PASSWORD: 'correct horsE' };
    const size = dirSize(repo);
    fails(['snapshots'], bad, 12, 'WRONG_PASSWORD', repo);
    fails(['backup', src], bad, 12, 'WRONG_PASSWORD');
    fails(['restore', 'latest', '--target', path.join(dir, 'never')], bad, 12, 'WRONG_PASSWORD');
    assert.ok(!fs.existsSync(path.join(dir, 'never')));
    assert.equal(dirSize(repo), size);

    const pwFile = path.join(dir, 'pw');
    await fsp.writeFile(pwFile, 'wrong\n', { mode: 0o600 });
    fails(['snapshots', '--password-file', pwFile], { HOLDFAST_REPO: repo }, 12, 'WRONG_PASSWORD');
    await fsp.writeFile(pwFile, `${PASSWORD}\n`);
    ok(['snapshots', '--password-file', pwFile], { HOLDFAST_REPO: repo });
    ok(['snapshots'], { HOLDFAST_REPO: repo, HOLDFAST_PASSWORD_FILE: pwFile });

    // --json: the error is also a JSON document on stdout.
    const r = cli(['snapshots', '--json'], bad);
    assert.equal(r.status, 12);
    const doc = JSON.parse(r.stdout) as { error: { code: string; exitCode: number; hint: string; retryable: boolean } };
    assert.equal(doc.error.code, 'WRONG_PASSWORD');
    assert.equal(doc.error.exitCode, 12);
    assert.equal(doc.error.retryable, false);
    assert.ok(doc.error.hint.length > 10);
  });

  test('no repository at the location: exit 10, REPO_NOT_FOUND, nothing created', async () => {
    const missing = path.join(dir, 'no-such-repo');
    fails(['snapshots'], { ...env, HOLDFAST_REPO: missing }, 10, 'REPO_NOT_FOUND', missing);
    fails(['backup', src], { ...env, HOLDFAST_REPO: missing }, 10, 'REPO_NOT_FOUND', missing);
    fails(['check'], { HOLDFAST_PASSWORD: PASSWORD }, 3, 'CONFIG_INVALID'); // no location at all is a config error
    fails(['snapshots', '--repo', `file://${missing}`], { HOLDFAST_PASSWORD: PASSWORD }, 10, 'REPO_NOT_FOUND', missing);
    assert.ok(!fs.existsSync(missing), 'a command other than init must not create the repository');
    const empty = path.join(dir, 'empty-dir');
    await fsp.mkdir(empty);
    fails(['ls', 'latest'], { ...env, HOLDFAST_REPO: empty }, 10, 'REPO_NOT_FOUND', empty);
    assert.deepEqual(fs.readdirSync(empty), []);
    fails(['snapshots', '--repo', 'gs://bucket/x'], { HOLDFAST_PASSWORD: PASSWORD }, 3, 'CONFIG_INVALID', 'gs'); // a storage type holdfast does not have
  });

  test('a backup path that does not exist: exit 2, USAGE, nothing written', () => {
    const size = dirSize(repo);
    const missing = path.join(dir, 'no such source');
    fails(['backup', src, missing], env, 2, 'USAGE', missing);
    fails(['backup', path.join(src, 'a.txt', 'below-a-file')], env, 2, 'USAGE', 'below-a-file');
    assert.equal(dirSize(repo), size);
  });

  test('init over an existing repository: exit 13, REPO_EXISTS', () => {
    const size = dirSize(repo);
    fails(['init', '--kdf-cost', '10'], env, 13, 'REPO_EXISTS');
    assert.equal(dirSize(repo), size);
    ok(['snapshots'], env);
  });

  test('snapshot not found: exit 17, SNAPSHOT_NOT_FOUND', () => {
    fails(['restore', 'deadbeef', '--target', path.join(dir, 'never')], env, 17, 'SNAPSHOT_NOT_FOUND', 'deadbeef');
    fails(['ls', 'not-an-id'], env, 17, 'SNAPSHOT_NOT_FOUND', 'not-an-id');
    fails(['diff', 'latest', '0000000000'], env, 17, 'SNAPSHOT_NOT_FOUND', '0000000000');
    assert.ok(!fs.existsSync(path.join(dir, 'never')));
    const fresh = path.join(dir, 'fresh');
    const e = initRepo(fresh, PASSWORD);
    fails(['restore', 'latest', '--target', path.join(dir, 'never')], e, 17, 'SNAPSHOT_NOT_FOUND', 'latest');
    assert.deepEqual(okJson(['snapshots'], e), []);
  });

  test('invalid configuration: exit 3, CONFIG_INVALID, naming the file and line or the option', async () => {
    const conf = path.join(dir, 'holdfast.conf');
    const pwFile = path.join(dir, 'pw-conf');
    await fsp.writeFile(pwFile, `${PASSWORD}\n`, { mode: 0o600 });
    // A valid file first, so the failures below are about what is wrong, not about files at all.
    await fsp.writeFile(conf, `# comment\n[global]\nrepo = ${repo}\npassword-file = ${pwFile}\nexclude = *.tmp\ncompression = zstd:5\n`);
    const snap = okJson<{ snapshot: string }>(['backup', src, '--config', conf], {}).snapshot;
    const listed = ok(['ls', snap, '--config', conf], {}).stdout;
    assert.ok(listed.includes(`${src}/a.txt`) && !listed.includes(`${src}/b.tmp`), `the config file's exclude was not applied:\n${listed}`);

    const size = dirSize(repo);
    await fsp.writeFile(conf, `[global]\nrepo ${repo}\n`);
    fails(['snapshots', '--config', conf], {}, 3, 'CONFIG_INVALID', `${conf}:2`);
    await fsp.writeFile(conf, `repo = ${repo}\ncolour = blue\n`);
    fails(['snapshots', '--config', conf], { HOLDFAST_PASSWORD: PASSWORD }, 3, 'CONFIG_INVALID', `${conf}:2`, 'colour');
    fails(['snapshots'], { HOLDFAST_PASSWORD: PASSWORD, HOLDFAST_CONFIG: conf }, 3, 'CONFIG_INVALID', 'colour');
    await fsp.writeFile(conf, `repo = ${repo}\ntarget = /tmp\n`);
    fails(['snapshots', '--config', conf], { HOLDFAST_PASSWORD: PASSWORD }, 3, 'CONFIG_INVALID', 'target', 'not allowed');
    await fsp.writeFile(conf, `repo = ${repo}\npack-size = huge\n`);
    fails(['backup', src, '--config', conf], { HOLDFAST_PASSWORD: PASSWORD }, 3, 'CONFIG_INVALID', 'pack-size', 'huge');
    await fsp.writeFile(conf, `[postgres]\nrepo = ${repo}\n`);
    fails(['snapshots', '--config', conf], { HOLDFAST_PASSWORD: PASSWORD }, 3, 'CONFIG_INVALID', 'postgres');
    fails(['snapshots', '--config', path.join(dir, 'absent.conf')], env, 3, 'CONFIG_INVALID', 'absent.conf');

    fails(['backup', src, '--compression', 'lz9'], env, 3, 'CONFIG_INVALID', '--compression: ', 'lz9');
    fails(['backup', src], { ...env, HOLDFAST_COMPRESSION: 'zstd:99' }, 3, 'CONFIG_INVALID', 'HOLDFAST_COMPRESSION: ', 'zstd:99');
    fails(['backup', src, '--pack-size', '1KiB'], env, 3, 'CONFIG_INVALID', '--pack-size');
    fails(['init', '--kdf-cost', '5'], { ...env, HOLDFAST_REPO: path.join(dir, 'never') }, 3, 'CONFIG_INVALID', '--kdf-cost');
    fails(['snapshots', '--log-level', 'loud'], env, 3, 'CONFIG_INVALID', 'loud');
    assert.equal(dirSize(repo), size, 'a configuration error must not write to the repository');
    assert.ok(!fs.existsSync(path.join(dir, 'never')));
  });

  test('precedence is flag > environment > config file, and only the winning value is used', async () => {
    const conf = path.join(dir, 'precedence.conf');
    const missing = path.join(dir, 'not-a-repo');
    await fsp.writeFile(conf, `repo = ${missing}\ncompression = lz9\n`);
    fails(['snapshots', '--config', conf], { HOLDFAST_PASSWORD: PASSWORD }, 10, 'REPO_NOT_FOUND', missing);
    ok(['snapshots', '--config', conf], env); // HOLDFAST_REPO beats the file
    fails(['snapshots', '--config', conf, '--repo', missing], env, 10, 'REPO_NOT_FOUND', missing); // the flag beats HOLDFAST_REPO
    fails(['backup', src, '--config', conf], env, 3, 'CONFIG_INVALID', 'lz9', `${conf}:2`);
    ok(['backup', src, '--config', conf], { ...env, HOLDFAST_COMPRESSION: 'none' });
    ok(['backup', src, '--config', conf, '--compression', 'zstd:1'], { ...env, HOLDFAST_COMPRESSION: 'bogus' });
    ok(['check'], env);
  });

  test('restore target not empty: exit 22, TARGET_NOT_EMPTY, the target untouched; --force overrides', async () => {
    const target = path.join(dir, 'busy');
    await fsp.mkdir(target);
    await fsp.writeFile(path.join(target, 'precious'), 'keep me');
    fails(['restore', 'latest', '--target', target], env, 22, 'TARGET_NOT_EMPTY', target);
    assert.deepEqual(fs.readdirSync(target), ['precious']);
    const file = path.join(dir, 'a-file');
    await fsp.writeFile(file, 'x');
    fails(['restore', 'latest', '--target', file], env, 22, 'TARGET_NOT_EMPTY', file);
    assert.equal(fs.readFileSync(file, 'utf8'), 'x');

    ok(['restore', 'latest', '--target', target, '--force'], env);
    assert.equal(fs.readFileSync(path.join(target, 'precious'), 'utf8'), 'keep me');
    assert.ok(fs.readFileSync(path.join(restoredPath(target, src), 'a.txt')).equals(fs.readFileSync(path.join(src, 'a.txt'))));
  });

  test('restore --force where the target has a directory in place of a snapshot file: exit 25, TARGET_CONFLICT, nothing replaced', async () => {
    const target = path.join(dir, 'conflict');
    const clash = path.join(restoredPath(target, src), 'a.txt');
    await fsp.mkdir(path.join(clash, 'inside'), { recursive: true });
    fails(['restore', 'latest', '--target', target, '--force'], env, 25, 'TARGET_CONFLICT', clash);
    assert.ok(fs.statSync(path.join(clash, 'inside')).isDirectory(), 'the directory in the way is left alone');
  });

  describe('permission denied (run unprivileged)', { skip: unprivilegedAvailable() ? false : 'cannot run as an unprivileged user here (root without runuser)' }, () => {
    test('an unreadable password file: exit 16, PERMISSION_DENIED', async () => {
      const pwFile = path.join(dir, 'root-only.pw');
      await fsp.writeFile(pwFile, `${PASSWORD}\n`, { mode: 0o600 });
      if (process.getuid?.() !== 0) await fsp.chmod(pwFile, 0o000);
      const r = cliUnprivileged(['snapshots', '--password-file', pwFile], { HOLDFAST_REPO: repo });
      expectError(r, ['snapshots', '--password-file', pwFile], 16, 'PERMISSION_DENIED', pwFile);
    });

    test('a repository the user cannot read: exit 16, PERMISSION_DENIED, not REPO_NOT_FOUND', async (t) => {
      if (process.getuid?.() !== 0) {
        // Not root: make our own repository unreadable to ourselves, and restore it afterwards.
        await fsp.chmod(path.join(repo, 'config'), 0o000);
        t.after(() => fsp.chmod(path.join(repo, 'config'), 0o600));
      }
      const r = cliUnprivileged(['snapshots'], env);
      expectError(r, ['snapshots'], 16, 'PERMISSION_DENIED');
    });

    test('backup and restore as an unprivileged user meet unreadable and unwritable paths', async () => {
      const { uid, gid } = unprivilegedUid();
      const home = path.join(dir, 'unpriv');
      await fsp.mkdir(home);
      const mine = path.join(home, 'src');
      await fsp.mkdir(mine);
      await fsp.writeFile(path.join(mine, 'readable'), 'hello');
      await fsp.writeFile(path.join(mine, 'secret'), 'top secret', { mode: 0o600 });
      await fsp.mkdir(path.join(home, 'private'), { mode: 0o700 });
      await fsp.writeFile(path.join(home, 'private', 'file'), 'x');
      await fsp.mkdir(path.join(home, 'not-mine'), { mode: 0o755 });
      const asRoot = process.getuid?.() === 0;
      if (asRoot) {
        for (const p of [home, mine, path.join(mine, 'readable')]) await fsp.chown(p, uid, gid);
      } else {
        await fsp.chmod(path.join(mine, 'secret'), 0o000);
        await fsp.chmod(path.join(home, 'private'), 0o000);
        await fsp.chmod(path.join(home, 'not-mine'), 0o555);
      }
      const e: Env = { HOLDFAST_REPO: path.join(home, 'repo'), HOLDFAST_PASSWORD: PASSWORD };
      let r = cliUnprivileged(['init', '--kdf-cost', '10'], e);
      assert.equal(r.status, 0, show(['init'], r));

      // An unreadable file inside the tree: the snapshot is saved without it, exit 21.
      r = cliUnprivileged(['backup', mine, '--json'], e);
      expectError(r, ['backup', mine], 21, 'SOURCE_UNREADABLE', path.join(mine, 'secret'));
      const saved = JSON.parse(r.stdout) as { snapshot: string; errors: Array<{ path: string }> };
      assert.deepEqual(saved.errors.map((x) => x.path), [path.join(mine, 'secret')]);
      r = cliUnprivileged(['ls', saved.snapshot], e);
      assert.equal(r.status, 0, show(['ls'], r));
      assert.ok(r.stdout.includes(`${mine}/readable`) && !r.stdout.includes(`${mine}/secret`), r.stdout);

      // A path that cannot even be looked at: refused before anything is written, exit 16.
      const size = dirSize(path.join(home, 'repo'));
      r = cliUnprivileged(['backup', path.join(home, 'private', 'file')], e);
      expectError(r, ['backup'], 16, 'PERMISSION_DENIED', path.join(home, 'private', 'file'));
      assert.equal(dirSize(path.join(home, 'repo')), size);

      // A restore target the user cannot create.
      const target = path.join(home, 'not-mine', 'target');
      r = cliUnprivileged(['restore', 'latest', '--target', target], e);
      expectError(r, ['restore'], 16, 'PERMISSION_DENIED', target);
      assert.ok(!fs.existsSync(target));

      r = cliUnprivileged(['check', '--read-data'], e);
      assert.equal(r.status, 0, show(['check'], r));
    });
  });
});
