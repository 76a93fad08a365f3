import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type WalBackup, checkWalContinuity, segSizeOfBackups } from './wal.js';
import { type TimelineSwitch, parseTimelineHistory, segmentName } from '../wal/names.js';

const SEG = 16 * 1024 * 1024;
const seg = (tl: number, n: number): string => segmentName(tl, BigInt(n), SEG);
const range = (tl: number, from: number, to: number): string[] => Array.from({ length: to - from + 1 }, (_, i) => seg(tl, from + i));
const lsn = (n: number, off = 0x28): string => `0/${(n * SEG + off).toString(16).toUpperCase()}`;
const backup = (id: string, tl: number, start: number, stop: number): WalBackup => ({ id: id.padEnd(64, '0'), timeline: tl, startLsn: lsn(start), startWal: seg(tl, start), stopWal: seg(tl, stop) });

function run(names: string[], backups: WalBackup[], history = new Map<number, readonly TimelineSwitch[] | Error>()): Array<{ kind: string; object: string; snapshots: string[] }> {
  return checkWalContinuity({ cluster: 'main', segSize: SEG, names, backups, history }).map((p) => ({ kind: p.kind, object: p.object, snapshots: p.snapshots.map((s) => s.slice(0, 2)) }));
}

test('a complete archive from each backup onward: no problem; WAL before the oldest backup is not needed', () => {
  assert.deepEqual(run([...range(1, 5, 20)], [backup('b1', 1, 8, 9), backup('b2', 1, 15, 15)]), []);
  assert.deepEqual(run([...range(1, 8, 9)], [backup('b1', 1, 8, 9)]), []);
});

test("a gap between two backups breaks the older one's recovery window only; a gap in a backup's own range makes it unrestorable", () => {
  const names = range(1, 5, 20).filter((n) => n !== seg(1, 12) && n !== seg(1, 13));
  assert.deepEqual(run(names, [backup('b1', 1, 8, 9), backup('b2', 1, 15, 15)]), [{ kind: 'wal-gap', object: `wal/main/${seg(1, 12)}`, snapshots: ['b1'] }]);
  const own = range(1, 5, 20).filter((n) => n !== seg(1, 9));
  const problems = run(own, [backup('b1', 1, 8, 10), backup('b2', 1, 15, 15)]);
  assert.deepEqual(problems, [
    { kind: 'wal-missing', object: `wal/main/${seg(1, 9)}`, snapshots: ['b1'] },
    { kind: 'wal-gap', object: `wal/main/${seg(1, 9)}`, snapshots: ['b1'] },
  ]);
  const message = checkWalContinuity({ cluster: 'main', segSize: SEG, names: own, backups: [backup('b1', 1, 8, 10)], history: new Map() })[0]!.message;
  assert.match(message, /cannot be restored/);
});

test('the newest segment cannot be missed offline (nothing after it is archived); a missing first segment of a backup is', () => {
  assert.deepEqual(run(range(1, 8, 19), [backup('b1', 1, 8, 9)]), []);
  assert.deepEqual(run(range(1, 9, 19), [backup('b1', 1, 8, 9)]).map((p) => p.kind), ['wal-missing', 'wal-gap']);
});

test('timelines: recovery follows a branch taken after the backup started; a branch taken before it is not its concern', () => {
  // Timeline 2 branched off timeline 1 at segment 12 (0/C000000).
  const h2 = parseTimelineHistory(`1\t${lsn(12, 0)}\tno recovery target specified\n`, 2);
  const history = new Map<number, readonly TimelineSwitch[] | Error>([[2, h2]]);
  const names = [...range(1, 5, 11), ...range(2, 12, 20), '00000002.history'];
  assert.deepEqual(run(names, [backup('b1', 1, 8, 9)], history), []);
  // A gap on timeline 2 breaks b1 (its recovery goes there); b0 started after the branch point on timeline 1? No: b0 is before too.
  const gap = names.filter((n) => n !== seg(2, 15));
  assert.deepEqual(run(gap, [backup('b1', 1, 8, 9)], history), [{ kind: 'wal-gap', object: `wal/main/${seg(2, 15)}`, snapshots: ['b1'] }]);
  // The first segment of the new timeline (the copy PostgreSQL writes at promotion) is needed.
  const first = names.filter((n) => n !== seg(2, 12));
  assert.deepEqual(run(first, [backup('b1', 1, 8, 9)], history), [{ kind: 'wal-gap', object: `wal/main/${seg(2, 12)}`, snapshots: ['b1'] }]);
  // A backup taken on timeline 1 after the branch point (an old primary that kept running) does not reach timeline 2.
  const late = [...range(1, 5, 16), ...range(2, 12, 20).filter((n) => n !== seg(2, 15)), '00000002.history'];
  assert.deepEqual(run(late, [backup('b3', 1, 14, 14)], history), []);
});

