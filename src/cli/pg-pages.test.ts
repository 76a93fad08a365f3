/**
 * Relation files in PostgreSQL backups: pages are verified against their checksums while they are
 * read (a damaged page is reported with its file and block, the backup is still stored and
 * flagged), and relation files are stored in page-aligned chunks, so an incremental backup after
 * changing one row adds a few chunks, not the table.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI, describeTree } from '../testing/helpers.js';
import { type PgCluster, destroyAllClusters, pgSkip, runAsPostgres, startCluster, waitUntil } from '../testing/pg.js';
import { type PgRepo, postgresRepository } from '../testing/pg-repo.js';
import { workspace } from '../testing/e2e.js';

interface BackupJson {
  snapshotId: string;
  type: string;
  parent?: string;
  summary: { bytes: number; bytesAdded: number; filesUnchanged: number };
  pg: { corruptPages?: Array<{ file: string; block: number; expected: number; actual: number; reason: string }> };
}

describe('relation files in PostgreSQL backups (real PostgreSQL 15)', { skip: pgSkip() }, () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let pgRepo: PgRepo;
  let env: Record<string, string> = {};

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-pgpages-'));
    pgRepo = postgresRepository(dir, 'pages secret');
    env = pgRepo.env;
  });
  after(async () => {
    await destroyAllClusters();
    await cleanup();
  });

  async function archivingCluster(cluster: string): Promise<PgCluster> {
    return startCluster({ conf: { wal_level: 'replica', archive_mode: 'on', archive_command: pgRepo.archiveCommand(['--cluster', cluster]) } });
  }

  const backup = (pg: PgCluster, cluster: string, type: string): { status: number; json: BackupJson | undefined; stderr: string } => {
    const r = runAsPostgres(process.execPath, [CLI, 'pg', 'backup', '--cluster', cluster, '--type', type, '--json'], { ...env, ...pg.env }, { timeoutMs: 180_000 });
    let json: BackupJson | undefined;
    try {
      json = JSON.parse(r.stdout) as BackupJson;
    } catch {
      json = undefined;
    }
    return { status: r.status, json, stderr: r.stderr };
  };

  test('a page damaged on disk is reported with its file and block; the backup is stored and flagged (exit 34)', async () => {
    const pg = await archivingCluster('damaged');
    await pg.psql(['CREATE TABLE victim (id int, pad text)', "INSERT INTO victim SELECT g, repeat('v', 300) FROM generate_series(1, 2000) g", 'CHECKPOINT']);
    const rel = await pg.psql("SELECT pg_relation_filepath('victim')");
    await pg.stop();
    const file = path.join(pg.dataDir, rel);
    const bytes = fs.readFileSync(file);
    const at = 8192 * 3 + 4000; // in the middle of block 3's tuples
    bytes[at] = bytes[at]! ^ 0x5a;
    fs.writeFileSync(file, bytes);
    await pg.start(); // the table is not read, so the server does not notice

    const r = backup(pg, 'damaged', 'full');
    assert.equal(r.status, 34, r.stderr);
    assert.match(r.stderr, /PAGES_CORRUPT/);
    const pages = r.json?.pg.corruptPages ?? [];
    assert.deepEqual(pages.map((p) => [p.file, p.block, p.reason]), [[rel, 3, 'checksum']]);
    // Stored and listed, with the flag.
    const list = runAsPostgres(process.execPath, [CLI, 'snapshots', '--json'], env);
    const snaps = JSON.parse(list.stdout) as Array<{ id: string; pg?: { corruptPages?: unknown[] } }>;
    assert.ok(snaps.some((s) => s.id === r.json!.snapshotId && (s.pg?.corruptPages?.length ?? 0) === 1));
    await pg.destroy();
  });

  test('delta restore over a modified data directory brings it back exactly, rewriting only what differs', async () => {
    const pg = await archivingCluster('delta');
    await pg.psql(['CREATE TABLE d (id int, pad text)', "INSERT INTO d SELECT g, repeat('d', 200) FROM generate_series(1, 20000) g", 'CHECKPOINT']);
    const b = backup(pg, 'delta', 'full');
    assert.equal(b.status, 0, b.stderr);
    const rel = await pg.psql("SELECT pg_relation_filepath('d')");
    const restore = (target: string, extra: string[]): { status: number; stdout: string; stderr: string } =>
      runAsPostgres(process.execPath, [CLI, 'pg', 'restore', '--cluster', 'delta', '--set', b.json!.snapshotId, '--target-dir', target, '--target-immediate', ...extra], env, { timeoutMs: 120_000 });
    const a = pg.makeDir('delta-a');
    const fresh = pg.makeDir('delta-b');
    assert.equal(restore(a, []).status, 0);
    assert.equal(restore(fresh, []).status, 0);
    // Damage a: change a relation file in place, delete one file, add a stray one, truncate another.
    const relFile = path.join(a, rel);
    const bytes = fs.readFileSync(relFile);
    bytes[100_000] = bytes[100_000]! ^ 0xff;
    fs.writeFileSync(relFile, bytes);
    fs.rmSync(path.join(a, 'PG_VERSION'));
    fs.writeFileSync(path.join(a, 'base', 'stray-file'), 'not in the backup');
    fs.truncateSync(path.join(a, 'postgresql.conf'), 10);
    const r = restore(a, ['--delta']);
    assert.equal(r.status, 0, r.stderr);
    const m = /\((\d+) kept, (\d+) rewritten, (\d+) removed\)/.exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.ok(Number(m[1]) > 500, `${m[1]} files kept`);
    // The three damaged files, and postgresql.auto.conf (the first restore added its recovery block).
    assert.equal(Number(m[2]), 4, `${m[2]} files rewritten`);
    assert.ok(Number(m[3]) >= 1, `${m[3]} entries removed`);
    assert.equal(fs.existsSync(path.join(a, 'base', 'stray-file')), false);
    // Identical to a fresh restore of the same backup: content, modes, owners, and times, except
    // the times of the three files every restore writes anew.
    const [want, got] = await Promise.all([describeTree(fresh), describeTree(a)]);
    for (const t of [want, got]) for (const f of ['backup_label', 'postgresql.auto.conf', 'recovery.signal']) t.get(f)!.mtimeMs = 0;
    assert.deepEqual(got, want);
    // And without --delta a non-empty directory is refused.
    assert.equal(restore(a, []).status, 22);
    await pg.destroy();
  });

  test('a tablespace is backed up and restored, remapped with --tablespace-map', async () => {
    const pg = await archivingCluster('spaces');
    const tsDir = pg.makeDir('ts-original');
    await pg.psql([`CREATE TABLESPACE ts1 LOCATION '${tsDir}'`, 'CREATE TABLE spaced (id int, pad text) TABLESPACE ts1', "INSERT INTO spaced SELECT g, repeat('s', 100) FROM generate_series(1, 5000) g"]);
    const oid = await pg.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'");
    const sum = await pg.psql('SELECT md5(string_agg(id || pad, \',\' ORDER BY id)) FROM spaced');
    const b = backup(pg, 'spaces', 'full');
    assert.equal(b.status, 0, b.stderr);

    const target = await startCluster();
    await target.stop();
    const moved = target.makeDir('ts-moved');
    const r = runAsPostgres(
      process.execPath,
      [CLI, 'pg', 'restore', '--cluster', 'spaces', '--target-dir', target.dataDir, '--force', '--tablespace-map', `${oid}=${moved}`, '--target-immediate', '--target-action', 'promote'],
      env,
      { timeoutMs: 120_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.equal(fs.readlinkSync(path.join(target.dataDir, 'pg_tblspc', oid)), moved);
    assert.match(fs.readFileSync(path.join(target.dataDir, 'tablespace_map'), 'utf8'), new RegExp(`^${oid} ${moved}$`, 'm'));
    assert.ok(fs.readdirSync(moved).some((n) => n.startsWith('PG_15_')), 'the tablespace directory was restored');
    await pg.destroy(); // the original tablespace directory goes away: the restore must not need it
    target.configure({});
    await target.start();
    await waitUntil('recovery to end', async () => (await target.psql('SELECT pg_is_in_recovery()')) === 'f', { timeoutMs: 90_000 });
    assert.equal(await target.psql('SELECT md5(string_agg(id || pad, \',\' ORDER BY id)) FROM spaced'), sum);
    assert.equal(await target.psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"), moved);
    await target.destroy();
  });

  test('a backup whose WAL never reaches the repository times out (exit 30) and is not recorded', async () => {
    const pg = await startCluster({ conf: { wal_level: 'replica', archive_mode: 'on', archive_command: 'false' } });
    const before = runAsPostgres(process.execPath, [CLI, 'snapshots', '--json'], env).stdout;
    const r = runAsPostgres(process.execPath, [CLI, 'pg', 'backup', '--cluster', 'broken', '--type', 'full', '--archive-timeout', '3'], { ...env, ...pg.env }, { timeoutMs: 120_000 });
    assert.equal(r.status, 30, r.stderr);
    assert.match(r.stderr, /ARCHIVE_TIMEOUT/);
    assert.match(r.stderr, /did not reach the repository within 3 s/);
    assert.equal(runAsPostgres(process.execPath, [CLI, 'snapshots', '--json'], env).stdout, before, 'no backup was recorded');
    await pg.destroy();
  });

  test('without --set, pg restore picks the newest backup that ends before the time target', async () => {
    const pg = await archivingCluster('choose');
    const first = backup(pg, 'choose', 'full');
    assert.equal(first.status, 0, first.stderr);
    await new Promise((r) => setTimeout(r, 1500));
    const between = await pg.psql('SELECT clock_timestamp()');
    await new Promise((r) => setTimeout(r, 1500));
    const second = backup(pg, 'choose', 'full');
    assert.equal(second.status, 0, second.stderr);
    const restore = (target: string): string => {
      const r = runAsPostgres(process.execPath, [CLI, 'pg', 'restore', '--cluster', 'choose', '--target-dir', pg.makeDir(`choose-${target}`), '--target-time', between], env, { timeoutMs: 120_000 });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout + r.stderr;
    };
    const out = restore('a');
    assert.match(out, new RegExp(`restoring backup ${first.json!.snapshotId.slice(0, 8)}`), 'the backup before the target');
    assert.doesNotMatch(out, new RegExp(`restoring backup ${second.json!.snapshotId.slice(0, 8)}`));
    await pg.destroy();
  });

  test('a server whose datestyle is not ISO is backed up all the same (times are read as ISO UTC)', async () => {
    const pg = await archivingCluster('datestyle');
    await pg.psql(["ALTER SYSTEM SET datestyle = 'SQL, DMY'", 'SELECT pg_reload_conf()']);
    assert.match(await pg.psql('SELECT now()::text'), /^\d\d\/\d\d\/\d{4} /);
    const r = backup(pg, 'datestyle', 'full');
    assert.equal(r.status, 0, r.stderr);
    const times = r.json as unknown as { pg: { startTime: string; stopTime: string } };
    for (const t of [times.pg.startTime, times.pg.stopTime]) assert.ok(Math.abs(Date.parse(t) - Date.now()) < 10 * 60_000, `backup time ${t} parses and is now`);
    await pg.destroy();
  });

  test('an incremental backup after changing one row adds a few page-aligned chunks, not the table', async () => {
    const pg = await archivingCluster('aligned');
    await pg.psql(['CREATE TABLE big (id int PRIMARY KEY, pad text)', "INSERT INTO big SELECT g, md5(g::text) || repeat('x', 400) FROM generate_series(1, 60000) g", 'CHECKPOINT']);
    const tableBytes = Number(await pg.psql("SELECT pg_relation_size('big')"));
    assert.ok(tableBytes > 20 << 20, `table is ${tableBytes} bytes`);
    // Files written within a second before a backup starts are read again by the next one (the
    // safety margin for files changed while it ran): let the setup settle first.
    await new Promise((r) => setTimeout(r, 2000));
    const full = backup(pg, 'aligned', 'full');
    assert.equal(full.status, 0, full.stderr);
    await pg.psql(["UPDATE big SET pad = 'changed' WHERE id = 30000", 'CHECKPOINT']);
    const incr = backup(pg, 'aligned', 'incr');
    assert.equal(incr.status, 0, incr.stderr);
    assert.equal(incr.json!.type, 'incr');
    assert.equal(incr.json!.parent, full.json!.snapshotId);
    assert.ok(incr.json!.summary.bytesAdded < 4 << 20, `incremental added ${incr.json!.summary.bytesAdded} bytes for a one-row change in a ${tableBytes}-byte table`);
    assert.ok(incr.json!.summary.filesUnchanged > 500, `${incr.json!.summary.filesUnchanged} files unchanged`);
    await pg.destroy();
  });
});
