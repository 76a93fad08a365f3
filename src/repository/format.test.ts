/**
 * The byte formats, below the Repository class: packs (pack.ts), index files (index-file.ts) and
 * sealed objects (crypto.ts). Round trips, then damage of every kind: a decoder given truncated,
 * zero-filled, bit-flipped, random or absurd-length input must throw its own typed error
 * (PackFormatError or DecryptError) — never a RangeError from reading past a buffer, never a huge
 * allocation, never a hang. Each damage test has a timeout as a hang guard.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DecryptError, NONCE_LEN, SEAL_OVERHEAD, TAG_LEN, seal, sealParts, sha256, sha256Hex, unseal } from './crypto.js';
import { type IndexFileContent, type IndexPack, decodeIndex, encodeIndex } from './index-file.js';
import {
  ENTRY_LEN,
  MAX_HEADER_ENTRIES,
  PACK_MAGIC,
  PACK_TRAILER_MAGIC,
  type BlobType,
  type PackEntry,
  PackBuilder,
  PackFormatError,
  TRAILER_LEN,
  blobAad,
  decodeEntries,
  encodeEntries,
  headerLocation,
  packName,
  parsePack,
} from './pack.js';
import { Rng } from '../testing/helpers.js';

const HEADER_AAD = Buffer.from('holdfast:pack-header', 'latin1');
const GUARD = { timeout: 30_000 };

/** Call `fn`; it must throw one of `types`. Returns the error. */
function throwsOneOf(fn: () => unknown, types: ReadonlyArray<new (...args: never[]) => Error>, what: string): Error {
  let result: unknown;
  try {
    result = fn();
  } catch (err) {
    if (!types.some((t) => err instanceof t)) {
      assert.fail(`${what}: expected ${types.map((t) => t.name).join(' or ')}, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
    }
    return err as Error;
  }
  assert.fail(`${what}: expected ${types.map((t) => t.name).join(' or ')}, but it returned ${JSON.stringify(result)?.slice(0, 200)}`);
}

const FORMAT_ERRORS = [PackFormatError, DecryptError] as const;

interface BuiltPack {
  key: Buffer;
  bytes: Buffer;
  id: string;
  entries: PackEntry[];
  blobs: Array<{ type: BlobType; data: Buffer }>;
  headerOffset: number;
}

/** Build a pack of `n` seeded blobs the way Repository does (mode byte 0 = stored as is). */
function buildPack(seed: number, n: number, maxSize = 200): BuiltPack {
  const rng = new Rng(seed);
  const key = rng.bytes(32);
  const builder = new PackBuilder();
  const blobs: BuiltPack['blobs'] = [];
  const written: Buffer[] = [...builder.head()];
  for (let i = 0; i < n; i++) {
    const type: BlobType = i % 3 === 2 ? 'tree' : 'data';
    const data = rng.bytes(rng.int(maxSize));
    const id = sha256(data);
    // Alternate the two forms `add` accepts: one sealed buffer, or the parts sealParts returns.
    const sealed = i % 2 === 0 ? seal(key, blobAad(type, id), [Buffer.of(0), data]) : sealParts(key, blobAad(type, id), [Buffer.of(0), data]);
    written.push(...builder.add(type, id, sealed, data.length));
    blobs.push({ type, data });
  }
  assert.equal(builder.count, n);
  const { id, tail, size, entries } = builder.finish(key);
  const bytes = Buffer.concat([...written, ...tail]);
  assert.equal(bytes.length, size, 'finish reports the size of its parts');
  const headerOffset = n === 0 ? PACK_MAGIC.length : entries[n - 1]!.offset + entries[n - 1]!.length;
  return { key, bytes, id, entries, blobs, headerOffset };
}

/** Assemble a pack from raw pieces, for headers the builder would never write. */
function assemblePack(key: Buffer, blobBytes: Buffer, headerPlain: Buffer): Buffer {
  const header = seal(key, HEADER_AAD, [headerPlain]);
  const trailer = Buffer.alloc(TRAILER_LEN);
  trailer.writeUInt32LE(header.length, 0);
  PACK_TRAILER_MAGIC.copy(trailer, 4);
  return Buffer.concat([PACK_MAGIC, blobBytes, header, trailer]);
}

function trailerWith(length: number): Buffer {
  const t = Buffer.alloc(TRAILER_LEN);
  t.writeUInt32LE(length, 0);
  PACK_TRAILER_MAGIC.copy(t, 4);
  return t;
}

describe('pack format', () => {
  test('PackBuilder then parsePack round-trips entries, and every blob opens with its type and id', () => {
    for (const [seed, n] of [
      [1, 0],
      [2, 1],
      [3, 7],
      [4, 300],
    ] as const) {
      const p = buildPack(seed, n);
      assert.equal(p.id, sha256Hex(p.bytes), 'the pack id is the SHA-256 of its bytes');
      assert.ok(p.bytes.subarray(0, 8).equals(PACK_MAGIC));
      assert.ok(p.bytes.subarray(-4).equals(PACK_TRAILER_MAGIC));
      const parsed = parsePack(p.key, p.bytes);
      assert.deepEqual(parsed, p.entries, `${n} blobs: parsed entries equal the builder's`);
      for (const [i, e] of parsed.entries()) {
        const blob = p.blobs[i]!;
        assert.equal(e.type, blob.type);
        assert.ok(e.id.equals(sha256(blob.data)));
        assert.equal(e.rawLength, blob.data.length);
        const plain = unseal(p.key, blobAad(e.type, e.id), p.bytes.subarray(e.offset, e.offset + e.length));
        assert.ok(plain.subarray(1).equals(blob.data), `blob ${i} opens from its entry`);
        const other: BlobType = e.type === 'data' ? 'tree' : 'data';
        assert.throws(() => unseal(p.key, blobAad(other, e.id), p.bytes.subarray(e.offset, e.offset + e.length)), DecryptError, 'the AAD binds the blob type');
      }
      const loc = headerLocation(p.bytes.length, p.bytes.subarray(-TRAILER_LEN));
      assert.equal(loc.offset, p.headerOffset);
      assert.equal(loc.offset + loc.length + TRAILER_LEN, p.bytes.length);
    }
    assert.equal(packName('ab'.repeat(32)), `data/ab/${'ab'.repeat(32)}`);
  });

  test('a pack under another key does not parse', () => {
    const p = buildPack(5, 3);
    throwsOneOf(() => parsePack(new Rng(6).bytes(32), p.bytes), [DecryptError], 'wrong key');
  });

  test('every truncation of a pack throws PackFormatError or DecryptError', GUARD, () => {
    const p = buildPack(10, 6);
    for (let len = 0; len < p.bytes.length; len++) {
      throwsOneOf(() => parsePack(p.key, p.bytes.subarray(0, len)), FORMAT_ERRORS, `pack cut to ${len} of ${p.bytes.length} bytes`);
      // Cutting from the front is damage too.
      throwsOneOf(() => parsePack(p.key, p.bytes.subarray(p.bytes.length - len)), FORMAT_ERRORS, `pack missing its first ${p.bytes.length - len} bytes`);
    }
  });

  test('every single-bit flip outside the blobs throws; flips inside blobs leave the header intact', GUARD, () => {
    const p = buildPack(11, 5);
    for (let pos = 0; pos < p.bytes.length; pos++) {
      for (let bit = 0; bit < 8; bit++) {
        const damaged = Buffer.from(p.bytes);
        damaged[pos]! ^= 1 << bit;
        const what = `bit ${bit} of byte ${pos} flipped (blobs span ${PACK_MAGIC.length}..${p.headerOffset}, pack ${p.bytes.length})`;
        if (pos >= PACK_MAGIC.length && pos < p.headerOffset) {
          // parsePack reads only the header; the blob's own seal catches this (see Repository tests).
          assert.deepEqual(parsePack(p.key, damaged), p.entries, what);
        } else {
          throwsOneOf(() => parsePack(p.key, damaged), FORMAT_ERRORS, what);
        }
      }
    }
  });

  test('zero-filled and random inputs throw PackFormatError or DecryptError', GUARD, () => {
    const rng = new Rng(12);
    const key = rng.bytes(32);
    for (const len of [0, 1, 7, 8, 15, 16, 17, 44, 45, 100, 4096, 1 << 20]) {
      throwsOneOf(() => parsePack(key, Buffer.alloc(len)), [PackFormatError], `${len} zero bytes`);
      throwsOneOf(() => parsePack(key, rng.bytes(len)), [PackFormatError], `${len} random bytes`);
      // Right magic at both ends, zeros or garbage between.
      if (len >= 16) {
        const framed = (fill: Buffer): Buffer => Buffer.concat([PACK_MAGIC, fill, Buffer.alloc(4), PACK_TRAILER_MAGIC]);
        throwsOneOf(() => parsePack(key, framed(Buffer.alloc(len - 16))), FORMAT_ERRORS, `${len} bytes: magic, zeros, trailer with length 0`);
        const garbage = Buffer.concat([PACK_MAGIC, rng.bytes(len - 16), trailerWith(Math.min(len - 16, SEAL_OVERHEAD + ENTRY_LEN))]);
        throwsOneOf(() => parsePack(key, garbage), FORMAT_ERRORS, `${len} bytes: magic, garbage, plausible trailer`);
      }
    }
    for (let i = 0; i < 500; i++) {
      const len = rng.int(600);
      const buf = rng.bytes(len);
      if (len >= 8 && rng.int(2) === 0) PACK_MAGIC.copy(buf, 0);
      if (len >= 16 && rng.int(2) === 0) PACK_TRAILER_MAGIC.copy(buf, len - 4);
      throwsOneOf(() => parsePack(key, buf), FORMAT_ERRORS, `random input ${i} (${len} bytes)`);
    }
  });

  test('absurd header lengths in the trailer are refused before anything is read or allocated', GUARD, () => {
    const maxLen = MAX_HEADER_ENTRIES * ENTRY_LEN + SEAL_OVERHEAD;
    const hugePack = 2 ** 40;
    for (const length of [0, 1, SEAL_OVERHEAD - 1, maxLen + 1, 0x7fffffff, 0xffffffff]) {
      throwsOneOf(() => headerLocation(hugePack, trailerWith(length)), [PackFormatError], `header length ${length} in a ${hugePack}-byte pack`);
    }
    // Longer than the pack can hold (it also holds the magic and the trailer).
    throwsOneOf(() => headerLocation(100, trailerWith(100 - 16 + 1)), [PackFormatError], 'header longer than the pack');
    throwsOneOf(() => headerLocation(10, trailerWith(SEAL_OVERHEAD)), [PackFormatError], 'pack smaller than magic and trailer');
    throwsOneOf(() => headerLocation(-5, trailerWith(SEAL_OVERHEAD)), [PackFormatError], 'negative pack size');
    assert.deepEqual(headerLocation(100, trailerWith(100 - 16)), { offset: 8, length: 84 }, 'the largest header that fits');
    assert.deepEqual(headerLocation(hugePack, trailerWith(maxLen)), { offset: hugePack - TRAILER_LEN - maxLen, length: maxLen }, 'the largest header allowed');
    // Trailers of the wrong size or magic.
    for (const t of [Buffer.alloc(0), trailerWith(100).subarray(0, 7), Buffer.concat([trailerWith(100), Buffer.of(0)]), Buffer.from('\x64\0\0\0HFPX', 'latin1')]) {
      throwsOneOf(() => headerLocation(1000, t), [PackFormatError], `trailer ${t.toString('hex')}`);
    }
  });

  test('sealed headers that lie about the layout throw PackFormatError', GUARD, () => {
    const rng = new Rng(13);
    const key = rng.bytes(32);
    const sealedBlob = (data: Buffer, type: BlobType = 'data'): Buffer => seal(key, blobAad(type, sha256(data)), [Buffer.of(0), data]);
    const a = rng.bytes(50);
    const b = rng.bytes(70);
    const sa = sealedBlob(a);
    const sb = sealedBlob(b);
    const blobs = Buffer.concat([sa, sb]);
    const entry = (over: Partial<PackEntry>, data: Buffer, sealed: Buffer, offset: number): PackEntry => ({
      type: 'data',
      id: sha256(data),
      offset,
      length: sealed.length,
      rawLength: data.length,
      ...over,
    });
    const good = [entry({}, a, sa, 8), entry({}, b, sb, 8 + sa.length)];
    assert.deepEqual(parsePack(key, assemblePack(key, blobs, encodeEntries(good))), good, 'the hand-assembled pack parses');

    const lies: Array<[string, Buffer]> = [
      ['header not a whole number of entries', Buffer.concat([encodeEntries(good), Buffer.of(0)])],
      ['header one byte short of its entries', encodeEntries(good).subarray(0, 2 * ENTRY_LEN - 1)],
      ['unknown blob type 2', (() => { const h = encodeEntries(good); h[0] = 2; return h; })()],
      ['unknown blob type 255', (() => { const h = encodeEntries(good); h[ENTRY_LEN] = 255; return h; })()],
      ['first blob not at offset 8', encodeEntries([entry({ offset: 9 }, a, sa, 8), good[1]!])],
      ['gap between blobs', encodeEntries([good[0]!, entry({ offset: 8 + sa.length + 1 }, b, sb, 0)])],
      ['overlapping blobs', encodeEntries([good[0]!, entry({ offset: 8 + sa.length - 1 }, b, sb, 0)])],
      ['blob shorter than a seal', encodeEntries([entry({ length: SEAL_OVERHEAD - 1 }, a, sa, 8)])],
      ['blob running into the header', encodeEntries([good[0]!, entry({ length: sb.length + 1 }, b, sb, 8 + sa.length)])],
      ['blobs ending before the header', encodeEntries([good[0]!])],
      ['no entries but blob bytes present', Buffer.alloc(0)],
      ['absurd offset', encodeEntries([entry({ offset: 0xffffffff }, a, sa, 0)])],
      ['absurd length', encodeEntries([entry({ length: 0xffffffff }, a, sa, 8)])],
    ];
    for (const [what, header] of lies) {
      throwsOneOf(() => parsePack(key, assemblePack(key, blobs, header)), [PackFormatError], what);
    }
  });

  test('decodeEntries refuses tables that are not whole entries or run past the buffer', () => {
    const e: PackEntry = { type: 'tree', id: sha256(Buffer.from('x')), offset: 8, length: 40, rawLength: 1 };
    const table = encodeEntries([e, e]);
    assert.deepEqual(decodeEntries(table), [e, e]);
    throwsOneOf(() => decodeEntries(table.subarray(0, 89)), [PackFormatError], 'table of 89 bytes');
    throwsOneOf(() => decodeEntries(table, 1, 2), [PackFormatError], 'two entries starting at 1');
    throwsOneOf(() => decodeEntries(table, 0, 3), [PackFormatError], 'three entries in a table of two');
    throwsOneOf(() => decodeEntries(table, 0, 0xffffffff), [PackFormatError], 'absurd count');
  });
});

