/**
 * The retention policy of file snapshots (`holdfast forget`, docs/design.md §16): which snapshots
 * a set of keep rules keeps, and why. Pure: no repository, no clock, no I/O. The only input
 * besides the snapshots is the time zone in which calendar buckets are drawn.
 *
 * Semantics (those of restic's `forget`):
 * - Snapshots are split into groups (by host and paths by default); every rule applies to each
 *   group on its own.
 * - In a group, snapshots are ordered newest first (equal times: greater id first, as `latest`).
 * - `last N` keeps the N newest.
 * - `hourly|daily|weekly|monthly|yearly N` walks the group newest first and keeps a snapshot
 *   whenever it falls into another calendar bucket (hour, day, ISO 8601 week, month, year) than
 *   the snapshot kept before it by this rule, until N buckets were taken: the newest snapshot of
 *   each of the N most recent buckets that have snapshots. Buckets without snapshots do not count.
 * - `within D` keeps every snapshot made less than D before the newest snapshot of the group
 *   (not before now: a group whose backups stopped keeps its last D of history).
 * - `tag T` keeps every snapshot carrying tag T.
 * - A snapshot is kept when any rule keeps it, and records every rule that does, in this order:
 *   last, hourly, daily, weekly, monthly, yearly, within, tag.
 * A count of 0 and a zero duration are the same as no rule; with no rule at all every snapshot is
 * kept (callers refuse that case: forgetting by an empty policy is a mistake, not a request).
 */

export interface RetentionSnapshot {
  readonly id: string;
  readonly time: Date;
  readonly host: string;
  readonly paths: readonly string[];
  readonly tags: readonly string[];
}

/**
 * A calendar duration: years, months, weeks, days and hours. Years, months, weeks and days are
 * calendar steps in the policy's time zone (a day across a daylight-saving change is 23 or 25
 * hours); hours are exact.
 */
export interface CalendarDuration {
  readonly years: number;
  readonly months: number;
  readonly weeks: number;
  readonly days: number;
  readonly hours: number;
}

export interface RetentionPolicy {
  readonly last?: number | undefined;
  readonly hourly?: number | undefined;
  readonly daily?: number | undefined;
  readonly weekly?: number | undefined;
  readonly monthly?: number | undefined;
  readonly yearly?: number | undefined;
  readonly within?: CalendarDuration | undefined;
  readonly tags?: readonly string[] | undefined;
}

export const GROUP_FIELDS = ['host', 'paths', 'tags'] as const;
export type GroupField = (typeof GROUP_FIELDS)[number];

/** `local`: the process's zone (TZ); `utc`: UTC. */
export type Zone = 'local' | 'utc';

export interface RetentionOptions {
  /** Fields whose values make a group; empty: all snapshots form one group. */
  readonly groupBy: readonly GroupField[];
  readonly zone: Zone;
}

/** The values of the grouping fields shared by a group's snapshots (only the fields grouped by). */
export interface GroupKey {
  host?: string;
  paths?: string[];
  tags?: string[];
}

export interface Kept<T> {
  readonly snapshot: T;
  readonly reasons: string[];
}

export interface GroupDecision<T> {
  readonly key: GroupKey;
  /** Newest first. */
  readonly keep: Array<Kept<T>>;
  /** Newest first. */
  readonly remove: T[];
}

// ------------------------------------------------------------------ durations

const UNIT_ORDER = ['y', 'm', 'w', 'd', 'h'] as const;
const UNIT_FIELD: Record<(typeof UNIT_ORDER)[number], keyof CalendarDuration> = { y: 'years', m: 'months', w: 'weeks', d: 'days', h: 'hours' };

/**
 * Parse "2d", "36h", "1y2m", "1y6m2w3d12h": whole numbers, each followed by a unit, units in
 * this order and each at most once: y years, m months (not minutes), w weeks, d days, h hours.
 * Returns undefined when the text is not such a duration.
 */
export function parseCalendarDuration(text: string): CalendarDuration | undefined {
  const s = text.trim().toLowerCase();
  if (s === '') return undefined;
  const out = { years: 0, months: 0, weeks: 0, days: 0, hours: 0 };
  let rest = s;
  let next = 0;
  while (rest !== '') {
    const m = /^(\d{1,6})([ymwdh])/.exec(rest);
    if (!m) return undefined;
    const at = UNIT_ORDER.indexOf(m[2] as (typeof UNIT_ORDER)[number]);
    if (at < next) return undefined; // out of order or repeated
    next = at + 1;
    out[UNIT_FIELD[UNIT_ORDER[at]!]] = Number(m[1]);
    rest = rest.slice(m[0].length);
  }
  return out;
}

/** The canonical spelling: "1y2m", "2d", "0h" for zero. */
export function formatCalendarDuration(d: CalendarDuration): string {
  const parts = UNIT_ORDER.filter((u) => d[UNIT_FIELD[u]] !== 0).map((u) => `${d[UNIT_FIELD[u]]}${u}`);
  return parts.length > 0 ? parts.join('') : '0h';
}

