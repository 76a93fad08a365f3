/**
 * Backup worker thread: reads files, splits them into chunks, hashes them, and compresses and
 * seals the chunks the repository does not have yet. The main thread keeps the index, the packs
 * and the tree; see reader-pool.ts for the protocol.
 *
 * Per file: for each batch of chunks (at most one window's worth) the worker sends their ids,
 * waits for the main thread to say which are new (it claims them), seals those, sends them, and
 * waits for the acknowledgement that they are queued in a pack (backpressure) before it reuses
 * the window. Chunks are views into the window and are never copied before sealing.
 */
import { parentPort } from 'node:worker_threads';
import { closeSync, openSync, readSync } from 'node:fs';
import { sha256 } from '../repository/crypto.js';
import { type Compression, useSyncCompression } from '../repository/compress.js';
import { sealBlobOwned } from '../repository/seal-blob.js';
import { Chunker, type ChunkerSpec, chunkStream } from './chunker.js';
import { type CorruptPage, type FileMode, cutterFor, inspectChunk } from './file-mode.js';
import type { FileRange, MainToWorker, WorkerToMain } from './reader-pool.js';

const port = parentPort;
if (!port) throw new Error('chunk-worker must run in a worker thread');

let key: Buffer | undefined;
let chunker: Chunker | undefined;
let compression: Compression = { algo: 'zstd', level: 3 };
/** Reusable read windows, by size. */
const windows = new Map<number, Buffer[]>();
/** Replies the main thread owes, by job: resolves with `need` flags or on `ack`. */
const waiting = new Map<number, (msg: MainToWorker) => void>();

function send(msg: WorkerToMain, transfer: ArrayBuffer[] = []): void {
  port!.postMessage(msg, transfer);
}

function reply(job: number): Promise<MainToWorker> {
  return new Promise((resolve) => waiting.set(job, resolve));
}

/** Seal into one exactly-sized, transferable buffer. */
function sealTransferable(id: Buffer, chunk: Buffer): Promise<Uint8Array> {
  return sealBlobOwned(key!, 'data', id, chunk, compression);
}

/**
 * A file below SMALL bytes is read whole, sealed without asking which chunks are new, and sent in
 * one message with its content list: one message instead of five, no round trip. Sealing a chunk
 * the repository already has costs a little CPU, but small files are read only when they are new
 * or changed, so their chunks are rarely known.
 */
const SMALL = 1 << 20;

