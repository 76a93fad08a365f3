/**
 * Compression of object payloads. The mode byte is the first byte of every sealed plaintext:
 * 0 = stored as is, 1 = zstd frame. Incompressible payloads are stored as is.
 * The native zstd module is loaded on first use so commands that never compress don't pay for it.
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

/**
 * Compress synchronously from now on in this thread, when the optional native helper
 * (native/zstd-sync.c) is available: for threads that may block (backup workers), where it
 * costs a fraction of the async binding's per-call overhead. Returns whether it is in use.
 */
export function useSyncCompression(): boolean {
  const require = createRequire(import.meta.url);
  for (const candidate of ['./zstd-sync.node', '../zstd-sync.node']) {
    try {
      syncCompress = (require(candidate) as { compress: SyncCompress }).compress;
      return true;
    } catch {
      // try the next location
    }
  }
  return false;
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
  if (syncCompress) z = syncCompress(data, c.level);
  else if (data.length >= 2 * FRAME_SPLIT) {
    const binding = await zstd();
    const parts: Array<Promise<Buffer>> = [];
    for (let off = 0; off < data.length; off += FRAME_SPLIT) parts.push(binding.compress(data.subarray(off, Math.min(data.length, off + FRAME_SPLIT)), c.level));
    z = Buffer.concat(await Promise.all(parts));
  } else z = await (await zstd()).compress(data, c.level);
  return z.length < data.length ? [MODE_ZSTD, z] : [MODE_NONE, data];
}

type SyncDecompress = (data: Buffer, size: number) => Buffer;
let syncDecompress: SyncDecompress | undefined | null;

function loadSyncDecompress(): SyncDecompress | undefined {
  if (syncDecompress === undefined) {
    syncDecompress = null;
    const require = createRequire(import.meta.url);
    for (const candidate of ['./zstd-sync.node', '../zstd-sync.node']) {
      try {
        syncDecompress = (require(candidate) as { decompress?: SyncDecompress }).decompress ?? null;
        if (syncDecompress) break;
      } catch {
        // try the next location
      }
    }
  }
  return syncDecompress ?? undefined;
}

/**
 * Decompress a payload. With `rawLength` known (blobs), a small payload is decoded synchronously
 * by the native helper when it is available (no thread-pool round trip per blob).
 */
export async function decompress(mode: number, payload: Buffer, rawLength?: number): Promise<Buffer> {
  if (mode === MODE_NONE) return payload;
  if (mode === MODE_ZSTD) {
    const sync = rawLength !== undefined && rawLength <= 8 << 20 ? loadSyncDecompress() : undefined;
    if (sync) return sync(payload, rawLength!);
    return (await zstd()).decompress(payload);
  }
  throw new RangeError(`unknown compression mode ${mode}`);
}
