import { createHash } from 'node:crypto';
import { type CheckReport, type Problem, checkRepository } from '../checker/check.js';
import { checkWalContinuity, segSizeOfBackups } from '../checker/wal.js';
import { HoldfastError } from '../errors/catalogue.js';
import { listLocks } from '../locks/protocol.js';
import { RepositoryLockStore } from '../locks/repository.js';
import type { Repository } from '../repository/repository.js';
import { listSnapshots } from '../repository/snapshot.js';
import { loadTree } from '../files/walk.js';
import { Ticker } from '../ui/output.js';
import { type TimelineSwitch, WAL_SEG_SIZE_DEFAULT, isValidSegSize, parseTimelineHistory, parseWalName } from '../wal/names.js';
import type { OpContext, RepoRef } from './context.js';
import { openRepository } from './repo.js';
import { withRepoLock } from './locking.js';
import { readClusterRecord, walObjectName } from './pg-archive.js';

/** `--read-data-subset`: `N%` (a fixed share) or `n/t` (part n of t: all t parts cover everything). */
export type DataSubset = { readonly percent: number } | { readonly part: number; readonly of: number };

export function parseDataSubset(text: string): DataSubset {
  const pct = /^(\d+(?:\.\d+)?)%$/.exec(text);
  if (pct) {
    const percent = Number(pct[1]);
    if (percent > 0 && percent <= 100) return { percent };
  }
  const part = /^(\d+)\/(\d+)$/.exec(text);
  if (part) {
    const n = Number(part[1]);
    const t = Number(part[2]);
    if (t >= 1 && t <= 1_000_000 && n >= 1 && n <= t) return { part: n, of: t };
  }
  throw new HoldfastError('USAGE', `--read-data-subset ${JSON.stringify(text)}: expected a share like 10% or a part like 2/7 (part 2 of 7)`, {
    option: 'read-data-subset',
    hint: 'n/t splits packs (and WAL files) into t fixed groups by id; running 1/t, 2/t, … t/t on a schedule reads the whole repository once per cycle.',
  });
}

/** Whether the object with this id (hex) or name is in the subset: by the first 32 bits of its id, or of SHA-256 of its name. */
export function inSubset(subset: DataSubset, idOrName: string): boolean {
  const hex = /^[0-9a-f]{64}$/.test(idOrName) ? idOrName : createHash('sha256').update(idOrName).digest('hex');
  const x = parseInt(hex.slice(0, 8), 16);
  if ('percent' in subset) return x < (subset.percent / 100) * 2 ** 32;
  return x % subset.of === subset.part - 1;
}

export interface CheckParams {
  readonly readData: boolean;
  readonly subset?: DataSubset | undefined;
}

export async function check(ref: RepoRef, p: CheckParams, ctx: OpContext): Promise<CheckReport> {
  const repo = await openRepository(ref, false);
  const state = { done: 0, total: 0, what: '' };
  const ticker = new Ticker(ctx.log, () => `checking ${state.what}: ${state.done}/${state.total}`, ctx.progress);
  const readData = p.readData || p.subset !== undefined;
  const subset = p.subset;
  try {
    return await withRepoLock(repo, ref.location, ctx, 'shared', 'check', async () => {
      const inFlight = new Map<string, string>();
      for (const l of await listLocks(new RepositoryLockStore(repo, ref.location))) {
        const who = l.record ? `${l.record.operation} (PID ${l.record.owner.pid} on ${l.record.owner.host}, ${l.judgement.stale ? 'stale' : 'running'})` : '';
        for (const id of [...(l.record?.intent?.add ?? []), ...(l.record?.intent?.remove ?? [])]) inFlight.set(id, who);
      }
      const report = await checkRepository(repo, {
        readData,
        subset: subset ? (id) => inSubset(subset, id) : undefined,
        inFlight,
        onProgress: (done, total, what) => Object.assign(state, { done, total, what }),
      });
      const pg = await checkPostgres(repo, { readData, subset }, (done, total, what) => Object.assign(state, { done, total, what }));
      report.problems.push(...pg.problems);
      report.warnings.push(...pg.warnings);
      report.stats.walFiles = pg.walFiles;
      report.stats.walRead = pg.walRead;
      report.stats.clusters = pg.clusters;
      return report;
    });
  } finally {
    ticker.stop();
    await repo.close();
  }
}

