/**
 * BlobOpener (the restore workers' opener: native/zstd-sync.c's openBlob, or the JS path) against
 * openBlob (the JS path Repository.openBlob uses): the same plaintext for every kind of blob, and
 * for every kind of damage the same INTEGRITY error, word for word. Run with the native helper
 * when it was built here; the JS fallback (no helper) is covered by `native: false` and, in a
 * worker thread, by HOLDFAST_TEST_NO_ZSTD_SYNC. openMany (many blobs of one read in one native
 * call, written as decoded, ids checked together) against the same: what it counts as opened, what
 * it leaves to `open`, and the bytes in the file; sha256Many (the SHA-256 lanes) against
 * node:crypto, with and without the lanes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { HoldfastError } from '../errors/catalogue.js';
import { Rng } from '../testing/helpers.js';
import { MODE_NONE, MODE_ZSTD, compress } from './compress.js';
import { nativeHelper } from '../util/native.js';
import { KEY_LEN, seal, sha256 } from './crypto.js';
import { type BlobSpan, BlobOpener, openBlob } from './open-blob.js';
import { type BlobType, blobAad } from './pack.js';
import { sealBlob } from './seal-blob.js';

const key = new Rng(5150).bytes(KEY_LEN);
const WHERE = 'data/ab/abcdef';
const native = nativeHelper()?.openBlob !== undefined;
const NO_NATIVE = !native && 'native/zstd-sync.c (with openBlob) was not built on this machine';

/** A sealed blob as a pack holds it, at an offset inside a larger buffer (as a coalesced read). */
interface Sealed {
  readonly type: BlobType;
  readonly hex: string;
  readonly rawLength: number;
  readonly buf: Buffer;
  readonly off: number;
  readonly len: number;
}

function place(type: BlobType, id: Buffer, sealed: Buffer, rawLength: number): Sealed {
  const buf = Buffer.concat([randomBytes(37), sealed, randomBytes(11)]);
  return { type, hex: id.toString('hex'), rawLength, buf, off: 37, len: sealed.length };
}

async function stored(type: BlobType, data: Buffer, level = 3): Promise<Sealed> {
  const id = sha256(data);
  const s = await sealBlob(key, type, id, data, level < 0 ? { algo: 'none' } : { algo: 'zstd', level });
  return place(type, id, Buffer.concat(s.parts, s.length), data.length);
}

/** The JS path's result: the plaintext, or the error it throws. */
async function viaJs(s: Sealed, k = key): Promise<Buffer | HoldfastError> {
  try {
    return await openBlob(k, s.type, Buffer.from(s.hex, 'hex'), Buffer.from(s.buf.subarray(s.off, s.off + s.len)), s.rawLength, WHERE);
  } catch (err) {
    assert.ok(err instanceof HoldfastError, String(err));
    return err;
  }
}

/** The opener's result; the sealed bytes must be left as they were. */
async function viaOpener(s: Sealed, nativeToo: boolean, k = key): Promise<{ data: Buffer; zero: boolean } | HoldfastError> {
  const opener = new BlobOpener(k, nativeToo);
  assert.equal(opener.isNative, nativeToo && native);
  const buf = Buffer.from(s.buf);
  try {
    const p = opener.open(s.type, s.hex, s.rawLength, buf, s.off, s.len, WHERE);
    if (p) await p;
  } catch (err) {
    assert.ok(err instanceof HoldfastError, String(err));
    return err;
  } finally {
    assert.ok(buf.equals(s.buf), 'the sealed bytes are not modified');
  }
  return { data: Buffer.from(opener.data.subarray(0, opener.length)), zero: opener.zero };
}

function sameError(a: Buffer | HoldfastError | { data: Buffer; zero: boolean }, b: HoldfastError | Buffer, what: string): void {
  assert.ok(a instanceof HoldfastError, `${what}: the opener fails`);
  assert.ok(b instanceof HoldfastError, `${what}: the JS path fails`);
  assert.equal(a.code, 'INTEGRITY', what);
  assert.equal(a.code, b.code, what);
  assert.equal(a.message, b.message, what);
  assert.deepEqual(a.data, b.data, what);
}

