/**
 * A private etcd 3.4 and real Patroni 3.0 members on loopback, for tests of holdfast in a Patroni
 * cluster (Debian `patroni`, `etcd-server`, `etcd-client`, installed by scripts/patroni-deps.sh;
 * PostgreSQL 15 from scripts/pg-deps.sh). Used by *.test.ts only.
 *
 * startEtcd() runs a one-node etcd as a child process with its own temporary data directory and
 * client and peer URLs on free 127.0.0.1 ports, and waits (bounded) until `etcdctl endpoint health`
 * says so. startPatroniMember() writes one member's configuration and runs `patroni CONFIG` as the
 * postgres OS user; Patroni then bootstraps a cluster with initdb (the first member of a scope) or
 * clones the leader with pg_basebackup (the others), as in production.
 *
 * Layout of a member's directory (`root`, mode 0700, owned by postgres):
 *
 *     root/
 *       patroni.yml   the configuration (JSON text, which is YAML too)
 *       patroni.log   Patroni's stdout and stderr; PostgreSQL inherits them, so its log is here too
 *       data/         data_dir (unless the caller passes an existing one)
 *       sock/         unix_socket_directories
 *       pgpass        Patroni's passfile (never ~postgres/.pgpass, which members would share)
 *
 * Patroni runs as postgres through spawn()'s uid/gid rather than `runuser`: runuser answers SIGTERM
 * by passing it on and sending SIGKILL 2 s later, which would cut short the graceful shutdown a
 * test wants to see (a primary checkpoints, stops PostgreSQL and releases the leader key), and the
 * process to signal would be runuser's child instead of the one we spawned. HOME is the member's
 * root, so nothing of the real postgres account (~/.pgpass, ~/.psqlrc) leaks in.
 *
 * Patroni 3.0 with an `etcd3:` section keeps a cluster's keys under `/service/<scope>/`
 * (see dcsPrefix()): `config`, `initialize` (the system identifier), `leader` (with a lease of
 * `ttl` seconds), `members/<name>`, `status` (the leader's last WAL position, slots) and, after a
 * failover, `history`. The configuration here uses loop_wait 2, ttl 20 and retry_timeout 5, so a
 * primary that dies without releasing its key is replaced within about 20 s; a primary stopped
 * gracefully releases it at once.
 *
 * Every wait is bounded in time and count; every etcd and member still running when the process
 * exits (a failed test) is killed, PostgreSQL stopped immediately and the directories removed by an
 * exit handler (./exit-cleanup.ts). Tests should still call stopAllPatroni() in an after hook.
 *
 * @example
 * ```ts
 * describe('holdfast under Patroni', { skip: patroniSkip() }, () => {
 *   let etcd: Etcd;
 *   before(async () => (etcd = await startEtcd()));
 *   after(() => stopAllPatroni());
 *   it('archives from the leader', async () => {
 *     const pg1 = await startPatroniMember({
 *       etcd, scope: 'demo', name: 'pg1',
 *       config: { bootstrap: { dcs: { postgresql: { parameters: { archive_mode: 'on', archive_command: '…' } } } } },
 *     });
 *     await pg1.waitRole('primary');
 *     …
 *   });
 * });
 * ```
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { destroyOnExit } from './exit-cleanup.js';
import {
  PG_BIN,
  PG_OS_USER,
  baseEnv,
  chownToPostgres,
  freePort,
  libpqEnv,
  makeRoot,
  pgBin,
  pgSkip,
  postgresIds,
  postmasterPid,
  psqlArgs,
  runAsPostgres,
  runAsPostgresAsync,
  type Env,
  type RunResult,
} from './pg.js';

/** Passwords of the roles Patroni creates; every member of a cluster must use the same ones. */
export const PATRONI_PASSWORDS = { superuser: 'holdfast-test-superuser', replication: 'holdfast-test-replicator' } as const;
/** The replication role Patroni creates on bootstrap and replicas connect as. */
export const REPLICATION_USER = 'replicator';
/** Patroni's default `namespace`; the harness writes it explicitly so dcsPrefix() is right by construction. */
export const DCS_NAMESPACE = '/service';

/** Where Patroni keeps the keys of cluster `scope` in etcd: `/service/<scope>/`. */
export function dcsPrefix(scope: string): string {
  return `${DCS_NAMESPACE}/${scope}/`;
}

/** How often a wait asks the REST API (or psql) again. */
const POLL_MS = 200;

// ---------------------------------------------------------------------------------------------
// Configuration values and their merge

export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;
/** A JSON object; a property set to `undefined` in a merge's `extra` removes that property. */
export interface JsonObject {
  [key: string]: JsonValue | undefined;
}
/** A Patroni configuration (or a part to merge into one), as JSON. */
export type PatroniConfig = JsonObject;

