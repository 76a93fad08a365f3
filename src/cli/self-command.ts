/**
 * Commands that run this same holdfast later, without the caller's environment: restore_command
 * and archive_command (run by PostgreSQL through the shell), and the commands Patroni runs for its
 * bootstrap and replica methods (split with Python's shlex, no shell). Each names the same node,
 * the same entry point, repository, password file, config file and storage options, all absolute:
 * they run in the data directory, as the postgres user.
 */
import * as path from 'node:path';
import { HoldfastError } from '../errors/catalogue.js';
import { shellQuote } from '../postgres/recovery.js';
import { type Invocation, storageFlags } from './invocation.js';

/**
 * The argument vector of `holdfast SUB... --cluster CLUSTER` with this invocation's repository
 * settings. The password must come from a file: the command runs without the caller's environment.
 */
export function selfArgs(inv: Invocation, sub: readonly string[], cluster: string, purpose: string): string[] {
  const repo = inv.options.str('repo');
  if (!repo) throw new HoldfastError('CONFIG_INVALID', 'no repository location given', { option: 'repo', hint: 'Pass --repo LOCATION, set HOLDFAST_REPO, or put "repo = LOCATION" in the config file.' });
  const pwFile = inv.options.str('password-file');
  if (!pwFile) {
    throw new HoldfastError('CONFIG_INVALID', `${inv.command} needs the password in a file (--password-file or HOLDFAST_PASSWORD_FILE): ${purpose} runs holdfast without your environment`, {
      hint: 'Put the password in a file readable by the postgres user, and pass --password-file.',
    });
  }
  const args = [...holdfastPrefix(inv), ...sub, '--cluster', cluster, '--repo', path.isAbsolute(repo) || repo.includes('://') ? repo : path.resolve(repo), '--password-file', path.resolve(pwFile)];
  const config = inv.options.str('config');
  if (config) args.push('--config', path.resolve(config));
  args.push(...storageFlags(inv));
  return args;
}

/**
 * How to run holdfast: --holdfast-command (words separated by spaces, e.g. /usr/local/bin/holdfast)
 * when given, else this node and this entry point, absolute.
 */
export function holdfastPrefix(inv: Invocation): string[] {
  const given = inv.options.get('holdfast-command');
  if (typeof given === 'string' && given.trim() !== '') return given.trim().split(/\s+/);
  return [process.execPath, path.resolve(process.argv[1] ?? 'holdfast')];
}

/** One command line for a POSIX shell or shlex.split (both read the same quoting). */
export function commandLine(args: readonly string[]): string {
  return args.map(shellQuote).join(' ');
}

/**
 * A command line for archive_command / restore_command: PostgreSQL expands %-escapes there, so a
 * literal % becomes %%, then the escapes given (e.g. '%f', '%p') are appended.
 */
export function pgCommandLine(args: readonly string[], ...escapes: string[]): string {
  return [...args.map((a) => shellQuote(a).replace(/%/g, '%%')), ...escapes].join(' ');
}

/** restore_command fetching WAL of `cluster` from this invocation's repository. */
export function restoreCommand(inv: Invocation, cluster: string): string {
  return pgCommandLine(selfArgs(inv, ['pg', 'archive-get'], cluster, 'restore_command'), '%f', '%p');
}

/** archive_command storing WAL of `cluster` in this invocation's repository. */
export function archiveCommand(inv: Invocation, cluster: string): string {
  return pgCommandLine(selfArgs(inv, ['pg', 'archive-push'], cluster, 'archive_command'), '%p');
}
