/**
 * `pg check`: is this PostgreSQL server set up to archive into this repository, and does it?
 *
 * Each item is `ok`, `warn` (works as far as holdfast can tell, but looks unintended), `fail` or
 * `skip` (could not be checked because an earlier item failed), with a sentence saying why:
 *
 * 1. `repository`        the repository opens with the password.
 * 2. `connection`        the server answers (libpq environment or --pg-url), as for pg backup.
 * 3. `wal_level`         replica or logical.
 * 4. `archive_mode`      on or always.
 * 5. `archive_command`   calls `holdfast pg archive-push … %p`, for this --cluster (a different or,
 *                        for a cluster other than "main", absent --cluster is a warning: the name
 *                        may come from HOLDFAST_CLUSTER or the config file); archive_library unset.
 * 6. `system identifier` the server's system identifier, major version and segment size equal the
 *                        repository's cluster record, or the name is not bound yet.
 * 7. `archiving`         end to end: write a tiny WAL record (a logical message), `pg_switch_wal()`
 *                        as its own statement, and wait (bounded by --archive-timeout) until that
 *                        segment is the object `wal/<cluster>/<segment>` and reads back with this
 *                        password. Fails early when PostgreSQL reports the segment archived but the
 *                        repository lacks it (archive_command stores elsewhere), or archive_command
 *                        failed three times. Skipped when an earlier item failed.
 *
 * The check passes when no item failed. Nothing is written to the repository except what the
 * server's own archive_command pushes.
 */
import { HoldfastError } from '../errors/catalogue.js';
import { PgConnection, type ServerInfo } from '../postgres/connection.js';
import type { Repository } from '../repository/repository.js';
import { formatSize } from '../wal/names.js';
import type { OpContext, RepoRef } from './context.js';
import { type ClusterRecord, checkClusterName, walObjectName } from './pg-archive.js';
import { readClusterRecord } from './pg-archive.js';
import { openRepository } from './repo.js';

export type PgCheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface PgCheckItem {
  name: string;
  status: PgCheckStatus;
  message: string;
  data?: Record<string, unknown>;
}

export interface PgCheckResult {
  ok: boolean;
  cluster: string;
  items: PgCheckItem[];
  /** The segment pg_switch_wal() closed, when the end-to-end step ran. */
  segment?: string;
}

export interface PgCheckParams {
  readonly cluster: string;
  readonly pgUrl?: string | undefined;
  readonly archiveTimeoutMs: number;
  /** Poll interval while waiting for the segment (default 250 ms). */
  readonly pollMs?: number;
}

const ITEMS = ['repository', 'connection', 'wal_level', 'archive_mode', 'archive_command', 'system identifier', 'archiving'] as const;

function describeError(err: unknown): string {
  if (err instanceof HoldfastError) return `${err.message} [${err.code}]`;
  return err instanceof Error ? err.message : String(err);
}

/**
 * The cluster name an archive_command passes to holdfast (`--cluster NAME`, `--cluster=NAME` or
 * `HOLDFAST_CLUSTER=NAME`), or undefined when it names none.
 */
