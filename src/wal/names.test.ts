/**
 * WAL-archive names, LSN arithmetic, ordering and timeline history files. Expected values are
 * written out by hand (from PostgreSQL's definitions and its documentation's examples), not
 * computed with the functions under test; seeded random inputs cover the rest.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { WalFormatError } from './errors.js';
import {
  MAX_LSN,
  WAL_SEG_SIZE_DEFAULT,
  backupHistoryFileName,
  backupStartLsn,
  classifyWalName,
  compareWalNames,
  formatLsn,
  formatWalName,
  historyFileName,
  isValidSegSize,
  maxSegNo,
  nextSegmentName,
  parseLsn,
  parseSegmentName,
  parseTimelineHistory,
  parseWalName,
  parseWalNameStrict,
  partialSegmentName,
  segNoOfEndLsn,
  segNoOfLsn,
  segmentLsnRange,
  segmentName,
  segmentNameOfLsn,
  segmentsPerLogId,
  sortWalNames,
  timelineOfLsn,
} from './names.js';
import { Rng } from '../testing/helpers.js';

const MiB = 1024 * 1024;
/** Every segment size PostgreSQL allows. */
const SEG_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024].map((m) => m * MiB);

/** fn must throw a WalFormatError with this reason; returns it. */
function throwsWal(fn: () => unknown, reason: string, what = ''): WalFormatError {
  try {
    const r = fn();
    assert.fail(`${what}: expected WalFormatError(${reason}), got a result: ${String(r)}`);
  } catch (err) {
    if (!(err instanceof WalFormatError)) throw err;
    assert.equal(err.reason, reason, `${what}: ${err.message}`);
    assert.doesNotThrow(() => JSON.stringify(err.toJSON()), 'error data must be JSON-safe');
    return err;
  }
}

function hex8(n: number): string {
  return n.toString(16).toUpperCase().padStart(8, '0');
}

describe('segment sizes', () => {
  test('exactly the powers of two from 1 MiB to 1 GiB are valid', () => {
    for (const s of SEG_SIZES) assert.ok(isValidSegSize(s), `${s}`);
    for (const s of [0, -16 * MiB, MiB / 2, 2048 * MiB, 16 * MiB + 1, 3 * MiB, 24 * MiB, 16.5 * MiB, NaN, Infinity]) assert.ok(!isValidSegSize(s), `${s}`);
  });

  test('segments per log id and the last segment number', () => {
    assert.equal(segmentsPerLogId(16 * MiB), 256);
    assert.equal(segmentsPerLogId(MiB), 4096);
    assert.equal(segmentsPerLogId(1024 * MiB), 4);
    assert.equal(maxSegNo(16 * MiB), 0xffffffffffn);
    assert.equal(maxSegNo(1024 * MiB), 0x3ffffffffn);
  });

  test('an invalid segment size is an error even where names are only classified', () => {
    throwsWal(() => parseWalName('000000010000000000000001', 3 * MiB), 'invalid-seg-size');
    throwsWal(() => segmentName(1, 1n, 0), 'invalid-seg-size');
    throwsWal(() => segNoOfLsn(0n, 15 * MiB), 'invalid-seg-size');
  });
});

