/**
 * BlobOpener (the restore workers' opener: native/zstd-sync.c's openBlob, or the JS path) against
 * openBlob (the JS path Repository.openBlob uses): the same plaintext for every kind of blob, and
 * for every kind of damage the same INTEGRITY error, word for word. Run with the native helper
 * when it was built here; the JS fallback (no helper) is covered by `native: false` and, in a
 * worker thread, by HOLDFAST_TEST_NO_ZSTD_SYNC.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { HoldfastError } from '../errors/catalogue.js';
import { Rng } from '../testing/helpers.js';
import { MODE_NONE, MODE_ZSTD, compress } from './compress.js';
import { nativeHelper } from '../util/native.js';
import { KEY_LEN, seal, sha256 } from './crypto.js';
import { BlobOpener, openBlob } from './open-blob.js';
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