function processSmallFile(job: number, path: string, size: number, mode: FileMode | undefined): Promise<void> {
  const fd = openSync(path, 'r');
  let data: Buffer;
  try {
    const buf = Buffer.allocUnsafe(size + 1);
    let got = 0;
    for (;;) {
      const n = readSync(fd, buf, got, buf.length - got, got);
      if (n === 0) break;
      got += n;
      if (got === buf.length) break; // grew while we read: take what fits, as a window would
    }
    data = buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
  return (async () => {
    const content: string[] = [];
    const blobs: Array<{ id: string; data: Uint8Array; rawLength: number }> = [];
    const transfer: ArrayBuffer[] = [];
    const pieces: Array<{ id: Buffer; chunk: Buffer }> = [];
    const corrupt: CorruptPage[] = [];
    const c = cutterFor(chunker!, mode);
    for (let off = 0; off < data.length; ) {
      const n = c.cut(data.subarray(off), data.length - off);
      const chunk = data.subarray(off, off + n);
      inspectChunk(mode, chunk, off, corrupt);
      pieces.push({ id: sha256(chunk), chunk });
      off += n;
    }
    const outs = await Promise.all(pieces.map((p) => sealTransferable(p.id, p.chunk)));
    for (const [i, p] of pieces.entries()) {
      const hex = p.id.toString('hex');
      content.push(hex);
      blobs.push({ id: hex, data: outs[i]!, rawLength: p.chunk.length });
      transfer.push(outs[i]!.buffer as ArrayBuffer);
    }
    send({ t: 'whole', job, content, size: data.length, blobs, ...(corrupt.length ? { corrupt } : {}) }, transfer);
  })();
}

/**
 * `range` (fixed-size chunking only): read the bytes from `range.offset`, at most `range.length`
 * of them (to the end of the file without a length), as the part of a larger file the main thread
 * split across workers; offsets are multiples of the chunk size, so the cuts are the file's own.
 */
async function processFile(job: number, path: string, size: number, mode: FileMode | undefined, range?: FileRange): Promise<void> {
  if (!key || !chunker) throw new Error('worker not initialised');
  if (range && !(mode?.fixedChunk && range.offset % mode.fixedChunk === 0 && (range.length === undefined || range.length % mode.fixedChunk === 0))) {
    throw new Error(`protocol: a file range needs fixed chunks and chunk-aligned bounds (${path} at ${range.offset})`);
  }
  if (size < SMALL && !range) return processSmallFile(job, path, size, mode);
  const c = cutterFor(chunker, mode);
  const windowSize = c.windowSize(Infinity);
  let pool = windows.get(windowSize);
  if (!pool) windows.set(windowSize, (pool = []));
  const window = pool.pop() ?? Buffer.allocUnsafe(windowSize);
  const corrupt: CorruptPage[] = [];
  // Synchronous I/O: this thread does nothing else, and per call it costs ~6 µs against ~70 µs
  // for the promise API (which dominated backups of many small files).
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const file = fd;
    const base = range?.offset ?? 0;
    const end = range?.length === undefined ? Infinity : range.length;
    const read = (buf: Buffer, off: number, len: number, at: number): number => (at >= end ? 0 : readSync(file, buf, off, Math.min(len, end - at), base + at));
    const content: string[] = [];
    let total = 0;
    let batch: Array<{ id: Buffer; hex: string; chunk: Buffer }> = [];
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return;
      const current = batch;
      batch = [];
      const answer = reply(job);
      send({ t: 'ids', job, ids: current.map((b) => b.hex), lengths: current.map((b) => b.chunk.length) });
      const need = await answer;
      if (need.t !== 'need') throw new Error(`protocol: expected need, got ${need.t}`);
      // Seal the batch's new chunks concurrently: compression runs on the thread pool, so one
      // chunk at a time would leave this thread idle while a single pool thread works.
      const todo = current.filter((_, i) => need.need[i]);
      const outs = await Promise.all(todo.map((b) => sealTransferable(b.id, b.chunk)));
      const sealed = todo.map((b, i) => ({ id: b.hex, data: outs[i]!, rawLength: b.chunk.length }));
      const transfer = outs.map((o) => o.buffer as ArrayBuffer);
      if (sealed.length > 0) {
        const ack = reply(job);
        send({ t: 'sealed', job, blobs: sealed }, transfer);
        const a = await ack;
        if (a.t !== 'ack') throw new Error(`protocol: expected ack, got ${a.t}`);
        if (a.abort) throw new Error('aborted by the main thread');
      }
    };
    for await (const chunk of chunkStream(c, read, window, flush)) {
      const id = sha256(chunk);
      const hex = id.toString('hex');
      content.push(hex);
      inspectChunk(mode, chunk, base + total, corrupt);
      total += chunk.length;
      batch.push({ id, hex, chunk });
    }
    await flush();
    send({ t: 'done', job, content, size: total, ...(corrupt.length ? { corrupt } : {}) });
  } finally {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        // nothing to do
      }
    }
    pool.push(window);
  }
}

port.on('message', (msg: MainToWorker) => {
  switch (msg.t) {
    case 'init':
      useSyncCompression(); // this thread may block; falls back to the async binding
      key = Buffer.from(msg.key);
      chunker = new Chunker(msg.chunker as ChunkerSpec);
      compression = msg.compression;
      return;
    case 'file':
      processFile(msg.job, msg.path, msg.size, msg.mode, msg.range).catch((err: unknown) => {
        waiting.delete(msg.job);
        const e = err as { code?: string; message?: string };
        send({ t: 'fail', job: msg.job, code: e.code ?? '', message: e.message ?? String(err) });
      });
      return;
    case 'need':
    case 'ack': {
      const resolve = waiting.get(msg.job);
      waiting.delete(msg.job);
      resolve?.(msg);
      return;
    }
  }
});
