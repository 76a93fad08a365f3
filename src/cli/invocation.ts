/** What a command handler gets: resolved options, arguments, output and the repository reference. */
import { readFileSync, openSync, closeSync, readSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { HoldfastError } from '../errors/catalogue.js';
import { defaultKeyCacheDir } from '../state/key-cache.js';
import type { Options } from '../config/resolve.js';
import type { Logger } from '../ui/output.js';
import type { OpContext, RepoRef } from '../ops/context.js';
import type { S3Settings, SftpSettings, StorageSettings } from '../storage/settings.js';
import * as path from 'node:path';
import { OPTIONS } from '../config/options.js';

export interface Invocation {
  readonly command: string;
  readonly args: readonly string[];
  readonly options: Options;
  readonly log: Logger;
  readonly json: boolean;
  readonly ctx: OpContext;
  /** Write a result line (text mode) to stdout. */
  out(line: string): void;
  /** Write a JSON value to stdout. */
  outJson(value: unknown): void;
}

export function repoRef(inv: Invocation, confirm = false): RepoRef {
  const location = inv.options.str('repo');
  if (!location) {
    throw new HoldfastError('CONFIG_INVALID', 'no repository location given', { option: 'repo', hint: 'Pass --repo LOCATION, set HOLDFAST_REPO, or put "repo = LOCATION" in the config file.' });
  }
  const pw = password(inv, 'password', 'password-file', confirm);
  // Cache derived keys only when the password is itself stored in a file (see state/key-cache.ts).
  const fromFile = inv.options.str('password') === undefined && inv.options.str('password-file') !== undefined;
  return { location, password: pw, ...(fromFile && inv.options.bool('key-cache') ? { keyCacheDir: defaultKeyCacheDir() } : {}), storage: storageSettings(inv) };
}

/** The repository's storage without its password (storage status). */
export function storageRef(inv: Invocation): RepoRef {
  const location = inv.options.str('repo');
  if (!location) throw new HoldfastError('CONFIG_INVALID', 'no repository location given', { option: 'repo', hint: 'Pass --repo LOCATION, set HOLDFAST_REPO, or put "repo = LOCATION" in the config file.' });
  return { location, password: '', storage: storageSettings(inv) };
}

/** Every storage setting: drivers, secondary storages, retries (docs/design.md §19). */
export function storageSettings(inv: Invocation): StorageSettings {
  const o = inv.options;
  const num = (name: string): number | undefined => (typeof o.get(name) === 'number' ? o.num(name) : undefined);
  return {
    s3: s3Settings(inv),
    sftp: sftpSettings(inv),
    secondaries: o.list('repo-secondary'),
    mode: o.str('storage-mode') === 'replicate' ? 'replicate' : 'failover',
    quorum: num('storage-quorum'),
    statusTtlMs: num('storage-status-ttl'),
    probeTimeoutMs: num('storage-probe-timeout'),
    retry: { requestTimeoutMs: o.num('storage-timeout'), deadlineMs: o.num('storage-deadline'), maxAttempts: o.num('storage-retries') },
    log: (level, m) => inv.log[level](m),
  };
}

/** Settings of the S3 driver from the --s3-* options (used only by s3:// locations). */
function s3Settings(inv: Invocation): S3Settings {
  const o = inv.options;
  return {
    endpoint: o.str('s3-endpoint'),
    region: o.str('s3-region'),
    pathStyle: o.bool('s3-path-style'),
    storageClass: o.str('s3-storage-class'),
    sse: o.str('s3-sse'),
    sseKmsKeyId: o.str('s3-sse-kms-key-id'),
  };
}

/** Settings of the SFTP driver from the --sftp-* options (used only by sftp:// locations). */
function sftpSettings(inv: Invocation): SftpSettings {
  return { identityFile: inv.options.str('sftp-identity'), knownHosts: inv.options.str('sftp-known-hosts') };
}

/**
 * The storage options given to this command (secondary storages, S3 and SFTP settings, retries),
 * as flags, for the commands it writes or starts (restore_command, the async archive worker), so
 * they reach the same storages. Credentials are not among them: S3 credentials come from the
 * environment or the AWS configuration of the user running them.
 */
export function storageFlags(inv: Invocation): string[] {
  const out: string[] = [];
  for (const spec of OPTIONS) {
    if (!(spec.name === 'repo-secondary' || /^(s3|sftp|storage)-/.test(spec.name))) continue;
    const source = inv.options.source(spec.name);
    if (source === undefined || source === 'default') continue;
    const v = inv.options.get(spec.name);
    if (spec.type === 'bool') out.push(v === true ? `--${spec.name}` : `--no-${spec.name}`);
    // Local locations absolute: restore_command runs in the data directory.
    else if (spec.type === 'list') for (const item of inv.options.list(spec.name)) out.push(`--${spec.name}`, /^[a-z][a-z0-9+.-]*:\/\//i.test(item) ? item : path.resolve(item));
    else if (spec.type === 'duration') out.push(`--${spec.name}`, `${String(v)}ms`);
    else if (spec.type === 'path') out.push(`--${spec.name}`, path.resolve(String(v)));
    else out.push(`--${spec.name}`, String(v));
  }
  return out;
}

/** A password from the environment, a file, or the terminal, in that order. */
export function password(inv: Invocation, envOption: string, fileOption: string, confirm = false): string {
  const direct = inv.options.str(envOption);
  if (direct !== undefined) return direct;
  const file = inv.options.str(fileOption);
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as { code?: string }).code;
      throw new HoldfastError(code === 'EACCES' ? 'PERMISSION_DENIED' : 'CONFIG_INVALID', `cannot read password file ${file}: ${(err as Error).message}`, { file });
    }
    const pw = text.split(/\r?\n/)[0] ?? '';
    if (pw === '') throw new HoldfastError('CONFIG_INVALID', `password file ${file} is empty`, { file });
    return pw;
  }
  if (process.stdin.isTTY) {
    const pw = prompt(envOption === 'password' ? 'Repository password: ' : 'New password: ');
    if (confirm && prompt('Repeat the password: ') !== pw) throw new HoldfastError('USAGE', 'the passwords do not match', {});
    if (pw === '') throw new HoldfastError('USAGE', 'an empty password is not allowed', {});
    return pw;
  }
  const env = envOption === 'password' ? 'HOLDFAST_PASSWORD' : 'HOLDFAST_NEW_PASSWORD';
  const flag = `--${fileOption}`;
  throw new HoldfastError('CONFIG_INVALID', `no ${envOption === 'password' ? 'repository' : 'new'} password given`, { hint: `Set ${env}, or ${flag} / ${env}_FILE, or run on a terminal to be asked.` });
}

/** Read a line from the terminal without echo. */
function prompt(question: string): string {
  let fd: number;
  try {
    fd = openSync('/dev/tty', 'r+');
  } catch {
    throw new HoldfastError('CONFIG_INVALID', 'no terminal to ask for the password', { hint: 'Set HOLDFAST_PASSWORD or HOLDFAST_PASSWORD_FILE.' });
  }
  try {
    writeSync(fd, question);
    // Turn off echo while typing; restored below. child_process is loaded only here: it costs
    // every short-lived call (archive-push, archive-get) several milliseconds of start-up.
    const { execFileSync } = createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process');
    const stty = (args: string[]): void => {
      try {
        execFileSync('stty', args, { stdio: [fd, 'ignore', 'ignore'] });
      } catch {
        // not a real tty; echo stays on
      }
    };
    stty(['-echo']);
    const buf = Buffer.alloc(1);
    const bytes: number[] = [];
    try {
      while (readSync(fd, buf, 0, 1, null) === 1 && buf[0] !== 10 && buf[0] !== 13) bytes.push(buf[0]!);
    } finally {
      stty(['echo']);
      writeSync(fd, '\n');
    }
    return Buffer.from(bytes).toString('utf8');
  } finally {
    closeSync(fd);
  }
}
