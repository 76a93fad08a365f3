/**
 * Smoke tests of the real-PostgreSQL harness (pg.ts) against the PostgreSQL 15 server that
 * scripts/pg-deps.sh installs: clusters start, take writes, switch and archive WAL as the postgres
 * user, survive restarts and crashes, and leave nothing behind.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PG_BIN, destroyAllClusters, pgBin, pgSkip, postgresIds, runAsPostgres, startCluster, waitUntil, type PgCluster } from './pg.js';

const WAL_NAME = /^[0-9A-F]{24}$/;

/** Whether something accepts TCP connections on 127.0.0.1:port (bounded to 2 s). */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (v: boolean): void => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(2_000, () => done(false));
    s.on('connect', () => done(true));
    s.on('error', () => done(false));
  });
}

function postmasterPid(c: PgCluster): number {
  return Number(fs.readFileSync(path.join(c.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
}

/** Whether a process runs; a zombie (init here reaps orphans only every few seconds) does not count. */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

describe('PostgreSQL test harness', { skip: pgSkip(), timeout: 120_000 }, () => {
  let pg: PgCluster;

  before(async () => {
    pg = await startCluster();
  });
  // Every cluster, including those of failed tests (each test also destroys its own).
  after(() => destroyAllClusters());

  it('starts a cluster owned by postgres in a private 0700 directory on a loopback port', async () => {
    const { uid } = postgresIds();
    for (const dir of [pg.root, pg.dataDir, pg.socketDir]) {
      const st = fs.statSync(dir);
      assert.equal(st.uid, uid, `${dir} should belong to postgres`);
      assert.equal(st.mode & 0o777, 0o700, `${dir} should be 0700`);
    }
    assert.ok(pg.root.startsWith(os.tmpdir()) || pg.root.startsWith('/tmp/'), pg.root);
    assert.ok(await accepts(pg.port), `port ${pg.port} should accept connections`);
    assert.ok(fs.existsSync(path.join(pg.socketDir, `.s.PGSQL.${pg.port}`)), 'socket in the private directory');
    assert.deepEqual(pg.env, { PGHOST: pg.socketDir, PGPORT: String(pg.port), PGUSER: 'postgres', PGDATABASE: 'postgres' });
    assert.equal(await pg.psql('SHOW listen_addresses'), '127.0.0.1');
    assert.equal(await pg.psql('SELECT current_user'), 'postgres');
    assert.match(await pg.psql('SHOW server_version_num'), /^15\d{4}$/);
    assert.ok(await pg.isRunning());
  });

  it('runs initdb with data checksums on', async () => {
    assert.equal(await pg.psql('SHOW data_checksums'), 'on');
    const r = await pg.runTool('pg_controldata', [pg.dataDir]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^Data page checksum version:\s+1$/m);
  });

  it('writes rows and reads them back', async () => {
    await pg.psql(['CREATE TABLE smoke (id int PRIMARY KEY, note text NOT NULL)', "INSERT INTO smoke SELECT i, 'row ' || i FROM generate_series(1, 1000) AS i"]);
    assert.equal(await pg.psql('SELECT count(*), sum(id) FROM smoke'), '1000|500500');
    assert.equal(await pg.psql('SELECT note FROM smoke WHERE id IN (1, 2) ORDER BY id'), 'row 1\nrow 2');
  });

  it('psql throws with the server message and runs array elements as separate transactions', async () => {
    await assert.rejects(pg.psql('SELECT * FROM no_such_table'), /relation "no_such_table" does not exist/);
    // One string: one implicit transaction, so the failure rolls the insert back.
    await pg.psql('CREATE TABLE tx (i int)');
    await assert.rejects(pg.psql('INSERT INTO tx VALUES (1); SELECT 1/0'), /division by zero/);
    assert.equal(await pg.psql('SELECT count(*) FROM tx'), '0');
    // An array: each element commits on its own; ON_ERROR_STOP ends the session at the failure.
    await assert.rejects(pg.psql(['INSERT INTO tx VALUES (2)', 'SELECT 1/0', 'INSERT INTO tx VALUES (3)']), /division by zero/);
    assert.equal(await pg.psql('SELECT array_agg(i) FROM tx'), '{2}');
  });

  it('switchWal returns the closed segment; later switches give later segments', async () => {
    await pg.psql('INSERT INTO smoke SELECT i, $$x$$ FROM generate_series(1001, 2000) AS i');
    const first = await pg.switchWal();
    assert.match(first, WAL_NAME);
    await pg.psql('INSERT INTO smoke VALUES (2001, $$y$$)');
    const second = await pg.switchWal();
    assert.match(second, WAL_NAME);
    assert.ok(second > first, `${second} should come after ${first}`);
    // force closes a new segment even with no writes in between.
    const third = await pg.switchWal({ force: true });
    const fourth = await pg.switchWal({ force: true });
    assert.ok(third > second && fourth > third, `${second} < ${third} < ${fourth}`);
  });

  it('systemIdentifier is a decimal string matching pg_controldata', async () => {
    const id = await pg.systemIdentifier();
    assert.match(id, /^\d{10,20}$/);
    const r = await pg.runTool('pg_controldata', [pg.dataDir]);
    assert.match(r.stdout, new RegExp(`^Database system identifier:\\s+${id}$`, 'm'));
  });

  it('runs a second cluster at the same time with its own port and system identifier', async (t) => {
    const other = await startCluster();
    t.after(() => other.destroy());
    assert.notEqual(other.port, pg.port);
    assert.notEqual(other.root, pg.root);
    assert.notEqual(await other.systemIdentifier(), await pg.systemIdentifier());
    await other.psql('CREATE TABLE only_here (i int)');
    await assert.rejects(pg.psql('SELECT * FROM only_here'), /does not exist/);
  });

  it('restart keeps committed data', async () => {
    await pg.psql('CREATE TABLE kept AS SELECT generate_series(1, 500) AS i');
    const pid = postmasterPid(pg);
    await pg.restart();
    assert.notEqual(postmasterPid(pg), pid, 'a new postmaster');
    assert.equal(await pg.psql('SELECT count(*) FROM kept'), '500');
  });

  it("stop('immediate') then start recovers committed data", async () => {
    await pg.psql('INSERT INTO kept SELECT generate_series(501, 600)');
    await pg.stop('immediate');
    assert.equal(await pg.isRunning(), false);
    assert.equal(await accepts(pg.port), false);
    await pg.start();
    assert.match(pg.logTail(), /not properly shut down; automatic recovery in progress/);
    assert.equal(await pg.psql('SELECT count(*) FROM kept'), '600');
  });

  it('configure() changes settings at the next start', async () => {
    pg.configure({ work_mem: '7MB', cluster_name: "it's quoted" });
    await pg.restart();
    assert.equal(await pg.psql('SHOW work_mem'), '7MB');
    assert.equal(await pg.psql('SHOW cluster_name'), "it's quoted");
  });

  it('runs commands as the postgres OS user with the cluster environment', () => {
    assert.equal(runAsPostgres('id', ['-un']).stdout.trim(), 'postgres');
    const r = runAsPostgres(pgBin('psql'), ['-X', '-A', '-t', '-c', 'SELECT count(*) FROM kept'], pg.env);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), '600');
    const timedOut = runAsPostgres('sleep', ['30'], {}, { timeoutMs: 300 });
    assert.equal(timedOut.timedOut, true);
    assert.notEqual(timedOut.status, 0);
  });

  it('archive_command runs as postgres and archives a switched segment', async (t) => {
    // The archive directory is created first so archive_command can name it; it belongs to
    // postgres, and only postgres (or root) could write the copies.
    const arch = await startCluster({ conf: { archive_mode: 'on', archive_timeout: '0' } });
    t.after(() => arch.destroy());
    const dir = arch.makeDir('archive');
    arch.configure({ archive_command: `test ! -f '${dir}/%f' && cp %p '${dir}/%f'` });
    await arch.psql('SELECT pg_reload_conf()');
    await arch.psql('CREATE TABLE w AS SELECT generate_series(1, 10000) AS i');
    const seg = await arch.switchWal();
    // The file appears as soon as cp starts writing it: wait for PostgreSQL to record the
    // archive_command's success instead (WAL names of one timeline sort in order).
    await waitUntil(
      `${seg} archived`,
      async () => (await arch.psql('SELECT last_archived_wal FROM pg_stat_archiver')) >= seg,
      { timeoutMs: 30_000 },
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n--- server log\n${arch.logTail()}`);
    });
    const st = fs.statSync(path.join(dir, seg));
    assert.equal(st.size, 16 << 20, 'a whole 16 MB segment');
    assert.equal(st.uid, postgresIds().uid, 'written by the postgres user');
    assert.equal(await arch.psql('SELECT failed_count FROM pg_stat_archiver'), '0');
  });

  it('destroy() stops the server and removes the directory, and is idempotent', async () => {
    const c = await startCluster();
    const pid = postmasterPid(c);
    assert.ok(alive(pid));
    await c.destroy();
    assert.equal(fs.existsSync(c.root), false);
    await waitUntil('the postmaster to be gone', () => !alive(pid), { timeoutMs: 10_000 });
    assert.equal(await accepts(c.port), false);
    await c.destroy();
  });

  it('a cluster that fails to start is removed and the error shows the server log', async () => {
    const prefix = `holdfast-pg-fail-${process.pid}-`;
    await assert.rejects(startCluster({ prefix, conf: { shared_buffers: 'lots' } }), (err: Error) => {
      assert.match(err.message, /pg_ctl start exited/);
      assert.match(err.message, /invalid value for parameter "shared_buffers"/);
      return true;
    });
    const left = fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith(prefix));
    assert.deepEqual(left, []);
  });

  it('knows where the PostgreSQL 15 tools are', () => {
    assert.equal(PG_BIN, '/usr/lib/postgresql/15/bin');
    for (const tool of ['pgbench', 'pg_amcheck', 'pg_waldump', 'pg_controldata']) {
      fs.accessSync(pgBin(tool), fs.constants.X_OK);
    }
  });
});