async function expectSame(s: Sealed, expect: Buffer, what: string): Promise<void> {
  const js = await viaJs(s);
  assert.ok(Buffer.isBuffer(js) && js.equals(expect), `${what}: the JS path opens it`);
  for (const nativeToo of [true, false]) {
    const r = await viaOpener(s, nativeToo);
    assert.ok(!(r instanceof HoldfastError), `${what} (native ${nativeToo}): ${String(r)}`);
    assert.ok(r.data.equals(expect), `${what} (native ${nativeToo}): byte-identical`);
    assert.equal(r.zero, expect.equals(Buffer.alloc(expect.length)), `${what} (native ${nativeToo}): zero flag`);
  }
}

async function expectSameError(s: Sealed, what: string, k = key): Promise<string> {
  const js = await viaJs(s, k);
  assert.ok(js instanceof HoldfastError, `${what}: the JS path fails`);
  for (const nativeToo of [true, false]) sameError(await viaOpener(s, nativeToo, k), js, `${what} (native ${nativeToo})`);
  return js.message;
}

test('the opener gives the plaintext the JS path gives: compressed, stored, empty, all-zero, tree, large blobs', async () => {
  const rng = new Rng(5151);
  const text = rng.text(128 << 10);
  const random = rng.bytes(200_000);
  assert.equal((await compress(text, { algo: 'zstd', level: 3 }))[0], MODE_ZSTD);
  assert.equal((await compress(random, { algo: 'zstd', level: 3 }))[0], MODE_NONE);
  await expectSame(await stored('data', text), text, 'compressed text');
  await expectSame(await stored('data', text, -1), text, 'text stored with compression none');
  await expectSame(await stored('data', random), random, 'incompressible data (stored)');
  await expectSame(await stored('data', Buffer.alloc(0)), Buffer.alloc(0), 'empty blob');
  await expectSame(await stored('data', Buffer.from('x')), Buffer.from('x'), 'one byte');
  await expectSame(await stored('data', Buffer.alloc(1 << 20)), Buffer.alloc(1 << 20), 'all zeros (compressed)');
  await expectSame(await stored('data', Buffer.alloc(3000), -1), Buffer.alloc(3000), 'all zeros (stored)');
  const almostZero = Buffer.alloc(70_000);
  almostZero[69_999] = 1;
  await expectSame(await stored('data', almostZero), almostZero, 'zeros but the last byte');
  await expectSame(await stored('tree', Buffer.from('{"nodes":[]}')), Buffer.from('{"nodes":[]}'), 'a tree blob');
  // Larger than the opener keeps, and than the JS path decodes synchronously (8 MiB).
  const large = Buffer.concat([rng.text(9 << 20), rng.bytes(8 << 20)]);
  await expectSame(await stored('data', large), large, 'a 17 MiB blob');
});

test('one opener opens blob after blob, growing and reusing its buffer', async () => {
  const rng = new Rng(5152);
  const blobs = [rng.text(1000), rng.text(300_000), rng.bytes(5000), Buffer.alloc(0), rng.text(64 << 10), rng.text(2 << 20), rng.text(10)];
  const placed = await Promise.all(blobs.map((b) => stored('data', b)));
  for (const nativeToo of [true, false]) {
    const opener = new BlobOpener(key, nativeToo);
    for (const [i, s] of placed.entries()) {
      const buf = Buffer.from(s.buf);
      const p = opener.open('data', s.hex, s.rawLength, buf, s.off, s.len, WHERE);
      if (p) await p;
      assert.ok(opener.data.subarray(0, opener.length).equals(blobs[i]!), `blob ${i} (native ${nativeToo})`);
    }
  }
});

