/**
 * Content-defined chunking (FastCDC-style, normalised) over a 32-bit gear hash.
 *
 * A cut is placed where the rolling hash has `bits` zero bits in its top positions; before the
 * average size a stricter mask (2 more bits) is used, after it a looser one (2 fewer), which keeps
 * chunk sizes close to the average. Hashing starts at `min` and a cut is forced at `max`. The gear
 * table comes from the repository's secret seed, so boundaries cannot be predicted from content.
 * The gear hash depends on the last 32 bytes only, so an insertion changes only nearby chunks.
 */
import { createHash } from 'node:crypto';
/** Reads up to `length` bytes at `position` into `buf` at `offset`; returns the count (0 at EOF). */
export type ReadAt = (buf: Buffer, offset: number, length: number, position: number) => number | Promise<number>;

export interface ChunkerSpec {
  readonly seed: string;
  readonly min: number;
  readonly avg: number;
  readonly max: number;
}

export class Chunker implements CutFinder {
  readonly gear: Uint32Array;
  readonly min: number;
  readonly avg: number;
  readonly max: number;
  private readonly maskS: number;
  private readonly maskL: number;

  constructor(spec: ChunkerSpec) {
    this.min = spec.min;
    this.avg = spec.avg;
    this.max = spec.max;
    const seed = Buffer.from(spec.seed, 'base64');
    this.gear = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
      this.gear[i] = createHash('sha256').update(seed).update(Buffer.of(i)).digest().readUInt32LE(0);
    }
    const bits = Math.max(1, Math.round(Math.log2(spec.avg)));
    this.maskS = topMask(Math.min(31, bits + 2));
    this.maskL = topMask(Math.max(1, bits - 2));
  }

  /** Length of the next chunk at the start of `buf[0..len)`; `len` is all the data left when at EOF. */
  cut(buf: Uint8Array, len: number): number {
    const n = this.find(buf, len);
    return n === -1 ? len : n;
  }

  /**
   * Like `cut`, but returns -1 when `buf[0..len)` holds no cut point and is shorter than `max`, so
   * the chunk needs more data (unless at EOF). A cut point depends only on the bytes before it,
   * so a cut found in a partial buffer is final.
   */
  find(buf: Uint8Array, len: number): number {
    if (len <= this.min) return len >= this.max ? len : -1;
    const end = Math.min(len, this.max);
    const normal = Math.min(end, this.avg);
    const gear = this.gear;
    const maskS = this.maskS;
    const maskL = this.maskL;
    let h = 0;
    let i = this.min;
    for (; i < normal; i++) {
      h = ((h << 1) + gear[buf[i]!]!) | 0;
      if ((h & maskS) === 0) return i + 1;
    }
    for (; i < end; i++) {
      h = ((h << 1) + gear[buf[i]!]!) | 0;
      if ((h & maskL) === 0) return i + 1;
    }
    return end === this.max ? end : -1;
  }

  /**
   * Stream the chunks of a file (read through `read`) through `window`, a buffer of at least `max + 1` bytes (or
   * the file size plus one for smaller files) that the caller may reuse once this generator is
   * done. Each chunk is a view into the window, valid until `beforeRefill` is next called: the
   * generator awaits it before it moves or overwrites window bytes, so the caller can finish
   * with outstanding chunks there. No chunk is ever copied; only an unfinished chunk at the end
   * of the window is moved to its start before the next read.
   */
  chunks(read: ReadAt, window: Buffer, beforeRefill: () => Promise<unknown> = async () => undefined): AsyncGenerator<Buffer> {
    return chunkStream(this, read, window, beforeRefill);
  }

  /** Window size for a file of `size` bytes (see `chunks`). */
  windowSize(size: number): number {
    return Math.min(this.max + (1 << 20), size + 1);
  }
}

/** What chunkStream needs from a chunker. */
export interface CutFinder {
  /** Length of the next chunk in buf[0..len), or -1 when more data is needed (see Chunker.find). */
  find(buf: Uint8Array, len: number): number;
  cut(buf: Uint8Array, len: number): number;
  windowSize(size: number): number;
  readonly max: number;
}

export async function* chunkStream(c: CutFinder, read: ReadAt, window: Buffer, beforeRefill: () => Promise<unknown> = async () => undefined): AsyncGenerator<Buffer> {
  let start = 0;
  let end = 0;
  let eof = false;
  let pos = 0;
  for (;;) {
    let n = end > start ? c.find(window.subarray(start, end), end - start) : -1;
    if (n === -1 && !eof && (start > 0 || end < window.length)) {
      await beforeRefill();
      if (start > 0) {
        window.copy(window, 0, start, end);
        end -= start;
        start = 0;
      }
      while (!eof && end < window.length) {
        const bytesRead = await read(window, end, window.length - end, pos);
        if (bytesRead === 0) eof = true;
        end += bytesRead;
        pos += bytesRead;
      }
      continue;
    }
    if (end === start) return;
    if (n === -1) n = end - start; // EOF, or a full window smaller than max (the file grew): cut here
    yield window.subarray(start, start + n);
    start += n;
  }
}

/**
 * Fixed-size, aligned chunks: for PostgreSQL relation files, whose pages change in place, so a
 * changed page costs one chunk (and every chunk holds whole pages at a known block number).
 */
export class FixedChunker implements CutFinder {
  constructor(readonly max: number) {}

  find(_buf: Uint8Array, len: number): number {
    return len >= this.max ? this.max : -1;
  }

  cut(_buf: Uint8Array, len: number): number {
    return Math.min(len, this.max);
  }

  windowSize(size: number): number {
    return Math.min(this.max * 8, size + 1);
  }

  chunks(read: ReadAt, window: Buffer, beforeRefill?: () => Promise<unknown>): AsyncGenerator<Buffer> {
    return chunkStream(this, read, window, beforeRefill);
  }
}

function topMask(bits: number): number {
  return (~0 << (32 - bits)) | 0;
}
