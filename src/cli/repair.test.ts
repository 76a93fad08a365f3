/**
 * `repair index`, `repair packs` and `repair snapshots` through the CLI, each on a copy of one good
 * repository damaged in one way: what check reports is put right, every snapshot that did not
 * depend on the damaged data restores byte-identical, what is lost is named, dry runs change
 * nothing, and a second run finds nothing to do.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Rng, cli, generateTree } from '../testing/helpers.js';
import { type Env, assertSameTree, initRepo, ok, okJson, packFiles, restoredPath, show, workspace } from '../testing/e2e.js';
import type { RepairIndexResult, RepairSnapshotsResult } from '../ops/repair.js';

interface CheckJson {
  ok: boolean;
  problems: Array<{ kind: string; object: string; snapshots: string[] }>;
}

/** Every file of a directory tree with its bytes, for comparing repository copies. */
function snapshotOfDir(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const stack = [dir];
  for (let n = 0; stack.length > 0 && n < 100_000; n++) {
    const d = stack.pop()!;
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else out.set(path.relative(dir, p), fs.readFileSync(p).toString('base64'));
    }
  }
  return out;
}

describe('repair', { timeout: 300_000 }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let good: string;
  let srcA: string;
  let srcB: string;
  let snapA: string;
  let snapB: string;
  let copies = 0;
  const rng = new Rng(4242);

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-e2e-repair-'));
    good = path.join(dir, 'repo');
    srcA = path.join(dir, 'a');
    srcB = path.join(dir, 'b');
    await generateTree(srcA, { seed: 1, big: [1 << 20, 600_000], smallFiles: 30, emptyFiles: 1, symlinks: true });
    await generateTree(srcB, { seed: 2, big: [900_000], smallFiles: 20, emptyFiles: 1, symlinks: false });
    const env = initRepo(good);
    // Small packs: damage to one leaves the others intact; no compression keeps offsets simple.
    snapA = okJson<{ snapshot: string }>(['backup', srcA, '--pack-size', '1MiB', '--compression', 'none'], env).snapshot;
    snapB = okJson<{ snapshot: string }>(['backup', srcB, '--pack-size', '1MiB', '--compression', 'none'], env).snapshot;
  });
  after(() => cleanup());

  function copy(): { repo: string; env: Env } {
    const repo = path.join(dir, `copy-${++copies}`);
    fs.cpSync(good, repo, { recursive: true });
    return { repo, env: { HOLDFAST_REPO: repo, HOLDFAST_PASSWORD: 'correct horse' } };
  }

  function writePw(pw: string): string {
    const file = path.join(dir, `pw-${++copies}`);
    fs.writeFileSync(file, pw, { mode: 0o600 });
    return file;
  }

  function check(env: Env, readData = true): CheckJson {
    const args = ['check', '--json', ...(readData ? ['--read-data'] : [])];
    const r = cli(args, env);
    assert.ok(r.status === 0 || r.status === 23, show(args, r));
    return JSON.parse(r.stdout) as CheckJson;
  }

  async function restoresIdentical(env: Env, id: string, src: string): Promise<void> {
    const target = path.join(dir, `restore-${++copies}`);
    ok(['restore', id, '--target', target], env);
    await assertSameTree(src, restoredPath(target, src));
  }

  let onlyB: string | undefined;
  /** A pack of file data that snapshot B uses and A does not (found once, by deleting candidates in a scratch copy). */
  function packOnlyB(repo: string): string {
    if (!onlyB) {
      const { repo: scratch, env } = copy();
      for (const f of packFiles(scratch).sort((x, y) => fs.statSync(y).size - fs.statSync(x).size)) {
        const saved = fs.readFileSync(f);
        fs.rmSync(f);
        const hit = new Set(check(env, false).problems.flatMap((p) => p.snapshots));
        fs.writeFileSync(f, saved);
        if (hit.size === 1 && hit.has(snapB)) {
          onlyB = path.basename(f);
          break;
        }
      }
      assert.ok(onlyB, 'no pack is used by snapshot B alone');
    }
    return packFiles(repo).find((f) => path.basename(f) === onlyB)!;
  }

  test('repair index rebuilds a deleted index from the packs; dry run changes nothing; a second run does nothing', async () => {
    const { repo, env } = copy();
    for (const f of fs.readdirSync(path.join(repo, 'index'))) fs.rmSync(path.join(repo, 'index', f));
    const before = check(env, false);
    assert.ok(!before.ok && before.problems.some((p) => p.kind === 'blob-missing'), JSON.stringify(before.problems.slice(0, 3)));

    const listing = snapshotOfDir(repo);
    const dry = okJson<RepairIndexResult>(['repair', 'index', '--dry-run'], env);
    assert.equal(dry.changed, true);
    assert.deepEqual(snapshotOfDir(repo), listing, 'a dry run must not change the repository');

    const r = okJson<RepairIndexResult>(['repair', 'index'], env);
    assert.equal(r.added, packFiles(repo).length);
    assert.deepEqual(r.damaged, []);
    assert.equal(check(env).ok, true);
    await restoresIdentical(env, snapA, srcA);
    await restoresIdentical(env, snapB, srcB);
    const again = okJson<RepairIndexResult>(['repair', 'index'], env);
    assert.equal(again.changed, false, JSON.stringify(again));
  });

  test('repair index salvages the blobs of a pack whose header is destroyed', async () => {
    const { repo, env } = copy();
    const pack = packFiles(repo).sort((x, y) => fs.statSync(y).size - fs.statSync(x).size)[0]!;
    const size = fs.statSync(pack).size;
    // Zero the last 4 KiB: the trailer and header are gone, every blob before them is intact.
    const fd = fs.openSync(pack, 'r+');
    fs.writeSync(fd, Buffer.alloc(4096), 0, 4096, size - 4096);
    fs.closeSync(fd);
    assert.equal(check(env, false).ok, false);
    const r = okJson<RepairIndexResult>(['repair', 'index'], env);
    assert.equal(r.damaged.length, 1);
    const d = r.damaged[0]!;
    assert.equal(d.id, path.basename(pack));
    assert.ok(d.blobs > 1 && d.salvaged >= d.blobs - 1, JSON.stringify(d));
    assert.equal(fs.existsSync(pack), false, 'the damaged pack is removed');
    if (d.lost.length > 0) ok(['repair', 'snapshots'], env);
    assert.equal(check(env).ok, true);
    if (d.lost.length === 0) {
      await restoresIdentical(env, snapA, srcA);
      await restoresIdentical(env, snapB, srcB);
    }
  });

  test('a flipped byte in a pack: repair packs salvages the rest, repair snapshots rewrites the snapshot without the lost file; the other snapshot is untouched', async () => {
    const { repo, env } = copy();
    const pack = packOnlyB(repo);
    const buf = fs.readFileSync(pack);
    const at = 64 + rng.int(Math.min(buf.length - 4096, 100_000));
    buf[at] = buf[at]! ^ 0x01;
    fs.writeFileSync(pack, buf);
    const c = check(env);
    assert.ok(c.problems.some((p) => p.kind === 'pack-corrupt' && p.snapshots.includes(snapB) && !p.snapshots.includes(snapA)), JSON.stringify(c.problems));

    const r = okJson<RepairIndexResult>(['repair', 'packs'], env);
    assert.equal(r.damaged.length, 1);
    assert.equal(r.damaged[0]!.lost.length, 1, JSON.stringify(r.damaged));
    const after = check(env);
    assert.deepEqual([...new Set(after.problems.map((p) => p.kind))], ['blob-missing']);
    assert.deepEqual(after.problems[0]!.snapshots, [snapB]);

    const listing = snapshotOfDir(repo);
    const dry = okJson<RepairSnapshotsResult>(['repair', 'snapshots', '--dry-run'], env);
    assert.deepEqual(dry.repaired.map((x) => [x.id, x.action, x.lostCount]), [[snapB, 'rewritten', 1]]);
    assert.deepEqual(snapshotOfDir(repo), listing, 'a dry run must not change the repository');

    const s = okJson<RepairSnapshotsResult>(['repair', 'snapshots'], env);
    const fixed = s.repaired[0]!;
    assert.equal(fixed.action, 'rewritten');
    assert.equal(fixed.lost.length, 1);
    assert.equal(check(env).ok, true);
    // A is byte-identical; B's rewrite restores everything but the lost file, which is named.
    await restoresIdentical(env, snapA, srcA);
    const target = path.join(dir, `restore-${++copies}`);
    ok(['restore', fixed.newId!, '--target', target], env);
    const lostRel = fixed.lost[0]!.split('/').slice(srcB.split('/').filter(Boolean).length).join('/');
    const restored = restoredPath(target, srcB);
    assert.equal(fs.existsSync(path.join(restored, lostRel)), false, `${lostRel} is reported lost and must not be restored`);
    for (const [rel, content] of snapshotOfDir(srcB)) {
      if (rel === lostRel) continue;
      assert.equal(fs.readFileSync(path.join(restored, rel)).toString('base64'), content, rel);
    }
    const snaps = okJson<Array<{ id: string; tags: string[] }>>(['snapshots'], env);
    assert.deepEqual(snaps.map((x) => x.id).sort(), [snapA, fixed.newId!].sort());
    assert.ok(snaps.find((x) => x.id === fixed.newId)!.tags.includes('repaired'));
    assert.equal(okJson<RepairSnapshotsResult>(['repair', 'snapshots'], env).repaired.length, 0, 'idempotent');
    assert.equal(okJson<RepairIndexResult>(['repair', 'packs'], env).changed, false, 'idempotent');
  });

  test('repair snapshots --forget removes a damaged snapshot instead', async () => {
    const { repo, env } = copy();
    fs.rmSync(packOnlyB(repo));
    ok(['repair', 'index'], env);
    const s = okJson<RepairSnapshotsResult>(['repair', 'snapshots', '--forget'], env);
    assert.deepEqual(s.repaired.map((x) => [x.id, x.action]), [[snapB, 'forgotten']]);
    assert.ok(s.repaired[0]!.lostCount >= 1);
    assert.equal(check(env).ok, true);
    assert.deepEqual(okJson<Array<{ id: string }>>(['snapshots'], env).map((x) => x.id), [snapA]);
    await restoresIdentical(env, snapA, srcA);
  });

  test('a lost key file is noticed and its password still opens the repository from the copy; repair rewrites it; a lost copy too', () => {
    const { repo, env } = copy();
    const second = { ...env, HOLDFAST_PASSWORD: 'second key' };
    const added = okJson<{ added: string }>(['key', 'add', '--kdf-cost', '10', '--new-password-file', writePw('second key')], env).added;
    assert.ok(fs.existsSync(path.join(repo, 'catalog', 'keys', added)), 'key add writes the copy');
    fs.rmSync(path.join(repo, 'keys', added));
    const c = check(env, false);
    assert.deepEqual(c.problems.map((p) => [p.kind, p.object]), [['key-missing', `keys/${added}`]]);
    assert.equal(okJson<Array<{ id: string }>>(['snapshots'], second).length, 2, 'the second password opens through the copy');
    const r = okJson<RepairSnapshotsResult>(['repair', 'snapshots'], env);
    assert.deepEqual(r.keys, [{ id: added, action: 'key-restored' }]);
    assert.equal(check(env, false).ok, true);
    const keyFiles = fs.readdirSync(path.join(repo, 'keys'));
    fs.rmSync(path.join(repo, 'catalog', 'keys', keyFiles[0]!));
    assert.deepEqual(check(env, false).problems.map((p) => p.kind), ['key-copy-missing']);
    assert.deepEqual(okJson<RepairSnapshotsResult>(['repair', 'snapshots'], env).keys.map((k) => k.action), ['copy-restored']);
    assert.equal(check(env).ok, true);
    ok(['key', 'remove', added.slice(0, 12)], env);
    assert.equal(fs.existsSync(path.join(repo, 'catalog', 'keys', added)), false, 'key remove removes the copy');
    assert.equal(check(env, false).ok, true);
  });

  test('a lost manifest or a lost copy is rewritten from the other', async () => {
    const { repo, env } = copy();
    fs.rmSync(path.join(repo, 'snapshots', snapA));
    fs.rmSync(path.join(repo, 'catalog', snapB));
    const c = check(env, false);
    assert.deepEqual(c.problems.map((p) => [p.kind, p.snapshots[0]]).sort(), [['snapshot-copy-missing', snapB], ['snapshot-manifest-missing', snapA]].sort());
    const s = okJson<RepairSnapshotsResult>(['repair', 'snapshots'], env);
    assert.deepEqual(s.repaired.map((x) => [x.id, x.action]).sort(), [[snapA, 'manifest-restored'], [snapB, 'copy-restored']].sort());
    assert.equal(check(env).ok, true);
    assert.deepEqual(fs.readFileSync(path.join(repo, 'snapshots', snapA)), fs.readFileSync(path.join(good, 'snapshots', snapA)));
    await restoresIdentical(env, snapA, srcA);
    await restoresIdentical(env, snapB, srcB);
  });
});
