/**
 * pg backup and pg restore against a real PostgreSQL 15: an online backup taken while pgbench
 * writes, restored and started, holds what was committed before it ended and passes pg_amcheck;
 * point-in-time restores to a time, an LSN and a named restore point hold the row before the
 * target and not the one after, also with the native front and --prefetch as restore_command.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI } from '../testing/helpers.js';
import { FRONT } from '../testing/front.js';
import { type PgCluster, chownToPostgres, destroyAllClusters, pgBin, pgSkip, runAsPostgres, runAsPostgresAsync, startCluster, waitUntil } from '../testing/pg.js';
import { postgresRepository } from '../testing/pg-repo.js';
import { workspace } from '../testing/e2e.js';

describe('pg backup and pg restore (real PostgreSQL 15)', { skip: pgSkip() }, () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let env: Record<string, string> = {};
  let pg: PgCluster;
  const marks: { time?: string; lsn?: string } = {};

  const hfArgs = (args: string[]): string[] => [CLI, ...args];
  const hf = (args: string[], extra: Record<string, string> = {}): { status: number; stdout: string; stderr: string } =>
    runAsPostgres(process.execPath, hfArgs(args), { ...env, ...pg.env, ...extra }, { timeoutMs: 180_000 });

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-pgbackup-'));
    const r = postgresRepository(dir, 'backup secret');
    env = r.env;
    pg = await startCluster({ conf: { wal_level: 'replica', archive_mode: 'on', archive_command: r.archiveCommand() } });
    await pg.psql(['CREATE TABLE marks (id int PRIMARY KEY, note text)', "INSERT INTO marks VALUES (1, 'before the backup')"]);
    const init2 = await pg.runTool('pgbench', ['-i', '-s', '2', '-q']);
    assert.equal(init2.status, 0, init2.stderr);
  });
  after(async () => {
    await destroyAllClusters();
    await cleanup();
  });

  /** Restore into a fresh (stopped) harness cluster's directory, start it, and wait for recovery. */
  async function restoreAndStart(args: string[], beforeStart?: (dataDir: string) => void): Promise<PgCluster> {
    const target = await startCluster();
    await target.stop();
    const r = hf(['pg', 'restore', '--target-dir', target.dataDir, '--force', ...args]);
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const auto = fs.readFileSync(path.join(target.dataDir, 'postgresql.auto.conf'), 'utf8');
    assert.match(auto, /# holdfast recovery settings begin/);
    assert.match(auto, /restore_command = '.*pg archive-get --cluster main.* %f %p'/);
    assert.ok(fs.existsSync(path.join(target.dataDir, 'recovery.signal')));
    assert.ok(fs.existsSync(path.join(target.dataDir, 'backup_label')));
    assert.equal(fs.statSync(target.dataDir).mode & 0o777, 0o700);
    target.configure({}); // its own port and socket; the restored postgresql.conf is the source's
    beforeStart?.(target.dataDir);
    await target.start();
    await waitUntil('recovery to end', async () => (await target.psql('SELECT pg_is_in_recovery()')) === 'f', { timeoutMs: 90_000 }).catch((err: Error) => {
      throw new Error(`${err.message}\n${target.logTail(60)}`);
    });
    return target;
  }

  test('a full backup taken while pgbench writes restores, holds the data committed before it ended, and passes pg_amcheck', async () => {
    const load = runAsPostgresAsync(pgBin('pgbench'), ['-T', '6', '-c', '2', '-n'], pg.env, { timeoutMs: 60_000 });
    const backup = runAsPostgres(process.execPath, hfArgs(['pg', 'backup', '--type', 'full', '--json']), { ...env, ...pg.env }, { timeoutMs: 180_000 });
    const loadResult = await load;
    assert.equal(loadResult.status, 0, loadResult.stderr);
    assert.equal(backup.status, 0, backup.stderr);
    const result = JSON.parse(backup.stdout) as { type: string; pg: { startLsn: string; stopLsn: string; startWal: string; stopWal: string; labelFile: string } };
    assert.equal(result.type, 'full');
    assert.match(result.pg.labelFile, /START WAL LOCATION/);
    const committed = await pg.psql('SELECT count(*) FROM pgbench_history');

    // After the backup: a row the PITR tests place targets around.
    await pg.psql("INSERT INTO marks VALUES (2, 'after the backup, before the target')");
    marks.lsn = await pg.psql('SELECT pg_current_wal_lsn()');
    marks.time = await pg.psql('SELECT clock_timestamp()');
    await pg.psql("SELECT pg_create_restore_point('before-three')");
    await new Promise((r) => setTimeout(r, 1100));
    await pg.psql("INSERT INTO marks VALUES (3, 'after the target')");
    const last = await pg.switchWal({ force: true });
    await waitUntil(`${last} archived`, async () => (await pg.psql('SELECT last_archived_wal FROM pg_stat_archiver')) >= last, { timeoutMs: 60_000 });

    const restored = await restoreAndStart(['--target-immediate', '--target-action', 'promote']);
    try {
      // Consistent at the end of the backup: everything committed before pg_backup_stop is there.
      assert.equal(await restored.psql("SELECT note FROM marks WHERE id = 1"), 'before the backup');
      const rows = Number(await restored.psql('SELECT count(*) FROM pgbench_history'));
      assert.ok(rows > 0 && rows <= Number(committed), `history rows ${rows}, source had ${committed} after the backup`);
      const check = await restored.runTool('pg_amcheck', ['--install-missing', '-d', 'postgres', '-h', restored.socketDir, '-p', String(restored.port)]);
      assert.equal(check.status, 0, `${check.stdout}\n${check.stderr}`);
    } finally {
      await restored.destroy();
    }
  });

  for (const [what, args] of [
    ['time', (): string[] => ['--target-time', marks.time!, '--jobs', '2']],
    ['LSN', (): string[] => ['--target-lsn', marks.lsn!]],
    ['restore point', (): string[] => ['--target-name', 'before-three']],
  ] as const) {
    test(`point-in-time restore to a ${what} holds the row before it and not the one after`, async () => {
      assert.ok(marks.time && marks.lsn, 'the backup test ran first');
      const restored = await restoreAndStart([...args(), '--target-action', 'promote']);
      try {
        assert.equal(await restored.psql('SELECT string_agg(id::text, \',\' ORDER BY id) FROM marks'), '1,2');
      } finally {
        await restored.destroy();
      }
    });
  }

  test('point-in-time restore whose restore_command is the native front with --prefetch: queued segments are handed over without Node, and the data is right', { skip: fs.existsSync(FRONT) ? false : 'dist/holdfast-push was not built' }, async () => {
    assert.ok(marks.time, 'the backup test ran first');
    const conf = path.join(dir, 'prefetch.conf');
    fs.writeFileSync(conf, '[global]\nprefetch = 2\n');
    chownToPostgres(conf);
    const state = path.join(dir, 'recovery-state');
    fs.mkdirSync(state, { mode: 0o700 });
    chownToPostgres(state);
    const restored = await restoreAndStart(['--target-time', marks.time, '--target-action', 'promote', '--holdfast-command', FRONT, '--config', conf], (dataDir) => {
      // The front says what it does (on the server's log) and keeps its queue and tickets here.
      const auto = path.join(dataDir, 'postgresql.auto.conf');
      const text = fs.readFileSync(auto, 'utf8');
      assert.match(text, new RegExp(`restore_command = '${FRONT} pg archive-get --cluster main .*--config ${conf} %f %p'`));
      fs.writeFileSync(auto, text.replace(/restore_command = '/, `restore_command = 'HOLDFAST_FRONT=trace HOLDFAST_STATE_DIR=${state} `));
    });
    try {
      assert.equal(await restored.psql('SELECT string_agg(id::text, \',\' ORDER BY id) FROM marks'), '1,2');
      const log = restored.logTail(400);
      assert.match(log, /holdfast-push: \S+ taken from the prefetch queue without Node/, `some segment came from the queue\n${log}`);
    } finally {
      await restored.destroy();
    }
  });

  test('pg restore --standby writes standby.signal (not recovery.signal) with the restore_command', () => {
    const target = pg.makeDir('standby');
    const r = hf(['pg', 'restore', '--target-dir', target, '--standby']);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(fs.existsSync(path.join(target, 'standby.signal')));
    assert.equal(fs.existsSync(path.join(target, 'recovery.signal')), false);
    assert.match(fs.readFileSync(path.join(target, 'postgresql.auto.conf'), 'utf8'), /restore_command = '.*pg archive-get/);
  });

  test('pg restore refuses a non-empty target without --force, and a target with a running server', async () => {
    const r = hf(['pg', 'restore', '--target-dir', pg.dataDir]);
    assert.equal(r.status, 32, r.stderr); // pg itself is running there
    assert.match(r.stderr, /PG_RUNNING/);
    const busy = path.join(pg.makeDir('busy'));
    fs.writeFileSync(path.join(busy, 'keep'), 'x');
    chownToPostgres(path.join(busy, 'keep'));
    const r2 = hf(['pg', 'restore', '--target-dir', busy]);
    assert.equal(r2.status, 22, r2.stderr);
    assert.ok(fs.existsSync(path.join(busy, 'keep')));
  });
});
