import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { snapshots } from '../ops/browse.js';
import { formatBytes } from '../ui/output.js';

export async function run(inv: Invocation): Promise<number> {
  const list = await snapshots(repoRef(inv), { host: inv.options.str('host'), tags: inv.options.list('tag') });
  if (inv.json) {
    inv.outJson(list);
    return 0;
  }
  if (list.length === 0) {
    inv.out('no snapshots');
    return 0;
  }
  const rows = list.map((s) => [s.id.slice(0, 8), s.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z'), s.host, s.tags.join(','), s.summary ? formatBytes(s.summary.bytes) : '', s.paths.join(' ')]);
  const head = ['ID', 'Time', 'Host', 'Tags', 'Size', 'Paths'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const fmt = (r: string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  inv.out(fmt(head));
  for (const r of rows) inv.out(fmt(r));
  inv.out(`${list.length} snapshot${list.length === 1 ? '' : 's'}`);
  return 0;
}
