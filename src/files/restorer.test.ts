/**
 * restoreTree with restore worker threads (restore-pool.ts, restore-worker.ts) and without them.
 * A seeded tree (a large multi-range file with zero chunks inside, a sparse file, an all-zero
 * file, many small and empty files, symlinks, odd modes, explicit mtimes) is backed up through the
 * CLI, then restored through the library with workers forced on and off: both must be identical
 * to the source. Delta restores, damaged packs (flipped byte, truncated, missing), a target with a
 * symlink or directory where a file goes, cancellation, and storage that is not a local directory
 * are covered too. After every restore, failed or not, no file descriptor may be left open.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HoldfastError } from '../errors/catalogue.js';
import { Repository } from '../repository/repository.js';
import { findSnapshot } from '../repository/snapshot.js';
import type { Backend } from '../storage/backend.js';
import { LocalBackend } from '../storage/local.js';
import { MemoryBackend } from '../storage/mem.js';
import { Rng, cli, generateTree } from '../testing/helpers.js';
import { type Env, assertSameTree, expectError, initRepo, ok, restoredPath, workspace } from '../testing/e2e.js';
import { syncfsCovers } from '../util/fsync.js';
import { Archiver, newArchiveProgress } from './archiver.js';
import { Excluder } from './exclude.js';
import { type RestoreOptions, newRestoreProgress, restoreTree } from './restorer.js';
import { RANGE } from './restore-pool.js';
import type { TreeNode } from './tree.js';
import { walkTree } from './walk.js';

const MiB = 1 << 20;
const PASSWORD = 'correct horse';

/** Open descriptors of this process (Linux); undefined elsewhere. */
function openFds(): number | undefined {
  try {
    return fs.readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
}

/**
 * Restore progress whose controller aborts the moment the first bytes are reported written, with
 * most of the work still queued.
 */
function abortOnFirstBytes(): { ac: AbortController; progress: ReturnType<typeof newRestoreProgress> } {
  const ac = new AbortController();
  const progress = newRestoreProgress();
  let bytes = 0;
  Object.defineProperty(progress, 'bytesDone', {
    get: () => bytes,
    set: (v: number) => {
      bytes = v;
      if (v > 0) ac.abort();
    },
  });
  return { ac, progress };
}

async function openRepo(dir: string, backend: Backend = new LocalBackend(dir)): Promise<Repository> {
  const repo = await Repository.open(backend, PASSWORD);
  await repo.loadIndex();
  return repo;
}

/**
 * Restore the latest snapshot of the repository at `repoDir` into `target`; returns the progress.
 * Checks that the restore, whatever its outcome, leaves no descriptor open.
 */
async function restore(repoDir: string, target: string, extra: Partial<RestoreOptions> = {}, backend?: Backend): Promise<{ progress: ReturnType<typeof newRestoreProgress>; warnings: string[] }> {
  const fdsBefore = openFds();
  const repo = await openRepo(repoDir, backend);
  const progress = newRestoreProgress();
  const warnings: string[] = [];
  try {
    const sn = await findSnapshot(repo, 'latest');
    await restoreTree(repo, sn.tree, { target, includes: [], force: false, progress, onWarning: (m) => warnings.push(m), ...extra });
    return { progress, warnings };
  } finally {
    await repo.close();
    const fdsAfter = openFds();
    if (fdsBefore !== undefined) assert.equal(fdsAfter, fdsBefore, 'every descriptor the restore opened is closed again');
  }
}

/** The snapshot's node for the source file `abs`. */
async function nodeOf(repoDir: string, abs: string): Promise<TreeNode> {
  const repo = await openRepo(repoDir);
  try {
    const sn = await findSnapshot(repo, 'latest');
    for await (const e of walkTree(repo, sn.tree)) if (e.path === abs) return e.node;
  } finally {
    await repo.close();
  }
  throw new Error(`${abs} is not in the snapshot`);
}

/** Where the blob `id` is stored: absolute pack path and the blob's offset and length in it. */
async function blobLocation(repoDir: string, id: string): Promise<{ file: string; pack: string; offset: number; length: number }> {
  const repo = await openRepo(repoDir);
  try {
    const loc = repo.index.get(id, 'data');
    assert.ok(loc, `blob ${id} is indexed`);
    return { file: path.join(repoDir, 'data', loc.pack.slice(0, 2), loc.pack), pack: loc.pack, offset: loc.offset, length: loc.length };
  } finally {
    await repo.close();
  }
}

describe('restore with worker threads', { timeout: 300_000 }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let src: string;
  let repo: string;
  let env: Env;
  let copies = 0;

  /** A copy of the repository that a test may damage. */
  const copyRepo = (): string => {
    const copy = path.join(dir, `repo-copy-${++copies}`);
    fs.cpSync(repo, copy, { recursive: true });
    return copy;
  };

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-restorer-'));
    src = path.join(dir, 'src');
    repo = path.join(dir, 'repo');
    const rng = new Rng(4242);
    await generateTree(src, { seed: 4242, big: [3 * MiB, 2 * MiB], smallFiles: 300, emptyFiles: 5, symlinks: true });
    // Larger than two ranges, with 20 MiB of zeros in the middle: at least one whole all-zero
    // chunk (content-defined chunks are at most 8 MiB) inside a range.
    const large = Buffer.concat([rng.bytes(14 * MiB), Buffer.alloc(20 * MiB), rng.bytes(RANGE + 3 * MiB)]);
    await fsp.writeFile(path.join(src, 'large.bin'), large);
    await fsp.writeFile(path.join(src, 'zeros.bin'), Buffer.alloc(9 * MiB));
    // Sparse: 48 MiB with data only at the start and near the end.
    const fh = await fsp.open(path.join(src, 'sparse.img'), 'w');
    await fh.write(rng.bytes(64 << 10), 0, 64 << 10, 0);
    await fh.write(rng.bytes(64 << 10), 0, 64 << 10, 44 * MiB);
    await fh.truncate(48 * MiB);
    await fh.close();
    await fsp.chmod(path.join(src, 'large.bin'), 0o640);
    await fsp.chmod(path.join(src, 'zeros.bin'), 0o4755);
    // Explicit mtimes (directories last), so the comparison covers them.
    const entries: string[] = [];
    const stack = [''];
    while (stack.length > 0) {
      const rel = stack.pop()!;
      for (const e of await fsp.readdir(path.join(src, rel), { withFileTypes: true })) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        entries.push(r);
        if (e.isDirectory()) stack.push(r);
      }
    }
    entries.sort((a, b) => b.split('/').length - a.split('/').length);
    for (const rel of [...entries, '']) {
      const sec = 1_600_000_000 + rng.int(100_000_000) + rng.int(1_000_000) / 1e6;
      await fsp.lutimes(path.join(src, rel), sec - 500, sec);
    }
    env = initRepo(repo, PASSWORD);
    ok(['backup', src], env);
  });
  after(() => cleanup());

  test('with workers the restore is byte-identical (large multi-range file, zero chunks, sparse file, many small files) and keeps holes', async () => {
    const target = path.join(dir, 'restore-workers');
    const { progress, warnings } = await restore(repo, target, { workers: 'always', parallel: 3 });
    await assertSameTree(src, restoredPath(target, src));
    assert.deepEqual(warnings, []);
    assert.equal(progress.workers, 3);
    assert.equal(progress.filesDone, progress.filesTotal);
    assert.equal(progress.bytesDone, progress.bytesTotal);
    const out = restoredPath(target, src);
    const sparse = await fsp.stat(path.join(out, 'sparse.img'));
    assert.equal(sparse.size, 48 * MiB);
    assert.ok(sparse.blocks * 512 <= 17 * MiB, `sparse.img restored with ${sparse.blocks * 512} bytes allocated`);
    const zeros = await fsp.stat(path.join(out, 'zeros.bin'));
    assert.equal(zeros.size, 9 * MiB);
    assert.ok(zeros.blocks * 512 < MiB, `zeros.bin restored with ${zeros.blocks * 512} bytes allocated`);
    assert.equal(zeros.mode & 0o7777, 0o4755, 'setuid survives (owner set before mode)');
    const large = await fsp.stat(path.join(out, 'large.bin'));
    assert.ok(large.blocks * 512 <= large.size - 7 * MiB, `the zero chunks inside large.bin are holes (${large.blocks * 512} of ${large.size} bytes allocated)`);
  });

  test('one worker, and the main thread alone, give the same tree', async () => {
    const one = path.join(dir, 'restore-one-worker');
    assert.equal((await restore(repo, one, { workers: 'always', parallel: 1 })).progress.workers, 1);
    await assertSameTree(src, restoredPath(one, src));
    const main = path.join(dir, 'restore-main-thread');
    assert.equal((await restore(repo, main, { workers: 'never' })).progress.workers, undefined);
    await assertSameTree(src, restoredPath(main, src));
    const zero = path.join(dir, 'restore-parallel-0');
    assert.equal((await restore(repo, zero, { parallel: 0 })).progress.workers, undefined);
    await assertSameTree(src, restoredPath(zero, src));
  });

  /** A copy of the repository with two bytes of the first blob of big-0.bin overwritten. */
  async function flippedCopy(): Promise<{ flipped: string; loc: Awaited<ReturnType<typeof blobLocation>>; blob: string }> {
    const node = await nodeOf(repo, path.join(src, 'big-0.bin'));
    const flipped = copyRepo();
    const loc = await blobLocation(flipped, node.content![0]!);
    const fd = fs.openSync(loc.file, 'r+');
    fs.writeSync(fd, Buffer.from('XX'), 0, 2, loc.offset + 20);
    fs.closeSync(fd);
    return { flipped, loc, blob: node.content![0]! };
  }

  test('without the native helper (HOLDFAST_TEST_NO_ZSTD_SYNC=1 in the workers) the JS path restores the same tree and reports the same damage', async () => {
    const { flipped, loc, blob } = await flippedCopy();
    const messages: string[] = [];
    for (const off of [true, false]) {
      // Worker threads take a copy of process.env when they start.
      if (off) process.env['HOLDFAST_TEST_NO_ZSTD_SYNC'] = '1';
      try {
        const target = path.join(dir, `restore-no-helper-${off}`);
        assert.equal((await restore(repo, target, { workers: 'always', parallel: 2 })).progress.workers, 2);
        await assertSameTree(src, restoredPath(target, src));
        await assert.rejects(restore(flipped, path.join(dir, `restore-no-helper-flipped-${off}`), { workers: 'always', parallel: 2 }), (err: unknown) => {
          assert.ok(err instanceof HoldfastError && err.code === 'INTEGRITY', String(err));
          messages.push(err.message);
          return true;
        });
      } finally {
        delete process.env['HOLDFAST_TEST_NO_ZSTD_SYNC'];
      }
    }
    assert.equal(messages[0], messages[1], 'the same error with and without the helper');
    assert.ok(messages[0]!.includes(blob) && messages[0]!.includes(loc.pack), messages[0]);
  });

  test('storage that is not this local directory is restored in the main thread, never from packs found on disk', async () => {
    // A memory backend holding this repository's objects, whose location names another
    // repository's directory: reading packs from there would fail (they are not the same packs).
    const other = path.join(dir, 'other-repo');
    initRepo(other, PASSWORD);
    const mem = new MemoryBackend(other);
    const local = new LocalBackend(repo);
    for await (const o of local.list('')) await mem.put(o.name, await local.get(o.name));
    await local.close();
    const target = path.join(dir, 'restore-mem');
    const { progress } = await restore(repo, target, { workers: 'always' }, mem);
    assert.equal(progress.workers, undefined, 'no workers for storage that is not a local directory');
    await assertSameTree(src, restoredPath(target, src));
  });

  test('an include restores only the selected part', async () => {
    const target = path.join(dir, 'restore-include');
    const sub = path.join(src, 'd1');
    assert.ok((await restore(repo, target, { workers: 'always', includes: [sub] })).progress.workers);
    await assertSameTree(sub, restoredPath(target, sub));
    assert.equal(fs.existsSync(restoredPath(target, path.join(src, 'large.bin'))), false);
  });

  /**
   * Restore into a fresh target, damage it, then restore over it as a delta restore with `extra`:
   * the result must equal the source, unchanged files must be kept and extras removed.
   */
  async function deltaRestore(name: string, extra: Partial<RestoreOptions>, byContent: boolean): Promise<void> {
    const target = path.join(dir, `restore-delta-${name}`);
    await restore(repo, target, { workers: 'always' });
    const out = restoredPath(target, src);
    const keptInode = (await fsp.stat(path.join(out, 'sparse.img'))).ino;
    const keptLarge = (await fsp.stat(path.join(out, 'large.bin'))).ino;
    // Damage the restored tree: same-size change, shorter file, deleted file, extra entries,
    // a symlink where a file was (pointing outside), wrong modes.
    const outside = path.join(dir, `outside-delta-${name}`);
    await fsp.writeFile(outside, 'must stay');
    const fd = fs.openSync(path.join(out, 'big-0.bin'), 'r+');
    fs.writeSync(fd, Buffer.from('changed'), 0, 7, 1000);
    fs.closeSync(fd);
    if (!byContent) {
      // A large file (written in ranges) with one changed byte: replaced.
      const lfd = fs.openSync(path.join(out, 'large.bin'), 'r+');
      fs.writeSync(lfd, Buffer.from('!'), 0, 1, 30 * MiB);
      fs.closeSync(lfd);
    }
    await fsp.truncate(path.join(out, 'big-1.bin'), 1000);
    await fsp.rm(path.join(out, 'zeros.bin'));
    await fsp.writeFile(path.join(out, 'extra-file'), 'not in the snapshot');
    await fsp.mkdir(path.join(out, 'extra-dir/deeper'), { recursive: true });
    await fsp.rm(path.join(out, 'empty-0'));
    await fsp.symlink(outside, path.join(out, 'empty-0'));
    await fsp.chmod(path.join(out, 'sparse.img'), 0o666);
    let rewritten = 5;
    let linked: string | undefined;
    if (byContent) {
      // The same content, but hard-linked from outside the target: it must be replaced (setting
      // its metadata would change the outside file too). And a FIFO where a file goes.
      const d3 = path.join(out, 'd3');
      const victim = path.join(d3, (await fsp.readdir(d3, { withFileTypes: true })).find((e) => e.isFile())!.name);
      linked = path.join(dir, `outside-link-${name}`);
      await fsp.link(victim, linked);
      await fsp.chmod(linked, 0o600);
      await fsp.utimes(linked, 1000, 1000);
      await fsp.rm(path.join(out, 'empty-1'));
      execFileSync('mkfifo', [path.join(out, 'empty-1')]);
      rewritten = 6; // big-0, big-1, zeros.bin, empty-0, the hard-linked file, empty-1
    }

    const { progress } = await restore(repo, target, { force: true, ...extra });
    assert.equal(progress.workers !== undefined, extra.workers === 'always', 'written by workers exactly when asked to');
    await assertSameTree(src, out);
    assert.equal(await fsp.readFile(outside, 'utf8'), 'must stay');
    assert.equal((await fsp.stat(path.join(out, 'sparse.img'))).ino, keptInode, 'an unchanged file is kept, not rewritten');
    if (byContent) assert.equal((await fsp.stat(path.join(out, 'large.bin'))).ino, keptLarge, 'an unchanged large file is kept, not rewritten');
    if (linked) {
      const st = await fsp.stat(linked);
      assert.equal(st.mode & 0o7777, 0o600, 'the hard link outside keeps its mode');
      assert.equal(st.mtimeMs, 1000 * 1000, 'and its mtime');
      assert.equal(st.nlink, 1, 'the file in the target is a new one');
    }
    assert.equal(progress.removed, 2);
    assert.equal(progress.kept, progress.filesTotal - rewritten, `all but ${rewritten} files kept`);
    assert.equal(progress.filesDone, progress.filesTotal);
  }

  test('delta restore by content, in workers (large files checked in ranges) and in the main thread: hard links and FIFOs are replaced', async () => {
    await deltaRestore('content-workers', { workers: 'always', deltaByContent: true }, true);
    await deltaRestore('content-main', { workers: 'never', deltaByContent: true }, true);
  });

  test('--force: a symlink where a file goes is replaced, never written through; a directory there is TARGET_CONFLICT', async () => {
    const target = path.join(dir, 'restore-force');
    const out = restoredPath(target, src);
    await fsp.mkdir(out, { recursive: true });
    const outside = path.join(dir, 'outside-force');
    await fsp.writeFile(outside, 'must stay');
    await fsp.symlink(outside, path.join(out, 'large.bin'));
    await fsp.symlink(outside, path.join(out, 'big-1.bin'));
    await restore(repo, target, { workers: 'always', force: true });
    await assertSameTree(src, out);
    assert.equal(await fsp.readFile(outside, 'utf8'), 'must stay');

    // A directory where a file goes, for a file a worker creates and for one written in ranges.
    for (const name of ['big-0.bin', 'large.bin']) {
      const conflict = path.join(dir, `restore-conflict-${name}`);
      const clash = path.join(restoredPath(conflict, src), name);
      await fsp.mkdir(clash, { recursive: true });
      await assert.rejects(
        restore(repo, conflict, { workers: 'always', force: true }),
        (err: unknown) => err instanceof HoldfastError && err.code === 'TARGET_CONFLICT' && err.message.includes(clash),
      );
    }
  });

  test('a flipped byte in a pack: INTEGRITY naming the blob and the pack, from a worker', async () => {
    const copy = copyRepo();
    const node = await nodeOf(copy, path.join(src, 'large.bin'));
    // A blob in the second range of the large file, so the file is written in ranges when it fails.
    const id = node.content![Math.floor(node.content!.length * 0.8)]!;
    const loc = await blobLocation(copy, id);
    const fd = fs.openSync(loc.file, 'r+');
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, loc.offset + 40);
    b[0] = b[0]! ^ 0x55;
    fs.writeSync(fd, b, 0, 1, loc.offset + 40);
    fs.closeSync(fd);
    for (const parallel of [1, 3]) {
      const progress = newRestoreProgress();
      await assert.rejects(restore(copy, path.join(dir, `restore-flipped-${parallel}`), { workers: 'always', parallel, progress }), (err: unknown) => {
        assert.ok(err instanceof HoldfastError, String(err));
        assert.equal(err.code, 'INTEGRITY', err.message);
        assert.equal(err.exitCode, 14);
        assert.ok(err.message.includes(id) && err.message.includes(loc.pack), err.message);
        return true;
      });
      assert.equal(progress.workers, parallel);
    }
  });

  test('the CLI reports a damaged pack with exit 14 (INTEGRITY) and a missing one with exit 15 (OBJECT_MISSING)', async () => {
    const { flipped, loc } = await flippedCopy();
    let args = ['restore', 'latest', '--target', path.join(dir, 'cli-flipped')];
    expectError(cli(args, { ...env, HOLDFAST_REPO: flipped }), args, 14, 'INTEGRITY', loc.pack);

    const truncated = copyRepo();
    await fsp.truncate(path.join(truncated, path.relative(flipped, loc.file)), loc.offset + 10);
    args = ['restore', 'latest', '--target', path.join(dir, 'cli-truncated')];
    expectError(cli(args, { ...env, HOLDFAST_REPO: truncated }), args, 14, 'INTEGRITY', loc.pack, 'truncated');

    const missing = copyRepo();
    await fsp.rm(path.join(missing, path.relative(flipped, loc.file)));
    args = ['restore', 'latest', '--target', path.join(dir, 'cli-missing')];
    expectError(cli(args, { ...env, HOLDFAST_REPO: missing }), args, 15, 'OBJECT_MISSING', loc.pack);
  });

  test('an aborted restore stops its workers and leaves no descriptor open', async () => {
    const { ac, progress } = abortOnFirstBytes();
    await assert.rejects(restore(repo, path.join(dir, 'restore-aborted'), { workers: 'always', parallel: 2, signal: ac.signal, progress }), (err: unknown) => (err as Error).name === 'AbortError');
    assert.equal(progress.workers, 2);
    assert.ok(progress.filesDone < progress.filesTotal, `${progress.filesDone} of ${progress.filesTotal} files were written before the abort took effect`);
  });
});