test('damage gives the same INTEGRITY error as the JS path: flipped bits, wrong key, wrong id, wrong length, too short', async () => {
  const rng = new Rng(5153);
  const text = rng.text(100_000);
  for (const s of [await stored('data', text), await stored('data', rng.bytes(20_000))]) {
    const kind = s.rawLength === text.length ? 'compressed' : 'stored';
    for (const at of [0, 5, 12, 13, 40, s.len - 17, s.len - 16, s.len - 1]) {
      const flipped = { ...s, buf: Buffer.from(s.buf) };
      flipped.buf[s.off + at]! ^= 0x10;
      const message = await expectSameError(flipped, `${kind}, bit flipped at ${at}`);
      assert.match(message, /^blob [0-9a-f]{64} in data\/ab\/abcdef: authentication failed/);
    }
    assert.match(await expectSameError(s, `${kind}, wrong key`, randomBytes(KEY_LEN)), /authentication failed/);
    const otherId = sha256(Buffer.from('another blob')).toString('hex');
    assert.match(await expectSameError({ ...s, hex: otherId }, `${kind}, another blob's id`), /authentication failed/);
    assert.match(await expectSameError({ ...s, type: 'tree' }, `${kind}, the other type`), /authentication failed/);
    for (const delta of [-1, 1]) {
      const message = await expectSameError({ ...s, rawLength: s.rawLength + delta }, `${kind}, raw length ${delta}`);
      assert.match(message, kind === 'stored' ? /SHA-256 mismatch/ : /cannot decompress/);
    }
    assert.match(await expectSameError({ ...s, len: 27 }, `${kind}, too short`), /sealed object too short \(27 bytes\)/);
    assert.match(await expectSameError({ ...s, len: 28 }, `${kind}, 28 bytes`), /authentication failed/);
  }
});

test('authentic but wrong content gives the same errors: id mismatch, damaged zstd, unknown mode, empty plaintext', async () => {
  const rng = new Rng(5154);
  const text = rng.text(100_000);
  // Sealed under the id the reader expects, but holding other content: only the hash catches it.
  const claimed = sha256(Buffer.from('what the index says'));
  const forge = (mode: number, payload: Buffer, rawLength: number, id = claimed): Sealed => place('data', id, seal(key, blobAad('data', id), [Buffer.of(mode), payload]), rawLength);
  const [, z] = await compress(text, { algo: 'zstd', level: 3 });
  assert.match(await expectSameError(forge(MODE_ZSTD, z, text.length), 'compressed, content of another id'), /content does not match its id \(SHA-256 mismatch\)$/);
  assert.match(await expectSameError(forge(MODE_NONE, text, text.length), 'stored, content of another id'), /SHA-256 mismatch/);
  assert.match(await expectSameError(forge(MODE_NONE, Buffer.alloc(0), 0), 'stored, empty, content of another id'), /SHA-256 mismatch/);
  const id = sha256(text);
  const damaged = Buffer.from(z);
  damaged[Math.floor(damaged.length / 2)]! ^= 0xff;
  // Without a content checksum in the frame, damage inside a block may still decode: then the hash catches it.
  assert.match(await expectSameError(forge(MODE_ZSTD, damaged, text.length, id), 'damaged zstd block'), /cannot decompress: |SHA-256 mismatch/);
  const reserved = Buffer.from(z);
  reserved[4]! |= 0x08;
  assert.match(await expectSameError(forge(MODE_ZSTD, reserved, text.length, id), 'zstd frame header with a reserved bit'), /cannot decompress: zstd frame 1 sets a reserved header bit/);
  assert.match(await expectSameError(forge(MODE_ZSTD, z.subarray(0, z.length - 5), text.length, id), 'truncated zstd payload'), /cannot decompress: /);
  assert.match(await expectSameError(forge(MODE_ZSTD, Buffer.concat([z, Buffer.from('trailing')]), text.length, id), 'zstd payload with trailing bytes'), /cannot decompress: /);
  assert.match(await expectSameError(forge(MODE_ZSTD, Buffer.alloc(0), 0, sha256(Buffer.alloc(0))), 'empty zstd payload'), /cannot decompress: empty zstd payload/);
  assert.match(await expectSameError(forge(MODE_ZSTD, text, text.length, id), 'mode 1, not zstd'), /cannot decompress: not a zstd frame/);
  assert.match(await expectSameError(forge(7, text, text.length, id), 'unknown mode'), /cannot decompress: unknown compression mode 7/);
  const empty = place('data', id, seal(key, blobAad('data', id), []), text.length);
  assert.match(await expectSameError(empty, 'empty plaintext'), /cannot decompress: no compression mode byte \(empty plaintext\)/);
  // What libzstd accepts and the JS decoder's frame walk refuses is decided by the JS decoder.
  const skippable = Buffer.alloc(8 + 3);
  skippable.writeUInt32LE(0x184d2a50, 0);
  skippable.writeUInt32LE(3, 4);
  await expectSame(forge(MODE_ZSTD, Buffer.concat([skippable, z]), text.length, id), text, 'a skippable frame before the frame');
  assert.match(await expectSameError(forge(MODE_ZSTD, skippable, 0, sha256(Buffer.alloc(0))), 'only a skippable frame'), /cannot decompress: zstd payload holds no frame/);
});

