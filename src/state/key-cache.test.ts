import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileKeyCache, defaultKeyCacheDir } from './key-cache.js';
import { Repository } from '../repository/repository.js';
import { kdfParams } from '../repository/keys.js';
import { MemoryBackend } from '../storage/mem.js';
import { HoldfastError } from '../errors/catalogue.js';
import { tmpDir } from '../testing/helpers.js';

const INIT = { kdf: kdfParams(10), chunker: { min: 64 << 10, avg: 128 << 10, max: 512 << 10 } };

test('the key cache lets a later open skip scrypt, in a private directory, and never opens with a wrong password', async () => {
  const { dir, cleanup } = await tmpDir();
  try {
    const cacheDir = path.join(dir, 'keys');
    const backend = new MemoryBackend();
    const repo = await Repository.init(backend, 'right', INIT);
    const cache = new FileKeyCache(cacheDir);
    await Repository.open(backend, 'right', { keyCache: cache });
    const entries = fs.readdirSync(cacheDir).filter((n) => n !== 'secret');
    assert.equal(entries.length, 1, 'one entry for (password, key)');
    assert.equal(fs.statSync(cacheDir).mode & 0o777, 0o700);
    assert.equal(fs.statSync(path.join(cacheDir, entries[0]!)).mode & 0o777, 0o600);
    assert.ok(!entries[0]!.includes(repo.keyId), 'entry names do not reveal the key id');
    assert.ok(cache.get(repo.keyId, 'right'), 'the KEK is cached');
    assert.equal(cache.get(repo.keyId, 'wrong'), undefined, 'another password misses');
    await assert.rejects(Repository.open(backend, 'wrong', { keyCache: cache }), (e: unknown) => e instanceof HoldfastError && e.code === 'WRONG_PASSWORD');
    // A damaged entry is dropped and scrypt runs again; the open still succeeds.
    fs.writeFileSync(path.join(cacheDir, entries[0]!), Buffer.alloc(32, 7));
    assert.equal((await Repository.open(backend, 'right', { keyCache: cache })).keyId, repo.keyId);
    assert.notDeepEqual(cache.get(repo.keyId, 'right'), Buffer.alloc(32, 7), 'the bad entry was replaced');
  } finally {
    await cleanup();
  }
});

test('a cache directory that others can read is not used', async () => {
  const { dir, cleanup } = await tmpDir();
  try {
    const cacheDir = path.join(dir, 'open');
    fs.mkdirSync(cacheDir, { mode: 0o755 });
    fs.chmodSync(cacheDir, 0o755);
    const cache = new FileKeyCache(cacheDir);
    cache.put('k', 'pw', Buffer.alloc(32, 1));
    assert.equal(cache.get('k', 'pw'), undefined);
    assert.deepEqual(fs.readdirSync(cacheDir), []);
  } finally {
    await cleanup();
  }
});

test('the default cache directory is local and per user', () => {
  assert.equal(defaultKeyCacheDir({ HOLDFAST_STATE_DIR: '/var/lib/hf' }), '/var/lib/hf/keys');
  assert.equal(defaultKeyCacheDir({ XDG_CACHE_HOME: '/home/a/.cache' }), '/home/a/.cache/holdfast/keys');
  assert.equal(defaultKeyCacheDir({ HOME: '/var/lib/postgresql' }), '/var/lib/postgresql/.cache/holdfast/keys');
});