/** Bytes of `file` in the page cache (util-linux fincore), or undefined when fincore is missing. */
function cachedBytes(file: string): number | undefined {
  try {
    return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], { encoding: 'utf8' }).trim());
  } catch {
    return undefined;
  }
}

describe('O_DIRECT writes (RestoreOptions.directIo)', { timeout: 180_000 }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let src: string;
  let repoDir: string;
  let tree: string;
  /** Why the direct writes cannot be observed here, if they cannot. */
  let skip: string | false = false;

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-restorer-direct-'));
    src = path.join(dir, 'src');
    repoDir = path.join(dir, 'repo');
    await fsp.mkdir(src);
    const rng = new Rng(4343);
    // Read in fixed 128 KiB chunks as PostgreSQL relation files are: whole pages, page-aligned.
    await fsp.writeFile(path.join(src, 'relation'), Buffer.concat([rng.bytes(5 * MiB), Buffer.alloc(MiB), rng.bytes(2 * MiB + 8192)]));
    // Its last chunk has a length that is no multiple of a page: written through the page cache.
    await fsp.writeFile(path.join(src, 'odd-tail'), rng.bytes(3 * MiB + 100));
    // More than two ranges: sized by the main thread, written by both workers.
    await fsp.writeFile(path.join(src, 'large-relation'), Buffer.concat([rng.bytes(2 * RANGE), Buffer.alloc(MiB), rng.bytes(3 * MiB)]));
    await fsp.writeFile(path.join(src, 'small'), rng.bytes(200 << 10));
    initRepo(repoDir, PASSWORD);
    const repo = await openRepo(repoDir);
    try {
      const archiver = new Archiver(repo, { excluder: new Excluder([]), progress: newArchiveProgress(), onError: (p, err) => assert.fail(`${p}: ${String(err)}`), fileMode: () => ({ fixedChunk: 128 << 10 }) });
      tree = await archiver.archive([src]);
      await repo.flush();
    } finally {
      await repo.close();
    }
    if (cachedBytes(path.join(src, 'relation')) === undefined) skip = 'fincore (util-linux) is not installed';
    else if (!(await syncfsCovers(dir))) skip = `${dir} is not on a local block file system (the restore does not use O_DIRECT there)`;
  });
  after(() => cleanup());

  /** Restore the tree into a new target; the page-cache bytes of each file right after, then checks the content. */
  async function restoreCached(name: string, extra: Partial<RestoreOptions>): Promise<Record<string, number>> {
    const target = path.join(dir, name);
    const repo = await openRepo(repoDir);
    try {
      await restoreTree(repo, tree, { target, includes: [], force: false, progress: newRestoreProgress(), onWarning: (m) => assert.fail(m), workers: 'always', parallel: 2, ...extra });
    } finally {
      await repo.close();
    }
    const cached: Record<string, number> = {};
    for (const f of ['relation', 'odd-tail', 'small', 'large-relation']) cached[f] = cachedBytes(restoredPath(path.join(target), path.join(src, f)))!;
    await assertSameTree(src, restoredPath(target, src));
    return cached;
  }

  test('page-aligned blobs of large files bypass the page cache; the rest, --no-direct-io and --no-sync go through it; the content and holes are the same', async (t) => {
    if (skip) return t.skip(skip);
    const direct = await restoreCached('direct', {});
    const buffered = await restoreCached('buffered', { directIo: false });
    const unsynced = await restoreCached('unsynced', { sync: false });
    const data = 7 * MiB + 8192; // relation's bytes that are not a hole
    // The controls first: the same writes through the page cache leave the data there.
    assert.ok(buffered['relation']! >= data / 2, `--no-direct-io: ${buffered['relation']} bytes of relation cached`);
    assert.ok(unsynced['relation']! >= data / 2, `--no-sync: ${unsynced['relation']} bytes of relation cached`);
    assert.ok(direct['relation']! < MiB, `O_DIRECT: ${direct['relation']} bytes of relation cached`);
    assert.ok(buffered['large-relation']! >= RANGE, `--no-direct-io: ${buffered['large-relation']} bytes of large-relation cached`);
    assert.ok(direct['large-relation']! < MiB, `O_DIRECT, in ranges: ${direct['large-relation']} bytes of large-relation cached`);
    // odd-tail: 24 aligned chunks direct, the last (3 MiB + 100 is 24 chunks and 100 bytes) through the cache.
    assert.ok(direct['odd-tail']! <= 64 << 10, `O_DIRECT: ${direct['odd-tail']} bytes of odd-tail cached`);
    assert.ok(direct['odd-tail']! > 0, 'the unaligned last chunk of odd-tail went through the page cache');
    assert.ok(direct['small']! >= 200 << 10, 'a file under 1 MiB is written through the page cache');
    const st = await fsp.stat(restoredPath(path.join(dir, 'direct'), path.join(src, 'relation')));
    assert.ok(st.blocks * 512 <= data + (64 << 10), `relation's zero chunks stay holes with O_DIRECT (${st.blocks * 512} bytes allocated)`);
    const large = await fsp.stat(restoredPath(path.join(dir, 'direct'), path.join(src, 'large-relation')));
    assert.ok(large.blocks * 512 <= large.size - MiB + (64 << 10), `large-relation's zero chunks stay holes (${large.blocks * 512} of ${large.size} bytes allocated)`);
  });

  test('a restore aborted while direct writes are in flight stops its workers and leaves no descriptor open', async (t) => {
    if (skip) return t.skip(skip);
    const { ac, progress } = abortOnFirstBytes();
    const fdsBefore = openFds();
    const repo = await openRepo(repoDir);
    try {
      await assert.rejects(
        restoreTree(repo, tree, { target: path.join(dir, 'aborted'), includes: [], force: false, progress, onWarning: () => undefined, workers: 'always', parallel: 2, signal: ac.signal }),
        (err: unknown) => (err as Error).name === 'AbortError',
      );
    } finally {
      await repo.close();
    }
    assert.ok(progress.filesDone < progress.filesTotal, `${progress.filesDone} of ${progress.filesTotal} files were written before the abort took effect`);
    if (fdsBefore !== undefined) assert.equal(openFds(), fdsBefore, 'every descriptor the restore opened is closed again');
  });
});
