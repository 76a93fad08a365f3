/**
 * Tickets of the native archive-push front (native/wal-front.c, built as dist/holdfast-push;
 * docs/design.md §12).
 *
 * The front answers an `archive-push --async` call whose file the async worker already recorded
 * in the spool, without starting Node. It cannot resolve options (flags, HOLDFAST_* variables,
 * the config file) the way the CLI does, so the CLI leaves it a ticket: for one exact set of raw
 * inputs, the spool that the resolved options lead to and the repository `config` object that
 * identifies the repository instance. The front looks the ticket up by the same digest of its own
 * inputs and trusts it only while the config file it was made from still has the same content.
 * Anything it cannot settle (no ticket, no matching record, another repository instance, an
 * unsafe directory) it hands to Node unchanged, so a ticket can only make a call faster.
 *
 * The key is the SHA-256 of, each field as "<byte length>:<bytes>":
 *   "holdfast-ticket-v1", the uid, the working directory,
 *   "a<count>" then every argument after the program except the last (the WAL path),
 *   "e<count>" then the environment entries "NAME=VALUE" sorted bytewise, of HOME,
 *   XDG_CACHE_HOME and every HOLDFAST_* name except HOLDFAST_PASSWORD (a secret the fast path
 *   does not use), HOLDFAST_FRONT (the front's own switch) and HOLDFAST_FRONT_WAITED_MS (what it
 *   tells the Node call it hands over).
 * Those are all the inputs that decide the spool: the state directory comes from the environment
 * (defaultStateDir), the repository location and cluster from flags, HOLDFAST_* and the config file.
 *
 * A ticket, `<state dir>/spool/tickets/<key hex>` (directory 0700, file 0600, both the user's):
 *   holdfast-ticket-v1
 *   spool <absolute spool directory>
 *   repo-config <absolute path of the local repository's config object>
 *   config <sha-256 hex of the config file's bytes, or "absent"> <absolute config file path>
 *   async-timeout <milliseconds>
 *
 * A synchronous call (no --async) that stored its segment leaves a sync ticket instead, with which
 * the front stores later segments itself (docs/design.md §12, "native push"):
 *   holdfast-ticket-v1
 *   sync
 *   repo <absolute local repository directory>
 *   instance <SHA-256 hex of the stored config object>
 *   key <id of the key file that opened the repository>
 *   key-cache <absolute key cache directory>
 *   password-file <absolute path of the password file>
 *   cluster <cluster name>
 *   compression zstd:<level>
 *   lock-ttl <milliseconds>
 *   config <sha-256 hex of the config file's bytes, or "absent"> <absolute config file path>
 * It names no secret: the front reads the password file, and the derived key from the key cache,
 * as the CLI does, on every call.
 *
 * An archive-get call with --prefetch leaves a get ticket, keyed by every argument but the last two
 * (%f and %p), with which the front takes segments from the prefetch queue (pg-archive-prefetch.ts):
 *   holdfast-ticket-v1
 *   get
 *   queue <absolute prefetch queue directory>
 *   repo-config <absolute path of the local repository's config object>
 *   config <sha-256 hex of the config file's bytes, or "absent"> <absolute config file path>
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const TICKET_VERSION = 'holdfast-ticket-v1';
/** Set to "off" to make the front hand every call to Node, "trace" to have it say why on stderr. */
const FRONT_ENV = 'HOLDFAST_FRONT';
/** Set by the front for the Node call it hands over after waiting: milliseconds already waited. */
export const FRONT_WAITED_ENV = 'HOLDFAST_FRONT_WAITED_MS';
const EXCLUDED_ENV = new Set(['HOLDFAST_PASSWORD', FRONT_ENV, FRONT_WAITED_ENV]);

export interface TicketInputs {
  readonly uid: number;
  readonly cwd: string;
  /** The arguments after the program (process.argv.slice(2)); the last one is the WAL path. */
  readonly args: readonly string[];
  readonly env: NodeJS.ProcessEnv;
}

export interface Ticket {
  readonly spoolDir: string;
  readonly repoConfig: string;
  readonly configPath: string;
  readonly configDigest: string;
  /** --async-timeout: how long the front may wait for the worker's record. */
  readonly asyncTimeoutMs: number;
}

function field(parts: Buffer[], value: string): void {
  const b = Buffer.from(value, 'utf8');
  parts.push(Buffer.from(`${b.length}:`, 'latin1'), b);
}

