/**
 * The retry wrapper (retry.ts) over the fault-injection wrapper (faults.ts):
 * - with transient errors, lost acknowledgements and latency injected at random (seeded), every
 *   promise of the storage contract still holds;
 * - permanent errors are not retried; transient ones are, with backoff, up to the attempt limit;
 * - a hanging store fails the operation within the deadline (plus one request timeout);
 * - a createOnly put whose acknowledgement was lost succeeds on its retry, and still refuses an
 *   object someone else created;
 * - a partial (torn) put is repaired by the retried put;
 * - writers are retried whole.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StorageError } from './backend.js';
import { backendContract } from './contract.js';
import { FaultBackend } from './faults.js';
import { MemoryBackend } from './mem.js';
import { LocalBackend } from './local.js';
import { type RetrySettings, RetryBackend } from './retry.js';
import { tmpDir } from '../testing/helpers.js';

const FAST: RetrySettings = { requestTimeoutMs: 2_000, deadlineMs: 10_000, maxAttempts: 12, baseDelayMs: 1, maxDelayMs: 20 };

let seed = 100;

backendContract('retry(faults(memory))', async () => {
  const faults = new FaultBackend(new MemoryBackend(), seed++);
  faults.setRules([
    { ops: ['put', 'get', 'stat', 'list', 'delete', 'commit'], fault: 'error', probability: 0.15 },
    { ops: ['put', 'delete'], fault: 'error', when: 'after', probability: 0.1 },
    { ops: ['get', 'put'], fault: 'latency', latencyMs: 2, probability: 0.05 },
  ]);
  return { backend: new RetryBackend(faults, FAST), cleanup: async () => undefined };
}, { createOnlyIdenticalMaySucceed: true });

backendContract('retry(faults(local))', async () => {
  const { dir, cleanup } = await tmpDir('holdfast-retry-');
  const faults = new FaultBackend(new LocalBackend(dir), seed++);
  faults.setRules([
    { ops: ['put', 'get', 'list', 'commit'], fault: 'error', probability: 0.1 },
    { ops: ['put'], fault: 'error', when: 'after', probability: 0.1 },
  ]);
  return { backend: new RetryBackend(faults, FAST), cleanup };
}, { createOnlyIdenticalMaySucceed: true });

function setup(settings: RetrySettings = FAST): { faults: FaultBackend; retry: RetryBackend; waits: number[] } {
  const faults = new FaultBackend(new MemoryBackend(), 7);
  const waits: number[] = [];
  const retry = new RetryBackend(faults, settings, { onRetry: (_op, _name, _attempt, delay) => waits.push(delay) });
  return { faults, retry, waits };
}

test('permanent errors are thrown at once; transient ones are retried with growing, bounded waits', async () => {
  const { faults, retry, waits } = setup({ ...FAST, baseDelayMs: 10, maxDelayMs: 40 });
  faults.setRules([{ ops: ['get'], fault: 'error', kind: 'permission' }]);
  await assert.rejects(retry.get('a'), (e: unknown) => e instanceof StorageError && e.kind === 'permission');
  assert.equal(faults.fired.get('get'), 1, 'one attempt');
  await assert.rejects(retry.get('missing'), (e: unknown) => e instanceof StorageError && e.kind === 'permission');
  faults.clear();
  await assert.rejects(retry.get('missing'), (e: unknown) => e instanceof StorageError && e.kind === 'not-found');
  assert.deepEqual(waits, [], 'nothing permanent was retried');

  await retry.put('x', Buffer.from('hello'));
  faults.setRules([{ ops: ['get'], fault: 'error', count: 5 }]);
  assert.equal((await retry.get('x')).toString(), 'hello');
  assert.equal(waits.length, 5);
  // Full jitter below min(max, base * 2^n).
  for (const [i, w] of waits.entries()) assert.ok(w >= 0 && w <= Math.min(40, 10 * 2 ** i), `wait ${i}: ${w} ms`);
});

test('after the last attempt the error says how long and why', async () => {
  const { faults, retry } = setup({ ...FAST, maxAttempts: 3 });
  faults.setRules([{ ops: ['stat'], fault: 'error' }]);
  await assert.rejects(retry.stat('x'), (e: unknown) => e instanceof StorageError && e.kind === 'transient' && /despite retries/.test(e.message) && /injected transient fault/.test(e.message));
  assert.equal(faults.fired.get('stat'), 3);
});

test('a hanging store fails the operation within the deadline plus one request timeout', async () => {
  const { faults, retry } = setup({ requestTimeoutMs: 200, deadlineMs: 700, maxAttempts: 100, baseDelayMs: 10, maxDelayMs: 50 });
  faults.setRules([{ ops: ['put'], fault: 'hang' }]);
  const t0 = Date.now();
  await assert.rejects(retry.put('x', Buffer.from('y')), (e: unknown) => e instanceof StorageError && e.kind === 'transient' && /no answer within 0.2 s/.test(e.message));
  const took = Date.now() - t0;
  assert.ok(took < 700 + 200 + 500, `failed after ${took} ms`);
  assert.ok((faults.fired.get('put') ?? 0) >= 2, 'it was retried');
  faults.release();
});

test('a createOnly put whose acknowledgement was lost succeeds on its retry; another writer\'s object is still refused', async () => {
  const { faults, retry } = setup();
  faults.setRules([{ ops: ['put'], fault: 'error', when: 'after', count: 1 }]);
  await retry.put('wal/1', Buffer.from('segment'), { createOnly: true });
  assert.equal(faults.calls.get('put'), 2, 'stored, acknowledgement lost, retried: exists with the same bytes');
  await assert.rejects(retry.put('wal/1', Buffer.from('other'), { createOnly: true }), (e: unknown) => e instanceof StorageError && e.kind === 'exists');
  faults.setRules([{ ops: ['put'], fault: 'error', count: 1 }]);
  await assert.rejects(retry.put('wal/1', Buffer.from('other'), { createOnly: true }), (e: unknown) => e instanceof StorageError && e.kind === 'exists', 'a retried createOnly put of other bytes is refused');
});

test('a torn put is repaired by the retry; writers are retried whole', async () => {
  const { faults, retry } = setup();
  const data = Buffer.alloc(10_000, 7);
  faults.setRules([{ ops: ['put'], fault: 'partial', count: 1 }]);
  await retry.put('data/ab/x', data);
  assert.ok((await retry.get('data/ab/x')).equals(data));
  faults.setRules([{ ops: ['put'], fault: 'error', count: 2 }]);
  const w = await retry.openWriter();
  const part = Buffer.alloc(100, 1);
  await w.write([part, Buffer.alloc(50, 2)]);
  part.fill(9); // the caller reuses its buffer: the writer kept a copy
  await w.commit('data/cd/y');
  assert.ok((await retry.get('data/cd/y')).equals(Buffer.concat([Buffer.alloc(100, 1), Buffer.alloc(50, 2)])));
});

test('a writer past 64 MiB streams to the driver\'s own writer instead of holding the object', async () => {
  const { faults, retry } = setup();
  const w = await retry.openWriter();
  const chunk = Buffer.alloc(8 << 20);
  for (let i = 0; i < 9; i++) await w.write([chunk.fill(i)]);
  await w.commit('data/ef/big');
  assert.equal(faults.calls.get('commit'), 1, 'committed through the inner writer');
  assert.equal(faults.calls.get('put') ?? 0, 0, 'not as a buffered put');
  const back = await retry.get('data/ef/big');
  assert.equal(back.length, 9 * (8 << 20));
  for (let i = 0; i < 9; i++) assert.equal(back[i * (8 << 20) + 5], i, `part ${i} in place`);
});
