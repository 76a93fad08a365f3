/**
 * Every decoder of repository objects survives any damage (issue 7): a seeded, reproducible
 * mutation fuzzer over real encoded objects of every kind, built with the real encoders — packs,
 * pack headers, index files, key files, the config, trees, compressed payloads, sealed objects —
 * and over the same objects stored in a real repository on the in-memory driver.
 *
 * Mutations: truncation at every field boundary and at random points, zero-filled ranges, single
 * and multiple bit flips, garbage of random length (whole or spliced in), forged length and count
 * fields (2^32-1, 2^31, off by one, …) and, for JSON objects, fields replaced by values of the
 * wrong type or range, deleted, duplicated, and deep nesting. The decoders that sit behind
 * authentication (pack header, index, tree, config, decompression) are fuzzed on their plaintext
 * too, and through the repository with objects sealed under the real key: a leaked key or a writer
 * bug must not turn into a crash.
 *
 * Every outcome must be a successful decode of semantically valid bytes (checked by an oracle per
 * kind) or the decoder's typed error (PackFormatError, DecryptError, KeyFormatError,
 * DecompressError, HoldfastError): never a RangeError, TypeError, SyntaxError or stack overflow.
 * Loops are bounded by the mutation counts; tests have timeouts only as hang guards; memory is
 * checked with process.memoryUsage().arrayBuffers, which a 4 GiB allocation would move.
 * A failure names the seed, the mutation number and what it did, so it reproduces.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { HoldfastError } from '../errors/catalogue.js';
import { MemoryBackend } from '../storage/mem.js';
import { Rng } from '../testing/helpers.js';
import { checkRepository } from '../checker/check.js';
import { type Tree, type TreeNode, decodeTree, encodeTree, nsToSeconds } from '../files/tree.js';
import { DecompressError, MAX_PLAINTEXT, MODE_NONE, MODE_ZSTD, compress, decompress, scanFrames } from './compress.js';
import { DecryptError, KEY_LEN, SEAL_OVERHEAD, seal, sha256, sha256Hex, unseal } from './crypto.js';
import { type IndexFileContent, decodeIndex, encodeIndex } from './index-file.js';
import { KeyFormatError, createKeyFile, deriveKek, kdfParams, parseKeyFile, unwrapWithKek } from './keys.js';
import { type BlobType, ENTRY_LEN, PACK_MAGIC, PACK_TRAILER_MAGIC, PackBuilder, type PackEntry, PackFormatError, TRAILER_LEN, decodeHeaderPlaintext, encodeEntries, headerLocation, packName, parsePack } from './pack.js';
import { Repository, validateConfig } from './repository.js';
import { sealBlob } from './seal-blob.js';
import { saveSnapshot } from './snapshot.js';

const GUARD = { timeout: 120_000 };
const PW = 'robust password';
const KDF = kdfParams(10);
const HEADER_AAD = Buffer.from('holdfast:pack-header', 'latin1');
const HEX64 = /^[0-9a-f]{64}$/;
/** A decoder that allocated in proportion to a forged 4 GiB (or even 2^31) length would exceed this. */
const MEMORY_SLACK = 256 << 20;

type ErrorClass = abstract new (...args: never[]) => Error;

// ---------------------------------------------------------------- mutations

/** A length, count or offset field of an encoded object: where forged values go. */
interface Field {
  readonly at: number;
  readonly size: 1 | 3 | 4 | 6 | 8;
  readonly what: string;
}

