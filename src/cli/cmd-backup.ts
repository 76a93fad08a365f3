import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { backup, checkCompression, parseSnapshotTime } from '../ops/backup.js';
import { CATALOGUE, HoldfastError, isHoldfastError } from '../errors/catalogue.js';
import { formatBytes, formatDuration } from '../ui/output.js';

export async function run(inv: Invocation): Promise<number> {
  const o = inv.options;
  const compression = o.str('compression')!;
  try {
    checkCompression(compression);
  } catch (err) {
    // Name where the bad value came from (flag, variable or file:line), like every config error.
    if (!isHoldfastError(err, 'CONFIG_INVALID')) throw err;
    const where = o.where('compression');
    throw new HoldfastError('CONFIG_INVALID', `${where}: ${err.message}`, { ...err.data, option: 'compression', where });
  }
  const timeText = o.str('time');
  const time = timeText === undefined ? undefined : parseSnapshotTime(timeText);
  if (timeText !== undefined && time === undefined) {
    const where = o.where('time');
    throw new HoldfastError('CONFIG_INVALID', `${where}: expected a time such as "2026-11-21 10:15:00" (local time), 2026-11-21T10:15:00Z or 2026-11-21T10:15:00+01:00, got ${JSON.stringify(timeText)}`, { option: 'time', where });
  }
  const r = await backup(
    repoRef(inv),
    {
      paths: inv.args,
      excludes: o.list('exclude'),
      tags: o.list('tag'),
      host: o.str('host'),
      parent: o.str('parent'),
      readAll: o.bool('read-all'),
      compression,
      packSize: o.num('pack-size'),
      jobs: typeof o.get('jobs') === 'number' ? o.num('jobs') : undefined,
      time,
    },
    inv.ctx,
  );
  const s = r.summary;
  if (inv.json) inv.outJson({ snapshot: r.snapshotId, parent: r.parent ?? null, summary: s, errors: r.sourceErrors });
  else {
    inv.out(`Files: ${s.filesNew} new, ${s.filesChanged} changed, ${s.filesUnchanged} unchanged; ${s.dirs} directories`);
    inv.out(`Read ${formatBytes(s.bytes)}, added ${formatBytes(s.bytesAdded)} to the repository in ${formatDuration(s.durationMs)}`);
    inv.out(`snapshot ${r.snapshotId.slice(0, 8)} saved${r.sourceErrors.length ? ` without ${r.sourceErrors.length} unreadable path(s)` : ''}`);
  }
  if (r.sourceErrors.length > 0) {
    inv.log.error(`${r.sourceErrors.length} path(s) could not be read and are missing from snapshot ${r.snapshotId.slice(0, 8)} [SOURCE_UNREADABLE]`);
    inv.log.hint(CATALOGUE.SOURCE_UNREADABLE.hint);
    return CATALOGUE.SOURCE_UNREADABLE.exit;
  }
  return 0;
}
