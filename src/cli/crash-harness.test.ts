/**
 * Crash harness (issue 7, item 1): seeded trials that SIGKILL holdfast at random moments of
 * file backups, PostgreSQL backups, archive-push (sync and --async), forget/prune, pg expire and
 * key changes, and then require what docs/design.md promises:
 *
 * - `check --read-data` passes (warnings allowed: unindexed packs, duplicate blobs and an
 *   interrupted commit's intent, §8.2, §9, §18);
 * - every snapshot or backup that had completed before the kill restores byte-identical (to its
 *   source tree, or to a restore made right after it completed);
 * - every WAL segment for which archive-push had exited 0 is in the repository (archive-get gives
 *   the same bytes back);
 * - the next run of the interrupted operation succeeds without manual steps, and check passes
 *   again afterwards; a commit the kill left half done is finished by `holdfast unlock` (§8.2).
 *
 * Two kinds of kill points, chosen per trial from the trial's seed:
 * - *mutation*: HOLDFAST_TEST_CRASH_AFTER=N (src/storage/crash.ts) kills the process right after
 *   its N-th repository mutation, N drawn from 1..count where count comes from an uninterrupted
 *   run of the same operation (HOLDFAST_TEST_MUTATIONS) — an exact point between two durable steps;
 * - *time*: the process group gets SIGKILL from outside after a delay drawn from 0..1× the
 *   operation's uninterrupted duration (start-up, reads, writes in flight, lock handling).
 *
 * Each scenario prepares a reference repository once (fixed seeds, independent of the run's seed)
 * and each trial works on a copy of it, so trials are independent and run in parallel
 * (HOLDFAST_CRASH_PARALLEL, default 3). The PostgreSQL scenarios share one cluster: `pg backup`
 * trials run one after another on the repository the server archives into (each trial's backup
 * adds to it), `pg expire` trials on copies of that repository taken after four backups, and the
 * archive-push trials push copies of real segments the cluster wrote.
 *
 * The operation under test and its next run are always the CLI. The checks, restores and
 * archive-gets after it go through the CLI in a seeded quarter of the trials, and otherwise call
 * the same operations (ops/check.ts, ops/restore.ts, ops/pg-archive.ts) in this process: a Node
 * start per step was most of the harness's CPU. Restoring a PostgreSQL data directory costs about
 * a second, so a `pg backup` trial restores the newest earlier backup (and every third trial one
 * more, drawn at random) plus the backups it made; every backup not restored again by a later
 * trial is restored at the end of the scenario. A `pg expire` trial restores one backup drawn from
 * those still listed, and compares every kept WAL object with the original's bytes.
 *
 * Environment:
 *   HOLDFAST_CRASH_SEED=N          the run's seed (default: random; printed, and named by every failure)
 *   HOLDFAST_CRASH_TRIALS=X        multiply every trial count by X (e.g. 10 for a long run, 0.1 for a smoke run)
 *   HOLDFAST_CRASH_ONLY=K[:I]      run only scenario K (e.g. `backup`), or only its trial I
 *   HOLDFAST_CRASH_PARALLEL=N      trials running at once (default 3)
 *   HOLDFAST_CRASH_CLI_VERIFY=F    share of trials verifying through the CLI (default 0.25; 1: all)
 *   HOLDFAST_CRASH_VERBOSE=1       every trial's kill point and steps with their durations
 *   HOLDFAST_CRASH_TMP=DIR         where repositories live (default /dev/shm)
 *
 * Reproduction: the seed fixes every choice (variant, kill point, what is verified how); a
 * mutation kill point is then exact, a time one only as exact as the machine's timing, and a
 * `pg backup` trial also depends on the trials before it (HOLDFAST_CRASH_ONLY=pg-backup:I runs it
 * after the four backups of the preparation only).
 *
 * A failing trial fails its scenario's test with the seed, the trial, its kill point, the steps
 * done and what went wrong, and its files are kept under os.tmpdir()/holdfast-crash-failures; the
 * other trials of a scenario still run (except `pg backup`, whose trials build on each other: it
 * stops at the first failure). A command that does not end within its timeout is asked for a Node
 * diagnostic report first, so the failure shows its JavaScript stack and the handles keeping it
 * alive.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { Writable } from 'node:stream';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLI, Rng, TEST_KDF, type TreeEntry, describeTree, generateTree } from '../testing/helpers.js';
import { onExitCleanup } from '../testing/exit-cleanup.js';
import { restoredPath } from '../testing/e2e.js';
import { type PgCluster, chownToPostgres, destroyAllClusters, pgSkip, postgresIds, startCluster } from '../testing/pg.js';
import { postgresRepository } from '../testing/pg-repo.js';
import { HoldfastError } from '../errors/catalogue.js';
import { check as checkOperation } from '../ops/check.js';
import { DEFAULT_LOCK_SETTINGS, type OpContext, type RepoRef } from '../ops/context.js';
import { archiveGet } from '../ops/pg-archive.js';
import { openRepository } from '../ops/repo.js';
import { restore as restoreOperation } from '../ops/restore.js';
import { Logger } from '../ui/output.js';

// ---------------------------------------------------------------------------------------------
// Settings

type Kind = 'backup' | 'forget-prune' | 'key' | 'archive-push' | 'archive-push-async' | 'pg-backup' | 'pg-expire';

/** Trials per scenario in the default run (at least 200 in all; multiplied by HOLDFAST_CRASH_TRIALS). */
const BASE_TRIALS: Record<Kind, number> = {
  backup: 60,
  'forget-prune': 30,
  key: 30,
  'archive-push': 40,
  'archive-push-async': 16,
  'pg-backup': 10,
  'pg-expire': 14,
};

function envNumber(name: string, fallback: number, ok: (n: number) => boolean): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || !ok(n)) throw new Error(`${name}=${text}: not a valid value`);
  return n;
}

// The operations this file calls in process must never meet the crash injection meant for the CLI.
delete process.env['HOLDFAST_TEST_CRASH_AFTER'];
delete process.env['HOLDFAST_TEST_MUTATIONS'];

const SEED = envNumber('HOLDFAST_CRASH_SEED', Math.floor(Math.random() * 2 ** 31), (n) => Number.isSafeInteger(n) && n >= 0);
const SCALE = envNumber('HOLDFAST_CRASH_TRIALS', 1, (n) => n > 0 && n <= 1000);
const PARALLEL = envNumber('HOLDFAST_CRASH_PARALLEL', 3, (n) => Number.isInteger(n) && n >= 1 && n <= 32);
const ONLY = parseOnly(process.env['HOLDFAST_CRASH_ONLY']);
/**
 * Where repositories, copies and restores live: tmpfs by default. A SIGKILL loses nothing the
 * kernel already has (only power loss does, src/testing/powerloss.ts), so the trials do not need
 * a disk, and fsync on tmpfs costs nothing (restoring a PostgreSQL data directory: ~1 s instead of
 * 3–5 s on this machine's disk under load). The PostgreSQL cluster itself stays on disk.
 */
const TMP = process.env['HOLDFAST_CRASH_TMP'] || (isWritableDir('/dev/shm') ? '/dev/shm' : os.tmpdir());
/**
 * Share of trials that verify through the CLI (`holdfast check --read-data --json`, `restore`,
 * `pg archive-get`, `key list`); the others call the same operations in this process, which spares
 * a Node start and module load (~0.3 s of CPU) per step. HOLDFAST_CRASH_CLI_VERIFY=1: all of them.
 */
const CLI_VERIFY = envNumber('HOLDFAST_CRASH_CLI_VERIFY', 0.25, (n) => n >= 0 && n <= 1);
/** HOLDFAST_CRASH_VERBOSE=1: every trial's steps with their durations, as test diagnostics. */
const VERBOSE = process.env['HOLDFAST_CRASH_VERBOSE'] === '1';

function parseOnly(text: string | undefined): { kind: Kind; index?: number } | undefined {
  if (!text) return undefined;
  const m = /^([a-z-]+)(?::(\d+))?$/.exec(text);
  if (!m || !(m[1]! in BASE_TRIALS)) throw new Error(`HOLDFAST_CRASH_ONLY=${text}: expected one of ${Object.keys(BASE_TRIALS).join(', ')}, optionally with :TRIAL`);
  return m[2] === undefined ? { kind: m[1] as Kind } : { kind: m[1] as Kind, index: Number(m[2]) };
}

function isWritableDir(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.W_OK | fs.constants.X_OK);
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function trialCount(kind: Kind): number {
  return Math.max(1, Math.round(BASE_TRIALS[kind] * SCALE));
}

/** The trial indexes a scenario runs. */
function trialIndexes(kind: Kind): number[] {
  if (ONLY?.index !== undefined) return [ONLY.index];
  return Array.from({ length: trialCount(kind) }, (_, i) => i);
}

const wanted = (kind: Kind): boolean => ONLY === undefined || ONLY.kind === kind;

/** The seed of one trial: a function of the run's seed, the scenario and the trial's index. */
function trialSeed(kind: Kind, index: number): number {
  let h = (SEED ^ 0x5bd1e995) >>> 0;
  for (const c of `${kind}:${index}`) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  return h;
}

const MiB = 1 << 20;
const KiB = 1 << 10;
/** Small chunks (and 1 MiB packs in the commands), so a few MB make many packs and kill points. */
const SMALL_CHUNKS = ['--chunk-min', '64KiB', '--chunk-avg', '128KiB', '--chunk-max', '512KiB'];
const PASSWORD = 'crash harness';

// ---------------------------------------------------------------------------------------------
// Running holdfast (asynchronously, so trials overlap), killing its process group

type Env = Record<string, string | undefined>;