interface Mutation {
  readonly what: string;
  readonly bytes: Buffer;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

/** Values a forger would write into a field of `size` bytes that held `orig` in an object of `len` bytes. */
function forgedValues(size: Field['size'], orig: number, len: number): number[] {
  switch (size) {
    case 1:
      return [0, 0xff, 0x80, orig ^ 0xff];
    case 3:
      return []; // zstd block headers: see forge()
    case 4:
      return [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, (orig + 1) >>> 0, (orig - 1) >>> 0, len, len + 1, orig * 2];
    case 6:
      return [0, 2 ** 48 - 1, orig + 1, orig - 1, len];
    case 8:
      return [0, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1];
  }
}

function readField(buf: Buffer, f: Field): number {
  switch (f.size) {
    case 1:
      return buf[f.at]!;
    case 3:
      return buf.readUIntLE(f.at, 3);
    case 4:
      return buf.readUInt32LE(f.at);
    case 6:
      return buf.readUIntLE(f.at, 6);
    case 8:
      return Number(buf.readBigUInt64LE(f.at));
  }
}

function forge(rng: Rng, original: Buffer, f: Field): Mutation {
  const bytes = Buffer.from(original);
  if (f.size === 3) {
    // A zstd block header: any type (3 is reserved), any size up to the 21-bit maximum.
    const sizes = [0, 1, (128 << 10) + 1, (1 << 21) - 1, rng.int(1 << 21)];
    const v = (sizes[rng.int(sizes.length)]! << 3) | (rng.int(4) << 1) | rng.int(2);
    bytes.writeUIntLE(v >>> 0, f.at, 3);
    return { what: `${f.what} at ${f.at} forged to 0x${v.toString(16)}`, bytes };
  }
  const values = forgedValues(f.size, readField(original, f), original.length);
  const v = values[rng.int(values.length)]!;
  if (f.size === 1) bytes[f.at] = v & 0xff;
  else if (f.size === 4) bytes.writeUInt32LE(v >>> 0, f.at);
  else if (f.size === 6) bytes.writeUIntLE(Math.max(0, Math.min(v, 2 ** 48 - 1)), f.at, 6);
  else bytes.writeBigUInt64LE(BigInt(v), f.at);
  return { what: `${f.what} at ${f.at} forged to ${v}`, bytes };
}

/** `count` seeded byte-level mutations of `original`; field boundaries are favoured cut points. */
function byteMutations(seed: number, original: Buffer, count: number, fields: readonly Field[] = []): Mutation[] {
  const rng = new Rng(seed);
  const len = original.length;
  const cuts = [...new Set([0, 1, len >> 1, len - 1, ...fields.flatMap((f) => [f.at, f.at + f.size])].filter((c) => c >= 0 && c < len))];
  // Every boundary cut first (up to a third of the budget), then random mutations.
  const out: Mutation[] = cuts.slice(0, Math.ceil(count / 3)).map((at) => ({ what: `truncated to ${at} of ${len} bytes`, bytes: Buffer.from(original.subarray(0, at)) }));
  const pos = (): number => (len === 0 ? 0 : rng.int(len));
  while (out.length < count) {
    const kind = rng.int(fields.length > 0 ? 10 : 8);
    const bytes = Buffer.from(original);
    switch (kind) {
      case 0: {
        const at = pos();
        out.push({ what: `truncated to ${at} of ${len} bytes`, bytes: bytes.subarray(0, at) });
        break;
      }
      case 1: {
        const at = pos();
        out.push({ what: `first ${at} bytes cut off`, bytes: bytes.subarray(at) });
        break;
      }
      case 2: {
        const a = pos();
        const b = Math.min(len, a + 1 + rng.int(rng.int(2) === 0 ? 16 : Math.max(1, len)));
        bytes.fill(0, a, b);
        out.push({ what: `bytes ${a}..${b} zero-filled`, bytes });
        break;
      }
      case 3: {
        const at = pos();
        const bit = rng.int(8);
        if (len > 0) bytes[at]! ^= 1 << bit;
        out.push({ what: `bit ${bit} of byte ${at} flipped`, bytes });
        break;
      }
      case 4: {
        const n = 2 + rng.int(15);
        const flips: string[] = [];
        for (let k = 0; k < n && len > 0; k++) {
          const at = pos();
          const bit = rng.int(8);
          bytes[at]! ^= 1 << bit;
          flips.push(`${at}.${bit}`);
        }
        out.push({ what: `bits flipped (byte.bit): ${flips.join(' ')}`, bytes });
        break;
      }
      case 5: {
        const n = rng.int(2 * len + 64);
        out.push({ what: `replaced by ${n} random bytes`, bytes: rng.bytes(n) });
        break;
      }
      case 6: {
        const a = pos();
        const garbage = rng.bytes(1 + rng.int(64));
        const del = rng.int(3) === 0 ? 0 : rng.int(garbage.length + 1);
        out.push({ what: `${garbage.length} random bytes spliced in at ${a} over ${del}`, bytes: Buffer.concat([bytes.subarray(0, a), garbage, bytes.subarray(Math.min(len, a + del))]) });
        break;
      }
      case 7: {
        const n = 1 + rng.int(Math.max(1, len));
        out.push({ what: `${n} random bytes appended`, bytes: Buffer.concat([bytes, rng.bytes(n)]) });
        break;
      }
      default: {
        const f = fields[rng.int(fields.length)]!;
        if (f.at + f.size <= len) out.push(forge(rng, original, f));
      }
    }
  }
  return out;
}

const EVIL: readonly unknown[] = [
  null,
  true,
  0,
  -1,
  0.5,
  2 ** 31,
  2 ** 32,
  2 ** 53,
  -(2 ** 53),
  1e308,
  '',
  '.',
  '..',
  'a/b',
  '/',
  'x\u0000y',
  '\ud800',
  '-',
  '1e3',
  ' 1',
  '0x10',
  '9'.repeat(40),
  'z'.repeat(5000),
  [],
  [1, 2],
  {},
  { nodes: [] },
  ['ab'.repeat(32)],
];

/** A random path to a value inside `v` (array indices and object keys), possibly empty. */
function randomPath(rng: Rng, v: unknown): Array<string | number> {
  const path: Array<string | number> = [];
  let cur = v;
  while (rng.int(4) !== 0) {
    if (Array.isArray(cur) && cur.length > 0) {
      const i = rng.int(cur.length);
      path.push(i);
      cur = cur[i];
    } else if (typeof cur === 'object' && cur !== null && Object.keys(cur).length > 0) {
      const keys = Object.keys(cur);
      const k = keys[rng.int(keys.length)]!;
      path.push(k);
      cur = (cur as Record<string, unknown>)[k];
    } else break;
  }
  return path;
}

/** `count` seeded structural mutations of a JSON document (serialised back to bytes). */
function jsonMutations(seed: number, original: Buffer, count: number): Mutation[] {
  const rng = new Rng(seed);
  const out: Mutation[] = [];
  while (out.length < count) {
    const doc = JSON.parse(original.toString('utf8')) as unknown;
    const path = randomPath(rng, doc);
    const where = `/${path.join('/')}`;
    const kind = rng.int(8);
    if (kind === 5) {
      // Deep nesting in place of a value: nothing may recurse on it (JSON.parse does not, but
      // JSON.stringify, String() and template literals of arrays do). Parsing 200,000 levels takes
      // ~0.1 s, so that depth is rare.
      const depth = rng.int(20) === 0 ? 200_000 : rng.int(2) === 0 ? 1000 : 20_000;
      const marker = `"@@nest${out.length}@@"`;
      const withMarker = setAt(doc, path, JSON.parse(marker));
      const text = JSON.stringify(withMarker).replace(marker, '['.repeat(depth) + ']'.repeat(depth));
      out.push({ what: `${where} replaced by ${depth} nested arrays`, bytes: Buffer.from(text) });
      continue;
    }
    let mutated: unknown;
    let what: string;
    if (kind === 0 && path.length > 0) {
      mutated = deleteAt(doc, path);
      what = `${where} deleted`;
    } else if (kind === 1) {
      // Duplicate an array element next to itself (duplicate tree names, duplicate ids).
      const arrPath = path.slice(0, path.findLastIndex((p) => typeof p === 'number') + 1);
      const idx = arrPath.pop();
      const arr = getAt(doc, arrPath);
      if (typeof idx !== 'number' || !Array.isArray(arr)) continue;
      const copy = [...arr];
      copy.splice(idx, 0, structuredClone(arr[idx]));
      mutated = setAt(doc, arrPath, copy);
      what = `/${arrPath.join('/')}[${idx}] duplicated`;
    } else {
      const v = EVIL[rng.int(EVIL.length)];
      mutated = setAt(doc, path, structuredClone(v));
      what = `${where} set to ${JSON.stringify(v)?.slice(0, 40)}`;
    }
    out.push({ what, bytes: Buffer.from(JSON.stringify(mutated)) });
  }
  return out;
}

function getAt(doc: unknown, path: ReadonlyArray<string | number>): unknown {
  let cur = doc;
  for (const p of path) cur = (cur as Record<string | number, unknown>)[p];
  return cur;
}

function setAt(doc: unknown, path: ReadonlyArray<string | number>, value: unknown): unknown {
  if (path.length === 0) return value;
  const parent = getAt(doc, path.slice(0, -1)) as Record<string | number, unknown>;
  parent[path[path.length - 1]!] = value;
  return doc;
}

function deleteAt(doc: unknown, path: ReadonlyArray<string | number>): unknown {
  const parent = getAt(doc, path.slice(0, -1));
  const last = path[path.length - 1]!;
  if (Array.isArray(parent) && typeof last === 'number') parent.splice(last, 1);
  else delete (parent as Record<string | number, unknown>)[last];
  return doc;
}

// ---------------------------------------------------------------- the runner

interface Tally {
  total: number;
  decoded: number;
  errors: Map<string, number>;
}

const tallies = new Map<string, Tally>();

/**
 * Feed every mutation to `decode`. It must return (and `valid` must accept what it returned) or
 * throw one of `typed`. Memory must stay within MEMORY_SLACK of where it started.
 */
async function fuzz<T>(
  name: string,
  seed: number,
  mutations: readonly Mutation[],
  decode: (bytes: Buffer) => T | Promise<T>,
  typed: readonly ErrorClass[],
  valid: (result: T, bytes: Buffer, what: string) => void,
): Promise<void> {
  const tally = tallies.get(name) ?? { total: 0, decoded: 0, errors: new Map<string, number>() };
  tallies.set(name, tally);
  const base = process.memoryUsage().arrayBuffers;
  for (const [i, m] of mutations.entries()) {
    const where = `${name}, seed ${seed}, mutation ${i} (${m.what})`;
    let result: T;
    try {
      result = await decode(m.bytes);
    } catch (err) {
      if (!typed.some((t) => err instanceof t)) {
        assert.fail(`${where}: expected ${typed.map((t) => t.name).join(' or ')}, got ${err instanceof Error ? `${err.name}: ${err.message}\n${err.stack}` : String(err)}`);
      }
      const key = err instanceof HoldfastError ? `${err.name}:${err.code}` : (err as Error).name;
      tally.errors.set(key, (tally.errors.get(key) ?? 0) + 1);
      tally.total++;
      continue;
    } finally {
      const growth = process.memoryUsage().arrayBuffers - base;
      assert.ok(growth < MEMORY_SLACK, `${where}: array buffers grew by ${growth} bytes`);
    }
    valid(result, m.bytes, where);
    tally.decoded++;
    tally.total++;
  }
}

// ---------------------------------------------------------------- real objects

interface BuiltPack {
  key: Buffer;
  bytes: Buffer;
  entries: PackEntry[];
  headerOffset: number;
  blobs: Array<{ type: BlobType; data: Buffer }>;
}

/** A pack of `n` blobs built like Repository builds one: sealBlob with real zstd compression. */
async function buildPack(seed: number, n: number): Promise<BuiltPack> {
  const rng = new Rng(seed);
  const key = rng.bytes(KEY_LEN);
  const builder = new PackBuilder();
  const parts: Buffer[] = [...builder.head()];
  const blobs: BuiltPack['blobs'] = [];
  for (let i = 0; i < n; i++) {
    const type: BlobType = i % 3 === 2 ? 'tree' : 'data';
    const data = i % 2 === 0 ? rng.text(100 + rng.int(3000)) : rng.bytes(rng.int(300));
    const id = sha256(data);
    const sealed = await sealBlob(key, type, id, data, { algo: 'zstd', level: 3 });
    parts.push(...builder.add(type, id, sealed, data.length));
    blobs.push({ type, data });
  }
  const { tail, entries } = builder.finish(key);
  const bytes = Buffer.concat([...parts, ...tail]);
  const last = entries[entries.length - 1];
  return { key, bytes, entries, headerOffset: last ? last.offset + last.length : PACK_MAGIC.length, blobs };
}

/** The fields of an encoded entry table starting at `at`. */
function entryFields(at: number, count: number, label: string): Field[] {
  const out: Field[] = [];
  for (let i = 0, o = at; i < count; i++, o += ENTRY_LEN) {
    out.push({ at: o, size: 1, what: `${label} entry ${i} type` }, { at: o + 33, size: 4, what: `${label} entry ${i} offset` }, { at: o + 37, size: 4, what: `${label} entry ${i} length` }, { at: o + 41, size: 4, what: `${label} entry ${i} raw length` });
  }
  return out;
}

function indexFields(content: IndexFileContent): Field[] {
  const out: Field[] = [{ at: 4, size: 1, what: 'version' }, { at: 5, size: 4, what: 'supersedes count' }];
  let o = 9 + content.supersedes.length * 32;
  out.push({ at: o, size: 4, what: 'pack count' });
  o += 4;
  for (const [i, p] of content.packs.entries()) {
    out.push({ at: o + 32, size: 6, what: `pack ${i} size` }, { at: o + 38, size: 4, what: `pack ${i} entry count` });
    o += 42;
    out.push(...entryFields(o, p.entries.length, `pack ${i}`));
    o += p.entries.length * ENTRY_LEN;
  }
  return out;
}

/** The frame and block header fields of a zstd payload (for forging sizes and types). */
function zstdFields(z: Buffer): Field[] {
  const out: Field[] = [];
  let o = 0;
  while (o + 5 <= z.length && z.readUInt32LE(o) === 0xfd2fb528) {
    const fhd = z[o + 4]!;
    out.push({ at: o + 4, size: 1, what: 'frame header descriptor' });
    const single = (fhd >> 5) & 1;
    const did = [0, 1, 2, 4][fhd & 3]!;
    const fcsBytes = fhd >> 6 === 0 ? single : 1 << (fhd >> 6);
    let p = o + 5;
    if (!single) out.push({ at: p++, size: 1, what: 'window descriptor' });
    p += did;
    if (fcsBytes === 4 || fcsBytes === 8) out.push({ at: p, size: fcsBytes, what: 'frame content size' });
    else if (fcsBytes === 1) out.push({ at: p, size: 1, what: 'frame content size' });
    p += fcsBytes;
    for (;;) {
      if (p + 3 > z.length) return out;
      const h = z.readUIntLE(p, 3);
      out.push({ at: p, size: 3, what: 'block header' });
      const type = (h >> 1) & 3;
      p += 3 + (type === 1 ? 1 : h >>> 3);
      if (h & 1) break;
    }
    if (fhd & 4) p += 4;
    o = p;
  }
  return out;
}

function node(name: string, type: TreeNode['type'], extra: Partial<TreeNode> = {}): TreeNode {
  return { name, type, mode: type === 'dir' ? 0o755 : 0o644, mtime: '1700000000123456789', atime: '1700000000000000000', ctime: '-1000000000', uid: 1000, gid: 1000, inode: '123456', ...extra };
}

/** A tree with every node type and every optional field. */
function sampleTree(rng: Rng): Tree {
  return {
    nodes: [
      node('.hidden', 'file', { size: 0, content: [] }),
      node('big.bin', 'file', { size: 3 << 20, content: [rng.bytes(32).toString('hex'), rng.bytes(32).toString('hex'), rng.bytes(32).toString('hex')] }),
      node('dev-null', 'chardev', { rdev: 259, mode: 0o666 }),
      node('disk', 'blockdev', { rdev: 2049 }),
      node('etc', 'dir', { subtree: rng.bytes(32).toString('hex') }),
      node('fifo', 'fifo'),
      node('link', 'symlink', { target: '../../etc/passwd', mode: 0o777 }),
      node('sock', 'socket'),
      node('ünïcødé ✓', 'file', { size: 5, content: [rng.bytes(32).toString('hex')] }),
    ],
  };
}

/** The oracle for a tree that decoded: everything a walker or restorer relies on holds. */
function assertTreeValid(tree: Tree, where: string): void {
  assert.ok(Array.isArray(tree.nodes), `${where}: decoded without a node list`);
  const names = new Set<string>();
  for (const n of tree.nodes) {
    assert.ok(typeof n.name === 'string' && n.name !== '' && n.name !== '.' && n.name !== '..' && !/[/\0]/.test(n.name) && !/\p{Cs}/u.test(n.name), `${where}: unsafe name ${JSON.stringify(n.name)} decoded`);
    assert.ok(!names.has(n.name), `${where}: duplicate name ${JSON.stringify(n.name)} decoded`);
    names.add(n.name);
    assert.ok(['file', 'dir', 'symlink', 'fifo', 'socket', 'chardev', 'blockdev'].includes(n.type), `${where}: type ${JSON.stringify(n.type)}`);
    assert.ok(Number.isSafeInteger(n.mode) && n.mode >= 0 && n.mode <= 0o7777, `${where}: mode ${JSON.stringify(n.mode)}`);
    for (const t of [n.mtime, n.atime, n.ctime]) assert.ok(typeof t === 'string' && Number.isFinite(nsToSeconds(t)), `${where}: time ${JSON.stringify(t)}`);
    assert.ok(typeof n.inode === 'string' && /^\d+$/.test(n.inode), `${where}: inode ${JSON.stringify(n.inode)}`);
    for (const v of [n.uid, n.gid]) assert.ok(Number.isSafeInteger(v) && v >= 0, `${where}: owner ${JSON.stringify(v)}`);
    if (n.type === 'file') {
      assert.ok(Array.isArray(n.content) && n.content.every((c) => typeof c === 'string' && HEX64.test(c)), `${where}: content ${JSON.stringify(n.content)?.slice(0, 80)}`);
      assert.ok(Number.isSafeInteger(n.size) && n.size! >= 0, `${where}: size ${JSON.stringify(n.size)}`);
    }
    if (n.type === 'dir') assert.ok(typeof n.subtree === 'string' && HEX64.test(n.subtree), `${where}: subtree ${JSON.stringify(n.subtree)}`);
    if (n.type === 'symlink') assert.ok(typeof n.target === 'string' && !n.target.includes('\0'), `${where}: target ${JSON.stringify(n.target)}`);
    if (n.rdev !== undefined) assert.ok(Number.isSafeInteger(n.rdev) && n.rdev >= 0, `${where}: rdev ${JSON.stringify(n.rdev)}`);
  }
}

// ---------------------------------------------------------------- the byte formats, directly

describe('robustness: decoders given damaged bytes', () => {
  test('packs: parsePack returns the authenticated entries or throws PackFormatError/DecryptError', GUARD, async () => {
    const p = await buildPack(101, 7);
    const fields: Field[] = [{ at: p.bytes.length - TRAILER_LEN, size: 4, what: 'header length' }, ...p.entries.map((e, i): Field => ({ at: e.offset, size: 4, what: `start of blob ${i}` })), { at: p.headerOffset, size: 4, what: 'start of header' }];
    await fuzz('pack', 101, byteMutations(101, p.bytes, 400, fields), (b) => parsePack(p.key, b), [PackFormatError, DecryptError], (entries, _b, where) => {
      // The header is authenticated: whatever else was damaged, it can only decode to the original.
      assert.deepEqual(entries, p.entries, `${where}: decoded entries differ from the sealed header's`);
    });
  });

  test('pack headers on plaintext: the layout is enforced, or PackFormatError', GUARD, async () => {
    const p = await buildPack(102, 9);
    const plain = encodeEntries(p.entries);
    await fuzz('pack header (plaintext)', 102, byteMutations(102, plain, 400, entryFields(0, p.entries.length, 'header')), (b) => decodeHeaderPlaintext(b, p.headerOffset), [PackFormatError], (entries, b, where) => {
      assert.ok(encodeEntries(entries).equals(b), `${where}: decoded entries do not re-encode to the input`);
      let expect = PACK_MAGIC.length;
      for (const e of entries) {
        assert.ok(e.offset === expect && e.length >= SEAL_OVERHEAD, `${where}: entry outside the layout decoded`);
        expect += e.length;
      }
      assert.equal(expect, p.headerOffset, `${where}: entries do not end at the header`);
    });
    // The trailer alone: any 8 bytes and any pack size give a location inside the pack or PackFormatError.
    const rng = new Rng(103);
    const trailers = Array.from({ length: 60 }, (_, i): Mutation => {
      const t = Buffer.concat([u32([0, SEAL_OVERHEAD, 0xffffffff, 0x80000000, rng.int(1 << 20)][i % 5]!), i % 7 === 0 ? rng.bytes(4) : PACK_TRAILER_MAGIC]);
      return { what: `trailer ${t.toString('hex')}`, bytes: t };
    });
    for (const size of [0, 15, 16, 44, 1000, 2 ** 40, -1, 0.5, Number.NaN]) {
      await fuzz('pack trailer', 103, trailers, (t) => headerLocation(size, t), [PackFormatError], (loc, _t, where) => {
        assert.ok(loc.offset >= PACK_MAGIC.length && loc.length >= SEAL_OVERHEAD && loc.offset + loc.length + TRAILER_LEN === size, `${where}, pack size ${size}: location ${JSON.stringify(loc)} outside the pack`);
      });
    }
  });

  test('index files on plaintext: decodeIndex returns canonical content whose entries fit their packs, or PackFormatError', GUARD, async () => {
    const a = await buildPack(104, 5);
    const b = await buildPack(105, 3);
    const content: IndexFileContent = {
      supersedes: [sha256Hex(Buffer.from('old index 1')), sha256Hex(Buffer.from('old index 2'))],
      packs: [
        { id: sha256Hex(a.bytes), size: a.bytes.length, entries: a.entries },
        { id: sha256Hex(b.bytes), size: b.bytes.length, entries: b.entries },
      ],
    };
    const plain = encodeIndex(content);
    assert.deepEqual(decodeIndex(plain), content);
    await fuzz('index (plaintext)', 104, byteMutations(104, plain, 600, indexFields(content)), decodeIndex, [PackFormatError], (decoded, bytes, where) => {
      assert.ok(encodeIndex(decoded).equals(bytes), `${where}: decoded index does not re-encode to the input`);
      for (const pk of decoded.packs) {
        for (const e of pk.entries) assert.ok(e.offset >= PACK_MAGIC.length && e.length >= SEAL_OVERHEAD && e.offset + e.length <= pk.size - TRAILER_LEN - SEAL_OVERHEAD, `${where}: entry outside its pack decoded`);
      }
    });
  });

  test('sealed objects: unseal returns the original plaintext or throws DecryptError', GUARD, async () => {
    const rng = new Rng(106);
    const key = rng.bytes(KEY_LEN);
    const aad = Buffer.from('holdfast:index', 'latin1');
    const plain = Buffer.concat([Buffer.of(MODE_NONE), rng.bytes(500)]);
    const sealed = seal(key, aad, [plain]);
    await fuzz('sealed object', 106, byteMutations(106, sealed, 200), (b) => unseal(key, aad, b), [DecryptError], (out, _b, where) => {
      assert.ok(out.equals(plain), `${where}: unsealed to other bytes`);
    });
  });

  test('key files: parseKeyFile returns a usable file or KeyFormatError; unwrapping never throws', GUARD, async () => {
    const rng = new Rng(107);
    const master = rng.bytes(KEY_LEN);
    const { bytes } = await createKeyFile(master, PW, KDF);
    const original = parseKeyFile(bytes);
    const kek = await deriveKek(original, PW);
    assert.ok(unwrapWithKek(original, kek)?.equals(master));
    const mutations = [...byteMutations(107, bytes, 200), ...jsonMutations(108, bytes, 300)];
    await fuzz('key file', 107, mutations, parseKeyFile, [KeyFormatError], (file, _b, where) => {
      for (const f of ['created', 'host', 'username', 'salt', 'data'] as const) assert.equal(typeof file[f], 'string', `${where}: ${f}`);
      assert.ok(file.N * file.r <= 2 ** 25 && file.N * file.r * file.p <= 2 ** 25, `${where}: scrypt parameters ${file.N}/${file.r}/${file.p} decoded`);
      // No scrypt here (a mutated file may legitimately ask for a lot): the original KEK either opens it or not.
      const m = unwrapWithKek(file, kek);
      assert.ok(m === undefined || m.equals(master), `${where}: unwrapped another master key`);
    });
  });

  test('config on plaintext: validateConfig returns a usable config or INTEGRITY/FORMAT_UNSUPPORTED', GUARD, async () => {
    const rng = new Rng(109);
    const cfg = { version: 1, id: rng.bytes(16).toString('hex'), created: new Date(0).toISOString(), chunker: { seed: rng.bytes(32).toString('base64'), min: 512 << 10, avg: 1 << 20, max: 8 << 20 }, later: { field: [1, 2] } };
    const bytes = Buffer.from(JSON.stringify(cfg));
    const decode = (b: Buffer): ReturnType<typeof validateConfig> => {
      let v: unknown;
      try {
        v = JSON.parse(b.toString('utf8'));
      } catch {
        throw new HoldfastError('INTEGRITY', 'not JSON (as parseConfig reports it)');
      }
      return validateConfig(v, 'mem:');
    };
    await fuzz('config (plaintext)', 109, [...jsonMutations(109, bytes, 300), ...byteMutations(110, bytes, 100)], decode, [HoldfastError], (c, _b, where) => {
      assert.equal(c.version, 1, `${where}: version`);
      assert.match(c.id, /^[0-9a-f]{32}$/, `${where}: id`);
      const k = c.chunker;
      assert.ok([k.min, k.avg, k.max].every((v) => Number.isSafeInteger(v) && v > 0 && v <= 64 << 20) && k.min <= k.avg && k.avg <= k.max, `${where}: chunker ${JSON.stringify(k)}`);
      assert.equal(typeof k.seed, 'string', `${where}: seed`);
    });
  });

  test('trees: decodeTree returns a tree every walker and restorer can use, or INTEGRITY/UNSAFE_PATH', GUARD, async () => {
    const rng = new Rng(111);
    const tree = sampleTree(rng);
    const bytes = encodeTree(tree);
    assert.deepEqual(decodeTree(bytes, 'sample'), tree);
    const mutations = [...jsonMutations(111, bytes, 600), ...byteMutations(112, bytes, 250)];
    const expectCode = (err: unknown): boolean => err instanceof HoldfastError && (err.code === 'INTEGRITY' || err.code === 'UNSAFE_PATH');
    await fuzz('tree', 111, mutations, (b) => {
      try {
        return decodeTree(b, 'mutated');
      } catch (err) {
        if (!expectCode(err)) throw new TypeError(`not INTEGRITY or UNSAFE_PATH: ${String(err)}`);
        throw err;
      }
    }, [HoldfastError], (t, _b, where) => assertTreeValid(t, where));
  });

  test('compressed payloads: decompress returns at most the allowed bytes (exactly rawLength when given) or DecompressError', GUARD, async () => {
    const rng = new Rng(113);
    const payloads: Array<{ what: string; raw: Buffer; z: Buffer }> = [];
    for (const size of [300, 5000, 70_000]) {
      const raw = rng.text(size);
      const [mode, z] = await compress(raw, { algo: 'zstd', level: 3 });
      assert.equal(mode, MODE_ZSTD);
      payloads.push({ what: `${size} bytes of text`, raw, z });
    }
    // Several frames (as large payloads are written), and a frame of mostly RLE blocks.
    const [, z1] = await compress(payloads[0]!.raw, { algo: 'zstd', level: 19 });
    const [, z2] = await compress(payloads[1]!.raw, { algo: 'zstd', level: -5 });
    payloads.push({ what: 'two frames', raw: Buffer.concat([payloads[0]!.raw, payloads[1]!.raw]), z: Buffer.concat([z1, z2]) });
    const zeros = Buffer.concat([Buffer.alloc(600_000), rng.text(100)]);
    payloads.push({ what: 'zeros', raw: zeros, z: (await compress(zeros, { algo: 'zstd', level: 3 }))[1] });
    for (const [i, pl] of payloads.entries()) {
      assert.ok((await decompress(MODE_ZSTD, pl.z, pl.raw.length)).equals(pl.raw), `${pl.what} round-trips`);
      const mutations = byteMutations(114 + i, pl.z, 120, zstdFields(pl.z));
      const limit = pl.raw.length * 2 + (128 << 10);
      // With the raw length known (blobs), without it (sealed files), and under a tight limit (the config).
      await fuzz('zstd (raw length known)', 114 + i, mutations, (b) => decompress(MODE_ZSTD, b, pl.raw.length), [DecompressError], (out, _b, where) => {
        assert.equal(out.length, pl.raw.length, `${where}: decompressed to another length`);
      });
      await fuzz('zstd (raw length unknown)', 114 + i, mutations, (b) => decompress(MODE_ZSTD, b, undefined, limit), [DecompressError], (out, _b, where) => {
        assert.ok(out.length <= limit, `${where}: ${out.length} bytes is more than the limit ${limit}`);
      });
      // A forged raw length never makes it allocate that much.
      await fuzz('zstd (forged raw length)', 114 + i, mutations.slice(0, 20), (b) => decompress(MODE_ZSTD, b, 2 ** 32 - 1), [DecompressError], (_out, _b, where) => assert.fail(`${where}: decoded to 4 GiB`));
    }
    // Mode bytes other than 0 and 1, and no mode byte at all.
    for (const mode of [2, 7, 255, undefined]) await assert.rejects(decompress(mode, payloads[0]!.z), DecompressError);
  });
});

// ---------------------------------------------------------------- forged lengths and memory

describe('robustness: forged lengths do not allocate', () => {
  test('a forged 4 GiB length or count is refused before anything of that size is allocated', GUARD, async () => {
    const base = process.memoryUsage().arrayBuffers;
    const grew = (): number => process.memoryUsage().arrayBuffers - base;
    const rng = new Rng(120);

    // zstd: a frame declaring 4 GiB; a forged raw length; a bomb of RLE blocks (128 KiB from 4 bytes each).
    const fcs4g = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xa0, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00, 0x00]);
    await assert.rejects(decompress(MODE_ZSTD, fcs4g), DecompressError);
    await assert.rejects(decompress(MODE_ZSTD, fcs4g, 2 ** 32 - 1), DecompressError);
    const rle = (blocks: number): Buffer => {
      const parts = [Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58])]; // no content size, 2 MiB window
      for (let i = 0; i < blocks; i++) {
        const h = ((128 << 10) << 3) | (1 << 1) | (i === blocks - 1 ? 1 : 0);
        parts.push(Buffer.from([h & 0xff, (h >> 8) & 0xff, (h >> 16) & 0xff, 0x41]));
      }
      return Buffer.concat(parts);
    };
    const bomb = rle(40_000); // 160 KB that would decompress to 5 GiB
    assert.ok(scanFrames(bomb).bound > MAX_PLAINTEXT);
    await assert.rejects(decompress(MODE_ZSTD, bomb), /more than the \d+ bytes allowed/);
    await assert.rejects(decompress(MODE_ZSTD, bomb, 100), DecompressError);
    await assert.rejects(decompress(MODE_ZSTD, rle(2000), undefined, 1 << 20), /more than the 1048576 bytes allowed/, '256 MiB of RLE under a 1 MiB limit is refused, not decoded');
    assert.equal((await decompress(MODE_ZSTD, rle(8))).length, 8 * (128 << 10), 'a small RLE payload within the limit decodes');

