import { statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import type { Invocation } from './invocation.js';
import { repoRef, storageFlags } from './invocation.js';
import { DEFAULT_LOCK_SETTINGS, type RepoRef } from '../ops/context.js';
import type { Compression } from '../repository/compress.js';
import type { PushResult } from '../ops/pg-archive.js';
import { answerFromSpool, repositoryInstance, spoolDirFor } from '../ops/pg-archive-spool.js';
import type { WorkerCommand } from '../ops/pg-archive-async.js';
import { FRONT_WAITED_ENV, type TicketInputs, configDigest, leaveTicket } from '../ops/pg-archive-ticket.js';
import { localDirectory } from '../ops/backend.js';
import { defaultStateDir } from '../state/key-cache.js';
import { Logger, type LogLevel } from '../ui/output.js';

/** The async worker exits after this long without a ready file to archive… */
const WORKER_IDLE_MS = 5_000;
/** …and after this long in any case (the next call starts a fresh one). */
const WORKER_LIFE_MS = 10 * 60_000;

// Loaded lazily: an async call answered from the spool never parses the repository code.
export async function run(inv: Invocation): Promise<number> {
  const cluster = inv.options.str('cluster')!;
  if (inv.command === 'pg archive-push') return push(inv, cluster);
  const { archiveGet } = await import('../ops/pg-archive.js');
  const ref = repoRef(inv);
  const prefetch = inv.options.num('prefetch');
  const queueDir = prefetch > 0 ? path.join(spoolDirFor(defaultStateDir(), ref.location, cluster), 'prefetch') : undefined;
  const r = await archiveGet(ref, cluster, inv.args[0]!, inv.args[1]!, inv.ctx, { prefetch, queueDir });
  const t = queueDir !== undefined && process.argv.at(-2) === inv.args[0] ? ticketInputs(inv, ref, inv.args[1]!) : undefined;
  if (t && queueDir !== undefined) {
    leaveTicket(defaultStateDir(), t.inputs, { queueDir: path.resolve(queueDir), repoConfig: path.join(path.resolve(t.dir), 'config'), configPath: t.config.path, configDigest: configDigest(t.config.raw) });
  }
  if (inv.json) inv.outJson(r);
  else inv.log.debug(`restored ${r.file}: ${r.bytes} bytes from the ${r.from === 'queue' ? 'prefetch queue' : 'repository'}${r.queued ? `; ${r.queued} following segment(s) queued` : ''}`);
  return 0;
}

async function push(inv: Invocation, cluster: string): Promise<number> {
  const o = inv.options;
  const ref = repoRef(inv);
  const walPath = inv.args[0]!;
  const jobs = typeof o.get('jobs') === 'number' ? Math.max(1, o.num('jobs')) : Math.min(4, availableParallelism());
  if (o.bool('async-worker')) {
    const { runArchiveWorker } = await import('../ops/pg-archive-worker.js');
    const spoolDir = spoolDirFor(defaultStateDir(), ref.location, cluster);
    const log = new StampedLogger((o.str('log-level') ?? 'info') as LogLevel);
    const s = await runArchiveWorker(ref, cluster, { spoolDir, walDir: walPath, jobs, ahead: o.num('async-batch'), idleMs: WORKER_IDLE_MS, lifeMs: WORKER_LIFE_MS }, { ...inv.ctx, log, progress: false });
    if (inv.json) inv.outJson(s);
    return 0;
  }
  let r: PushResult | undefined;
  if (o.bool('async')) {
    const spoolDir = spoolDirFor(defaultStateDir(), ref.location, cluster);
    const answer = await answerFromSpool(spoolDir, ref.location, walPath, ref.storage);
    if (answer === 'archived' || !('sync' in answer)) frontTicket(inv, ref, walPath, spoolDir);
    if (answer === 'archived') {
      inv.log.debug(`${path.basename(walPath)} was archived by the async worker (spool)`);
      r = { file: path.basename(walPath), stored: false, duplicate: false, bytes: statSync(walPath).size, storedBytes: 0, earlier: true };
    } else if ('sync' in answer) {
      if (answer.warn) inv.log.warn(`async archiving is not available (${answer.sync}); archiving ${path.basename(walPath)} in this process`);
    } else {
      const { pushThroughWorker } = await import('../ops/pg-archive-async.js');
      const waited = Number(process.env[FRONT_WAITED_ENV] ?? 0);
      r = await pushThroughWorker(ref, cluster, walPath, answer, inv.ctx, { timeoutMs: o.num('async-timeout'), waitedMs: Number.isFinite(waited) ? waited : 0, worker: workerCommand(inv, ref, cluster, walPath, jobs) });
      if (r.earlier) inv.log.debug(`${r.file} was archived by the async worker`);
    }
  }
  if (!r) {
    const { archivePush } = await import('../ops/pg-archive.js');
    let opened: { keyId: string; compression: Compression } | undefined;
    r = await archivePush(ref, cluster, walPath, inv.ctx, {}, (repo) => (opened = { keyId: repo.keyId, compression: repo.compression }));
    if (!o.bool('async') && r.stored && opened) await syncTicket(inv, ref, cluster, walPath, opened);
  }
  if (inv.json) inv.outJson(r);
  else if (!r.earlier) inv.log.debug(r.stored ? `archived ${r.file}: ${r.bytes} bytes, ${r.storedBytes} stored` : `${r.file} was already archived`);
  return 0;
}

/**
 * What every ticket of the native front (dist/holdfast-push) needs: a local repository with no
 * secondary storage, a known config file, nothing printed on success (no --json, no debug log) and
 * the WAL path (archive-push) or the destination (archive-get) last. The raw inputs the ticket is keyed by, or undefined when the front could not
 * answer this call as this process does.
 */
function ticketInputs(inv: Invocation, ref: RepoRef, walPath: string): { dir: string; config: NonNullable<Invocation['options']['configSource']>; inputs: TicketInputs } | undefined {
  const dir = localDirectory(ref.location);
  const config = inv.options.configSource;
  const args = process.argv.slice(2);
  const uid = process.getuid?.();
  if (dir === undefined || (ref.storage?.secondaries?.length ?? 0) > 0 || !config || uid === undefined) return undefined;
  if (inv.json || inv.log.enabled('debug') || args.at(-1) !== walPath) return undefined;
  return { dir, config, inputs: { uid, cwd: process.cwd(), args, env: process.env } };
}

/** Leave the front a ticket to answer this same `--async` call from the spool next time. */
function frontTicket(inv: Invocation, ref: RepoRef, walPath: string, spoolDir: string): void {
  const t = ticketInputs(inv, ref, walPath);
  if (!t) return;
  leaveTicket(defaultStateDir(), t.inputs, { spoolDir: path.resolve(spoolDir), repoConfig: path.join(path.resolve(t.dir), 'config'), configPath: t.config.path, configDigest: configDigest(t.config.raw), asyncTimeoutMs: inv.options.num('async-timeout') });
}

/**
 * Leave the native front a sync ticket (ops/pg-archive-ticket.ts) after this call stored its
 * segment, so that it stores the next ones itself, when it could do exactly what this process
 * did: besides what every ticket needs, the password from a file with the key cache on (the front
 * reads both, never a secret from the ticket) and zstd compression.
 */
async function syncTicket(inv: Invocation, ref: RepoRef, cluster: string, walPath: string, repo: { keyId: string; compression: Compression }): Promise<void> {
  const o = inv.options;
  const t = ticketInputs(inv, ref, walPath);
  const pwFile = o.str('password-file');
  if (!t || repo.compression.algo !== 'zstd' || ref.keyCacheDir === undefined || pwFile === undefined || o.str('password') !== undefined || !/^[0-9a-f]{64}$/.test(repo.keyId)) return;
  const instance = await repositoryInstance(ref.location, ref.storage).catch(() => undefined);
  if (!instance) return;
  leaveTicket(defaultStateDir(), t.inputs, {
    repoDir: path.resolve(t.dir),
    instance,
    keyId: repo.keyId,
    keyCacheDir: path.resolve(ref.keyCacheDir),
    passwordFile: path.resolve(pwFile),
    cluster,
    level: repo.compression.level,
    lockTtlMs: (inv.ctx.locks ?? DEFAULT_LOCK_SETTINGS).ttlMs,
    configPath: t.config.path,
    configDigest: configDigest(t.config.raw),
  });
}

/** How to run the async worker for this call's repository and cluster, with its settings spelled out. */
function workerCommand(inv: Invocation, ref: RepoRef, cluster: string, walPath: string, jobs: number): WorkerCommand {
  const o = inv.options;
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env[FRONT_WAITED_ENV];
  const args = [...process.execArgv, process.argv[1]!, 'pg', 'archive-push', '--async-worker', '--cluster', cluster, '--repo', ref.location, '--jobs', String(jobs), '--async-batch', String(o.num('async-batch')), '--log-level', o.str('log-level') ?? 'info'];
  const config = o.str('config');
  if (config !== undefined) args.push('--config', path.resolve(config));
  const pwFile = o.str('password-file');
  if (o.str('password') === undefined && pwFile !== undefined) args.push('--password-file', path.resolve(pwFile));
  else env['HOLDFAST_PASSWORD'] = ref.password; // from the environment anyway, or typed on a terminal
  if (!o.bool('key-cache')) args.push('--no-key-cache');
  const lockDir = o.str('lock-dir');
  if (lockDir !== undefined) args.push('--lock-dir', path.resolve(lockDir));
  for (const name of ['lock-ttl', 'lock-refresh']) {
    const v = o.get(name);
    if (typeof v === 'number') args.push(`--${name}`, `${v}ms`);
  }
  if (o.get('remove-stale-locks') === false) args.push('--no-remove-stale-locks');
  args.push(...storageFlags(inv));
  args.push(path.dirname(path.resolve(walPath)));
  return { args, env };
}

/** The worker's log lines carry the time and its PID (they go to worker.log). */
class StampedLogger extends Logger {
  override log(level: LogLevel, message: string): void {
    super.log(level, `${new Date().toISOString()} [${process.pid}] ${message}`);
  }
}
