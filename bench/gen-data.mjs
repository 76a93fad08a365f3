#!/usr/bin/env node
// Seeded, reproducible benchmark data for bench/files-vs-restic.sh.
//
//   node bench/gen-data.mjs generate DIR BYTES SEED   create (or repair and reuse) the data set
//   node bench/gen-data.mjs mutate   DIR BYTES SEED   change about 5% of it (seeded, journaled)
//   node bench/gen-data.mjs size     DIR              print the total bytes of the regular files
//
// The layout is a pure function of (BYTES, SEED):
//   large/   about 50% of the bytes in files of 128-384 MiB
//   medium/  the rest but the small files, 256 KiB - 48 MiB (log-uniform)
//   small/   20,000 files per GB, 512 B - 12 KiB, 100 per directory
// Each file is text-like (compressible, zstd ~3x), random (incompressible) or "mixed" binary
// (random blocks interleaved with zero/low-entropy blocks, ~2x).
//
// The stamp DIR.json records the parameters. A later `generate` with the same parameters reuses
// the files: it undoes a previous `mutate` (journal DIR.mutated.json), regenerates files that are
// missing or have the wrong size, and removes files that are not part of the plan.

import fs from 'node:fs';
import path from 'node:path';

const MiB = 1 << 20;
const KiB = 1 << 10;
const BUF = 4 * MiB;
const FORMAT = 1; // bump when the content generators change

