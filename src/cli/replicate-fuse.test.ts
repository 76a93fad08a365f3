/**
 * Replicate mode through the CLI, the second storage on a FUSE filesystem that can fail every
 * operation with EIO (src/testing/faultfs.ts): writes reach both storages; while the second one
 * fails, a backup needs --storage-quorum 1 to succeed; once it is back, a probe revives it and
 * `storage sync` fills in what it missed, so that it alone holds a complete repository.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TEST_KDF, cli } from '../testing/helpers.js';
import { type Env, listFiles, ok, okJson, workspace } from '../testing/e2e.js';
import { type FaultFs, faultfsSkip, mountFaultFs } from '../testing/faultfs.js';

describe('replicate mode with a failing storage (FUSE)', { skip: faultfsSkip(), timeout: 300_000 }, () => {
  let ff: FaultFs;
  let ws: { dir: string; cleanup: () => Promise<void> };
  before(async () => {
    ff = await mountFaultFs();
    ws = await workspace('holdfast-replicate-');
  });
  after(async () => {
    await ff?.unmount();
    await ws?.cleanup();
  });

  test('quorum while a storage fails, sync fills it in afterwards', () => {
    const a = path.join(ws.dir, 'a');
    const b = path.join(ff.mountpoint, 'b');
    const src = path.join(ws.dir, 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'one'), 'first file\n'.repeat(5000));
    const env: Env = { HOLDFAST_PASSWORD: 'pw', HOLDFAST_STATE_DIR: path.join(ws.dir, 'state'), HOLDFAST_LOCK_DIR: path.join(ws.dir, 'locks') };
    const rep = ['--repo', a, '--repo-secondary', b, '--storage-mode', 'replicate', '--storage-status-ttl', '1h'];
    ok(['init', '--kdf-cost', TEST_KDF, ...rep], env);
    ok(['backup', src, ...rep], env);
    assert.equal(listFiles(path.join(b, 'snapshots')).length, 1, 'the second storage got the snapshot');
    assert.deepEqual(listFiles(path.join(b, 'data')), listFiles(path.join(a, 'data')), 'and the same packs');

    ff.failAll('EIO');
    fs.writeFileSync(path.join(src, 'two'), 'second file\n'.repeat(5000));
    try {
      const refused = cli(['backup', src, ...rep], env);
      assert.notEqual(refused.status, 0, 'by default every storage must acknowledge');
      assert.match(refused.stderr, /1 of 2 storages acknowledged, 2 needed|storages? .*(dead|not usable)/);
      ok(['backup', src, ...rep, '--storage-quorum', '1'], env);
    } finally {
      ff.failAll(null);
    }
    assert.equal(listFiles(path.join(ff.backing, 'b', 'snapshots')).length, 1, 'the failing storage missed the second snapshot');

    ok(['storage', 'status', ...rep], { HOLDFAST_STATE_DIR: path.join(ws.dir, 'state') });
    const sync = okJson<{ copied: Array<{ to: string }>; conflicts: unknown[] }>(['storage', 'sync', ...rep], env);
    assert.ok(sync.copied.length > 0 && sync.copied.every((c) => c.to === b), JSON.stringify(sync.copied));
    assert.deepEqual(sync.conflicts, []);
    const alone = ['--repo', b];
    assert.equal(okJson<unknown[]>(['snapshots', ...alone], env).length, 2);
    const c = okJson<{ ok: boolean; problems: unknown[]; warnings: string[] }>(['check', '--read-data', ...alone], env);
    assert.equal(c.ok, true, JSON.stringify(c.problems));
  });
});
