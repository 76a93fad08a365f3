import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { type PgCheckResult, pgCheck } from '../ops/pg-check.js';
import { CATALOGUE } from '../errors/catalogue.js';

export async function run(inv: Invocation): Promise<number> {
  const o = inv.options;
  const r = await pgCheck(
    repoRef(inv),
    {
      cluster: o.str('cluster')!,
      pgUrl: o.str('pg-url'),
      archiveTimeoutMs: o.num('archive-timeout') * 1000,
    },
    inv.ctx,
  );
  if (inv.json) inv.outJson(r);
  else for (const line of formatPgCheck(r)) inv.out(line);
  if (r.ok) return 0;
  // Like every failure, name the catalogue code and its hint (stderr, also with --json).
  const failed = r.items.filter((i) => i.status === 'fail').map((i) => i.name);
  inv.log.error(`pg check of cluster "${r.cluster}" failed: ${failed.join(', ')} [PG_CHECK_FAILED]`);
  inv.log.hint(CATALOGUE.PG_CHECK_FAILED.hint);
  return CATALOGUE.PG_CHECK_FAILED.exit;
}

const LABEL = { ok: 'ok', warn: 'warn', fail: 'FAIL', skip: 'skip' } as const;

/** The text form of `pg check`: one line per item. */
export function formatPgCheck(r: PgCheckResult): string[] {
  const width = Math.max(...r.items.map((i) => i.name.length));
  const out = [`pg check of cluster "${r.cluster}":`];
  for (const i of r.items) out.push(`  ${LABEL[i.status].padEnd(4)}  ${i.name.padEnd(width)}  ${i.message}`);
  const count = (s: string): number => r.items.filter((i) => i.status === s).length;
  const warnings = count('warn') ? `, ${count('warn')} warning${count('warn') === 1 ? '' : 's'}` : '';
  out.push(r.ok ? `all checks passed${warnings}: WAL archiving into this repository works` : `${count('fail')} failed${warnings}`);
  return out;
}