    // Pack trailer and index counts.
    const trailer = Buffer.concat([u32(0xffffffff), PACK_TRAILER_MAGIC]);
    assert.throws(() => headerLocation(2 ** 40, trailer), PackFormatError);
    const head = Buffer.concat([Buffer.from('HFIX', 'latin1'), Buffer.of(1)]);
    for (const buf of [
      Buffer.concat([head, u32(0xffffffff), u32(0)]),
      Buffer.concat([head, u32(0), u32(0xffffffff)]),
      Buffer.concat([head, u32(0), u32(1), rng.bytes(32), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), u32(0xffffffff)]),
    ]) {
      assert.throws(() => decodeIndex(buf), PackFormatError);
    }
    // An entry claiming 4 GiB inside a pack of a few bytes: refused, so no range read asks for it.
    const entry = encodeEntries([{ type: 'data', id: rng.bytes(32), offset: 8, length: 0xffffffff, rawLength: 0xffffffff }]);
    const small = Buffer.concat([head, u32(0), u32(1), rng.bytes(32), Buffer.from([200, 0, 0, 0, 0, 0]), u32(1), entry]);
    assert.throws(() => decodeIndex(small), /outside the pack/);

    // Key files asking scrypt for 16 GiB or 16 times the work are refused before any derivation.
    const { bytes } = await createKeyFile(rng.bytes(KEY_LEN), PW, KDF);
    for (const [N, r, p] of [
      [2 ** 22, 32, 1],
      [2 ** 22, 8, 16],
      [2 ** 30, 1, 1],
    ] as const) {
      const forged = { ...(JSON.parse(bytes.toString('utf8')) as object), N, r, p };
      assert.throws(() => parseKeyFile(Buffer.from(JSON.stringify(forged))), KeyFormatError, `N=${N} r=${r} p=${p}`);
    }
    assert.throws(() => parseKeyFile(Buffer.alloc(1 << 20, 0x20)), KeyFormatError);

    // Trees: absurd numbers and 300,000 levels of nesting.
    const t = sampleTree(rng);
    const forged = JSON.stringify({ nodes: [{ ...t.nodes[1], size: 1e300 }] });
    assert.throws(() => decodeTree(Buffer.from(forged), 'x'), HoldfastError);
    assert.throws(() => decodeTree(Buffer.from(`{"nodes":${'['.repeat(300_000)}${']'.repeat(300_000)}}`), 'x'), HoldfastError);

    assert.ok(grew() < 64 << 20, `array buffers grew by ${grew()} bytes`);
  });
});

