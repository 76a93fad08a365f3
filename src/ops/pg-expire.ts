/**
 * `pg expire`: remove the PostgreSQL backups a retention policy no longer keeps, and the WAL no
 * kept backup can need (docs/design.md §17; the rules are in retention/pg-policy.ts).
 *
 * 1. Under the local retention lock of the cluster (shared with pg pin/unpin) and a shared
 *    repository lock (operation `pg expire`, so every deletion passes the commit guard): list the
 *    backups, the pins, the WAL archive and its timeline history files.
 * 2. Decide which backups stay (count, recovery window, min-full, pins, newest) and which WAL the
 *    kept ones need, per timeline.
 * 3. Delete the expired backups' manifests first, then the WAL files: a crash in between leaves
 *    only WAL nobody needs (the next run removes it), never a listed backup without its WAL.
 * 4. List the pins again: a pin written meanwhile (from another host) for a deleted backup is
 *    reported.
 *
 * `dryRun` does steps 1–2 without locks (reads only, like pg info) and deletes nothing. Packs are
 * not touched: prune frees the data no backup references any more.
 */
import { HoldfastError } from '../errors/catalogue.js';
import type { Repository } from '../repository/repository.js';
import { type KeepReason, type RetentionPolicy, type TimelineVerdict, hasPolicy, planWal, selectBackups } from '../retention/pg-policy.js';
import { WAL_SEG_SIZE_DEFAULT, isValidSegSize, parseLsn, parseWalName } from '../wal/names.js';
import type { OpContext, RepoRef } from './context.js';
import { withOperationLocks } from './locking.js';
import { checkClusterName, readClusterRecord, walObjectName } from './pg-archive.js';
import { listPgBackups } from './pg-backup.js';
import { type WalTimelineInfo, readWalHistory, summariseTimeline } from './pg-info.js';
import { listPins, retentionLock } from './pg-pins.js';
import { openRepository } from './repo.js';

export interface PgExpireParams {
  readonly cluster: string;
  readonly policy: RetentionPolicy;
  readonly dryRun: boolean;
  /** "Now" for the recovery window, ms since the epoch (default: the clock). */
  readonly now?: number | undefined;
}

export interface ExpireBackup {
  id: string;
  type: 'full' | 'incr';
  timeline: number;
  startTime: string;
  stopTime: string;
  startWal: string;
  stopWal: string;
  keep: boolean;
  /** The rules that keep it; empty when it is expired. */
  reasons: KeepReason[];
}

export interface ExpireWalTimeline {
  timeline: number;
  verdict: TimelineVerdict;
  /** Kept backups whose recovery can reach this timeline. */
  reachedBy: string[];
  /** Files before this segment are removed (verdict `reached`). */
  keepFrom?: string;
  /** Kept and removed files of the timeline: first and last segment, count, gaps, .partial and backup history files. */
  kept: WalTimelineInfo;
  removed: WalTimelineInfo;
}

export interface PgExpireResult {
  cluster: string;
  dryRun: boolean;
  now: string;
  policy: RetentionPolicy;
  /** now − recovery window. */
  windowStart?: string;
  /** The newest backup ending before the window start (restores to the window's start begin there). */
  windowAnchor?: string;
  /** Every backup of the cluster, oldest first, with the decision. */
  backups: ExpireBackup[];
  /** Ids of the backups expired (dry run: that would be). */
  expired: string[];
  wal: {
    timelines: ExpireWalTimeline[];
    /** Timeline history files: always kept. */
    history: string[];
    /** Objects under wal/<cluster>/ that are no WAL-archive names: kept. */
    other: string[];
    /** Files removed (dry run: that would be) and kept. */
    removed: number;
    kept: number;
  };
  /** Pinned backup ids. */
  pins: string[];
  /** Pins that name no backup of the cluster (unpin removes them). */
  danglingPins: string[];
}

interface Plan {
  result: PgExpireResult;
  walRemove: string[];
}

