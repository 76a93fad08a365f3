import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HoldfastError } from '../errors/catalogue.js';
import { recoverySettings } from './pg-restore.js';

const rc = 'holdfast pg archive-get %f %p';

function usage(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof HoldfastError && err.code === 'USAGE' && pattern.test(err.message));
}

test('recovery settings: one target at most, each validated, action only with a target', () => {
  assert.deepEqual(recoverySettings(rc, {}), [['restore_command', rc]]);
  assert.deepEqual(recoverySettings(rc, { time: '2026-11-21 10:15:00+00', action: 'promote' }), [
    ['restore_command', rc],
    ['recovery_target_time', '2026-11-21 10:15:00+00'],
    ['recovery_target_action', 'promote'],
  ]);
  assert.deepEqual(recoverySettings(rc, { lsn: '0/3000060' })[1], ['recovery_target_lsn', '0/3000060']);
  assert.deepEqual(recoverySettings(rc, { xid: '1234' })[1], ['recovery_target_xid', '1234']);
  assert.deepEqual(recoverySettings(rc, { name: 'before upgrade' })[1], ['recovery_target_name', 'before upgrade']);
  assert.deepEqual(recoverySettings(rc, { immediate: true })[1], ['recovery_target', 'immediate']);
  assert.deepEqual(recoverySettings(rc, { timeline: 'latest' })[1], ['recovery_target_timeline', 'latest']);
  usage(() => recoverySettings(rc, { time: '2026-11-21 10:15:00+00', lsn: '0/1' }), /at most one/);
  usage(() => recoverySettings(rc, { action: 'promote' }), /needs a recovery target/);
  usage(() => recoverySettings(rc, { lsn: 'nonsense' }), /not an LSN/);
  usage(() => recoverySettings(rc, { xid: '12ab' }), /not a transaction id/);
  usage(() => recoverySettings(rc, { time: 'yesterday' }), /not a timestamp/);
});

test('a target time must carry its UTC offset, so holdfast and PostgreSQL read the same moment', () => {
  usage(() => recoverySettings(rc, { time: '2026-11-21 10:15:00' }), /no UTC offset/);
  for (const ok of ['2026-11-21 10:15:00+00', '2026-11-21 10:15:00.123456+01:00', '2026-11-21 10:15:00-0530']) {
    assert.equal(recoverySettings(rc, { time: ok })[1]![1], ok, ok);
  }
  // ISO 8601 with T and Z: PostgreSQL 15 refuses "Z" in recovery_target_time, so it is written with +00.
  assert.equal(recoverySettings(rc, { time: '2026-11-21T10:15:00.5Z' })[1]![1], '2026-11-21 10:15:00.5+00');
});
