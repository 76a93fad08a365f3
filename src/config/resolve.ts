/**
 * Turn flags, environment and config file into validated option values, using the one table in
 * options.ts. Precedence: flag > environment > config file > default. Every error names where
 * the bad value came from (flag, variable, or file:line).
 *
 * Config file format (INI-like): `key = value` lines, `#` or `;` comments, an optional
 * `[global]` section and `[cluster NAME]` sections whose keys apply to commands run with
 * `--cluster NAME` (before [global]'s). List options take comma-separated values or repeated keys.
 * Precedence: flag > environment > the cluster's section > [global] > default.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { HoldfastError } from '../errors/catalogue.js';
import { OPTIONS, type OptionSpec, appliesTo, envName, optionSpec } from './options.js';

export type OptionValue = string | number | boolean | readonly string[];
export type Source = 'flag' | 'env' | 'config' | 'default';

export interface ParsedArgs {
  readonly flags: Map<string, string[]>;
  readonly positionals: string[];
}

export const DEFAULT_CONFIG = '/etc/holdfast/holdfast.conf';

const SHORT = new Map(OPTIONS.filter((o) => o.short).map((o) => [o.short!, o]));

/** Split argv into flags (by option name, raw strings) and positionals. */
export function parseArgs(command: string, argv: readonly string[]): ParsedArgs {
  const flags = new Map<string, string[]>();
  const positionals: string[] = [];
  const patroni = command.startsWith('pg patroni-');
  const push = (name: string, v: string): void => {
    const list = flags.get(name) ?? [];
    list.push(v);
    flags.set(name, list);
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    let spec: OptionSpec | undefined;
    let inline: string | undefined;
    let negated = false;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      let name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
      inline = eq === -1 ? undefined : arg.slice(eq + 1);
      // Patroni passes the keys of a method's YAML section as they are spelled there (keep_data,
      // target_time): its commands take either spelling.
      if (patroni) name = name.replace(/_/g, '-');
      spec = optionSpec(name);
      if (!spec && name.startsWith('no-')) {
        const base = optionSpec(name.slice(3));
        if (base?.type === 'bool') {
          spec = base;
          negated = true;
        }
      }
      if (!spec || spec.noFlag) {
        if (patroni) {
          throw new HoldfastError('USAGE', `unknown option --${name}${suggest(name)}: Patroni passes every key of the method's section in patroni.yml as --key=value, and holdfast takes only its own options`, {
            command,
            option: name,
            hint: `Remove "${name}" from the method's section (or put holdfast options into its command); \`holdfast ${command} --help\` lists what it takes.`,
          });
        }
        throw usage(`unknown option --${name}${suggest(name)}`, command);
      }
    } else if (arg.startsWith('-') && arg.length > 1) {
      spec = SHORT.get(arg.slice(1, 2));
      if (!spec) throw usage(`unknown option ${arg}`, command);
      if (arg.length > 2) inline = arg.slice(2);
    } else {
      positionals.push(arg);
      continue;
    }
    if (!appliesTo(spec, command)) throw usage(`option --${spec.name} does not apply to "${command}"`, command);
    if (spec.type === 'bool') {
      // Python writes booleans as True/False (Patroni's --keep_data=True).
      if (inline !== undefined && patroni) inline = inline.toLowerCase();
      if (inline !== undefined && !['true', 'false', 'yes', 'no', '1', '0'].includes(inline)) throw usage(`--${spec.name} takes no value (or true/false)`, command);
      push(spec.name, negated ? 'false' : (inline ?? 'true'));
      continue;
    }
    if (negated) throw usage(`--no-${spec.name} is not an option`, command);
    const value = inline ?? argv[++i];
    if (value === undefined) throw usage(`option --${spec.name} needs a value${spec.arg ? ` (${spec.arg})` : ''}`, command);
    push(spec.name, value);
  }
  return { flags, positionals };
}

function usage(message: string, command: string): HoldfastError {
  return new HoldfastError('USAGE', message, { command, hint: `Run \`holdfast ${command} --help\` to see its options.` });
}

function suggest(name: string): string {
  let best: string | undefined;
  let bestD = 3;
  for (const o of OPTIONS) {
    const d = editDistance(name, o.name);
    if (d < bestD) {
      bestD = d;
      best = o.name;
    }
  }
  return best ? ` (did you mean --${best}?)` : '';
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]!;
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = dp[j]!;
      dp[j] = Math.min(dp[j]! + 1, dp[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return dp[b.length]!;
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1000, kib: 1024, m: 1 << 20, mb: 1e6, mib: 1 << 20, g: 1 << 30, gb: 1e9, gib: 1 << 30 };

export function parseSize(s: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(s);
  if (!m) return undefined;
  const unit = SIZE_UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) return undefined;
  const v = Math.round(Number(m[1]) * unit);
  return Number.isSafeInteger(v) ? v : undefined;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, '': 1000, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "5m", "1.5h", "250ms"; a bare number is seconds. Returns milliseconds. */
export function parseDuration(s: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|)\s*$/i.exec(s);
  if (!m) return undefined;
  const v = Math.round(Number(m[1]) * DURATION_UNITS[m[2]!.toLowerCase()]!);
  return Number.isSafeInteger(v) ? v : undefined;
}