test('HOLDFAST_TEST_NO_ZSTD_SYNC=1: a worker thread runs without the native helper, and its opener still opens and rejects', async () => {
  const s = await stored('data', new Rng(5155).text(50_000));
  const bad = Buffer.from(s.buf);
  bad[s.off + 100]! ^= 1;
  const code = `
    const { parentPort, workerData: w } = require('node:worker_threads');
    import(w.module).then(async ({ BlobOpener }) => {
      const opener = new BlobOpener(Buffer.from(w.key), true);
      const out = { native: opener.isNative };
      const p = opener.open('data', w.hex, w.rawLength, Buffer.from(w.buf), w.off, w.len, 'x');
      if (p) await p;
      out.data = Buffer.from(opener.data.subarray(0, opener.length)).toString('hex');
      try { const q = opener.open('data', w.hex, w.rawLength, Buffer.from(w.bad), w.off, w.len, 'x'); if (q) await q; } catch (err) { out.error = err.code + ': ' + err.message; }
      parentPort.postMessage(out);
    });`;
  for (const off of [true, false]) {
    if (!off && NO_NATIVE) continue;
    const env = { ...process.env };
    if (off) env['HOLDFAST_TEST_NO_ZSTD_SYNC'] = '1';
    else delete env['HOLDFAST_TEST_NO_ZSTD_SYNC'];
    const worker = new Worker(code, { eval: true, env, workerData: { module: new URL('./open-blob.js', import.meta.url).href, key, hex: s.hex, rawLength: s.rawLength, buf: s.buf, bad, off: s.off, len: s.len } });
    const out = await new Promise<{ native: boolean; data: string; error?: string }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await worker.terminate();
    assert.equal(out.native, !off, `the helper is ${off ? 'not ' : ''}used`);
    assert.equal(out.data, ((await viaJs(s)) as Buffer).toString('hex'));
    assert.equal(out.error, `INTEGRITY: blob ${s.hex} in x: authentication failed: the object was modified, is corrupt, or belongs to another key`);
  }
});

test('the native opener is built here (skipped otherwise: the tests above then cover the JS path only)', { skip: NO_NATIVE }, () => {
  assert.ok(new BlobOpener(key).isNative);
});

const many = nativeHelper()?.openBlobs !== undefined;
const NO_MANY = !many && 'native/zstd-sync.c (with openBlobs) was not built on this machine';

/** Blobs sealed back to back in one buffer (with a gap between some), as a pack read holds them. */
async function packed(datas: readonly Buffer[], ids?: readonly Buffer[]): Promise<{ buf: Buffer; spans: BlobSpan[] }> {
  const parts: Buffer[] = [randomBytes(19)];
  const spans: BlobSpan[] = [];
  let at = 19;
  for (const [i, d] of datas.entries()) {
    const id = ids?.[i] ?? sha256(d);
    const sealed = await sealBlob(key, 'data', id, d, { algo: 'zstd', level: 3 });
    const bytes = Buffer.concat(sealed.parts, sealed.length);
    spans.push({ id: id.toString('hex'), rawLength: d.length, offset: 1000 + at, length: bytes.length });
    parts.push(bytes);
    at += bytes.length;
    if (i % 3 === 1) {
      parts.push(randomBytes(77)); // another file's blob
      at += 77;
    }
  }
  return { buf: Buffer.concat(parts), spans };
}

