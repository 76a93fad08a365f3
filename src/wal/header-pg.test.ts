/**
 * The WAL module against segments written by a real PostgreSQL 15 (Debian `postgresql-15`).
 * Skipped, with the reason, when PostgreSQL 15 is not installed or when this process can neither
 * run it as the `postgres` user (root) nor is that user. The unit tests (names.test.ts,
 * header.test.ts) do not need PostgreSQL; this file checks that what they assume is what
 * PostgreSQL writes:
 * - `initdb -k` leaves pg_wal/000000010000000000000001 without starting a server; its header
 *   must carry the system identifier `pg_controldata` prints, the segment size and WAL block size
 *   it prints, and the page address of the name;
 * - promoting after archive recovery creates timeline 2, whose first segment is a copy of the old
 *   timeline's: header timeline 1 under a timeline-2 name (why checkSegment allows an earlier
 *   header timeline), and 00000002.history, which must parse.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { WalMismatchError } from './errors.js';
import { WAL_LONG_HEADER_SIZE, checkSegment, parseWalHeader } from './header.js';
import { classifyWalName, parseLsn, parseTimelineHistory, segNoOfLsn, segmentLsnRange } from './names.js';

const PG_BIN = '/usr/lib/postgresql/15/bin';

function skipReason(): string | undefined {
  if (!fs.existsSync(path.join(PG_BIN, 'initdb'))) return `PostgreSQL 15 is not installed (${PG_BIN}/initdb is missing); install postgresql-15 to run these tests`;
  if (process.platform !== 'linux') return 'needs Linux (runuser) to run PostgreSQL';
  if (process.getuid?.() === 0) {
    const id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    if (id.status !== 0) return 'running as root, but there is no postgres OS user to run PostgreSQL as';
    return undefined;
  }
  if (os.userInfo().username !== 'postgres') return 'PostgreSQL refuses to run as root and these tests start it as the postgres user: run them as root or as postgres';
  return undefined;
}

const SKIP = skipReason();

/** Run a PostgreSQL program as the postgres user; throws with its output when it fails. */
function pg(program: string, args: string[]): string {
  const bin = path.join(PG_BIN, program);
  const [cmd, argv] = process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
  const r = spawnSync(cmd, argv, { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C', LANG: 'C' }, timeout: 120_000 });
  if (r.status !== 0) throw new Error(`${program} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** A temporary directory the postgres user owns; removed by the returned function. */
function pgTmpDir(): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-wal-pg-'));
  if (process.getuid?.() === 0) {
    const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim());
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
    fs.chownSync(dir, uid, gid);
  }
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

function controlData(dataDir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of pg('pg_controldata', ['-D', dataDir]).split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  return out;
}

function firstPage(file: string): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(8192);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

describe('real PostgreSQL 15 WAL', { skip: SKIP ?? false, timeout: 300_000 }, () => {
  test('the segment initdb writes: header fields agree with pg_controldata and the name', () => {
    const { dir, cleanup } = pgTmpDir();
    try {
      const data = path.join(dir, 'data');
      pg('initdb', ['-k', '-A', 'trust', '-D', data]);
      const control = controlData(data);
      const sysid = BigInt(control.get('Database system identifier') ?? 'missing');
      const segSize = Number(control.get('Bytes per WAL segment'));
      const blockSize = Number(control.get('WAL block size'));
      assert.equal(segSize, 16 * 1024 * 1024);

      const names = fs.readdirSync(path.join(data, 'pg_wal')).sort();
      assert.deepEqual(names, ['000000010000000000000001', 'archive_status']);
      assert.equal(classifyWalName('000000010000000000000001'), 'segment');
      assert.equal(classifyWalName('archive_status'), undefined);

      const file = path.join(data, 'pg_wal', '000000010000000000000001');
      const buf = firstPage(file);
      const h = parseWalHeader(buf);
      assert.equal(h.magic, 0xd110, 'XLOG_PAGE_MAGIC of PostgreSQL 15');
      assert.equal(h.pgVersion, 15);
      assert.equal(h.systemId, sysid, 'xlp_sysid is pg_controldata\'s "Database system identifier"');
      assert.equal(h.segSize, segSize);
      assert.equal(h.blockSize, blockSize);
      assert.equal(h.timeline, 1);
      assert.equal(h.pageAddress, 0x1000000n);
      assert.equal(buf.subarray(20, 24).readUInt32LE(0), 0, 'the padding at offset 20 is zero');

      const ok = checkSegment(buf, { systemId: sysid, segmentName: '000000010000000000000001', segSize, pgVersion: 15, fileSize: fs.statSync(file).size });
      assert.equal(ok.systemId, sysid);
      assert.equal(checkSegment(buf.subarray(0, WAL_LONG_HEADER_SIZE), { systemId: sysid }).segSize, segSize, 'the first 40 bytes are enough');
      assert.throws(() => checkSegment(buf, { systemId: sysid + 1n }), (e: unknown) => e instanceof WalMismatchError && e.reason === 'system-id' && /belongs to another cluster/.test(e.message));
      assert.throws(() => checkSegment(buf, { segmentName: '000000010000000000000002' }), (e: unknown) => e instanceof WalMismatchError && e.reason === 'page-address');

      // the checkpoint initdb wrote is in this segment
      const redo = parseLsn(control.get("Latest checkpoint's REDO location") ?? 'missing');
      const { start, end } = segmentLsnRange('000000010000000000000001');
      assert.ok(start <= redo && redo < end);
      assert.equal(control.get("Latest checkpoint's REDO WAL file"), '000000010000000000000001');
    } finally {
      cleanup();
    }
  });

  test('after promotion: timeline 2 starts as a copy of timeline 1, and the history file parses', () => {
    const { dir, cleanup } = pgTmpDir();
    const data = path.join(dir, 'data');
    let running = false;
    try {
      pg('initdb', ['-k', '-A', 'trust', '-D', data]);
      // Unix socket in our own directory, no TCP: nothing to collide with on this machine.
      fs.appendFileSync(path.join(data, 'postgresql.conf'), `\nlisten_addresses = ''\nunix_socket_directories = '${dir}'\nport = 5432\n`);
      pg('pg_ctl', ['-D', data, '-l', path.join(dir, 'log'), '-w', '-t', '120', 'start']);
      running = true;
      pg('pg_ctl', ['-D', data, '-m', 'fast', '-w', '-t', '120', 'stop']);
      running = false;

      // Archive recovery with nothing to restore ends at the end of pg_wal and promotes.
      fs.appendFileSync(path.join(data, 'postgresql.conf'), "restore_command = 'false'\n");
      fs.writeFileSync(path.join(data, 'recovery.signal'), '');
      if (process.getuid?.() === 0) {
        const st = fs.statSync(path.join(data, 'postgresql.conf'));
        fs.chownSync(path.join(data, 'recovery.signal'), st.uid, st.gid);
      }
      pg('pg_ctl', ['-D', data, '-l', path.join(dir, 'log'), '-w', '-t', '120', 'start']);
      running = true;
      const history = path.join(data, 'pg_wal', '00000002.history');
      for (let i = 0; i < 600 && !fs.existsSync(history); i++) sleep(100);
      pg('pg_ctl', ['-D', data, '-m', 'fast', '-w', '-t', '120', 'stop']);
      running = false;

      const walNames = fs.readdirSync(path.join(data, 'pg_wal')).filter((n) => n !== 'archive_status');
      for (const n of walNames) assert.notEqual(classifyWalName(n), undefined, n);
      assert.ok(walNames.includes('00000002.history'), `pg_wal holds ${walNames.join(', ')}`);

      const sysid = BigInt(controlData(data).get('Database system identifier') ?? 'missing');
      const switches = parseTimelineHistory(fs.readFileSync(history), 2);
      assert.equal(switches.length, 1);
      assert.equal(switches[0]!.timeline, 1);
      assert.equal(switches[0]!.reason, 'no recovery target specified');

      // The switch happened inside segment 1, so PostgreSQL copied it to timeline 2.
      assert.equal(segNoOfLsn(switches[0]!.switchLsn), 1n);
      const copy = firstPage(path.join(data, 'pg_wal', '000000020000000000000001'));
      const h = checkSegment(copy, { systemId: sysid, segmentName: '000000020000000000000001', segSize: 16 * 1024 * 1024, pgVersion: 15 });
      assert.equal(h.timeline, 1, 'the first page of the new timeline\'s file keeps the old timeline');
      assert.equal(h.pageAddress, 0x1000000n);
    } finally {
      if (running) {
        try {
          pg('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
        } catch {
          // already stopped
        }
      }
      cleanup();
    }
  });
});