describe('parsing names', () => {
  test('a 16 MiB segment name: timeline, log and seg fields', () => {
    assert.deepEqual(parseWalName('000000010000000A000000FF'), { kind: 'segment', timeline: 1, segNo: 0xan * 256n + 0xffn });
    assert.deepEqual(parseWalName('0000000200000000000000A3'), { kind: 'segment', timeline: 2, segNo: 0xa3n });
    assert.deepEqual(parseWalName('FFFFFFFFFFFFFFFF000000FF'), { kind: 'segment', timeline: 0xffffffff, segNo: 0xffffffffffn });
  });

  test('the segment number depends on the segment size', () => {
    assert.equal((parseWalName('000000010000000A000000FF', MiB) as { segNo: bigint }).segNo, 0xan * 4096n + 0xffn);
    assert.equal((parseWalName('000000010000000A00000003', 1024 * MiB) as { segNo: bigint }).segNo, 0xan * 4n + 3n);
    // seg FF does not exist with 1 GiB segments (only 0..3), nor 0x100 with 16 MiB ones
    assert.equal(parseWalName('000000010000000A000000FF', 1024 * MiB), undefined);
    assert.equal(parseWalName('000000010000000A00000100'), undefined);
    assert.match(throwsWal(() => parseWalNameStrict('000000010000000A00000004', 1024 * MiB), 'invalid-name').message, /out of range for 1 GiB segments \(00000000 to 00000003\)/);
  });

  test('partial, timeline history and backup history names', () => {
    assert.deepEqual(parseWalName('000000010000000A000000FF.partial'), { kind: 'partial', timeline: 1, segNo: 2815n });
    assert.deepEqual(parseWalName('00000002.history'), { kind: 'history', timeline: 2 });
    assert.deepEqual(parseWalName('0000001A.history'), { kind: 'history', timeline: 26 });
    const b = parseWalName('000000010000000A000000FF.00000028.backup');
    assert.deepEqual(b, { kind: 'backup', timeline: 1, segNo: 2815n, offset: 0x28 });
    assert.equal(backupStartLsn(b as never), 0xaff000028n);
    assert.equal(classifyWalName('000000010000000A000000FF'), 'segment');
    assert.equal(classifyWalName('000000010000000A000000FF.partial'), 'partial');
    assert.equal(classifyWalName('00000002.history'), 'history');
    assert.equal(classifyWalName('000000010000000A000000FF.00000028.backup'), 'backup');
  });

  const BAD: Array<[string, RegExp]> = [
    ['', /empty/],
    ['abc', /expected a 24-hex-digit/],
    ['000000010000000a000000ff', /upper case/],
    ['00000001000000000000001', /expected a 24-hex-digit/],
    ['0000000100000000000000011', /expected a 24-hex-digit/],
    ['000000010000000A000000FF.partial.gz', /expected/],
    ['000000010000000A000000FF.gz', /expected/],
    ['000000010000000A000000FF.partial ', /expected/],
    ['000000010000000A000000FF\n', /expected/],
    [' 000000010000000A000000FF', /expected/],
    ['../000000010000000A000000FF', /path separator/],
    ['pg_wal/000000010000000A000000FF', /path separator/],
    ['000000010000000A000000FF/', /path separator/],
    ['..\\000000010000000A000000FF', /path separator/],
    ['000000010000000A000000FF\0', /NUL/],
    ['..', /expected/],
    ['000000000000000A000000FF', /timeline 0/],
    ['00000000.history', /timeline 0/],
    ['00000001.History', /expected/],
    ['0000001.history', /expected/],
    ['00000002.history.partial', /expected/],
    ['000000010000000A000000FF.backup', /expected/],
    ['000000010000000A000000FF.0000028.backup', /expected/],
    ['000000010000000A000000FF.01000000.backup', /beyond the end of a 16 MiB segment/],
    ['000000010000000A00000100', /out of range for 16 MiB/],
    ['0x0000010000000A000000FF', /expected/],
    ['０00000010000000A000000FF', /expected/],
    ['archive_status', /expected/],
    ['000000010000000A000000FF.ready', /expected/],
    ['x'.repeat(100_000), /characters long/],
  ];

  for (const [name, why] of BAD) {
    test(`rejected: ${JSON.stringify(name.length > 40 ? `${name.slice(0, 20)}… (${name.length} chars)` : name)}`, () => {
      assert.equal(parseWalName(name), undefined);
      assert.equal(classifyWalName(name), undefined);
      const err = throwsWal(() => parseWalNameStrict(name), 'invalid-name', name.slice(0, 40));
      assert.match(err.message, why);
      assert.ok(err.message.length < 500, 'a message quotes at most a bounded part of the name');
    });
  }

  test('parseSegmentName refuses history and backup history names', () => {
    assert.match(throwsWal(() => parseSegmentName('00000002.history'), 'invalid-name').message, /timeline history file, not a WAL segment/);
    assert.match(throwsWal(() => parseSegmentName('000000010000000A000000FF.00000028.backup'), 'invalid-name').message, /backup history file/);
    assert.deepEqual(parseSegmentName('000000010000000A000000FF.partial'), { kind: 'partial', timeline: 1, segNo: 2815n });
  });
});