// ---------------------------------------------------------------- a real repository

interface Fixture {
  backend: MemoryBackend;
  reader: Repository;
  master: Buffer;
  /** Stored objects and their original bytes. */
  objects: Map<string, Buffer>;
  indexContent: IndexFileContent[];
  snapshot: string;
  named: string;
  namedPlain: Buffer;
  locations: Map<string, Array<{ type: BlobType; id: string; offset: number; length: number; rawLength: number }>>;
}

async function buildRepository(seed: number): Promise<Fixture> {
  const rng = new Rng(seed);
  const backend = new MemoryBackend();
  const repo = await Repository.init(backend, PW, { kdf: KDF, chunker: { min: 64 << 10, avg: 128 << 10, max: 512 << 10 } });
  repo.setWriteOptions({ compression: { algo: 'zstd', level: 3 }, packSize: 4096 });
  const file = async (name: string, data: Buffer): Promise<TreeNode> => {
    const { id } = await repo.saveBlob('data', data);
    return node(name, 'file', { size: data.length, content: [id.toString('hex')] });
  };
  const dir = async (name: string, nodes: TreeNode[]): Promise<TreeNode> => {
    const { id } = await repo.saveBlob('tree', encodeTree({ nodes }));
    return node(name, 'dir', { subtree: id.toString('hex') });
  };
  const ann = await dir('ann', [await file('notes.txt', rng.text(3000)), await file('photo.raw', rng.bytes(2500)), node('link', 'symlink', { target: 'notes.txt', mode: 0o777 })]);
  const home = await dir('home', [ann, await dir('bob', [await file('empty', Buffer.alloc(0)), await file('zeros', Buffer.alloc(5000))])]);
  const { id: root } = await repo.saveBlob('tree', encodeTree({ nodes: [await file('README', rng.text(700)), home] }));
  await repo.flush();
  const snapshot = await saveSnapshot(repo, { version: 1, time: new Date(0).toISOString(), host: 'fuzz', username: 'fuzz', paths: ['/'], tags: [], excludes: [], tree: root.toString('hex'), program: 'robustness test' });
  const named = 'wal/main/000000010000000000000001';
  const namedPlain = Buffer.concat([rng.text(20_000), Buffer.alloc(40_000)]);
  await repo.putNamed(named, namedPlain, { createOnly: true });
  const objects = new Map<string, Buffer>();
  for await (const o of backend.list('')) objects.set(o.name, Buffer.from(backend.raw(o.name)!));
  const reader = await Repository.open(backend, PW);
  const { files } = await reader.readIndexFiles();
  const locations: Fixture['locations'] = new Map();
  for (const f of files) {
    for (const p of f.content.packs) locations.set(p.id, p.entries.map((e) => ({ type: e.type, id: e.id.toString('hex'), offset: e.offset, length: e.length, rawLength: e.rawLength })));
  }
  return { backend, reader, master: repo.packKey(), objects, indexContent: files.map((f) => f.content), snapshot, named, namedPlain, locations };
}

