/**
 * Unit tests of page-checksum.ts on synthetic pages (no PostgreSQL needed; the real-server
 * cross-checks are in page-checksum-pg.test.ts). The optimised checksum is compared with
 * - known answers PostgreSQL 15 computed itself (see KNOWN below), and
 * - `referenceChecksum`, a deliberately naive transcription of checksum_impl.h written here from
 *   its description (row by row, BigInt arithmetic, header read field by field), on seeded
 *   random pages.
 */
import assert from 'node:assert/strict';
import * as os from 'node:os';
import { describe, test } from 'node:test';
import { Rng } from '../testing/helpers.js';
import { nativeHelper } from '../util/native.js';
import {
  PG_BLOCK_SIZE,
  RELSEG_SIZE,
  isChecksummedRelationFile,
  pageHeaderIsSane,
  pageIsNew,
  parseRelationPath,
  pgChecksumPage,
  readPageHeader,
  relationBlockNo,
  scanPages,
  verifyPages,
} from './page-checksum.js';

const LE = os.endianness() === 'LE';
const M32 = 0xffffffffn;
const BASE = [
  0x5b1f36e9, 0xb8525960, 0x02ab50aa, 0x1de66d2a, 0x79ff467a, 0x9bb9f8a3, 0x217e7cd2, 0x83e13d2c,
  0xf8d4474f, 0xe39eb970, 0x42c6ae16, 0x993216fa, 0x7b093b5d, 0x98daff3c, 0xf718902a, 0x0b1c9cdb,
  0xe58f764b, 0x187636bc, 0x5d7b3bb1, 0xe73de7de, 0x92bec979, 0xcca6c0b2, 0x304a0979, 0x85aa43d4,
  0x783125bb, 0x6ca8eaa2, 0xe407eac6, 0x4b5cfc3e, 0x9fbf8c76, 0x15ca20be, 0xf2ca9fd3, 0x959bd756,
].map(BigInt);

/** checksum_impl.h, the slow and obvious way: 32 sums, row-major, BigInt mod 2^32. */
function referenceChecksum(page: Uint8Array, blockNo: number): number {
  const copy = Uint8Array.from(page);
  copy[8] = 0; // pd_checksum counts as zero
  copy[9] = 0;
  const v = new DataView(copy.buffer);
  const sums = [...BASE];
  const comp = (j: number, value: bigint): void => {
    const tmp = sums[j]! ^ value;
    sums[j] = ((tmp * 16777619n) & M32) ^ (tmp >> 17n);
  };
  for (let row = 0; row < copy.length / 128; row++) {
    for (let j = 0; j < 32; j++) comp(j, BigInt(v.getUint32(row * 128 + j * 4, LE)));
  }
  for (let r = 0; r < 2; r++) for (let j = 0; j < 32; j++) comp(j, 0n);
  let x = 0n;
  for (const s of sums) x ^= s;
  x ^= BigInt(blockNo);
  return Number((x % 65535n) + 1n);
}

interface HeaderFields {
  lsn?: bigint;
  checksum?: number;
  flags?: number;
  lower?: number;
  upper?: number;
  special?: number;
}

/** Write header fields into a page (native order, as PostgreSQL does). */
function setHeader(page: Uint8Array, h: HeaderFields): void {
  const v = new DataView(page.buffer, page.byteOffset, 24);
  if (h.lsn !== undefined) {
    v.setUint32(0, Number(h.lsn >> 32n), LE);
    v.setUint32(4, Number(h.lsn & M32), LE);
  }
  if (h.checksum !== undefined) v.setUint16(8, h.checksum, LE);
  if (h.flags !== undefined) v.setUint16(10, h.flags, LE);
  if (h.lower !== undefined) v.setUint16(12, h.lower, LE);
  if (h.upper !== undefined) v.setUint16(14, h.upper, LE);
  if (h.special !== undefined) v.setUint16(16, h.special, LE);
}

/**
 * A plausible heap page built byte by byte: a sane header (LSN 0/01A2B3C4, 10 line pointers,
 * pd_upper 4096, no special space, pd_pagesize_version = size | 4), body bytes (i*31+7) & 0xff.
 * pd_checksum is left 0.
 */
