/**
 * Content-defined chunking: determinism per seed, size bounds, average size, locality of an
 * insertion, and streaming from a file agreeing with cutting the whole buffer.
 *
 * Most tests use the repository's default shape (min = avg/2, max = 8·avg) scaled down to a
 * 64 KiB average so a 32 MiB buffer gives a few hundred chunks: enough for statistics, still fast.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { Chunker, type ChunkerSpec } from './chunker.js';
import { Rng, tmpDir } from '../testing/helpers.js';

const KiB = 1 << 10;
const MiB = 1 << 20;

function seedB64(n: number): string {
  return new Rng(n).bytes(32).toString('base64');
}

/** The default shape (512 KiB / 1 MiB / 8 MiB) scaled to a 64 KiB average. */
const SMALL: ChunkerSpec = { seed: seedB64(1), min: 32 * KiB, avg: 64 * KiB, max: 512 * KiB };
/** The defaults of `holdfast init`. */
const DEFAULT: ChunkerSpec = { seed: seedB64(1), min: 512 * KiB, avg: 1 * MiB, max: 8 * MiB };

/** End offsets of the chunks of `buf`, cut the way the archiver cuts a file held in memory. */
function cutPoints(ch: Chunker, buf: Buffer): number[] {
  const out: number[] = [];
  let off = 0;
  while (off < buf.length) {
    const n = ch.cut(buf.subarray(off), buf.length - off);
    assert.ok(n > 0 && off + n <= buf.length, `cut returned ${n} at ${off} of ${buf.length}`);
    off += n;
    out.push(off);
  }
  return out;
}

function sizes(points: readonly number[]): number[] {
  return points.map((p, i) => p - (i === 0 ? 0 : points[i - 1]!));
}

function chunkIds(buf: Buffer, points: readonly number[]): string[] {
  let from = 0;
  return points.map((to) => {
    const id = createHash('sha256').update(buf.subarray(from, to)).digest('hex');
    from = to;
    return id;
  });
}

/** 32 MiB of seeded random data, shared by the tests that need a big buffer. */
const BIG = new Rng(500).bytes(32 * MiB);

