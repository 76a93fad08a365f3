/**
 * The retention rules of `pg expire` (pg-policy.ts): which backups count, window, min-full and
 * pins keep, and which WAL the kept backups need across timelines. Hand-written histories for
 * the cases, seeded random histories for the invariants.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Rng } from '../testing/helpers.js';
import { formatLsn, historyFileName, parseLsn, segmentName } from '../wal/names.js';
import { type HistoryEntry, type RetentionBackup, type RetentionPolicy, type WalPlan, hasPolicy, planWal, reaches, selectBackups } from './pg-policy.js';

const SEG = 16 * 1024 * 1024;
const HOUR = 3_600_000;
const T0 = Date.parse('2026-01-01T00:00:00Z');

/** A backup starting at `hour` after T0 (lasting 10 minutes) at WAL segment `seg` of `timeline`. */
function backup(id: string, type: 'full' | 'incr', hour: number, seg = hour + 1, timeline = 1): RetentionBackup {
  return {
    id,
    type,
    timeline,
    startLsn: formatLsn(BigInt(seg) * BigInt(SEG) + 0x28n),
    startTime: new Date(T0 + hour * HOUR).toISOString(),
    stopTime: new Date(T0 + hour * HOUR + 600_000).toISOString(),
  };
}

/** Backups from a pattern such as "F I I F": one an hour, named b0, b1, … */
function history(pattern: string): RetentionBackup[] {
  return pattern
    .split(' ')
    .filter((x) => x)
    .map((t, i) => backup(`b${i}`, t === 'F' ? 'full' : 'incr', i));
}

const policy = (p: Partial<RetentionPolicy>): RetentionPolicy => ({ minFull: 1, ...p });
const keptIds = (backups: readonly RetentionBackup[], p: RetentionPolicy, now: number, pins: readonly string[] = []): string[] =>
  selectBackups(backups, p, new Set(pins), now)
    .decisions.filter((d) => d.keep)
    .map((d) => d.id);

