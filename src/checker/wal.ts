/**
 * WAL continuity of one PostgreSQL cluster (`check`, docs/design.md §12): pure, on the names
 * under `wal/<cluster>/`, the cluster's backups and its parsed timeline history files.
 *
 * - Each backup's own range (startWal..stopWal, the WAL that makes it consistent) is complete.
 * - On every timeline some backup's recovery passes through, the segments from where that
 *   recovery needs them (the backup's start, or the point where the timeline branched off) up to
 *   the newest archived segment of the timeline have no gap.
 * - Every timeline above 1 that holds WAL or a backup has a readable history file; one that is
 *   lost breaks the backups on earlier timelines whose recovery follows the switch to it.
 *
 * Each problem names the missing objects as segment ranges and the backups it breaks: a backup
 * whose own range is affected cannot be restored at all; one whose recovery passes a gap can
 * only be recovered up to the segment before it.
 *
 * The newest archived segment of a timeline cannot be told apart, offline, from one not archived
 * yet: its deletion is noticed by `pg check`, which compares with the server's archiver.
 */
import { type TimelineSwitch, WAL_SEG_SIZE_MAX, WAL_SEG_SIZE_MIN, parseWalName, segNoOfLsn, segmentName, parseLsn, formatLsn } from '../wal/names.js';

export interface WalBackup {
  readonly id: string;
  readonly timeline: number;
  readonly startLsn: string;
  readonly startWal: string;
  readonly stopWal: string;
}

export interface WalContinuityInput {
  readonly cluster: string;
  readonly segSize: number;
  /** Every name under `wal/<cluster>/`. */
  readonly names: readonly string[];
  /**
   * Names among `names` that are archived but do not read (`check --read-data`): missing for
   * recovery, but archived, so a damaged newest segment still ends its timeline's archive.
   */
  readonly damaged?: ReadonlySet<string> | undefined;
  readonly backups: readonly WalBackup[];
  /** Parsed history files by their timeline; an Error for one that exists but cannot be read. */
  readonly history: ReadonlyMap<number, readonly TimelineSwitch[] | Error>;
}

export type WalProblemKind = 'wal-missing' | 'wal-gap' | 'wal-history-missing' | 'wal-history-unreadable';

export interface WalProblem {
  readonly kind: WalProblemKind;
  /** The first missing or damaged object. */
  readonly object: string;
  readonly message: string;
  readonly snapshots: string[];
}

/** Bound on segments examined per range: beyond this (16 TiB of 16 MiB WAL) something else is wrong. */
const MAX_RANGE = 4_000_000n;

