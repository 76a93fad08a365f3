/**
 * A FUSE filesystem that fails chosen operations on demand, for tests that must prove holdfast's
 * lock and state files survive a flaky or remounted network share. Used by *.test.ts only.
 *
 * mountFaultFs() mounts src/testing/faultfs.py (Debian python3-fusepy, installed by
 * scripts/fuse-deps.sh) in a child process: a passthrough of a backing directory at a fresh
 * mountpoint, which fails operations that match the rules you set with an errno of your choice
 * (ESTALE, EIO, ENOENT, ...), or fails every operation (staleAll). Every fault that fires is
 * logged; fired() returns the log, so a test can assert that its fault really happened.
 *
 * What the caller sees is the kernel's view, and Linux adds two twists (see faultfs.py):
 * - Entry and attribute caches are off, so every path lookup sends a `getattr`: a getattr rule
 *   fires on open, unlink, rename, ... of a matching path too, not only on stat, and may fire
 *   more than once for one system call (a failed revalidation of a cached name is followed by a
 *   fresh lookup). Use `count` on getattr rules with care; assert on fired() entries' op/path.
 * - Linux retries a path operation (open, stat, unlink, rename, mkdir, ...) once after ESTALE.
 *   An ESTALE rule with `count: 1` on such an operation fires, is logged, and is invisible to the
 *   caller; `count: 2` makes one system call fail. Operations on an open descriptor (read, write,
 *   fsync, flush on close) are not retried.
 *
 * Node has no name for ESTALE: the error's `code` is 'Unknown system error -116' and its `errno`
 * is -116 (`-os.constants.errno.ESTALE`); hasErrno(err, 'ESTALE') tests for it. EIO and ENOENT
 * come through with their usual codes.
 *
 * The mount is usable by every user (allow_other; the kernel checks modes and owners as on a local
 * disk), and what a user creates through it belongs to that user, so holdfast can run as postgres
 * (runAsPostgres in ./pg.ts) inside it: give it a directory with `owner` or chown. Reads and writes
 * always reach the filesystem (direct_io), never the page cache. Locks (flock, fcntl) are kept by
 * the kernel locally. An unlinked file that is still open stays readable and writable and leaves
 * no `.fuse_hidden*` file behind (hard_remove), but fstat() of it fails with ENOENT (libfuse 2's
 * path-based API cannot name it).
 *
 * After remount() or unmount(), descriptors opened on the old mount fail with ENOTCONN, close()
 * included (which still frees them).
 *
 * Layout of a mount's temporary directory (mode 0755, under os.tmpdir()):
 *
 *     root/
 *       mnt/            the mountpoint
 *       backing/        the files (unless you pass `backing`)
 *       control.json    the current rules, re-read by faultfs.py when it changes
 *       faults.log      fired faults, one JSON line each
 *
 * Every wait is bounded. unmount() unmounts (fusermount -u, then lazily), stops the child and
 * removes the temporary directory (and the backing directory only if the harness made it). A mount
 * still alive when the process exits (a failed test) is unmounted lazily by an exit handler, and if
 * this process dies without running it, faultfs.py sees its stdin close and unmounts itself.
 *
 * @example
 * ```ts
 * import { after, before, describe, it } from 'node:test';
 * import assert from 'node:assert/strict';
 * import * as fs from 'node:fs';
 * import { faultfsSkip, hasErrno, mountFaultFs, type FaultFs } from '../testing/faultfs.js';
 *
 * describe('locks on a stale share', { skip: faultfsSkip() }, () => {
 *   let ff: FaultFs;
 *   before(async () => { ff = await mountFaultFs(); });
 *   after(() => ff?.unmount());
 *   it('a stale lock refresh is reported', async () => {
 *     ff.setRules([{ op: 'open', errno: 'ESTALE', path: 'locks/*', count: 2 }]);
 *     assert.throws(() => fs.openSync(`${ff.mountpoint}/locks/a`, 'r'), (e) => hasErrno(e, 'ESTALE'));
 *     assert.equal((await ff.fired()).length, 2);
 *     ff.staleAll(true);  // the share went away: everything is stale
 *     // ...
 *     ff.clear();         // and it is back
 *   });
 * });
 * ```
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { destroyOnExit } from './exit-cleanup.js';

/** The system Python, which sees Debian's python3-fusepy (a pyenv or venv python3 may not). */
const PYTHON = '/usr/bin/python3';
/** faultfs.py, found from both src/testing/ and build/testing/ (two levels below the root). */
const SCRIPT = fileURLToPath(new URL('../../src/testing/faultfs.py', import.meta.url));
/** The mount's filesystem type in /proc/self/mountinfo. */
const FSTYPE = 'fuse.faultfs';
const READY_TIMEOUT_MS = 15_000;
const STEP_TIMEOUT_MS = 10_000;

