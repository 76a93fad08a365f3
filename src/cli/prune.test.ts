/**
 * prune through the CLI (docs/design.md §18):
 * - after snapshots are forgotten it frees their space, repacks partly used packs, and every
 *   remaining snapshot restores byte-identical; --dry-run changes nothing;
 * - a backup that runs during a prune and reuses a blob the prune unlisted completes and restores:
 *   the prune defers deleting (naming the backup), and the next prune lists the pack again;
 * - SIGKILL at seeded points (HOLDFAST_TEST_CRASH_AFTER, after the N-th repository mutation):
 *   `check` accepts the repository afterwards and a second prune finishes the job;
 * - a damaged repository is refused before anything is deleted.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLI, Rng, cliSpawn } from '../testing/helpers.js';
import { type Env, dirSize, fails, initRepo, listFiles, ok, okJson, packFiles, restoredPath, within, workspace } from '../testing/e2e.js';

interface CheckJson {
  ok: boolean;
  problems: Array<{ message: string }>;
  warnings: string[];
}

interface PruneJson {
  packs: { total: number; deleted: number; repacked: number; orphans: number; written: number };
  bytes: { freed: number; unusedAfter: number };
  pending: Array<{ packs: number; waitingFor: string[] }>;
  earlierFinished: number;
}

const KiB = 1 << 10;
/** Small chunks and packs, so a few MB make many packs. */
const SMALL = ['--chunk-min', '64KiB', '--chunk-avg', '128KiB', '--chunk-max', '512KiB'];

/** Files with the same names and content in both directories (metadata is backup's concern). */
function assertSameContent(expected: string, actual: string): void {
  const want = listFiles(expected);
  assert.ok(want.length > 0);
  assert.deepEqual(listFiles(actual), want);
  for (const f of want) assert.ok(fs.readFileSync(path.join(expected, f)).equals(fs.readFileSync(path.join(actual, f))), `${f} differs`);
}

function writeFiles(dir: string, rng: Rng, names: string[], size: number): void {
  fs.mkdirSync(dir, { recursive: true });
  for (const n of names) fs.writeFileSync(path.join(dir, n), rng.bytes(size));
}

function snapshotIds(env: Env): string[] {
  return okJson<Array<{ id: string }>>(['snapshots'], env).map((s) => s.id);
}

function forget(env: Env, id: string): void {
  ok(['forget', id], env);
}

function expectClean(env: Env, readData = false): void {
  const c = okJson<CheckJson>(['check', ...(readData ? ['--read-data'] : [])], env);
  assert.equal(c.ok, true, JSON.stringify(c.problems));
  assert.deepEqual(c.warnings, [], 'after a completed prune nothing is unindexed or duplicated');
}

function restoreAndCompare(env: Env, id: string, dir: string, src: string, expected: string): void {
  const target = path.join(dir, `restore-${id.slice(0, 8)}-${Math.random().toString(36).slice(2)}`);
  ok(['restore', id, '--target', target], env);
  assertSameContent(expected, restoredPath(target, src));
  fs.rmSync(target, { recursive: true, force: true });
}

/**
 * A repository with `rounds` snapshots of `src`, each after rewriting a few of its 16 files, with
 * the contents of each saved in state-N; then the snapshots of the rounds in `forgotten` are
 * forgotten, so their own blobs are unused, spread over packs that also hold used ones.
 */
function buildHistory(dir: string, seed: number, rounds = 3, forgotten: readonly number[] = [1]): { repo: string; env: Env; src: string; kept: Array<{ id: string; state: string }> } {
  const repo = path.join(dir, 'repo');
  const env = initRepo(repo, 'pw', SMALL);
  const src = path.join(dir, 'src');
  const rng = new Rng(seed);
  const names = Array.from({ length: 16 }, (_, i) => `f${String(i).padStart(2, '0')}`);
  writeFiles(src, rng, names, 300 * KiB);
  const states: Array<{ id: string; state: string }> = [];
  for (let round = 1; round <= rounds; round++) {
    if (round > 1) writeFiles(src, rng, names.filter((_, i) => (i + round) % 4 === 0), 150 * KiB + rng.int(300 * KiB));
    ok(['backup', src, '--pack-size', '1MiB', '--jobs', '0'], env);
    const state = path.join(dir, `state-${round}`);
    fs.cpSync(src, state, { recursive: true });
    states.push({ id: snapshotIds(env).at(-1)!, state });
  }
  for (const r of forgotten) forget(env, states[r - 1]!.id);
  return { repo, env, src, kept: states.filter((_, i) => !forgotten.includes(i + 1)) };
}

