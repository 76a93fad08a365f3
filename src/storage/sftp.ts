/**
 * SFTP driver: a repository in a directory of an SSH server, `sftp://user@host[:port]/path`,
 * through the `ssh2` package (loaded on first use, so other commands do not pay for it).
 *
 * Location. `/path` is absolute on the server; `sftp://user@host/~/path` is relative to the login
 * directory. The user defaults to the local user name, the port to 22. IPv6 hosts go in brackets.
 *
 * Connection. One SSH connection per backend, opened on the first request and shared by every
 * operation; at most `maxRequests` SFTP requests are outstanding on it (reads and writes of one
 * object are pipelined). A lost connection fails the requests in flight with `transient` errors and
 * the next request opens a new one. A request the server does not answer within
 * `requestTimeoutMs` drops the connection. The socket does not keep the process alive while no
 * request is in flight.
 *
 * Authentication. Public keys only: the identity file (SftpSettings.identityFile, else the first
 * of ~/.ssh/id_ed25519, id_ecdsa, id_rsa that exists), and the keys of ssh-agent when
 * SSH_AUTH_SOCK is set. A key with a passphrase can only be used through the agent.
 *
 * Host keys. The server's host key must be in the known_hosts file (SftpSettings.knownHosts, else
 * ~/.ssh/known_hosts; see known-hosts.ts for the format). An unknown key is refused with its
 * SHA256 fingerprint and the ssh-keyscan command that would add it; a key that differs from the
 * one recorded is refused louder; a `@revoked` key is refused. Nothing is ever added to the file.
 * The key types the file knows for the host are offered first, as ssh does.
 *
 * Writes and durability (docs/design.md §19 "SFTP"). `put` writes a temporary file
 * `.tmp-<name>-<random>` in the destination directory, `fsync@openssh.com`s it, and moves it into
 * place: with `posix-rename@openssh.com` (rename(2): atomically replaces an existing object), or
 * for createOnly with `hardlink@openssh.com` (link(2): fails if the name exists, so of concurrent
 * createOnly puts exactly one wins), then removes the temporary name. Without hardlink@openssh.com
 * createOnly falls back to the plain SFTP rename, which the protocol defines to fail when the target
 * exists (OpenSSH implements it with link(2) as well; other servers may check and rename, which is
 * racy). Without posix-rename@openssh.com an existing object cannot be replaced atomically, and
 * such puts fail. Then the directory is fsynced: the directory is opened like a file and
 * `fsync@openssh.com` is sent for the handle, which OpenSSH's sftp-server turns into fsync(2) on
 * the directory; a server that refuses is remembered and directory fsync is skipped from then on
 * (the rename is then durable only when the server's filesystem makes it so). Directories created
 * on the way are fsynced into their parents the same way. A server without fsync@openssh.com can
 * make nothing durable: then `put` resolves when the server acknowledged the rename (the same
 * promise as other remote stores), never earlier.
 *
 * Errors: SFTP "no such file" → not-found, "permission denied" → permission, lost connections,
 * timeouts and refused connections → transient, authentication and host-key failures →
 * permission (permanent: retrying does not help), anything else → io.
 */
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import type { Client, ConnectConfig, ServerHostKeyAlgorithm, SFTPWrapper, Stats } from 'ssh2';
import { type Backend, type ByteRange, type Capabilities, type DeleteOptions, type ObjectInfo, type ObjectWriter, type PutData, type PutOptions, RESERVED_PREFIX, StorageError, type StorageErrorKind, checkName, putParts } from './backend.js';
import type { SftpSettings } from './settings.js';
import { type HostKeyVerdict, blobType, fingerprint, hostString, parseKnownHosts, preferredHostKeyAlgorithms, shortType, verifyHostKey } from './known-hosts.js';
import { HoldfastError } from '../errors/catalogue.js';
import { Semaphore } from '../util/semaphore.js';

const TMP_PREFIX = RESERVED_PREFIX;
const posix = path.posix;

/** SFTP status codes (draft-ietf-secsh-filexfer-02). */
const FX = { EOF: 1, NO_SUCH_FILE: 2, PERMISSION_DENIED: 3, FAILURE: 4, NO_CONNECTION: 6, CONNECTION_LOST: 7, OP_UNSUPPORTED: 8 } as const;

/** Host key algorithms ssh2 supports, in its default order of preference. */
const HOST_KEY_ALGORITHMS: readonly ServerHostKeyAlgorithm[] = ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'];

/** Reads and writes of one object in flight at once. */
const PIPELINE = 8;
/** Open handles kept for range reads (restore reads many ranges of the same packs). */
const HANDLES = 16;

/** Tuning and test knobs; the defaults suit real use. */
export interface SftpOptions {
  /** How long connecting and logging in may take (default 30 s). */
  readonly connectTimeoutMs?: number;
  /** A request unanswered this long drops the connection (default 120 s). */
  readonly requestTimeoutMs?: number;
  /** SFTP requests outstanding on the connection at once (default 64). */
  readonly maxRequests?: number;
}

