import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { type PruneResult, prune } from '../ops/prune.js';
import { formatBytes, formatDuration } from '../ui/output.js';

export async function run(inv: Invocation): Promise<number> {
  const r = await pruneWith(inv, inv.options.bool('dry-run'));
  if (inv.json) inv.outJson(r);
  else for (const line of describePrune(r)) inv.out(line);
  return 0;
}

function pruneWith(inv: Invocation, dryRun: boolean): Promise<PruneResult> {
  const o = inv.options;
  return prune(repoRef(inv), { maxUnusedPercent: o.num('max-unused'), maxRepackBytes: typeof o.get('max-repack-size') === 'number' ? o.num('max-repack-size') : undefined, dryRun }, inv.ctx);
}

/**
 * `forget --prune`, `pg expire --prune`: prune once the removal is done (its lock released).
 * Not with --dry-run: what prune would free depends on the removal that did not happen.
 */
export async function pruneAfter(inv: Invocation): Promise<PruneResult | undefined> {
  if (!inv.options.bool('prune')) return undefined;
  if (inv.options.bool('dry-run')) {
    inv.log.info('--prune: skipped with --dry-run (run `holdfast prune --dry-run` after a real removal to see what it would free)');
    return undefined;
  }
  const r = await pruneWith(inv, false);
  if (!inv.json) for (const line of describePrune(r)) inv.out(`prune: ${line}`);
  return r;
}

/** The human summary of a prune (also used by `forget --prune`). */
export function describePrune(r: PruneResult): string[] {
  const b = r.bytes;
  const p = r.packs;
  const lines = [
    `${r.snapshots} snapshots use ${r.blobs.used} blobs; ${r.blobs.unused} blobs are unused`,
    `packs: ${p.total} indexed (${formatBytes(b.total)}), ${formatBytes(b.unused)} of them unused`,
  ];
  const verb = r.dryRun ? 'would ' : '';
  lines.push(`${r.dryRun ? 'would delete' : 'deleted'} ${p.deleted} unused pack(s) (${formatBytes(b.deleted)}), ${verb}${r.dryRun ? 'repack' : 'repacked'} ${p.repacked} (${formatBytes(b.repacked)} read, ${formatBytes(b.written)} ${r.dryRun ? 'to write' : `written in ${p.written} new pack(s)`}), ${p.orphans} unindexed pack(s) (${formatBytes(b.orphans)})`);
  lines.push(`${r.dryRun ? 'would free' : 'freed'} ${formatBytes(b.freed)}; unused afterwards: ${formatBytes(b.unusedAfter)}`);
  for (const m of r.pending) {
    const why = m.waitingFor.length > 0 ? `they wait for ${m.waitingFor.join('; ')}, which started before they left the index` : 'nothing they wait for runs any more';
    lines.push(`${m.packs} pack(s) (${formatBytes(m.bytes)}) are out of the index but not deleted yet: ${why}; a later prune deletes them`);
  }
  if (p.relisted > 0) lines.push(`${p.relisted} pack(s) ${r.dryRun ? 'would be ' : ''}listed in the index again: a backup that ran during a prune uses blobs in them`);
  if (r.earlierFinished > 0) lines.push(`also deleted what ${r.earlierFinished} earlier prune(s) had left waiting for operations that have since finished`);
  lines.push(`${r.dryRun ? 'dry run' : 'done'} in ${formatDuration(r.durationMs)}`);
  return lines;
}
