/**
 * Local filesystem driver.
 *
 * Durability: `put` writes to a hidden temporary name in the destination directory, fsyncs the
 * file, renames it into place (or hard-links it for createOnly, which fails atomically with EEXIST)
 * and fsyncs the directory. Directories created on the way are fsynced into their parents. A
 * crash leaves at worst a `.tmp-*` file, which `list` never reports.
 */
import { constants as osConstants } from 'node:os';
import * as fsp from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { type Backend, type ByteRange, type Capabilities, type ObjectInfo, type ObjectWriter, type PutData, type PutOptions, RESERVED_PREFIX, StorageError, type StorageErrorKind, checkName, putParts, type DeleteOptions } from './backend.js';
import { systemCode } from '../errors/catalogue.js';
import { fsyncDir } from '../util/fsync.js';

const TMP_PREFIX = RESERVED_PREFIX;
/** Open handles kept for range reads. */
const HANDLES = 32;

export class LocalBackend implements Backend {
  readonly location: string;
  readonly capabilities: Capabilities = { conditionalCreate: true, maxConcurrency: 8, persistent: true };
  private readonly root: string;
  private readonly knownDirs = new Set<string>();
  /** Directories whose entry in their parent this process has fsynced (see ensureDir). */
  private readonly durableDirs = new Set<string>();

  constructor(root: string) {
    this.root = path.resolve(root);
    this.location = this.root;
  }

  private file(name: string, allowPrefix = false): string {
    checkName(this.location, name, allowPrefix);
    return path.join(this.root, ...name.split('/'));
  }

  private wrap(err: unknown, name: string, what: string): StorageError {
    if (err instanceof StorageError) return err;
    const code = systemCode(err);
    const errno = (err as { errno?: number }).errno;
    let kind: StorageErrorKind = 'io';
    // A directory is a prefix, not an object: EISDIR reads as "no such object".
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') kind = 'not-found';
    else if (code === 'EEXIST') kind = 'exists';
    else if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') kind = 'permission';
    const detail = errno === -osConstants.errno.ESTALE ? 'ESTALE (stale file handle)' : (code ?? String(err));
    return new StorageError(kind, this.location, name, `${what} ${name} in ${this.location}: ${detail}`, { cause: err });
  }

  /**
   * mkdir -p that makes each directory durable in its parent. A directory that already exists is
   * fsynced into its parent too, the first time this process uses it: whoever created it may have
   * died (or, in this process, may still be) between its mkdir and that fsync, and an object
   * stored in it would be lost with the directory after a power loss (found by the power-loss
   * harness, src/testing/powerloss.test.ts).
   */
  private async ensureDir(dir: string): Promise<void> {
    if (this.knownDirs.has(dir)) return;
    const missing: string[] = [];
    let cur = dir;
    for (let i = 0; i < 64; i++) {
      try {
        await fsp.stat(cur);
        break;
      } catch (err) {
        if (systemCode(err) !== 'ENOENT') throw err;
        missing.push(cur);
        const parent = path.dirname(cur);
        if (parent === cur) break;
        cur = parent;
      }
    }
    for (const d of missing.reverse()) {
      try {
        await fsp.mkdir(d);
      } catch (err) {
        if (systemCode(err) !== 'EEXIST') throw err;
      }
    }
    // Every directory from `dir` up to the root (itself included), each once per process: its entry in its parent.
    for (let d = dir, i = 0; (d === this.root || d.startsWith(this.root + path.sep)) && i < 64; d = path.dirname(d), i++) {
      if (this.durableDirs.has(d)) break;
      await fsyncDir(path.dirname(d));
      this.durableDirs.add(d);
    }
    this.knownDirs.add(dir);
  }

  async put(name: string, data: PutData, options: PutOptions = {}): Promise<void> {
    const dest = this.file(name);
    const dir = path.dirname(dest);
    const tmp = path.join(dir, `${TMP_PREFIX}${path.basename(dest)}-${randomBytes(6).toString('hex')}`);
    try {
      await this.ensureDir(dir);
      const fh = await fsp.open(tmp, 'wx', 0o600);
      try {
        await writeAllAt(fh, putParts(data), 0);
        if (options.durable !== false) await fh.sync();
      } finally {
        await fh.close();
      }
      await this.publish(tmp, name, options);
    } catch (err) {
      await fsp.unlink(tmp).catch(() => undefined);
      throw this.wrapWrite(err, name);
    }
  }

