#!/usr/bin/env bash
# holdfast vs restic: file backup, side by side in one run (BRIEF §3 targets).
#
#   bench/files-vs-restic.sh                      2 GB comparison (initial, 5% changed, unchanged)
#   BENCH_GB=5 bench/files-vs-restic.sh           bigger data set
#   BENCH_MEMORY_GB=5 bench/files-vs-restic.sh    memory mode: holdfast peak RSS on a 5 GB mixed tree
#                                                 (restic alongside for reference; add BENCH_COMPARE=1
#                                                 to also run the comparison in the same call)
#
# Environment:
#   BENCH_GB=2            size of the comparison data set in GB (10^9 bytes; fractions allowed)
#   BENCH_DIR=/tmp/holdfast-bench   work directory (data sets, repositories, logs)
#   BENCH_SEED=1          seed of the data set and of the changes
#   BENCH_MEMORY_GB=      memory mode (see above)
#   BENCH_COMPARE=        with BENCH_MEMORY_GB: 1 = also run the comparison
#   BENCH_CLEAN=0         1 = also delete the generated data sets and logs at the end
#   BENCH_STRICT=0        1 = exit 3 when a target is missed
#   BENCH_ROOT=           holdfast checkout to measure (default: the one holding this script)
#
# What it does: installs restic (Debian) and GNU time when missing, builds holdfast when needed,
# generates (or reuses) a seeded data set with bench/gen-data.mjs, then for holdfast
# (--compression zstd:3) and restic 0.14 (repository v2, default compression "auto" = zstd):
#   1. initial backup into a fresh repository
#   2. change 5% of the data (in-place overwrites and appends in large/medium files, rewritten,
#      new and deleted small files) and back up again (the previous snapshot is the parent for both)
#   3. back up again with no change
# Each backup runs after a warm-up read of the data (both tools see a warm page cache) under
# /usr/bin/time; wall time, peak RSS and the repository size (du -sb) are tabulated with the
# ratio holdfast/restic, then one line per BRIEF §3 target. Repositories are removed at the end.
# Timed commands run without NODE_EXTRA_CA_CERTS (it adds ~40 ms per node start here, and
# production does not have it). MB = 10^6 bytes throughout.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=${BENCH_ROOT:-$(dirname "$HERE")}
BENCH_GB=${BENCH_GB:-2}
BENCH_DIR=${BENCH_DIR:-/tmp/holdfast-bench}
BENCH_SEED=${BENCH_SEED:-1}
BENCH_MEMORY_GB=${BENCH_MEMORY_GB:-}
BENCH_COMPARE=${BENCH_COMPARE:-}
BENCH_CLEAN=${BENCH_CLEAN:-0}
BENCH_STRICT=${BENCH_STRICT:-0}

