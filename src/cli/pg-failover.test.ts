/**
 * Failover with real PostgreSQL 15: the repository's primary storage is S3 (moto_server on
 * loopback), its secondary a local directory. While pgbench and marked rows are written the
 * primary hangs (moto SIGSTOPped; killing it would lose moto's in-memory data): archive-push keeps
 * succeeding, on the secondary. Once the primary answers again, a
 * point-in-time restore (restore_command carrying the storage options) finds every segment across
 * both storages and holds exactly the rows committed before the target; `storage sync` copies what
 * landed on the secondary back, and the primary alone then passes `check --read-data`.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI, TEST_KDF } from '../testing/helpers.js';
import { listFiles, workspace } from '../testing/e2e.js';
import { type PgCluster, chownToPostgres, destroyAllClusters, pgBin, pgSkip, runAsPostgres, runAsPostgresAsync, startCluster, waitUntil } from '../testing/pg.js';
import { MOTO_CREDENTIALS, type Moto, motoSkip, startMoto } from '../testing/moto.js';

const BUCKET = 'holdfast-pg-failover';

describe('WAL archiving fails over to a secondary storage (real PostgreSQL 15, S3 primary)', { skip: pgSkip() || motoSkip(), timeout: 600_000 }, () => {
  let moto: Moto;
  let ws: { dir: string; cleanup: () => Promise<void> };
  let env: Record<string, string>;
  let serverEnv: Record<string, string>;
  let secondary: string;
  let pg: PgCluster;

  const hf = (args: string[], extra: Record<string, string> = {}): { status: number; stdout: string; stderr: string } =>
    runAsPostgres(process.execPath, [CLI, ...args], { ...env, ...(pg?.env ?? {}), ...extra }, { timeoutMs: 180_000 });

  before(async () => {
    moto = await startMoto({ buckets: [BUCKET] });
    ws = await workspace('holdfast-pg-failover-');
    fs.chmodSync(ws.dir, 0o755);
    secondary = path.join(ws.dir, 'secondary');
    const state = path.join(ws.dir, 'state');
    const locks = path.join(ws.dir, 'locks');
    const pwFile = path.join(ws.dir, 'password');
    for (const d of [secondary, state, locks]) fs.mkdirSync(d, { mode: 0o700 });
    fs.writeFileSync(pwFile, 'failover secret\n', { mode: 0o600 });
    for (const p of [secondary, state, locks, pwFile]) chownToPostgres(p);
    serverEnv = { ...MOTO_CREDENTIALS, AWS_EC2_METADATA_DISABLED: 'true', HOLDFAST_STATE_DIR: state, HOLDFAST_LOCK_DIR: locks };
    env = {
      ...serverEnv,
      HOLDFAST_CONFIG: '/dev/null',
      HOLDFAST_REPO: `s3://${BUCKET}/pg`,
      HOLDFAST_PASSWORD_FILE: pwFile,
      HOLDFAST_REPO_SECONDARY: secondary,
      HOLDFAST_S3_ENDPOINT: moto.endpoint,
      HOLDFAST_S3_PATH_STYLE: 'true',
      HOLDFAST_STORAGE_TIMEOUT: '1s',
      HOLDFAST_STORAGE_DEADLINE: '3s',
      HOLDFAST_STORAGE_PROBE_TIMEOUT: '1s',
      HOLDFAST_STORAGE_STATUS_TTL: '1h',
    };
    // Generous timeouts where nothing hangs (a loaded machine is slow); the short ones above are for the hang.
    const init = hf(['init', '--kdf-cost', TEST_KDF, '--storage-timeout', '20s', '--storage-deadline', '60s', '--storage-probe-timeout', '20s']);
    assert.equal(init.status, 0, init.stderr);
    const archiveCommand = [...Object.entries(env).map(([k, v]) => `${k}=${v}`), process.execPath, CLI, 'pg', 'archive-push', '%p'].join(' ');
    pg = await startCluster({ conf: { wal_level: 'replica', archive_mode: 'on', archive_command: archiveCommand }, env: serverEnv });
  });

  after(async () => {
    moto?.resume();
    await destroyAllClusters();
    await moto?.stop();
    await ws?.cleanup();
  });

  async function archivedUpTo(): Promise<void> {
    const last = await pg.switchWal({ force: true });
    await waitUntil(`${last} archived`, async () => (await pg.psql('SELECT last_archived_wal FROM pg_stat_archiver')) >= last, { timeoutMs: 120_000 }).catch((err: Error) => {
      throw new Error(`${err.message}\n${pg.logTail(40)}`);
    });
  }

  test('archive-push keeps working on the secondary while the primary hangs; PITR and sync afterwards', async () => {
    await pg.psql(['CREATE TABLE t (id serial PRIMARY KEY, phase text)', "INSERT INTO t (phase) SELECT 'a' FROM generate_series(1, 100)"]);
    const pgbenchInit = await pg.runTool('pgbench', ['-i', '-s', '1', '-q']);
    assert.equal(pgbenchInit.status, 0, pgbenchInit.stderr);
    const backup = hf(['pg', 'backup', '--type', 'full', '--json']);
    assert.equal(backup.status, 0, backup.stderr);
    await pg.psql("INSERT INTO t (phase) SELECT 'b' FROM generate_series(1, 100)");
    await archivedUpTo();
    assert.deepEqual(listFiles(path.join(secondary, 'wal')), [], 'with the primary alive, WAL goes to the primary');

    let target: string;
    moto.pause();
    try {
      // pgbench writes while the primary hangs; its WAL has to go somewhere.
      const load = runAsPostgresAsync(pgBin('pgbench'), ['-T', '4', '-c', '2', '-n'], pg.env, { timeoutMs: 60_000 });
      await pg.psql("INSERT INTO t (phase) SELECT 'c' FROM generate_series(1, 100)");
      target = await pg.psql('SELECT clock_timestamp()');
      await new Promise((r) => setTimeout(r, 1100));
      await pg.psql("INSERT INTO t (phase) SELECT 'd' FROM generate_series(1, 100)");
      const loadResult = await load;
      assert.equal(loadResult.status, 0, loadResult.stderr);
      await archivedUpTo();
      assert.ok(listFiles(path.join(secondary, 'wal', 'main')).length >= 1, 'the WAL written while the primary hung is on the secondary');
      const failed = Number(await pg.psql('SELECT failed_count FROM pg_stat_archiver'));
      assert.equal(failed, 0, 'no archive_command call failed: the first one that met the hung primary failed over within its deadline');
    } finally {
      moto.resume();
    }

    // The primary answers again; a probe (here `storage status`, else the first process after the
    // status lifetime) revives it for every process on the host.
    const status = hf(['storage', 'status', '--json', '--storage-probe-timeout', '20s']);
    assert.equal(status.status, 0, status.stderr);
    // PITR across both storages: the base backup and early WAL on S3, the rest on the secondary.
    const restored = await startCluster({ env: serverEnv });
    await restored.stop();
    const r = hf(['pg', 'restore', '--target-dir', restored.dataDir, '--force', '--target-time', target, '--target-action', 'promote']);
    assert.equal(r.status, 0, r.stderr);
    const auto = fs.readFileSync(path.join(restored.dataDir, 'postgresql.auto.conf'), 'utf8');
    assert.match(auto, /--repo-secondary /, 'restore_command names the secondary storage');
    restored.configure({});
    await restored.start();
    await waitUntil('recovery to end', async () => (await restored.psql('SELECT pg_is_in_recovery()')) === 'f', { timeoutMs: 120_000 }).catch((err: Error) => {
      throw new Error(`${err.message}\n${restored.logTail(60)}`);
    });
    assert.equal(await restored.psql("SELECT string_agg(phase || n, ',' ORDER BY phase) FROM (SELECT phase, count(*)::text AS n FROM t GROUP BY phase) s"), 'a100,b100,c100');
    await restored.destroy();

    // Everything back on the primary.
    const sync = hf(['storage', 'sync', '--json']);
    assert.equal(sync.status, 0, sync.stderr);
    assert.ok((JSON.parse(sync.stdout) as { copied: unknown[] }).copied.length > 0);
    const check = hf(['check', '--read-data', '--json'], { HOLDFAST_REPO_SECONDARY: '' });
    assert.equal(check.status, 0, check.stderr);
    const wal = hf(['pg', 'info', '--json'], { HOLDFAST_REPO_SECONDARY: '' });
    assert.equal(wal.status, 0, wal.stderr);
    const timelines = (JSON.parse(wal.stdout) as { wal: { timelines: Array<{ missing: number; segments: number }> } }).wal.timelines;
    assert.ok(timelines.length > 0 && timelines.every((t) => t.missing === 0 && t.segments > 0), `no gap in the WAL the primary holds alone: ${JSON.stringify(timelines)}`);
  });
});
