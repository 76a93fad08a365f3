import { type CheckReport, checkRepository } from '../checker/check.js';
import { listSnapshots } from '../repository/snapshot.js';
import { loadTree } from '../files/walk.js';
import { Ticker } from '../ui/output.js';
import type { OpContext, RepoRef } from './context.js';
import { openRepository } from './repo.js';
import { withRepoLock } from './locking.js';

export async function check(ref: RepoRef, readData: boolean, ctx: OpContext): Promise<CheckReport> {
  const repo = await openRepository(ref, false);
  const state = { done: 0, total: 0, what: '' };
  const ticker = new Ticker(ctx.log, () => `checking ${state.what}: ${state.done}/${state.total}`, ctx.progress);
  try {
    return await withRepoLock(repo, ref.location, ctx, 'shared', 'check', () =>
      checkRepository(repo, {
        readData,
        onProgress: (done, total, what) => Object.assign(state, { done, total, what }),
      }),
    );
  } finally {
    ticker.stop();
    await repo.close();
  }
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
