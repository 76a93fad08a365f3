/**
 * Compression of object payloads. The mode byte is the first byte of every sealed plaintext:
 * 0 = stored as is, 1 = zstd frame. Incompressible payloads are stored as is.
 * The native zstd module is loaded on first use so commands that never compress don't pay for it;
 * with the optional native helper (native/zstd-sync.c, src/util/native.ts) built, payloads up to
 * 64 KiB are compressed synchronously and larger ones on the thread pool through it, so that
 * commands never load the binding at all.
 */
import { nativeHelper as loadHelper } from '../util/native.js';

export type Compression = { readonly algo: 'none' } | { readonly algo: 'zstd'; readonly level: number };

export const MODE_NONE = 0;
export const MODE_ZSTD = 1;

type Zstd = { compress(buf: Buffer, level?: number): Promise<Buffer>; decompress(buf: Buffer): Promise<Buffer> };
let zstdModule: Promise<Zstd> | undefined;

function zstd(): Promise<Zstd> {
  // The package's JS wrapper (1.2.2) drops the level argument; its native binding honours it.
  zstdModule ??= import('@mongodb-js/zstd/bindings.js').then((m: { default?: unknown }) => (m.default ?? m) as Zstd);
  return zstdModule;
}

export function parseCompression(value: string): Compression | undefined {
  if (value === 'none') return { algo: 'none' };
  const m = /^zstd(?::(-?\d+))?$/.exec(value);
  if (!m) return undefined;
  const level = m[1] === undefined ? 3 : Number(m[1]);
  if (level < -7 || level > 22) return undefined;
  return { algo: 'zstd', level };
}

export function formatCompression(c: Compression): string {
  return c.algo === 'none' ? 'none' : `zstd:${c.level}`;
}

type SyncCompress = (data: Buffer, level: number) => Buffer;
let syncCompress: SyncCompress | undefined;

type AsyncCompress = (data: Buffer, level: number) => Promise<Buffer>;

/**
 * Payloads up to this size are compressed and decompressed synchronously by the native helper
 * whenever it is available, in any thread: it takes microseconds, and a process that only handles
 * small objects (config, keys, locks, cluster records) then never loads the async binding, whose
 * loading costs ~10 ms (it asks for a full diagnostic report to tell glibc from musl).
 */
const SMALL = 64 << 10;

/**
 * Compress synchronously from now on in this thread, when the optional native helper
 * (native/zstd-sync.c) is available: for threads that may block (backup workers), where it
 * costs a fraction of the async binding's per-call overhead. Returns whether it is in use.
 */
export function useSyncCompression(): boolean {
  syncCompress = loadHelper()?.compress;
  return syncCompress !== undefined;
}

/** Payloads at least this large are compressed as several frames at once (async path). */
const FRAME_SPLIT = 4 << 20;

/**
 * Returns [mode, payload]. A zstd payload is one frame, or for large payloads compressed on the
 * thread pool several concatenated frames compressed in parallel (a 16 MiB WAL segment in ~2/3 of
 * the time); every zstd decoder reads concatenated frames as one stream.
 */
export async function compress(data: Buffer, c: Compression): Promise<[number, Buffer]> {
  if (c.algo === 'none' || data.length < 64) return [MODE_NONE, data];
  let z: Buffer;
  const sync = syncCompress ?? (data.length <= SMALL ? loadHelper()?.compress : undefined);
  if (sync) z = sync(data, c.level);
  else {
    const run = poolCompressor();
    if (data.length >= 2 * FRAME_SPLIT) {
      const parts: Array<Promise<Buffer>> = [];
      for (let off = 0; off < data.length; off += FRAME_SPLIT) parts.push(run(data.subarray(off, Math.min(data.length, off + FRAME_SPLIT)), c.level));
      z = Buffer.concat(await Promise.all(parts));
    } else z = await run(data, c.level);
  }
  return z.length < data.length ? [MODE_ZSTD, z] : [MODE_NONE, data];
}

/**
 * Compression on the thread pool: the native helper's (a reused context per pool thread) when it
 * was built, so that a command never loads the async binding for its WAL, index or trees; else the
 * binding's.
 */
function poolCompressor(): AsyncCompress {
  return loadHelper()?.compressAsync ?? (async (data, lvl) => (await zstd()).compress(data, lvl));
}

