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
import type { FileHandle } from 'node:fs/promises';

export interface ChunkerSpec {
  readonly seed: string;
  readonly min: number;
  readonly avg: number;
  readonly max: number;
}

export class Chunker {
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
    if (len <= this.min) return len;
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
    return end;
  }

  /**
   * Stream the chunks of an open file, reading `readSize` bytes at a time. Each yielded buffer is
   * a view that stays valid after the generator moves on.
   */
  async *chunks(fh: FileHandle, readSize = Math.max(this.max, 4 << 20)): AsyncGenerator<Buffer> {
    let buf = Buffer.alloc(0);
    let eof = false;
    let pos = 0;
    for (;;) {
      while (!eof && buf.length < this.max) {
        const block = Buffer.allocUnsafe(readSize);
        let got = 0;
        while (got < readSize) {
          const { bytesRead } = await fh.read(block, got, readSize - got, pos);
          if (bytesRead === 0) {
            eof = true;
            break;
          }
          got += bytesRead;
          pos += bytesRead;
        }
        const data = block.subarray(0, got);
        buf = buf.length === 0 ? data : Buffer.concat([buf, data]);
      }
      if (buf.length === 0) return;
      const n = this.cut(buf, buf.length);
      yield buf.subarray(0, n);
      buf = buf.subarray(n);
    }
  }
}

function topMask(bits: number): number {
  return (~0 << (32 - bits)) | 0;
}
