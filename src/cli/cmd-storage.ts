import type { Invocation } from './invocation.js';
import { repoRef, storageRef } from './invocation.js';
import { storageStatus, storageSync } from '../ops/storage.js';
import { formatBytes } from '../ui/output.js';
import { CATALOGUE } from '../errors/catalogue.js';

export async function run(inv: Invocation): Promise<number> {
  if (inv.command === 'storage status') {
    const r = await storageStatus(storageRef(inv));
    if (inv.json) inv.outJson(r);
    else {
      inv.out(`mode: ${r.mode}`);
      for (const s of r.storages) {
        const was = s.cached ? `${s.cached.alive ? 'alive' : 'dead'} as of ${new Date(s.cached.checked).toISOString()}` : 'no cached status';
        inv.out(`${s.role.padEnd(9)} ${s.location}: ${s.now.alive ? 'alive' : 'DEAD'}, checked ${new Date(s.now.checked).toISOString()}, latency ${s.now.latencyMs ?? '?'} ms${s.now.error ? `, ${s.now.error}` : ''} (cache: ${was})`);
      }
    }
    const dead = r.storages.filter((s) => !s.now.alive);
    if (dead.length === 0) return 0;
    // Like every failure: the catalogue code and a hint on stderr (exit 1 belongs to archive-get).
    inv.log.error(`${dead.map((s) => s.location).join(', ')} ${dead.length === 1 ? 'is' : 'are'} not usable [STORAGE_IO]`);
    inv.log.hint('Check the endpoint, network and credentials of the storage named; holdfast keeps using the other storages meanwhile (failover), and `holdfast storage sync` copies what they received once it is back.');
    return CATALOGUE.STORAGE_IO.exit;
  }
  const r = await storageSync(repoRef(inv), inv.ctx, inv.options.bool('dry-run'));
  if (inv.json) inv.outJson(r);
  else {
    for (const c of r.copied) inv.out(`${inv.options.bool('dry-run') ? 'would copy' : 'copied'} ${c.name} (${formatBytes(c.size)}) from ${c.from} to ${c.to}`);
    inv.out(`${r.copied.length} object(s), ${formatBytes(r.bytes)} ${inv.options.bool('dry-run') ? 'to copy' : 'copied'}; ${r.conflicts.length} conflict(s)`);
  }
  return 0;
}