test('a lost or unreadable history file of timeline 2 breaks the backups whose recovery follows the switch to it, not those on timeline 2', () => {
  // As PostgreSQL 15 does (src/cli/damage.test.ts, and tried by hand): without 00000002.history,
  // recovery from a timeline-1 backup stays on timeline 1; one from a timeline-2 backup, which
  // needs no ancestry, recovers as before.
  const names = [...range(1, 5, 11), ...range(2, 12, 20)];
  const backups = [backup('b1', 1, 8, 9), backup('b2', 2, 14, 15)];
  assert.deepEqual(run(names, backups), [{ kind: 'wal-history-missing', object: 'wal/main/00000002.history', snapshots: ['b1'] }]);
  const bad = new Map<number, readonly TimelineSwitch[] | Error>([[2, new Error('not valid')]]);
  assert.deepEqual(run([...names, '00000002.history'], backups, bad), [{ kind: 'wal-history-unreadable', object: 'wal/main/00000002.history', snapshots: ['b1'] }]);
  // Without the file the switch point is unknown: a timeline-1 backup started after timeline 2's first segment cannot follow it.
  assert.deepEqual(run([...range(1, 5, 16), ...range(2, 12, 20)], [backup('b3', 1, 14, 14)]), [{ kind: 'wal-history-missing', object: 'wal/main/00000002.history', snapshots: [] }]);
  // A later timeline's history lists timeline 2's ancestry: the switch point is known from it.
  const h3 = parseTimelineHistory(`1\t${lsn(12, 0)}\tno recovery target specified\n2\t${lsn(18, 0)}\tno recovery target specified\n`, 3);
  const withH3 = new Map<number, readonly TimelineSwitch[] | Error>([[3, h3]]);
  const three = [...range(1, 5, 11), ...range(2, 12, 17), ...range(3, 18, 20), '00000003.history'];
  assert.deepEqual(run(three, [backup('b1', 1, 8, 9), backup('b4', 1, 11, 11)], withH3), [{ kind: 'wal-history-missing', object: 'wal/main/00000002.history', snapshots: ['b1', 'b4'] }]);
});

test('a damaged (unreadable) segment counts as missing, and a damaged newest segment still ends the archive: the backups reaching it are named', () => {
  const names = range(1, 5, 20);
  const backups = [backup('b1', 1, 8, 9), backup('b2', 1, 15, 15)];
  const run2 = (damaged: string[]): Array<{ kind: string; object: string; snapshots: string[] }> =>
    checkWalContinuity({ cluster: 'main', segSize: SEG, names, backups, history: new Map(), damaged: new Set(damaged) }).map((p) => ({ kind: p.kind, object: p.object, snapshots: p.snapshots.map((x) => x.slice(0, 2)) }));
  assert.deepEqual(run2([seg(1, 12)]), [{ kind: 'wal-gap', object: `wal/main/${seg(1, 12)}`, snapshots: ['b1'] }]);
  // Deleted, the newest segment cannot be missed offline; damaged, it is archived and unreadable.
  assert.deepEqual(run(range(1, 5, 19), backups), []);
  assert.deepEqual(run2([seg(1, 20)]), [{ kind: 'wal-gap', object: `wal/main/${seg(1, 20)}`, snapshots: ['b1', 'b2'] }]);
});

test('the segment size of a cluster whose record is lost, from its backups: the one size every start LSN and start segment agree on', () => {
  const at = (size: number, tl: number, lsn: bigint): WalBackup => ({ id: 'b'.padEnd(64, '0'), timeline: tl, startLsn: `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`, startWal: segmentName(tl, lsn / BigInt(size), size), stopWal: segmentName(tl, lsn / BigInt(size), size) });
  assert.equal(segSizeOfBackups([at(1 << 20, 1, 0xc00028n)]), 1 << 20);
  assert.equal(segSizeOfBackups([at(SEG, 1, 0x5000028n)]), SEG);
  assert.equal(segSizeOfBackups([at(64 << 20, 2, 0x1_2345_6789n)]), 64 << 20);
  // The first segment of every size starts at 0/0: nothing to tell them apart, unless another backup does.
  assert.equal(segSizeOfBackups([at(SEG, 1, 0x28n)]), undefined);
  assert.equal(segSizeOfBackups([at(SEG, 1, 0x28n), at(SEG, 1, 0x5000028n)]), SEG);
  assert.equal(segSizeOfBackups([at(SEG, 1, 0x5000028n), at(1 << 20, 1, 0xc00028n)]), undefined);
  assert.equal(segSizeOfBackups([]), undefined);
  assert.equal(segSizeOfBackups([{ ...at(SEG, 1, 0x5000028n), startLsn: 'nonsense' }]), undefined);
});

test('forged backup fields and huge ranges do not hang or throw', () => {
  const forged: WalBackup[] = [
    { id: 'x'.repeat(64), timeline: 1, startLsn: 'nonsense', startWal: seg(1, 1), stopWal: seg(1, 2) },
    { id: 'y'.repeat(64), timeline: 1, startLsn: lsn(1), startWal: seg(1, 5), stopWal: seg(1, 2) },
    { id: 'z'.repeat(64), timeline: 1, startLsn: lsn(1), startWal: 'garbage', stopWal: seg(1, 2) },
  ];
  assert.deepEqual(run([seg(1, 1), seg(1, 0xffffffff)], forged), []);
  const huge = run([seg(1, 1), segmentName(1, 0xffffffffffn, SEG)], [backup('b1', 1, 1, 1)]);
  assert.equal(huge.length, 1);
  assert.equal(huge[0]!.kind, 'wal-gap');
});
