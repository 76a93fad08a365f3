/**
 * holdfast entry point. Parses the command line, runs one command, and turns every error into a
 * message and an exit code — here and nowhere else.
 */
import { VERSION } from '../version.js';
import { CATALOGUE, HoldfastError } from '../errors/catalogue.js';
import { COMMANDS, type CommandSpec, findCommand } from './commands.js';
import { type Options, parseArgs, resolveOptions } from '../config/resolve.js';
import { OPTIONS, appliesTo, envName } from '../config/options.js';
import { type LogLevel, Logger } from '../ui/output.js';
import type { Invocation } from './invocation.js';
import { startHeapTrimmer } from '../util/malloc.js';
import { DEFAULT_LOCK_SETTINGS, type LockSettings } from '../ops/context.js';

export async function main(argv: readonly string[]): Promise<number> {
  if (argv[0] === '--version' || argv[0] === '-V' || argv[0] === 'version') {
    writeOut(`holdfast ${VERSION}\n`);
    return 0;
  }
  const wantsJson = argv.includes('--json');
  let log = new Logger('info');
  try {
    if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
      const topic = argv[0] === 'help' ? argv.slice(1) : [];
      if (topic[0] === 'config') writeOut(configHelp());
      else {
        const found = topic.length > 0 ? findCommand(topic) : undefined;
        writeOut(found ? commandHelp(found.spec) : generalHelp());
      }
      return argv.length === 0 ? CATALOGUE.USAGE.exit : 0;
    }
    const found = findCommand(argv);
    if (!found) {
      const group = COMMANDS.filter((c) => c.name.startsWith(`${argv[0]} `));
      if (group.length > 0) throw new HoldfastError('USAGE', `"${argv[0]}" needs a subcommand: ${group.map((c) => c.name.split(' ')[1]).join(', ')}`, { hint: `Run \`holdfast help ${group[0]!.name}\`.` });
      throw new HoldfastError('USAGE', `unknown command "${argv[0]}"`, { hint: 'Run `holdfast --help` to list commands.' });
    }
    const { spec, rest } = found;
    if (rest.includes('--help') || rest.includes('-h')) {
      writeOut(commandHelp(spec));
      return 0;
    }
    const parsed = parseArgs(spec.name, rest);
    if (parsed.positionals.length < spec.minArgs || parsed.positionals.length > spec.maxArgs) {
      throw new HoldfastError('USAGE', `"${spec.name}" takes ${argCount(spec)}, got ${parsed.positionals.length}`, { hint: `Usage: ${spec.usage}` });
    }
    const options = resolveOptions(spec.name, parsed, process.env);
    const json = options.bool('json');
    const quiet = options.bool('quiet');
    log = new Logger(quiet ? 'warn' : (options.str('log-level') as LogLevel));
    const mode = options.str('progress');
    // Looked up when a command asks (creating the stderr stream costs archive-push a few ms).
    let tty: boolean | undefined;
    const progress = (): boolean => !json && !quiet && (mode === 'always' || (mode === 'auto' && (tty ??= process.stderr.isTTY === true)));
    const abort = new AbortController();
    let interrupts = 0;
    const onSignal = (sig: NodeJS.Signals): void => {
      interrupts++;
      if (interrupts > 1) process.exit(CATALOGUE.INTERRUPTED.exit);
      log.warn(`${sig} received: stopping; nothing partial will be committed (press Ctrl-C again to quit at once)`);
      abort.abort(new HoldfastError('INTERRUPTED', `interrupted by ${sig}`, { signal: sig }));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const inv: Invocation = {
      command: spec.name,
      args: parsed.positionals,
      options,
      log,
      json,
      ctx: {
        log,
        get progress() {
          return progress();
        },
        signal: abort.signal,
        locks: lockSettingsFrom(options),
      },
      out: (line) => void writeOut(line + '\n'),
      outJson: (value) => void writeOut(JSON.stringify(value, null, 2) + '\n'),
    };
    if (spec.streamsData) log.debug(startHeapTrimmer());
    const mod = await spec.load();
    return await mod.run(inv);
  } catch (err) {
    return report(err, log, wantsJson);
  }
}

