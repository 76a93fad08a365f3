import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { type Change, diff } from '../ops/browse.js';

export async function run(inv: Invocation): Promise<number> {
  const changes: Record<string, number> = { '+': 0, '-': 0, M: 0, T: 0, U: 0 };
  const { from, to } = await diff(repoRef(inv), inv.args[0]!, inv.args[1]!, (c: Change) => {
    changes[c.kind] = (changes[c.kind] ?? 0) + 1;
    if (inv.json) inv.out(JSON.stringify(c));
    else inv.out(`${c.kind}  ${c.path}${c.type === 'dir' ? '/' : ''}`);
  });
  if (!inv.json) inv.log.info(`comparing ${from.id.slice(0, 8)} to ${to.id.slice(0, 8)}: ${changes['+']} added, ${changes['-']} removed, ${changes['M']} modified, ${changes['T']} type changed, ${changes['U']} metadata only`);
  return 0;
}
