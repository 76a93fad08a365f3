/**
 * The storage status cache across processes (docs/design.md §19), with a repository of two local
 * storages: no cache file at first; ten archive-push processes in parallel create it without a
 * warning; later processes use it and do not probe until its lifetime has passed; a corrupt cache
 * file is reported once at debug level and replaced; `storage status` shows both storages.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI, TEST_KDF } from '../testing/helpers.js';
import { type Env, listFiles, ok, okJson, within, workspace } from '../testing/e2e.js';
import { statusFile } from '../state/storage-status.js';

function run(args: string[], env: Env): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HOLDFAST_')));
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...base, HOLDFAST_CONFIG: '/dev/null', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stderr }));
  });
}

describe('storage status cache shared by processes', { timeout: 300_000 }, () => {
  let ws: { dir: string; cleanup: () => Promise<void> };
  let env: Env;
  let primary: string;
  let secondary: string;
  let state: string;
  let flags: string[];

  before(async () => {
    ws = await workspace('holdfast-status-');
    primary = path.join(ws.dir, 'primary');
    secondary = path.join(ws.dir, 'secondary');
    state = path.join(ws.dir, 'state');
    env = { HOLDFAST_PASSWORD: 'pw', HOLDFAST_STATE_DIR: state, HOLDFAST_LOCK_DIR: path.join(ws.dir, 'locks') };
    flags = ['--repo', primary, '--repo-secondary', secondary, '--storage-status-ttl', '1h'];
    ok(['init', '--kdf-cost', TEST_KDF, ...flags], env);
    // init probed both storages: start the test from no cache at all.
    fs.rmSync(path.join(state, 'storage-status'), { recursive: true, force: true });
  });
  after(() => ws?.cleanup());

  test('ten parallel archive-push processes create the cache silently; later ones use it; a corrupt file is replaced', async () => {
    const wal = path.join(ws.dir, 'pg_wal');
    fs.mkdirSync(wal);
    const files = Array.from({ length: 11 }, (_, i) => {
      const tli = i + 2;
      const name = `${tli.toString(16).toUpperCase().padStart(8, '0')}.history`;
      fs.writeFileSync(path.join(wal, name), `${tli - 1}\t0/${(0x3000000 + i).toString(16).toUpperCase()}\tno recovery target specified\n`);
      return path.join(wal, name);
    });
    const results = await within(Promise.all(files.slice(0, 10).map((f) => run(['pg', 'archive-push', f, ...flags], env))), 120_000);
    assert.ok(results, 'the ten archive-push calls ended');
    for (const r of results) {
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /warning|error/i, 'no warning about a missing cache');
    }
    const files1 = [statusFile(state, primary), statusFile(state, secondary)];
    for (const f of files1) assert.ok(fs.existsSync(f), `${f} exists`);
    const written = files1.map((f) => fs.readFileSync(f, 'utf8'));
    // A later process within the lifetime uses the cache: it does not probe (a probe rewrites the file).
    const later = await run(['pg', 'archive-push', files[10]!, '--log-level', 'debug', ...flags], env);
    assert.equal(later.code, 0, later.stderr);
    assert.deepEqual(files1.map((f) => fs.readFileSync(f, 'utf8')), written, 'no probe, the cache is unchanged');
    assert.deepEqual(listFiles(path.join(primary, 'probes')), [], 'probe objects are deleted');
    // The history files went to the primary (failover: the first alive storage).
    assert.equal(listFiles(path.join(primary, 'wal')).length, 11);
    // A corrupt cache file: reported once at debug level, replaced by a probe.
    fs.writeFileSync(files1[0]!, 'not a state file');
    fs.rmSync(`${files1[0]!}.prev`, { force: true });
    const fixed = await run(['pg', 'archive-push', files[10]!, '--log-level', 'debug', ...flags], env);
    assert.equal(fixed.code, 0, fixed.stderr);
    assert.equal(fixed.stderr.match(/storage status cache .* it will be replaced/g)?.length, 1, fixed.stderr);
    assert.match(fs.readFileSync(files1[0]!, 'utf8'), /^holdfast-state 2 \d+ [0-9a-f]{64}\n/);
    const status = okJson<{ mode: string; storages: Array<{ location: string; role: string; now: { alive: boolean } }> }>(['storage', 'status', ...flags], { HOLDFAST_STATE_DIR: state });
    assert.equal(status.mode, 'failover');
    assert.deepEqual(status.storages.map((s) => [s.role, s.now.alive]), [['primary', true], ['secondary', true]]);
  });
});
