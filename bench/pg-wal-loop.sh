#!/usr/bin/env bash
# Helper of bench/pg-vs-pgbackrest.sh, run as the postgres user (as PostgreSQL's archiver would):
#
#   pg-wal-loop.sh OUT LIST -- CMD [ARG...]
#
# For each WAL file path in LIST (one a line, in order), runs `CMD ARG... PATH` once, sequentially,
# under GNU time (peak RSS), and appends one line to OUT:
#   NAME MICROSECONDS PEAK_RSS_KB EXIT_CODE CPU_MICROSECONDS
# The time is taken with bash's $EPOCHREALTIME around the call (no extra fork for the clock; the
# /usr/bin/time exec adds about 1 ms to every call, the same for every tool measured). CPU is the
# user + system time of the call's processes (bash's `times`, millisecond resolution): unlike the
# wall-clock time it hardly moves when other work shares the machine. The commands'
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
# CPU := the user + system time of this shell's finished children, in microseconds. `times` runs in
# this shell (a subshell's children would be others), and no other process is started to parse it.
us_of() { # "XmS.SSSs" -> US
  local m=${1%%m*} s=${1#*m}
  s=${s%s}
  US=$(((10#$m * 60 + 10#${s%.*}) * 1000000 + 10#${s#*.} * 1000))
}
child_cpu() {
  local self u s
  times >"$out.times"
  { read -r self; read -r u s; } <"$out.times"
  us_of "$u"
  CPU=$US
  us_of "$s"
  CPU=$((CPU + US))
}
start=$EPOCHREALTIME
rc=0
while read -r seg; do
  [[ -n $seg ]] || continue
  child_cpu
  c0=$CPU
  t0=$EPOCHREALTIME
  /usr/bin/time -f '%M' -o "$out.rss" "$@" "$seg" >>"$out.log" 2>&1
  rc=$?
  t1=$EPOCHREALTIME
  child_cpu
  c1=$CPU
  rss=$(tail -1 "$out.rss" 2>/dev/null)
  [[ $rss =~ ^[0-9]+$ ]] || rss=0
  echo "${seg##*/} $((10#${t1/./} - 10#${t0/./})) $rss $rc $((c1 - c0))" >>"$out"
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
rm -f "$out.rss" "$out.times"
exit "$rc"
