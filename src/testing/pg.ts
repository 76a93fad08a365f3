/**
 * Real PostgreSQL 15 clusters for tests (Debian `postgresql-15`, installed by scripts/pg-deps.sh).
 * Used by *.test.ts only.
 *
 * PostgreSQL refuses to run as root, so every cluster belongs to the `postgres` OS user: its
 * temporary directory (mode 0700, under os.tmpdir()) is chowned to postgres, and initdb, pg_ctl and
 * psql run through `runuser -u postgres --` (directly when the test already runs as postgres).
 * Each cluster gets data checksums (`initdb -k`), a free loopback TCP port and a private socket
 * directory, so clusters never meet each other or a Debian-managed cluster.
 *
 * Layout of a cluster's directory (`root`):
 *
 *     root/            0700 postgres
 *       data/          the data directory (PGDATA)
 *       sock/          unix_socket_directories
 *       postgres.log   server log (pg_ctl -l), see logTail()
 *       <name>/        directories made with makeDir(), e.g. a WAL archive
 *
 * Every spawned command has a timeout, and every cluster still alive when the process exits
 * (a failed test, a crash) is stopped immediately and removed by an exit handler. Tests should
 * still call destroy() in an after/afterEach hook.
 *
 * @example
 * ```ts
 * import { after, before, describe, it } from 'node:test';
 * import { pgSkip, startCluster, type PgCluster } from '../testing/pg.js';
 *
 * describe('archive-push', { skip: pgSkip() }, () => {
 *   let pg: PgCluster;
 *   before(async () => {
 *     pg = await startCluster({ conf: { archive_mode: 'on', archive_command: 'holdfast pg archive-push %p' } });
 *   });
 *   after(() => pg?.destroy());
 *   it('archives a switched segment', async () => {
 *     await pg.psql('CREATE TABLE t AS SELECT generate_series(1, 1000) AS i');
 *     const seg = await pg.switchWal(); // its own statement, after the writes it should close
 *     // ... wait (bounded) until seg is in the repository
 *   });
 * });
 * ```
 *
 * Environment rules: commands run as postgres inherit this process's environment minus
 * `HOLDFAST_*` and libpq's `PG*` variables (a developer's settings must not leak into a test),
 * plus what the caller passes; a value of `undefined` removes a variable. The server itself (and
 * so archive_command / restore_command) additionally runs without `NODE_EXTRA_CA_CERTS`, as a real
 * server's environment would (see BRIEF §4); pass `env` to startCluster() to give it variables.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { destroyOnExit } from './exit-cleanup.js';

/** Where Debian's postgresql-15 puts the server binaries and tools. */
export const PG_BIN = '/usr/lib/postgresql/15/bin';
/** The OS user that owns every test cluster. */
export const PG_OS_USER = 'postgres';
/** Tools the harness itself needs; pg-deps.sh also checks pgbench, pg_amcheck, pg_waldump, pg_controldata. */
const REQUIRED_TOOLS = ['initdb', 'pg_ctl', 'postgres', 'psql'] as const;
/** Unix socket paths are limited to 107 bytes; `.s.PGSQL.NNNNN` is appended to the directory. */
const MAX_SOCKET_DIR = 90;

export type Env = Record<string, string | undefined>;

export interface RunOptions {
  /** Working directory (default `/`, which every user can enter). */
  cwd?: string;
  /** Standard input (default: empty). */
  input?: string;
  /** Kill the command after this long (default 120 s); a timed-out command reports `timedOut`. */
  timeoutMs?: number;
}

export interface RunResult {
  /** Exit status; 128 + signal number when killed by a signal. */
  status: number;
  stdout: string;
  stderr: string;
  /** True when the command was killed because it ran past its timeout. */
  timedOut: boolean;
}

/** Path of a PostgreSQL tool, e.g. `pgBin('pgbench')`. */
export function pgBin(tool: string): string {
  return path.join(PG_BIN, tool);
}

// ---------------------------------------------------------------------------------------------
// Availability

let unavailable: string | null | undefined;

/**
 * Why real-PostgreSQL tests cannot run here, or undefined when they can: the binaries are missing,
 * the postgres OS user is missing, or we are neither root (with runuser) nor postgres.
 */
export function pgUnavailableReason(): string | undefined {
  if (unavailable === undefined) unavailable = probe();
  return unavailable ?? undefined;
}