/**
 * PostgreSQL parts of the repository: every cluster record readable, the backups bound to it,
 * WAL continuity (checker/wal.ts), and with readData every WAL object authenticated.
 */
async function checkPostgres(
  repo: Repository,
  p: { readData: boolean; subset: DataSubset | undefined },
  progress: (done: number, total: number, what: string) => void,
): Promise<{ problems: Problem[]; warnings: string[]; walFiles: number; walRead: number; clusters: number }> {
  const problems: Problem[] = [];
  const warnings: string[] = [];
  const backups = (await listSnapshots(repo, { skipUnreadable: true })).filter((s) => s.pg);
  const walNames = await repo.listNamed('wal/');
  const clusters = new Set<string>([...(await repo.listNamed('clusters/')), ...backups.map((b) => b.pg!.cluster), ...walNames.map((n) => n.split('/')[0]!)]);
  let walFiles = 0;
  let walRead = 0;
  for (const cluster of [...clusters].sort()) {
    const mine = backups.filter((b) => b.pg!.cluster === cluster);
    const ids = mine.map((b) => b.id);
    const walBackups = mine.map((b) => ({ id: b.id, timeline: b.pg!.timeline, startLsn: b.pg!.startLsn, startWal: b.pg!.startWal, stopWal: b.pg!.stopWal }));
    // Without a readable record, the segment size its backups agree on (names mean nothing without it).
    let segSize: number | undefined;
    try {
      const rec = await readClusterRecord(repo, cluster);
      if (!rec) problems.push({ kind: 'cluster-record', object: `clusters/${cluster}`, message: `cluster "${cluster}" has ${mine.length ? 'backups' : 'WAL'} but no cluster record clusters/${cluster}: the binding to its system identifier is lost (the next archive-push re-creates it)`, snapshots: ids });
      else {
        if (isValidSegSize(rec.segSize)) segSize = rec.segSize;
        for (const b of mine) {
          if (b.pg!.systemId !== rec.systemId) problems.push({ kind: 'cluster-record', object: `snapshots/${b.id}`, message: `backup ${b.id.slice(0, 12)} is of system identifier ${b.pg!.systemId}, but cluster "${cluster}" is bound to ${rec.systemId}`, snapshots: [b.id] });
        }
      }
    } catch (err) {
      problems.push({ kind: 'cluster-record', object: `clusters/${cluster}`, message: `cluster record clusters/${cluster} cannot be read: ${(err as Error).message}`, snapshots: ids });
    }
    segSize ??= mine.length > 0 ? segSizeOfBackups(walBackups) : WAL_SEG_SIZE_DEFAULT; // without backups no range depends on it
    const prefix = walObjectName(cluster, '');
    const names = walNames.filter((n) => n.startsWith(`${cluster}/`)).map((n) => n.slice(cluster.length + 1));
    walFiles += names.length;
    const bad = new Set<string>();
    if (p.readData) {
      let done = 0;
      for (const name of names) {
        progress(done++, names.length, `WAL of cluster ${cluster}`);
        if (p.subset && !inSubset(p.subset, `${prefix}${name}`)) continue;
        walRead++;
        try {
          if ((await repo.getNamed(`${prefix}${name}`)) === undefined) throw new Error('listed, but gone when read');
        } catch (err) {
          bad.add(name);
          problems.push({ kind: 'wal-corrupt', object: `${prefix}${name}`, message: `WAL file ${name} of cluster "${cluster}" cannot be read: ${(err as Error).message}`, snapshots: [] });
        }
      }
    }
    if (segSize === undefined) {
      if (names.length > 0) warnings.push(`cluster "${cluster}": its cluster record is lost and its backups do not tell its WAL segment size, so WAL continuity is not checked`);
      continue;
    }
    const history = new Map<number, readonly TimelineSwitch[] | Error>();
    for (const name of names) {
      const w = parseWalName(name, segSize);
      if (w?.kind !== 'history') continue;
      try {
        if (bad.has(name)) throw new Error('it is damaged (see wal-corrupt)');
        const data = await repo.getNamed(`${prefix}${name}`);
        if (!data) throw new Error('listed, but gone when read');
        history.set(w.timeline, parseTimelineHistory(data, w.timeline));
      } catch (err) {
        history.set(w.timeline, err as Error);
      }
    }
    // A damaged file counts as missing (but archived: a damaged newest segment still ends its timeline), which names the backups it breaks.
    for (const wp of checkWalContinuity({ cluster, segSize, names, damaged: bad, history, backups: walBackups })) {
      problems.push({ ...wp });
    }
  }
  return { problems, warnings, walFiles, walRead, clusters: clusters.size };
}

