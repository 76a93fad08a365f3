import * as path from 'node:path';
import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { archiveCommand, commandLine, restoreCommand, selfArgs } from './self-command.js';
import { recoveryTarget, tablespaceMap } from './cmd-pg-backup.js';
import { checkBootstrapAction, patroniBootstrap, patroniReplica } from '../ops/pg-patroni.js';
import type { PgRestoreResult } from '../ops/pg-restore.js';
import { recoverySettings } from '../ops/pg-restore.js';
import { HoldfastError } from '../errors/catalogue.js';
import { formatBytes } from '../ui/output.js';

export async function run(inv: Invocation): Promise<number> {
  const o = inv.options;
  const cluster = o.str('cluster')!;
  const jobs = typeof o.get('jobs') === 'number' ? o.num('jobs') : undefined;
  if (inv.command === 'pg patroni-config') {
    const config = patroniConfig(inv, cluster);
    if (inv.json) inv.outJson(config);
    else inv.out(renderYaml(config, header(inv, cluster)).trimEnd());
    return 0;
  }
  const dataDir = o.str('datadir');
  if (!dataDir) throw new HoldfastError('USAGE', `${inv.command} needs --datadir DIR (Patroni passes it)`, { hint: 'Patroni runs this command itself; `holdfast pg patroni-config` prints the configuration that makes it do so.' });
  const ref = repoRef(inv);
  let r: PgRestoreResult;
  if (inv.command === 'pg patroni-bootstrap') {
    r = await patroniBootstrap(
      ref,
      {
        cluster,
        scope: o.str('scope'),
        dataDir: path.resolve(dataDir),
        set: o.str('set'),
        target: recoveryTarget(inv),
        latest: o.bool('target-latest'),
        recoverySettings: o.str('recovery-settings') === 'patroni' ? 'patroni' : 'holdfast',
        jobs,
        tablespaceMap: tablespaceMap(o.list('tablespace-map')),
        restoreCommand: restoreCommand(inv, cluster),
      },
      inv.ctx,
    );
  } else {
    r = await patroniReplica(
      ref,
      { cluster, scope: o.str('scope'), dataDir: path.resolve(dataDir), role: o.str('role'), connstring: o.str('connstring'), keepData: o.bool('keep-data'), jobs, restoreCommand: restoreCommand(inv, cluster) },
      inv.ctx,
    );
  }
  if (inv.json) inv.outJson(r);
  else {
    inv.out(`restored backup ${r.snapshotId.slice(0, 8)} into ${r.targetDir}: ${r.files} files, ${formatBytes(r.bytes)}${r.kept > 0 || r.removed > 0 ? ` (${r.kept} kept, ${r.files - r.kept} rewritten, ${r.removed} removed)` : ''}`);
    if (r.settings.length > 0) inv.out(`recovery settings: ${r.settings.map(([k, v]) => `${k} = '${v}'`).join('; ')}`);
  }
  return 0;
}

type Yaml = string | boolean | readonly Yaml[] | { readonly [key: string]: Yaml };

/**
 * The parts of patroni.yml that wire holdfast in (docs/patroni.md):
 * - bootstrap.dcs.postgresql: archive_command in parameters and restore_command in recovery_conf,
 *   kept in the DCS, so every member (the leader after any failover, every replica, a cluster
 *   bootstrapped later) archives and fetches WAL through holdfast;
 * - bootstrap.method holdfast: `pg patroni-bootstrap` with the target, and either
 *   keep_existing_recovery_conf (holdfast writes the recovery settings) or a recovery_conf section
 *   (Patroni writes them);
 * - postgresql.create_replica_methods: holdfast first (it works without a leader), basebackup as
 *   the fallback.
 */
export function patroniConfig(inv: Invocation, cluster: string): { [key: string]: Yaml } {
  const o = inv.options;
  const restore = restoreCommand(inv, cluster);
  const t = recoveryTarget(inv);
  const mode = o.str('recovery-settings') === 'patroni' ? 'patroni' : 'holdfast';
  checkBootstrapAction(t.action);
  recoverySettings(restore, t); // validates the target
  const given = [t.time, t.lsn, t.xid, t.name].some((v) => v !== undefined) || t.immediate === true;
  const bootArgs = selfArgs(inv, ['pg', 'patroni-bootstrap'], cluster, 'the bootstrap method');
  if (mode === 'patroni') bootArgs.push('--recovery-settings', 'patroni');
  const set = o.str('set');
  if (set !== undefined) bootArgs.push('--set', set);
  // The target for holdfast: it chooses the backup (and, with holdfast's settings, writes it).
  for (const [name, value] of [['target-time', t.time], ['target-lsn', t.lsn], ['target-xid', t.xid], ['target-name', t.name], ['target-timeline', t.timeline]] as const) {
    if (value !== undefined) bootArgs.push(`--${name}`, value);
  }
  if (t.immediate) bootArgs.push('--target-immediate');
  if (o.bool('target-latest')) bootArgs.push('--target-latest');
  const method: { [key: string]: Yaml } = { command: commandLine(bootArgs) };
  if (mode === 'holdfast') method['keep_existing_recovery_conf'] = true;
  else {
    const settings = recoverySettings(restore, { ...t, action: given ? 'promote' : undefined, timeline: t.timeline ?? 'latest' });
    method['recovery_conf'] = Object.fromEntries(settings);
  }
  return {
    bootstrap: {
      dcs: {
        postgresql: {
          parameters: { wal_level: 'replica', archive_mode: 'on', archive_command: archiveCommand(inv, cluster) },
          recovery_conf: { restore_command: restore },
        },
      },
      method: 'holdfast',
      holdfast: method,
    },
    postgresql: {
      create_replica_methods: ['holdfast', 'basebackup'],
      holdfast: { command: commandLine(selfArgs(inv, ['pg', 'patroni-replica'], cluster, 'the replica method')), keep_data: true, no_leader: true },
    },
  };
}

function header(inv: Invocation, cluster: string): string[] {
  return [
    `# holdfast for Patroni: cluster "${cluster}" of repository ${inv.options.str('repo') ?? ''} (\`holdfast pg patroni-config\`).`,
    '# Merge into every member\'s patroni.yml (docs/patroni.md). bootstrap.dcs takes effect when Patroni',
    '# initialises a cluster; on a running cluster put the same postgresql settings in with',
    '# `patronictl edit-config`. The bootstrap method runs only for a new cluster (empty DCS).',
  ];
}

/** A YAML scalar: booleans plain, every string single-quoted (so %p, %f, spaces and ': ' are safe). */
function scalar(v: string | boolean): string {
  return typeof v === 'boolean' ? String(v) : `'${v.replace(/'/g, "''")}'`;
}

/** Block-style YAML of nested maps, lists and scalars, two spaces per level. */
export function renderYaml(value: { [key: string]: Yaml }, comments: readonly string[] = []): string {
  const lines = [...comments];
  const emit = (v: Yaml, indent: string): void => {
    if (Array.isArray(v)) {
      for (const item of v as readonly Yaml[]) {
        if (typeof item === 'string' || typeof item === 'boolean') lines.push(`${indent}- ${scalar(item)}`);
        else throw new Error('renderYaml: only scalars in lists');
      }
      return;
    }
    for (const [k, item] of Object.entries(v as { [key: string]: Yaml })) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`renderYaml: key ${k}`);
      if (typeof item === 'string' || typeof item === 'boolean') lines.push(`${indent}${k}: ${scalar(item)}`);
      else {
        lines.push(`${indent}${k}:`);
        emit(item, `${indent}  `);
      }
    }
  };
  emit(value, '');
  return lines.join('\n') + '\n';
}
