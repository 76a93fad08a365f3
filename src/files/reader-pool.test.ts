/**
 * ReaderPool (backup worker threads): a file cut into fixed chunks (a PostgreSQL relation file) of
 * 32 MiB or more is read as 16 MiB ranges by whichever worker is free and the results joined. The
 * joined result must be exactly what one sequential read gives (one worker, no ranges): the same
 * chunk ids in order, the same size, the same corrupt pages with their absolute block numbers, and
 * blobs that open to the file's bytes. A file that shrank or grew since it was measured is read to
 * its real end, as a sequential read would; one that shrinks and grows again between range reads
 * ends where it shrank. The repository ends checked with --read-data.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { checkRepository } from '../checker/check.js';
import { sha256Hex } from '../repository/crypto.js';
import { kdfParams } from '../repository/keys.js';
import { Repository } from '../repository/repository.js';
import { MemoryBackend } from '../storage/mem.js';
import { Rng, tmpDir } from '../testing/helpers.js';
import type { FileMode } from './file-mode.js';
import { type ReadResult, ReaderPool } from './reader-pool.js';

const MiB = 1 << 20;
const PAGE = 8192;
const CHUNK = 128 << 10;
const PW = 'reader pool';
/** The second segment of a relation: its blocks are numbered from 131072 (RELSEG_SIZE). */
const REL = 'base/5/16396.1';
const SEGMENT_BLOCKS = 131072;
const MODE: FileMode = { fixedChunk: CHUNK, verify: { relPath: REL, skipLsnAtOrAfter: String(2n ** 63n) } };
const noProgress = { onBytes: () => undefined, onBlobAdded: () => undefined };

/**
 * A relation-like file: random pages without a valid header are "new"-looking only if pd_upper is
 * 0, so every page gets pd_upper = 0 (skipped by the checksum check) except the damaged ones:
 * a sane header with a wrong checksum. Some chunks repeat (deduplicated across ranges), some are
 * all zeros.
 */
function relationFile(rng: Rng, size: number, damaged: readonly number[]): Buffer {
  const buf = Buffer.alloc(size);
  const repeated = rng.bytes(CHUNK);
  for (let off = 0; off < size; off += CHUNK) {
    const kind = rng.int(10);
    const n = Math.min(CHUNK, size - off);
    if (kind === 0) continue; // zeros
    (kind === 1 ? repeated : rng.bytes(CHUNK)).copy(buf, off, 0, n);
  }
  for (let p = 0; p * PAGE < size; p++) buf.writeUInt16LE(0, p * PAGE + 14); // pd_upper = 0: new
  for (const p of damaged) {
    const at = p * PAGE;
    buf.fill(0, at, at + 8); // pd_lsn 0: before the backup's start, so checked
    buf.writeUInt16LE(0, at + 8); // pd_checksum: never what the page sums to
    buf.writeUInt16LE(0, at + 10); // pd_flags
    buf.writeUInt16LE(24, at + 12); // pd_lower
    buf.writeUInt16LE(PAGE, at + 14); // pd_upper
    buf.writeUInt16LE(PAGE, at + 16); // pd_special
    buf.writeUInt16LE(PAGE | 4, at + 18);
  }
  return buf;
}

function chunkIds(buf: Buffer): string[] {
  const ids: string[] = [];
  for (let off = 0; off < buf.length; off += CHUNK) ids.push(sha256Hex(buf.subarray(off, off + CHUNK)));
  return ids;
}

