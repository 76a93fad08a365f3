import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { archiveGet, archivePush } from '../ops/pg-archive.js';
import { defaultStateDir } from '../state/key-cache.js';
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import * as path from 'node:path';

export async function run(inv: Invocation): Promise<number> {
  const cluster = inv.options.str('cluster')!;
  if (inv.command === 'pg archive-push') {
    const ref = repoRef(inv);
    const o = inv.options;
    const async = o.bool('async')
      ? {
          spoolDir: path.join(defaultStateDir(), 'spool', createHash('sha256').update(path.resolve(ref.location)).digest('hex').slice(0, 16), cluster),
          batch: o.num('async-batch'),
          parallel: typeof o.get('jobs') === 'number' ? Math.max(1, o.num('jobs')) : availableParallelism(),
        }
      : undefined;
    const r = await archivePush(ref, cluster, inv.args[0]!, inv.ctx, async);
    if (inv.json) inv.outJson(r);
    else inv.log.debug(r.stored ? `archived ${r.file}: ${r.bytes} bytes, ${r.storedBytes} stored` : `${r.file} was already archived`);
    return 0;
  }
  const r = await archiveGet(repoRef(inv), cluster, inv.args[0]!, inv.args[1]!);
  if (inv.json) inv.outJson(r);
  else inv.log.debug(`restored ${r.file}: ${r.bytes} bytes`);
  return 0;
}
