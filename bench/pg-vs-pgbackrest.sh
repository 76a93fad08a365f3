#!/usr/bin/env bash
# holdfast vs pgBackRest: PostgreSQL backup, restore and WAL archiving, side by side in one run
# (BRIEF §3 targets; issue 3 "Benchmark").
#
#   bench/pg-vs-pgbackrest.sh                         pgbench scale 100 (about 1.5 GB), N=2 processes
#   BENCH_SCALE=10 bench/pg-vs-pgbackrest.sh          a smaller database (quick check)
#
# Environment:
#   BENCH_SCALE=100            pgbench scale of the database (100 = about 1.5 GB)
#   BENCH_JOBS=2               process count: holdfast --jobs N, pgBackRest --process-max=N
#   BENCH_PGBENCH_SECONDS=30   pgbench run between the full and the incremental backup
#   BENCH_LATENCY_SEGMENTS=20  WAL segments for the per-call archive-push latency
#   BENCH_BURST_SEGMENTS=200   WAL segments of the burst
#   BENCH_BURST_REPEAT=3       runs of the burst per tool (fresh repositories each, the tools taking
#                              turns); the report shows the median total and every run: one run
#                              moved from 0.72 to 1.14 of pgBackRest's time between two days
#   BENCH_DIR=/tmp/holdfast-pgbench   work directory (base copy, work area, logs)
#   BENCH_KEEP_BASE=0          1 = keep the freshly built pgbench cluster (BENCH_DIR/base-sSCALE) and
#                              reuse it in later runs (copied, never modified). Building it takes
#                              about 10-15 s at scale 100 here (initdb, pgbench -i with fsync off),
#                              so keeping it saves little; it costs 1.6 GB of disk.
#   BENCH_CMD_TIMEOUT=1800     upper bound (s) for any single measured command
#   BENCH_STRICT=0             1 = exit 3 when a target is missed
#   BENCH_REPEAT=5             runs of each of steps 1-3 per tool, alternating the tools; the report
#                              shows the median (and every run): on a shared VM, CPU steal time
#                              moved single runs by up to ±30%
#   BENCH_PARTS=all            which steps to measure, space- or comma-separated: backup (1, 2),
#                              restore (3), delta (4), latency (5), burst (6), wal (= latency
#                              burst), or all. restore and delta need backup (added when missing).
#                              pgbench runs either way (its WAL is the segment pool of 5 and 6);
#                              e.g. BENCH_PARTS=wal BENCH_SCALE=10 for the WAL archiving numbers.
#   BENCH_ROOT=                holdfast checkout to measure (default: the one holding this script)
#
# Must run as root: it installs what is missing (postgresql-15 via scripts/pg-deps.sh, pgbackrest
# and GNU time via apt-get) and runs PostgreSQL, holdfast and pgBackRest as the postgres user
# (runuser) on a loopback port with a private socket directory, with NODE_EXTRA_CA_CERTS unset.
#
# Disk: check `df -h /tmp` first. At scale 100 it needs about 20 GB free in BENCH_DIR at the peak
# (the estimate is printed): the cluster (1.6 GB + up to ~1.5 GB of pg_wal; plus 1.6 GB for the base
# copy with BENCH_KEEP_BASE=1), a pool of 200 WAL segments (3.2 GB), four full-backup repositories
# (~0.1-0.2 GB each, times BENCH_REPEAT until step 1 ends; the incremental's starting copies add
# two more), six WAL repositories (~0.3 GB each for the burst) and two restored data
# directories (1.6 GB each). Everything but the logs (and the kept base copy) is removed at the end;
# the script refuses to start when the estimate does not fit.
#
# WAL for steps 5 and 6: while pgbench runs (step 2, topped up with more pgbench afterwards),
# archive_command is a plain `cp` into a pool directory, so neither tool sees those segments until
# they are replayed into fresh repositories one by one.
#
# What it measures, in one run, against the same cluster (initdb -k, so both verify page checksums):
#   1. full backup, fast compression: holdfast --compression zstd:1 vs pgBackRest --compress-type=lz4
#      (holdfast has no lz4), and zstd: holdfast zstd:3 vs pgBackRest --compress-type=zst
#      --compress-level=3; each into its own fresh repository (holdfast deduplicates, so a second
#      full into the same repository would not be a full); both start with an immediate checkpoint
#      (pgBackRest start-fast=y) after an explicit CHECKPOINT and a warm-up read of the data directory.
#   2. incremental backup after BENCH_PGBENCH_SECONDS of pgbench (on the zstd:3 repositories; every
#      run starts from a copy of them as the full backups left them).
#   3. full restore of the latest (incremental) backup into a new directory (holdfast pg restore
#      --target-immediate, pgBackRest restore --type=immediate); only the restore command is timed.
#      Afterwards (untimed) both restored clusters are started to check they recover and hold
#      every pgbench_accounts row.
#   4. delta restore: pgBackRest restore --delta of the latest backup over the stopped source data
#      directory (which pgbench and the WAL generation have moved on since). holdfast: "n/a (not
#      implemented)" unless `holdfast help pg restore` lists --delta, then it is measured on a copy.
#   5. archive-push latency: 20 real segments (from a pgbench run, archived aside with cp), 20
#      sequential calls each as postgres, into fresh repositories: holdfast (repository created at the
#      default --kdf-cost; the password comes from a file, so the derived key is cached after the
#      first call) and again at --kdf-cost 10, vs pgBackRest sync archive-push (compress-type zst
#      level 3, holdfast's archive-push compression). holdfast is called as archive_command should
#      call it: through the native front dist/holdfast-push when the build made it (the first call
#      runs the Node CLI, which leaves the ticket; the front stores the others itself, docs/design.md
#      §12), else the Node CLI. The three take turns segment by segment, so
#      load from other work on the machine falls on all of them alike; besides the wall-clock time
#      per call, the CPU time (user + system) per call is reported, which such load hardly moves.
#   6. burst of 200 segments, BENCH_BURST_REPEAT times per tool (medians compared): holdfast
#      --async (and sync at --kdf-cost 10), once per segment,
#      sequentially as PostgreSQL's archiver would (both through the native front
#      dist/holdfast-push when the build made it, as archive_command should call it), vs pgBackRest archive-async=y (spool path,
#      process-max N, WAL inside pg1-path with .ready files) called the same way.
#   7. peak RSS (GNU time %M) of every holdfast command, and the maximum.
# pgBackRest runs with repo1-cipher-type=none; holdfast always encrypts (AES-256-GCM).
# MB = 10^6 bytes throughout.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=${BENCH_ROOT:-$(dirname "$HERE")}
SCALE=${BENCH_SCALE:-100}
JOBS=${BENCH_JOBS:-2}
PGBENCH_SECONDS=${BENCH_PGBENCH_SECONDS:-30}
LAT_N=${BENCH_LATENCY_SEGMENTS:-20}
BURST_N=${BENCH_BURST_SEGMENTS:-200}
BENCH_DIR=${BENCH_DIR:-/tmp/holdfast-pgbench}
KEEP_BASE=${BENCH_KEEP_BASE:-0}
CMD_TIMEOUT=${BENCH_CMD_TIMEOUT:-1800}
BENCH_STRICT=${BENCH_STRICT:-0}
REPEAT=${BENCH_REPEAT:-5}
BURST_REPEAT=${BENCH_BURST_REPEAT:-3}
PGBIN=/usr/lib/postgresql/15/bin
SEG=16777216
PARTS=" $(echo "${BENCH_PARTS:-all}" | tr ',' ' ') "
[[ $PARTS == *" wal "* ]] && PARTS="$PARTS latency burst "
[[ $PARTS == *" restore "* || $PARTS == *" delta "* ]] && PARTS="$PARTS backup "
want() { [[ $PARTS == *" all "* || $PARTS == *" $1 "* ]]; }

# ---------------------------------------------------------------- environment
unset NODE_EXTRA_CA_CERTS
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(HOLDFAST_|PGBACKREST_|PG[A-Z]+$)' || true)
export LC_ALL=C

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root: PostgreSQL, holdfast and pgBackRest run as the postgres user through runuser"
[[ $SCALE =~ ^[0-9]+$ && $SCALE -ge 1 ]] || die "BENCH_SCALE must be a positive integer"
[[ $JOBS =~ ^[0-9]+$ && $JOBS -ge 1 ]] || die "BENCH_JOBS must be a positive integer"
[[ $REPEAT =~ ^[0-9]+$ && $REPEAT -ge 1 && $REPEAT -le 20 ]] || die "BENCH_REPEAT must be an integer in 1..20"
[[ $BURST_REPEAT =~ ^[0-9]+$ && $BURST_REPEAT -ge 1 && $BURST_REPEAT -le 20 ]] || die "BENCH_BURST_REPEAT must be an integer in 1..20"
POOL_N=$((LAT_N > BURST_N ? LAT_N : BURST_N))

