/**
 * A private OpenSSH server for the SFTP tests (Debian `openssh-server`, installed by
 * scripts/sftp-deps.sh). Used by *.test.ts only.
 *
 * Each server is a second `sshd` — never the system's — run in the foreground (`-D -e`) from a
 * config file in its own temporary directory (mode 0700):
 *
 *     dir/
 *       sshd_config           ListenAddress 127.0.0.1, a free port, UsePAM no, internal-sftp,
 *                             public keys only, PermitRootLogin prohibit-password, StrictModes no
 *       host_<type>_key(.pub) its own host keys (ssh-keygen), ed25519 unless asked otherwise
 *       client_key(.pub)      a client key, the only one in authorized_keys
 *       authorized_keys
 *       known_hosts           the server's host keys under `[127.0.0.1]:PORT`
 *       sshd.pid
 *
 * Logins are for the user running the tests (root here; the config allows root with keys only).
 * sshd refuses every login of an account whose password field is locked (`!…` in /etc/shadow),
 * even by key, when PAM is off: sshdUnavailableReason() says so instead of letting tests fail.
 *
 * The server's log (stderr, `-e`) is kept in memory: `log()`, and `acceptedLogins()` counts the
 * "Accepted publickey" lines, i.e. SSH connections that authenticated. Every server still running
 * when the process exits is killed by an exit handler (onExitCleanup); tests should still call
 * stop() in an after hook.
 *
 * @example
 * ```ts
 * describe('sftp', { skip: sshdSkip() }, () => {
 *   let sshd: Sshd;
 *   before(async () => (sshd = await startSshd()));
 *   after(() => sshd?.stop());
 *   it('connects', async () => {
 *     const b = new SftpBackend(sshd.url('/tmp/x'), { identityFile: sshd.clientKey, knownHosts: sshd.knownHosts });
 *     …
 *   });
 * });
 * ```
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { onExitCleanup } from './exit-cleanup.js';
import { freePort } from './pg.js';

export const SSHD = '/usr/sbin/sshd';
const SSH_KEYGEN = 'ssh-keygen';
/** sshd's privilege-separation directory; sshd refuses to start without it. */
const PRIVSEP_DIR = '/run/sshd';
/** Kept log of one server (its stderr), at most this many characters (the newest). */
const MAX_LOG = 1 << 20;

export type HostKeyType = 'ed25519' | 'ecdsa' | 'rsa';

export interface SshdOptions {
  /** Host key types the server has (default: ed25519). */
  readonly hostKeyTypes?: readonly HostKeyType[];
  /** Extra sshd_config lines. */
  readonly extraConfig?: readonly string[];
}

