import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { archiveGet, archivePush } from '../ops/pg-archive.js';

export async function run(inv: Invocation): Promise<number> {
  const cluster = inv.options.str('cluster')!;
  if (inv.command === 'pg archive-push') {
    const r = await archivePush(repoRef(inv), cluster, inv.args[0]!, inv.ctx);
    if (inv.json) inv.outJson(r);
    else inv.log.debug(r.stored ? `archived ${r.file}: ${r.bytes} bytes, ${r.storedBytes} stored` : `${r.file} was already archived`);
    return 0;
  }
  const r = await archiveGet(repoRef(inv), cluster, inv.args[0]!, inv.args[1]!);
  if (inv.json) inv.outJson(r);
  else inv.log.debug(`restored ${r.file}: ${r.bytes} bytes`);
  return 0;
}
