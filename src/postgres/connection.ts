/**
 * A connection to the PostgreSQL server being backed up, through the `pg` driver (loaded only by
 * PostgreSQL commands). Connection parameters come from the standard libpq environment (PGHOST,
 * PGPORT, PGUSER, PGDATABASE, PGPASSWORD) or a connection string. The non-exclusive backup API
 * needs one session from start to stop, which this object holds.
 */
import { HoldfastError } from '../errors/catalogue.js';

type PgClient = {
  connect(): Promise<void>;
  query(sql: string, params?: unknown[]): Promise<{ rows: Array<Record<string, unknown>> }>;
  end(): Promise<void>;
  on(event: 'error', cb: (err: Error) => void): void;
};

export interface ServerInfo {
  versionNum: number;
  major: number;
  systemId: string;
  dataDirectory: string;
  walSegmentSize: number;
  walLevel: string;
  archiveMode: string;
  archiveCommand: string;
  dataChecksums: boolean;
  inRecovery: boolean;
}

export interface BackupStart {
  lsn: string;
  timeline: number;
  walFile: string;
  time: string;
}

export interface BackupStop {
  lsn: string;
  labelFile: string;
  spcmapFile: string;
  time: string;
}

/** The node-postgres client class, as holdfast uses it. */
export type PgClientClass = new (cfg?: unknown) => PgClient;

let pgModule: Promise<PgClientClass> | undefined;

/**
 * node-postgres's Client, loaded once. Its lib/stream.js asks at load time whether it runs in a
 * Cloudflare Worker by constructing a global `Response`, and on Node that first use loads Node's
 * whole bundled fetch implementation (undici, with http, http2, tls, zlib and web streams):
 * ~50 ms of CPU on every command that connects to PostgreSQL, for nothing. `Response` is hidden
 * while the module loads, so the probe answers "not Cloudflare" at once, and put back after.
 */
export function pgClientClass(): Promise<PgClientClass> {
  pgModule ??= (async () => {
    const saved = Object.getOwnPropertyDescriptor(globalThis, 'Response');
    if (saved?.configurable) Object.defineProperty(globalThis, 'Response', { value: undefined, configurable: true, writable: true });
    try {
      const { default: pg } = (await import('pg')) as unknown as { default: { Client: PgClientClass } };
      return pg.Client;
    } finally {
      if (saved?.configurable) Object.defineProperty(globalThis, 'Response', saved);
    }
  })();
  return pgModule;
}

export class PgConnection {
  private constructor(private readonly client: PgClient) {}

  static async open(connString: string | undefined): Promise<PgConnection> {
    const Client = await pgClientClass();
    const client = new Client(connString ? { connectionString: connString } : undefined);
    client.on('error', () => undefined); // surfaced by the next query
    try {
      await client.connect();
    } catch (err) {
      throw new HoldfastError('CONFIG_INVALID', `cannot connect to PostgreSQL: ${(err as Error).message}`, {
        hint: 'Set PGHOST/PGPORT/PGUSER (or --pg-url) so that psql would connect, and check that the server runs.',
      }, { cause: err });
    }
    return new PgConnection(client);
  }

  async value(sql: string, params: unknown[] = []): Promise<string> {
    const r = await this.query(sql, params);
    const row = r[0];
    const v = row ? Object.values(row)[0] : undefined;
    return v === null || v === undefined ? '' : String(v);
  }

  async query(sql: string, params: unknown[] = []): Promise<Array<Record<string, unknown>>> {
    try {
      return (await this.client.query(sql, params)).rows;
    } catch (err) {
      throw new HoldfastError('PG_ERROR', `PostgreSQL: ${(err as Error).message} (in: ${sql.split('\n')[0]})`, {}, { cause: err });
    }
  }

  async info(): Promise<ServerInfo> {
    const versionNum = Number(await this.value('SHOW server_version_num'));
    return {
      versionNum,
      major: Math.floor(versionNum / 10000),
      systemId: await this.value('SELECT system_identifier::text FROM pg_control_system()'),
      dataDirectory: await this.value('SHOW data_directory'),
      walSegmentSize: Number(await this.value("SELECT setting::bigint * (CASE unit WHEN 'B' THEN 1 WHEN '8kB' THEN 8192 WHEN 'MB' THEN 1048576 ELSE 1 END) FROM pg_settings WHERE name = 'wal_segment_size'")),
      walLevel: await this.value('SHOW wal_level'),
      archiveMode: await this.value('SHOW archive_mode'),
      archiveCommand: await this.value('SHOW archive_command'),
      dataChecksums: (await this.value('SHOW data_checksums')) === 'on',
      inRecovery: (await this.value('SELECT pg_is_in_recovery()')) === 'true',
    };
  }

  // Times are read as ISO 8601 UTC text built by to_char: now()::text follows the server's
  // datestyle (e.g. "21/11/2026 10:54:39 UTC" with SQL, DMY), which JavaScript cannot parse.

  /** Non-exclusive backup start with an immediate checkpoint (12-14: pg_start_backup). */
  async backupStart(label: string, major: number): Promise<BackupStart> {
    const fn = major >= 15 ? 'pg_backup_start($1, true)' : 'pg_start_backup($1, true, false)';
    const rows = await this.query(`SELECT lsn::text AS lsn, pg_walfile_name(lsn) AS walfile, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS time FROM ${fn} AS lsn`, [label]);
    const r = rows[0]!;
    const walFile = String(r['walfile']);
    return { lsn: String(r['lsn']), timeline: parseInt(walFile.slice(0, 8), 16), walFile, time: String(r['time']) };
  }

  /** Non-exclusive backup stop; does not wait for archiving (the caller waits on its repository). */
  async backupStop(major: number): Promise<BackupStop> {
    const fn = major >= 15 ? 'pg_backup_stop(false)' : 'pg_stop_backup(false, false)';
    const rows = await this.query(`SELECT lsn::text AS lsn, labelfile, spcmapfile, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS time FROM ${fn}`);
    const r = rows[0]!;
    return { lsn: String(r['lsn']), labelFile: String(r['labelfile'] ?? ''), spcmapFile: String(r['spcmapfile'] ?? ''), time: String(r['time']) };
  }

  /**
   * Where a standby streams from (pg_stat_wal_receiver: host and port of its upstream), when it
   * streams; undefined on a primary or when nothing is received right now.
   */
  async upstream(): Promise<{ host: string; port: number; status: string } | undefined> {
    const rows = await this.query('SELECT sender_host, sender_port, status FROM pg_stat_wal_receiver').catch(() => []);
    const r = rows[0];
    if (!r || r['sender_host'] === null || r['sender_host'] === undefined) return undefined;
    return { host: String(r['sender_host']), port: Number(r['sender_port']), status: String(r['status']) };
  }

  async close(): Promise<void> {
    await this.client.end().catch(() => undefined);
  }
}
