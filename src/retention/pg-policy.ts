/**
 * Retention of PostgreSQL backups and of their WAL (docs/design.md §17). Pure functions: which
 * backups a policy keeps, and why; which archived WAL files the kept backups can still need.
 * No I/O; `pg expire` (ops/pg-expire.ts) reads the repository, calls these, and deletes.
 *
 * ## Backups
 *
 * Backups of one cluster never overlap (one `pg backup` per cluster at a time), so "oldest first"
 * orders them by start and by stop alike. Each rule names the oldest backup it needs; the rule
 * keeps that backup and every newer one, so the kept backups (pins aside) are always the newest
 * ones, without holes. A backup is kept when any rule keeps it:
 *
 * - `newest`: the newest backup, always.
 * - `retain-full` N: the N newest full backups and the incremental backups that follow them
 *   (an incremental's parent is the backup before it, so everything after the N-th newest full
 *   depends, through its parents, on one of the N). Every holdfast backup is self-contained
 *   (§13), so this is what the count means, not a restore dependency.
 * - `recovery-window` W: every point of [now − W, now] stays restorable. pg restore starts from
 *   the newest backup that *ends before* the target, so the rule keeps the newest backup ending
 *   before now − W (the window's *anchor*) and everything after it. When no backup ends before
 *   now − W, every backup is kept (and the window reaches back before the oldest one).
 * - `min-full` M (default 1): when the rules above keep fewer than M full backups, the kept range
 *   is extended back to the M-th newest full backup.
 * - `pinned`: a pinned backup is kept whatever the rules say; it is self-contained, so its pin
 *   keeps it alone (and, through the WAL rules below, the WAL from its start).
 *
 * ## WAL
 *
 * Segments, `.partial` segments and backup history files belong to a timeline and a segment
 * number; timeline history files and names that are no WAL-archive names are always kept.
 * A timeline T is *reached* by a kept backup B (on timeline Tb, starting at LSN s) when T = Tb, or
 * when T's history file lists Tb as an ancestor whose WAL ends (switch point) at or after s:
 * recovery from B can follow the timeline switches into T. Then, per timeline:
 *
 * - reached: every file from the earliest start segment among the kept backups that reach T is
 *   kept (with no upper bound: later WAL of T is what restores to later points need); older
 *   ones are removed.
 * - not reached, and T is above every kept backup's timeline: kept entirely. It may be the
 *   timeline of a promoted server with no backup yet (or with a backup running right now).
 * - not reached, T has no readable history file (and is not 1): kept entirely (its ancestry is
 *   unknown, so whether a kept backup leads into it is unknown).
 * - otherwise (a known branch below a kept backup's timeline that no kept backup leads into): removed.
 *
 * With no backups at all nothing is removed.
 */
import { compareLsn, parseLsn, parseWalName, segmentName } from '../wal/names.js';

export interface RetentionPolicy {
  /** Keep the N newest full backups and the incremental backups that follow them. */
  readonly retainFull?: number | undefined;
  /** Milliseconds: keep what restoring to any point of the last W needs. */
  readonly recoveryWindowMs?: number | undefined;
  /** Never keep fewer full backups than this (when there are that many). */
  readonly minFull: number;
}

/** True when the policy says what to keep (min-full alone only limits what the others remove). */
export function hasPolicy(p: RetentionPolicy): boolean {
  return p.retainFull !== undefined || p.recoveryWindowMs !== undefined;
}

/** What the rules need to know of a backup (a subset of the snapshot's `pg` field, with its id). */
export interface RetentionBackup {
  readonly id: string;
  readonly type: 'full' | 'incr';
  readonly timeline: number;
  readonly startLsn: string;
  readonly startTime: string;
  readonly stopTime: string;
}

export type KeepReason = 'newest' | 'retain-full' | 'recovery-window' | 'min-full' | 'pinned';

export interface BackupDecision {
  readonly id: string;
  readonly keep: boolean;
  /** The rules that keep it (empty: expired). */
  readonly reasons: KeepReason[];
}

export interface BackupSelection {
  /** One per backup, in the order given (oldest first). */
  readonly decisions: BackupDecision[];
  /** now − recovery window, when a window is set. */
  readonly windowStart?: string;
  /** The newest backup ending before the window start; absent when none does (or no window). */
  readonly windowAnchor?: string;
}

/** Which backups to keep. `backups` oldest first; `now` in ms since the epoch. */
export function selectBackups(backups: readonly RetentionBackup[], policy: RetentionPolicy, pinned: ReadonlySet<string>, now: number): BackupSelection {
  const n = backups.length;
  const fulls = backups.flatMap((b, i) => (b.type === 'full' ? [i] : []));
  /** Index of the `count`-th newest full backup; 0 (everything) when there are fewer. */
  const nthNewestFull = (count: number): number => (count <= 0 ? n - 1 : (fulls[fulls.length - count] ?? 0));

  const starts = new Map<KeepReason, number>();
  starts.set('newest', n - 1);
  if (policy.retainFull !== undefined) starts.set('retain-full', nthNewestFull(policy.retainFull));
  let windowStart: string | undefined;
  let windowAnchor: string | undefined;
  if (policy.recoveryWindowMs !== undefined) {
    const ws = now - policy.recoveryWindowMs;
    windowStart = new Date(ws).toISOString();
    let anchor = -1;
    for (let i = 0; i < n; i++) if (Date.parse(backups[i]!.stopTime) < ws) anchor = i;
    if (anchor >= 0) windowAnchor = backups[anchor]!.id;
    starts.set('recovery-window', Math.max(anchor, 0));
  }
  const ruled = Math.min(...starts.values());
  const fullsKept = fulls.filter((i) => i >= ruled).length;
  const minFullStart = fullsKept < policy.minFull ? Math.min(ruled, nthNewestFull(policy.minFull)) : ruled;

  const decisions = backups.map((b, i): BackupDecision => {
    const reasons: KeepReason[] = [];
    for (const [reason, start] of starts) if (i >= start) reasons.push(reason);
    if (i >= minFullStart && i < ruled) reasons.push('min-full');
    if (pinned.has(b.id)) reasons.push('pinned');
    return { id: b.id, keep: reasons.length > 0, reasons };
  });
  return { decisions, ...(windowStart !== undefined ? { windowStart } : {}), ...(windowAnchor !== undefined ? { windowAnchor } : {}) };
}

