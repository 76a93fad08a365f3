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
 * per blob; without it, and for every blob it does not open, `openBlob` itself. `openMany` opens
 * and writes a run of a file's blobs from one read in one native call, checking their ids together
 * (16 SHA-256 lanes on AVX-512, native/sha256-lanes.h): one at a time, the id check was the largest
 * part of a restore's CPU time.
 */
import { getSystemErrorName } from 'node:util';
import { HoldfastError } from '../errors/catalogue.js';
import { DecryptError, SEAL_OVERHEAD, sha256, unseal } from './crypto.js';
import { MAX_PLAINTEXT, decompress } from './compress.js';
import { type NativeOpenBlob, type NativeOpenBlobs, type NativeOpenBlobsDrain, nativeHelper } from '../util/native.js';
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
/** openMany takes at most this many blobs and this many plaintext bytes at once. */
const MANY_BLOBS = 16;
const MANY_BYTES = 2 << 20;
/** openMany's buffer has this much more, for the native helper to start its plaintexts on a page for O_DIRECT. */
const DIRECT_SLACK = 4096;
/** Or-ed into openBlobs' flags besides OPEN_ZERO: a direct write failed and was done through fd. */
const OPEN_DIRECT_OFF = 2;

/** A blob handed to openMany: its id, plaintext size, and where its sealed bytes lie. */
export interface BlobSpan {
  readonly id: string;
  readonly rawLength: number;
  /** Offset of the sealed blob, relative to the same origin as openMany's `srcBase`. */
  readonly offset: number;
  readonly length: number;
}

/** Whether a sealed blob of `sealedLength` bytes and `rawLength` of plaintext is one the native helper takes. */
function nativeSizes(sealedLength: number, rawLength: number): boolean {
  return sealedLength >= SEAL_OVERHEAD && Number.isSafeInteger(rawLength) && rawLength >= 0 && rawLength <= MAX_PLAINTEXT;
}

/** The system error of a failed write, -errno, with its `code` for the caller to word. */
function writeFailed(errno: number): Error {
  const name = getSystemErrorName(errno);
  return Object.assign(new Error(`${name}: write failed`), { code: name, errno });
}

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
  /** After openMany: whether each opened blob is all zeros (index 0 = the first one opened). */
  readonly zeros = new Uint8Array(MANY_BLOBS);
  /** Set by openMany when a write through its `dfd` failed (and was done through `fd`): pass -1 from then on. */
  directFailed = false;
  private out = Buffer.alloc(0);
  private manyOut = Buffer.alloc(0);
  private readonly native: NativeOpenBlob | undefined;
  private readonly nativeMany: NativeOpenBlobs | undefined;
  private readonly nativeDrain: NativeOpenBlobsDrain | undefined;
  private readonly desc = new Float64Array(4 * MANY_BLOBS);
  private readonly ids: string[] = [];

  /** `native: false` takes the JS path for every blob (tests compare the two). */
  constructor(
    private readonly key: Buffer,
    native = true,
  ) {
    this.native = native ? nativeHelper()?.openBlob : undefined;
    this.nativeMany = native ? nativeHelper()?.openBlobs : undefined;
    this.nativeDrain = native ? nativeHelper()?.openBlobsDrain : undefined;
  }

  /** Whether openMany can open anything (else it always returns 0). */
  get canOpenMany(): boolean {
    return this.nativeMany !== undefined;
  }

  /**
   * Open blobs[from, to) of type `type`, consecutive pieces of one file, and write them to `fd`
   * from `pos` on: as many at once as fit (up to 16 blobs, 2 MiB of plaintext). All of them lie in
   * `src`, which starts at offset `srcBase` of their common origin (a pack read). Each is written as
   * soon as it is decoded (all-zero ones are left as holes), then the ids of all are checked
   * together (native/zstd-sync.c openBlobs). Returns k, how many leading blobs passed every check
   * of `open`; zeros[i] tells whether the i-th was all zeros. Blob from + k, if it was attempted,
   * failed a check (its bytes may be in the file: the caller must then fail) or is something only
   * the JS path decides: the caller opens it with `open`, which throws its error or returns its
   * plaintext. 0 also when the native helper is missing or the first blob alone is too large to
   * batch. A failed write throws the system error (with its `code`), for the caller to word.
   * `dfd` (or -1) is the same file opened with O_DIRECT: blobs at page-aligned positions with
   * page-multiple lengths are written through it, skipping the page cache, asynchronously where
   * the system allows (then `finishWrites` must be called before the file counts as written and
   * before either descriptor is closed); if such a write fails, the blob is written through `fd`
   * and `directFailed` is set.
   */
  openMany(type: BlobType, blobs: readonly BlobSpan[], from: number, to: number, src: Buffer, srcBase: number, fd: number, pos: number, dfd = -1): number {
    const many = this.nativeMany;
    if (!many) return 0;
    const desc = this.desc;
    const ids = this.ids;
    const code = blobTypeCode(type);
    let n = 0;
    let bytes = 0;
    for (let i = from; i < to && n < MANY_BLOBS; i++, n++) {
      const b = blobs[i]!;
      if (!nativeSizes(b.length, b.rawLength) || bytes + b.rawLength > MANY_BYTES) break;
      desc[4 * n] = code;
      desc[4 * n + 1] = b.offset - srcBase;
      desc[4 * n + 2] = b.length;
      desc[4 * n + 3] = b.rawLength;
      ids[n] = b.id;
      bytes += b.rawLength;
    }
    if (n === 0) return 0;
    ids.length = n;
    if (this.manyOut.length < bytes + DIRECT_SLACK) this.manyOut = Buffer.allocUnsafe(Math.max(bytes, Math.min(MANY_BYTES, 2 * this.manyOut.length)) + DIRECT_SLACK);
    const zeros = this.zeros;
    const k = many(this.key, src, ids, desc, this.manyOut, zeros, fd, pos, this.directFailed ? -1 : dfd);
    for (let t = 0; t < n; t++) {
      if (zeros[t]! & OPEN_DIRECT_OFF) this.directFailed = true;
      zeros[t] = zeros[t]! & OPEN_ZERO;
    }
    if (k < 0) throw writeFailed(k);
    return k;
  }

  /**
   * Wait until every write openMany left in flight (through a `dfd`) has completed; throws the
   * system error of one that failed through both descriptors. Sets `directFailed` when one
   * failed as a direct write and was done through `fd`.
   */
  finishWrites(): void {
    const r = this.nativeDrain?.() ?? 0;
    if (r === 1) this.directFailed = true;
    if (r < 0) throw writeFailed(r);
  }

  /** Whether blobs are opened by the native helper. */
  get isNative(): boolean {
    return this.native !== undefined;
  }

  /** Open the sealed blob `src[srcOff, srcOff + srcLen)` of type `type` and id `hex` (lower case), read from `where`. */
  open(type: BlobType, hex: string, rawLength: number, src: Buffer, srcOff: number, srcLen: number, where: string): Promise<void> | undefined {
    const native = this.native;
    if (native && nativeSizes(srcLen, rawLength)) {
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