/**
 * Start writing `length` bytes of `fd` from `offset` to storage without waiting (sync_file_range
 * SYNC_FILE_RANGE_WRITE, through the native helper): a hint that lets a restore's final syncfs find
 * little left to write. False when it could not be given (no helper, not a regular file).
 */
export function startWriteback(fd: number, offset: number, length: number): boolean {
  return loadHelper()?.startWriteback?.(fd, offset, length) ?? false;
}

/** Whether the native helper (native/zstd-sync.c) compresses compressPieces' pieces, with reused contexts. */
export function nativeCompression(): boolean {
  return loadHelper()?.compressAsync !== undefined;
}

/** Pieces compressed at once by compressPieces (libuv's thread pool has 4 threads by default). */
const PIECES_AT_ONCE = 4;

/**
 * Fills `buf` from its start with the next bytes of a plaintext and returns how many: fewer than
 * `buf.length` only at its end.
 */
export type Fill = (buf: Buffer) => number;

/**
 * Compress a plaintext read piece by piece (`fill`, `pieceSize` bytes at a time) into one zstd
 * frame per piece, several pieces at once on the thread pool, yielding `[piece length, frame]` in
 * order. Concatenated, the frames are one zstd payload (every decoder reads concatenated frames as
 * one stream). Only the pieces in flight are in memory, in a few buffers reused piece after piece:
 * a 16 MiB WAL segment touches ~5 MiB instead of three copies of itself (fresh memory is a page
 * fault and a zeroing per 4 KiB, much of a short process's cost), and is compressed on every core.
 * 1 MiB frames compress WAL as well as one 16 MiB frame (measured: 0.5% smaller at level 3).
 */
export async function* compressPieces(fill: Fill, level: number, pieceSize: number): AsyncGenerator<[number, Buffer]> {
  const run = poolCompressor();
  const free: Buffer[] = [];
  const inFlight: Array<{ readonly buf: Buffer; readonly n: number; readonly frame: Promise<Buffer> }> = [];
  for (let end = false; !end; ) {
    const buf = free.pop() ?? Buffer.allocUnsafe(pieceSize);
    const n = fill(buf);
    end = n < pieceSize;
    if (n > 0) {
      const frame = run(buf.subarray(0, n), level);
      // Awaited in order below; a later piece failing while an earlier one is awaited is no
      // unhandled rejection (nor is one left behind when the consumer stops early).
      frame.catch(() => undefined);
      inFlight.push({ buf, n, frame });
    }
    while (inFlight.length >= PIECES_AT_ONCE || (end && inFlight.length > 0)) {
      const done = inFlight.shift()!;
      const frame = await done.frame;
      free.push(done.buf); // compressed: its buffer takes a later piece
      yield [done.n, frame];
    }
  }
}

/**
 * The decompressed size a zstd frame declares in its header (RFC 8878 §3.1.1.1), or undefined
 * when it does not declare one (or this is not a frame). Only the first frame is looked at.
 */
export function frameContentSize(z: Buffer): number | undefined {
  if (z.length < 6 || z.readUInt32LE(0) !== 0xfd2fb528) return undefined;
  const fhd = z[4]!;
  const singleSegment = (fhd >> 5) & 1;
  const fcsFlag = fhd >> 6;
  const didBytes = [0, 1, 2, 4][fhd & 3]!;
  const fcsBytes = fcsFlag === 0 ? singleSegment : 1 << fcsFlag;
  const at = 5 + (singleSegment ? 0 : 1) + didBytes;
  if (fcsBytes === 0 || z.length < at + fcsBytes) return undefined;
  switch (fcsBytes) {
    case 1:
      return z[at]!;
    case 2:
      return z.readUInt16LE(at) + 256;
    case 4:
      return z.readUInt32LE(at);
    default: {
      const v = z.readBigUInt64LE(at);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
    }
  }
}

/** A compressed payload that cannot be decoded: damaged, forged, or larger than allowed. */
export class DecompressError extends Error {
  override name = 'DecompressError';
}

/**
 * The most plaintext one object may decompress to, unless the caller says less. Nothing holdfast
 * writes comes near it: data chunks are at most 64 MiB, the largest WAL segment PostgreSQL
 * allows is 1 GiB, index and snapshot files and trees are far smaller in practice. Twice the
 * largest WAL segment leaves room for the zstd block bound (below), which legitimate payloads
 * exceed by a few percent at levels that split blocks (measured: up to 1.19 at levels 16 to 22).
 */
