#!/usr/bin/env bash
# The main job on the embedded default, end to end (the README's first quick-start command):
# install holdfast and PostgreSQL 15, start a throwaway cluster that archives its WAL through
# holdfast into a local repository, take a full backup while pgbench writes, write more and
# remember the time, write again, restore to the remembered time into a new directory, start it,
# and show that it holds exactly the data as of that time. Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
[ "$(id -u)" = 0 ] || { echo "run as root: the demo creates a cluster owned by the postgres user" >&2; exit 2; }

say "Installing holdfast and PostgreSQL 15"
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
./scripts/pg-deps.sh
PGBIN=/usr/lib/postgresql/15/bin

work=$(mktemp -d /tmp/holdfast-demo.XXXXXX)
chmod 755 "$work"
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
aspg() { runuser -u postgres -- env -u NODE_EXTRA_CA_CERTS "$@"; }
cleanup() {
  for d in "$work/data" "$work/restored"; do
    [ -f "$d/postmaster.pid" ] && aspg "$PGBIN/pg_ctl" -D "$d" -w -t 30 stop -m immediate >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/repo" "$work/sock" "$work/sock2"
echo "demo password, not for production" > "$work/password"
chown -R postgres: "$work/repo" "$work/sock" "$work/sock2" "$work/password"
chmod 600 "$work/password"
hf="$(command -v node) $PWD/bin/holdfast.cjs"
# archive_command and restore_command call the native front when the build made it (it stores
# segments and hands over prefetched ones itself, and runs the Node CLI for everything else)
push=$hf
[[ -x $PWD/dist/holdfast-push ]] && push=$PWD/dist/holdfast-push
printf '[global]\nprefetch = 4\n' >"$work/holdfast.conf"
chown postgres: "$work/holdfast.conf"
export HOLDFAST_REPO="$work/repo" HOLDFAST_PASSWORD_FILE="$work/password" HOLDFAST_CONFIG=/dev/null
export PGHOST="$work/sock" PGPORT="$port" PGUSER=postgres PGDATABASE=postgres
hfpg() { aspg HOLDFAST_REPO="$HOLDFAST_REPO" HOLDFAST_PASSWORD_FILE="$HOLDFAST_PASSWORD_FILE" HOLDFAST_CONFIG=/dev/null PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres $hf "$@"; }
sql() { aspg "$PGBIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -h "$1" -p "$2" -d postgres -c "$3"; }

say "holdfast init: a local, encrypted repository in $work/repo"
hfpg init --kdf-cost 14

say "A throwaway PostgreSQL 15 cluster (initdb -k) on port $port, archiving through holdfast"
mkdir -p "$work/data" && chown postgres: "$work/data" && chmod 700 "$work/data"
aspg "$PGBIN/initdb" -k -D "$work/data" -U postgres -A trust --locale=C -E UTF8 >/dev/null
cat >> "$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work/sock'
wal_level = replica
archive_mode = on
archive_command = 'HOLDFAST_REPO=$work/repo HOLDFAST_PASSWORD_FILE=$work/password HOLDFAST_CONFIG=/dev/null $push pg archive-push --cluster main %p'
CONF
aspg "$PGBIN/pg_ctl" -D "$work/data" -l "$work/data/server.log" -w -t 60 start >/dev/null
sql "$work/sock" "$port" "CREATE TABLE orders (id int PRIMARY KEY, item text, placed timestamptz DEFAULT clock_timestamp())"
sql "$work/sock" "$port" "INSERT INTO orders (id, item) SELECT g, 'order ' || g FROM generate_series(1, 1000) g"
aspg "$PGBIN/pgbench" -h "$work/sock" -p "$port" -i -s 5 -q postgres >/dev/null 2>&1

say "holdfast pg backup --type full, while pgbench writes"
aspg "$PGBIN/pgbench" -h "$work/sock" -p "$port" -T 8 -c 2 -n postgres >/dev/null 2>&1 &
load=$!
hfpg pg backup --cluster main --type full
wait "$load"

say "More orders; remembering the time; then orders that must NOT come back"
sql "$work/sock" "$port" "INSERT INTO orders (id, item) SELECT g, 'order ' || g FROM generate_series(1001, 1500) g"
state="SELECT count(*) || ' orders, last ' || max(id) || ', md5 of all rows ' || md5(string_agg(id || ':' || item || ':' || placed, ',' ORDER BY id)) FROM orders"
expected=$(sql "$work/sock" "$port" "$state")
target=$(sql "$work/sock" "$port" "SELECT clock_timestamp()")
echo "   at $target the table holds $expected"
sleep 1.2
sql "$work/sock" "$port" "INSERT INTO orders (id, item) SELECT g, 'too late ' || g FROM generate_series(1501, 1600) g"
sql "$work/sock" "$port" "DELETE FROM orders WHERE id <= 10"
echo "   now it holds $(sql "$work/sock" "$port" "SELECT count(*) || ' orders, last ' || max(id) FROM orders")"
sql "$work/sock" "$port" "SELECT pg_switch_wal()" >/dev/null
seg=$(sql "$work/sock" "$port" "SELECT pg_walfile_name(pg_current_wal_lsn())")
echo "   waiting until PostgreSQL has archived the WAL before $seg through holdfast"
for _ in $(seq 1 120); do
  last=$(sql "$work/sock" "$port" "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
  [[ "$last" < "$seg" ]] || break
  sleep 0.5
done

say "holdfast pg restore --target-time '$target' into $work/restored"
mkdir -p "$work/restored" && chown postgres: "$work/restored"
hfpg pg restore --cluster main --target-dir "$work/restored" --target-time "$target" --target-action promote --password-file "$work/password" \
  --holdfast-command "$push" --config "$work/holdfast.conf"
port2=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
cat >> "$work/restored/postgresql.conf" <<CONF
port = $port2
unix_socket_directories = '$work/sock2'
archive_mode = off
CONF

say "Starting the restored cluster on port $port2: PostgreSQL replays WAL fetched by holdfast pg archive-get"
aspg "$PGBIN/pg_ctl" -D "$work/restored" -l "$work/sock2/server.log" -w -t 120 start >/dev/null
for _ in $(seq 1 120); do
  [ "$(sql "$work/sock2" "$port2" "SELECT pg_is_in_recovery()")" = f ] && break
  sleep 0.5
done
got=$(sql "$work/sock2" "$port2" "$state")
echo "   restored cluster holds $got"
echo "   as of $target the source held $expected"
if [ "$got" = "$expected" ]; then
  say "The restored data is exactly the data as of $target"
else
  echo "MISMATCH: restored data differs from the data as of the target time" >&2
  tail -20 "$work/sock2/server.log" >&2
  exit 1
fi
say "Backups in the repository (holdfast snapshots)"
hfpg snapshots
say "Done; stopping both clusters and removing $work"
