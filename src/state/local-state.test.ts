/**
 * Local state under damage (issue 7, "Local state"): every kind of file holdfast keeps on the
 * local disk — checksummed state files (storage status), the derived-key cache and the async
 * archiving spool — torn, truncated, bit-flipped or replaced by garbage. Each damaged file is
 * detected and the previous version or a rebuild is used; none makes holdfast acknowledge a WAL
 * file it has not stored, open with a wrong key, or fail.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Rng, tmpDir } from '../testing/helpers.js';
import { readStateFile, writeStateFile } from './state-file.js';
import { FileKeyCache } from './key-cache.js';
import { Spool } from '../ops/pg-archive-spool.js';
import { HoldfastError } from '../errors/catalogue.js';

const isValue = (v: unknown): v is { n: number } => typeof v === 'object' && v !== null && typeof (v as { n?: unknown }).n === 'number';

/** Damage kinds applied to one file, seeded. */
function damage(file: string, kind: 'truncate' | 'zero' | 'flip' | 'garbage' | 'empty', rng: Rng): void {
  const buf = fs.readFileSync(file);
  if (kind === 'empty') fs.writeFileSync(file, Buffer.alloc(0));
  else if (kind === 'truncate') fs.writeFileSync(file, buf.subarray(0, rng.int(Math.max(1, buf.length - 1))));
  else if (kind === 'zero') {
    const at = rng.int(buf.length);
    buf.fill(0, at, Math.min(buf.length, at + 1 + rng.int(16)));
    fs.writeFileSync(file, buf);
  } else if (kind === 'flip') {
    const at = rng.int(buf.length);
    buf[at] = buf[at]! ^ (1 << rng.int(8));
    fs.writeFileSync(file, buf);
  } else fs.writeFileSync(file, rng.bytes(1 + rng.int(200)));
}

const KINDS = ['truncate', 'zero', 'flip', 'garbage', 'empty'] as const;

describe('local state files under damage', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  const rng = new Rng(777);

  before(async () => ({ dir, cleanup } = await tmpDir('holdfast-local-state-')));
  after(() => cleanup());

  test('state file: a damaged current file falls back to the previous version; both damaged read as absent (rebuilt by the next write)', () => {
    for (const kind of KINDS) {
      const file = path.join(dir, `status-${kind}`);
      writeStateFile(file, { n: 1 }, 1000);
      writeStateFile(file, { n: 2 }, 2000);
      assert.deepEqual(readStateFile(file, isValue).state, { value: { n: 2 }, written: 2000, from: 'current' });
      damage(file, kind, rng);
      const r = readStateFile(file, isValue);
      // A flip or zeroed range inside the JSON might by chance leave it valid JSON: the checksum still catches it.
      assert.deepEqual(r.state, { value: { n: 1 }, written: 1000, from: 'previous' }, `${kind}: ${r.problem}`);
      assert.ok(r.problem, `${kind}: the damage is reported`);
      damage(`${file}.prev`, kind, rng);
      assert.equal(readStateFile(file, isValue).state, undefined, kind);
      writeStateFile(file, { n: 3 }, 3000);
      assert.equal(readStateFile(file, isValue).state?.value.n, 3, `${kind}: a fresh write replaces the damage`);
    }
  });

  test('state file: a crash between its two renames leaves only .prev, which is read', () => {
    const file = path.join(dir, 'status-crash');
    writeStateFile(file, { n: 1 }, 1000);
    fs.renameSync(file, `${file}.prev`); // what the crash left: the old file moved aside, the new one not yet in place
    assert.deepEqual(readStateFile(file, isValue).state, { value: { n: 1 }, written: 1000, from: 'previous' });
  });

  test('key cache: a damaged entry or secret is never trusted; the cache is rebuilt', () => {
    for (const kind of KINDS) {
      const cacheDir = path.join(dir, `keys-${kind}`);
      const kek = rng.bytes(32);
      const cache = new FileKeyCache(cacheDir);
      cache.put('key1', 'pw', kek);
      assert.deepEqual(new FileKeyCache(cacheDir).get('key1', 'pw'), kek);
      const entry = fs.readdirSync(cacheDir).find((f) => /^[0-9a-f]{64}$/.test(f))!;
      damage(path.join(cacheDir, entry), kind, rng);
      // A wrong-length entry is a miss; a 32-byte one with flipped bits is returned, and the
      // repository then finds it does not unwrap the key file and drops it (repository.test.ts).
      const got = new FileKeyCache(cacheDir).get('key1', 'pw');
      assert.ok(got === undefined || (got.length === 32 && !got.equals(kek)), kind);
      // The secret that names entries: damaged, it is replaced; old entries just miss.
      damage(path.join(cacheDir, 'secret'), kind, rng);
      const fresh = new FileKeyCache(cacheDir);
      fresh.put('key1', 'pw', kek);
      assert.deepEqual(new FileKeyCache(cacheDir).get('key1', 'pw'), kek, `${kind}: the cache works again`);
      assert.equal(fs.readFileSync(path.join(cacheDir, 'secret')).length, 32);
    }
  });

  test('spool: a damaged success record, error record, key or binding never acknowledges a file; it is dropped and the file archived again', () => {
    const wal = path.join(dir, '000000010000000000000001');
    fs.writeFileSync(wal, rng.bytes(64 * 1024));
    for (const kind of KINDS) {
      const spool = new Spool(path.join(dir, `spool-${kind}`)).open();
      const instance = 'a'.repeat(64);
      spool.bind(instance, 'repoid');
      const name = path.basename(wal);
      spool.writeOk(name, spool.fingerprintFile(name, wal));
      const rec = spool.readRecord(name);
      assert.equal(rec?.kind, 'ok');
      assert.equal(spool.matches(name, wal, (rec as { fingerprint: string }).fingerprint), true);

      // The success record: damaged, it either fails to parse (dropped) or no longer matches.
      damage(spool.path(`${name}.ok`), kind, rng);
      const after = new Spool(spool.dir).open().readRecord(name);
      assert.ok(after === undefined || (after.kind === 'ok' && !new Spool(spool.dir).open().matches(name, wal, after.fingerprint)), `${kind}: a damaged .ok must not acknowledge`);

      // The MAC key: damaged, records made with it stop matching (or it is replaced).
      spool.writeOk(name, spool.fingerprintFile(name, wal));
      const fp = (spool.readRecord(name) as { fingerprint: string }).fingerprint;
      damage(spool.path('key'), kind, rng);
      const reopened = new Spool(spool.dir).open();
      assert.equal(reopened.matches(name, wal, fp), false, `${kind}: a record under a damaged key must not match`);
      assert.equal(fs.readFileSync(spool.path('key')).length, 32, `${kind}: the key is whole again`);

      // An error record: damaged, it is dropped or still a well-formed error (never an acknowledgement).
      spool.remove(name);
      spool.writeError(name, new HoldfastError('WAL_CONFLICT', 'conflict', { hint: 'h' }), undefined);
      damage(spool.path(`${name}.error`), kind, rng);
      const er = new Spool(spool.dir).open().readRecord(name);
      assert.ok(er === undefined || er.kind === 'error', kind);

      // The binding: damaged, it reads as unbound, and binding again clears every record.
      spool.writeOk(name, spool.fingerprintFile(name, wal));
      damage(spool.path('repository'), kind, rng);
      const rb = new Spool(spool.dir).open();
      const b = rb.binding();
      if (b?.instance !== instance) {
        rb.bind(instance, 'repoid');
        assert.equal(rb.readRecord(name), undefined, `${kind}: records of an unknown binding are cleared`);
      }
    }
  });
});
