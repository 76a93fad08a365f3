/**
 * archive-push's storing path without a PostgreSQL server (the CLI tests use real ones): a
 * segment is validated from its first page and size, then read, compressed and encrypted in
 * pieces. A file that changes between validation and storing must not be stored; the async
 * worker's spool fingerprint (the tap) must be of exactly the content stored.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { HoldfastError } from '../errors/catalogue.js';
import { kdfParams } from '../repository/keys.js';
import { Repository } from '../repository/repository.js';
import { MemoryBackend } from '../storage/mem.js';
import { Rng, tmpDir } from '../testing/helpers.js';
import { Logger } from '../ui/output.js';
import { type ContentTap, prepareWal, storeWal, walObjectName } from './pg-archive.js';
import { Spool } from './pg-archive-spool.js';

const MiB = 1 << 20;
const SYSID = 7310000000000000001n;
const CTX = { log: new Logger('error'), progress: false };

/** A synthetic PostgreSQL 15 segment of 4 MiB segments, number `n` of timeline 1: the long page header, then WAL-like pages. */
function segment(rng: Rng, n: number, segSize = 4 * MiB): { name: string; data: Buffer } {
  const data = Buffer.alloc(segSize);
  for (let off = 8192; off < segSize; off += 8192) rng.bytes(4096).copy(data, off);
  data.writeUInt16LE(0xd110, 0); // xlp_magic (PostgreSQL 15)
  data.writeUInt16LE(0x0002, 2); // xlp_info: XLP_LONG_HEADER
  data.writeUInt32LE(1, 4); // xlp_tli
  data.writeBigUInt64LE(BigInt(segSize) * BigInt(n), 8); // xlp_pageaddr
  data.writeBigUInt64LE(SYSID, 24);
  data.writeUInt32LE(segSize, 32);
  data.writeUInt32LE(8192, 36);
  const perId = 0x1_0000_0000 / segSize;
  const name = `00000001${Math.floor(n / perId).toString(16).toUpperCase().padStart(8, '0')}${(n % perId).toString(16).toUpperCase().padStart(8, '0')}`;
  return { name, data };
}

async function fresh(): Promise<Repository> {
  const backend = new MemoryBackend();
  await Repository.init(backend, 'pw', { kdf: kdfParams(10), chunker: { min: 64 << 10, avg: 128 << 10, max: 512 << 10 } });
  return Repository.open(backend, 'pw');
}

describe('storeWal: segments in pieces', () => {
  test('a segment is stored and reads back exactly; a second push of the same content is a duplicate', async (t) => {
    const { dir, cleanup } = await tmpDir();
    t.after(cleanup);
    const rng = new Rng(31);
    const repo = await fresh();
    const { name, data } = segment(rng, 5);
    const file = path.join(dir, name);
    fs.writeFileSync(file, data);
    const r = await storeWal(repo, 'main', prepareWal(file), CTX);
    assert.deepEqual([r.stored, r.duplicate, r.bytes], [true, false, data.length]);
    assert.ok(r.storedBytes < data.length, 'compressed');
    assert.ok((await repo.getNamed(walObjectName('main', name)))?.equals(data));
    const again = await storeWal(repo, 'main', prepareWal(file), CTX, { quietDuplicate: true });
    assert.deepEqual([again.stored, again.duplicate], [false, true]);
    const other = Buffer.from(data);
    other[MiB + 7]! ^= 0xff;
    fs.writeFileSync(file, other);
    await assert.rejects(storeWal(repo, 'main', prepareWal(file), CTX), (err: unknown) => err instanceof HoldfastError && err.code === 'WAL_CONFLICT');
    assert.ok((await repo.getNamed(walObjectName('main', name)))?.equals(data), 'the stored copy is untouched');
  });

  test('a segment that grows, shrinks or gets another first page after validation is WAL_INVALID and nothing is stored', async (t) => {
    const { dir, cleanup } = await tmpDir();
    t.after(cleanup);
    const rng = new Rng(32);
    const changes: Array<[string, (file: string) => void]> = [
      ['grows', (file) => fs.appendFileSync(file, Buffer.alloc(100))],
      ['shrinks', (file) => fs.truncateSync(file, 3 * MiB)],
      ['first page', (file) => fs.writeSync(fs.openSync(file, 'r+'), Buffer.from([0x01]), 0, 1, 100)],
    ];
    for (const [what, change] of changes) {
      const repo = await fresh();
      // Bind the cluster first, so that the push under test gets as far as reading its pieces.
      const first = segment(rng, 1);
      fs.writeFileSync(path.join(dir, first.name), first.data);
      await storeWal(repo, 'main', prepareWal(path.join(dir, first.name)), CTX);
      const { name, data } = segment(rng, 6);
      const file = path.join(dir, name);
      fs.writeFileSync(file, data);
      const w = prepareWal(file);
      if (what === 'first page') change(file); // before the first piece is read
      let pieces = 0;
      const tap: ContentTap = {
        begin: () => undefined,
        update: () => {
          if (++pieces === 1 && what !== 'first page') change(file); // after the first piece
        },
      };
      await assert.rejects(storeWal(repo, 'main', w, CTX, { tap }), (err: unknown) => {
        assert.ok(err instanceof HoldfastError, what);
        assert.equal(err.code, 'WAL_INVALID', `${what}: ${err.message}`);
        assert.match(err.message, /changed while it was being archived/);
        return true;
      });
      assert.equal(await repo.getNamed(walObjectName('main', name)), undefined, `${what}: nothing stored`);
    }
  });

  test("the async worker's tap fingerprints exactly the content stored, and again when it is found archived", async (t) => {
    const { dir, cleanup } = await tmpDir();
    t.after(cleanup);
    const rng = new Rng(33);
    const repo = await fresh();
    const spool = new Spool(path.join(dir, 'spool')).open();
    const { name, data } = segment(rng, 9);
    const file = path.join(dir, name);
    fs.writeFileSync(file, data);
    for (const round of ['stored', 'duplicate']) {
      const tap = spool.fingerprinter(name);
      await storeWal(repo, 'main', prepareWal(file), CTX, { tap, quietDuplicate: true });
      const fp = tap.value();
      assert.equal(spool.matches(name, file, fp), true, `${round}: the fingerprint matches the file`);
      const other = Buffer.from(data);
      other[data.length - 1]! ^= 1;
      fs.writeFileSync(path.join(dir, 'other'), other);
      assert.equal(spool.matches(name, path.join(dir, 'other'), fp), false, `${round}: and nothing else`);
    }
  });
});