/** Where an sftp:// location points. */
export interface SftpLocation {
  readonly user: string;
  readonly host: string;
  readonly port: number;
  /** Remote directory: absolute (`/srv/repo`), or relative to the login directory (`repo`, `.`). */
  readonly root: string;
}

/** Parse `sftp://[user@]host[:port]/path`; throws CONFIG_INVALID naming what is wrong. */
export function parseSftpLocation(location: string): SftpLocation {
  const bad = (why: string): HoldfastError =>
    new HoldfastError('CONFIG_INVALID', `repository location ${location}: ${why}`, { location, hint: 'Write SFTP locations as sftp://user@host:port/absolute/path, or sftp://user@host/~/path for a path below the login directory.' });
  let url: URL;
  try {
    url = new URL(location);
  } catch {
    throw bad('not a valid URL');
  }
  if (url.protocol !== 'sftp:') throw bad('not an sftp:// URL');
  if (url.password !== '') throw bad('passwords in the URL are not supported (holdfast logs in with keys only)');
  if (url.search !== '' || url.hash !== '') throw bad('query strings and fragments are not allowed');
  let host = url.hostname;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (host === '') throw bad('no host');
  const port = url.port === '' ? 22 : Number(url.port);
  let user: string;
  try {
    user = url.username === '' ? os.userInfo().username : decodeURIComponent(url.username);
  } catch {
    throw bad('the user name is not valid percent-encoding');
  }
  let segments: string[];
  try {
    // The URL parser resolves "." and ".." segments away; a location that has them is refused instead.
    const rawPath = location.replace(/^sftp:\/\/[^/]*/i, '');
    if (rawPath.split('/').some((seg) => /^(\.|%2e){1,2}$/i.test(seg))) throw bad('the path has empty, "." or ".." segments');
    segments = url.pathname.split('/').slice(1).map(decodeURIComponent);
  } catch (err) {
    if (err instanceof HoldfastError) throw err;
    throw bad('the path is not valid percent-encoding');
  }
  if (segments.length > 0 && segments[segments.length - 1] === '') segments.pop(); // trailing slash
  const home = segments[0] === '~';
  if (home) segments.shift();
  if (segments.some((s) => s === '' || s === '.' || s === '..' || s.includes('\0'))) throw bad('the path has empty, "." or ".." segments');
  if (!home && segments.length === 0) throw bad('no directory: give one, e.g. sftp://user@host/srv/repo (or /~/repo below the login directory)');
  const root = home ? (segments.length === 0 ? '.' : segments.join('/')) : `/${segments.join('/')}`;
  return { user, host, port, root };
}

/** The canonical spelling of a location, used in messages. */
function formatLocation(l: SftpLocation): string {
  const host = l.host.includes(':') ? `[${l.host}]` : l.host;
  const port = l.port === 22 ? '' : `:${l.port}`;
  const p = l.root === '.' ? '/~' : l.root.startsWith('/') ? l.root : `/~/${l.root}`;
  return `sftp://${encodeURIComponent(l.user)}@${host}${port}${p}`;
}

type Ssh2 = typeof import('ssh2');
let ssh2Module: Promise<Ssh2> | undefined;

/** ssh2, loaded once on first use (it costs start-up time that most commands do not need). */
function loadSsh2(): Promise<Ssh2> {
  ssh2Module ??= import('ssh2').then((m) => ((m as { default?: Ssh2 }).default ?? m) as Ssh2);
  return ssh2Module;
}

/** One SSH connection and its SFTP channel. */
interface Session {
  readonly client: Client;
  readonly sftp: SFTPWrapper;
  readonly sock: net.Socket;
  readonly requests: Semaphore;
  /** Largest read and write the server accepts in one request. */
  readonly maxRead: number;
  readonly maxWrite: number;
  /** Operations in flight: the socket keeps the process alive only while this is above 0. */
  active: number;
  closed: boolean;
  /** Why the connection was dropped, for requests that fail because of it. */
  lost?: string;
  /** Open handles for range reads, by remote path. */
  readonly handles: Map<string, { handle: Promise<{ h: Buffer; size: number }>; users: number }>;
}

type Cb<T> = (err: Error | null | undefined, value?: T) => void;

/** An error carrying an SFTP status code, or a Node/ssh2 connection error. */
function statusOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'number' ? code : undefined;
}

const TRANSIENT_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EHOSTDOWN', 'EAI_AGAIN', 'ERR_SOCKET_CLOSED']);

export class SftpBackend implements Backend {
  readonly location: string;
  /** conditionalCreate: link(2) through hardlink@openssh.com (see the module comment). */
  readonly capabilities: Capabilities = { conditionalCreate: true, maxConcurrency: 8, persistent: true };
  /** Counters for tests and diagnostics: SSH connections attempted so far (one per login while none is lost). */
  readonly stats = { connections: 0 };
  readonly remote: SftpLocation;
  private readonly settings: SftpSettings;
  private readonly connectTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private readonly maxRequests: number;
  private current: Session | undefined;
  private connecting: Promise<Session> | undefined;
  private closed = false;
  /** False once the server refused to fsync a directory; never retried. */
  private dirFsync = true;

