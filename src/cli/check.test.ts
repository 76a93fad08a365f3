/**
 * `holdfast check` through the CLI on a good repository and on copies damaged in one way each:
 * a flipped byte in a pack, a truncated pack, a deleted pack, a flipped byte in a snapshot file.
 * Every failure must name the damaged object and the snapshot it affects, and reading the
 * damaged data must fail with the integrity / missing-object errors.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Rng, cli, generateTree } from '../testing/helpers.js';
import { type Env, expectError, initRepo, ok, okJson, packFiles, show, workspace } from '../testing/e2e.js';

interface CheckJson {
  ok: boolean;
  problems: Array<{ kind: string; object: string; message: string; snapshots: string[] }>;
  warnings: string[];
}

describe('check', { timeout: 120_000 }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let good: string;
  let src: string;
  let snapshot: string;
  let copies = 0;
  const rng = new Rng(31337);

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-e2e-check-'));
    src = path.join(dir, 'src');
    good = path.join(dir, 'repo');
    await generateTree(src, { seed: 99, big: [3 << 20, 1 << 20, 2 << 20], smallFiles: 40, emptyFiles: 2, symlinks: true });
    const env = initRepo(good);
    // Small packs, so that there are several and damage to one leaves the others intact.
    snapshot = okJson<{ snapshot: string }>(['backup', src, '--pack-size', '1MiB', '--compression', 'none'], env).snapshot;
  });
  after(() => cleanup());

  /** A fresh copy of the good repository, to damage. */
  function copy(): { repo: string; env: Env } {
    const repo = path.join(dir, `copy-${++copies}`);
    fs.cpSync(good, repo, { recursive: true });
    return { repo, env: { HOLDFAST_REPO: repo, HOLDFAST_PASSWORD: 'correct horse' } };
  }

  /** The largest pack: it holds file data (tree blobs go to their own, small packs). */
  function largestPack(repo: string): { file: string; id: string; size: number } {
    const packs = packFiles(repo).map((file) => ({ file, id: path.basename(file), size: fs.statSync(file).size }));
    assert.ok(packs.length >= 3, `expected several packs, got ${packs.length}`);
    return packs.sort((a, b) => b.size - a.size || a.id.localeCompare(b.id))[0]!;
  }

  function expectCheckFails(env: Env, readData: boolean, object: string): CheckJson {
    const args = ['check', ...(readData ? ['--read-data'] : [])];
    const text = cli(args, env);
    assert.equal(text.status, 23, show(args, text));
    assert.ok(text.stdout.includes(object), `check should name ${object}\n${show(args, text)}`);
    assert.ok(text.stdout.includes(`affects snapshot(s)/backup(s) ${snapshot.slice(0, 8)}`), `check should name the affected snapshot\n${show(args, text)}`);
    assert.match(text.stderr, /\[CHECK_FAILED\]/);
    const json = cli([...args, '--json'], env);
    assert.equal(json.status, 23, show(args, json));
    const report = JSON.parse(json.stdout) as CheckJson;
    assert.equal(report.ok, false);
    const p = report.problems.find((x) => x.object.includes(object) || x.message.includes(object));
    assert.ok(p, `no problem names ${object}: ${JSON.stringify(report.problems)}`);
    assert.deepEqual(p.snapshots, [snapshot]);
    return report;
  }

  test('check and check --read-data pass on a good repository', () => {
    const env: Env = { HOLDFAST_REPO: good, HOLDFAST_PASSWORD: 'correct horse' };
    for (const args of [['check'], ['check', '--read-data']]) {
      const r = ok(args, env);
      assert.match(r.stdout, /no problems found/);
      const report = okJson<CheckJson>(args, env);
      assert.equal(report.ok, true);
      assert.deepEqual(report.problems, []);
      assert.deepEqual(report.warnings, []);
    }
    assert.match(ok(['check', '--read-data'], env).stdout, /read all \d+ packs/);
  });

  test('a flipped byte in a pack fails check --read-data, naming the pack, and restore fails with INTEGRITY', () => {
    const { env, repo } = copy();
    const pack = largestPack(repo);
    const buf = fs.readFileSync(pack.file);
    // Somewhere in the blob area (after the 8-byte magic, well before the header at the end).
    const at = 8 + rng.int(Math.floor(buf.length / 2));
    buf[at] = buf[at]! ^ (1 << rng.int(8));
    fs.writeFileSync(pack.file, buf);

    expectCheckFails(env, true, pack.id);
    const r = cli(['restore', 'latest', '--target', path.join(dir, 'restore-flip')], env);
    expectError(r, ['restore'], 14, 'INTEGRITY', pack.id);
  });

  test('a truncated pack fails check with and without --read-data', () => {
    const { env, repo } = copy();
    const pack = largestPack(repo);
    fs.truncateSync(pack.file, Math.floor(pack.size / 2));

    const report = expectCheckFails(env, false, pack.id);
    assert.ok(report.problems.some((p) => p.kind === 'pack-size'), JSON.stringify(report.problems));
    expectCheckFails(env, true, pack.id);
    const r = cli(['restore', 'latest', '--target', path.join(dir, 'restore-trunc')], env);
    expectError(r, ['restore'], 14, 'INTEGRITY', pack.id, 'truncated');
  });

  test('a pack cut by a single byte is caught by plain check', () => {
    const { env, repo } = copy();
    const pack = largestPack(repo);
    fs.truncateSync(pack.file, pack.size - 1);
    expectCheckFails(env, false, pack.id);
  });

  test('a deleted pack fails check and restore reports the missing object', () => {
    const { env, repo } = copy();
    const pack = largestPack(repo);
    fs.rmSync(pack.file);
    const report = expectCheckFails(env, false, pack.id);
    assert.ok(report.problems.some((p) => p.kind === 'pack-missing'), JSON.stringify(report.problems));
    const r = cli(['restore', 'latest', '--target', path.join(dir, 'restore-missing')], env);
    expectError(r, ['restore'], 15, 'OBJECT_MISSING', pack.id);
  });

  test('a flipped byte in a snapshot manifest is reported by check; the copy still serves it; with both damaged, snapshots fails', () => {
    const { env, repo } = copy();
    const flip = (file: string): void => {
      const buf = fs.readFileSync(file);
      const at = rng.int(buf.length);
      buf[at] = buf[at]! ^ 0x20;
      fs.writeFileSync(file, buf);
    };
    flip(path.join(repo, 'snapshots', snapshot));
    const r = cli(['check'], env);
    assert.equal(r.status, 23, show(['check'], r));
    assert.ok(r.stdout.includes(`snapshots/${snapshot}`), show(['check'], r));
    assert.match(r.stdout, /snapshot-manifest-damaged/);
    // The copy catalog/<id> still holds it: listing and restoring work.
    assert.ok(cli(['snapshots'], env).stdout.includes(snapshot.slice(0, 8)));
    flip(path.join(repo, 'catalog', snapshot));
    expectError(cli(['snapshots'], env), ['snapshots'], 14, 'INTEGRITY', `snapshots/${snapshot}`);
  });

  test('--read-data-subset: the parts n/t read every pack exactly once, N% reads the same share every time; a damaged pack is found by its part only', () => {
    const { env, repo } = copy();
    const packs = packFiles(repo).length;
    const parts = [1, 2, 3].map((n) => okJson<{ stats: { packsRead: number } }>(['check', '--read-data-subset', `${n}/3`, '--json'], env).stats.packsRead);
    assert.equal(parts.reduce((a, b) => a + b, 0), packs, `parts ${parts.join('+')} of ${packs} packs`);
    const half = okJson<{ stats: { packsRead: number } }>(['check', '--read-data-subset', '50%', '--json'], env).stats.packsRead;
    assert.equal(okJson<{ stats: { packsRead: number } }>(['check', '--read-data-subset', '50%', '--json'], env).stats.packsRead, half);
    assert.equal(okJson<{ stats: { packsRead: number } }>(['check', '--read-data-subset', '100%', '--json'], env).stats.packsRead, packs);
    const pack = largestPack(repo);
    const buf = fs.readFileSync(pack.file);
    buf[100] = buf[100]! ^ 1;
    fs.writeFileSync(pack.file, buf);
    const found = [1, 2, 3].filter((n) => cli(['check', '--read-data-subset', `${n}/3`], env).status === 23);
    assert.equal(found.length, 1, `exactly one part finds the damaged pack: ${found.join(',')}`);
    for (const bad of ['0/3', '4/3', '0%', '101%', 'half']) {
      expectError(cli(['check', '--read-data-subset', bad], env), ['check', '--read-data-subset', bad], 2, 'USAGE', '--read-data-subset');
    }
  });

  test('a deleted snapshot manifest or copy is noticed by check (the other records that it existed)', () => {
    for (const dirName of ['snapshots', 'catalog']) {
      const { env, repo } = copy();
      fs.rmSync(path.join(repo, dirName, snapshot));
      const report = expectCheckFails(env, false, `${dirName}/${snapshot}`);
      assert.deepEqual(report.problems.map((p) => p.kind), [dirName === 'snapshots' ? 'snapshot-manifest-missing' : 'snapshot-copy-missing']);
    }
  });
});
