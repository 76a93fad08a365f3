/**
 * The command table. Each entry is small and loads its implementation only when run, so
 * `holdfast --version` and `holdfast --help` stay cheap (the CLI starts once per WAL segment).
 */
import type { Invocation } from './invocation.js';

export interface CommandSpec {
  readonly name: string;
  readonly summary: string;
  readonly usage: string;
  readonly description: string;
  readonly examples?: readonly string[];
  readonly minArgs: number;
  readonly maxArgs: number;
  /** Streams large amounts of data: worth returning freed heap to the OS while it runs (util/malloc.ts). */
  readonly streamsData?: boolean;
  readonly load: () => Promise<{ run: (inv: Invocation) => Promise<number> }>;
}

export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'init',
    summary: 'Create a new encrypted repository',
    usage: 'holdfast init --repo LOCATION',
    description:
      'Creates an empty repository at LOCATION with a random master key, wrapped by a key derived from the password (HOLDFAST_PASSWORD, --password-file, or asked twice on a terminal). ' +
      'Chunking parameters are fixed at creation. Keep the password: without it the data cannot be read by anyone, including you.',
    examples: ['HOLDFAST_PASSWORD_FILE=/root/.holdfast-pw holdfast init --repo /srv/backup'],
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-init.js'),
  },
  {
    name: 'backup',
    streamsData: true,
    summary: 'Back up files and directories into a new snapshot',
    usage: 'holdfast backup [options] PATH...',
    description:
      'Stores PATHs (files, directories, symlinks, special files with their permissions, times and, as root, ownership) as a new snapshot. ' +
      'Files whose size, mtime, ctime and inode match the parent snapshot (the latest of the same host and paths) are not read again. ' +
      'Data is deduplicated by content across all snapshots and hosts. Unreadable files are reported and skipped; the snapshot is still saved and the exit code is 21.',
    examples: ['holdfast backup /etc /home --exclude "*.tmp" --exclude /home/*/.cache --tag nightly'],
    minArgs: 1,
    maxArgs: Infinity,
    load: () => import('./cmd-backup.js'),
  },
  {
    name: 'locks',
    summary: 'List repository and local locks, with holder and staleness',
    usage: 'holdfast locks [--json]',
    description:
      'Lists the repository\'s locks (shared: backup, restore, check, forget, archive-push, pg expire; maintenance: prune, storage sync; exclusive: key removal) and the local operation locks in the lock directory, ' +
      'each with its operation, holder (PID and host), age, last heartbeat and whether it is stale: its process provably gone (same host and boot, PID with that start time no longer running), ' +
      'or its heartbeat older than its TTL. Stale locks never block anything: they are removed automatically when a conflicting lock is taken.',
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-locks.js'),
  },
  {
    name: 'unlock',
    summary: 'Remove stale locks (--all: every repository lock)',
    usage: 'holdfast unlock [--all]',
    description:
      'Removes stale repository and local locks, logging each. Live locks are kept and listed. With --all every repository lock is removed, live ones included, after a warning naming each: ' +
      'use it only when you know no holdfast process uses the repository (a holder whose lock disappears stops before committing anything). Live local locks are never removed.',
    examples: ['holdfast locks', 'holdfast unlock', 'holdfast unlock --all'],
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-locks.js'),
  },
  {
    name: 'snapshots',
    summary: 'List snapshots',
    usage: 'holdfast snapshots [--host NAME] [--tag TAG] [--json]',
    description: 'Lists snapshots, oldest first, with id, time, host, tags and paths.',
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-snapshots.js'),
  },
  {
    name: 'forget',
    summary: 'Remove file snapshots that a retention policy does not keep',
    usage: 'holdfast forget [--keep-last|hourly|daily|weekly|monthly|yearly N] [--keep-within DURATION] [--keep-tag TAG] [--group-by FIELDS] [--host|--path|--tag …] [--dry-run] | holdfast forget SNAPSHOT-ID...',
    description:
      'Snapshots are grouped (by default by host and set of paths; --group-by) and each group is sorted newest first. In each group a snapshot is kept when any rule keeps it: ' +
      '--keep-last N the N newest; --keep-hourly/daily/weekly/monthly/yearly N the newest snapshot of each of the N most recent hours/days/ISO weeks/months/years that have one (buckets without snapshots do not count); ' +
      '--keep-within DURATION every snapshot made less than DURATION before the newest snapshot of the group (not before now); --keep-tag TAG every snapshot with TAG. Everything else in the group is removed. ' +
      'Buckets are drawn in local time (TZ), or in UTC with --utc. --host, --path and --tag narrow which snapshots are considered at all; the others are neither kept nor removed. ' +
      'With no --keep option forget refuses rather than removing everything; with snapshot ids instead of a policy it removes exactly those. ' +
      'PostgreSQL backups (pg backup) are never considered and never removed: `pg expire` owns them. ' +
      '--dry-run lists, per group, what is kept (with every reason) and what would be removed, and changes nothing; always try a new policy with it. ' +
      'forget removes only the snapshot manifests, under a shared repository lock, so it can run beside backups; the data they referenced stays until `holdfast prune` frees what no snapshot uses.',
    examples: [
      'holdfast forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --keep-yearly 3 --dry-run',
      'holdfast forget --keep-last 10 --keep-within 30d --keep-tag release --host db1',
      'holdfast forget --group-by "" --keep-hourly 48 --utc --json',
      'holdfast forget 1a2b3c4d 9f8e7d6c',
    ],
    minArgs: 0,
    maxArgs: Infinity,
    load: () => import('./cmd-forget.js'),
  },
  {
    name: 'ls',
    summary: 'List the files in a snapshot',
    usage: 'holdfast ls SNAPSHOT [PATH] [--long] [--json]',
    description: 'Lists every path in SNAPSHOT (an id, a unique id prefix, or "latest"), or only what lies below PATH. --json prints one JSON object per line.',
    minArgs: 1,
    maxArgs: 2,
    load: () => import('./cmd-ls.js'),
  },
  {
    name: 'restore',
    streamsData: true,
    summary: 'Restore a snapshot into a directory',
    usage: 'holdfast restore SNAPSHOT --target DIR [--include PATH]... [--force]',
    description:
      'Writes the snapshot (or the --include paths) into DIR, recreating paths as they were backed up (/home/ann becomes DIR/home/ann), with permissions, times and, as root, ownership. ' +
      'The snapshot is validated first: names that would escape DIR are refused before anything is written, and no write ever passes through a symlink. DIR must be empty unless --force.',
    examples: ['holdfast restore latest --target /tmp/restore --include /etc/nginx'],
    minArgs: 1,
    maxArgs: 1,
    load: () => import('./cmd-restore.js'),
  },
  {
    name: 'diff',
    summary: 'Show what changed between two snapshots',
    usage: 'holdfast diff SNAPSHOT1 SNAPSHOT2 [--json]',
    description: 'Prints one line per changed path: + added, - removed, M content changed, T type changed, U metadata changed only.',
    minArgs: 2,
    maxArgs: 2,
    load: () => import('./cmd-diff.js'),
  },
  {
    name: 'check',
    streamsData: true,
    summary: 'Verify the repository',
    usage: 'holdfast check [--read-data | --read-data-subset N%|n/t] [--json]',
    description:
      'Checks that every key file is intact; that every snapshot and backup has both its manifest and the manifest\'s copy (the record that it exists, so a lost manifest is noticed) and that every tree and blob reference resolves; that every indexed pack exists with the right size and a header matching the index, with no conflicting index entries; ' +
      'and for each PostgreSQL cluster that its record is readable, that every backup\'s own WAL range is archived, that from each backup\'s start to the newest archived segment of every timeline its recovery follows there is no gap, and that every timeline switch has its history file. ' +
      '--read-data also reads every pack and WAL file and verifies every blob\'s checksum; --read-data-subset reads a fixed share (see the option). Problems are listed with the object, what is wrong and the snapshots/backups they affect, then a summary; exit code 23 when any is found. ' +
      'Check never writes: an operation interrupted while adding or removing a snapshot is a warning; the next removal of its stale lock (an exclusive operation, `holdfast unlock`, `repair`) finishes it. `repair` mends what check finds.',
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-check.js'),
  },
  {
    name: 'prune',
    streamsData: true,
    summary: 'Delete data no snapshot or backup uses; repack partly used packs',
    usage: 'holdfast prune [--max-unused PERCENT] [--max-repack-size SIZE] [--dry-run] [--json]',
    description:
      'Walks every snapshot and PostgreSQL backup for the blobs they use, deletes packs none of them uses and repacks packs whose unused share is above --max-unused (most wasteful first, until at most that share of the repository is unused, within --max-repack-size). ' +
      'forget and pg expire only remove manifests; prune is what frees the space. ' +
      'Safe while backups, restores and archive-push run: a pack leaves the index first and is deleted only after every operation that started before has finished; when some are still running, their packs are deleted by the next prune (the summary says which operations it waited for). ' +
      'Only one prune runs at a time. Killed at any point, it leaves a consistent repository and the next prune completes the work. A damaged repository (unreadable snapshot, missing tree) is refused: run check first.',
    examples: ['holdfast prune --dry-run', 'holdfast prune --max-unused 10 --max-repack-size 2GiB'],
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-prune.js'),
  },
  {
    name: 'storage status',
    summary: 'Probe each storage of the repository and show its state',
    usage: 'holdfast storage status [--json]',
    description:
      'Probes every storage of the repository now (--repo and each --repo-secondary: write, read back and delete a small object, within --storage-probe-timeout) and shows whether it is alive, when it was checked, the probe latency, and what the status cache shared by this host\'s holdfast processes said before. ' +
      'The probe results replace the cached status. Needs no password. Exit code 19 (STORAGE_IO) when a storage is not usable.',
    examples: ['holdfast storage status --repo s3://backups/db1 --repo-secondary sftp://backup@nas/srv/db1'],
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-storage.js'),
  },
  {
    name: 'repair index',
    streamsData: true,
    summary: 'Rebuild the index from the packs themselves',
    usage: 'holdfast repair index [--dry-run] [--json]',
    description:
      'Reads every pack\'s own header and writes a new index listing exactly the packs in storage: lost or unreadable index files, packs left out by interrupted backups and packs that vanished are all put right. ' +
      'A pack whose header cannot be read is damaged: the blobs the old index places in it are read one by one, and those that still decrypt and match their id are salvaged into new packs before the pack is removed. ' +
      'Takes the exclusive lock (nothing else runs meanwhile); idempotent. Then run `holdfast repair snapshots` if check reported snapshots with missing data.',
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-repair.js'),
  },
  {
    name: 'repair packs',
    streamsData: true,
    summary: 'Read every pack whole; salvage the readable blobs of damaged ones',
    usage: 'holdfast repair packs [--dry-run] [--json]',
    description:
      'Like `repair index`, but every pack is read whole and must hash to its name, so a pack with a damaged blob (what `check --read-data` reports) is found: its blobs that still decrypt and match their id (or exist in another pack) are kept, written to new packs, and the damaged pack is removed. ' +
      'Lists the blobs lost for good; then run `holdfast repair snapshots`. Exclusive lock; idempotent.',
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-repair.js'),
  },
  {
    name: 'repair snapshots',
    streamsData: true,
    summary: 'Restore lost manifest copies; rewrite or remove snapshots whose data is missing',
    usage: 'holdfast repair snapshots [--forget] [--dry-run] [--json]',
    description:
      'A snapshot or backup whose manifest or manifest copy is missing or damaged gets it back from the other. ' +
      'A file snapshot that references data the index no longer has (after `repair index` / `repair packs` dropped what was lost) is rewritten without the files whose content is incomplete and the directories whose tree is gone, tagged `repaired`, and the damaged one removed; every lost path is listed. ' +
      'A PostgreSQL backup with missing data is reported, not rewritten (a data directory with files missing is not a backup to recover from); --forget removes it, and removes damaged file snapshots instead of rewriting them. ' +
      'Takes the exclusive lock, which also finishes what interrupted operations had begun committing. Idempotent; exit 23 when something could not be repaired.',
    examples: ['holdfast check --read-data; holdfast repair packs; holdfast repair snapshots --dry-run'],
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-repair.js'),
  },
  {
    name: 'storage sync',
    streamsData: true,
    summary: 'Copy what one storage has and another lacks',
    usage: 'holdfast storage sync [--dry-run] [--json]',
    description:
      'With --storage-mode failover, copies every object that landed on a secondary storage (while the primary was down) to the primary; with replicate, copies every object to each storage that misses it. ' +
      'Objects are copied create-only and never overwritten; a name whose size differs between storages is reported as a conflict and left alone. Lock objects are not copied. ' +
      'Every storage must be usable; it holds the maintenance lock, so no prune runs meanwhile.',
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-storage.js'),
  },
  {
    name: 'stats',
    summary: 'Show repository size and deduplication',
    usage: 'holdfast stats [--json]',
    description: 'Shows the number of snapshots, what restoring all of them would write, the unique data stored, the bytes in storage, and deduplication and compression ratios.',
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-stats.js'),
  },
  {
    name: 'key list',
    summary: 'List the keys (passwords) of the repository',
    usage: 'holdfast key list [--json]',
    description: 'Lists key ids with creation time, host and user; * marks the key the password opened.',
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-key.js'),
  },
  {
    name: 'key add',
    summary: 'Add a key (another password)',
    usage: 'holdfast key add [--new-password-file FILE]',
    description: 'Adds a key that opens the repository with a new password (HOLDFAST_NEW_PASSWORD, --new-password-file, or asked on a terminal).',
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-key.js'),
  },
  {
    name: 'key remove',
    summary: 'Remove a key',
    usage: 'holdfast key remove KEY-ID',
    description: 'Removes the key KEY-ID (a unique prefix is enough). The key used to open the repository cannot be removed.',
    minArgs: 1,
    maxArgs: 1,
    load: () => import('./cmd-key.js'),
  },
  {
    name: 'key passwd',
    summary: 'Change the password',
    usage: 'holdfast key passwd [--new-password-file FILE]',
    description: 'Adds a key for the new password, then removes the key the old password opened.',
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-key.js'),
  },
  {
    name: 'pg archive-push',
    summary: 'Archive a WAL file (PostgreSQL archive_command)',
    usage: 'holdfast pg archive-push [--cluster NAME] WAL-PATH',
    description:
      'Stores one WAL segment, .partial segment, timeline history or backup history file, compressed and encrypted, and exits 0 only once it is durable in the repository. ' +
      'Segments are checked first: the name must match the page header, and the system identifier, major version and segment size must match the cluster (bound on first push). ' +
      'A file already archived with identical content succeeds with a warning; different content is an error (exit 29) and the stored copy is kept.',
    examples: ["archive_command = 'holdfast pg archive-push --cluster main %p'"],
    minArgs: 1,
    maxArgs: 1,
    load: () => import('./cmd-pg-archive.js'),
  },
  {
    name: 'pg archive-get',
    summary: 'Fetch a WAL file (PostgreSQL restore_command)',
    usage: 'holdfast pg archive-get [--cluster NAME] [--prefetch N] WAL-FILE DEST-PATH',
    description:
      'Writes the archived file WAL-FILE (%f) to DEST-PATH (%p) atomically and exits 0. Exits 1 without a message when the archive has no such file, which ends archive recovery normally; any other failure exits with another code and a message. ' +
      'With --prefetch N, a call that reads the repository also queues the N following segments locally, and the next calls take theirs from the queue (through dist/holdfast-push without starting Node).',
    examples: ["restore_command = 'holdfast pg archive-get --cluster main %f %p'", "restore_command = '/opt/holdfast/dist/holdfast-push pg archive-get --cluster main --prefetch 8 %f %p'"],
    minArgs: 2,
    maxArgs: 2,
    load: () => import('./cmd-pg-archive.js'),
  },
  {
    name: 'pg backup',
    streamsData: true,
    summary: 'Back up a running PostgreSQL cluster',
    usage: 'holdfast pg backup [--cluster NAME] [--type full|incr] [--pgdata DIR] [--jobs N]',
    description:
      'Takes an online backup through pg_backup_start/pg_backup_stop while the database keeps taking writes, copying the data directory with the same exclusions as pg_basebackup. ' +
      'incr (the default) reads only files changed since the previous backup of the cluster. The backup is recorded only once the WAL that makes it consistent is in the repository (bounded by --archive-timeout), so archive_command must run `holdfast pg archive-push` into the same repository and cluster.',
    examples: ['PGHOST=/var/run/postgresql holdfast pg backup --cluster main --type full'],
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-pg-backup.js'),
  },
  {
    name: 'pg restore',
    streamsData: true,
    summary: 'Restore a PostgreSQL backup, to a point in time',
    usage: 'holdfast pg restore [--cluster NAME] [--set ID|latest] --target-dir DIR [--target-time T | --target-lsn L | --target-xid X | --target-name N | --target-immediate]',
    description:
      'Writes a backup into DIR with backup_label, recovery settings in postgresql.auto.conf between holdfast markers (restore_command calling `holdfast pg archive-get` for this repository and cluster, and the target; earlier conflicting settings are commented out) and recovery.signal (or standby.signal). ' +
      'Without --set it picks the newest backup that ends before a time or LSN target. Start PostgreSQL on DIR to recover. The password must come from a file (--password-file) so that restore_command can read it.',
    examples: ['holdfast pg restore --target-dir /var/lib/postgresql/15/restored --target-time "2026-11-21 10:15:00+00" --target-action promote'],
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-pg-backup.js'),
  },
  {
    name: 'pg patroni-bootstrap',
    streamsData: true,
    summary: 'Patroni custom bootstrap: a new cluster from a backup, to a point in time',
    usage: 'holdfast pg patroni-bootstrap [--cluster NAME] [--set ID] [--target-time T | --target-lsn L | --target-xid X | --target-name N | --target-immediate | --target-latest] [--recovery-settings holdfast|patroni] --datadir DIR',
    description:
      'The command of a Patroni custom bootstrap method (bootstrap.method in patroni.yml); Patroni appends --scope and --datadir. Restores the backup chosen like pg restore (--set, else the newest ending before a time or LSN target, else the latest) into the new data directory, so that its first start recovers to the target (none or --target-latest: the end of the archived WAL) and promotes; Patroni then finishes the bootstrap. ' +
      'With --recovery-settings holdfast (default) holdfast writes restore_command and the target into postgresql.auto.conf and recovery.signal, and the method must say keep_existing_recovery_conf: true (or Patroni deletes them); with --recovery-settings patroni holdfast restores only the files, and the method\'s recovery_conf section must hold restore_command and the target. ' +
      'Keys of the method section that Patroni passes as --key=value must be holdfast options (key_name or key-name); anything else is an error. `holdfast pg patroni-config` prints the YAML. Needs --password-file (restore_command reads it).',
    examples: ['holdfast pg patroni-config --target-time "2026-11-21 10:15:00+00"   # prints the bootstrap method that runs it'],
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-pg-patroni.js'),
  },
  {
    name: 'pg patroni-replica',
    streamsData: true,
    summary: 'Patroni replica method: a new member from the newest backup',
    usage: 'holdfast pg patroni-replica [--cluster NAME] --datadir DIR [--scope S] [--role R] [--connstring DSN] [--keep-data]',
    description:
      'The command of a Patroni create_replica_methods entry; Patroni appends --scope, --datadir, --role, --connstring and the keys of the method section. Restores the newest backup of the cluster into DIR as a standby (standby.signal, restore_command fetching WAL from the repository); Patroni then adds primary_conninfo, so the member catches up from the archive and streams from the leader. ' +
      'With keep_data (--keep-data) over a kept data directory only files whose content differs are rewritten. Exits non-zero at once, so that Patroni tries its next method (basebackup), when the repository has no backup of the cluster or the leader (asked with IDENTIFY_SYSTEM over --connstring) is another PostgreSQL system than the backups. Needs --password-file.',
    examples: ['holdfast pg patroni-config   # prints create_replica_methods with holdfast first and basebackup as fallback'],
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-pg-patroni.js'),
  },
  {
    name: 'pg patroni-config',
    summary: 'Print the patroni.yml settings that run archiving, bootstrap and replicas through holdfast',
    usage: 'holdfast pg patroni-config [--cluster NAME] [--recovery-settings holdfast|patroni] [--target-time T | …] [--holdfast-command CMD] [--json]',
    description:
      'Prints YAML to merge into every member\'s patroni.yml: bootstrap.dcs.postgresql with wal_level, archive_mode and archive_command (`holdfast pg archive-push`) in parameters and restore_command (`holdfast pg archive-get`) in recovery_conf, kept in the DCS so every member and every later restore has them; ' +
      'bootstrap.method holdfast running `pg patroni-bootstrap` with the given target (keep_existing_recovery_conf: true, or with --recovery-settings patroni a recovery_conf section holding restore_command and the target); and postgresql.create_replica_methods with holdfast (`pg patroni-replica`, keep_data, no_leader) first and basebackup as the fallback. ' +
      'Commands name this repository, --password-file, --config and storage options with absolute paths, and run this node and entry point unless --holdfast-command says otherwise; values are single-quoted. --json prints the same as JSON.',
    examples: ['holdfast pg patroni-config --cluster main --password-file /etc/holdfast/password >> /etc/patroni/holdfast.yml'],
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-pg-patroni.js'),
  },
  {
    name: 'pg info',
    summary: 'Show the backups and the archived WAL of a PostgreSQL cluster',
    usage: 'holdfast pg info [--cluster NAME] [--json]',
    description:
      'Shows the cluster record (system identifier, PostgreSQL version, WAL segment size), every backup of the cluster, oldest first (type, parent, start/stop time and LSN, WAL range and whether all of it is archived, timeline, size, stored size, duration, flags), ' +
      'and the archived WAL per timeline: first and last segment, count, and gaps (missing segment ranges between them), .partial and backup history files, and the timeline history files. Reads only.',
    examples: ['holdfast pg info --cluster main', 'holdfast pg info --json | jq ".wal.timelines[].gaps"'],
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-pg-info.js'),
  },
  {
    name: 'pg check',
    summary: 'Check that a PostgreSQL server archives into this repository, end to end',
    usage: 'holdfast pg check [--cluster NAME] [--pg-url URL] [--archive-timeout SECONDS] [--json]',
    description:
      'Connects like pg backup and reports each item as ok, warn, FAIL or skip with a reason: wal_level is replica or logical; archive_mode is on; archive_command calls `holdfast pg archive-push` for this --cluster; ' +
      'the server\'s system identifier matches the repository\'s cluster record (or the name is not bound yet). Then it writes a tiny WAL record, forces pg_switch_wal() and waits (bounded by --archive-timeout) until that segment is in the repository. ' +
      'Exits 0 only when no item failed; otherwise 33 (PG_CHECK_FAILED).',
    examples: ['PGHOST=/var/run/postgresql holdfast pg check --cluster main'],
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-pg-check.js'),
  },
  {
    name: 'pg expire',
    summary: 'Remove PostgreSQL backups and WAL a retention policy no longer keeps',
    usage: 'holdfast pg expire [--cluster NAME] [--retain-full N] [--recovery-window DURATION] [--min-full N] [--dry-run] [--json]',
    description:
      'A backup is kept when any rule keeps it: the newest backup always; --retain-full N the N newest full backups and the incremental ones taken after them; ' +
      '--recovery-window DURATION whatever restoring to any point of the last DURATION needs (the newest backup that ends before now minus DURATION, and every later one); --min-full N (default 1) at least N full backups; and every backup pinned with `pg pin`. ' +
      'WAL is kept from the start of the oldest kept backup on its timeline and on every later timeline it can reach (timeline history files tell), on timelines above every kept backup\'s and on those whose history is unknown; timeline history files always. ' +
      'With neither --retain-full nor --recovery-window (flags, environment or config file) it refuses rather than removing anything. --dry-run prints what would be removed, the WAL as ranges per timeline, and changes nothing. ' +
      'Backup manifests are removed first, then the WAL, under a shared repository lock (it runs beside backups and archiving); the backups\' data stays until `holdfast prune`. A restore to a point before the oldest backup left is refused.',
    examples: ['holdfast pg expire --cluster main --recovery-window 14d --dry-run', 'holdfast pg expire --retain-full 2 --recovery-window 7d', 'holdfast pg backup --expire-after-backup --retain-full 2   # or expire-after-backup = true and retain-full = 2 in the config file'],
    minArgs: 0,
    maxArgs: 0,
    load: () => import('./cmd-pg-expire.js'),
  },
  {
    name: 'pg pin',
    summary: 'Keep a PostgreSQL backup whatever the retention policy says',
    usage: 'holdfast pg pin [--cluster NAME] BACKUP',
    description: 'Pins BACKUP (an id, a unique id prefix, or latest): `pg expire` never removes it, nor the WAL from its start. Every backup restores alone, so a pin keeps just that backup. `pg info` shows the flag pinned.',
    examples: ['holdfast pg pin 1a2b3c4d --cluster main'],
    minArgs: 1,
    maxArgs: 1,
    load: () => import('./cmd-pg-expire.js'),
  },
  {
    name: 'pg unpin',
    summary: 'Let the retention policy decide about a pinned backup again',
    usage: 'holdfast pg unpin [--cluster NAME] BACKUP',
    description: 'Removes the pin of BACKUP (an id, a unique id prefix, or latest); the next `pg expire` may remove it. Also removes a pin whose backup is gone.',
    minArgs: 1,
    maxArgs: 1,
    load: () => import('./cmd-pg-expire.js'),
  },
];

export function findCommand(argv: readonly string[]): { spec: CommandSpec; rest: string[] } | undefined {
  const two = `${argv[0]} ${argv[1]}`;
  const spec = COMMANDS.find((c) => c.name === two) ?? COMMANDS.find((c) => c.name === argv[0]);
  if (!spec) return undefined;
  return { spec, rest: argv.slice(spec.name.split(' ').length) };
}