describe('formatting and round trips', () => {
  test('formatting known values', () => {
    assert.equal(segmentName(1, 2815n), '000000010000000A000000FF');
    assert.equal(segmentName(1, 0n), '000000010000000000000000');
    assert.equal(segmentName(0x1a, 0x1234n * 4n + 3n, 1024 * MiB), '0000001A0000123400000003');
    assert.equal(segmentName(1, 0xabcn * 4096n + 0xfffn, MiB), '0000000100000ABC00000FFF');
    assert.equal(partialSegmentName(3, 256n), '000000030000000100000000.partial');
    assert.equal(historyFileName(2), '00000002.history');
    assert.equal(historyFileName(0xffffffff), 'FFFFFFFF.history');
    // The PostgreSQL docs' pg_walfile_name_offset example location, as a backup start
    assert.equal(backupHistoryFileName(1, parseLsn('16/B374D848')), '0000000100000016000000B3.0074D848.backup');
  });

  test('formatting refuses values out of range', () => {
    throwsWal(() => segmentName(0, 1n), 'out-of-range');
    throwsWal(() => segmentName(0x100000000, 1n), 'out-of-range');
    throwsWal(() => segmentName(1.5, 1n), 'out-of-range');
    throwsWal(() => segmentName(1, -1n), 'out-of-range');
    throwsWal(() => segmentName(1, 0x10000000000n), 'out-of-range');
    throwsWal(() => historyFileName(0), 'out-of-range');
    throwsWal(() => formatWalName({ kind: 'backup', timeline: 1, segNo: 1n, offset: 16 * MiB }), 'out-of-range');
    throwsWal(() => backupHistoryFileName(1, -1n), 'out-of-range');
  });

  test('seeded round trips of every kind and every segment size', () => {
    const rng = new Rng(3001);
    for (let i = 0; i < 5000; i++) {
      const segSize = SEG_SIZES[rng.int(SEG_SIZES.length)]!;
      const timeline = 1 + rng.int(0xffffffff);
      const segNo = rng.next() % (maxSegNo(segSize) + 1n);
      const offset = rng.int(segSize);
      const names = [
        { kind: 'segment', timeline, segNo },
        { kind: 'partial', timeline, segNo },
        { kind: 'history', timeline },
        { kind: 'backup', timeline, segNo, offset },
      ] as const;
      for (const n of names) {
        const text = formatWalName(n, segSize);
        assert.deepEqual(parseWalName(text, segSize), n, text);
        assert.equal(formatWalName(parseWalNameStrict(text, segSize), segSize), text);
      }
      // the name's fields, read independently
      const seg = segmentName(timeline, segNo, segSize);
      const perLog = BigInt(0x100000000 / segSize);
      assert.equal(seg, hex8(timeline) + hex8(Number(segNo / perLog)) + hex8(Number(segNo % perLog)));
    }
  });
});

