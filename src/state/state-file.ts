/**
 * Small local state files that several holdfast processes share (storage status, …): each file
 * carries its own timestamp and checksum, is replaced atomically, and keeps its previous version.
 *
 * Format: one line `holdfast-state 2 <written: ms since the epoch> <SHA-256 hex of "<written>\n<JSON>">`,
 * then the JSON (the checksum covers the time too, so a damaged time is not believed). Files of
 * version 1 (checksum over the JSON only) read as damaged and are replaced by the next write. Writing: a temporary file in the same directory (`.<name>.<random>`), fsynced;
 * the current file is renamed to `<name>.prev`; the temporary file is renamed to `<name>`; the
 * directory is fsynced. A crash between the renames leaves only `<name>.prev`, which readers use.
 *
 * Reading: a missing file is normal (`undefined`, no message). A torn, corrupt or unparsable file
 * falls back to `<name>.prev`; the problem is returned so the caller can report it once (at
 * debug level) and write a fresh file. Freshness is judged by callers from `written`, the time
 * stored in the file, never from file times or from when the process started.
 *
 * Concurrent writers: the last rename wins; an update made between another process's read and
 * write is lost. Callers keep state for which that is harmless (a status probed again).
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const MAGIC = 'holdfast-state 2';

export interface StateRead<T> {
  readonly value: T;
  /** When the file was written (ms since the epoch), from the file itself. */
  readonly written: number;
  /** 'previous': the current file was damaged or missing and `<name>.prev` was used. */
  readonly from: 'current' | 'previous';
}

export interface StateReadResult<T> {
  readonly state: StateRead<T> | undefined;
  /** What was wrong with the current file (corrupt, unreadable), when something was. */
  readonly problem?: string | undefined;
}

function parse<T>(text: string, validate: (v: unknown) => v is T): { value: T; written: number } | string {
  const nl = text.indexOf('\n');
  if (nl < 0) return 'no header line';
  const m = /^holdfast-state 2 (\d{1,16}) ([0-9a-f]{64})$/.exec(text.slice(0, nl));
  if (!m) return 'bad header line';
  const json = text.slice(nl + 1);
  if (checksum(Number(m[1]), json) !== m[2]) return 'checksum mismatch (torn or corrupt)';
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch {
    return 'not JSON';
  }
  if (!validate(v)) return 'unexpected content';
  return { value: v, written: Number(m[1]) };
}

function checksum(written: number, json: string): string {
  return createHash('sha256').update(`${written}\n${json}`).digest('hex');
}

function readText(file: string): string | undefined | { error: string } {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return { error: (err as Error).message };
  }
}

export function readStateFile<T>(file: string, validate: (v: unknown) => v is T): StateReadResult<T> {
  const current = readText(file);
  let problem: string | undefined;
  if (typeof current === 'string') {
    const r = parse(current, validate);
    if (typeof r !== 'string') return { state: { ...r, from: 'current' } };
    problem = `${file}: ${r}`;
  } else if (current !== undefined) problem = `${file}: ${current.error}`;
  const prev = readText(`${file}.prev`);
  if (typeof prev === 'string') {
    const r = parse(prev, validate);
    if (typeof r !== 'string') return { state: { ...r, from: 'previous' }, problem };
  }
  return { state: undefined, problem };
}

/** Replace the file atomically (see the module comment), creating its directory (0700) if needed. */
export function writeStateFile(file: string, value: unknown, now: number = Date.now()): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const json = JSON.stringify(value);
  const text = `${MAGIC} ${now} ${checksum(now, json)}\n${json}`;
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}`);
  const fd = fs.openSync(tmp, 'wx', 0o600);
  try {
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    try {
      fs.renameSync(file, `${file}.prev`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  const dfd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}