export interface Sshd {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** The login user (the user running the tests). */
  readonly user: string;
  /** The server's private directory (config, keys, known_hosts). */
  readonly dir: string;
  /** Private key that may log in. */
  readonly clientKey: string;
  /** known_hosts file with every host key of this server under `[127.0.0.1]:PORT`. */
  readonly knownHosts: string;
  /** The public host keys, `type base64` per type (as in a .pub file, without comment). */
  readonly hostKeys: ReadonlyMap<HostKeyType, string>;
  /** `sftp://user@127.0.0.1:PORT<remotePath>` (remotePath absolute). */
  url(remotePath: string): string;
  /** The server's log so far. */
  log(): string;
  /** Number of SSH logins the server accepted so far (one per connection). */
  acceptedLogins(): number;
  /** Processes of the open SSH sessions (the listener's children). */
  sessionPids(): number[];
  /** Kill every open session with SIGKILL, as a network failure would cut it; the server keeps listening. */
  killSessions(): void;
  /** Stop the server and the sessions it forked; idempotent. */
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Availability

let unavailable: string | null | undefined;

/** Why a private sshd cannot run here, or undefined when it can. */
export function sshdUnavailableReason(): string | undefined {
  if (unavailable === undefined) unavailable = probe();
  return unavailable ?? undefined;
}

function probe(): string | null {
  try {
    fs.accessSync(SSHD, fs.constants.X_OK);
  } catch {
    return `${SSHD} is not installed (Debian openssh-server; scripts/sftp-deps.sh installs it)`;
  }
  const kg = spawnSync(SSH_KEYGEN, ['-?'], { stdio: 'ignore', timeout: 10_000 });
  if (kg.error) return `ssh-keygen cannot run (${kg.error.message})`;
  if (!fs.existsSync(PRIVSEP_DIR) && process.getuid?.() !== 0) return `${PRIVSEP_DIR} is missing and only root can create it`;
  const locked = accountLocked(os.userInfo().username);
  if (locked) return locked;
  return null;
}

/** sshd without PAM refuses every login of an account whose password field starts with '!'. */
function accountLocked(user: string): string | undefined {
  let shadow: string;
  try {
    shadow = fs.readFileSync('/etc/shadow', 'utf8');
  } catch {
    return undefined; // cannot tell; a login failure will say more
  }
  const line = shadow.split('\n').find((l) => l.startsWith(`${user}:`));
  const pw = line?.split(':')[1];
  if (pw !== undefined && pw.startsWith('!')) {
    return `the account ${user} is locked (password field "${pw.slice(0, 2)}…" in /etc/shadow), so sshd refuses its key logins too; "usermod -p '*' ${user}" unlocks it for key logins only`;
  }
  return undefined;
}

/**
 * The value for node:test's `skip` option: false when a private sshd can run, otherwise the
 * reason. With `HOLDFAST_REQUIRE_SFTP=1` an unavailable sshd is an error instead of a skip.
 */
export function sshdSkip(): string | false {
  const reason = sshdUnavailableReason();
  if (reason === undefined) return false;
  if (process.env['HOLDFAST_REQUIRE_SFTP'] === '1') throw new Error(`HOLDFAST_REQUIRE_SFTP=1 but ${reason}`);
  return `real sshd unavailable: ${reason}`;
}

// ---------------------------------------------------------------------------------------------
// Keys

/** Generate a key pair without passphrase at `file` (and `file.pub`); returns the public `type base64`. */
export function generateKey(file: string, type: HostKeyType = 'ed25519'): string {
  const args = ['-q', '-t', type, '-N', '', '-C', 'holdfast-test', '-f', file];
  if (type === 'rsa') args.push('-b', '2048');
  const r = spawnSync(SSH_KEYGEN, args, { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`ssh-keygen -t ${type} failed: ${r.error?.message ?? r.stderr}`);
  const pub = fs.readFileSync(`${file}.pub`, 'utf8').trim().split(/\s+/);
  return `${pub[0]} ${pub[1]}`;
}

// ---------------------------------------------------------------------------------------------
// Servers

const live = new Set<ChildProcess>();

/** Start a private sshd on a free loopback port; resolves once it accepts connections. */
export async function startSshd(options: SshdOptions = {}): Promise<Sshd> {
  const reason = sshdUnavailableReason();
  if (reason !== undefined) throw new Error(`cannot start sshd: ${reason}`);
  installExitHandler();
  await fsp.mkdir(PRIVSEP_DIR, { recursive: true, mode: 0o755 });
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'holdfast-sshd-'));
  try {
    const types = options.hostKeyTypes ?? ['ed25519'];
    const hostKeys = new Map<HostKeyType, string>();
    for (const t of types) hostKeys.set(t, generateKey(path.join(dir, `host_${t}_key`), t));
    const clientKey = path.join(dir, 'client_key');
    const clientPub = generateKey(clientKey);
    await fsp.writeFile(path.join(dir, 'authorized_keys'), `${clientPub} holdfast-test\n`, { mode: 0o600 });
    const user = os.userInfo().username;
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const server = await launch(dir, port, types, options.extraConfig ?? []);
      if (server.ok) {
        const knownHosts = path.join(dir, 'known_hosts');
        await fsp.writeFile(knownHosts, [...hostKeys.values()].map((k) => `[127.0.0.1]:${port} ${k}\n`).join(''), { mode: 0o600 });
        return makeSshd(server.child, server.log, { dir, port, user, clientKey, knownHosts, hostKeys });
      }
      // A port picked by freePort() can be taken by someone else before sshd binds it.
      if (!/Address already in use|Cannot bind any address/i.test(server.log()) || attempt >= 3) {
        throw new Error(`sshd did not start: ${server.reason}\n${server.log().slice(-4000)}`);
      }
    }
  } catch (err) {
    await fsp.rm(dir, { recursive: true, force: true });
    throw err;
  }
}