describe('next segment and rollover', () => {
  test('16 MiB: seg runs 00..FF, then the log increments', () => {
    assert.equal(nextSegmentName('000000010000000000000001'), '000000010000000000000002');
    assert.equal(nextSegmentName('0000000100000000000000FE'), '0000000100000000000000FF');
    assert.equal(nextSegmentName('0000000100000000000000FF'), '000000010000000100000000');
    assert.equal(nextSegmentName('00000007000000AB000000FF'), '00000007000000AC00000000');
    assert.equal(nextSegmentName('0000000100000000000000FF.partial'), '000000010000000100000000');
  });

  test('other sizes change the seg range', () => {
    const last: Array<[number, string]> = [
      [1 * MiB, '00000FFF'],
      [2 * MiB, '000007FF'],
      [4 * MiB, '000003FF'],
      [8 * MiB, '000001FF'],
      [16 * MiB, '000000FF'],
      [32 * MiB, '0000007F'],
      [64 * MiB, '0000003F'],
      [128 * MiB, '0000001F'],
      [256 * MiB, '0000000F'],
      [512 * MiB, '00000007'],
      [1024 * MiB, '00000003'],
    ];
    for (const [size, lastSeg] of last) {
      assert.equal(nextSegmentName(`0000000100000005${lastSeg}`, size), '000000010000000600000000', `${size / MiB} MiB`);
      // one past the last seg is not a name at this size
      const pastLast = hex8(parseInt(lastSeg, 16) + 1);
      assert.equal(parseWalName(`0000000100000005${pastLast}`, size), undefined, `${size / MiB} MiB`);
    }
    assert.equal(nextSegmentName('000000010000000500000002', 1024 * MiB), '000000010000000500000003');
  });

  test('seeded: next is segNo + 1 on the same timeline', () => {
    const rng = new Rng(3002);
    for (let i = 0; i < 2000; i++) {
      const segSize = SEG_SIZES[rng.int(SEG_SIZES.length)]!;
      const tli = 1 + rng.int(1000);
      const segNo = rng.next() % maxSegNo(segSize);
      const next = parseWalName(nextSegmentName(segmentName(tli, segNo, segSize), segSize), segSize);
      assert.deepEqual(next, { kind: 'segment', timeline: tli, segNo: segNo + 1n });
    }
  });

  test('there is no segment after the last one, and other kinds have no next segment', () => {
    assert.match(throwsWal(() => nextSegmentName('00000001FFFFFFFF000000FF'), 'out-of-range').message, /last possible WAL segment/);
    throwsWal(() => nextSegmentName('00000001FFFFFFFF00000003', 1024 * MiB), 'out-of-range');
    throwsWal(() => nextSegmentName('00000002.history'), 'invalid-name');
    throwsWal(() => nextSegmentName('000000010000000A000000FF.00000028.backup'), 'invalid-name');
    throwsWal(() => nextSegmentName('nonsense'), 'invalid-name');
  });
});