/** Steps 1–2: what stays and what goes. Reads only. */
async function plan(repo: Repository, p: PgExpireParams, now: number): Promise<Plan> {
  const record = await readClusterRecord(repo, p.cluster);
  const segSize = record && isValidSegSize(record.segSize) ? record.segSize : WAL_SEG_SIZE_DEFAULT;
  const backups = await listPgBackups(repo, p.cluster);
  const pins = await listPins(repo, p.cluster);
  const selection = selectBackups(
    backups.map((b) => ({ id: b.id, type: b.pg.type, timeline: b.pg.timeline, startLsn: b.pg.startLsn, startTime: b.pg.startTime, stopTime: b.pg.stopTime })),
    p.policy,
    new Set(pins),
    now,
  );
  const keep = new Set(selection.decisions.filter((d) => d.keep).map((d) => d.id));

  const names = await repo.listNamed(walObjectName(p.cluster, ''));
  const historyFiles = names.flatMap((file) => {
    const n = parseWalName(file, segSize);
    return n?.kind === 'history' ? [{ file, timeline: n.timeline }] : [];
  });
  const history = new Map<number, Array<{ timeline: number; switchLsn: bigint }> | null>();
  for (const h of await readWalHistory(repo, p.cluster, historyFiles)) {
    history.set(h.timeline, h.error !== undefined ? null : h.parents.map((e) => ({ timeline: e.timeline, switchLsn: parseLsn(e.switchLsn) })));
  }
  const kept = backups.filter((b) => keep.has(b.id)).map((b) => ({ id: b.id, type: b.pg.type, timeline: b.pg.timeline, startLsn: b.pg.startLsn, startTime: b.pg.startTime, stopTime: b.pg.stopTime }));
  const wal = planWal({ kept, names, history, segSize });

  const summary = (timeline: number, files: readonly string[]): WalTimelineInfo => {
    const segNos: bigint[] = [];
    const partial: string[] = [];
    const backupHistory: string[] = [];
    for (const f of files) {
      const n = parseWalName(f, segSize);
      if (n?.kind === 'segment') segNos.push(n.segNo);
      else if (n?.kind === 'partial') partial.push(f);
      else if (n?.kind === 'backup') backupHistory.push(f);
    }
    return summariseTimeline(timeline, segNos, segSize, partial, backupHistory);
  };
  const result: PgExpireResult = {
    cluster: p.cluster,
    dryRun: p.dryRun,
    now: new Date(now).toISOString(),
    policy: p.policy,
    ...(selection.windowStart !== undefined ? { windowStart: selection.windowStart } : {}),
    ...(selection.windowAnchor !== undefined ? { windowAnchor: selection.windowAnchor } : {}),
    backups: backups.map((b, i) => {
      const d = selection.decisions[i]!;
      return { id: b.id, type: b.pg.type, timeline: b.pg.timeline, startTime: b.pg.startTime, stopTime: b.pg.stopTime, startWal: b.pg.startWal, stopWal: b.pg.stopWal, keep: d.keep, reasons: d.reasons };
    }),
    expired: selection.decisions.filter((d) => !d.keep).map((d) => d.id),
    wal: {
      timelines: wal.timelines.map((t) => ({
        timeline: t.timeline,
        verdict: t.verdict,
        reachedBy: t.reachedBy,
        ...(t.keepFrom !== undefined ? { keepFrom: t.keepFrom } : {}),
        kept: summary(t.timeline, t.kept),
        removed: summary(t.timeline, t.removed),
      })),
      history: wal.history,
      other: wal.other,
      removed: wal.remove.length,
      kept: names.length - wal.remove.length,
    },
    pins,
    danglingPins: pins.filter((id) => !backups.some((b) => b.id === id)),
  };
  return { result, walRemove: wal.remove };
}

export async function pgExpire(ref: RepoRef, p: PgExpireParams, ctx: OpContext): Promise<PgExpireResult> {
  checkClusterName(p.cluster);
  if (!hasPolicy(p.policy)) {
    throw new HoldfastError('USAGE', 'pg expire needs a retention policy: --retain-full N and/or --recovery-window DURATION; with neither it removes nothing', {
      cluster: p.cluster,
      hint: 'Pass --retain-full N (keep N full backups and the incremental ones after them) and/or --recovery-window DURATION (e.g. 14d), or set retain-full / recovery-window in the config file.',
    });
  }
  const now = p.now ?? Date.now();
  const repo = await openRepository(ref, false);
  try {
    if (p.dryRun) return (await plan(repo, p, now)).result;
    return await withOperationLocks(repo, ref.location, ctx, { local: retentionLock(repo, ref.location, p.cluster, 'pg expire'), kind: 'shared', operation: 'pg expire', allStorages: true }, async (ctx) => {
      const { result, walRemove } = await plan(repo, p, now);
      // Manifests first: a crash after this leaves only WAL no listed backup needs.
      await repo.announce([], result.expired);
      for (const id of result.expired) {
        ctx.signal?.throwIfAborted();
        await repo.deleteFile('snapshot', id);
        const b = result.backups.find((x) => x.id === id)!;
        ctx.log.info(`expired backup ${id.slice(0, 8)} (${b.type}, ${b.startTime} .. ${b.stopTime})`);
      }
      // WAL: one durability point at the end (a deletion a crash undoes only leaves extra WAL).
      for (let i = 0; i < walRemove.length; i++) {
        ctx.signal?.throwIfAborted();
        await repo.deleteNamed(walObjectName(p.cluster, walRemove[i]!), { durable: i === walRemove.length - 1 });
      }
      if (walRemove.length > 0) ctx.log.info(`removed ${walRemove.length} WAL file(s) of cluster "${p.cluster}"`);
      // A pin written meanwhile from another host for a backup just deleted: say so.
      const expired = new Set(result.expired);
      for (const id of await listPins(repo, p.cluster)) {
        if (expired.has(id)) ctx.log.warn(`backup ${id.slice(0, 8)} was pinned while pg expire removed it: it is gone; \`holdfast pg unpin ${id.slice(0, 12)}\` removes the void pin`);
      }
      return result;
    });
  } finally {
    await repo.close();
  }
}
