/**
 * The retention policy engine. Small cases are checked against tables written out by hand; a
 * generated history (one snapshot every 3 hours for two years, plus irregular ones) is checked
 * against a reference implementation written differently: buckets as ISO-string prefixes or
 * Intl-formatted fields, weeks as Monday-based day counts since the epoch, "the newest snapshot of
 * each of the N most recent buckets" computed from a map of buckets rather than in one pass.
 *
 * The local-zone tests run in America/New_York (set below, before any date is made), so they
 * cross real daylight-saving changes and do not depend on the machine's zone.
 */
process.env['TZ'] = 'America/New_York';

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Rng } from '../testing/helpers.js';
import {
  type CalendarDuration,
  type RetentionPolicy,
  type RetentionSnapshot,
  applyRetention,
  applyToGroup,
  describeGroup,
  formatCalendarDuration,
  isEmptyPolicy,
  isoWeek,
  parseCalendarDuration,
  parseGroupBy,
  subtractCalendar,
} from './policy.js';

const ZONE = 'America/New_York';
const HOUR = 3_600_000;

function sn(id: string, time: string, extra: Partial<RetentionSnapshot> = {}): RetentionSnapshot {
  return { id, time: new Date(time), host: 'h', paths: ['/data'], tags: [], ...extra };
}

function dur(text: string): CalendarDuration {
  const d = parseCalendarDuration(text);
  assert.ok(d, `${text} should parse`);
  return d;
}

/** id → reasons of the kept snapshots, and the removed ids, of a single group. */
function decide(list: readonly RetentionSnapshot[], p: RetentionPolicy, zone: 'utc' | 'local' = 'utc'): { keep: Record<string, string[]>; remove: string[] } {
  const r = applyToGroup(list, p, zone);
  return { keep: Object.fromEntries(r.keep.map((k) => [k.snapshot.id, k.reasons])), remove: r.remove.map((s) => s.id) };
}

describe('calendar durations', () => {
  test('parse and format', () => {
    const table: Array<[string, Partial<CalendarDuration>, string]> = [
      ['2d', { days: 2 }, '2d'],
      ['36h', { hours: 36 }, '36h'],
      ['1y2m', { years: 1, months: 2 }, '1y2m'],
      ['1Y6M2W3D12H', { years: 1, months: 6, weeks: 2, days: 3, hours: 12 }, '1y6m2w3d12h'],
      [' 3w ', { weeks: 3 }, '3w'],
      ['0d', {}, '0h'],
      ['1y0m1d', { years: 1, days: 1 }, '1y1d'],
    ];
    for (const [text, want, canonical] of table) {
      const d = dur(text);
      assert.deepEqual(d, { years: 0, months: 0, weeks: 0, days: 0, hours: 0, ...want }, text);
      assert.equal(formatCalendarDuration(d), canonical, text);
    }
    for (const bad of ['', '2', 'd', '2x', '1.5d', '-1d', '2 d', '1m1y', '1d1d', '5min', '1h30m', '2d garbage', '1234567d']) {
      assert.equal(parseCalendarDuration(bad), undefined, `${JSON.stringify(bad)} must not parse`);
    }
  });

  test('subtracting: months clamp to the month\'s length, days are calendar days in the zone, hours exact', () => {
    const at = new Date('2024-03-31T12:00:00Z');
    const table: Array<[string, string]> = [
      ['1m', '2024-02-29T12:00:00.000Z'],
      ['1y', '2023-03-31T12:00:00.000Z'],
      ['1y1m', '2023-02-28T12:00:00.000Z'],
      ['13m', '2023-02-28T12:00:00.000Z'],
      ['2w3d12h', '2024-03-14T00:00:00.000Z'],
      ['36h', '2024-03-30T00:00:00.000Z'],
      ['4m', '2023-11-30T12:00:00.000Z'],
      ['3y1m', '2021-02-28T12:00:00.000Z'],
    ];
    for (const [text, want] of table) assert.equal(subtractCalendar(at, dur(text), 'utc').toISOString(), want, text);
    // New York: 2024-03-10 is 23 hours long (02:00 EST -> 03:00 EDT). Noon EDT minus one day is noon EST.
    const noon = new Date('2024-03-10T16:00:00Z');
    assert.equal(subtractCalendar(noon, dur('1d'), 'local').toISOString(), '2024-03-09T17:00:00.000Z');
    assert.equal(subtractCalendar(noon, dur('24h'), 'local').toISOString(), '2024-03-09T16:00:00.000Z');
    assert.equal(subtractCalendar(noon, dur('1d'), 'utc').toISOString(), '2024-03-09T16:00:00.000Z');
    // 2024-11-03 is 25 hours long.
    assert.equal(subtractCalendar(new Date('2024-11-03T17:00:00Z'), dur('1d'), 'local').toISOString(), '2024-11-02T16:00:00.000Z');
  });
});