function isObject(v: JsonValue | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * `extra` merged into `base`, as a new value (neither argument is changed): where both have an
 * object the two are merged recursively; anything else in `extra` (a scalar, null, an array)
 * replaces what `base` has, and `undefined` removes the property.
 */
export function deepMerge(base: JsonObject, extra: JsonObject): JsonObject {
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(base)) {
    if (v !== undefined) out[k] = structuredClone(v);
  }
  for (const [k, v] of Object.entries(extra)) {
    // Assigning out['__proto__'] would change the object's prototype instead of adding a key.
    if (k === '__proto__') throw new Error('deepMerge: "__proto__" is not a configuration key');
    if (v === undefined) {
      delete out[k];
      continue;
    }
    const cur = out[k];
    out[k] = isObject(cur) && isObject(v) ? deepMerge(cur, v) : structuredClone(v);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Availability

const TOOLS = ['patroni', 'etcd', 'etcdctl'] as const;

/** Absolute path of `tool` on PATH, or undefined. */
function onPath(tool: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(':')) {
    if (dir === '') continue;
    const p = path.join(dir, tool);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

let unavailable: string | null | undefined;

/** Why Patroni, etcd or etcdctl cannot run here (PostgreSQL aside), or undefined when they can. */
export function patroniUnavailableReason(): string | undefined {
  if (unavailable === undefined) unavailable = probe();
  return unavailable ?? undefined;
}

function probe(): string | null {
  for (const t of TOOLS) {
    if (!onPath(t)) return `${t} is not installed (scripts/patroni-deps.sh installs patroni, etcd-server and etcd-client)`;
  }
  // `patroni --version` imports Patroni and checks psycopg: a broken Python install shows here
  // instead of as a member that never answers.
  const v = spawnSync('patroni', ['--version'], { encoding: 'utf8', timeout: 30_000 });
  if (v.status !== 0) return `patroni --version failed: ${(v.error?.message ?? v.stderr).trim().split('\n').slice(-1)[0] ?? ''}`;
  return null;
}

/**
 * The value for node:test's `skip` option: false when etcd, Patroni and PostgreSQL can run here,
 * otherwise the reason. `HOLDFAST_SKIP_PATRONI=1` always skips; with `HOLDFAST_REQUIRE_PATRONI=1`
 * a missing component is an error instead of a skip, so the suite cannot quietly shrink.
 */
export function patroniSkip(): string | false {
  if (process.env['HOLDFAST_SKIP_PATRONI'] === '1') return 'Patroni tests skipped (HOLDFAST_SKIP_PATRONI=1)';
  const reason = patroniUnavailableReason() ?? pgSkip();
  if (reason === undefined || reason === false) return false;
  if (process.env['HOLDFAST_REQUIRE_PATRONI'] === '1') throw new Error(`HOLDFAST_REQUIRE_PATRONI=1 but ${reason}`);
  return `Patroni tests need etcd, Patroni and PostgreSQL 15: ${reason}`;
}

function requireAvailable(): void {
  const reason = patroniUnavailableReason();
  if (reason !== undefined) throw new Error(`cannot start Patroni/etcd: ${reason}`);
}

// ---------------------------------------------------------------------------------------------
// Small process helpers

/** Ports handed out by this module: freePort() may return one again before its user binds it. */
const usedPorts = new Set<number>();

async function pickPort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const p = await freePort();
    if (!usedPorts.has(p)) {
      usedPorts.add(p);
      return p;
    }
  }
  throw new Error('no free loopback port after 20 tries');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** An error that ends a poll() at once (the process it waits for has exited). */
class FatalWait extends Error {}

/**
 * Call `check` every `intervalMs` until it returns a value other than undefined, at most
 * `timeoutMs` long and `timeoutMs / intervalMs + 1` times; errors thrown by `check` count as "not
 * yet" (the last one is reported), except those it marks fatal by throwing a FatalWait.
 */
async function poll<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>, intervalMs = POLL_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  const maxTries = Math.ceil(timeoutMs / intervalMs) + 1;
  let last = '';
  for (let i = 0; i < maxTries; i++) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      if (err instanceof FatalWait) throw err;
      last = (err as Error).message;
    }
    if (Date.now() >= deadline) break;
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last})` : ''}`);
}

/** Whether a child process has not exited yet. */
function running(child: ChildProcess | undefined): child is ChildProcess {
  return child !== undefined && child.exitCode === null && child.signalCode === null;
}

