/**
 * How a blob is turned into the bytes stored in a pack: compression mode byte + payload, sealed
 * with AES-256-GCM bound to (type, id). Shared by the repository and the backup worker threads,
 * so there is exactly one definition of the stored form.
 */
import { nativeHelper } from '../util/native.js';
import { sealParts } from './crypto.js';
import { type Compression, compress } from './compress.js';
import { type BlobType, blobAad, blobTypeCode } from './pack.js';

export interface SealedBlob {
  readonly parts: Buffer[];
  readonly length: number;
}

export async function sealBlob(key: Buffer, type: BlobType, id: Buffer, data: Buffer, compression: Compression): Promise<SealedBlob> {
  const [mode, payload] = await compress(data, compression);
  return sealParts(key, blobAad(type, id), [Buffer.of(mode), payload]);
}

/**
 * sealBlob's result in one exactly sized buffer over an ArrayBuffer of its own, which a backup
 * worker transfers to the main thread without a copy. With the native helper it is made in one
 * call (zstd into a reused buffer, then AES-256-GCM straight into the result, with a cipher context
 * that keeps its key schedule), by the same rules; `native: false` takes the JS path (tests compare
 * the two).
 */
export async function sealBlobOwned(key: Buffer, type: BlobType, id: Buffer, data: Buffer, compression: Compression, native = true): Promise<Uint8Array> {
  const seal = native ? nativeHelper()?.sealBlob : undefined;
  if (seal) return new Uint8Array(seal(key, blobTypeCode(type), id, data, compression.algo === 'zstd' ? compression.level : undefined));
  const s = await sealBlob(key, type, id, data, compression);
  const out = new Uint8Array(new ArrayBuffer(s.length));
  let off = 0;
  for (const p of s.parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
