import * as path from 'node:path';
import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { HoldfastError } from '../errors/catalogue.js';
import { type ForgetResult, type ForgetSnapshot, forget } from '../ops/forget.js';
import { pruneAfter } from './cmd-prune.js';
import { type RetentionPolicy, type Zone, describeGroup, parseCalendarDuration, parseGroupBy } from '../retention/policy.js';

export async function run(inv: Invocation): Promise<number> {
  const o = inv.options;
  const invalid = (option: string, why: string): HoldfastError => {
    const where = o.where(option);
    return new HoldfastError('CONFIG_INVALID', `${where}: ${why}`, { option, where });
  };
  const count = (name: string): number | undefined => {
    const v = o.get(name);
    return typeof v === 'number' ? v : undefined;
  };
  const withinText = o.str('keep-within');
  const within = withinText === undefined ? undefined : parseCalendarDuration(withinText);
  if (withinText !== undefined && within === undefined) {
    throw invalid('keep-within', `expected a duration such as 2d, 36h, 6w or 1y2m (units y, m = months, w, d, h), got ${JSON.stringify(withinText)}`);
  }
  const groupBy = parseGroupBy(o.list('group-by'));
  if (typeof groupBy === 'string') throw invalid('group-by', groupBy);
  const policy: RetentionPolicy = {
    last: count('keep-last'),
    hourly: count('keep-hourly'),
    daily: count('keep-daily'),
    weekly: count('keep-weekly'),
    monthly: count('keep-monthly'),
    yearly: count('keep-yearly'),
    within,
    tags: o.list('keep-tag'),
  };
  if (inv.args.length > 0 && o.source('group-by') !== 'default') {
    throw new HoldfastError('USAGE', '--group-by applies to a policy, not to snapshot ids', { hint: 'Give the ids alone to remove exactly those snapshots.' });
  }
  const zone: Zone = o.bool('utc') ? 'utc' : 'local';
  const paths = [...new Set(o.list('path').map((p) => path.resolve(p)))];
  const r = await forget(
    repoRef(inv),
    {
      ids: inv.args,
      policy,
      groupBy,
      zone,
      filter: { host: o.str('host'), tags: o.list('tag'), paths },
      dryRun: o.bool('dry-run'),
    },
    inv.ctx,
  );
  if (!inv.json) for (const line of describeForget(r, zone, inv.args.length > 0)) inv.out(line);
  const pruned = await pruneAfter(inv);
  if (inv.json) inv.outJson(pruned ? { ...r, prune: pruned } : r);
  return 0;
}

/** A time as the buckets see it: UTC with --utc, else local time with its offset. */
function showTime(iso: string, zone: Zone): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  if (zone === 'utc') return `${d.toISOString().slice(0, 19).replace('T', ' ')}Z`;
  const offset = -d.getTimezoneOffset();
  const wall = new Date(d.getTime() + offset * 60_000).toISOString().slice(0, 19).replace('T', ' ');
  const abs = Math.abs(offset);
  return `${wall}${offset < 0 ? '-' : '+'}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
}

/** Aligned, indented rows; a column empty in every row (no tags) is left out. */
function table(all: string[][]): string[] {
  if (all.length === 0) return [];
  const used = all[0]!.map((_, i) => all.some((r) => r[i] !== ''));
  const rows = all.map((r) => r.filter((_, i) => used[i]));
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => `  ${r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')}`.trimEnd());
}

function plural(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
}

export function describeForget(r: ForgetResult, zone: Zone, byId: boolean): string[] {
  const out: string[] = [];
  const row = (action: string, s: ForgetSnapshot, last: string): string[] => [action, s.id.slice(0, 8), showTime(s.time, zone), s.tags.join(','), last];
  if (byId) {
    out.push(...table(r.remove.map((s) => row(r.dryRun ? 'would remove' : 'remove', s, `${s.host} ${s.paths.join(' ')}`))));
  }
  for (const g of r.groups) {
    const total = g.keep.length + g.remove.length;
    out.push(`${describeGroup(g.key)}: keep ${g.keep.length}, ${r.dryRun ? 'would remove' : 'remove'} ${g.remove.length} of ${plural(total, 'snapshot')}`);
    const rows = [...g.keep.map((k) => ({ s: k as ForgetSnapshot, line: row('keep', k, k.reasons.join(', ')) })), ...g.remove.map((s) => ({ s, line: row('remove', s, '') }))];
    // Newest first, keep and remove interleaved, so the reasons read against their neighbours.
    rows.sort((a, b) => (a.s.time < b.s.time ? 1 : a.s.time > b.s.time ? -1 : a.s.id < b.s.id ? 1 : -1));
    out.push(...table(rows.map((x) => x.line)), '');
  }
  const considered = byId ? r.remove.length : r.groups.reduce((n, g) => n + g.keep.length + g.remove.length, 0);
  const groups = byId ? '' : ` in ${plural(r.groups.length, 'group')}`;
  if (!byId && considered === 0) out.push('no file snapshots to consider (PostgreSQL backups are left to `pg expire`)');
  else if (r.remove.length === 0) out.push(`nothing to remove: the policy keeps all ${plural(considered, 'snapshot')}${groups}`);
  else if (r.dryRun) out.push(`dry run: would remove ${r.remove.length} of ${plural(considered, 'snapshot')}${groups}; nothing was changed`);
  else out.push(`removed ${r.removed.length} of ${plural(considered, 'snapshot')}${groups}; their data stays in the repository until \`holdfast prune\` frees what no snapshot uses`);
  return out;
}