/** Resolve true once `child` has exited, false after `ms` (the timer keeps the event loop alive). */
function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (!running(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.removeListener('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

function signal(child: ChildProcess, sig: NodeJS.Signals): void {
  try {
    child.kill(sig);
  } catch {
    /* already gone */
  }
}

/** If `child` runs: SIGTERM, and SIGKILL when it has not exited after `graceMs` (then wait 5 s more). */
async function terminate(child: ChildProcess | undefined, graceMs: number): Promise<void> {
  if (!running(child)) return;
  signal(child, 'SIGTERM');
  if (!(await waitExit(child, graceMs))) {
    signal(child, 'SIGKILL');
    await waitExit(child, 5_000);
  }
}

/** Run a command (as this process's user) and collect its output; SIGKILL after `timeoutMs`. */
function run(file: string, args: readonly string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      resolve({
        status: code ?? 128 + (sig ? (os.constants.signals[sig] ?? 0) : 0),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
      });
    });
  });
}

/** The whole of a log file, or '' before it exists. */
function readLog(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function readTail(file: string, lines: number): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

// ---------------------------------------------------------------------------------------------
// etcd

/** A running one-node etcd 3.4 on loopback. */
export interface Etcd {
  /** `127.0.0.1:PORT`, the form Patroni's `etcd3.hosts` and etcdctl's --endpoints take. */
  readonly endpoint: string;
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly clientPort: number;
  readonly peerPort: number;
  /** The temporary directory: `data/` and `etcd.log`. */
  readonly dir: string;
  /** Every key under `prefix` with its value, in key order (`etcdctl get --prefix`). */
  getPrefix(prefix: string): Promise<Map<string, string>>;
  /** Delete every key under `prefix` (`etcdctl del --prefix`); returns how many there were. */
  deletePrefix(prefix: string): Promise<number>;
  /** Run etcdctl (API v3) against this etcd; a non-zero exit is returned, not thrown. */
  etcdctl(args: readonly string[], timeoutMs?: number): Promise<RunResult>;
  /** etcd's log so far. */
  log(): string;
  /** Stop etcd (SIGTERM, SIGKILL after 5 s) and remove its directory; idempotent. */
  stop(): Promise<void>;
}

const liveEtcds = new Set<EtcdServer>();

/** Start a private etcd; resolves once `etcdctl endpoint health` reports it healthy (at most 30 s). */
export async function startEtcd(): Promise<Etcd> {
  requireAvailable();
  installExitHandler();
  // A port picked by pickPort() can be taken by someone else before etcd binds it: a few tries,
  // each in a fresh directory.
  for (let attempt = 1; ; attempt++) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-etcd-'));
    fs.chmodSync(dir, 0o700);
    const e = new EtcdServer(dir, await pickPort(), await pickPort());
    const failure = await e.launch();
    if (failure === undefined) return e;
    const log = e.log();
    await e.stop();
    if (!/address already in use/i.test(log) || attempt >= 3) {
      throw new Error(`etcd did not start: ${failure}\n--- etcd log (tail)\n${log.trimEnd().split('\n').slice(-20).join('\n')}`);
    }
  }
}

class EtcdServer implements Etcd {
  readonly endpoint: string;
  readonly url: string;
  private readonly logFile: string;
  private child: ChildProcess | undefined;
  private stopped: Promise<void> | undefined;

  constructor(
    readonly dir: string,
    readonly clientPort: number,
    readonly peerPort: number,
  ) {
    this.endpoint = `127.0.0.1:${clientPort}`;
    this.url = `http://${this.endpoint}`;
    this.logFile = path.join(dir, 'etcd.log');
  }

  /** Start etcd and wait until healthy; returns why it failed, or undefined. */
  async launch(): Promise<string | undefined> {
    const peerUrl = `http://127.0.0.1:${this.peerPort}`;
    const name = 'holdfast-test';
    const args = [
      `--name=${name}`,
      `--data-dir=${path.join(this.dir, 'data')}`,
      `--listen-client-urls=${this.url}`,
      `--advertise-client-urls=${this.url}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=${name}=${peerUrl}`,
      '--initial-cluster-state=new',
      // A token of its own, so this member can never join some other test's cluster.
      `--initial-cluster-token=holdfast-${process.pid}-${this.clientPort}`,
      // zap: etcd 3.4 warns that its default logger (capnslog) is deprecated.
      '--logger=zap',
      '--log-outputs=stderr',
    ];
    liveEtcds.add(this);
    const fd = fs.openSync(this.logFile, 'a', 0o600);
    try {
      // Its own process group, out of reach of a terminal's ^C (the exit handler stops it).
      this.child = spawn('etcd', args, { cwd: this.dir, stdio: ['ignore', fd, fd], env: withoutEtcdVars(process.env), detached: true });
    } finally {
      fs.closeSync(fd);
    }
    const child = this.child;
    let exited: string | undefined;
    child.on('error', (e) => (exited = `cannot run etcd: ${e.message}`));
    child.on('exit', (code, sig) => (exited ??= `etcd exited (${sig ?? `code ${code}`})`));
    child.unref(); // the exit handler kills it if a test forgets; it must not keep the process alive
    try {
      await poll('etcd to report healthy', 30_000, async () => {
        if (exited !== undefined) throw new FatalWait(exited);
        const r = await this.etcdctl(['endpoint', 'health', '--command-timeout=2s'], 5_000);
        return r.status === 0 && / is healthy/.test(r.stdout + r.stderr) ? true : undefined;
      });
      return undefined;
    } catch (err) {
      return (err as Error).message;
    }
  }