function probe(): string | null {
  for (const t of REQUIRED_TOOLS) {
    try {
      fs.accessSync(pgBin(t), fs.constants.X_OK);
    } catch {
      return `PostgreSQL 15 is not installed (${pgBin(t)} missing; scripts/pg-deps.sh installs it)`;
    }
  }
  let ids: { uid: number; gid: number };
  try {
    ids = postgresIds();
  } catch {
    return `the ${PG_OS_USER} OS user does not exist (the postgresql-15 package creates it)`;
  }
  const uid = process.getuid?.();
  if (uid === ids.uid) return null;
  if (uid !== 0) return `tests must run as root or as ${PG_OS_USER} to start PostgreSQL (running as uid ${uid ?? '?'})`;
  const r = spawnSync('runuser', ['-u', PG_OS_USER, '--', 'true'], { stdio: 'ignore', timeout: 10_000 });
  if (r.status !== 0) return `runuser -u ${PG_OS_USER} does not work here (${r.error?.message ?? `exit ${r.status}`})`;
  return null;
}

/** Whether real-PostgreSQL tests can run here. */
export function pgAvailable(): boolean {
  return pgUnavailableReason() === undefined;
}

/**
 * The value for node:test's `skip` option: false when PostgreSQL is available, otherwise the
 * reason (node:test prints it). With `HOLDFAST_REQUIRE_PG=1` an unavailable PostgreSQL is an error
 * instead of a skip, for machines where the suite must not quietly shrink.
 */
export function pgSkip(): string | false {
  const reason = pgUnavailableReason();
  if (reason === undefined) return false;
  if (process.env['HOLDFAST_REQUIRE_PG'] === '1') throw new Error(`HOLDFAST_REQUIRE_PG=1 but ${reason}`);
  return `real PostgreSQL unavailable: ${reason}`;
}

let ids: { uid: number; gid: number } | undefined;

/** uid and gid of the postgres OS user (throws when it does not exist). */
export function postgresIds(): { uid: number; gid: number } {
  if (ids) return ids;
  const u = spawnSync('id', ['-u', PG_OS_USER], { encoding: 'utf8', timeout: 10_000 });
  const g = spawnSync('id', ['-g', PG_OS_USER], { encoding: 'utf8', timeout: 10_000 });
  if (u.status !== 0 || g.status !== 0) throw new Error(`no ${PG_OS_USER} OS user: ${u.stderr}${g.stderr}`.trim());
  ids = { uid: Number(u.stdout.trim()), gid: Number(g.stdout.trim()) };
  return ids;
}

/** Give a file or directory (recursively with `recursive`) to the postgres OS user. */
export function chownToPostgres(p: string, recursive = false): void {
  const { uid, gid } = postgresIds();
  if (process.getuid?.() === uid) return;
  fs.chownSync(p, uid, gid);
  if (recursive && fs.lstatSync(p).isDirectory()) {
    for (const e of fs.readdirSync(p)) chownToPostgres(path.join(p, e), true);
  }
}

// ---------------------------------------------------------------------------------------------
// Running commands as postgres

/**
 * This process's environment for commands run as postgres (see the module comment): without
 * HOLDFAST_* and PG* variables, for a server (`forServer`) also without NODE_EXTRA_CA_CERTS, and
 * without those whose names match `drop`; then `extra` is added (`undefined` removes a variable).
 */
export function baseEnv(extra: Env, forServer = false, drop?: RegExp): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || k.startsWith('HOLDFAST_') || /^PG[A-Z]/.test(k)) continue;
    if (forServer && k === 'NODE_EXTRA_CA_CERTS') continue;
    if (drop?.test(k)) continue;
    out[k] = v;
  }
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete out[k];
    else out[k] = v;
  }
  return out;
}

/** The command line that runs `cmd` as the postgres OS user: runuser, unless this process is postgres. */
export function argvAsPostgres(cmd: string, args: readonly string[]): [string, string[]] {
  if (process.getuid?.() === postgresIds().uid) return [cmd, [...args]];
  return ['runuser', ['-u', PG_OS_USER, '--', cmd, ...args]];
}

function statusOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0);
}

/**
 * Run a command as the postgres OS user and wait for it (synchronously), as PostgreSQL runs
 * archive_command: e.g. `runAsPostgres(process.execPath, [CLI, 'pg', 'archive-push', seg], env)`.
 * `env` is added to this process's environment minus HOLDFAST_* and PG* variables.
 */
