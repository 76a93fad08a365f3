/**
 * pg expire, pg pin/unpin and pg backup --expire-after-backup against a real PostgreSQL 15:
 * backups taken at different times with rows committed (and times recorded) between them; an
 * expire with a recovery window that leaves the oldest backup outside (dry run first, then for
 * real) removes it and the WAL before the window's first backup; restores to sampled times inside
 * the window hold exactly the rows committed by then; a restore before the window is refused with
 * a message naming the oldest backup left. Then pins and the config-driven expire after a backup.
 *
 * No wall-clock assertions: the window is computed from the backups' recorded stop times, and
 * what the test expects follows from the window start the command reports.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI } from '../testing/helpers.js';
import { type PgCluster, chownToPostgres, destroyAllClusters, pgSkip, runAsPostgres, startCluster, waitUntil } from '../testing/pg.js';
import { postgresRepository } from '../testing/pg-repo.js';
import { workspace } from '../testing/e2e.js';
import type { PgBackupResult } from '../ops/pg-backup.js';
import type { PgExpireResult } from '../ops/pg-expire.js';
import type { PgInfoResult } from '../ops/pg-info.js';

interface Sample {
  /** UTC (`2026-11-21 10:15:00.123456+00`), from the server's clock_timestamp() after the commit of row `rows`. */
  time: string;
  rows: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('pg expire with a recovery window, pins and expire after backup (real PostgreSQL 15)', { skip: pgSkip(), timeout: 600_000 }, () => {
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let env: Record<string, string> = {};
  let pg: PgCluster;
  let target: PgCluster | undefined;
  let rows = 0;
  const backups: PgBackupResult[] = [];
  /** Before the second backup (outside the window), and after it. */
  let outside: Sample;
  const samples: Sample[] = [];
  let expired: PgExpireResult;

  const hf = (args: string[], extra: Record<string, string> = {}): { status: number; stdout: string; stderr: string } =>
    runAsPostgres(process.execPath, [CLI, ...args], { ...env, ...pg.env, ...extra }, { timeoutMs: 180_000 });
  const ok = (args: string[], extra: Record<string, string> = {}): string => {
    const r = hf(args, extra);
    assert.equal(r.status, 0, `holdfast ${args.join(' ')} exited ${r.status}\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  };
  const okJson = <T>(args: string[], extra: Record<string, string> = {}): T => JSON.parse(ok([...args, '--json'], extra)) as T;
  const info = (): PgInfoResult => okJson<PgInfoResult>(['pg', 'info']);

  /** Commit one more row, then record the time (and the rows committed by then). */
  async function commitAndSample(): Promise<Sample> {
    rows++;
    await pg.psql(`INSERT INTO t VALUES (${rows})`);
    await sleep(150);
    // "+00", not "Z": PostgreSQL 15 reads recovery_target_time before it knows zone abbreviations.
    const time = await pg.psql(`SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US"+00"')`);
    await sleep(150);
    return { time, rows };
  }

  async function backup(type: 'full' | 'incr', extraArgs: string[] = [], extraEnv: Record<string, string> = {}): Promise<PgBackupResult & { expire?: PgExpireResult }> {
    const r = okJson<PgBackupResult & { expire?: PgExpireResult }>(['pg', 'backup', '--type', type, ...extraArgs], extraEnv);
    assert.equal(r.type, type);
    backups.push(r);
    return r;
  }

  /** `--recovery-window` that starts 400 ms after `b` stopped (by the clock now). */
  const windowAfter = (b: PgBackupResult): string => `${Math.max(0, Date.now() - (Date.parse(b.pg.stopTime) + 400))}ms`;

  /** Restore to `time` into the one reusable target cluster, recover, and count the rows. */
  async function restoreAndCount(time: string): Promise<{ rows: number; backup: string }> {
    if (!target) {
      target = await startCluster({ prefix: 'holdfast-pg-expire-target-' });
      await target.stop();
    }
    const out = ok(['pg', 'restore', '--target-dir', target.dataDir, '--force', '--target-time', time, '--target-action', 'promote']);
    const used = /restored backup ([0-9a-f]{8})/.exec(out)?.[1] ?? '';
    target.configure({}); // its own port and socket (and no archiving); the restored postgresql.conf was the source's
    await target.start();
    try {
      await waitUntil('recovery to end', async () => (await target!.psql('SELECT pg_is_in_recovery()')) === 'f', { timeoutMs: 90_000 }).catch((err: Error) => {
        throw new Error(`${err.message}\n${target!.logTail(60)}`);
      });
      return { rows: Number(await target.psql('SELECT count(*) FROM t')), backup: used };
    } finally {
      await target.stop('immediate');
    }
  }

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-pgexpire-'));
    const r = postgresRepository(dir, 'expire secret');
    env = r.env;
    pg = await startCluster({ conf: { wal_level: 'replica', archive_mode: 'on', archive_command: r.archiveCommand() } });
    await pg.psql('CREATE TABLE t (id int PRIMARY KEY)');

    // b0 full | rows, the sample outside the window | b1 full | samples | b2 incr | samples | one more commit.
    await backup('full');
    await commitAndSample();
    outside = await commitAndSample();
    await sleep(800);
    await backup('full');
    for (let i = 0; i < 4; i++) {
      samples.push(await commitAndSample());
      await sleep(1000);
    }
    await backup('incr');
    for (let i = 0; i < 2; i++) samples.push(await commitAndSample());
    // Recovery to a time needs a commit after it in the archive: one more row, and its segment archived.
    rows++;
    await pg.psql(`INSERT INTO t VALUES (${rows})`);
    const last = await pg.switchWal({ force: true });
    await waitUntil(`${last} archived`, async () => (await pg.psql('SELECT last_archived_wal FROM pg_stat_archiver')) >= last, { timeoutMs: 60_000 });
  });
  after(async () => {
    await destroyAllClusters();
    await cleanup();
  });

  test('without a policy pg expire refuses (and pg backup --expire-after-backup refuses before backing up)', () => {
    const r = hf(['pg', 'expire']);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /needs a retention policy.*\[USAGE\]/);
    const b = hf(['pg', 'backup', '--expire-after-backup']);
    assert.equal(b.status, 3, b.stderr);
    assert.match(b.stderr, /expire-after-backup is on \(--expire-after-backup\) but no retention policy/);
    assert.equal(info().backups.length, 3, 'no backup was taken');
  });

  test('--dry-run shows what a recovery window expires, backups and WAL ranges, and removes nothing', () => {
    const [b0, b1, b2] = backups;
    const before = fs.readdirSync(path.join(env['HOLDFAST_REPO']!, 'wal', 'main')).sort();
    const r = okJson<PgExpireResult>(['pg', 'expire', '--recovery-window', windowAfter(b1!), '--dry-run']);
    assert.equal(r.dryRun, true);
    // The window starts after b1 ended and before b2 ended (it started seconds later): b1 is its anchor.
    assert.ok(Date.parse(r.windowStart!) > Date.parse(b1!.pg.stopTime) && Date.parse(r.windowStart!) < Date.parse(b2!.pg.stopTime), `window start ${r.windowStart}`);
    assert.equal(r.windowAnchor, b1!.snapshotId);
    assert.deepEqual(r.expired, [b0!.snapshotId]);
    assert.deepEqual(
      r.backups.map((b) => [b.id, b.keep, b.reasons]),
      [
        [b0!.snapshotId, false, []],
        [b1!.snapshotId, true, ['recovery-window']],
        [b2!.snapshotId, true, ['newest', 'recovery-window']],
      ],
    );
    const tl = r.wal.timelines[0]!;
    assert.equal(r.wal.timelines.length, 1);
    assert.deepEqual([tl.timeline, tl.verdict, tl.keepFrom, tl.kept.first], [1, 'reached', b1!.pg.startWal, b1!.pg.startWal]);
    assert.deepEqual(tl.reachedBy, [b1!.snapshotId, b2!.snapshotId]);
    assert.ok(tl.removed.first !== null && tl.removed.last! < b1!.pg.startWal, JSON.stringify(tl.removed));
    assert.ok(tl.removed.first! <= b0!.pg.startWal);
    assert.equal(tl.removed.backupHistory.length, 1, 'b0\'s backup history file goes too');
    assert.equal(r.wal.removed, tl.removed.segments + tl.removed.backupHistory.length + tl.removed.partial.length);

    const text = ok(['pg', 'expire', '--recovery-window', windowAfter(b1!), '--dry-run']);
    assert.match(text, /\(dry run: nothing removed\): 1 of 3 backups would be expired/);
    assert.match(text, new RegExp(`^  expire ${b0!.snapshotId.slice(0, 8)}  full`, 'm'));
    assert.match(text, new RegExp(`^  keep   ${b1!.snapshotId.slice(0, 8)}  full .*\\(recovery-window\\)$`, 'm'));
    assert.match(text, new RegExp(`^  timeline 1: would be removed ${tl.removed.first} \\.\\. ${tl.removed.last} .*; kept ${b1!.pg.startWal} \\.\\. `, 'm'));

    assert.equal(info().backups.length, 3);
    assert.deepEqual(fs.readdirSync(path.join(env['HOLDFAST_REPO']!, 'wal', 'main')).sort(), before);
  });

  test('pg expire removes the backup outside the window and the WAL before the window\'s first backup', () => {
    const [b0, b1, b2] = backups;
    expired = okJson<PgExpireResult>(['pg', 'expire', '--recovery-window', windowAfter(b1!)]);
    assert.equal(expired.dryRun, false);
    assert.equal(expired.windowAnchor, b1!.snapshotId);
    assert.deepEqual(expired.expired, [b0!.snapshotId]);

    const after = info();
    assert.deepEqual(
      after.backups.map((b) => b.id),
      [b1!.snapshotId, b2!.snapshotId],
    );
    assert.ok(after.backups.every((b) => b.walComplete));
    const tl = after.wal.timelines[0]!;
    assert.equal(tl.first, b1!.pg.startWal, 'the WAL starts where the window\'s first backup starts');
    assert.deepEqual(tl.gaps, []);
    assert.ok(tl.backupHistory.every((f) => f >= b1!.pg.startWal), tl.backupHistory.join(','));
    // The repository is consistent (the expired backup's data stays for prune).
    ok(['check']);
  });

  test('restores to sampled times inside the window hold exactly the rows committed by then', async () => {
    const [, b1, b2] = backups;
    const inside = samples.filter((s) => Date.parse(s.time) >= Date.parse(expired.windowStart!));
    assert.ok(inside.length >= 2, `samples inside the window: ${inside.length}`);
    // The first inside (restored from the anchor plus WAL), one after the incremental backup, the last.
    const picks = [...new Set([inside[0]!, inside.find((s) => Date.parse(s.time) > Date.parse(b2!.pg.stopTime)) ?? inside[1]!, inside.at(-1)!])];
    for (const s of picks) {
      const r = await restoreAndCount(s.time);
      assert.equal(r.rows, s.rows, `restored to ${s.time}: ${r.rows} rows, ${s.rows} were committed then`);
      const expected = Date.parse(s.time) > Date.parse(b2!.pg.stopTime) ? b2! : b1!;
      assert.equal(r.backup, expected.snapshotId.slice(0, 8), `restore to ${s.time} starts from the newest backup ending before it`);
    }
  });

  test('a restore to a time before the window is refused, naming the oldest backup left', () => {
    const [, b1] = backups;
    const t = pg.makeDir('refused');
    const r = hf(['pg', 'restore', '--target-dir', t, '--target-time', outside.time]);
    assert.equal(r.status, 17, r.stderr);
    assert.ok(
      r.stderr.includes(`no backup of cluster "main" ends before the recovery target --target-time ${outside.time}: the oldest backup (${b1!.snapshotId.slice(0, 8)}) ends at ${b1!.pg.stopTime} [SNAPSHOT_NOT_FOUND]`),
      r.stderr,
    );
    assert.match(r.stderr, /hint: .*expired/);
    assert.deepEqual(fs.readdirSync(t), [], 'nothing written');
  });

  test('a pinned backup survives retain-full in the config file run by pg backup, and goes once unpinned', async () => {
    const [, b1, b2] = backups;
    const pinOut = ok(['pg', 'pin', b1!.snapshotId.slice(0, 10)]);
    assert.match(pinOut, new RegExp(`backup ${b1!.snapshotId.slice(0, 8)} of cluster "main" pinned`));
    assert.match(ok(['pg', 'pin', b1!.snapshotId]), /was pinned already/);
    const shown = info().backups.find((b) => b.id === b1!.snapshotId)!;
    assert.ok(shown.flags.includes('pinned'), shown.flags.join(','));
    assert.match(ok(['pg', 'info']), /flags: dataChecksums, pinned/);

    // The policy in the config file; pg backup expires after itself.
    const conf = path.join(dir, 'holdfast.conf');
    fs.writeFileSync(conf, '# per-cluster retention\nexpire-after-backup = true\nretain-full = 1\nmin-full = 1\n');
    chownToPostgres(conf);
    await commitAndSample();
    const b3 = await backup('full', [], { HOLDFAST_CONFIG: conf });
    const e = b3.expire!;
    assert.ok(e, 'pg backup --json carries the expire result');
    assert.deepEqual(e.expired, [b2!.snapshotId], 'the incremental of the older cycle goes; the pinned full stays');
    assert.deepEqual(
      e.backups.filter((b) => b.keep).map((b) => [b.id, b.reasons]),
      [
        [b1!.snapshotId, ['pinned']],
        [b3.snapshotId, ['newest', 'retain-full']],
      ],
    );
    assert.equal(e.wal.timelines[0]!.keepFrom, b1!.pg.startWal, 'the pinned backup keeps the WAL from its start');
    assert.deepEqual(e.pins, [b1!.snapshotId]);
    assert.equal(info().wal.timelines[0]!.first, b1!.pg.startWal);

    assert.match(ok(['pg', 'unpin', b1!.snapshotId.slice(0, 8)]), /unpinned/);
    assert.match(ok(['pg', 'unpin', b1!.snapshotId.slice(0, 8)]), /was not pinned/);
    const last = okJson<PgExpireResult>(['pg', 'expire', '--retain-full', '1']);
    assert.deepEqual(last.expired, [b1!.snapshotId]);
    const left = info();
    assert.deepEqual(
      left.backups.map((b) => b.id),
      [b3.snapshotId],
    );
    assert.equal(left.wal.timelines[0]!.first, b3.pg.startWal);
    assert.ok(left.backups[0]!.walComplete);
    // Every earlier point is out of reach now.
    const s = samples.at(-1)!;
    const r = hf(['pg', 'restore', '--target-dir', pg.makeDir('refused-2'), '--target-time', s.time]);
    assert.equal(r.status, 17, 'that time is before the only backup left now');
    ok(['check']);
  });
});
