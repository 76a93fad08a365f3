import type { Invocation } from './invocation.js';
import { password, repoRef } from './invocation.js';
import { addKey, changePassword, listKeys, removeKey } from '../ops/keys.js';

export async function run(inv: Invocation): Promise<number> {
  const ref = repoRef(inv);
  switch (inv.command) {
    case 'key list': {
      const keys = await listKeys(ref);
      if (inv.json) inv.outJson(keys);
      else for (const k of keys) inv.out(`${k.current ? '*' : ' '} ${k.id.slice(0, 8)}  ${k.created ?? '(unreadable key file)'}  ${k.username ?? ''}@${k.host ?? ''}  ${k.kdf ?? ''}`);
      return 0;
    }
    case 'key add': {
      const id = await addKey(ref, password(inv, 'new-password', 'new-password-file', true), inv.options.num('kdf-cost'), inv.ctx);
      if (inv.json) inv.outJson({ added: id });
      else inv.out(`added key ${id.slice(0, 8)}`);
      return 0;
    }
    case 'key remove': {
      const id = await removeKey(ref, inv.args[0]!, inv.ctx);
      if (inv.json) inv.outJson({ removed: id });
      else inv.out(`removed key ${id.slice(0, 8)}`);
      return 0;
    }
    case 'key passwd': {
      const r = await changePassword(ref, password(inv, 'new-password', 'new-password-file', true), inv.options.num('kdf-cost'), inv.ctx);
      if (inv.json) inv.outJson(r);
      else inv.out(`password changed: added key ${r.added.slice(0, 8)}, removed key ${r.removed.slice(0, 8)}`);
      return 0;
    }
    default:
      throw new Error(`unhandled key command ${inv.command}`);
  }
}
