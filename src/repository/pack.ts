/**
 * Pack files: many encrypted blobs in one storage object.
 *
 *   "HFPACK01"                      8-byte magic
 *   blob 0 … blob n-1               each a sealed object (see crypto.ts), AAD = type byte || blob id
 *   header                          sealed, AAD = "holdfast:pack-header", plaintext = n entries
 *   header length (u32 LE) "HFPT"   8-byte trailer
 *
 * A header entry is 45 bytes: type (u8), blob id (32), offset (u32 LE), stored length (u32 LE),
 * raw length (u32 LE, the plaintext size before compression). The pack's storage name is the
 * SHA-256 of all its bytes, so a pack can be verified without the key.
 */
import { createHash } from 'node:crypto';
import { SEAL_OVERHEAD, seal, unseal } from './crypto.js';

export const PACK_MAGIC = Buffer.from('HFPACK01', 'latin1');
export const PACK_TRAILER_MAGIC = Buffer.from('HFPT', 'latin1');
export const TRAILER_LEN = 8;
export const ENTRY_LEN = 45;
const HEADER_AAD = Buffer.from('holdfast:pack-header', 'latin1');
/** Largest header we will accept: guards allocation against corrupt length fields. */
export const MAX_HEADER_ENTRIES = 1 << 20;

export type BlobType = 'data' | 'tree';
export const BLOB_TYPES: readonly BlobType[] = ['data', 'tree'];

export function blobTypeCode(t: BlobType): number {
  return t === 'data' ? 0 : 1;
}

export function blobTypeFromCode(c: number): BlobType | undefined {
  return c === 0 ? 'data' : c === 1 ? 'tree' : undefined;
}

export function blobAad(type: BlobType, id: Buffer): Buffer {
  return Buffer.concat([Buffer.of(blobTypeCode(type)), id]);
}

export interface PackEntry {
  readonly type: BlobType;
  readonly id: Buffer;
  readonly offset: number;
  readonly length: number;
  readonly rawLength: number;
}

export class PackFormatError extends Error {
  override name = 'PackFormatError';
}

export function encodeEntries(entries: readonly PackEntry[]): Buffer {
  const buf = Buffer.alloc(entries.length * ENTRY_LEN);
  let o = 0;
  for (const e of entries) {
    buf[o] = blobTypeCode(e.type);
    e.id.copy(buf, o + 1);
    buf.writeUInt32LE(e.offset, o + 33);
    buf.writeUInt32LE(e.length, o + 37);
    buf.writeUInt32LE(e.rawLength, o + 41);
    o += ENTRY_LEN;
  }
  return buf;
}

/**
 * Decode `count` entries starting at `at` (by default the whole buffer, which must then be a whole
 * number of entries). Checks the table lies within `buf` before anything is allocated; entries
 * are not checked against a pack's layout here (decodeHeaderPlaintext and the index do that).
 */
export function decodeEntries(buf: Buffer, at = 0, count = buf.length / ENTRY_LEN): PackEntry[] {
  if (!Number.isSafeInteger(at) || at < 0 || at > buf.length) throw new PackFormatError(`entry table at offset ${at} lies outside ${buf.length} bytes`);
  if (!Number.isSafeInteger(count) || count < 0) throw new PackFormatError(`entry table of ${buf.length - at} bytes is not a whole number of ${ENTRY_LEN}-byte entries`);
  if (count * ENTRY_LEN > buf.length - at) throw new PackFormatError(`entry table of ${count} entries needs ${count * ENTRY_LEN} bytes at offset ${at}, only ${buf.length - at} present`);
  const out: PackEntry[] = [];
  for (let i = 0, o = at; i < count; i++, o += ENTRY_LEN) {
    const type = blobTypeFromCode(buf[o]!);
    if (!type) throw new PackFormatError(`entry ${i} has unknown blob type ${buf[o]}`);
    out.push({ type, id: Buffer.from(buf.subarray(o + 1, o + 33)), offset: buf.readUInt32LE(o + 33), length: buf.readUInt32LE(o + 37), rawLength: buf.readUInt32LE(o + 41) });
  }
  return out;
}

/**
 * Builds a pack incrementally: `add` returns the bytes to append and folds them into the pack's
 * hash, so the pack can be streamed to storage while it is built. The first bytes of every pack
 * are `PACK_MAGIC` (`head()`); `finish` returns the header and trailer to append last.
 */
export class PackBuilder {
  private readonly hash = createHash('sha256').update(PACK_MAGIC);
  private readonly entries: PackEntry[] = [];
  private size = PACK_MAGIC.length;

  head(): Buffer[] {
    return [PACK_MAGIC];
  }

