import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { ls } from '../ops/browse.js';
import { nsToSeconds } from '../files/tree.js';

const TYPE_CHAR: Record<string, string> = { file: '-', dir: 'd', symlink: 'l', fifo: 'p', socket: 's', chardev: 'c', blockdev: 'b' };

function modeString(type: string, mode: number): string {
  const rwx = ['r', 'w', 'x'];
  let s = TYPE_CHAR[type] ?? '?';
  for (let i = 8; i >= 0; i--) s += mode & (1 << i) ? rwx[(8 - i) % 3] : '-';
  return s;
}

export async function run(inv: Invocation): Promise<number> {
  const long = inv.options.bool('long');
  await ls(repoRef(inv), inv.args[0]!, inv.args[1], (e) => {
    const n = e.node;
    if (inv.json) {
      inv.out(JSON.stringify({ path: e.path, type: n.type, mode: n.mode, size: n.size ?? 0, uid: n.uid, gid: n.gid, mtime: new Date(nsToSeconds(n.mtime) * 1000).toISOString(), ...(n.target !== undefined ? { target: n.target } : {}) }));
    } else if (long) {
      const mtime = new Date(nsToSeconds(n.mtime) * 1000).toISOString().replace('T', ' ').slice(0, 19);
      inv.out(`${modeString(n.type, n.mode)} ${String(n.uid).padStart(5)} ${String(n.gid).padStart(5)} ${String(n.size ?? 0).padStart(12)} ${mtime} ${e.path}${n.target !== undefined ? ` -> ${n.target}` : ''}`);
    } else inv.out(e.path);
  });
  return 0;
}