export function runAsPostgres(cmd: string, args: readonly string[], env: Env = {}, opts: RunOptions = {}): RunResult {
  const [file, argv] = argvAsPostgres(cmd, args);
  const timeout = opts.timeoutMs ?? 120_000;
  const r = spawnSync(file, argv, {
    encoding: 'utf8',
    env: baseEnv(env),
    cwd: opts.cwd ?? '/',
    input: opts.input ?? '',
    timeout,
    killSignal: 'SIGTERM', // runuser passes SIGTERM on to the command; SIGKILL would orphan it
    maxBuffer: 256 << 20,
  });
  if (r.error && (r.error as NodeJS.ErrnoException).code !== 'ETIMEDOUT') throw r.error;
  const timedOut = (r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT';
  return { status: statusOf(r.status, r.signal), stdout: r.stdout ?? '', stderr: r.stderr ?? '', timedOut };
}

/**
 * runAsPostgres without blocking the event loop, for commands that run alongside others
 * (pgbench during a backup). On timeout the command's process group gets SIGTERM, then SIGKILL
 * 5 s later.
 */
export function runAsPostgresAsync(cmd: string, args: readonly string[], env: Env = {}, opts: RunOptions = {}): Promise<RunResult> {
  const [file, argv] = argvAsPostgres(cmd, args);
  return runAsync(file, argv, baseEnv(env), opts);
}

function runAsync(file: string, argv: string[], env: Record<string, string>, opts: RunOptions): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawn(file, argv, { env, cwd: opts.cwd ?? '/', stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    } catch (err) {
      reject(err);
      return;
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.stdin!.on('error', () => {}); // a command that does not read its input
    child.stdin!.end(opts.input ?? '');
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const killGroup = (sig: NodeJS.Signals): void => {
      try {
        process.kill(-child.pid!, sig);
      } catch {
        /* already gone */
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup('SIGTERM');
      killTimer = setTimeout(() => killGroup('SIGKILL'), 5_000);
    }, opts.timeoutMs ?? 120_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      resolve({
        status: statusOf(code, signal),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
      });
    });
  });
}

/** One line describing a failed command, with its output, for error messages. */
function describeFailure(what: string, r: RunResult): string {
  const how = r.timedOut ? 'timed out' : `exited ${r.status}`;
  return `${what} ${how}\n--- stdout\n${r.stdout.trim()}\n--- stderr\n${r.stderr.trim()}`;
}

// ---------------------------------------------------------------------------------------------
// Waiting

/**
 * Poll `check` every `intervalMs` until it returns a value other than undefined/false, and return
 * that value; throw after `timeoutMs` with `what` in the message.
 */