describe('Chunker', () => {
  test('the same seed gives the same gear table and cut points; another seed gives others', () => {
    const data = BIG.subarray(0, 8 * MiB);
    const a = new Chunker(SMALL);
    const b = new Chunker({ ...SMALL });
    assert.deepEqual(a.gear, b.gear);
    const pa = cutPoints(a, data);
    assert.deepEqual(cutPoints(b, data), pa);
    assert.deepEqual(cutPoints(a, data), pa, 'cutting again with the same instance');
    const other = new Chunker({ ...SMALL, seed: seedB64(2) });
    assert.notDeepEqual(other.gear, a.gear);
    const po = cutPoints(other, data);
    assert.notDeepEqual(po, pa, 'the seed changes the boundaries');
    const shared = new Set(pa);
    assert.ok(po.filter((p) => shared.has(p)).length < pa.length / 4, 'boundaries under another seed are mostly different');
  });

  test('cut points for a fixed seed and input are pinned (changing them would end dedup with existing repositories)', () => {
    const data = new Rng(7).bytes(4 * MiB);
    const points = cutPoints(new Chunker({ seed: seedB64(3), min: 16 * KiB, avg: 64 * KiB, max: 256 * KiB }), data);
    assert.equal(points.length, 54);
    assert.deepEqual(points.slice(0, 4), [126_706, 202_748, 239_002, 314_541]);
    assert.equal(createHash('sha256').update(points.join(',')).digest('hex').slice(0, 16), 'c4a8c3ad1e566290');
  });

  test('every chunk but the last is within [min, max]; the last is at most max; chunks tile the input', () => {
    const rng = new Rng(501);
    const inputs: Array<[string, Buffer]> = [
      ['random', BIG.subarray(0, 8 * MiB)],
      ['zeros', Buffer.alloc(3 * MiB)],
      ['text', rng.text(3 * MiB)],
      ['period 1000', Buffer.concat(Array.from({ length: 3000 }, () => BIG.subarray(0, 1000)))],
      ['random, odd length', BIG.subarray(0, 5 * MiB + 12_345)],
    ];
    for (const spec of [SMALL, { ...SMALL, min: 16 * KiB, max: 256 * KiB }, { ...SMALL, min: 64 * KiB, avg: 64 * KiB, max: 64 * KiB }]) {
      const ch = new Chunker(spec);
      for (const [what, buf] of inputs) {
        const points = cutPoints(ch, buf);
        assert.equal(points[points.length - 1], buf.length, `${what}: chunks end at the end of the input`);
        const s = sizes(points);
        for (const [i, n] of s.entries()) {
          const last = i === s.length - 1;
          assert.ok(n <= spec.max, `${what} [${spec.min}/${spec.avg}/${spec.max}]: chunk ${i} has ${n} bytes > max`);
          if (!last) assert.ok(n >= spec.min, `${what} [${spec.min}/${spec.avg}/${spec.max}]: chunk ${i} of ${s.length} has ${n} bytes < min`);
        }
      }
    }
  });

  test('cut never looks past len and returns len when len <= min', () => {
    const ch = new Chunker(SMALL);
    const buf = BIG.subarray(0, 2 * MiB);
    for (const len of [0, 1, 1000, SMALL.min - 1, SMALL.min]) assert.equal(ch.cut(buf, len), len);
    for (const len of [SMALL.min + 1, SMALL.avg, SMALL.avg + 7, SMALL.max - 1]) {
      const n = ch.cut(buf, len);
      assert.ok(n > SMALL.min && n <= len, `cut(buf, ${len}) = ${n}`);
      // The same answer when the buffer really ends at len.
      assert.equal(ch.cut(Buffer.from(buf.subarray(0, len)), len), n);
    }
    assert.ok(ch.cut(buf, buf.length) <= SMALL.max);
  });

  test('the average chunk size on random data is near avg', () => {
    for (const spec of [SMALL, { ...SMALL, min: 16 * KiB, max: 256 * KiB }, { ...SMALL, seed: seedB64(9) }]) {
      const points = cutPoints(new Chunker(spec), BIG);
      const mean = BIG.length / points.length;
      // Normalised chunking with hashing from min puts the mean slightly above avg (about 1.15-1.2).
      assert.ok(mean > 0.9 * spec.avg && mean < 1.4 * spec.avg, `[${spec.min}/${spec.avg}/${spec.max}]: mean chunk ${Math.round(mean)} bytes for avg ${spec.avg}`);
      const s = sizes(points).slice(0, -1);
      const nearAvg = s.filter((n) => n >= spec.avg / 2 && n <= spec.avg * 2).length;
      assert.ok(nearAvg >= 0.85 * s.length, `only ${nearAvg} of ${s.length} chunks are within [avg/2, 2·avg]`);
    }
  });

  test('inserting 1 MiB into the middle of 32 MiB changes only chunks near the insertion', () => {
    const mid = 16 * MiB + 12_345;
    const inserted = new Rng(502).bytes(MiB);
    const changed = Buffer.concat([BIG.subarray(0, mid), inserted, BIG.subarray(mid)]);
    for (const spec of [SMALL, { ...SMALL, seed: seedB64(4) }]) {
      const ch = new Chunker(spec);
      const before = cutPoints(ch, BIG);
      const after = cutPoints(ch, changed);
      const idsBefore = chunkIds(BIG, before);
      const idsAfter = new Set(chunkIds(changed, after));
      const label = `seed ${spec.seed.slice(0, 8)}`;

      // Every cut before the insertion stays: the chunker only looks forward.
      const afterSet = new Set(after);
      for (const p of before) if (p <= mid) assert.ok(afterSet.has(p), `${label}: cut at ${p}, before the insertion, moved`);
      // After the insertion the boundaries resynchronise and stay synchronised to the end.
      const shifted = new Set(after.map((p) => p - MiB));
      const lostCuts = before.filter((p) => p > mid && !shifted.has(p));
      const lastLost = lostCuts.length === 0 ? mid : lostCuts[lostCuts.length - 1]!;
      assert.ok(lastLost - mid <= 12 * spec.max, `${label}: boundaries resynchronise ${lastLost - mid} bytes after the insertion`);

      const lost = idsBefore.filter((id) => !idsAfter.has(id));
      assert.ok(lost.length >= 1, `${label}: the chunk holding the insertion point must change`);
      assert.ok(lost.length <= 12, `${label}: ${lost.length} of ${idsBefore.length} chunks changed; only a few near the insertion should`);
      assert.ok((idsBefore.length - lost.length) / idsBefore.length >= 0.97, `${label}: share of chunks kept`);
      const fresh = [...idsAfter].filter((id) => !idsBefore.includes(id)).length;
      assert.ok(fresh <= MiB / spec.min + 12, `${label}: ${fresh} new chunks for a 1 MiB insertion`);
    }
  });

  test('with the init defaults the chunks before the insertion and after resynchronisation are kept', () => {
    const mid = 16 * MiB;
    const changed = Buffer.concat([BIG.subarray(0, mid), new Rng(503).bytes(MiB), BIG.subarray(mid)]);
    const ch = new Chunker(DEFAULT);
    const before = cutPoints(ch, BIG);
    const after = cutPoints(ch, changed);
    const afterSet = new Set(after);
    const shifted = new Set(after.map((p) => p - MiB));
    for (const p of before) if (p <= mid) assert.ok(afterSet.has(p), `cut at ${p} before the insertion moved`);
    const keptTail = before.filter((p) => p > mid && shifted.has(p));
    assert.ok(keptTail.length >= 1 && keptTail.includes(BIG.length), 'boundaries resynchronise before the end of the data');
    const firstKept = keptTail[0]!;
    for (const p of before) if (p >= firstKept) assert.ok(shifted.has(p), `after resynchronising at ${firstKept} the cut at ${p} is lost again`);
  });

  test('find() either needs more data (-1) or returns the cut that cut() finds with all the data', () => {
    const ch = new Chunker(SMALL);
    const data = BIG.subarray(0, 4 * MiB);
    let off = 0;
    let needMore = 0;
    let found = 0;
    while (off < data.length - SMALL.max) {
      const full = ch.cut(data.subarray(off), data.length - off);
      for (const len of [1, SMALL.min, SMALL.min + 1, full - 1, full, full + 1, SMALL.avg, SMALL.max - 1, SMALL.max, SMALL.max + 5]) {
        const n = ch.find(data.subarray(off), len);
        if (n === -1) {
          needMore++;
          assert.ok(len < full && len < SMALL.max, `find(…, ${len}) at ${off} asked for more data although the cut at ${full} is within reach`);
        } else {
          found++;
          assert.equal(n, full, `find(…, ${len}) at ${off}: a cut found in a partial buffer is final`);
        }
      }
      off += full;
    }
    assert.ok(needMore > 0 && found > 0, 'both outcomes were exercised');
  });

  test('streaming chunks(read, window) yields the same chunks as cut() over the whole buffer, as views into the window', async () => {
    const { dir, cleanup } = await tmpDir();
    try {
      const ch = new Chunker(SMALL);
      const rng = new Rng(504);
      const files: Array<[string, Buffer]> = [
        ['empty', Buffer.alloc(0)],
        ['one byte', Buffer.of(7)],
        ['exactly min', rng.bytes(SMALL.min)],
        ['exactly max', rng.bytes(SMALL.max)],
        ['max + 1', rng.bytes(SMALL.max + 1)],
        ['exactly 2 max', rng.bytes(2 * SMALL.max)],
        ['zeros', Buffer.alloc(3 * SMALL.max + 5)],
        ['random 6 MiB + 3', BIG.subarray(0, 6 * MiB + 3)],
      ];
      // One window reused across files, as the archiver does: it holds the previous file's bytes.
      const shared = Buffer.alloc(SMALL.max + 1);
      shared.fill(0xa5);
      for (const [name, data] of files) {
        const file = path.join(dir, name);
        await fsp.writeFile(file, data);
        const expected = cutPoints(ch, data);
        assert.equal(ch.windowSize(data.length), Math.min(SMALL.max + MiB, data.length + 1));
        const windows: Array<[string, Buffer]> = [
          ['windowSize(size)', Buffer.alloc(ch.windowSize(data.length))],
          ['shared max + 1 window', shared],
          ['max + 7', Buffer.alloc(SMALL.max + 7)],
          ['3·max', Buffer.alloc(3 * SMALL.max)],
        ];
        for (const [wname, window] of windows) {
          if (window.length < Math.min(SMALL.max + 1, data.length + 1)) continue;
          const what = `${name}, window ${wname} (${window.length} bytes)`;
          const copies: Buffer[] = [];
          // Chunks yielded since the last refill: they must be intact when beforeRefill runs.
          let live: Array<{ chunk: Buffer; at: number }> = [];
          let refills = 0;
          let at = 0;
          const beforeRefill = async (): Promise<void> => {
            refills++;
            for (const c of live) assert.ok(c.chunk.equals(data.subarray(c.at, c.at + c.chunk.length)), `${what}: chunk at ${c.at} was overwritten before beforeRefill`);
            live = [];
          };
          const fh = await fsp.open(file, 'r');
          try {
            const read = async (b: Buffer, off: number, len: number, at2: number): Promise<number> => (await fh.read(b, off, len, at2)).bytesRead;
            for await (const chunk of ch.chunks(read, window, beforeRefill)) {
              assert.equal(chunk.buffer, window.buffer, `${what}: a chunk is a view into the window, not a copy`);
              live.push({ chunk, at });
              copies.push(Buffer.from(chunk));
              at += chunk.length;
            }
          } finally {
            await fh.close();
          }
          let end = 0;
          assert.deepEqual(
            copies.map((c) => (end += c.length)),
            expected,
            `${what}: cut points`,
          );
          assert.ok(Buffer.concat(copies).equals(data), `${what}: chunks concatenate to the file`);
          assert.ok(refills >= 1, `${what}: the window was filled through beforeRefill`);
        }
      }
    } finally {
      await cleanup();
    }
  });
});
