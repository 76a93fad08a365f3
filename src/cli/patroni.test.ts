/**
 * holdfast under a real Patroni 3.0 + etcd 3.4 cluster (docs/patroni.md), with every holdfast
 * setting taken from `holdfast pg patroni-config --json` (the same object its YAML prints):
 *
 * 1. a Patroni cluster (one etcd, a leader and a replica) archives through holdfast; the replica
 *    is first offered to holdfast, which fails fast without a backup, so Patroni falls back to
 *    basebackup; `pg backup` against the replica is refused naming the leader; a full backup of
 *    the leader; rows; a time T; more rows, archived (`pg check`);
 * 2. the cluster and its DCS keys are removed; a new cluster is bootstrapped by
 *    `pg patroni-bootstrap` to T with holdfast writing the recovery settings
 *    (keep_existing_recovery_conf): the leader holds exactly the rows committed before T, on a new
 *    timeline;
 * 3. a replica is added with holdfast as its first create_replica_method: built from the backup,
 *    it catches up, streams, and its restore_command is holdfast's;
 * 4. the leader is stopped: the replica is promoted, archives the new timeline (its history file
 *    is in the repository), `pg check` passes on it, and a point-in-time restore to a moment after
 *    the failover holds the rows before it and not after; that restore, into a data directory of a
 *    Patroni member, warns about the restore_command trap;
 * 5. the same bootstrap to T with Patroni writing the recovery settings (recovery_conf).
 *
 * Skipped when Patroni, etcd or PostgreSQL cannot be installed (HOLDFAST_SKIP_PATRONI=1 skips it,
 * HOLDFAST_REQUIRE_PATRONI=1 makes a missing one an error).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI, tmpDir } from '../testing/helpers.js';
import { runAsPostgres, startCluster, waitUntil, type PgCluster } from '../testing/pg.js';
import { type PgRepo, postgresRepository } from '../testing/pg-repo.js';
import { type Etcd, type JsonObject, type PatroniMember, dcsPrefix, patroniSkip, startEtcd, startPatroniMember, stopAllPatroni } from '../testing/patroni.js';

const SCOPE = 'hf';
const skip = patroniSkip();

describe('holdfast with Patroni (real Patroni 3.0, etcd 3.4, PostgreSQL 15)', { skip, timeout: 900_000 }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let etcd: Etcd;
  let repo: PgRepo;
  /** Rows 1-3 are committed before T, 4-6 after it. */
  let T = '';
  let member: Record<string, PatroniMember> = {};

  before(async () => {
    ({ dir, cleanup } = await tmpDir('holdfast-patroni-'));
    repo = postgresRepository(dir);
    etcd = await startEtcd();
  });
  after(async () => {
    await stopAllPatroni();
    await etcd?.stop();
    await cleanup?.();
  });

  /** `holdfast ARGS` as postgres with the repository's environment (plus `env`). */
  function hf(args: readonly string[], env: Record<string, string> = {}, timeoutMs = 180_000): ReturnType<typeof runAsPostgres> {
    return runAsPostgres(process.execPath, [CLI, ...args], { ...repo.env, ...env }, { timeoutMs });
  }
  function hfOk(args: readonly string[], env: Record<string, string> = {}): string {
    const r = hf(args, env);
    assert.equal(r.status, 0, `holdfast ${args.join(' ')} → exit ${r.status}\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  }
  /** The holdfast part of patroni.yml, from `pg patroni-config --json ARGS`. */
  function holdfastConfig(args: readonly string[] = []): JsonObject {
    return JSON.parse(hfOk(['pg', 'patroni-config', '--json', ...args])) as JsonObject;
  }
  async function start(name: string, config: JsonObject): Promise<PatroniMember> {
    const m = await startPatroniMember({ etcd, scope: SCOPE, name, config });
    member[name] = m;
    return m;
  }
  /** Fail with the member's log when `fn` fails. */
  async function withLog<T>(m: PatroniMember, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- ${m.name}'s log\n${m.logTail(80)}`);
    }
  }
  async function ids(m: PatroniMember): Promise<string> {
    return m.psql("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM t");
  }
  async function removeCluster(): Promise<void> {
    for (const m of Object.values(member)) await m.stop();
    member = {};
    await etcd.deletePrefix(dcsPrefix(SCOPE));
    assert.equal((await etcd.getPrefix(dcsPrefix(SCOPE))).size, 0);
  }
  async function now(m: PatroniMember): Promise<string> {
    return m.psql(`SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'`);
  }
  const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  /** A bootstrap of a fresh cluster to T with `extra` patroni-config arguments; returns its leader. */
  async function bootstrapToT(name: string, extra: readonly string[]): Promise<PatroniMember> {
    const m = await start(name, holdfastConfig(['--target-time', T, ...extra]));
    return withLog(m, async () => {
      await m.waitRole('primary', 240_000);
      assert.match(m.log(), /Running custom bootstrap script: .* pg patroni-bootstrap /);
      return m;
    });
  }

  test('1. a Patroni cluster archives through holdfast; replica falls back to basebackup; backups only from the leader', async () => {
    // Cluster A is made by initdb: the bootstrap method is removed from holdfast's settings.
    const cfg = holdfastConfig();
    (cfg['bootstrap'] as JsonObject)['method'] = undefined;
    const a1 = await start('a1', cfg);
    await withLog(a1, () => a1.waitRole('primary', 120_000));
    await a1.psql('CREATE TABLE t (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())');
    const pgEnvA1 = { PGHOST: a1.socketDir, PGPORT: String(a1.pgPort), PGUSER: 'postgres' };
    hfOk(['pg', 'check'], pgEnvA1);

    // No backup yet: holdfast's replica method fails at once and Patroni uses basebackup.
    const a2 = await start('a2', cfg);
    await withLog(a2, async () => {
      await a2.waitRole('replica', 120_000);
      await a2.waitStreaming(60_000);
      assert.match(a2.log(), /no PostgreSQL backup of cluster "main"/);
      assert.match(a2.log(), /replica has been created using basebackup/);
    });
    const onReplica = hf(['pg', 'backup', '--type', 'full'], { PGHOST: a2.socketDir, PGPORT: String(a2.pgPort), PGUSER: 'postgres' });
    assert.equal(onReplica.status, 37, onReplica.stderr);
    assert.match(onReplica.stderr, new RegExp(`standby .*replicating from the primary at 127\\.0\\.0\\.1:${a1.pgPort}.*\\[PG_STANDBY\\]`));

    hfOk(['pg', 'backup', '--type', 'full'], pgEnvA1);
    await a1.psql(['INSERT INTO t (id) VALUES (1)', 'INSERT INTO t (id) VALUES (2)', 'INSERT INTO t (id) VALUES (3)']);
    await pause(1_100);
    T = await now(a1);
    await pause(1_100);
    await a1.psql(['INSERT INTO t (id) VALUES (4)', 'INSERT INTO t (id) VALUES (5)', 'INSERT INTO t (id) VALUES (6)']);
    hfOk(['pg', 'check'], pgEnvA1); // switches WAL and waits until the segment holding rows 4-6 is archived
    assert.equal(await ids(a2), '1,2,3,4,5,6');
  });

  test('2. a new cluster bootstrapped by holdfast to T (holdfast writes the recovery settings) holds exactly the rows before T', async () => {
    assert.ok(T, 'test 1 ran');
    await removeCluster();
    const b1 = await bootstrapToT('b1', []);
    await withLog(b1, async () => {
      assert.equal(await ids(b1), '1,2,3');
      const state = await b1.state();
      assert.ok((state.timeline ?? 0) >= 2, `a new timeline, got ${state.timeline}`);
      // The new leader archives through holdfast (archive_command came from the DCS), and the
      // segment holding the timeline switch reaches the repository before replicas are built.
      hfOk(['pg', 'check'], { PGHOST: b1.socketDir, PGPORT: String(b1.pgPort), PGUSER: 'postgres' });
      await b1.psql('INSERT INTO t (id) VALUES (100)');
    });
  });

  test('3. a replica built by holdfast from the backup catches up, streams, and fetches WAL with holdfast', async () => {
    const b1 = member['b1'];
    assert.ok(b1, 'test 2 ran');
    const b2 = await start('b2', holdfastConfig());
    await withLog(b2, async () => {
      await b2.waitRole('replica', 180_000);
      assert.match(b2.log(), /replica has been created using holdfast/);
      assert.doesNotMatch(b2.log(), /replica has been created using basebackup/);
      await b2.waitStreaming(120_000);
      assert.match(await b2.psql('SHOW restore_command'), / pg archive-get --cluster main .*%f %p$/);
      await b1.psql('INSERT INTO t (id) VALUES (101)');
      await waitUntil('row 101 on the replica', async () => (await ids(b2)) === '1,2,3,100,101', { timeoutMs: 30_000 });
    });
  });

  test('4. after a failover the new leader archives its timeline through holdfast, and PITR after the failover works', async () => {
    const b1 = member['b1'];
    const b2 = member['b2'];
    assert.ok(b1 && b2, 'test 3 ran');
    const before = (await b2.state()).timeline ?? 0;
    await b1.stop();
    const promoted = await withLog(b2, () => b2.waitRole('primary', 120_000));
    const tli = promoted.timeline ?? 0;
    assert.ok(tli > before, `timeline ${tli} after ${before}`);
    const pgEnv = { PGHOST: b2.socketDir, PGPORT: String(b2.pgPort), PGUSER: 'postgres' };
    await b2.psql(['INSERT INTO t (id) VALUES (200)', 'INSERT INTO t (id) VALUES (201)']);
    await pause(1_100);
    const T2 = await now(b2);
    await pause(1_100);
    await b2.psql('INSERT INTO t (id) VALUES (300)');
    hfOk(['pg', 'check'], pgEnv);
    const history = `${tli.toString(16).toUpperCase().padStart(8, '0')}.history`;
    const info = JSON.parse(hfOk(['pg', 'info', '--json'])) as { wal: { timelines: Array<{ timeline: number }>; historyFiles?: string[] } };
    assert.ok(JSON.stringify(info).includes(history), `pg info names ${history}: ${JSON.stringify(info.wal).slice(0, 2000)}`);

    // A plain restore to T2: it holds 200 and 201, not 300, and warns that the directory came
    // from a Patroni member (the restore_command trap).
    const target: PgCluster = await startCluster();
    try {
      await target.stop();
      const r = hf(['pg', 'restore', '--target-dir', target.dataDir, '--force', '--target-time', T2, '--target-action', 'promote']);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /comes from a Patroni-managed cluster \(it has patroni\.dynamic\.json\).*removes the restore_command.*patroni-bootstrap/s);
      // Its own port and socket, and its own pg_hba.conf (Patroni's postgresql.conf names the member's).
      target.configure({ hba_file: path.join(target.dataDir, 'pg_hba.conf'), ident_file: path.join(target.dataDir, 'pg_ident.conf') });
      await target.start();
      await waitUntil('recovery to end', async () => (await target.psql('SELECT pg_is_in_recovery()')) === 'f', { timeoutMs: 120_000 }).catch((err: Error) => {
        throw new Error(`${err.message}\n${target.logTail(60)}`);
      });
      assert.equal(await target.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t"), '1,2,3,100,101,200,201');
    } finally {
      await target.destroy();
    }
  });

  test('4b. the old leader is rebuilt over its kept data directory by the replica method (delta) and rejoins; another system is refused', async () => {
    const b1 = member['b1'];
    const b2 = member['b2'];
    assert.ok(b1 && b2 && !b1.isRunning(), 'test 4 ran');
    // A leader of another PostgreSQL system: refused before anything is written.
    const other = await startCluster();
    try {
      const marker = path.join(b1.dataDir, 'PG_VERSION');
      const before = fs.statSync(marker).mtimeMs;
      const r = hf(['pg', 'patroni-replica', `--scope=${SCOPE}`, `--datadir=${b1.dataDir}`, '--role=replica', `--connstring=postgresql://postgres@127.0.0.1:${other.port}/postgres`, '--keep_data=True', '--no_leader=True']);
      assert.equal(r.status, 28, r.stderr);
      assert.match(r.stderr, /the leader is PostgreSQL system \d+, but the backups of cluster "main" are of system \d+.*\[CLUSTER_MISMATCH\]/s);
      assert.equal(fs.statSync(marker).mtimeMs, before, 'the data directory was not touched');
    } finally {
      await other.destroy();
    }
    // The same leader system: a delta restore over the stopped old leader's data directory.
    const r = hf(['pg', 'patroni-replica', `--scope=${SCOPE}`, `--datadir=${b1.dataDir}`, '--role=replica', `--connstring=postgresql://postgres@127.0.0.1:${b2.pgPort}/postgres`, '--keep_data=True', '--no_leader=True', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const res = JSON.parse(r.stdout) as { kept: number; files: number };
    assert.ok(res.kept > 0 && res.kept < res.files, `some files kept, some rewritten: ${r.stdout.slice(0, 300)}`);
    assert.doesNotMatch(r.stderr, /could not ask the leader/);
    assert.ok(fs.existsSync(path.join(b1.dataDir, 'standby.signal')));
    await b1.start();
    await withLog(b1, async () => {
      await b1.waitRole('replica', 120_000);
      await b1.waitStreaming(120_000);
      await b2.psql('INSERT INTO t (id) VALUES (400)');
      await waitUntil('row 400 on the rebuilt member', async () => (await ids(b1)).endsWith(',300,400'), { timeoutMs: 60_000 });
    });
  });

  test('5. a new cluster bootstrapped to T with Patroni writing the recovery settings (recovery_conf) holds exactly the rows before T', async () => {
    assert.ok(T, 'test 1 ran');
    await removeCluster();
    const c1 = await bootstrapToT('c1', ['--recovery-settings', 'patroni']);
    await withLog(c1, async () => {
      assert.equal(await ids(c1), '1,2,3');
      // holdfast wrote no recovery settings of its own: Patroni's recovery_conf did the recovery.
      const auto = fs.readFileSync(path.join(c1.dataDir, 'postgresql.auto.conf'), 'utf8');
      assert.doesNotMatch(auto, /holdfast recovery settings begin/);
    });
  });
});

