/**
 * The pure parts of pg check and pg info: judging archive_command, and WAL ranges and gaps per
 * timeline (including across a "log" boundary and with non-default segment sizes).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { archiveCommandCluster, judgeArchiveCommand } from './pg-check.js';
import { summariseTimeline } from './pg-info.js';
import { parseSegmentName } from '../wal/names.js';

describe('judgeArchiveCommand', () => {
  const push = 'holdfast pg archive-push --cluster main %p';
  test('holdfast pg archive-push for this cluster is ok', () => {
    assert.equal(judgeArchiveCommand(push, '', 'main').status, 'ok');
    assert.equal(judgeArchiveCommand('HOLDFAST_REPO=/srv/b /usr/bin/holdfast pg archive-push %p', '', 'main').status, 'ok');
    assert.equal(judgeArchiveCommand('HOLDFAST_CLUSTER=db2 holdfast pg archive-push %p', '', 'db2').status, 'ok');
    assert.equal(judgeArchiveCommand("holdfast pg archive-push --cluster='db2' %p", '', 'db2').status, 'ok');
    assert.equal(judgeArchiveCommand('node /opt/x/bin/cli.mjs pg archive-push --cluster=db2 %p', '', 'db2').status, 'ok');
  });
  test('commands that do not reach holdfast fail', () => {
    for (const cmd of ['true', '', 'cp %p /mnt/archive/%f', 'holdfast pg archive-push --cluster main']) {
      assert.equal(judgeArchiveCommand(cmd, '', 'main').status, 'fail', cmd);
    }
    assert.match(judgeArchiveCommand('true', '', 'main').message, /does not call `holdfast pg archive-push`/);
    assert.match(judgeArchiveCommand(push.replace(' %p', ''), '', 'main').message, /lacks %p/);
    assert.match(judgeArchiveCommand(push, 'basic_archive', 'main').message, /archive_library/);
    assert.equal(judgeArchiveCommand(push, 'basic_archive', 'main').status, 'fail');
  });
  test('another cluster name, or none for a cluster other than main, is a warning', () => {
    const other = judgeArchiveCommand(push, '', 'db2');
    assert.equal(other.status, 'warn');
    assert.match(other.message, /pushes to cluster "main", not "db2"/);
    const none = judgeArchiveCommand('holdfast pg archive-push %p', '', 'db2');
    assert.equal(none.status, 'warn');
    assert.match(none.message, /names no --cluster/);
    assert.equal(judgeArchiveCommand('pgbackrest --stanza=main archive-push %p', '', 'main').status, 'warn');
  });
  test('archiveCommandCluster', () => {
    assert.equal(archiveCommandCluster(push), 'main');
    assert.equal(archiveCommandCluster('x --cluster  "a.b-c" %p'), 'a.b-c');
    assert.equal(archiveCommandCluster('holdfast pg archive-push %p'), undefined);
  });
});

describe('summariseTimeline', () => {
  const segNo = (name: string, segSize?: number): bigint => parseSegmentName(name, segSize).segNo;

  test('first, last, count and no gaps for a contiguous range', () => {
    const names = ['000000010000000000000003', '000000010000000000000004', '000000010000000000000005'];
    const t = summariseTimeline(1, names.map((n) => segNo(n)), 16 << 20);
    assert.deepEqual({ first: t.first, last: t.last, segments: t.segments, gaps: t.gaps, missing: t.missing }, { first: names[0], last: names[2], segments: 3, gaps: [], missing: 0 });
  });

  test('gaps are the missing ranges between first and last, across a log boundary', () => {
    const names = ['0000000200000000000000FD', '000000020000000100000001', '000000020000000100000002', '000000020000000100000005'];
    const t = summariseTimeline(2, names.map((n) => segNo(n)).reverse(), 16 << 20);
    assert.equal(t.first, '0000000200000000000000FD');
    assert.equal(t.last, '000000020000000100000005');
    assert.deepEqual(t.gaps, [
      { from: '0000000200000000000000FE', to: '000000020000000100000000', range: '0000000200000000000000FE..000000020000000100000000', segments: 3 },
      { from: '000000020000000100000003', to: '000000020000000100000004', range: '000000020000000100000003..000000020000000100000004', segments: 2 },
    ]);
    assert.equal(t.missing, 5);
  });

  test('1 GiB segments: four per log', () => {
    const gib = 1 << 30;
    const t = summariseTimeline(1, [segNo('000000010000000000000003', gib), segNo('000000010000000100000001', gib)], gib);
    assert.deepEqual(t.gaps.map((g) => g.range), ['000000010000000100000000..000000010000000100000000']);
  });

  test('an empty timeline', () => {
    const t = summariseTimeline(3, [], 16 << 20);
    assert.deepEqual({ first: t.first, last: t.last, segments: t.segments, gaps: t.gaps }, { first: null, last: null, segments: 0, gaps: [] });
  });
});