mkdir -p "$BENCH_DIR"
chmod 755 "$BENCH_DIR"
LOGS="$BENCH_DIR/logs/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$LOGS"
W="$BENCH_DIR/work"
BASE="$BENCH_DIR/base-s$SCALE"
HFBUILD="$BENCH_DIR/holdfast-build"
HF_BIN="$HFBUILD/bin/holdfast.cjs"
NODE=$(command -v node || true)
[[ -n $NODE ]] || die "node is not installed"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- dependencies
install_deps() {
  log "PostgreSQL 15 (scripts/pg-deps.sh)"
  "$ROOT/scripts/pg-deps.sh" >"$LOGS/pg-deps.log" 2>&1 || { cat "$LOGS/pg-deps.log" >&2; die "scripts/pg-deps.sh failed"; }
  local pkgs=()
  command -v pgbackrest >/dev/null 2>&1 || pkgs+=(pgbackrest)
  [[ -x /usr/bin/time ]] || pkgs+=(time)
  ((${#pkgs[@]} == 0)) && return 0
  log "installing ${pkgs[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  local opts=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  if ! apt-get install "${opts[@]}" "${pkgs[@]}" >"$LOGS/apt.log" 2>&1; then
    apt-get update -q >>"$LOGS/apt.log" 2>&1 || true
    apt-get install "${opts[@]}" "${pkgs[@]}" >>"$LOGS/apt.log" 2>&1 || { tail -20 "$LOGS/apt.log" >&2; die "apt-get install ${pkgs[*]} failed"; }
  fi
}

BUILD_NOTE=""
build_holdfast() {
  if [[ ! -d $ROOT/node_modules ]]; then
    log "npm ci"
    (cd "$ROOT" && npm ci --no-audit --no-fund >"$LOGS/npm-ci.log" 2>&1) || { tail -20 "$LOGS/npm-ci.log" >&2; die "npm ci failed"; }
  fi
  if [[ ! -f $ROOT/dist/holdfast.mjs ]] || [[ -n $(find "$ROOT/src" "$ROOT/scripts/build.mjs" -newer "$ROOT/dist/holdfast.mjs" -print -quit 2>/dev/null) ]]; then
    log "npm run build"
    if ! (cd "$ROOT" && npm run build >"$LOGS/build.log" 2>&1); then
      tail -20 "$LOGS/build.log" >&2
      log "WARNING: npm run build failed (see above); bundling with scripts/build.mjs alone (no type check)"
      (cd "$ROOT" && node scripts/build.mjs >>"$LOGS/build.log" 2>&1) || { tail -20 "$LOGS/build.log" >&2; die "scripts/build.mjs failed"; }
      BUILD_NOTE=" [built without type check: npm run build failed]"
    fi
  fi
  # A private copy of the build: a rebuild in the checkout during the run cannot swap the binary.
  rm -rf "$HFBUILD"
  mkdir -p "$HFBUILD"
  cp -a "$ROOT/bin" "$ROOT/dist" "$ROOT/package.json" "$HFBUILD/"
  ln -s "$ROOT/node_modules" "$HFBUILD/node_modules"
  chmod -R a+rX "$HFBUILD"
  aspg "$NODE" "$HF_BIN" --version >/dev/null 2>&1 || die "the copied build does not start as postgres: $NODE $HF_BIN --version"
}

# ---------------------------------------------------------------- helpers
aspg() { runuser -u postgres -- env -u NODE_EXTRA_CA_CERTS "$@"; }
free_port() { "$NODE" -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
mb() { awk -v b="$1" 'BEGIN { if (b == "") print "n/a"; else printf "%.1f", b / 1e6 }'; }
# ratio A B: A/B with 2 decimals, n/a when either is missing
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
mbps() { awk -v b="$1" -v t="$2" 'BEGIN { if (b == "" || t == "" || t + 0 == 0) print ""; else printf "%.1f", b / 1e6 / t }'; }
dusize() { du -sb "$1" 2>/dev/null | awk '{ print $1 }'; }
datasize() { du -sb --exclude=pg_wal "$1" 2>/dev/null | awk '{ print $1 }'; }
warmup() { find "$1" -type f -print0 | xargs -0 -r -n 1000 -P 2 cat >/dev/null 2>&1 || true; }

# sql PORT SOCKDIR DB QUERY
sqlat() { aspg "$PGBIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -h "$2" -p "$1" -d "$3" -c "$4"; }
sql() { sqlat "$PORT" "$SOCK" bench "$1"; }

pg_start() { # DATADIR LOGFILE
  aspg "$PGBIN/pg_ctl" -D "$1" -l "$2" -w -t 120 start >>"$LOGS/pg_ctl.log" 2>&1 || { tail -30 "$2" >&2; die "pg_ctl start -D $1 failed (log $2)"; }
}
pg_stop() { # DATADIR
  [[ -f $1/postmaster.pid ]] || return 0
  aspg "$PGBIN/pg_ctl" -D "$1" -w -t 120 stop -m fast >>"$LOGS/pg_ctl.log" 2>&1 ||
    aspg "$PGBIN/pg_ctl" -D "$1" -w -t 30 stop -m immediate >>"$LOGS/pg_ctl.log" 2>&1 || true
}

# holdfast as postgres, with the repository given as the first argument
hf() { local repo=$1; shift; aspg HOLDFAST_CONFIG=/dev/null HOLDFAST_PASSWORD_FILE="$PWFILE" HOLDFAST_REPO="$repo" PGHOST="$SOCK" PGPORT="$PORT" PGUSER=postgres PGDATABASE=postgres "$NODE" "$HF_BIN" "$@"; }
# pgBackRest as postgres, with the repository given as the first argument
pgbr() { local repo=$1; shift; aspg pgbackrest --config="$PGBR_CONF" --stanza=bench --repo1-path="$repo" "$@"; }

declare -A TIME RSS STATUS NOTE CPU RUNS
FAILED=0
fail_report() { # KEY RC CMD...
  local key=$1 rc=$2; shift 2
  STATUS[$key]="FAILED (exit $rc)"
  FAILED=1
  {
    echo "!! $key FAILED with exit code $rc"
    echo "!! command: $*"
    echo "!! output (last 30 lines of $LOGS/$key.err / .out):"
    tail -30 "$LOGS/$key.err" 2>/dev/null | sed 's/^/!!   /'
    tail -10 "$LOGS/$key.out" 2>/dev/null | sed 's/^/!!   /'
  } | tee -a "$LOGS/failures.txt" >&2
}

# measure KEY CMD...: run CMD as postgres (NODE_EXTRA_CA_CERTS unset) under GNU time, bounded by
# BENCH_CMD_TIMEOUT; record wall time (s) and peak RSS (bytes). Output in LOGS/KEY.out / .err.
measure() {
  local key=$1 rc=0; shift
  echo "$*" >"$LOGS/$key.cmd"
  log "$key: $*"
  aspg timeout -k 10 "$CMD_TIMEOUT" /usr/bin/time -f '%e %M %U %S' -o "$LOGS/$key.time" "$@" >"$LOGS/$key.out" 2>"$LOGS/$key.err" || rc=$?
  if ((rc != 0)); then fail_report "$key" "$rc" "$@"; return 0; fi
  local sec="" kb=0 user=0 sys=0
  read -r sec kb user sys < <(tail -1 "$LOGS/$key.time" 2>/dev/null) || true
  [[ $kb =~ ^[0-9]+$ ]] || kb=0
  STATUS[$key]=ok
  TIME[$key]=$sec
  RSS[$key]=$((kb * 1024))
  CPU[$key]=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
  log "$key: ${sec} s (CPU ${CPU[$key]} s), peak RSS $(mb "${RSS[$key]}") MB"
}

# Steps 1-3 run REPEAT times per tool: KEY-rN holds run N. collect KEY N makes KEY the summary of
# runs 1..N: TIME and CPU the medians, RSS the maximum, RUNS every time; STATUS the first failure.
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) printf "%.2f", a[(NR + 1) / 2]; else printf "%.2f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
collect() { # KEY N
  local key=$1 n=$2 i times="" cpus="" rss=0 status=ok
  for ((i = 1; i <= n; i++)); do
    if [[ ${STATUS[$key-r$i]:-} != ok ]]; then [[ $status == ok ]] && status=${STATUS[$key-r$i]:-n/a}; continue; fi
    times+=" ${TIME[$key-r$i]}" cpus+=" ${CPU[$key-r$i]}"
    ((RSS[$key-r$i] > rss)) && rss=${RSS[$key-r$i]}
  done
  STATUS[$key]=$status
  RUNS[$key]=${times# }
  if [[ $status == ok ]]; then TIME[$key]=$(median <<<"$times") CPU[$key]=$(median <<<"$cpus") RSS[$key]=$rss; fi
}
# first TOOL N: which tool runs first in run N (they alternate, so a slow stretch hits both alike)
first_hf() { (($1 % 2)); }

# ---------------------------------------------------------------- archive_command switching
set_archive() { # COMMAND: ALTER SYSTEM + reload; the archiver picks it up before its next file
  printf "ALTER SYSTEM SET archive_command = :'c';\nSELECT pg_reload_conf();\n" |
    aspg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -d postgres -v c="$1" >/dev/null
  sleep 1
  echo "$(date +%T) archive_command = $1" >>"$LOGS/archive_command.log"
}
archive_cmd_hf() { echo "HOLDFAST_CONFIG=/dev/null HOLDFAST_PASSWORD_FILE=$PWFILE HOLDFAST_REPO=$1 $NODE $HF_BIN pg archive-push --cluster main %p"; }
archive_cmd_pgbr() { echo "pgbackrest --config=$PGBR_CONF --stanza=bench --repo1-path=$1 archive-push %p"; }
archive_cmd_pool() { echo "cp %p $POOL/%f.tmp && mv -f $POOL/%f.tmp $POOL/%f"; }

# Close the current segment and wait (bounded) until the archiver has archived it.
switch_and_wait() {
  local seg last="" i
  seg=$(sql "SELECT pg_walfile_name(pg_switch_wal())")
  for ((i = 0; i < 240; i++)); do
    last=$(sql "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
    [[ $last < $seg ]] || return 0
    sleep 0.5
  done
  sql "SELECT * FROM pg_stat_archiver" >&2 || true
  tail -20 "$W/server.log" >&2 || true
  die "the archiver did not archive $seg within 120 s (last archived: $last)"
}

# ---------------------------------------------------------------- the pgbench cluster
build_base() {
  if [[ -f $BASE/.holdfast-bench-complete ]]; then
    log "reusing the pgbench scale $SCALE cluster in $BASE (remove it to rebuild)"
    return 0
  fi
  rm -rf "$BASE"
  mkdir -p "$BASE" "$BENCH_DIR/base-sock"
  chown postgres: "$BASE" "$BENCH_DIR/base-sock"
  chmod 700 "$BASE"
  log "initdb -k and pgbench -i -s $SCALE into $BASE"
  aspg "$PGBIN/initdb" -k -D "$BASE" -U postgres -A trust --locale=C -E UTF8 >"$LOGS/base-initdb.log" 2>&1 || { cat "$LOGS/base-initdb.log" >&2; die "initdb failed"; }
  local port
  port=$(free_port)
  cat >>"$BASE/postgresql.conf" <<CONF
# holdfast bench: base build (fast load; the run appends its own settings)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$BENCH_DIR/base-sock'
wal_level = minimal
max_wal_senders = 0
archive_mode = off
fsync = off
synchronous_commit = off
max_wal_size = 4GB
CONF
  trap 'pg_stop "$BASE"' EXIT
  pg_start "$BASE" "$BENCH_DIR/base-sock/server.log"
  local t0=$SECONDS
  sqlat "$port" "$BENCH_DIR/base-sock" postgres "CREATE DATABASE bench"
  aspg timeout -k 10 3600 "$PGBIN/pgbench" -h "$BENCH_DIR/base-sock" -p "$port" -i -s "$SCALE" -q bench >"$LOGS/base-pgbench-init.log" 2>&1 ||
    { tail -20 "$LOGS/base-pgbench-init.log" >&2; pg_stop "$BASE"; die "pgbench -i -s $SCALE failed"; }
  sqlat "$port" "$BENCH_DIR/base-sock" bench "CHECKPOINT"
  pg_stop "$BASE"
  cp "$BENCH_DIR/base-sock/server.log" "$LOGS/base-server.log" 2>/dev/null || true
  rm -rf "$BENCH_DIR/base-sock"
  trap - EXIT
  touch "$BASE/.holdfast-bench-complete"
  log "base built in $((SECONDS - t0)) s: $(mb "$(datasize "$BASE")") MB"
}

check_space() {
  local avail need db have=0
  avail=$(df -B1 --output=avail "$BENCH_DIR" | tail -1 | tr -d ' ')
  [[ -f $BASE/.holdfast-bench-complete ]] && have=$(dusize "$BASE")
  db=$((SCALE * 16000000))
  # kept base copy (if missing) + the cluster with pg_wal + 2 restores + 4 full repositories (generous)
  # + WAL pool + 3 burst repositories + 1 GB
  local base_extra=0
  [[ $KEEP_BASE == 1 && $have == 0 ]] && base_extra=$db
  need=$((base_extra + db + 1600000000 + 2 * db + 2 * db + POOL_N * SEG + 3 * BURST_N * SEG / 2 + 1000000000))
  log "df -h $BENCH_DIR: $(df -h --output=avail,size "$BENCH_DIR" | tail -1 | awk '{ print $1 " free of " $2 }'); this run needs about $(mb "$need") MB"
  ((avail >= need)) || die "not enough space in $BENCH_DIR: $(mb "$avail") MB free, about $(mb "$need") MB needed"
}

cleanup() {
  local d
  set +e
  for d in "$W/data" "$W/restore-hf" "$W/restore-pgbr" "$W/delta-hf"; do pg_stop "$d"; done
  # let a pgBackRest async archive-push process finish (bounded) before removing its spool
  for ((d = 0; d < 60; d++)); do pgrep -u postgres -f -- "--config=$PGBR_CONF" >/dev/null 2>&1 || break; sleep 0.5; done
  rm -rf "$W" "$HFBUILD"
  if [[ $KEEP_BASE != 1 ]]; then rm -rf "$BASE"; fi
}

# ---------------------------------------------------------------- main
install_deps
build_holdfast
check_space
build_base

rm -rf "$W"
mkdir -p "$W"
chmod 755 "$W"
trap cleanup EXIT
SOCK="$W/sock"
POOL="$W/walpool"
PWFILE="$W/password"
PGBR_CONF="$W/pgbackrest.conf"
DATA="$W/data"
mkdir -p "$SOCK" "$POOL" "$W/repos" "$W/pgbr/log" "$W/pgbr/lock" "$W/pgbr/spool"
echo "holdfast-bench-password" >"$PWFILE"
chmod 600 "$PWFILE"
chown -R postgres: "$W"
chown postgres: "$LOGS"
log "logs in $LOGS"

if [[ $KEEP_BASE == 1 ]]; then
  log "copying the base cluster to $DATA (BENCH_KEEP_BASE=1: $BASE is kept for the next run)"
  cp -a "$BASE" "$DATA"
else
  mv "$BASE" "$DATA"
fi
rm -f "$DATA/.holdfast-bench-complete"
PORT=$(free_port)
cat >>"$DATA/postgresql.conf" <<CONF
# holdfast bench: the run
port = $PORT
unix_socket_directories = '$SOCK'
wal_level = replica
max_wal_senders = 10
archive_mode = on
archive_command = '$(archive_cmd_pool)'
fsync = on
synchronous_commit = on
max_wal_size = 1GB
CONF
cat >"$PGBR_CONF" <<CONF
[global]
log-path=$W/pgbr/log
lock-path=$W/pgbr/lock
spool-path=$W/pgbr/spool
log-level-console=info
log-level-file=info
repo1-type=posix
repo1-cipher-type=none
repo1-retention-full=10
start-fast=y
process-max=$JOBS
compress-type=zst
compress-level=3
archive-timeout=60

[bench]
pg1-path=$DATA
pg1-port=$PORT
pg1-socket-path=$SOCK
pg1-user=postgres
CONF
chown postgres: "$PGBR_CONF"
pg_start "$DATA" "$W/server.log"
DB_BYTES=$(datasize "$DATA")
DB_SQL=$(sql "SELECT pg_database_size('bench')")
log "cluster on port $PORT: data directory $(mb "$DB_BYTES") MB without pg_wal (database bench $(mb "$DB_SQL") MB)"

# repositories: full backups (A fast, B zstd:3 + incremental), latency (L), burst (U)
HF_A="$W/repos/hf-zstd1" HF_B="$W/repos/hf-zstd3" HF_L16="$W/repos/hf-lat-kdf16" HF_L10="$W/repos/hf-lat-kdf10"
HF_U16="$W/repos/hf-burst-kdf16" HF_U10="$W/repos/hf-burst-kdf10"
PB_A="$W/repos/pgbr-lz4" PB_B="$W/repos/pgbr-zst3" PB_L="$W/repos/pgbr-lat" PB_U="$W/repos/pgbr-burst"
new_repo() { # TOOL PATH [ARGS...]: a fresh, empty repository at PATH
  local tool=$1 r=$2; shift 2
  rm -rf "$r"
  if [[ $tool == hf ]]; then
    hf "$r" init "$@" >>"$LOGS/hf-init.log" 2>&1 || { cat "$LOGS/hf-init.log" >&2; die "holdfast init $* --repo $r failed"; }
  else
    pgbr "$r" stanza-create >>"$LOGS/pgbr-stanza-create.log" 2>&1 || { cat "$LOGS/pgbr-stanza-create.log" >&2; die "pgbackrest stanza-create --repo1-path=$r failed"; }
  fi
}
new_repo hf "$HF_L16"
new_repo hf "$HF_L10" --kdf-cost 10
new_repo pgbr "$PB_L"

# one full backup: KEY TOOL REPO ARGS...
backup_step() {
  local key=$1 tool=$2 repo=$3; shift 3
  switch_and_wait
  if [[ $tool == hf ]]; then set_archive "$(archive_cmd_hf "$repo")"; else set_archive "$(archive_cmd_pgbr "$repo")"; fi
  sql "CHECKPOINT"
  warmup "$DATA"
  local before
  before=$(dusize "$repo")
  if [[ $tool == hf ]]; then
    measure "$key" env HOLDFAST_CONFIG=/dev/null HOLDFAST_PASSWORD_FILE="$PWFILE" HOLDFAST_REPO="$repo" PGHOST="$SOCK" PGPORT="$PORT" PGUSER=postgres PGDATABASE=postgres \
      "$NODE" "$HF_BIN" pg backup --cluster main --jobs "$JOBS" "$@"
  else
    measure "$key" pgbackrest --config="$PGBR_CONF" --stanza=bench --repo1-path="$repo" --process-max="$JOBS" "$@" backup
  fi
  SIZE[$key]=$(dusize "$repo")
  ADDED[$key]=$((SIZE[$key] - before))
}
declare -A SIZE ADDED

# last KEY N: KEY's repository size and growth are those of run N
last() { SIZE[$1]=${SIZE[$1-r$2]:-} ADDED[$1]=${ADDED[$1-r$2]:-}; }

# 1. full backups, each into a fresh repository (holdfast deduplicates, so a second full into the
# same repository would not be a full); the zstd:3 ones of the last run are kept for steps 2-4
if want backup; then
  for ((i = 1; i <= REPEAT; i++)); do
    for s in fast zstd; do
      if [[ $s == fast ]]; then hr="$HF_A-r$i" pr="$PB_A-r$i" ha=(--compression zstd:1) pa=(--compress-type=lz4)
      else hr="$HF_B-r$i" pr="$PB_B-r$i" ha=(--compression zstd:3) pa=(--compress-type=zst --compress-level=3); fi
      new_repo hf "$hr"
      new_repo pgbr "$pr"
      for t in $(if first_hf "$i"; then echo hf pgbr; else echo pgbr hf; fi); do
        if [[ $t == hf ]]; then backup_step "hf-full-$s-r$i" hf "$hr" --type full "${ha[@]}"
        else backup_step "pgbr-full-$s-r$i" pgbr "$pr" --type=full "${pa[@]}"; fi
      done
    done
  done
  for k in hf-full-fast pgbr-full-fast hf-full-zstd pgbr-full-zstd; do collect "$k" "$REPEAT"; last "$k" "$REPEAT"; done
  # Only the last run's zstd:3 repositories are needed further on. (Not removed earlier: until the
  # archive_command names another repository, the archiver may still push into the last one.)
  for ((i = 1; i <= REPEAT; i++)); do
    rm -rf "$HF_A-r$i" "$PB_A-r$i"
    ((i == REPEAT)) || rm -rf "$HF_B-r$i" "$PB_B-r$i"
  done
fi
HF_B="$HF_B-r$REPEAT" PB_B="$PB_B-r$REPEAT"

# 2. pgbench, then incrementals (its WAL goes to the pool: the segments for steps 5 and 6)
switch_and_wait
set_archive "$(archive_cmd_pool)"
rm -f "$POOL"/*  # only segments written from here on (pgbench WAL) go into the pool
log "pgbench -T $PGBENCH_SECONDS -c $JOBS -j $JOBS (WAL archived to the segment pool)"
lsn0=$(sql "SELECT pg_current_wal_lsn()")
aspg timeout -k 10 $((PGBENCH_SECONDS + 120)) "$PGBIN/pgbench" -h "$SOCK" -p "$PORT" -T "$PGBENCH_SECONDS" -c "$JOBS" -j "$JOBS" -n bench >"$LOGS/pgbench.log" 2>&1 ||
  { tail -20 "$LOGS/pgbench.log" >&2; die "pgbench failed"; }
WAL_BYTES=$(sql "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')::bigint")
TPS=$(awk '/^tps/ { printf "%.0f", $3; exit }' "$LOGS/pgbench.log")
WAL_RATE=$(awk -v b="$WAL_BYTES" -v t="$PGBENCH_SECONDS" 'BEGIN { printf "%.1f", b / 1e6 / t }')
log "pgbench: $TPS tps, $(mb "$WAL_BYTES") MB of WAL in $PGBENCH_SECONDS s ($WAL_RATE MB/s)"
sql "CHECKPOINT"
if want backup; then
  # every run starts from a copy of the repositories as the full backups left them
  cp -a "$HF_B" "$HF_B.pre"
  cp -a "$PB_B" "$PB_B.pre"
  for ((i = 1; i <= REPEAT; i++)); do
    if ((i > 1)); then
      rm -rf "$HF_B" "$PB_B"
      cp -a "$HF_B.pre" "$HF_B"
      cp -a "$PB_B.pre" "$PB_B"
    fi
    for t in $(if first_hf "$i"; then echo hf pgbr; else echo pgbr hf; fi); do
      if [[ $t == hf ]]; then backup_step "hf-incr-r$i" hf "$HF_B" --type incr --compression zstd:3
      else backup_step "pgbr-incr-r$i" pgbr "$PB_B" --type=incr --compress-type=zst --compress-level=3; fi
    done
  done
  rm -rf "$HF_B.pre" "$PB_B.pre"
  for k in hf-incr pgbr-incr; do collect "$k" "$REPEAT"; last "$k" "$REPEAT"; done
fi

# top up the pool to POOL_N full segments with more pgbench (bounded)
switch_and_wait
set_archive "$(archive_cmd_pool)"
pool_count() { find "$POOL" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' -size "${SEG}c" | wc -l; }
t0=$SECONDS
want latency || want burst || POOL_N=0
while (($(pool_count) < POOL_N + 2)); do
  ((SECONDS - t0 < 1200)) || die "the WAL pool has only $(pool_count) segments after 1200 s of pgbench (need $POOL_N)"
  log "WAL pool: $(pool_count) of $POOL_N segments; more pgbench"
  aspg timeout -k 10 120 env PGOPTIONS='-c synchronous_commit=off' "$PGBIN/pgbench" -h "$SOCK" -p "$PORT" -T 20 -c "$JOBS" -j "$JOBS" -n bench >>"$LOGS/pgbench-pool.log" 2>&1 ||
    { tail -20 "$LOGS/pgbench-pool.log" >&2; die "pgbench (WAL pool) failed"; }
done
switch_and_wait
log "WAL pool: $(pool_count) segments in $POOL"
find "$POOL" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' -size "${SEG}c" | sort >"$W/pool.list"

# 3. full restores (latest = the incremental)
declare -A VERIFY=([hf-restore]='not measured (BENCH_PARTS)' [pgbr-restore]='not measured (BENCH_PARTS)')
RESTORE_HF_BYTES='' RESTORE_PB_BYTES=''
if want restore; then
for ((i = 1; i <= REPEAT; i++)); do
  for t in $(if first_hf "$i"; then echo hf pgbr; else echo pgbr hf; fi); do
    rm -rf "$W/restore-$t"
    mkdir -p "$W/restore-$t"
    chown postgres: "$W/restore-$t"
    chmod 700 "$W/restore-$t"
    sync # what the previous run left dirty is not this run's to write
    if [[ $t == hf ]]; then
      warmup "$HF_B"
      measure "hf-restore-r$i" env HOLDFAST_CONFIG=/dev/null HOLDFAST_REPO="$HF_B" "$NODE" "$HF_BIN" pg restore --cluster main --password-file "$PWFILE" \
        --jobs "$JOBS" --target-dir "$W/restore-hf" --target-immediate --target-action promote
    else
      warmup "$PB_B"
      measure "pgbr-restore-r$i" pgbackrest --config="$PGBR_CONF" --stanza=bench --repo1-path="$PB_B" --process-max="$JOBS" --pg1-path="$W/restore-pgbr" \
        restore --type=immediate --target-action=promote
    fi
  done
done
collect hf-restore "$REPEAT"
collect pgbr-restore "$REPEAT"
RESTORE_HF_BYTES=$(datasize "$W/restore-hf")
RESTORE_PB_BYTES=$(datasize "$W/restore-pgbr")

# untimed: start each restored cluster, wait until promoted, count the pgbench_accounts rows
verify_restore() { # KEY DIR
  local key=$1 dir=$2 port i state=""
  [[ ${STATUS[$key]:-} == ok ]] || { VERIFY[$key]="not restored"; return 0; }
  port=$(free_port)
  mkdir -p "$W/sock-$key" && chown postgres: "$W/sock-$key"
  printf "\n# holdfast bench: restored copy\nport = %s\nunix_socket_directories = '%s'\narchive_mode = off\n" "$port" "$W/sock-$key" >>"$dir/postgresql.conf"
  if ! aspg "$PGBIN/pg_ctl" -D "$dir" -l "$LOGS/$key-server.log" -w -t 120 start >>"$LOGS/pg_ctl.log" 2>&1; then
    VERIFY[$key]="did not start (see $LOGS/$key-server.log)"
    return 0
  fi
  for ((i = 0; i < 240; i++)); do
    state=$(sqlat "$port" "$W/sock-$key" postgres "SELECT pg_is_in_recovery()" 2>/dev/null || true)
    [[ $state == f ]] && break
    sleep 0.5
  done
  if [[ $state != f ]]; then
    VERIFY[$key]="still in recovery after 120 s (see $LOGS/$key-server.log)"
  else
    local n
    n=$(sqlat "$port" "$W/sock-$key" bench "SELECT count(*) FROM pgbench_accounts" 2>&1 || true)
    if [[ $n == $((SCALE * 100000)) ]]; then VERIFY[$key]="ok ($n accounts)"; else VERIFY[$key]="WRONG: pgbench_accounts count $n, expected $((SCALE * 100000))"; fi
  fi
  pg_stop "$dir"
}
verify_restore hf-restore "$W/restore-hf"
verify_restore pgbr-restore "$W/restore-pgbr"
log "restored clusters: holdfast ${VERIFY[hf-restore]}; pgBackRest ${VERIFY[pgbr-restore]}"
rm -rf "$W/restore-hf" "$W/restore-pgbr"
fi

# 5. archive-push latency, sequential calls as postgres into fresh repositories
head -n "$LAT_N" "$W/pool.list" >"$W/lat.list"
head -n "$BURST_N" "$W/pool.list" >"$W/burst.list"
chown postgres: "$W/lat.list" "$W/burst.list"
chmod -R a+rX "$POOL"
declare -A MED MEAN TOTAL MAXRSS CALLS CPUMED
# loop_stats KEY: MED/MEAN (ms), CALLS, TOTAL (s), MAXRSS (bytes), CPUMED (ms) from LOGS/KEY.calls
loop_stats() {
  local key=$1
  STATUS[$key]=ok
  MED[$key]=$(grep -v '^total' "$LOGS/$key.calls" | awk '{ print $2 / 1000 }' | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) printf "%.1f", a[(NR + 1) / 2]; else printf "%.1f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
  MEAN[$key]=$(grep -v '^total' "$LOGS/$key.calls" | awk '{ s += $2 } END { printf "%.1f", s / NR / 1000 }')
  CPUMED[$key]=$(grep -v '^total' "$LOGS/$key.calls" | awk 'NF >= 5 { print $5 / 1000 }' | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) printf "%.1f", a[(NR + 1) / 2]; else printf "%.1f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
  CALLS[$key]=$(grep -vc '^total' "$LOGS/$key.calls")
  TOTAL[$key]=$(awk '/^total/ { printf "%.2f", $2 / 1e6 }' "$LOGS/$key.calls")
  MAXRSS[$key]=$(grep -v '^total' "$LOGS/$key.calls" | awk 'BEGIN { m = 0 } { if ($3 > m) m = $3 } END { print m * 1024 }')
  log "$key: median ${MED[$key]} ms (CPU ${CPUMED[$key]:-?} ms), mean ${MEAN[$key]} ms, total ${TOTAL[$key]} s, max RSS $(mb "${MAXRSS[$key]}") MB"
}
loop() { # KEY LIST CMD...: bench/pg-wal-loop.sh as postgres, one call per segment in order; loop_stats
  local key=$1 list=$2 rc=0; shift 2
  echo "for each segment in $list: $*" >"$LOGS/$key.cmd"
  log "$key: $(wc -l <"$list") sequential calls of: $* SEGMENT"
  warmup "$POOL"
  aspg timeout -k 10 "$CMD_TIMEOUT" bash "$HERE/pg-wal-loop.sh" "$LOGS/$key.calls" "$list" -- "$@" || rc=$?
  if ((rc != 0)); then
    cp "$LOGS/$key.calls.log" "$LOGS/$key.err" 2>/dev/null || true
    fail_report "$key" "$rc" "$@" "(one call per segment; see $LOGS/$key.calls and $LOGS/$key.calls.log)"
    return 0
  fi
  loop_stats "$key"
}
# loop_turns LIST KEY...: like loop for each KEY (its command in the array RR_<KEY with - as _>), but
# in turns: the first segment by every command, then the second, and so on. Each command still
# archives every segment once, in order, into its own repository; load from other work on the
# machine, which comes and goes over seconds, then falls on all of them alike instead of on
# whichever ran during a busy stretch.
loop_turns() {
  local list=$1 key seg rc var
  shift
  local -A failed=()
  for key in "$@"; do
    var="RR_${key//-/_}[@]"
    echo "for each segment in $list, in turns with $*: ${!var}" >"$LOGS/$key.cmd"
    : >"$LOGS/$key.calls"
    : >"$LOGS/$key.calls.log"
  done
  log "latency: $(wc -l <"$list") segments, each archived by $* in turn"
  warmup "$POOL"
  while read -r seg; do
    echo "$seg" >"$W/turn.list"
    chown postgres: "$W/turn.list"
    for key in "$@"; do
      [[ -z ${failed[$key]:-} ]] || continue
      var="RR_${key//-/_}[@]"
      rc=0
      aspg timeout -k 10 "$CMD_TIMEOUT" bash "$HERE/pg-wal-loop.sh" "$LOGS/$key.turn" "$W/turn.list" -- "${!var}" || rc=$?
      grep -v '^total' "$LOGS/$key.turn" >>"$LOGS/$key.calls" || true
      cat "$LOGS/$key.turn.log" >>"$LOGS/$key.calls.log" 2>/dev/null || true
      if ((rc != 0)); then
        failed[$key]=1
        cp "$LOGS/$key.calls.log" "$LOGS/$key.err" 2>/dev/null || true
        fail_report "$key" "$rc" "${!var}" "(one call per segment; see $LOGS/$key.calls and $LOGS/$key.calls.log)"
      fi
    done
  done <"$list"
  for key in "$@"; do
    rm -f "$LOGS/$key.turn" "$LOGS/$key.turn.log"
    [[ -z ${failed[$key]:-} ]] || continue
    echo "total $(awk '{ s += $2 } END { print s + 0 }' "$LOGS/$key.calls")" >>"$LOGS/$key.calls"
    loop_stats "$key"
  done
}
HF_PUSH=("$NODE" "$HF_BIN" pg archive-push --cluster main)
# --async calls go through the native front when the build made it (docs/design.md §12)
HF_FRONT="$HFBUILD/dist/holdfast-push"
if [[ -x $HF_FRONT ]]; then HF_ASYNC_PUSH=("$HF_FRONT" pg archive-push --cluster main); else HF_ASYNC_PUSH=("${HF_PUSH[@]}"); fi
# synchronous calls too (the front stores the segment itself after the first call left its ticket)
HF_SYNC_PUSH=("${HF_ASYNC_PUSH[@]}")
if want latency; then
  RR_hf_lat16=(env HOLDFAST_CONFIG=/dev/null HOLDFAST_PASSWORD_FILE="$PWFILE" HOLDFAST_REPO="$HF_L16" "${HF_SYNC_PUSH[@]}")
  RR_hf_lat10=(env HOLDFAST_CONFIG=/dev/null HOLDFAST_PASSWORD_FILE="$PWFILE" HOLDFAST_REPO="$HF_L10" "${HF_SYNC_PUSH[@]}")
  RR_pgbr_lat=(pgbackrest --config="$PGBR_CONF" --stanza=bench --repo1-path="$PB_L" archive-push)
  loop_turns "$W/lat.list" hf-lat16 hf-lat10 pgbr-lat
fi

# 6. burst: WAL inside a pg1-path with .ready files (pgBackRest async needs both)
BURST_PB_STORED='' BURST_HF_SIZE='' BURST_PB_SIZE=''
if want burst; then
BURST="$W/burst-pgdata"
mkdir -p "$BURST/global" "$BURST/pg_wal/archive_status"
cp "$DATA/global/pg_control" "$BURST/global/"
cp "$DATA/PG_VERSION" "$BURST/"
while read -r f; do
  ln "$f" "$BURST/pg_wal/${f##*/}"
  : >"$BURST/pg_wal/archive_status/${f##*/}.ready"
  echo "$BURST/pg_wal/${f##*/}"
done <"$W/burst.list" >"$W/burst-pgdata.list"
chown -R postgres: "$BURST" "$W/burst-pgdata.list"
chmod 700 "$BURST"
# Every burst starts from the same .ready files; the loop marks them .done like PostgreSQL.
reset_ready() {
  rm -f "$BURST"/pg_wal/archive_status/*.done
  while read -r f; do : >"$BURST/pg_wal/archive_status/${f##*/}.ready"; done <"$W/burst.list"
  chown -R postgres: "$BURST/pg_wal/archive_status"
}
export LOOP_MARK_DONE=1
# BURST_REPEAT runs per tool, the tools taking turns (which goes first too), each into fresh
# repositories and, for pgBackRest, an empty spool; the report compares the medians.
for ((i = 1; i <= BURST_REPEAT; i++)); do
  u16="$HF_U16-r$i" u10="$HF_U10-r$i" pu="$PB_U-r$i"
  new_repo hf "$u16"
  new_repo hf "$u10" --kdf-cost 10
  new_repo pgbr "$pu"
  for t in $(if first_hf "$i"; then echo hf pgbr; else echo pgbr hf; fi); do
    reset_ready
    if [[ $t == hf ]]; then
      loop "hf-burst16-r$i" "$W/burst-pgdata.list" env HOLDFAST_CONFIG=/dev/null HOLDFAST_PASSWORD_FILE="$PWFILE" HOLDFAST_REPO="$u16" "${HF_ASYNC_PUSH[@]}" --async --jobs "$JOBS"
      # untimed: let the async worker go idle and exit (bounded), so it neither takes CPU from the
      # next loops nor archives their .ready files into its repository
      for ((k = 0; k < 60; k++)); do pgrep -u postgres -f -- "--async-worker .*--repo $u16 " >/dev/null 2>&1 || break; sleep 0.5; done
      reset_ready
      loop "hf-burst10-r$i" "$W/burst-pgdata.list" env HOLDFAST_CONFIG=/dev/null HOLDFAST_PASSWORD_FILE="$PWFILE" HOLDFAST_REPO="$u10" "${HF_SYNC_PUSH[@]}"
    else
      rm -rf "$W/pgbr/spool"/*
      loop "pgbr-burst-r$i" "$W/burst-pgdata.list" pgbackrest --config="$PGBR_CONF" --stanza=bench --repo1-path="$pu" --pg1-path="$BURST" \
        --archive-async --spool-path="$W/pgbr/spool" --process-max="$JOBS" archive-push
      for ((k = 0; k < 60; k++)); do pgrep -u postgres -f -- "--config=$PGBR_CONF" >/dev/null 2>&1 || break; sleep 0.5; done
    fi
  done
  if ((i < BURST_REPEAT)); then rm -rf "$u16" "$u10" "$pu"; fi
done
# burst_collect KEY: KEY's figures from its runs: TOTAL, MEAN, MED and CPUMED the medians, MAXRSS
# the maximum, RUNS every total; STATUS the first failure.
burst_collect() {
  local key=$1 i totals="" means="" meds="" cpus="" rss=0 status=ok
  for ((i = 1; i <= BURST_REPEAT; i++)); do
    if [[ ${STATUS[$key-r$i]:-} != ok ]]; then [[ $status == ok ]] && status=${STATUS[$key-r$i]:-n/a}; continue; fi
    totals+=" ${TOTAL[$key-r$i]}" means+=" ${MEAN[$key-r$i]}" meds+=" ${MED[$key-r$i]}" cpus+=" ${CPUMED[$key-r$i]:-}"
    ((MAXRSS[$key-r$i] > rss)) && rss=${MAXRSS[$key-r$i]}
  done
  STATUS[$key]=$status
  RUNS[$key]=${totals# }
  CALLS[$key]=${CALLS[$key-r1]:-}
  if [[ $status == ok ]]; then TOTAL[$key]=$(median <<<"$totals") MEAN[$key]=$(median <<<"$means") MED[$key]=$(median <<<"$meds") CPUMED[$key]=$(median <<<"$cpus") MAXRSS[$key]=$rss; fi
}
for k in hf-burst16 hf-burst10 pgbr-burst; do burst_collect "$k"; done
HF_U16="$HF_U16-r$BURST_REPEAT" HF_U10="$HF_U10-r$BURST_REPEAT" PB_U="$PB_U-r$BURST_REPEAT"
BURST_PB_STORED=$(find "$PB_U/archive" -type f -name '0000*' 2>/dev/null | wc -l)
BURST_HF_SIZE=$(dusize "$HF_U16")
BURST_PB_SIZE=$(dusize "$PB_U")
fi

# 4. delta restore over the stopped source data directory (moved on since the backup)
pg_stop "$DATA"
HF_DELTA=0 DELTA_TARGET_BYTES='' DELTA_MATCH='' DELTA_FILES=''
if want delta; then
if aspg "$NODE" "$HF_BIN" help pg restore 2>/dev/null | grep -q -- '--delta'; then
  HF_DELTA=1
  log "holdfast pg restore lists --delta: measuring it on a copy of the source data directory"
  cp -a "$DATA" "$W/delta-hf"
  rm -f "$W/delta-hf/postmaster.pid"
  warmup "$W/delta-hf"
  warmup "$HF_B"
  measure hf-delta env HOLDFAST_CONFIG=/dev/null HOLDFAST_REPO="$HF_B" "$NODE" "$HF_BIN" pg restore --cluster main --password-file "$PWFILE" \
    --jobs "$JOBS" --target-dir "$W/delta-hf" --delta --target-immediate --target-action promote
  rm -rf "$W/delta-hf"
fi
warmup "$DATA"
warmup "$PB_B"
DELTA_TARGET_BYTES=$(datasize "$DATA")
measure pgbr-delta pgbackrest --config="$PGBR_CONF" --stanza=bench --repo1-path="$PB_B" --process-max="$JOBS" --log-level-console=detail \
  --delta restore --type=immediate --target-action=promote
DELTA_MATCH=$(grep -c 'exists and matches' "$LOGS/pgbr-delta.out" 2>/dev/null || true)
DELTA_FILES=$(grep -c 'restore file ' "$LOGS/pgbr-delta.out" 2>/dev/null || true)
fi

# ---------------------------------------------------------------- report
versions() {
  local hv pv commit
  hv=$("$NODE" "$HF_BIN" --version 2>/dev/null | head -1 | awk '{ print $NF }')
  pv=$(pgbackrest version 2>/dev/null | awk '{ print $2 }')
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
  if [[ -n $(git -C "$ROOT" status --porcelain -- src package.json package-lock.json 2>/dev/null) ]]; then commit="$commit+uncommitted changes in src"; fi
  echo "holdfast $hv (git $commit$BUILD_NOTE), pgBackRest $pv, $("$PGBIN/postgres" --version | awk '{ print "PostgreSQL " $3 }'), node $("$NODE" --version), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GB RAM", $2 * 1024 / 1e9 }' /proc/meminfo), load avg at start $LOAD0, at end $(cut -d' ' -f1-3 /proc/loadavg)"
}
row() { printf '%-52s %16s %16s %7s\n' "$@"; }
runs_rows() { # HFKEY PGBRKEY: every run, and the median CPU time (user + system) of steps 1-3
  ((REPEAT > 1)) && row "   each run (s; the median above)" "${RUNS[$1]:-n/a}" "${RUNS[$2]:-n/a}" ""
  row "   CPU user + system, median (s)" "${CPU[$1]:-n/a}" "${CPU[$2]:-n/a}" "$(ratio "${CPU[$1]:-}" "${CPU[$2]:-}")"
}
val() { # KEY ARRAY-VALUE: the value, or the failure status
  if [[ -n $2 ]]; then echo "$2"; else echo "${STATUS[$1]:-n/a}"; fi
}
MISSED=0
target() { printf 'TARGET %-4s %s\n' "$1" "$2"; [[ $1 == FAIL ]] && MISSED=1; return 0; }
le() { awk -v x="$1" -v m="$2" 'BEGIN { if (x == "n/a" || x == "") print "n/a"; else if (x + 0 <= m + 0) print "PASS"; else print "FAIL" }'; }

REPORT="$LOGS/report.txt"
{
  echo
  echo "== holdfast vs pgBackRest: PostgreSQL, pgbench scale $SCALE, data directory $(mb "$DB_BYTES") MB without pg_wal (database bench $(mb "$DB_SQL") MB)"
  echo "== $(versions)"
  echo "== same process count N=$JOBS: holdfast pg backup --jobs $JOBS, pgBackRest --process-max=$JOBS; restores: holdfast pg restore --jobs $JOBS"
  echo "== compression compared: 'fast' = holdfast zstd:1 vs pgBackRest lz4 (holdfast has no lz4); 'zstd' = holdfast zstd:3 vs pgBackRest zst level 3;"
  echo "==   incremental and restore on the zstd:3 repositories; archive-push: holdfast zstd:3 (fixed) vs pgBackRest zst level 3"
  echo "== encryption: holdfast always encrypts (AES-256-GCM); pgBackRest repo1-cipher-type=none (unencrypted)"
  echo "== local posix repositories on the same disk; warm page cache; every backup after CHECKPOINT, immediate checkpoint (pgBackRest start-fast=y)"
  echo "== steps 5-6: the first $LAT_N / $BURST_N full 16 MB segments of pgbench WAL (archived aside with cp while pgbench ran), read from the page cache"
  echo "== step 2: pgbench -T $PGBENCH_SECONDS -c $JOBS: $TPS tps, $(mb "$WAL_BYTES") MB WAL ($WAL_RATE MB/s)"
  echo "== restored clusters started (untimed check): holdfast ${VERIFY[hf-restore]}; pgBackRest ${VERIFY[pgbr-restore]}"
  echo "== steps 1-3: $REPEAT run(s) per tool, the tools alternating (which goes first too); the median time is compared, every run is listed"
  echo "== MB = 10^6 bytes; times in s unless marked; ratio = holdfast/pgBackRest (time or size: <= 1.00 means holdfast is as good or better)"
  echo
  row "measure" "holdfast" "pgBackRest" "ratio"
  row "----------------------------------------------------" "----------------" "----------------" "-------"
  for s in fast zstd; do
    h=hf-full-$s p=pgbr-full-$s
    if [[ $s == fast ]]; then label="1a full backup, hf zstd:1 vs pgbr lz4"; else label="1b full backup, hf zstd:3 vs pgbr zst:3"; fi
    row "$label (s)" "$(val "$h" "${TIME[$h]:-}")" "$(val "$p" "${TIME[$p]:-}")" "$(ratio "${TIME[$h]:-}" "${TIME[$p]:-}")"
    runs_rows "$h" "$p"
    th=$(mbps "$DB_BYTES" "${TIME[$h]:-}") tp=$(mbps "$DB_BYTES" "${TIME[$p]:-}")
    row "   throughput (MB/s, higher is better)" "${th:-n/a}" "${tp:-n/a}" "$(ratio "$th" "$tp")"
    row "   repository size after (MB)" "$(mb "${SIZE[$h]:-}")" "$(mb "${SIZE[$p]:-}")" "$(ratio "${SIZE[$h]:-}" "${SIZE[$p]:-}")"
    row "   peak RSS (MB)" "$(mb "${RSS[$h]:-}")" "$(mb "${RSS[$p]:-}")" "$(ratio "${RSS[$h]:-}" "${RSS[$p]:-}")"
  done
  row "2  incremental after ${PGBENCH_SECONDS} s pgbench (s)" "$(val hf-incr "${TIME[hf-incr]:-}")" "$(val pgbr-incr "${TIME[pgbr-incr]:-}")" "$(ratio "${TIME[hf-incr]:-}" "${TIME[pgbr-incr]:-}")"
  runs_rows hf-incr pgbr-incr
  row "   added to repository (MB)" "$(mb "${ADDED[hf-incr]:-}")" "$(mb "${ADDED[pgbr-incr]:-}")" "$(ratio "${ADDED[hf-incr]:-}" "${ADDED[pgbr-incr]:-}")"
  row "   peak RSS (MB)" "$(mb "${RSS[hf-incr]:-}")" "$(mb "${RSS[pgbr-incr]:-}")" "$(ratio "${RSS[hf-incr]:-}" "${RSS[pgbr-incr]:-}")"
  row "3  full restore of latest (s)" "$(val hf-restore "${TIME[hf-restore]:-}")" "$(val pgbr-restore "${TIME[pgbr-restore]:-}")" "$(ratio "${TIME[hf-restore]:-}" "${TIME[pgbr-restore]:-}")"
  runs_rows hf-restore pgbr-restore
  th=$(mbps "$RESTORE_HF_BYTES" "${TIME[hf-restore]:-}") tp=$(mbps "$RESTORE_PB_BYTES" "${TIME[pgbr-restore]:-}")
  row "   throughput (MB/s, higher is better)" "${th:-n/a}" "${tp:-n/a}" "$(ratio "$th" "$tp")"
  row "   peak RSS (MB)" "$(mb "${RSS[hf-restore]:-}")" "$(mb "${RSS[pgbr-restore]:-}")" "$(ratio "${RSS[hf-restore]:-}" "${RSS[pgbr-restore]:-}")"
  if ! want delta; then
    row "4  delta restore over moved-on source (s)" "n/a (BENCH_PARTS)" "n/a" "n/a"
  elif ((HF_DELTA)); then
    row "4  delta restore over moved-on source (s)" "$(val hf-delta "${TIME[hf-delta]:-}")" "$(val pgbr-delta "${TIME[pgbr-delta]:-}")" "$(ratio "${TIME[hf-delta]:-}" "${TIME[pgbr-delta]:-}")"
    row "   peak RSS (MB)" "$(mb "${RSS[hf-delta]:-}")" "$(mb "${RSS[pgbr-delta]:-}")" "$(ratio "${RSS[hf-delta]:-}" "${RSS[pgbr-delta]:-}")"
  else
    row "4  delta restore over moved-on source (s)" "n/a (not impl.)" "$(val pgbr-delta "${TIME[pgbr-delta]:-}")" "n/a"
  fi
  row "5  archive-push, $LAT_N calls: median (ms)" "$(val hf-lat16 "${MED[hf-lat16]:-}")" "$(val pgbr-lat "${MED[pgbr-lat]:-}")" "$(ratio "${MED[hf-lat16]:-}" "${MED[pgbr-lat]:-}")"
  row "   mean (ms)" "$(val hf-lat16 "${MEAN[hf-lat16]:-}")" "$(val pgbr-lat "${MEAN[pgbr-lat]:-}")" "$(ratio "${MEAN[hf-lat16]:-}" "${MEAN[pgbr-lat]:-}")"
  row "   CPU per call, user + system: median (ms)" "$(val hf-lat16 "${CPUMED[hf-lat16]:-}")" "$(val pgbr-lat "${CPUMED[pgbr-lat]:-}")" "$(ratio "${CPUMED[hf-lat16]:-}" "${CPUMED[pgbr-lat]:-}")"
  row "   holdfast --kdf-cost 10: median (ms)" "$(val hf-lat10 "${MED[hf-lat10]:-}")" "$(val pgbr-lat "${MED[pgbr-lat]:-}")" "$(ratio "${MED[hf-lat10]:-}" "${MED[pgbr-lat]:-}")"
  row "   holdfast --kdf-cost 10: mean (ms)" "$(val hf-lat10 "${MEAN[hf-lat10]:-}")" "$(val pgbr-lat "${MEAN[pgbr-lat]:-}")" "$(ratio "${MEAN[hf-lat10]:-}" "${MEAN[pgbr-lat]:-}")"
  row "   peak RSS, max of the calls (MB)" "$(mb "${MAXRSS[hf-lat16]:-}")" "$(mb "${MAXRSS[pgbr-lat]:-}")" "$(ratio "${MAXRSS[hf-lat16]:-}" "${MAXRSS[pgbr-lat]:-}")"
  row "6  burst of $BURST_N segments, hf --async vs pgbr async (s)" "$(val hf-burst16 "${TOTAL[hf-burst16]:-}")" "$(val pgbr-burst "${TOTAL[pgbr-burst]:-}")" "$(ratio "${TOTAL[hf-burst16]:-}" "${TOTAL[pgbr-burst]:-}")"
  ((BURST_REPEAT > 1)) && row "   each run (s; the median above)" "${RUNS[hf-burst16]:-n/a}" "${RUNS[pgbr-burst]:-n/a}" ""
  th=$(mbps "$((BURST_N * SEG))" "${TOTAL[hf-burst16]:-}") tp=$(mbps "$((BURST_N * SEG))" "${TOTAL[pgbr-burst]:-}")
  row "   WAL archived (MB/s, higher is better)" "${th:-n/a}" "${tp:-n/a}" "$(ratio "$th" "$tp")"
  row "   per segment (ms)" "$(val hf-burst16 "${MEAN[hf-burst16]:-}")" "$(val pgbr-burst "${MEAN[pgbr-burst]:-}")" "$(ratio "${MEAN[hf-burst16]:-}" "${MEAN[pgbr-burst]:-}")"
  row "   holdfast sync (--kdf-cost 10) (s)" "$(val hf-burst10 "${TOTAL[hf-burst10]:-}")" "$(val pgbr-burst "${TOTAL[pgbr-burst]:-}")" "$(ratio "${TOTAL[hf-burst10]:-}" "${TOTAL[pgbr-burst]:-}")"
  ((BURST_REPEAT > 1)) && row "   holdfast sync, each run (s)" "${RUNS[hf-burst10]:-n/a}" "" ""
  row "   repository size after (MB)" "$(mb "$BURST_HF_SIZE")" "$(mb "$BURST_PB_SIZE")" "$(ratio "$BURST_HF_SIZE" "$BURST_PB_SIZE")"
  row "   peak RSS, max of the calls (MB)" "$(mb "${MAXRSS[hf-burst16]:-}")" "$(mb "${MAXRSS[pgbr-burst]:-}")" "$(ratio "${MAXRSS[hf-burst16]:-}" "${MAXRSS[pgbr-burst]:-}")"
  # 7. peak RSS over every holdfast command
  max_h=0 max_p=0 max_h_key="" n_h=0
  for k in hf-full-fast hf-full-zstd hf-incr hf-restore hf-delta hf-lat16 hf-lat10 hf-burst16 hf-burst10; do
    v=${RSS[$k]:-${MAXRSS[$k]:-}}
    if [[ -n $v ]]; then
      n_h=$((n_h + 1))
      if ((v > max_h)); then max_h=$v max_h_key=$k; fi
    fi
  done
  for k in pgbr-full-fast pgbr-full-zstd pgbr-incr pgbr-restore pgbr-delta pgbr-lat pgbr-burst; do
    v=${RSS[$k]:-${MAXRSS[$k]:-}}
    if [[ -n $v ]] && ((v > max_p)); then max_p=$v; fi
  done
  row "7  peak RSS, max over all commands (MB)" "$(mb "$max_h")" "$(mb "$max_p")" "$(ratio "$max_h" "$max_p")"
  echo "(holdfast's burst: ${HF_ASYNC_PUSH[0]##*/} pg archive-push --async --jobs $JOBS (a background worker archives the .ready files, the calls check its spool); pgBackRest's: archive-async=y with process-max=$JOBS; both called once per segment in order, .ready renamed .done after each success."
  echo " pgBackRest peak RSS is the largest single process of its process tree. Per-call times include a ~1 ms /usr/bin/time exec for both."
  if ! want delta; then
    echo " Delta restore: not measured (BENCH_PARTS)."
  elif ((!HF_DELTA)); then
    echo " Delta restore: holdfast pg restore has no --delta yet (not implemented); pgBackRest restored $(mb "$DELTA_TARGET_BYTES") MB over the stopped source,"
  else
    echo " Delta restore over the stopped source data directory ($(mb "$DELTA_TARGET_BYTES") MB);"
  fi
  want delta && echo " pgBackRest kept $DELTA_MATCH of $DELTA_FILES files as matching."
  want burst && echo " Burst: pgBackRest's archive holds $BURST_PB_STORED segment files afterwards."
  echo ")"
  echo
  echo "== BRIEF §3 targets"
  for s in fast zstd; do
    r=$(ratio "${TIME[hf-full-$s]:-}" "${TIME[pgbr-full-$s]:-}")
    if [[ $s == fast ]]; then what="zstd:1 vs lz4"; else what="zstd:3 vs zst:3"; fi
    target "$(le "$r" 1.00)" "full backup throughput >= pgBackRest ($what, N=$JOBS): time ratio $r (<= 1.00)"
  done
  r=$(ratio "${TIME[hf-incr]:-}" "${TIME[pgbr-incr]:-}")
  target "$(le "$r" 1.00)" "incremental backup >= pgBackRest speed: time ratio $r (<= 1.00)"
  r=$(ratio "${TIME[hf-restore]:-}" "${TIME[pgbr-restore]:-}")
  target "$(le "$r" 1.00)" "restore throughput >= pgBackRest: time ratio $r (<= 1.00)"
  if ! want delta; then
    target n/a "delta restore >= pgBackRest: not measured (BENCH_PARTS)"
  elif ((HF_DELTA)); then
    r=$(ratio "${TIME[hf-delta]:-}" "${TIME[pgbr-delta]:-}")
    target "$(le "$r" 1.00)" "delta restore >= pgBackRest: time ratio $r (<= 1.00)"
  else
    target n/a "delta restore >= pgBackRest: holdfast pg restore --delta is not implemented (pgBackRest ${TIME[pgbr-delta]:-${STATUS[pgbr-delta]:-n/a}} s)"
  fi
  r=$(ratio "${MED[hf-lat16]:-}" "${MED[pgbr-lat]:-}")
  target "$(le "$r" 1.50)" "archive-push per-call latency <= 1.5x pgBackRest (default --kdf-cost): median ratio $r, mean ratio $(ratio "${MEAN[hf-lat16]:-}" "${MEAN[pgbr-lat]:-}"), CPU per call ratio $(ratio "${CPUMED[hf-lat16]:-}" "${CPUMED[pgbr-lat]:-}") (<= 1.50)"
  r=$(ratio "${MED[hf-lat10]:-}" "${MED[pgbr-lat]:-}")
  target "$(le "$r" 1.50)" "archive-push per-call latency <= 1.5x pgBackRest [with --kdf-cost 10, for the KDF's share]: median ratio $r (<= 1.50)"
  r=$(ratio "${TOTAL[hf-burst16]:-}" "${TOTAL[pgbr-burst]:-}")
  target "$(le "$r" 1.00)" "burst of $BURST_N segments at least as fast as pgBackRest async: holdfast --async time ratio $r (<= 1.00)"
  th=$(mbps "$((BURST_N * SEG))" "${TOTAL[hf-burst16]:-}")
  if [[ -n $th ]]; then
    target "$(awk -v a="$th" -v w="$WAL_RATE" 'BEGIN { print (a + 0 >= w + 0) ? "PASS" : "FAIL" }')" "sustained archiving keeps up with pgbench: holdfast sync $th MB/s vs pgbench's WAL $WAL_RATE MB/s (-c $JOBS)"
  else
    target n/a "sustained archiving keeps up with pgbench: the holdfast burst did not complete"
  fi
  if ((n_h > 0)); then
    target "$( ((max_h < 300000000)) && echo PASS || echo FAIL)" "peak RSS < 300 MB: holdfast max $(mb "$max_h") MB ($max_h_key) over $n_h measured commands/loops"
  else
    target n/a "peak RSS < 300 MB: no holdfast command completed"
  fi
} | tee "$REPORT"
grep -qs '^TARGET FAIL' "$REPORT" && MISSED=1
log "logs of every command in $LOGS (report.txt, *.cmd, *.out, *.err, *.time, *.calls)"
((FAILED)) && { log "a measured command failed; see $LOGS/failures.txt"; exit 1; }
((MISSED)) && [[ $BENCH_STRICT == 1 ]] && exit 3
exit 0
