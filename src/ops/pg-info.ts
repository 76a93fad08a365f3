/**
 * `pg info`: what the repository holds for one PostgreSQL cluster (docs/design.md §12–13).
 *
 * - the cluster record `clusters/<name>` (system identifier, major version, WAL segment size), or
 *   `null` when nothing has bound the name yet;
 * - the backups of the cluster, oldest first, with their LSN and WAL ranges, sizes and flags, and
 *   whether every WAL segment each one needs to become consistent is still in the archive;
 * - the archived WAL per timeline: first and last segment, how many, the gaps between them (the
 *   missing segment ranges, `from..to`), `.partial` segments and backup history files; and the
 *   timeline history files with their branch points;
 * - which backups are pinned (`pg pin`): the flag `pinned`.
 *
 * Read-only: nothing is written and no lock is taken; the index is not loaded (no blob is read).
 */
import { HoldfastError } from '../errors/catalogue.js';
import type { Repository } from '../repository/repository.js';
import type { PgBackupInfo, Snapshot } from '../repository/snapshot.js';
import { WAL_SEG_SIZE_DEFAULT, formatLsn, isValidSegSize, parseTimelineHistory, parseWalName, segmentName } from '../wal/names.js';
import type { RepoRef } from './context.js';
import { type ClusterRecord, checkClusterName, readClusterRecord, walObjectName } from './pg-archive.js';
import { listPgBackups } from './pg-backup.js';
import { listPins } from './pg-pins.js';
import { openRepository } from './repo.js';

export interface PgInfoBackup {
  id: string;
  type: 'full' | 'incr';
  /** The backup this incremental one compared against (snapshot id). */
  parent?: string;
  startTime: string;
  stopTime: string;
  /** stopTime - startTime: from pg_backup_start to pg_backup_stop. */
  durationMs: number;
  startLsn: string;
  stopLsn: string;
  /** First and last WAL segment needed to make the backup consistent. */
  startWal: string;
  stopWal: string;
  timeline: number;
  pgVersion: number;
  systemId: string;
  pgdata: string;
  host: string;
  files: number | null;
  /** Bytes of the data directory (summary.bytes). */
  size: number | null;
  /** Bytes this backup added to the repository (summary.bytesAdded, before compression). */
  stored: number | null;
  /** True when every segment from startWal to stopWal is in the archive: the backup can be restored. */
  walComplete: boolean;
  /** Segments of startWal..stopWal missing from the archive (at most 10 listed). */
  walMissing: string[];
  /** `dataChecksums`, and any other flag the backup recorded (true fields, non-empty lists as `name(N)`); `pinned` when `pg pin` pinned it. */
  flags: string[];
  /** Pages that failed verification while this backup read them (relation file, block), if any. */
  corruptPages?: NonNullable<PgBackupInfo['corruptPages']>;
}

export interface WalGap {
  /** First and last missing segment. */
  from: string;
  to: string;
  /** `from..to`. */
  range: string;
  segments: number;
}

export interface WalTimelineInfo {
  timeline: number;
  /** First and last archived segment (full segments, not `.partial`). */
  first: string | null;
  last: string | null;
  segments: number;
  gaps: WalGap[];
  /** Segments missing between first and last. */
  missing: number;
  partial: string[];
  backupHistory: string[];
}

export interface WalHistoryInfo {
  file: string;
  timeline: number;
  /** The ancestors: timeline `timeline` holds WAL up to (not including) `switchLsn`. */
  parents: Array<{ timeline: number; switchLsn: string; reason: string }>;
  /** Set when the file cannot be read or parsed. */
  error?: string;
}

export interface PgInfoResult {
  cluster: string;
  record: ClusterRecord | null;
  backups: PgInfoBackup[];
  wal: {
    timelines: WalTimelineInfo[];
    history: WalHistoryInfo[];
    /** Objects under wal/<cluster>/ that are no WAL-archive name (should not exist). */
    other: string[];
  };
}

const KNOWN_PG_FIELDS = new Set(['cluster', 'type', 'systemId', 'pgVersion', 'pgdata', 'timeline', 'startLsn', 'stopLsn', 'startWal', 'stopWal', 'startTime', 'stopTime', 'labelFile', 'spcmapFile']);

/** Flags worth showing: boolean fields that are true, non-empty lists (e.g. corrupt pages) as `name(N)`. */
function backupFlags(sn: Snapshot & { pg: PgBackupInfo }): string[] {
  const flags: string[] = [];
  for (const [k, v] of Object.entries(sn.pg)) {
    if (KNOWN_PG_FIELDS.has(k)) continue;
    if (v === true) flags.push(k);
    else if (Array.isArray(v) && v.length > 0) flags.push(`${k}(${v.length})`);
  }
  if (sn.summary && sn.summary.errors > 0) flags.push(`unreadableFiles(${sn.summary.errors})`);
  return flags;
}

interface ParsedArchive {
  timelines: Map<number, { segs: bigint[]; partial: string[]; backupHistory: string[] }>;
  history: Array<{ file: string; timeline: number }>;
  other: string[];
  segments: Set<string>;
}

function parseArchive(names: readonly string[], segSize: number): ParsedArchive {
  const out: ParsedArchive = { timelines: new Map(), history: [], other: [], segments: new Set() };
  const tl = (t: number): { segs: bigint[]; partial: string[]; backupHistory: string[] } => {
    let e = out.timelines.get(t);
    if (!e) out.timelines.set(t, (e = { segs: [], partial: [], backupHistory: [] }));
    return e;
  };
  for (const name of names) {
    const p = parseWalName(name, segSize);
    if (!p) out.other.push(name);
    else if (p.kind === 'history') out.history.push({ file: name, timeline: p.timeline });
    else if (p.kind === 'segment') {
      tl(p.timeline).segs.push(p.segNo);
      out.segments.add(name);
    } else if (p.kind === 'partial') tl(p.timeline).partial.push(name);
    else tl(p.timeline).backupHistory.push(name);
  }
  return out;
}

