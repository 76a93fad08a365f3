/**
 * Index files map blob ids to where they are stored. Plaintext layout (sealed with
 * AAD "holdfast:index", stored as `index/<sha256 of stored bytes>`):
 *
 *   "HFIX" version (u8 = 1)
 *   supersedes count (u32 LE), then that many 32-byte index ids this file replaces (prune, repair)
 *   pack count (u32 LE), then per pack:
 *     pack id (32) · pack size (u48 LE) · entry count (u32 LE) · entries (45 bytes each, as in pack.ts)
 *
 * Counts are validated against the remaining length before anything is allocated, and every entry
 * against its pack's size, so no later range read is asked for bytes the pack cannot hold.
 */
import { SEAL_OVERHEAD } from './crypto.js';
import { ENTRY_LEN, MAX_HEADER_ENTRIES, PACK_MAGIC, PackFormatError, type PackEntry, TRAILER_LEN, decodeEntries, encodeEntries } from './pack.js';

const MAGIC = Buffer.from('HFIX', 'latin1');
const VERSION = 1;

export interface IndexPack {
  readonly id: string;
  readonly size: number;
  readonly entries: readonly PackEntry[];
}

export interface IndexFileContent {
  readonly supersedes: readonly string[];
  readonly packs: readonly IndexPack[];
}

export function encodeIndex(content: IndexFileContent): Buffer {
  const parts: Buffer[] = [MAGIC, Buffer.of(VERSION)];
  const n = Buffer.alloc(4);
  n.writeUInt32LE(content.supersedes.length);
  parts.push(n, ...content.supersedes.map((s) => Buffer.from(s, 'hex')));
  const p = Buffer.alloc(4);
  p.writeUInt32LE(content.packs.length);
  parts.push(p);
  for (const pack of content.packs) {
    const head = Buffer.alloc(32 + 6 + 4);
    Buffer.from(pack.id, 'hex').copy(head, 0);
    head.writeUIntLE(pack.size, 32, 6);
    head.writeUInt32LE(pack.entries.length, 38);
    parts.push(head, encodeEntries(pack.entries));
  }
  return Buffer.concat(parts);
}

/** Bytes of a pack record before its entries: id (32), size (u48), entry count (u32). */
const PACK_RECORD_LEN = 32 + 6 + 4;
/** The smallest pack: magic, a sealed header of no entries, trailer. */
const MIN_PACK_SIZE = PACK_MAGIC.length + SEAL_OVERHEAD + TRAILER_LEN;

/**
 * Decode the plaintext of an index file. Throws PackFormatError on anything malformed: it sits
 * behind authentication, but a leaked key or a writer bug must not turn into a crash or a huge
 * allocation in every reader.
 */
export function decodeIndex(buf: Buffer): IndexFileContent {
  if (buf.length < 13 || !buf.subarray(0, 4).equals(MAGIC)) throw new PackFormatError('index magic missing');
  if (buf[4] !== VERSION) throw new PackFormatError(`index format version ${buf[4]} is not supported`);
  let o = 5;
  const need = (n: number, what: string): void => {
    if (n < 0 || o + n > buf.length) throw new PackFormatError(`index truncated or corrupt: ${what} needs ${n} bytes at offset ${o}, file has ${buf.length}`);
  };
  need(4, 'supersedes count');
  const ns = buf.readUInt32LE(o);
  o += 4;
  need(ns * 32, 'supersedes list');
  const supersedes: string[] = [];
  for (let i = 0; i < ns; i++, o += 32) supersedes.push(buf.toString('hex', o, o + 32));
  need(4, 'pack count');
  const np = buf.readUInt32LE(o);
  o += 4;
  need(np * PACK_RECORD_LEN, 'pack list');
  const packs: IndexPack[] = [];
  for (let i = 0; i < np; i++) {
    need(PACK_RECORD_LEN, 'pack record');
    const id = buf.toString('hex', o, o + 32);
    const size = buf.readUIntLE(o + 32, 6);
    const count = buf.readUInt32LE(o + 38);
    o += PACK_RECORD_LEN;
    if (count > MAX_HEADER_ENTRIES) throw new PackFormatError(`index lists ${count} blobs in pack ${id}, more than a pack can hold (${MAX_HEADER_ENTRIES})`);
    need(count * ENTRY_LEN, `entries of pack ${id}`);
    const entries = decodeEntries(buf, o, count);
    // Every blob must lie between the magic and the (sealed, so at least SEAL_OVERHEAD) header.
    if (size < MIN_PACK_SIZE) throw new PackFormatError(`index gives pack ${id} ${size} bytes, too small for a pack`);
    const end = size - TRAILER_LEN - SEAL_OVERHEAD;
    for (const [j, e] of entries.entries()) {
      if (e.offset < PACK_MAGIC.length || e.length < SEAL_OVERHEAD || e.offset + e.length > end) {
        throw new PackFormatError(`index entry ${j} of pack ${id} (offset ${e.offset}, length ${e.length}) lies outside the pack's ${size} bytes`);
      }
    }
    packs.push({ id, size, entries });
    o += count * ENTRY_LEN;
  }
  if (o !== buf.length) throw new PackFormatError(`index has ${buf.length - o} trailing bytes`);
  return { supersedes, packs };
}