describe('backup selection', () => {
  const nowAfter = (backups: readonly RetentionBackup[]): number => Date.parse(backups.at(-1)!.stopTime) + HOUR;

  test('a policy needs retain-full or a recovery window; min-full alone says nothing', () => {
    assert.equal(hasPolicy({ minFull: 3 }), false);
    assert.equal(hasPolicy({ minFull: 1, retainFull: 1 }), true);
    assert.equal(hasPolicy({ minFull: 1, recoveryWindowMs: 0 }), true);
  });

  test('retain-full N keeps the N newest fulls and the incrementals after them', () => {
    const b = history('F I I F I F I I');
    const now = nowAfter(b);
    assert.deepEqual(keptIds(b, policy({ retainFull: 1 }), now), ['b5', 'b6', 'b7']);
    assert.deepEqual(keptIds(b, policy({ retainFull: 2 }), now), ['b3', 'b4', 'b5', 'b6', 'b7']);
    assert.deepEqual(keptIds(b, policy({ retainFull: 3 }), now), b.map((x) => x.id));
    assert.deepEqual(keptIds(b, policy({ retainFull: 9 }), now), b.map((x) => x.id), 'fewer fulls than N: everything');
    const sel = selectBackups(b, policy({ retainFull: 2 }), new Set(), now);
    assert.deepEqual(sel.decisions[2], { id: 'b2', keep: false, reasons: [] });
    assert.deepEqual(sel.decisions[7]!.reasons, ['newest', 'retain-full']);
    assert.deepEqual(sel.decisions[3]!.reasons, ['retain-full']);
    assert.equal(sel.windowStart, undefined);
  });

  test('the newest backup is always kept, whatever the rules say', () => {
    const b = history('F I I');
    const sel = selectBackups(b, policy({ recoveryWindowMs: 0 }), new Set(), nowAfter(b));
    assert.deepEqual(
      sel.decisions.map((d) => [d.id, d.reasons]),
      [
        ['b0', ['min-full']],
        ['b1', ['min-full']],
        ['b2', ['newest', 'recovery-window']],
      ],
    );
    assert.deepEqual(keptIds(history('F'), policy({ retainFull: 1 }), T0), ['b0']);
    assert.deepEqual(selectBackups([], policy({ retainFull: 1 }), new Set(), T0).decisions, []);
  });

  test('recovery window: the newest backup ending before its start, and everything after', () => {
    const b = history('F I I F I I I');
    const now = T0 + 10 * HOUR; // b6 stops at 6h10m
    // Window start 5h30m: b5 (stop 5h10m) is the anchor.
    const sel = selectBackups(b, policy({ recoveryWindowMs: 4.5 * HOUR }), new Set(), now);
    assert.equal(sel.windowStart, new Date(T0 + 5.5 * HOUR).toISOString());
    assert.equal(sel.windowAnchor, 'b5');
    // min-full 1 brings back b3 (the newest full) and what follows it.
    assert.deepEqual(
      sel.decisions.filter((d) => d.keep).map((d) => [d.id, d.reasons]),
      [
        ['b3', ['min-full']],
        ['b4', ['min-full']],
        ['b5', ['recovery-window']],
        ['b6', ['newest', 'recovery-window']],
      ],
    );
    // A window starting exactly at a backup's stop: that backup does not end *before* it.
    const exact = selectBackups(b, policy({ recoveryWindowMs: now - Date.parse(b[4]!.stopTime) }), new Set(), now);
    assert.equal(exact.windowAnchor, 'b3');
    // A window reaching before every backup: all kept, no anchor.
    const wide = selectBackups(b, policy({ recoveryWindowMs: 30 * HOUR }), new Set(), now);
    assert.equal(wide.windowAnchor, undefined);
    assert.ok(wide.decisions.every((d) => d.keep && d.reasons.includes('recovery-window')));
  });

  test('min-full is never undercut, and only extends the kept range', () => {
    const b = history('F I F I I I');
    const now = nowAfter(b);
    assert.deepEqual(keptIds(b, policy({ retainFull: 1, minFull: 2 }), now), b.map((x) => x.id));
    assert.deepEqual(keptIds(b, policy({ retainFull: 2, minFull: 1 }), now), b.map((x) => x.id));
    assert.deepEqual(keptIds(b, policy({ retainFull: 1, minFull: 1 }), now), ['b2', 'b3', 'b4', 'b5']);
    // More than there are: everything.
    assert.deepEqual(keptIds(b, policy({ recoveryWindowMs: HOUR, minFull: 5 }), now), b.map((x) => x.id));
    const sel = selectBackups(b, policy({ retainFull: 1, minFull: 2 }), new Set(), now);
    assert.deepEqual(sel.decisions[0]!.reasons, ['min-full']);
    assert.deepEqual(sel.decisions[2]!.reasons, ['retain-full'], 'kept by retain-full already: no min-full reason');
  });

  test('a pinned backup is kept alone (every backup is self-contained), never its neighbours', () => {
    const b = history('F I I F I F I');
    const now = nowAfter(b);
    assert.deepEqual(keptIds(b, policy({ retainFull: 1 }), now, ['b2']), ['b2', 'b5', 'b6']);
    const sel = selectBackups(b, policy({ retainFull: 1 }), new Set(['b2', 'b6', 'not-a-backup']), now);
    assert.deepEqual(sel.decisions[2]!.reasons, ['pinned']);
    assert.deepEqual(sel.decisions[6]!.reasons, ['newest', 'retain-full', 'pinned']);
  });

  test('retain-full and a window together keep what either keeps', () => {
    const b = history('F I F I F I');
    const now = T0 + 6 * HOUR;
    assert.deepEqual(keptIds(b, policy({ retainFull: 1, recoveryWindowMs: 3.5 * HOUR }), now), ['b2', 'b3', 'b4', 'b5']);
    assert.deepEqual(keptIds(b, policy({ retainFull: 1, recoveryWindowMs: 4 * HOUR }), now), ['b1', 'b2', 'b3', 'b4', 'b5']);
    assert.deepEqual(keptIds(b, policy({ retainFull: 3, recoveryWindowMs: HOUR }), now), b.map((x) => x.id));
  });

  test('random histories: kept backups are the newest ones plus pins, and every rule holds', () => {
    const rng = new Rng(1717);
    for (let round = 0; round < 400; round++) {
      const n = 1 + rng.int(25);
      const b: RetentionBackup[] = [];
      let t = 0;
      for (let i = 0; i < n; i++) {
        t += 1 + rng.int(30);
        b.push(backup(`r${i}`, i === 0 || rng.int(4) === 0 ? 'full' : 'incr', t / 10, i + 1));
      }
      const now = Date.parse(b.at(-1)!.stopTime) + rng.int(5) * HOUR;
      const p: RetentionPolicy = {
        minFull: 1 + rng.int(3),
        ...(rng.int(2) ? { retainFull: 1 + rng.int(4) } : {}),
        ...(rng.int(2) ? { recoveryWindowMs: rng.int(60) * 0.1 * HOUR } : { retainFull: 1 + rng.int(4) }),
      };
      const pins = new Set(b.filter(() => rng.int(8) === 0).map((x) => x.id));
      const sel = selectBackups(b, p, pins, now);
      const keep = sel.decisions.map((d) => d.keep);
      const ctx = `round ${round}: ${JSON.stringify(p)} ${b.map((x) => x.type[0]).join('')}`;
      // The newest is kept; apart from pins, the kept ones are a suffix.
      assert.equal(keep[n - 1], true, ctx);
      const firstKept = sel.decisions.findIndex((d) => d.reasons.some((r) => r !== 'pinned'));
      for (let i = firstKept; i < n; i++) assert.equal(keep[i], true, `${ctx}: hole at ${i}`);
      for (let i = 0; i < firstKept; i++) assert.equal(keep[i], pins.has(b[i]!.id), `${ctx}: ${i}`);
      // Counts.
      const fullsTotal = b.filter((x) => x.type === 'full').length;
      const fullsKept = b.filter((x, i) => x.type === 'full' && i >= firstKept).length;
      assert.ok(fullsKept >= Math.min(p.minFull, fullsTotal), `${ctx}: min-full`);
      if (p.retainFull !== undefined) assert.ok(fullsKept >= Math.min(p.retainFull, fullsTotal), `${ctx}: retain-full`);
      // Window: every target in it that had a backup ending before it still has one.
      if (p.recoveryWindowMs !== undefined) {
        const ws = now - p.recoveryWindowMs;
        for (let k = 0; k <= 20; k++) {
          const target = ws + ((now - ws) * k) / 20;
          const before = b.some((x) => Date.parse(x.stopTime) < target);
          const keptBefore = b.some((x, i) => keep[i] && Date.parse(x.stopTime) < target);
          assert.equal(keptBefore, before, `${ctx}: target ${new Date(target).toISOString()}`);
        }
      }
      // Nothing kept without a need: the oldest of the suffix is where a rule starts (a full for
      // the counts, the window's anchor, or the newest).
      if (firstKept > 0) assert.ok(b[firstKept]!.type === 'full' || sel.windowAnchor === b[firstKept]!.id || firstKept === n - 1, `${ctx}: starts at ${firstKept}`);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// WAL

const seg = (tl: number, n: number, segSize = SEG): string => segmentName(tl, BigInt(n), segSize);
const segs = (tl: number, from: number, to: number, segSize = SEG): string[] => Array.from({ length: to - from + 1 }, (_, i) => seg(tl, from + i, segSize));
/** An LSN inside segment `n` (at byte offset `off`). */
const lsnIn = (n: number, off = 0x100, segSize = SEG): bigint => BigInt(n) * BigInt(segSize) + BigInt(off);
const walBackup = (id: string, timeline: number, startSeg: number, segSize = SEG): RetentionBackup => ({
  id,
  type: 'full',
  timeline,
  startLsn: formatLsn(lsnIn(startSeg, 0x28, segSize)),
  startTime: '2026-01-01T00:00:00.000Z',
  stopTime: '2026-01-01T00:01:00.000Z',
});
const hist = (entries: Array<[number, number]>): HistoryEntry[] => entries.map(([timeline, s]) => ({ timeline, switchLsn: lsnIn(s) }));

function plan(kept: RetentionBackup[], names: string[], history: Array<[number, HistoryEntry[] | null]> = [], segSize = SEG): WalPlan {
  return planWal({ kept, names, history: new Map(history), segSize });
}
const tl = (p: WalPlan, timeline: number): WalPlan['timelines'][number] => p.timelines.find((t) => t.timeline === timeline)!;

describe('WAL selection', () => {
  test('one timeline: everything from the oldest kept backup\'s start segment is kept, older files removed', () => {
    const names = [
      ...segs(1, 1, 20),
      `${seg(1, 3)}.00000028.backup`,
      `${seg(1, 8)}.00000028.backup`,
      `${seg(1, 2)}.partial`,
      `${seg(1, 21)}.partial`,
      'not-a-wal-name',
    ];
    const p = plan([walBackup('a', 1, 8), walBackup('b', 1, 15)], names);
    assert.deepEqual(p.remove, [seg(1, 1), seg(1, 2), `${seg(1, 2)}.partial`, seg(1, 3), `${seg(1, 3)}.00000028.backup`, ...segs(1, 4, 7)]);
    const t = tl(p, 1);
    assert.equal(t.verdict, 'reached');
    assert.equal(t.keepFrom, seg(1, 8));
    assert.deepEqual(t.reachedBy, ['a', 'b']);
    assert.ok(t.kept.includes(`${seg(1, 8)}.00000028.backup`) && t.kept.includes(`${seg(1, 21)}.partial`));
    assert.equal(t.kept.length + t.removed.length, names.length - 1);
    assert.deepEqual(p.other, ['not-a-wal-name']);
  });

  test('no backups: nothing is removed', () => {
    const p = plan([], segs(1, 1, 5));
    assert.deepEqual(p.remove, []);
    assert.equal(tl(p, 1).verdict, 'no-backups');
  });

  test('after a promotion: a backup before it keeps its timeline and the new one; a backup after it only the new one', () => {
    // Timeline 1 switched to 2 inside segment 10.
    const names = [...segs(1, 1, 12), historyFileName(2), ...segs(2, 10, 20)];
    const h: Array<[number, HistoryEntry[]]> = [[2, hist([[1, 10]])]];
    const before = plan([walBackup('old', 1, 5), walBackup('new', 2, 15)], names, h);
    assert.deepEqual(before.remove, segs(1, 1, 4));
    assert.deepEqual([tl(before, 1).keepFrom, tl(before, 2).keepFrom], [seg(1, 5), seg(2, 5)]);
    assert.deepEqual(tl(before, 2).reachedBy, ['old', 'new']);
    assert.deepEqual(before.history, [historyFileName(2)]);

    // Only the backup on timeline 2: timeline 1 is an ancestor it never reads again.
    const after = plan([walBackup('new', 2, 15)], names, h);
    assert.equal(tl(after, 1).verdict, 'unreachable');
    assert.deepEqual(after.remove, [...segs(1, 1, 12), ...segs(2, 10, 14)]);
    assert.deepEqual(after.history, [historyFileName(2)], 'history files are always kept');
  });

  test('a branch no kept backup leads into is removed; one a kept backup leads into is kept', () => {
    // 1 -> 2 at segment 6 (an abandoned test restore), 1 -> 3 at segment 20 (the new primary).
    const names = [...segs(1, 1, 30), ...segs(2, 6, 9), ...segs(3, 20, 30), historyFileName(2), historyFileName(3)];
    const h: Array<[number, HistoryEntry[]]> = [
      [2, hist([[1, 6]])],
      [3, hist([[1, 20]])],
    ];
    const p = plan([walBackup('a', 1, 12), walBackup('b', 3, 25)], names, h);
    assert.equal(tl(p, 2).verdict, 'unreachable');
    assert.deepEqual(tl(p, 2).removed, segs(2, 6, 9));
    assert.equal(tl(p, 3).verdict, 'reached');
    assert.deepEqual(tl(p, 3).reachedBy, ['a', 'b']);
    assert.deepEqual(tl(p, 3).removed, []);
    assert.deepEqual(tl(p, 1).removed, segs(1, 1, 11));
    assert.deepEqual(p.remove, [...segs(1, 1, 11), ...segs(2, 6, 9)]);
  });

  test('timelines through intermediate ones are reached through their history file', () => {
    // 1 -> 2 at segment 5, 2 -> 3 at segment 9; 00000003.history lists both.
    const names = [...segs(1, 1, 6), ...segs(2, 5, 10), ...segs(3, 9, 12)];
    const h: Array<[number, HistoryEntry[]]> = [
      [2, hist([[1, 5]])],
      [3, hist([[1, 5], [2, 9]])],
    ];
    const p = plan([walBackup('a', 1, 3)], names, h);
    assert.deepEqual(p.remove, [...segs(1, 1, 2)]);
    assert.deepEqual([tl(p, 2).verdict, tl(p, 3).verdict], ['reached', 'reached']);
    // A backup on 2 reaches 3 (not 1).
    const q = plan([walBackup('b', 2, 7)], names, h);
    assert.deepEqual([tl(q, 1).verdict, tl(q, 2).verdict, tl(q, 3).verdict], ['unreachable', 'reached', 'reached']);
    assert.deepEqual(q.remove, [...segs(1, 1, 6), ...segs(2, 5, 6)]);
    // The switch point exactly at the backup's start counts as reached (when in doubt, keep).
    const atStart = walBackup('c', 1, 5);
    assert.equal(reaches({ ...atStart, startLsn: formatLsn(lsnIn(5)) }, 2, new Map(h)), true);
  });

  test('when in doubt, keep: later timelines and timelines without a readable history', () => {
    // Kept backups on timeline 1 after timeline 2 branched off: 2 may be a promoted server with no backup yet.
    const names = [...segs(1, 1, 20), ...segs(2, 5, 9), ...segs(3, 8, 9), ...segs(4, 10, 12), historyFileName(2), historyFileName(4)];
    const p = plan([walBackup('a', 1, 12)], names, [[2, hist([[1, 5]])], [4, null]]);
    assert.equal(tl(p, 2).verdict, 'later');
    assert.deepEqual(tl(p, 2).removed, []);
    assert.equal(tl(p, 3).verdict, 'later');
    // Below a kept backup's timeline: 3 has no history file, 4 an unreadable one.
    const q = plan([walBackup('a', 1, 12), walBackup('z', 5, 15)], names, [[2, hist([[1, 5]])], [4, null], [5, hist([[1, 14]])]]);
    assert.deepEqual([tl(q, 2).verdict, tl(q, 3).verdict, tl(q, 4).verdict], ['unreachable', 'unknown-history', 'unknown-history']);
    assert.deepEqual(q.remove, [...segs(1, 1, 11), ...segs(2, 5, 9)]);
  });

  test('other segment sizes', () => {
    const size = 1024 * 1024; // 4096 segments per log file
    const names = [...segs(1, 4090, 4100, size)];
    const p = plan([walBackup('a', 1, 4095, size)], names, [], size);
    assert.deepEqual(p.remove, segs(1, 4090, 4094, size));
    assert.equal(tl(p, 1).keepFrom, '000000010000000000000FFF');
    assert.deepEqual(tl(p, 1).kept.slice(0, 2), ['000000010000000000000FFF', '000000010000000100000000']);
  });

  test('random timeline trees: nothing a kept backup can replay is removed, and history files stay', () => {
    const rng = new Rng(4242);
    for (let round = 0; round < 200; round++) {
      // Timeline 1 from segment 1; each later timeline branches off an earlier one inside its range.
      const ranges = new Map<number, { from: number; to: number }>([[1, { from: 1, to: 40 }]]);
      const histories = new Map<number, HistoryEntry[] | null>();
      const count = 1 + rng.int(6);
      for (let t = 2; t <= count; t++) {
        const parent = 1 + rng.int(t - 1);
        const pr = ranges.get(parent)!;
        const at = pr.from + rng.int(pr.to - pr.from + 1);
        ranges.set(t, { from: at, to: at + rng.int(20) });
        const parentHist = histories.get(parent) ?? [];
        histories.set(t, rng.int(10) === 0 ? null : [...(parentHist ?? []), { timeline: parent, switchLsn: lsnIn(at) }]);
      }
      const names: string[] = [];
      for (const [t, r] of ranges) {
        names.push(...segs(t, r.from, r.to));
        if (t > 1 && histories.has(t)) names.push(historyFileName(t));
      }
      const kept: RetentionBackup[] = [];
      for (let k = 0, nk = 1 + rng.int(3); k < nk; k++) {
        const t = 1 + rng.int(count);
        const r = ranges.get(t)!;
        kept.push(walBackup(`k${k}`, t, r.from + rng.int(r.to - r.from + 1)));
      }
      const p = planWal({ kept, names, history: histories, segSize: SEG });
      const removed = new Set(p.remove);
      const ctx = `round ${round}`;
      for (const n of names) if (n.endsWith('.history')) assert.ok(!removed.has(n), `${ctx}: ${n}`);
      // Every kept backup: its timeline from its start, and every descendant it reaches, from its start on.
      for (const b of kept) {
        const startSeg = Number(parseLsn(b.startLsn) / BigInt(SEG));
        for (const [t, r] of ranges) {
          const entries = histories.get(t);
          const leads = t === b.timeline || (entries?.some((e) => e.timeline === b.timeline && e.switchLsn >= parseLsn(b.startLsn)) ?? false);
          if (!leads) continue;
          for (let s = Math.max(startSeg, r.from); s <= r.to; s++) assert.ok(!removed.has(seg(t, s)), `${ctx}: ${seg(t, s)} removed but backup ${b.id} on ${b.timeline} reaches ${t}`);
        }
      }
      // Timelines no kept backup reaches lose nothing when they are above every kept backup's, or
      // their history is unknown; the others lose everything.
      const maxKept = Math.max(...kept.map((b) => b.timeline));
      for (const t of p.timelines) {
        if (t.reachedBy.length === 0) {
          const doubt = t.timeline > maxKept || (t.timeline !== 1 && !histories.get(t.timeline));
          assert.equal(t.verdict, doubt ? (t.timeline > maxKept ? 'later' : 'unknown-history') : 'unreachable', `${ctx}: timeline ${t.timeline}`);
          assert.deepEqual(doubt ? t.removed : t.kept, [], `${ctx}: timeline ${t.timeline}`);
        }
        assert.deepEqual([...t.kept, ...t.removed].sort(), names.filter((n) => n.startsWith(seg(t.timeline, 0).slice(0, 8)) && !n.endsWith('.history')).sort());
      }
    }
  });
});
