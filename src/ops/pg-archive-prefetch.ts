/**
 * archive-get with prefetch (`pg archive-get --prefetch N`, docs/design.md §12): PostgreSQL's
 * recovery asks restore_command for one WAL segment after another, and a call that opens the
 * repository for each costs a process start, the key and a read of the object every time. With
 * prefetch, a call that has to open the repository also fetches up to N following segments of the
 * same timeline into a local queue; the next calls take their segment from there without opening
 * the repository (and the native front, dist/holdfast-push, without starting Node).
 *
 * The queue is `<spool dir of repository and cluster>/prefetch/`, a spool of its own (a private
 * directory of the user, §14): the segments under their own names (written to a temporary name and
 * renamed, not fsynced), each with a `<segment>.ok` record holding its fingerprint (GMAC under the
 * queue's `key`, as the async spool's records), and `repository`: the instance (SHA-256 of the
 * stored config object) the segments came from. Another instance at the location empties the
 * queue. Archived objects are written once and never change, so a queued segment is what the
 * archive holds. A queued segment is checked when taken: its size must be the segment size its
 * long page header declares, that header must be for the segment its name says, and its content
 * must have the recorded fingerprint, so a copy torn by a power loss (which could read as zeros of
 * the right size: PostgreSQL would take them for the end of WAL and end recovery early) or changed
 * since is dropped and fetched again. Taken, it is renamed to the destination (no copy), or copied
 * when the destination is on another file system.
 *
 * Bounds: at most N segments are queued, those after the one asked for, on its timeline; a call
 * removes the others. A segment the archive does not have stops the fetch (it may be archived
 * later: absence is never queued).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fsError } from '../errors/catalogue.js';
import { checkSegment } from '../wal/header.js';
import { nextSegmentName, parseWalName } from '../wal/names.js';
import { Spool, repositoryInstance } from './pg-archive-spool.js';
import type { StorageSettings } from '../storage/settings.js';

/** Which queue entries a call keeps: segments after `file` on its timeline, at most `n`. */
export function wantedAfter(file: string, n: number, segSize: number): string[] {
  const out: string[] = [];
  let name = file;
  for (let i = 0; i < n; i++) {
    try {
      name = nextSegmentName(name, segSize);
    } catch {
      break; // the last possible segment
    }
    out.push(name);
  }
  return out;
}

/** Write `data` to `dest` through a temporary file beside it, fsynced and renamed. */
export function writeFileDurably(dest: string, data: Buffer, what: string): void {
  const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.holdfast-${randomBytes(4).toString('hex')}`);
  try {
    const fd = fs.openSync(tmp, 'wx', 0o600);
    try {
      for (let off = 0; off < data.length; ) off += fs.writeSync(fd, data, off, data.length - off);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, dest);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw fsError(err, what, dest, 'TARGET_IO');
  }
}

export class PrefetchQueue {
  private readonly spool: Spool;

  /** `dir`: the queue directory (created 0700; PERMISSION_DENIED when it is not private). */
  constructor(readonly dir: string) {
    this.spool = new Spool(dir).open();
  }

  /** Bind the queue to the repository instance at `location`; another instance's segments are removed. */
  async bind(location: string, settings?: StorageSettings): Promise<string> {
    const instance = await repositoryInstance(location, settings);
    if (this.spool.binding()?.instance !== instance) {
      for (const name of this.segments()) fs.rmSync(this.spool.path(name), { force: true });
      this.spool.bind(instance); // removes the records
    }
    return instance;
  }

  /** The queued segment names. */
  segments(): string[] {
    return this.spool.names().filter((n) => parseWalName(n)?.kind === 'segment');
  }

  /**
   * Move the queued copy of `file` to `dest` when it checks out (size and header for its name, the
   * recorded fingerprint): renamed, or on another file system copied durably and removed. Its
   * segment size, or undefined when it is not queued; a copy that does not check out is removed.
   */
  take(file: string, dest: string): number | undefined {
    if (parseWalName(file)?.kind !== 'segment') return undefined;
    const p = this.spool.path(file);
    let segSize: number;
    try {
      const fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      try {
        const head = Buffer.alloc(8192);
        const n = fs.readSync(fd, head, 0, head.length, 0);
        segSize = checkSegment(head.subarray(0, n), { segmentName: file, fileSize: fs.fstatSync(fd).size }).segSize;
      } finally {
        fs.closeSync(fd);
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.drop(file);
      return undefined;
    }
    const rec = this.spool.readRecord(file);
    let whole = false;
    try {
      whole = rec?.kind === 'ok' && this.spool.matches(file, p, rec.fingerprint);
    } catch {
      // unreadable: dropped below
    }
    if (!whole) {
      this.drop(file);
      return undefined;
    }
    this.spool.remove(file);
    try {
      fs.renameSync(p, dest);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw fsError(err, 'write', dest, 'TARGET_IO');
      writeFileDurably(dest, fs.readFileSync(p), 'write');
      fs.rmSync(p, { force: true });
    }
    return segSize;
  }

  /** Remove `file` and every queued segment that is not in `keep`. */
  prune(file: string, keep: readonly string[]): void {
    const wanted = new Set(keep);
    for (const name of this.segments()) if (name === file || !wanted.has(name)) this.drop(name);
  }

  private drop(file: string): void {
    this.spool.remove(file);
    fs.rmSync(this.spool.path(file), { force: true });
  }

  /**
   * Queue `data` as `file`: its fingerprint record first (a record without its file is harmless),
   * then the file (temporary name, renamed; not fsynced: the fingerprint tells a torn one).
   */
  put(file: string, data: Buffer): void {
    const f = this.spool.fingerprinter(file);
    f.begin();
    f.update(data);
    this.spool.writeOk(file, f.value());
    this.spool.writeAtomic(file, data);
  }
}
