/**
 * Every option holdfast understands, declared once. The command-line flag (`--name`), the
 * environment variable (`HOLDFAST_NAME`, where `env` is set), the config-file key (`name`, where
 * `config` is set), validation and the help text are all derived from this table.
 */

export type OptionType = 'string' | 'path' | 'int' | 'bool' | 'list' | 'size' | 'duration' | 'enum';

export interface OptionSpec {
  readonly name: string;
  readonly type: OptionType;
  readonly help: string;
  /** Commands that accept the option ('*' for every command). */
  readonly commands: readonly string[] | '*';
  readonly default?: string | number | boolean | readonly string[];
  /** Read from HOLDFAST_<NAME> (upper snake case). */
  readonly env?: boolean;
  /** Accepted in the config file. */
  readonly config?: boolean;
  /** No command-line flag (secrets). */
  readonly noFlag?: boolean;
  readonly short?: string;
  readonly values?: readonly string[];
  readonly min?: number;
  readonly max?: number;
  /** Placeholder in help, e.g. DIR. */
  readonly arg?: string;
}

/** Commands that take local operation locks. */
const LOCAL_LOCKING = ['backup', 'restore', 'pg backup', 'pg restore', 'pg patroni-bootstrap', 'pg patroni-replica', 'pg archive-push', 'pg expire', 'pg pin', 'pg unpin', 'locks', 'unlock'];
/** Commands that take (or manage) repository locks. */
const REPO_LOCKING = ['backup', 'restore', 'check', 'prune', 'storage sync', 'forget', 'key remove', 'key passwd', 'pg backup', 'pg restore', 'pg patroni-bootstrap', 'pg patroni-replica', 'pg archive-push', 'pg expire', 'pg pin', 'pg unpin', 'locks', 'unlock'];

