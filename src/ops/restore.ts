import { findSnapshot } from '../repository/snapshot.js';
import { newRestoreProgress, restoreTree } from '../files/restorer.js';
import { Ticker, formatBytes, rateAndEta } from '../ui/output.js';
import type { OpContext, RepoRef } from './context.js';
import { openRepository } from './repo.js';
import { restoreTargetLock, withOperationLocks } from './locking.js';

export interface RestoreParams {
  readonly snapshot: string;
  readonly target: string;
  readonly includes: readonly string[];
  readonly force: boolean;
  /** Worker threads (undefined: the restorer's default; 0: one file at a time in the main thread). */
  readonly jobs?: number | undefined;
  /** fsync what was restored before returning (default true; --no-sync). */
  readonly sync?: boolean | undefined;
  /** Write large files' page-aligned parts with O_DIRECT when that is safe to (default true; --no-direct-io; RestoreOptions.directIo). */
  readonly directIo?: boolean | undefined;
}

export interface RestoreResult {
  snapshotId: string;
  target: string;
  files: number;
  bytes: number;
  warnings: string[];
}

export async function restore(ref: RepoRef, p: RestoreParams, ctx: OpContext): Promise<RestoreResult> {
  const repo = await openRepository(ref, false);
  try {
    return await withOperationLocks(repo, ref.location, ctx, { local: restoreTargetLock(p.target, ref.location, 'restore'), kind: 'shared', operation: 'restore', loadIndex: true }, async (ctx) => {
      const sn = await findSnapshot(repo, p.snapshot);
      const progress = newRestoreProgress();
      const warnings: string[] = [];
      const ticker = new Ticker(
        ctx.log,
        (ms) => `${progress.filesDone}/${progress.filesTotal} files, ${formatBytes(progress.bytesDone)} of ${formatBytes(progress.bytesTotal)}, ${rateAndEta(progress.bytesDone, progress.bytesTotal, ms)}`,
        ctx.progress,
      );
      try {
        await restoreTree(repo, sn.tree, {
          target: p.target,
          includes: p.includes,
          force: p.force,
          progress,
          parallel: p.jobs,
          sync: p.sync !== false,
          directIo: p.directIo !== false,
          signal: ctx.signal,
          onWarning: (m) => {
            warnings.push(m);
            ctx.log.warn(m);
          },
        });
      } finally {
        ticker.stop();
      }
      return { snapshotId: sn.id, target: p.target, files: progress.filesDone, bytes: progress.bytesDone, warnings };
    });
  } finally {
    await repo.close();
  }
}