  constructor(location: string, settings: SftpSettings = {}, options: SftpOptions = {}) {
    this.remote = parseSftpLocation(location);
    this.location = formatLocation(this.remote);
    this.settings = settings;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 30_000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 120_000;
    this.maxRequests = options.maxRequests ?? 64;
  }

  // ------------------------------------------------------------------ paths and errors

  /** Remote path of an object name (or '' for the root). */
  private path(name: string): string {
    return name === '' ? this.remote.root : this.remote.root === '/' ? `/${name}` : `${this.remote.root}/${name}`;
  }

  private wrap(err: unknown, name: string, what: string): StorageError {
    if (err instanceof StorageError) return err;
    const status = statusOf(err);
    const code = (err as { code?: unknown } | undefined)?.code;
    const level = (err as { level?: unknown } | undefined)?.level;
    const msg = err instanceof Error ? err.message : String(err);
    let kind: StorageErrorKind = 'io';
    if (status === FX.NO_SUCH_FILE) kind = 'not-found';
    else if (status === FX.PERMISSION_DENIED) kind = 'permission';
    else if (status === FX.NO_CONNECTION || status === FX.CONNECTION_LOST) kind = 'transient';
    else if (typeof code === 'string' && TRANSIENT_CODES.has(code)) kind = 'transient';
    else if (level === 'client-timeout' || level === 'client-socket') kind = 'transient';
    else if (level === 'client-authentication') kind = 'permission';
    else if (status === undefined && /No response from server|not connected|connection (lost|closed)|Channel (not open|closed)/i.test(msg)) kind = 'transient';
    return new StorageError(kind, this.location, name, `${what} ${name === '' ? '(root)' : name} in ${this.location}: ${msg}`, { cause: err });
  }

  // ------------------------------------------------------------------ connection