export const MAX_PLAINTEXT = 2 ** 31;

/** Largest regenerated size of one zstd block (RFC 8878 §3.1.1.2.4: Block_Maximum_Size). */
const BLOCK_SIZE_MAX = 128 << 10;
const ZSTD_MAGIC = 0xfd2fb528;

export interface FrameScan {
  /**
   * An upper bound of what the payload can decompress to: raw and RLE blocks regenerate exactly
   * their Block_Size, a compressed block at most Block_Maximum_Size, and a conforming decoder
   * (libzstd, which both bindings use) rejects a block that would exceed it.
   */
  readonly bound: number;
  /** The sum of the frames' declared content sizes, when every frame declares one. */
  readonly declared: number | undefined;
  readonly frames: number;
}

/**
 * Walk the frame and block headers of a zstd payload (one or more frames, RFC 8878) without
 * decoding anything: validates the structure (magic numbers, reserved bits, block types, every
 * block within the payload and within its frame's Block_Maximum_Size, no trailing bytes) and
 * bounds the decompressed size, so that no decoder is ever asked to produce more than a caller
 * allows. Linear in the number of blocks (each at least 3 bytes); allocates nothing.
 */
export function scanFrames(z: Buffer): FrameScan {
  if (z.length === 0) throw new DecompressError('empty zstd payload');
  let o = 0;
  let bound = 0;
  let declared: number | undefined = 0;
  let frames = 0;
  const need = (n: number, what: string): void => {
    if (o + n > z.length) throw new DecompressError(`zstd payload truncated: ${what} needs ${n} bytes at offset ${o}, payload has ${z.length}`);
  };
  while (o < z.length) {
    need(4, 'a frame magic number');
    const magic = z.readUInt32LE(o);
    o += 4;
    if ((magic & 0xfffffff0) === 0x184d2a50) {
      // Skippable frame: a length and that many bytes, no content.
      need(4, 'a skippable frame length');
      const len = z.readUInt32LE(o);
      o += 4;
      need(len, 'a skippable frame');
      o += len;
      continue;
    }
    if (magic !== ZSTD_MAGIC) throw new DecompressError(`not a zstd frame at offset ${o - 4} (magic 0x${magic.toString(16).padStart(8, '0')})`);
    frames++;
    need(1, 'a frame header');
    const fhd = z[o++]!;
    if (fhd & 0x08) throw new DecompressError(`zstd frame ${frames} sets a reserved header bit`);
    const singleSegment = (fhd >> 5) & 1;
    const fcsFlag = fhd >> 6;
    const didBytes = [0, 1, 2, 4][fhd & 3]!;
    const fcsBytes = fcsFlag === 0 ? singleSegment : 1 << fcsFlag;
    need(1 - singleSegment + didBytes + fcsBytes, 'a frame header');
    let window = 0;
    if (!singleSegment) {
      const wd = z[o++]!;
      const base = 2 ** (10 + (wd >> 3));
      window = base + (base / 8) * (wd & 7);
    }
    o += didBytes;
    let fcs: number | undefined;
    if (fcsBytes === 1) fcs = z[o]!;
    else if (fcsBytes === 2) fcs = z.readUInt16LE(o) + 256;
    else if (fcsBytes === 4) fcs = z.readUInt32LE(o);
    else if (fcsBytes === 8) fcs = z.readUInt32LE(o) + z.readUInt32LE(o + 4) * 2 ** 32; // inexact past 2^53: only compared with bounds far below
    o += fcsBytes;
    if (singleSegment) window = fcs!;
    const blockMax = Math.min(window, BLOCK_SIZE_MAX);
    let frameBound = 0;
    for (let last = 0; !last; ) {
      need(3, 'a block header');
      const h = z[o]! | (z[o + 1]! << 8) | (z[o + 2]! << 16);
      o += 3;
      last = h & 1;
      const type = (h >> 1) & 3;
      const size = h >>> 3;
      if (type === 3) throw new DecompressError(`zstd frame ${frames} has a block of the reserved type`);
      if (size > blockMax) throw new DecompressError(`zstd frame ${frames} has a block of ${size} bytes, more than its maximum ${blockMax}`);
      need(type === 1 ? 1 : size, 'a block');
      o += type === 1 ? 1 : size;
      frameBound += type === 2 ? blockMax : size;
    }
    if (fhd & 0x04) {
      need(4, 'a content checksum');
      o += 4;
    }
    if (fcs !== undefined && fcs > frameBound) throw new DecompressError(`zstd frame ${frames} declares ${fcs} bytes but its blocks hold at most ${frameBound}`);
    bound += frameBound;
    declared = fcs === undefined || declared === undefined ? undefined : declared + fcs;
  }
  if (frames === 0) throw new DecompressError('zstd payload holds no frame');
  return { bound, declared, frames };
}

