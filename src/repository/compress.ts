/**
 * Compression of object payloads. The mode byte is the first byte of every sealed plaintext:
 * 0 = stored as is, 1 = zstd frame. Incompressible payloads are stored as is.
 * The native zstd module is loaded on first use so commands that never compress don't pay for it;
 * payloads up to 64 KiB go through the optional native helper (native/zstd-sync.c) when it was
 * built, so that short-lived commands handling only small objects never load it at all.
 */
import { createRequire } from 'node:module';
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

/** The native helper's functions, loaded once (null: not built here). */
let helper: { compress?: SyncCompress; decompress?: SyncDecompress } | null | undefined;

function loadHelper(): { compress?: SyncCompress; decompress?: SyncDecompress } | undefined {
  if (helper === undefined) {
    helper = null;
    const require = createRequire(import.meta.url);
    for (const candidate of ['./zstd-sync.node', '../zstd-sync.node']) {
      try {
        helper = require(candidate) as { compress?: SyncCompress; decompress?: SyncDecompress };
        break;
      } catch {
        // try the next location
      }
    }
  }
  return helper ?? undefined;
}

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
  else if (data.length >= 2 * FRAME_SPLIT) {
    const binding = await zstd();
    const parts: Array<Promise<Buffer>> = [];
    for (let off = 0; off < data.length; off += FRAME_SPLIT) parts.push(binding.compress(data.subarray(off, Math.min(data.length, off + FRAME_SPLIT)), c.level));
    z = Buffer.concat(await Promise.all(parts));
  } else z = await (await zstd()).compress(data, c.level);
  return z.length < data.length ? [MODE_ZSTD, z] : [MODE_NONE, data];
}

type SyncDecompress = (data: Buffer, size: number) => Buffer;

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

/**
 * Decompress a payload. With `rawLength` known (blobs), a payload of up to 8 MiB is decoded
 * synchronously by the native helper when it is available (no thread-pool round trip per blob);
 * so is a small one whose single frame declares its size (sealed files and named objects). A
 * payload that is not exactly that one frame fails the size check and takes the async path.
 */
export async function decompress(mode: number, payload: Buffer, rawLength?: number): Promise<Buffer> {
  if (mode === MODE_NONE) return payload;
  if (mode === MODE_ZSTD) {
    const sync = loadHelper()?.decompress;
    if (sync && rawLength !== undefined && rawLength <= 8 << 20) return sync(payload, rawLength);
    const declared = sync && rawLength === undefined && payload.length <= SMALL ? frameContentSize(payload) : undefined;
    if (declared !== undefined && declared <= SMALL * 16) {
      try {
        return sync!(payload, declared);
      } catch {
        // more than one frame, or damaged: the async decoder reports it
      }
    }
    return (await zstd()).decompress(payload);
  }
  throw new RangeError(`unknown compression mode ${mode}`);
}
