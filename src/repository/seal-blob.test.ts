/**
 * sealBlobOwned (the backup workers' sealer: native/zstd-sync.c's sealBlob, or the JS path) against
 * sealBlob (the JS path the repository uses): both make the stored form of docs/design.md §4-§5, so
 * what either seals opens with openBlob to the same bytes, with the same mode byte, and is bound to
 * its key, type and id. Run with the native helper when it was built here; `native: false` covers
 * the JS path.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HoldfastError } from '../errors/catalogue.js';
import { Rng } from '../testing/helpers.js';
import { nativeHelper } from '../util/native.js';
import { type Compression, MODE_NONE, MODE_ZSTD } from './compress.js';
import { KEY_LEN, NONCE_LEN, SEAL_OVERHEAD, sha256, unseal } from './crypto.js';
import { openBlob } from './open-blob.js';
import { blobAad } from './pack.js';
import { sealBlob, sealBlobOwned } from './seal-blob.js';

const rng = new Rng(6161);
const key = rng.bytes(KEY_LEN);
const native = nativeHelper()?.sealBlob !== undefined;
const NO_NATIVE = !native && 'native/zstd-sync.c (with sealBlob) was not built on this machine';

function compressible(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i % 251) ^ ((i >> 12) & 0x0f);
  return b;
}

const inputs: Array<[string, Buffer]> = [
  ['empty', Buffer.alloc(0)],
  ['10 bytes', rng.bytes(10)],
  ['63 zero bytes (below the compression floor)', Buffer.alloc(63)],
  ['64 zero bytes', Buffer.alloc(64)],
  ['1 KiB random (incompressible)', rng.bytes(1024)],
  ['128 KiB compressible', compressible(128 << 10)],
  ['128 KiB of zeros', Buffer.alloc(128 << 10)],
  ['1 MiB random', rng.bytes(1 << 20)],
  ['a view into a larger buffer', rng.bytes(3000).subarray(7, 2007)],
];
const compressions: Compression[] = [{ algo: 'none' }, { algo: 'zstd', level: 1 }, { algo: 'zstd', level: 3 }, { algo: 'zstd', level: 19 }, { algo: 'zstd', level: -5 }];

/** The mode byte and payload length a sealed blob holds. */
function plaintextOf(sealed: Uint8Array, id: Buffer): { mode: number; length: number } {
  const plain = unseal(key, blobAad('data', id), sealed);
  return { mode: plain[0]!, length: plain.length - 1 };
}

test('what the native sealer seals opens to the same bytes, with the mode byte the JS path chooses', { skip: NO_NATIVE }, async () => {
  for (const [what, data] of inputs) {
    const id = sha256(data);
    for (const c of compressions) {
      const label = `${what}, ${c.algo === 'none' ? 'none' : `zstd:${c.level}`}`;
      const sealed = await sealBlobOwned(key, 'data', id, data, c);
      assert.equal(sealed.byteOffset, 0, label);
      assert.equal(sealed.byteLength, sealed.buffer.byteLength, `${label}: the buffer is exactly the sealed blob (transferable)`);
      assert.deepEqual(await openBlob(key, 'data', id, Buffer.from(sealed), data.length, 'test'), data, label);
      const js = await sealBlob(key, 'data', id, data, c);
      const n = plaintextOf(sealed, id);
      const j = plaintextOf(Buffer.concat(js.parts, js.length), id);
      assert.equal(n.mode, j.mode, `${label}: mode byte`);
      if (c.algo === 'none' || data.length < 64) assert.equal(n.mode, MODE_NONE, label);
      if (n.mode === MODE_NONE) assert.equal(n.length, data.length, label);
      else assert.ok(n.mode === MODE_ZSTD && n.length < data.length, label);
      assert.equal(sealed.length, SEAL_OVERHEAD + 1 + n.length, label);
    }
  }
});

test('every native seal has a new nonce, and is bound to its key, type and id', { skip: NO_NATIVE }, async () => {
  const data = compressible(5000);
  const id = sha256(data);
  const nonces = new Set<string>();
  for (let i = 0; i < 200; i++) nonces.add(Buffer.from((await sealBlobOwned(key, 'data', id, data, { algo: 'zstd', level: 3 })).subarray(0, NONCE_LEN)).toString('hex'));
  assert.equal(nonces.size, 200);
  const sealed = Buffer.from(await sealBlobOwned(key, 'tree', id, data, { algo: 'zstd', level: 3 }));
  assert.deepEqual(await openBlob(key, 'tree', id, sealed, data.length, 'test'), data);
  const fails = async (k: Buffer, type: 'data' | 'tree', i: Buffer, s: Buffer): Promise<void> => {
    await assert.rejects(openBlob(k, type, i, s, data.length, 'test'), (e: unknown) => e instanceof HoldfastError && /authentication failed/.test(e.message));
  };
  await fails(key, 'data', id, sealed);
  await fails(rng.bytes(KEY_LEN), 'tree', id, sealed);
  const other = Buffer.from(id);
  other[0] = other[0]! ^ 1;
  await fails(key, 'tree', other, sealed);
  // The cipher context keeps the key schedule per thread: a second key in between must be used.
  const k2 = rng.bytes(KEY_LEN);
  const s2 = Buffer.from(await sealBlobOwned(k2, 'data', id, data, { algo: 'none' }));
  const s3 = Buffer.from(await sealBlobOwned(key, 'data', id, data, { algo: 'none' }));
  assert.deepEqual(await openBlob(k2, 'data', id, s2, data.length, 'test'), data);
  assert.deepEqual(await openBlob(key, 'data', id, s3, data.length, 'test'), data);
});

test('the native sealer refuses bad arguments with a TypeError', { skip: NO_NATIVE }, () => {
  const seal = nativeHelper()!.sealBlob!;
  const id = Buffer.alloc(32);
  const data = Buffer.alloc(100);
  assert.throws(() => seal(Buffer.alloc(31), 0, id, data, 3), TypeError);
  assert.throws(() => seal(key, 256, id, data, 3), TypeError);
  assert.throws(() => seal(key, 0, Buffer.alloc(31), data, 3), TypeError);
  assert.throws(() => seal(key, 0, id, 'text' as unknown as Buffer, 3), TypeError);
  assert.throws(() => seal(key, 0, id, data, 'x' as unknown as number), TypeError);
});

test('the JS path (native: false) makes blobs that open the same way', async () => {
  for (const [what, data] of inputs) {
    const id = sha256(data);
    for (const c of compressions) {
      const sealed = await sealBlobOwned(key, 'data', id, data, c, false);
      assert.equal(sealed.byteLength, sealed.buffer.byteLength, what);
      assert.deepEqual(await openBlob(key, 'data', id, Buffer.from(sealed), data.length, 'test'), data, what);
    }
  }
});
