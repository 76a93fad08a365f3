/**
 * `forget` through the CLI: snapshots made with `backup --time` at known times, dry runs (text
 * and JSON) listing what is kept with its reasons and what would go, refusals (no policy, bad
 * values, ids mixed with a policy, PostgreSQL backups), then real forgets that remove exactly the
 * announced manifests, leave PostgreSQL backups alone, and leave kept snapshots restorable and the
 * repository passing check.
 *
 * Local time is Tokyo (UTC+9, no daylight saving) for this process and the CLI it runs, so the
 * local-time cases are deterministic; the others pass --utc.
 */
process.env['TZ'] = 'Asia/Tokyo';

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseSnapshotTime } from '../ops/backup.js';
import { openRepository } from '../ops/repo.js';
import { type Snapshot, type SnapshotWithId, saveSnapshot } from '../repository/snapshot.js';
import type { ForgetResult } from '../ops/forget.js';
import { ROOT, cli } from '../testing/helpers.js';
import { type Env, expectError, fails, initRepo, listFiles, ok, okJson, restoredPath, workspace } from '../testing/e2e.js';

describe('backup --time', () => {
  test('accepted forms, local time without a zone, and refusals', () => {
    const table: Array<[string, string]> = [
      ['2026-01-02T03:04:05Z', '2026-01-02T03:04:05.000Z'],
      ['2026-01-02 03:04:05.5z', '2026-01-02T03:04:05.500Z'],
      ['2026-01-02T03:04:05+01:00', '2026-01-02T02:04:05.000Z'],
      ['2026-01-02T03:04-0230', '2026-01-02T05:34:00.000Z'],
      ['2026-01-02 09:00:00', '2026-01-02T00:00:00.000Z'], // Tokyo
      ['2026-01-02', '2026-01-01T15:00:00.000Z'], // Tokyo midnight
      ['2024-02-29T00:00:00Z', '2024-02-29T00:00:00.000Z'],
    ];
    for (const [text, want] of table) assert.equal(parseSnapshotTime(text)?.toISOString(), want, text);
    for (const bad of ['', 'now', '2026-13-01', '2025-02-29', '2026-01-02T24:00', '2026-01-02T10:60', '2026-01-02T10:00+25:00', '1700000000', '2026-1-2']) {
      assert.equal(parseSnapshotTime(bad), undefined, bad);
    }
  });
});

type Forgot = ForgetResult;