/** Convert one raw value; `where` names its origin for the error message. */
export function convert(spec: OptionSpec, raw: readonly string[], where: string): OptionValue {
  const fail = (why: string): never => {
    throw new HoldfastError('CONFIG_INVALID', `${where}: ${why}`, { option: spec.name, where });
  };
  const last = raw[raw.length - 1] ?? '';
  switch (spec.type) {
    case 'bool': {
      const v = last.toLowerCase();
      if (['true', 'yes', '1', 'on', 'y'].includes(v)) return true;
      if (['false', 'no', '0', 'off', 'n'].includes(v)) return false;
      return fail(`expected true or false, got ${JSON.stringify(last)}`);
    }
    case 'int': {
      if (!/^-?\d+$/.test(last.trim())) return fail(`expected a whole number, got ${JSON.stringify(last)}`);
      const n = Number(last);
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) return fail(`${n} is out of range ${spec.min}..${spec.max}`);
      return n;
    }
    case 'size': {
      const n = parseSize(last);
      if (n === undefined) return fail(`expected a size such as 16MiB or 512KiB, got ${JSON.stringify(last)}`);
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) return fail(`${last} is out of range ${fmtSize(spec.min ?? 0)}..${fmtSize(spec.max ?? Infinity)}`);
      return n;
    }
    case 'duration': {
      const n = parseDuration(last);
      if (n === undefined) return fail(`expected a duration such as 30s, 5m or 2h, got ${JSON.stringify(last)}`);
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) return fail(`${last} is out of range ${spec.min ?? 0}ms..${spec.max ?? Infinity}ms`);
      return n;
    }
    case 'enum':
      if (!spec.values!.includes(last)) return fail(`expected one of ${spec.values!.join(', ')}, got ${JSON.stringify(last)}`);
      return last;
    case 'list':
      return raw.flatMap((r) => (where.startsWith('--') ? [r] : r.split(',').map((s) => s.trim()))).filter((s) => s !== '');
    case 'string':
    case 'path':
      if (last === '') return fail('must not be empty');
      return last;
  }
}

function fmtSize(n: number): string {
  if (!Number.isFinite(n)) return '∞';
  for (const [u, f] of [['GiB', 1 << 30], ['MiB', 1 << 20], ['KiB', 1 << 10]] as const) if (n >= f && n % f === 0) return `${n / f}${u}`;
  return String(n);
}

interface ConfigEntry {
  values: string[];
  line: number;
}

export interface ConfigFile {
  readonly global: Map<string, ConfigEntry>;
  /** `[cluster NAME]` sections by name. */
  readonly clusters: Map<string, Map<string, ConfigEntry>>;
  /** The bytes read; undefined when a missing default file was skipped. */
  readonly raw: Buffer | undefined;
}

/** Which config file the options were resolved from, and exactly what was read of it. */
export interface ConfigSource {
  /** Absolute. */
  readonly path: string;
  /** Undefined: the default file does not exist. */
  readonly raw: Buffer | undefined;
}

const CLUSTER_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** Parse the config file. A missing default file is fine; a missing explicit one is not. */
export function readConfigFile(file: string, explicit: boolean): ConfigFile {
  const global = new Map<string, ConfigEntry>();
  const clusters = new Map<string, Map<string, ConfigEntry>>();
  let out = global;
  let inCluster = false;
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (err) {
    if (!explicit && (err as { code?: string }).code === 'ENOENT') return { global, clusters, raw: undefined };
    throw new HoldfastError('CONFIG_INVALID', `cannot read config file ${file}: ${(err as Error).message}`, { file });
  }
  const text = raw.toString('utf8');
  for (const [i, rawLine] of text.split(/\r?\n/).entries()) {
    const line = rawLine.trim();
    const where = `${file}:${i + 1}`;
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const sec = /^\[([^\]]+)\]$/.exec(line);
    if (sec) {
      const section = sec[1]!.trim();
      const cluster = /^cluster\s+"?([^"\s]+)"?$/.exec(section);
      if (section === 'global') {
        out = global;
        inCluster = false;
      } else if (cluster && CLUSTER_NAME.test(cluster[1]!)) {
        out = clusters.get(cluster[1]!) ?? new Map<string, ConfigEntry>();
        clusters.set(cluster[1]!, out);
        inCluster = true;
      } else {
        throw new HoldfastError('CONFIG_INVALID', `${where}: unknown section [${section}]`, { file, line: i + 1, hint: 'Sections are [global] and [cluster NAME] (NAME: 1-64 of letters, digits, _ . -).' });
      }
      continue;
    }
    const eq = line.indexOf('=');
    if (eq === -1) throw new HoldfastError('CONFIG_INVALID', `${where}: expected "key = value", got ${JSON.stringify(line)}`, { file, line: i + 1 });
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    const spec = optionSpec(key);
    if (!spec || !spec.config) throw new HoldfastError('CONFIG_INVALID', `${where}: unknown option ${JSON.stringify(key)}${spec ? ' (not allowed in the config file)' : suggest(key)}`, { file, line: i + 1 });
    if (inCluster && key === 'cluster') throw new HoldfastError('CONFIG_INVALID', `${where}: "cluster" cannot be set inside a [cluster …] section`, { file, line: i + 1, hint: 'Put the default cluster under [global].' });
    const entry = out.get(key);
    if (entry && spec.type === 'list') entry.values.push(value);
    else out.set(key, { values: [value], line: i + 1 });
  }
  return { global, clusters, raw };
}

