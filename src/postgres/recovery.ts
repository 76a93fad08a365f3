/**
 * Recovery settings for a restored data directory. holdfast writes its settings into
 * postgresql.auto.conf between marker lines, replacing an earlier holdfast block, and comments
 * out settings elsewhere in the file that would conflict (an HA manager or an earlier restore may
 * have left restore_command or recovery_target_* there). Then it creates recovery.signal (or
 * standby.signal).
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { fsyncDir } from '../util/fsync.js';

export const BEGIN = '# holdfast recovery settings begin: written by `holdfast pg restore`, replaced by the next restore';
export const END = '# holdfast recovery settings end';

/** Settings holdfast owns during recovery; other definitions of them are commented out. */
const OWNED = ['restore_command', 'recovery_target', 'recovery_target_time', 'recovery_target_lsn', 'recovery_target_xid', 'recovery_target_name', 'recovery_target_action', 'recovery_target_timeline', 'recovery_target_inclusive'];

/** Quote a value as a postgresql.conf string literal. */
export function confQuote(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/** Quote one argument for the shell that runs restore_command. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** Rewrite postgresql.auto.conf text: drop an old holdfast block, comment out conflicts, append ours. */
export function rewriteAutoConf(text: string, settings: ReadonlyArray<[string, string]>): string {
  const out: string[] = [];
  let inBlock = false;
  for (const line of text.split('\n')) {
    if (line === BEGIN) {
      inBlock = true;
      continue;
    }
    if (inBlock) {
      if (line === END) inBlock = false;
      continue;
    }
    const m = /^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=?/.exec(line);
    if (m && OWNED.includes(m[1]!.toLowerCase())) out.push(`# ${line}  # commented out by holdfast pg restore`);
    else out.push(line);
  }
  while (out.length > 0 && out[out.length - 1] === '') out.pop();
  out.push(BEGIN, ...settings.map(([k, v]) => `${k} = ${confQuote(v)}`), END, '');
  return out.join('\n');
}

export async function writeRecoveryConfig(dataDir: string, settings: ReadonlyArray<[string, string]>, standby: boolean, owner?: { uid: number; gid: number }): Promise<void> {
  const auto = path.join(dataDir, 'postgresql.auto.conf');
  let text = '';
  try {
    text = await fsp.readFile(auto, 'utf8');
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOENT') throw err;
  }
  await writeDurably(auto, rewriteAutoConf(text, settings), owner);
  await writeDurably(path.join(dataDir, standby ? 'standby.signal' : 'recovery.signal'), '', owner);
}

export async function writeDurably(file: string, content: string, owner?: { uid: number; gid: number }): Promise<void> {
  const tmp = `${file}.holdfast-tmp`;
  const fh = await fsp.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(content);
    if (owner && process.getuid?.() === 0) await fh.chown(owner.uid, owner.gid);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, file);
  await fsyncDir(path.dirname(file)); // the new name, not only the content
}