/** openMany into a new file from position `pos`: the count and the file's bytes. */
function openManyToFile(opener: BlobOpener, spans: readonly BlobSpan[], buf: Buffer, pos: number): { k: number; file: Buffer; zeros: number[] } {
  const dir = mkdtempSync(path.join(tmpdir(), 'holdfast-openmany-'));
  try {
    const fd = openSync(path.join(dir, 'f'), 'w');
    let k: number;
    try {
      k = opener.openMany('data', spans, 0, spans.length, buf, 1000, fd, pos);
    } finally {
      closeSync(fd);
    }
    return { k, file: readFileSync(path.join(dir, 'f')), zeros: [...opener.zeros.subarray(0, k)] };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('openMany writes a run of blobs at their positions (all-zero ones as holes), ids checked together; it stops at the first that fails, which open then words', { skip: NO_MANY }, async () => {
  const rng = new Rng(5160);
  const datas = [rng.text(128 << 10), rng.bytes(128 << 10), Buffer.alloc(128 << 10), rng.text(128 << 10), rng.text(1000), Buffer.alloc(0), rng.text(128 << 10), rng.text(100 << 10)];
  for (let i = 0; i < 10; i++) datas.push(rng.text(128 << 10));
  const { buf, spans } = await packed(datas);
  const opener = new BlobOpener(key);
  const sealedCopy = Buffer.from(buf);
  const pos = 4096;
  const all = openManyToFile(opener, spans, buf, pos);
  assert.ok(buf.equals(sealedCopy), 'the sealed bytes are not modified');
  assert.equal(all.k, 16, 'the first 16 (the most it takes at once) are opened');
  let at = pos;
  for (let i = 0; i < all.k; i++) {
    assert.ok(all.file.subarray(at, at + datas[i]!.length).equals(datas[i]!), `blob ${i} is in the file at its position`);
    assert.equal(all.zeros[i], datas[i]!.equals(Buffer.alloc(datas[i]!.length)) ? 1 : 0, `blob ${i}: zero flag`);
    at += datas[i]!.length;
  }
  assert.equal(all.file.length, at, 'nothing written past the 16th blob');
  assert.throws(() => opener.openMany('data', spans, 16, spans.length, buf, 1000, -1, 0), TypeError, 'no descriptor: a TypeError');

  // A flipped bit in the 4th blob: the 3 before it count; the 4th is open's to word.
  const flipped = Buffer.from(buf);
  flipped[spans[3]!.offset - 1000 + 40]! ^= 4;
  const r = openManyToFile(opener, spans, flipped, 0);
  assert.equal(r.k, 3);
  const js = await openBlob(key, 'data', Buffer.from(spans[3]!.id, 'hex'), flipped.subarray(spans[3]!.offset - 1000, spans[3]!.offset - 1000 + spans[3]!.length), datas[3]!.length, WHERE).then(
    () => undefined,
    (err: unknown) => err,
  );
  assert.ok(js instanceof HoldfastError && /authentication failed/.test(js.message));

  // Sealed under an id that is not its content's: it decodes (and is written), but does not count.
  const wrongIds = datas.slice(0, 6).map((d) => sha256(d));
  wrongIds[4] = sha256(Buffer.from('something else'));
  const w = await packed(datas.slice(0, 6), wrongIds);
  const r2 = openManyToFile(opener, w.spans, w.buf, 0);
  assert.equal(r2.k, 4, 'the blob whose content does not match its id, and what follows, are not counted');
  const p = opener.open('data', w.spans[4]!.id, datas[4]!.length, w.buf, w.spans[4]!.offset - 1000, w.spans[4]!.length, WHERE);
  await assert.rejects(async () => p, (err: unknown) => err instanceof HoldfastError && err.code === 'INTEGRITY' && /content does not match its id/.test(err.message));
});

test('openMany: a failed write throws the system error', { skip: NO_MANY }, async () => {
  const { buf, spans } = await packed([new Rng(5161).text(5000)]);
  const dir = mkdtempSync(path.join(tmpdir(), 'holdfast-openmany-'));
  try {
    closeSync(openSync(path.join(dir, 'f'), 'w'));
    const ro = openSync(path.join(dir, 'f'), 'r');
    try {
      assert.throws(() => new BlobOpener(key).openMany('data', spans, 0, 1, buf, 1000, ro, 0), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
    } finally {
      closeSync(ro);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('openMany with an O_DIRECT descriptor writes page-aligned blobs through it (asynchronously: finishWrites waits), the rest through fd; a direct write that fails is done through fd and turns direct off', { skip: NO_MANY }, async (t) => {
  const rng = new Rng(5162);
  const aligned = [rng.text(128 << 10), Buffer.alloc(128 << 10), rng.bytes(64 << 10), rng.text(8192)];
  const dir = mkdtempSync(path.join(tmpdir(), 'holdfast-openmany-'));
  try {
    const file = path.join(dir, 'f');
    closeSync(openSync(file, 'w'));
    let dfd: number;
    try {
      dfd = openSync(file, constants.O_WRONLY | constants.O_DIRECT);
    } catch (err) {
      return t.skip(`${tmpdir()} does not take O_DIRECT: ${(err as Error).message}`);
    }
    const ro = openSync(file, 'r');
    const rw = openSync(file, 'r+');
    const roDirect = openSync(file, constants.O_RDONLY | constants.O_DIRECT);
    try {
      // Every blob aligned: fd is read-only, so only writes through dfd can succeed.
      const a = await packed(aligned);
      const opener = new BlobOpener(key);
      assert.equal(opener.openMany('data', a.spans, 0, a.spans.length, a.buf, 1000, ro, 8192, dfd), aligned.length);
      opener.finishWrites();
      assert.equal(opener.directFailed, false);
      assert.ok(readFileSync(file).subarray(8192).equals(Buffer.concat(aligned)), 'the blobs are in the file at their positions (the zero one a hole)');
      // A blob of 1000 bytes, and what follows it (no longer page-aligned), go through fd.
      const b = await packed([rng.text(128 << 10), rng.text(1000), rng.text(128 << 10)]);
      assert.throws(() => opener.openMany('data', b.spans, 0, 3, b.buf, 1000, ro, 0, dfd), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
      opener.finishWrites();
      assert.equal(opener.openMany('data', b.spans, 0, 3, b.buf, 1000, rw, 0, dfd), 3);
      opener.finishWrites();
      assert.equal(opener.directFailed, false, 'unaligned blobs are not a failure of direct writes');
      // A direct write that fails (here: a read-only O_DIRECT descriptor) is done through fd...
      const c = await packed(aligned);
      const other = new BlobOpener(key);
      assert.equal(other.openMany('data', c.spans, 0, c.spans.length, c.buf, 1000, rw, 0, roDirect), aligned.length);
      other.finishWrites();
      assert.equal(other.directFailed, true);
      assert.ok(readFileSync(file).subarray(0, 128 << 10).equals(aligned[0]!));
      // ...and from then on dfd is not used: with a read-only fd the aligned blobs now fail.
      assert.throws(() => other.openMany('data', c.spans, 0, c.spans.length, c.buf, 1000, ro, 0, dfd), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
      other.finishWrites();
    } finally {
      for (const fd of [dfd, ro, rw, roDirect]) closeSync(fd);
    }

    // A write that fails when it completes, not when submitted (HOLDFAST_TEST_AIO_FAIL=1 makes
    // every completion count as failed, in a child process): done again through fd, and
    // reported by finishWrites; when fd fails too, finishWrites throws that error.
    const d = await packed(aligned);
    writeFileSync(path.join(dir, 'pack'), d.buf);
    const openBlobJs = fileURLToPath(new URL('./open-blob.js', import.meta.url));
    const code = `import { BlobOpener } from ${JSON.stringify(openBlobJs)};
      import { closeSync, constants, openSync, readFileSync } from 'node:fs';
      const [dir, keyHex, spansJson] = process.argv.slice(1);
      const spans = JSON.parse(spansJson), buf = readFileSync(dir + '/pack'), out = {};
      for (const mode of ['rw', 'ro']) {
        const o = new BlobOpener(Buffer.from(keyHex, 'hex'));
        const file = dir + '/aio-' + mode;
        closeSync(openSync(file, 'w'));
        const fd = openSync(file, mode === 'rw' ? 'r+' : 'r'), dfd = openSync(file, constants.O_WRONLY | constants.O_DIRECT);
        const k = o.openMany('data', spans, 0, spans.length, buf, 1000, fd, 0, dfd);
        let error;
        try { o.finishWrites(); } catch (err) { error = err.code; }
        closeSync(fd); closeSync(dfd);
        out[mode] = { k, error, directFailed: o.directFailed, file: readFileSync(file).toString('base64') };
      }
      console.log(JSON.stringify(out));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code, dir, key.toString('hex'), JSON.stringify(d.spans)], { env: { ...process.env, HOLDFAST_TEST_AIO_FAIL: '1' }, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Record<'rw' | 'ro', { k: number; error?: string; directFailed: boolean; file: string }>;
    assert.equal(out.rw.k, aligned.length);
    assert.equal(out.rw.error, undefined);
    assert.equal(out.rw.directFailed, true);
    assert.ok(Buffer.from(out.rw.file, 'base64').equals(Buffer.concat(aligned)), 'every blob is in the file, written again through fd');
    assert.equal(out.ro.k, aligned.length, 'the writes were submitted');
    assert.equal(out.ro.error, 'EBADF', 'finishWrites throws the error of the write through fd');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('sha256Many gives node:crypto\'s digests for any mix of lengths and counts, in the lanes and without them', { skip: NO_MANY }, () => {
  const helper = nativeHelper()!;
  const rng = new Rng(5162);
  const cases: Buffer[][] = [];
  for (const len of [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 4096, 128 << 10]) cases.push(Array.from({ length: 16 }, () => rng.bytes(len)));
  for (let t = 0; t < 40; t++) {
    const n = 1 + (t % 64);
    const top = t % 2 ? 300 : 140_000;
    cases.push(Array.from({ length: n }, () => rng.bytes(rng.int(top))));
  }
  for (const list of cases) {
    const got = helper.sha256Many!(list);
    assert.equal(got.length, 32 * list.length);
    for (const [i, b] of list.entries()) assert.ok(got.subarray(32 * i, 32 * i + 32).equals(createHash('sha256').update(b).digest()), `length ${b.length}, ${list.length} messages`);
  }
  // The same in a process without the lanes (HOLDFAST_TEST_NO_SHA_LANES=1), and the lanes are off there.
  const module = fileURLToPath(new URL('../zstd-sync.node', import.meta.url));
  const code = `const h = require(${JSON.stringify(module)}); const c = require('node:crypto'); let bad = 0;
    for (const len of [0, 64, 1000, 131072]) { const l = Array.from({ length: 16 }, (_, i) => Buffer.alloc(len, i)); const d = h.sha256Many(l);
      l.forEach((b, i) => { if (!d.subarray(32 * i, 32 * i + 32).equals(c.createHash('sha256').update(b).digest())) bad++; }); }
    console.log(JSON.stringify({ lanes: h.shaLanes, bad }));`;
  for (const off of [true, false]) {
    const env = { ...process.env, HOLDFAST_TEST_NO_SHA_LANES: off ? '1' : '0' };
    const r = spawnSync(process.execPath, ['-e', code], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { lanes: number; bad: number };
    assert.equal(out.bad, 0);
    if (off) assert.equal(out.lanes, 0);
    else assert.equal(out.lanes, helper.shaLanes);
  }
});

test('the SHA-256 lanes are in use here (skipped on a CPU without AVX-512: the tests above then cover the one-at-a-time path)', { skip: !many ? NO_MANY : nativeHelper()?.shaLanes !== 16 && 'this CPU has no AVX-512F/BW' }, () => {
  assert.equal(nativeHelper()?.shaLanes, 16);
});