export class Options {
  constructor(
    private readonly values: Map<string, OptionValue>,
    private readonly sources: Map<string, Source>,
    private readonly origins: Map<string, string> = new Map(),
    /** The config file read (undefined for Options made without one, e.g. in tests). */
    readonly configSource?: ConfigSource,
  ) {}

  get(name: string): OptionValue | undefined {
    return this.values.get(name);
  }

  str(name: string): string | undefined {
    const v = this.values.get(name);
    return typeof v === 'string' ? v : undefined;
  }

  num(name: string): number {
    const v = this.values.get(name);
    if (typeof v !== 'number') throw new Error(`option ${name} has no numeric value`);
    return v;
  }

  bool(name: string): boolean {
    return this.values.get(name) === true;
  }

  list(name: string): readonly string[] {
    const v = this.values.get(name);
    return Array.isArray(v) ? (v as readonly string[]) : [];
  }

  source(name: string): Source | undefined {
    return this.sources.get(name);
  }

  /**
   * Where the value came from, as error messages name it: `--name`, `HOLDFAST_NAME`,
   * `file:line (name)` or `default`. For checks made after resolution (e.g. by an operation).
   */
  where(name: string): string {
    return this.origins.get(name) ?? 'default';
  }
}

/** Resolve every option that applies to `command`. */
export function resolveOptions(command: string, parsed: ParsedArgs, env: NodeJS.ProcessEnv): Options {
  const values = new Map<string, OptionValue>();
  const sources = new Map<string, Source>();
  const origins = new Map<string, string>();
  const configFlag = parsed.flags.get('config');
  const configPath = configFlag?.at(-1) ?? env['HOLDFAST_CONFIG'] ?? DEFAULT_CONFIG;
  const file = readConfigFile(configPath, configFlag !== undefined || env['HOLDFAST_CONFIG'] !== undefined);
  // The cluster's own section, when the command takes --cluster (resolved like any option).
  const clusterSpec = optionSpec('cluster')!;
  const clusterName = appliesTo(clusterSpec, command)
    ? (parsed.flags.get('cluster')?.at(-1) ?? (env[envName(clusterSpec)] || undefined) ?? file.global.get('cluster')?.values.at(-1) ?? String(clusterSpec.default))
    : undefined;
  const section = clusterName === undefined ? undefined : file.clusters.get(clusterName);
  const config = (name: string): ConfigEntry | undefined => section?.get(name) ?? file.global.get(name);
  for (const spec of OPTIONS) {
    if (!appliesTo(spec, command)) {
      continue;
    }
    const flag = parsed.flags.get(spec.name);
    const envValue = spec.env ? env[envName(spec)] : undefined;
    const cfg = spec.config ? config(spec.name) : undefined;
    if (flag) {
      values.set(spec.name, convert(spec, flag, `--${spec.name}`));
      sources.set(spec.name, 'flag');
      origins.set(spec.name, `--${spec.name}`);
    } else if (envValue !== undefined && envValue !== '') {
      values.set(spec.name, convert(spec, [envValue], envName(spec)));
      sources.set(spec.name, 'env');
      origins.set(spec.name, envName(spec));
    } else if (cfg) {
      values.set(spec.name, convert(spec, cfg.values, `${configPath}:${cfg.line} (${spec.name})`));
      sources.set(spec.name, 'config');
      origins.set(spec.name, `${configPath}:${cfg.line} (${spec.name})`);
    } else if (spec.default !== undefined) {
      const d = spec.default;
      values.set(spec.name, spec.type === 'size' && typeof d === 'string' ? parseSize(d)! : spec.type === 'duration' && typeof d === 'string' ? parseDuration(d)! : d);
      sources.set(spec.name, 'default');
    }
  }
  return new Options(values, sources, origins, { path: path.resolve(configPath), raw: file.raw });
}
