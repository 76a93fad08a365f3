/**
 * Tickets of the native archive-push front (pg-archive-ticket.ts): what the key covers, and how
 * tickets are left. That the C front computes the same key is tested end to end in
 * src/cli/pg-front.test.ts (it finds the tickets the CLI leaves).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { type TicketInputs, leaveTicket, ticketKey, ticketPath, ticketText } from './pg-archive-ticket.js';

const base: TicketInputs = {
  uid: 26,
  cwd: '/var/lib/postgresql/15/main',
  args: ['pg', 'archive-push', '--async', '--cluster', 'main', 'pg_wal/000000010000000000000001'],
  env: { HOME: '/var/lib/postgresql', HOLDFAST_REPO: '/srv/repo', HOLDFAST_PASSWORD_FILE: '/etc/holdfast/pw', PATH: '/usr/bin' },
};

test('the key covers uid, directory, arguments but the WAL path, HOME, XDG_CACHE_HOME and HOLDFAST_* but the password and the front switch', () => {
  const k = ticketKey(base);
  assert.match(k, /^[0-9a-f]{64}$/);
  const same: TicketInputs[] = [
    { ...base, args: [...base.args.slice(0, -1), 'pg_wal/000000010000000000000002'] },
    { ...base, env: { ...base.env, HOLDFAST_PASSWORD: 'secret', HOLDFAST_FRONT: 'trace', HOLDFAST_FRONT_WAITED_MS: '10', PATH: '/bin', PGDATA: '/x' } },
    { ...base, env: Object.fromEntries(Object.entries(base.env).reverse()) },
  ];
  for (const i of same) assert.equal(ticketKey(i), k, JSON.stringify(i));
  const other: TicketInputs[] = [
    { ...base, uid: 0 },
    { ...base, cwd: '/tmp' },
    { ...base, args: ['pg', 'archive-push', '--async', '--cluster', 'other', 'pg_wal/000000010000000000000001'] },
    { ...base, args: ['pg', 'archive-push', '--async', '--cluster main', 'pg_wal/000000010000000000000001'] },
    { ...base, env: { ...base.env, HOME: '/root' } },
    { ...base, env: { ...base.env, XDG_CACHE_HOME: '/c' } },
    { ...base, env: { ...base.env, HOLDFAST_REPO: '/srv/other' } },
    { ...base, env: { ...base.env, HOLDFAST_STATE_DIR: '/s' } },
    { ...base, env: { ...base.env, HOLDFAST_CONFIG: '/etc/holdfast/other.conf' } },
  ];
  const keys = new Set(other.map(ticketKey));
  assert.equal(keys.size, other.length, 'each change gives its own key');
  assert.ok(!keys.has(k));
});

test('a ticket is written private, kept when identical, rewritten when changed or no longer private, and not written for relative paths', () => {
  const state = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-ticket-'));
  try {
    const uid = process.getuid!();
    const inputs = { ...base, uid };
    const t = { spoolDir: '/s/spool/abc/main', repoConfig: '/srv/repo/config', configPath: '/etc/holdfast/holdfast.conf', configDigest: 'absent', asyncTimeoutMs: 60_000 };
    const file = ticketPath(state, ticketKey(inputs));
    leaveTicket(state, inputs, t);
    assert.equal(fs.readFileSync(file, 'utf8'), ticketText(t));
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.dirname(file)).mode & 0o077, 0);
    const ino = fs.statSync(file).ino;
    leaveTicket(state, inputs, t);
    assert.equal(fs.statSync(file).ino, ino, 'an identical ticket is left alone');
    fs.chmodSync(file, 0o666);
    leaveTicket(state, inputs, t);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600, 'a ticket others could write is replaced');
    leaveTicket(state, inputs, { ...t, configDigest: 'a'.repeat(64) });
    assert.match(fs.readFileSync(file, 'utf8'), /^config a{64} \/etc\/holdfast\/holdfast.conf$/m);
    const other = { ...inputs, cwd: '/elsewhere' };
    leaveTicket(state, other, { ...t, repoConfig: 'repo/config' });
    leaveTicket(state, other, { ...t, spoolDir: '/s/new\nline' });
    assert.equal(fs.existsSync(ticketPath(state, ticketKey(other))), false);
    assert.deepEqual(fs.readdirSync(path.dirname(file)), [path.basename(file)], 'no temporary file left behind');
  } finally {
    fs.rmSync(state, { recursive: true, force: true });
  }
});
