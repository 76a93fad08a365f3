/**
 * Several storages per repository (multi.ts) and the shared status cache (state/storage-status.ts,
 * state/state-file.ts): the contract holds in both modes; failover writes go to the first alive
 * storage and reads find objects wherever they landed; a failing storage is dead at once and
 * revived only by a probe after the status lifetime; absence is only reported when every storage
 * answered; replicate counts acknowledgements against the quorum; the cache file is checksummed,
 * falls back to its previous version and is replaced when corrupt.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { StorageError } from './backend.js';
import { backendContract, listAll } from './contract.js';
import { FaultBackend } from './faults.js';
import { MemoryBackend } from './mem.js';
import { MemoryStatusCache, MultiBackend, type StorageMode } from './multi.js';
import { FileStatusCache, statusFile } from '../state/storage-status.js';
import { readStateFile, writeStateFile } from '../state/state-file.js';
import { tmpDir } from '../testing/helpers.js';

const SETTINGS = { statusTtlMs: 60_000, probeTimeoutMs: 1_000 };

function multi(mode: StorageMode, n = 2, quorum?: number): { m: MultiBackend; faults: FaultBackend[]; cache: MemoryStatusCache; clock: { t: number } } {
  const faults = Array.from({ length: n }, (_, i) => new FaultBackend(new MemoryBackend(`mem:${i}`), i + 1));
  const cache = new MemoryStatusCache();
  const clock = { t: 1_000_000 };
  const m = new MultiBackend(
    faults.map((f, i) => ({ location: `mem:${i}`, backend: f })),
    { mode, quorum, ...SETTINGS },
    cache,
    () => clock.t,
  );
  return { m, faults, cache, clock };
}

backendContract('multi failover(memory, memory)', async () => ({ backend: multi('failover').m, cleanup: async () => undefined }));
backendContract('multi replicate(memory, memory)', async () => ({ backend: multi('replicate').m, cleanup: async () => undefined }));

const down = [{ ops: ['put', 'get', 'stat', 'list', 'delete', 'commit'] as const, fault: 'error' as const }].map((r) => ({ ...r, ops: [...r.ops] }));

test('failover: writes go to the first alive storage, reads and lists find objects on any, a dead storage is revived only by a probe after the lifetime', async () => {
  const { m, faults, cache, clock } = multi('failover');
  await m.put('wal/main/1', Buffer.from('one'));
  assert.equal((await faults[0]!.get('wal/main/1')).toString(), 'one', 'the primary got it');
  faults[0]!.setRules(down);
  await m.put('wal/main/2', Buffer.from('two'));
  assert.equal((await faults[1]!.get('wal/main/2')).toString(), 'two', 'the secondary got it');
  assert.equal(cache.get('mem:0')?.alive, false, 'the failing primary is dead in the shared cache at once');
  // Reads: one object on each storage; the dead primary is not asked again.
  const calls = faults[0]!.calls.get('get') ?? 0;
  assert.equal((await m.get('wal/main/2')).toString(), 'two');
  assert.equal(faults[0]!.calls.get('get') ?? 0, calls);
  // The primary comes back, but this process keeps its view; a new process within the lifetime
  // trusts the cache and does not probe.
  faults[0]!.clear();
  await m.put('wal/main/3', Buffer.from('three'));
  assert.equal((await faults[1]!.get('wal/main/3')).toString(), 'three');
  const again = new MultiBackend(m.members, { mode: 'failover', ...SETTINGS }, cache, () => clock.t);
  await again.put('wal/main/4', Buffer.from('four'));
  assert.equal((await faults[1]!.stat('wal/main/4')).size, 4, 'cached dead status honoured: no probe, written to the secondary');
  // After the lifetime a process probes the primary, finds it alive and writes there again.
  clock.t += SETTINGS.statusTtlMs + 1;
  const later = new MultiBackend(m.members, { mode: 'failover', ...SETTINGS }, cache, () => clock.t);
  await later.put('wal/main/5', Buffer.from('five'));
  assert.equal((await faults[0]!.get('wal/main/5')).toString(), 'five');
  assert.equal(cache.get('mem:0')?.alive, true);
  assert.ok((cache.get('mem:0')?.latencyMs ?? -1) >= 0);
  // Union listing, each name once.
  await faults[1]!.put('wal/main/1', Buffer.from('one'));
  assert.deepEqual((await listAll(later, 'wal/')).map((o) => o.name), ['wal/main/1', 'wal/main/2', 'wal/main/3', 'wal/main/4', 'wal/main/5']);
});

test('absence is reported only when every storage answered; otherwise the read fails (archive-get must not end recovery early)', async () => {
  const { m, faults } = multi('failover');
  await assert.rejects(m.get('wal/main/9'), (e: unknown) => e instanceof StorageError && e.kind === 'not-found');
  faults[1]!.setRules(down);
  await assert.rejects(m.get('wal/main/9'), (e: unknown) => e instanceof StorageError && e.kind === 'transient' && /may be on the others/.test(e.message));
  await assert.rejects(m.requireAllAlive(), /needs every storage/);
});

test('replicate: every alive storage gets the write; the quorum decides success', async () => {
  const three = multi('replicate', 3, 2);
  three.faults[2]!.setRules(down);
  await three.m.put('data/ab/x', Buffer.from('x'));
  assert.equal((await three.faults[0]!.get('data/ab/x')).toString(), 'x');
  assert.equal((await three.faults[1]!.get('data/ab/x')).toString(), 'x');
  three.faults[1]!.setRules(down);
  const fresh = new MultiBackend(three.m.members, { mode: 'replicate', quorum: 2, ...SETTINGS }, new MemoryStatusCache());
  await assert.rejects(fresh.put('data/ab/y', Buffer.from('y')), (e: unknown) => e instanceof StorageError && /1 of 3 storages acknowledged, 2 needed/.test(e.message));
  const all = multi('replicate', 2);
  all.faults[1]!.setRules(down);
  await assert.rejects(all.m.put('data/ab/z', Buffer.from('z')), /1 of 2 storages acknowledged, 2 needed/);
});

test('state files: checksummed, previous version used when the current one is damaged; the status cache reports a corrupt file once and replaces it', async () => {
  const { dir, cleanup } = await tmpDir('holdfast-state-');
  try {
    const file = path.join(dir, 'sub', 'state');
    const isObj = (v: unknown): v is { n: number } => typeof (v as { n?: unknown })?.n === 'number';
    assert.equal(readStateFile(file, isObj).state, undefined);
    assert.equal(readStateFile(file, isObj).problem, undefined, 'a missing file is normal');
    writeStateFile(file, { n: 1 }, 111);
    writeStateFile(file, { n: 2 }, 222);
    assert.deepEqual(readStateFile(file, isObj).state, { value: { n: 2 }, written: 222, from: 'current' });
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('"n":2', '"n":3'));
    const r = readStateFile(file, isObj);
    assert.deepEqual(r.state, { value: { n: 1 }, written: 111, from: 'previous' });
    assert.match(r.problem ?? '', /checksum mismatch/);
    fs.rmSync(file);
    assert.equal(readStateFile(file, isObj).state?.from, 'previous', 'a crash between the two renames leaves the previous version');

    const messages: string[] = [];
    const cache = new FileStatusCache(dir, (m) => messages.push(m));
    assert.equal(cache.get('s3://b/p'), undefined);
    assert.deepEqual(messages, [], 'no file yet: silent');
    cache.set('s3://b/p', { alive: true, checked: 5, latencyMs: 3 });
    assert.deepEqual(cache.get('s3://b/p'), { location: 's3://b/p', alive: true, checked: 5, latencyMs: 3 });
    fs.writeFileSync(statusFile(dir, 's3://b/p'), 'garbage');
    fs.rmSync(`${statusFile(dir, 's3://b/p')}.prev`, { force: true });
    assert.equal(cache.get('s3://b/p'), undefined);
    assert.equal(cache.get('s3://b/p'), undefined);
    assert.equal(messages.length, 1, `reported once: ${messages.join(' | ')}`);
    cache.set('s3://b/p', { alive: false, checked: 9, error: 'down' });
    assert.equal(cache.get('s3://b/p')?.alive, false, 'replaced');
  } finally {
    await cleanup();
  }
});
