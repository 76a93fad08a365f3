/**
 * Runs the storage contract (contract.ts) against every driver and wrapper holdfast has, plus the
 * promises only the local driver makes (temporary files, exact file content on disk).
 */
import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { type Backend, BufferedWriter, type ByteRange, type Capabilities, type ObjectInfo, type ObjectWriter, type PutData, type PutOptions } from './backend.js';
import { assertBytes, backendContract, listAll } from './contract.js';
import { LimitBackend } from './limit.js';
import { LocalBackend } from './local.js';
import { MemoryBackend } from './mem.js';
import { Rng, tmpDir } from '../testing/helpers.js';

async function local(): Promise<{ backend: LocalBackend; cleanup: () => Promise<void> }> {
  const { dir, cleanup } = await tmpDir('holdfast-contract-');
  return { backend: new LocalBackend(dir), cleanup };
}

const noCleanup = async (): Promise<void> => undefined;

backendContract('local', local);
backendContract('memory', async () => ({ backend: new MemoryBackend(), cleanup: noCleanup }));
// A limit of 2 (below every driver's maxConcurrency) makes requests queue in the wrapper.
backendContract(
  'limit(local)',
  async () => {
    const f = await local();
    return { backend: new LimitBackend(f.backend, 2), cleanup: f.cleanup };
  },
);
backendContract('limit(memory)', async () => ({ backend: new LimitBackend(new MemoryBackend(), 2), cleanup: noCleanup }));

// ---------------------------------------------------------------- local driver only

/** Every file below `dir`, relative, '/'-separated (including hidden ones). */
async function filesBelow(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const ent of await fsp.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (ent.isFile()) out.push(path.relative(dir, path.join(ent.parentPath, ent.name)).split(path.sep).join('/'));
  }
  return out.sort();
}

describe('LocalBackend on disk', () => {
  test('temporary files a crashed writer left behind are never listed', async () => {
    const { dir, cleanup } = await tmpDir();
    try {
      const b = new LocalBackend(dir);
      const rng = new Rng(101);
      await b.put('data/ab/ab01', rng.bytes(100));
      await b.put('config', rng.bytes(10));
      // What a writer killed between open and rename leaves: `.tmp-<name>-<random>` beside the target.
      await fsp.writeFile(path.join(dir, 'data', 'ab', '.tmp-ab02-0123456789ab'), rng.bytes(50));
      await fsp.writeFile(path.join(dir, '.tmp-config-a1b2c3d4e5f6'), rng.bytes(7));
      await fsp.writeFile(path.join(dir, '.tmp-writer-0123456789abcdef'), rng.bytes(70));
      await fsp.mkdir(path.join(dir, 'snapshots'));
      await fsp.writeFile(path.join(dir, 'snapshots', '.tmp-s1-ffffffffffff'), Buffer.alloc(0));
      assert.deepEqual(await listAll(b, ''), [
        { name: 'config', size: 10 },
        { name: 'data/ab/ab01', size: 100 },
      ]);
      assert.deepEqual(await listAll(b, 'data/ab/'), [{ name: 'data/ab/ab01', size: 100 }]);
      assert.deepEqual(await listAll(b, 'snapshots/'), []);
      // The leftover does not block writing the object it was meant to become.
      const s1 = rng.bytes(33);
      await b.put('snapshots/s1', s1, { createOnly: true });
      assertBytes(await b.get('snapshots/s1'), s1, 'object written next to a leftover temp file');
      assert.deepEqual(await listAll(b, 'snapshots/'), [{ name: 'snapshots/s1', size: 33 }]);
    } finally {
      await cleanup();
    }
  });

  test('put leaves no temporary files behind, on success and on a refused createOnly', async () => {
    const { dir, cleanup } = await tmpDir();
    try {
      const b = new LocalBackend(dir);
      const rng = new Rng(102);
      const expected = new Map<string, Buffer>();
      const puts: Array<Promise<void>> = [];
      for (let i = 0; i < 60; i++) {
        const name = `data/${(i % 4).toString(16).padStart(2, '0')}/obj-${i}`;
        const data = rng.bytes(rng.int(20_000));
        expected.set(name, data);
        puts.push(b.put(name, data));
      }
      await Promise.all(puts);
      // Replace some, and have createOnly refused for others.
      for (let i = 0; i < 60; i += 3) {
        const name = `data/${(i % 4).toString(16).padStart(2, '0')}/obj-${i}`;
        const data = rng.bytes(100);
        await b.put(name, data);
        expected.set(name, data);
        await assert.rejects(b.put(name, rng.bytes(5), { createOnly: true }), { name: 'StorageError', kind: 'exists' });
      }
      await b.put('empty', Buffer.alloc(0));
      expected.set('empty', Buffer.alloc(0));
      assert.deepEqual(await filesBelow(dir), [...expected.keys()].sort(), 'the directory holds exactly the objects, no temporary files');
    } finally {
      await cleanup();
    }
  });

  test('after put the file at the object path has exactly the content', async () => {
    const { dir, cleanup } = await tmpDir();
    try {
      const b = new LocalBackend(dir);
      const rng = new Rng(103);
      const objects: Array<[string, Buffer]> = [
        ['config', rng.bytes(123)],
        ['keys/0123abcd', rng.text(700)],
        ['data/ff/ff00', rng.bytes(3 << 20)],
        ['empty', Buffer.alloc(0)],
      ];
      for (const [n, data] of objects) await b.put(n, data, { createOnly: n !== 'config' });
      for (const [n, data] of objects) {
        assertBytes(await fsp.readFile(path.join(dir, ...n.split('/'))), data, `file for ${n}`);
      }
      const replaced = rng.bytes(5);
      await b.put('config', replaced);
      assertBytes(await fsp.readFile(path.join(dir, 'config')), replaced, 'file for config after a replacing put');
    } finally {
      await cleanup();
    }
  });

  test('writers leave no temporary files: after commit, abort, a refused createOnly and an invalid name', async () => {
    const { dir, cleanup } = await tmpDir();
    try {
      const b = new LocalBackend(dir);
      const rng = new Rng(106);
      const committed = await b.openWriter();
      await committed.write([rng.bytes(5000)]);
      // While a writer is open its temporary file exists but is not an object.
      assert.equal((await filesBelow(dir)).length, 1, 'the open writer has one temporary file');
      assert.deepEqual(await listAll(b, ''), []);
      await committed.commit('data/aa/one');
      const aborted = await b.openWriter();
      await aborted.write([rng.bytes(5000)]);
      await aborted.abort();
      const refused = await b.openWriter();
      await refused.write([rng.bytes(10)]);
      await assert.rejects(refused.commit('data/aa/one', { createOnly: true }), { name: 'StorageError', kind: 'exists' });
      const invalid = await b.openWriter();
      await invalid.write([rng.bytes(10)]);
      await assert.rejects(invalid.commit('a//b'), { name: 'StorageError', kind: 'invalid' });
      assert.deepEqual(await filesBelow(dir), ['data/aa/one']);
    } finally {
      await cleanup();
    }
  });

  test('a second LocalBackend on the same directory sees the first one\'s objects (persistence)', async () => {
    const { dir, cleanup } = await tmpDir();
    try {
      const rng = new Rng(104);
      const data = rng.bytes(1000);
      const first = new LocalBackend(dir);
      assert.equal(first.capabilities.persistent, true);
      await first.put('index/i1', data);
      await first.close();
      const second = new LocalBackend(dir);
      assertBytes(await second.get('index/i1'), data, 'object read through a new backend');
      assert.equal(second.location, path.resolve(dir));
    } finally {
      await cleanup();
    }
  });
});