  etcdctl(args: readonly string[], timeoutMs = 30_000): Promise<RunResult> {
    const env = { ...withoutEtcdVars(process.env), ETCDCTL_API: '3' };
    return run('etcdctl', [`--endpoints=${this.url}`, ...args], env, timeoutMs);
  }

  private async ctl(args: readonly string[]): Promise<string> {
    const r = await this.etcdctl(args);
    if (r.status !== 0) throw new Error(`etcdctl ${args.join(' ')} ${r.timedOut ? 'timed out' : `exited ${r.status}`}: ${r.stderr.trim()}`);
    return r.stdout;
  }

  async getPrefix(prefix: string): Promise<Map<string, string>> {
    // JSON output: keys and values come base64-encoded, so values with newlines stay intact.
    const out = JSON.parse(await this.ctl(['get', '--prefix', '--write-out=json', '--', prefix])) as {
      kvs?: Array<{ key: string; value?: string }>;
    };
    const b64 = (s: string | undefined): string => Buffer.from(s ?? '', 'base64').toString('utf8');
    return new Map((out.kvs ?? []).map((kv) => [b64(kv.key), b64(kv.value)]));
  }

  async deletePrefix(prefix: string): Promise<number> {
    // `del --prefix ''` would empty the whole store: almost surely a bug in the caller.
    if (prefix === '') throw new Error('deletePrefix: an empty prefix would delete every key');
    const n = Number((await this.ctl(['del', '--prefix', '--', prefix])).trim());
    if (!Number.isInteger(n)) throw new Error('etcdctl del did not print a count');
    return n;
  }

  log(): string {
    return readLog(this.logFile);
  }

  stop(): Promise<void> {
    return (this.stopped ??= (async () => {
      await terminate(this.child, 5_000);
      liveEtcds.delete(this);
      fs.rmSync(this.dir, { recursive: true, force: true, maxRetries: 3 });
    })());
  }

  /** The exit handler's version of stop(). */
  stopSync(): void {
    if (running(this.child)) signal(this.child, 'SIGKILL');
    liveEtcds.delete(this);
    fs.rmSync(this.dir, { recursive: true, force: true, maxRetries: 3 });
  }
}

/** The environment without ETCD_* / ETCDCTL_* settings a developer may have (etcd reads them as flags). */
function withoutEtcdVars(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) if (!/^ETCD(CTL)?_/.test(k)) out[k] = v;
  return out;
}
// ---------------------------------------------------------------------------------------------
// Patroni members

/** Roles a member can be waited for (Patroni 3.0's "master" is reported as "primary"). */
export type PatroniRole = 'primary' | 'replica' | 'standby_leader';

/** What GET /patroni says about a member. */
export interface PatroniState {
  /**
   * PostgreSQL's state as Patroni sees it: `running`, `starting`, `stopping`, `stopped`,
   * `creating replica`, `initializing new cluster`, `running custom bootstrap script`, `crashed`, …
   */
  readonly state: string;
  /**
   * `primary`, `replica`, `standby_leader`, or while PostgreSQL is not running what Patroni last
   * set (`uninitialized`, `demoted`, …). Patroni 3.0 says `master`; it is given here as `primary`.
   */
  readonly role: string;
  /** PostgreSQL's timeline (a replica reports the leader's, as cached by Patroni). */
  readonly timeline: number | undefined;
  /** pg_control's system identifier, once PostgreSQL has run. */
  readonly systemIdentifier: string | undefined;
  /** True when no member holds the leader key. */
  readonly clusterUnlocked: boolean;
  /** The whole response. */
  readonly raw: Readonly<Record<string, unknown>>;
}

export interface ApiResponse {
  readonly status: number;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  readonly json: unknown;
  readonly text: string;
}

