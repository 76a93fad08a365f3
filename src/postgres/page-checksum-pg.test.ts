/**
 * page-checksum.ts against pages written by a real PostgreSQL 15 (`initdb -k`, data checksums
 * on; src/testing/pg.ts). Skipped, with the reason, when PostgreSQL cannot run here.
 *
 * One cluster: a table with seeded data, an index, VACUUM (so free space and visibility map
 * forks exist), CHECKPOINT, then a clean stop so no file changes while it is read. Then:
 * - every page of every checksummed file of the data directory verifies, and the checksum of
 *   each checked page equals its pd_checksum (PostgreSQL's own value);
 * - a copy of the data directory with one byte flipped in the middle of block 1 of the table:
 *   verifyPages reports exactly that block, and `pg_checksums --check` on the copy reports the
 *   same file and block with "calculated checksum X but block contains Y", X = actual and
 *   Y = expected;
 * - the same corrupt page is skipped when skipLsnAtOrAfter is at or below its pd_lsn (and only
 *   then), as for a page changed during an online backup.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chownToPostgres, destroyAllClusters, pgSkip, startCluster, type PgCluster } from '../testing/pg.js';
import { PG_BLOCK_SIZE, isChecksummedRelationFile, pgChecksumPage, readPageHeader, relationBlockNo, scanPages, verifyPages } from './page-checksum.js';

/** Every file under `dir`, as `/`-separated paths relative to it. */
function walk(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...walk(dir, r));
    else if (e.isFile()) out.push(r);
  }
  return out;
}

/** "pg_checksums: error: checksum verification failed in file "F", block N: calculated checksum X but block contains Y" */
const PG_CHECKSUMS_FAILURE = /checksum verification failed in file "([^"]+)", block (\d+): calculated checksum ([0-9A-F]+) but block contains ([0-9A-F]+)/g;

describe('page checksums of a real PostgreSQL 15 cluster', { skip: pgSkip(), timeout: 240_000 }, () => {
  let pg: PgCluster;
  /** Paths relative to the data directory. */
  let table: string;
  let index: string;

  before(async () => {
    pg = await startCluster({ prefix: 'holdfast-pgcsum-' });
    assert.equal(await pg.psql('SHOW data_checksums'), 'on');
    await pg.psql([
      'SELECT setseed(0.3141)',
      // ~2,000 rows of 40-220 bytes: several pages, content fixed by the seed.
      "CREATE TABLE t AS SELECT i, repeat(md5(random()::text), 1 + (random() * 6)::int) AS v FROM generate_series(1, 2000) AS i",
      'CREATE INDEX t_i ON t (i)',
      'DELETE FROM t WHERE i % 7 = 0',
      'VACUUM t',
      'CHECKPOINT',
    ]);
    table = await pg.psql("SELECT pg_relation_filepath('t')");
    index = await pg.psql("SELECT pg_relation_filepath('t_i')");
    await pg.stop('fast');
  });
  after(() => destroyAllClusters());

  it('verifies every page of every checksummed file PostgreSQL wrote', (t) => {
    const files = walk(pg.dataDir).filter(isChecksummedRelationFile);
    for (const f of [table, index, `${table}_fsm`, `${table}_vm`, 'global/1262', 'base/1/1259']) assert.ok(files.includes(f), `${f} is among the checksummed files`);
    for (const f of ['global/pg_control', 'global/pg_filenode.map', 'PG_VERSION', 'base/1/PG_VERSION']) {
      assert.ok(fs.existsSync(path.join(pg.dataDir, f)), `${f} exists`);
      assert.equal(isChecksummedRelationFile(f), false, f);
    }
    let checked = 0;
    let skippedNew = 0;
    for (const f of files) {
      const buf = fs.readFileSync(path.join(pg.dataDir, f));
      const s = scanPages(buf, relationBlockNo(f, 0));
      assert.deepEqual(s.errors, [], f);
      assert.equal(s.partialBytes, 0, f);
      assert.equal(s.skippedLsn, 0);
      checked += s.checked;
      skippedNew += s.skippedNew;
      // Independently of verifyPages: the computed checksum is the stored one, page by page.
      for (let off = 0; off < buf.length; off += PG_BLOCK_SIZE) {
        const page = buf.subarray(off, off + PG_BLOCK_SIZE);
        const h = readPageHeader(page);
        if (h.upper !== 0) assert.equal(pgChecksumPage(page, relationBlockNo(f, off)), h.checksum, `${f} at ${off}`);
      }
    }
    const tablePages = fs.statSync(path.join(pg.dataDir, table)).size / PG_BLOCK_SIZE;
    assert.ok(tablePages >= 3, `the table has ${tablePages} pages`);
    assert.ok(checked > 200, `checked ${checked} pages (${skippedNew} new) in ${files.length} files`);
    t.diagnostic(`${files.length} relation files, ${checked} pages verified, ${skippedNew} new pages skipped`);
  });

  it('reports the block with a flipped byte exactly as pg_checksums does', async () => {
    const copy = pg.makeDir('corrupt');
    fs.cpSync(pg.dataDir, copy, { recursive: true });
    chownToPostgres(copy, true);
    const file = path.join(copy, table);
    const buf = fs.readFileSync(file);
    const clean = verifyPages(buf, 0);
    assert.deepEqual(clean, []);
    const pos = PG_BLOCK_SIZE + PG_BLOCK_SIZE / 2; // the middle of block 1
    const stored = readPageHeader(buf.subarray(PG_BLOCK_SIZE)).checksum;
    buf[pos] = buf[pos]! ^ 0x20;
    fs.writeFileSync(file, buf);

    const ours = verifyPages(fs.readFileSync(file), relationBlockNo(table, 0));
    assert.equal(ours.length, 1, JSON.stringify(ours));
    const [e] = ours;
    assert.equal(e?.block, 1);
    assert.equal(e?.reason, 'checksum');
    assert.equal(e?.expected, stored);
    assert.notEqual(e?.actual, stored);

    const r = await pg.runTool('pg_checksums', ['--check', '-D', copy], { timeoutMs: 120_000 });
    assert.equal(r.status, 1, `pg_checksums exits 1 on a bad checksum\n${r.stdout}\n${r.stderr}`);
    const failures = [...r.stderr.matchAll(PG_CHECKSUMS_FAILURE)].map((m) => ({
      file: m[1],
      block: Number(m[2]),
      calculated: parseInt(m[3]!, 16),
      contains: parseInt(m[4]!, 16),
    }));
    assert.deepEqual(failures, [{ file, block: 1, calculated: e?.actual, contains: e?.expected }], r.stderr);
    assert.match(r.stdout, /Bad checksums:\s+1\b/);
  });

  it('skips the corrupt page when its LSN is at or after skipLsnAtOrAfter', () => {
    const buf = fs.readFileSync(path.join(pg.dataDir, table));
    const pos = PG_BLOCK_SIZE + 3000;
    buf[pos] = buf[pos]! ^ 0x01;
    const lsn = readPageHeader(buf.subarray(PG_BLOCK_SIZE)).lsn;
    assert.ok(lsn > 0n, 'a page PostgreSQL wrote has an LSN');
    assert.deepEqual(
      verifyPages(buf, 0, { skipLsnAtOrAfter: lsn + 1n }).map((x) => x.block),
      [1],
    );
    const at = scanPages(buf, 0, { skipLsnAtOrAfter: lsn });
    assert.deepEqual(at.errors, []);
    assert.ok(at.skippedLsn >= 1);
  });
});
