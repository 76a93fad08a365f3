/**
 * Smoke tests of the Patroni harness (patroni.ts) against the etcd 3.4 and Patroni 3.0 that
 * scripts/patroni-deps.sh installs: a leader bootstraps with initdb, a second member clones it with
 * pg_basebackup and streams, the DCS keys live under dcsPrefix(scope) and deletePrefix() removes
 * them, and stopping leaves nothing running. The deep-merge rules are tested without any server.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { waitUntil } from './pg.js';
import { dcsPrefix, deepMerge, patroniSkip, startEtcd, startPatroniMember, stopAllPatroni, type PatroniMember } from './patroni.js';

/** Run `fn`; on failure print the members' log tails (test output shows them) and rethrow. */
async function withLogs(t: TestContext, members: () => Array<PatroniMember | undefined>, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    for (const m of members()) if (m) t.diagnostic(`--- patroni log of ${m.name} (tail)\n${m.logTail(60)}`);
    throw err;
  }
}

describe('deepMerge', () => {
  it('merges objects recursively, replaces arrays and scalars, and removes undefined', () => {
    const base = {
      scope: 'a',
      bootstrap: { dcs: { ttl: 20, postgresql: { parameters: { wal_level: 'replica', max_wal_senders: 10 } } }, initdb: ['data-checksums'] },
      postgresql: { pg_hba: ['local all all trust'], create_replica_methods: ['basebackup'] },
      tags: { nofailover: false },
    };
    const extra = {
      scope: 'b',
      bootstrap: { dcs: { postgresql: { parameters: { archive_command: 'true' }, recovery_conf: { restore_command: 'false' } } }, initdb: ['no-sync'] },
      postgresql: { create_replica_methods: ['holdfast', 'basebackup'], holdfast: { command: '/bin/true' } },
      tags: undefined,
    };
    const merged = deepMerge(base, extra);
    assert.deepEqual(merged, {
      scope: 'b',
      bootstrap: {
        dcs: { ttl: 20, postgresql: { parameters: { wal_level: 'replica', max_wal_senders: 10, archive_command: 'true' }, recovery_conf: { restore_command: 'false' } } },
        initdb: ['no-sync'],
      },
      postgresql: { pg_hba: ['local all all trust'], create_replica_methods: ['holdfast', 'basebackup'], holdfast: { command: '/bin/true' } },
    });
  });

  it('returns a new value and changes neither argument', () => {
    const base = { a: { b: [1, 2], c: 1 } };
    const extra = { a: { d: { e: 'x' } } };
    const snapshot = JSON.stringify([base, extra]);
    const merged = deepMerge(base, extra);
    assert.equal(JSON.stringify([base, extra]), snapshot);
    (merged['a'] as { b: number[] }).b.push(3);
    ((merged['a'] as { d: { e: string } }).d).e = 'changed';
    assert.deepEqual(base.a.b, [1, 2]);
    assert.equal(extra.a.d.e, 'x');
  });

  it('lets a scalar, null or array replace an object and an object replace a scalar', () => {
    assert.deepEqual(deepMerge({ a: { b: 1 } }, { a: null }), { a: null });
    assert.deepEqual(deepMerge({ a: { b: 1 } }, { a: [1] }), { a: [1] });
    assert.deepEqual(deepMerge({ a: 'x' }, { a: { b: 1 } }), { a: { b: 1 } });
    assert.throws(() => deepMerge({}, JSON.parse('{"__proto__": {"x": 1}}') as Record<string, null>), /__proto__/);
  });
});

