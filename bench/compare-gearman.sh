#!/usr/bin/env bash
# polymesh vs Gearman on the same machine, in the same run (docs/benchmarks.md).
#
#   bench/compare-gearman.sh [BUILD_DIR]   (default: ./build, or $BUILD_DIR)
#
# Installs gearman-job-server, libgearman-dev and gearman-tools when missing
# (apt-get), builds gearman-bench if needed, then runs workloads submit, e2e
# and latency against: meshd (synchronous=full), gearmand with its SQLite
# queue (-q libsqlite3) and gearmand in memory. Every server listens on
# 127.0.0.1 on a free port, gets a fresh data dir per workload, and is stopped
# afterwards. Prints the side-by-side table with the ratio polymesh/Gearman
# and writes the raw lines to $BENCH_GEARMAN_RESULTS
# (default /tmp/polymesh-gearman-results.txt).
# Knobs: RUNS (20000), LAT_RUNS (2000), SQLITE_MAX_SECONDS (60: the SQLite
# queue is slow; a workload cut short reports the rate over what completed).
set -euo pipefail
BUILD=${1:-${BUILD_DIR:-build}}
BUILD=$(cd "$BUILD" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
WORK=$(mktemp -d /tmp/polymesh-gearman.XXXXXX)
. "$HERE/lib.sh"
RESULTS=$WORK/results.txt
BENCH_GEARMAN_RESULTS=${BENCH_GEARMAN_RESULTS:-/tmp/polymesh-gearman-results.txt}
RUNS=${RUNS:-20000}
LAT_RUNS=${LAT_RUNS:-2000}
SQLITE_MAX_SECONDS=${SQLITE_MAX_SECONDS:-60}
GEARMAND_PID=

stop_gearmand() {
  [ -n "$GEARMAND_PID" ] || return 0
  kill -TERM "$GEARMAND_PID" 2>/dev/null || true
  for _ in $(seq 1 200); do
    kill -0 "$GEARMAND_PID" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$GEARMAND_PID" 2>/dev/null || true
  wait "$GEARMAND_PID" 2>/dev/null || true
  GEARMAND_PID=
}
cleanup() {
  stop_meshd
  stop_gearmand
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- prerequisites ---------------------------------------------------------------
if ! dpkg -s gearman-job-server libgearman-dev gearman-tools >/dev/null 2>&1; then
  log "installing gearman-job-server libgearman-dev gearman-tools"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get install -y gearman-job-server libgearman-dev gearman-tools >&2
fi
if [ ! -x "$GEARMAN_BENCH" ] || [ ! -x "$MESH_BENCH" ] || [ ! -x "$MESHD" ]; then
  log "building meshd mesh-bench gearman-bench in $BUILD"
  cmake -S "$SRC" -B "$BUILD" >/dev/null
  cmake --build "$BUILD" --target meshd mesh-bench gearman-bench -j"${JOBS:-1}" >&2
fi
GEARMAND=$(command -v gearmand || echo /usr/sbin/gearmand)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_gearmand NAME sqlite|memory: fresh gearmand on 127.0.0.1, sets GPORT.
start_gearmand() {
  local name=$1 mode=$2
  local dir=$WORK/$name
  mkdir -p "$dir"
  GPORT=$(free_port)
  local queue=()
  [ "$mode" = sqlite ] && queue=(-q libsqlite3 "--libsqlite3-db=$dir/gearman.db")
  "$GEARMAND" -L 127.0.0.1 -p "$GPORT" -l "$dir/gearmand.log" -P "$dir/gearmand.pid" \
    --verbose ERROR "${queue[@]}" >"$dir/stdout" 2>&1 &
  GEARMAND_PID=$!
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$GPORT") 2>/dev/null && break
    kill -0 "$GEARMAND_PID" 2>/dev/null || { cat "$dir/stdout" "$dir/gearmand.log" >&2; return 1; }
    sleep 0.05
  done
  log "gearmand $name ($mode) pid $GEARMAND_PID on 127.0.0.1:$GPORT"
}

record() { printf '%s\n' "$1" | tee -a "$RESULTS" >&2; }
log "machine: $(load_note)"

# -- polymesh --------------------------------------------------------------------
start_meshd pm-submit 64 full
record "system=polymesh $("$MESH_BENCH" submit --url "$URL" --runs "$RUNS" --clients 4 --durable full)"
stop_meshd
start_meshd pm-e2e 64 full
record "system=polymesh $("$MESH_BENCH" e2e --url "$URL" --runs "$RUNS" --clients 4 --agents 8 --slots 8 --durable full)"
stop_meshd
start_meshd pm-submit-batch 64 full
record "system=polymesh-batch $("$MESH_BENCH" submit --url "$URL" --runs "$RUNS" --clients 4 --batch 100 --durable full)"
stop_meshd
start_meshd pm-e2e-batch 64 full
record "system=polymesh-batch $("$MESH_BENCH" e2e --url "$URL" --runs "$RUNS" --clients 4 --agents 8 --slots 8 --batch 100 --durable full)"
stop_meshd
start_meshd pm-e2e-report 64 full
record "system=polymesh-report $("$MESH_BENCH" e2e --url "$URL" --runs "$RUNS" --clients 4 --agents 1 --slots 8 --batch 100 --durable full --protocol report-implicit)"
stop_meshd
start_meshd pm-latency 64 full
record "system=polymesh $("$MESH_BENCH" latency --url "$URL" --runs "$LAT_RUNS")"
stop_meshd

# -- Gearman ---------------------------------------------------------------------
for mode in sqlite memory; do
  max=180
  [ "$mode" = sqlite ] && max=$SQLITE_MAX_SECONDS
  for w in submit e2e latency; do
    start_gearmand "gm-$mode-$w" "$mode"
    case $w in
      submit) out=$("$GEARMAN_BENCH" submit --port "$GPORT" --jobs "$RUNS" --clients 4 --max-seconds "$max") ;;
      e2e) out=$("$GEARMAN_BENCH" e2e --port "$GPORT" --jobs "$RUNS" --clients 4 --workers 8 --max-seconds "$max") ;;
      latency) out=$("$GEARMAN_BENCH" latency --port "$GPORT" --jobs "$LAT_RUNS") ;;
    esac
    record "system=gearman-$mode $out"
    stop_gearmand
  done
