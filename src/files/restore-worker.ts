/**
 * Restore worker thread: writes files (or ranges of large files) from a local repository's pack
 * files. A file's blobs that lie close together in a pack are read with one positional read, then
 * authenticated and decrypted, decompressed and checked against their ids (SHA-256) with the
 * checks and errors of Repository.openBlob, and written at their positions; all-zero chunks are
 * skipped (holes). With the native helper (open-blob.ts's BlobOpener), up to 16 blobs of a read go
 * through one call that writes each as soon as it is decoded and then checks all their ids
 * together; a blob that fails is opened again alone, which throws its INTEGRITY error, so a file
 * holding a bad blob's bytes is never reported restored. Without it, one blob at a time, checked
 * before it is written. When the restore is made durable by one syncfs of a local file system,
 * the page-aligned blobs of a large file are written with O_DIRECT (openDirect): they must reach
 * the disk anyway, and this skips copying them into the page cache, which was the largest part of
 * the restore's kernel time. The native helper submits those writes asynchronously (Linux AIO)
 * and decodes on meanwhile; writeBlobs waits for all of them (finishWrites) before the file or
 * range counts as written and before a descriptor is closed.
 * Synchronous I/O: this thread does nothing else, and a sync call costs a few microseconds
 * against ~70 µs of event-loop time for the promise API. See restore-pool.ts for the protocol.
 */
