/**
 * The Repository class on a MemoryBackend: opening (passwords, missing and existing
 * repositories), blobs (round trip across a reopen, dedup, compression, many packs), damage
 * (flipped byte, missing pack, truncated pack, tampered files) and keys.
 *
 * Every test that writes a healthy repository ends by running the checker with --read-data on a
 * freshly opened copy; tests that damage one check that the checker reports the damage.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { HoldfastError, type ErrorCode } from '../errors/catalogue.js';
import { type Backend, BufferedWriter, type ObjectWriter, StorageError } from '../storage/backend.js';
import { LocalBackend } from '../storage/local.js';
import { MemoryBackend } from '../storage/mem.js';
import { type ProblemKind, checkRepository } from '../checker/check.js';
import { Rng, tmpDir } from '../testing/helpers.js';
import { seal, sha256, sha256Hex } from './crypto.js';
import { createKeyFile, kdfParams } from './keys.js';
import { blobAad, packName, type BlobType } from './pack.js';
import { type InitOptions, Repository } from './repository.js';

const KDF = kdfParams(10);
const INIT: InitOptions = { kdf: KDF, chunker: { min: 64 << 10, avg: 128 << 10, max: 512 << 10 } };
const PW = 'correct horse battery staple';

async function fresh(password = PW): Promise<{ backend: MemoryBackend; repo: Repository }> {
  const backend = new MemoryBackend();
  const repo = await Repository.init(backend, password, INIT);
  return { backend, repo };
}

/** Open a new Repository on the backend with its index loaded, as a later command would. */
async function reopen(backend: Backend, password = PW): Promise<Repository> {
  const repo = await Repository.open(backend, password);
  await repo.loadIndex();
  return repo;
}