describe('ReaderPool: large fixed-chunk files in ranges across workers', () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let backend: MemoryBackend;
  let repo: Repository;
  let split: ReaderPool;
  let single: ReaderPool;

  before(async () => {
    ({ dir, cleanup } = await tmpDir('holdfast-readerpool-'));
    backend = new MemoryBackend();
    repo = await Repository.init(backend, PW, { kdf: kdfParams(10), chunker: { min: 64 << 10, avg: 128 << 10, max: 512 << 10 } });
    split = ReaderPool.start(repo, 3)!;
    single = ReaderPool.start(repo, 1)!;
    assert.ok(split && single, 'worker threads are available');
  });
  after(async () => {
    await split?.close();
    await single?.close();
    await cleanup();
  });

  async function assertBlobs(result: ReadResult, bytes: Buffer): Promise<void> {
    await repo.flush();
    for (const [i, id] of result.content.entries()) {
      const blob = await repo.loadBlob('data', id);
      assert.ok(blob.equals(bytes.subarray(i * CHUNK, (i + 1) * CHUNK)), `chunk ${i} opens to the file's bytes`);
    }
  }

  test('split across workers: the same ids, size and corrupt pages (absolute block numbers) as one sequential read', async () => {
    const rng = new Rng(20261122);
    // 52 MiB and 3 pages: ranges [0,16), [16,32), [32,EOF); damage in each, and on range edges.
    const size = 52 * MiB + 3 * PAGE;
    const damaged = [5, 2047, 2048, 2048 + 700, 4096, 6655, 52 * 128 + 2];
    const bytes = relationFile(rng, size, damaged);
    const file = path.join(dir, 'relation');
    fs.writeFileSync(file, bytes);

    const viaRanges = await split.read(file, size, noProgress, MODE);
    const sequential = await single.read(file, size, noProgress, MODE);
    assert.equal(viaRanges.size, size);
    assert.deepEqual(viaRanges.content, chunkIds(bytes));
    assert.deepEqual(
      viaRanges.corrupt?.map((c) => [c.block, c.reason]),
      damaged.map((p) => [SEGMENT_BLOCKS + p, 'checksum']),
    );
    assert.deepEqual(viaRanges, sequential, 'ranges give exactly the sequential result');
    await assertBlobs(viaRanges, bytes);
  });

  test('a file that shrank or grew since it was measured is read to its real end', async () => {
    const rng = new Rng(7);
    const size = 20 * MiB + 5 * PAGE;
    const bytes = relationFile(rng, size, [2000]);
    const file = path.join(dir, 'moving');
    fs.writeFileSync(file, bytes);
    // Measured larger: ranges past the real end read nothing.
    const shrank = await split.read(file, 64 * MiB, noProgress, MODE);
    assert.equal(shrank.size, size);
    assert.deepEqual(shrank.content, chunkIds(bytes));
    assert.deepEqual(shrank.corrupt?.map((c) => c.block), [SEGMENT_BLOCKS + 2000]);
    // Measured smaller: the last range reads on to the end.
    const more = Buffer.concat([bytes, rng.bytes(30 * MiB)]);
    fs.writeFileSync(file, more);
    const grewMuch = await split.read(file, 33 * MiB, noProgress, { fixedChunk: CHUNK });
    assert.equal(grewMuch.size, more.length);
    assert.deepEqual(grewMuch.content, chunkIds(more));
    await assertBlobs(grewMuch, more);
  });

  test('a file that shrinks and then grows again between its range reads ends where it shrank', async () => {
    // The ranges are read by the real workers, one after another, the file changed in between:
    // [0,16) whole; truncated to 20 MiB, [16,32) ends early at 20 MiB; grown back with other bytes,
    // [32,EOF) reads 20 MiB of them. What the last range read is not the continuation of the first
    // 20 MiB, so the file is taken as 20 MiB (design §11): not its pages, not its size.
    const rng = new Rng(11);
    const size = 52 * MiB;
    const original = relationFile(rng, size, []);
    const file = path.join(dir, 'shrink-grow');
    fs.writeFileSync(file, original);
    const grown = Buffer.concat([original.subarray(0, 20 * MiB), rng.bytes(32 * MiB)]); // random pages: all "corrupt"
    type ReadJob = (...args: unknown[]) => Promise<ReadResult>;
    const pool = split as unknown as { readJob: ReadJob };
    const real = pool.readJob;
    let previous: Promise<unknown> = Promise.resolve();
    let jobs = 0;
    pool.readJob = function (this: unknown, ...args: unknown[]): Promise<ReadResult> {
      const i = jobs++;
      const run = previous.then(() => {
        if (i === 1) fs.truncateSync(file, 20 * MiB);
        if (i === 2) fs.writeFileSync(file, grown);
        return real.apply(this, args);
      });
      previous = run.catch(() => undefined);
      return run;
    };
    try {
      const r = await split.read(file, size, noProgress, MODE);
      assert.equal(jobs, 3, 'three ranges were read');
      assert.equal(r.size, 20 * MiB);
      assert.deepEqual(r.content, chunkIds(original.subarray(0, 20 * MiB)));
      assert.equal(r.corrupt, undefined, 'the pages the last range read are not the file');
      await assertBlobs(r, original.subarray(0, 20 * MiB));
    } finally {
      delete (pool as Partial<typeof pool>).readJob;
    }
  });

  test('a file that cannot be read fails its read, and the pool goes on', async () => {
    await assert.rejects(split.read(path.join(dir, 'missing'), 40 * MiB, noProgress, MODE), { code: 'ENOENT' });
    const file = path.join(dir, 'after');
    const bytes = relationFile(new Rng(3), 33 * MiB, []);
    fs.writeFileSync(file, bytes);
    const r = await split.read(file, bytes.length, noProgress, MODE);
    assert.deepEqual(r.content, chunkIds(bytes));
  });

  test('the repository written through the pool passes check --read-data', async () => {
    await repo.flush();
    const reopened = await Repository.open(backend, PW);
    const report = await checkRepository(reopened, { readData: true });
    assert.deepEqual(report.problems, []);
  });
});
