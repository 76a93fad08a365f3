/**
 * Locks with a real PostgreSQL 15: two backups of one cluster exclude each other (the second
 * names the first, or waits with --lock-wait), while WAL archiving goes on beside a running
 * backup (archive-push and backup share the repository lock).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI } from '../testing/helpers.js';
import { type PgCluster, chownToPostgres, destroyAllClusters, pgSkip, runAsPostgres, runAsPostgresAsync, startCluster, waitUntil } from '../testing/pg.js';
import { postgresRepository } from '../testing/pg-repo.js';
import { listFiles, workspace } from '../testing/e2e.js';

describe('pg backup locks (real PostgreSQL 15)', { skip: pgSkip() }, () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let env: Record<string, string> = {};
  let repo = '';
  let lockDir = '';
  let pg: PgCluster;

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-pglocks-'));
    const r = postgresRepository(dir, 'locks secret');
    repo = r.repo;
    lockDir = path.join(dir, 'locks');
    fs.mkdirSync(lockDir);
    chownToPostgres(lockDir);
    env = { ...r.env, HOLDFAST_LOCK_DIR: lockDir };
    pg = await startCluster({ conf: { wal_level: 'replica', archive_mode: 'on', archive_command: r.archiveCommand() } });
    const init = await pg.runTool('pgbench', ['-i', '-s', '2', '-q']);
    assert.equal(init.status, 0, init.stderr);
  });
  after(async () => {
    await destroyAllClusters();
    await cleanup();
  });

  const backupLocks = (): string[] => fs.readdirSync(lockDir).filter((f) => f.startsWith('pg-backup') && f.endsWith('.lock'));

  test('a second pg backup of the cluster fails naming the first, archive-push works beside it, and --lock-wait waits', async () => {
    const run = (args: string[]) => runAsPostgresAsync(process.execPath, [CLI, 'pg', 'backup', ...args], { ...env, ...pg.env }, { timeoutMs: 180_000 });
    const first = run(['--type', 'full']);
    await waitUntil('the first backup holds its lock', async () => backupLocks().length > 0, { timeoutMs: 60_000 });
    const holder = (JSON.parse(fs.readFileSync(path.join(lockDir, backupLocks()[0]!), 'utf8')) as { owner: { pid: number } }).owner.pid;
    // runuser stops itself when its child stops (like su); it must be continued too.
    const stat = fs.readFileSync(`/proc/${holder}/stat`, 'utf8');
    const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    process.kill(holder, 'SIGSTOP');
    try {
      const second = runAsPostgres(process.execPath, [CLI, 'pg', 'backup'], { ...env, ...pg.env });
      assert.equal(second.status, 11, second.stderr);
      assert.match(second.stderr, new RegExp(`pg backup of cluster main is locked by pg backup \\(PID ${holder} on [^)]*\\).*\\[LOCKED\\]`, 's'));
      assert.match(second.stderr, /hint: .*--lock-wait/);
      // Archiving is not blocked by a backup holding its locks.
      await pg.psql('INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (1, 1, 1, 1)');
      const seg = await pg.switchWal({ force: true });
      await waitUntil(`${seg} archived while the backup holds its lock`, async () => listFiles(repo).includes(`wal/main/${seg}`), { timeoutMs: 60_000 });
    } finally {
      process.kill(holder, 'SIGCONT');
      process.kill(parent, 'SIGCONT');
    }
    const waiting = run(['--lock-wait', '5m']);
    const r1 = await first;
    assert.equal(r1.status, 0, r1.stderr);
    const r2 = await waiting;
    assert.equal(r2.status, 0, r2.stderr);
    assert.deepEqual(backupLocks(), [], 'both released their locks');
    // (archive-push calls may hold shared repository locks at any moment: look only for backups')
    const listed = runAsPostgres(process.execPath, [CLI, 'locks', '--json'], env);
    assert.equal(listed.status, 0, listed.stderr);
    assert.deepEqual((JSON.parse(listed.stdout) as { locks: Array<{ operation: string }> }).locks.filter((l) => l.operation === 'pg backup'), []);
  });

  test('the default lock directory is outside the repository and the data directory; one inside the data directory is refused', () => {
    const { HOLDFAST_LOCK_DIR: _unused, ...defaults } = env;
    const listed = runAsPostgres(process.execPath, [CLI, 'locks', '--json'], defaults);
    assert.equal(listed.status, 0, listed.stderr);
    const lockDirUsed = (JSON.parse(listed.stdout) as { lockDir: string }).lockDir;
    for (const inside of [repo, pg.dataDir]) assert.ok(!lockDirUsed.startsWith(inside), `${lockDirUsed} is inside ${inside}`);
    const r = runAsPostgres(process.execPath, [CLI, 'pg', 'backup'], { ...env, ...pg.env, HOLDFAST_LOCK_DIR: path.join(pg.dataDir, 'holdfast-locks') });
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stderr, /lock directory .* is inside the data directory .*\[CONFIG_INVALID\]/s);
  });
});
