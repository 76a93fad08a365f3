/**
 * Async archive-push against a real PostgreSQL 15: a burst of WAL is archived with look-ahead
 * (several ready segments per call, recorded in a local spool); every segment PostgreSQL
 * archived is in the repository, and later calls for look-ahead segments were answered from the
 * spool.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type PgCluster, chownToPostgres, destroyAllClusters, pgSkip, startCluster, waitUntil } from '../testing/pg.js';
import { postgresRepository } from '../testing/pg-repo.js';
import { listFiles, workspace } from '../testing/e2e.js';

describe('pg archive-push --async (real PostgreSQL 15)', { skip: pgSkip() }, () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let repo = '';
  let state = '';
  let pg: PgCluster;

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-pgasync-'));
    const r = postgresRepository(dir, 'async secret');
    repo = r.repo;
    state = path.join(dir, 'state');
    fs.mkdirSync(state, { mode: 0o700 });
    chownToPostgres(state, true);
    const archiveCommand = r.archiveCommand(['--async', '--async-batch', '6', '--jobs', '3', '--log-level', 'debug'], { HOLDFAST_STATE_DIR: state });
    // Archiving paused while the burst is written, so that many segments are ready at once.
    pg = await startCluster({ conf: { wal_level: 'replica', archive_mode: 'on', archive_command: 'false', wal_keep_size: '1GB' } });
    pg.configure({ archive_command: archiveCommand });
  });
  after(async () => {
    await destroyAllClusters();
    await cleanup();
  });

  test('a burst of ready segments is archived with look-ahead; every segment arrives; spool records answer later calls', async () => {
    await pg.psql('CREATE TABLE burst (id int, pad text)');
    const segments: string[] = [];
    for (let i = 0; i < 12; i++) {
      await pg.psql(`INSERT INTO burst SELECT g, repeat('b', 100) FROM generate_series(1, 2000) g`);
      segments.push(await pg.switchWal({ force: true }));
    }
    await pg.psql('SELECT pg_reload_conf()'); // now archive through holdfast
    const last = segments.at(-1)!;
    await waitUntil(`${last} archived`, async () => (await pg.psql('SELECT last_archived_wal FROM pg_stat_archiver')) >= last, { timeoutMs: 120_000 });
    const stored = new Set(listFiles(repo).filter((f) => f.startsWith('wal/main/')).map((f) => f.slice('wal/main/'.length)));
    for (const seg of segments) assert.ok(stored.has(seg), `${seg} is in the repository`);
    const log = fs.readFileSync(pg.logFile, 'utf8');
    assert.match(log, /archived \d+ more ready file\(s\) ahead of PostgreSQL/);
    assert.match(log, /was archived by an earlier call \(spool\)/);
    // Spool records are consumed as PostgreSQL catches up (at most a batch may remain).
    const spool = listFiles(state).filter((f) => f.endsWith('.ok'));
    assert.ok(spool.length <= 6, `spool holds ${spool.length} records`);
  });
});
