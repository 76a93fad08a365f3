/** `pg expire`, `pg pin`, `pg unpin`; and the expire that `pg backup --expire-after-backup` runs. */
import type { Invocation } from './invocation.js';
import { repoRef } from './invocation.js';
import { HoldfastError } from '../errors/catalogue.js';
import { type ExpireWalTimeline, type PgExpireResult, pgExpire } from '../ops/pg-expire.js';
import { pgPin } from '../ops/pg-pins.js';
import { pruneAfter } from './cmd-prune.js';
import { type RetentionPolicy, hasPolicy } from '../retention/pg-policy.js';

export async function run(inv: Invocation): Promise<number> {
  const cluster = inv.options.str('cluster')!;
  if (inv.command === 'pg pin' || inv.command === 'pg unpin') {
    const pin = inv.command === 'pg pin';
    const r = await pgPin(repoRef(inv), cluster, inv.args[0]!, pin, inv.ctx);
    if (inv.json) inv.outJson(r);
    else inv.out(`backup ${r.snapshotId.slice(0, 8)} of cluster "${cluster}" ${r.changed ? (pin ? 'pinned: pg expire never removes it' : 'unpinned: the retention policy decides again') : pin ? 'was pinned already' : 'was not pinned'}`);
    return 0;
  }
  const r = await pgExpire(repoRef(inv), { cluster, policy: policyFrom(inv), dryRun: inv.options.bool('dry-run') }, inv.ctx);
  if (!inv.json) for (const line of formatPgExpire(r)) inv.out(line);
  const pruned = await pruneAfter(inv);
  if (inv.json) inv.outJson(pruned ? { ...r, prune: pruned } : r);
  return 0;
}

/** The policy options (flags, environment or config file). */
export function policyFrom(inv: Invocation): RetentionPolicy {
  const o = inv.options;
  const retainFull = o.get('retain-full');
  const window = o.get('recovery-window');
  return {
    ...(typeof retainFull === 'number' ? { retainFull } : {}),
    ...(typeof window === 'number' ? { recoveryWindowMs: window } : {}),
    minFull: typeof o.get('min-full') === 'number' ? o.num('min-full') : 1,
  };
}

/**
 * For pg backup: the policy to expire with after the backup, or undefined when
 * expire-after-backup is off. Checked before the backup starts, so a missing policy costs nothing.
 */
export function expirePolicyAfterBackup(inv: Invocation): RetentionPolicy | undefined {
  if (!inv.options.bool('expire-after-backup')) return undefined;
  const policy = policyFrom(inv);
  if (!hasPolicy(policy)) {
    throw new HoldfastError('CONFIG_INVALID', `expire-after-backup is on (${inv.options.where('expire-after-backup')}) but no retention policy is given`, {
      option: 'expire-after-backup',
      hint: 'Set retain-full and/or recovery-window beside it (config file, flags or environment), or turn expire-after-backup off.',
    });
  }
  return policy;
}

/**
 * pg backup's expire, after the backup's own locks are released. A failure does not undo the
 * backup: it is logged and its exit code returned for the command to exit with.
 */
export async function expireAfterBackup(inv: Invocation, cluster: string, policy: RetentionPolicy): Promise<{ json: unknown; lines: string[]; exitCode: number }> {
  try {
    const r = await pgExpire(repoRef(inv), { cluster, policy, dryRun: false }, inv.ctx);
    return { json: r, lines: formatPgExpire(r), exitCode: 0 };
  } catch (err) {
    if (!(err instanceof HoldfastError)) throw err;
    inv.log.error(`the backup is stored, but pg expire after it failed: ${err.message} [${err.code}]`);
    inv.log.hint(err.hint);
    return { json: { error: err.toJSON() }, lines: [], exitCode: err.exitCode };
  }
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;
const time = (iso: string): string => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');

/** 14d, 36h, 90m, 45s, 1500ms: the largest unit that divides the duration. */
export function formatWindow(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  return `${ms}ms`;
}

function range(t: ExpireWalTimeline['kept']): string {
  const parts: string[] = [];
  if (t.first) parts.push(`${t.first} .. ${t.last} (${plural(t.segments, 'segment')}${t.missing ? `, ${t.missing} missing` : ''})`);
  if (t.partial.length) parts.push(plural(t.partial.length, '.partial file'));
  if (t.backupHistory.length) parts.push(plural(t.backupHistory.length, 'backup history file'));
  return parts.join(', ');
}

const VERDICTS: Record<ExpireWalTimeline['verdict'], string> = {
  reached: '',
  later: 'above every kept backup\'s timeline (a promoted server may have no backup yet)',
  'unknown-history': 'no readable timeline history file, so whether a kept backup leads into it is unknown',
  unreachable: 'a branch no kept backup leads into',
  'no-backups': 'there are no backups',
};

/** The text form of a pg expire result. */
export function formatPgExpire(r: PgExpireResult): string[] {
  const would = r.dryRun ? 'would be ' : '';
  const out: string[] = [];
  out.push(
    `pg expire of cluster "${r.cluster}"${r.dryRun ? ' (dry run: nothing removed)' : ''}: ${r.expired.length} of ${plural(r.backups.length, 'backup')} ${would}expired, ${plural(r.wal.removed, 'WAL file')} ${would}removed, ${r.wal.kept} kept`,
  );
  const policy = [
    ...(r.policy.retainFull !== undefined ? [`retain-full ${r.policy.retainFull}`] : []),
    ...(r.policy.recoveryWindowMs !== undefined ? [`recovery window ${formatWindow(r.policy.recoveryWindowMs)} (from ${time(r.windowStart!)}${r.windowAnchor ? `; starts from backup ${r.windowAnchor.slice(0, 8)}` : '; no backup ends before it, so every backup is kept'})`] : []),
    `min-full ${r.policy.minFull}`,
  ];
  out.push(`policy: ${policy.join(', ')}`);
  for (const b of r.backups) {
    out.push(`  ${b.keep ? 'keep  ' : 'expire'} ${b.id.slice(0, 8)}  ${b.type.padEnd(4)}  ${time(b.startTime)} .. ${time(b.stopTime)}  timeline ${b.timeline}${b.keep ? `  (${b.reasons.join(', ')})` : ''}`);
  }
  out.push(r.wal.timelines.length === 0 ? 'WAL: none archived' : 'WAL:');
  for (const t of r.wal.timelines) {
    const removed = range(t.removed);
    const kept = range(t.kept);
    const why = t.verdict === 'reached' ? `reached by ${t.reachedBy.map((id) => id.slice(0, 8)).join(', ')}` : VERDICTS[t.verdict];
    out.push(`  timeline ${t.timeline}: ${removed ? `${would}removed ${removed}` : 'nothing removed'}; ${kept ? `kept ${kept}` : 'nothing kept'} — ${why}`);
  }
  if (r.wal.history.length) out.push(`  timeline history files (always kept): ${r.wal.history.join(', ')}`);
  if (r.pins.length) out.push(`pinned: ${r.pins.map((id) => id.slice(0, 8)).join(', ')}${r.danglingPins.length ? ` (${r.danglingPins.map((id) => id.slice(0, 8)).join(', ')} name no backup any more: pg unpin removes them)` : ''}`);
  if (!r.dryRun && r.expired.length > 0) out.push('the expired backups\' data stays in the repository until `holdfast prune` removes what no backup uses');
  return out;
}