// ---------------------------------------------------------------- index files

function randomIndex(rng: Rng, packs: number, supersedes: number): IndexFileContent {
  const out: IndexPack[] = [];
  for (let p = 0; p < packs; p++) {
    const n = p % 10 === 0 ? 0 : 1 + rng.int(5);
    let offset = PACK_MAGIC.length;
    const entries: PackEntry[] = [];
    for (let i = 0; i < n; i++) {
      const length = SEAL_OVERHEAD + 1 + rng.int(100_000);
      entries.push({ type: rng.int(2) === 0 ? 'data' : 'tree', id: rng.bytes(32), offset, length, rawLength: rng.int(0x100000000) });
      offset += length;
    }
    out.push({ id: rng.bytes(32).toString('hex'), size: p === 1 ? 2 ** 48 - 1 : offset + 100, entries });
  }
  return { supersedes: Array.from({ length: supersedes }, () => rng.bytes(32).toString('hex')), packs: out };
}

describe('index file format', () => {
  test('encodeIndex then decodeIndex round-trips, including thousands of packs and sizes up to 2^48-1', () => {
    const rng = new Rng(20);
    for (const [packs, sup] of [
      [0, 0],
      [1, 0],
      [3, 2],
      [5000, 17],
    ] as const) {
      const content = randomIndex(rng, packs, sup);
      const encoded = encodeIndex(content);
      const decoded = decodeIndex(encoded);
      assert.deepEqual(decoded, content, `${packs} packs, ${sup} superseded`);
      assert.ok(encodeIndex(decoded).equals(encoded), 'the encoding is canonical');
    }
  });

  test('every truncation and extension of an index throws PackFormatError', GUARD, () => {
    const encoded = encodeIndex(randomIndex(new Rng(21), 4, 2));
    for (let len = 0; len < encoded.length; len++) {
      throwsOneOf(() => decodeIndex(encoded.subarray(0, len)), [PackFormatError], `index cut to ${len} of ${encoded.length} bytes`);
    }
    throwsOneOf(() => decodeIndex(Buffer.concat([encoded, Buffer.of(0)])), [PackFormatError], 'one trailing byte');
    throwsOneOf(() => decodeIndex(Buffer.concat([encoded, encoded])), [PackFormatError], 'index twice');
  });

  test('a bit flip either throws PackFormatError or decodes to content that re-encodes to exactly the damaged bytes', GUARD, () => {
    const encoded = encodeIndex(randomIndex(new Rng(22), 4, 2));
    let threw = 0;
    for (let pos = 0; pos < encoded.length; pos++) {
      for (let bit = 0; bit < 8; bit++) {
        const damaged = Buffer.from(encoded);
        damaged[pos]! ^= 1 << bit;
        let decoded: IndexFileContent;
        try {
          decoded = decodeIndex(damaged);
        } catch (err) {
          assert.ok(err instanceof PackFormatError, `bit ${bit} of byte ${pos}: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
          threw++;
          continue;
        }
        assert.ok(encodeIndex(decoded).equals(damaged), `bit ${bit} of byte ${pos}: decoded content does not re-encode to the input`);
      }
    }
    // Magic, version and every count must be among the bytes whose flips are caught.
    assert.ok(threw >= 8 * (4 + 1) + 8 * 4 * 2, `only ${threw} flips were caught`);
  });

  test('zero-filled, random and absurd-count inputs throw PackFormatError without allocating', GUARD, () => {
    const rng = new Rng(23);
    for (const len of [0, 1, 4, 5, 12, 13, 14, 100, 1 << 20]) {
      throwsOneOf(() => decodeIndex(Buffer.alloc(len)), [PackFormatError], `${len} zero bytes`);
      throwsOneOf(() => decodeIndex(rng.bytes(len)), [PackFormatError], `${len} random bytes`);
    }
    const head = (version = 1): Buffer => Buffer.concat([Buffer.from('HFIX', 'latin1'), Buffer.of(version)]);
    const u32 = (n: number): Buffer => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(n);
      return b;
    };
    const cases: Array<[string, Buffer]> = [
      ['version 0', Buffer.concat([head(0), u32(0), u32(0)])],
      ['version 2', Buffer.concat([head(2), u32(0), u32(0)])],
      ['supersedes count 2^32-1', Buffer.concat([head(), u32(0xffffffff), u32(0)])],
      ['supersedes count 2^27', Buffer.concat([head(), u32(1 << 27), u32(0)])],
      ['pack count 2^32-1', Buffer.concat([head(), u32(0), u32(0xffffffff)])],
      ['pack count 2^26', Buffer.concat([head(), u32(0), u32(1 << 26), rng.bytes(42)])],
      ['entry count 2^32-1', Buffer.concat([head(), u32(0), u32(1), rng.bytes(38), u32(0xffffffff)])],
      ['entry count 2^24 with one entry present', Buffer.concat([head(), u32(0), u32(1), rng.bytes(38), u32(1 << 24), Buffer.alloc(ENTRY_LEN)])],
      ['missing pack count', Buffer.concat([head(), u32(0), Buffer.alloc(3)])],
    ];
    for (const [what, buf] of cases) throwsOneOf(() => decodeIndex(buf), [PackFormatError], what);
    for (let i = 0; i < 2000; i++) {
      const buf = Buffer.concat([head(), rng.bytes(rng.int(300))]);
      try {
        const decoded = decodeIndex(buf);
        assert.ok(encodeIndex(decoded).equals(buf), `random body ${i} decoded but is not canonical`);
      } catch (err) {
        assert.ok(err instanceof PackFormatError, `random body ${i}: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
      }
    }
  });
});

// ---------------------------------------------------------------- sealed objects

describe('sealed objects (AES-256-GCM)', () => {
  const rng = new Rng(30);
  const key = rng.bytes(32);
  const aad = Buffer.from('holdfast:test', 'latin1');

  test('seal then unseal round-trips, for empty and multi-part plaintexts, and never reuses a nonce', () => {
    const parts = [Buffer.of(1), rng.bytes(1000), Buffer.alloc(0), rng.bytes(17)];
    const sealed = seal(key, aad, parts);
    assert.equal(sealed.length, SEAL_OVERHEAD + 1018);
    assert.ok(unseal(key, aad, sealed).equals(Buffer.concat(parts)));
    const empty = seal(key, aad, []);
    assert.equal(empty.length, SEAL_OVERHEAD);
    assert.equal(unseal(key, aad, empty).length, 0);
    const nonces = new Set<string>();
    for (let i = 0; i < 200; i++) nonces.add(seal(key, aad, parts).subarray(0, NONCE_LEN).toString('hex'));
    assert.equal(nonces.size, 200, 'every seal draws a fresh nonce');
    // A sealed object that is a view into a larger buffer (as in a pack) opens too.
    const inPack = Buffer.concat([rng.bytes(33), sealed, rng.bytes(5)]);
    assert.ok(unseal(key, aad, inPack.subarray(33, 33 + sealed.length)).equals(Buffer.concat(parts)));
    assert.ok(unseal(key, aad, new Uint8Array(inPack.buffer, inPack.byteOffset + 33, sealed.length)).equals(Buffer.concat(parts)));
  });

  test('sealParts gives the same layout as seal: its parts concatenate to an object that unseals', () => {
    for (const size of [0, 1, 15, 16, 17, 100_000]) {
      const plain = rng.bytes(size);
      const s = sealParts(key, aad, [Buffer.of(1), plain.subarray(0, size >> 1), plain.subarray(size >> 1)]);
      const joined = Buffer.concat(s.parts);
      assert.equal(joined.length, s.length, `${size} bytes: the reported length is the parts' total`);
      assert.equal(s.length, SEAL_OVERHEAD + 1 + size);
      assert.ok(unseal(key, aad, joined).equals(Buffer.concat([Buffer.of(1), plain])), `${size} bytes round-trip`);
    }
  });

  test('every bit flip in nonce, ciphertext or tag is a DecryptError', GUARD, () => {
    const sealed = seal(key, aad, [rng.bytes(64)]);
    for (let pos = 0; pos < sealed.length; pos++) {
      const region = pos < NONCE_LEN ? 'nonce' : pos >= sealed.length - TAG_LEN ? 'tag' : 'ciphertext';
      for (let bit = 0; bit < 8; bit++) {
        const damaged = Buffer.from(sealed);
        damaged[pos]! ^= 1 << bit;
        throwsOneOf(() => unseal(key, aad, damaged), [DecryptError], `bit ${bit} of byte ${pos} (${region}) flipped`);
      }
    }
  });

  test('a wrong AAD, a wrong key, or a wrong length is a DecryptError', () => {
    const plain = rng.bytes(100);
    const sealed = seal(key, aad, [plain]);
    const otherAad = Buffer.from(aad);
    otherAad[otherAad.length - 1]! ^= 1;
    for (const [what, a] of [
      ['AAD with one bit changed', otherAad],
      ['empty AAD', Buffer.alloc(0)],
      ['AAD with a byte appended', Buffer.concat([aad, Buffer.of(0)])],
      ['AAD missing its last byte', aad.subarray(0, -1)],
    ] as const) {
      throwsOneOf(() => unseal(key, a, sealed), [DecryptError], what);
    }
    const otherKey = Buffer.from(key);
    otherKey[0]! ^= 1;
    throwsOneOf(() => unseal(otherKey, aad, sealed), [DecryptError], 'key with one bit changed');
    for (let len = 0; len < sealed.length; len++) throwsOneOf(() => unseal(key, aad, sealed.subarray(0, len)), [DecryptError], `cut to ${len} bytes`);
    throwsOneOf(() => unseal(key, aad, Buffer.concat([sealed, Buffer.of(0)])), [DecryptError], 'one byte appended');
    throwsOneOf(() => unseal(key, aad, Buffer.alloc(SEAL_OVERHEAD)), [DecryptError], 'all zeros');
    assert.ok(unseal(key, aad, sealed).equals(plain), 'the original still opens');
  });
});
