import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { check } from '../ops/check.js';
import { CATALOGUE } from '../errors/catalogue.js';

export async function run(inv: Invocation): Promise<number> {
  const readData = inv.options.bool('read-data');
  const r = await check(repoRef(inv), readData, inv.ctx);
  const ok = r.problems.length === 0;
  if (inv.json) inv.outJson({ ok, ...r });
  else {
    for (const w of r.warnings) inv.log.warn(w);
    for (const p of r.problems) {
      inv.out(`error: ${p.message}`);
      inv.out(`       object ${p.object}; affects ${p.snapshots.length ? `snapshot(s) ${p.snapshots.map((s) => s.slice(0, 8)).join(', ')}` : 'no snapshot'}`);
    }
    const s = r.stats;
    inv.out(`checked ${s.snapshots} snapshots, ${s.trees} trees, ${s.blobs} blobs in ${s.packs} packs${readData ? ` (read all ${s.packsRead} packs)` : ''}: ${ok ? 'no problems found' : `${r.problems.length} problem(s)`}`);
  }
  if (ok) return 0;
  // Like every failure, name the catalogue code and its hint (stderr, also with --json).
  inv.log.error(`check found ${r.problems.length} problem(s) [CHECK_FAILED]`);
  inv.log.hint(CATALOGUE.CHECK_FAILED.hint);
  return CATALOGUE.CHECK_FAILED.exit;
}
