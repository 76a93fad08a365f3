/**
 * Snapshot manifests: sealed JSON files `snapshots/<id>`, written only after every blob they
 * reference is durable and indexed. `latest` and unique id prefixes resolve here.
 */
import { HoldfastError } from '../errors/catalogue.js';
import type { Repository } from './repository.js';

export const SNAPSHOT_VERSION = 1;

export interface SnapshotSummary {
  files: number;
  dirs: number;
  bytes: number;
  filesNew: number;
  filesChanged: number;
  filesUnchanged: number;
  blobsAdded: number;
  bytesAdded: number;
  errors: number;
  durationMs: number;
}

/** Present on snapshots that are PostgreSQL backups (`pg backup`). */
export interface PgBackupInfo {
  cluster: string;
  type: 'full' | 'incr';
  systemId: string;
  pgVersion: number;
  /** The data directory that was backed up (the snapshot's only path). */
  pgdata: string;
  timeline: number;
  startLsn: string;
  stopLsn: string;
  /** First and last WAL segment needed to make the backup consistent. */
  startWal: string;
  stopWal: string;
  startTime: string;
  stopTime: string;
  /** backup_label and tablespace_map contents from pg_backup_stop. */
  labelFile: string;
  spcmapFile: string;
  dataChecksums: boolean;
  /** Tablespaces (pg_tblspc/<oid> symlinks) and their directories, also paths of the snapshot. */
  tablespaces?: Array<{ oid: string; path: string }>;
  /**
   * Pages whose checksum (or header) failed verification while they were read: the backup is
   * stored, but these pages were already damaged on the server.
   */
  corruptPages?: Array<{ file: string; block: number; expected: number; actual: number; reason: 'checksum' | 'header' }>;
}

export interface Snapshot {
  version: number;
  time: string;
  host: string;
  username: string;
  paths: string[];
  tags: string[];
  excludes: string[];
  tree: string;
  parent?: string;
  /** Set by `repair snapshots`: the damaged snapshot this one replaces. */
  original?: string;
  program: string;
  summary?: SnapshotSummary;
  pg?: PgBackupInfo;
}

export interface SnapshotWithId extends Snapshot {
  id: string;
}

export async function saveSnapshot(repo: Repository, sn: Snapshot): Promise<string> {
  return repo.saveFile('snapshot', Buffer.from(JSON.stringify(sn)));
}

/** The fields of `pg` that readers compute with must have their types (a forged manifest must not crash them). */
function validPg(pg: unknown): boolean {
  if (typeof pg !== 'object' || pg === null) return false;
  const p = pg as Record<string, unknown>;
  const str = ['cluster', 'type', 'systemId', 'pgdata', 'startLsn', 'stopLsn', 'startWal', 'stopWal', 'startTime', 'stopTime'];
  return str.every((k) => typeof p[k] === 'string') && typeof p['timeline'] === 'number' && typeof p['pgVersion'] === 'number' &&
    (p['tablespaces'] === undefined || (Array.isArray(p['tablespaces']) && p['tablespaces'].every((t) => typeof t === 'object' && t !== null && typeof (t as Record<string, unknown>)['oid'] === 'string' && typeof (t as Record<string, unknown>)['path'] === 'string')));
}