// ---------------------------------------------------------------- PRNG (xoshiro128**)
function splitmix32(a) {
  return () => {
    a = (a + 0x9e3779b9) | 0;
    let z = a;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}
class Rng {
  constructor(...seeds) {
    let h = 0x12345678;
    for (const s of seeds) h = Math.imul(h ^ (s >>> 0), 0x01000193) ^ (h >>> 15);
    const sm = splitmix32(h);
    this.s0 = sm(); this.s1 = sm(); this.s2 = sm(); this.s3 = sm() | 1;
  }
  u32() {
    const s0 = this.s0, s1 = this.s1, s2 = this.s2, s3 = this.s3;
    const r = Math.imul(((Math.imul(s1, 5) << 7) | (Math.imul(s1, 5) >>> 25)), 9) >>> 0;
    const t = s1 << 9;
    this.s2 = s2 ^ s0; this.s3 = s3 ^ s1; this.s1 = s1 ^ this.s2; this.s0 = s0 ^ this.s3;
    this.s2 ^= t; this.s3 = (this.s3 << 11) | (this.s3 >>> 21);
    return r;
  }
  float() { return this.u32() / 4294967296; }
  int(lo, hi) { return lo + Math.floor(this.float() * (hi - lo + 1)); } // inclusive
  /** Fill with random bytes; fast path for 4-byte aligned views. */
  fill(buf) {
    const n4 = buf.length >>> 2;
    const u = buf.byteOffset % 4 === 0 ? new Uint32Array(buf.buffer, buf.byteOffset, n4) : null;
    if (u) {
      let s0 = this.s0, s1 = this.s1, s2 = this.s2, s3 = this.s3;
      for (let i = 0; i < n4; i++) {
        // xorshift128 core inlined for speed (quality is ample for benchmark data)
        let t = s3;
        t ^= t << 11; t ^= t >>> 8;
        s3 = s2; s2 = s1; s1 = s0;
        s0 = (t ^ s0 ^ (s0 >>> 19)) | 0;
        u[i] = s0 + s2;
      }
      this.s0 = s0; this.s1 = s1; this.s2 = s2; this.s3 = s3;
      for (let i = n4 * 4; i < buf.length; i++) buf[i] = this.u32() & 255;
    } else {
      for (let i = 0; i < buf.length; i++) buf[i] = this.u32() & 255;
    }
  }
}

// ---------------------------------------------------------------- content generators
const VOCAB = (() => {
  const r = new Rng(0x70c4b, FORMAT);
  const letters = 'etaoinshrdlucmfwypvbgkjqxz';
  const words = [];
  for (let i = 0; i < 4096; i++) {
    const len = 2 + Math.floor(Math.pow(r.float(), 1.5) * 10);
    let w = '';
    for (let j = 0; j < len; j++) w += letters[Math.floor(Math.pow(r.float(), 1.8) * 26)];
    words.push(Buffer.from(w, 'latin1'));
  }
  return words;
})();

/** Text-like bytes: Zipf-ish words, punctuation, numbers, lines of 6-16 words. */
function fillText(rng, buf) {
  let p = 0;
  const n = buf.length;
  let wordsLeft = 6 + (rng.u32() % 11);
  while (p < n) {
    const x = rng.u32();
    let w;
    if ((x & 63) === 0) {
      // a number
      let num = rng.u32() % 1000000;
      do { if (p < n) buf[p++] = 48 + (num % 10); num = Math.floor(num / 10); } while (num > 0);
    } else {
      const f = (x >>> 6) / 67108864; // [0,1)
      w = VOCAB[Math.floor(f * f * f * VOCAB.length)];
      for (let j = 0; j < w.length && p < n; j++) buf[p++] = w[j];
    }
    if (--wordsLeft === 0) {
      if (p < n) buf[p++] = (x & 0x300) === 0 ? 46 : 44; // . or ,
      if (p < n) buf[p++] = 10;
      wordsLeft = 6 + (rng.u32() % 11);
    } else if (p < n) buf[p++] = 32;
  }
}

/** "Database-like" binary: 4 KiB pages, partly random, partly zero or low-entropy. */
function fillMixed(rng, buf) {
  for (let off = 0; off < buf.length; off += 4096) {
    const end = Math.min(buf.length, off + 4096);
    const page = buf.subarray(off, end);
    const kind = rng.u32() % 8;
    if (kind < 3) rng.fill(page); // random page
    else if (kind < 5) page.fill(0); // empty page
    else {
      // header of random bytes then a low-entropy body (small-alphabet values)
      const h = Math.min(page.length, 256 + (rng.u32() % 1024));
      rng.fill(page.subarray(0, h));
      for (let i = h; i < page.length; i++) page[i] = (rng.u32() & 0x0f) * 3;
    }
  }
}

function fillKind(kind, rng, buf) {
  if (kind === 'text') fillText(rng, buf);
  else if (kind === 'random') rng.fill(buf);
  else fillMixed(rng, buf);
}

// ---------------------------------------------------------------- plan
function plan(total, seed) {
  const r = new Rng(seed, 1);
  const files = [];
  const add = (rel, size, kind) => files.push({ rel, size, kind, idx: files.length });
  const gb = total / 1e9;

  // small files
  const nSmall = Math.max(100, Math.round(20000 * gb));
  const smallKinds = [];
  let smallBytes = 0;
  const smallSizes = [];
  for (let i = 0; i < nSmall; i++) {
    const size = 512 + Math.floor(Math.pow(r.float(), 2) * (12 * KiB - 512));
    smallSizes.push(size); smallBytes += size;
    const k = r.float();
    smallKinds.push(k < 0.7 ? 'text' : k < 0.9 ? 'random' : 'mixed');
  }
  // large files: about half of the total
  let largeTarget = Math.floor(total * 0.5);
  const large = [];
  const kinds = ['random', 'text', 'mixed'];
  while (largeTarget >= 64 * MiB) {
    let size = r.int(128, 384) * MiB + r.int(0, MiB - 1);
    if (size > largeTarget || largeTarget - size < 64 * MiB) size = largeTarget;
    large.push(size); largeTarget -= size;
  }
  large.forEach((size, i) => add(`large/large-${String(i).padStart(3, '0')}.${kinds[i % 3] === 'text' ? 'log' : 'bin'}`, size, kinds[i % 3]));
  // medium files: the rest
  let mediumTarget = total - large.reduce((a, b) => a + b, 0) - smallBytes;
  let m = 0;
  while (mediumTarget > 0) {
    let size = Math.floor(Math.exp(Math.log(256 * KiB) + r.float() * (Math.log(48 * MiB) - Math.log(256 * KiB))));
    if (size > mediumTarget || mediumTarget - size < 256 * KiB) size = mediumTarget;
    const k = r.float();
    const kind = k < 0.4 ? 'text' : k < 0.7 ? 'random' : 'mixed';
    add(`medium/m${String(m % 8).padStart(2, '0')}/file-${String(m).padStart(4, '0')}.${kind === 'text' ? 'txt' : 'dat'}`, size, kind);
    mediumTarget -= size; m++;
  }
  for (let i = 0; i < nSmall; i++) {
    const leaf = Math.floor(i / 100);
    const dir = `small/a${String(Math.floor(leaf / 20)).padStart(3, '0')}/b${String(leaf % 20).padStart(2, '0')}`;
    add(`${dir}/f${String(i).padStart(6, '0')}.${smallKinds[i] === 'text' ? 'txt' : 'bin'}`, smallSizes[i], smallKinds[i]);
  }
  return files;
}

// ---------------------------------------------------------------- writing
const buf = Buffer.allocUnsafe(BUF);

function writeFile(root, f, seed) {
  const p = path.join(root, f.rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  const rng = new Rng(seed, 2, f.idx);
  const fd = fs.openSync(p, 'w');
  try {
    let left = f.size;
    while (left > 0) {
      const n = Math.min(left, BUF);
      const b = buf.subarray(0, n);
      fillKind(f.kind, rng, b);
      fs.writeSync(fd, b);
      left -= n;
    }
  } finally {
    fs.closeSync(fd);
  }
}

function walkFiles(root, base = '', out = []) {
  let ents;
  try { ents = fs.readdirSync(path.join(root, base), { withFileTypes: true }); } catch { return out; }
  for (const e of ents) {
    const rel = base ? `${base}/${e.name}` : e.name;
    if (e.isDirectory()) walkFiles(root, rel, out);
    else out.push(rel);
  }
  return out;
}

function removeEmptyDirs(dir) {
  let ents;
  try { ents = fs.readdirSync(dir, { withFileTypes: true }); } catch { return; }
  for (const e of ents) if (e.isDirectory()) removeEmptyDirs(path.join(dir, e.name));
  try { if (fs.readdirSync(dir).length === 0) fs.rmdirSync(dir); } catch { /* ignore */ }
}

function generate(root, total, seed) {
  const t0 = Date.now();
  const files = plan(total, seed);
  const stampPath = `${root}.json`;
  const journalPath = `${root}.mutated.json`;
  const params = { format: FORMAT, total, seed, files: files.length };
  let stamp = null;
  try { stamp = JSON.parse(fs.readFileSync(stampPath, 'utf8')); } catch { /* none */ }
  const reuse = stamp && stamp.format === FORMAT && stamp.total === total && stamp.seed === seed && stamp.files === files.length;
  if (!reuse) {
    fs.rmSync(stampPath, { force: true });
    fs.rmSync(journalPath, { force: true });
    fs.rmSync(root, { recursive: true, force: true });
  }
  fs.mkdirSync(root, { recursive: true });
  const regen = new Set();
  if (reuse && fs.existsSync(journalPath)) {
    const j = JSON.parse(fs.readFileSync(journalPath, 'utf8'));
    for (const i of j.regenerate) regen.add(i);
  }
  let written = 0, wroteBytes = 0;
  const known = new Set();
  for (const f of files) {
    known.add(f.rel);
    let ok = false;
    if (reuse && !regen.has(f.idx)) {
      try { ok = fs.statSync(path.join(root, f.rel)).size === f.size; } catch { ok = false; }
    }
    if (!ok) { writeFile(root, f, seed); written++; wroteBytes += f.size; }
  }
  let removed = 0;
  if (reuse) {
    for (const rel of walkFiles(root)) if (!known.has(rel)) { fs.rmSync(path.join(root, rel), { force: true }); removed++; }
    removeEmptyDirs(root);
    fs.mkdirSync(root, { recursive: true });
  }
  fs.rmSync(journalPath, { force: true });
  fs.writeFileSync(stampPath, JSON.stringify(params) + '\n');
  const totalBytes = files.reduce((a, f) => a + f.size, 0);
  const counts = { large: 0, medium: 0, small: 0 };
  for (const f of files) counts[f.rel.split('/')[0]]++;
  process.stderr.write(
    `data set ${root}: ${files.length} files (${counts.large} large, ${counts.medium} medium, ${counts.small} small), ${totalBytes} bytes; ` +
      (reuse ? `reused (${written} file(s) regenerated, ${removed} extra removed)` : `generated`) +
      `, wrote ${(wroteBytes / 1e6).toFixed(0)} MB in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`,
  );
}

// ---------------------------------------------------------------- mutation (about 5%)
function mutate(root, total, seed) {
  const files = plan(total, seed);
  const r = new Rng(seed, 3);
  const budget = Math.floor(total * 0.05);
  const large = files.filter((f) => f.rel.startsWith('large/'));
  const medium = files.filter((f) => f.rel.startsWith('medium/'));
  const small = files.filter((f) => f.rel.startsWith('small/'));
  const pick = (arr, n) => {
    const copy = arr.slice();
    const out = [];
    while (out.length < n && copy.length) out.push(copy.splice(r.u32() % copy.length, 1)[0]);
    return out;
  };
  const regenerate = new Set();
  const stats = { overwritten: 0, appended: 0, rewrittenSmall: 0, newFiles: 0, newBytes: 0, deleted: 0 };

  // Decide everything first, write the journal, then touch the files.
  const inPlace = pick(large, Math.max(1, Math.ceil(large.length / 2)));
  const appendTo = [...pick(large.filter((f) => !inPlace.includes(f)), 2), ...pick(medium, 5)];
  if (appendTo.length === 0) appendTo.push(...pick(large, 1));
  const rewriteSmall = pick(small, Math.max(10, Math.round(small.length * 0.01)));
  const deleteSmall = pick(small.filter((f) => !rewriteSmall.includes(f)), Math.max(5, Math.round(small.length * 0.005)));
  const deleteMedium = pick(medium.filter((f) => !appendTo.includes(f)), 1);
  for (const f of [...inPlace, ...appendTo, ...rewriteSmall, ...deleteSmall, ...deleteMedium]) regenerate.add(f.idx);
  fs.writeFileSync(`${root}.mutated.json`, JSON.stringify({ regenerate: [...regenerate] }) + '\n');

  const wbuf = Buffer.allocUnsafe(BUF);
  const writeAt = (fd, kind, rng, len, pos) => {
    while (len > 0) {
      const n = Math.min(len, BUF);
      const b = wbuf.subarray(0, n);
      fillKind(kind, rng, b);
      fs.writeSync(fd, b, 0, n, pos);
      if (pos !== null) pos += n;
      len -= n;
    }
  };

  // 40%: overwrite 3 regions in place in each chosen large file
  const perRegion = Math.max(4096, Math.floor((budget * 0.4) / (inPlace.length * 3)));
  for (const f of inPlace) {
    const fd = fs.openSync(path.join(root, f.rel), 'r+');
    const rng = new Rng(seed, 4, f.idx);
    for (let k = 0; k < 3; k++) {
      const len = Math.min(perRegion, f.size);
      const pos = Math.floor((f.size - len) * ((k + rng.float()) / 3));
      writeAt(fd, f.kind, rng, len, pos);
      stats.overwritten += len;
    }
    fs.closeSync(fd);
  }
  // 30%: append
  const perAppend = Math.floor((budget * 0.3) / appendTo.length);
  for (const f of appendTo) {
    const fd = fs.openSync(path.join(root, f.rel), 'a');
    writeAt(fd, f.kind, new Rng(seed, 5, f.idx), perAppend, null);
    fs.closeSync(fd);
    stats.appended += perAppend;
  }
  // rewrite 1% of the small files with new content of a similar size
  for (const f of rewriteSmall) {
    const rng = new Rng(seed, 6, f.idx);
    const size = Math.max(256, f.size + rng.int(-256, 256));
    const b = wbuf.subarray(0, size);
    fillKind(f.kind, rng, b);
    fs.writeFileSync(path.join(root, f.rel), b);
    stats.rewrittenSmall += size;
  }
  // the rest of the budget: new small files (a new directory plus some in existing ones) and two new medium files
  let newBudget = budget - stats.overwritten - stats.appended - stats.rewrittenSmall;
  const newMedium = Math.floor(newBudget * 0.4 / 2);
  for (let k = 0; k < 2 && newMedium > 0; k++) {
    const rel = `medium/m0${k}/new-${k}.dat`;
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    const fd = fs.openSync(path.join(root, rel), 'w');
    writeAt(fd, k === 0 ? 'text' : 'mixed', new Rng(seed, 7, k), newMedium, null);
    fs.closeSync(fd);
    stats.newFiles++; stats.newBytes += newMedium; newBudget -= newMedium;
  }
  const leafDirs = [...new Set(small.map((f) => path.dirname(f.rel)))];
  let n = 0;
  while (newBudget > 0) {
    const rng = new Rng(seed, 8, n);
    const size = Math.min(newBudget, 512 + Math.floor(Math.pow(rng.float(), 2) * (12 * KiB - 512)));
    const dir = n % 3 === 0 ? leafDirs[rng.u32() % leafDirs.length] : `small/new/n${String(Math.floor(n / 300)).padStart(3, '0')}`;
    const rel = `${dir}/new-${String(n).padStart(6, '0')}.txt`;
    fs.mkdirSync(path.join(root, dir), { recursive: true });
    const b = wbuf.subarray(0, size);
    fillKind(n % 5 === 0 ? 'random' : 'text', rng, b);
    fs.writeFileSync(path.join(root, rel), b);
    stats.newFiles++; stats.newBytes += size; newBudget -= size; n++;
  }
  // delete a few
  for (const f of [...deleteSmall, ...deleteMedium]) { fs.rmSync(path.join(root, f.rel), { force: true }); stats.deleted++; }

  const changed = stats.overwritten + stats.appended + stats.rewrittenSmall + stats.newBytes;
  process.stderr.write(
    `mutated ${root}: overwrote ${(stats.overwritten / 1e6).toFixed(1)} MB in ${inPlace.length} large file(s) (3 places each), ` +
      `appended ${(stats.appended / 1e6).toFixed(1)} MB to ${appendTo.length} file(s), rewrote ${rewriteSmall.length} small file(s), ` +
      `added ${stats.newFiles} file(s) (${(stats.newBytes / 1e6).toFixed(1)} MB), deleted ${stats.deleted} file(s); ` +
      `${(changed / 1e6).toFixed(1)} MB changed = ${((100 * changed) / total).toFixed(2)}% of the data\n`,
  );
}

function sizeOf(root) {
  let total = 0, count = 0;
  for (const rel of walkFiles(root)) {
    const st = fs.lstatSync(path.join(root, rel));
    if (st.isFile()) { total += st.size; count++; }
  }
  process.stdout.write(`${total} ${count}\n`);
}

const [cmd, dir, bytesArg, seedArg] = process.argv.slice(2);
const total = Number(bytesArg);
const seed = Number(seedArg ?? 1) >>> 0;
if (cmd === 'size' && dir) sizeOf(path.resolve(dir));
else if ((cmd === 'generate' || cmd === 'mutate') && dir && Number.isFinite(total) && total > 0) {
  (cmd === 'generate' ? generate : mutate)(path.resolve(dir), Math.floor(total), seed);
} else {
  process.stderr.write('usage: gen-data.mjs generate|mutate DIR BYTES [SEED] | size DIR\n');
  process.exit(2);
}