export function checkWalContinuity(input: WalContinuityInput): WalProblem[] {
  const { cluster, segSize } = input;
  const obj = (file: string): string => `wal/${cluster}/${file}`;
  const segs = new Map<number, Set<bigint>>(); // readable segments
  const archived = new Map<number, { first: bigint; newest: bigint }>(); // readable or not
  for (const name of input.names) {
    const p = parseWalName(name, segSize);
    if (p?.kind !== 'segment') continue;
    const a = archived.get(p.timeline);
    if (!a) archived.set(p.timeline, { first: p.segNo, newest: p.segNo });
    else {
      if (p.segNo < a.first) a.first = p.segNo;
      if (p.segNo > a.newest) a.newest = p.segNo;
    }
    if (input.damaged?.has(name)) continue;
    let s = segs.get(p.timeline);
    if (!s) segs.set(p.timeline, (s = new Set()));
    s.add(p.segNo);
  }
  const problems: WalProblem[] = [];
  const backups = input.backups.filter((b) => validBackup(b, segSize));

  // Timelines with WAL or a backup, and their ancestors per readable history.
  const historyOf = (t: number): readonly TimelineSwitch[] | undefined => {
    const h = input.history.get(t);
    return h instanceof Error ? undefined : h;
  };
  const timelines = new Set<number>([...archived.keys(), ...backups.map((b) => b.timeline)]);
  /** Backups whose recovery reaches timeline t: on it, or branched off their timeline after their start. */
  const reaching = (t: number): Array<{ b: WalBackup; from: bigint }> => {
    const out: Array<{ b: WalBackup; from: bigint }> = [];
    for (const b of backups) {
      if (b.timeline === t) {
        out.push({ b, from: segNoOfLsn(parseLsn(b.startLsn), segSize) });
        continue;
      }
      const h = historyOf(t);
      if (!h || h.length === 0) continue;
      const start = parseLsn(b.startLsn);
      if (!h.some((e) => e.timeline === b.timeline && e.switchLsn >= start)) continue;
      // t begins where its direct parent (the last line) ended.
      out.push({ b, from: segNoOfLsn(h[h.length - 1]!.switchLsn, segSize) });
    }
    return out;
  };

  /**
   * The backups whose recovery follows the switch to timeline t, for a t whose own history file
   * is missing or unreadable: from the readable history of a later timeline descending from t
   * (it lists t's ancestry), else every backup on an earlier timeline that started no later than
   * t's first archived segment (t cannot have branched off later; a backup on an unrelated
   * branch may be named too). Backups on t itself do not need the file: PostgreSQL recovers a
   * timeline whose history it cannot get as one without ancestors.
   */
  const followers = (t: number): string[] => {
    for (const [u, h] of input.history) {
      if (u <= t || h instanceof Error) continue;
      const i = h.findIndex((e) => e.timeline === t);
      if (i < 0) continue;
      const ancestry = h.slice(0, i);
      return backups.filter((b) => ancestry.some((e) => e.timeline === b.timeline && e.switchLsn >= parseLsn(b.startLsn))).map((b) => b.id);
    }
    const first = archived.get(t)?.first;
    return backups.filter((b) => b.timeline < t && (first === undefined || segNoOfLsn(parseLsn(b.startLsn), segSize) <= first)).map((b) => b.id);
  };
  for (const t of [...timelines].sort((a, b) => a - b)) {
    if (t <= 1) continue;
    const h = input.history.get(t);
    if (h === undefined) {
      const onT = backups.some((b) => b.timeline === t);
      problems.push({
        kind: 'wal-history-missing',
        object: obj(historyName(t)),
        message: `timeline ${t} of cluster "${cluster}" holds WAL${onT ? ' and backups' : ''} but its history file ${historyName(t)} is not in the repository: recovery cannot follow the switch to timeline ${t}`,
        snapshots: followers(t),
      });
    } else if (h instanceof Error) {
      problems.push({ kind: 'wal-history-unreadable', object: obj(historyName(t)), message: `history file ${historyName(t)} of cluster "${cluster}" cannot be read: ${h.message}: recovery cannot follow the switch to timeline ${t}`, snapshots: followers(t) });
    }
  }

  // Each backup's own range.
  for (const b of backups) {
    const a = parseWalName(b.startWal, segSize)!;
    const z = parseWalName(b.stopWal, segSize)!;
    if (a.kind !== 'segment' || z.kind !== 'segment') continue;
    const have = segs.get(a.timeline) ?? new Set<bigint>();
    for (const r of missingRanges(have, a.segNo, z.segNo)) {
      const range = rangeText(a.timeline, r.from, r.to, segSize);
      problems.push({
        kind: 'wal-missing',
        object: obj(segmentName(a.timeline, r.from, segSize)),
        message: `backup ${b.id.slice(0, 12)} of cluster "${cluster}" cannot be restored: WAL ${range} that makes it consistent (${b.startWal}..${b.stopWal}) is missing`,
        snapshots: [b.id],
      });
    }
  }

  // Continuity from each backup's start to the newest segment of every timeline its recovery follows.
  for (const t of [...timelines].sort((a, b) => a - b)) {
    const newest = archived.get(t)?.newest;
    if (newest === undefined) continue;
    const have = segs.get(t) ?? new Set<bigint>();
    const reach = reaching(t);
    if (reach.length === 0) continue;
    const from = reach.reduce((m, r) => (r.from < m ? r.from : m), reach[0]!.from);
    for (const r of missingRanges(have, from, newest)) {
      const range = rangeText(t, r.from, r.to, segSize);
      const hit = reach.filter((x) => x.from <= r.to);
      const lastGood = r.from > 0n ? formatLsn(r.from * BigInt(segSize)) : '0/0';
      problems.push({
        kind: 'wal-gap',
        object: obj(segmentName(t, r.from, segSize)),
        message:
          `WAL ${range} of cluster "${cluster}" is missing (timeline ${t}; segments after it are archived): ` +
          `recovery from ${hit.map((x) => `backup ${x.b.id.slice(0, 12)}`).join(', ')} stops at ${lastGood}; no later point in time is reachable from ${hit.length === 1 ? 'it' : 'them'}`,
        snapshots: hit.map((x) => x.b.id),
      });
    }
  }
  return problems;
}

/**
 * The WAL segment size the backups' own fields agree on, for a cluster whose record (which holds
 * it) is lost: each backup's start LSN lies in its start segment for exactly the right size. The
 * one valid size that fits every backup, or undefined (none, several, or no backup to tell).
 */
export function segSizeOfBackups(backups: readonly WalBackup[]): number | undefined {
  let fits: number[] = [];
  for (let size = WAL_SEG_SIZE_MIN; size <= WAL_SEG_SIZE_MAX; size *= 2) fits.push(size);
  if (backups.length === 0) return undefined;
  for (const b of backups) {
    let lsn: bigint;
    try {
      lsn = parseLsn(b.startLsn);
    } catch {
      return undefined;
    }
    fits = fits.filter((size) => {
      const w = parseWalName(b.startWal, size);
      return w?.kind === 'segment' && w.timeline === b.timeline && w.segNo === segNoOfLsn(lsn, size);
    });
  }
  return fits.length === 1 ? fits[0] : undefined;
}

function validBackup(b: WalBackup, segSize: number): boolean {
  try {
    parseLsn(b.startLsn);
  } catch {
    return false;
  }
  const a = parseWalName(b.startWal, segSize);
  const z = parseWalName(b.stopWal, segSize);
  return a?.kind === 'segment' && z?.kind === 'segment' && a.timeline === z.timeline && a.segNo <= z.segNo;
}

function historyName(t: number): string {
  return `${t.toString(16).toUpperCase().padStart(8, '0')}.history`;
}

/** Missing runs of [from, to] in `have`, bounded. */
function missingRanges(have: ReadonlySet<bigint>, from: bigint, to: bigint): Array<{ from: bigint; to: bigint }> {
  const out: Array<{ from: bigint; to: bigint }> = [];
  if (to < from) return out;
  const end = to - from > MAX_RANGE ? from + MAX_RANGE : to;
  let start: bigint | undefined;
  for (let s = from; s <= end; s++) {
    if (!have.has(s)) {
      if (start === undefined) start = s;
    } else if (start !== undefined) {
      out.push({ from: start, to: s - 1n });
      start = undefined;
    }
  }
  if (start !== undefined) out.push({ from: start, to: end });
  return out;
}

function rangeText(t: number, from: bigint, to: bigint, segSize: number): string {
  const a = segmentName(t, from, segSize);
  if (from === to) return `segment ${a}`;
  return `segments ${a}..${segmentName(t, to, segSize)} (${to - from + 1n})`;
}