describe('prune', { timeout: 600_000 }, () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-prune-'));
  });
  after(() => cleanup());

  test('after a forget, prune frees the space, repacks partly used packs, and the rest restores byte-identical; --dry-run changes nothing', () => {
    const base = path.join(dir, 'frees');
    const { repo, env, src, kept } = buildHistory(base, 501);
    const filesBefore = listFiles(repo);
    const sizeBefore = dirSize(repo);
    const dry = okJson<PruneJson>(['prune', '--dry-run', '--max-unused', '0'], env);
    assert.deepEqual(listFiles(repo), filesBefore, '--dry-run wrote or deleted nothing');
    assert.ok(dry.packs.deleted + dry.packs.repacked > 0, JSON.stringify(dry));
    const r = okJson<PruneJson>(['prune', '--max-unused', '0'], env);
    assert.equal(r.packs.deleted, dry.packs.deleted);
    assert.equal(r.packs.repacked, dry.packs.repacked);
    assert.ok(r.packs.repacked > 0, `some packs held used and unused blobs: ${JSON.stringify(r)}`);
    assert.equal(r.bytes.unusedAfter, 0);
    assert.deepEqual(r.pending, [], 'nothing else ran, so everything was deleted at once');
    const freed = sizeBefore - dirSize(repo);
    // The first snapshot's own data: the four 300 KiB files of random bytes the second rewrote.
    assert.ok(freed >= 4 * 300 * KiB * 0.95, `freed ${freed} bytes`);
    assert.deepEqual(listFiles(path.join(repo, 'prune')), [], 'no mark left');
    expectClean(env, true);
    for (const k of kept) restoreAndCompare(env, k.id, base, src, k.state);
    // Nothing more to do: a second prune deletes and writes nothing.
    const again = okJson<PruneJson>(['prune', '--max-unused', '0'], env);
    assert.equal(again.packs.deleted + again.packs.repacked + again.packs.orphans, 0, JSON.stringify(again));
  });

  test('a backup running during prune that reuses an unlisted blob completes and restores; the next prune lists its pack again', async () => {
    const base = path.join(dir, 'concurrent');
    const repo = path.join(base, 'repo');
    const env = initRepo(repo, 'pw', SMALL);
    const rng = new Rng(502);
    const old = path.join(base, 'old');
    writeFiles(old, rng, ['reused.bin'], 400 * KiB);
    ok(['backup', old, '--pack-size', '1MiB'], env);
    const [first] = snapshotIds(env);
    // The backup that will run during the prune: a large new file first (so it writes packs
    // early), and a copy of the file whose blobs are about to become unused.
    const src = path.join(base, 'src');
    writeFiles(src, rng, ['a-large.bin'], 24 << 20);
    fs.copyFileSync(path.join(old, 'reused.bin'), path.join(src, 'z-reused.bin'));
    forget(env, first!);
    const child = cliSpawn(['backup', src, '--pack-size', '1MiB', '--jobs', '0'], env);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout?.resume();
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    // Stop it once it has written a pack: it holds its lock and has loaded the index by then.
    const packsBefore = packFiles(repo).length;
    let reached = false;
    for (let i = 0; i < 3000 && child.exitCode === null; i++) {
      if (packFiles(repo).length > packsBefore || listFiles(repo).some((f) => f.includes('.tmp-writer'))) {
        reached = true;
        break;
      }
      await sleep(10);
    }
    assert.ok(reached, `the backup never started writing: ${stderr}`);
    child.kill('SIGSTOP');
    try {
      const r = okJson<PruneJson>(['prune'], env);
      assert.ok(r.packs.deleted >= 1, `the forgotten snapshot's pack is unused: ${JSON.stringify(r)}`);
      assert.equal(r.pending.length, 1, JSON.stringify(r));
      assert.match(r.pending[0]!.waitingFor.join(), /^backup \(PID \d+/, 'the prune names the backup it waits for');
    } finally {
      child.kill('SIGCONT');
    }
    const code = await within(exited, 120_000);
    assert.equal(code, 0, stderr);
    const snaps = snapshotIds(env);
    assert.equal(snaps.length, 1);
    // The next prune sees the backup gone, finds the blob it reused in an unlisted pack and
    // lists that pack again instead of deleting it.
    const second = ok(['prune', '--json'], env);
    assert.match(second.stderr, /listed again/);
    const done = JSON.parse(second.stdout) as PruneJson;
    assert.equal(done.earlierFinished, 1, 'the first prune\'s deferred deletions are done now');
    assert.deepEqual(done.pending, []);
    expectClean(env, true);
    const target = path.join(base, 'restored');
    ok(['restore', snaps[0]!, '--target', target], env);
    assertSameContent(src, restoredPath(target, src));
  });

  test('SIGKILL at 24 seeded points of a prune: check accepts the repository, a second prune finishes, every snapshot restores', () => {
    const base = path.join(dir, 'kill');
    const { repo, env, src, kept } = buildHistory(base, 503, 10, [1, 2, 4, 6, 8]);
    const pristine = path.join(base, 'pristine');
    fs.cpSync(repo, pristine, { recursive: true });
    // Count the mutations of an uninterrupted prune on a copy.
    const counted = path.join(base, 'counted');
    fs.cpSync(pristine, counted, { recursive: true });
    const log = path.join(base, 'mutations.log');
    ok(['prune', '--max-unused', '0'], { ...env, HOLDFAST_REPO: counted, HOLDFAST_TEST_MUTATIONS: log });
    const mutations = fs.readFileSync(log, 'utf8').trim().split('\n');
    assert.ok(mutations.length >= 24, `a prune of this history makes at least 24 steps: ${mutations.join(', ')}`);
    for (const kind of ['commit data/', 'put index/', 'put prune/', 'delete data/', 'delete index/', 'delete prune/']) {
      assert.ok(mutations.some((m) => m.startsWith(kind)), `the prune does ${kind}…: ${mutations.join(', ')}`);
    }
    const rng = new Rng(504);
    // 24 distinct seeded points, always including the first and the last step.
    const points = new Set<number>([1, mutations.length]);
    for (let guard = 0; points.size < 24 && guard < 10_000; guard++) points.add(1 + rng.int(mutations.length));
    assert.equal(points.size, 24);
    for (const n of [...points].sort((a, b) => a - b)) {
      fs.rmSync(repo, { recursive: true, force: true });
      fs.cpSync(pristine, repo, { recursive: true });
      const runEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HOLDFAST_')));
      const r = spawnSync(process.execPath, [CLI, 'prune', '--max-unused', '0'], { env: { ...runEnv, ...env, HOLDFAST_CONFIG: '/dev/null', HOLDFAST_TEST_CRASH_AFTER: String(n) }, encoding: 'utf8', timeout: 120_000 });
      assert.equal(r.signal, 'SIGKILL', `prune killed after mutation ${n} (${mutations[n - 1]}): exit ${String(r.status)}\n${r.stderr}`);
      const c = okJson<CheckJson>(['check'], env);
      assert.equal(c.ok, true, `after a kill at mutation ${n} (${mutations[n - 1]}): ${JSON.stringify(c.problems)}`);
      for (const w of c.warnings) assert.match(w, /not in any index|more than one pack/, `after a kill at ${n}: ${w}`);
      const second = okJson<PruneJson>(['prune', '--max-unused', '0'], env);
      assert.deepEqual(second.pending, [], `kill at ${n}: the killed prune's lock is stale, nothing else runs`);
      expectClean(env, n % 6 === 0);
      assert.deepEqual(listFiles(path.join(repo, 'prune')), []);
      if (n % 4 === 0 || n === mutations.length) for (const k of kept) restoreAndCompare(env, k.id, base, src, k.state);
    }
    for (const k of kept) restoreAndCompare(env, k.id, base, src, k.state);
  });

  test('forget --keep-last 1 --prune removes the older snapshots and frees their space in one command', () => {
    const base = path.join(dir, 'forget-prune');
    const { repo, env, src, kept } = buildHistory(base, 506, 3, []);
    const before = dirSize(repo);
    const r = okJson<{ removed: string[]; prune: PruneJson }>(['forget', '--keep-last', '1', '--prune', '--max-unused', '0'], env);
    assert.equal(r.removed.length, 2);
    assert.ok(r.prune.packs.deleted + r.prune.packs.repacked > 0, JSON.stringify(r.prune));
    assert.ok(dirSize(repo) < before - 600 * KiB, `${before} -> ${dirSize(repo)} bytes`);
    assert.deepEqual(snapshotIds(env), [kept[2]!.id]);
    expectClean(env, true);
    restoreAndCompare(env, kept[2]!.id, base, src, kept[2]!.state);
  });

  test('a damaged repository is refused before anything is deleted', () => {
    const base = path.join(dir, 'damaged');
    const { repo, env } = buildHistory(base, 505);
    // Remove the packs of trees (a few KiB each; data packs hold chunks of 64 KiB or more): what
    // the snapshots use can no longer be known.
    const treePacks = packFiles(repo).filter((p) => fs.statSync(p).size < 32 * KiB);
    assert.ok(treePacks.length > 0);
    for (const p of treePacks) fs.rmSync(p);
    const filesBefore = listFiles(repo);
    fails(['prune'], env, 14, 'INTEGRITY', 'prune stopped before deleting anything');
    const after = listFiles(repo).filter((f) => !f.startsWith('locks/'));
    assert.deepEqual(after, filesBefore.filter((f) => !f.startsWith('locks/')));
  });
});
