/**
 * End to end through the bundled CLI: a generated tree backed up and restored is identical in
 * content and metadata; a second backup of the unchanged tree stores almost nothing; an insertion
 * in the middle of a large file stores only the chunks around it.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Rng, describeTree, generateTree } from '../testing/helpers.js';
import { type Env, assertSameTree, dirSize, initRepo, ok, okJson, restoredPath, workspace } from '../testing/e2e.js';

const MiB = 1 << 20;
const isRoot = process.getuid?.() === 0;

interface BackupJson {
  snapshot: string;
  parent: string | null;
  summary: { files: number; filesNew: number; filesChanged: number; filesUnchanged: number; bytes: number; bytesAdded: number; errors: number };
}

interface SnapshotJson {
  id: string;
  parent?: string;
  paths: string[];
  summary?: { filesUnchanged: number; filesNew: number };
}

/**
 * Add what generateTree does not: non-default modes (setuid, setgid, sticky, read-only, none),
 * other owners (as root), a sparse file, a FIFO, a directory without write permission, and
 * explicit mtimes with sub-millisecond parts on every entry (symlinks included, directories last).
 */
async function decorate(src: string, rng: Rng): Promise<void> {
  const f = (p: string): string => path.join(src, p);
  await fsp.mkdir(f('modes'));
  // Mode 000 only as root: anyone else could not read it back to back it up.
  const modes: Array<[string, number]> = [['setuid', 0o4755], ['readonly', 0o444], ['secret', 0o600], ['none', isRoot ? 0o000 : 0o400], ['group-x', 0o710]];
  for (const [name, mode] of modes) {
    await fsp.writeFile(f(`modes/${name}`), rng.bytes(100 + rng.int(5000)));
    await fsp.chmod(f(`modes/${name}`), mode);
  }
  await fsp.mkdir(f('modes/sticky'));
  await fsp.writeFile(f('modes/sticky/inside'), rng.bytes(333));
  await fsp.chmod(f('modes/sticky'), 0o1777);
  await fsp.mkdir(f('modes/setgid dir'));
  await fsp.chmod(f('modes/setgid dir'), 0o2750);
  await fsp.mkdir(f('locked'));
  await fsp.writeFile(f('locked/kept'), rng.bytes(1234));
  await fsp.chmod(f('locked'), 0o555);
  if (isRoot) {
    await fsp.chown(f('modes/secret'), 1234, 5678);
    await fsp.chown(f('modes/setgid dir'), 4321, 8765);
    await fsp.lchown(f('dangling'), 2222, 3333);
    await fsp.chown(f('d1'), 1001, 1002);
  }
  // Sparse: 64 MiB with data only at the start and near the end.
  const fh = await fsp.open(f('sparse.img'), 'w');
  await fh.write(rng.bytes(64 << 10), 0, 64 << 10, 0);
  await fh.write(rng.bytes(64 << 10), 0, 64 << 10, 60 * MiB);
  await fh.truncate(64 * MiB);
  await fh.close();
  execFileSync('mkfifo', ['-m', '640', f('a fifo')]);

  const entries = [...(await describeTree(src)).keys()].sort((a, b) => b.split('/').length - a.split('/').length || a.localeCompare(b));
  const base = 1_500_000_000;
  for (const rel of [...entries, '']) {
    const sec = base + rng.int(200_000_000) + rng.int(1_000_000) / 1e6;
    await fsp.lutimes(f(rel), sec - 1000, sec);
  }
}

function countFiles(tree: Map<string, { type: string }>): number {
  return [...tree.values()].filter((e) => e.type === 'file').length;
}