export interface RepoStats {
  snapshots: number;
  /** Sum over snapshots of the size of the files they hold (what restoring all of them writes). */
  restoreSize: number;
  files: number;
  /** Unique blobs and their uncompressed size. */
  blobs: number;
  rawSize: number;
  /** Bytes in storage: packs, index and snapshot files. */
  storedSize: number;
  packs: number;
  /** restoreSize / rawSize: how much deduplication saves. */
  dedupRatio: number;
  /** rawSize / pack bytes: how much compression saves. */
  compressionRatio: number;
}

export async function stats(ref: RepoRef): Promise<RepoStats> {
  const repo = await openRepository(ref);
  try {
    // Per-tree totals are memoised, so shared subtrees are read once however many snapshots hold them.
    const memo = new Map<string, { files: number; bytes: number }>();
    const treeTotals = async (root: string): Promise<{ files: number; bytes: number }> => {
      const order: string[] = [];
      const seen = new Set<string>();
      const stack = [root];
      const children = new Map<string, { files: number; bytes: number; subtrees: string[] }>();
      while (stack.length > 0) {
        const id = stack.pop()!;
        if (memo.has(id) || seen.has(id)) continue;
        seen.add(id);
        order.push(id);
        const nodes = await loadTree(repo, id);
        const own = { files: 0, bytes: 0, subtrees: [] as string[] };
        for (const n of nodes) {
          if (n.type === 'file') {
            own.files++;
            own.bytes += n.size ?? 0;
          } else if (n.type === 'dir' && n.subtree) {
            own.subtrees.push(n.subtree);
            stack.push(n.subtree);
          }
        }
        children.set(id, own);
      }
      for (let i = order.length - 1; i >= 0; i--) {
        const id = order[i]!;
        const own = children.get(id)!;
        let files = own.files;
        let bytes = own.bytes;
        for (const s of own.subtrees) {
          const t = memo.get(s) ?? { files: 0, bytes: 0 };
          files += t.files;
          bytes += t.bytes;
        }
        memo.set(id, { files, bytes });
      }
      return memo.get(root)!;
    };
    const sns = await listSnapshots(repo);
    let restoreSize = 0;
    let files = 0;
    for (const sn of sns) {
      const t = await treeTotals(sn.tree);
      restoreSize += t.bytes;
      files += t.files;
    }
    let rawSize = 0;
    let packBytes = 0;
    for (const [, loc] of repo.index.entries()) rawSize += loc.rawLength;
    for (const [, p] of repo.index.packs) packBytes += p.size;
    let storedSize = 0;
    for await (const o of repo.backend.list('')) storedSize += o.size;
    return {
      snapshots: sns.length,
      restoreSize,
      files,
      blobs: repo.index.blobCount,
      rawSize,
      storedSize,
      packs: repo.index.packs.size,
      dedupRatio: rawSize > 0 ? restoreSize / rawSize : 0,
      compressionRatio: packBytes > 0 ? rawSize / packBytes : 0,
    };
  } finally {
    await repo.close();
  }
}