describe('ISO weeks', () => {
  test('week-numbering years at the turn of the year', () => {
    const table: Array<[[number, number, number], { year: number; week: number }]> = [
      [[2024, 12, 29], { year: 2024, week: 52 }], // Sunday
      [[2024, 12, 30], { year: 2025, week: 1 }], // Monday
      [[2024, 12, 31], { year: 2025, week: 1 }],
      [[2021, 1, 3], { year: 2020, week: 53 }],
      [[2020, 12, 31], { year: 2020, week: 53 }],
      [[2026, 1, 1], { year: 2026, week: 1 }], // Thursday
      [[2027, 1, 1], { year: 2026, week: 53 }], // Friday
      [[2025, 3, 10], { year: 2025, week: 11 }],
      [[2025, 3, 9], { year: 2025, week: 10 }],
    ];
    for (const [[y, m, d], want] of table) assert.deepEqual(isoWeek(y, m, d), want, `${y}-${m}-${d}`);
  });
});

describe('policy on small hand-written histories', () => {
  // Newest first. 2025-03-10 is a Monday (ISO week 11); 2024-12-31 is in ISO week 2025-W01.
  const history = [
    sn('a', '2025-03-10T10:00:00Z'),
    sn('b', '2025-03-10T09:30:00Z'),
    sn('c', '2025-03-10T09:10:00Z'),
    sn('d', '2025-03-09T23:00:00Z'),
    sn('e', '2025-03-09T08:00:00Z', { tags: ['nightly'] }),
    sn('f', '2025-03-03T12:00:00Z'),
    sn('g', '2025-03-02T12:00:00Z', { tags: ['nightly', 'x'] }),
    sn('h', '2025-02-15T00:00:00Z'),
    sn('i', '2024-12-31T23:00:00Z'),
    sn('j', '2024-12-29T10:00:00Z'),
  ];
  const shuffled = [history[4]!, history[9]!, history[0]!, history[7]!, history[2]!, history[1]!, history[8]!, history[3]!, history[6]!, history[5]!];

  test('every bucket rule at once, all reasons recorded', () => {
    const r = decide(shuffled, { last: 2, hourly: 3, daily: 3, weekly: 3, monthly: 2, yearly: 2 });
    assert.deepEqual(r.keep, {
      a: ['last snapshot', 'hourly snapshot', 'daily snapshot', 'weekly snapshot', 'monthly snapshot', 'yearly snapshot'],
      b: ['last snapshot', 'hourly snapshot'],
      d: ['hourly snapshot', 'daily snapshot', 'weekly snapshot'],
      f: ['daily snapshot'],
      g: ['weekly snapshot'],
      h: ['monthly snapshot'],
      i: ['yearly snapshot'],
    });
    assert.deepEqual(r.remove, ['c', 'e', 'j']);
    // The result is ordered newest first.
    assert.deepEqual(applyToGroup(shuffled, { last: 2, hourly: 3, daily: 3, weekly: 3, monthly: 2, yearly: 2 }, 'utc').keep.map((k) => k.snapshot.id), ['a', 'b', 'd', 'f', 'g', 'h', 'i']);
  });

  test('more buckets than there are: every bucket keeps its newest; ISO weeks across the year', () => {
    assert.deepEqual(Object.keys(decide(history, { weekly: 20 }).keep), ['a', 'd', 'g', 'h', 'i', 'j']);
    assert.deepEqual(Object.keys(decide(history, { yearly: 20 }).keep), ['a', 'i']);
    assert.deepEqual(Object.keys(decide(history, { last: 100 }).keep), history.map((s) => s.id));
    assert.deepEqual(decide(history, { last: 100 }).remove, []);
  });

  test('within is relative to the newest snapshot, strictly; tags keep whatever has them', () => {
    // Newest a = 03-10 10:00; within 1d keeps times after 03-09 10:00.
    assert.deepEqual(decide(history, { within: dur('1d') }).keep, { a: ['within 1d'], b: ['within 1d'], c: ['within 1d'], d: ['within 1d'] });
    const edge = [sn('n', '2025-03-10T10:00:00Z'), sn('exact', '2025-03-09T10:00:00Z'), sn('later', '2025-03-09T10:00:00.001Z')];
    assert.deepEqual(decide(edge, { within: dur('24h') }), { keep: { n: ['within 24h'], later: ['within 24h'] }, remove: ['exact'] });
    assert.deepEqual(decide(history, { tags: ['nightly', 'x', 'nightly'], last: 1 }).keep, { a: ['last snapshot'], e: ['tag nightly'], g: ['tag nightly', 'tag x'] });
    assert.deepEqual(decide(history, { within: dur('10d'), daily: 1, tags: ['x'] }).keep, {
      a: ['daily snapshot', 'within 10d'],
      b: ['within 10d'],
      c: ['within 10d'],
      d: ['within 10d'],
      e: ['within 10d'],
      f: ['within 10d'],
      g: ['within 10d', 'tag x'],
    });
  });

  test('equal times: the greater id counts as newer, as for latest', () => {
    const tie = [sn('1111', '2025-01-01T00:00:00Z'), sn('ffff', '2025-01-01T00:00:00Z'), sn('8888', '2025-01-01T00:00:00Z')];
    assert.deepEqual(decide(tie, { last: 1 }), { keep: { ffff: ['last snapshot'] }, remove: ['8888', '1111'] });
    assert.deepEqual(decide(tie, { daily: 5 }).remove, ['8888', '1111']);
  });

  test('an empty policy keeps everything; zero counts and zero durations are no rule', () => {
    for (const p of [{}, { last: 0, daily: 0 }, { within: dur('0d') }, { tags: [] }] as RetentionPolicy[]) {
      assert.equal(isEmptyPolicy(p), true, JSON.stringify(p));
      const r = decide(history, p);
      assert.deepEqual(r.remove, []);
      assert.equal(Object.keys(r.keep).length, history.length);
    }
    assert.equal(isEmptyPolicy({ tags: ['t'] }), false);
    assert.equal(isEmptyPolicy({ within: dur('1h') }), false);
    assert.deepEqual(decide([], { last: 3 }), { keep: {}, remove: [] });
  });
});

