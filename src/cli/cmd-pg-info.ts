import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { type PgInfoBackup, type PgInfoResult, pgInfo } from '../ops/pg-info.js';
import { formatBytes, formatDuration } from '../ui/output.js';
import { formatSize } from '../wal/names.js';

export async function run(inv: Invocation): Promise<number> {
  const cluster = inv.options.str('cluster')!;
  const r = await pgInfo(repoRef(inv), cluster);
  if (inv.json) inv.outJson(r);
  else for (const line of formatPgInfo(r)) inv.out(line);
  return 0;
}

const time = (iso: string): string => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
/** Backups of a small cluster take well under a second: show tenths below ten seconds. */
const duration = (ms: number): string => (ms < 10_000 ? `${(Math.max(0, ms) / 1000).toFixed(1)}s` : formatDuration(ms));
const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

function backupLines(b: PgInfoBackup): string[] {
  const stop = b.stopTime.slice(0, 10) === b.startTime.slice(0, 10) ? time(b.stopTime).slice(11) : time(b.stopTime);
  const wal = b.walComplete ? 'archived' : `MISSING ${b.walMissing.join(', ')}${b.walMissing.length >= 10 ? ', …' : ''}`;
  const size = b.size === null ? 'size unknown' : `size ${formatBytes(b.size)}${b.files === null ? '' : ` (${plural(b.files, 'file')})`}, stored ${formatBytes(b.stored ?? 0)}`;
  const corrupt = b.corruptPages ?? [];
  const pages = corrupt.length
    ? [`  corrupt pages (damaged on the server when read): ${corrupt.slice(0, 5).map((c) => `${c.file} block ${c.block}`).join(', ')}${corrupt.length > 5 ? `, … (${corrupt.length} in all)` : ''}`]
    : [];
  return [
    `backup ${b.id.slice(0, 8)}  ${b.type}${b.parent ? ` (parent ${b.parent.slice(0, 8)})` : ''}  ${time(b.startTime)} .. ${stop} (${duration(b.durationMs)})`,
    `  LSN ${b.startLsn} .. ${b.stopLsn} on timeline ${b.timeline}; WAL ${b.startWal} .. ${b.stopWal} (${wal})`,
    `  ${size}${b.flags.length ? `; flags: ${b.flags.join(', ')}` : ''}`,
    ...pages,
  ];
}

/** The text form of `pg info`, one line per element. */
export function formatPgInfo(r: PgInfoResult): string[] {
  const out: string[] = [];
  if (r.record) {
    out.push(`cluster "${r.cluster}": system identifier ${r.record.systemId}, PostgreSQL ${r.record.pgVersion}, WAL segments of ${formatSize(r.record.segSize)} (bound ${time(r.record.created)})`);
  } else {
    out.push(`cluster "${r.cluster}": not bound yet (no WAL archived and no backup taken under this name)`);
  }
  out.push('');
  out.push(r.backups.length === 0 ? 'no backups' : `${plural(r.backups.length, 'backup')}, oldest first:`);
  for (const b of r.backups) out.push(...backupLines(b));
  out.push('');
  const { timelines, history, other } = r.wal;
  if (timelines.length === 0 && history.length === 0) out.push('WAL archive: empty');
  else out.push('WAL archive:');
  for (const t of timelines) {
    const range = t.first ? `${t.first} .. ${t.last}, ${plural(t.segments, 'segment')}` : 'no full segments';
    const gaps = t.gaps.length === 0 ? (t.segments > 0 ? 'no gaps' : '') : `${t.missing} missing in ${plural(t.gaps.length, 'gap')}`;
    out.push(`  timeline ${t.timeline}: ${range}${gaps ? `, ${gaps}` : ''}`);
    for (const g of t.gaps) out.push(`    gap ${g.range} (${plural(g.segments, 'segment')})`);
    if (t.partial.length) out.push(`    partial: ${t.partial.join(', ')}`);
    if (t.backupHistory.length) out.push(`    ${plural(t.backupHistory.length, 'backup history file')}`);
  }
  for (const h of history) {
    if (h.error) out.push(`  ${h.file}: unreadable: ${h.error}`);
    else {
      const p = h.parents.at(-1);
      out.push(`  ${h.file}: timeline ${h.timeline}${p ? ` branched from timeline ${p.timeline} at ${p.switchLsn}${p.reason ? ` (${p.reason})` : ''}` : ''}`);
    }
  }
  if (other.length) out.push(`  ${plural(other.length, 'other object')} (not WAL-archive names): ${other.slice(0, 5).join(', ')}${other.length > 5 ? ', …' : ''}`);
  return out;
}