describe('forget', { timeout: 180_000 }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let repo: string;
  let src: string;
  let env: Env;
  /** Snapshot ids by label. */
  const id: Record<string, string> = {};
  let pgId: string;

  const label = (snapshotId: string): string => (snapshotId === pgId ? 'pg' : Object.entries(id).find(([, v]) => v === snapshotId)?.[0] ?? snapshotId);
  const remaining = (): string[] => okJson<SnapshotWithId[]>(['snapshots'], env).map((s) => label(s.id)).sort();
  /** Group → kept labels with reasons, and removed labels. */
  const summary = (r: Forgot): Array<{ key: unknown; keep: Array<[string, string[]]>; remove: string[] }> =>
    r.groups.map((g) => ({ key: g.key, keep: g.keep.map((k) => [label(k.id), k.reasons]), remove: g.remove.map((s) => label(s.id)) }));

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-e2e-forget-'));
    repo = path.join(dir, 'repo');
    src = path.join(dir, 'src');
    await fsp.mkdir(src);
    env = initRepo(repo);
    const history: Array<[string, string, string[]]> = [
      ['a1', '2026-01-01T10:00:00Z', ['--host', 'alpha', '--tag', 'keepme']],
      ['b1', '2026-01-01T12:00:00Z', ['--host', 'beta']],
      ['a2', '2026-01-02T10:00:00Z', ['--host', 'alpha']],
      ['a3', '2026-01-02T18:00:00Z', ['--host', 'alpha']],
      ['a4', '2026-01-03T10:00:00Z', ['--host', 'alpha', '--tag', 'nightly']],
      ['b2', '2026-01-03T12:00:00Z', ['--host', 'beta']],
      ['a5', '2026-01-04T09:00:00Z', ['--host', 'alpha']],
    ];
    for (const [name, time, args] of history) {
      await fsp.writeFile(path.join(src, 'f.txt'), `version ${name}\n`);
      id[name] = okJson<{ snapshot: string }>(['backup', src, '--time', time, ...args], env).snapshot;
    }
    // A PostgreSQL backup, older than everything and of the same host and paths: written through
    // the repository API (no server needed), with the tree of a file snapshot so check passes.
    const r = await openRepository({ location: repo, password: env['HOLDFAST_PASSWORD']! }, false);
    try {
      const list = okJson<SnapshotWithId[]>(['snapshots'], env);
      const a1 = list.find((s) => s.id === id['a1'])!;
      const sn: Snapshot = {
        version: 1,
        time: '2025-12-01T00:00:00.000Z',
        host: 'alpha',
        username: 'postgres',
        paths: [src],
        tags: ['pg:main', 'pg-full'],
        excludes: [],
        tree: a1.tree,
        program: 'holdfast test',
        pg: {
          cluster: 'main', type: 'full', systemId: '7000000000000000001', pgVersion: 15, pgdata: src, timeline: 1,
          startLsn: '0/2000028', stopLsn: '0/2000100', startWal: '000000010000000000000002', stopWal: '000000010000000000000002',
          startTime: '2025-12-01T00:00:00.000Z', stopTime: '2025-12-01T00:00:01.000Z', labelFile: '', spcmapFile: '', dataChecksums: true,
        },
      };
      pgId = await saveSnapshot(r, sn);
      // Its cluster record and the WAL that makes it consistent, so check finds the cluster whole.
      await r.putNamed('clusters/main', Buffer.from(JSON.stringify({ version: 1, name: 'main', systemId: '7000000000000000001', pgVersion: 15, segSize: 16 << 20, created: sn.time })));
      await r.putNamed('wal/main/000000010000000000000002', Buffer.alloc(1024));
    } finally {
      await r.close();
    }
  });
  after(() => cleanup());

  test('backup --time records the given time', () => {
    const list = okJson<SnapshotWithId[]>(['snapshots'], env);
    assert.equal(list.find((s) => s.id === id['a3'])?.time, '2026-01-02T18:00:00.000Z');
    assert.deepEqual(remaining(), ['a1', 'a2', 'a3', 'a4', 'a5', 'b1', 'b2', 'pg']);
    fails(['backup', src, '--time', 'yesterday'], env, 3, 'CONFIG_INVALID', '--time');
  });

  test('dry run --json: per group of host and paths, what is kept (every reason) and what would be removed', () => {
    const r = okJson<Forgot>(['forget', '--keep-daily', '2', '--keep-tag', 'keepme', '--utc', '--dry-run'], env);
    assert.equal(r.dryRun, true);
    assert.deepEqual(summary(r), [
      { key: { host: 'alpha', paths: [src] }, keep: [['a5', ['daily snapshot']], ['a4', ['daily snapshot']], ['a1', ['tag keepme']]], remove: ['a3', 'a2'] },
      { key: { host: 'beta', paths: [src] }, keep: [['b2', ['daily snapshot']], ['b1', ['daily snapshot']]], remove: [] },
    ]);
    assert.deepEqual(r.remove.map((s) => label(s.id)), ['a3', 'a2']);
    assert.deepEqual(r.removed, []);
    const kept = r.groups[0]!.keep[0]!;
    assert.deepEqual([kept.time, kept.host, kept.paths, kept.tags], ['2026-01-04T09:00:00.000Z', 'alpha', [src], []]);
    assert.deepEqual(remaining(), ['a1', 'a2', 'a3', 'a4', 'a5', 'b1', 'b2', 'pg'], 'a dry run removes nothing');
  });

  test('dry run text lists each group\'s snapshots with their fate and reasons', () => {
    const out = ok(['forget', '--keep-last', '1', '--keep-within', '1d', '--keep-tag', 'nightly', '--utc', '--dry-run'], env).stdout;
    const line = (name: string): string => out.split('\n').find((l) => l.includes(id[name]!.slice(0, 8))) ?? '';
    assert.match(out, /^host alpha, paths \S+: keep 2, would remove 3 of 5 snapshots$/m);
    assert.match(out, /^host beta, paths \S+: keep 1, would remove 1 of 2 snapshots$/m);
    // alpha: a5 is the newest; within 1d of it is after 01-03 09:00, so a4 too (and tagged).
    assert.match(line('a5'), /^ {2}keep +\S{8} +2026-01-04 09:00:00Z +last snapshot, within 1d$/);
    assert.match(line('a4'), /^ {2}keep +\S{8} +2026-01-03 10:00:00Z +nightly +within 1d, tag nightly$/);
    assert.match(line('a1'), /^ {2}remove +\S{8} +2026-01-01 10:00:00Z +keepme$/);
    assert.match(line('b2'), /^ {2}keep .* last snapshot, within 1d$/);
    assert.match(line('b1'), /^ {2}remove /);
    assert.match(out, /^dry run: would remove 4 of 7 snapshots in 2 groups; nothing was changed$/m);
    assert.ok(!out.includes(pgId.slice(0, 8)), 'the PostgreSQL backup is not listed');
  });

  test('buckets are drawn in local time unless --utc; --group-by, --host and --path', () => {
    // Tokyo: a3 (01-02 18:00Z) is 01-03 03:00, the same local day as a4; a2 is 01-02 19:00.
    const daily = (...args: string[]): string[][] => summary(okJson<Forgot>(['forget', '--keep-daily', '3', '--dry-run', ...args], env)).map((g) => g.keep.map(([l]) => l));
    assert.deepEqual(daily('--utc'), [['a5', 'a4', 'a3'], ['b2', 'b1']]);
    assert.deepEqual(daily(), [['a5', 'a4', 'a2'], ['b2', 'b1']]);
    const text = ok(['forget', '--keep-daily', '3', '--dry-run', '--host', 'alpha'], env).stdout;
    assert.match(text, /2026-01-03 03:00:00\+09:00/);

    const one = okJson<Forgot>(['forget', '--keep-last', '3', '--group-by', '', '--dry-run'], env);
    assert.deepEqual(summary(one), [{ key: {}, keep: [['a5', ['last snapshot']], ['b2', ['last snapshot']], ['a4', ['last snapshot']]], remove: ['a3', 'a2', 'b1', 'a1'] }]);
    const byTags = okJson<Forgot>(['forget', '--keep-last', '1', '--group-by', 'tags', '--dry-run'], env);
    assert.deepEqual(summary(byTags).map((g) => [g.key, g.keep.map(([l]) => l)]), [[{ tags: [] }, ['a5']], [{ tags: ['keepme'] }, ['a1']], [{ tags: ['nightly'] }, ['a4']]]);

    const beta = okJson<Forgot>(['forget', '--keep-last', '1', '--host', 'beta', '--dry-run'], env);
    assert.deepEqual(summary(beta), [{ key: { host: 'beta', paths: [src] }, keep: [['b2', ['last snapshot']]], remove: ['b1'] }]);
    const tagged = okJson<Forgot>(['forget', '--keep-last', '1', '--tag', 'nightly', '--dry-run'], env);
    assert.deepEqual(summary(tagged).map((g) => g.keep.map(([l]) => l)), [['a4']]);
    const rel = path.relative(ROOT, src); // the CLI runs in ROOT
    assert.equal(okJson<Forgot>(['forget', '--keep-last', '1', '--path', rel, '--dry-run'], env).groups.length, 2);
    const none = ok(['forget', '--keep-last', '1', '--path', path.join(dir, 'elsewhere'), '--dry-run'], env).stdout;
    assert.match(none, /^no file snapshots to consider/m);
  });

  test('refusals: no policy, bad values, ids with a policy, latest, a PostgreSQL backup', () => {
    const r = fails(['forget'], env, 2, 'USAGE', 'policy', '--keep-daily');
    assert.match(r.stderr, /hint: .*--dry-run/);
    fails(['forget', '--keep-last', '0', '--dry-run'], env, 2, 'USAGE', 'policy');
    fails(['forget', '--group-by', 'host', '--host', 'alpha'], env, 2, 'USAGE', 'policy');
    fails(['forget', '--keep-within', '1h30m'], env, 3, 'CONFIG_INVALID', '--keep-within', 'months');
    fails(['forget', '--keep-daily', 'seven'], env, 3, 'CONFIG_INVALID', '--keep-daily');
    fails(['forget', '--keep-daily', '-1'], env, 3, 'CONFIG_INVALID', '--keep-daily');
    fails(['forget', '--keep-last', '1', '--group-by', 'host,user'], env, 3, 'CONFIG_INVALID', '--group-by', 'user');
    fails(['forget', '--keep-last', '1', id['a1']!], env, 2, 'USAGE', 'not both');
    fails(['forget', '--host', 'alpha', id['a1']!], env, 2, 'USAGE', '--host');
    fails(['forget', '--group-by', 'host', id['a1']!], env, 2, 'USAGE', '--group-by');
    fails(['forget', 'latest'], env, 2, 'USAGE', 'latest');
    fails(['forget', pgId.slice(0, 12)], env, 2, 'USAGE', 'PostgreSQL', 'pg expire');
    fails(['forget', id['a2']!, pgId], env, 2, 'USAGE', 'PostgreSQL');
    fails(['forget', 'ffffffffffffffff'], env, 17, 'SNAPSHOT_NOT_FOUND');
    assert.deepEqual(remaining(), ['a1', 'a2', 'a3', 'a4', 'a5', 'b1', 'b2', 'pg'], 'a refused forget removes nothing');
    const help = ok(['forget', '--help'], {}).stdout.replace(/\s+/g, ' ');
    for (const words of ['PostgreSQL backups', 'pg expire', 'prune', 'newest snapshot of the group', '--utc', 'host and set of paths']) assert.ok(help.includes(words), `help lacks ${words}`);
  });

  test('forget removes exactly what the dry run announced; kept snapshots restore; pg backups stay', async () => {
    const args = ['forget', '--keep-daily', '2', '--keep-tag', 'keepme', '--utc'];
    const planned = okJson<Forgot>([...args, '--dry-run'], env);
    const r = okJson<Forgot>(args, env);
    assert.equal(r.dryRun, false);
    assert.deepEqual(summary(r), summary(planned));
    assert.deepEqual(r.removed.map(label), ['a3', 'a2']);
    assert.deepEqual(remaining(), ['a1', 'a4', 'a5', 'b1', 'b2', 'pg']);
    assert.deepEqual(listFiles(path.join(repo, 'locks')), [], 'the shared lock is released');

    // Run again: the policy is satisfied, nothing more goes.
    assert.match(ok(args, env).stdout, /^nothing to remove: the policy keeps all 5 snapshots in 2 groups$/m);

    const target = path.join(dir, 'restored-a4');
    ok(['restore', id['a4']!, '--target', target], env);
    assert.equal(fs.readFileSync(path.join(restoredPath(target, src), 'f.txt'), 'utf8'), 'version a4\n');
    ok(['check'], env);
  });

  test('forget SNAPSHOT-ID... removes exactly those', () => {
    const dry = ok(['forget', '--dry-run', id['b1']!.slice(0, 10)], env).stdout;
    assert.match(dry, new RegExp(`^ {2}would remove +${id['b1']!.slice(0, 8)} `, 'm'));
    assert.deepEqual(remaining(), ['a1', 'a4', 'a5', 'b1', 'b2', 'pg']);
    const r = ok(['forget', id['b1']!.slice(0, 10), id['a1']!, id['a1']!], env);
    assert.match(r.stdout, /^removed 2 of 2 snapshots; their data stays in the repository until `holdfast prune`/m);
    assert.deepEqual(remaining(), ['a4', 'a5', 'b2', 'pg']);
    expectError(cli(['forget', id['b1']!], env), ['forget', id['b1']!], 17, 'SNAPSHOT_NOT_FOUND');

    // Whatever the policy, the PostgreSQL backup is not a candidate.
    const all = okJson<Forgot>(['forget', '--keep-last', '1', '--group-by', '', '--utc'], env);
    assert.deepEqual(all.removed.map(label).sort(), ['a4', 'b2']);
    assert.deepEqual(remaining(), ['a5', 'pg']);
    ok(['check'], env);
  });
});
