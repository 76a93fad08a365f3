/**
 * The text forms of pg info and pg check, from hand-made results: what an operator reads for a
 * flagged backup with incomplete WAL, gaps, history files, and a failed check.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatPgInfo } from './cmd-pg-info.js';
import { formatPgCheck } from './cmd-pg-check.js';
import type { PgInfoResult } from '../ops/pg-info.js';

const info: PgInfoResult = {
  cluster: 'main',
  record: { version: 1, name: 'main', systemId: '7305187539468512345', pgVersion: 15, segSize: 16 << 20, created: '2026-11-21T10:00:00.123Z' },
  backups: [
    {
      id: 'a1b2c3d4e5f6',
      type: 'incr',
      parent: '0123456789ab',
      startTime: '2026-11-21T10:50:01.250Z',
      stopTime: '2026-11-21T10:50:03.750Z',
      durationMs: 2500,
      startLsn: '0/5000028',
      stopLsn: '0/6000100',
      startWal: '000000010000000000000005',
      stopWal: '000000010000000000000006',
      timeline: 1,
      pgVersion: 15,
      systemId: '7305187539468512345',
      pgdata: '/var/lib/postgresql/15/main',
      host: 'db1',
      files: 968,
      size: 25 << 20,
      stored: 700 << 10,
      walComplete: false,
      walMissing: ['000000010000000000000006'],
      flags: ['dataChecksums', 'corruptPages(1)'],
      corruptPages: [{ file: 'base/5/16384', block: 3, expected: 1, actual: 2, reason: 'checksum' }],
    },
  ],
  wal: {
    timelines: [
      {
        timeline: 1,
        first: '000000010000000000000001',
        last: '000000010000000000000009',
        segments: 8,
        gaps: [{ from: '000000010000000000000006', to: '000000010000000000000006', range: '000000010000000000000006..000000010000000000000006', segments: 1 }],
        missing: 1,
        partial: ['000000010000000000000009.partial'],
        backupHistory: ['000000010000000000000005.00000028.backup'],
      },
    ],
    history: [{ file: '00000002.history', timeline: 2, parents: [{ timeline: 1, switchLsn: '0/9000000', reason: 'no recovery target specified' }] }],
    other: [],
  },
};

describe('pg info text', () => {
  test('cluster, backups with flags, corrupt pages and missing WAL, timelines with gaps, history', () => {
    assert.deepEqual(formatPgInfo(info), [
      'cluster "main": system identifier 7305187539468512345, PostgreSQL 15, WAL segments of 16 MiB (bound 2026-11-21 10:00:00Z)',
      '',
      '1 backup, oldest first:',
      'backup a1b2c3d4  incr (parent 01234567)  2026-11-21 10:50:01Z .. 10:50:03Z (2.5s)',
      '  LSN 0/5000028 .. 0/6000100 on timeline 1; WAL 000000010000000000000005 .. 000000010000000000000006 (MISSING 000000010000000000000006)',
      '  size 25.0 MiB (968 files), stored 700 KiB; flags: dataChecksums, corruptPages(1)',
      '  corrupt pages (damaged on the server when read): base/5/16384 block 3',
      '',
      'WAL archive:',
      '  timeline 1: 000000010000000000000001 .. 000000010000000000000009, 8 segments, 1 missing in 1 gap',
      '    gap 000000010000000000000006..000000010000000000000006 (1 segment)',
      '    partial: 000000010000000000000009.partial',
      '    1 backup history file',
      '  00000002.history: timeline 2 branched from timeline 1 at 0/9000000 (no recovery target specified)',
    ]);
  });

  test('an unbound cluster', () => {
    const lines = formatPgInfo({ cluster: 'db2', record: null, backups: [], wal: { timelines: [], history: [], other: [] } });
    assert.deepEqual(lines, ['cluster "db2": not bound yet (no WAL archived and no backup taken under this name)', '', 'no backups', '', 'WAL archive: empty']);
  });
});

describe('pg check text', () => {
  test('one line per item, FAIL marked, a summary line', () => {
    const lines = formatPgCheck({
      ok: false,
      cluster: 'main',
      items: [
        { name: 'archive_mode', status: 'fail', message: 'archive_mode is off' },
        { name: 'archive_command', status: 'warn', message: 'names no --cluster' },
        { name: 'archiving', status: 'skip', message: 'not attempted' },
      ],
    });
    assert.deepEqual(lines, [
      'pg check of cluster "main":',
      '  FAIL  archive_mode     archive_mode is off',
      '  warn  archive_command  names no --cluster',
      '  skip  archiving        not attempted',
      '1 failed, 1 warning',
    ]);
  });
});