// ---------------------------------------------------------------------------------------------
// WAL

/** One ancestor line of a timeline history file: `timeline`'s WAL ends at `switchLsn`. */
export interface HistoryEntry {
  readonly timeline: number;
  readonly switchLsn: bigint;
}

export interface WalPlanInput {
  /** The backups that are kept. */
  readonly kept: readonly RetentionBackup[];
  /** Every file name under the cluster's WAL prefix. */
  readonly names: readonly string[];
  /**
   * Parsed timeline history files by the timeline they describe; `null` for a history file that
   * exists but cannot be read or parsed. A timeline above 1 with no entry has no history file.
   */
  readonly history: ReadonlyMap<number, readonly HistoryEntry[] | null>;
  readonly segSize: number;
}

export type TimelineVerdict =
  /** A kept backup leads into it: kept from the earliest such backup's start. */
  | 'reached'
  /** Above every kept backup's timeline: kept entirely. */
  | 'later'
  /** No readable history file: kept entirely. */
  | 'unknown-history'
  /** A known branch no kept backup leads into: removed. */
  | 'unreachable'
  /** There are no backups: nothing is removed. */
  | 'no-backups';

export interface WalTimelinePlan {
  readonly timeline: number;
  readonly verdict: TimelineVerdict;
  /** Kept backups that reach this timeline. */
  readonly reachedBy: string[];
  /** First segment kept when files before it are removed (`reached`); absent otherwise. */
  readonly keepFrom?: string;
  /** Segment, `.partial` and backup history file names of this timeline, sorted. */
  readonly kept: string[];
  readonly removed: string[];
}

export interface WalPlan {
  /** Per timeline that has segment, `.partial` or backup history files, ascending. */
  readonly timelines: WalTimelinePlan[];
  /** Timeline history files (always kept). */
  readonly history: string[];
  /** Names that are no WAL-archive names (kept; `pg info` reports them). */
  readonly other: string[];
  /** Every name to remove, oldest first. */
  readonly remove: string[];
}

/** Whether recovery from `b` can follow into `timeline` (see the module comment). */
export function reaches(b: RetentionBackup, timeline: number, history: WalPlanInput['history']): boolean {
  if (timeline === b.timeline) return true;
  const entries = history.get(timeline);
  if (!entries) return false;
  const start = parseLsn(b.startLsn);
  return entries.some((e) => e.timeline === b.timeline && compareLsn(e.switchLsn, start) >= 0);
}

/** Which WAL files the kept backups can need, per timeline. */
export function planWal(input: WalPlanInput): WalPlan {
  const byTimeline = new Map<number, Array<{ name: string; segNo: bigint }>>();
  const history: string[] = [];
  const other: string[] = [];
  for (const name of input.names) {
    const p = parseWalName(name, input.segSize);
    if (!p) other.push(name);
    else if (p.kind === 'history') history.push(name);
    else {
      let list = byTimeline.get(p.timeline);
      if (!list) byTimeline.set(p.timeline, (list = []));
      list.push({ name, segNo: p.segNo });
    }
  }
  const maxKeptTimeline = Math.max(0, ...input.kept.map((b) => b.timeline));
  const timelines: WalTimelinePlan[] = [];
  const remove: string[] = [];
  for (const timeline of [...byTimeline.keys()].sort((a, b) => a - b)) {
    const files = byTimeline.get(timeline)!.sort((a, b) => (a.segNo < b.segNo ? -1 : a.segNo > b.segNo ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const reachedBy = input.kept.filter((b) => reaches(b, timeline, input.history));
    let verdict: TimelineVerdict;
    let cutoff: bigint | 'all' | 'none';
    if (input.kept.length === 0) [verdict, cutoff] = ['no-backups', 'none'];
    else if (reachedBy.length > 0) {
      verdict = 'reached';
      cutoff = reachedBy.map((b) => parseLsn(b.startLsn) / BigInt(input.segSize)).reduce((a, b) => (b < a ? b : a));
    } else if (timeline > maxKeptTimeline) [verdict, cutoff] = ['later', 'none'];
    else if (timeline !== 1 && !input.history.get(timeline)) [verdict, cutoff] = ['unknown-history', 'none'];
    else [verdict, cutoff] = ['unreachable', 'all'];
    const kept: string[] = [];
    const removed: string[] = [];
    for (const f of files) (cutoff === 'all' || (cutoff !== 'none' && f.segNo < cutoff) ? removed : kept).push(f.name);
    remove.push(...removed);
    timelines.push({
      timeline,
      verdict,
      reachedBy: reachedBy.map((b) => b.id),
      ...(typeof cutoff === 'bigint' ? { keepFrom: segmentName(timeline, cutoff, input.segSize) } : {}),
      kept,
      removed,
    });
  }
  return { timelines, history: history.sort(), other: other.sort(), remove };
}