interface RunOptions {
  env: Env;
  /** Run as the postgres OS user (through runuser when we are root), as archive_command does. */
  asPostgres?: boolean;
  /** SIGKILL the process group this many ms after the start. */
  killAfterMs?: number;
  /** HOLDFAST_TEST_CRASH_AFTER. */
  crashAfter?: number;
  /** HOLDFAST_TEST_MUTATIONS. */
  mutationLog?: string;
  timeoutMs?: number;
  cwd?: string;
}

interface Run {
  readonly args: readonly string[];
  readonly status: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
  /** Died of SIGKILL (its own crash point, or ours). */
  readonly killed: boolean;
  readonly timedOut: boolean;
  /** For a run that timed out: what its processes were doing (Node diagnostic report, /proc). */
  readonly hang?: string;
}

/** CPU seconds of the reaped child processes (and theirs), from /proc/self/stat (cutime + cstime). */
function childrenCpuSeconds(): number | undefined {
  try {
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[13]) + Number(f[14])) / 100; // fields 16 and 17, in USER_HZ (100 on Linux)
  } catch {
    return undefined;
  }
}

/** Process groups still running, killed if the test process ends first. */
const liveGroups = new Set<number>();
onExitCleanup(() => {
  for (const g of liveGroups) {
    try {
      process.kill(-g, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

function childEnv(o: RunOptions): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('HOLDFAST_') && !/^PG[A-Z]/.test(k)) out[k] = v;
  out['HOLDFAST_CONFIG'] = '/dev/null';
  for (const [k, v] of Object.entries(o.env)) {
    if (v === undefined) delete out[k];
    else out[k] = v;
  }
  if (!out['HOLDFAST_STATE_DIR']) throw new Error('every run needs its own HOLDFAST_STATE_DIR');
  if (o.crashAfter !== undefined) out['HOLDFAST_TEST_CRASH_AFTER'] = String(o.crashAfter);
  if (o.mutationLog !== undefined) out['HOLDFAST_TEST_MUTATIONS'] = o.mutationLog;
  // A run that hangs can be asked what it waits for (see describeHang).
  out['NODE_OPTIONS'] = `${out['NODE_OPTIONS'] ?? ''} --report-on-signal --report-signal=SIGUSR2 --report-directory=${REPORT_DIR}`.trim();
  return out;
}

/** Run the bundled CLI in its own process group; resolves when it has exited. */
function holdfast(args: readonly string[], o: RunOptions): Promise<Run> {
  const asPg = o.asPostgres === true && process.getuid?.() !== postgresIds().uid;
  const argv = [CLI, ...args];
  const [file, fileArgs] = asPg ? ['runuser', ['-u', 'postgres', '--', process.execPath, ...argv]] : [process.execPath, argv];
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const child = spawn(file, fileArgs, { env: childEnv(o), cwd: o.cwd ?? '/', stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const pid = child.pid;
    if (pid === undefined) {
      child.on('error', reject);
      return;
    }
    liveGroups.add(pid);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    let timedOut = false;
    let hang: Promise<string | undefined> | undefined;
    const killGroup = (): void => {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    };
    const killTimer = o.killAfterMs !== undefined ? setTimeout(killGroup, o.killAfterMs) : undefined;
    const timeout = setTimeout(() => {
      timedOut = true;
      hang = describeHang(pid).then(
        (d) => d,
        (e: Error) => `(no diagnostics: ${e.message})`,
      );
      void hang.finally(killGroup);
    }, o.timeoutMs ?? 120_000);
    child.on('error', (e) => {
      clearTimeout(killTimer);
      clearTimeout(timeout);
      liveGroups.delete(pid);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(killTimer);
      clearTimeout(timeout);
      liveGroups.delete(pid);
      // runuser reports a child killed by a signal as 128 + the signal's number.
      const killed = signal === 'SIGKILL' || (asPg && code === 137);
      void (hang ?? Promise.resolve(undefined)).then((h) =>
        resolve({ args, status: code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), ms: Date.now() - start, killed, timedOut, ...(h !== undefined ? { hang: h } : {}) }),
      );
    });
  });
}

function showRun(r: Run): string {
  const cut = (s: string): string => (s.length > 3000 ? `${s.slice(0, 1500)}\n…\n${s.slice(-1500)}` : s);
  const how = r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit ${String(r.status)}`;
  const hang = r.hang !== undefined ? `\n--- what it was doing when the timeout hit\n${r.hang}` : '';
  return `holdfast ${r.args.join(' ')} → ${how} after ${r.ms} ms\n--- stdout\n${cut(r.stdout.trim())}\n--- stderr\n${cut(r.stderr.trim())}${hang}`;
}

/**
 * Node diagnostic reports of the CLI processes (NODE_OPTIONS --report-on-signal, SIGUSR2), asked
 * for when a run times out: the JavaScript stack and the libuv handles that keep it alive.
 */
const REPORT_DIR = path.join(os.tmpdir(), `holdfast-crash-reports-${process.pid}`);
fs.mkdirSync(REPORT_DIR, { recursive: true, mode: 0o1777 });
fs.chmodSync(REPORT_DIR, 0o1777); // postgres writes there too
onExitCleanup(() => fs.rmSync(REPORT_DIR, { recursive: true, force: true }));

/** What the processes of group `pgid` are doing: state, kernel wait channel, open files, Node report. */
async function describeHang(pgid: number): Promise<string> {
  const lines: string[] = [];
  const members: Array<{ pid: number; comm: string }> = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(f[2]) !== pgid) continue;
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      members.push({ pid: Number(e), comm });
      const wchan = fs.readFileSync(`/proc/${e}/wchan`, 'utf8');
      const fds = fs.readdirSync(`/proc/${e}/fd`).map((fd) => {
        try {
          return `${fd}→${fs.readlinkSync(`/proc/${e}/fd/${fd}`)}`;
        } catch {
          return fd;
        }
      });
      lines.push(`PID ${e} (${comm}) state ${f[0]} wchan ${wchan || '-'} threads ${fs.readdirSync(`/proc/${e}/task`).length}; fds ${fds.join(' ')}`);
    } catch {
      /* gone */
    }
  }
  for (const m of members.filter((x) => x.comm === 'node')) {
    try {
      process.kill(m.pid, 'SIGUSR2');
    } catch {
      continue;
    }
    for (let i = 0; i < 30; i++) {
      await sleep(100);
      const file = fs.readdirSync(REPORT_DIR).find((n) => n.includes(`.${m.pid}.`));
      if (!file) continue;
      try {
        const report = JSON.parse(fs.readFileSync(path.join(REPORT_DIR, file), 'utf8')) as {
          javascriptStack?: { message?: string; stack?: string[] };
          libuv?: Array<{ type: string; is_active?: boolean; is_referenced?: boolean; [k: string]: unknown }>;
          workers?: unknown[];
        };
        const alive = (report.libuv ?? []).filter((h) => h.is_active && h.is_referenced);
        lines.push(`PID ${m.pid} JavaScript stack: ${report.javascriptStack?.message ?? ''}\n    ${(report.javascriptStack?.stack ?? []).slice(0, 12).join('\n    ')}`);
        lines.push(`PID ${m.pid} active, referenced libuv handles (what keeps it running): ${alive.map((h) => JSON.stringify(h)).join('\n    ') || 'none'}`);
        lines.push(`PID ${m.pid} worker threads: ${(report.workers ?? []).length}`);
        break;
      } catch {
        /* still being written */
      }
    }
  }
  return lines.join('\n');
}

/** Bounded pool of trial slots shared by all scenarios. */
class Slots {
  private free: number;
  private readonly waiting: Array<() => void> = [];
  constructor(n: number) {
    this.free = n;
  }
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    }
  }
}
const slots = new Slots(PARALLEL);

// ---------------------------------------------------------------------------------------------
// Trials, kill plans and what every trial checks

/** What an uninterrupted run of an operation does: its mutations (in order) and how long it took. */
interface Profile {
  readonly mutations: readonly string[];
  readonly ms: number;
  /**
   * How long the operation's uninterrupted runs took lately (the trials' next runs): time kill
   * points are drawn over this when known, since the profile's own run met the preparation's load.
   */
  recentMs?: number;
}

/** Record the duration of an uninterrupted run of the profiled operation. */
function observe(p: Profile, r: Run): void {
  p.recentMs = p.recentMs === undefined ? r.ms : Math.round((p.recentMs + r.ms) / 2);
}

type Plan = { readonly how: 'mutation'; readonly n: number; readonly of: number; readonly what: string } | { readonly how: 'time'; readonly ms: number; readonly span: number };

/** Half the trials stop at an exact mutation, half at a random time (only time when there are no mutations). */
function pickPlan(rng: Rng, p: Profile): Plan {
  if (p.mutations.length > 0 && rng.int(2) === 0) {
    const n = 1 + rng.int(p.mutations.length);
    return { how: 'mutation', n, of: p.mutations.length, what: p.mutations[n - 1]! };
  }
  const span = Math.max(50, Math.round(p.recentMs ?? p.ms));
  return { how: 'time', ms: rng.int(span), span };
}

function describePlan(p: Plan): string {
  return p.how === 'mutation' ? `SIGKILL right after mutation ${p.n} of ${p.of} (${p.what})` : `SIGKILL from outside at ${p.ms} ms (uninterrupted run ~${p.span} ms)`;
}

interface ScenarioStats {
  trials: number;
  killedAtMutation: number;
  killedAtTime: number;
  /** The operation ended before its kill point (the kill came too late, or N exceeded this run's mutations). */
  finished: number;
  failures: string[];
  notes: string[];
  ms: number;
}

const stats = new Map<Kind, ScenarioStats>();
function statsOf(kind: Kind): ScenarioStats {
  let s = stats.get(kind);
  if (!s) stats.set(kind, (s = { trials: 0, killedAtMutation: 0, killedAtTime: 0, finished: 0, failures: [], notes: [], ms: 0 }));
  return s;
}

class Trial {
  readonly rng: Rng;
  readonly steps: string[] = [];
  private last = Date.now();
  plan: Plan | undefined;
  variant = '';
  /** Verify through the CLI (else through the operations in this process). */
  readonly viaCli: boolean;
  /** Besides the trial's directory, what to keep for inspection when the trial fails. */
  readonly keep: string[] = [];
  constructor(
    readonly kind: Kind,
    readonly index: number,
    readonly dir: string,
  ) {
    this.rng = new Rng(trialSeed(kind, index));
    this.viaCli = this.rng.int(1_000_000) < CLI_VERIFY * 1_000_000;
  }

  /** Record the next step (the previous one's duration is appended to it). */
  step(s: string): void {
    const now = Date.now();
    if (this.steps.length > 0) this.steps[this.steps.length - 1] += ` (${now - this.last} ms)`;
    this.last = now;
    this.steps.push(s);
  }

  /** The header of a failure: everything needed to find and reproduce the trial. */
  header(): string {
    return [
      `${this.kind} trial ${this.index} (${this.variant}; verified ${this.viaCli ? 'through the CLI' : 'in process'}): ${this.plan ? describePlan(this.plan) : 'no kill point chosen yet'}`,
      `  reproduce: HOLDFAST_CRASH_SEED=${SEED} HOLDFAST_CRASH_ONLY=${this.kind}:${this.index} node --test build/cli/crash-harness.test.js`,
      `  steps: ${this.steps.join(' → ')}`,
    ].join('\n');
  }

  /** Run the CLI for this trial. */
  run(args: readonly string[], o: RunOptions): Promise<Run> {
    return holdfast(args, o);
  }

  /** Run a command that must succeed. */
  async ok(args: readonly string[], o: RunOptions): Promise<Run> {
    this.step(args.slice(0, 3).join(' '));
    const r = await this.run(args, o);
    assert.equal(r.status, 0, showRun(r));
    return r;
  }

  /**
   * Run the operation under test with the trial's kill plan. Returns whether it was killed; an
   * operation that ended before its kill point must have succeeded.
   */
  async killed(args: readonly string[], o: RunOptions, plan: Plan): Promise<{ killed: boolean; run: Run }> {
    this.plan = plan;
    this.step(`${args.slice(0, 3).join(' ')} [killed]`);
    const r = await this.run(args, { ...o, ...(plan.how === 'mutation' ? { crashAfter: plan.n } : { killAfterMs: plan.ms }) });
    const st = statsOf(this.kind);
    if (r.killed && !r.timedOut) {
      if (plan.how === 'mutation') st.killedAtMutation++;
      else st.killedAtTime++;
      return { killed: true, run: r };
    }
    st.finished++;
    assert.equal(r.status, 0, `the operation ended before its kill point, so it must have succeeded\n${showRun(r)}`);
    return { killed: false, run: r };
  }
}

interface CheckJson {
  ok: boolean;
  problems: Array<{ kind: string; object: string; message: string }>;
  warnings: string[];
}

/** What check may warn about after a kill (docs/design.md §8.2, §9, §18). */
const ALLOWED_WARNINGS = [
  / is not in any index \(left by an interrupted/,
  / stored in more than one pack \(left by an interrupted run/,
  // A snapshot (§8.2) or a key file (§3) with one of its two objects, named in a stale lock's intent.
  / is missing while .* commits it \(an interrupted or running operation/,
  / is missing while .* adds or removes it \(finished when its stale lock is removed\)/,
];

/** The repository and password a run's environment names, for the operations called in process. */
function refOf(o: RunOptions, password?: string): RepoRef {
  const location = o.env['HOLDFAST_REPO'];
  assert.ok(location, 'HOLDFAST_REPO');
  const pwFile = o.env['HOLDFAST_PASSWORD_FILE'];
  const pw = password ?? o.env['HOLDFAST_PASSWORD'] ?? (pwFile ? fs.readFileSync(pwFile, 'utf8').split(/\r?\n/)[0] : undefined);
  assert.ok(pw !== undefined, 'a password');
  return { location, password: pw };
}

/** A context for operations called in process: their log goes to `lines` (shown on failure). */
function opContext(o: RunOptions, lines: string[]): OpContext {
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8'));
      cb();
    },
  }) as unknown as NodeJS.WriteStream;
  return { log: new Logger('info', stream), progress: false, locks: { ...DEFAULT_LOCK_SETTINGS, lockDir: o.env['HOLDFAST_LOCK_DIR'] } };
}

/** check --read-data must pass (allowed warnings only); returns the report. */
async function expectCheck(t: Trial, o: RunOptions, when: string, allowIntent = true): Promise<CheckJson> {
  let report: CheckJson;
  if (t.viaCli) {
    t.step(`holdfast check --read-data (${when})`);
    const r = await t.run(['check', '--read-data', '--json'], o);
    assert.equal(r.status, 0, `check --read-data ${when} failed\n${showRun(r)}`);
    report = JSON.parse(r.stdout) as CheckJson;
  } else {
    t.step(`check --read-data in process (${when})`);
    const log: string[] = [];
    try {
      // What cmd-check.ts prints with --json; it exits 23 unless `ok`.
      const r = await checkOperation(refOf(o), { readData: true }, opContext(o, log));
      report = { ok: r.problems.length === 0, ...r };
    } catch (err) {
      assert.fail(`check --read-data ${when} failed: ${(err as Error).stack ?? String(err)}\n${log.join('')}`);
    }
  }
  assert.equal(report.ok, true, `check ${when}: ${JSON.stringify(report.problems)}`);
  for (const w of report.warnings) assert.ok(ALLOWED_WARNINGS.some((re) => re.test(w)) && (allowIntent || !INTENT_WARNING.test(w)), `check ${when}: unexpected warning: ${w}`);
  return report;
}

const INTENT_WARNING = / is missing while .* (commits it|adds or removes it)/;

/**
 * When the killed run left a commit half done (its intent in a stale lock, §8.2): `holdfast
 * unlock` removes the stale lock after finishing the commit, so check no longer warns about it.
 * Returns whether there was one.
 */
async function finishIntents(t: Trial, o: RunOptions, last: CheckJson): Promise<boolean> {
  if (!last.warnings.some((w) => INTENT_WARNING.test(w))) return false;
  await t.ok(['unlock'], o);
  await expectCheck(t, o, 'after unlock finished the interrupted commit', false);
  return true;
}

/** Whether `password` opens the repository (a wrong one is exit 12, WRONG_PASSWORD; anything else fails the trial). */
async function opens(t: Trial, o: RunOptions, password: string): Promise<boolean> {
  if (t.viaCli) {
    t.step('holdfast key list');
    const r = await t.run(['key', 'list', '--json'], { ...o, env: { ...o.env, HOLDFAST_PASSWORD: password, HOLDFAST_PASSWORD_FILE: undefined } });
    assert.ok(r.status === 0 || r.status === 12, showRun(r));
    return r.status === 0;
  }
  t.step('open in process');
  try {
    const repo = await openRepository(refOf(o, password), false);
    await repo.close();
    return true;
  } catch (err) {
    if (err instanceof HoldfastError && err.code === 'WRONG_PASSWORD') return false;
    throw err;
  }
}

/**
 * The snapshots of a local repository: every id with a manifest (`snapshots/`) or a copy
 * (`catalog/`), which is what `holdfast snapshots` lists (docs/design.md §8.2), read from the
 * directory listing to spare a CLI start per trial (check --read-data reads every one of them).
 */
async function snapshotIds(t: Trial, repo: string): Promise<string[]> {
  t.step('list snapshots');
  const ids = new Set<string>();
  for (const d of ['snapshots', 'catalog']) {
    const dir = path.join(repo, d);
    if (fs.existsSync(dir)) for (const n of await fsp.readdir(dir)) if (/^[0-9a-f]{64}$/.test(n)) ids.add(n);
  }
  return [...ids].sort();
}

type TreeDesc = Map<string, TreeEntry>;

function treeDiff(expected: TreeDesc, actual: TreeDesc): string[] {
  const diffs: string[] = [];
  for (const key of [...new Set([...expected.keys(), ...actual.keys()])].sort()) {
    const x = expected.get(key);
    const y = actual.get(key);
    if (JSON.stringify(x) !== JSON.stringify(y)) diffs.push(`${key}\n    expected: ${x ? JSON.stringify(x) : '(absent)'}\n    restored: ${y ? JSON.stringify(y) : '(absent)'}`);
  }
  return diffs;
}

/** Restore snapshot `id` into a scratch directory and describe the tree restored for `srcPath`. */
async function restoreTree(t: Trial | undefined, id: string, srcPath: string, scratch: string, o: RunOptions): Promise<TreeDesc> {
  const target = path.join(scratch, `restore-${id.slice(0, 12)}-${Math.random().toString(36).slice(2, 8)}`);
  try {
    if (t?.viaCli) {
      t.step(`holdfast restore ${id.slice(0, 12)}`);
      const r = await t.run(['restore', id, '--target', target], o);
      assert.equal(r.status, 0, showRun(r));
    } else {
      t?.step(`restore ${id.slice(0, 12)} in process`);
      const log: string[] = [];
      try {
        await restoreOperation(refOf(o), { snapshot: id, target, includes: [], force: false, jobs: 0 }, opContext(o, log));
      } catch (err) {
        assert.fail(`restore of ${id} failed: ${(err as Error).stack ?? String(err)}\n${log.join('')}`);
      }
    }
    return await describeTree(restoredPath(target, srcPath));
  } finally {
    await fsp.rm(target, { recursive: true, force: true });
  }
}

async function expectRestore(t: Trial, id: string, srcPath: string, expected: TreeDesc, o: RunOptions, scratch = t.dir): Promise<void> {
  const got = await restoreTree(t, id, srcPath, scratch, o);
  const diffs = treeDiff(expected, got);
  assert.ok(expected.size > 0, 'nothing to compare');
  assert.equal(diffs.length, 0, `snapshot ${id.slice(0, 12)} does not restore byte-identical (${diffs.length} of ${expected.size} entries differ):\n${diffs.slice(0, 10).join('\n')}`);
}

/** Profile an uninterrupted run of `args` on a fresh copy of `base`. */
async function profile(base: string, scratch: string, args: (repo: string) => readonly string[], o: (repo: string) => RunOptions): Promise<Profile> {
  const repo = path.join(scratch, `profile-${Math.random().toString(36).slice(2, 8)}`);
  await fsp.cp(base, repo, { recursive: true });
  const log = `${repo}.mutations`;
  try {
    const r = await holdfast(args(repo), { ...o(repo), mutationLog: log });
    assert.equal(r.status, 0, showRun(r));
    const mutations = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter((l) => l !== '') : [];
    return { mutations, ms: r.ms };
  } finally {
    for (const p of [repo, log, `${repo}.locks`]) await fsp.rm(p, { recursive: true, force: true });
  }
}

/** Like Promise.all, but waits for every promise before throwing the first error (nothing runs on after a failure). */
async function allSettled<T>(promises: ReadonlyArray<Promise<T>>): Promise<T[]> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

/**
 * Run the trials of one scenario (in parallel through the shared slots unless `sequential`),
 * collect failures, and fail the test at the end with every failure's description.
 */
async function scenario(tc: TestContext, kind: Kind, root: string, trial: (t: Trial) => Promise<void>, opts: { sequential?: boolean } = {}): Promise<void> {
  const st = statsOf(kind);
  const started = Date.now();
  const one = async (i: number): Promise<void> => {
    const dir = path.join(root, `${kind}-${i}`);
    await fsp.mkdir(dir, { recursive: true });
    const t = new Trial(kind, i, dir);
    try {
      await trial(t);
      t.step('done');
      if (VERBOSE) tc.diagnostic(t.header());
    } catch (err) {
      const kept = await keepForInspection(t);
      st.failures.push(`${t.header()}${kept}\n  ${(err as Error).stack ?? String(err)}`.replace(/\n/g, '\n  '));
    } finally {
      st.trials++;
      await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
    }
  };
  const indexes = trialIndexes(kind);
  if (opts.sequential) {
    // One trial at a time anyway: outside the shared slots, so this chain is never starved.
    for (const i of indexes) {
      await one(i);
      if (st.failures.length > 0) break; // later trials build on this one
    }
  } else {
    await allSettled(indexes.map((i) => slots.run(() => one(i))));
  }
  st.ms = Date.now() - started;
  tc.diagnostic(summaryLine(kind, st));
  for (const n of st.notes) tc.diagnostic(`${kind}: ${n}`);
  if (st.failures.length > 0) assert.fail(`${st.failures.length} of ${st.trials} ${kind} trial(s) failed (seed ${SEED}):\n\n${st.failures.join('\n\n')}`);
}

/** Failed trials whose files are kept (a few per run): under os.tmpdir()/holdfast-crash-failures. */
let keptFailures = 0;
async function keepForInspection(t: Trial): Promise<string> {
  if (keptFailures >= 5) return '';
  keptFailures++;
  const dest = path.join(os.tmpdir(), 'holdfast-crash-failures', `${SEED}-${t.kind}-${t.index}`);
  try {
    await fsp.rm(dest, { recursive: true, force: true });
    await fsp.mkdir(dest, { recursive: true });
    for (const p of [t.dir, ...t.keep]) await fsp.cp(p, path.join(dest, path.basename(p)), { recursive: true, verbatimSymlinks: true });
    return `\n  kept for inspection: ${dest}`;
  } catch (err) {
    return `\n  (keeping the trial's files failed: ${(err as Error).message})`;
  }
}

function summaryLine(kind: Kind, s: ScenarioStats): string {
  return `${kind}: ${s.trials} trials (${s.killedAtMutation} killed at a mutation, ${s.killedAtTime} killed at a time, ${s.finished} finished before the kill point), ${s.failures.length} failed, ${(s.ms / 1000).toFixed(1)} s`;
}

/** A directory only we (root) can use: spool and key cache directories must be private. */
async function privateDir(p: string, forPostgres = false): Promise<string> {
  await fsp.mkdir(p, { recursive: true, mode: 0o700 });
  await fsp.chmod(p, 0o700);
  if (forPostgres) chownToPostgres(p);
  return p;
}

/**
 * The local lock directory of the runs on `repo`: copies of one repository share its id, which
 * the local lock scopes contain, so trials running at once on copies need their own.
 */
function lockDirOf(repo: string): string {
  const dir = `${repo}.locks`;
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

// ---------------------------------------------------------------------------------------------
// The scenarios

describe(`crash harness: seeded SIGKILL trials (seed ${SEED})`, { concurrency: true, timeout: 25 * 60_000 }, () => {
  let root = '';
  let cleanup: () => Promise<void> = async () => undefined;
  const started = Date.now();

  before(async () => {
    root = await fsp.mkdtemp(path.join(TMP, 'holdfast-crash-harness-'));
    await fsp.chmod(root, 0o755); // the postgres user needs to reach its part
    const remove = (): void => {
      spawnSync('chmod', ['-R', 'u+rwX', root]);
      fs.rmSync(root, { recursive: true, force: true });
    };
    onExitCleanup(remove);
    cleanup = async () => remove();
  });
  after(async () => {
    const lines = [...stats.entries()].map(([k, s]) => summaryLine(k, s));
    const total = [...stats.values()].reduce((n, s) => n + s.trials, 0);
    const own = process.resourceUsage();
    const children = childrenCpuSeconds();
    console.log(
      `crash harness, seed ${SEED}, scale ${SCALE}, ${PARALLEL} at a time: ${total} trials in ${((Date.now() - started) / 1000).toFixed(1)} s; CPU ${((own.userCPUTime + own.systemCPUTime) / 1e6).toFixed(0)} s in this process${children === undefined ? '' : `, ${children.toFixed(0)} s in the processes it ran`}, peak RSS of this process ${(own.maxRSS / 1024).toFixed(0)} MB`,
    );
    for (const l of lines) console.log(`  ${l}`);
    await destroyAllClusters();
    await cleanup();
  });

  // ---- file backup ---------------------------------------------------------------------------

  test('backup killed at seeded points: check passes, the earlier snapshot restores, the next backup succeeds', { skip: !wanted('backup') }, async (tc) => {
    const base = path.join(root, 'backup');
    const state = await privateDir(path.join(base, 'state'));
    const src = path.join(base, 'src');
    const other = path.join(base, 'other');
    const repo0 = path.join(base, 'repo0');
    const envFor = (repo: string): RunOptions => ({ env: { HOLDFAST_REPO: repo, HOLDFAST_PASSWORD: PASSWORD, HOLDFAST_STATE_DIR: state, HOLDFAST_LOCK_DIR: lockDirOf(repo) } });
    const rng = new Rng(7101);
    await generateTree(src, { seed: 7101, big: [1_500_000, 900_000], smallFiles: 90, emptyFiles: 2, symlinks: true });
    let r = await holdfast(['init', '--kdf-cost', TEST_KDF, ...SMALL_CHUNKS], envFor(repo0));
    assert.equal(r.status, 0, showRun(r));
    r = await holdfast(['backup', src, '--pack-size', '1MiB', '--json'], envFor(repo0));
    assert.equal(r.status, 0, showRun(r));
    const first = (JSON.parse(r.stdout) as { snapshot: string }).snapshot;
    const firstTree = await restoreTree(undefined, first, src, base, envFor(repo0));
    assert.deepEqual(treeDiff(await describeTree(src), firstTree), []);
    // The source changes after the first snapshot (and then stays as it is for every trial).
    for (let i = 0; i < 90; i += 13) {
      const d = path.join(src, `d${i % 7}`);
      const f = fs.readdirSync(d).find((n) => fs.statSync(path.join(d, n)).isFile());
      if (f) fs.writeFileSync(path.join(d, f), rng.bytes(5000 + rng.int(20000)));
    }
    fs.writeFileSync(path.join(src, 'added.bin'), rng.bytes(2 * MiB + 12345));
    fs.rmSync(path.join(src, 'empty-0'));
    fs.chmodSync(path.join(src, 'big-1.bin'), 0o600);
    await generateTree(other, { seed: 7102, big: [3 * MiB, 2 * MiB], smallFiles: 40 });
    const srcTree = await describeTree(src);
    const otherTree = await describeTree(other);
    const variants = [
      { name: 'incremental backup', path: src, tree: srcTree, args: ['backup', src, '--pack-size', '1MiB', '--json'] },
      { name: 'incremental backup --jobs 0', path: src, tree: srcTree, args: ['backup', src, '--pack-size', '1MiB', '--jobs', '0', '--json'] },
      { name: 'backup of a new path', path: other, tree: otherTree, args: ['backup', other, '--pack-size', '1MiB', '--json'] },
    ];
    const profiles = await allSettled(variants.map((v) => profile(repo0, base, () => v.args, envFor)));

    await scenario(tc, 'backup', base, async (t) => {
      const k = t.rng.int(variants.length);
      const v = variants[k]!;
      const p = profiles[k]!;
      t.variant = v.name;
      const repo = path.join(t.dir, 'repo');
      await fsp.cp(repo0, repo, { recursive: true });
      const o = envFor(repo);
      await t.killed(v.args, o, pickPlan(t.rng, p));
      await expectCheck(t, o, 'after the kill');
      const listed = await snapshotIds(t, repo);
      assert.ok(listed.includes(first), `the snapshot made before the kill is listed: ${listed.join(', ')}`);
      const added = listed.filter((id) => id !== first);
      assert.ok(added.length <= 1, `at most the killed backup's snapshot is new: ${added.join(', ')}`);
      await expectRestore(t, first, src, firstTree, o);
      // A snapshot the killed backup committed is complete.
      if (added[0]) await expectRestore(t, added[0], v.path, v.tree, o);
      const again = await t.ok(v.args, o);
      observe(p, again);
      const id = (JSON.parse(again.stdout) as { snapshot: string }).snapshot;
      await expectRestore(t, id, v.path, v.tree, o);
      const last = await expectCheck(t, o, 'after the next backup');
      if (await finishIntents(t, o, last)) {
        // The snapshot the killed backup announced is now whole (manifest and copy), or was never written.
        const now = await snapshotIds(t, repo);
        assert.deepEqual(now, [...new Set([...listed, id])].sort(), 'unlock finishes a commit, it adds or removes no other snapshot');
        for (const sid of now) for (const d of ['snapshots', 'catalog']) assert.ok(fs.existsSync(path.join(repo, d, sid)), `${d}/${sid} after unlock`);
      }
    });
  });

  // ---- forget and prune ----------------------------------------------------------------------

  test('forget / prune killed at seeded points: kept snapshots restore, the next run finishes', { skip: !wanted('forget-prune') }, async (tc) => {
    const base = path.join(root, 'forget-prune');
    const state = await privateDir(path.join(base, 'state'));
    const src = path.join(base, 'src');
    const f0 = path.join(base, 'f0');
    const f1 = path.join(base, 'f1');
    const envFor = (repo: string): RunOptions => ({ env: { HOLDFAST_REPO: repo, HOLDFAST_PASSWORD: PASSWORD, HOLDFAST_STATE_DIR: state, HOLDFAST_LOCK_DIR: lockDirOf(repo) } });
    let r = await holdfast(['init', '--kdf-cost', TEST_KDF, ...SMALL_CHUNKS], envFor(f0));
    assert.equal(r.status, 0, showRun(r));
    // Five snapshots of a directory whose files are partly rewritten each round: forgetting the
    // three oldest leaves packs with unused and used blobs (repacking) and wholly unused ones.
    const rng = new Rng(7201);
    const names = Array.from({ length: 16 }, (_, i) => `f${String(i).padStart(2, '0')}`);
    fs.mkdirSync(src, { recursive: true });
    const snaps: Array<{ id: string; tree: TreeDesc }> = [];
    for (let round = 1; round <= 5; round++) {
      for (const [i, n] of names.entries()) if (round === 1 || (i + round) % 4 === 0) fs.writeFileSync(path.join(src, n), rng.bytes(100 * KiB + rng.int(200 * KiB)));
      r = await holdfast(['backup', src, '--pack-size', '1MiB', '--json'], envFor(f0));
      assert.equal(r.status, 0, showRun(r));
      const id = (JSON.parse(r.stdout) as { snapshot: string }).snapshot;
      const tree = await restoreTree(undefined, id, src, base, envFor(f0));
      assert.deepEqual(treeDiff(await describeTree(src), tree), []);
      snaps.push({ id, tree });
    }
    const treeOf = new Map(snaps.map((s) => [s.id, s.tree]));
    const kept = snaps.slice(3).map((s) => s.id).sort();
    await fsp.cp(f0, f1, { recursive: true });
    r = await holdfast(['forget', '--keep-last', '2'], envFor(f1));
    assert.equal(r.status, 0, showRun(r));
    const variants = [
      { name: 'forget --keep-last 2 --prune', base: f0, args: ['forget', '--keep-last', '2', '--prune', '--max-unused', '0', '--json'], prunes: true },
      { name: 'prune after a forget', base: f1, args: ['prune', '--max-unused', '0', '--json'], prunes: true },
      { name: 'forget --keep-last 2', base: f0, args: ['forget', '--keep-last', '2', '--json'], prunes: false },
    ];
    const profiles = await allSettled(variants.map((v) => profile(v.base, base, () => v.args, envFor)));

    await scenario(tc, 'forget-prune', base, async (t) => {
      const k = t.rng.int(variants.length);
      const v = variants[k]!;
      t.variant = v.name;
      const repo = path.join(t.dir, 'repo');
      await fsp.cp(v.base, repo, { recursive: true });
      const o = envFor(repo);
      await t.killed(v.args, o, pickPlan(t.rng, profiles[k]!));
      await expectCheck(t, o, 'after the kill');
      const listed = await snapshotIds(t, repo);
      for (const id of kept) assert.ok(listed.includes(id), `kept snapshot ${id.slice(0, 12)} is listed: ${listed.join(', ')}`);
      for (const id of listed) assert.ok(treeOf.has(id), `unknown snapshot ${id} listed`);
      for (const id of kept) await expectRestore(t, id, src, treeOf.get(id)!, o);
      // A snapshot being forgotten that is still listed is still usable (§8.2).
      const leaving = listed.filter((id) => !kept.includes(id));
      if (leaving.length > 0) {
        const id = leaving[t.rng.int(leaving.length)]!;
        await expectRestore(t, id, src, treeOf.get(id)!, o);
      }
      observe(profiles[k]!, await t.ok(v.args, o));
      assert.deepEqual(await snapshotIds(t, repo), kept, 'after the next run exactly the kept snapshots are left');
      if (v.prunes) {
        const id = kept[t.rng.int(kept.length)]!;
        await expectRestore(t, id, src, treeOf.get(id)!, o);
      }
      const last = await expectCheck(t, o, 'after the next run');
      if (await finishIntents(t, o, last)) assert.deepEqual(await snapshotIds(t, repo), kept, 'after unlock exactly the kept snapshots are left');
    });
  });

  // ---- key changes ---------------------------------------------------------------------------

  test('key add / passwd / remove killed at seeded points: the repository opens as the contract says, the next run succeeds', { skip: !wanted('key') }, async (tc) => {
    const base = path.join(root, 'key');
    const state = await privateDir(path.join(base, 'state'));
    const src = path.join(base, 'src');
    const k0 = path.join(base, 'k0');
    const OLD = 'old password';
    const NEW = 'new password';
    const SPARE = 'spare password';
    const envFor = (repo: string, pw: string, extra: Env = {}): RunOptions => ({ env: { HOLDFAST_REPO: repo, HOLDFAST_PASSWORD: pw, HOLDFAST_STATE_DIR: state, HOLDFAST_LOCK_DIR: lockDirOf(repo), ...extra } });
    await generateTree(src, { seed: 7301, smallFiles: 24, emptyFiles: 1, symlinks: true });
    let r = await holdfast(['init', '--kdf-cost', TEST_KDF], envFor(k0, OLD));
    assert.equal(r.status, 0, showRun(r));
    r = await holdfast(['backup', src, '--json'], envFor(k0, OLD));
    assert.equal(r.status, 0, showRun(r));
    const snap = (JSON.parse(r.stdout) as { snapshot: string }).snapshot;
    const tree = await restoreTree(undefined, snap, src, base, envFor(k0, OLD));
    r = await holdfast(['key', 'add', '--kdf-cost', TEST_KDF, '--json'], envFor(k0, OLD, { HOLDFAST_NEW_PASSWORD: SPARE }));
    assert.equal(r.status, 0, showRun(r));
    const spare = (JSON.parse(r.stdout) as { added: string }).added;
    const variants = [
      { name: 'key add', args: ['key', 'add', '--kdf-cost', TEST_KDF, '--json'] },
      { name: 'key passwd', args: ['key', 'passwd', '--kdf-cost', TEST_KDF, '--json'] },
      { name: 'key remove', args: ['key', 'remove', spare.slice(0, 12), '--json'] },
    ];
    const profiles = await allSettled(variants.map((v) => profile(k0, base, () => v.args, (repo) => envFor(repo, OLD, { HOLDFAST_NEW_PASSWORD: NEW }))));

    await scenario(tc, 'key', base, async (t) => {
      const k = t.rng.int(variants.length);
      const v = variants[k]!;
      t.variant = v.name;
      const repo = path.join(t.dir, 'repo');
      await fsp.cp(k0, repo, { recursive: true });
      const as = (pw: string): RunOptions => envFor(repo, pw, { HOLDFAST_NEW_PASSWORD: NEW });
      const opensWith = (pw: string): Promise<boolean> => opens(t, as(OLD), pw);
      const keyIds = async (pw: string): Promise<string[]> => (JSON.parse((await t.ok(['key', 'list', '--json'], as(pw))).stdout) as Array<{ id: string }>).map((x) => x.id);
      await t.killed(v.args, as(OLD), pickPlan(t.rng, profiles[k]!));
      const oldOpens = await opensWith(OLD);
      if (v.name === 'key passwd') {
        // Adds the new key, then removes the old one: one of the two passwords always opens it.
        if (!oldOpens) assert.ok(await opensWith(NEW), 'after a killed key passwd neither the old nor the new password opens the repository');
      } else assert.ok(oldOpens, `the old password no longer opens the repository after a killed ${v.name}`);
      const pw = oldOpens ? OLD : NEW;
      await expectCheck(t, as(pw), 'after the kill');
      await expectRestore(t, snap, src, tree, as(pw));
      let finalPw = pw;
      if (v.name === 'key add') {
        observe(profiles[k]!, await t.ok(v.args, as(OLD)));
        assert.ok(await opensWith(NEW), 'the added password opens the repository');
      } else if (v.name === 'key passwd') {
        if (oldOpens) observe(profiles[k]!, await t.ok(v.args, as(OLD)));
        else statsOf('key').notes.push(`trial ${t.index}: key passwd had removed the old key before the kill; nothing to run again`);
        assert.equal(await opensWith(OLD), false, 'after key passwd the old password no longer opens the repository');
        assert.ok(await opensWith(NEW), 'after key passwd the new password opens the repository');
        finalPw = NEW;
      } else {
        if ((await keyIds(OLD)).includes(spare)) observe(profiles[k]!, await t.ok(v.args, as(OLD)));
        assert.equal((await keyIds(OLD)).includes(spare), false, 'the removed key is gone');
        assert.equal(await opensWith(SPARE), false, 'the removed key\'s password no longer opens the repository');
      }
      const last = await expectCheck(t, as(finalPw), 'after the next run');
      if (await finishIntents(t, as(finalPw), last)) {
        // A key file the kill left without its copy (or the reverse) is whole again, or gone: the
        // passwords open the repository exactly as the finished change says.
        if (v.name !== 'key remove') assert.ok(await opensWith(NEW), `after ${v.name} and unlock the new password opens the repository`);
        if (v.name === 'key passwd') assert.equal(await opensWith(OLD), false, 'after key passwd and unlock the old password no longer opens the repository');
        if (v.name === 'key remove') assert.equal(await opensWith(SPARE), false, 'after key remove and unlock the removed key\'s password no longer opens the repository');
        assert.ok(await opensWith(finalPw));
      }
    });
  });

  // ---- PostgreSQL: one cluster, its WAL for the archive-push scenarios -------------------------

  interface PgFixture {
    pg: PgCluster;
    /** Copies of real segments the cluster wrote, oldest first. */
    pool: string[];
    poolDir: string;
    /** The repository the server archives into (owned by postgres). */
    repo: string;
    pwFile: string;
    /** Private to postgres: key cache, local locks, restores and mutation logs of the pg runs. */
    pgState: string;
    pgLocks: string;
    scratch: string;
  }
  let pgFixture: Promise<PgFixture> | undefined;
  const pgSkipReason = pgSkip();
  const fixture = (): Promise<PgFixture> => (pgFixture ??= startPg());
  async function startPg(): Promise<PgFixture> {
    const dir = path.join(root, 'pg');
    await fsp.mkdir(dir, { recursive: true });
    const r = postgresRepository(dir, 'crash harness pg secret');
    const pgState = await privateDir(path.join(dir, 'state'), true);
    const pgLocks = await privateDir(path.join(dir, 'locks'), true);
    const scratch = path.join(dir, 'scratch');
    await fsp.mkdir(scratch, { mode: 0o755 });
    chownToPostgres(scratch);
    // The segments for the archive-push scenarios are written while archiving discards them (the
    // repository of the pg scenarios then holds only the WAL its backups need), then archiving
    // goes through holdfast.
    const pg = await startCluster({
      prefix: 'holdfast-crash-pg-',
      conf: { wal_level: 'replica', archive_mode: 'on', archive_command: '/bin/true', wal_keep_size: '2GB', max_wal_size: '2GB', checkpoint_timeout: '30min' },
    });
    await pg.psql(['CREATE TABLE t (id int, pad text)', "INSERT INTO t SELECT g, repeat('p', 200) FROM generate_series(1, 20000) g"]);
    const poolDir = path.join(root, 'wal-pool');
    await fsp.mkdir(poolDir);
    const pool: string[] = [];
    for (let i = 0; i < 12; i++) {
      await pg.psql(`INSERT INTO t SELECT g, repeat('w', 100 + ${i}) FROM generate_series(1, 3000) g`);
      const name = await pg.switchWal({ force: true });
      await fsp.copyFile(path.join(pg.dataDir, 'pg_wal', name), path.join(poolDir, name));
      pool.push(name);
    }
    pg.configure({ archive_command: r.archiveCommand([], { HOLDFAST_STATE_DIR: pgState }) });
    await pg.psql('SELECT pg_reload_conf()');
    return { pg, pool, poolDir, repo: r.repo, pwFile: r.pwFile, pgState, pgLocks, scratch };
  }

  /** A repository (root's) with the first three pool segments archived, and an empty one. */
  let walBases: Promise<{ w0: string; e0: string; acked: string[]; state: string }> | undefined;
  const walBase = (): Promise<{ w0: string; e0: string; acked: string[]; state: string }> =>
    (walBases ??= (async () => {
      const f = await fixture();
      const dir = path.join(root, 'wal-base');
      const state = await privateDir(path.join(dir, 'state'));
      const w0 = path.join(dir, 'w0');
      const e0 = path.join(dir, 'e0');
      for (const repo of [w0, e0]) {
        const r = await holdfast(['init', '--kdf-cost', TEST_KDF], { env: { HOLDFAST_REPO: repo, HOLDFAST_PASSWORD: PASSWORD, HOLDFAST_STATE_DIR: state } });
        assert.equal(r.status, 0, showRun(r));
      }
      const acked = f.pool.slice(0, 3);
      for (const name of acked) {
        const r = await holdfast(['pg', 'archive-push', path.join(f.poolDir, name)], { env: { HOLDFAST_REPO: w0, HOLDFAST_PASSWORD: PASSWORD, HOLDFAST_STATE_DIR: state } });
        assert.equal(r.status, 0, showRun(r));
      }
      return { w0, e0, acked, state };
    })());

  /** archive-get `name` and require the bytes of `original`. */
  async function expectWal(t: Trial, name: string, original: string, o: RunOptions): Promise<void> {
    const dest = path.join(t.dir, `got-${name}`);
    if (t.viaCli) {
      t.step(`holdfast pg archive-get ${name}`);
      const r = await t.run(['pg', 'archive-get', name, dest], o);
      assert.equal(r.status, 0, `WAL ${name} was acknowledged but archive-get fails\n${showRun(r)}`);
    } else {
      t.step(`archive-get ${name} in process`);
      try {
        await archiveGet(refOf(o), 'main', name, dest);
      } catch (err) {
        assert.fail(`WAL ${name} was acknowledged but archive-get fails: ${(err as Error).stack ?? String(err)}`);
      }
    }
    assert.ok(fs.readFileSync(dest).equals(fs.readFileSync(original)), `archive-get ${name} returns other bytes than were archived`);
    await fsp.rm(dest);
  }

  const pushArgs = (file: string): string[] => ['pg', 'archive-push', file];

  test('archive-push killed at seeded points: acknowledged WAL is there, the next push of the killed segment succeeds', { skip: pgSkipReason || !wanted('archive-push') }, async (tc) => {
    const f = await fixture();
    const { w0, e0, acked: baseAcked, state } = await walBase();
    const base = path.join(root, 'archive-push');
    await fsp.mkdir(base, { recursive: true });
    const envFor = (repo: string): RunOptions => ({ env: { HOLDFAST_REPO: repo, HOLDFAST_PASSWORD: PASSWORD, HOLDFAST_STATE_DIR: state, HOLDFAST_LOCK_DIR: lockDirOf(repo) } });
    const seg = (name: string): string => path.join(f.poolDir, name);
    const profiles = {
      next: await profile(w0, base, () => pushArgs(seg(f.pool[5]!)), envFor),
      first: await profile(e0, base, () => pushArgs(seg(f.pool[0]!)), envFor),
      duplicate: await profile(w0, base, () => pushArgs(seg(f.pool[1]!)), envFor),
    };
    assert.deepEqual(profiles.first.mutations.map((m) => m.split('/')[0]), ['put clusters', 'put wal'], 'a first push binds the cluster, then stores the segment');

    await scenario(tc, 'archive-push', base, async (t) => {
      const which = (['next', 'next', 'first', 'duplicate'] as const)[t.rng.int(4)]!;
      let sequence: string[];
      if (which === 'first') sequence = f.pool.slice(0, 1 + t.rng.int(2));
      else if (which === 'duplicate') sequence = [baseAcked[t.rng.int(baseAcked.length)]!];
      else {
        const start = 3 + t.rng.int(f.pool.length - 4);
        sequence = f.pool.slice(start, start + 1 + t.rng.int(2));
      }
      const j = t.rng.int(sequence.length); // the call that is killed; the ones before it succeed
      t.variant = `${which === 'first' ? 'first pushes into an empty repository' : which === 'duplicate' ? 'push of an archived segment again' : 'push of new segments'}: ${sequence.join(', ')}, call ${j + 1} killed`;
      const repo = path.join(t.dir, 'repo');
      await fsp.cp(which === 'first' ? e0 : w0, repo, { recursive: true });
      const o = envFor(repo);
      const acked = new Set(which === 'first' ? [] : baseAcked);
      const ackedHere: string[] = [];
      for (const name of sequence.slice(0, j)) {
        await t.ok(pushArgs(seg(name)), o);
        acked.add(name);
        ackedHere.push(name);
      }
      const victim = sequence[j]!;
      const k = await t.killed(pushArgs(seg(victim)), o, pickPlan(t.rng, profiles[which]));
      if (!k.killed) {
        acked.add(victim);
        ackedHere.push(victim);
      }
      await expectCheck(t, o, 'after the kill');
      const earlier = [...acked].filter((n) => !ackedHere.includes(n));
      for (const name of [...ackedHere, ...(earlier.length > 0 ? [earlier[t.rng.int(earlier.length)]!] : [])]) await expectWal(t, name, seg(name), o);
      // PostgreSQL calls again for the killed segment (and goes on): each call must succeed.
      const rest = sequence.slice(j).filter((n) => !ackedHere.includes(n) || n === victim);
      for (const name of rest) {
        const r = await t.ok(pushArgs(seg(name)), o);
        if (name === victim) observe(profiles[which], r);
        await expectWal(t, name, seg(name), o);
      }
      await expectCheck(t, o, 'after the next push');
    });
  });

  test('archive-push --async: calls and workers killed at seeded points, acknowledged WAL is there, the next calls succeed', { skip: pgSkipReason || !wanted('archive-push-async') }, async (tc) => {
    const f = await fixture();
    const { w0 } = await walBase();
    const base = path.join(root, 'archive-push-async');
    await fsp.mkdir(base, { recursive: true });
    const seg = (name: string): string => path.join(f.poolDir, name);

    /** A data-directory-like layout with copies of `names` in pg_wal, each marked ready. */
    async function simulatedWal(dir: string, names: readonly string[]): Promise<string> {
      const sim = path.join(dir, 'pgdata');
      await fsp.mkdir(path.join(sim, 'pg_wal', 'archive_status'), { recursive: true });
      for (const n of names) {
        await fsp.copyFile(seg(n), path.join(sim, 'pg_wal', n));
        await fsp.writeFile(path.join(sim, 'pg_wal', 'archive_status', `${n}.ready`), '');
      }
      return sim;
    }
    /** PIDs of the async workers serving `sim` (found by their command line; they run detached). */
    function workers(sim: string): number[] {
      const out: number[] = [];
      for (const e of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(e)) continue;
        try {
          const cmd = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8');
          if (cmd.includes('--async-worker') && cmd.includes(`${sim}/pg_wal`)) out.push(Number(e));
        } catch {
          /* gone */
        }
      }
      return out;
    }
    const signal = (pids: readonly number[], sig: NodeJS.Signals): void => {
      for (const pid of pids) {
        try {
          process.kill(pid, sig);
        } catch {
          /* gone meanwhile */
        }
      }
    };
    async function stopWorkers(sim: string): Promise<void> {
      signal(workers(sim), 'SIGTERM');
      for (let i = 0; i < 60 && workers(sim).length > 0; i++) await sleep(100);
      signal(workers(sim), 'SIGKILL');
      for (let i = 0; i < 50 && workers(sim).length > 0; i++) await sleep(100);
    }
    const sims = new Set<string>();
    onExitCleanup(() => {
      for (const sim of sims) signal(workers(sim), 'SIGKILL');
    });

    const setup = async (dir: string, names: readonly string[]): Promise<{ sim: string; o: RunOptions; call: (name: string, extra?: Partial<RunOptions>) => Promise<Run>; repo: string }> => {
      const repo = path.join(dir, 'repo');
      await fsp.cp(w0, repo, { recursive: true });
      const sim = await simulatedWal(dir, names);
      sims.add(sim);
      const o: RunOptions = {
        env: { HOLDFAST_REPO: repo, HOLDFAST_PASSWORD: PASSWORD, HOLDFAST_STATE_DIR: await privateDir(path.join(dir, 'state')), HOLDFAST_LOCK_DIR: await privateDir(path.join(dir, 'locks')) },
        cwd: sim,
      };
      const call = async (name: string, extra: Partial<RunOptions> = {}): Promise<Run> => {
        const r = await holdfast(['pg', 'archive-push', '--async', '--async-timeout', '30s', '--jobs', '2', '--async-batch', '4', path.join('pg_wal', name)], { ...o, ...extra });
        // PostgreSQL's archiver marks the file done after a successful call.
        if (r.status === 0) await fsp.rename(path.join(sim, 'pg_wal', 'archive_status', `${name}.ready`), path.join(sim, 'pg_wal', 'archive_status', `${name}.done`));
        return r;
      };
      return { sim, o, call, repo };
    };

    // An uninterrupted burst of three calls: the workers' mutations and the burst's duration.
    let prof: Profile;
    {
      const dir = path.join(base, 'profile');
      const names = f.pool.slice(4, 7);
      const { sim, call } = await setup(dir, names);
      const log = path.join(dir, 'mutations');
      const started = Date.now();
      for (const n of names) {
        const r = await call(n, { mutationLog: log });
        assert.equal(r.status, 0, showRun(r));
      }
      prof = { mutations: fs.readFileSync(log, 'utf8').split('\n').filter((l) => l !== ''), ms: Date.now() - started };
      await stopWorkers(sim);
      sims.delete(sim);
    }

    await scenario(tc, 'archive-push-async', base, async (t) => {
      const start = 3 + t.rng.int(f.pool.length - 5);
      const names = f.pool.slice(start, start + 3);
      const mode = (['call', 'worker', 'worker-mutation'] as const)[t.rng.int(3)]!;
      const { sim, o, call } = await setup(t.dir, names);
      const acked: string[] = [];
      try {
        if (mode === 'worker-mutation') {
          // Every process of the burst (calls, and the workers they start) dies after its N-th mutation.
          const n = 1 + t.rng.int(Math.max(1, prof.mutations.length));
          t.plan = { how: 'mutation', n, of: prof.mutations.length, what: `each async worker (and a call archiving itself) after its mutation ${n}` };
          t.variant = `${names.join(', ')}: every process killed after its mutation ${n}`;
          let killedSome = false;
          for (const name of names) {
            t.step(`archive-push --async ${name} [crash after ${n}]`);
            const r = await call(name, { crashAfter: n });
            if (r.killed) {
              killedSome = true;
              break;
            }
            assert.equal(r.status, 0, `a call whose worker may have died must still succeed or die itself\n${showRun(r)}`);
            acked.push(name);
          }
          // Did a call, or a worker, die at its crash point?
          if (killedSome || workersDied(o, sim) > 0) statsOf('archive-push-async').killedAtMutation++;
          else statsOf('archive-push-async').finished++;
        } else if (mode === 'call') {
          const j = t.rng.int(names.length);
          t.variant = `${names.join(', ')}: call ${j + 1} killed`;
          for (const name of names.slice(0, j)) {
            t.step(`archive-push --async ${name}`);
            const r = await call(name);
            assert.equal(r.status, 0, showRun(r));
            acked.push(name);
          }
          const plan = pickPlan(t.rng, { mutations: [], ms: prof.ms / 3 });
          t.plan = plan;
          t.step(`archive-push --async ${names[j]!} [killed]`);
          const r = await call(names[j]!, plan.how === 'time' ? { killAfterMs: plan.ms } : {});
          if (r.killed) statsOf('archive-push-async').killedAtTime++;
          else {
            assert.equal(r.status, 0, showRun(r));
            statsOf('archive-push-async').finished++;
            acked.push(names[j]!);
          }
        } else {
          // The calls run one after another; the worker(s) get SIGKILL at a random moment.
          const span = Math.max(100, Math.round(prof.recentMs ?? prof.ms));
          const delay = t.rng.int(span);
          t.plan = { how: 'time', ms: delay, span };
          t.variant = `${names.join(', ')}: the async worker killed at ${delay} ms`;
          let killedPids: number[] = [];
          const timer = setTimeout(() => {
            killedPids = workers(sim);
            signal(killedPids, 'SIGKILL');
          }, delay);
          const burst = Date.now();
          try {
            for (const name of names) {
              t.step(`archive-push --async ${name}`);
              const r = await call(name);
              assert.equal(r.status, 0, `a call must succeed when its worker was killed (it starts another, or archives the file itself)\n${showRun(r)}`);
              acked.push(name);
            }
          } finally {
            clearTimeout(timer);
          }
          // The next worker kill is drawn over how long such a burst takes now.
          prof.recentMs = Math.round(((prof.recentMs ?? prof.ms) + (Date.now() - burst)) / 2);
          if (killedPids.length > 0) statsOf('archive-push-async').killedAtTime++;
          else statsOf('archive-push-async').finished++;
        }
        await expectCheck(t, o, 'after the kill');
        for (const name of acked) await expectWal(t, name, seg(name), o);
        // The next calls (PostgreSQL retries the killed one and goes on) must succeed.
        for (const name of names.filter((n) => !acked.includes(n))) {
          t.step(`archive-push --async ${name} (again)`);
          const r = await call(name);
          assert.equal(r.status, 0, showRun(r));
          await expectWal(t, name, seg(name), o);
        }
        await stopWorkers(sim);
        await expectCheck(t, o, 'after the next calls');
      } finally {
        await stopWorkers(sim);
        sims.delete(sim);
      }
    });

    /** Workers of this trial that started and are gone without logging their exit (killed). */
    function workersDied(o: RunOptions, sim: string): number {
      let log = '';
      const stack = [o.env['HOLDFAST_STATE_DIR']!];
      for (let guard = 0; stack.length > 0 && guard < 1000; guard++) {
        const d = stack.pop()!;
        for (const e of fs.readdirSync(d, { withFileTypes: true })) {
          if (e.isDirectory()) stack.push(path.join(d, e.name));
          else if (e.name === 'worker.log') log += fs.readFileSync(path.join(d, e.name), 'utf8');
        }
      }
      const started = new Set([...log.matchAll(/async worker for cluster \S+ started \(PID (\d+)\)/g)].map((m) => Number(m[1])));
      for (const m of log.matchAll(/\[(\d+)\] async worker for cluster \S+ exits \(/g)) started.delete(Number(m[1]));
      for (const pid of workers(sim)) started.delete(pid);
      return started.size;
    }
  });

  // ---- PostgreSQL backups and pg expire --------------------------------------------------------

  interface PgBackupRecord {
    id: string;
    type: 'full' | 'incr';
    tree: TreeDesc;
    /** Restored (and compared) again after a later kill. */
    verified?: boolean;
  }
  /** Backups of the fixture cluster so far (the four of the preparation, then the trials'). */
  const pgBackups: PgBackupRecord[] = [];
  const pgProfiles: Partial<Record<'full' | 'incr', Profile>> = {};
  let pgPrepared: Promise<{ expireBase: string }> | undefined;

  const pgRun = (f: PgFixture, extra: Env = {}): RunOptions => ({
    env: { HOLDFAST_REPO: f.repo, HOLDFAST_PASSWORD_FILE: f.pwFile, HOLDFAST_STATE_DIR: f.pgState, HOLDFAST_LOCK_DIR: f.pgLocks, ...f.pg.env, ...extra },
    asPostgres: true,
  });

  async function writeRows(f: PgFixture, n: number): Promise<void> {
    await f.pg.psql([`INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, ${n}) g`, `UPDATE t SET pad = pad || 'u' WHERE id % 97 = ${n % 97}`]);
  }

  /** Take a backup (uninterrupted), record its profile, and restore it at once for its reference tree. */
  async function pgBackup(f: PgFixture, type: 'full' | 'incr', t?: Trial): Promise<PgBackupRecord> {
    const log = path.join(f.scratch, `mutations-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`);
    const args = ['pg', 'backup', '--type', type, '--json'];
    const r = t ? await t.ok(args, { ...pgRun(f), mutationLog: log }) : await holdfast(args, { ...pgRun(f), mutationLog: log });
    assert.equal(r.status, 0, showRun(r));
    pgProfiles[type] = { mutations: fs.readFileSync(log, 'utf8').split('\n').filter((l) => l !== ''), ms: r.ms };
    await fsp.rm(log, { force: true });
    const res = JSON.parse(r.stdout) as { snapshotId: string; pg: { pgdata: string } };
    const tree = await restoreTree(t, res.snapshotId, res.pg.pgdata, f.scratch, pgRun(f));
    const rec = { id: res.snapshotId, type, tree };
    pgBackups.push(rec);
    return rec;
  }

  const pgPrepare = (): Promise<{ expireBase: string }> =>
    (pgPrepared ??= (async () => {
      const f = await fixture();
      for (const [i, type] of (['full', 'incr', 'full', 'incr'] as const).entries()) {
        await writeRows(f, 2000 + i * 500);
        await pgBackup(f, type);
      }
      // pg expire trials work on copies of the repository as it is now (four backups).
      const expireBase = path.join(root, 'pg-expire-base');
      await fsp.cp(f.repo, expireBase, { recursive: true });
      return { expireBase };
    })());

  test('pg backup killed at seeded points: earlier backups restore, archived WAL is there, the next backup succeeds', { skip: pgSkipReason || !wanted('pg-backup'), timeout: 20 * 60_000 }, async (tc) => {
    const f = await fixture();
    await pgPrepare();
    const pgdata = f.pg.dataDir;
    await scenario(
      tc,
      'pg-backup',
      f.scratch,
      async (t) => {
        await fsp.chmod(t.dir, 0o755);
        chownToPostgres(t.dir);
        t.keep.push(f.repo);
        const type = t.rng.int(3) === 0 ? 'full' : 'incr';
        t.variant = `pg backup --type ${type}`;
        t.step('write rows');
        await writeRows(f, 1000 + t.rng.int(3000));
        const before = pgBackups.map((b) => b.id);
        const o = pgRun(f);
        const k = await t.killed(['pg', 'backup', '--type', type, '--json'], o, pickPlan(t.rng, pgProfiles[type]!));
        await expectCheck(t, o, 'after the kill');
        const listed = await snapshotIds(t, f.repo);
        for (const id of before) assert.ok(listed.includes(id), `backup ${id.slice(0, 12)}, completed before the kill, is listed`);
        const added = listed.filter((id) => !before.includes(id));
        assert.ok(added.length <= 1, `at most the killed backup is new: ${added.join(', ')}`);
        if (!k.killed) assert.equal(added.length, 1, 'the backup that finished is listed');
        // The newest completed backup, and one more drawn from the earlier ones, restore as right after they completed.
        const newest = pgBackups.at(-1)!;
        await expectRestore(t, newest.id, pgdata, newest.tree, o, t.dir);
        newest.verified = true;
        // (Restoring a data directory costs ~1 s of CPU: an earlier one every third trial, all at the end.)
        if (t.index % 3 === 2) {
          const older = pgBackups[t.rng.int(pgBackups.length - 1)]!;
          await expectRestore(t, older.id, pgdata, older.tree, o, t.dir);
          older.verified = true;
        }
        if (added[0]) {
          // Completed by the killed run (killed after its last mutation, or not killed): a backup like any other.
          pgBackups.push({ id: added[0], type, tree: await restoreTree(t, added[0], pgdata, t.dir, o) });
        }
        // Every segment PostgreSQL saw archive-push acknowledge is in the repository, with its bytes.
        t.step('last_archived_wal');
        const lastWal = await f.pg.psql('SELECT last_archived_wal FROM pg_stat_archiver');
        if (/^[0-9A-F]{24}$/.test(lastWal)) {
          assert.ok(fs.existsSync(path.join(f.repo, 'wal', 'main', lastWal)), `${lastWal}, acknowledged to PostgreSQL, is in the repository`);
          const original = path.join(pgdata, 'pg_wal', lastWal);
          if (fs.existsSync(original)) {
            const copy = path.join(t.dir, `orig-${lastWal}`);
            await fsp.copyFile(original, copy);
            chownToPostgres(copy);
            await expectWal(t, lastWal, copy, o);
          }
        }
        await pgBackup(f, type, t);
        const last = await expectCheck(t, o, 'after the next backup');
        if (await finishIntents(t, o, last)) {
          for (const sid of await snapshotIds(t, f.repo)) for (const d of ['snapshots', 'catalog']) assert.ok(fs.existsSync(path.join(f.repo, d, sid)), `${d}/${sid} after unlock`);
        }
      },
      { sequential: true },
    );
    if (ONLY === undefined) {
      // Every backup taken in the scenario still restores as it did right after it completed
      // (those no trial restored again yet).
      for (const b of pgBackups.filter((x) => !x.verified)) {
        const got = await restoreTree(undefined, b.id, pgdata, f.scratch, pgRun(f));
        assert.deepEqual(treeDiff(b.tree, got), [], `backup ${b.id.slice(0, 12)} at the end of the scenario`);
      }
    }
  });

  test('pg expire killed at seeded points: kept backups and their WAL stay, the next run finishes', { skip: pgSkipReason || !wanted('pg-expire') }, async (tc) => {
    const f = await fixture();
    const { expireBase } = await pgPrepare();
    const base = path.join(root, 'pg-expire');
    const state = await privateDir(path.join(base, 'state'));
    const envFor = (repo: string, locks: string): RunOptions => ({ env: { HOLDFAST_REPO: repo, HOLDFAST_PASSWORD_FILE: f.pwFile, HOLDFAST_STATE_DIR: state, HOLDFAST_LOCK_DIR: locks } });
    const args = ['pg', 'expire', '--retain-full', '1', '--json'];
    const walOf = (repo: string): string[] => (fs.existsSync(path.join(repo, 'wal', 'main')) ? fs.readdirSync(path.join(repo, 'wal', 'main')).filter((n) => !n.startsWith('.')).sort() : []);
    const baseBackups = pgBackups.slice(0, 4);
    const baseWal = walOf(expireBase);
    // What an uninterrupted expire leaves: the final state every trial must reach after its next run.
    const counted = path.join(base, 'counted');
    await fsp.cp(expireBase, counted, { recursive: true });
    const log = path.join(base, 'mutations');
    const locks0 = await privateDir(path.join(base, 'locks0'));
    const r0 = await holdfast(args, { ...envFor(counted, locks0), mutationLog: log });
    assert.equal(r0.status, 0, showRun(r0));
    const prof: Profile = { mutations: fs.readFileSync(log, 'utf8').split('\n').filter((l) => l !== ''), ms: r0.ms };
    const result = JSON.parse(r0.stdout) as { expired: string[] };
    const keptIds = baseBackups.map((b) => b.id).filter((id) => !result.expired.includes(id)).sort();
    assert.deepEqual(result.expired.sort(), baseBackups.slice(0, 2).map((b) => b.id).sort(), 'the policy expires the first full backup and its incremental one');
    const keptWal = walOf(counted);
    assert.ok(keptWal.length < baseWal.length, 'the expire removes WAL');
    assert.ok(prof.mutations.some((m) => m.startsWith('delete wal/')), prof.mutations.join(', '));
    const scratch = path.join(base, 'scratch');
    await fsp.mkdir(scratch, { recursive: true });
    // The bytes archive-get returns for a kept segment, taken from the untouched base.
    const probeName = keptWal.filter((n) => /^[0-9A-F]{24}$/.test(n))[0]!;
    const probe = path.join(base, `probe-${probeName}`);
    {
      const r = await holdfast(['pg', 'archive-get', probeName, probe], envFor(expireBase, locks0));
      assert.equal(r.status, 0, showRun(r));
    }

    await scenario(tc, 'pg-expire', base, async (t) => {
      t.variant = 'pg expire --retain-full 1';
      const repo = path.join(t.dir, 'repo');
      await fsp.cp(expireBase, repo, { recursive: true });
      const o = envFor(repo, await privateDir(path.join(t.dir, 'locks')));
      await t.killed(args, o, pickPlan(t.rng, prof));
      await expectCheck(t, o, 'after the kill');
      const listed = await snapshotIds(t, repo);
      for (const id of keptIds) assert.ok(listed.includes(id), `kept backup ${id.slice(0, 12)} is listed`);
      // The WAL the kept backups need is all there, as it was.
      const wal = walOf(repo);
      for (const n of keptWal) {
        assert.ok(wal.includes(n), `WAL ${n}, needed by a kept backup, is in the repository`);
        assert.ok(fs.readFileSync(path.join(repo, 'wal', 'main', n)).equals(fs.readFileSync(path.join(expireBase, 'wal', 'main', n))), `WAL object ${n} is unchanged`);
      }
      for (const n of wal) assert.ok(baseWal.includes(n), `no WAL appeared: ${n}`);
      await expectWal(t, probeName, probe, o);
      // One backup still listed, drawn at random (kept, or expired but not yet removed), restores as it did.
      const pick = listed[t.rng.int(listed.length)]!;
      const rec = baseBackups.find((b) => b.id === pick);
      assert.ok(rec, `unknown backup ${pick}`);
      await expectRestore(t, pick, f.pg.dataDir, rec.tree, o);
      observe(prof, await t.ok(args, o));
      assert.deepEqual(await snapshotIds(t, repo), keptIds, 'after the next run exactly the kept backups are left');
      assert.deepEqual(walOf(repo), keptWal, 'after the next run the WAL is what an uninterrupted expire leaves');
      const last = await expectCheck(t, o, 'after the next run');
      if (await finishIntents(t, o, last)) assert.deepEqual(await snapshotIds(t, repo), keptIds, 'after unlock exactly the kept backups are left');
    });
  });
});