export interface PatroniMemberOptions {
  /** The DCS: an Etcd from startEtcd(), or anything with its `host:port` endpoint. */
  readonly etcd: { readonly endpoint: string };
  /** The cluster's name (Patroni's `scope`): members with the same scope form one cluster. */
  readonly scope: string;
  /** This member's name, unique in the cluster. */
  readonly name: string;
  /**
   * Merged into the harness's configuration with deepMerge() (objects recursively; arrays and
   * scalars replace; undefined removes), e.g. `{ bootstrap: { method: 'restore', restore: {…} } }`,
   * `{ postgresql: { create_replica_methods: ['holdfast', 'basebackup'], holdfast: {…} } }` or
   * `{ bootstrap: { dcs: { postgresql: { parameters: { archive_command: '…' } } } } }`.
   */
  readonly config?: PatroniConfig;
  /**
   * An existing data directory (owned by postgres, mode 0700 or 0750) to run on instead of a fresh
   * `root/data`. It is never removed by destroy() or the exit handler.
   */
  readonly dataDir?: string;
  /**
   * Variables for Patroni's environment, which PostgreSQL inherits, and so archive_command,
   * restore_command and custom bootstrap and replica scripts; `undefined` removes one. Patroni
   * otherwise gets this process's environment without HOLDFAST_*, PG*, PATRONI_* and ETCD*
   * variables and NODE_EXTRA_CA_CERTS, with HOME and TMPDIR set to the member's root.
   */
  readonly env?: Env;
  /** Prefix of the temporary directory's name (default `holdfast-patroni-`). */
  readonly prefix?: string;
}

/** One Patroni member: a `patroni` process and the PostgreSQL it runs. */
export interface PatroniMember {
  readonly scope: string;
  readonly name: string;
  /** The member's temporary directory (see the module comment for its layout). */
  readonly root: string;
  readonly dataDir: string;
  /** The private unix socket directory. */
  readonly socketDir: string;
  /** PostgreSQL's port on 127.0.0.1. */
  readonly pgPort: number;
  /** The REST API's port on 127.0.0.1. */
  readonly apiPort: number;
  readonly configFile: string;
  readonly logFile: string;
  /** The configuration written to configFile (after merging). */
  readonly config: PatroniConfig;
  /** libpq environment that reaches this member's PostgreSQL: PGHOST (the socket directory), PGPORT, PGUSER, PGDATABASE. */
  readonly env: Record<string, string>;
  /** Whether the patroni process runs (PostgreSQL may run without it after kill('patroni')). */
  isRunning(): boolean;
  /** GET /patroni, normalised; throws when the REST API does not answer within 5 s. */
  state(): Promise<PatroniState>;
  /** A request to the REST API (GET unless `method` is given; `body` is sent as JSON). Never throws on an HTTP status. */
  api(urlPath: string, opts?: { method?: string; body?: unknown; timeoutMs?: number }): Promise<ApiResponse>;
  /**
   * Wait until PostgreSQL runs with `role` (for `primary` and `standby_leader`: and the cluster
   * has a leader, i.e. this member holds the key). Default timeout 60 s. Fails at once if the
   * patroni process exits; errors carry the log's tail.
   */
  waitRole(role: PatroniRole, timeoutMs?: number): Promise<PatroniState>;
  /** Wait until Patroni reports PostgreSQL `running`, in any role. Default timeout 60 s. */
  waitRunning(timeoutMs?: number): Promise<PatroniState>;
  /** Wait until `pg_stat_wal_receiver` says `streaming` (a replica connected to its upstream). Default 60 s. */
  waitStreaming(timeoutMs?: number): Promise<void>;
  /**
   * Run SQL with `psql -X -q -A -t -v ON_ERROR_STOP=1` as postgres over the member's socket and
   * return trimmed stdout; an array gives one `-c` per element (each commits on its own).
   */
  psql(sql: string | readonly string[], opts?: { database?: string; timeoutMs?: number }): Promise<string>;
  /** Patroni's log so far (with PostgreSQL's, which goes to the same file). */
  log(): string;
  /** The last `lines` lines of the log. */
  logTail(lines?: number): string;
  /**
   * Start patroni again after stop() or kill(), with the same configuration, ports and data;
   * resolves once its REST API answers.
   */
  start(): Promise<void>;
  /**
   * Graceful stop: SIGTERM to patroni, which stops PostgreSQL (a primary releases the leader key);
   * after `timeoutMs` (default 60 s) SIGKILL, and then `pg_ctl stop -m immediate` if PostgreSQL
   * still runs. Files are kept. Idempotent.
   */
  stop(timeoutMs?: number): Promise<void>;
  /**
   * Hard stop, as a crash would: SIGKILL to patroni, and unless `what` is `'patroni'` an immediate
   * shutdown of PostgreSQL (the leader key stays until its ttl runs out). Files are kept.
   */
  kill(what?: 'all' | 'patroni'): Promise<void>;
  /** kill() and remove the member's directory (not a data directory passed in). Idempotent. */
  destroy(): Promise<void>;
}

const liveMembers = new Set<Member>();

/** Scope and member names become etcd keys and file names: keep them plain. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/**
 * Write a member's configuration and start patroni as postgres; resolves once its REST API
 * answers (Patroni has reached etcd), before PostgreSQL runs: use waitRole()/waitRunning().
 * On failure everything created is removed and the error carries the log's tail.
 */