export function archiveCommandCluster(command: string): string | undefined {
  const m = /(?:--cluster(?:=|\s+)|\bHOLDFAST_CLUSTER=)(["']?)([A-Za-z0-9][A-Za-z0-9_.-]*)\1/.exec(command);
  return m?.[2];
}

/** Judge archive_command (and archive_library) for `cluster`. Pure, for tests. */
export function judgeArchiveCommand(command: string, archiveLibrary: string, cluster: string): Omit<PgCheckItem, 'name'> {
  const data = { archiveCommand: command, ...(archiveLibrary ? { archiveLibrary } : {}) };
  if (archiveLibrary) {
    return { status: 'fail', message: `archive_library = '${archiveLibrary}' is set: PostgreSQL archives through that module and ignores archive_command; set archive_library = '' and reload`, data };
  }
  if (command.trim() === '') return { status: 'fail', message: "archive_command is empty: set archive_command = 'holdfast pg archive-push --cluster NAME %p' and reload", data };
  if (!command.includes('archive-push')) {
    return { status: 'fail', message: `archive_command '${command}' does not call \`holdfast pg archive-push\`: WAL does not reach the repository`, data };
  }
  if (!command.includes('%p')) return { status: 'fail', message: `archive_command '${command}' lacks %p, the path of the file to archive`, data };
  if (!command.includes('holdfast') && !/\bpg\s+archive-push\b/.test(command)) {
    return { status: 'warn', message: `archive_command '${command}' runs an archive-push, but not visibly holdfast's (\`holdfast pg archive-push\`); another tool's (pgBackRest's) would not reach this repository`, data };
  }
  const named = archiveCommandCluster(command);
  if (named !== undefined && named !== cluster) {
    return { status: 'warn', message: `archive_command pushes to cluster "${named}", not "${cluster}"`, data: { ...data, commandCluster: named } };
  }
  if (named === undefined && cluster !== 'main') {
    return { status: 'warn', message: `archive_command names no --cluster: it archives into "main" unless HOLDFAST_CLUSTER or the config file says "${cluster}"; add --cluster ${cluster}`, data };
  }
  return { status: 'ok', message: `calls holdfast pg archive-push for cluster "${cluster}"`, data };
}

interface ArchiverStats {
  archivedCount: number;
  lastArchivedWal: string;
  failedCount: number;
  lastFailedWal: string;
}

async function archiverStats(conn: PgConnection): Promise<ArchiverStats> {
  const r = (await conn.query('SELECT archived_count, last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver'))[0] ?? {};
  return {
    archivedCount: Number(r['archived_count'] ?? 0),
    lastArchivedWal: String(r['last_archived_wal'] ?? ''),
    failedCount: Number(r['failed_count'] ?? 0),
    lastFailedWal: String(r['last_failed_wal'] ?? ''),
  };
}

/** archive_command as configured: SHOW says "(disabled)" while archive_mode is off. */
async function configuredArchiveCommand(conn: PgConnection, shown: string): Promise<string | undefined> {
  if (shown !== '(disabled)') return shown;
  try {
    const rows = await conn.query("SELECT setting FROM pg_file_settings WHERE name = 'archive_command' AND error IS NULL ORDER BY seqno DESC LIMIT 1");
    return rows[0] ? String(rows[0]['setting'] ?? '') : '';
  } catch {
    return undefined; // pg_file_settings needs superuser or pg_read_all_settings
  }
}

export async function pgCheck(ref: RepoRef, p: PgCheckParams, ctx: OpContext): Promise<PgCheckResult> {
  checkClusterName(p.cluster);
  const items: PgCheckItem[] = [];
  const add = (name: (typeof ITEMS)[number], item: Omit<PgCheckItem, 'name'>): void => {
    items.push({ name, ...item });
    ctx.log.debug(`pg check: ${name}: ${item.status}: ${item.message}`);
  };
  const failed = (): boolean => items.some((i) => i.status === 'fail');
  const skipRest = (why: string): void => {
    for (const name of ITEMS) if (!items.some((i) => i.name === name)) add(name, { status: 'skip', message: why });
  };

  let repo: Repository | undefined;
  let conn: PgConnection | undefined;
  let segment: string | undefined;
  try {
    try {
      repo = await openRepository(ref, false);
      add('repository', { status: 'ok', message: `${ref.location} opens with the password` });
    } catch (err) {
      if (!(err instanceof HoldfastError)) throw err;
      add('repository', { status: 'fail', message: describeError(err), data: { code: err.code } });
    }

    let info: ServerInfo;
    let archiveLibrary = '';
    try {
      conn = await PgConnection.open(p.pgUrl);
      info = await conn.info();
      archiveLibrary = await conn.value("SELECT setting FROM pg_settings WHERE name = 'archive_library'");
      const version = await conn.value('SHOW server_version');
      add('connection', {
        status: 'ok',
        message: `PostgreSQL ${version}${info.inRecovery ? ' (a standby)' : ''}, data directory ${info.dataDirectory}`,
        data: { serverVersion: version, dataDirectory: info.dataDirectory, inRecovery: info.inRecovery },
      });
    } catch (err) {
      if (!(err instanceof HoldfastError)) throw err;
      add('connection', { status: 'fail', message: describeError(err), data: { code: err.code } });
      skipRest('no connection to PostgreSQL');
      return { ok: false, cluster: p.cluster, items };
    }

    add(
      'wal_level',
      info.walLevel === 'replica' || info.walLevel === 'logical'
        ? { status: 'ok', message: info.walLevel }
        : { status: 'fail', message: `wal_level is ${info.walLevel}: archiving and online backups need replica (or logical); set wal_level = replica and restart PostgreSQL`, data: { walLevel: info.walLevel } },
    );

    const modeOn = info.archiveMode === 'on' || info.archiveMode === 'always';
    add(
      'archive_mode',
      modeOn
        ? { status: 'ok', message: info.archiveMode === 'always' ? 'always (a standby archives too)' : 'on' }
        : { status: 'fail', message: `archive_mode is ${info.archiveMode}: PostgreSQL archives nothing; set archive_mode = on and restart PostgreSQL`, data: { archiveMode: info.archiveMode } },
    );

    const command = await configuredArchiveCommand(conn, info.archiveCommand);
    if (command === undefined) add('archive_command', { status: 'skip', message: 'archive_mode is off, so PostgreSQL shows archive_command as "(disabled)", and pg_file_settings is not readable for this user' });
    else add('archive_command', judgeArchiveCommand(command, archiveLibrary, p.cluster));

    if (!repo) add('system identifier', { status: 'skip', message: 'the repository did not open' });
    else {
      let record: ClusterRecord | undefined;
      let unreadable: HoldfastError | undefined;
      try {
        record = await readClusterRecord(repo, p.cluster);
      } catch (err) {
        if (!(err instanceof HoldfastError)) throw err;
        unreadable = err;
      }
      const server = { systemId: info.systemId, pgVersion: info.major, segSize: info.walSegmentSize };
      if (unreadable) {
        add('system identifier', { status: 'fail', message: `cannot read the cluster record clusters/${p.cluster}: ${describeError(unreadable)}`, data: { code: unreadable.code } });
      } else if (!record) {
        add('system identifier', {
          status: 'ok',
          message: `cluster "${p.cluster}" is not bound yet: the first archive-push binds it to this server's system identifier ${info.systemId} (PostgreSQL ${info.major}, ${formatSize(info.walSegmentSize)} WAL segments)`,
          data: { bound: false, ...server },
        });
      } else {
        const diffs: string[] = [];
        if (record.systemId !== info.systemId) diffs.push(`system identifier ${record.systemId}, but this server's is ${info.systemId}`);
        if (record.pgVersion !== info.major) diffs.push(`PostgreSQL ${record.pgVersion}, but this server runs ${info.major}`);
        if (record.segSize !== info.walSegmentSize) diffs.push(`${formatSize(record.segSize)} WAL segments, but this server's are ${formatSize(info.walSegmentSize)}`);
        add(
          'system identifier',
          diffs.length === 0
            ? { status: 'ok', message: `${info.systemId} matches the cluster record of "${p.cluster}" (PostgreSQL ${record.pgVersion}, ${formatSize(record.segSize)} WAL segments)`, data: { bound: true, ...server } }
            : {
                status: 'fail',
                message: `cluster "${p.cluster}" of the repository is bound to ${diffs.join('; ')}. Check --cluster; after initdb or pg_upgrade use a new cluster name`,
                data: { bound: true, ...server, record: { systemId: record.systemId, pgVersion: record.pgVersion, segSize: record.segSize } },
              },
        );
      }
    }

    if (failed() || !repo) add('archiving', { status: 'skip', message: 'not attempted: fix the failed items first' });
    else if (info.inRecovery) add('archiving', { status: 'fail', message: 'the server is a standby: pg_switch_wal() runs only on the primary; run pg check against the primary' });
    else {
      try {
        const r = await proveArchiving(repo, conn, p, ctx);
        segment = r.segment;
        add('archiving', r.item);
      } catch (err) {
        if (!(err instanceof HoldfastError) || err.code === 'INTERRUPTED') throw err;
        const grant = err.code === 'PG_ERROR' ? ' (the user needs EXECUTE on pg_switch_wal() and pg_logical_emit_message(), or superuser)' : '';
        add('archiving', { status: 'fail', message: `${describeError(err)}${grant}`, data: { code: err.code } });
      }
    }
    return { ok: !failed(), cluster: p.cluster, items, ...(segment ? { segment } : {}) };
  } finally {
    await conn?.close();
    await repo?.close();
  }
}

/** Close a fresh segment and wait until it is in the repository (the end-to-end step). */
async function proveArchiving(repo: Repository, conn: PgConnection, p: PgCheckParams, ctx: OpContext): Promise<{ segment: string; item: Omit<PgCheckItem, 'name'> }> {
  const before = await archiverStats(conn);
  // pg_switch_wal() switches nothing when no WAL was written since the last switch and returns the
  // previous segment again: write a tiny record first. Separate statements, so the switch closes
  // the segment holding the message.
  await conn.query("SELECT pg_logical_emit_message(false, 'holdfast', 'pg check')");
  const segment = await conn.value('SELECT pg_walfile_name(pg_switch_wal())');
  if (!/^[0-9A-F]{24}$/.test(segment)) throw new HoldfastError('PG_ERROR', `pg_switch_wal() gave ${JSON.stringify(segment)}, not a WAL segment name`, {});
  const object = walObjectName(p.cluster, segment);
  const started = Date.now();
  const deadline = started + p.archiveTimeoutMs;
  ctx.log.info(`switched WAL: waiting up to ${Math.round(p.archiveTimeoutMs / 1000)} s for ${segment} to reach ${object}`);
  for (;;) {
    ctx.signal?.throwIfAborted();
    // Read PostgreSQL's view first: archive-push exits 0 only once the object is durable, so a
    // segment PostgreSQL counts as archived must already be visible in the repository.
    const now = await archiverStats(conn);
    const data = await repo.getNamed(object);
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    if (data) {
      // The segment PostgreSQL had archived before must be there too: nothing later in the
      // repository refers to the newest segment, so this is where its loss is noticed.
      const prev = before.lastArchivedWal;
      if (/^[0-9A-F]{24}$/.test(prev) && prev !== segment && !(await repo.hasNamed(walObjectName(p.cluster, prev)))) {
        return {
          segment,
          item: {
            status: 'fail',
            message: `${segment} reached ${object}, but ${prev}, which PostgreSQL reports archived before it, is not in the repository: it was lost or removed after archive-push stored it (or archive_command pointed elsewhere then). Point-in-time recovery cannot pass it; take a new backup, and run \`holdfast check\``,
            data: { segment, object, missing: prev },
          },
        };
      }
      return { segment, item: { status: 'ok', message: `${segment} reached ${object} ${seconds} s after pg_switch_wal() and reads back with this password`, data: { segment, object, seconds: Number(seconds), bytes: data.length } } };
    }
    const stats = { lastArchivedWal: now.lastArchivedWal, lastFailedWal: now.lastFailedWal, failuresSinceSwitch: now.failedCount - before.failedCount };
    if (/^[0-9A-F]{24}$/.test(now.lastArchivedWal) && now.lastArchivedWal.slice(0, 8) === segment.slice(0, 8) && now.lastArchivedWal >= segment) {
      return {
        segment,
        item: {
          status: 'fail',
          message: `PostgreSQL reports ${segment} archived (archive_command exited 0), but it is not in ${object}: archive_command stores WAL somewhere else (another repository or --cluster?)`,
          data: { segment, object, ...stats },
        },
      };
    }
    // PostgreSQL's archiver tries a file three times, then waits a minute before the next round.
    if (stats.failuresSinceSwitch >= 3) {
      return {
        segment,
        item: {
          status: 'fail',
          message: `archive_command failed ${stats.failuresSinceSwitch} times since pg_switch_wal() (last on ${now.lastFailedWal || 'an unknown file'}${now.lastFailedWal && now.lastFailedWal !== segment ? `, which ${segment} waits behind` : ''}); PostgreSQL's server log has its messages`,
          data: { segment, object, ...stats },
        },
      };
    }
    if (Date.now() >= deadline) {
      return {
        segment,
        item: {
          status: 'fail',
          message: `${segment} did not reach ${object} within ${Math.round(p.archiveTimeoutMs / 1000)} s (PostgreSQL last archived ${now.lastArchivedWal || 'nothing'}${now.lastFailedWal ? `, last failed on ${now.lastFailedWal}` : ''}); check the server log, or raise --archive-timeout`,
          data: { segment, object, ...stats },
        },
      };
    }
    await new Promise((r) => setTimeout(r, Math.min(p.pollMs ?? 250, Math.max(1, deadline - Date.now()))));
  }
}
