import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { initRepository } from '../ops/init.js';

export async function run(inv: Invocation): Promise<number> {
  const o = inv.options;
  const r = await initRepository(repoRef(inv, true), { kdfCost: o.num('kdf-cost'), chunkMin: o.num('chunk-min'), chunkAvg: o.num('chunk-avg'), chunkMax: o.num('chunk-max') });
  if (inv.json) inv.outJson(r);
  else inv.out(`created holdfast repository ${r.id.slice(0, 10)} at ${r.location}\nKeep the password safe: without it the data cannot be restored.`);
  return 0;
}