export async function startPatroniMember(opts: PatroniMemberOptions): Promise<PatroniMember> {
  requireAvailable();
  for (const [what, v] of [['scope', opts.scope], ['name', opts.name]] as const) {
    if (!NAME.test(v)) throw new Error(`Patroni ${what} ${JSON.stringify(v)}: use letters, digits, '_', '.', '-'`);
  }
  installExitHandler();
  const root = makeRoot(opts.prefix ?? 'holdfast-patroni-');
  const socketDir = path.join(root, 'sock');
  fs.mkdirSync(socketDir, { mode: 0o700 });
  chownToPostgres(socketDir);
  const m = new Member(opts, root, socketDir);
  liveMembers.add(m);
  try {
    // A free port can be taken before patroni binds it; a taken REST port makes patroni exit at
    // once, so it is tried again with new ports. (A taken PostgreSQL port shows only later, as a
    // server that fails to start, and is not retried: see the log.)
    for (let attempt = 1; ; attempt++) {
      m.configure(await pickPort(), await pickPort());
      try {
        await m.start();
        return m;
      } catch (err) {
        if (m.isRunning() || !/Address already in use/i.test(m.logTail(30)) || attempt >= 3) throw err;
      }
    }
  } catch (err) {
    await m.destroy();
    throw err;
  }
}

/** Destroy every member, then stop every etcd, this process started (for a suite's after hook). */
export async function stopAllPatroni(): Promise<void> {
  await Promise.all([...liveMembers].map((m) => m.destroy()));
  await Promise.all([...liveEtcds].map((e) => e.stop()));
}

/** The harness's part of a member's configuration; the caller's `config` is merged over it. */
function harnessConfig(m: { scope: string; name: string; etcd: string; apiPort: number; pgPort: number; root: string; dataDir: string; socketDir: string }): PatroniConfig {
  const api = `127.0.0.1:${m.apiPort}`;
  const pg = `127.0.0.1:${m.pgPort}`;
  return {
    scope: m.scope,
    name: m.name,
    namespace: DCS_NAMESPACE,
    restapi: { listen: api, connect_address: api },
    etcd3: { hosts: [m.etcd] },
    bootstrap: {
      // Written to the DCS by the member that bootstraps; the others read it from there.
      // loop_wait + 2 * retry_timeout must stay below ttl (Patroni's rule).
      dcs: { ttl: 20, loop_wait: 2, retry_timeout: 5, maximum_lag_on_failover: 1048576 },
      initdb: ['data-checksums', { encoding: 'UTF8' }, { locale: 'C' }],
    },
    postgresql: {
      listen: pg,
      connect_address: pg,
      data_dir: m.dataDir,
      bin_dir: PG_BIN,
      pgpass: path.join(m.root, 'pgpass'),
      authentication: {
        superuser: { username: 'postgres', password: PATRONI_PASSWORDS.superuser },
        replication: { username: REPLICATION_USER, password: PATRONI_PASSWORDS.replication },
      },
      parameters: { unix_socket_directories: m.socketDir },
      // Trust on loopback and the private socket: these servers are reachable by nobody else.
      pg_hba: [
        'local all all trust',
        'local replication all trust',
        'host all all 127.0.0.1/32 trust',
        'host replication all 127.0.0.1/32 trust',
      ],
    },
    // No /dev/watchdog in a test.
    watchdog: { mode: 'off' },
  };
}

/**
 * Patroni's environment: a PostgreSQL server's (pg.ts's baseEnv) without PATRONI_* and ETCD*
 * variables either, with the member's HOME, USER, LOGNAME and TMPDIR, then `extra`.
 */
function patroniEnv(root: string, extra: Env): Record<string, string> {
  // What runuser would set, but HOME is the member's root: see the module comment. Patroni's
  // initdb password file (tempfile.mkstemp) goes to TMPDIR, which must be writable by postgres.
  const member = { HOME: root, USER: PG_OS_USER, LOGNAME: PG_OS_USER, TMPDIR: root };
  return baseEnv({ ...member, ...extra }, true, /^(PATRONI_|ETCD)/);
}

function toState(raw: Record<string, unknown>): PatroniState {
  const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined);
  const role = str(raw['role']) ?? 'unknown';
  return {
    state: str(raw['state']) ?? 'unknown',
    role: role === 'master' ? 'primary' : role,
    timeline: typeof raw['timeline'] === 'number' ? raw['timeline'] : undefined,
    systemIdentifier: str(raw['database_system_identifier']),
    clusterUnlocked: raw['cluster_unlocked'] === true,
    raw,
  };
}

/** Whether `pid` is a live (not zombie) process of the postgres user running `postgres`. */
function isPostgresProcess(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const zombie = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
    return !zombie && comm === 'postgres' && fs.statSync(`/proc/${pid}`).uid === postgresIds().uid;
  } catch {
    return false;
  }
}

