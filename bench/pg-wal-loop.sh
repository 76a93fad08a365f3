#!/usr/bin/env bash
# Helper of bench/pg-vs-pgbackrest.sh, run as the postgres user (as PostgreSQL's archiver would):
#
#   pg-wal-loop.sh OUT LIST -- CMD [ARG...]
#
# For each WAL file path in LIST (one a line, in order), runs `CMD ARG... PATH` once, sequentially,
# under GNU time (peak RSS), and appends one line to OUT:
#   NAME MICROSECONDS PEAK_RSS_KB EXIT_CODE
# The time is taken with bash's $EPOCHREALTIME around the call (no extra fork for the clock; the
# /usr/bin/time exec adds about 1 ms to every call, the same for every tool measured). The commands'
# stdout and stderr go to OUT.log. The last line of OUT is "total MICROSECONDS" for the whole loop.
# Stops at the first failing call (exit code of that call). With LOOP_MARK_DONE=1, a successful
# call renames pg_wal/archive_status/NAME.ready beside the file to NAME.done, as PostgreSQL's
# archiver does (async archivers look at the .ready files).
set -uo pipefail
out=$1 list=$2
[[ $3 == -- ]] || { echo "usage: pg-wal-loop.sh OUT LIST -- CMD [ARG...]" >&2; exit 2; }
shift 3
: >"$out"
: >"$out.log"
start=$EPOCHREALTIME
rc=0
while read -r seg; do
  [[ -n $seg ]] || continue
  t0=$EPOCHREALTIME
  /usr/bin/time -f '%M' -o "$out.rss" "$@" "$seg" >>"$out.log" 2>&1
  rc=$?
  t1=$EPOCHREALTIME
  rss=$(tail -1 "$out.rss" 2>/dev/null)
  [[ $rss =~ ^[0-9]+$ ]] || rss=0
  echo "${seg##*/} $((10#${t1/./} - 10#${t0/./})) $rss $rc" >>"$out"
  if ((rc != 0)); then
    echo "FAILED: $* $seg (exit $rc)" >>"$out.log"
    break
  fi
  if [[ ${LOOP_MARK_DONE:-0} == 1 ]]; then
    st="$(dirname "$seg")/archive_status/${seg##*/}"
    [[ -e $st.ready ]] && mv "$st.ready" "$st.done"
  fi
done <"$list"
end=$EPOCHREALTIME
echo "total $((10#${end/./} - 10#${start/./}))" >>"$out"
rm -f "$out.rss"
exit "$rc"