import { parentPort } from 'node:worker_threads';
import { constants, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { HoldfastError, fsError, systemCode } from '../errors/catalogue.js';
import { startWriteback } from '../repository/compress.js';
import { BlobOpener } from '../repository/open-blob.js';
import { packName } from '../repository/pack.js';
import { type BlobRef, type MainToWorker, type Outcome, type WorkItem, type WorkerToMain, CANCELLED, closeQuietly, createTargetFile, finishAndClose, finishTargetFile, sameContent, serializeError } from './restore-pool.js';

const port = parentPort;
if (!port) throw new Error('restore-worker must run in a worker thread');

let opener: BlobOpener | undefined;
let root = '';
let location = '';
/** Set by the main thread when the restore stops: what is not written yet is cancelled. */
let stop: Int32Array | undefined;
/** fsync each file before reporting it (RestoreOptions.sync). */
let sync = true;
/** Start the writeback of what is written as it goes (the restore is to be durable). */
let writeback = false;
/** Writeback is started for every this many bytes written to a file, and for the rest at its end. */
const WRITEBACK_STEP = 8 << 20;
/**
 * Write a file's page-aligned blobs with O_DIRECT (RestoreOptions.directIo): cleared for the rest
 * of the restore when the file system refuses it.
 */
let direct = false;
/** Files (or ranges) of at least this many bytes are written with O_DIRECT when `direct` is on. */
const DIRECT_MIN = 1 << 20;

/** Open pack files, least recently used first. */
const PACK_FDS = 16;
const packFds = new Map<string, number>();
/** Ids of blobs found to be all zeros: later copies are holes without reading them again. */
const zeroIds = new Set<string>();
/**
 * A file's blobs that lie close together in one pack, in order, are read together, up to this many
 * bytes; gaps of up to READ_GAP bytes between them (other files' blobs) are read and skipped. Two
 * backup workers append their pieces (a few chunks each) to a pack in turns, so a file's chunks
 * alternate with another file's; reading across those gaps gives openMany enough blobs at once
 * to fill its SHA-256 lanes, and costs fewer reads.
 */
const READ_MAX = 4 << 20;
const READ_GAP = 256 << 10;

function packFd(pack: string, blob: string): number {
  let fd = packFds.get(pack);
  if (fd !== undefined) {
    packFds.delete(pack);
    packFds.set(pack, fd);
    return fd;
  }
  const name = packName(pack);
  try {
    fd = openSync(path.join(root, ...name.split('/')), 'r');
  } catch (err) {
    throw storageError(err, name, blob, 'cannot read');
  }
  packFds.set(pack, fd);
  if (packFds.size > PACK_FDS) {
    const [oldest, old] = packFds.entries().next().value as [string, number];
    packFds.delete(oldest);
    closeQuietly(old);
  }
  return fd;
}

/** The catalogue error the repository reports for the same storage failure (storageToHoldfast). */
function storageError(err: unknown, name: string, blob: string, what: string): HoldfastError {
  const code = systemCode(err);
  const data = { object: name, blob };
  if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return new HoldfastError('OBJECT_MISSING', `${name} is missing from ${location}`, data);
  if (code === 'EACCES' || code === 'EPERM') return new HoldfastError('PERMISSION_DENIED', `permission denied: ${what} ${name} in ${location}: ${code}`, data);
  return new HoldfastError('STORAGE_IO', `${what} ${name} in ${location}: ${code ?? String(err)}`, data);
}

/** Reused for every read: its blobs are opened and written before the next read. */
let readBuf = Buffer.allocUnsafe(READ_MAX);

/**
 * Read `length` bytes at `offset` of a pack into the shared read buffer, from its start (valid
 * until the next call); a short read is a truncated pack.
 */
function readPack(pack: string, blob: string, offset: number, length: number): Buffer {
  const fd = packFd(pack, blob);
  if (readBuf.length < length) readBuf = Buffer.allocUnsafe(length);
  const buf = readBuf;
  let got = 0;
  try {
    while (got < length) {
      const n = readSync(fd, buf, got, length - got, offset + got);
      if (n === 0) break;
      got += n;
    }
  } catch (err) {
    throw storageError(err, packName(pack), blob, 'cannot read');
  }
  if (got < length) {
    const name = packName(pack);
    throw new HoldfastError('INTEGRITY', `${name} is truncated: ${name} in ${location} is shorter than expected: wanted ${length} bytes at offset ${offset}, got ${got}`, { object: name, blob });
  }
  return buf;
}

/** Write data[0, length) at `pos`. */
function writeAll(fd: number, dest: string, data: Buffer, length: number, pos: number): void {
  try {
    let off = 0;
    while (off < length) off += writeSync(fd, data, off, length - off, pos + off);
  } catch (err) {
    throw fsError(err, 'write', dest, 'TARGET_IO');
  }
}

/**
 * The file open as `fd`, opened again with O_DIRECT for writing, or -1 when direct writes are off
 * or it cannot be (then everything goes through `fd`). Through /proc/self/fd: the same inode, not
 * the path again. A file system that refuses O_DIRECT (EINVAL) turns direct writes off.
 */
function openDirect(fd: number, bytes: number): number {
  if (!direct || opener!.directFailed || bytes < DIRECT_MIN) return -1;
  try {
    return openSync(`/proc/self/fd/${fd}`, constants.O_WRONLY | constants.O_DIRECT);
  } catch (err) {
    if (systemCode(err) === 'EINVAL' || systemCode(err) === 'ENOENT') direct = false;
    return -1;
  }
}

/** Where writeBlobs' last write ended (its start position if it wrote nothing). */
let writtenTo = 0;

/**
 * Write `blobs` back to back from `pos`; returns the end position. `whole`: they are the whole
 * file, which this thread created (not a range of a file another thread sized).
 */
async function writeBlobs(fd: number, dest: string, pos: number, blobs: readonly BlobRef[], whole: boolean): Promise<number> {
  let bytes = 0;
  for (const b of blobs) bytes += b.rawLength;
  const o = opener!;
  const dfd = o.canOpenMany ? openDirect(fd, bytes) : -1;
  if (dfd < 0) return writeBlobsTo(fd, dfd, dest, pos, blobs);
  if (whole) {
    // A direct write that extends the file waits for the device even when submitted
    // asynchronously (ext4, XFS); one within the file's size does not.
    try {
      ftruncateSync(fd, pos + bytes);
    } catch (err) {
      closeQuietly(dfd);
      throw fsError(err, 'write', dest, 'TARGET_IO');
    }
  }
  let end: number;
  try {
    end = await writeBlobsTo(fd, dfd, dest, pos, blobs);
  } catch (err) {
    try {
      o.finishWrites();
    } catch {
      // the first error is the one reported
    }
    closeQuietly(dfd);
    throw err;
  }
  // Every write in flight has completed before the file (or range) counts as written and before
  // either descriptor is closed.
  try {
    o.finishWrites();
  } catch (err) {
    throw fsError(err, 'write', dest, 'TARGET_IO');
  } finally {
    closeQuietly(dfd);
  }
  return end;
}

async function writeBlobsTo(fd: number, dfd: number, dest: string, pos: number, blobs: readonly BlobRef[]): Promise<number> {
  writtenTo = pos;
  let kicked = pos;
  const kick = (): void => {
    if (writeback && writtenTo > kicked) startWriteback(fd, kicked, writtenTo - kicked);
    kicked = writtenTo;
  };
  /** Data was written up to `end`. */
  const written = (end: number): void => {
    writtenTo = end;
    if (writtenTo - kicked >= WRITEBACK_STEP) kick();
  };
  for (let i = 0; i < blobs.length; ) {
    const first = blobs[i]!;
    if (zeroIds.has(first.id)) {
      pos += first.rawLength;
      i++;
      continue;
    }
    // Following blobs of the same pack, in order and close together (a file's chunks usually
    // are): one read for all of them.
    let j = i + 1;
    let end = first.offset + first.length;
    while (j < blobs.length) {
      const b = blobs[j]!;
      if (b.pack !== first.pack || b.offset < end || b.offset - end > READ_GAP || b.offset + b.length - first.offset > READ_MAX || zeroIds.has(b.id)) break;
      end = b.offset + b.length;
      j++;
    }
    checkStop();
    const sealed = readPack(first.pack, first.id, first.offset, end - first.offset);
    const where = packName(first.pack);
    const o = opener!;
    while (i < j) {
      // As many as the opener takes at once, written by it as they are decoded, their ids
      // checked together; the rest, and a blob it did not open, one at a time.
      let k: number;
      try {
        k = o.canOpenMany ? o.openMany('data', blobs, i, j, sealed, first.offset, fd, pos, dfd) : 0;
      } catch (err) {
        throw fsError(err, 'write', dest, 'TARGET_IO');
      }
      if (k > 0) {
        for (let t = 0; t < k; t++) {
          const b = blobs[i + t]!;
          if (o.zeros[t]) {
            if (zeroIds.size < 1024) zeroIds.add(b.id);
          } else {
            written(pos + b.rawLength);
          }
          pos += b.rawLength;
        }
        i += k;
        continue;
      }
      const b = blobs[i]!;
      const opening = o.open('data', b.id, b.rawLength, sealed, b.offset - first.offset, b.length, where);
      if (opening) await opening;
      if (o.zero) {
        if (zeroIds.size < 1024) zeroIds.add(b.id);
      } else {
        writeAll(fd, dest, o.data, o.length, pos);
        written(pos + o.length);
      }
      pos += o.length;
      i++;
    }
  }
  kick();
  return pos;
}

function checkStop(): void {
  if (stop && Atomics.load(stop, 0) !== 0) throw new Error(CANCELLED);
}

async function doItem(item: WorkItem): Promise<Outcome> {
  checkStop();
  switch (item.t) {
    case 'range':
      // The main thread created the file, and finishes and closes it when every range is in.
      await writeBlobs(item.fd, item.dest, item.pos, item.blobs, false);
      return 'written';
    case 'check':
      return sameContent(item.dest, item.size, item.pos, item.blobs, false) ? 'same' : 'differs';
    case 'file':
      break;
  }
  if (item.keep) {
    let size = 0;
    for (const b of item.blobs) size += b.rawLength;
    const kept = sameContent(item.dest, size, 0, item.blobs, true);
    if (typeof kept === 'number') {
      try {
        finishTargetFile(kept, undefined, item.meta, item.dest, sync);
      } finally {
        closeQuietly(kept);
      }
      return 'kept';
    }
  }
  const fd = createTargetFile(item.dest, item.force);
  let size: number;
  try {
    size = await writeBlobs(fd, item.dest, 0, item.blobs, true);
  } catch (err) {
    closeQuietly(fd);
    throw err;
  }
  // A new file is as long as its last write: sized only when it ends in a hole (one syscall and
  // one inode update fewer per file).
  finishAndClose(fd, writtenTo === size ? undefined : size, item.meta, item.dest, sync);
  return 'written';
}

const work: Array<Extract<MainToWorker, { t: 'work' }>> = [];
let running = false;

async function run(): Promise<void> {
  running = true;
  try {
    for (let next = work.shift(); next; next = work.shift()) {
      const results: WorkerToMain['results'] = [];
      for (const item of next.items) {
        try {
          results.push(await doItem(item));
        } catch (err) {
          results.push(serializeError(err));
        }
      }
      port!.postMessage({ t: 'results', batch: next.batch, results } satisfies WorkerToMain);
    }
  } finally {
    running = false;
  }
}

port.on('message', (msg: MainToWorker) => {
  switch (msg.t) {
    case 'init':
      opener = new BlobOpener(Buffer.from(msg.key));
      root = msg.root;
      location = msg.location;
      stop = new Int32Array(msg.stop);
      sync = msg.sync;
      writeback = msg.writeback;
      direct = msg.direct && constants.O_DIRECT !== undefined;
      return;
    case 'work':
      work.push(msg);
      if (!running) void run();
      return;
  }
});