/** Store `bytes` under `name` for the duration of `fn`, then put the original back (or remove it). */
async function withObject<T>(fx: Fixture, name: string, bytes: Buffer, fn: () => Promise<T>): Promise<T> {
  await fx.backend.put(name, bytes);
  try {
    return await fn();
  } finally {
    const original = fx.objects.get(name);
    if (original) await fx.backend.put(name, original);
    else await fx.backend.delete(name);
  }
}

describe('robustness: a repository with damaged objects', () => {
  test('every stored object, damaged in storage: the repository reports a typed error or reads intact content', GUARD, async () => {
    const fx = await buildRepository(130);
    const kinds = new Set<string>();
    let seed = 131;
    for (const [name, original] of fx.objects) {
      const dir = name.split('/')[0]!;
      kinds.add(dir);
      const mutations = byteMutations(seed, original, dir === 'keys' || dir === 'config' ? 50 : 40);
      if (name === 'config' || /^keys\/[0-9a-f]{64}$/.test(name)) {
        await fuzz(`stored ${dir}`, seed, mutations, (b) => {
          if (dir === 'keys') {
            // A mutation may turn the key file into a legitimate but expensive one (N up to 2^22): not run here.
            try {
              const k = parseKeyFile(b);
              if (k.N * k.r * k.p > 2 ** 16) return undefined;
            } catch {
              // unreadable: Repository.open reports it
            }
          }
          return withObject(fx, name, b, () => Repository.open(fx.backend, PW));
        }, [HoldfastError], () => undefined);
      } else if (/^index\/[0-9a-f]{64}$/.test(name)) {
        await fuzz('stored index', seed, mutations, (b) => withObject(fx, name, b, async () => {
          const errors: HoldfastError[] = [];
          const { files } = await fx.reader.readIndexFiles((_id, err) => errors.push(err));
          if (errors[0]) throw errors[0];
          return files;
        }), [HoldfastError], (files, _b, where) => {
          // The file is checked against its name: damage is never read as content.
          assert.deepEqual(files.map((f) => f.content), fx.indexContent, `${where}: index content changed`);
        });
      } else if (/^data\/[0-9a-f]{2}\/[0-9a-f]{64}$/.test(name)) {
        const id = name.split('/')[2]!;
        const locs = fx.locations.get(id)!;
        await fuzz('stored pack', seed, mutations, (b) => withObject(fx, name, b, async () => {
          // The header and every blob are read; the first typed error is reported after all were tried.
          let first: HoldfastError | undefined;
          try {
            await fx.reader.readPackHeader(id, b.length);
          } catch (err) {
            if (!(err instanceof HoldfastError)) throw err;
            first ??= err;
          }
          for (const loc of locs) {
            try {
              const data = await fx.reader.loadBlobAt(loc.type, loc.id, { pack: id, ...loc });
              assert.equal(sha256Hex(data), loc.id, 'a blob that loads is intact');
            } catch (err) {
              if (!(err instanceof HoldfastError)) throw err;
              first ??= err;
            }
          }
          if (first) throw first;
        }), [HoldfastError], () => undefined);
      } else if (/^(snapshots|catalog)\/[0-9a-f]{64}$/.test(name)) {
        const id = name.split('/')[1]!;
        await fuzz(`stored ${dir}`, seed, mutations, (b) => withObject(fx, name, b, () => fx.reader.loadFile('snapshot', id)), [HoldfastError], (plain, _b, where) => {
          assert.equal(sha256Hex(plain).length, 64, where);
        });
      } else if (name === fx.named) {
        await fuzz('stored named object', seed, mutations, (b) => withObject(fx, name, b, () => fx.reader.getNamed(name)), [HoldfastError], (plain, _b, where) => {
          assert.ok(plain?.equals(fx.namedPlain), `${where}: named object read as other content`);
        });
      }
      seed++;
    }
    assert.ok(['config', 'keys', 'index', 'data', 'snapshots', 'wal'].every((k) => kinds.has(k)), `objects of every kind were damaged: ${[...kinds].join(', ')}`);
  });

  test('objects forged with the key (a leaked key or a writer bug): every reader reports a typed error', GUARD, async () => {
    const fx = await buildRepository(140);
    const rng = new Rng(141);

    // Index files: damaged plaintext, compressed and sealed as a writer would.
    const indexPlain = encodeIndex(fx.indexContent[0]!);
    await fuzz('forged index', 142, byteMutations(142, indexPlain, 150, indexFields(fx.indexContent[0]!)), async (plain) => {
      const [mode, payload] = await compress(plain, { algo: 'zstd', level: 3 });
      const sealed = seal(fx.master, Buffer.from('holdfast:index', 'latin1'), [Buffer.of(mode), payload]);
      const name = `index/${sha256Hex(sealed)}`;
      return withObject(fx, name, sealed, async () => {
        let failure: HoldfastError | undefined;
        const { files } = await fx.reader.readIndexFiles((_id, err) => (failure = err));
        if (failure) throw failure;
        return files;
      });
    }, [HoldfastError], () => undefined);

    // Compressed payloads under a valid seal: named objects whose zstd data is damaged.
    const [mode, z] = await compress(fx.namedPlain, { algo: 'zstd', level: 3 });
    assert.equal(mode, MODE_ZSTD);
    await fuzz('forged compressed payload', 143, byteMutations(143, z, 150, zstdFields(z)), (payload) => {
      const sealed = seal(fx.master, Buffer.from(`holdfast:named:${fx.named}`, 'utf8'), [Buffer.of(MODE_ZSTD), payload]);
      return withObject(fx, fx.named, sealed, () => fx.reader.getNamed(fx.named));
    }, [HoldfastError], (plain, _b, where) => assert.ok(plain !== undefined && plain.length <= MAX_PLAINTEXT, where));

    // Pack headers: damaged entry tables, sealed with the header AAD, behind valid blobs.
    const id = [...fx.locations.keys()][0]!;
    const packBytes = fx.objects.get(packName(id))!;
    const loc = headerLocation(packBytes.length, packBytes.subarray(-TRAILER_LEN));
    const headerPlain = unseal(fx.master, HEADER_AAD, packBytes.subarray(loc.offset, loc.offset + loc.length));
    const count = headerPlain.length / ENTRY_LEN;
    await fuzz('forged pack header', 144, byteMutations(144, headerPlain, 150, entryFields(0, count, 'header')), (plain) => {
      const header = seal(fx.master, HEADER_AAD, [plain]);
      const pack = Buffer.concat([packBytes.subarray(0, loc.offset), header, u32(header.length), PACK_TRAILER_MAGIC]);
      return withObject(fx, packName(id), pack, () => fx.reader.readPackHeader(id, pack.length));
    }, [HoldfastError], (entries, _b, where) => assert.ok(entries.every((e) => e.offset + e.length <= loc.offset), where));

    // The config: damaged JSON, sealed with the config AAD; Repository.open must report it.
    const cfgPlain = Buffer.from(JSON.stringify(fx.reader.config));
    await fuzz('forged config', 145, [...jsonMutations(145, cfgPlain, 80), ...byteMutations(146, cfgPlain, 30)], (plain) => {
      const sealed = seal(fx.master, Buffer.from('holdfast:config', 'latin1'), [Buffer.of(MODE_NONE), plain]);
      return withObject(fx, 'config', sealed, () => Repository.open(fx.backend, PW));
    }, [HoldfastError], (repo, _b, where) => assert.ok(repo.config.chunker.max <= 64 << 20, where));

    // Trees: damaged JSON stored as real tree blobs (their ids match), read as the walkers read them.
    const treeBytes = encodeTree(sampleTree(rng));
    const writer = await Repository.open(fx.backend, PW);
    await writer.loadIndex();
    writer.setWriteOptions({ compression: { algo: 'zstd', level: 3 }, packSize: 1 << 20 });
    const forgedTrees: Array<{ what: string; id: string }> = [];
    for (const m of jsonMutations(147, treeBytes, 100)) {
      const { id } = await writer.saveBlob('tree', m.bytes);
      forgedTrees.push({ what: m.what, id: id.toString('hex') });
    }
    await writer.flush();
    await fx.reader.loadIndex();
    const byId = new Map(forgedTrees.map((t) => [t.id, t.what]));
    await fuzz('forged tree blob', 147, forgedTrees.map((t) => ({ what: t.what, bytes: Buffer.from(t.id) })), async (hex) => decodeTree(await fx.reader.loadBlob('tree', hex.toString()), hex.toString()), [HoldfastError], (tree, hex, where) =>
      assertTreeValid(tree, `${where} (${byId.get(hex.toString())})`),
    );
  });
});