/** First, last, count and gaps of one timeline's segments. */
export function summariseTimeline(timeline: number, segNos: readonly bigint[], segSize: number, partial: string[] = [], backupHistory: string[] = []): WalTimelineInfo {
  const segs = [...new Set(segNos)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const gaps: WalGap[] = [];
  let missing = 0;
  for (let i = 1; i < segs.length; i++) {
    const prev = segs[i - 1]!;
    const cur = segs[i]!;
    if (cur > prev + 1n) {
      const from = segmentName(timeline, prev + 1n, segSize);
      const to = segmentName(timeline, cur - 1n, segSize);
      const n = Number(cur - prev - 1n);
      gaps.push({ from, to, range: `${from}..${to}`, segments: n });
      missing += n;
    }
  }
  const first = segs[0];
  const last = segs.at(-1);
  return {
    timeline,
    first: first === undefined ? null : segmentName(timeline, first, segSize),
    last: last === undefined ? null : segmentName(timeline, last, segSize),
    segments: segs.length,
    gaps,
    missing,
    partial: partial.sort(),
    backupHistory: backupHistory.sort(),
  };
}

/** Segments of `startWal..stopWal` (one timeline) that `present` lacks; at most `limit` listed. */
function missingInRange(startWal: string, stopWal: string, segSize: number, present: ReadonlySet<string>, limit = 10): { complete: boolean; missing: string[] } {
  const a = parseWalName(startWal, segSize);
  const b = parseWalName(stopWal, segSize);
  if (!a || !b || a.kind !== 'segment' || b.kind !== 'segment') return { complete: false, missing: [] };
  const missing: string[] = [];
  let complete = true;
  // Beyond a million segments (16 TiB of WAL for one backup) something else is wrong.
  for (let s = a.segNo, n = 0; s <= b.segNo && n < 1_000_000; s++, n++) {
    const name = segmentName(a.timeline, s, segSize);
    if (!present.has(name)) {
      complete = false;
      if (missing.length < limit) missing.push(name);
    }
  }
  return { complete, missing };
}

/** Read and parse timeline history files of `cluster` (pg info, pg expire), by timeline; unreadable ones carry `error`. */
export async function readWalHistory(repo: Repository, cluster: string, files: ReadonlyArray<{ file: string; timeline: number }>): Promise<WalHistoryInfo[]> {
  const history: WalHistoryInfo[] = [];
  for (const h of [...files].sort((a, b) => a.timeline - b.timeline)) {
    try {
      const data = await repo.getNamed(walObjectName(cluster, h.file));
      if (!data) throw new Error('listed but gone');
      const parents = parseTimelineHistory(data, h.timeline).map((s) => ({ timeline: s.timeline, switchLsn: formatLsn(s.switchLsn), reason: s.reason }));
      history.push({ file: h.file, timeline: h.timeline, parents });
    } catch (err) {
      history.push({ file: h.file, timeline: h.timeline, parents: [], error: err instanceof HoldfastError ? `${err.message} [${err.code}]` : (err as Error).message });
    }
  }
  return history;
}

export async function pgInfo(ref: RepoRef, cluster: string): Promise<PgInfoResult> {
  checkClusterName(cluster);
  const repo = await openRepository(ref, false);
  try {
    const record = (await readClusterRecord(repo, cluster)) ?? null;
    const segSize = record && isValidSegSize(record.segSize) ? record.segSize : WAL_SEG_SIZE_DEFAULT;
    const prefix = walObjectName(cluster, '');
    const archive = parseArchive(await repo.listNamed(prefix), segSize);

    const pins = new Set(await listPins(repo, cluster));
    const backups: PgInfoBackup[] = (await listPgBackups(repo, cluster)).map((sn) => {
      const range = missingInRange(sn.pg.startWal, sn.pg.stopWal, segSize, archive.segments);
      const duration = Date.parse(sn.pg.stopTime) - Date.parse(sn.pg.startTime);
      return {
        id: sn.id,
        type: sn.pg.type,
        ...(sn.parent ? { parent: sn.parent } : {}),
        startTime: sn.pg.startTime,
        stopTime: sn.pg.stopTime,
        durationMs: Number.isFinite(duration) ? duration : 0,
        startLsn: sn.pg.startLsn,
        stopLsn: sn.pg.stopLsn,
        startWal: sn.pg.startWal,
        stopWal: sn.pg.stopWal,
        timeline: sn.pg.timeline,
        pgVersion: sn.pg.pgVersion,
        systemId: sn.pg.systemId,
        pgdata: sn.pg.pgdata,
        host: sn.host,
        files: sn.summary?.files ?? null,
        size: sn.summary?.bytes ?? null,
        stored: sn.summary?.bytesAdded ?? null,
        walComplete: range.complete,
        walMissing: range.missing,
        flags: pins.has(sn.id) ? [...backupFlags(sn), 'pinned'] : backupFlags(sn),
        ...(sn.pg.corruptPages?.length ? { corruptPages: sn.pg.corruptPages } : {}),
      };
    });

    const timelines = [...archive.timelines.entries()]
      .sort(([a], [b]) => a - b)
      .map(([t, e]) => summariseTimeline(t, e.segs, segSize, e.partial, e.backupHistory));

    const history = await readWalHistory(repo, cluster, archive.history);
    return { cluster, record, backups, wal: { timelines, history, other: archive.other.sort() } };
  } finally {
    await repo.close();
  }
}
