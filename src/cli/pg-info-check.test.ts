/**
 * pg check, pg info and incremental pg backup against a real PostgreSQL 15, with holdfast run as
 * the postgres user (as archive_command runs it):
 * - pg check passes on a correctly configured server, proving archiving end to end, and fails
 *   naming the item with archive_mode off, with an archive_command that does not call holdfast,
 *   and for a server whose system identifier differs from the cluster record;
 * - pg info lists backups and the archived WAL, and shows a gap when an archived segment is gone;
 * - an incremental backup after changing one table does not re-read unchanged files, and restored
 *   (to the end of the backup) holds exactly the table as it was.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI } from '../testing/helpers.js';
import { type PgCluster, destroyAllClusters, pgSkip, runAsPostgres, startCluster, waitUntil } from '../testing/pg.js';
import { type PgRepo, postgresRepository } from '../testing/pg-repo.js';
import { workspace } from '../testing/e2e.js';
import type { PgCheckResult } from '../ops/pg-check.js';
import type { PgInfoResult } from '../ops/pg-info.js';
import type { PgBackupResult } from '../ops/pg-backup.js';

type Run = { status: number; stdout: string; stderr: string };

const ITEMS = ['repository', 'connection', 'wal_level', 'archive_mode', 'archive_command', 'system identifier', 'archiving'];

describe('pg check, pg info and incremental backups (real PostgreSQL 15)', { skip: pgSkip() }, () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let repo = '';
  let env: Record<string, string> = {};
  let pg: PgCluster;
  let full: PgBackupResult | undefined;
  let incr: PgBackupResult | undefined;

  /** holdfast as postgres, reaching `server` through the libpq environment. */
  const hf = (args: string[], server: PgCluster = pg, extra: Record<string, string> = {}): Run =>
    runAsPostgres(process.execPath, [CLI, ...args], { ...env, ...server.env, ...extra }, { timeoutMs: 180_000 });
  const show = (args: string[], r: Run): string => `holdfast ${args.join(' ')} → exit ${r.status}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
  const okRun = (args: string[], server: PgCluster = pg): Run => {
    const r = hf(args, server);
    assert.equal(r.status, 0, show(args, r));
    return r;
  };
  const json = <T>(args: string[], r: Run): T => {
    try {
      return JSON.parse(r.stdout) as T;
    } catch (err) {
      assert.fail(`stdout is not JSON (${(err as Error).message})\n${show(args, r)}`);
    }
  };
  let pgRepo: PgRepo;
  const archiveCommand = (cluster?: string): string => pgRepo.archiveCommand(cluster ? ['--cluster', cluster] : []);
  const walFiles = (cluster: string): string[] => {
    const d = path.join(repo, 'wal', cluster);
    return fs.existsSync(d) ? fs.readdirSync(d).filter((f) => /^[0-9A-F]{24}$/.test(f)).sort() : [];
  };
  const tableMd5 = (c: PgCluster): Promise<string> => c.psql("SELECT count(*) || ':' || md5(string_agg(id || '=' || v, ',' ORDER BY id)) FROM t");

  /** pg check that must fail on exactly `items`; returns the parsed report. */
  function checkFails(args: string[], server: PgCluster, items: string[]): PgCheckResult {
    const argv = ['pg', 'check', ...args, '--json'];
    const r = hf(argv, server);
    assert.equal(r.status, 33, show(argv, r));
    assert.match(r.stderr, /\[PG_CHECK_FAILED\]/, show(argv, r));
    assert.match(r.stderr, /^hint: \S/m, show(argv, r));
    for (const i of items) assert.ok(r.stderr.includes(i), `stderr names ${i}\n${show(argv, r)}`);
    const report = json<PgCheckResult>(argv, r);
    assert.equal(report.ok, false);
    assert.deepEqual(report.items.map((i) => i.name), ITEMS);
    assert.deepEqual(report.items.filter((i) => i.status === 'fail').map((i) => i.name), items, show(argv, r));
    return report;
  }

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-pginfo-'));
    pgRepo = postgresRepository(dir, 'info secret');
    ({ repo, env } = pgRepo);
    pg = await startCluster({ conf: { wal_level: 'replica', archive_mode: 'on', archive_command: archiveCommand() } });
    await pg.psql(['CREATE TABLE t (id int PRIMARY KEY, v text)', "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g"]);
  });
  after(async () => {
    await destroyAllClusters();
    await cleanup();
  });

  test('pg check passes on a correctly configured cluster: every item ok, the switched segment is in the repository', () => {
    const args = ['pg', 'check', '--json'];
    const r = okRun(args);
    const report = json<PgCheckResult>(args, r);
    assert.equal(report.ok, true);
    assert.equal(report.cluster, 'main');
    assert.deepEqual(report.items.map((i) => `${i.name}:${i.status}`), ITEMS.map((i) => `${i}:ok`), show(args, r));
    // First use of "main": not bound yet, and the switched segment's push binds it.
    assert.match(report.items.find((i) => i.name === 'system identifier')!.message, /not bound yet/);
    assert.match(report.segment ?? '', /^[0-9A-F]{24}$/);
    assert.ok(walFiles('main').includes(report.segment!), `${report.segment} in ${walFiles('main').join(', ')}`);
    assert.ok(fs.existsSync(path.join(repo, 'clusters', 'main')), 'the cluster record exists now');

    // Again, in text: now bound and matching; a new segment each time (a forced switch).
    const text = okRun(['pg', 'check']);
    assert.match(text.stdout, /^\s+ok\s+system identifier\s+\d+ matches the cluster record/m, text.stdout);
    assert.match(text.stdout, /^\s+ok\s+archiving\s+[0-9A-F]{24} reached wal\/main\//m, text.stdout);
    assert.match(text.stdout, /all checks passed/);
    const second = /([0-9A-F]{24}) reached/.exec(text.stdout)![1]!;
    assert.ok(second > report.segment!, `${second} after ${report.segment}`);
  });

  test('pg info lists a full backup and the archived WAL', async () => {
    // Flush what the setup wrote, so the incremental test measures only its own change.
    await pg.psql('CHECKPOINT');
    await new Promise((r) => setTimeout(r, 1200));
    const args = ['pg', 'backup', '--type', 'full', '--json'];
    full = json<PgBackupResult>(args, okRun(args));
    assert.equal(full.type, 'full');

    const infoArgs = ['pg', 'info', '--json'];
    const info = json<PgInfoResult>(infoArgs, okRun(infoArgs));
    assert.equal(info.cluster, 'main');
    assert.equal(info.record?.systemId, await pg.systemIdentifier());
    assert.equal(info.record?.pgVersion, 15);
    assert.equal(info.record?.segSize, 16 << 20);
    assert.equal(info.backups.length, 1);
    const b = info.backups[0]!;
    assert.equal(b.id, full.snapshotId);
    assert.equal(b.type, 'full');
    assert.equal(b.parent, undefined);
    for (const k of ['startLsn', 'stopLsn', 'startWal', 'stopWal', 'startTime', 'stopTime', 'timeline'] as const) assert.equal(b[k], full.pg[k], k);
    assert.equal(b.size, full.summary.bytes);
    assert.equal(b.stored, full.summary.bytesAdded);
    assert.equal(b.durationMs, Date.parse(full.pg.stopTime) - Date.parse(full.pg.startTime));
    assert.ok(b.flags.includes('dataChecksums'), b.flags.join(','));
    assert.equal(b.walComplete, true);

    const segs = walFiles('main');
    assert.equal(info.wal.timelines.length, 1);
    const tl = info.wal.timelines[0]!;
    assert.equal(tl.timeline, 1);
    assert.equal(tl.first, segs[0]);
    assert.equal(tl.last, segs.at(-1));
    assert.equal(tl.segments, segs.length);
    assert.deepEqual(tl.gaps, []);
    assert.ok(tl.first! <= full.pg.startWal && tl.last! >= full.pg.stopWal, `${tl.first}..${tl.last} covers the backup's ${full.pg.startWal}..${full.pg.stopWal}`);
    // pg_backup_stop writes a backup history file named after the start segment and offset.
    assert.equal(tl.backupHistory.length, 1, tl.backupHistory.join(','));
    assert.match(tl.backupHistory[0]!, new RegExp(`^${full.pg.startWal}\\.[0-9A-F]{8}\\.backup$`));
    assert.deepEqual(info.wal.other, []);

    const text = okRun(['pg', 'info']);
    assert.match(text.stdout, new RegExp(`^cluster "main": system identifier ${info.record!.systemId}, PostgreSQL 15`, 'm'));
    assert.match(text.stdout, new RegExp(`^backup ${full.snapshotId.slice(0, 8)}  full `, 'm'));
    assert.match(text.stdout, new RegExp(`WAL ${full.pg.startWal} \\.\\. ${full.pg.stopWal} \\(archived\\)`));
    assert.match(text.stdout, /flags: dataChecksums/);
    assert.match(text.stdout, new RegExp(`timeline 1: ${tl.first} \\.\\. ${tl.last}, ${segs.length} segments?, no gaps`));
  });

  /** Restore into a fresh (stopped) harness cluster's directory, start it, and wait for recovery. */
  async function restoreAndStart(args: string[]): Promise<PgCluster> {
    const target = await startCluster();
    await target.stop();
    const r = hf(['pg', 'restore', '--target-dir', target.dataDir, '--force', ...args]);
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    target.configure({}); // its own port and socket; the restored postgresql.conf is the source's
    await target.start();
    await waitUntil('recovery to end', async () => (await target.psql('SELECT pg_is_in_recovery()')) === 'f', { timeoutMs: 90_000 }).catch((err: Error) => {
      throw new Error(`${err.message}\n${target.logTail(60)}`);
    });
    return target;
  }

  test('incremental backup after changes: unchanged files are not read again, and a restore from it holds the changed table exactly', async () => {
    assert.ok(full, 'the full backup test ran first');
    const before = await tableMd5(pg);
    await pg.psql(["UPDATE t SET v = v || '-changed' WHERE id % 7 = 0", "INSERT INTO t SELECT g, 'new ' || g FROM generate_series(20001, 23000) g", 'DELETE FROM t WHERE id % 11 = 0']);
    const changed = await tableMd5(pg);
    assert.notEqual(changed, before);

    const args = ['pg', 'backup', '--type', 'incr', '--json'];
    incr = json<PgBackupResult>(args, okRun(args));
    assert.equal(incr.type, 'incr');
    assert.equal(incr.parent, full!.snapshotId);
    const s = incr.summary;
    const read = s.filesNew + s.filesChanged;
    assert.equal(s.filesNew + s.filesChanged + s.filesUnchanged, s.files, JSON.stringify(s));
    assert.ok(s.files > 500, `a data directory has many files: ${s.files}`);
    assert.ok(s.filesUnchanged >= s.files * 0.9, `most files unchanged and not read again: ${JSON.stringify(s)}`);
    assert.ok(read > 0 && read <= s.files * 0.1, `only the changed files are read: ${JSON.stringify(s)}`);
    assert.equal(await tableMd5(pg), changed, 'nothing wrote to t during the backup');

    const info = json<PgInfoResult>(['pg', 'info', '--json'], okRun(['pg', 'info', '--json']));
    assert.deepEqual(info.backups.map((b) => `${b.type}:${b.id}:${b.parent ?? '-'}`), [`full:${full!.snapshotId}:-`, `incr:${incr.snapshotId}:${full!.snapshotId}`]);

    // Restore the incremental one to the end of the backup: the table as it was then, exactly.
    const restored = await restoreAndStart(['--set', incr.snapshotId.slice(0, 12), '--target-immediate', '--target-action', 'promote']);
    try {
      assert.equal(await tableMd5(restored), changed);
    } finally {
      await restored.destroy();
    }
  });

  test('pg info shows a gap, and a backup whose WAL is incomplete, when an archived segment is deleted', async () => {
    assert.ok(incr, 'the incremental backup test ran first');
    // A few more segments, so that the incremental backup's last segment lies between first and last.
    let last = '';
    for (let i = 0; i < 2; i++) {
      await pg.psql(`INSERT INTO t SELECT g, 'more' FROM generate_series(${30000 + i * 1000}, ${30999 + i * 1000}) g`);
      last = await pg.switchWal({ force: true });
    }
    await waitUntil(`${last} archived`, () => walFiles('main').includes(last), { timeoutMs: 60_000 });
    const gone = incr!.pg.stopWal;
    const segs = walFiles('main');
    assert.ok(segs[0]! < gone && gone < segs.at(-1)!, `${gone} lies inside ${segs[0]}..${segs.at(-1)}`);
    fs.rmSync(path.join(repo, 'wal', 'main', gone));

    const args = ['pg', 'info', '--json'];
    const info = json<PgInfoResult>(args, okRun(args));
    const tl = info.wal.timelines[0]!;
    assert.equal(tl.first, segs[0]);
    assert.equal(tl.last, segs.at(-1));
    assert.equal(tl.segments, segs.length - 1);
    assert.deepEqual(tl.gaps, [{ from: gone, to: gone, range: `${gone}..${gone}`, segments: 1 }]);
    assert.equal(tl.missing, 1);
    const [b1, b2] = info.backups;
    assert.equal(b1?.walComplete, true, 'the full backup still has its WAL');
    assert.equal(b2?.walComplete, false);
    assert.deepEqual(b2?.walMissing, [gone]);

    const text = okRun(['pg', 'info']);
    assert.match(text.stdout, new RegExp(`timeline 1: ${segs[0]} \\.\\. ${segs.at(-1)}, ${segs.length - 1} segments, 1 missing in 1 gap`));
    assert.match(text.stdout, new RegExp(`^    gap ${gone}\\.\\.${gone} \\(1 segment\\)$`, 'm'));
    assert.match(text.stdout, new RegExp(`\\(MISSING ${gone}\\)`));

    // check names both: the incremental backup cannot be restored, the full one's recovery stops there.
    const cargs = ['check', '--json'];
    const c = hf(cargs);
    assert.equal(c.status, 23, show(cargs, c));
    const report = json<{ problems: Array<{ kind: string; object: string; snapshots: string[] }> }>(cargs, c);
    assert.deepEqual(
      report.problems.map((p) => [p.kind, p.object, [...p.snapshots].sort()]),
      [
        ['wal-missing', `wal/main/${gone}`, [b2!.id]],
        ['wal-gap', `wal/main/${gone}`, [b1!.id, b2!.id].sort()],
      ],
    );
  });

  test('the newest archived segment deleted: nothing in the repository refers to it, pg check notices it', async () => {
    await pg.psql(`INSERT INTO t SELECT g, 'newest' FROM generate_series(50000, 50999) g`);
    const newest = await pg.switchWal({ force: true });
    await waitUntil(`${newest} archived`, () => walFiles('main').includes(newest), { timeoutMs: 60_000 });
    await waitUntil('the archiver reports it', async () => (await pg.psql('SELECT last_archived_wal FROM pg_stat_archiver')).trim() === newest, { timeoutMs: 30_000 });
    fs.rmSync(path.join(repo, 'wal', 'main', newest));
    const report = checkFails([], pg, ['archiving']);
    const item = report.items.find((i) => i.name === 'archiving')!;
    assert.match(item.message, new RegExp(`${newest}, which PostgreSQL reports archived before it, is not in the repository`));
    // Now that later WAL is archived, the offline check sees the hole too.
    const c = hf(['check', '--json']);
    const problems = json<{ problems: Array<{ kind: string; object: string }> }>(['check'], c).problems;
    assert.ok(problems.some((p) => p.kind === 'wal-gap' && p.object === `wal/main/${newest}`), JSON.stringify(problems));
  });

  describe('misconfigured servers', () => {
    let bad: PgCluster;
    before(async () => {
      bad = await startCluster({ conf: { wal_level: 'replica', archive_mode: 'off', archive_command: archiveCommand('bad') } });
    });

    test('archive_mode off: the archive_mode item fails, archiving is not attempted', () => {
      const report = checkFails(['--cluster', 'bad'], bad, ['archive_mode']);
      assert.match(report.items.find((i) => i.name === 'archive_mode')!.message, /archive_mode is off/);
      // SHOW says "(disabled)" then; pg check reads the configured command instead.
      assert.equal(report.items.find((i) => i.name === 'archive_command')!.status, 'ok');
      assert.equal(report.items.find((i) => i.name === 'archiving')!.status, 'skip');
      assert.equal(fs.existsSync(path.join(repo, 'clusters', 'bad')), false);
    });

    test('an archive_command that does not call holdfast fails the archive_command item', async () => {
      bad.configure({ archive_mode: 'on', archive_command: 'true' });
      await bad.restart();
      const report = checkFails(['--cluster', 'bad'], bad, ['archive_command']);
      assert.match(report.items.find((i) => i.name === 'archive_command')!.message, /does not call `holdfast pg archive-push`/);
      assert.equal(report.items.find((i) => i.name === 'archiving')!.status, 'skip');
      // Text form: one line per item, the failed one marked FAIL.
      const text = hf(['pg', 'check', '--cluster', 'bad'], bad);
      assert.equal(text.status, 33, text.stderr);
      assert.match(text.stdout, /^\s+FAIL\s+archive_command\s+archive_command 'true' does not call/m, text.stdout);
      assert.match(text.stdout, /^\s+skip\s+archiving\s+/m);
    });

    test('a server whose system identifier differs from the cluster record fails the system identifier item', async () => {
      // Archiving set up right for cluster "bad": the check passes and binds "bad" to this server.
      bad.configure({ archive_command: archiveCommand('bad') });
      await bad.psql('SELECT pg_reload_conf()');
      await waitUntil('archive_command reloaded', async () => (await bad.psql('SHOW archive_command')).includes('archive-push'), { timeoutMs: 10_000 });
      const args = ['pg', 'check', '--cluster', 'bad', '--json'];
      const ok = json<PgCheckResult>(args, okRun(args, bad));
      assert.ok(ok.ok);
      assert.ok(walFiles('bad').includes(ok.segment!));

      // The main server is another cluster: its system identifier is not the one "bad" is bound to.
      const report = checkFails(['--cluster', 'bad'], pg, ['system identifier']);
      const item = report.items.find((i) => i.name === 'system identifier')!;
      assert.ok(item.message.includes(await bad.systemIdentifier()) && item.message.includes(await pg.systemIdentifier()), item.message);
      // pg's archive_command names no --cluster, so it archives into "main", not "bad": a warning.
      assert.equal(report.items.find((i) => i.name === 'archive_command')!.status, 'warn');
      assert.equal(report.items.find((i) => i.name === 'archiving')!.status, 'skip');

      // And "main" checked against the other server fails the same way.
      checkFails(['--cluster', 'main'], bad, ['system identifier']);
    });
  });
});