  private wrapWrite(err: unknown, name: string): StorageError {
    if (systemCode(err) === 'EEXIST') return new StorageError('exists', this.location, name, `${name} already exists in ${this.location}`, { cause: err });
    return this.wrap(err, name, 'cannot write');
  }

  /** Move an fsynced temporary file to `name` (rename, or link for createOnly) and fsync the directory. */
  private async publish(tmp: string, name: string, options: PutOptions): Promise<void> {
    const dest = this.file(name);
    this.forget(dest); // a replaced object must not be read through an old handle
    const dir = path.dirname(dest);
    await this.ensureDir(dir);
    if (options.createOnly) {
      try {
        await fsp.link(tmp, dest);
      } finally {
        await fsp.unlink(tmp).catch(() => undefined);
      }
    } else {
      await fsp.rename(tmp, dest);
    }
    if (options.durable !== false) await fsyncDir(dir);
  }

  async openWriter(): Promise<ObjectWriter> {
    const tmp = path.join(this.root, `${TMP_PREFIX}writer-${randomBytes(8).toString('hex')}`);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(tmp, 'wx', 0o600);
    } catch (err) {
      throw this.wrap(err, '(new object)', 'cannot write');
    }
    let pos = 0;
    let closed = false;
    const close = async (): Promise<void> => {
      if (!closed) {
        closed = true;
        await fh.close();
      }
    };
    return {
      write: async (parts) => {
        try {
          pos = await writeAllAt(fh, parts, pos);
        } catch (err) {
          throw this.wrap(err, '(new object)', 'cannot write');
        }
      },
      commit: async (name, options = {}) => {
        try {
          checkName(this.location, name);
          await fh.sync();
          await close();
          await this.publish(tmp, name, options);
        } catch (err) {
          await close().catch(() => undefined);
          await fsp.unlink(tmp).catch(() => undefined);
          throw this.wrapWrite(err, name);
        }
      },
      abort: async () => {
        await close().catch(() => undefined);
        await fsp.unlink(tmp).catch(() => undefined);
      },
    };
  }

  /**
   * Open handles for range reads (restore reads many blobs from the same packs). Objects are
   * immutable, so a cached handle always reads the right bytes; at most HANDLES are kept, and a
   * handle is closed only when no read is using it.
   */
  private readonly handles = new Map<string, { fh: Promise<fsp.FileHandle>; users: number }>();

  private async acquire(file: string): Promise<{ fh: fsp.FileHandle; release: () => void }> {
    let h = this.handles.get(file);
    if (!h) {
      h = { fh: fsp.open(file, 'r'), users: 0 };
      this.handles.set(file, h);
      h.fh.catch(() => this.handles.delete(file));
      if (this.handles.size > HANDLES) {
        for (const [k, v] of this.handles) {
          if (v.users === 0 && k !== file) {
            this.handles.delete(k);
            void v.fh.then((x) => x.close()).catch(() => undefined);
            break;
          }
        }
      }
    } else {
      // Most recently used last.
      this.handles.delete(file);
      this.handles.set(file, h);
    }
    h.users++;
    const entry = h;
    try {
      return { fh: await entry.fh, release: () => void entry.users-- };
    } catch (err) {
      entry.users--;
      throw err;
    }
  }

  /** Drop a cached handle (the object is being replaced or deleted); closed once unused. */
  private forget(file: string): void {
    const h = this.handles.get(file);
    if (!h) return;
    this.handles.delete(file);
    const closeWhenUnused = (): void => {
      if (h.users > 0) setTimeout(closeWhenUnused, 50).unref();
      else void h.fh.then((fh) => fh.close()).catch(() => undefined);
    };
    closeWhenUnused();
  }

  async get(name: string, range?: ByteRange): Promise<Buffer> {
    const file = this.file(name);
    try {
      if (!range) return await fsp.readFile(file);
      const { fh, release } = await this.acquire(file);
      try {
        // A range longer than the file (a forged length) must not become an allocation.
        if (range.length > 1 << 20 && range.offset + range.length > (await fh.stat()).size) {
          throw new StorageError('short-read', this.location, name, `${name} in ${this.location} is shorter than expected: wanted ${range.length} bytes at offset ${range.offset}`);
        }
        const buf = Buffer.allocUnsafe(range.length);
        let got = 0;
        while (got < range.length) {
          const { bytesRead } = await fh.read(buf, got, range.length - got, range.offset + got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        if (got < range.length || (range.length === 0 && range.offset > (await fh.stat()).size)) {
          throw new StorageError('short-read', this.location, name, `${name} in ${this.location} is shorter than expected: wanted ${range.length} bytes at offset ${range.offset}, got ${got}`);
        }
        return buf;
      } finally {
        release();
      }
    } catch (err) {
      throw this.wrap(err, name, 'cannot read');
    }
  }

  async stat(name: string): Promise<ObjectInfo> {
    try {
      const st = await fsp.stat(this.file(name));
      if (!st.isFile()) throw new StorageError('not-found', this.location, name, `${name} not found in ${this.location} (it is a directory)`);
      return { name, size: st.size };
    } catch (err) {
      throw this.wrap(err, name, 'cannot stat');
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    checkName(this.location, prefix, true);
    const base = prefix.slice(0, -1);
    const startDir = base === '' ? this.root : this.file(base);
    const stack: Array<{ dir: string; rel: string }> = [{ dir: startDir, rel: base }];
    while (stack.length > 0) {
      const { dir, rel } = stack.pop()!;
      let entries;
      try {
        entries = await fsp.readdir(dir, { withFileTypes: true });
      } catch (err) {
        const code = systemCode(err);
        if (code === 'ENOENT' || code === 'ENOTDIR') continue; // nothing below a missing prefix or an object
        throw this.wrap(err, rel, 'cannot list');
      }
      for (const ent of entries) {
        if (ent.name.startsWith(TMP_PREFIX)) continue;
        const childRel = rel === '' ? ent.name : `${rel}/${ent.name}`;
        if (ent.isDirectory()) {
          stack.push({ dir: path.join(dir, ent.name), rel: childRel });
        } else if (ent.isFile()) {
          let size: number;
          try {
            size = (await fsp.stat(path.join(dir, ent.name))).size;
          } catch (err) {
            if (systemCode(err) === 'ENOENT') continue;
            throw this.wrap(err, childRel, 'cannot stat');
          }
          yield { name: childRel, size };
        }
      }
    }
  }

  async delete(name: string, options: DeleteOptions = {}): Promise<void> {
    const file = this.file(name);
    this.forget(file);
    try {
      await fsp.unlink(file);
      if (options.durable !== false) await fsyncDir(path.dirname(file));
    } catch (err) {
      const code = systemCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return;
      throw this.wrap(err, name, 'cannot delete');
    }
  }

  async close(): Promise<void> {
    const open = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(open.map((h) => h.fh.then((fh) => fh.close()).catch(() => undefined)));
  }
}

/** Write `parts` back to back at `pos` with one writev where possible; returns the end position. */
async function writeAllAt(fh: fsp.FileHandle, parts: readonly Uint8Array[], pos: number): Promise<number> {
  let total = 0;
  for (const p of parts) total += p.byteLength;
  const { bytesWritten } = await fh.writev(parts as Uint8Array[], pos);
  if (bytesWritten === total) return pos + total;
  // Short writev (rare): write what is left part by part.
  let skip = bytesWritten;
  let at = pos + bytesWritten;
  for (const part of parts) {
    if (skip >= part.byteLength) {
      skip -= part.byteLength;
      continue;
    }
    let off = skip;
    skip = 0;
    while (off < part.byteLength) {
      const w = await fh.write(part, off, part.byteLength - off, at);
      off += w.bytesWritten;
      at += w.bytesWritten;
    }
  }
  return at;
}

