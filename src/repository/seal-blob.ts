/**
 * How a blob is turned into the bytes stored in a pack: compression mode byte + payload, sealed
 * with AES-256-GCM bound to (type, id). Shared by the repository and the backup worker threads,
 * so there is exactly one definition of the stored form.
 */
import { sealParts } from './crypto.js';
import { type Compression, compress } from './compress.js';
import { type BlobType, blobAad } from './pack.js';

export interface SealedBlob {
  readonly parts: Buffer[];
  readonly length: number;
}

export async function sealBlob(key: Buffer, type: BlobType, id: Buffer, data: Buffer, compression: Compression): Promise<SealedBlob> {
  const [mode, payload] = await compress(data, compression);
  return sealParts(key, blobAad(type, id), [Buffer.of(mode), payload]);
}
