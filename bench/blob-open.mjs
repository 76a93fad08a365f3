#!/usr/bin/env node
// Micro-benchmark: CPU time to open sealed blobs (authenticate + decrypt, decompress, SHA-256 of
// the plaintext against the id) the way a restore worker does, one blob after another:
//
//   js       open-blob.ts openBlob: node:crypto Decipher and Hash, compress.ts decompress, a new
//            buffer per blob (what the restore worker did before the native opener)
//   opener   BlobOpener without the native helper (the fallback: the same, plus the zero check)
//   native   BlobOpener with native/zstd-sync.c's openBlob (one call per blob, reused buffers)
//
//   node bench/blob-open.mjs [BLOBS] [SIZE_KIB] [ROUNDS]     (defaults 1000 128 5)
//
// Needs `npm run build` (imports build/). The blobs are seeded pseudo-PostgreSQL pages: 8 KiB
// pages of tuples with repeated structure and random fields, compressing about 3x at zstd:3, and
// one blob in ten incompressible (stored with mode 0). They sit back to back in one buffer, as a
// pack read does. Reported: CPU time per blob (process.cpuUsage: user + system of the process,
// in which no other thread works) and plaintext throughput, best round and median.
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';

const root = new URL('../build/', import.meta.url);
const { BlobOpener, openBlob } = await import(new URL('repository/open-blob.js', root).href);
const { sealBlob } = await import(new URL('repository/seal-blob.js', root).href);
const { nativeOpenBlob } = await import(new URL('repository/compress.js', root).href);

const blobs = Number(process.argv[2] ?? 1000);
const size = Number(process.argv[3] ?? 128) << 10;
const rounds = Number(process.argv[4] ?? 5);

// xorshift32, seeded: the same blobs every run.
let x = 0x2545f491;
const rand = () => {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return x >>> 0;
};

function page(buf, at) {
  // A page header, then tuples: a fixed 24-byte header pattern, a small int, a random 8-byte
  // field, and padding text; free space at the end stays zero.
  buf.fill(0, at, at + 8192);
  buf.writeUInt32LE(rand(), at);
  let o = at + 24;
  const end = at + 8192 - (rand() % 1500);
  for (let i = 0; o + 120 <= end; i++, o += 120) {
    buf.write('\x01\x00\x02\x00\x18\x00\x00\x00\x00\x00\x00\x00', o, 'latin1');
    buf.writeUInt32LE(i, o + 12);
    buf.writeUInt32LE(rand(), o + 16);
    buf.writeUInt32LE(rand() % 100000, o + 20);
    buf.write('                                                                                    ', o + 24, 'latin1');
  }
}

const key = Buffer.alloc(32, 7);
const plains = [];
const sealed = [];
let total = 0;
for (let i = 0; i < blobs; i++) {
  const p = Buffer.alloc(size);
  if (i % 10 === 9) for (let o = 0; o + 4 <= size; o += 4) p.writeUInt32LE(rand(), o);
  else for (let o = 0; o + 8192 <= size; o += 8192) page(p, o);
  const id = createHash('sha256').update(p).digest();
  const s = await sealBlob(key, 'data', id, p, { algo: 'zstd', level: 3 });
  const b = Buffer.concat(s.parts, s.length);
  sealed.push({ hex: id.toString('hex'), off: total, len: b.length, raw: size, bytes: b });
  plains.push(p);
  total += b.length;
}
const work = Buffer.alloc(total);
for (const s of sealed) s.bytes.copy(work, s.off);
console.log(`${blobs} blobs of ${size >> 10} KiB: ${(total / blobs / 1024).toFixed(1)} KiB sealed on average (${((blobs * size) / total).toFixed(2)}x); native openBlob ${nativeOpenBlob() ? 'available' : 'NOT available'}`);

const cpu = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

async function runJs() {
  for (const s of sealed) {
    const data = await openBlob(key, 'data', Buffer.from(s.hex, 'hex'), work.subarray(s.off, s.off + s.len), s.raw, 'bench');
    if (data.length !== s.raw) throw new Error('short');
  }
}

function runOpener(native) {
  const opener = new BlobOpener(key, native);
  if (native && !opener.isNative) return undefined;
  return async () => {
    for (const s of sealed) {
      const p = opener.open('data', s.hex, s.raw, work, s.off, s.len, 'bench');
      if (p) await p;
      if (opener.length !== s.raw) throw new Error('short');
    }
  };
}

// Correctness first: every way gives the original plaintext.
for (const [name, native] of [['opener', false], ['native', true]]) {
  const opener = new BlobOpener(key, native);
  if (native && !opener.isNative) continue;
  for (const [i, s] of sealed.entries()) {
    const p = opener.open('data', s.hex, s.raw, work, s.off, s.len, 'bench');
    if (p) await p;
    if (!opener.data.subarray(0, opener.length).equals(plains[i])) throw new Error(`${name}: blob ${i} differs`);
  }
}

const ways = [
  ['js', runJs],
  ['opener', runOpener(false)],
  ['native', runOpener(true)],
].filter(([, fn]) => fn);
const results = new Map(ways.map(([name]) => [name, []]));
for (let r = 0; r < rounds + 1; r++) {
  for (const [name, fn] of ways) {
    const t0 = cpu();
    await fn();
    const us = cpu() - t0;
    if (r > 0) results.get(name).push(us); // round 0 warms up
  }
}
const mb = (blobs * size) / 1e6;
for (const [name, list] of results) {
  list.sort((a, b) => a - b);
  const best = list[0];
  const median = list[Math.floor(list.length / 2)];
  console.log(`${name.padEnd(7)} ${(best / blobs).toFixed(1).padStart(7)} µs/blob best, ${(median / blobs).toFixed(1).padStart(7)} median   ${((mb / best) * 1e6).toFixed(0).padStart(5)} MB/s best`);
}
if (process.argv[1] === fileURLToPath(import.meta.url) && results.has('native')) {
  const js = results.get('js')[0];
  const nat = results.get('native')[0];
  console.log(`native takes ${((nat / js) * 100).toFixed(0)}% of the JS path's CPU time`);
}
