/**
 * Objects stored piece by piece (Repository.putNamedPieces, compressPieces, Sealer): what
 * archive-push does with a WAL segment so that it is never in memory whole. The object must be
 * exactly what putNamed would have stored for the same plaintext (getNamed returns it), whatever
 * the piece boundaries, compressibility or compressor; a reader that fails leaves nothing stored.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryBackend } from '../storage/mem.js';
import { Rng } from '../testing/helpers.js';
import { MODE_NONE, MODE_ZSTD, compressPieces, decompress, nativeCompression, scanFrames } from './compress.js';
import { Sealer, seal, unseal } from './crypto.js';
import { kdfParams } from './keys.js';
import { type PieceReader, Repository } from './repository.js';

const PW = 'pieces';

async function fresh(compression = 'zstd:3'): Promise<{ backend: MemoryBackend; repo: Repository }> {
  const backend = new MemoryBackend();
  await Repository.init(backend, PW, { kdf: kdfParams(10), chunker: { min: 64 << 10, avg: 128 << 10, max: 512 << 10 } });
  const repo = await Repository.open(backend, PW);
  if (compression === 'none') repo.setWriteOptions({ compression: { algo: 'none' }, packSize: 16 << 20 });
  return { backend, repo };
}

/** A reader over `data` that counts its opens and closes and fills at most `short` bytes a call when given (still a full buffer except at the end, as the contract says). */
function readerOf(data: Buffer, counts = { opened: 0, closed: 0 }, failAt?: number): () => PieceReader {
  return () => {
    counts.opened++;
    let pos = 0;
    return {
      fill(buf: Buffer): number {
        if (failAt !== undefined && pos >= failAt) throw new Error('disk on fire');
        const n = data.copy(buf, 0, pos, Math.min(data.length, pos + buf.length));
        pos += n;
        return n;
      },
      close(): void {
        counts.closed++;
      },
    };
  };
}

/** WAL-like: pages that are half random, half zero (compresses about 2:1). */
function walLike(rng: Rng, size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let off = 0; off < size; off += 8192) rng.bytes(Math.min(4096, size - off)).copy(out, off);
  return out;
}

describe('compressPieces', () => {
  test('frames in order, one per piece, decompress to the plaintext; piece buffers are reused', async () => {
    const rng = new Rng(11);
    for (const size of [0, 1, 1000, 1 << 16, (1 << 16) * 7, (1 << 16) * 7 + 123]) {
      const data = walLike(rng, size);
      let pos = 0;
      const buffers = new Set<Buffer>();
      const frames: Buffer[] = [];
      let total = 0;
      for await (const [n, frame] of compressPieces(
        (buf) => {
          buffers.add(buf);
          const n = data.copy(buf, 0, pos, Math.min(data.length, pos + buf.length));
          pos += n;
          return n;
        },
        3,
        1 << 16,
      )) {
        total += n;
        frames.push(frame);
      }
      assert.equal(total, size, `${size}: every byte went through`);
      assert.equal(frames.length, Math.ceil(size / (1 << 16)), `${size}: one frame per piece`);
      if (size === 0) continue;
      const payload = Buffer.concat(frames);
      assert.equal(scanFrames(payload).frames, frames.length);
      assert.ok((await decompress(MODE_ZSTD, payload, size)).equals(data), `${size}: round trip`);
      assert.ok(buffers.size <= 5, `${size}: ${buffers.size} piece buffers for ${frames.length} pieces (reused, not one each)`);
    }
  });

  test('a reader failing part-way rejects the iteration (no unhandled rejection from pieces in flight)', async () => {
    const data = walLike(new Rng(12), 10 << 16);
    let pos = 0;
    const frames: Buffer[] = [];
    await assert.rejects(
      (async () => {
        for await (const [, frame] of compressPieces(
          (buf) => {
            if (pos >= 6 << 16) throw new Error('read failed');
            const n = data.copy(buf, 0, pos, pos + buf.length);
            pos += n;
            return n;
          },
          3,
          1 << 16,
        )) {
          frames.push(frame);
        }
      })(),
      /read failed/,
    );
    assert.ok(frames.length <= 6, 'only pieces read before the failure were compressed');
  });

  test('the native helper is used when built (the async binding otherwise)', { skip: !nativeCompression() && 'native/zstd-sync.c not built here' }, () => {
    assert.equal(nativeCompression(), true);
  });
});