describe('groups', () => {
  const list = [
    sn('a1', '2025-01-05T00:00:00Z', { host: 'a', paths: ['/etc'] }),
    sn('a2', '2025-01-04T00:00:00Z', { host: 'a', paths: ['/etc'], tags: ['t'] }),
    sn('a3', '2025-01-03T00:00:00Z', { host: 'a', paths: ['/home', '/etc'] }),
    sn('a4', '2025-01-02T00:00:00Z', { host: 'a', paths: ['/etc', '/home'], tags: ['t'] }),
    sn('b1', '2025-01-06T00:00:00Z', { host: 'b', paths: ['/etc'], tags: ['t'] }),
    sn('b2', '2025-01-01T00:00:00Z', { host: 'b', paths: ['/etc'] }),
  ];
  const kept = (by: Parameters<typeof applyRetention>[2]['groupBy']): Array<[string, string[]]> =>
    applyRetention(list, { last: 1 }, { groupBy: by, zone: 'utc' }).map((g) => [describeGroup(g.key), g.keep.map((k) => k.snapshot.id)]);

  test('by host and paths (paths as a set), host, tags, or one group; policies apply per group', () => {
    assert.deepEqual(kept(['host', 'paths']), [
      ['host a, paths /etc', ['a1']],
      ['host a, paths /etc /home', ['a3']],
      ['host b, paths /etc', ['b1']],
    ]);
    assert.deepEqual(kept(['host']), [
      ['host a', ['a1']],
      ['host b', ['b1']],
    ]);
    assert.deepEqual(kept(['tags']), [
      ['no tags', ['a1']],
      ['tags t', ['b1']],
    ]);
    assert.deepEqual(kept(['host', 'paths', 'tags']).length, 6);
    assert.deepEqual(kept([]), [['all snapshots', ['b1']]]);
    const g = applyRetention(list, { last: 1 }, { groupBy: ['host', 'paths'], zone: 'utc' });
    assert.deepEqual(g[1]!.key, { host: 'a', paths: ['/etc', '/home'] });
    assert.deepEqual(g[1]!.remove.map((s) => s.id), ['a4']);
  });

  test('--group-by values', () => {
    assert.deepEqual(parseGroupBy(['host,paths']), ['host', 'paths']);
    assert.deepEqual(parseGroupBy(['tags', 'host']), ['host', 'tags']);
    assert.deepEqual(parseGroupBy(['']), []);
    assert.deepEqual(parseGroupBy([]), []);
    assert.deepEqual(parseGroupBy([' paths , host ']), ['host', 'paths']);
    assert.match(parseGroupBy(['host,user']) as string, /unknown grouping field "user"/);
  });
});