/** Operations a rule can name (faultfs.py's OPS). */
export const FAULT_OPS = [
  'access', 'chmod', 'chown', 'create', 'flush', 'fsync', 'fsyncdir', 'getattr', 'link',
  'mkdir', 'mknod', 'open', 'opendir', 'read', 'readdir', 'readlink', 'rename', 'rmdir',
  'statfs', 'symlink', 'truncate', 'unlink', 'utimens', 'write',
] as const;
export type FaultOp = (typeof FAULT_OPS)[number];
export type ErrnoName = keyof typeof os.constants.errno;

export interface FaultRule {
  /** An operation, a list of them, or '*' (default) for all. */
  op?: FaultOp | '*' | readonly (FaultOp | '*')[];
  /** What the operation fails with: a name such as 'ESTALE', 'EIO', 'ENOENT', or a positive number. */
  errno: ErrnoName | number;
  /**
   * Glob (Python fnmatch) on the path relative to the mount root, no leading '/'; '.' is the root.
   * `*` also matches '/', so '*.lock' matches 'a/b.lock'. For rename and link either path may
   * match. Default: any path.
   */
  path?: string;
  /** Let this many matching operations through before firing (default 0). */
  skip?: number;
  /** Fire this many times, then let operations through (default: every time). */
  count?: number;
}

/** One fired fault, as faultfs.py logged it. */
export interface FaultLogEntry {
  /** 1, 2, ... in firing order (per daemon: starts again after remount()). */
  seq: number;
  op: FaultOp;
  /** Path relative to the mount root ('.' is the root); null for an unlinked open file. */
  path: string | null;
  /** The second path of rename and link (their destination / new name). */
  path2?: string;
  /** Positive errno, e.g. 116. */
  errno: number;
  /** Its name, e.g. 'ESTALE'. */
  code: string;
  /** Index of the rule that fired, or null for staleAll/failAll. */
  rule: number | null;
  /** Process and user that made the failed request. */
  pid: number;
  uid: number;
}

export interface MountOptions {
  /**
   * Existing directory to expose (default: a new empty one, removed by unmount()). Yours stays
   * after unmount(), so a test can mount it again or inspect it.
   */
  backing?: string;
  /** Give the new backing directory (the mount root) to this user, e.g. postgresIds() from ./pg.ts. */
  owner?: { uid: number; gid: number };
}

export interface FaultFs {
  /** Where the filesystem is mounted (a real path, no symlinks). */
  readonly mountpoint: string;
  /** The directory behind it: inspect or prepare files here without going through FUSE. */
  readonly backing: string;
  /**
   * Replace the rules (validated here: an unknown op or errno throws). Takes effect for the next
   * operation; the rules' skip and count state starts afresh.
   */
  setRules(rules: readonly FaultRule[]): void;
  /** No rules and no staleAll/failAll: normal service. */
  clear(): void;
  /** Every operation fails with ESTALE (a remounted share where every handle is stale), or stops doing so. */
  staleAll(on: boolean): void;
  /** Every operation fails with this errno; null stops it. staleAll(true) is failAll('ESTALE'). */
  failAll(errno: ErrnoName | number | null): void;
  /** The faults that fired so far, oldest first (still available after unmount()). */
  fired(): Promise<FaultLogEntry[]>;
  /**
   * Unmount and mount again at the same mountpoint over the same backing (a share that went away
   * and came back): descriptors opened before fail with ENOTCONN, paths work again.
   * Rules are cleared; the fault log is kept.
   */
  remount(): Promise<void>;
  /** Unmount (waiting for the child to exit) and remove the temporary directory. Idempotent. */
  unmount(): Promise<void>;
}

