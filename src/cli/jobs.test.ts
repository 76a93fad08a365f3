/**
 * Backup with worker threads (--jobs N) and without (--jobs 0) must store the same chunks: the
 * in-process reader, the workers' windowed reader and their whole-file path for small files all
 * cut at the same places, so switching modes never loses deduplication, and each restores exactly
 * (restore, too, with --jobs 0 in the main thread and with worker threads).
 */
import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Rng, generateTree } from '../testing/helpers.js';
import { type Env, assertSameTree, dirSize, initRepo, ok, okJson, restoredPath, workspace } from '../testing/e2e.js';


describe('backup with and without worker threads', () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let src = '';
  let env: Env = {};

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-jobs-'));
    src = path.join(dir, 'src');
    // Sizes on both sides of the 1 MiB whole-file threshold and of the 128 KiB window threshold.
    await generateTree(src, { seed: 91, big: [3 << 20, 1 << 20, (1 << 20) - 1, 200 << 10, 100 << 10], smallFiles: 120, emptyFiles: 2, symlinks: true });
    const rng = new Rng(92);
    await fsp.writeFile(path.join(src, 'repeated.bin'), Buffer.concat([rng.bytes(700 << 10), rng.bytes(700 << 10)]));
    env = initRepo(path.join(dir, 'repo'));
  });
  after(() => cleanup());

  test('--jobs 0 and --jobs 3 store identical chunks and restore identically', async () => {
    const first = okJson<{ snapshot: string }>(['backup', src, '--jobs', '0'], env);
    const size = dirSize(path.join(dir, 'repo'));
    // --read-all: read every file again, now in worker threads; nothing new may be stored.
    const second = okJson<{ snapshot: string; summary: { bytesAdded: number } }>(['backup', src, '--jobs', '3', '--read-all'], env);
    // Only tree blobs may be new (reading the files in the first backup updated their atimes).
    const grown = dirSize(path.join(dir, 'repo')) - size;
    assert.ok(grown < 64 << 10, `the workers cut and hash exactly like the main thread, so only small tree blobs are new; the repository grew by ${grown} bytes`);
    const changes = ok(['diff', first.snapshot, second.snapshot, '--json'], env)
      .stdout.split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as { kind: string; path: string });
    assert.deepEqual(changes.filter((c) => c.kind !== 'U'), [], 'no file content differs between the two modes');
    // Restore each in the main thread (--jobs 0) and with two worker threads.
    for (const [i, [id, jobs]] of ([[first.snapshot, '0'], [second.snapshot, '2']] as const).entries()) {
      const target = path.join(dir, `restore-${i}`);
      ok(['restore', id, '--target', target, '--jobs', jobs], env);
      await assertSameTree(src, restoredPath(target, src));
    }
    ok(['check', '--read-data'], env);
  });
});
