/**
 * pg archive-push / archive-get against a real PostgreSQL 15, run the way production runs them:
 * archive_command invokes holdfast as the postgres user; every segment archive-push accepted is in
 * the repository and comes back byte for byte; bad input is refused with its own exit code and
 * leaves nothing stored.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI } from '../testing/helpers.js';
import { type PgCluster, chownToPostgres, destroyAllClusters, pgSkip, runAsPostgres, startCluster, waitUntil } from '../testing/pg.js';
import { postgresRepository } from '../testing/pg-repo.js';
import { listFiles, workspace } from '../testing/e2e.js';

describe('pg archive-push and archive-get (real PostgreSQL 15)', { skip: pgSkip() }, () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let repo = '';
  let env: Record<string, string> = {};
  let pg: PgCluster;
  let other: PgCluster | undefined;

  /** Run holdfast as postgres, as archive_command and restore_command do. */
  const hf = (args: string[], extra: Record<string, string> = {}): { status: number; stdout: string; stderr: string } =>
    runAsPostgres(process.execPath, [CLI, ...args], { ...env, ...extra }, { cwd: pg.dataDir });

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-pgarch-'));
    const r = postgresRepository(dir, 'archive secret');
    ({ repo, env } = r);
    pg = await startCluster({ conf: { wal_level: 'replica', archive_mode: 'on', archive_command: r.archiveCommand(['--cluster', 'main']) } });
  });
  after(async () => {
    await destroyAllClusters();
    await cleanup();
  });

  test('archive_command archives switched segments; archive-get returns them byte for byte', async () => {
    await pg.psql(['CREATE TABLE t (i int, pad text)', "INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g"]);
    const first = await pg.switchWal({ force: true });
    await pg.psql("INSERT INTO t SELECT g, repeat('y', 200) FROM generate_series(1, 20000) g");
    const second = await pg.switchWal({ force: true });
    await waitUntil(`${second} archived`, async () => (await pg.psql('SELECT last_archived_wal FROM pg_stat_archiver')) >= second, { timeoutMs: 60_000 });
    assert.equal(await pg.psql('SELECT failed_count FROM pg_stat_archiver'), '0', pg.logTail());
    const sysid = await pg.systemIdentifier();
    const out = pg.makeDir('restored');
    for (const seg of [first, second]) {
      const dest = path.join(out, seg); // pg_waldump wants the segment's own name
      const r = hf(['pg', 'archive-get', '--cluster', 'main', seg, dest]);
      assert.equal(r.status, 0, r.stderr);
      const data = fs.readFileSync(dest);
      assert.equal(data.length, 16 << 20);
      // The fetched segment is that cluster's WAL for that position (pg_waldump reads it).
      assert.equal(data.readBigUInt64LE(24).toString(), sysid, 'system identifier in the long page header');
      const dump = await pg.runTool('pg_waldump', ['-n', '5', dest]);
      assert.equal(dump.status, 0, dump.stderr);
      assert.match(dump.stdout, /rmgr:/);
      fs.rmSync(dest);
    }
    // Stored encrypted: the repository does not contain the segment's plaintext.
    const stored = listFiles(repo).filter((f) => f.startsWith('wal/main/'));
    assert.ok(stored.includes(`wal/main/${first}`) && stored.includes(`wal/main/${second}`), stored.join(', '));
  });

  test('archive-get of a file the archive does not have exits 1 without a message', () => {
    const dest = path.join(pg.dataDir, 'pg_wal', 'RECOVERYXLOG');
    const r = hf(['pg', 'archive-get', '00000001000000FF000000FE', dest]);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, '');
    assert.equal(fs.existsSync(dest), false);
    const h = hf(['pg', 'archive-get', '00000009.history', dest]);
    assert.equal(h.status, 1);
  });

  test('a file that is not WAL is refused (exit 27) and nothing is stored', () => {
    const bogus = path.join(pg.dataDir, 'pg_wal', '0000000100000000000000F0');
    fs.writeFileSync(bogus, Buffer.alloc(16 << 20, 7));
    chownToPostgres(bogus);
    const r = hf(['pg', 'archive-push', bogus]);
    assert.equal(r.status, 27, r.stderr);
    assert.match(r.stderr, /WAL_INVALID/);
    assert.match(r.stderr, /hint:/);
    const badName = path.join(pg.dataDir, 'pg_wal', 'not-a-wal-name');
    fs.writeFileSync(badName, 'x');
    chownToPostgres(badName);
    assert.equal(hf(['pg', 'archive-push', badName]).status, 27);
    assert.ok(!listFiles(repo).some((f) => f.endsWith('0000000100000000000000F0') || f.endsWith('not-a-wal-name')));
    fs.rmSync(bogus);
    fs.rmSync(badName);
  });

  test('WAL of another cluster is refused (exit 28) and nothing is stored', async () => {
    other = await startCluster();
    const seg = await other.switchWal({ force: true });
    const src = path.join(other.dataDir, 'pg_wal', seg);
    const copy = path.join(dir, seg);
    fs.copyFileSync(src, copy);
    chownToPostgres(copy);
    const before = listFiles(repo).length;
    const r = hf(['pg', 'archive-push', '--cluster', 'main', copy]);
    assert.equal(r.status, 28, r.stderr);
    assert.match(r.stderr, /CLUSTER_MISMATCH/);
    assert.match(r.stderr, new RegExp(await other.systemIdentifier()));
    assert.equal(listFiles(repo).length, before, 'nothing was stored');
    // The same file archives fine under its own cluster name.
    const ok = hf(['pg', 'archive-push', '--cluster', 'other', copy]);
    assert.equal(ok.status, 0, ok.stderr);
  });

  test('pushing the same name again: identical content succeeds with a warning, different content fails (exit 29) and the stored copy stays', async () => {
    const seg = await pg.switchWal({ force: true });
    await waitUntil(`${seg} archived`, async () => (await pg.psql('SELECT last_archived_wal FROM pg_stat_archiver')) >= seg, { timeoutMs: 60_000 });
    const out = pg.makeDir('dup');
    const original = path.join(out, `orig-${seg}`);
    const got = hf(['pg', 'archive-get', seg, original]);
    assert.equal(got.status, 0, got.stderr);
    const copy = path.join(dir, seg);
    fs.copyFileSync(original, copy);
    chownToPostgres(copy);
    const again = hf(['pg', 'archive-push', copy]);
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stderr, /already archived with identical content/);

    const changed = fs.readFileSync(copy);
    const at = changed.length - 100; // past the header: still a valid-looking segment
    changed[at] = changed[at]! ^ 0xff;
    fs.writeFileSync(copy, changed);
    const conflict = hf(['pg', 'archive-push', copy]);
    assert.equal(conflict.status, 29, conflict.stderr);
    assert.match(conflict.stderr, /WAL_CONFLICT/);
    const back = path.join(out, `back-${seg}`);
    assert.equal(hf(['pg', 'archive-get', seg, back]).status, 0);
    assert.ok(fs.readFileSync(back).equals(fs.readFileSync(original)), 'the stored copy is untouched');
  });

  test('a timeline history file round-trips; a malformed one is refused', () => {
    const hist = path.join(dir, '00000002.history');
    fs.writeFileSync(hist, '1\t0/3000000\tno recovery target specified\n');
    chownToPostgres(hist);
    assert.equal(hf(['pg', 'archive-push', hist]).status, 0);
    const back = path.join(pg.makeDir('hist'), 'hist-back');
    assert.equal(hf(['pg', 'archive-get', '00000002.history', back]).status, 0);
    assert.equal(fs.readFileSync(back, 'utf8'), fs.readFileSync(hist, 'utf8'));
    const bad = path.join(dir, '00000003.history');
    fs.writeFileSync(bad, 'garbage line\n');
    chownToPostgres(bad);
    assert.equal(hf(['pg', 'archive-push', bad]).status, 27);
  });

  test('wrong password: archive-push fails with exit 12 and PostgreSQL keeps the segment for a retry', () => {
    const wrong = path.join(dir, 'wrong-password');
    fs.writeFileSync(wrong, 'not it\n');
    chownToPostgres(wrong);
    const seg = fs.readdirSync(path.join(pg.dataDir, 'pg_wal')).find((f) => /^[0-9A-F]{24}$/.test(f))!;
    const r = hf(['pg', 'archive-push', path.join(pg.dataDir, 'pg_wal', seg)], { HOLDFAST_PASSWORD_FILE: wrong });
    assert.equal(r.status, 12, r.stderr);
  });
});