function isZero(d: CalendarDuration): boolean {
  return d.years === 0 && d.months === 0 && d.weeks === 0 && d.days === 0 && d.hours === 0;
}

/**
 * `time` minus `d`: years and months first (the day of month clamped to the target month's
 * length, so March 31 minus 1m is February 28 or 29), then weeks and days as calendar days, at
 * the same wall-clock time in `zone`, then hours exactly.
 */
export function subtractCalendar(time: Date, d: CalendarDuration, zone: Zone): Date {
  const f = fields(time, zone);
  const monthIndex = f.year * 12 + (f.month - 1) - (d.years * 12 + d.months);
  const year = Math.floor(monthIndex / 12);
  const month = monthIndex - year * 12; // 0-based
  const day = Math.min(f.day, daysInMonth(year, month));
  const ms = wallClock(zone, year, month, day - d.weeks * 7 - d.days, f.hour, f.minute, f.second, f.ms);
  return new Date(ms - d.hours * 3_600_000);
}

function daysInMonth(year: number, month0: number): number {
  return new Date(Date.UTC(year, month0 + 1, 0)).getUTCDate();
}

/** Epoch ms of a wall-clock time in `zone` (day may be out of range: it is normalised). */
function wallClock(zone: Zone, year: number, month0: number, day: number, h: number, mi: number, s: number, ms: number): number {
  if (zone === 'utc') {
    const d = new Date(0);
    d.setUTCFullYear(year, month0, day);
    d.setUTCHours(h, mi, s, ms);
    return d.getTime();
  }
  const d = new Date(0);
  d.setFullYear(year, month0, day);
  d.setHours(h, mi, s, ms);
  return d.getTime();
}

// ------------------------------------------------------------------ calendar buckets

interface Fields {
  year: number;
  /** 1..12 */
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
  ms: number;
}

function fields(t: Date, zone: Zone): Fields {
  return zone === 'utc'
    ? { year: t.getUTCFullYear(), month: t.getUTCMonth() + 1, day: t.getUTCDate(), hour: t.getUTCHours(), minute: t.getUTCMinutes(), second: t.getUTCSeconds(), ms: t.getUTCMilliseconds() }
    : { year: t.getFullYear(), month: t.getMonth() + 1, day: t.getDate(), hour: t.getHours(), minute: t.getMinutes(), second: t.getSeconds(), ms: t.getMilliseconds() };
}

/** ISO 8601 week-numbering year and week (1..53) of a calendar date. */
export function isoWeek(year: number, month: number, day: number): { year: number; week: number } {
  const date = Date.UTC(year, month - 1, day);
  const weekday = (new Date(date).getUTCDay() + 6) % 7; // Monday 0 … Sunday 6
  const thursday = date + (3 - weekday) * 86_400_000; // the week belongs to its Thursday's year
  const isoYear = new Date(thursday).getUTCFullYear();
  const week = 1 + Math.floor((thursday - Date.UTC(isoYear, 0, 1)) / (7 * 86_400_000));
  return { year: isoYear, week };
}

type Bucket = (t: Date, zone: Zone) => number;

const BUCKETS: ReadonlyArray<{ rule: 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly'; reason: string; bucket: Bucket }> = [
  { rule: 'hourly', reason: 'hourly snapshot', bucket: (t, z) => ((f) => ((f.year * 100 + f.month) * 100 + f.day) * 100 + f.hour)(fields(t, z)) },
  { rule: 'daily', reason: 'daily snapshot', bucket: (t, z) => ((f) => (f.year * 100 + f.month) * 100 + f.day)(fields(t, z)) },
  { rule: 'weekly', reason: 'weekly snapshot', bucket: (t, z) => ((f) => ((w) => w.year * 100 + w.week)(isoWeek(f.year, f.month, f.day)))(fields(t, z)) },
  { rule: 'monthly', reason: 'monthly snapshot', bucket: (t, z) => ((f) => f.year * 100 + f.month)(fields(t, z)) },
  { rule: 'yearly', reason: 'yearly snapshot', bucket: (t, z) => fields(t, z).year },
];

// ------------------------------------------------------------------ the policy

/** Whether the policy has no rule that keeps anything. */
export function isEmptyPolicy(p: RetentionPolicy): boolean {
  const counts = [p.last, p.hourly, p.daily, p.weekly, p.monthly, p.yearly];
  return counts.every((n) => !n) && (p.within === undefined || isZero(p.within)) && (p.tags ?? []).length === 0;
}