// ---------------------------------------------------------------- cyclic trees and the checker

describe('robustness: cyclic metadata', () => {
  /**
   * A tree that contains itself, or two that contain each other, cannot be written without a
   * SHA-256 collision (a tree's id is the hash of its bytes, which name its subtrees). A bug or a
   * collision must still not hang a walk: the checker's loadBlob is replaced so that stored trees
   * read as trees referring to themselves and to each other.
   */
  test("check's tree walk reports a self-referencing tree and a cyclic pair instead of following them", GUARD, async () => {
    const backend = new MemoryBackend();
    const repo = await Repository.init(backend, PW, { kdf: KDF, chunker: { min: 64 << 10, avg: 128 << 10, max: 512 << 10 } });
    const store = async (label: string): Promise<string> => (await repo.saveBlob('tree', encodeTree({ nodes: [node(label, 'fifo')] }))).id.toString('hex');
    const self = await store('self');
    const a = await store('a');
    const b = await store('b');
    const top = await store('top');
    await repo.flush();
    const snap = async (tree: string): Promise<string> => saveSnapshot(repo, { version: 1, time: new Date().toISOString(), host: 'h', username: 'u', paths: ['/'], tags: [], excludes: [], tree, program: 'test' });
    const sSelf = await snap(self);
    const sPair = await snap(top);
    // What the stored trees read as: `self` holds itself; `top` holds `a`, which holds `b`, which holds `a`.
    const forged = new Map<string, Tree>([
      [self, { nodes: [node('loop', 'dir', { subtree: self })] }],
      [top, { nodes: [node('a', 'dir', { subtree: a })] }],
      [a, { nodes: [node('b', 'dir', { subtree: b }), node('again', 'dir', { subtree: a })] }],
      [b, { nodes: [node('back', 'dir', { subtree: a })] }],
    ]);
    const checker = await Repository.open(backend, PW);
    const real = checker.loadBlob.bind(checker);
    let loads = 0;
    checker.loadBlob = async (type: BlobType, id: string): Promise<Buffer> => {
      if (++loads > 1000) throw new Error(`the walk loaded ${loads} trees: it follows the cycle`);
      const t = type === 'tree' ? forged.get(id) : undefined;
      return t ? encodeTree(t) : real(type, id);
    };
    const report = await checkRepository(checker, { readData: false });
    assert.ok(loads <= 8, `each tree is loaded about once (${loads} loads)`);
    const cycles = report.problems.filter((p) => p.kind === 'tree-cycle');
    assert.deepEqual(cycles.map((p) => p.object).sort(), [self, a].sort(), JSON.stringify(report.problems, null, 1));
    assert.deepEqual(cycles.find((p) => p.object === self)?.snapshots, [sSelf]);
    assert.deepEqual(cycles.find((p) => p.object === a)?.snapshots, [sPair]);
  });
});

describe('robustness: summary', () => {
  test('mutation counts', (t) => {
    let total = 0;
    for (const [name, tally] of tallies) {
      total += tally.total;
      const errs = [...tally.errors].map(([k, n]) => `${k} ${n}`).join(', ');
      t.diagnostic(`${name}: ${tally.total} mutations, ${tally.decoded} decoded${errs ? `; ${errs}` : ''}`);
    }
    t.diagnostic(`total: ${total} mutations`);
    assert.ok(total >= 3000, `${total} mutations`);
  });
});