export const OPTIONS: readonly OptionSpec[] = [
  // --- everywhere
  { name: 'repo', type: 'string', short: 'r', env: true, config: true, commands: '*', arg: 'LOCATION', help: 'Repository location: a directory path, file:///path, s3://BUCKET/PREFIX (S3-compatible storage, see the --s3-* options), or sftp://USER@HOST[:PORT]/PATH (SFTP, see the --sftp-* options; /~/PATH is below the login directory).' },
  { name: 'repo-secondary', type: 'list', env: true, config: true, commands: '*', arg: 'LOCATION', help: 'A further storage of the same repository (repeatable, in order of preference). With --storage-mode failover (default) writes go to the first usable storage and reads look in all; with replicate writes go to all. A storage that fails is marked dead for every holdfast process on this host until a probe finds it usable again (--storage-status-ttl).' },
  { name: 'storage-mode', type: 'enum', values: ['failover', 'replicate'], default: 'failover', env: true, config: true, commands: '*', arg: 'MODE', help: 'How the storages of --repo and --repo-secondary are used: failover (write to the first usable one; `storage sync` copies back to the primary later) or replicate (write to every usable one; success needs --storage-quorum acknowledgements).' },
  { name: 'storage-quorum', type: 'int', min: 1, max: 16, env: true, config: true, commands: '*', arg: 'N', help: 'replicate: acknowledgements a write needs (default: every storage).' },
  { name: 'storage-status-ttl', type: 'duration', default: '60s', min: 0, max: 86_400_000, env: true, config: true, commands: '*', arg: 'DURATION', help: 'How long the shared alive/dead status of a storage is trusted before it is probed again (write, read back and delete a small object).' },
  { name: 'storage-probe-timeout', type: 'duration', default: '5s', min: 100, max: 600_000, env: true, config: true, commands: '*', arg: 'DURATION', help: 'A probe of a storage that takes longer counts as failed.' },
  { name: 'storage-timeout', type: 'duration', default: '60s', min: 100, max: 3_600_000, env: true, config: true, commands: '*', arg: 'DURATION', help: 'Remote storage (S3, SFTP): one request that takes longer counts as failed and is retried.' },
  { name: 'storage-deadline', type: 'duration', default: '120s', min: 100, max: 86_400_000, env: true, config: true, commands: '*', arg: 'DURATION', help: 'Remote storage: no retry starts later than this after an operation began; then it fails (or, with secondary storages, fails over). Retries wait 200 ms doubling to 10 s, with jitter.' },
  { name: 'storage-retries', type: 'int', default: 10, min: 1, max: 100, env: true, config: true, commands: '*', arg: 'N', help: 'Remote storage: attempts per operation at most (transient errors only: throttling, resets, timeouts; access denied or a missing bucket fail at once).' },
  { name: 'password-file', type: 'path', env: true, config: true, commands: '*', arg: 'FILE', help: 'Read the repository password from the first line of FILE.' },
  { name: 'password', type: 'string', env: true, noFlag: true, commands: '*', help: 'The repository password (environment only: HOLDFAST_PASSWORD; never a flag, so it does not show in ps).' },
  { name: 'key-cache', type: 'bool', default: true, env: true, config: true, commands: '*', help: 'With --password-file, cache the derived key in a private local directory (HOLDFAST_STATE_DIR, else ~/.cache/holdfast) so that short-lived calls such as archive-push skip the slow key derivation (init caches the key it creates). --no-key-cache turns it off.' },
  { name: 'config', type: 'path', env: true, commands: '*', arg: 'FILE', help: 'Config file to read (default /etc/holdfast/holdfast.conf when it exists).' },
  { name: 'json', type: 'bool', default: false, commands: '*', help: 'Print machine-readable JSON on stdout instead of text.' },
  { name: 'quiet', type: 'bool', short: 'q', default: false, commands: '*', help: 'Print only errors and results; no progress.' },
  { name: 'log-level', type: 'enum', values: ['error', 'warn', 'info', 'debug'], default: 'info', env: true, config: true, commands: '*', help: 'How much to log on stderr.' },
  { name: 'progress', type: 'enum', values: ['auto', 'always', 'never'], default: 'auto', env: true, config: true, commands: '*', help: 'Live progress on stderr: auto shows it when stderr is a terminal.' },

  // --- S3-compatible storage (s3://BUCKET/PREFIX locations; docs/design.md §19)
  { name: 's3-endpoint', type: 'string', env: true, config: true, commands: '*', arg: 'URL', help: 'Endpoint of an S3-compatible service, e.g. http://127.0.0.1:9000 (default: AWS S3 for the region). Credentials come from the standard AWS chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws files, SSO, web identity, container or instance roles.' },
  { name: 's3-region', type: 'string', env: true, config: true, commands: '*', arg: 'REGION', help: 'Region of the bucket (default: AWS_REGION, then the AWS config file, then us-east-1).' },
  { name: 's3-path-style', type: 'bool', default: false, env: true, config: true, commands: '*', help: 'Address buckets as ENDPOINT/BUCKET/KEY instead of BUCKET.ENDPOINT/KEY (most S3-compatible servers such as MinIO or Ceph need it).' },
  { name: 's3-storage-class', type: 'string', env: true, config: true, commands: '*', arg: 'CLASS', help: 'Storage class of the objects holdfast writes: STANDARD (default), STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR, … Not GLACIER or DEEP_ARCHIVE: holdfast reads its objects back (index, locks, check) and cannot wait for a restore.' },
  { name: 's3-sse', type: 'enum', values: ['AES256', 'aws:kms', 'aws:kms:dsse'], env: true, config: true, commands: '*', help: 'Server-side encryption of the objects written (besides holdfast\'s own encryption): AES256 (S3-managed keys) or aws:kms (with --s3-sse-kms-key-id, else the account\'s default KMS key).' },
  { name: 's3-sse-kms-key-id', type: 'string', env: true, config: true, commands: '*', arg: 'KEY', help: 'KMS key id or ARN for --s3-sse aws:kms.' },

  // --- SFTP storage (sftp://USER@HOST[:PORT]/PATH locations; docs/design.md §19)
  { name: 'sftp-identity', type: 'path', env: true, config: true, commands: '*', arg: 'FILE', help: 'Private key for logging in to sftp:// repositories (default: ~/.ssh/id_ed25519, id_ecdsa or id_rsa, whichever exists first). The keys of ssh-agent (SSH_AUTH_SOCK) are tried too; a key with a passphrase can only be used through the agent. Passwords are not supported.' },
  { name: 'sftp-known-hosts', type: 'path', env: true, config: true, commands: '*', arg: 'FILE', help: 'known_hosts file that must hold the SFTP server\'s host key (default: ~/.ssh/known_hosts; hashed entries and [host]:port lines work). An unknown or changed host key is refused with its SHA256 fingerprint; add a key with ssh-keyscan -p PORT HOST >> FILE after checking that fingerprint.' },

  // --- locks (docs/design.md §15)
  { name: 'lock-dir', type: 'path', env: true, config: true, commands: LOCAL_LOCKING, arg: 'DIR', help: 'Directory for local operation locks (one backup per cluster, one async archive-push worker, one restore per target). Must be local, never inside the repository or a data directory. Default: /run/holdfast when usable, else $XDG_RUNTIME_DIR/holdfast, else <tmpdir>/holdfast-locks-<uid>.' },
  { name: 'lock-wait', type: 'duration', default: '0s', min: 0, max: 7 * 86_400_000, env: true, config: true, commands: REPO_LOCKING, arg: 'DURATION', help: 'When a live lock conflicts, keep retrying this long (e.g. 10m) instead of failing at once with the holder named.' },
  { name: 'lock-ttl', type: 'duration', default: '5m', min: 1000, max: 86_400_000, env: true, config: true, commands: REPO_LOCKING, arg: 'DURATION', help: 'Repository locks carry a heartbeat: a lock not refreshed for this long is stale and may be removed by others. A holder that cannot refresh its lock for TTL minus one refresh interval stops before committing anything. Clocks of hosts sharing a repository must agree within the refresh interval.' },
  { name: 'lock-refresh', type: 'duration', default: '60s', min: 100, max: 3_600_000, env: true, config: true, commands: REPO_LOCKING, arg: 'DURATION', help: 'Heartbeat interval of repository locks (must be at most half of --lock-ttl).' },
  { name: 'remove-stale-locks', type: 'bool', default: true, env: true, config: true, commands: REPO_LOCKING, help: 'Remove stale locks (owner process provably gone, or heartbeat older than its TTL) automatically when taking a lock, logging each removal. --no-remove-stale-locks makes them block like live locks.' },
  { name: 'all', type: 'bool', default: false, commands: ['unlock'], help: 'Remove every lock, live ones included, after listing what is removed. Only when you know no holdfast process uses the repository.' },

  // --- repository creation and keys
  { name: 'kdf-cost', type: 'int', min: 10, max: 22, default: 16, config: true, commands: ['init', 'key add', 'key passwd'], arg: 'LOG2N', help: 'scrypt cost as log2(N) for the password-derived key (16 = 64 MiB, about 0.2 s). Higher resists password guessing longer.' },
  { name: 'chunk-min', type: 'size', default: '512KiB', min: 64 << 10, max: 64 << 20, commands: ['init'], arg: 'SIZE', help: 'Smallest content-defined chunk (fixed for the repository\'s life).' },
  { name: 'chunk-avg', type: 'size', default: '1MiB', min: 64 << 10, max: 64 << 20, commands: ['init'], arg: 'SIZE', help: 'Average content-defined chunk size (a power of two works best).' },
  { name: 'chunk-max', type: 'size', default: '8MiB', min: 64 << 10, max: 64 << 20, commands: ['init'], arg: 'SIZE', help: 'Largest content-defined chunk.' },
  { name: 'new-password-file', type: 'path', env: true, commands: ['key add', 'key passwd', 'init'], arg: 'FILE', help: 'key add/passwd: read the new password from FILE (or HOLDFAST_NEW_PASSWORD). init uses --password-file.' },
  { name: 'new-password', type: 'string', env: true, noFlag: true, commands: ['key add', 'key passwd'], help: 'The new password (environment only: HOLDFAST_NEW_PASSWORD).' },

  // --- writing data
  { name: 'compression', type: 'string', default: 'zstd:3', env: true, config: true, commands: ['backup', 'pg backup'], arg: 'ALGO[:LEVEL]', help: 'none, zstd or zstd:LEVEL (-7..22). Incompressible data is stored as is either way.' },
  { name: 'pack-size', type: 'size', default: '16MiB', min: 1 << 20, max: 512 << 20, env: true, config: true, commands: ['backup', 'pg backup'], arg: 'SIZE', help: 'Target size of pack files.' },
  { name: 'exclude', type: 'list', short: 'e', config: true, commands: ['backup'], arg: 'PATTERN', help: 'Skip paths matching PATTERN (repeatable). No "/": matches names at any depth (*.tmp). With "/": matches the path (/home/*/.cache).' },
  { name: 'tag', type: 'list', commands: ['backup', 'snapshots', 'forget'], arg: 'TAG', help: 'backup: attach TAG to the snapshot (repeatable). snapshots: list only snapshots with every TAG. forget: consider only snapshots with every TAG (the others are neither kept nor removed).' },
  { name: 'host', type: 'string', commands: ['backup', 'snapshots', 'forget'], arg: 'NAME', help: 'backup: record NAME as the host (default: this machine\'s hostname). snapshots: list only this host. forget: consider only snapshots of this host.' },
  { name: 'parent', type: 'string', commands: ['backup'], arg: 'SNAPSHOT', help: 'Compare against SNAPSHOT to skip unchanged files (default: latest snapshot of the same host and paths).' },
  { name: 'time', type: 'string', commands: ['backup'], arg: 'TIMESTAMP', help: 'Record TIMESTAMP in the snapshot instead of the time the backup started: "2026-11-21 10:15:00" (local time), 2026-11-21T10:15:00Z or with an offset (+01:00). For importing older copies and for trying retention policies; `latest`, the default parent and forget all go by this time.' },
  { name: 'jobs', type: 'int', short: 'j', min: 0, max: 64, env: true, config: true, commands: ['backup', 'restore', 'pg backup', 'pg archive-push', 'pg restore', 'pg patroni-bootstrap', 'pg patroni-replica'], arg: 'N', help: 'backup: worker threads that read, chunk, compress and encrypt files (default: the number of CPUs; 0 does it all in the main thread). pg archive-push --async: files the background worker stores at once (default: the number of CPUs, at most 4). restore, pg restore: worker threads that read, decrypt and write files (default: the number of CPUs, at most 4; each adds about 45 MB of memory; 0 writes one file at a time in the main thread).' },
  { name: 'read-all', type: 'bool', default: false, commands: ['backup'], help: 'Read every file even when the parent snapshot says it is unchanged.' },

  // --- retention and prune
  { name: 'dry-run', type: 'bool', default: false, commands: ['prune', 'forget', 'pg expire', 'storage sync', 'repair index', 'repair packs', 'repair snapshots'], help: 'Show what would be removed (and why), change nothing.' },
  { name: 'forget', type: 'bool', default: false, commands: ['repair snapshots'], help: 'Remove snapshots and backups whose data is missing instead of rewriting them without what is lost.' },
  { name: 'prune', type: 'bool', default: false, commands: ['forget', 'pg expire'], help: 'Run prune afterwards (with --max-unused and --max-repack-size), so the space of what was removed is freed (not with --dry-run).' },
  { name: 'max-unused', type: 'int', default: 5, min: 0, max: 100, env: true, config: true, commands: ['prune', 'forget', 'pg expire'], arg: 'PERCENT', help: 'Repack packs whose unused share is above PERCENT, most wasteful first, while more than PERCENT of the repository\'s pack bytes are unused. 0 repacks every pack with unused data; 100 only deletes packs that are wholly unused.' },
  { name: 'max-repack-size', type: 'size', min: 0, max: Number.MAX_SAFE_INTEGER, env: true, config: true, commands: ['prune', 'forget', 'pg expire'], arg: 'SIZE', help: 'Repack at most SIZE of packs in this run (default: no limit); a later prune continues. Repacking reads each pack once and writes its used part.' },

  // --- PostgreSQL
  { name: 'cluster', type: 'string', default: 'main', env: true, config: true, commands: ['pg archive-push', 'pg archive-get', 'pg backup', 'pg restore', 'pg info', 'pg check', 'pg expire', 'pg pin', 'pg unpin', 'pg patroni-bootstrap', 'pg patroni-replica', 'pg patroni-config'], arg: 'NAME', help: 'Which PostgreSQL cluster of the repository: bound to one system identifier and major version on first archive-push.' },

  { name: 'async', type: 'bool', default: false, env: true, config: true, commands: ['pg archive-push'], help: 'Archive through a background worker: the call makes sure one runs for this repository and cluster (it starts it, detached, when none does), and the worker archives every file PostgreSQL has marked ready, oldest first and --jobs at a time, recording each one that is durable in a local spool. The call exits 0 as soon as the spool records its file with the same content, or with the worker\'s error code and message for that file; it archives the file itself when the worker cannot be used (no .ready marker, lock directory unusable). The worker exits after a few idle seconds. Its log is worker.log in the spool, under the state directory (HOLDFAST_STATE_DIR, else ~/.cache/holdfast).' },
  { name: 'prefetch', type: 'int', default: 0, min: 0, max: 64, env: true, config: true, commands: ['pg archive-get'], arg: 'N', help: 'A call that has to read the repository also fetches up to N following WAL segments of the same timeline into a local queue (the state directory\'s spool, N segments at most on disk), and the next calls take theirs from there without opening the repository: recovery replays archived WAL at local-disk speed (the native front dist/holdfast-push answers those calls without starting Node). 0 (the default) fetches only the file asked for. 8 keeps 128 MiB of 16 MiB segments.' },
  { name: 'async-batch', type: 'int', default: 16, min: 1, max: 1024, env: true, config: true, commands: ['pg archive-push'], arg: 'N', help: 'With --async: the worker archives at most N files ahead of PostgreSQL (records waiting in the spool for their archive_command call).' },
  { name: 'async-timeout', type: 'duration', default: '60s', min: 1000, max: 86_400_000, env: true, config: true, commands: ['pg archive-push'], arg: 'DURATION', help: 'With --async: how long a call waits for the worker to record its file before failing (exit 30, naming the worker\'s log); PostgreSQL then calls it again.' },
  { name: 'async-worker', type: 'bool', default: false, commands: ['pg archive-push'], help: 'Internal: run as the background worker of --async for the pg_wal directory given as the argument (archive-push --async starts it; not for direct use).' },
  { name: 'pgdata', type: 'path', env: true, config: true, commands: ['pg backup'], arg: 'DIR', help: 'The data directory to back up (default: the server\'s data_directory; must be on this host).' },
  { name: 'pg-url', type: 'string', env: true, config: true, commands: ['pg backup', 'pg check'], arg: 'URL', help: 'Connection string (postgresql://user@host:port/db); default: the libpq environment PGHOST, PGPORT, PGUSER, PGDATABASE.' },
  { name: 'type', type: 'enum', values: ['full', 'incr'], default: 'incr', commands: ['pg backup'], help: 'incr reads only files changed since the previous backup of the cluster (a full backup when there is none).' },
  { name: 'archive-timeout', type: 'int', min: 1, max: 86400, default: 60, env: true, config: true, commands: ['pg backup', 'pg check'], arg: 'SECONDS', help: 'pg backup: how long to wait for the WAL that makes the backup consistent to reach the repository. pg check: how long to wait for the switched segment.' },
  { name: 'set', type: 'string', commands: ['pg restore', 'pg patroni-bootstrap', 'pg patroni-config'], arg: 'BACKUP', help: 'The backup to restore: an id, a unique prefix, or latest (default: the newest that ends before a time or LSN target, else the latest).' },
  { name: 'target-dir', type: 'path', commands: ['pg restore'], arg: 'DIR', help: 'The data directory to create (must be empty unless --force).' },
  { name: 'target-time', type: 'string', commands: ['pg restore', 'pg patroni-bootstrap', 'pg patroni-config'], arg: 'TIMESTAMP', help: 'Recover up to this time (recovery_target_time), e.g. "2026-11-21 10:15:00+00".' },
  { name: 'target-lsn', type: 'string', commands: ['pg restore', 'pg patroni-bootstrap', 'pg patroni-config'], arg: 'LSN', help: 'Recover up to this WAL location (recovery_target_lsn), e.g. 0/3000060.' },
  { name: 'target-xid', type: 'string', commands: ['pg restore', 'pg patroni-bootstrap', 'pg patroni-config'], arg: 'XID', help: 'Recover up to this transaction id (recovery_target_xid).' },
  { name: 'target-name', type: 'string', commands: ['pg restore', 'pg patroni-bootstrap', 'pg patroni-config'], arg: 'NAME', help: 'Recover up to this restore point, made with pg_create_restore_point (recovery_target_name).' },
  { name: 'target-immediate', type: 'bool', default: false, commands: ['pg restore', 'pg patroni-bootstrap', 'pg patroni-config'], help: 'Stop as soon as the backup is consistent (recovery_target = immediate).' },
  { name: 'target-action', type: 'enum', values: ['pause', 'promote', 'shutdown'], commands: ['pg restore', 'pg patroni-bootstrap', 'pg patroni-config'], help: 'What the server does at the target (recovery_target_action; PostgreSQL\'s default is pause).' },
  { name: 'target-timeline', type: 'string', commands: ['pg restore', 'pg patroni-bootstrap', 'pg patroni-config'], arg: 'TLI', help: 'Timeline to recover along: a number, current or latest (recovery_target_timeline).' },
  { name: 'tablespace-map', type: 'list', commands: ['pg restore', 'pg patroni-bootstrap'], arg: 'OID=DIR', help: 'Restore tablespace OID into DIR instead of its original directory (repeatable); `holdfast pg info` lists tablespaces.' },
  { name: 'sync', type: 'bool', default: true, env: true, config: true, commands: ['restore', 'pg restore'], help: 'Wait until every restored file and directory is on disk (fsync) before reporting success, as pg_basebackup and pgBackRest do. --no-sync is faster, but a power loss soon after may leave empty or missing files in a restore that reported success (PostgreSQL started on such a copy may run on damaged data).' },
  { name: 'direct-io', type: 'bool', default: true, env: true, config: true, commands: ['restore', 'pg restore'], help: 'When the restore is made durable by one sync of a local file system (ext4, XFS, Btrfs, F2FS), write the page-aligned parts of files of 1 MiB or more with O_DIRECT: the data must reach the disk anyway, and it skips the copy through the page cache, about half of the restore\'s CPU time on a VM. --no-direct-io writes everything through the page cache (as pgBackRest does), which leaves the restored files cached for a PostgreSQL started right after. Without --sync, and on other file systems, the page cache is always used.' },
  { name: 'delta', type: 'bool', default: false, commands: ['pg restore'], help: 'Restore over an existing data directory, rewriting only files whose content differs from the backup and removing files the backup does not have. A file is kept when it is a regular file of the backup\'s size whose every byte range has the SHA-256 the backup recorded for it; the comparisons run in the restore workers (--jobs), large files in parallel ranges.' },
  { name: 'standby', type: 'bool', default: false, commands: ['pg restore'], help: 'Start as a standby (standby.signal) that keeps fetching WAL from the repository.' },

  // --- Patroni (docs/patroni.md). Patroni appends --scope and --datadir (and for replica methods
  // --role, --connstring and every key of the method's section as --key=value).
  { name: 'scope', type: 'string', commands: ['pg patroni-bootstrap', 'pg patroni-replica'], arg: 'SCOPE', help: 'Patroni passes its cluster name (scope); holdfast logs it. The repository\'s cluster is --cluster.' },
  { name: 'datadir', type: 'path', commands: ['pg patroni-bootstrap', 'pg patroni-replica'], arg: 'DIR', help: 'Patroni passes the data directory to create.' },
  { name: 'role', type: 'string', commands: ['pg patroni-replica'], arg: 'ROLE', help: 'Patroni passes the role of the member being created (replica).' },
  { name: 'connstring', type: 'string', commands: ['pg patroni-replica'], arg: 'DSN', help: 'Patroni passes the leader\'s replication connection string; holdfast uses it only to check that the leader is the cluster the backups are of (IDENTIFY_SYSTEM), and goes on when it cannot connect.' },
  { name: 'keep-data', type: 'bool', default: false, commands: ['pg patroni-replica'], help: 'Patroni passes keep_data of the method\'s section: the data directory was left in place, so the restore is a delta restore (only files whose content differs are rewritten).' },
  { name: 'no-master', type: 'bool', default: false, commands: ['pg patroni-replica'], help: 'Patroni passes no_master of the method\'s section (the method works without a leader); holdfast ignores it.' },
  { name: 'no-leader', type: 'bool', default: false, commands: ['pg patroni-replica'], help: 'Patroni passes no_leader of the method\'s section (the method works without a leader); holdfast ignores it.' },
  { name: 'target-latest', type: 'bool', default: false, commands: ['pg patroni-bootstrap', 'pg patroni-config'], help: 'Recover to the end of the archived WAL (the default when no other target is given), then promote.' },
  { name: 'recovery-settings', type: 'enum', values: ['holdfast', 'patroni'], default: 'holdfast', commands: ['pg patroni-bootstrap', 'pg patroni-config'], arg: 'WHO', help: 'Who writes the recovery settings of a bootstrap: holdfast (restore_command and the target in postgresql.auto.conf and recovery.signal; the method needs keep_existing_recovery_conf: true) or patroni (holdfast restores only the files; the method\'s recovery_conf section holds restore_command and the target; a target given to holdfast then only chooses the backup).' },
  { name: 'holdfast-command', type: 'string', commands: ['pg patroni-config', 'pg restore'], arg: 'CMD', help: 'How the written commands run holdfast (pg restore: the restore_command; pg patroni-config: the Patroni members\' commands); default: this node and entry point, absolute. E.g. /usr/local/bin/holdfast, or /opt/holdfast/dist/holdfast-push for restore_command (the native front: with --prefetch, queued segments are handed over without starting Node).' },

  // --- pg expire (docs/design.md §17)
  { name: 'retain-full', type: 'int', min: 1, max: 1_000_000, env: true, config: true, commands: ['pg expire', 'pg backup'], arg: 'N', help: 'pg expire: keep the N newest full backups and the incremental backups taken after them. pg backup: the policy of --expire-after-backup.' },
  { name: 'recovery-window', type: 'duration', min: 0, max: 100 * 366 * 86_400_000, env: true, config: true, commands: ['pg expire', 'pg backup'], arg: 'DURATION', help: 'pg expire: keep what restoring to any point of the last DURATION (e.g. 14d) needs: the newest backup that ends before now minus DURATION, every backup after it, and the WAL from its start. pg backup: the policy of --expire-after-backup.' },
  { name: 'min-full', type: 'int', default: 1, min: 1, max: 1_000_000, env: true, config: true, commands: ['pg expire', 'pg backup'], arg: 'N', help: 'Never keep fewer than N full backups (when there are that many), whatever --retain-full and --recovery-window say.' },
  { name: 'expire-after-backup', type: 'bool', default: false, env: true, config: true, commands: ['pg backup'], help: 'After a successful backup, once its locks are released, run pg expire for the cluster with --retain-full / --recovery-window / --min-full (usually set in the config file) and print what it removed. A failed expire does not undo the backup; the command then exits with the expire\'s code.' },

  // --- reading data
  { name: 'target', type: 'path', short: 't', commands: ['restore'], arg: 'DIR', help: 'Directory to restore into (created if missing; must be empty unless --force).' },
  { name: 'include', type: 'list', short: 'i', commands: ['restore'], arg: 'PATH', help: 'Restore only PATH (a path inside the snapshot, as `ls` shows it) and what lies below it (repeatable).' },
  { name: 'force', type: 'bool', default: false, commands: ['restore', 'pg restore'], help: 'restore: restore into a non-empty target, replacing files and symlinks that stand in the way. pg restore: delete the target\'s contents first.' },
  { name: 'long', type: 'bool', short: 'l', default: false, commands: ['ls'], help: 'Show mode, owner, size and modification time.' },
  { name: 'read-data', type: 'bool', default: false, commands: ['check'], help: 'Also read every pack, and decrypt and verify every blob, and every archived WAL file (reads the whole repository).' },
  { name: 'read-data-subset', type: 'string', commands: ['check'], arg: 'N%|n/t', help: 'Like --read-data, for a fixed share of the packs and WAL files: N% (e.g. 5%), or part n of t (e.g. 3/7): running 1/t … t/t on a schedule reads everything once per cycle. Chosen by object id, so the same share every time.' },

  // --- forget (retention of file snapshots, docs/design.md §16)
  { name: 'keep-last', type: 'int', min: 0, max: 1_000_000, commands: ['forget'], arg: 'N', help: 'Keep the N newest snapshots of each group.' },
  { name: 'keep-hourly', type: 'int', min: 0, max: 1_000_000, commands: ['forget'], arg: 'N', help: 'Keep the newest snapshot of each of the N most recent hours that have snapshots (hours without one do not count).' },
  { name: 'keep-daily', type: 'int', min: 0, max: 1_000_000, commands: ['forget'], arg: 'N', help: 'Keep the newest snapshot of each of the N most recent days that have snapshots.' },
  { name: 'keep-weekly', type: 'int', min: 0, max: 1_000_000, commands: ['forget'], arg: 'N', help: 'Keep the newest snapshot of each of the N most recent ISO weeks (Monday to Sunday) that have snapshots.' },
  { name: 'keep-monthly', type: 'int', min: 0, max: 1_000_000, commands: ['forget'], arg: 'N', help: 'Keep the newest snapshot of each of the N most recent months that have snapshots.' },
  { name: 'keep-yearly', type: 'int', min: 0, max: 1_000_000, commands: ['forget'], arg: 'N', help: 'Keep the newest snapshot of each of the N most recent years that have snapshots.' },
  { name: 'keep-within', type: 'string', commands: ['forget'], arg: 'DURATION', help: 'Keep every snapshot made less than DURATION before the newest snapshot of its group (not before now: a group whose backups stopped keeps its last DURATION of history). DURATION is whole numbers with units, largest first: y years, m months (not minutes), w weeks, d days, h hours, e.g. 36h, 2d, 6w, 1y2m. Years, months, weeks and days are calendar steps (March 31 minus 1m is the last day of February); hours are exact.' },
  { name: 'keep-tag', type: 'list', commands: ['forget'], arg: 'TAG', help: 'Keep every snapshot that has TAG (repeatable: any of them).' },
  { name: 'group-by', type: 'list', default: ['host', 'paths'], commands: ['forget'], arg: 'FIELDS', help: 'Apply the policy to each group of snapshots that share these fields: a comma-separated subset of host, paths (the set of backed-up paths) and tags (the set of tags); "" makes all snapshots one group.' },
  { name: 'utc', type: 'bool', default: false, commands: ['forget'], help: 'Draw hours, days, weeks, months and years (and --keep-within\'s calendar units) in UTC instead of local time (the TZ environment variable); times are then shown in UTC too.' },
  { name: 'path', type: 'list', commands: ['forget'], arg: 'PATH', help: 'Consider only snapshots whose backed-up paths are exactly the PATHs given (repeatable; relative paths are made absolute), as `snapshots` shows them.' },
];

const BY_NAME = new Map(OPTIONS.map((o) => [o.name, o]));

export function optionSpec(name: string): OptionSpec | undefined {
  return BY_NAME.get(name);
}

export function envName(o: OptionSpec): string {
  return `HOLDFAST_${o.name.toUpperCase().replace(/-/g, '_')}`;
}

export function appliesTo(o: OptionSpec, command: string): boolean {
  return o.commands === '*' || o.commands.includes(command);
}