export async function waitUntil<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  { timeoutMs = 30_000, intervalMs = 100 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A loopback TCP port that was free a moment ago (bind port 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Clusters

export interface ClusterOptions {
  /** TCP port on 127.0.0.1 (default: a free one, re-picked if it is taken before the server binds). */
  port?: number;
  /** Extra postgresql.conf settings, e.g. `{ wal_level: 'replica', archive_mode: 'on', archive_command: '…' }`. Values are quoted for you. */
  conf?: Record<string, string>;
  /** Extra initdb arguments (the harness passes `-k -U postgres -A trust -E UTF8 --locale=C -N`). */
  initdbArgs?: string[];
  /** Variables for the server's environment, which archive_command and restore_command inherit. */
  env?: Env;
  /** Prefix of the temporary directory's name (default `holdfast-pg-`). */
  prefix?: string;
}

export type StopMode = 'smart' | 'fast' | 'immediate';

export interface PsqlOptions {
  /** Database (default `postgres`). */
  database?: string;
  /** Default 60 s. */
  timeoutMs?: number;
}

/** A running (or stopped) throwaway PostgreSQL 15 cluster owned by the postgres OS user. */
export interface PgCluster {
  /** The cluster's temporary directory (see the module comment for its layout). */
  readonly root: string;
  /** PGDATA. */
  readonly dataDir: string;
  /** The private unix socket directory. */
  readonly socketDir: string;
  /** The server log file. */
  readonly logFile: string;
  /** TCP port on 127.0.0.1. */
  readonly port: number;
  /** libpq environment that reaches this cluster: PGHOST (the socket directory), PGPORT, PGUSER, PGDATABASE. */
  readonly env: Record<string, string>;
  /** Connection URI over TCP, e.g. for the `pg` package: postgresql://postgres@127.0.0.1:PORT/postgres. */
  readonly url: string;
  /**
   * Run SQL with `psql -X -q -A -t -v ON_ERROR_STOP=1` as postgres and return trimmed stdout
   * (rows one per line, columns separated by `|`); throws with psql's stderr on failure.
   * A string is one `-c`: several statements in it run as ONE implicit transaction. An array gives
   * one `-c` per element: each runs (and commits) on its own, in order, in one psql session.
   */
  psql(sql: string | readonly string[], opts?: PsqlOptions): Promise<string>;
  /**
   * `SELECT pg_walfile_name(pg_switch_wal())` as its own statement: closes the current WAL segment
   * and returns its name (24 hex digits), the file archive_command receives. If no WAL was written
   * since the previous switch PostgreSQL switches nothing and the same name comes back; with
   * `force` a tiny WAL record (a logical message) is written first so a new segment always closes.
   */
  switchWal(opts?: { force?: boolean }): Promise<string>;
  /** The system identifier from pg_control_system(), as a decimal string. */
  systemIdentifier(): Promise<string>;
  /** Start the server (pg_ctl -w -t 60 start). */
  start(): Promise<void>;
  /** Stop the server (pg_ctl -w -t 60 stop -m MODE, default fast). */
  stop(mode?: StopMode): Promise<void>;
  /** stop('fast') then start(). */
  restart(): Promise<void>;
  /** Whether a postmaster is running for the data directory (pg_ctl status). */
  isRunning(): Promise<boolean>;
  /**
   * Merge settings into the harness's block of postgresql.conf (values quoted for you). They take
   * effect at the next start, or at once for reloadable ones after `psql('SELECT pg_reload_conf()')`.
   */
  configure(conf: Record<string, string>): void;
  /** Run a PostgreSQL tool (`pgbench`, `pg_amcheck`, `pg_controldata`, …) from PG_BIN as postgres with `env`. */
  runTool(tool: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Create `root/<name>` (mode 0700, owned by postgres), e.g. a WAL archive, and return its path. */
  makeDir(name: string): string;
  /** The last `lines` lines of the server log. */
  logTail(lines?: number): string;
  /** Stop the server if it runs (immediately) and remove the whole temporary directory. Idempotent. */
  destroy(): Promise<void>;
}

const live = new Set<Cluster>();

/**
 * Create a cluster with `initdb -k` in a fresh temporary directory owned by postgres, configure it
 * for a free loopback port and a private socket directory plus `opts.conf`, and start it.
 * On failure everything created is removed and the error carries the server log's tail.
 */
export async function startCluster(opts: ClusterOptions = {}): Promise<PgCluster> {
  const reason = pgUnavailableReason();
  if (reason) throw new Error(`cannot start PostgreSQL: ${reason}`);
  const root = makeRoot(opts.prefix ?? 'holdfast-pg-');
  const c = new Cluster(root, opts.port ?? 0, baseEnv(opts.env ?? {}, true));
  live.add(c);
  // What a failed or interrupted test left behind is destroyed on exit (see ./exit-cleanup.ts).
  destroyOnExit(live, (cluster) => cluster.destroySync());
  try {
    await c.init(opts.initdbArgs ?? []);
    c.configure(opts.conf ?? {});
    // A port picked by freePort() can be taken by someone else before the server binds it.
    for (let attempt = 1; ; attempt++) {
      if (opts.port === undefined) c.setPort(await freePort());
      try {
        await c.start();
        break;
      } catch (err) {
        const portTaken = /could not (bind|create any TCP\/IP)|Address already in use/i.test(c.logTail(20));
        if (opts.port !== undefined || !portTaken || attempt >= 3) throw err;
      }
    }
    return c;
  } catch (err) {
    await c.destroy();
    throw err;
  }
}

/** Destroy every cluster this process created that is still alive (for a suite's after hook). */
export async function destroyAllClusters(): Promise<void> {
  await Promise.all([...live].map((c) => c.destroy()));
}

/**
 * A fresh 0700 directory owned by postgres under os.tmpdir(), or under /tmp when postgres cannot
 * reach os.tmpdir() or the socket path `<root>/sock` would be too long. Test clusters and Patroni
 * members (./patroni.ts) live in one.
 */
export function makeRoot(prefix: string): string {
  const bases = [...new Set([os.tmpdir(), '/tmp'])];
  for (const base of bases) {
    const root = fs.mkdtempSync(path.join(base, prefix));
    fs.chmodSync(root, 0o700);
    chownToPostgres(root);
    const socketOk = path.join(root, 'sock').length <= MAX_SOCKET_DIR;
    if (socketOk && runAsPostgres('test', ['-w', root, '-a', '-x', root], {}, { timeoutMs: 10_000 }).status === 0) return root;
    fs.rmSync(root, { recursive: true, force: true });
  }
  throw new Error(`the ${PG_OS_USER} user cannot use a temporary directory under ${bases.join(' or ')}`);
}

class Cluster implements PgCluster {
  readonly dataDir: string;
  readonly socketDir: string;
  readonly logFile: string;
  private settings: Record<string, string> = {};
  private baseConf: string | undefined;
  private destroyed = false;

  constructor(
    readonly root: string,
    private portNumber: number,
    private readonly serverEnv: Record<string, string>,
  ) {
    this.dataDir = path.join(root, 'data');
    this.socketDir = path.join(root, 'sock');
    this.logFile = path.join(root, 'postgres.log');
  }

  get port(): number {
    return this.portNumber;
  }

  get env(): Record<string, string> {
    return libpqEnv(this.socketDir, this.portNumber);
  }

  get url(): string {
    return `postgresql://postgres@127.0.0.1:${this.portNumber}/postgres`;
  }

  /** Only before the first start (startCluster's port retry). */
  setPort(port: number): void {
    this.portNumber = port;
    this.configure({});
  }

  private run(tool: string, args: readonly string[], opts: RunOptions = {}, env: Record<string, string> = this.serverEnv): Promise<RunResult> {
    const [file, argv] = argvAsPostgres(pgBin(tool), args);
    return runAsync(file, argv, env, { cwd: this.root, ...opts });
  }

  async init(extra: readonly string[]): Promise<void> {
    this.makeDir('sock');
    const args = ['-D', this.dataDir, '-k', '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '-N', '--no-instructions', ...extra];
    const r = await this.run('initdb', args, { timeoutMs: 120_000 });
    if (r.status !== 0) throw new Error(describeFailure(`initdb ${args.join(' ')}`, r));
    this.baseConf = fs.readFileSync(path.join(this.dataDir, 'postgresql.conf'), 'utf8');
  }

  configure(conf: Record<string, string>): void {
    if (this.baseConf === undefined) throw new Error('configure() before initdb');
    for (const [k, v] of Object.entries(conf)) {
      if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(k)) throw new Error(`bad setting name ${JSON.stringify(k)}`);
      this.settings[k] = v;
    }
    const harness: Record<string, string> = {
      listen_addresses: '127.0.0.1',
      port: String(this.portNumber),
      unix_socket_directories: this.socketDir,
      ...this.settings,
    };
    const quote = (v: string): string => `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
    const block = Object.entries(harness)
      .map(([k, v]) => `${k} = ${quote(v)}`)
      .join('\n');
    // Later lines win, so the harness block goes last; postgresql.conf keeps its owner (postgres).
    fs.writeFileSync(path.join(this.dataDir, 'postgresql.conf'), `${this.baseConf}\n# --- holdfast test harness (src/testing/pg.ts)\n${block}\n`);
  }

  async start(): Promise<void> {
    const r = await this.run('pg_ctl', ['-D', this.dataDir, '-l', this.logFile, '-w', '-t', '60', 'start'], { timeoutMs: 75_000 });
    if (r.status !== 0) throw new Error(`${describeFailure('pg_ctl start', r)}\n--- server log (tail)\n${this.logTail()}`);
  }

  async stop(mode: StopMode = 'fast'): Promise<void> {
    const r = await this.run('pg_ctl', ['-D', this.dataDir, '-w', '-t', '60', 'stop', '-m', mode], { timeoutMs: 75_000 });
    if (r.status !== 0) throw new Error(`${describeFailure(`pg_ctl stop -m ${mode}`, r)}\n--- server log (tail)\n${this.logTail()}`);
  }

  async restart(): Promise<void> {
    await this.stop('fast');
    await this.start();
  }

  async isRunning(): Promise<boolean> {
    const r = await this.run('pg_ctl', ['-D', this.dataDir, 'status'], { timeoutMs: 30_000 });
    return r.status === 0;
  }

  async psql(sql: string | readonly string[], opts: PsqlOptions = {}): Promise<string> {
    const statements = typeof sql === 'string' ? [sql] : sql;
    const args = psqlArgs(this.socketDir, this.portNumber, statements, opts.database);
    const r = await this.run('psql', args, { timeoutMs: opts.timeoutMs ?? 60_000 }, baseEnv(this.env));
    if (r.status !== 0) throw new Error(describeFailure(`psql -c ${JSON.stringify(statements.join('; ')).slice(0, 300)}`, r));
    return r.stdout.trim();
  }

  async switchWal({ force = false }: { force?: boolean } = {}): Promise<string> {
    const statements = ['SELECT pg_walfile_name(pg_switch_wal())'];
    if (force) statements.unshift("SELECT pg_logical_emit_message(false, 'holdfast-test', 'switch')");
    const lines = (await this.psql(statements)).split('\n');
    const name = lines[lines.length - 1]!.trim();
    if (!/^[0-9A-F]{24}$/.test(name)) throw new Error(`pg_switch_wal gave ${JSON.stringify(name)}, not a WAL file name`);
    return name;
  }

  async systemIdentifier(): Promise<string> {
    const id = await this.psql('SELECT system_identifier FROM pg_control_system()');
    if (!/^\d+$/.test(id)) throw new Error(`unexpected system identifier ${JSON.stringify(id)}`);
    return id;
  }

  runTool(tool: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    return this.run(tool, args, opts, baseEnv(this.env));
  }

  makeDir(name: string): string {
    const dir = path.join(this.root, name);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    chownToPostgres(dir);
    return dir;
  }

  logTail(lines = 40): string {
    try {
      const text = fs.readFileSync(this.logFile, 'utf8');
      return text.split('\n').slice(-lines - 1).join('\n').trimEnd();
    } catch {
      return '(no server log)';
    }
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    try {
      if (fs.existsSync(path.join(this.dataDir, 'postmaster.pid'))) {
        const r = await this.run('pg_ctl', ['-D', this.dataDir, '-w', '-t', '30', 'stop', '-m', 'immediate'], { timeoutMs: 40_000 });
        if (r.status !== 0) killPostmaster(this.dataDir);
      }
    } finally {
      fs.rmSync(this.root, { recursive: true, force: true, maxRetries: 3 });
      live.delete(this);
    }
  }

  /** The exit handler's synchronous version of destroy(). */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    if (fs.existsSync(path.join(this.dataDir, 'postmaster.pid'))) {
      const r = runAsPostgres(pgBin('pg_ctl'), ['-D', this.dataDir, '-w', '-t', '10', 'stop', '-m', 'immediate'], {}, { timeoutMs: 15_000 });
      if (r.status !== 0) killPostmaster(this.dataDir);
    }
    fs.rmSync(this.root, { recursive: true, force: true, maxRetries: 3 });
    live.delete(this);
  }
}

/**
 * libpq environment that reaches a server on `socketDir` and `port` as postgres, database postgres:
 * PGHOST, PGPORT, PGUSER, PGDATABASE.
 */
export function libpqEnv(socketDir: string, port: number): Record<string, string> {
  return { PGHOST: socketDir, PGPORT: String(port), PGUSER: 'postgres', PGDATABASE: 'postgres' };
}

/**
 * psql's arguments for running `statements` (one `-c` each) as postgres over the socket in
 * `socketDir`: `-X -q -A -t -v ON_ERROR_STOP=1`, so output is rows one per line, columns by `|`.
 */
export function psqlArgs(socketDir: string, port: number, statements: readonly string[], database = 'postgres'): string[] {
  const args = ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', socketDir, '-p', String(port), '-U', 'postgres', '-d', database];
  for (const s of statements) args.push('-c', s);
  return args;
}

/** The pid in the first line of `dataDir`/postmaster.pid, or undefined without a usable one. */
export function postmasterPid(dataDir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return undefined;
  }
  return Number.isInteger(pid) && pid > 1 ? pid : undefined;
}

/** Last resort when pg_ctl cannot stop a server: SIGKILL the postmaster named in postmaster.pid. */
function killPostmaster(dataDir: string): void {
  const pid = postmasterPid(dataDir);
  if (pid === undefined) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* no such process */
  }
}