# ---------------------------------------------------------------- environment
unset NODE_EXTRA_CA_CERTS
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(HOLDFAST_|RESTIC_)' || true)
export HOLDFAST_CONFIG=/dev/null
export HOLDFAST_PASSWORD=holdfast-bench-password
export RESTIC_PASSWORD=holdfast-bench-password
export RESTIC_PROGRESS_FPS=0.2

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- dependencies
install_deps() {
  local pkgs=()
  command -v restic >/dev/null 2>&1 || pkgs+=(restic)
  [[ -x /usr/bin/time ]] || pkgs+=(time)
  command -v node >/dev/null 2>&1 || die "node is not installed"
  ((${#pkgs[@]} == 0)) && return 0
  log "installing ${pkgs[*]} (apt-get)"
  [[ $(id -u) == 0 ]] || die "need root to apt-get install ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q "${pkgs[@]}" >"$BENCH_DIR/apt.log" 2>&1; then
    apt-get update -q >>"$BENCH_DIR/apt.log" 2>&1 || true
    apt-get install -y -q "${pkgs[@]}" >>"$BENCH_DIR/apt.log" 2>&1 || { tail -20 "$BENCH_DIR/apt.log" >&2; die "apt-get install ${pkgs[*]} failed"; }
  fi
}

build_holdfast() {
  if [[ ! -d $ROOT/node_modules ]]; then
    log "npm ci"
    (cd "$ROOT" && npm ci --no-audit --no-fund >"$BENCH_DIR/npm-ci.log" 2>&1) || { tail -20 "$BENCH_DIR/npm-ci.log" >&2; die "npm ci failed"; }
  fi
  if [[ ! -f $ROOT/dist/holdfast.mjs ]] || [[ -n $(find "$ROOT/src" "$ROOT/scripts/build.mjs" -newer "$ROOT/dist/holdfast.mjs" -print -quit 2>/dev/null) ]]; then
    log "npm run build"
    if ! (cd "$ROOT" && npm run build >"$BENCH_DIR/build.log" 2>&1); then
      # A type error (often in a test file) fails `npm run build` before bundling; the benchmark
      # only needs the bundle, so fall back to esbuild alone and say so.
      tail -20 "$BENCH_DIR/build.log" >&2
      log "WARNING: npm run build failed (see above); bundling with scripts/build.mjs alone (no type check)"
      (cd "$ROOT" && node scripts/build.mjs >>"$BENCH_DIR/build.log" 2>&1) || { tail -20 "$BENCH_DIR/build.log" >&2; die "scripts/build.mjs failed"; }
      BUILD_NOTE=" [built without type check: npm run build failed]"
    fi
  fi
  # Run a private copy of the build, so that a rebuild in the checkout during the run (it empties
  # dist/ first) cannot swap or break the binary between steps.
  rm -rf "$HFBUILD"
  mkdir -p "$HFBUILD"
  cp -a "$ROOT/bin" "$ROOT/dist" "$ROOT/package.json" "$HFBUILD/"
  ln -s "$ROOT/node_modules" "$HFBUILD/node_modules"
  "${HF[@]}" --version >/dev/null 2>&1 || die "the copied build does not start: ${HF[*]} --version"
}

HFBUILD="$BENCH_DIR/holdfast-build"
BUILD_NOTE=""
HF=(node "$HFBUILD/bin/holdfast.cjs")

# ---------------------------------------------------------------- helpers
gb_to_bytes() { awk -v g="$1" 'BEGIN { printf "%.0f", g * 1e9 }'; }
mb() { awk -v b="$1" 'BEGIN { if (b == "") print "n/a"; else printf "%.1f", b / 1e6 }'; }
# ratio A B: A/B with 2 decimals, n/a when either is missing
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
dusize() { du -sb "$1" 2>/dev/null | awk '{ print $1 }'; }

check_space() { # DATA_DIR DATA_BYTES: room for the data set (minus what exists) and two repositories
  local avail have=0 need
  avail=$(df -B1 --output=avail "$BENCH_DIR" | tail -1 | tr -d ' ')
  [[ -d $1 ]] && have=$(dusize "$1")
  need=$(($2 - have + $2 * 22 / 10 + (512 << 20)))
  if ((avail < need)); then
    die "not enough space in $BENCH_DIR: $(mb "$avail") MB free, about $(mb "$need") MB needed"
  fi
}

warmup() { # read the whole tree so both tools start from a warm page cache
  find "$1" -type f -print0 | xargs -0 -r -n 2000 -P 2 cat >/dev/null
}

declare -A TIME RSS SIZE ADDED STATUS
FAILED=0

# measure KEY REPO DATA CMD...: warm-up, run CMD under /usr/bin/time, record wall time, peak RSS,
# repository size and bytes added.
measure() {
  local key=$1 repo=$2 data=$3; shift 3
  local before rc=0
  before=$(dusize "$repo")
  warmup "$data"
  log "$key: $*"
  /usr/bin/time -f '%e %M' -o "$LOGS/$key.time" "$@" >"$LOGS/$key.out" 2>"$LOGS/$key.err" || rc=$?
  local sec="" kb=0
  read -r sec kb < <(tail -1 "$LOGS/$key.time" 2>/dev/null) || true
  [[ $kb =~ ^[0-9]+$ ]] || kb=0
  SIZE[$key]=$(dusize "$repo")
  if ((rc != 0)); then
    STATUS[$key]="FAILED (exit $rc)"
    FAILED=1
    {
      echo "!! $key FAILED with exit code $rc"
      echo "!! command: $*"
      echo "!! stderr (last 30 lines):"
      tail -30 "$LOGS/$key.err" | sed 's/^/!!   /'
    } | tee -a "$LOGS/failures.txt" >&2
    return 0
  fi
  STATUS[$key]=ok
  TIME[$key]=$sec
  RSS[$key]=$((kb * 1024))
  ADDED[$key]=$((SIZE[$key] - before))
  log "$key: ${sec} s, peak RSS $(mb "${RSS[$key]}") MB, repository $(mb "${SIZE[$key]}") MB (+${ADDED[$key]} bytes)"
}

hf_init() { rm -rf "$1"; "${HF[@]}" init --repo "$1" >"$LOGS/$2.out" 2>"$LOGS/$2.err" || { cat "$LOGS/$2.err" >&2; die "holdfast init --repo $1 failed"; }; }
restic_init() { rm -rf "$1" "$RCACHE"; restic -r "$1" --cache-dir "$RCACHE" init --repository-version 2 >"$LOGS/$2.out" 2>"$LOGS/$2.err" || { cat "$LOGS/$2.err" >&2; die "restic init -r $1 failed"; }; }
hf_backup() { measure "$1" "$HFREPO" "$DATA" "${HF[@]}" backup "$DATA" --repo "$HFREPO" --compression zstd:3 --json; }
restic_backup() { measure "$1" "$RREPO" "$DATA" restic -r "$RREPO" --cache-dir "$RCACHE" backup "$DATA" --json; }

versions() {
  local hv rv commit
  hv=$("${HF[@]}" --version 2>/dev/null | head -1 | awk '{ print $NF }')
  rv=$(restic version 2>/dev/null | awk '{ print $2 }')
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
  if [[ -n $(git -C "$ROOT" status --porcelain -- src package.json package-lock.json 2>/dev/null) ]]; then commit="$commit+uncommitted changes in src"; fi
  commit="$commit$BUILD_NOTE"
  echo "holdfast $hv (git $commit), restic $rv, node $(node --version), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GB RAM", $2 * 1024 / 1e9 }' /proc/meminfo), load avg at start $LOAD0, at end $(cut -d' ' -f1-3 /proc/loadavg)"
}

# row LABEL METRIC HF RESTIC RATIO
row() { printf '%-20s %-26s %14s %14s %8s\n' "$@"; }

# ---------------------------------------------------------------- comparison
run_compare() {
  local bytes files
  DATA="$BENCH_DIR/data-${BENCH_GB}g-s$BENCH_SEED"
  bytes=$(gb_to_bytes "$BENCH_GB")
  check_space "$DATA" "$bytes"
  node "$HERE/gen-data.mjs" generate "$DATA" "$bytes" "$BENCH_SEED" 2>&1 | tee -a "$LOGS/data.txt" >&2
  HFREPO="$BENCH_DIR/repo-holdfast"
  RREPO="$BENCH_DIR/repo-restic"
  RCACHE="$BENCH_DIR/restic-cache"
  hf_init "$HFREPO" hf-init
  restic_init "$RREPO" restic-init

  local steps=(initial changed unchanged)
  local -A data_bytes data_files
  read -r data_bytes[initial] data_files[initial] < <(node "$HERE/gen-data.mjs" size "$DATA")
  hf_backup hf-initial
  restic_backup restic-initial

  node "$HERE/gen-data.mjs" mutate "$DATA" "$bytes" "$BENCH_SEED" 2>&1 | tee -a "$LOGS/data.txt" >&2
  read -r data_bytes[changed] data_files[changed] < <(node "$HERE/gen-data.mjs" size "$DATA")
  data_bytes[unchanged]=${data_bytes[changed]}
  data_files[unchanged]=${data_files[changed]}
  local mutation
  mutation=$(tail -1 "$LOGS/data.txt" | sed 's/^mutated [^:]*: //')
  hf_backup hf-changed
  restic_backup restic-changed

  hf_backup hf-unchanged
  restic_backup restic-unchanged

  "${HF[@]}" stats --repo "$HFREPO" --json >"$LOGS/hf-stats.json" 2>>"$LOGS/hf-stats.err" || true
  restic -r "$RREPO" --cache-dir "$RCACHE" stats --mode raw-data --json >"$LOGS/restic-stats.json" 2>>"$LOGS/restic-stats.err" || true

  local report="$LOGS/report.txt"
  {
    echo
    echo "== holdfast vs restic: file backup, $(mb "${data_bytes[initial]}") MB in ${data_files[initial]} files (BENCH_GB=$BENCH_GB, seed $BENCH_SEED)"
    echo "== $(versions)"
    echo "== holdfast --compression zstd:3; restic repository v2, compression auto (zstd); warm page cache; MB = 10^6 bytes"
    echo "== step 2 changes: $mutation"
    echo
    row "step" "metric" "holdfast" "restic" "hf/restic"
    row "--------------------" "--------------------------" "--------------" "--------------" "--------"
    local s label h r
    for s in "${steps[@]}"; do
      case $s in
        initial) label="1 initial backup" ;;
        changed) label="2 after 5% change" ;;
        unchanged) label="3 no change" ;;
      esac
      h=hf-$s r=restic-$s
      local tp_h="" tp_r=""
      [[ -n ${TIME[$h]:-} ]] && tp_h=$(awk -v b="${data_bytes[$s]}" -v t="${TIME[$h]}" 'BEGIN { if (t > 0) printf "%.1f", b / 1e6 / t; else print "inf" }')
      [[ -n ${TIME[$r]:-} ]] && tp_r=$(awk -v b="${data_bytes[$s]}" -v t="${TIME[$r]}" 'BEGIN { if (t > 0) printf "%.1f", b / 1e6 / t; else print "inf" }')
      row "$label" "wall time (s)" "${TIME[$h]:-${STATUS[$h]}}" "${TIME[$r]:-${STATUS[$r]}}" "$(ratio "${TIME[$h]:-}" "${TIME[$r]:-}")"
      row "" "throughput (MB/s, data)" "${tp_h:-n/a}" "${tp_r:-n/a}" "$(ratio "$tp_h" "$tp_r")"
      row "" "repository size (MB)" "$(mb "${SIZE[$h]:-}")" "$(mb "${SIZE[$r]:-}")" "$(ratio "${SIZE[$h]:-}" "${SIZE[$r]:-}")"
      row "" "added to repository (B)" "${ADDED[$h]:-n/a}" "${ADDED[$r]:-n/a}" "$(ratio "${ADDED[$h]:-}" "${ADDED[$r]:-}")"
      row "" "peak RSS (MB)" "$(mb "${RSS[$h]:-}")" "$(mb "${RSS[$r]:-}")" "$(ratio "${RSS[$h]:-}" "${RSS[$r]:-}")"
    done
    echo "(throughput = data set bytes / wall time; for steps 2 and 3 most files are skipped as unchanged)"
    echo
    echo "== BRIEF §3 targets"
    local verdict ratio_v
    for s in "${steps[@]}"; do
      ratio_v=$(ratio "${TIME[hf-$s]:-}" "${TIME[restic-$s]:-}")
      verdict=$(awk -v x="$ratio_v" 'BEGIN { if (x == "n/a") print "N/A"; else if (x + 0 <= 1.0) print "PASS"; else print "FAIL" }')
      target "$verdict" "$(printf 'throughput >= restic (%s backup): time ratio %s (<= 1.00)' "$s" "$ratio_v")"
    done
    for s in initial unchanged; do
      ratio_v=$(ratio "${SIZE[hf-$s]:-}" "${SIZE[restic-$s]:-}")
      verdict=$(awk -v x="$ratio_v" 'BEGIN { if (x == "n/a") print "N/A"; else if (x + 0 <= 1.0) print "PASS"; else print "FAIL" }')
      target "$verdict" "$(printf 'repository no larger than restic (after %s): %s vs %s MB, ratio %s (<= 1.00)' \
        "$([[ $s == initial ]] && echo 'backup 1' || echo 'backups 1-3')" "$(mb "${SIZE[hf-$s]:-}")" "$(mb "${SIZE[restic-$s]:-}")" "$ratio_v")"
    done
    local max_h=0 max_r=0 k any=0
    for s in "${steps[@]}"; do
      k=${RSS[hf-$s]:-}; [[ -n $k ]] && { any=1; ((k > max_h)) && max_h=$k; }
      k=${RSS[restic-$s]:-}; [[ -n $k ]] && ((k > max_r)) && max_r=$k
    done
    if ((any)); then
      verdict=$( ((max_h < 300000000)) && echo PASS || echo FAIL)
      target "$verdict" "peak RSS < 300 MB: holdfast max $(mb "$max_h") MB over the 3 backups (restic max $(mb "$max_r") MB)"
    else
      target N/A "peak RSS < 300 MB: no holdfast backup completed"
    fi
    if [[ -n ${ADDED[hf-unchanged]:-} ]]; then
      local pct
      pct=$(awk -v a="${ADDED[hf-unchanged]}" -v b="${data_bytes[unchanged]}" 'BEGIN { printf "%.4f", 100 * a / b }')
      verdict=$(awk -v p="$pct" 'BEGIN { print (p < 1.0) ? "PASS" : "FAIL" }')
      target "$verdict" "unchanged backup adds < 1% of the data: holdfast +${ADDED[hf-unchanged]} bytes = ${pct}% (restic +${ADDED[restic-unchanged]:-n/a} bytes)"
    else
      target N/A "unchanged backup adds < 1% of the data: holdfast backup 3 did not complete"
    fi
    if [[ -s $LOGS/hf-stats.json ]]; then
      echo
      echo "holdfast stats: $(tr -d ' \n' <"$LOGS/hf-stats.json")"
    fi
    if [[ -s $LOGS/restic-stats.json ]]; then
      echo "restic stats (raw-data): $(tr -d ' \n' <"$LOGS/restic-stats.json")"
    fi
  } | tee "$report"
  rm -rf "$HFREPO" "$RREPO" "$RCACHE"
}

