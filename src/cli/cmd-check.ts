import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { check, parseDataSubset } from '../ops/check.js';
import { CATALOGUE } from '../errors/catalogue.js';

export async function run(inv: Invocation): Promise<number> {
  const subsetText = inv.options.str('read-data-subset');
  const subset = subsetText === undefined ? undefined : parseDataSubset(subsetText);
  const readData = inv.options.bool('read-data') && subset === undefined;
  const r = await check(repoRef(inv), { readData, subset }, inv.ctx);
  const ok = r.problems.length === 0;
  if (inv.json) inv.outJson({ ok, ...r });
  else {
    for (const w of r.warnings) inv.log.warn(w);
    for (const p of r.problems) {
      inv.out(`error: ${p.message}`);
      inv.out(`       object ${p.object}; affects ${p.snapshots.length ? `snapshot(s)/backup(s) ${p.snapshots.map((s) => s.slice(0, 8)).join(', ')}` : 'no snapshot or backup'}`);
    }
    const s = r.stats;
    const read = subset ? ` (read ${s.packsRead} of ${s.packs} packs and ${s.walRead ?? 0} of ${s.walFiles ?? 0} WAL files: subset ${subsetText})` : readData ? ` (read all ${s.packsRead} packs and ${s.walRead ?? 0} WAL files)` : '';
    const wal = s.clusters ? `, ${s.walFiles ?? 0} WAL files of ${s.clusters} cluster(s)` : '';
    inv.out(`checked ${s.keys} keys, ${s.snapshots} snapshots, ${s.trees} trees, ${s.blobs} blobs in ${s.packs} packs${wal}${read}: ${ok ? 'no problems found' : `${r.problems.length} problem(s)`}`);
    if (!ok) {
      const affected = new Set(r.problems.flatMap((p) => p.snapshots));
      const kinds = new Map<string, number>();
      for (const p of r.problems) kinds.set(p.kind, (kinds.get(p.kind) ?? 0) + 1);
      inv.out(`summary: ${[...kinds].map(([k, n]) => `${n} ${k}`).join(', ')}; ${affected.size} snapshot(s)/backup(s) affected`);
    }
  }
  if (ok) return 0;
  // Like every failure, name the catalogue code and its hint (stderr, also with --json).
  inv.log.error(`check found ${r.problems.length} problem(s) [CHECK_FAILED]`);
  inv.log.hint(CATALOGUE.CHECK_FAILED.hint);
  return CATALOGUE.CHECK_FAILED.exit;
}