describe('LSNs', () => {
  test('parse and format known values', () => {
    assert.equal(parseLsn('16/B374D848'), 0x16b374d848n);
    assert.equal(formatLsn(0x16b374d848n), '16/B374D848');
    assert.equal(parseLsn('0/0'), 0n);
    assert.equal(formatLsn(0n), '0/0');
    assert.equal(parseLsn('0/1769098'), 0x1769098n);
    assert.equal(formatLsn(0x1000000n), '0/1000000');
    assert.equal(parseLsn('FFFFFFFF/FFFFFFFF'), MAX_LSN);
    assert.equal(formatLsn(MAX_LSN), 'FFFFFFFF/FFFFFFFF');
    assert.equal(parseLsn('16/b374d848'), 0x16b374d848n, 'pg_lsn accepts lower case');
    assert.equal(parseLsn('00000016/0000D848'), 0x160000d848n, 'leading zeros');
    assert.equal(formatLsn(0x100000000n), '1/0');
  });

  for (const bad of ['', '/', '1/', '/1', '123456789/0', '0/123456789', '1/2/3', ' 1/2', '1/2 ', 'g/1', '-1/0', '0x1/0', '1\\2', '1/2\n', '１/2']) {
    test(`not an LSN: ${JSON.stringify(bad)}`, () => {
      assert.match(throwsWal(() => parseLsn(bad), 'invalid-lsn').message, /is not an LSN/);
    });
  }

  test('formatting refuses values outside 64 bits', () => {
    throwsWal(() => formatLsn(-1n), 'out-of-range');
    throwsWal(() => formatLsn(MAX_LSN + 1n), 'out-of-range');
  });

  test('seeded round trips', () => {
    const rng = new Rng(3003);
    for (let i = 0; i < 5000; i++) {
      const lsn = rng.next() >> BigInt(rng.int(64));
      const text = formatLsn(lsn);
      assert.match(text, /^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/);
      assert.equal(parseLsn(text), lsn);
      assert.equal(parseLsn(text.toLowerCase()), lsn);
    }
  });

  test('segment of an LSN, and LSN range of a segment', () => {
    // PostgreSQL docs: pg_walfile_name('16/B374D848') is 0000000100000016000000B3 at 16 MiB
    assert.equal(segmentNameOfLsn(1, parseLsn('16/B374D848')), '0000000100000016000000B3');
    assert.deepEqual(segmentLsnRange('000000010000000A000000FF'), { start: 0xaff000000n, end: 0xb00000000n });
    assert.deepEqual(segmentLsnRange('000000010000000000000001'), { start: 0x1000000n, end: 0x2000000n });
    assert.deepEqual(segmentLsnRange(3n, 1024 * MiB), { start: 3n << 30n, end: 4n << 30n });
    assert.deepEqual(segmentLsnRange('000000010000000000000001.partial', MiB), { start: 0x100000n, end: 0x200000n });
    // a segment boundary belongs to the next segment; as an end point, to the previous one
    assert.equal(segNoOfLsn(0x2000000n), 2n);
    assert.equal(segNoOfEndLsn(0x2000000n), 1n);
    assert.equal(segNoOfEndLsn(0x2000001n), 2n);
    assert.equal(segNoOfLsn(0x1ffffffn), 1n);
    throwsWal(() => segNoOfEndLsn(0n), 'out-of-range');
    throwsWal(() => segmentLsnRange('00000002.history'), 'invalid-name');
    throwsWal(() => segmentLsnRange(-1n), 'out-of-range');
    throwsWal(() => segNoOfLsn(-5n), 'out-of-range');
  });

  test('seeded: every LSN lies in the range of its segment', () => {
    const rng = new Rng(3004);
    for (let i = 0; i < 5000; i++) {
      const segSize = SEG_SIZES[rng.int(SEG_SIZES.length)]!;
      const lsn = rng.next();
      const { start, end } = segmentLsnRange(segNoOfLsn(lsn, segSize), segSize);
      assert.ok(start <= lsn && lsn < end, `${formatLsn(lsn)} in [${formatLsn(start)}, ${end})`);
      assert.equal(end - start, BigInt(segSize));
      if (lsn > 0n) {
        const { start: s2, end: e2 } = segmentLsnRange(segNoOfEndLsn(lsn, segSize), segSize);
        assert.ok(s2 < lsn && lsn <= e2);
      }
    }
  });
});

describe('ordering', () => {
  test('a shuffled listing sorts by timeline, then segment, history first, then partial, then backup', () => {
    const expected = [
      '00000001.history',
      '000000010000000000000000',
      '000000010000000000000001',
      '0000000100000000000000FF',
      '0000000100000000000000FF.partial',
      '0000000100000000000000FF.00000028.backup',
      '0000000100000000000000FF.00A00000.backup',
      '000000010000000100000000',
      '00000002.history',
      '000000020000000000000002',
      '0000000A0000000000000001',
      'README',
      'archive_status',
    ];
    const rng = new Rng(3005);
    for (let round = 0; round < 50; round++) {
      const shuffled = [...expected];
      for (let i = shuffled.length - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
      }
      assert.deepEqual(sortWalNames(shuffled), expected);
    }
  });

  test('seeded: for valid segment names the order is the order of (timeline, segNo)', () => {
    const rng = new Rng(3006);
    for (let i = 0; i < 3000; i++) {
      const a = { t: 1 + rng.int(4), s: rng.next() % 2000n };
      const b = { t: 1 + rng.int(4), s: rng.next() % 2000n };
      const expect = a.t !== b.t ? Math.sign(a.t - b.t) : a.s === b.s ? 0 : a.s < b.s ? -1 : 1;
      assert.equal(Math.sign(compareWalNames(segmentName(a.t, a.s), segmentName(b.t, b.s))), expect);
    }
  });
});