/** Assert that `p` rejects with a HoldfastError of `code`; returns it for further checks. */
async function rejectsCode(p: Promise<unknown>, code: ErrorCode, what = ''): Promise<HoldfastError> {
  try {
    await p;
  } catch (err) {
    if (!(err instanceof HoldfastError)) assert.fail(`${what}expected HoldfastError ${code}, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
    assert.equal(err.code, code, `${what}expected ${code}, got ${err.code}: ${err.message}`);
    return err;
  }
  assert.fail(`${what}expected HoldfastError ${code}, but the call resolved`);
}

/** Run the checker (reading all data) on a freshly opened repository; returns the problem kinds. */
async function checkKinds(backend: Backend, password = PW): Promise<ProblemKind[]> {
  const repo = await Repository.open(backend, password);
  const report = await checkRepository(repo, { readData: true });
  return report.problems.map((p) => p.kind).sort();
}

async function assertHealthy(backend: Backend, password = PW): Promise<void> {
  const repo = await Repository.open(backend, password);
  const report = await checkRepository(repo, { readData: true });
  assert.deepEqual(report.problems, [], 'the checker finds no problems');
}

async function names(backend: Backend, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of backend.list(prefix)) out.push(o.name);
  return out.sort();
}

/** Save a blob, flush, and return its id and the name of the pack that holds it. */
async function storeOne(repo: Repository, type: BlobType, data: Buffer): Promise<{ id: string; pack: string }> {
  const { id } = await repo.saveBlob(type, data);
  await repo.flush();
  const hex = id.toString('hex');
  const loc = repo.index.get(hex);
  assert.ok(loc, 'a flushed blob is in the index');
  return { id: hex, pack: packName(loc.pack) };
}

/** A MemoryBackend whose writers fail at commit while `failCommits` is set (a full disk, a lost connection). */
class FailingCommits extends MemoryBackend {
  failCommits = false;
  override async openWriter(): Promise<ObjectWriter> {
    const inner = new BufferedWriter(this);
    return {
      write: (parts) => inner.write(parts),
      commit: async (name, options) => {
        if (this.failCommits) throw new StorageError('io', this.location, name, `cannot write ${name}: injected failure`);
        return inner.commit(name, options);
      },
      abort: () => inner.abort(),
    };
  }
}

describe('Repository: init and open', () => {
  test('init then open with the right password gives the same config', async () => {
    const { backend, repo } = await fresh();
    const opened = await Repository.open(backend, PW);
    assert.deepEqual(opened.config, repo.config);
    assert.equal(opened.keyId, repo.keyId);
    assert.equal(opened.config.version, 1);
    assert.deepEqual({ min: opened.config.chunker.min, avg: opened.config.chunker.avg, max: opened.config.chunker.max }, INIT.chunker);
    assert.equal(Buffer.from(opened.config.chunker.seed, 'base64').length, 32);
    assert.deepEqual(await names(backend, ''), [`catalog/keys/${repo.keyId}`, 'config', `keys/${repo.keyId}`]);
    await assertHealthy(backend);
  });

  test('a wrong password is WRONG_PASSWORD (exit 12), counting the keys tried', async () => {
    const { backend } = await fresh();
    const err = await rejectsCode(Repository.open(backend, 'not the password'), 'WRONG_PASSWORD');
    assert.equal(err.exitCode, 12);
    assert.equal(err.data['keys'], 1);
    await rejectsCode(Repository.open(backend, ''), 'WRONG_PASSWORD');
    await rejectsCode(Repository.open(backend, PW + ' '), 'WRONG_PASSWORD');
  });

  test('the password is compared after Unicode NFC normalisation', async () => {
    const composed = 'caf\u00e9-\u00fcber';
    const decomposed = 'cafe\u0301-u\u0308ber';
    assert.notEqual(composed, decomposed);
    const { backend } = await fresh(composed);
    await Repository.open(backend, decomposed);
  });

  test('open where there is no config is REPO_NOT_FOUND (exit 10)', async () => {
    const backend = new MemoryBackend();
    const err = await rejectsCode(Repository.open(backend, PW), 'REPO_NOT_FOUND');
    assert.equal(err.exitCode, 10);
    // Unrelated objects, even key files, do not make a repository.
    await backend.put('data/ab/x', Buffer.from('x'));
    const key = await createKeyFile(randomBytes(32), PW, KDF);
    await backend.put(`keys/${key.id}`, key.bytes);
    await rejectsCode(Repository.open(backend, PW), 'REPO_NOT_FOUND');
  });

  test('init twice is REPO_EXISTS (exit 13) and leaves the first repository as it was', async () => {
    const { backend, repo } = await fresh();
    const before = await names(backend, '');
    const configBytes = Buffer.from(backend.raw('config')!);
    const err = await rejectsCode(Repository.init(backend, 'another password', INIT), 'REPO_EXISTS');
    assert.equal(err.exitCode, 13);
    assert.deepEqual(await names(backend, ''), before, 'the second init wrote nothing');
    assert.ok(backend.raw('config')!.equals(configBytes), 'config unchanged');
    await rejectsCode(Repository.open(backend, 'another password'), 'WRONG_PASSWORD');
    assert.equal((await Repository.open(backend, PW)).config.id, repo.config.id);
  });

  test('a config with one flipped byte is INTEGRITY, naming the config', async () => {
    const { backend } = await fresh();
    const raw = backend.raw('config')!;
    raw[raw.length >> 1]! ^= 0x01;
    const err = await rejectsCode(Repository.open(backend, PW), 'INTEGRITY');
    assert.equal(err.data['object'], 'config');
  });

  test('a config but no key files is INTEGRITY, naming keys/', async () => {
    const { backend, repo } = await fresh();
    await backend.delete(`keys/${repo.keyId}`);
    // The key file's copy in the catalog still opens it (check reports the loss) …
    assert.equal((await Repository.open(backend, PW)).keyId, repo.keyId);
    // … and without the copy too, nothing does.
    await backend.delete(`catalog/keys/${repo.keyId}`);
    const err = await rejectsCode(Repository.open(backend, PW), 'INTEGRITY');
    assert.equal(err.data['object'], 'keys/');
  });

  test('an unreadable key file is skipped: another key still opens the repository', async () => {
    const { backend, repo } = await fresh();
    await backend.put('keys/0000-garbage', Buffer.from('{not json'));
    assert.equal((await Repository.open(backend, PW)).keyId, repo.keyId);
    const err = await rejectsCode(Repository.open(backend, 'wrong'), 'WRONG_PASSWORD');
    assert.match(err.message, /1 key file\(s\) unreadable/);
  });

  test(
    'a stray key (same password, other master key) left by an interrupted or racing init does not lock the owner out',
    async () => {
      // A leftover key from an init that wrote its key and then died (or lost the race for
      // `config`). It only bites when it sorts before the real key; retry until it does, so the
      // outcome does not depend on the random key ids.
      for (let attempt = 0; attempt < 64; attempt++) {
        const backend = new MemoryBackend();
        const stray = await createKeyFile(randomBytes(32), PW, KDF);
        await backend.put(`keys/${stray.id}`, stray.bytes);
        const repo = await Repository.init(backend, PW, INIT);
        if (stray.id > repo.keyId) continue;
        const opened = await Repository.open(backend, PW);
        assert.equal(opened.config.id, repo.config.id);
        return;
      }
      assert.fail('no stray key id sorted before the real one in 64 attempts');
    },
  );

  test('two concurrent inits: exactly one wins, the other is REPO_EXISTS', async () => {
    const backend = new MemoryBackend();
    const results = await Promise.allSettled([Repository.init(backend, 'pw-a', INIT), Repository.init(backend, 'pw-b', INIT)]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    assert.equal(won.length, 1, 'exactly one init succeeds');
    assert.equal(lost.length, 1);
    assert.ok(lost[0] instanceof HoldfastError && lost[0].code === 'REPO_EXISTS', `the loser gets REPO_EXISTS, got ${String(lost[0])}`);
    const winnerPw = results[0]!.status === 'fulfilled' ? 'pw-a' : 'pw-b';
    await Repository.open(backend, winnerPw);
  });

  test(
    'the loser of an init race leaves no key behind: its password is WRONG_PASSWORD',
    async () => {
      const backend = new MemoryBackend();
      const results = await Promise.allSettled([Repository.init(backend, 'pw-a', INIT), Repository.init(backend, 'pw-b', INIT)]);
      const loserPw = results[0]!.status === 'fulfilled' ? 'pw-b' : 'pw-a';
      assert.equal((await names(backend, 'keys/')).length, 1, 'only the winner has a key');
      await rejectsCode(Repository.open(backend, loserPw), 'WRONG_PASSWORD');
    },
  );
});

describe('Repository: blobs', () => {
  test('saveBlob, flush, then loadBlob after a reopen returns every blob', async () => {
    const { backend, repo } = await fresh();
    const rng = new Rng(201);
    const blobs: Array<{ type: BlobType; data: Buffer }> = [];
    for (const size of [0, 1, 63, 64, 1000, 100_000, 1 << 20]) {
      blobs.push({ type: 'data', data: rng.bytes(size) });
      blobs.push({ type: 'data', data: rng.text(size) });
    }
    blobs.push({ type: 'tree', data: Buffer.from(JSON.stringify({ nodes: [] })) });
    blobs.push({ type: 'tree', data: rng.text(5000) });
    const ids: string[] = [];
    for (const b of blobs) {
      const { id, added } = await repo.saveBlob(b.type, b.data);
      assert.deepEqual(id, sha256(b.data), 'the blob id is the SHA-256 of its content');
      assert.equal(added, b.data.length !== 0 || !ids.includes(sha256Hex(b.data)));
      ids.push(id.toString('hex'));
    }
    // Before flush nothing is durable and nothing is loadable.
    await rejectsCode(repo.loadBlob('data', ids[0]!), 'OBJECT_MISSING');
    await repo.flush();
    assert.equal(repo.indexFiles.length, 1);
    assert.deepEqual(await names(backend, 'index/'), [`index/${repo.indexFiles[0]}`]);
    assert.equal((await names(backend, 'data/')).length, 2, 'one pack per blob type');

    const again = await reopen(backend);
    assert.equal(again.index.blobCount, new Set(ids).size);
    for (const [i, b] of blobs.entries()) {
      const got = await again.loadBlob(b.type, ids[i]!);
      assert.ok(got.equals(b.data), `blob ${i} (${b.type}, ${b.data.length} bytes) round-trips`);
    }
    await assertHealthy(backend);
  });

  test('the same blob saved twice is stored once, in this process and after a reopen', async () => {
    const { backend, repo } = await fresh();
    const rng = new Rng(202);
    const data = rng.bytes(10_000);
    const first = await repo.saveBlob('data', data);
    const second = await repo.saveBlob('data', Buffer.from(data));
    assert.equal(first.added, true);
    assert.equal(second.added, false);
    assert.ok(first.id.equals(second.id));
    // Concurrent saves of one new blob: one adds it.
    const other = rng.bytes(5000);
    const racing = await Promise.all([repo.saveBlob('data', other), repo.saveBlob('data', other), repo.saveBlob('data', other)]);
    assert.deepEqual(
      racing.map((r) => r.added),
      [true, false, false],
    );
    await repo.flush();
    const packs = await names(backend, 'data/');
    assert.equal(packs.length, 1);
    assert.equal(repo.index.blobCount, 2);
    assert.equal(repo.index.packs.get(packs[0]!.split('/').pop()!)?.count, 2, 'the pack holds two blobs, not four');

    const again = await reopen(backend);
    assert.equal((await again.saveBlob('data', data)).added, false, 'a blob indexed by an earlier run is not stored again');
    const before = await names(backend, '');
    await again.flush();
    assert.deepEqual(await names(backend, ''), before, 'flushing only known blobs writes nothing');
    assert.equal(again.index.duplicates, 0);
    await assertHealthy(backend);
  });

  test(
    'a data blob and a tree blob with identical bytes are both stored and both load',
    async () => {
      const { backend, repo } = await fresh();
      const bytes = Buffer.from(JSON.stringify({ nodes: [] }));
      await repo.saveBlob('data', bytes);
      await repo.saveBlob('tree', bytes);
      await repo.flush();
      const again = await reopen(backend);
      const id = sha256Hex(bytes);
      assert.ok((await again.loadBlob('data', id)).equals(bytes));
      assert.ok((await again.loadBlob('tree', id)).equals(bytes));
    },
  );

  test('on a LocalBackend, streamed pack writes round-trip across a reopen and leave no temporary files', async () => {
    const { dir, cleanup } = await tmpDir();
    try {
      const backend = new LocalBackend(dir);
      const repo = await Repository.init(backend, PW, INIT);
      repo.setWriteOptions({ compression: { algo: 'zstd', level: 3 }, packSize: 256 << 10 });
      const rng = new Rng(207);
      const blobs = Array.from({ length: 40 }, (_, n) => (n % 2 ? rng.bytes(20_000 + n) : rng.text(30_000 + n)));
      for (const b of blobs) await repo.saveBlob('data', b);
      await repo.flush();
      const again = await reopen(new LocalBackend(dir));
      assert.ok(again.index.packs.size >= 2, 'several packs were written');
      for (const [n, b] of blobs.entries()) assert.ok((await again.loadBlob('data', sha256Hex(b))).equals(b), `blob ${n}`);
      const leftovers = (await fsp.readdir(dir, { recursive: true })).filter((f) => path.basename(f).startsWith('.tmp-'));
      assert.deepEqual(leftovers, []);
      await assertHealthy(backend);
    } finally {
      await cleanup();
    }
  });

  test('when a pack cannot be stored, flush fails with STORAGE_IO and nothing refers to the lost pack', async () => {
    const backend = new FailingCommits();
    const repo = await Repository.init(backend, PW, INIT);
    const rng = new Rng(208);
    const data = rng.bytes(5000);
    await repo.saveBlob('data', data);
    backend.failCommits = true;
    const err = await rejectsCode(repo.flush(), 'STORAGE_IO');
    assert.ok(err.cause instanceof StorageError && err.cause.kind === 'io', 'the storage error is the cause');
    assert.equal(repo.index.has(sha256Hex(data)), false, 'the blob of the lost pack is not in the index');
    assert.deepEqual(await names(backend, 'data/'), []);
    assert.deepEqual(await names(backend, 'index/'), [], 'no index file lists the lost pack');
    backend.failCommits = false;
    assert.equal((await reopen(backend)).index.blobCount, 0);
    await assertHealthy(backend);
  });

  test('loadBlob of an unknown id is OBJECT_MISSING; so is a stored id asked for as the other type', async () => {
    const { backend, repo } = await fresh();
    const unknown = sha256Hex(Buffer.from('never stored'));
    const err = await rejectsCode(repo.loadBlob('data', unknown), 'OBJECT_MISSING');
    assert.equal(err.data['blob'], unknown);
    const { id } = await storeOne(repo, 'data', new Rng(203).bytes(100));
    // Blobs are (type, id): a data blob is not a tree blob with the same id.
    const wrong = await rejectsCode(repo.loadBlob('tree', id), 'OBJECT_MISSING');
    assert.equal(wrong.data['blob'], id);
    assert.match(wrong.message, /tree blob/);
    await assertHealthy(backend);
  });

  test('compression none and zstd both round-trip; zstd shrinks compressible blobs, none does not', async () => {
    const rng = new Rng(204);
    const text = rng.text(200_000);
    const random = rng.bytes(50_000);
    const packBytes: Record<string, number> = {};
    for (const compression of [{ algo: 'none' } as const, { algo: 'zstd', level: 3 } as const, { algo: 'zstd', level: 19 } as const]) {
      const label = compression.algo === 'none' ? 'none' : `zstd:${compression.level}`;
      const { backend, repo } = await fresh();
      repo.setWriteOptions({ compression, packSize: 16 << 20 });
      const t = await storeOne(repo, 'data', text);
      const r = await storeOne(repo, 'data', random);
      const again = await reopen(backend);
      // Reading does not depend on the writer's setting.
      again.setWriteOptions({ compression: compression.algo === 'none' ? { algo: 'zstd', level: 3 } : { algo: 'none' }, packSize: 16 << 20 });
      assert.ok((await again.loadBlob('data', t.id)).equals(text), `${label}: text blob round-trips`);
      assert.ok((await again.loadBlob('data', r.id)).equals(random), `${label}: random blob round-trips`);
      packBytes[label] = again.index.get(t.id)!.length;
      assert.ok(again.index.get(r.id)!.length <= random.length + 64, `${label}: incompressible data is stored as is`);
      await assertHealthy(backend);
    }
    assert.ok(packBytes['none']! > text.length, `none stores the text uncompressed (${packBytes['none']} bytes)`);
    assert.ok(packBytes['zstd:3']! < text.length / 2, `zstd:3 compresses the text (${packBytes['zstd:3']} of ${text.length} bytes)`);
    assert.ok(packBytes['zstd:19']! <= packBytes['zstd:3']!, 'a higher zstd level is not larger');
  });

  test('many packs: small packs, more than 256 of them, are indexed and all round-trip', async () => {
    const { backend, repo } = await fresh();
    repo.setWriteOptions({ compression: { algo: 'none' }, packSize: 1 });
    const rng = new Rng(205);
    const blobs = Array.from({ length: 300 }, (_, i) => rng.bytes(16 + (i % 50)));
    for (const [n, b] of blobs.entries()) await repo.saveBlob(n % 7 === 0 ? 'tree' : 'data', b);
    await repo.flush();
    const packs = await names(backend, 'data/');
    assert.equal(packs.length, 300, 'packSize 1 puts every blob in its own pack');
    const again = await reopen(backend);
    assert.ok(again.indexFiles.length >= 2, `more than 256 packs are split over several index files (got ${again.indexFiles.length})`);
    assert.equal(again.index.packs.size, 300);
    assert.equal(again.index.blobCount, 300);
    for (const [n, b] of blobs.entries()) {
      assert.ok((await again.loadBlob(n % 7 === 0 ? 'tree' : 'data', sha256Hex(b))).equals(b), `blob ${n}`);
    }
    await assertHealthy(backend);
  });

  test('sealed files (snapshot, index kinds) round-trip and are named by the SHA-256 of their bytes', async () => {
    const { backend, repo } = await fresh();
    const plain = new Rng(206).text(3000);
    const id = await repo.saveFile('snapshot', plain);
    assert.equal(id, sha256Hex(backend.raw(`snapshots/${id}`)!));
    assert.deepEqual(await repo.listFiles('snapshot'), [id]);
    const again = await Repository.open(backend, PW);
    assert.ok((await again.loadFile('snapshot', id)).equals(plain));
    // A file sealed as one kind cannot be read as another.
    await backend.put(`index/${id}`, backend.raw(`snapshots/${id}`)!);
    await rejectsCode(again.loadFile('index', id), 'INTEGRITY');
  });
});

describe('Repository: damage is detected and named', () => {
  test('one flipped byte in a pack makes loadBlob INTEGRITY, naming the blob and the pack', async () => {
    const rng = new Rng(301);
    for (const where of ['first', 'middle', 'last'] as const) {
      const { backend, repo } = await fresh();
      const victim = rng.bytes(20_000);
      const bystander = rng.bytes(20_000);
      await repo.saveBlob('data', bystander);
      const { id, pack } = await storeOne(repo, 'data', victim);
      const loc = repo.index.get(id)!;
      const raw = backend.raw(pack);
      assert.ok(raw, `pack ${pack} is stored`);
      const at = where === 'first' ? loc.offset : where === 'last' ? loc.offset + loc.length - 1 : loc.offset + (loc.length >> 1);
      raw[at]! ^= 0x40;
      const again = await reopen(backend);
      const err = await rejectsCode(again.loadBlob('data', id), 'INTEGRITY', `${where} byte of the blob flipped: `);
      assert.equal(err.data['blob'], id);
      assert.equal(err.data['object'], pack);
      assert.ok(err.message.includes(id) && err.message.includes(pack), `the message names blob and pack: ${err.message}`);
      assert.ok((await again.loadBlob('data', sha256Hex(bystander))).equals(bystander), 'the other blob of the pack still loads');
      assert.deepEqual(await checkKinds(backend), ['pack-corrupt']);
    }
  });

  test('a deleted pack makes loadBlob OBJECT_MISSING, naming the blob and the pack', async () => {
    const { backend, repo } = await fresh();
    const { id, pack } = await storeOne(repo, 'data', new Rng(302).bytes(1000));
    await backend.delete(pack);
    const again = await reopen(backend);
    const err = await rejectsCode(again.loadBlob('data', id), 'OBJECT_MISSING');
    assert.equal(err.data['blob'], id);
    assert.equal(err.data['object'], pack);
    assert.equal(err.exitCode, 15);
    assert.deepEqual(await checkKinds(backend), ['pack-missing']);
  });

  test('a truncated pack makes loadBlob INTEGRITY (never a short blob)', async () => {
    const rng = new Rng(303);
    const { backend, repo } = await fresh();
    const data = rng.bytes(30_000);
    const { id, pack } = await storeOne(repo, 'data', data);
    const loc = repo.index.get(id)!;
    const full = Buffer.from(backend.raw(pack)!);
    // Cut inside the blob, and cut exactly at its start: the blob cannot be read either way.
    for (const keep of [loc.offset + loc.length - 1, loc.offset + 1, loc.offset, 0]) {
      await backend.put(pack, full.subarray(0, keep));
      const again = await reopen(backend);
      const err = await rejectsCode(again.loadBlob('data', id), 'INTEGRITY', `pack cut to ${keep} bytes: `);
      assert.equal(err.data['blob'], id);
      assert.equal(err.data['object'], pack);
      assert.deepEqual(await checkKinds(backend), ['pack-size']);
    }
    // Cut only the header away: the blob still loads (by its indexed range), the checker objects.
    await backend.put(pack, full.subarray(0, loc.offset + loc.length));
    assert.ok((await (await reopen(backend)).loadBlob('data', id)).equals(data));
    assert.deepEqual(await checkKinds(backend), ['pack-size']);
  });

  test('a blob moved to another offset fails authentication rather than returning other data', async () => {
    const rng = new Rng(304);
    const { backend, repo } = await fresh();
    repo.setWriteOptions({ compression: { algo: 'none' }, packSize: 16 << 20 });
    const a = rng.bytes(500);
    const b = rng.bytes(500);
    const ida = sha256Hex(a);
    const idb = sha256Hex(b);
    await repo.saveBlob('data', a);
    await repo.saveBlob('data', b);
    await repo.flush();
    const la = repo.index.get(ida)!;
    const lb = repo.index.get(idb)!;
    assert.equal(la.pack, lb.pack);
    assert.equal(la.length, lb.length);
    // Swap the two sealed blobs inside the pack: each is intact but under the other's id.
    const raw = backend.raw(packName(la.pack))!;
    const sa = Buffer.from(raw.subarray(la.offset, la.offset + la.length));
    raw.subarray(lb.offset, lb.offset + lb.length).copy(raw, la.offset);
    sa.copy(raw, lb.offset);
    const again = await reopen(backend);
    await rejectsCode(again.loadBlob('data', ida), 'INTEGRITY');
    await rejectsCode(again.loadBlob('data', idb), 'INTEGRITY');
  });

  test('a blob that authenticates but is not what its id says is INTEGRITY (SHA-256, length, compression mode)', async () => {
    const { repo } = await fresh();
    const key = repo.packKey();
    const data = new Rng(306).bytes(300);
    const id = sha256(data);
    const aad = blobAad('data', id);
    assert.ok((await repo.openBlob('data', id, seal(key, aad, [Buffer.of(0), data]), data.length, 'test')).equals(data), 'the honest blob opens');
    const other = new Rng(307).bytes(300);
    const forged = await rejectsCode(repo.openBlob('data', id, seal(key, aad, [Buffer.of(0), other]), other.length, 'test'), 'INTEGRITY', 'other content under the id: ');
    assert.match(forged.message, /SHA-256/);
    assert.equal(forged.data['blob'], id.toString('hex'));
    await rejectsCode(repo.openBlob('data', id, seal(key, aad, [Buffer.of(0), data]), data.length + 1, 'test'), 'INTEGRITY', 'wrong raw length: ');
    const mode = await rejectsCode(repo.openBlob('data', id, seal(key, aad, [Buffer.of(9), data]), data.length, 'test'), 'INTEGRITY', 'unknown compression mode: ');
    assert.match(mode.message, /decompress/);
    await rejectsCode(repo.openBlob('data', id, seal(key, aad, [Buffer.of(1), data]), data.length, 'test'), 'INTEGRITY', 'zstd mode on data that is no zstd frame: ');
    await rejectsCode(repo.openBlob('data', id, seal(key, aad, []), data.length, 'test'), 'INTEGRITY', 'empty plaintext: ');
  });

  test('a damaged index file is INTEGRITY for loadIndex, or reported and skipped with onError', async () => {
    const { backend, repo } = await fresh();
    await storeOne(repo, 'data', new Rng(305).bytes(100));
    const [indexName] = await names(backend, 'index/');
    assert.ok(indexName);
    backend.raw(indexName)![20]! ^= 0x01;
    const opened = await Repository.open(backend, PW);
    const err = await rejectsCode(opened.loadIndex(), 'INTEGRITY');
    assert.equal(err.data['object'], indexName);
    const tolerant = await Repository.open(backend, PW);
    const reported: string[] = [];
    await tolerant.loadIndex((id, e) => reported.push(`${id}:${e.code}`));
    assert.deepEqual(reported, [`${indexName.slice('index/'.length)}:INTEGRITY`]);
    assert.equal(tolerant.index.blobCount, 0);
    assert.deepEqual(await checkKinds(backend), ['index-unreadable']);
  });

  test('a sealed file with a flipped byte is INTEGRITY; a deleted one is OBJECT_MISSING', async () => {
    const { backend, repo } = await fresh();
    const id = await repo.saveFile('snapshot', Buffer.from('{"tree":"x"}'));
    backend.raw(`snapshots/${id}`)![15]! ^= 0x80;
    // The copy catalog/<id> serves it while only the manifest is damaged (§8.2).
    assert.equal((await repo.loadFile('snapshot', id)).toString(), '{"tree":"x"}');
    assert.ok(await repo.loadSnapshotManifest(id).then(() => false, () => true), 'the manifest itself is damaged');
    backend.raw(`catalog/${id}`)![15]! ^= 0x80;
    const err = await rejectsCode(repo.loadFile('snapshot', id), 'INTEGRITY');
    assert.equal(err.data['object'], `snapshots/${id}`);
    await backend.delete(`snapshots/${id}`);
    await backend.delete(`catalog/${id}`);
    const missing = await rejectsCode(repo.loadFile('snapshot', id), 'OBJECT_MISSING');
    assert.equal(missing.data['object'], `snapshots/${id}`);
  });
});

describe('Repository: keys', () => {
  test('add, list and remove keys; the key in use cannot be removed', async () => {
    const { backend, repo } = await fresh();
    const second = await repo.addKey('second password', KDF);
    assert.notEqual(second, repo.keyId);
    const listed = await repo.listKeys();
    assert.deepEqual(listed.map((k) => k.id).sort(), [repo.keyId, second].sort());
    assert.deepEqual(
      listed.filter((k) => k.current).map((k) => k.id),
      [repo.keyId],
      'exactly the key in use is current',
    );
    for (const k of listed) {
      assert.ok(k.file, `key ${k.id} parses`);
      assert.equal(k.file.N, KDF.N);
    }

    const viaSecond = await Repository.open(backend, 'second password');
    assert.equal(viaSecond.keyId, second);
    assert.equal(viaSecond.config.id, repo.config.id);

    const inUse = await rejectsCode(repo.removeKey(repo.keyId), 'KEY_IN_USE');
    assert.equal(inUse.exitCode, 24);
    await rejectsCode(viaSecond.removeKey(second), 'KEY_IN_USE');
    await rejectsCode(repo.removeKey('f'.repeat(64)), 'OBJECT_MISSING');
    assert.equal((await repo.listKeys()).length, 2, 'refused removals removed nothing');

    await viaSecond.removeKey(repo.keyId);
    assert.deepEqual(
      (await viaSecond.listKeys()).map((k) => k.id),
      [second],
    );
    await rejectsCode(Repository.open(backend, PW), 'WRONG_PASSWORD');
    assert.equal((await Repository.open(backend, 'second password')).keyId, second);
    await assertHealthy(backend, 'second password');
  });

  test('blobs written under one key are read under another (one master key)', async () => {
    const { backend, repo } = await fresh();
    await repo.addKey('other', KDF);
    const data = new Rng(401).bytes(2000);
    const { id } = await storeOne(repo, 'data', data);
    const other = await reopen(backend, 'other');
    assert.ok((await other.loadBlob('data', id)).equals(data));
    await assertHealthy(backend, 'other');
  });
});

describe('Repository: giving up', () => {
  test('abandon() indexes the packs that became durable, discards the open one, and leaves a healthy repository', async () => {
    const { backend, repo } = await fresh();
    repo.setWriteOptions({ compression: { algo: 'none' }, packSize: 1 << 20 });
    const rng = new Rng(404);
    const ids: string[] = [];
    // ~3.5 packs of 1 MiB: three finish, the fourth stays open.
    for (let i = 0; i < 14; i++) ids.push((await repo.saveBlob('data', rng.bytes(256 << 10))).id.toString('hex'));
    await repo.abandon();
    const again = await reopen(backend);
    const kept = ids.filter((id) => again.index.has(id, 'data'));
    assert.ok(kept.length >= 8 && kept.length < ids.length, `finished packs are indexed, the open one is not (kept ${kept.length} of ${ids.length})`);
    for (const id of kept) assert.equal((await again.loadBlob('data', id)).length, 256 << 10);
    assert.equal((await names(backend, 'snapshots/')).length, 0, 'no snapshot is written');
    await assertHealthy(backend);
  });
});
