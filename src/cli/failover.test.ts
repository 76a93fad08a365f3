/**
 * Failover between two storages through the CLI: an S3 primary (moto_server on loopback) and a
 * local secondary. The primary hangs (moto SIGSTOPped): a backup times out on it within the
 * storage deadline, marks it dead in the status cache shared by the host's processes, and lands
 * on the secondary; the next process trusts the cached status and does not try the primary;
 * deletions are refused while a storage is down; once the primary answers again, `storage
 * status` sees it alive, `storage sync` copies what landed on the secondary back, and the
 * primary alone then holds a repository that checks clean and restores every snapshot.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Rng, TEST_KDF } from '../testing/helpers.js';
import { type Env, fails, listFiles, ok, okJson, restoredPath, workspace } from '../testing/e2e.js';
import { MOTO_CREDENTIALS, type Moto, motoSkip, startMoto } from '../testing/moto.js';
import { statusFile } from '../state/storage-status.js';
import { readStateFile } from '../state/state-file.js';

const BUCKET = 'holdfast-failover';

function sameFiles(expected: string, actual: string): void {
  const want = listFiles(expected);
  assert.ok(want.length > 0);
  assert.deepEqual(listFiles(actual), want);
  for (const f of want) assert.ok(fs.readFileSync(path.join(expected, f)).equals(fs.readFileSync(path.join(actual, f))), `${f} differs`);
}

describe('failover between an S3 primary and a local secondary', { skip: motoSkip(), timeout: 300_000 }, () => {
  let moto: Moto;
  let ws: { dir: string; cleanup: () => Promise<void> };
  let env: Env;
  let primary: string;
  let secondary: string;
  let flags: string[];
  let only: string[];

  before(async () => {
    moto = await startMoto({ buckets: [BUCKET] });
    ws = await workspace('holdfast-failover-');
    secondary = path.join(ws.dir, 'secondary');
    primary = `s3://${BUCKET}/repo`;
    env = { ...MOTO_CREDENTIALS, AWS_EC2_METADATA_DISABLED: 'true', HOLDFAST_PASSWORD: 'pw', HOLDFAST_LOCK_DIR: path.join(ws.dir, 'locks'), HOLDFAST_STATE_DIR: path.join(ws.dir, 'state') };
    only = ['--repo', primary, '--s3-endpoint', moto.endpoint, '--s3-path-style', '--storage-timeout', '3s', '--storage-deadline', '8s'];
    flags = [...only, '--repo-secondary', secondary, '--storage-probe-timeout', '3s', '--storage-status-ttl', '1h'];
  });

  after(async () => {
    moto?.resume();
    await moto?.stop();
    await ws?.cleanup();
  });

  test('a hung primary fails over to the secondary; sync brings everything back', () => {
    const rng = new Rng(801);
    const src = path.join(ws.dir, 'src');
    const states: string[] = [];
    const write = (round: number): void => {
      fs.mkdirSync(src, { recursive: true });
      for (let i = 0; i < 3; i++) fs.writeFileSync(path.join(src, `r${round}-f${i}`), rng.bytes(200_000));
      const state = path.join(ws.dir, `state-${round}`);
      fs.cpSync(src, state, { recursive: true });
      states.push(state);
    };

    ok(['init', '--kdf-cost', TEST_KDF, ...flags], env);
    assert.ok(fs.existsSync(path.join(secondary, 'config')), 'config is on the secondary too: the repository opens from it');
    assert.ok(listFiles(path.join(secondary, 'keys')).length === 1, 'the key file is on the secondary too');
    write(1);
    const first = okJson<{ snapshot: string }>(['backup', src, ...flags], env).snapshot;
    assert.deepEqual(listFiles(path.join(secondary, 'data')), [], 'with the primary alive, data goes to the primary only');
    const status = okJson<{ storages: Array<{ location: string; now: { alive: boolean } }> }>(['storage', 'status', ...flags], env);
    assert.deepEqual(status.storages.map((s) => s.now.alive), [true, true]);

    moto.pause();
    try {
      // The primary hangs: requests time out, the deadline passes, the primary is marked dead and
      // the backup lands on the secondary.
      write(2);
      const second = ok(['backup', src, '--json', '--log-level', 'debug', ...flags], env);
      const secondId = (JSON.parse(second.stdout) as { snapshot: string }).snapshot;
      assert.match(second.stderr, /marked dead/);
      assert.ok(listFiles(path.join(secondary, 'snapshots')).includes(secondId), 'the snapshot is on the secondary');
      assert.ok(listFiles(path.join(secondary, 'data')).length > 0, 'and its packs');
      const cached = readStateFile(statusFile(path.join(ws.dir, 'state'), primary), (v: unknown): v is { alive: boolean } => typeof v === 'object' && v !== null);
      assert.equal(cached.state?.value.alive, false, 'the dead status is in the shared cache');
      // The next process trusts the cache: it does not try the primary at all.
      write(3);
      const third = ok(['backup', src, '--json', '--log-level', 'debug', ...flags], env);
      assert.doesNotMatch(third.stderr, /retrying|marked dead|not usable/, 'no attempt on the dead primary');
      // storage status reports the hung primary (exit 19, the storage failure code).
      fails(['storage', 'status', ...flags], env, 19, 'STORAGE_IO', primary);
      // Deleting needs every storage.
      fails(['prune', ...flags], env, 19, 'STORAGE_IO', 'needs every storage');
      fails(['forget', first, ...flags], env, 19, 'STORAGE_IO', 'needs every storage');
    } finally {
      moto.resume();
    }

    const back = okJson<{ storages: Array<{ now: { alive: boolean } }> }>(['storage', 'status', ...flags], env);
    assert.deepEqual(back.storages.map((s) => s.now.alive), [true, true], 'a probe revives the primary');
    const dry = okJson<{ copied: unknown[] }>(['storage', 'sync', '--dry-run', ...flags], env);
    assert.ok(dry.copied.length > 0);
    const sync = okJson<{ copied: Array<{ to: string }>; conflicts: unknown[] }>(['storage', 'sync', ...flags], env);
    assert.equal(sync.copied.length, dry.copied.length);
    assert.deepEqual(sync.conflicts, []);
    assert.ok(sync.copied.every((c) => c.to === primary));
    assert.deepEqual(okJson<{ copied: unknown[] }>(['storage', 'sync', ...flags], env).copied, [], 'nothing left to copy');

    // The primary alone now holds everything.
    const check = okJson<{ ok: boolean; problems: unknown[] }>(['check', '--read-data', ...only], env);
    assert.equal(check.ok, true, JSON.stringify(check.problems));
    const snaps = okJson<Array<{ id: string }>>(['snapshots', ...only], env).map((s) => s.id);
    assert.equal(snaps.length, 3);
    for (const [i, id] of snaps.entries()) {
      const target = path.join(ws.dir, `restore-${i}`);
      ok(['restore', id, '--target', target, ...only], env);
      sameFiles(states[i]!, restoredPath(target, src));
    }
  });
});