/** Whether `err` is a system error with this errno (Node reports it negated, e.g. -116). */
export function hasErrno(err: unknown, name: ErrnoName): boolean {
  const n = (err as { errno?: unknown } | null)?.errno;
  return typeof n === 'number' && n === -os.constants.errno[name];
}

// ---------------------------------------------------------------------------------------------
// Availability

let unavailable: string | null | undefined;

/**
 * The value for node:test's `skip` option: false when FUSE tests can run, otherwise the reason
 * (no /dev/fuse, no python3-fusepy, no fusermount, no permission to mount). With
 * `HOLDFAST_REQUIRE_FUSE=1` an unavailable FUSE is an error instead of a skip.
 */
export function faultfsSkip(): string | false {
  if (unavailable === undefined) unavailable = probe();
  if (unavailable === null) return false;
  if (process.env['HOLDFAST_REQUIRE_FUSE'] === '1') throw new Error(`HOLDFAST_REQUIRE_FUSE=1 but ${unavailable}`);
  return `FUSE fault injection unavailable: ${unavailable}`;
}

function probe(): string | null {
  try {
    if (!fs.statSync('/dev/fuse').isCharacterDevice()) return '/dev/fuse is not a character device';
  } catch {
    return '/dev/fuse is missing (no FUSE in this kernel or container)';
  }
  try {
    fs.accessSync('/dev/fuse', fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return 'no read/write access to /dev/fuse';
  }
  if (!fs.existsSync(SCRIPT)) return `${SCRIPT} is missing`;
  const py = spawnSync(PYTHON, ['-c', 'import fusepy'], { encoding: 'utf8', timeout: STEP_TIMEOUT_MS });
  if (py.status !== 0) {
    return `python3-fusepy is not installed for ${PYTHON} (scripts/fuse-deps.sh installs it)`;
  }
  const fusermount = findFusermount();
  if (!fusermount) return 'neither fusermount nor fusermount3 is on PATH (scripts/fuse-deps.sh installs fuse)';
  if (process.getuid?.() === 0) {
    if (!hasCapSysAdmin()) return 'running as root without CAP_SYS_ADMIN, so mount(2) is refused';
  } else if ((fs.statSync(fusermount).mode & 0o4000) === 0) {
    return `${fusermount} is not setuid root, so a non-root user cannot mount`;
  }
  return null;
}

let fusermountPath: string | null | undefined;

function findFusermount(): string | null {
  if (fusermountPath !== undefined) return fusermountPath;
  fusermountPath = null;
  const dirs = (process.env['PATH'] ?? '').split(':').concat(['/usr/bin', '/bin', '/usr/sbin', '/sbin']);
  for (const name of ['fusermount', 'fusermount3']) {
    for (const d of dirs) {
      if (!d) continue;
      const p = path.join(d, name);
      try {
        fs.accessSync(p, fs.constants.X_OK);
        fusermountPath = p;
        return p;
      } catch {
        /* next */
      }
    }
  }
  return null;
}

function hasCapSysAdmin(): boolean {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m !== null && ((BigInt(`0x${m[1]}`) >> 21n) & 1n) === 1n;
  } catch {
    return true; // cannot tell; let the mount decide
  }
}

