/**
 * Opening a sealed blob: the one definition of its checks and of their errors (docs/design.md §1,
 * §4-§6). The sealed bytes are authenticated and decrypted (AES-256-GCM, AAD type byte ‖ id); only
 * then is the plaintext interpreted: its mode byte, the payload decompressed to exactly the raw
 * length the index gives, and the SHA-256 of the result compared with the id. Every failure is an
 * `INTEGRITY` error naming the blob and where it was read:
 *
 *   - `blob <id> in <where>: authentication failed: …` (wrong key, modified or corrupt bytes), or
 *     `…: sealed object too short (N bytes)`;
 *   - `blob <id> in <where>: cannot decompress: …` (unknown mode byte, damaged zstd payload,
 *     a payload that would exceed its raw length);
 *   - `blob <id> in <where>: content does not match its id (SHA-256 mismatch)`.
 *
 * `openBlob` does it with node:crypto and compress.ts, returning a new buffer (Repository.openBlob,
 * check, prune, repair). `BlobOpener` is for the restore workers, which open thousands of blobs a
 * second and write each one out before the next: with the native helper (native/zstd-sync.c) one
 * call decrypts, decompresses into a reused buffer, hashes and compares, with no object allocated
 * per blob; without it, and for every blob it does not open, `openBlob` itself.
 */
import { HoldfastError } from '../errors/catalogue.js';
import { DecryptError, SEAL_OVERHEAD, sha256, unseal } from './crypto.js';
import { MAX_PLAINTEXT, decompress } from './compress.js';
import { type NativeOpenBlob, nativeHelper } from '../util/native.js';
import { type BlobType, blobAad, blobTypeCode } from './pack.js';

/** The INTEGRITY error of a blob that fails to open, worded once for every reader. */
export function blobError(hex: string, where: string, detail: string, cause?: unknown): HoldfastError {
  return new HoldfastError('INTEGRITY', `blob ${hex} in ${where}: ${detail}`, { blob: hex, object: where }, cause === undefined ? undefined : { cause });
}

/** Decrypt, decompress and verify one sealed blob into a new buffer; `sealed` is not modified. */
export async function openBlob(key: Buffer, type: BlobType, id: Buffer, sealed: Buffer, rawLength: number, where: string): Promise<Buffer> {
  const hex = id.toString('hex');
  let plain: Buffer;
  try {
    plain = unseal(key, blobAad(type, id), sealed);
  } catch (err) {
    if (err instanceof DecryptError) throw blobError(hex, where, err.message);
    throw err;
  }
  let data: Buffer;
  try {
    data = await decompress(plain[0], plain.subarray(1), rawLength);
  } catch (err) {
    throw blobError(hex, where, `cannot decompress: ${(err as Error).message}`, err);
  }
  if (data.length !== rawLength || !sha256(data).equals(id)) throw blobError(hex, where, 'content does not match its id (SHA-256 mismatch)');
  return data;
}

// openBlob's results in native/zstd-sync.c (OPEN_*): >= 0 opened (OPEN_ZERO set: all zeros).
const OPEN_ZERO = 1;
/** The output buffer is kept for the next blob up to this size; a larger blob gets its own. */
const KEEP_OUT = 16 << 20;
const ZEROS = Buffer.alloc(1 << 20);

function isZero(buf: Buffer): boolean {
  for (let off = 0; off < buf.length; off += ZEROS.length) {
    const n = Math.min(ZEROS.length, buf.length - off);
    if (buf.compare(ZEROS, 0, n, off, off + n) !== 0) return false;
  }
  return true;
}

/**
 * Opens blobs one after another for a thread that writes each one out before opening the next
 * (the restore workers). After `open` has completed, the plaintext is `data[0, length)`, valid
 * until the next `open` (a buffer the opener reuses), and `zero` tells whether it is all zeros
 * (a hole). The sealed bytes are not modified.
 *
 * `open` returns undefined when it is done, or a promise when it took the asynchronous JS path:
 * no promise per blob otherwise. Failures are `openBlob`'s errors by construction: a blob the
 * native helper does not open (it failed a check, or is something only the JS decoder decides,
 * such as a payload starting with a skippable frame) is opened again by `openBlob`, which throws
 * its error or, where it accepts what the helper did not, returns the plaintext.
 */
export class BlobOpener {
  data: Buffer = ZEROS;
  length = 0;
  zero = false;
  private out = Buffer.alloc(0);
  private readonly native: NativeOpenBlob | undefined;

  /** `native: false` takes the JS path for every blob (tests compare the two). */
  constructor(
    private readonly key: Buffer,
    native = true,
  ) {
    this.native = native ? nativeHelper()?.openBlob : undefined;
  }

  /** Whether blobs are opened by the native helper. */
  get isNative(): boolean {
    return this.native !== undefined;
  }

  /** Open the sealed blob `src[srcOff, srcOff + srcLen)` of type `type` and id `hex` (lower case), read from `where`. */
  open(type: BlobType, hex: string, rawLength: number, src: Buffer, srcOff: number, srcLen: number, where: string): Promise<void> | undefined {
    const native = this.native;
    if (native && srcLen >= SEAL_OVERHEAD && Number.isSafeInteger(rawLength) && rawLength >= 0 && rawLength <= MAX_PLAINTEXT) {
      let out = this.out;
      if (out.length < rawLength) {
        out = Buffer.allocUnsafe(rawLength <= KEEP_OUT ? Math.min(KEEP_OUT, Math.max(rawLength, 2 * out.length, 64 << 10)) : rawLength);
        if (out.length <= KEEP_OUT) this.out = out;
      }
      const r = native(this.key, blobTypeCode(type), hex, src, srcOff, srcLen, out, rawLength);
      if (r >= 0) {
        this.data = out;
        this.length = rawLength;
        this.zero = (r & OPEN_ZERO) !== 0;
        return undefined;
      }
    }
    return this.settle(openBlob(this.key, type, Buffer.from(hex, 'hex'), src.subarray(srcOff, srcOff + srcLen), rawLength, where));
  }

  private async settle(opened: Promise<Buffer>): Promise<void> {
    const data = await opened;
    this.data = data;
    this.length = data.length;
    this.zero = isZero(data);
  }
}