  private session(): Promise<Session> {
    if (this.closed) return Promise.reject(new StorageError('io', this.location, '', `${this.location}: the backend is closed`));
    if (this.current && !this.current.closed) return Promise.resolve(this.current);
    this.connecting ??= this.connect().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private async connect(): Promise<Session> {
    let ssh2: Ssh2;
    try {
      ssh2 = await loadSsh2();
    } catch (err) {
      throw new StorageError('io', this.location, '', `cannot load the ssh2 package for ${this.location}: ${(err as Error).message}`, { cause: err });
    }
    const auth = await this.authentication(ssh2);
    const knownFile = this.settings.knownHosts ?? path.join(os.homedir(), '.ssh', 'known_hosts');
    let knownText = '';
    let knownMissing = false;
    try {
      knownText = await readFile(knownFile, 'utf8');
    } catch (err) {
      if ((err as { code?: string }).code !== 'ENOENT') {
        throw new StorageError('permission', this.location, '', `cannot read the known_hosts file ${knownFile}: ${(err as Error).message}`, { cause: err });
      }
      knownMissing = true;
    }
    const known = parseKnownHosts(knownText);
    const { host, port, user } = this.remote;
    let refusal: StorageError | undefined;
    const sock = net.connect({ host, port });
    sock.setNoDelay(true);
    sock.setKeepAlive(true, 15_000);
    const client = new ssh2.Client();
    this.stats.connections++;
    const config: ConnectConfig = {
      sock,
      username: user,
      readyTimeout: this.connectTimeoutMs,
      ...auth,
      algorithms: { serverHostKey: preferredHostKeyAlgorithms(known, host, port, HOST_KEY_ALGORITHMS) as ServerHostKeyAlgorithm[] },
      hostVerifier: (key: Buffer): boolean => {
        const verdict = verifyHostKey(known, host, port, key);
        if (verdict.status === 'known') return true;
        refusal = this.hostKeyRefusal(verdict, key, knownFile, knownMissing);
        return false;
      },
    };
    try {
      await new Promise<void>((resolve, reject) => {
        client.once('ready', () => resolve());
        client.once('error', reject);
        client.once('close', () => reject(new Error('connection closed during the handshake')));
        client.connect(config);
      });
      const sftp = await new Promise<SFTPWrapper>((resolve, reject) => client.sftp((err, s) => (err ? reject(err) : resolve(s))));
      const limits = sftp as unknown as { _maxReadLen?: number; _maxWriteLen?: number };
      const s: Session = {
        client,
        sftp,
        sock,
        requests: new Semaphore(this.maxRequests),
        maxRead: Math.max(1024, limits._maxReadLen ?? 32_768),
        maxWrite: Math.max(1024, limits._maxWriteLen ?? 32_768),
        active: 0,
        closed: false,
        handles: new Map(),
      };
      const drop = (why: string): void => this.drop(s, why);
      client.on('error', (err: Error) => drop(err.message));
      client.on('close', () => drop('the connection closed'));
      sftp.on('close', () => drop('the SFTP channel closed'));
      sock.unref();
      this.current = s;
      return s;
    } catch (err) {
      client.removeAllListeners('ready');
      client.on('error', () => undefined); // late errors of a connection given up on
      client.destroy();
      sock.destroy();
      if (refusal) throw refusal;
      const level = (err as { level?: unknown }).level;
      const where = `${user}@${hostString(host, port)}`;
      if (level === 'client-authentication') {
        throw new StorageError(
          'permission',
          this.location,
          '',
          `${this.location}: the server refused the SSH login of ${where} (${auth.describe}); check that the public key is in the user's authorized_keys on the server`,
          { cause: err },
        );
      }
      const e = this.wrap(err, '', 'cannot connect to');
      throw new StorageError(e.kind, this.location, '', `cannot connect to ${this.location} (${where}): ${(err as Error).message}`, { cause: err });
    }
  }

  /** Keys to log in with: the identity file and/or ssh-agent. */
  private async authentication(ssh2: Ssh2): Promise<{ privateKey?: Buffer; agent?: string; describe: string }> {
    const agent = process.env['SSH_AUTH_SOCK'] || undefined;
    const explicit = this.settings.identityFile;
    const candidates = explicit !== undefined ? [explicit] : ['id_ed25519', 'id_ecdsa', 'id_rsa'].map((f) => path.join(os.homedir(), '.ssh', f));
    for (const file of candidates) {
      let data: Buffer;
      try {
        data = await readFile(file);
      } catch (err) {
        if (explicit === undefined && (err as { code?: string }).code === 'ENOENT') continue;
        throw new StorageError('permission', this.location, '', `cannot read the SSH identity file ${file} (--sftp-identity): ${(err as Error).message}`, { cause: err });
      }
      const parsed = ssh2.utils.parseKey(data);
      if (parsed instanceof Error) {
        const encrypted = /encrypted|passphrase/i.test(parsed.message);
        if (encrypted && agent !== undefined) return { agent, describe: `ssh-agent at ${agent}; ${file} has a passphrase and was not used` };
        if (encrypted) {
          throw new StorageError('permission', this.location, '', `the SSH identity file ${file} is protected by a passphrase, which holdfast cannot ask for: add the key to ssh-agent (SSH_AUTH_SOCK) or use a key without passphrase`);
        }
        throw new StorageError('permission', this.location, '', `the SSH identity file ${file} is not a private key ssh2 can read: ${parsed.message}`);
      }
      return { privateKey: data, ...(agent !== undefined ? { agent } : {}), describe: `key ${file}${agent !== undefined ? ` and ssh-agent at ${agent}` : ''}` };
    }
    if (agent !== undefined) return { agent, describe: `ssh-agent at ${agent}` };
    throw new StorageError('permission', this.location, '', `no SSH key to log in to ${this.location} with: pass --sftp-identity FILE (HOLDFAST_SFTP_IDENTITY), put a key in ~/.ssh/id_ed25519, or run ssh-agent`, { hint: 'Give holdfast a private key whose public key is in the server account\'s authorized_keys.' });
  }

  private hostKeyRefusal(v: Exclude<HostKeyVerdict, { status: 'known' }>, key: Buffer, file: string, missing: boolean): StorageError {
    const { host, port } = this.remote;
    const hs = hostString(host, port);
    const type = blobType(key) ?? 'unknown-type';
    const fp = fingerprint(key);
    const keyscan = `ssh-keyscan ${port === 22 ? '' : `-p ${port} `}-t ${shortType(type)} ${host} >> ${file}`;
    let msg: string;
    if (v.status === 'revoked') {
      msg = `host key verification failed for ${hs}: the server's ${type} key ${fp} is marked @revoked in ${file} (line ${v.entry.line}); refusing to connect to ${this.location}`;
    } else if (v.status === 'changed') {
      const old = v.entries.map((e) => `${fingerprint(e.blob)} (line ${e.line})`).join(', ');
      msg =
        `WARNING: THE HOST KEY OF ${hs} HAS CHANGED. The server offered ${type} key ${fp}, but ${file} records ${old} for it. ` +
        `Someone may be intercepting the connection (man-in-the-middle), or the server's host key was replaced. Refusing to connect to ${this.location}. ` +
        `Only if you know the key was replaced: remove the old entry with ssh-keygen -R '${hs}' -f ${file}, check the new fingerprint on the server (ssh-keygen -lf /etc/ssh/ssh_host_${shortType(type)}_key.pub), and add it: ${keyscan}`;
    } else {
      const others = v.others.length > 0 ? ` It knows ${[...new Set(v.others.map((e) => e.type))].join(', ')} key(s) for this host but the server did not offer one, which may mean it is not the same server.` : '';
      msg =
        `host key verification failed: the host key of ${hs} is unknown (the server offered ${type} key ${fp}, and ${file} ${missing ? 'does not exist' : `has no ${type} key for ${hs}`}).${others} Refusing to connect to ${this.location}. ` +
        `If ${fp} is that server's key (ssh-keygen -lf /etc/ssh/ssh_host_${shortType(type)}_key.pub on the server shows it), add it with: ${keyscan}`;
    }
    return new StorageError('permission', this.location, '', msg, { hint: v.status === 'changed' || v.status === 'revoked' ? 'Do not connect until you know why the host key differs; the message says how to check and, only if the key was really replaced, how to update known_hosts.' : `Verify the server's key fingerprint out of band, then add it to ${file} as the message shows (--sftp-known-hosts chooses the file).` });
  }

  /** Forget a connection that failed; its requests fail and the next operation reconnects. */
  private drop(s: Session, why: string): void {
    if (s.closed) return;
    s.closed = true;
    s.lost = why;
    if (this.current === s) this.current = undefined;
    s.handles.clear();
    s.client.destroy();
    s.sock.destroy();
  }

  /** Run one operation on the shared connection, mapping its errors. */
  private async op<T>(name: string, what: string, fn: (s: Session) => Promise<T>): Promise<T> {
    let s: Session | undefined;
    try {
      s = await this.session();
      this.busy(s, 1);
      return await fn(s);
    } catch (err) {
      throw this.wrap(err, name, what);
    } finally {
      if (s) this.busy(s, -1);
    }
  }

  private busy(s: Session, delta: number): void {
    s.active += delta;
    if (s.closed) return;
    if (s.active === 1 && delta > 0) s.sock.ref();
    else if (s.active === 0) s.sock.unref();
  }

  /** One SFTP request, bounded by the connection's request limit and the request timeout. */
  private call<T>(s: Session, start: (cb: Cb<T>) => void): Promise<T> {
    return s.requests.run(
      () =>
        new Promise<T>((resolve, reject) => {
          if (s.closed) {
            reject(Object.assign(new Error(`connection lost: ${s.lost ?? 'closed'}`), { code: 'ECONNRESET' }));
            return;
          }
          const timer = setTimeout(() => {
            const why = `no answer from the server within ${this.requestTimeoutMs} ms`;
            reject(Object.assign(new Error(why), { code: 'ETIMEDOUT' }));
            this.drop(s, why);
          }, this.requestTimeoutMs);
          timer.unref();
          try {
            start((err, value) => {
              clearTimeout(timer);
              if (err) reject(err);
              else resolve(value as T);
            });
          } catch (err) {
            // ssh2 throws synchronously for extensions the server did not announce.
            clearTimeout(timer);
            reject(err);
          }
        }),
    );
  }

  // ------------------------------------------------------------------ SFTP primitives

  private open(s: Session, p: string, flags: 'r' | 'wx'): Promise<Buffer> {
    return this.call<Buffer>(s, (cb) => s.sftp.open(p, flags, { mode: 0o600 }, cb));
  }

  private closeHandle(s: Session, h: Buffer): Promise<void> {
    return this.call<void>(s, (cb) => s.sftp.close(h, cb));
  }

  private fstat(s: Session, h: Buffer): Promise<Stats> {
    return this.call<Stats>(s, (cb) => s.sftp.fstat(h, cb));
  }

  private statPath(s: Session, p: string): Promise<Stats> {
    return this.call<Stats>(s, (cb) => s.sftp.stat(p, cb));
  }

  private fsync(s: Session, h: Buffer): Promise<void> {
    return this.call<void>(s, (cb) => s.sftp.ext_openssh_fsync(h, (err: Error | undefined) => cb(err)));
  }

  private unlink(s: Session, p: string): Promise<void> {
    return this.call<void>(s, (cb) => s.sftp.unlink(p, cb));
  }

  private mkdir(s: Session, p: string): Promise<void> {
    return this.call<void>(s, (cb) => s.sftp.mkdir(p, { mode: 0o700 }, cb));
  }

  /** Whether the server announced an SFTP extension. */
  private has(s: Session, ext: string): boolean {
    return (s.sftp as unknown as { _extensions?: Record<string, string> })._extensions?.[ext] !== undefined;
  }

  /** Write `parts` back to back from `pos`, PIPELINE requests at a time; returns the end position. */
  private async writeAt(s: Session, h: Buffer, parts: readonly Uint8Array[], pos: number): Promise<number> {
    const inFlight = new Set<Promise<void>>();
    let failed: unknown;
    let at = pos;
    for (const part of parts) {
      const buf = Buffer.isBuffer(part) ? part : Buffer.from(part.buffer, part.byteOffset, part.byteLength);
      for (let off = 0; off < buf.length && failed === undefined; off += s.maxWrite) {
        const len = Math.min(s.maxWrite, buf.length - off);
        const position = at; // the request may start later (request limit); `at` moves on
        // ssh2 copies the data into its packet before write() returns, so the caller's buffer is
        // free once every request was sent.
        const p = this.call<void>(s, (cb) => s.sftp.write(h, buf, off, len, position, (err) => cb(err))).then(
          () => void inFlight.delete(p),
          (err) => {
            inFlight.delete(p);
            failed ??= err;
          },
        );
        inFlight.add(p);
        at += len;
        if (inFlight.size >= PIPELINE) await Promise.race(inFlight);
      }
    }
    await Promise.all(inFlight);
    if (failed !== undefined) throw failed;
    return at;
  }

  /** Read `length` bytes at `pos` into a new buffer, pipelined; returns how many bytes exist there (fewer at EOF). */
  private async readAt(s: Session, h: Buffer, length: number, pos: number): Promise<{ buf: Buffer; got: number }> {
    const buf = Buffer.allocUnsafe(length);
    const chunk = s.maxRead;
    let eofAt = length;
    let failed: unknown;
    const readChunk = async (off: number, len: number): Promise<void> => {
      let done = 0;
      // A server may answer a read with fewer bytes than asked; 0 bytes is end of file.
      for (let i = 0; i < 1 << 20 && done < len; i++) {
        const n = await this.call<number>(s, (cb) => s.sftp.read(h, buf, off + done, len - done, pos + off + done, (err, bytes) => cb(err, bytes)));
        if (!n) break;
        done += n;
      }
      if (done < len) eofAt = Math.min(eofAt, off + done);
    };
    const inFlight = new Set<Promise<void>>();
    for (let off = 0; off < length && failed === undefined; off += chunk) {
      const p = readChunk(off, Math.min(chunk, length - off)).then(
        () => void inFlight.delete(p),
        (err) => {
          inFlight.delete(p);
          failed ??= err;
        },
      );
      inFlight.add(p);
      if (inFlight.size >= PIPELINE) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    if (failed !== undefined) throw failed;
    return { buf, got: eofAt };
  }

  /** mkdir -p: creates the missing directories, each fsynced into its parent. */
  private async mkdirs(s: Session, dir: string, depth = 0): Promise<void> {
    try {
      await this.mkdir(s, dir);
    } catch (err) {
      const status = statusOf(err);
      const parent = posix.dirname(dir);
      if (status === FX.NO_SUCH_FILE && depth < 64 && parent !== dir) {
        await this.mkdirs(s, parent, depth + 1);
        try {
          await this.mkdir(s, dir);
        } catch (again) {
          if (!(await this.isDir(s, dir))) throw again;
          return;
        }
      } else {
        // FAILURE is what OpenSSH answers for EEXIST: fine if it is a directory (a concurrent mkdir).
        if (await this.isDir(s, dir)) return;
        throw err;
      }
    }
    await this.fsyncDir(s, posix.dirname(dir));
  }

  private async isDir(s: Session, p: string): Promise<boolean> {
    try {
      return (await this.statPath(s, p)).isDirectory();
    } catch {
      return false;
    }
  }

  /** fsync a directory: open it like a file and send fsync@openssh.com (see the module comment). */
  private async fsyncDir(s: Session, dir: string): Promise<void> {
    if (!this.dirFsync || !this.has(s, 'fsync@openssh.com')) return;
    let h: Buffer;
    try {
      h = await this.open(s, dir, 'r');
    } catch (err) {
      if (statusOf(err) === undefined) throw err; // connection trouble, not a refusal
      this.dirFsync = false;
      return;
    }
    try {
      await this.fsync(s, h);
    } catch (err) {
      if (statusOf(err) === undefined && !/does not support/.test((err as Error).message)) throw err;
      this.dirFsync = false;
    } finally {
      await this.closeHandle(s, h).catch(() => undefined);
    }
  }

  /** Create a temporary file for writing in `dir` (created if missing). */
  private async createTemp(s: Session, tmp: string): Promise<Buffer> {
    try {
      return await this.open(s, tmp, 'wx');
    } catch (err) {
      if (statusOf(err) !== FX.NO_SUCH_FILE) throw err;
      await this.mkdirs(s, posix.dirname(tmp));
      return await this.open(s, tmp, 'wx');
    }
  }

  /** Move a written temporary file to `name` (see the module comment), then fsync the directory. */
  private async publish(s: Session, tmp: string, name: string, options: PutOptions): Promise<void> {
    const dest = this.path(name);
    const dir = posix.dirname(dest);
    this.forget(s, dest);
    const move = async (): Promise<void> => {
      if (options.createOnly) {
        const viaLink = this.has(s, 'hardlink@openssh.com');
        try {
          if (viaLink) await this.call<void>(s, (cb) => s.sftp.ext_openssh_hardlink(tmp, dest, cb));
          else await this.call<void>(s, (cb) => s.sftp.rename(tmp, dest, cb));
        } catch (err) {
          if (statusOf(err) === FX.FAILURE && (await this.exists(s, dest))) throw new StorageError('exists', this.location, name, `${name} already exists in ${this.location}`, { cause: err });
          throw err;
        }
        if (viaLink) await this.unlink(s, tmp).catch(() => undefined);
      } else {
        if (!this.has(s, 'posix-rename@openssh.com')) {
          throw new StorageError('io', this.location, name, `cannot write ${name} in ${this.location}: the server does not offer posix-rename@openssh.com, so objects cannot be replaced atomically (OpenSSH's sftp-server offers it)`);
        }
        await this.call<void>(s, (cb) => s.sftp.ext_openssh_rename(tmp, dest, cb));
      }
    };
    try {
      await move();
    } catch (err) {
      // A writer's temporary file lives in the root: the destination directory may not exist yet.
      if (statusOf(err) !== FX.NO_SUCH_FILE || posix.dirname(tmp) === dir) throw err;
      await this.mkdirs(s, dir);
      await move();
    }
    if (options.durable !== false) await this.fsyncDir(s, dir);
  }

  private async exists(s: Session, p: string): Promise<boolean> {
    try {
      await this.statPath(s, p);
      return true;
    } catch (err) {
      if (statusOf(err) === FX.NO_SUCH_FILE) return false;
      throw err;
    }
  }

  private tmpName(dir: string, base: string): string {
    return posix.join(dir, `${TMP_PREFIX}${base}-${randomBytes(6).toString('hex')}`);
  }

  // ------------------------------------------------------------------ Backend

  async put(name: string, data: PutData, options: PutOptions = {}): Promise<void> {
    checkName(this.location, name);
    const parts = putParts(data);
    await this.op(name, 'cannot write', async (s) => {
      const dest = this.path(name);
      const tmp = this.tmpName(posix.dirname(dest), posix.basename(dest));
      let h: Buffer | undefined;
      try {
        h = await this.createTemp(s, tmp);
        await this.writeAt(s, h, parts, 0);
        if (options.durable !== false) await this.fsyncIfPossible(s, h);
        const handle = h;
        h = undefined;
        await this.closeHandle(s, handle);
        await this.publish(s, tmp, name, options);
      } catch (err) {
        if (h) await this.closeHandle(s, h).catch(() => undefined);
        if (!s.closed) await this.unlink(s, tmp).catch(() => undefined);
        throw err;
      }
    });
  }

  /** fsync@openssh.com when the server offers it (without it the server decides when data is on disk). */
  private async fsyncIfPossible(s: Session, h: Buffer): Promise<void> {
    if (this.has(s, 'fsync@openssh.com')) await this.fsync(s, h);
  }

  async get(name: string, range?: ByteRange): Promise<Buffer> {
    checkName(this.location, name);
    return this.op(name, 'cannot read', async (s) => {
      const p = this.path(name);
      if (range) {
        const { h, size, release } = await this.acquire(s, p, name);
        try {
          if (range.offset + range.length > size) throw this.shortRead(name, range, size);
          if (range.length === 0) return Buffer.alloc(0);
          const { buf, got } = await this.readAt(s, h, range.length, range.offset);
          if (got < range.length) throw this.shortRead(name, range, range.offset + got);
          return buf;
        } finally {
          release();
        }
      }
      const h = await this.open(s, p, 'r');
      try {
        const st = await this.fstat(s, h);
        if (!st.isFile()) throw new StorageError('not-found', this.location, name, `${name} not found in ${this.location} (it is a directory)`);
        if (st.size === 0) return Buffer.alloc(0);
        const { buf, got } = await this.readAt(s, h, st.size, 0);
        if (got < st.size) throw new StorageError('io', this.location, name, `cannot read ${name} in ${this.location}: it shrank from ${st.size} to ${got} bytes while being read`);
        return buf;
      } finally {
        // Not awaited: nothing depends on the answer, and a lost connection closes it anyway.
        void this.closeHandle(s, h).catch(() => undefined);
      }
    });
  }

  private shortRead(name: string, range: ByteRange, size: number): StorageError {
    return new StorageError('short-read', this.location, name, `${name} in ${this.location} is shorter than expected: wanted ${range.length} bytes at offset ${range.offset}, it has ${size}`);
  }

  /**
   * An open handle for range reads, shared and kept (at most HANDLES per connection). Objects are
   * immutable, and this backend drops the handle when it replaces or deletes the object.
   */
  private async acquire(s: Session, p: string, name: string): Promise<{ h: Buffer; size: number; release: () => void }> {
    let entry = s.handles.get(p);
    if (!entry) {
      const handle = (async () => {
        const h = await this.open(s, p, 'r');
        try {
          const st = await this.fstat(s, h);
          if (!st.isFile()) throw new StorageError('not-found', this.location, name, `${name} not found in ${this.location} (it is a directory)`);
          return { h, size: st.size };
        } catch (err) {
          void this.closeHandle(s, h).catch(() => undefined);
          throw err;
        }
      })();
      const created = { handle, users: 0 };
      entry = created;
      s.handles.set(p, created);
      handle.catch(() => {
        if (s.handles.get(p) === created) s.handles.delete(p);
      });
      if (s.handles.size > HANDLES) {
        for (const [k, v] of s.handles) {
          if (v.users === 0 && k !== p) {
            s.handles.delete(k);
            this.closeWhenUnused(s, v);
            break;
          }
        }
      }
    } else {
      s.handles.delete(p); // most recently used last
      s.handles.set(p, entry);
    }
    const e = entry;
    e.users++;
    try {
      const { h, size } = await e.handle;
      return { h, size, release: () => void e.users-- };
    } catch (err) {
      e.users--;
      throw err;
    }
  }

  private closeWhenUnused(s: Session, e: { handle: Promise<{ h: Buffer }>; users: number }): void {
    if (s.closed) return;
    if (e.users > 0) {
      setTimeout(() => this.closeWhenUnused(s, e), 50).unref();
      return;
    }
    void e.handle.then(({ h }) => this.closeHandle(s, h)).catch(() => undefined);
  }

  /** Drop a cached read handle of `p` (the object is being replaced or deleted). */
  private forget(s: Session, p: string): void {
    const e = s.handles.get(p);
    if (!e) return;
    s.handles.delete(p);
    this.closeWhenUnused(s, e);
  }

  async stat(name: string): Promise<ObjectInfo> {
    checkName(this.location, name);
    return this.op(name, 'cannot stat', async (s) => {
      const st = await this.statPath(s, this.path(name));
      if (!st.isFile()) throw new StorageError('not-found', this.location, name, `${name} not found in ${this.location} (it is a directory)`);
      return { name, size: st.size };
    });
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    checkName(this.location, prefix, true);
    const base = prefix.slice(0, -1);
    const found = await this.op(prefix, 'cannot list', async (s) => {
      const out: ObjectInfo[] = [];
      const queue: string[] = [base];
      let failed: unknown;
      const readDir = async (rel: string): Promise<void> => {
        let entries;
        try {
          entries = await this.call<Array<{ filename: string; attrs: Stats }>>(s, (cb) => s.sftp.readdir(this.path(rel), cb));
        } catch (err) {
          if (statusOf(err) === FX.NO_SUCH_FILE) return; // nothing below a missing prefix or an object
          throw err;
        }
        for (const ent of entries) {
          if (ent.filename === '.' || ent.filename === '..' || ent.filename.startsWith(TMP_PREFIX)) continue;
          const childRel = rel === '' ? ent.filename : `${rel}/${ent.filename}`;
          if (ent.attrs.isDirectory()) queue.push(childRel);
          else if (ent.attrs.isFile()) out.push({ name: childRel, size: ent.attrs.size });
        }
      };
      // Directories are read PIPELINE at a time (data/ has 256 subdirectories).
      const inFlight = new Set<Promise<void>>();
      for (let i = 0; i < 10_000_000 && failed === undefined && (queue.length > 0 || inFlight.size > 0); i++) {
        const next = queue.pop();
        if (next !== undefined) {
          const p = readDir(next).then(
            () => void inFlight.delete(p),
            (err) => {
              inFlight.delete(p);
              failed ??= err;
            },
          );
          inFlight.add(p);
        }
        if (inFlight.size >= PIPELINE || (queue.length === 0 && inFlight.size > 0)) await Promise.race(inFlight);
      }
      await Promise.all(inFlight);
      if (failed !== undefined) throw failed;
      return out;
    });
    yield* found;
  }

  async delete(name: string, options: DeleteOptions = {}): Promise<void> {
    checkName(this.location, name);
    await this.op(name, 'cannot delete', async (s) => {
      const p = this.path(name);
      this.forget(s, p);
      try {
        await this.unlink(s, p);
      } catch (err) {
        const status = statusOf(err);
        if (status === FX.NO_SUCH_FILE) return;
        // A directory is a prefix, not an object: deleting it is deleting nothing.
        if (status === FX.FAILURE && !(await this.isFileOrMissing(s, p))) return;
        throw err;
      }
      if (options.durable !== false) await this.fsyncDir(s, posix.dirname(p));
    });
  }

  /** True for a file, false for a missing path or anything else (a directory). */
  private async isFileOrMissing(s: Session, p: string): Promise<boolean> {
    try {
      return (await this.statPath(s, p)).isFile();
    } catch (err) {
      if (statusOf(err) === FX.NO_SUCH_FILE) return false;
      throw err;
    }
  }

  async openWriter(): Promise<ObjectWriter> {
    const tmp = this.tmpName(this.path(''), 'writer');
    const opened = await this.op('(new object)', 'cannot write', async (s) => ({ s, h: await this.createTemp(s, tmp) }));
    const s = opened.s;
    let h: Buffer | undefined = opened.h;
    let pos = 0;
    /** Run on the writer's own connection: its handle means nothing on another one. */
    const onSession = <T>(name: string, fn: () => Promise<T>): Promise<T> =>
      this.op(name, 'cannot write', async (cur) => {
        if (cur !== s) throw new StorageError('transient', this.location, name, `cannot write ${name} in ${this.location}: the connection was lost while the object was being written (${s.lost ?? 'closed'})`);
        return fn();
      });
    const discard = async (): Promise<void> => {
      if (s.closed) return;
      if (h) await this.closeHandle(s, h).catch(() => undefined);
      h = undefined;
      await this.unlink(s, tmp).catch(() => undefined);
    };
    return {
      write: async (parts) => {
        if (!h) throw new StorageError('io', this.location, '(new object)', 'write after commit or abort');
        const handle = h;
        pos = await onSession('(new object)', () => this.writeAt(s, handle, parts, pos));
      },
      commit: async (name, options = {}) => {
        try {
          checkName(this.location, name);
          if (!h) throw new StorageError('io', this.location, name, 'commit after commit or abort');
          const handle = h;
          await onSession(name, async () => {
            if (options.durable !== false) await this.fsyncIfPossible(s, handle);
            h = undefined;
            await this.closeHandle(s, handle);
            await this.publish(s, tmp, name, options);
          });
        } catch (err) {
          await discard();
          throw err;
        }
      },
      abort: async () => {
        await discard();
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    const s = this.current ?? (await this.connecting?.catch(() => undefined));
    this.current = undefined;
    if (!s || s.closed) return;
    s.closed = true;
    s.lost = 'the backend was closed';
    s.sock.ref(); // keep the process alive until the server has seen the goodbye
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        s.client.destroy();
        resolve();
      }, 2000);
      timer.unref();
      s.client.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      s.client.end();
    });
  }
}