describe('timeline history files', () => {
  test('the file PostgreSQL 15 wrote on promotion', () => {
    assert.deepEqual(parseTimelineHistory('1\t0/1769098\tno recovery target specified\n', 2), [{ timeline: 1, switchLsn: 0x1769098n, reason: 'no recovery target specified', line: 1 }]);
  });

  test('several ancestors, comments, blank lines, CRLF, spaces, no reason, bytes input', () => {
    const text = ['# comment', '', '1\t0/3000000\tno recovery target specified', '   # indented comment', '\t', '2 0/5000060 before 2024-01-01 00:00:00+00\r', '5\t1/0', ''].join('\n');
    const expected = [
      { timeline: 1, switchLsn: 0x3000000n, reason: 'no recovery target specified', line: 3 },
      { timeline: 2, switchLsn: 0x5000060n, reason: 'before 2024-01-01 00:00:00+00', line: 6 },
      { timeline: 5, switchLsn: 0x100000000n, reason: '', line: 7 },
    ];
    assert.deepEqual(parseTimelineHistory(text, 6), expected);
    assert.deepEqual(parseTimelineHistory(Buffer.from(text)), expected);
    assert.deepEqual(parseTimelineHistory(''), []);
    assert.deepEqual(parseTimelineHistory('# only a comment\n\n'), []);
  });

  const BAD: Array<[string, string, RegExp]> = [
    ['abc\t0/1\tx', 'history-syntax', /line 1: expected a numeric timeline ID/],
    ['1\t0/1\tok\n\nx1\t0/2', 'history-syntax', /line 3: expected a numeric timeline ID/],
    ['1', 'history-syntax', /line 1: expected a switch point LSN after the timeline ID/],
    ['1\t', 'history-syntax', /line 1: expected a switch point LSN like/],
    ['1\tzz/1', 'history-syntax', /expected a switch point LSN/],
    ['1x\t0/1', 'history-syntax', /expected white space after the timeline ID/],
    ['1\t0/1769098x', 'history-syntax', /unexpected "x" right after the switch point/],
    ['1\t0/', 'history-syntax', /expected a switch point LSN/],
    ['1\t123456789/0', 'history-syntax', /more than 8 hex digits/],
    ['0\t0/1\tx', 'history-syntax', /timeline ID 0 is out of range/],
    ['4294967296\t0/1\tx', 'history-syntax', /timeline ID 4294967296 is out of range/],
    ['99999999999999999999\t0/1', 'history-syntax', /out of range/],
    ['-1\t0/1', 'history-syntax', /expected a numeric timeline ID/],
    ['2\t0/1\tx\n1\t0/2\ty', 'history-order', /line 2: timeline IDs must increase: 1 follows 2 \(line 1\)/],
    ['1\t0/1\tx\n1\t0/2\ty', 'history-order', /line 2: timeline IDs must increase/],
  ];
  for (const [text, reason, why] of BAD) {
    test(`malformed: ${JSON.stringify(text)}`, () => {
      const err = throwsWal(() => parseTimelineHistory(text), reason, text);
      assert.match(err.message, why);
      assert.equal(typeof err.data['line'], 'number');
    });
  }

  test('ancestors must be below the file\'s own timeline', () => {
    assert.match(throwsWal(() => parseTimelineHistory('1\t0/1\tx\n2\t0/2\ty\n', 2), 'history-order').message, /line 2: ancestor timeline 2 is not below the history file's own timeline 2/);
    assert.equal(parseTimelineHistory('1\t0/1\tx\n2\t0/2\ty\n', 3).length, 2);
  });

  test('which timeline holds an LSN', () => {
    const h = parseTimelineHistory('1\t0/3000000\ta\n2\t0/5000060\tb\n', 3);
    assert.equal(timelineOfLsn(h, 3, 0n), 1);
    assert.equal(timelineOfLsn(h, 3, 0x2ffffffn), 1);
    assert.equal(timelineOfLsn(h, 3, 0x3000000n), 2, 'the switch point itself is on the next timeline');
    assert.equal(timelineOfLsn(h, 3, 0x500005fn), 2);
    assert.equal(timelineOfLsn(h, 3, 0x5000060n), 3);
    assert.equal(timelineOfLsn(h, 3, MAX_LSN), 3);
    assert.equal(timelineOfLsn([], 1, 12345n), 1);
  });

  test('seeded fuzz: random content parses or throws WalFormatError, never anything else', () => {
    const rng = new Rng(3007);
    const pieces = ['1', '2', '17', '\t', ' ', '0/', '/', 'A', 'ff', '#', '\n', '\r\n', 'reason', '0/1769098', 'x', '\u00e9', '4294967295', '99999999999', '\0'];
    let parsed = 0;
    let refused = 0;
    for (let i = 0; i < 5000; i++) {
      const parts: string[] = [];
      const n = rng.int(30);
      for (let j = 0; j < n; j++) parts.push(pieces[rng.int(pieces.length)]!);
      const input = rng.int(4) === 0 ? rng.bytes(rng.int(200)) : parts.join('');
      try {
        const h = parseTimelineHistory(input);
        parsed++;
        for (let k = 1; k < h.length; k++) assert.ok(h[k]!.timeline > h[k - 1]!.timeline);
      } catch (err) {
        if (!(err instanceof WalFormatError)) throw err;
        assert.ok(err.reason === 'history-syntax' || err.reason === 'history-order', err.reason);
        refused++;
      }
    }
    assert.ok(parsed > 100 && refused > 100, `both outcomes exercised: ${parsed} parsed, ${refused} refused`);
  });
});

describe('seeded fuzz of names', () => {
  test('random strings and mutated names: undefined or a name that round-trips; strict throws only WalFormatError', () => {
    const rng = new Rng(3008);
    const alphabet = '0123456789ABCDEFabcdef./\\ \n\0xyz..';
    const suffixes = ['', '.partial', '.history', '.backup', '.00000028.backup', '.ready', '/', '..'];
    const valid = ['000000010000000A000000FF', '00000002.history', '000000010000000A000000FF.partial', '000000010000000A000000FF.00000028.backup', '000000010000000000000001'];
    let accepted = 0;
    let rejected = 0;
    for (let i = 0; i < 20_000; i++) {
      let s: string;
      const mode = rng.int(4);
      if (mode === 0) {
        const len = rng.int(40);
        s = '';
        for (let j = 0; j < len; j++) s += alphabet[rng.int(alphabet.length)];
      } else if (mode === 1) {
        s = '';
        for (let j = 0; j < 24; j++) s += '0123456789ABCDEF'[rng.int(rng.int(3) === 0 ? 16 : 3)];
        s += suffixes[rng.int(suffixes.length)];
      } else if (mode === 2) {
        const base = valid[rng.int(valid.length)]!;
        const at = rng.int(base.length + 1);
        const op = rng.int(3);
        const ch = alphabet[rng.int(alphabet.length)]!;
        s = op === 0 ? base.slice(0, at) + ch + base.slice(at + 1) : op === 1 ? base.slice(0, at) + base.slice(at + 1) : base.slice(0, at) + ch + base.slice(at);
      } else {
        s = String.fromCharCode(...Array.from(rng.bytes(rng.int(30)), (b) => b * 3));
      }
      const segSize = SEG_SIZES[rng.int(SEG_SIZES.length)]!;
      const p = parseWalName(s, segSize);
      if (p === undefined) {
        rejected++;
        throwsWal(() => parseWalNameStrict(s, segSize), 'invalid-name', JSON.stringify(s));
      } else {
        accepted++;
        assert.equal(formatWalName(p, segSize), s, 'an accepted name is exactly the canonical form');
        assert.deepEqual(parseWalNameStrict(s, segSize), p);
      }
    }
    assert.ok(accepted > 200 && rejected > 5000, `both outcomes exercised: ${accepted} accepted, ${rejected} rejected`);
  });

  test('default segment size is 16 MiB', () => {
    assert.equal(WAL_SEG_SIZE_DEFAULT, 16 * MiB);
  });
});