/** Root may always use allow_other; other users only with user_allow_other in /etc/fuse.conf. */
function allowOther(): boolean {
  if (process.getuid?.() === 0) return true;
  try {
    return /^\s*user_allow_other\b/m.test(fs.readFileSync('/etc/fuse.conf', 'utf8'));
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Mount table

/** Whether `mountpoint` (a real path) is a mount point in this process's mount namespace. */
export function isMounted(mountpoint: string): boolean {
  return mountType(mountpoint) !== undefined;
}

/** The filesystem type mounted at `mountpoint`, from /proc/self/mountinfo (the last mount wins). */
function mountType(mountpoint: string): string | undefined {
  let found: string | undefined;
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    const f = line.split(' ');
    const dash = f.indexOf('-');
    if (dash < 0 || f[4] === undefined) continue;
    const mp = f[4].replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (mp === mountpoint) found = f[dash + 1];
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// Mounting

const live = new Set<Mount>();

/** Mount a fault-injecting passthrough filesystem; see the module comment. */
export function mountFaultFs(opts: MountOptions = {}): Promise<FaultFs> {
  return mountDaemon(opts, { script: SCRIPT, args: () => [], temp: [] });
}

/**
 * A daemon built on faultfs.py's passthrough (its `arg_parser` and `serve`), for harnesses in this
 * directory (./powerloss.ts): which script, its extra arguments, and what it keeps in the mount's
 * temporary directory.
 * @internal
 */
export interface DaemonSpec {
  /** The Python script (run with the system Python). */
  script: string;
  /** Arguments after faultfs.py's --control and --log, given the mount's temporary directory. */
  args(root: string): string[];
  /** Entries of the temporary directory the daemon uses, removed by unmount(). */
  temp: readonly string[];
  /** Called before every start (mount and remount), e.g. to write the daemon's own control file. */
  beforeStart?(root: string): void;
}

/** A mount of a faultfs-based daemon; `root` is its temporary directory. @internal */
export interface DaemonMount extends FaultFs {
  readonly root: string;
}

/** Mount a faultfs-based daemon (see DaemonSpec); mountFaultFs() is mountDaemon with faultfs.py. @internal */
export async function mountDaemon(opts: MountOptions, daemon: DaemonSpec): Promise<DaemonMount> {
  const reason = faultfsSkip();
  if (reason) throw new Error(reason);
  // What a failed or interrupted test left behind is destroyed on exit (see ./exit-cleanup.ts).
  destroyOnExit(live, (m) => m.destroySync());
  const root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-faultfs-')));
  fs.chmodSync(root, 0o755); // other users (postgres) must reach the mountpoint
  let backing: string;
  const ownsBacking = opts.backing === undefined;
  try {
    if (opts.backing === undefined) {
      backing = path.join(root, 'backing');
      fs.mkdirSync(backing, { mode: 0o755 });
      if (opts.owner) fs.chownSync(backing, opts.owner.uid, opts.owner.gid);
    } else {
      backing = fs.realpathSync(opts.backing);
      if (!fs.statSync(backing).isDirectory()) throw new Error(`backing ${backing} is not a directory`);
    }
    const m = new Mount(root, backing, ownsBacking, daemon);
    live.add(m);
    try {
      await m.start();
    } catch (e) {
      await m.unmount().catch(() => undefined);
      throw e;
    }
    return m;
  } catch (e) {
    if (!isMounted(path.join(root, 'mnt'))) fs.rmSync(root, { recursive: true, force: true });
    throw e;
  }
}

class Mount implements DaemonMount {
  readonly mountpoint: string;
  private readonly control: string;
  private readonly logFile: string;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private stderr = '';
  private rules: readonly FaultRule[] = [];
  private all: ErrnoName | number | null = null;
  private generation = 0;
  private finalLog: string | undefined;
  private gone = false;

  constructor(
    readonly root: string,
    readonly backing: string,
    private readonly ownsBacking: boolean,
    private readonly daemon: DaemonSpec,
  ) {
    this.mountpoint = path.join(root, 'mnt');
    this.control = path.join(root, 'control.json');
    this.logFile = path.join(root, 'faults.log');
    fs.mkdirSync(this.mountpoint, { mode: 0o755 });
    fs.writeFileSync(this.logFile, '', { mode: 0o644 });
  }

  // -- rules

  setRules(rules: readonly FaultRule[]): void {
    rules.forEach(validateRule);
    this.rules = rules.map((r) => ({ ...r }));
    this.writeControl();
  }

  clear(): void {
    this.rules = [];
    this.all = null;
    this.writeControl();
  }

  staleAll(on: boolean): void {
    this.failAll(on ? 'ESTALE' : null);
  }

  failAll(errno: ErrnoName | number | null): void {
    if (errno !== null) checkErrno(errno, 'failAll');
    this.all = errno;
    this.writeControl();
  }

  /**
   * Write the control file to a temporary name and rename it over, with an mtime of its own
   * (1, 2, 3, ... seconds after the epoch): faultfs.py re-reads it when (mtime, inode, size)
   * changes, and two versions written within one clock tick must not look alike.
   */
  private writeControl(): void {
    if (this.gone) throw new Error('faultfs: already unmounted');
    this.generation++;
    const tmp = `${this.control}.tmp`;
    fs.writeFileSync(tmp, `${JSON.stringify({ rules: this.rules, all: this.all })}\n`, { mode: 0o644 });
    fs.utimesSync(tmp, this.generation, this.generation);
    fs.renameSync(tmp, this.control);
  }

  async fired(): Promise<FaultLogEntry[]> {
    const text = this.finalLog ?? (await fs.promises.readFile(this.logFile, 'utf8'));
    return text
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as FaultLogEntry);
  }

  // -- lifecycle

  /** Start faultfs.py and wait (bounded) until the kernel has initialised the mount. */
  async start(): Promise<void> {
    this.rules = [];
    this.all = null;
    this.writeControl();
    this.daemon.beforeStart?.(this.root);
    const args = [this.daemon.script, '--control', this.control, '--log', this.logFile, ...this.daemon.args(this.root)];
    if (allowOther()) args.push('--allow-other');
    args.push(this.backing, this.mountpoint);
    this.stderr = '';
    const child = spawn(PYTHON, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', PYTHONUNBUFFERED: '1' },
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('close', () => resolve()));
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (d: string) => {
      if (this.stderr.length < 64 * 1024) this.stderr += d;
    });
    child.stdin?.on('error', () => undefined); // EPIPE once it has exited

    await new Promise<void>((resolve, reject) => {
      let out = '';
      const fail = (why: string): void => {
        cleanup();
        reject(new Error(`faultfs: mounting ${this.mountpoint} failed: ${why}\n--- stderr\n${this.stderr.trim()}`));
      };
      const onData = (d: string): void => {
        out += d;
        if (/^ready$/m.test(out)) {
          cleanup();
          resolve();
        }
      };
      const onClose = (code: number | null, signal: string | null): void => fail(`faultfs.py exited (${signal ?? code}) before the mount was ready`);
      const onError = (e: Error): void => fail(`cannot start ${PYTHON}: ${e.message}`);
      const timer = setTimeout(() => fail(`not ready after ${READY_TIMEOUT_MS} ms`), READY_TIMEOUT_MS);
      const cleanup = (): void => {
        clearTimeout(timer);
        child.stdout?.off('data', onData);
        child.off('close', onClose);
        child.off('error', onError);
      };
      child.stdout?.setEncoding('utf8');
      child.stdout?.on('data', onData);
      child.once('close', onClose);
      child.once('error', onError);
    });

    // faultfs.py says "ready" from the kernel's INIT request, which comes after mount(2); check.
    const type = mountType(this.mountpoint);
    if (type !== FSTYPE) {
      throw new Error(`faultfs: ${this.mountpoint} is ${type === undefined ? 'not mounted' : `a ${type} mount`} after "ready"`);
    }
    // A forgotten mount must not keep the test process alive; the exit handler unmounts it.
    child.unref();
    for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();
  }

  async remount(): Promise<void> {
    if (this.gone) throw new Error('faultfs: already unmounted');
    await this.stop();
    await this.start();
  }

  async unmount(): Promise<void> {
    if (this.gone) return;
    try {
      await this.stop();
    } finally {
      if (!isMounted(this.mountpoint)) {
        this.gone = true;
        live.delete(this);
        try {
          this.finalLog = fs.readFileSync(this.logFile, 'utf8');
        } catch {
          this.finalLog = '';
        }
        removeTemp(this.root, this.ownsBacking, this.daemon.temp);
      }
    }
  }

  /**
   * Unmount and wait for faultfs.py to exit, each step bounded: fusermount -u; if the mount is
   * busy, fusermount -u -z (lazy), then umount -l; SIGKILL a child that does not exit.
   */
  private async stop(): Promise<void> {
    const child = this.child;
    const fusermount = findFusermount() ?? 'fusermount';
    const attempts: [string, string[]][] = [
      [fusermount, ['-u', this.mountpoint]],
      [fusermount, ['-u', '-z', this.mountpoint]],
      ['umount', ['-l', this.mountpoint]],
    ];
    const errors: string[] = [];
    for (const [cmd, args] of attempts) {
      if (!isMounted(this.mountpoint)) break;
      const r = await run(cmd, args);
      if (r) errors.push(`${cmd} ${args.join(' ')}: ${r}`);
    }
    if (child) {
      child.stdin?.end(); // faultfs.py's watcher: unmount (again, harmlessly) and exit
      if (!(await settles(this.exited, STEP_TIMEOUT_MS))) {
        child.kill('SIGKILL');
        await settles(this.exited, STEP_TIMEOUT_MS);
      }
      this.child = undefined;
    }
    if (isMounted(this.mountpoint)) {
      throw new Error(`faultfs: ${this.mountpoint} is still mounted\n${errors.join('\n')}\n--- stderr\n${this.stderr.trim()}`);
    }
  }

  /** For the exit handler: unmount lazily, kill the child, remove what we made. Synchronous. */
  destroySync(): void {
    if (this.gone) return;
    const fusermount = findFusermount() ?? 'fusermount';
    if (isMounted(this.mountpoint)) spawnSync(fusermount, ['-u', '-z', this.mountpoint], { stdio: 'ignore', timeout: 5_000 });
    if (isMounted(this.mountpoint)) spawnSync('umount', ['-l', this.mountpoint], { stdio: 'ignore', timeout: 5_000 });
    this.child?.kill('SIGKILL');
    if (!isMounted(this.mountpoint)) {
      this.gone = true;
      live.delete(this);
      removeTemp(this.root, this.ownsBacking, this.daemon.temp);
    }
  }
}

/**
 * Remove the temporary directory, never following a path into a mount: the mountpoint is removed
 * with rmdir (it is empty once unmounted), and the backing directory only if we made it.
 */
function removeTemp(root: string, ownsBacking: boolean, extra: readonly string[]): void {
  const mnt = path.join(root, 'mnt');
  if (isMounted(mnt)) return;
  try {
    fs.rmdirSync(mnt);
  } catch {
    return; // not empty or still busy: leave everything rather than risk deleting through it
  }
  if (ownsBacking) fs.rmSync(path.join(root, 'backing'), { recursive: true, force: true });
  for (const f of ['control.json', 'control.json.tmp', 'faults.log', ...extra]) fs.rmSync(path.join(root, f), { recursive: true, force: true });
  try {
    fs.rmdirSync(root);
  } catch {
    /* something else was put there; leave it */
  }
}

/** Run a command (bounded); undefined on success, else a one-line reason. */
function run(cmd: string, args: string[]): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: STEP_TIMEOUT_MS, encoding: 'utf8' }, (err, _stdout, stderr) => {
      resolve(err ? (stderr.trim() || err.message).split('\n')[0] : undefined);
    });
  });
}