  get byteSize(): number {
    return this.size;
  }

  get count(): number {
    return this.entries.length;
  }

  /** Append a sealed blob, given as one buffer or as the parts `sealParts` returned. */
  add(type: BlobType, id: Buffer, sealed: Buffer | { parts: Buffer[]; length: number }, rawLength: number): Buffer[] {
    const parts = Buffer.isBuffer(sealed) ? [sealed] : sealed.parts;
    this.entries.push({ type, id, offset: this.size, length: sealed.length, rawLength });
    for (const part of parts) this.hash.update(part);
    this.size += sealed.length;
    return parts;
  }

  /** Seal the header; returns the pack's id, the bytes to append last, its size and entries. */
  finish(key: Buffer): { id: string; tail: Buffer[]; size: number; entries: PackEntry[] } {
    const header = seal(key, HEADER_AAD, [encodeEntries(this.entries)]);
    const trailer = Buffer.alloc(TRAILER_LEN);
    trailer.writeUInt32LE(header.length, 0);
    PACK_TRAILER_MAGIC.copy(trailer, 4);
    this.hash.update(header).update(trailer);
    return { id: this.hash.digest('hex'), tail: [header, trailer], size: this.size + header.length + TRAILER_LEN, entries: this.entries };
  }
}

/** Where the sealed header sits, from the trailer; validates lengths before anything is allocated. */
export function headerLocation(packSize: number, trailer: Buffer): { offset: number; length: number } {
  if (!Number.isSafeInteger(packSize) || packSize < PACK_MAGIC.length + TRAILER_LEN) throw new PackFormatError(`a pack of ${packSize} bytes is too short to be a pack`);
  if (trailer.length !== TRAILER_LEN || !trailer.subarray(4).equals(PACK_TRAILER_MAGIC)) throw new PackFormatError('pack trailer magic missing (truncated or not a pack)');
  const length = trailer.readUInt32LE(0);
  const maxLen = MAX_HEADER_ENTRIES * ENTRY_LEN + SEAL_OVERHEAD;
  if (length < SEAL_OVERHEAD || length > maxLen || length > packSize - TRAILER_LEN - PACK_MAGIC.length) throw new PackFormatError(`pack header length ${length} is impossible for a pack of ${packSize} bytes`);
  return { offset: packSize - TRAILER_LEN - length, length };
}

/**
 * The entries of a pack header from its plaintext, each checked against the pack's layout: in file
 * order, contiguous from the magic up to the header at `headerOffset`, every blob at least a
 * sealed object's overhead long. Sits behind authentication (decodeHeader), and must still
 * never fail other than with PackFormatError: a leaked key or a writer bug must not crash readers.
 */
export function decodeHeaderPlaintext(plain: Buffer, headerOffset: number): PackEntry[] {
  if (plain.length % ENTRY_LEN !== 0 || plain.length > MAX_HEADER_ENTRIES * ENTRY_LEN) throw new PackFormatError(`pack header of ${plain.length} bytes is not a whole number of ${ENTRY_LEN}-byte entries (at most ${MAX_HEADER_ENTRIES})`);
  const entries = decodeEntries(plain);
  let expect = PACK_MAGIC.length;
  for (const [i, e] of entries.entries()) {
    if (e.offset !== expect || e.length < SEAL_OVERHEAD || e.offset + e.length > headerOffset) throw new PackFormatError(`header entry ${i} (offset ${e.offset}, length ${e.length}) does not fit the pack layout`);
    expect += e.length;
  }
  if (expect !== headerOffset) throw new PackFormatError(`blobs end at ${expect} but the header starts at ${headerOffset}`);
  return entries;
}

/** Authenticate and decode a sealed pack header (DecryptError or PackFormatError on damage). */
export function decodeHeader(key: Buffer, sealedHeader: Buffer, headerOffset: number): PackEntry[] {
  return decodeHeaderPlaintext(unseal(key, HEADER_AAD, sealedHeader), headerOffset);
}

/** Parse a whole pack held in memory (check --read-data, repair). */
export function parsePack(key: Buffer, pack: Buffer): PackEntry[] {
  if (pack.length < PACK_MAGIC.length + TRAILER_LEN || !pack.subarray(0, PACK_MAGIC.length).equals(PACK_MAGIC)) throw new PackFormatError('pack magic missing (truncated or not a pack)');
  const loc = headerLocation(pack.length, pack.subarray(pack.length - TRAILER_LEN));
  return decodeHeader(key, pack.subarray(loc.offset, loc.offset + loc.length), loc.offset);
}

export function packName(id: string): string {
  return `data/${id.slice(0, 2)}/${id}`;
}