let stdoutGuarded = false;

/**
 * Write to stdout. The first write attaches the EPIPE handler: a reader that goes away
 * (`holdfast ls latest | head`) ends the command quietly, with the status a shell reports for a
 * process stopped by SIGPIPE, instead of an unhandled EPIPE stack trace. Not before: creating the
 * stdout stream costs a command that prints nothing (archive-push) a few ms.
 */
function writeOut(text: string): void {
  if (!stdoutGuarded) {
    stdoutGuarded = true;
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(141);
      throw err;
    });
  }
  process.stdout.write(text);
}

function report(err: unknown, log: Logger, json: boolean): number {
  let e: HoldfastError;
  if (err instanceof HoldfastError) e = err;
  else if (err instanceof Error && err.name === 'AbortError' && err.cause instanceof HoldfastError) e = err.cause;
  else if (err instanceof Error && (err as { code?: string }).code === 'ABORT_ERR') e = new HoldfastError('INTERRUPTED', 'interrupted', {});
  else {
    e = new HoldfastError('INTERNAL', `internal error: ${err instanceof Error ? err.message : String(err)}`, {}, { cause: err });
    if (err instanceof Error && err.stack) log.debug(err.stack);
  }
  if (json) writeOut(JSON.stringify({ error: e.toJSON() }, null, 2) + '\n');
  if (e.code === 'WAL_NOT_FOUND') {
    // restore_command asks for files that do not exist as a matter of course: stay quiet.
    log.debug(`${e.message} [${e.code}]`);
    return e.exitCode;
  }
  log.error(`${e.message} [${e.code}]`);
  log.hint(e.hint);
  return e.exitCode;
}

/** Lock options of commands that take locks (undefined for the others). */
function lockSettingsFrom(options: Options): LockSettings | undefined {
  if (options.get('lock-ttl') === undefined && options.get('lock-dir') === undefined) return undefined;
  return {
    lockDir: options.str('lock-dir'),
    waitMs: (options.get('lock-wait') as number | undefined) ?? DEFAULT_LOCK_SETTINGS.waitMs,
    ttlMs: (options.get('lock-ttl') as number | undefined) ?? DEFAULT_LOCK_SETTINGS.ttlMs,
    refreshMs: (options.get('lock-refresh') as number | undefined) ?? DEFAULT_LOCK_SETTINGS.refreshMs,
    removeStale: options.get('remove-stale-locks') !== false,
  };
}

function argCount(spec: CommandSpec): string {
  if (spec.maxArgs === 0) return 'no arguments';
  if (spec.maxArgs === Infinity) return `at least ${spec.minArgs} argument${spec.minArgs === 1 ? '' : 's'}`;
  if (spec.minArgs === spec.maxArgs) return `${spec.minArgs} argument${spec.minArgs === 1 ? '' : 's'}`;
  return `${spec.minArgs} to ${spec.maxArgs} arguments`;
}

function generalHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    `holdfast ${VERSION}: encrypted, deduplicating backups of files and PostgreSQL (WAL archiving, online backups, point-in-time restore).`,
    '',
    'Usage: holdfast COMMAND [options] [arguments]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Every command needs the repository (--repo or HOLDFAST_REPO) and its password',
    '(HOLDFAST_PASSWORD, --password-file / HOLDFAST_PASSWORD_FILE, or asked on a terminal).',
    '',
    'Quick start:',
    '  export HOLDFAST_REPO=/srv/backup HOLDFAST_PASSWORD_FILE=/root/.holdfast-password',
    '  holdfast init',
    '  holdfast backup /etc /home',
    '  holdfast snapshots',
    '  holdfast restore latest --target /tmp/restore',
    '',
    'PostgreSQL (as the postgres user, PGHOST/PGPORT set as for psql):',
    "  archive_command = 'holdfast pg archive-push --cluster main --async %p'   (postgresql.conf)",
    '  holdfast pg check && holdfast pg backup',
    '  holdfast pg restore --target-dir DIR --target-time "2026-11-21 10:15:00+00" --target-action promote',
    '',
    'Run `holdfast help COMMAND` for a command\'s options, `holdfast help config` for the config file.',
    'Exit codes: 0 ok, 1 no such WAL file (archive-get), 2 usage, 3 bad config, 10 no repository, 11 locked, 12 wrong password,',
    '13 repository exists, 14 corrupt object, 15 missing object, 16 permission denied, 17 no such snapshot,',
    '18 unsafe path, 19 storage I/O error, 20 repository format too new, 21 some files unreadable (snapshot saved),',
    '22 restore target not empty, 23 check found problems, 24 key in use, 25 restore target conflict,',
    '26 restore target write failed, 27 not a valid WAL file, 28 WAL of another cluster, 29 WAL archived with',
    'other content, 30 backup WAL not archived in time, 31 PostgreSQL error, 32 server running in the restore',
    'target, 33 pg check failed, 34 corrupt data pages (backup stored), 35 lock lost (nothing committed), 36 lock',
    'directory unusable, 37 server is a standby (back up the primary), 70 internal error, 130 interrupted.',
    '',
  ].join('\n');
}

function optionLines(command: string): string[] {
  const lines: string[] = [];
  for (const o of OPTIONS) {
    if (!appliesTo(o, command)) continue;
    const flag = o.noFlag ? `(env ${envName(o)})` : `${o.short ? `-${o.short}, ` : ''}--${o.name}${o.type === 'bool' ? '' : ` ${o.arg ?? 'VALUE'}`}`;
    const extra: string[] = [];
    if (o.default !== undefined && o.default !== false) extra.push(`default ${String(o.default)}`);
    if (o.env && !o.noFlag) extra.push(`env ${envName(o)}`);
    if (o.config) extra.push(`config "${o.name}"`);
    lines.push(`  ${flag}`, `      ${o.help}${extra.length ? ` [${extra.join('; ')}]` : ''}`);
  }
  return lines;
}

function commandHelp(spec: CommandSpec): string {
  return [`Usage: ${spec.usage}`, '', wrap(spec.description, 78), '', ...(spec.examples ? ['Examples:', ...spec.examples.map((e) => `  ${e}`), ''] : []), 'Options:', ...optionLines(spec.name), ''].join('\n');
}

function configHelp(): string {
  const lines = [
    'The config file (--config FILE or HOLDFAST_CONFIG; default /etc/holdfast/holdfast.conf when it exists)',
    'holds "key = value" lines, optionally under [global]. A [cluster NAME] section holds settings of',
    'one PostgreSQL cluster (its repository, pgdata, pg-url, compression, retention policy, ...): they',
    'apply to pg commands run with --cluster NAME and take precedence over [global]. # and ; start',
    'comments. List options take comma-separated values or repeated keys.',
    'Precedence: flag > environment > the cluster\'s section > [global] > default.',
    '',
    'Options allowed in the config file:',
  ];
  for (const o of OPTIONS) if (o.config) lines.push(`  ${o.name.padEnd(16)} ${o.help}`);
  lines.push('', 'Example:', '  [global]', '  repo = /srv/backup', '  password-file = /etc/holdfast/password', '  compression = zstd:3', '  exclude = *.tmp, /home/*/.cache', '', '  [cluster main]', '  pgdata = /var/lib/postgresql/15/main', '  expire-after-backup = true', '  recovery-window = 14d', '');
  return lines.join('\n');
}

function wrap(text: string, width: number): string {
  const out: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line && line.length + word.length + 1 > width) {
      out.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) out.push(line);
  return out.join('\n');
}

export type { Options };
