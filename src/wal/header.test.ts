/**
 * WAL segment long page headers, on synthetic headers built byte by byte from the layout written
 * down in header.ts (not with any encoder of the module under test): valid PostgreSQL 15 segments,
 * then every kind of damage and every kind of mismatch. Garbage input must end in a
 * WalFormatError, never in a RangeError from reading past the buffer.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { WalFormatError, WalMismatchError } from './errors.js';
import { WAL_LONG_HEADER_SIZE, WAL_PAGE_MAGIC, checkSegment, magicOfPgVersion, parseWalHeader, pgVersionOfMagic } from './header.js';
import { Rng } from '../testing/helpers.js';

const MiB = 1024 * 1024;

interface Fields {
  magic: number;
  info: number;
  tli: number;
  pageaddr: bigint;
  remLen: number;
  sysid: bigint;
  segSize: number;
  blcksz: number;
  /** The 4 padding bytes at offset 20; PostgreSQL leaves them zero, readers must ignore them. */
  pad: number;
}

const SYSID = 7710571092690821098n; // as a real `initdb` printed it
const PG15: Fields = { magic: 0xd110, info: 0x0002, tli: 1, pageaddr: 0xaffn * 16n * BigInt(MiB), remLen: 0, sysid: SYSID, segSize: 16 * MiB, blcksz: 8192, pad: 0 };

/** Little-endian bytes of `value`, `width` bytes wide, least significant first. */
function le(value: number | bigint, width: number): number[] {
  let v = BigInt(value);
  const out: number[] = [];
  for (let i = 0; i < width; i++) {
    out.push(Number(v & 0xffn));
    v >>= 8n;
  }
  return out;
}

/** A first page: the 40-byte long header at the offsets of header.ts, then `tail` bytes of filler. */
function page(over: Partial<Fields> = {}, tail = 8192 - 40, filler = 0x5a): Buffer {
  const f = { ...PG15, ...over };
  const bytes = [
    ...le(f.magic, 2), //     0 xlp_magic
    ...le(f.info, 2), //      2 xlp_info
    ...le(f.tli, 4), //       4 xlp_tli
    ...le(f.pageaddr, 8), //  8 xlp_pageaddr
    ...le(f.remLen, 4), //   16 xlp_rem_len
    ...le(f.pad, 4), //      20 padding
    ...le(f.sysid, 8), //    24 xlp_sysid
    ...le(f.segSize, 4), //  32 xlp_seg_size
    ...le(f.blcksz, 4), //   36 xlp_xlog_blcksz
  ];
  assert.equal(bytes.length, 40);
  return Buffer.concat([Buffer.from(bytes), Buffer.alloc(tail, filler)]);
}

function throwsFormat(fn: () => unknown, reason: string): WalFormatError {
  try {
    const r = fn();
    assert.fail(`expected WalFormatError(${reason}), got ${JSON.stringify(r, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`);
  } catch (err) {
    if (!(err instanceof WalFormatError)) throw err;
    assert.equal(err.reason, reason, err.message);
    assert.doesNotThrow(() => JSON.stringify(err.toJSON()));
    return err;
  }
}

function throwsMismatch(fn: () => unknown, reason: string): WalMismatchError {
  try {
    fn();
    assert.fail(`expected WalMismatchError(${reason})`);
  } catch (err) {
    if (!(err instanceof WalMismatchError)) throw err;
    assert.equal(err.reason, reason, err.message);
    assert.doesNotThrow(() => JSON.stringify(err.toJSON()), 'data must be JSON-safe (no bigints)');
    return err;
  }
}

describe('magic numbers', () => {
  test('the table maps each supported release to its XLOG_PAGE_MAGIC', () => {
    const expected: Array<[number, number]> = [
      [12, 0xd101],
      [13, 0xd106],
      [14, 0xd10d],
      [15, 0xd110],
      [16, 0xd113],
      [17, 0xd116],
      [18, 0xd118],
    ];
    assert.deepEqual([...WAL_PAGE_MAGIC].map(([m, v]) => [v, m]), expected);
    for (const [v, m] of expected) {
      assert.equal(pgVersionOfMagic(m), v);
      assert.equal(magicOfPgVersion(v), m);
      assert.equal(parseWalHeader(page({ magic: m })).pgVersion, v);
    }
    assert.equal(pgVersionOfMagic(0xd098), undefined);
    assert.equal(magicOfPgVersion(11), undefined);
  });
});