/** Whether `p` settles within `ms`. */
async function settles(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function checkErrno(errno: unknown, where: string): void {
  if (typeof errno === 'number' ? Number.isInteger(errno) && errno > 0 : typeof errno === 'string' && Object.hasOwn(os.constants.errno, errno)) return;
  throw new Error(`faultfs: ${where}: unknown errno ${JSON.stringify(errno)}`);
}

function validateRule(rule: FaultRule, i: number): void {
  const where = `rule ${i}`;
  const ops = rule.op === undefined ? [] : typeof rule.op === 'string' ? [rule.op] : rule.op;
  if (rule.op !== undefined && ops.length === 0) throw new Error(`faultfs: ${where}: empty op list`);
  for (const op of ops) {
    if (op !== '*' && !(FAULT_OPS as readonly string[]).includes(op)) {
      throw new Error(`faultfs: ${where}: unknown op ${JSON.stringify(op)} (known: ${FAULT_OPS.join(', ')})`);
    }
  }
  checkErrno(rule.errno, where);
  for (const k of ['count', 'skip'] as const) {
    const v = rule[k];
    if (v !== undefined && !(Number.isInteger(v) && v >= 0)) throw new Error(`faultfs: ${where}: ${k} must be a non-negative integer`);
  }
  if (rule.path !== undefined && typeof rule.path !== 'string') throw new Error(`faultfs: ${where}: path must be a string`);
  const known = new Set(['op', 'errno', 'path', 'count', 'skip']);
  for (const k of Object.keys(rule)) if (!known.has(k)) throw new Error(`faultfs: ${where}: unknown key ${JSON.stringify(k)}`);
}