type Launched = { ok: true; child: ChildProcess; log: () => string } | { ok: false; reason: string; log: () => string };

async function launch(dir: string, port: number, types: readonly HostKeyType[], extra: readonly string[]): Promise<Launched> {
  const config = path.join(dir, 'sshd_config');
  const lines = [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    ...types.map((t) => `HostKey ${path.join(dir, `host_${t}_key`)}`),
    `PidFile ${path.join(dir, 'sshd.pid')}`,
    'UsePAM no',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PermitRootLogin prohibit-password',
    `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
    'StrictModes no',
    'UseDNS no',
    'PrintMotd no',
    'X11Forwarding no',
    'AllowTcpForwarding no',
    'MaxStartups 64:30:128',
    'MaxSessions 32',
    'LogLevel INFO',
    'Subsystem sftp internal-sftp',
    ...extra,
  ];
  await fsp.writeFile(config, `${lines.join('\n')}\n`, { mode: 0o600 });
  // Its own process group, apart from the test runner's signals (sessions leave it: see stop()).
  const child = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let text = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (s: string) => {
    text += s;
    if (text.length > MAX_LOG) text = text.slice(-MAX_LOG / 2);
  });
  const log = (): string => text;
  let exited: string | undefined;
  child.on('exit', (code, signal) => {
    exited = `sshd exited (${signal ?? `code ${code}`})`;
    live.delete(child);
  });
  child.on('error', (err) => (exited = `cannot run ${SSHD}: ${err.message}`));
  live.add(child);
  child.unref();
  // Wait (bounded: 10 s) until the port accepts a connection or sshd exits.
  for (let i = 0; i < 200; i++) {
    if (exited !== undefined) return { ok: false, reason: exited, log };
    if (await accepts(port)) return { ok: true, child, log };
    await new Promise((r) => setTimeout(r, 50));
  }
  killGroup(child, 'SIGKILL');
  return { ok: false, reason: 'sshd did not accept connections within 10 s', log };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    // sshd greets first: a banner means it is really sshd that answers.
    s.once('data', (d) => done(d.toString('latin1').startsWith('SSH-')));
    s.once('error', () => done(false));
  });
}

function killGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    try {
      child.kill(sig);
    } catch {
      /* gone */
    }
  }
}

/** Pids of the live processes whose parent is `pid` (from /proc). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      // Field 4 (ppid) follows the command name, which is in parentheses and may contain spaces.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(e));
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
}

function makeSshd(
  child: ChildProcess,
  log: () => string,
  f: { dir: string; port: number; user: string; clientKey: string; knownHosts: string; hostKeys: Map<HostKeyType, string> },
): Sshd {
  let stopped: Promise<void> | undefined;
  const running = (): boolean => child.pid !== undefined && child.exitCode === null && child.signalCode === null;
  return {
    host: '127.0.0.1',
    ...f,
    url: (remotePath) => `sftp://${encodeURIComponent(f.user)}@127.0.0.1:${f.port}${remotePath.split('/').map(encodeURIComponent).join('/')}`,
    log,
    acceptedLogins: () => (log().match(/Accepted publickey for /g) ?? []).length,
    sessionPids: () => (running() ? childrenOf(child.pid!) : []),
    killSessions: () => {
      if (running()) for (const pid of childrenOf(child.pid!)) signal(pid, 'SIGKILL');
    },
    stop: () =>
      (stopped ??= (async () => {
        if (running()) {
          // Session processes call setsid(): the listener's process group does not reach them.
          for (const pid of childrenOf(child.pid!)) signal(pid, 'SIGTERM');
          const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
          killGroup(child, 'SIGTERM');
          const timer = setTimeout(() => killGroup(child, 'SIGKILL'), 5000);
          await gone;
          clearTimeout(timer);
        }
        live.delete(child);
        await fsp.rm(f.dir, { recursive: true, force: true });
      })()),
  };
}

let handlerInstalled = false;
function installExitHandler(): void {
  if (handlerInstalled) return;
  handlerInstalled = true;
  onExitCleanup(() => {
    for (const c of [...live]) {
      if (c.pid !== undefined) for (const pid of childrenOf(c.pid)) signal(pid, 'SIGKILL');
      killGroup(c, 'SIGKILL');
    }
  });
}
