/**
 * The storage contract as a test suite: every promise in the doc comment of `backend.ts`, checked
 * against one driver. Every driver and every wrapper runs this same suite (local, memory, limit
 * today; S3 and SFTP later), so "implements Backend" means "passes `backendContract`".
 *
 * Usage, from a `*.test.ts` file:
 *
 *   backendContract('local', async () => {
 *     const { dir, cleanup } = await tmpDir();
 *     return { backend: new LocalBackend(dir), cleanup };
 *   });
 *
 * `make` is called once per test and must return an empty backend; the suite closes the backend
 * and then calls `cleanup` after each test, whether it passed or not.
 *
 * A driver that cannot keep a promise declares it: `skip` for a case that does not apply (the
 * reason is printed), `todo` for a known bug (the case still runs and its failure is reported as
 * a todo naming the bug, so fixing the bug is visible). Cases guarded by a capability
 * (`conditionalCreate`) are skipped automatically when the driver declares it false.
 *
 * All data is derived from fixed seeds, so a failure reproduces byte for byte. This module imports
 * only storage and test support; it is not itself a test file (no `.test.` in its name).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type Backend, type ObjectInfo, StorageError, type StorageErrorKind } from './backend.js';
import { Rng } from '../testing/helpers.js';

/** A fresh, empty backend for one test, and how to dispose of whatever it used. */
export interface ContractFixture {
  readonly backend: Backend;
  cleanup(): Promise<void>;
}

/** Every case of the suite, by the promise it checks. */
export const CONTRACT_CASES = [
  'put-get',
  'put-copies-input',
  'put-parts',
  'put-replaces',
  'create-only',
  'create-only-race',
  'concurrent-put-same-name',
  'atomic-put',
  'get-missing',
  'range-exact',
  'range-past-end',
  'range-start-past-end',
  'stat',
  'list',
  'list-missing-prefix',
  'list-below-object',
  'list-reserved-looking-names',
  'list-after-delete',
  'delete',
  'not-durable',
  'prefix-is-not-object',
  'invalid-names',
  'large-object',
  'many-concurrent-puts',
  'writer-commit',
  'writer-empty',
  'writer-copies-input',
  'writer-abort',
  'writer-create-only',
  'writer-create-only-race',
  'writer-concurrent',
  'writer-invalid-name',
  'close',
] as const;

export type ContractCase = (typeof CONTRACT_CASES)[number];

export interface ContractOptions {
  /** Cases that do not apply to this driver, each with the reason printed in the test report. */
  readonly skip?: Partial<Record<ContractCase, string>>;
  /** Cases this driver is known to fail, each naming the bug; they run and report as todo. */
  readonly todo?: Partial<Record<ContractCase, string>>;
  /** Size of the large-object case (default 20 MiB); a slow remote driver may lower it. */
  readonly largeObjectBytes?: number;
  /** Number of objects in the many-concurrent-puts case (default 200). */
  readonly concurrentPuts?: number;
  /**
   * A createOnly put of bytes identical to the existing object may succeed instead of failing
   * with `exists` (the retry wrapper, after an attempt whose outcome was unknown). Other bytes
   * must still be refused.
   */
  readonly createOnlyIdenticalMaySucceed?: boolean;
}

const MiB = 1 << 20;