// ------------------------------------------------------------------ generated history

interface Labels {
  hour: string;
  day: string;
  week: string;
  month: string;
  year: string;
}

/** Bucket labels in UTC, from the ISO string; weeks as Monday-based day counts since the epoch. */
function utcLabels(t: Date): Labels {
  const iso = t.toISOString();
  const dayNumber = Math.floor(t.getTime() / 86_400_000);
  return { hour: iso.slice(0, 13), day: iso.slice(0, 10), week: String(Math.floor((dayNumber + 3) / 7)), month: iso.slice(0, 7), year: iso.slice(0, 4) };
}

const NY = new Intl.DateTimeFormat('en-US', { timeZone: ZONE, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', hourCycle: 'h23' });

/** Bucket labels in New York, from Intl (not from Date's local getters, which the engine uses). */
function nyLabels(t: Date): Labels {
  const p = Object.fromEntries(NY.formatToParts(t).map((x) => [x.type, x.value]));
  const [y, m, d, h] = [p['year']!, p['month']!, p['day']!, p['hour']!];
  const dayNumber = Date.UTC(Number(y), Number(m) - 1, Number(d)) / 86_400_000;
  return { hour: `${y}-${m}-${d}T${h}`, day: `${y}-${m}-${d}`, week: String(Math.floor((dayNumber + 3) / 7)), month: `${y}-${m}`, year: y };
}

const LABELS = new Map<(t: Date) => Labels, Map<Date, Labels>>();

/**
 * The reference: for each rule, the set of ids it keeps, computed independently; then the reasons
 * of each snapshot in the documented order. `withinSince`: the cutoff written out by hand.
 */
function reference(list: readonly RetentionSnapshot[], p: RetentionPolicy, labelsOf: (t: Date) => Labels, withinSince?: number): Map<string, string[]> {
  const cache = LABELS.get(labelsOf) ?? new Map<Date, Labels>();
  LABELS.set(labelsOf, cache);
  const labels = (t: Date): Labels => cache.get(t) ?? (cache.set(t, labelsOf(t)), cache.get(t)!);
  const order = [...list].sort((a, b) => (a.time.getTime() !== b.time.getTime() ? b.time.getTime() - a.time.getTime() : b.id.localeCompare(a.id)));
  const rules: Array<[string, Set<string>]> = [];
  rules.push(['last snapshot', new Set(order.slice(0, p.last ?? 0).map((s) => s.id))]);
  for (const unit of ['hour', 'day', 'week', 'month', 'year'] as const) {
    const n = { hour: p.hourly, day: p.daily, week: p.weekly, month: p.monthly, year: p.yearly }[unit] ?? 0;
    // Newest snapshot per bucket; buckets ranked by that snapshot.
    const newestOf = new Map<string, RetentionSnapshot>();
    for (const s of order) {
      const l = labels(s.time)[unit];
      if (!newestOf.has(l)) newestOf.set(l, s);
    }
    const ranked = [...newestOf.values()].sort((a, b) => b.time.getTime() - a.time.getTime() || b.id.localeCompare(a.id));
    const reason = { hour: 'hourly', day: 'daily', week: 'weekly', month: 'monthly', year: 'yearly' }[unit];
    rules.push([`${reason} snapshot`, new Set(ranked.slice(0, n).map((s) => s.id))]);
  }
  if (p.within) rules.push([`within ${formatCalendarDuration(p.within)}`, new Set(list.filter((s) => s.time.getTime() > withinSince!).map((s) => s.id))]);
  for (const t of p.tags ?? []) rules.push([`tag ${t}`, new Set(list.filter((s) => s.tags.includes(t)).map((s) => s.id))]);
  const out = new Map<string, string[]>();
  for (const s of order) {
    const reasons = rules.filter(([, ids]) => ids.has(s.id)).map(([r]) => r);
    if (reasons.length > 0) out.set(s.id, reasons);
  }
  return out;
}

/** Every 3 hours from 2024-01-01T00:00Z for 730 days, plus 60 irregular snapshots and two ties. */
function generatedHistory(): RetentionSnapshot[] {
  const rng = new Rng(20240101);
  const start = Date.UTC(2024, 0, 1);
  const out: RetentionSnapshot[] = [];
  const id = (n: number): string => n.toString(16).padStart(8, '0');
  for (let i = 0; i < 730 * 8; i++) {
    const time = new Date(start + i * 3 * HOUR);
    out.push({ id: id(i), time, host: 'h', paths: ['/data'], tags: time.getUTCHours() === 0 ? ['nightly'] : [] });
  }
  for (let i = 0; i < 60; i++) {
    // Anywhere in the two years (not after the newest regular one), at any millisecond.
    const time = new Date(start + rng.int(730 * 24 - 4) * HOUR + rng.int(HOUR));
    out.push({ id: id(0x10000 + i), time, host: 'h', paths: ['/data'], tags: ['adhoc'] });
  }
  // Two snapshots at the very same time as regular ones (the greater id is the newer).
  out.push({ id: id(0x20000), time: new Date(start + 100 * 3 * HOUR), host: 'h', paths: ['/data'], tags: [] });
  out.push({ id: '0', time: new Date(start + 5000 * 3 * HOUR), host: 'h', paths: ['/data'], tags: [] });
  return out;
}

describe('policy on a generated two-year history', () => {
  const history = generatedHistory();
  const newest = Date.UTC(2025, 11, 30, 21); // the last regular snapshot

  test('the history is what the expectations assume', () => {
    assert.equal(history.length, 5840 + 62);
    assert.equal(Math.max(...history.map((s) => s.time.getTime())), newest);
  });

  const cases: Array<{ name: string; p: RetentionPolicy; since?: number; count?: number }> = [
    { name: 'last 7', p: { last: 7 }, count: 7 },
    { name: 'hourly 50', p: { hourly: 50 }, count: 50 },
    { name: 'daily 40', p: { daily: 40 }, count: 40 },
    { name: 'weekly 60', p: { weekly: 60 }, count: 60 },
    { name: 'monthly 30 (more than there are)', p: { monthly: 30 }, count: 24 },
    { name: 'yearly 5', p: { yearly: 5 }, count: 2 },
    { name: 'within 2d', p: { within: dur('2d') }, since: newest - 48 * HOUR },
    { name: 'within 1y2m', p: { within: dur('1y2m') }, since: Date.UTC(2024, 9, 30, 21) },
    { name: 'within 1m', p: { within: dur('1m') }, since: Date.UTC(2025, 10, 30, 21) },
    { name: 'tag adhoc', p: { tags: ['adhoc'] }, count: 60 },
    { name: 'everything', p: { last: 3, hourly: 24, daily: 14, weekly: 8, monthly: 12, yearly: 10, within: dur('3d'), tags: ['adhoc'] }, since: newest - 72 * HOUR },
  ];

  for (const c of cases) {
    test(`UTC: ${c.name}`, () => {
      const got = applyToGroup(history, c.p, 'utc');
      const want = reference(history, c.p, utcLabels, c.since);
      assert.deepEqual(new Map(got.keep.map((k) => [k.snapshot.id, k.reasons])), want);
      assert.equal(got.keep.length + got.remove.length, history.length);
      if (c.count !== undefined) assert.equal(got.keep.length, c.count);
      // Stable: applied again to what it kept, the policy keeps all of it.
      const again = applyToGroup(got.keep.map((k) => k.snapshot), c.p, 'utc');
      assert.deepEqual(again.remove, [], `a second ${c.name} removes nothing more`);
    });
  }

  test('UTC: the rules agree with hand-computed anchors', () => {
    const byTime = (iso: string): string => history.find((s) => s.time.toISOString() === iso && s.tags.length === 0 && s.id.length === 8)!.id;
    const r = applyToGroup(history, { daily: 2, monthly: 2, yearly: 2 }, 'utc');
    const ids = r.keep.map((k) => k.snapshot.id);
    // Newest of 2025-12-30 and of 2025-12-29 (21:00 unless an irregular one is later that day).
    assert.equal(ids[0], byTime('2025-12-30T21:00:00.000Z'));
    assert.deepEqual(r.keep[0]!.reasons, ['daily snapshot', 'monthly snapshot', 'yearly snapshot']);
    const lastOf2024 = history.filter((s) => s.time.getUTCFullYear() === 2024).reduce((a, b) => (b.time > a.time ? b : a));
    assert.ok(ids.includes(lastOf2024.id), 'the newest of 2024 is the yearly snapshot of 2024');
    assert.equal(lastOf2024.time.toISOString(), '2024-12-31T21:00:00.000Z');
  });

  for (const c of cases) {
    test(`New York local time: ${c.name}`, () => {
      const since = c.p.within ? nySince(newest, c.p.within) : undefined;
      const got = applyToGroup(history, c.p, 'local');
      const want = reference(history, c.p, nyLabels, since);
      assert.deepEqual(new Map(got.keep.map((k) => [k.snapshot.id, k.reasons])), want);
      // In New York the history starts on 2023-12-31 19:00: one more month and year than in UTC.
      const count = c.name.startsWith('monthly') ? 25 : c.name.startsWith('yearly') ? 3 : c.count;
      if (count !== undefined) assert.equal(got.keep.length, count);
    });
  }

  test('local and UTC buckets differ where New York\'s day is not UTC\'s', () => {
    const utc = applyToGroup(history, { daily: 3 }, 'utc').keep.map((k) => k.snapshot.time.toISOString());
    const local = applyToGroup(history, { daily: 3 }, 'local').keep.map((k) => k.snapshot.time.toISOString());
    assert.deepEqual(utc, ['2025-12-30T21:00:00.000Z', '2025-12-29T21:00:00.000Z', '2025-12-28T21:00:00.000Z']);
    // 21:00Z is 16:00 EST; the New York day of Dec 30 ends at 05:00Z Dec 31, after the newest.
    assert.deepEqual(local, ['2025-12-30T21:00:00.000Z', '2025-12-30T03:00:00.000Z', '2025-12-29T03:00:00.000Z']);
  });
});

/**
 * The within cutoff in New York for the generated history's newest snapshot (2025-12-30 16:00
 * EST), written out: every case's cutoff lands in winter time (EST, UTC-5) except 1y2m, which lands
 * on 2024-10-30 16:00 EDT (UTC-4).
 */
function nySince(newest: number, d: CalendarDuration): number {
  const text = formatCalendarDuration(d);
  const table: Record<string, number> = {
    '2d': Date.UTC(2025, 11, 28, 21),
    '1y2m': Date.UTC(2024, 9, 30, 20),
    '1m': Date.UTC(2025, 10, 30, 21),
    '3d': Date.UTC(2025, 11, 27, 21),
  };
  assert.ok(newest === Date.UTC(2025, 11, 30, 21) && table[text] !== undefined, `no hand-written cutoff for ${text}`);
  return table[text]!;
}
