/**
 * Crash safety through the CLI: `holdfast backup` killed with SIGKILL at several points after it
 * has started writing packs leaves a repository that `check` accepts (unindexed packs are only
 * warnings) and no snapshot; the next backup succeeds and restores exactly. The same holds for an
 * incremental backup killed while a parent snapshot exists.
 */
import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Rng, cliSpawn, generateTree } from '../testing/helpers.js';
import { type Env, assertSameTree, initRepo, listFiles, ok, okJson, restoredPath, within, workspace } from '../testing/e2e.js';

const MiB = 1 << 20;

interface CheckJson {
  ok: boolean;
  problems: Array<{ message: string }>;
  warnings: string[];
}

/**
 * Start `holdfast backup`, wait until it has put `packs` more files into REPO/data (temporary
 * files count: the write has begun), then SIGKILL it. Bounded: fails after 90 s or if the
 * backup ends on its own before the kill point.
 */
async function killBackupMidway(repo: string, env: Env, paths: string[], packs: number, rng: Rng, signal: NodeJS.Signals = 'SIGKILL'): Promise<{ code: number | null; stderr: string }> {
  const data = path.join(repo, 'data');
  const base = listFiles(data).length;
  const child = cliSpawn(['backup', ...paths], env);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout?.resume();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let reached = false;
  for (let i = 0; i < 9000 && child.exitCode === null && child.signalCode === null; i++) {
    if (listFiles(data).length - base >= packs) {
      reached = true;
      break;
    }
    await sleep(10);
  }
  // A little seeded jitter so the kill lands at different points of a pack write.
  if (reached) await sleep(rng.int(40));
  const running = child.exitCode === null && child.signalCode === null;
  child.kill(signal);
  const end = await within(exited, 30_000);
  if (!end) child.kill('SIGKILL');
  assert.ok(end, `backup did not exit within 30 s of ${signal}`);
  assert.ok(reached, `backup never wrote ${packs} pack file(s): exit ${String(end.code)} ${String(end.signal)}\n${stderr}`);
  assert.ok(running, `backup finished (exit ${String(end.code)}) before the kill point of ${packs} packs: use a bigger tree\n${stderr}`);
  if (signal === 'SIGKILL') assert.equal(end.signal, 'SIGKILL', stderr);
  return { code: end.code, stderr };
}

function expectCheckAccepts(env: Env): CheckJson {
  const report = okJson<CheckJson>(['check'], env);
  assert.equal(report.ok, true, JSON.stringify(report.problems));
  for (const w of report.warnings) assert.match(w, /not in any index|more than one pack/, `unexpected warning: ${w}`);
  return report;
}

test('SIGKILL during backup leaves a repository that check accepts, and the next backup succeeds', { timeout: 240_000 }, async (t) => {
  const { dir, cleanup } = await workspace('holdfast-e2e-crash-');
  t.after(cleanup);
  const rng = new Rng(8086);
  const src = path.join(dir, 'src');
  // About 300 MiB: five large random files (about 19 packs of 16 MiB) and a few hundred small ones.
  await generateTree(src, { seed: 8086, smallFiles: 200, emptyFiles: 3, symlinks: false });
  const big = [64, 64, 64, 64, 40];
  for (const [i, size] of big.entries()) await fsp.writeFile(path.join(src, `large-${i}.bin`), rng.bytes(size * MiB));
  const repo = path.join(dir, 'repo');
  const env = initRepo(repo);

  // Three kill points, spread over the run: after 1-3, 5-7 and 9-11 pack files.
  let warned = 0;
  for (let i = 0; i < 3; i++) {
    const packs = 1 + rng.int(3) + 4 * i;
    await killBackupMidway(repo, env, [src], packs, rng);
    const report = expectCheckAccepts(env);
    warned += report.warnings.length;
    assert.deepEqual(okJson(['snapshots'], env), [], 'a killed backup must not leave a snapshot');
  }
  assert.ok(warned > 0, 'packs written before the kills should be reported as unindexed');

  // SIGINT: a clean stop with exit 130 and nothing committed.
  const int = await killBackupMidway(repo, env, [src], 2, rng, 'SIGINT');
  assert.equal(int.code, 130, int.stderr);
  assert.match(int.stderr, /\[INTERRUPTED\]/);
  expectCheckAccepts(env);
  assert.deepEqual(okJson(['snapshots'], env), [], 'an interrupted backup must not leave a snapshot');

  const first = okJson<{ snapshot: string; summary: { errors: number } }>(['backup', src], env);
  assert.equal(first.summary.errors, 0);
  const target = path.join(dir, 'restore-1');
  ok(['restore', 'latest', '--target', target], env);
  await assertSameTree(src, restoredPath(target, src));
  ok(['check', '--read-data'], env);

  // An incremental backup (with a parent) killed mid-way: the parent stays intact and usable.
  await fsp.writeFile(path.join(src, 'large-1.bin'), rng.bytes(64 * MiB));
  await fsp.writeFile(path.join(src, 'new-file'), rng.bytes(12345));
  await killBackupMidway(repo, env, [src], 1 + rng.int(2), rng);
  expectCheckAccepts(env);
  const list = okJson<Array<{ id: string }>>(['snapshots'], env);
  assert.deepEqual(
    list.map((s) => s.id),
    [first.snapshot],
  );
  const second = okJson<{ snapshot: string; parent: string | null; summary: { filesChanged: number; filesNew: number } }>(['backup', src], env);
  assert.equal(second.parent, first.snapshot);
  assert.equal(second.summary.filesChanged, 1);
  assert.equal(second.summary.filesNew, 1);
  const target2 = path.join(dir, 'restore-2');
  ok(['restore', 'latest', '--target', target2], env);
  await assertSameTree(src, restoredPath(target2, src));
  ok(['check', '--read-data'], env);
});

test('two backups running at once into one repository both succeed and restore exactly', { timeout: 120_000 }, async (t) => {
  const { dir, cleanup } = await workspace('holdfast-e2e-concurrent-');
  t.after(cleanup);
  const rng = new Rng(2718);
  const a = path.join(dir, 'a');
  const b = path.join(dir, 'b');
  await generateTree(a, { seed: 1, smallFiles: 60, symlinks: true });
  await generateTree(b, { seed: 2, smallFiles: 60, emptyFiles: 2 });
  const shared = rng.bytes(24 * MiB); // in both trees: both runs store it, dedup races are harmless
  for (const d of [a, b]) {
    await fsp.writeFile(path.join(d, 'shared.bin'), shared);
    await fsp.writeFile(path.join(d, 'own.bin'), rng.bytes(16 * MiB));
  }
  const repo = path.join(dir, 'repo');
  const env = initRepo(repo);
  const run = (p: string): Promise<{ code: number | null; out: string; err: string }> =>
    new Promise((resolve) => {
      const child = cliSpawn(['backup', p, '--pack-size', '2MiB', '--json'], env);
      let out = '';
      let err = '';
      child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, out, err });
      });
    });
  const results = await Promise.all([run(a), run(b)]);
  for (const r of results) assert.equal(r.code, 0, r.err);
  expectCheckAccepts(env);
  ok(['check', '--read-data'], env);
  for (const [i, r] of results.entries()) {
    const id = (JSON.parse(r.out) as { snapshot: string }).snapshot;
    const target = path.join(dir, `restore-${i}`);
    ok(['restore', id, '--target', target], env);
    const srcDir = i === 0 ? a : b;
    await assertSameTree(srcDir, restoredPath(target, srcDir));
  }
});