export async function loadSnapshot(repo: Repository, id: string): Promise<SnapshotWithId> {
  const buf = await repo.loadFile('snapshot', id);
  let sn: Snapshot;
  try {
    sn = JSON.parse(buf.toString('utf8')) as Snapshot;
  } catch {
    throw new HoldfastError('INTEGRITY', `snapshots/${id} is not valid JSON`, { object: `snapshots/${id}` });
  }
  const strings = (v: unknown): boolean => Array.isArray(v) && v.length <= 100_000 && v.every((x) => typeof x === 'string');
  if (
    typeof sn !== 'object' || sn === null || Array.isArray(sn) ||
    typeof sn.tree !== 'string' || !/^[0-9a-f]{64}$/.test(sn.tree) ||
    !strings(sn.paths) || typeof sn.time !== 'string' || typeof sn.version !== 'number' ||
    (sn.tags !== undefined && !strings(sn.tags)) || (sn.excludes !== undefined && !strings(sn.excludes)) ||
    (sn.host !== undefined && typeof sn.host !== 'string') || (sn.parent !== undefined && typeof sn.parent !== 'string') ||
    (sn.pg !== undefined && !validPg(sn.pg))
  ) {
    throw new HoldfastError('INTEGRITY', `snapshots/${id} lacks required fields or has malformed ones`, { object: `snapshots/${id}` });
  }
  if (sn.version > SNAPSHOT_VERSION) throw new HoldfastError('FORMAT_UNSUPPORTED', `snapshots/${id} has format version ${sn.version}`, { object: `snapshots/${id}` });
  return { ...sn, tags: sn.tags ?? [], excludes: sn.excludes ?? [], id };
}

export function listSnapshotIds(repo: Repository): Promise<string[]> {
  return repo.listFiles('snapshot');
}

/** All snapshots, oldest first; `skipUnreadable` leaves out those that cannot be read (check). */
export async function listSnapshots(repo: Repository, opts: { skipUnreadable?: boolean } = {}): Promise<SnapshotWithId[]> {
  const ids = await repo.listFiles('snapshot');
  const out: SnapshotWithId[] = [];
  for (const id of ids) {
    try {
      out.push(await loadSnapshot(repo, id));
    } catch (err) {
      if (!opts.skipUnreadable || !(err instanceof HoldfastError) || (err.code !== 'INTEGRITY' && err.code !== 'OBJECT_MISSING' && err.code !== 'FORMAT_UNSUPPORTED')) throw err;
    }
  }
  return out.sort((a, b) => a.time.localeCompare(b.time) || a.id.localeCompare(b.id));
}

export interface SnapshotFilter {
  host?: string | undefined;
  tags?: readonly string[] | undefined;
  paths?: readonly string[] | undefined;
}

export function matchesFilter(sn: Snapshot, f: SnapshotFilter): boolean {
  if (f.host !== undefined && sn.host !== f.host) return false;
  if (f.tags && f.tags.length > 0 && !f.tags.every((t) => sn.tags.includes(t))) return false;
  if (f.paths && f.paths.length > 0 && !(f.paths.length === sn.paths.length && f.paths.every((p) => sn.paths.includes(p)))) return false;
  return true;
}

/** Resolve `latest` or a (unique prefix of a) snapshot id. */
export async function findSnapshot(repo: Repository, ref: string, filter: SnapshotFilter = {}): Promise<SnapshotWithId> {
  if (ref === 'latest') {
    const all = (await listSnapshots(repo)).filter((s) => matchesFilter(s, filter));
    const last = all.at(-1);
    if (!last) throw new HoldfastError('SNAPSHOT_NOT_FOUND', `no snapshot${filter.host ? ` of host ${filter.host}` : ''} in ${repo.backend.location}, so "latest" names nothing`, { ref });
    return last;
  }
  if (!/^[0-9a-f]{1,64}$/.test(ref)) throw new HoldfastError('SNAPSHOT_NOT_FOUND', `${JSON.stringify(ref)} is not a snapshot id (hex digits) nor "latest"`, { ref });
  const ids = (await repo.listFiles('snapshot')).filter((id) => id.startsWith(ref));
  if (ids.length === 0) throw new HoldfastError('SNAPSHOT_NOT_FOUND', `no snapshot with id ${ref} in ${repo.backend.location}`, { ref });
  if (ids.length > 1) {
    throw new HoldfastError('SNAPSHOT_NOT_FOUND', `snapshot id prefix ${ref} is ambiguous: it matches ${ids.length} snapshots`, { ref, matches: ids, hint: 'Give more characters of the id.' });
  }
  return loadSnapshot(repo, ids[0]!);
}