function formulaPage(blockSize = PG_BLOCK_SIZE): Uint8Array {
  const p = new Uint8Array(blockSize);
  for (let i = 24; i < blockSize; i++) p[i] = (i * 31 + 7) & 0xff;
  setHeader(p, { lsn: 0x01a2b3c4n, checksum: 0, flags: 0, lower: 24 + 4 * 10, upper: blockSize / 2, special: blockSize });
  new DataView(p.buffer).setUint16(18, (blockSize & 0xff00) | 4, LE);
  return p;
}

/** A seeded random page with a sane header and `lsn`, its checksum stamped for `blockNo`. */
function randomPage(rng: Rng, blockNo: number, lsn = 0x1000000n, blockSize = PG_BLOCK_SIZE): Uint8Array {
  const p = new Uint8Array(blockSize);
  p.set(rng.bytes(blockSize));
  const lower = 24 + 4 * (1 + rng.int(50));
  const upper = lower + rng.int(blockSize - lower - 64);
  setHeader(p, { lsn, flags: rng.int(8), lower, upper, special: blockSize - 8 * rng.int(3) });
  stamp(p, blockNo);
  return p;
}

/** XOR one byte of a buffer with `mask`. */
function flip(buf: Uint8Array, off: number, mask: number): void {
  buf[off] = buf[off]! ^ mask;
}

function stamp(page: Uint8Array, blockNo: number): void {
  setHeader(page, { checksum: pgChecksumPage(page, blockNo) });
}