/** The ticket key (hex) of a call's raw inputs: every argument but the last `trailing` (the paths: 1 for archive-push, 2 for archive-get). */
export function ticketKey(i: TicketInputs, trailing = 1): string {
  const parts: Buffer[] = [];
  field(parts, TICKET_VERSION);
  field(parts, String(i.uid));
  field(parts, i.cwd);
  const args = i.args.slice(0, -trailing);
  field(parts, `a${args.length}`);
  for (const a of args) field(parts, a);
  const env = Object.entries(i.env)
    .filter(([k, v]) => v !== undefined && (k === 'HOME' || k === 'XDG_CACHE_HOME' || (k.startsWith('HOLDFAST_') && !EXCLUDED_ENV.has(k))))
    .map(([k, v]) => Buffer.from(`${k}=${v}`, 'utf8'))
    .sort(Buffer.compare);
  field(parts, `e${env.length}`);
  for (const e of env) parts.push(Buffer.from(`${e.length}:`, 'latin1'), e);
  return createHash('sha256').update(Buffer.concat(parts)).digest('hex');
}

/** A config file's digest as a ticket pins it: SHA-256 hex of its bytes, "absent" when there is none. */
export function configDigest(raw: Buffer | undefined): string {
  return raw === undefined ? 'absent' : createHash('sha256').update(raw).digest('hex');
}

export interface SyncTicket {
  readonly repoDir: string;
  readonly instance: string;
  readonly keyId: string;
  readonly keyCacheDir: string;
  readonly passwordFile: string;
  readonly cluster: string;
  readonly level: number;
  readonly lockTtlMs: number;
  readonly configPath: string;
  readonly configDigest: string;
}

export function syncTicketText(t: SyncTicket): string {
  return (
    `${TICKET_VERSION}\nsync\nrepo ${t.repoDir}\ninstance ${t.instance}\nkey ${t.keyId}\nkey-cache ${t.keyCacheDir}\npassword-file ${t.passwordFile}\n` +
    `cluster ${t.cluster}\ncompression zstd:${t.level}\nlock-ttl ${Math.max(1, Math.round(t.lockTtlMs))}\nconfig ${t.configDigest} ${t.configPath}\n`
  );
}

/** An archive-get ticket: where the prefetch queue of these inputs is (pg-archive-prefetch.ts). */
export interface GetTicket {
  readonly queueDir: string;
  readonly repoConfig: string;
  readonly configPath: string;
  readonly configDigest: string;
}

export function getTicketText(t: GetTicket): string {
  return `${TICKET_VERSION}\nget\nqueue ${t.queueDir}\nrepo-config ${t.repoConfig}\nconfig ${t.configDigest} ${t.configPath}\n`;
}

export function ticketText(t: Ticket): string {
  return `${TICKET_VERSION}\nspool ${t.spoolDir}\nrepo-config ${t.repoConfig}\nconfig ${t.configDigest} ${t.configPath}\nasync-timeout ${Math.max(0, Math.round(t.asyncTimeoutMs))}\n`;
}

export function ticketPath(stateDir: string, key: string): string {
  return path.join(path.resolve(stateDir), 'spool', 'tickets', key);
}

/**
 * Leave the ticket for these inputs, unless an identical one is there. Quiet: a ticket only saves
 * time, so a failure to write one is not the call's failure. Paths holding a newline are skipped
 * (the format is line-based).
 */
export function leaveTicket(stateDir: string, inputs: TicketInputs, t: Ticket | SyncTicket | GetTicket): void {
  const paths = 'spoolDir' in t ? [t.spoolDir, t.repoConfig, t.configPath] : 'queueDir' in t ? [t.queueDir, t.repoConfig, t.configPath] : [t.repoDir, t.keyCacheDir, t.passwordFile, t.configPath];
  if (paths.some((p) => p.includes('\n') || !path.isAbsolute(p))) return;
  const file = ticketPath(stateDir, ticketKey(inputs, 'queueDir' in t ? 2 : 1));
  const text = 'spoolDir' in t ? ticketText(t) : 'queueDir' in t ? getTicketText(t) : syncTicketText(t);
  try {
    // Kept when identical and still private (the front trusts nothing else).
    const st = fs.lstatSync(file);
    if (st.isFile() && st.uid === inputs.uid && (st.mode & 0o022) === 0 && fs.readFileSync(file, 'utf8') === text) return;
  } catch {
    // none yet
  }
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    fs.writeFileSync(tmp, text, { mode: 0o600 });
    fs.renameSync(tmp, file);
  } catch {
    fs.rmSync(tmp, { force: true });
  }
}
