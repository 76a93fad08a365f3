/**
 * Barman's failure, replayed against holdfast: the lock directory sits on a share that is
 * remounted under a running PostgreSQL, so every operation on it fails with ESTALE. archive-push
 * (--async, the mode that takes a local lock) must keep archiving, with no archiver failures and
 * no warning repeated on every call; when the share comes back it goes on as before.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type FaultFs, faultfsSkip, mountFaultFs } from '../testing/faultfs.js';
import { type PgCluster, chownToPostgres, destroyAllClusters, pgSkip, postgresIds, startCluster, waitUntil } from '../testing/pg.js';
import { postgresRepository } from '../testing/pg-repo.js';
import { listFiles, workspace } from '../testing/e2e.js';

describe('archive-push with its lock directory on a share that goes stale (real PostgreSQL 15, FUSE)', { skip: pgSkip() || faultfsSkip() }, () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let repo = '';
  let ff: FaultFs;
  let pg: PgCluster;
  let lockDir = '';

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-pgfuse-'));
    const r = postgresRepository(dir, 'fuse secret');
    repo = r.repo;
    const state = path.join(dir, 'state');
    fs.mkdirSync(state, { mode: 0o700 });
    chownToPostgres(state, true);
    ff = await mountFaultFs({ owner: postgresIds() });
    lockDir = path.join(ff.mountpoint, 'holdfast-locks');
    fs.mkdirSync(lockDir);
    chownToPostgres(lockDir);
    const archiveCommand = r.archiveCommand(['--async'], { HOLDFAST_STATE_DIR: state, HOLDFAST_LOCK_DIR: lockDir });
    pg = await startCluster({ conf: { wal_level: 'replica', archive_mode: 'on', archive_command: archiveCommand } });
  });
  after(async () => {
    await destroyAllClusters();
    await ff?.unmount();
    await cleanup();
  });

  const archived = (): Set<string> => new Set(listFiles(repo).filter((f) => f.startsWith('wal/main/')).map((f) => f.slice('wal/main/'.length)));

  async function burst(n: number, tag: string): Promise<string[]> {
    const segments: string[] = [];
    for (let i = 0; i < n; i++) {
      await pg.psql(`INSERT INTO t SELECT g, '${tag}' FROM generate_series(1, 500) g`);
      segments.push(await pg.switchWal({ force: true }));
    }
    const last = segments.at(-1)!;
    await waitUntil(`${last} archived`, async () => (await pg.psql('SELECT last_archived_wal FROM pg_stat_archiver')) >= last, { timeoutMs: 120_000 });
    return segments;
  }

  test('archiving goes on while every lock-directory operation fails with ESTALE, and after the share returns', async () => {
    await pg.psql('CREATE TABLE t (id int, tag text)');
    const healthy = await burst(2, 'healthy');
    const before = fs.readFileSync(pg.logFile, 'utf8').length;
    // Let the background worker of the healthy burst exit (5 s idle): while it runs it archives
    // new segments before their calls come, and a call answered from the spool never touches the
    // lock directory, so the stale share would not be met at all.
    await waitUntil('the async worker to exit', async () => fs.readdirSync(lockDir).filter((f) => f.endsWith('.lock')).length === 0, { timeoutMs: 60_000 });

    ff.staleAll(true);
    const stale = await burst(4, 'stale');
    const faults = await ff.fired();
    assert.ok(faults.some((f) => f.code === 'ESTALE'), 'archive-push really met ESTALE on the lock directory');
    ff.staleAll(false);
    const back = await burst(2, 'back');

    const stored = archived();
    for (const seg of [...healthy, ...stale, ...back]) assert.ok(stored.has(seg), `${seg} is in the repository`);
    assert.equal(await pg.psql('SELECT failed_count FROM pg_stat_archiver'), '0', 'no archive_command call failed');
    const log = fs.readFileSync(pg.logFile, 'utf8').slice(before);
    const warnings = log.split('\n').filter((l) => /^(warning|error):/.test(l));
    assert.deepEqual(warnings, [], 'no warning or error on any call');
  });
});