describe('Sealer', () => {
  test('sealing piece by piece equals sealing the concatenation (same key, AAD; the nonce differs)', () => {
    const rng = new Rng(13);
    const key = rng.bytes(32);
    const aad = Buffer.from('named:test');
    const pieces = [rng.bytes(10), Buffer.alloc(0), rng.bytes(100_000), rng.bytes(3)];
    const s = new Sealer(key, aad);
    for (const p of pieces) s.update(p);
    const { parts, length } = s.finish();
    const sealed = Buffer.concat(parts);
    assert.equal(sealed.length, length);
    assert.ok(unseal(key, aad, sealed).equals(Buffer.concat(pieces)));
    assert.equal(seal(key, aad, pieces).length, length);
    assert.throws(() => unseal(key, Buffer.from('named:other'), sealed), /authentication failed/);
  });
});

describe('Repository.putNamedPieces', () => {
  test('stores what putNamed stores: getNamed returns the plaintext, for compressible, incompressible and empty content', async () => {
    const rng = new Rng(14);
    const { repo } = await fresh();
    const cases: Array<[string, Buffer]> = [
      ['wal-like, several pieces', walLike(rng, (1 << 20) * 3 + 5000)],
      ['exactly two pieces', walLike(rng, 2 << 20)],
      ['incompressible', rng.bytes(1 << 20)],
      ['small', Buffer.from('START WAL LOCATION: 0/2000028\n')],
      ['empty', Buffer.alloc(0)],
    ];
    for (const [what, data] of cases) {
      const counts = { opened: 0, closed: 0 };
      const { created, size } = await repo.putNamedPieces(`wal/main/${what}`, readerOf(data, counts), { createOnly: true });
      assert.equal(created, true, what);
      assert.ok(size > 0, what);
      assert.equal(counts.opened, counts.closed, `${what}: every reader closed`);
      assert.equal(counts.opened, what === 'wal-like, several pieces' || what === 'exactly two pieces' ? 1 : 2, `${what}: read again only when compression did not pay`);
      const back = await repo.getNamed(`wal/main/${what}`);
      assert.ok(back?.equals(data), `${what}: round trip`);
    }
  });

  test('the stored mode is zstd when it pays and none otherwise, as putNamed decides', async () => {
    const rng = new Rng(15);
    const { backend, repo } = await fresh();
    await repo.putNamedPieces('wal/main/a', readerOf(walLike(rng, 3 << 20)));
    await repo.putNamedPieces('wal/main/b', readerOf(rng.bytes(1 << 20)));
    // The sealed plaintext starts with the mode byte (the AAD is holdfast:named:<name>, design §4).
    const key = (repo as unknown as { masterKey: Buffer }).masterKey;
    const modeOf = async (name: string): Promise<number> => unseal(key, Buffer.from(`holdfast:named:${name}`), await backend.get(name))[0]!;
    assert.equal(await modeOf('wal/main/a'), MODE_ZSTD);
    assert.equal(await modeOf('wal/main/b'), MODE_NONE);
  });

  test('createOnly: an existing object is not replaced ({created: false}), without compression', async () => {
    const rng = new Rng(16);
    const { repo } = await fresh('none');
    const first = walLike(rng, 1 << 20);
    assert.equal((await repo.putNamedPieces('wal/main/x', readerOf(first), { createOnly: true })).created, true);
    assert.equal((await repo.putNamedPieces('wal/main/x', readerOf(walLike(rng, 1 << 20)), { createOnly: true })).created, false);
    assert.ok((await repo.getNamed('wal/main/x'))?.equals(first));
  });

  test('a reader failing part-way stores nothing and closes the reader', async () => {
    const { backend, repo } = await fresh();
    const counts = { opened: 0, closed: 0 };
    await assert.rejects(repo.putNamedPieces('wal/main/broken', readerOf(walLike(new Rng(17), 5 << 20), counts, 2 << 20)), /disk on fire/);
    assert.equal(counts.closed, counts.opened);
    assert.equal(await repo.getNamed('wal/main/broken'), undefined);
    const names: string[] = [];
    for await (const o of backend.list('wal/')) names.push(o.name);
    assert.deepEqual(names, []);
  });
});