/** Register the contract suite for one driver under `describe('storage contract: <name>')`. */
export function backendContract(name: string, make: () => Promise<ContractFixture>, options: ContractOptions = {}): void {
  const largeBytes = options.largeObjectBytes ?? 20 * MiB;
  const concurrentPuts = options.concurrentPuts ?? 200;

  describe(`storage contract: ${name}`, () => {
    const cases = new Set<ContractCase>();

    /** Register one case; the body gets a fresh backend and a seeded Rng unique to the case. */
    const contractCase = (id: ContractCase, title: string, body: (b: Backend, rng: Rng) => Promise<void>, needs?: { conditionalCreate?: boolean }): void => {
      assert.ok(!cases.has(id), `contract case ${id} registered twice`);
      cases.add(id);
      const skip = options.skip?.[id];
      const todo = options.todo?.[id];
      const testOptions = skip !== undefined ? { skip: `${id}: ${skip}` } : todo !== undefined ? { todo: `${id}: ${todo}` } : {};
      test(`${id}: ${title}`, testOptions, async (t) => {
        const fixture = await make();
        try {
          if (needs?.conditionalCreate && !fixture.backend.capabilities.conditionalCreate) {
            t.skip(`${name} declares capabilities.conditionalCreate = false, so concurrent createOnly puts are not promised to exclude each other`);
            return;
          }
          await body(fixture.backend, new Rng(seedOf(id)));
        } finally {
          try {
            await fixture.backend.close();
          } finally {
            await fixture.cleanup();
          }
        }
      });
    };

    contractCase('put-get', 'put then get returns the same bytes, for empty, small and nested objects', async (b, rng) => {
      const objects: Array<[string, Buffer]> = [
        ['config', rng.bytes(300)],
        ['empty', Buffer.alloc(0)],
        ['keys/k1', rng.bytes(1)],
        ['data/ab/ab0123', rng.bytes(70_000)],
        ['a/b/c/d/e/deep', rng.bytes(4097)],
        ['with space/and-ümlaut', rng.bytes(10)],
      ];
      for (const [n, data] of objects) await b.put(n, data);
      for (const [n, data] of objects) {
        const got = await b.get(n);
        assert.ok(Buffer.isBuffer(got), `get(${n}) returns a Buffer`);
        assertBytes(got, data, `get(${n})`);
        assert.equal((await b.stat(n)).size, data.length, `stat(${n}).size`);
      }
    });

    contractCase('not-durable', 'put/delete with durable:false are atomic and visible to later calls like durable ones (createOnly included)', async (b, rng) => {
      const data = rng.bytes(500);
      await b.put('locks/s-1', data, { createOnly: true, durable: false });
      await rejectsKind(b.put('locks/s-1', rng.bytes(3), { createOnly: true, durable: false }), 'exists', b, 'locks/s-1');
      assertBytes(await b.get('locks/s-1'), data, 'object put with durable:false');
      const newer = rng.bytes(700);
      await b.put('locks/s-1', newer, { durable: false });
      assertBytes(await b.get('locks/s-1'), newer, 'object replaced with durable:false');
      assert.deepEqual(await listAll(b, 'locks/'), [{ name: 'locks/s-1', size: 700 }]);
      await b.delete('locks/s-1', { durable: false });
      await rejectsKind(b.stat('locks/s-1'), 'not-found', b, 'locks/s-1');
      await b.delete('locks/s-1', { durable: false });
    });

    contractCase('put-copies-input', 'changing the caller buffer after put, or a returned buffer, does not change the object', async (b, rng) => {
      const data = rng.bytes(1000);
      const copy = Buffer.from(data);
      await b.put('obj', data);
      data.fill(0);
      const first = await b.get('obj');
      assertBytes(first, copy, 'object after the caller overwrote its buffer');
      first.fill(0xff);
      assertBytes(await b.get('obj'), copy, 'object after the caller overwrote a returned buffer');
      const part = await b.get('obj', { offset: 10, length: 20 });
      part.fill(0xff);
      assertBytes(await b.get('obj'), copy, 'object after the caller overwrote a returned range');
    });

    contractCase('put-parts', 'a put of a list of buffers stores them back to back, like one buffer', async (b, rng) => {
      const backing = rng.bytes(3 * MiB + 1000);
      const parts: Uint8Array[] = [
        backing.subarray(0, 1),
        Buffer.alloc(0),
        backing.subarray(1, 70_001),
        // A plain Uint8Array view into the middle of a larger ArrayBuffer, not a Buffer.
        new Uint8Array(backing.buffer, backing.byteOffset + 70_001, MiB),
        backing.subarray(70_001 + MiB, 3 * MiB),
        backing.subarray(3 * MiB),
      ];
      await b.put('data/parts', parts);
      assert.equal((await b.stat('data/parts')).size, backing.length);
      assertBytes(await b.get('data/parts'), backing, 'object put as parts');
      assertBytes(await b.get('data/parts', { offset: 69_990, length: 20 }), backing.subarray(69_990, 70_010), 'range across a part boundary');
      await b.put('data/none', []);
      assert.equal((await b.get('data/none')).length, 0, 'an empty list stores an empty object');
      await b.put('data/empties', [Buffer.alloc(0), new Uint8Array(0)], { createOnly: true });
      assert.equal((await b.stat('data/empties')).size, 0);
      await rejectsKind(b.put('data/parts', [Buffer.of(1)], { createOnly: true }), 'exists', b, 'data/parts');
      const copy = Buffer.from(backing);
      backing.fill(0);
      assertBytes(await b.get('data/parts'), copy, 'object after the caller overwrote its parts');
      await rejectsKind(b.put('a//b', [Buffer.of(1)]), 'invalid', b, 'a//b');
    });

    contractCase('put-replaces', 'a put without createOnly replaces an existing object', async (b, rng) => {
      const a = rng.bytes(5000);
      const shorter = rng.bytes(17);
      const longer = rng.bytes(9000);
      await b.put('dir/obj', a);
      await b.put('dir/obj', shorter);
      assertBytes(await b.get('dir/obj'), shorter, 'after replacing with a shorter object');
      assert.equal((await b.stat('dir/obj')).size, shorter.length);
      await b.put('dir/obj', longer);
      assertBytes(await b.get('dir/obj'), longer, 'after replacing with a longer object');
      // A range read, then a replacement: the next range read sees the new bytes (drivers that
      // keep read handles open must not serve the old object).
      assertBytes(await b.get('dir/obj', { offset: 10, length: 100 }), longer.subarray(10, 110), 'range read before replacing');
      const newer = rng.bytes(9000);
      await b.put('dir/obj', newer);
      assertBytes(await b.get('dir/obj', { offset: 10, length: 100 }), newer.subarray(10, 110), 'range read after replacing');
      await b.put('dir/obj', longer);
      // Repeating a put with the same bytes is allowed (idempotent, may be retried).
      await b.put('dir/obj', longer);
      assertBytes(await b.get('dir/obj'), longer, 'after repeating the same put');
      assert.deepEqual(await listAll(b, ''), [{ name: 'dir/obj', size: longer.length }], 'exactly one object is listed');
    });

    contractCase('create-only', "createOnly stores a new object and fails with 'exists' on an existing one, leaving it intact", async (b, rng) => {
      const first = rng.bytes(800);
      await b.put('keys/k', first, { createOnly: true });
      assertBytes(await b.get('keys/k'), first, 'object stored by createOnly');
      await rejectsKind(b.put('keys/k', rng.bytes(800), { createOnly: true }), 'exists', b, 'keys/k');
      if (options.createOnlyIdenticalMaySucceed) await b.put('keys/k', first, { createOnly: true }).catch((e: unknown) => assert.ok(e instanceof StorageError && e.kind === 'exists', String(e)));
      else await rejectsKind(b.put('keys/k', first, { createOnly: true }), 'exists', b, 'keys/k');
      assertBytes(await b.get('keys/k'), first, 'object after the refused createOnly puts');
      assert.deepEqual(await listAll(b, ''), [{ name: 'keys/k', size: first.length }]);
      // An explicit createOnly: false behaves like a plain put.
      const second = rng.bytes(30);
      await b.put('keys/k', second, { createOnly: false });
      assertBytes(await b.get('keys/k'), second, 'after a put with createOnly: false');
    });

    contractCase(
      'create-only-race',
      'of concurrent createOnly puts of one name exactly one wins, the others get exists',
      async (b, rng) => {
        for (let round = 0; round < 5; round++) {
          const name = `locks/race-${round}`;
          const contenders = Array.from({ length: 8 }, (_, i) => rng.bytes(1000 + i * 1000 + round));
          const results = await Promise.allSettled(contenders.map((data) => b.put(name, data, { createOnly: true })));
          const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
          assert.equal(winners.length, 1, `round ${round}: exactly one createOnly put succeeds, got ${winners.length}`);
          for (const r of results) {
            if (r.status === 'rejected') assertKind(r.reason, 'exists', b, name);
          }
          assertBytes(await b.get(name), contenders[winners[0]!]!, `round ${round}: the stored object is the winner's`);
        }
        assert.equal((await listAll(b, '')).length, 5, 'one object per round and nothing else');
      },
      { conditionalCreate: true },
    );

    contractCase('concurrent-put-same-name', 'concurrent plain puts of one name leave exactly one of the written objects, whole', async (b, rng) => {
      const contenders = Array.from({ length: 8 }, (_, i) => rng.bytes(50_000 + i * 7));
      await Promise.all(contenders.map((data) => b.put('snapshots/same', data)));
      const got = await b.get('snapshots/same');
      assert.ok(
        contenders.some((c) => c.equals(got)),
        `stored object (${got.length} bytes) is none of the ${contenders.length} written objects: a put was not atomic`,
      );
      assert.deepEqual(await listAll(b, ''), [{ name: 'snapshots/same', size: got.length }]);
    });

    contractCase('atomic-put', 'a reader racing a put sees no object or the whole object, never a prefix', async (b, rng) => {
      const data = rng.bytes(8 * MiB);
      let done = false;
      const put = b.put('data/big', data).finally(() => {
        done = true;
      });
      let reads = 0;
      while (!done) {
        reads++;
        try {
          const got = await b.get('data/big');
          assert.equal(got.length, data.length, 'a reader saw a partial object while the put was running');
          assertBytes(got, data, 'object seen by a reader during the put');
        } catch (err) {
          assertKind(err, 'not-found', b, 'data/big');
        }
        for await (const o of b.list('data/')) assert.equal(o.size, data.length, `list reported ${o.name} with a partial size during the put`);
        // Let the put make progress even if this driver answers reads without leaving the microtask queue.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      await put;
      assert.ok(reads >= 1);
      assertBytes(await b.get('data/big'), data, 'object after the put');
    });

    contractCase('get-missing', "get of a missing object fails with 'not-found' naming it, with or without a range", async (b, rng) => {
      await rejectsKind(b.get('nothing'), 'not-found', b, 'nothing');
      await rejectsKind(b.get('no/such/dir/obj'), 'not-found', b, 'no/such/dir/obj');
      await rejectsKind(b.get('nothing', { offset: 0, length: 1 }), 'not-found', b, 'nothing');
      await b.put('dir/present', rng.bytes(10));
      await rejectsKind(b.get('dir/absent'), 'not-found', b, 'dir/absent');
      await rejectsKind(b.get('dir/absent', { offset: 0, length: 0 }), 'not-found', b, 'dir/absent');
    });

    contractCase('range-exact', 'a range read returns exactly the requested bytes', async (b, rng) => {
      const data = rng.bytes(100_003);
      await b.put('data/r', data);
      const ranges: Array<[number, number]> = [
        [0, 1],
        [0, 100],
        [1, 1],
        [12_345, 54_321],
        [100_002, 1],
        [100_000, 3],
        [0, data.length],
        [0, 0],
        [50_000, 0],
        [data.length, 0],
      ];
      for (let i = 0; i < 20; i++) {
        const offset = rng.int(data.length);
        ranges.push([offset, rng.int(data.length - offset + 1)]);
      }
      for (const [offset, length] of ranges) {
        const got = await b.get('data/r', { offset, length });
        assert.ok(Buffer.isBuffer(got));
        assertBytes(got, data.subarray(offset, offset + length), `range {offset: ${offset}, length: ${length}}`);
      }
    });

    contractCase('range-past-end', "a range reaching past the end fails with 'short-read', never returns fewer bytes", async (b, rng) => {
      const data = rng.bytes(4096);
      await b.put('data/short', data);
      const bad: Array<[number, number]> = [
        [0, 4097],
        [4095, 2],
        [4096, 1],
        [1, 4096],
        [4000, 1_000_000],
        [10_000, 1],
      ];
      for (const [offset, length] of bad) {
        await rejectsKind(b.get('data/short', { offset, length }), 'short-read', b, 'data/short', `range {offset: ${offset}, length: ${length}}`);
      }
      await b.put('data/empty', Buffer.alloc(0));
      await rejectsKind(b.get('data/empty', { offset: 0, length: 1 }), 'short-read', b, 'data/empty');
      assertBytes(await b.get('data/short'), data, 'object after the failed range reads');
    });

    contractCase('range-start-past-end', "an empty range starting past the end fails with 'short-read': the object is shorter than the caller knows", async (b, rng) => {
      await b.put('data/small', rng.bytes(3));
      await rejectsKind(b.get('data/small', { offset: 4, length: 0 }), 'short-read', b, 'data/small', 'range {offset: 4, length: 0} of a 3-byte object');
      await rejectsKind(b.get('data/small', { offset: 1000, length: 0 }), 'short-read', b, 'data/small', 'range {offset: 1000, length: 0} of a 3-byte object');
      assert.equal((await b.get('data/small', { offset: 3, length: 0 })).length, 0, 'an empty range at the exact end is fine');
    });

    contractCase('stat', "stat returns the size, or 'not-found' for a missing object", async (b, rng) => {
      for (const size of [0, 1, 4095, 4096, 65_537]) {
        await b.put(`sizes/${size}`, rng.bytes(size));
        assert.deepEqual(await b.stat(`sizes/${size}`), { name: `sizes/${size}`, size });
      }
      await rejectsKind(b.stat('sizes/7'), 'not-found', b, 'sizes/7');
      await rejectsKind(b.stat('missing/dir/obj'), 'not-found', b, 'missing/dir/obj');
    });

    contractCase('list', "list('') and list('dir/') yield every object below, with sizes, and nothing else", async (b, rng) => {
      const layout: Record<string, number> = {
        config: 155,
        'keys/k1': 300,
        'keys/k2': 301,
        'data/ab/ab01': 1000,
        'data/ab/ab02': 0,
        'data/cd/cd01': 77,
        'index/i1': 12,
        'snapshots/s1': 99,
        'snapshots-old/s1': 98,
        snapshotsfile: 5,
        'a/b/c/d/deep': 3,
      };
      await Promise.all(Object.entries(layout).map(([n, size]) => b.put(n, rng.bytes(size))));
      const expect = (prefix: string): ObjectInfo[] =>
        Object.entries(layout)
          .filter(([n]) => n.startsWith(prefix))
          .map(([n, size]) => ({ name: n, size }))
          .sort(byName);
      for (const prefix of ['', 'keys/', 'data/', 'data/ab/', 'data/cd/', 'index/', 'snapshots/', 'snapshots-old/', 'a/', 'a/b/c/', 'a/b/c/d/']) {
        assert.deepEqual(await listAll(b, prefix), expect(prefix), `list(${JSON.stringify(prefix)})`);
      }
      assert.equal((await listAll(b, '')).length, Object.keys(layout).length);
    });

    contractCase('list-missing-prefix', 'list of a prefix nothing is below yields nothing', async (b, rng) => {
      assert.deepEqual(await listAll(b, ''), [], 'list of an empty backend');
      assert.deepEqual(await listAll(b, 'snapshots/'), []);
      await b.put('data/ab/x', rng.bytes(10));
      assert.deepEqual(await listAll(b, 'snapshots/'), []);
      assert.deepEqual(await listAll(b, 'data/cd/'), []);
      assert.deepEqual(await listAll(b, 'no/such/deep/prefix/'), []);
      assert.deepEqual(await listAll(b, 'dat/'), [], 'a string prefix of a directory is not that directory');
    });

    contractCase('list-below-object', 'list of "name/" where name is an object (not a directory) yields nothing', async (b, rng) => {
      await b.put('config', rng.bytes(10));
      await b.put('data/ab/x', rng.bytes(10));
      assert.deepEqual(await listAll(b, 'config/'), []);
      assert.deepEqual(await listAll(b, 'data/ab/x/'), []);
    });

    contractCase('list-reserved-looking-names', 'names with a segment starting ".tmp-" are reserved for driver temporaries and rejected as invalid', async (b, rng) => {
      // Reserving the prefix is what lets every driver hide its temporaries from list() without
      // ever hiding a real object.
      for (const name of ['.tmp-config', 'data/.tmp-x', '.tmp-dir/obj']) {
        await rejectsKind(b.put(name, rng.bytes(3)), 'invalid', b, name, `put ${name}`);
        await rejectsKind(b.get(name), 'invalid', b, name, `get ${name}`);
        await rejectsKind(b.stat(name), 'invalid', b, name, `stat ${name}`);
      }
      await b.put('data/x.tmp-ok', rng.bytes(4)); // only a segment *starting* with the prefix is reserved
      assert.deepEqual(await listAll(b, ''), [{ name: 'data/x.tmp-ok', size: 4 }]);
    });

    contractCase('list-after-delete', 'deleted objects are no longer listed', async (b, rng) => {
      const names = ['data/aa/1', 'data/aa/2', 'data/bb/3', 'index/4', 'top'];
      for (const n of names) await b.put(n, rng.bytes(20));
      await b.delete('data/aa/1');
      await b.delete('data/bb/3');
      await b.delete('top');
      assert.deepEqual(await listAll(b, ''), [
        { name: 'data/aa/2', size: 20 },
        { name: 'index/4', size: 20 },
      ]);
      assert.deepEqual(await listAll(b, 'data/bb/'), []);
      await b.delete('data/aa/2');
      await b.delete('index/4');
      assert.deepEqual(await listAll(b, ''), []);
    });

    contractCase('delete', 'delete removes the object and is idempotent; deleting a missing object is not an error', async (b, rng) => {
      const keep = rng.bytes(64);
      await b.put('d/obj', rng.bytes(64));
      await b.put('d/keep', keep);
      await b.delete('d/obj');
      await rejectsKind(b.get('d/obj'), 'not-found', b, 'd/obj');
      await rejectsKind(b.stat('d/obj'), 'not-found', b, 'd/obj');
      await b.delete('d/obj');
      await b.delete('never-existed');
      await b.delete('no/such/dir/obj');
      assertBytes(await b.get('d/keep'), keep, 'a sibling survives the deletes');
      // The name can be used again, even with createOnly.
      const again = rng.bytes(10);
      await b.put('d/obj', again, { createOnly: true });
      assertBytes(await b.get('d/obj'), again, 'object re-created after delete');
    });

    contractCase('prefix-is-not-object', 'a directory prefix of stored objects is not itself an object', async (b, rng) => {
      const data = rng.bytes(50);
      await b.put('dir/obj', data);
      await rejectsKind(b.get('dir'), 'not-found', b, 'dir');
      await rejectsKind(b.stat('dir'), 'not-found', b, 'dir');
      await rejectsKind(b.get('dir', { offset: 0, length: 1 }), 'not-found', b, 'dir');
      await b.delete('dir');
      assertBytes(await b.get('dir/obj'), data, 'the object below survives delete of its prefix');
    });

    contractCase('invalid-names', "invalid names are rejected with 'invalid' by every method, and nothing is stored", async (b, rng) => {
      const badNames = ['/abs', '/', 'a/../b', '..', '../a', 'a/..', '', 'a//b', '//', 'x/', 'a/b/'];
      const data = rng.bytes(8);
      for (const n of badNames) {
        await rejectsKind(b.put(n, data), 'invalid', b, n, `put(${JSON.stringify(n)})`);
        await rejectsKind(b.put(n, data, { createOnly: true }), 'invalid', b, n, `put(${JSON.stringify(n)}, createOnly)`);
        await rejectsKind(b.get(n), 'invalid', b, n, `get(${JSON.stringify(n)})`);
        await rejectsKind(b.get(n, { offset: 0, length: 1 }), 'invalid', b, n, `get(${JSON.stringify(n)}, range)`);
        await rejectsKind(b.stat(n), 'invalid', b, n, `stat(${JSON.stringify(n)})`);
        await rejectsKind(b.delete(n), 'invalid', b, n, `delete(${JSON.stringify(n)})`);
      }
      const badPrefixes = ['/abs/', '/', 'a/../', '../', 'a//', '//', 'dir', 'a/b'];
      for (const p of badPrefixes) await rejectsKind(listAll(b, p), 'invalid', b, p, `list(${JSON.stringify(p)})`);
      assert.deepEqual(await listAll(b, ''), [], 'nothing was stored by the rejected puts');
    });

    contractCase('large-object', `a ${Math.round(largeBytes / MiB)} MiB object round-trips, whole and by range`, async (b, rng) => {
      const data = rng.bytes(largeBytes);
      await b.put('data/large', data);
      assert.equal((await b.stat('data/large')).size, data.length);
      assertBytes(await b.get('data/large'), data, 'large object');
      const tail = await b.get('data/large', { offset: data.length - 100_000, length: 100_000 });
      assertBytes(tail, data.subarray(data.length - 100_000), 'tail range of the large object');
      const mid = await b.get('data/large', { offset: (data.length >> 1) + 1, length: MiB + 3 });
      assertBytes(mid, data.subarray((data.length >> 1) + 1, (data.length >> 1) + 1 + MiB + 3), 'middle range of the large object');
      assert.deepEqual(await listAll(b, 'data/'), [{ name: 'data/large', size: data.length }]);
    });

    contractCase('many-concurrent-puts', `${concurrentPuts} concurrent puts all land, each with its own content`, async (b, rng) => {
      const objects = Array.from({ length: concurrentPuts }, (_, i) => [`data/${(i % 16).toString(16).padStart(2, '0')}/obj-${i}`, rng.bytes(100 + rng.int(5000))] as const);
      await Promise.all(objects.map(([n, data], i) => b.put(n, data, { createOnly: i % 2 === 0 })));
      const listed = await listAll(b, '');
      assert.deepEqual(listed, objects.map(([n, data]) => ({ name: n, size: data.length })).sort(byName));
      const got = await Promise.all(objects.map(([n]) => b.get(n)));
      for (const [i, [n, data]] of objects.entries()) assertBytes(got[i]!, data, `get(${n}) after concurrent puts`);
    });

    contractCase('writer-commit', 'an ObjectWriter appends writes in call order; nothing is visible before commit, then the whole object is', async (b, rng) => {
      const keep = rng.bytes(10);
      await b.put('keep', keep);
      const data = rng.bytes(3 * MiB + 17);
      const bounds = [0, 1, 1, 1000, 70_000, 70_001, 2 * MiB, data.length];
      const w = await b.openWriter();
      for (let i = 0; i + 1 < bounds.length; i++) {
        const seg = data.subarray(bounds[i]!, bounds[i + 1]!);
        // Alternate one-part and two-part calls; an empty segment makes an empty write.
        await w.write(i % 2 === 0 ? [seg] : [seg.subarray(0, seg.length >> 1), seg.subarray(seg.length >> 1)]);
        assert.deepEqual(await listAll(b, ''), [{ name: 'keep', size: keep.length }], `nothing but the old object is listed after write ${i}`);
      }
      await w.write([]);
      await rejectsKind(b.stat('data/ab/written'), 'not-found', b, 'data/ab/written');
      await w.commit('data/ab/written');
      assertBytes(await b.get('data/ab/written'), data, 'object committed by the writer');
      assert.deepEqual(await listAll(b, ''), [
        { name: 'data/ab/written', size: data.length },
        { name: 'keep', size: keep.length },
      ]);
      // A committed writer's object is an ordinary object: it can be replaced and deleted.
      const replaced = rng.bytes(5);
      const w2 = await b.openWriter();
      await w2.write([replaced]);
      await w2.commit('data/ab/written');
      assertBytes(await b.get('data/ab/written'), replaced, 'object replaced by a second writer');
      await b.delete('data/ab/written');
      assert.deepEqual(await listAll(b, ''), [{ name: 'keep', size: keep.length }]);
    });

    contractCase('writer-empty', 'a writer committed without writes stores an empty object', async (b, rng) => {
      await b.put('index/other', rng.bytes(3));
      const w = await b.openWriter();
      await w.commit('index/empty', { createOnly: true });
      assert.equal((await b.get('index/empty')).length, 0);
      assert.deepEqual(await listAll(b, ''), [
        { name: 'index/empty', size: 0 },
        { name: 'index/other', size: 3 },
      ]);
    });

    contractCase('writer-copies-input', 'changing a buffer after write resolved does not change the committed object', async (b, rng) => {
      const a = rng.bytes(1000);
      const c = rng.bytes(2000);
      const expected = Buffer.concat([a, c]);
      const w = await b.openWriter();
      await w.write([a]);
      a.fill(0); // The caller reuses its buffer once write resolved (as chunk windows are reused).
      await w.write([c]);
      c.fill(0);
      await w.commit('data/copied');
      assertBytes(await b.get('data/copied'), expected, 'object committed after the caller reused its buffers');
    });

    contractCase('writer-abort', 'an aborted writer leaves nothing behind, and the name stays free', async (b, rng) => {
      const keep = rng.bytes(10);
      await b.put('keep', keep);
      const w = await b.openWriter();
      await w.write([rng.bytes(100_000)]);
      await w.abort();
      assert.deepEqual(await listAll(b, ''), [{ name: 'keep', size: keep.length }]);
      const never = await b.openWriter();
      await never.abort();
      const data = rng.bytes(50);
      const w2 = await b.openWriter();
      await w2.write([data]);
      await w2.commit('data/after-abort', { createOnly: true });
      assertBytes(await b.get('data/after-abort'), data, 'object written after an abort');
    });

    contractCase('writer-create-only', "commit with createOnly fails with 'exists' on an existing name, leaving it intact", async (b, rng) => {
      const first = rng.bytes(300);
      await b.put('data/ab/pack', first);
      const w = await b.openWriter();
      await w.write([rng.bytes(300)]);
      await rejectsKind(w.commit('data/ab/pack', { createOnly: true }), 'exists', b, 'data/ab/pack');
      assertBytes(await b.get('data/ab/pack'), first, 'object after the refused commit');
      assert.deepEqual(await listAll(b, ''), [{ name: 'data/ab/pack', size: first.length }], 'the refused commit left nothing behind');
      const w2 = await b.openWriter();
      const second = rng.bytes(40);
      await w2.write([second]);
      await w2.commit('data/ab/pack');
      assertBytes(await b.get('data/ab/pack'), second, 'a commit without createOnly replaces');
    });

    contractCase(
      'writer-create-only-race',
      'of concurrent createOnly commits of one name exactly one wins',
      async (b, rng) => {
        const contenders = Array.from({ length: 6 }, (_, i) => rng.bytes(10_000 + i));
        const writers = await Promise.all(contenders.map(() => b.openWriter()));
        await Promise.all(writers.map((w, i) => w.write([contenders[i]!])));
        const results = await Promise.allSettled(writers.map((w) => w.commit('locks/writer-race', { createOnly: true })));
        const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
        assert.equal(winners.length, 1, `exactly one createOnly commit succeeds, got ${winners.length}`);
        for (const r of results) if (r.status === 'rejected') assertKind(r.reason, 'exists', b, 'locks/writer-race');
        assertBytes(await b.get('locks/writer-race'), contenders[winners[0]!]!, "the stored object is the winner's");
        assert.equal((await listAll(b, '')).length, 1);
      },
      { conditionalCreate: true },
    );

    contractCase('writer-concurrent', 'interleaved writers and puts each produce their own object', async (b, rng) => {
      const n = 12;
      const datas = Array.from({ length: n }, () => rng.bytes(20_000 + rng.int(20_000)));
      const writers = await Promise.all(datas.map(() => b.openWriter()));
      const step = 4096;
      for (let off = 0; off < 40_000; off += step) {
        await Promise.all(writers.map((w, i) => w.write([datas[i]!.subarray(off, off + step)])));
        await b.put(`puts/${off}`, rng.bytes(10));
      }
      await Promise.all(writers.map((w, i) => w.commit(`data/${(i % 3).toString(16).padStart(2, '0')}/w${i}`)));
      for (const [i, d] of datas.entries()) assertBytes(await b.get(`data/${(i % 3).toString(16).padStart(2, '0')}/w${i}`), d, `writer ${i}`);
      assert.equal((await listAll(b, 'data/')).length, n);
      assert.equal((await listAll(b, 'puts/')).length, Math.ceil(40_000 / step));
    });

    contractCase('writer-invalid-name', "commit under an invalid name fails with 'invalid' and stores nothing", async (b, rng) => {
      for (const n of ['/abs', 'a/../b', '', 'a//b', 'x/']) {
        const w = await b.openWriter();
        await w.write([rng.bytes(100)]);
        await rejectsKind(w.commit(n), 'invalid', b, n, `commit(${JSON.stringify(n)})`);
        await w.abort().catch(() => undefined);
      }
      assert.deepEqual(await listAll(b, ''), [], 'nothing was stored');
    });

    contractCase('close', 'close resolves after use, and a fresh backend reports its location and capabilities', async (b, rng) => {
      assert.equal(typeof b.location, 'string');
      assert.ok(b.location.length > 0, 'location is not empty');
      assert.ok(Number.isInteger(b.capabilities.maxConcurrency) && b.capabilities.maxConcurrency >= 1, 'maxConcurrency is a positive integer');
      assert.equal(typeof b.capabilities.conditionalCreate, 'boolean');
      assert.equal(typeof b.capabilities.persistent, 'boolean');
      await b.put('x', rng.bytes(1));
      // The suite closes the backend after the body; closing must resolve (checked there).
    });

    const missing = CONTRACT_CASES.filter((c) => !cases.has(c));
    assert.deepEqual(missing, [], 'every contract case is registered');
    for (const key of [...Object.keys(options.skip ?? {}), ...Object.keys(options.todo ?? {})]) {
      assert.ok(cases.has(key as ContractCase), `options name an unknown contract case ${key}`);
    }
  });
}

// ---------------------------------------------------------------- helpers

/** A stable seed per case, so each case's data is fixed and independent of the others. */
function seedOf(id: ContractCase): number {
  let h = 2166136261;
  for (const ch of id) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return h;
}

function byName(a: ObjectInfo, b: ObjectInfo): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** Collect a listing, sorted by name (the contract promises no order). */
export async function listAll(b: Backend, prefix: string): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const o of b.list(prefix)) out.push({ name: o.name, size: o.size });
  return out.sort(byName);
}