describe('Patroni test harness', { skip: patroniSkip(), timeout: 90_000 }, () => {
  // Every member and etcd, including those of a failed test.
  after(() => stopAllPatroni());

  it('runs a leader and a streaming replica on etcd, and deletePrefix removes the cluster', async (t) => {
    const scope = `holdfast-smoke-${process.pid}`;
    let leader: PatroniMember | undefined;
    let replica: PatroniMember | undefined;
    await withLogs(t, () => [leader, replica], async () => {
      const t0 = Date.now();
      const etcd = await startEtcd();
      assert.match(etcd.endpoint, /^127\.0\.0\.1:\d+$/);
      t.diagnostic(`etcd healthy after ${Date.now() - t0} ms`);

      // The leader: bootstrap with initdb, plus a DCS parameter from the caller (deep-merged).
      leader = await startPatroniMember({
        etcd,
        scope,
        name: 'pg1',
        config: { bootstrap: { dcs: { postgresql: { parameters: { wal_keep_size: '64MB' } } } } },
      });
      const s1 = await leader.waitRole('primary');
      t.diagnostic(`leader primary after ${Date.now() - t0} ms`);
      assert.equal(s1.timeline, 1);
      assert.equal(s1.clusterUnlocked, false);
      assert.match(s1.systemIdentifier ?? '', /^\d+$/);
      assert.equal(await leader.psql('SHOW data_checksums'), 'on');
      assert.equal(await leader.psql('SHOW wal_keep_size'), '64MB');
      assert.equal(await leader.psql('SHOW listen_addresses'), '127.0.0.1');
      assert.equal(await leader.psql('SHOW unix_socket_directories'), leader.socketDir);
      assert.equal(await leader.psql('SELECT pg_is_in_recovery()'), 'f');
      assert.equal((await leader.api('/leader')).status, 200);

      // Every key Patroni wrote is under /service/<scope>/.
      const prefix = dcsPrefix(scope);
      const all = await etcd.getPrefix('/');
      assert.ok([...all.keys()].every((k) => k.startsWith(prefix)), [...all.keys()].join(', '));
      const keys = await etcd.getPrefix(prefix);
      for (const k of ['config', 'initialize', 'leader', 'members/pg1']) assert.ok(keys.has(prefix + k), `${prefix}${k} in ${[...keys.keys()].join(', ')}`);
      assert.equal(keys.get(`${prefix}leader`), 'pg1');
      assert.equal(keys.get(`${prefix}initialize`), s1.systemIdentifier);

      // The replica: cloned with the default method (pg_basebackup), then streaming.
      replica = await startPatroniMember({ etcd, scope, name: 'pg2' });
      assert.notEqual(replica.pgPort, leader.pgPort);
      await replica.waitRole('replica');
      await replica.waitStreaming();
      t.diagnostic(`replica streaming after ${Date.now() - t0} ms`);
      assert.equal(await replica.psql('SELECT status FROM pg_stat_wal_receiver'), 'streaming');
      assert.equal(await replica.psql('SELECT pg_is_in_recovery()'), 't');
      assert.equal(await replica.psql('SELECT system_identifier FROM pg_control_system()'), s1.systemIdentifier);
      assert.equal((await replica.api('/leader')).status, 503);

      await leader.psql(['CREATE TABLE smoke (id int PRIMARY KEY, note text)', "INSERT INTO smoke VALUES (1, 'from the leader')"]);
      const r = replica;
      await waitUntil('the row on the replica', async () => (await r.psql("SELECT note FROM smoke WHERE id = 1").catch(() => '')) === 'from the leader', {
        timeoutMs: 20_000,
        intervalMs: 200,
      });

      // Stop the replica first: stopping the leader first would make the replica take over.
      await replica.stop();
      await leader.stop();
      t.diagnostic(`both stopped after ${Date.now() - t0} ms`);
      for (const m of [replica, leader]) {
        assert.equal(m.isRunning(), false);
        assert.equal(fs.existsSync(path.join(m.dataDir, 'postmaster.pid')), false, `${m.name}: PostgreSQL stopped`);
      }
      assert.match(leader.log(), /INFO: /);

      // A leader stopped gracefully releases its key; the cluster's config and initialize stay.
      const left = await etcd.getPrefix(prefix);
      assert.equal(left.has(`${prefix}leader`), false);
      assert.ok(left.has(`${prefix}config`) && left.has(`${prefix}initialize`), [...left.keys()].join(', '));
      assert.equal(await etcd.deletePrefix(prefix), left.size);
      assert.equal((await etcd.getPrefix(prefix)).size, 0);
      await assert.rejects(etcd.deletePrefix(''), /empty prefix/);

      await etcd.stop();
      assert.equal(fs.existsSync(etcd.dir), false);
      t.diagnostic(`done after ${Date.now() - t0} ms`);
    });
  });
});