function concat(pages: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(pages.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of pages) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * pg_checksums --check on a stopped PostgreSQL 15 (Debian 15, initdb -k) with formulaPage()
 * written at blocks 0 and 3 of base/1/99999 and of base/1/99999.1 reported "calculated checksum
 * 7DA7 / 7DA8 / 7DA9 / 7DAA but block contains 0" (segment 1 is blocks 131072 + n).
 */
const KNOWN: ReadonlyArray<[block: number, checksum: number]> = [
  [0, 0x7da7],
  [3, 0x7da8],
  [RELSEG_SIZE, 0x7da9],
  [RELSEG_SIZE + 3, 0x7daa],
];

describe('pgChecksumPage', () => {
  test('matches the checksums PostgreSQL 15 computed for a byte-by-byte page', () => {
    const page = formulaPage();
    for (const [block, want] of KNOWN) {
      assert.equal(pgChecksumPage(page, block), want, `block ${block}`);
      assert.equal(referenceChecksum(page, block), want, `reference, block ${block}`);
    }
  });

  test('matches the reference on seeded random pages, block numbers and page sizes', () => {
    const rng = new Rng(3001);
    const blocks = [0, 1, 2, 7, 131071, 131072, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
    for (const size of [PG_BLOCK_SIZE, 1024, 4096, 16384, 32768]) {
      for (let i = 0; i < 6; i++) {
        const page = new Uint8Array(size);
        page.set(rng.bytes(size));
        const block = i < 3 ? blocks[rng.int(blocks.length)]! : rng.int(2 ** 32);
        assert.equal(pgChecksumPage(page, block), referenceChecksum(page, block), `size ${size} block ${block}`);
      }
    }
  });

  test('results stay in 1..65535 and a value of 0 never comes back', () => {
    const rng = new Rng(3002);
    const page = new Uint8Array(PG_BLOCK_SIZE);
    page.set(rng.bytes(PG_BLOCK_SIZE));
    const seen = new Set<number>();
    for (let b = 0; b < 2000; b++) {
      const c = pgChecksumPage(page, b);
      assert.ok(c >= 1 && c <= 65535, `${c}`);
      seen.add(c);
    }
    assert.ok(seen.size > 1000, 'the block number changes the checksum');
  });

  test('ignores pd_checksum, covers every other byte, and does not modify the page', () => {
    const rng = new Rng(3003);
    const page = new Uint8Array(PG_BLOCK_SIZE);
    page.set(rng.bytes(PG_BLOCK_SIZE));
    const before = Uint8Array.from(page);
    const c = pgChecksumPage(page, 5);
    assert.deepEqual(page, before);
    flip(page, 8, 0xff);
    flip(page, 9, 0x5a);
    assert.equal(pgChecksumPage(page, 5), c, 'pd_checksum does not take part');
    for (const off of [0, 7, 10, 11, 12, 23, 24, 4095, 4096, 8190, 8191]) {
      const q = Uint8Array.from(page);
      flip(q, off, 0x01);
      assert.notEqual(pgChecksumPage(q, 5), c, `a flipped bit at byte ${off} changes the checksum`);
    }
  });

  test('gives the same answer for a page that is not 4-byte aligned', () => {
    const rng = new Rng(3004);
    const backing = new Uint8Array(PG_BLOCK_SIZE + 3);
    const page = backing.subarray(3);
    page.set(rng.bytes(PG_BLOCK_SIZE));
    const before = Uint8Array.from(page);
    assert.equal(pgChecksumPage(page, 9), referenceChecksum(page, 9));
    assert.equal(pgChecksumPage(page, 9), pgChecksumPage(Uint8Array.from(page), 9));
    assert.deepEqual(page, before);
  });

  test('refuses page sizes and block numbers PostgreSQL cannot have', () => {
    assert.throws(() => pgChecksumPage(new Uint8Array(8000), 0), RangeError);
    assert.throws(() => pgChecksumPage(new Uint8Array(64), 0), RangeError);
    assert.throws(() => pgChecksumPage(new Uint8Array(8192), -1), RangeError);
    assert.throws(() => pgChecksumPage(new Uint8Array(8192), 2 ** 32), RangeError);
    assert.throws(() => pgChecksumPage(new Uint8Array(8192), 1.5), RangeError);
  });
});

describe('page header', () => {
  test('reads the fields of a page built field by field', () => {
    const p = formulaPage();
    setHeader(p, { lsn: 0x0000000701a2b3c4n, checksum: 0xbeef, flags: 4 });
    const h = readPageHeader(p);
    assert.deepEqual(h, { lsn: 0x0000000701a2b3c4n, checksum: 0xbeef, flags: 4, lower: 64, upper: 4096, special: 8192, pageSizeVersion: 0x2004 });
    assert.equal(pageIsNew(p), false);
    assert.equal(pageIsNew(new Uint8Array(PG_BLOCK_SIZE)), true);
    assert.equal(pageHeaderIsSane(p), true);
    assert.throws(() => readPageHeader(new Uint8Array(20)), RangeError);
  });

  test('sanity follows PageIsVerifiedExtended', () => {
    const cases: Array<[HeaderFields, boolean]> = [
      [{}, true],
      [{ lower: 4096, upper: 4096 }, true], // full page
      [{ lower: 4097 }, false], // lower > upper
      [{ upper: 8200 }, false], // upper > special
      [{ special: 8184, upper: 8184 }, true], // 8 bytes of special space
      [{ special: 8188, upper: 8188 }, false], // special not MAXALIGNed
      [{ special: 8200, upper: 4096 }, false], // special beyond the page
      [{ flags: 7 }, true],
      [{ flags: 8 }, false], // unknown flag bit
    ];
    for (const [h, sane] of cases) {
      const p = formulaPage();
      setHeader(p, h);
      assert.equal(pageHeaderIsSane(p), sane, JSON.stringify(h));
    }
  });
});

/** native/zstd-sync.c's pageChecksums, when it was built here. */
const nativeSums = nativeHelper()?.pageChecksums;
const NO_NATIVE = !nativeSums && 'native/zstd-sync.c was not built on this machine';

describe('pageChecksums (native helper)', () => {
  test('equals the reference for every page, at every page size, alignment and block number', { skip: NO_NATIVE }, () => {
    const rng = new Rng(3201);
    for (const size of [PG_BLOCK_SIZE, 128, 1024, 4096, 16384, 32768]) {
      for (const misalign of [0, 1, 2, 3, 5]) {
        const pages = 1 + rng.int(5);
        const backing = new Uint8Array(misalign + pages * size + rng.int(size)); // a partial page at the end
        backing.set(rng.bytes(backing.length));
        const buf = backing.subarray(misalign);
        const before = Uint8Array.from(buf);
        for (const first of [0, 131071, 0xffffffff - pages + 1, rng.int(2 ** 32 - pages)]) {
          const out = new Uint16Array(pages + 2).fill(0xbeef);
          assert.equal(nativeSums!(buf, size, first, out), pages);
          for (let i = 0; i < pages; i++) {
            const page = buf.subarray(i * size, (i + 1) * size);
            assert.equal(out[i], referenceChecksum(page, first + i), `size ${size} misalign ${misalign} block ${first + i}`);
          }
          assert.deepEqual([...out.subarray(pages)], [0xbeef, 0xbeef], 'nothing written past the whole pages');
        }
        assert.deepEqual(buf, before, 'the pages are not modified');
      }
    }
    for (const [block, want] of KNOWN) {
      const out = new Uint16Array(1);
      nativeSums!(formulaPage(), PG_BLOCK_SIZE, block, out);
      assert.equal(out[0], want, `PostgreSQL's own value, block ${block}`);
    }
  });

  test('refuses what it cannot do instead of reading or writing out of bounds', { skip: NO_NATIVE }, () => {
    const buf = new Uint8Array(2 * PG_BLOCK_SIZE);
    for (const args of [
      [buf, 8000, 0, new Uint16Array(2)], // not a multiple of 128
      [buf, 65536, 0, new Uint16Array(2)], // too large
      [buf, PG_BLOCK_SIZE, 0, new Uint16Array(1)], // out too short
      [buf, PG_BLOCK_SIZE, 0, new Uint32Array(2)], // not a Uint16Array
      [buf, PG_BLOCK_SIZE, 0xffffffff, new Uint16Array(2)], // the second block number would overflow
      [buf, PG_BLOCK_SIZE, -1, new Uint16Array(2)],
      [buf, PG_BLOCK_SIZE, 1.5, new Uint16Array(2)],
    ] as const) {
      assert.throws(() => nativeSums!(...(args as unknown as Parameters<NonNullable<typeof nativeSums>>)), TypeError, `${args[1]} ${args[2]}`);
    }
  });

  test('scanPages finds the same with the native checksums as with the JS ones', { skip: NO_NATIVE }, () => {
    const rng = new Rng(3202);
    for (let round = 0; round < 20; round++) {
      const first = rng.int(1000);
      const pages = Array.from({ length: 1 + rng.int(16) }, (_, i) => randomPage(rng, first + i, BigInt(1 + rng.int(4)) << 24n));
      const buf = concat(pages);
      for (let k = rng.int(4); k > 0; k--) flip(buf, rng.int(buf.length), 1 << rng.int(8));
      if (rng.int(2)) buf.fill(0, 0, PG_BLOCK_SIZE); // a new page
      const opts = { skipLsnAtOrAfter: 3n << 24n };
      assert.deepEqual(scanPages(buf, first, opts), scanPages(buf, first, { ...opts, native: false }), `round ${round}`);
    }
  });
});

describe('verifyPages', () => {
  test('accepts good pages and reports exactly the block with a flipped byte', () => {
    const rng = new Rng(3101);
    const first = 40;
    const pages = Array.from({ length: 8 }, (_, i) => randomPage(rng, first + i));
    const buf = concat(pages);
    assert.deepEqual(verifyPages(buf, first), []);
    assert.deepEqual(scanPages(buf, first), { errors: [], checked: 8, skippedNew: 0, skippedLsn: 0, partialBytes: 0 });

    for (const [page, off] of [[1, 4096], [5, 100], [7, 8191], [0, 10], [3, 2]] as const) {
      const bad = Uint8Array.from(buf);
      flip(bad, page * PG_BLOCK_SIZE + off, 0x10);
      const stored = readPageHeader(bad.subarray(page * PG_BLOCK_SIZE)).checksum;
      const computed = referenceChecksum(bad.subarray(page * PG_BLOCK_SIZE, (page + 1) * PG_BLOCK_SIZE), first + page);
      assert.notEqual(stored, computed);
      assert.deepEqual(verifyPages(bad, first), [{ block: first + page, expected: stored, actual: computed, reason: 'checksum' }], `page ${page} byte ${off}`);
    }
  });

  test('a corrupted stored checksum is reported with both values', () => {
    const rng = new Rng(3102);
    const page = randomPage(rng, 0);
    const good = readPageHeader(page).checksum;
    setHeader(page, { checksum: good ^ 0x0100 });
    assert.deepEqual(verifyPages(page, 0), [{ block: 0, expected: good ^ 0x0100, actual: good, reason: 'checksum' }]);
  });

  test('a page moved to another block fails: the block number is part of the checksum', () => {
    const rng = new Rng(3103);
    const buf = concat([randomPage(rng, 10), randomPage(rng, 11)]);
    assert.deepEqual(verifyPages(buf, 10), []);
    assert.deepEqual(
      verifyPages(buf, 11).map((e) => e.block),
      [11, 12],
    );
  });

  test('skips new pages (pd_upper 0) and all-zero pages, and counts them', () => {
    const rng = new Rng(3104);
    const newWithJunk = new Uint8Array(PG_BLOCK_SIZE);
    newWithJunk.set(rng.bytes(PG_BLOCK_SIZE));
    setHeader(newWithJunk, { upper: 0, checksum: 1 });
    const buf = concat([randomPage(rng, 0), new Uint8Array(PG_BLOCK_SIZE), newWithJunk, randomPage(rng, 3)]);
    assert.deepEqual(scanPages(buf, 0), { errors: [], checked: 2, skippedNew: 2, skippedLsn: 0, partialBytes: 0 });
    // The same junk with a non-zero pd_upper is checked, and fails.
    setHeader(buf.subarray(2 * PG_BLOCK_SIZE), { upper: 4096 });
    assert.deepEqual(
      verifyPages(buf, 0).map((e) => e.block),
      [2],
    );
  });

  test('skips pages at or after skipLsnAtOrAfter, comparing whole 64-bit LSNs', () => {
    const rng = new Rng(3105);
    const limit = 0x00000002_00001000n; // 2/1000
    const lsns = [limit - 1n, limit, limit + 1n, 0x00000001_ffffffffn, 0x00000003_00000000n, 0n + 5n];
    const pages = lsns.map((lsn, i) => {
      const p = randomPage(rng, i, lsn);
      flip(p, 5000, 0xff); // every page is corrupt
      return p;
    });
    const buf = concat(pages);
    assert.deepEqual(
      verifyPages(buf, 0, { skipLsnAtOrAfter: limit }).map((e) => e.block),
      [0, 3, 5],
    );
    const s = scanPages(buf, 0, { skipLsnAtOrAfter: limit });
    assert.equal(s.skippedLsn, 3);
    assert.equal(s.checked, 3);
    assert.equal(verifyPages(buf, 0).length, 6, 'without a limit every page is checked');
  });

  test('reports a page whose checksum matches but whose header is not sane as "header"', () => {
    const rng = new Rng(3106);
    const variants: HeaderFields[] = [{ lower: 5000, upper: 4000 }, { flags: 0x10 }, { special: 8190 }, { upper: 8192, special: 8184 }];
    for (const h of variants) {
      const page = randomPage(rng, 4);
      setHeader(page, { ...h, lower: h.lower ?? 64, upper: h.upper ?? 4000 });
      stamp(page, 4); // PostgreSQL wrote it like that: the checksum is right
      const c = readPageHeader(page).checksum;
      assert.deepEqual(verifyPages(page, 4), [{ block: 4, expected: c, actual: c, reason: 'header' }], JSON.stringify(h));
      // Both broken: one report, as a checksum failure.
      flip(page, 6000, 1);
      const [e, ...rest] = verifyPages(page, 4);
      assert.equal(rest.length, 0);
      assert.equal(e?.reason, 'checksum');
    }
  });

  test('checks whole pages only and counts the partial tail', () => {
    const rng = new Rng(3107);
    const buf = concat([randomPage(rng, 0), randomPage(rng, 1), rng.bytes(1000)]);
    assert.deepEqual(scanPages(buf, 0), { errors: [], checked: 2, skippedNew: 0, skippedLsn: 0, partialBytes: 1000 });
    assert.deepEqual(scanPages(buf.subarray(0, 100), 0), { errors: [], checked: 0, skippedNew: 0, skippedLsn: 0, partialBytes: 100 });
  });

  test('works on an unaligned buffer and with another block size', () => {
    const rng = new Rng(3108);
    const pages = [randomPage(rng, 7), randomPage(rng, 8)];
    flip(pages[1]!, 3000, 4);
    const backing = new Uint8Array(2 * PG_BLOCK_SIZE + 1);
    const buf = backing.subarray(1);
    buf.set(concat(pages));
    assert.deepEqual(
      verifyPages(buf, 7).map((e) => e.block),
      [8],
    );
    const small = concat([randomPage(rng, 0, 1n, 1024), randomPage(rng, 1, 1n, 1024)]);
    assert.deepEqual(verifyPages(small, 0, { blockSize: 1024 }), []);
    assert.equal(verifyPages(small, 0).length, 0, 'as one 8 KiB page it is only a partial tail');
    assert.throws(() => verifyPages(small, 0, { blockSize: 1000 }), RangeError);
    assert.throws(() => verifyPages(small, 0xffffffff, { blockSize: 1024 }), RangeError, 'the last block would be 2^32');
    const last = randomPage(rng, 0xffffffff, 1n, 1024);
    assert.deepEqual(verifyPages(last, 0xffffffff, { blockSize: 1024 }), [], 'the last possible block');
  });
});

describe('relation files', () => {
  test('relationBlockNo derives absolute block numbers from segment and offset', () => {
    assert.equal(relationBlockNo('base/5/16384', 0), 0);
    assert.equal(relationBlockNo('base/5/16384', 3 * 8192), 3);
    assert.equal(relationBlockNo('base/5/16384.1', 0), 131072);
    assert.equal(relationBlockNo('base/5/16384.2', 8192), 2 * 131072 + 1);
    assert.equal(relationBlockNo('global/1262_fsm.3', 16384), 3 * 131072 + 2);
    assert.equal(relationBlockNo('pg_tblspc/16385/PG_15_202209061/5/16386_vm', 8192), 1);
    assert.equal(relationBlockNo('base/5/16384.2', 8192, 1024), 2 * 1024 + 1);
    assert.equal(relationBlockNo('base/5/16384.1', 2048, 1024, 1024), 1024 + 2);
    assert.equal(relationBlockNo('base/5/16384.32767', 131071 * 8192), 0xffffffff);
    assert.throws(() => relationBlockNo('base/5/16384', 100), RangeError);
    assert.throws(() => relationBlockNo('base/5/PG_VERSION', 0), RangeError);
    assert.throws(() => relationBlockNo('base/5/16384.32768', 0), RangeError);
    assert.throws(() => relationBlockNo('base/5/16384', 131072 * 8192), RangeError, 'past the end of a segment');
  });

  test('parseRelationPath takes a relation file name apart', () => {
    assert.deepEqual(parseRelationPath('base/5/16384'), { dir: 'base/5', relfilenode: 16384, fork: 'main', segment: 0 });
    assert.deepEqual(parseRelationPath('./base/5/16384_init'), { dir: 'base/5', relfilenode: 16384, fork: 'init', segment: 0 });
    assert.deepEqual(parseRelationPath('pg_tblspc/16385/PG_15_202209061/16384/16390_fsm.12'), {
      dir: 'pg_tblspc/16385/PG_15_202209061/16384',
      relfilenode: 16390,
      fork: 'fsm',
      segment: 12,
    });
    assert.deepEqual(parseRelationPath('global/1262'), { dir: 'global', relfilenode: 1262, fork: 'main', segment: 0 });
  });

  test('isChecksummedRelationFile: relation files yes, everything PostgreSQL skips no', () => {
    const yes = [
      'global/1262',
      'global/1262_fsm',
      'global/1262_vm',
      'base/1/1259',
      'base/16384/16385',
      'base/16384/16385.1',
      'base/16384/16385.127',
      'base/16384/16385_fsm',
      'base/16384/16385_vm.1',
      'base/16384/16385_init',
      'pg_tblspc/16390/PG_15_202209061/16384/16391',
      'pg_tblspc/16390/PG_9.6_201608131/16384/16391.2',
      './base/1/1259',
    ];
    const no = [
      'global/pg_control',
      'global/pg_filenode.map',
      'global/pg_internal.init',
      'base/1/pg_filenode.map',
      'base/1/pg_internal.init',
      'base/1/pg_internal.init.12345',
      'base/1/PG_VERSION',
      'PG_VERSION',
      'base/1/t3_16384',
      'base/1/t3_16384.1',
      'base/1/t3_16384_fsm',
      'base/pgsql_tmp/pgsql_tmp1234.0',
      'pg_tblspc/16390/PG_15_202209061/pgsql_tmp/pgsql_tmp1234.0',
      'base/1/16384.tmp',
      'base/1/16384_main',
      'base/1/16384.0',
      'base/1/016384',
      'base/1/16384_fsm_vm',
      'base/1/sub/16384',
      'pg_wal/000000010000000000000001',
      'pg_xact/0000',
      'pg_multixact/offsets/0000',
      'pg_stat/pgstat.stat',
      'postgresql.conf',
      'config_exec_params',
      '16384',
      'pg_tblspc/16390/16384/16391',
      'base/1/99999999999',
      '/base/1/1259',
    ];
    for (const p of yes) assert.equal(isChecksummedRelationFile(p), true, p);
    for (const p of no) assert.equal(isChecksummedRelationFile(p), false, p);
  });
});