/** Compare bytes without printing megabytes on failure. */
export function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (actual.length !== expected.length) assert.fail(`${what}: got ${actual.length} bytes, expected ${expected.length}`);
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  const e = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
  if (!a.equals(e)) {
    let i = 0;
    while (a[i] === e[i]) i++;
    assert.fail(`${what}: contents differ first at byte ${i} of ${a.length}`);
  }
}

function assertKind(err: unknown, kind: StorageErrorKind, b: Backend, objectName: string, what = ''): void {
  const label = what ? `${what}: ` : '';
  if (!(err instanceof StorageError)) assert.fail(`${label}expected StorageError(${kind}), got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
  assert.equal(err.kind, kind, `${label}expected kind ${kind}, got ${err.kind} (${err.message})`);
  assert.equal(err.objectName, objectName, `${label}error names the object`);
  assert.equal(err.location, b.location, `${label}error names the backend location`);
  assert.equal(err.permanent, kind !== 'transient' && kind !== 'io', `${label}permanent flag of ${kind}`);
}

async function rejectsKind(p: Promise<unknown>, kind: StorageErrorKind, b: Backend, objectName: string, what = ''): Promise<void> {
  let result: unknown;
  try {
    result = await p;
  } catch (err) {
    assertKind(err, kind, b, objectName, what);
    return;
  }
  const shown = Buffer.isBuffer(result) ? `a ${result.length}-byte buffer` : JSON.stringify(result);
  assert.fail(`${what ? `${what}: ` : ''}expected StorageError(${kind}), but the call resolved with ${shown}`);
}
