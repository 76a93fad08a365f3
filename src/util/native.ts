/**
 * The optional native helper (native/zstd-sync.c, built as zstd-sync.node by scripts/build.mjs when
 * a C compiler and Node's headers are there): synchronous zstd, the restore workers' blob opener,
 * the backup workers' blob sealer and page checksums, writeback hints. Every user has a JS path for
 * when it is missing, so the helper only changes speed. Loaded once per thread, on first use.
 */
import { createRequire } from 'node:module';

/**
 * openBlob(key, type, idHex, src, srcOff, srcLen, out, rawLength) -> number: opens a sealed blob in
 * place (see BlobOpener in repository/open-blob.ts, its only user, for the contract and the results).
 */
export type NativeOpenBlob = (key: Buffer, type: number, idHex: string, src: Buffer, srcOff: number, srcLen: number, out: Buffer, rawLength: number) => number;

/**
 * openBlobs(key, src, ids, desc, out, flags, fd, pos) -> k: opens up to 64 sealed blobs of src that
 * are consecutive pieces of one file (desc: type, srcOff, srcLen, rawLength per blob), with
 * openBlob's checks, decoding each into out and writing it to fd from pos on (all-zero ones are
 * left as holes, flags[i] & 1) before the SHA-256 checks, which run together (16 lanes on
 * AVX-512). The first k passed; blob k, if any, is the caller's to open one by one; -errno when a
 * write failed (BlobOpener.openMany in repository/open-blob.ts). `dfd`, the same file opened with
 * O_DIRECT (or -1), takes the blobs whose position and length are multiples of 4096; when a write
 * through it fails, that blob goes through fd and its flag gets 2 (stop passing dfd).
 */
export type NativeOpenBlobs = (key: Buffer, src: Buffer, ids: readonly string[], desc: Float64Array, out: Buffer, flags: Uint8Array, fd: number, pos: number, dfd?: number) => number;

/**
 * openBlobsDrain() -> number: openBlobs writes through `dfd` asynchronously (Linux AIO) where it
 * can; this waits for all of this thread's: 0, 1 when one failed as a direct write and was done
 * through fd instead, -errno when one failed both ways.
 */
export type NativeOpenBlobsDrain = () => number;

/**
 * sealBlob(key, type, id, data, level?) -> ArrayBuffer: the stored form of a blob (nonce, then
 * AES-256-GCM of the mode byte and the payload, then the tag), compressed at `level` by the rules of
 * repository/compress.ts's compress when a level is given, stored as is without (seal-blob.ts).
 */
export type NativeSealBlob = (key: Buffer, type: number, id: Buffer, data: Uint8Array, level?: number) => ArrayBuffer;

/** pageChecksums(buf, blockSize, firstBlock, out) -> pages: PostgreSQL's checksum of every whole page (postgres/page-checksum.ts). */
export type NativePageChecksums = (buf: Uint8Array, blockSize: number, firstBlock: number, out: Uint16Array) => number;

export interface NativeHelper {
  compress?: (data: Buffer, level: number) => Buffer;
  decompress?: (data: Buffer, size: number) => Buffer;
  compressAsync?: (data: Buffer, level: number) => Promise<Buffer>;
  /** Absent when Node does not export the OpenSSL functions it needs. */
  openBlob?: NativeOpenBlob;
  /** Absent when Node does not export the OpenSSL functions it needs. */
  openBlobs?: NativeOpenBlobs;
  openBlobsDrain?: NativeOpenBlobsDrain;
  /** SHA-256 of up to 64 buffers, 32 bytes each in order (lanes where they pay off). Absent with openBlob. */
  sha256Many?: (list: readonly Uint8Array[]) => Buffer;
  /** 16 when sha256Many and openBlobs hash in AVX-512 lanes in this process, else 0 (or absent). */
  shaLanes?: number;
  /** Absent when Node does not export the OpenSSL functions it needs. */
  sealBlob?: NativeSealBlob;
  pageChecksums?: NativePageChecksums;
  startWriteback?: (fd: number, offset: number, length: number) => boolean;
}

/** The helper's functions, loaded once (null: not built here). */
let helper: NativeHelper | null | undefined;

/**
 * Set in the environment, HOLDFAST_TEST_NO_ZSTD_SYNC=1 makes this process (and worker threads
 * started after it is set) run as if native/zstd-sync.c had not been built: how the tests prove
 * the JS paths without removing the file other test processes use.
 */
const NO_HELPER_ENV = 'HOLDFAST_TEST_NO_ZSTD_SYNC';

/** The native helper of this thread, or undefined when it was not built (or is turned off for a test). */
export function nativeHelper(): NativeHelper | undefined {
  if (helper === undefined) {
    helper = null;
    if (process.env[NO_HELPER_ENV] === '1') return undefined;
    const require = createRequire(import.meta.url);
    for (const candidate of ['./zstd-sync.node', '../zstd-sync.node']) {
      try {
        helper = require(candidate) as NativeHelper;
        break;
      } catch {
        // try the next location
      }
    }
  }
  return helper ?? undefined;
}