/** The postmaster's pid from postmaster.pid when that process is really a live postgres. */
function livePostmaster(dataDir: string): number | undefined {
  const pid = postmasterPid(dataDir);
  return pid !== undefined && isPostgresProcess(pid) ? pid : undefined;
}

class Member implements PatroniMember {
  readonly scope: string;
  readonly name: string;
  readonly dataDir: string;
  readonly configFile: string;
  readonly logFile: string;
  private ports = { pg: 0, api: 0 };
  private cfg: PatroniConfig = {};
  private child: ChildProcess | undefined;
  /** Why the current patroni process ended, once it has. */
  private exited: string | undefined;
  private destroyed: Promise<void> | undefined;

  constructor(
    private readonly opts: PatroniMemberOptions,
    readonly root: string,
    readonly socketDir: string,
  ) {
    this.scope = opts.scope;
    this.name = opts.name;
    this.dataDir = opts.dataDir ?? path.join(root, 'data');
    this.configFile = path.join(root, 'patroni.yml');
    this.logFile = path.join(root, 'patroni.log');
  }

  get pgPort(): number {
    return this.ports.pg;
  }

  get apiPort(): number {
    return this.ports.api;
  }

  get config(): PatroniConfig {
    return this.cfg;
  }

  get env(): Record<string, string> {
    return libpqEnv(this.socketDir, this.pgPort);
  }

  /** (Re)write the configuration file for these ports. */
  configure(pgPort: number, apiPort: number): void {
    this.ports = { pg: pgPort, api: apiPort };
    const base = harnessConfig({
      scope: this.scope,
      name: this.name,
      etcd: this.opts.etcd.endpoint,
      apiPort,
      pgPort,
      root: this.root,
      dataDir: this.dataDir,
      socketDir: this.socketDir,
    });
    this.cfg = deepMerge(base, this.opts.config ?? {});
    // JSON is YAML; patroni only reads the file, but it must be able to (0600, owned by postgres).
    fs.writeFileSync(this.configFile, `${JSON.stringify(this.cfg, null, 2)}\n`, { mode: 0o600 });
    chownToPostgres(this.configFile);
  }

  isRunning(): boolean {
    return running(this.child);
  }

  async start(): Promise<void> {
    if (this.destroyed) throw new Error(`Patroni member ${this.name} was destroyed`);
    if (running(this.child)) return;
    const ids = postgresIds();
    const asPostgres = process.getuid?.() === ids.uid ? {} : { uid: ids.uid, gid: ids.gid };
    const fd = fs.openSync(this.logFile, 'a', 0o600);
    let child: ChildProcess;
    try {
      // Its own process group: a terminal's ^C reaches the test runner, whose exit handler then
      // stops members in order, not patroni directly.
      child = spawn('patroni', [this.configFile], {
        cwd: this.root,
        stdio: ['ignore', fd, fd],
        env: patroniEnv(this.root, this.opts.env ?? {}),
        detached: true,
        ...asPostgres,
      });
    } finally {
      fs.closeSync(fd);
    }
    this.child = child;
    this.exited = undefined;
    child.on('error', (e) => (this.exited = `cannot run patroni: ${e.message}`));
    child.on('exit', (code, sig) => {
      if (this.child === child) this.exited ??= `patroni exited (${sig ?? `code ${code}`})`;
    });
    child.unref(); // the exit handler kills it if a test forgets; it must not keep the process alive
    // The REST API comes up after Patroni has read (or waited for) the DCS.
    await this.explain(poll(`the REST API of ${this.name} on port ${this.apiPort}`, 30_000, async () => {
      this.assertAlive();
      const r = await this.api('/patroni', { timeoutMs: 2_000 });
      return r.status === 200 ? true : undefined;
    }));
  }

  /** Throw a FatalWait (ends a poll) when the patroni process has exited. */
  private assertAlive(): void {
    if (this.exited !== undefined) throw new FatalWait(this.exited);
    if (!running(this.child)) throw new FatalWait('patroni is not running');
  }

  /** `p`, with the log's tail added to its error. */
  private async explain<T>(p: Promise<T>): Promise<T> {
    try {
      return await p;
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- patroni log of ${this.name} (tail)\n${this.logTail(40)}`, { cause: err });
    }
  }

  async api(urlPath: string, opts: { method?: string; body?: unknown; timeoutMs?: number } = {}): Promise<ApiResponse> {
    const init: RequestInit = { method: opts.method ?? 'GET', signal: AbortSignal.timeout(opts.timeoutMs ?? 5_000) };
    if (opts.body !== undefined) {
      init.body = JSON.stringify(opts.body);
      init.headers = { 'content-type': 'application/json' };
    }
    const r = await fetch(`http://127.0.0.1:${this.apiPort}${urlPath}`, init);
    const text = await r.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: r.status, json, text };
  }