/** Largest blob (size known from the index) decoded synchronously by the native helper, in any thread. */
const SYNC_MAX = 8 << 20;
/**
 * Largest payload whose frames declare their sizes (named objects, indexes, trees) decoded
 * synchronously: a 16 MiB WAL segment for archive-get takes ~15 ms on the main thread, where the
 * async binding first costs its loading and a thread-pool round trip.
 */
const SYNC_DECLARED_MAX = 32 << 20;

/**
 * Decompress a payload to at most `limit` bytes (`MAX_PLAINTEXT` unless the caller knows
 * better); with `rawLength` (blobs) to exactly that many. Every failure is a DecompressError:
 * an unknown mode, a damaged or forged payload, one that would decompress to more than allowed.
 *
 * Memory never follows a length read from the payload: the frame and block headers are walked
 * first (scanFrames), a declared or expected size the blocks cannot hold is refused before
 * anything is allocated, and a payload whose blocks could regenerate more than `limit` is refused
 * rather than decoded (a decompression bomb). With `rawLength` known (blobs), a payload of up to
 * 8 MiB is decoded synchronously by the native helper when it is available (no thread-pool round
 * trip per blob) into a buffer of exactly that size; so is any payload whose frames declare their
 * sizes, up to 32 MiB (indexes, trees, sealed files and named objects such as WAL segments: a
 * command that only reads those never loads the async binding).
 */
export async function decompress(mode: number | undefined, payload: Buffer, rawLength?: number, limit = MAX_PLAINTEXT): Promise<Buffer> {
  if (rawLength !== undefined && !(Number.isSafeInteger(rawLength) && rawLength >= 0)) throw new DecompressError(`invalid expected size ${rawLength}`);
  if (rawLength !== undefined && rawLength > limit) throw new DecompressError(`expected size ${rawLength} is more than the ${limit} bytes allowed`);
  if (mode === MODE_NONE) {
    if (payload.length > limit) throw new DecompressError(`payload of ${payload.length} bytes is more than the ${limit} bytes allowed`);
    return payload;
  }
  if (mode !== MODE_ZSTD) throw new DecompressError(mode === undefined ? 'no compression mode byte (empty plaintext)' : `unknown compression mode ${mode}`);
  const scan = scanFrames(payload);
  if (rawLength !== undefined && rawLength > scan.bound) throw new DecompressError(`expected size ${rawLength} is more than the payload's blocks can hold (${scan.bound})`);
  if (rawLength !== undefined && scan.declared !== undefined && scan.declared !== rawLength) throw new DecompressError(`frames declare ${scan.declared} bytes, ${rawLength} expected`);
  if (scan.declared !== undefined && scan.declared > limit) throw new DecompressError(`frames declare ${scan.declared} bytes, more than the ${limit} bytes allowed`);
  const sync = loadHelper()?.decompress;
  const exact = rawLength ?? scan.declared;
  let out: Buffer;
  if (sync && exact !== undefined && exact <= (rawLength !== undefined ? SYNC_MAX : SYNC_DECLARED_MAX)) {
    try {
      out = sync(payload, exact);
    } catch (err) {
      throw new DecompressError(`zstd: ${(err as Error).message}`, { cause: err });
    }
  } else {
    if (scan.bound > limit) throw new DecompressError(`payload could decompress to ${scan.bound} bytes, more than the ${limit} bytes allowed`);
    const binding = await zstd();
    try {
      out = await binding.decompress(payload);
    } catch (err) {
      throw new DecompressError(`zstd: ${(err as Error).message}`, { cause: err });
    }
  }
  if (out.length > limit || (rawLength !== undefined && out.length !== rawLength)) throw new DecompressError(`decompressed to ${out.length} bytes, ${rawLength ?? `at most ${limit}`} expected`);
  return out;
}