describe('parseWalHeader', () => {
  test('a PostgreSQL 15, 16 MiB segment: every field at its offset', () => {
    const h = parseWalHeader(page({ pad: 0xaaaaaaaa, remLen: 0x1234 }));
    assert.deepEqual(h, {
      magic: 0xd110,
      pgVersion: 15,
      info: 0x0002,
      timeline: 1,
      pageAddress: 0xaff000000n,
      remLen: 0x1234,
      systemId: SYSID,
      segSize: 16 * MiB,
      blockSize: 8192,
    });
  });

  test('exactly 40 bytes suffice; a Buffer slice at an offset of a larger ArrayBuffer reads right', () => {
    assert.equal(parseWalHeader(page({}, 0)).systemId, SYSID);
    const big = Buffer.concat([Buffer.alloc(13, 0xff), page(), Buffer.alloc(7, 0xff)]);
    assert.equal(parseWalHeader(big.subarray(13)).systemId, SYSID);
    assert.equal(parseWalHeader(new Uint8Array(big.buffer, big.byteOffset + 13, 40)).pageAddress, 0xaff000000n);
  });

  test('full 64-bit values: high page address, high system identifier, last timeline', () => {
    const h = parseWalHeader(page({ pageaddr: 0xffffffffff000000n, sysid: 0xfedcba9876543210n, tli: 0xffffffff }));
    assert.equal(h.pageAddress, 0xffffffffff000000n);
    assert.equal(h.systemId, 0xfedcba9876543210n);
    assert.equal(h.timeline, 0xffffffff);
  });

  test('flags: continuation and 0x0004 are allowed with the long header', () => {
    assert.equal(parseWalHeader(page({ info: 0x0003, remLen: 77 })).info, 3);
    assert.equal(parseWalHeader(page({ info: 0x0007 })).info, 7);
  });

  test('truncated', () => {
    for (const n of [0, 1, 2, 20, 24, 39]) {
      const err = throwsFormat(() => parseWalHeader(page().subarray(0, n)), 'truncated');
      assert.match(err.message, new RegExp(`${n} bytes`));
    }
  });

  test('wrong magic: another file, zeros, an old release, a big-endian machine', () => {
    assert.match(throwsFormat(() => parseWalHeader(page({ magic: 0x1234 })), 'unknown-magic').message, /page magic 0x1234 is not one holdfast knows \(0xD101 = 12, .*0xD110 = 15/);
    assert.match(throwsFormat(() => parseWalHeader(Buffer.alloc(8192)), 'unknown-magic').message, /all zeros/);
    assert.match(throwsFormat(() => parseWalHeader(page({ magic: 0xd098 })), 'unknown-magic').message, /PostgreSQL 11 \(magic 0xD098\).*12 and later/);
    assert.match(throwsFormat(() => parseWalHeader(page({ magic: 0xd093 })), 'unknown-magic').message, /PostgreSQL 9\.6/);
    // 0xD110 written big-endian reads as 0x10D1 little-endian
    const be = throwsFormat(() => parseWalHeader(page({ magic: 0x10d1 })), 'unknown-magic');
    assert.match(be.message, /PostgreSQL 15 WAL from a big-endian machine/);
    assert.equal(be.data['bigEndian'], true);
    // a text file (a history file passed where a segment was expected)
    assert.match(throwsFormat(() => parseWalHeader(Buffer.from('1\t0/1769098\tno recovery target specified\n')), 'unknown-magic').message, /not a PostgreSQL WAL segment/);
  });

  test('no long header flag: a later page, not the start of a segment', () => {
    assert.match(throwsFormat(() => parseWalHeader(page({ info: 0x0000 })), 'no-long-header').message, /no long-header flag \(xlp_info 0x0000\)/);
    throwsFormat(() => parseWalHeader(page({ info: 0x0001 })), 'no-long-header');
    throwsFormat(() => parseWalHeader(page({ info: 0x0005 })), 'no-long-header');
  });

  test('info bits PostgreSQL never sets', () => {
    for (const info of [0x000a, 0x0012, 0x8002, 0xffff]) throwsFormat(() => parseWalHeader(page({ info })), 'invalid-info-bits');
  });

  test('timeline 0', () => {
    throwsFormat(() => parseWalHeader(page({ tli: 0 })), 'invalid-timeline');
  });

  test('segment sizes: the eleven powers of two from 1 MiB to 1 GiB, nothing else', () => {
    for (let s = MiB; s <= 1024 * MiB; s *= 2) assert.equal(parseWalHeader(page({ segSize: s, pageaddr: BigInt(s) * 5n })).segSize, s);
    for (const s of [0, 1, 8192, MiB / 2, 3 * MiB, 16 * MiB + 1, 16 * MiB - 1, 0x80000000, 0xffffffff]) {
      assert.match(throwsFormat(() => parseWalHeader(page({ segSize: s, pageaddr: 0n })), 'implausible-seg-size').message, new RegExp(`segment size ${s} is not a power of two`));
    }
  });

  test('WAL block sizes: powers of two from 1 KiB to 64 KiB', () => {
    for (let b = 1024; b <= 65536; b *= 2) assert.equal(parseWalHeader(page({ blcksz: b })).blockSize, b);
    for (const b of [0, 512, 8191, 8193, 131072, 0xffffffff]) throwsFormat(() => parseWalHeader(page({ blcksz: b })), 'implausible-block-size');
  });

  test('a page address that is not a segment boundary', () => {
    const err = throwsFormat(() => parseWalHeader(page({ pageaddr: 0xaff002000n })), 'misaligned-page-address');
    assert.match(err.message, /page address A\/FF002000 is not a multiple of the segment size 16 MiB/);
  });

  test('seeded garbage: random buffers and bit flips end in WalFormatError or a consistent header', () => {
    const rng = new Rng(4001);
    let refused = 0;
    let parsed = 0;
    for (let i = 0; i < 20_000; i++) {
      let buf: Buffer;
      if (i % 2 === 0) {
        buf = rng.bytes(rng.int(120));
        if (rng.int(3) === 0 && buf.length >= 2) buf.writeUInt16LE([...WAL_PAGE_MAGIC.keys()][rng.int(WAL_PAGE_MAGIC.size)]!, 0);
      } else {
        buf = page({}, rng.int(64));
        const flips = 1 + rng.int(3);
        for (let f = 0; f < flips; f++) {
          const bit = rng.int(buf.length * 8);
          buf[bit >> 3]! ^= 1 << (bit & 7);
        }
        if (rng.int(4) === 0) buf = buf.subarray(0, rng.int(buf.length + 1));
      }
      try {
        const h = parseWalHeader(buf);
        parsed++;
        assert.ok(h.info & 2 && h.timeline > 0 && h.pageAddress % BigInt(h.segSize) === 0n);
      } catch (err) {
        if (!(err instanceof WalFormatError)) throw err;
        refused++;
      }
    }
    assert.ok(parsed > 100 && refused > 10_000, `both outcomes exercised: ${parsed} parsed, ${refused} refused`);
  });
});

describe('checkSegment', () => {
  const name = '000000010000000A000000FF'; // starts at A/FF000000 with 16 MiB segments
  const all = { systemId: SYSID, segmentName: name, segSize: 16 * MiB, pgVersion: 15, fileSize: 16 * MiB };

  test('the right segment of the right cluster passes every check', () => {
    const h = checkSegment(page(), all);
    assert.equal(h.systemId, SYSID);
    assert.equal(checkSegment(page(), { segmentName: `${name}.partial` }).pageAddress, 0xaff000000n);
    assert.equal(checkSegment(page()).segSize, 16 * MiB, 'no expectations: just the header checks');
  });

  test('another cluster', () => {
    const err = throwsMismatch(() => checkSegment(page({ sysid: 7000000000000000001n }), all), 'system-id');
    assert.equal(err.message, `${name} belongs to another cluster: system identifier 7000000000000000001, expected ${SYSID}`);
    assert.equal(err.actual, '7000000000000000001');
    assert.equal(err.expected, String(SYSID));
  });

  test('the page address is not the start of the named segment', () => {
    // header of ...FF under the name ...FE
    const err = throwsMismatch(() => checkSegment(page(), { ...all, segmentName: '000000010000000A000000FE' }), 'page-address');
    assert.match(err.message, /header is for the segment starting at A\/FF000000, but the name says A\/FE000000/);
    assert.equal(err.actual, 'A/FF000000');
    assert.equal(err.expected, 'A/FE000000');
    // across the log rollover
    throwsMismatch(() => checkSegment(page({ pageaddr: 0xb00000000n }), all), 'page-address');
  });

  test('timelines: a later timeline in the header is refused, an earlier one is the first segment after a switch', () => {
    const err = throwsMismatch(() => checkSegment(page({ tli: 3 }), { segmentName: '000000020000000A000000FF' }), 'timeline');
    assert.match(err.message, /on timeline 3, later than timeline 2 of its name/);
    assert.equal(checkSegment(page({ tli: 1 }), { segmentName: '000000020000000A000000FF' }).timeline, 1);
    assert.equal(checkSegment(page({ tli: 2 }), { segmentName: '000000020000000A000000FF' }).timeline, 2);
  });

  test('segment size, PostgreSQL version and file size mismatches', () => {
    const s = throwsMismatch(() => checkSegment(page({ segSize: 64 * MiB, pageaddr: 0n }), { segSize: 16 * MiB }), 'seg-size');
    assert.match(s.message, /segment size 64 MiB in its header, expected 16 MiB/);
    const v = throwsMismatch(() => checkSegment(page({ magic: 0xd113 }), all), 'pg-version');
    assert.match(v.message, /written by PostgreSQL 16 \(magic 0xD113\), but the cluster is PostgreSQL 15/);
    const f = throwsFormat(() => checkSegment(page(), { ...all, fileSize: 16 * MiB - 8192 }), 'wrong-file-size');
    assert.match(f.message, /the file is 16769024 bytes, but its header declares 16 MiB segments/);
  });

  test('the segment size for reading the name comes from the header unless given', () => {
    const gib = page({ segSize: 1024 * MiB, pageaddr: 3n << 30n });
    assert.equal(checkSegment(gib, { segmentName: '000000010000000000000003' }).segSize, 1024 * MiB);
    throwsMismatch(() => checkSegment(gib, { segmentName: '000000010000000000000002' }), 'page-address');
    // with 16 MiB the same name would mean 0/3000000
    throwsMismatch(() => checkSegment(page({ pageaddr: 3n << 30n }), { segmentName: '000000010000000000000003', segSize: 16 * MiB }), 'page-address');
    // a seg field that does not exist at the header's segment size
    throwsFormat(() => checkSegment(gib, { segmentName: '0000000100000000000000FF' }), 'invalid-name');
  });

  test('names that are not segments are refused before the bytes are read', () => {
    assert.match(throwsFormat(() => checkSegment(Buffer.alloc(0), { segmentName: '00000002.history' }), 'invalid-name').message, /timeline history file, not a WAL segment/);
    throwsFormat(() => checkSegment(page(), { segmentName: '000000010000000A000000FF.00000028.backup' }), 'invalid-name');
    throwsFormat(() => checkSegment(page(), { segmentName: 'pg_wal/000000010000000A000000FF' }), 'invalid-name');
  });

  test('header errors come through checkSegment unchanged', () => {
    throwsFormat(() => checkSegment(page().subarray(0, 39), all), 'truncated');
    throwsFormat(() => checkSegment(page({ magic: 0 }), all), 'unknown-magic');
    throwsFormat(() => checkSegment(page({ info: 0 }), all), 'no-long-header');
  });

  test('another cluster is reported first, even when other things differ too', () => {
    throwsMismatch(() => checkSegment(page({ sysid: 1n, segSize: 64 * MiB, pageaddr: 0n, magic: 0xd113, tli: 9 }), all), 'system-id');
  });

  test('the header occupies exactly the documented 40 bytes', () => {
    assert.equal(WAL_LONG_HEADER_SIZE, 40);
    // bytes after 40 (the first record) do not affect the header
    assert.deepEqual(parseWalHeader(page({}, 100, 0x00)), parseWalHeader(page({}, 100, 0xff)));
  });
});