/** Newest first; equal times: the greater id first (so the first is what `latest` names). */
export function newestFirst<T extends RetentionSnapshot>(list: readonly T[]): T[] {
  return [...list].sort((a, b) => b.time.getTime() - a.time.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
}

function groupKey(sn: RetentionSnapshot, by: readonly GroupField[]): GroupKey {
  const key: GroupKey = {};
  if (by.includes('host')) key.host = sn.host;
  if (by.includes('paths')) key.paths = [...sn.paths].sort();
  if (by.includes('tags')) key.tags = [...new Set(sn.tags)].sort();
  return key;
}

/** Split snapshots into groups, ordered by key (host, then paths, then tags). */
export function groupSnapshots<T extends RetentionSnapshot>(list: readonly T[], by: readonly GroupField[]): Array<{ key: GroupKey; snapshots: T[] }> {
  const groups = new Map<string, { key: GroupKey; snapshots: T[] }>();
  for (const sn of list) {
    const key = groupKey(sn, by);
    const k = JSON.stringify([key.host ?? null, key.paths ?? null, key.tags ?? null]);
    const g = groups.get(k);
    if (g) g.snapshots.push(sn);
    else groups.set(k, { key, snapshots: [sn] });
  }
  return [...groups.values()].sort((a, b) => compareKeys(a.key, b.key));
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** By host, then paths, then tags; lists element by element, a prefix first. */
function compareKeys(a: GroupKey, b: GroupKey): number {
  const lists = (x: readonly string[] = [], y: readonly string[] = []): number => {
    for (let i = 0; i < Math.min(x.length, y.length); i++) {
      const c = compareStrings(x[i]!, y[i]!);
      if (c !== 0) return c;
    }
    return x.length - y.length;
  };
  return compareStrings(a.host ?? '', b.host ?? '') || lists(a.paths, b.paths) || lists(a.tags, b.tags);
}

/** Apply the policy to one group's snapshots (any order). */
export function applyToGroup<T extends RetentionSnapshot>(list: readonly T[], p: RetentionPolicy, zone: Zone): { keep: Array<Kept<T>>; remove: T[] } {
  const sorted = newestFirst(list);
  if (isEmptyPolicy(p)) return { keep: sorted.map((snapshot) => ({ snapshot, reasons: ['policy is empty'] })), remove: [] };
  const counters = BUCKETS.map((b) => ({ ...b, left: p[b.rule] ?? 0, last: undefined as number | undefined }));
  const newest = sorted[0];
  const within = p.within !== undefined && !isZero(p.within) && newest ? { since: subtractCalendar(newest.time, p.within, zone).getTime(), reason: `within ${formatCalendarDuration(p.within)}` } : undefined;
  const keepTags = [...new Set(p.tags ?? [])];
  const keep: Array<Kept<T>> = [];
  const remove: T[] = [];
  for (const [i, sn] of sorted.entries()) {
    const reasons: string[] = [];
    if (i < (p.last ?? 0)) reasons.push('last snapshot');
    for (const c of counters) {
      if (c.left <= 0) continue;
      const b = c.bucket(sn.time, zone);
      if (b === c.last) continue;
      c.last = b;
      c.left--;
      reasons.push(c.reason);
    }
    if (within && sn.time.getTime() > within.since) reasons.push(within.reason);
    for (const t of keepTags) if (sn.tags.includes(t)) reasons.push(`tag ${t}`);
    if (reasons.length > 0) keep.push({ snapshot: sn, reasons });
    else remove.push(sn);
  }
  return { keep, remove };
}

/** Group the snapshots and apply the policy to each group. */
export function applyRetention<T extends RetentionSnapshot>(list: readonly T[], p: RetentionPolicy, o: RetentionOptions): Array<GroupDecision<T>> {
  return groupSnapshots(list, o.groupBy).map((g) => ({ key: g.key, ...applyToGroup(g.snapshots, p, o.zone) }));
}

/**
 * `--group-by` values: each may hold several comma-separated fields; "" (or nothing) means one
 * group. Returns the fields in a fixed order, or an error message.
 */
export function parseGroupBy(values: readonly string[]): GroupField[] | string {
  const out = new Set<GroupField>();
  for (const v of values.flatMap((x) => x.split(','))) {
    const f = v.trim();
    if (f === '') continue;
    if (!(GROUP_FIELDS as readonly string[]).includes(f)) return `unknown grouping field ${JSON.stringify(f)} (expected any of ${GROUP_FIELDS.join(', ')}, or "" for one group)`;
    out.add(f as GroupField);
  }
  return GROUP_FIELDS.filter((f) => out.has(f));
}

/** A group key for people: "host db1, paths /etc /home", or "all snapshots". */
export function describeGroup(key: GroupKey): string {
  const parts: string[] = [];
  if (key.host !== undefined) parts.push(`host ${key.host}`);
  if (key.paths !== undefined) parts.push(`paths ${key.paths.join(' ')}`);
  if (key.tags !== undefined) parts.push(key.tags.length > 0 ? `tags ${key.tags.join(',')}` : 'no tags');
  return parts.length > 0 ? parts.join(', ') : 'all snapshots';
}
