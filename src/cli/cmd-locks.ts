import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { type LockView, formatAge, locks, unlock } from '../ops/locks.js';

function line(v: LockView): string {
  const age = v.ageSeconds === undefined ? '' : `age ${formatAge(v.ageSeconds * 1000)}`;
  const refreshed = v.refreshAgeSeconds === undefined || v.where === 'local' ? '' : `, refreshed ${formatAge(v.refreshAgeSeconds * 1000)} ago`;
  return `${v.where.padEnd(10)} ${v.kind.padEnd(9)} ${v.operation} (PID ${v.pid} on ${v.host}; ${age}${refreshed}): ${v.stale ? 'STALE' : 'live'}, ${v.reason}`;
}

export async function run(inv: Invocation): Promise<number> {
  const ref = repoRef(inv);
  if (inv.command === 'locks') {
    const r = await locks(ref, inv.ctx);
    if (inv.json) inv.outJson(r);
    else if (r.locks.length === 0) inv.out(`no locks (repository ${r.repository}, lock directory ${r.lockDir})`);
    else for (const v of r.locks) inv.out(line(v));
    return 0;
  }
  const r = await unlock(ref, inv.options.bool('all'), inv.ctx);
  if (inv.json) inv.outJson(r);
  else {
    inv.out(`removed ${r.removed.length} lock(s)${r.kept.length ? `; ${r.kept.length} live lock(s) kept${inv.options.bool('all') ? ' (local locks of running processes are never removed)' : ' (--all removes live repository locks too)'}` : ''}`);
    for (const v of r.kept) inv.out(`  kept: ${line(v)}`);
  }
  return 0;
}
