/**
 * The native front of archive-push (native/wal-front.c, dist/holdfast-push) in tests: where it is,
 * when its tests cannot run, and how to tell that it handed a call to Node (HOLDFAST_FRONT=trace).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT } from './helpers.js';
import { type PgCluster, type RunResult, pgSkip, startCluster } from './pg.js';
import { show } from './e2e.js';

export const FRONT = path.join(ROOT, 'dist', 'holdfast-push');
/** What HOLDFAST_FRONT=trace prints when the front runs the Node CLI, with the reason. */
export const TO_NODE = /holdfast-push: running Node: (.*)/;

/** Why the front's tests are skipped here (no PostgreSQL, or the front was not built), or false. */
export function frontSkip(): string | false {
  const pg = pgSkip();
  if (pg) return pg;
  return fs.existsSync(FRONT) ? false : 'native/wal-front.c was not built on this machine (no C compiler, libcrypto.so.3 or libzstd.so.1)';
}

/** The front handed the call `args` to Node, for a reason matching `why`. */
export function assertToNode(r: RunResult, why: RegExp, args: readonly string[]): void {
  const m = TO_NODE.exec(r.stderr);
  assert.ok(m, `the front ran Node\n${show(args, r)}`);
  assert.match(m[1]!, why, show(args, r));
}

/** A PostgreSQL 15 cluster that keeps its WAL (archive_command 'false', wal_keep_size 1GB), with a table t (id int, pad text) to write into. */
export async function walCluster(): Promise<PgCluster> {
  const pg = await startCluster({ conf: { wal_level: 'replica', archive_mode: 'on', archive_command: 'false', wal_keep_size: '1GB' } });
  await pg.psql('CREATE TABLE t (id int, pad text)');
  return pg;
}

/** `n` finished segments: each after `rows` rows of `pad` into t and a forced WAL switch. */
export async function finishedSegments(pg: PgCluster, n: number, rows: number, pad: string): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    await pg.psql(`INSERT INTO t SELECT g, ${pad} FROM generate_series(1, ${rows}) g`);
    out.push(await pg.switchWal({ force: true }));
  }
  return out;
}
