import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { stats } from '../ops/check.js';
import { formatBytes } from '../ui/output.js';

export async function run(inv: Invocation): Promise<number> {
  const s = await stats(repoRef(inv));
  if (inv.json) {
    inv.outJson(s);
    return 0;
  }
  inv.out(`snapshots:          ${s.snapshots}`);
  inv.out(`files (all snaps):  ${s.files}`);
  inv.out(`restore size:       ${formatBytes(s.restoreSize)}`);
  inv.out(`unique data:        ${formatBytes(s.rawSize)} in ${s.blobs} blobs`);
  inv.out(`stored size:        ${formatBytes(s.storedSize)} (${s.packs} packs)`);
  inv.out(`dedup ratio:        ${s.dedupRatio.toFixed(2)}x`);
  inv.out(`compression ratio:  ${s.compressionRatio.toFixed(2)}x`);
  return 0;
}
