import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { repairIndex, repairSnapshots } from '../ops/repair.js';

export async function run(inv: Invocation): Promise<number> {
  const dryRun = inv.options.bool('dry-run');
  const would = dryRun ? 'would be ' : '';
  if (inv.command === 'repair snapshots') {
    const r = await repairSnapshots(repoRef(inv), { dryRun, forget: inv.options.bool('forget') }, inv.ctx);
    if (inv.json) inv.outJson(r);
    else {
      for (const s of r.repaired) {
        const kind = s.pg ? 'backup' : 'snapshot';
        const verb = { 'copy-restored': 'its copy catalog/ID rewritten from the manifest', 'manifest-restored': 'its manifest snapshots/ID rewritten from the copy', rewritten: 'rewritten without what is lost', forgotten: 'removed', unrepairable: 'NOT repaired' }[s.action];
        inv.out(`${kind} ${s.id.slice(0, 12)}: ${would}${verb.replace('ID', s.id.slice(0, 12))}${s.newId ? ` as ${s.newId.slice(0, 12)}` : ''}${s.reason ? ` (${s.reason})` : ''}`);
        if (s.lostCount > 0) {
          inv.out(`  lost: ${s.lostCount} path(s)`);
          for (const l of s.lost.slice(0, 50)) inv.out(`    ${l}`);
          if (s.lostCount > 50) inv.out(`    … (${s.lostCount - 50} more; --json lists up to ${s.lost.length})`);
        }
      }
      for (const k of r.keys) {
        const verb = { 'copy-restored': 'its copy catalog/keys/ID rewritten from the key file', 'key-restored': 'the key file keys/ID rewritten from its copy', unrepairable: 'NOT repaired' }[k.action];
        inv.out(`key ${k.id.slice(0, 12)}: ${would}${verb.replace('ID', k.id.slice(0, 12))}${k.reason ? ` (${k.reason})` : ''}`);
      }
      inv.out(r.repaired.length + r.keys.length === 0 ? `${r.snapshots} snapshot(s) and backup(s) checked: nothing to repair` : `${r.snapshots} snapshot(s) and backup(s) checked; ${r.repaired.length} ${dryRun ? 'to repair (dry run: nothing changed)' : 'repaired or reported'}`);
    }
    return r.repaired.some((s) => s.action === 'unrepairable') || r.keys.some((k) => k.action === 'unrepairable') ? 23 : 0;
  }
  const readAll = inv.command === 'repair packs';
  const r = await repairIndex(repoRef(inv), { dryRun, readAll }, inv.ctx);
  if (inv.json) inv.outJson(r);
  else {
    for (const d of r.damaged) {
      inv.out(`pack ${d.id.slice(0, 12)} is damaged (${d.reason}): ${d.salvaged} of ${d.blobs} blob(s) ${dryRun ? 'can be ' : ''}salvaged, ${d.lost.length} lost${dryRun ? '' : '; the pack is removed'}`);
      for (const b of d.lost.slice(0, 20)) inv.out(`  lost blob ${b}`);
    }
    if (r.unreadableIndexFiles.length) inv.out(`${r.unreadableIndexFiles.length} unreadable index file(s) ${would}replaced`);
    if (!r.changed) inv.out(`${r.packs} pack(s) read${readAll ? ' whole' : ' (headers)'}: the index is complete and every pack is healthy; nothing to do`);
    else {
      inv.out(`${r.packs} pack(s) read${readAll ? ' whole' : ' (headers)'}; ${r.added} pack(s) newly listed, ${r.vanished} missing pack(s) dropped, ${r.damaged.length} damaged`);
      inv.out(dryRun ? 'dry run: nothing changed' : `new index written (${r.replaced} old index file(s) replaced, ${r.newPacks} new pack(s) of salvaged blobs)`);
      if (r.damaged.some((d) => d.lost.length > 0) && !dryRun) inv.out('snapshots that used lost blobs: run `holdfast repair snapshots` (check lists them)');
    }
  }
  return 0;
}