MISSED=0
target() { # VERDICT TEXT
  printf 'TARGET %-4s %s\n' "$1" "$2"
  [[ $1 == FAIL ]] && MISSED=1
  return 0
}

# ---------------------------------------------------------------- memory mode
run_memory() {
  local bytes gb=$BENCH_MEMORY_GB
  DATA="$BENCH_DIR/data-${gb}g-s$BENCH_SEED"
  bytes=$(gb_to_bytes "$gb")
  check_space "$DATA" "$bytes"
  node "$HERE/gen-data.mjs" generate "$DATA" "$bytes" "$BENCH_SEED" 2>&1 | tee -a "$LOGS/data.txt" >&2
  local data_bytes data_files
  read -r data_bytes data_files < <(node "$HERE/gen-data.mjs" size "$DATA")
  HFREPO="$BENCH_DIR/repo-holdfast-mem"
  RREPO="$BENCH_DIR/repo-restic-mem"
  RCACHE="$BENCH_DIR/restic-cache-mem"
  hf_init "$HFREPO" hf-mem-init
  restic_init "$RREPO" restic-mem-init
  hf_backup hf-mem
  restic_backup restic-mem
  {
    echo
    echo "== memory: backup of $(mb "$data_bytes") MB in $data_files files (BENCH_MEMORY_GB=$gb, seed $BENCH_SEED) into a fresh repository"
    echo "== $(versions)"
    echo "== holdfast --compression zstd:3; restic repository v2, compression auto (zstd); warm page cache; MB = 10^6 bytes"
    echo
    row "step" "metric" "holdfast" "restic" "hf/restic"
    row "--------------------" "--------------------------" "--------------" "--------------" "--------"
    row "initial backup" "wall time (s)" "${TIME[hf-mem]:-${STATUS[hf-mem]}}" "${TIME[restic-mem]:-${STATUS[restic-mem]}}" "$(ratio "${TIME[hf-mem]:-}" "${TIME[restic-mem]:-}")"
    row "" "repository size (MB)" "$(mb "${SIZE[hf-mem]:-}")" "$(mb "${SIZE[restic-mem]:-}")" "$(ratio "${SIZE[hf-mem]:-}" "${SIZE[restic-mem]:-}")"
    row "" "peak RSS (MB)" "$(mb "${RSS[hf-mem]:-}")" "$(mb "${RSS[restic-mem]:-}")" "$(ratio "${RSS[hf-mem]:-}" "${RSS[restic-mem]:-}")"
    echo
    if [[ -n ${RSS[hf-mem]:-} ]]; then
      target "$( ((RSS[hf-mem] < 300000000)) && echo PASS || echo FAIL)" "peak RSS < 300 MB on a $gb GB mixed tree: holdfast $(mb "${RSS[hf-mem]}") MB (restic $(mb "${RSS[restic-mem]:-}") MB)"
    else
      target N/A "peak RSS < 300 MB on a $gb GB mixed tree: holdfast backup did not complete"
    fi
  } | tee "$LOGS/report-memory.txt"
  rm -rf "$HFREPO" "$RREPO" "$RCACHE"
}

# ---------------------------------------------------------------- main
mkdir -p "$BENCH_DIR"
LOGS="$BENCH_DIR/logs/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$LOGS"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
install_deps
build_holdfast
log "logs in $LOGS"

if [[ -n $BENCH_MEMORY_GB ]]; then
  [[ $BENCH_COMPARE == 1 ]] && run_compare
  run_memory
else
  run_compare
fi
# the pipelines into tee run in subshells: recompute MISSED from the reports
grep -qs '^TARGET FAIL' "$LOGS"/report*.txt && MISSED=1

if [[ $BENCH_CLEAN == 1 ]]; then
  log "BENCH_CLEAN=1: removing $BENCH_DIR"
  rm -rf "$BENCH_DIR"
else
  rm -rf "$HFBUILD"
fi
((FAILED)) && { log "a backup command failed; see $LOGS/failures.txt"; exit 1; }
((MISSED)) && [[ $BENCH_STRICT == 1 ]] && exit 3
exit 0