done
cp "$RESULTS" "$BENCH_GEARMAN_RESULTS"

# -- table -----------------------------------------------------------------------
get() { # SYSTEM BENCH KEY
  local l
  l=$(grep "^system=$1 bench=$2 " "$RESULTS" | head -1 || true)
  field "$l" "$3"
}
row() { printf '| %-30s | %12s | %14s | %14s | %9s | %9s |\n' "$@"; }
echo
echo "polymesh vs Gearman ($(load_note), $(date -u +%FT%TZ))"
row "figure" "polymesh" "gearman-sqlite" "gearman-memory" "pm/sqlite" "pm/memory"
row "------------------------------" "------------" "--------------" "--------------" "---------" "---------"
figure() { # LABEL PM_BENCH GM_BENCH KEY [PM_SYSTEM]
  local a b c
  a=$(get "${5:-polymesh}" "$2" "$4"); b=$(get gearman-sqlite "$3" "$4"); c=$(get gearman-memory "$3" "$4")
  row "$1" "${a:--}" "${b:--}" "${c:--}" "$(ratio "$a" "$b")" "$(ratio "$a" "$c")"
}
figure "submit runs/s" submit gearman-submit runs_per_s
figure "submit runs/s, pm batches of 100, ids" submit gearman-submit runs_per_s polymesh-batch
figure "e2e runs/s (8 slots)" e2e gearman-e2e runs_per_s
figure "e2e runs/s, pm batch submits" e2e gearman-e2e runs_per_s polymesh-batch
figure "e2e runs/s, pm batches + report" e2e gearman-e2e runs_per_s polymesh-report
for p in p50 p90 p99 max; do
  figure "dispatch $p us" latency gearman-latency "dispatch_${p}_us"
done
for p in p50 p99; do
  figure "dispatch from send $p us" latency gearman-latency "dispatch_from_send_${p}_us"
done
for p in p50 p90 p99 max; do
  figure "submit->done $p us" latency gearman-latency "e2e_${p}_us"
done
# The client's view: pm one request (POST /v1/runs?wait=30 answers with the
# finished run) against Gearman's foreground job (submit -> result).
for p in p50 p90 p99 max; do
  a=$(get polymesh latency "one_request_${p}_us"); b=$(get gearman-sqlite gearman-latency "e2e_${p}_us")
  c=$(get gearman-memory gearman-latency "e2e_${p}_us")
  row "one request->result $p us" "${a:--}" "${b:--}" "${c:--}" "$(ratio "$a" "$b")" "$(ratio "$a" "$c")"
done
echo
echo "complete: gearman-sqlite submit=$(get gearman-sqlite gearman-submit complete) e2e=$(get gearman-sqlite gearman-e2e complete);" \
  "gearman-memory submit=$(get gearman-memory gearman-submit complete) e2e=$(get gearman-memory gearman-e2e complete);" \
  "polymesh e2e verified=$(get polymesh e2e verified)"
echo "throughput: higher is better (ratio > 1 favours polymesh); latency: lower is better (ratio < 1 favours polymesh)"
echo "raw lines: $BENCH_GEARMAN_RESULTS"
