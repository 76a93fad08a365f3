import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { restore } from '../ops/restore.js';
import { HoldfastError } from '../errors/catalogue.js';
import { formatBytes } from '../ui/output.js';

export async function run(inv: Invocation): Promise<number> {
  const target = inv.options.str('target');
  if (!target) throw new HoldfastError('USAGE', 'restore needs --target DIR', { hint: 'Usage: holdfast restore SNAPSHOT --target DIR' });
  const r = await restore(repoRef(inv), { snapshot: inv.args[0]!, target, includes: inv.options.list('include'), force: inv.options.bool('force'), jobs: typeof inv.options.get('jobs') === 'number' ? inv.options.num('jobs') : undefined, sync: inv.options.bool('sync'), directIo: inv.options.bool('direct-io') }, inv.ctx);
  if (inv.json) inv.outJson(r);
  else inv.out(`restored snapshot ${r.snapshotId.slice(0, 8)} to ${r.target}: ${r.files} files, ${formatBytes(r.bytes)}`);
  return 0;
}
