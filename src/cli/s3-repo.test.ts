/**
 * End to end through the bundled CLI with the repository in S3 (moto_server on loopback):
 * `--repo s3://bucket/prefix --s3-endpoint … --s3-path-style`, credentials from the standard AWS
 * variables. init, backup (twice), snapshots, ls, restore compared byte for byte, check
 * --read-data, stats, locks, forget with prune, then check again; an existing repository is not
 * re-initialised (create-only config); a missing bucket and a bad location fail with clear errors.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateTree, TEST_KDF } from '../testing/helpers.js';
import { type Env, assertSameTree, fails, ok, okJson, restoredPath, workspace } from '../testing/e2e.js';
import { MOTO_CREDENTIALS, type Moto, motoSkip, startMoto } from '../testing/moto.js';

const MiB = 1 << 20;
const BUCKET = 'holdfast-e2e';

interface BackupJson {
  snapshot: string;
  summary: { files: number; bytesAdded: number };
}

describe('CLI with an S3 repository (moto_server)', { skip: motoSkip() }, () => {
  let moto: Moto;
  let ws: { dir: string; cleanup: () => Promise<void> };
  let env: Env;
  let src: string;

  before(async () => {
    moto = await startMoto({ buckets: [BUCKET] });
    ws = await workspace('holdfast-s3-e2e-');
    src = path.join(ws.dir, 'src');
    await generateTree(src, { seed: 701, big: [3 * MiB, 300_000], smallFiles: 60, emptyFiles: 3, symlinks: true });
    env = {
      ...MOTO_CREDENTIALS,
      AWS_EC2_METADATA_DISABLED: 'true',
      HOLDFAST_PASSWORD: 'correct horse',
      HOLDFAST_LOCK_DIR: path.join(ws.dir, 'locks'),
    };
  });

  after(async () => {
    await moto?.stop();
    await ws?.cleanup();
  });

  /** The repository flags: location as a flag, endpoint and path style as flags too. */
  const repo = (prefix = 'team/repo'): string[] => ['--repo', `s3://${BUCKET}/${prefix}`, '--s3-endpoint', moto.endpoint, '--s3-path-style'];

  test('init, backup, restore, check --read-data, forget --prune against s3://', async () => {
    ok(['init', '--kdf-cost', TEST_KDF, ...repo()], env);
    // init again: the config is created create-only, so an existing repository is never replaced.
    fails(['init', '--kdf-cost', TEST_KDF, ...repo()], env, 13, 'REPO_EXISTS');

    const first = okJson<BackupJson>(['backup', src, '--pack-size', '1MiB', ...repo()], env);
    assert.ok(first.summary.files > 60);
    // The second backup of an unchanged tree adds almost nothing.
    const second = okJson<BackupJson>(['backup', src, ...repo()], env);
    assert.ok(second.summary.bytesAdded < 64 << 10, `unchanged backup added ${second.summary.bytesAdded} bytes`);

    const snaps = okJson<Array<{ id: string }>>(['snapshots', ...repo()], env);
    assert.deepEqual(snaps.map((s) => s.id).sort(), [first.snapshot, second.snapshot].sort());
    const ls = ok(['ls', 'latest', ...repo()], env).stdout;
    assert.match(ls, /big-0\.bin/);

    const target = path.join(ws.dir, 'restored');
    ok(['restore', first.snapshot, '--target', target, ...repo()], env);
    await assertSameTree(src, restoredPath(target, src));

    const check = okJson<{ ok: boolean; problems: unknown[] }>(['check', '--read-data', ...repo()], env);
    assert.equal(check.ok, true, JSON.stringify(check.problems));
    ok(['stats', ...repo()], env);
    const locks = okJson<{ locks: Array<{ where: string }> }>(['locks', ...repo()], env);
    assert.deepEqual(locks.locks.filter((l) => l.where === 'repository'), [], 'no repository lock is left behind');

    ok(['forget', first.snapshot, '--prune', ...repo()], env);
    assert.deepEqual(
      okJson<Array<{ id: string }>>(['snapshots', ...repo()], env).map((s) => s.id),
      [second.snapshot],
    );
    const after = okJson<{ ok: boolean; problems: unknown[]; warnings: unknown[] }>(['check', '--read-data', ...repo()], env);
    assert.equal(after.ok, true, JSON.stringify(after.problems));
    const target2 = path.join(ws.dir, 'restored-2');
    ok(['restore', 'latest', '--target', target2, ...repo()], env);
    await assertSameTree(src, restoredPath(target2, src));
    fs.rmSync(target, { recursive: true, force: true });
    fs.rmSync(target2, { recursive: true, force: true });
  });

  test('options from the environment (HOLDFAST_S3_*) work like flags', () => {
    const envOnly: Env = { ...env, HOLDFAST_REPO: `s3://${BUCKET}/from-env`, HOLDFAST_S3_ENDPOINT: moto.endpoint, HOLDFAST_S3_PATH_STYLE: 'true', HOLDFAST_S3_STORAGE_CLASS: 'STANDARD_IA' };
    ok(['init', '--kdf-cost', TEST_KDF], envOnly);
    const b = okJson<BackupJson>(['backup', path.join(src, 'd1')], envOnly);
    assert.ok(b.summary.files > 0);
    ok(['check', '--read-data'], envOnly);
  });

  test('clear errors: a missing repository, a missing bucket, an invalid location, an endpoint that is not a URL', () => {
    fails(['snapshots', ...repo('nothing/here')], env, 10, 'REPO_NOT_FOUND', `s3://${BUCKET}/nothing/here`);
    fails(['snapshots', '--repo', 's3://no-such-bucket-e2e/x', '--s3-endpoint', moto.endpoint, '--s3-path-style'], env, 19, 'STORAGE_IO', 'no-such-bucket-e2e', 'NoSuchBucket');
    fails(['snapshots', '--repo', 's3://A_B/x'], env, 3, 'CONFIG_INVALID', 'not a valid bucket name');
    fails(['snapshots', ...repo(), '--s3-endpoint', 'ftp://x'], env, 3, 'CONFIG_INVALID', 'http://');
  });
});
