/**
 * Per-file reading modes: how a file is cut into chunks and what is checked while it is read.
 * Used for PostgreSQL relation files, which are stored in fixed, page-aligned chunks (a changed
 * page costs one chunk in the next backup) and whose pages are verified against their checksums
 * as they are read. Plain data, so it can be sent to worker threads.
 */
import { Chunker, type CutFinder, FixedChunker } from './chunker.js';
import { type PageError, relationBlockNo, verifyPages } from '../postgres/page-checksum.js';

export interface FileMode {
  /** Cut fixed-size chunks of this many bytes (a multiple of the page size) instead of content-defined ones. */
  readonly fixedChunk?: number;
  /** Verify PostgreSQL page checksums; `relPath` is relative to the data directory. */
  readonly verify?: { readonly relPath: string; readonly skipLsnAtOrAfter: string };
}

export type CorruptPage = PageError;

const fixed = new Map<number, FixedChunker>();

export function cutterFor(chunker: Chunker, mode: FileMode | undefined): CutFinder {
  if (!mode?.fixedChunk) return chunker;
  let f = fixed.get(mode.fixedChunk);
  if (!f) fixed.set(mode.fixedChunk, (f = new FixedChunker(mode.fixedChunk)));
  return f;
}

/** Check the pages of `chunk`, read at `offset` of the file; findings are appended to `out`. */
export function inspectChunk(mode: FileMode | undefined, chunk: Uint8Array, offset: number, out: CorruptPage[]): void {
  if (!mode?.verify || chunk.length === 0) return;
  const skip = BigInt(mode.verify.skipLsnAtOrAfter);
  out.push(...verifyPages(chunk, relationBlockNo(mode.verify.relPath, offset), { skipLsnAtOrAfter: skip }));
}