describe('backup and restore of a generated tree', { timeout: 240_000 }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let src: string;
  let repo: string;
  let env: Env;
  let files = 0;
  let treeBytes = 0;
  let first: BackupJson;

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-e2e-rt-'));
    src = path.join(dir, 'src tree');
    repo = path.join(dir, 'repo');
    await generateTree(src, { seed: 20240601, big: [4 * MiB, 3 * MiB, 40 * MiB], smallFiles: 300, emptyFiles: 6, symlinks: true });
    await decorate(src, new Rng(77));
    const t = await describeTree(src);
    files = countFiles(t);
    treeBytes = [...t.values()].reduce((s, e) => s + e.size, 0);
    env = initRepo(repo);
  });
  after(() => cleanup());

  test('restore is byte-identical, with modes, mtimes, owners and symlink targets', async () => {
    first = okJson<BackupJson>(['backup', src], env);
    assert.match(first.snapshot, /^[0-9a-f]{64}$/);
    assert.equal(first.summary.errors, 0);
    assert.equal(first.summary.files, files);
    assert.equal(first.summary.filesNew, files);
    assert.equal(first.summary.bytes, treeBytes);

    const target = path.join(dir, 'restore-1');
    const r = ok(['restore', 'latest', '--target', target], env);
    assert.match(r.stdout, new RegExp(`restored snapshot ${first.snapshot.slice(0, 8)}`));
    const out = restoredPath(target, src);
    await assertSameTree(src, out);

    // The backed-up directory itself keeps its metadata too.
    const [a, b] = [await fsp.lstat(src), await fsp.lstat(out)];
    assert.equal(b.mode, a.mode);
    assert.equal(Math.floor(b.mtimeMs), Math.floor(a.mtimeMs));
    // Spot checks that make a broken comparison impossible to miss.
    assert.equal(await fsp.readlink(path.join(out, 'dangling')), '/nonexistent/target');
    assert.equal((await fsp.lstat(path.join(out, 'modes/setuid'))).mode & 0o7777, 0o4755);
    assert.equal((await fsp.lstat(path.join(out, 'modes/sticky'))).mode & 0o7777, 0o1777);
    assert.ok((await fsp.lstat(path.join(out, 'a fifo'))).isFIFO());
    if (isRoot) assert.equal((await fsp.stat(path.join(out, 'modes/secret'))).uid, 1234);
    // Sparse-friendly: all-zero chunks become holes (a chunk holding any data is written whole,
    // so at most the two chunks around the data, 8 MiB each at most, are allocated).
    const sparse = await fsp.stat(path.join(out, 'sparse.img'));
    assert.equal(sparse.size, 64 * MiB);
    assert.ok(sparse.blocks * 512 <= 17 * MiB, `sparse.img restored with ${sparse.blocks * 512} bytes allocated`);

    ok(['check', '--read-data'], env);
  });

  test('a second backup of the unchanged tree adds under 1% and reports every file unchanged', () => {
    const before = dirSize(repo);
    const r = ok(['backup', src], env);
    const added = dirSize(repo) - before;
    assert.match(r.stdout, new RegExp(`^Files: 0 new, 0 changed, ${files} unchanged;`, 'm'));
    assert.equal(r.stderr, '', 'stderr is not a terminal: no progress, no noise');
    assert.ok(added < treeBytes / 100, `second backup added ${added} bytes for a ${treeBytes}-byte tree`);
    assert.ok(added > 0, 'the second snapshot must be stored');

    const list = okJson<SnapshotJson[]>(['snapshots'], env);
    assert.equal(list.length, 2);
    assert.equal(list[1]!.parent, first.snapshot);
    assert.equal(list[1]!.summary?.filesUnchanged, files);
    assert.equal(list[1]!.summary?.filesNew, 0);
    ok(['check'], env);
  });
});

test('1 MiB inserted into the middle of a 100 MiB file adds only a few MiB', { timeout: 180_000 }, async (t) => {
  const { dir, cleanup } = await workspace('holdfast-e2e-ins-');
  t.after(cleanup);
  const rng = new Rng(4242);
  const src = path.join(dir, 'src');
  await fsp.mkdir(src);
  const file = path.join(src, 'large.bin');
  const original = rng.bytes(100 * MiB);
  await fsp.writeFile(file, original);
  const env = initRepo(path.join(dir, 'repo'));
  ok(['backup', src], env);

  const mid = 50 * MiB + rng.int(MiB);
  const changed = Buffer.concat([original.subarray(0, mid), rng.bytes(MiB), original.subarray(mid)]);
  await fsp.writeFile(file, changed);
  const before = dirSize(path.join(dir, 'repo'));
  const r = okJson<BackupJson>(['backup', src], env);
  const added = dirSize(path.join(dir, 'repo')) - before;
  assert.equal(r.summary.filesChanged, 1);
  // Each repository has its own secret chunker seed, so how many chunks it takes the boundaries
  // to realign after the insertion varies from run to run: typically 2-3 MiB in all, with a tail
  // to ~11 MiB (measured over 40 seeds). Storing the file again would add 100 MiB, fixed-size
  // chunks ~50 MiB.
  assert.ok(added < 16 * MiB, `the insertion added ${(added / MiB).toFixed(2)} MiB`);
  assert.ok(added >= MiB, `the inserted MiB of random data must be stored, but only ${added} bytes were added`);

  const target = path.join(dir, 'out');
  ok(['restore', 'latest', '--target', target], env);
  const restored = fs.readFileSync(restoredPath(target, file));
  assert.equal(restored.length, changed.length);
  assert.ok(restored.equals(changed), 'restored large.bin differs from the source');
  ok(['check', '--read-data'], env);
});