  async state(): Promise<PatroniState> {
    const r = await this.api('/patroni');
    if (typeof r.json !== 'object' || r.json === null || Array.isArray(r.json)) {
      throw new Error(`GET /patroni answered ${r.status}: ${r.text.slice(0, 200)}`);
    }
    return toState(r.json as Record<string, unknown>);
  }

  waitRole(role: PatroniRole, timeoutMs = 60_000): Promise<PatroniState> {
    const leads = role === 'primary' || role === 'standby_leader';
    let last: PatroniState | undefined;
    const waited = poll(`${this.name} to run as ${role}`, timeoutMs, async () => {
      this.assertAlive();
      last = await this.state();
      return last.state === 'running' && last.role === role && !(leads && last.clusterUnlocked) ? last : undefined;
    });
    return this.explain(waited.catch((err: Error) => {
      throw new Error(`${err.message}; last state: ${last ? `${last.state}/${last.role}` : 'none'}`);
    }));
  }

  waitRunning(timeoutMs = 60_000): Promise<PatroniState> {
    return this.explain(poll(`${this.name} to report PostgreSQL running`, timeoutMs, async () => {
      this.assertAlive();
      const s = await this.state();
      return s.state === 'running' ? s : undefined;
    }));
  }

  async waitStreaming(timeoutMs = 60_000): Promise<void> {
    await this.explain(poll(`${this.name} to stream WAL`, timeoutMs, async () => {
      this.assertAlive();
      const status = await this.psql('SELECT status FROM pg_stat_wal_receiver', { timeoutMs: 5_000 });
      return status === 'streaming' ? true : undefined;
    }, 250));
  }

  async psql(sql: string | readonly string[], opts: { database?: string; timeoutMs?: number } = {}): Promise<string> {
    const statements = typeof sql === 'string' ? [sql] : sql;
    const r = await runAsPostgresAsync(pgBin('psql'), psqlArgs(this.socketDir, this.pgPort, statements, opts.database), {}, { cwd: this.root, timeoutMs: opts.timeoutMs ?? 60_000 });
    if (r.status !== 0) {
      const how = r.timedOut ? 'timed out' : `exited ${r.status}`;
      throw new Error(`psql on ${this.name} -c ${JSON.stringify(statements.join('; ')).slice(0, 300)} ${how}: ${r.stderr.trim()}`);
    }
    return r.stdout.trim();
  }

  log(): string {
    return readLog(this.logFile);
  }

  logTail(lines = 40): string {
    return readTail(this.logFile, lines);
  }

  async stop(timeoutMs = 60_000): Promise<void> {
    await terminate(this.child, timeoutMs);
    await this.stopPostgres();
  }

  async kill(what: 'all' | 'patroni' = 'all'): Promise<void> {
    const child = this.child;
    if (running(child)) {
      signal(child, 'SIGKILL');
      await waitExit(child, 10_000);
    }
    if (what === 'all') await this.stopPostgres();
  }

  /** Immediate shutdown of a PostgreSQL that outlived patroni; SIGKILL if pg_ctl cannot. */
  private async stopPostgres(): Promise<void> {
    if (livePostmaster(this.dataDir) === undefined) return;
    const r = await runAsPostgresAsync(pgBin('pg_ctl'), ['-D', this.dataDir, '-w', '-t', '30', 'stop', '-m', 'immediate'], {}, { cwd: this.root, timeoutMs: 40_000 });
    const pid = livePostmaster(this.dataDir);
    if (r.status !== 0 && pid !== undefined) process.kill(pid, 'SIGKILL');
  }

  destroy(): Promise<void> {
    return (this.destroyed ??= (async () => {
      try {
        await this.kill('all');
      } finally {
        this.removeFiles();
      }
    })());
  }

  /** The exit handler's version of destroy(): synchronous, and every step bounded. */
  destroySync(): void {
    if (running(this.child)) signal(this.child, 'SIGKILL');
    const pid = livePostmaster(this.dataDir);
    if (pid !== undefined) {
      const r = runAsPostgres(pgBin('pg_ctl'), ['-D', this.dataDir, '-w', '-t', '10', 'stop', '-m', 'immediate'], {}, { timeoutMs: 15_000 });
      if (r.status !== 0 && livePostmaster(this.dataDir) !== undefined) process.kill(pid, 'SIGKILL');
    }
    this.removeFiles();
  }

  private removeFiles(): void {
    liveMembers.delete(this);
    // A data directory passed in lives outside root and belongs to the caller; root holds the rest.
    fs.rmSync(this.root, { recursive: true, force: true, maxRetries: 3 });
  }
}

// ---------------------------------------------------------------------------------------------
// Exit cleanup

/** Kill what a failed or interrupted test left behind (see ./exit-cleanup.ts): members, then etcds. */
function installExitHandler(): void {
  destroyOnExit(liveMembers, (m) => m.destroySync());
  destroyOnExit(liveEtcds, (e) => e.stopSync());
}