// ---------------------------------------------------------------- limit wrapper only

/** A MemoryBackend whose calls each wait a few event-loop turns and count how many overlap. */
class ProbeBackend implements Backend {
  readonly inner = new MemoryBackend('probe:');
  readonly location = this.inner.location;
  readonly capabilities: Capabilities = { conditionalCreate: true, maxConcurrency: 3, persistent: false };
  inFlight = 0;
  maxInFlight = 0;

  private async track<T>(fn: () => Promise<T>): Promise<T> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
      return await fn();
    } finally {
      this.inFlight--;
    }
  }

  put(name: string, data: PutData, options?: PutOptions): Promise<void> {
    return this.track(() => this.inner.put(name, data, options));
  }
  get(name: string, range?: ByteRange): Promise<Buffer> {
    return this.track(() => this.inner.get(name, range));
  }
  stat(name: string): Promise<ObjectInfo> {
    return this.track(() => this.inner.stat(name));
  }
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise<void>((resolve) => setImmediate(resolve));
      yield* this.inner.list(prefix);
    } finally {
      this.inFlight--;
    }
  }
  delete(name: string): Promise<void> {
    return this.track(() => this.inner.delete(name));
  }
  async openWriter(): Promise<ObjectWriter> {
    return new BufferedWriter(this);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

describe('LimitBackend', () => {
  test('never has more than `limit` requests in flight, and defaults to the inner maxConcurrency', async () => {
    const rng = new Rng(105);
    for (const limit of [1, 2, undefined]) {
      const probe = new ProbeBackend();
      const b = limit === undefined ? new LimitBackend(probe) : new LimitBackend(probe, limit);
      const want = limit ?? probe.capabilities.maxConcurrency;
      const names = Array.from({ length: 40 }, (_, i) => `o/${i}`);
      await Promise.all(names.map((n) => b.put(n, rng.bytes(10))));
      await Promise.all([...names.map((n) => b.get(n)), ...names.map((n) => b.stat(n)), listAll(b, ''), listAll(b, 'o/')]);
      await Promise.all(names.map((n) => b.delete(n)));
      assert.equal(probe.maxInFlight, want, `limit ${String(limit)}: peak requests in flight`);
      assert.equal(probe.inFlight, 0);
      assert.deepEqual(b.capabilities, probe.capabilities, 'the wrapper declares the inner capabilities');
      assert.equal(b.location, probe.location);
    }
  });

  test('a failing request frees its slot', async () => {
    const b = new LimitBackend(new MemoryBackend(), 1);
    for (let i = 0; i < 5; i++) await assert.rejects(b.get(`missing-${i}`), { name: 'StorageError', kind: 'not-found' });
    await b.put('x', Buffer.of(1));
    assert.deepEqual(await b.get('x'), Buffer.of(1));
  });
});
