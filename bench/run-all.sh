#!/usr/bin/env bash
# Runs every polymesh benchmark (docs/benchmarks.md) and prints a table.
#
#   bench/run-all.sh [BUILD_DIR]        (default: ./build, or $BUILD_DIR)
#
# Each workload gets a fresh meshd on 127.0.0.1:0 with a temporary data dir,
# stopped afterwards. The machine-readable lines go to $WORK/results.txt and
# are copied to $BENCH_RESULTS (default /tmp/polymesh-bench-results.txt);
# each agents run's wake times go next to it (...-wakes-N.txt, `--trace`).
# Knobs: RUNS (20000), LAT_RUNS (2000), AGENT_COUNTS ("1000 5000 10000"),
# RESTART_FINISHED (1000000), RESTART_UNFINISHED (10000), SKIP (words among
# micro submit latency e2e e2e-report e2e-sdk agents restart).
set -euo pipefail
BUILD=${1:-${BUILD_DIR:-build}}
BUILD=$(cd "$BUILD" && pwd)
WORK=$(mktemp -d /tmp/polymesh-bench.XXXXXX)
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
RESULTS=$WORK/results.txt
BENCH_RESULTS=${BENCH_RESULTS:-/tmp/polymesh-bench-results.txt}
RUNS=${RUNS:-20000}
LAT_RUNS=${LAT_RUNS:-2000}
AGENT_COUNTS=${AGENT_COUNTS:-1000 5000 10000}
RESTART_FINISHED=${RESTART_FINISHED:-1000000}
RESTART_UNFINISHED=${RESTART_UNFINISHED:-10000}
SKIP=${SKIP:-}

cleanup() {
  stop_meshd
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for bin in "$MESHD" "$MESH_BENCH" "$MICRO_BENCH" "$MESH_AGENT"; do
  [ -x "$bin" ] || { echo "missing $bin: cmake --build $BUILD --target meshd mesh-bench polymesh_micro_bench mesh-agent" >&2; exit 1; }
done
skip() { case " $SKIP " in *" $1 "*) return 0 ;; esac; return 1; }
record() { printf '%s\n' "$1" | tee -a "$RESULTS"; }
T0=$(date +%s)
log "machine: $(load_note); results in $RESULTS"

if ! skip micro; then
  log "micro: selector and assignment"
  "$MICRO_BENCH" --benchmark_min_time=0.2 2>&1 | tee "$WORK/micro.txt" >&2
  grep '^bench=micro' "$WORK/micro.txt" >>"$RESULTS"
fi

if ! skip submit; then
  for sync in full normal; do
    start_meshd "submit-$sync" 64 "$sync"
    log "submit: $RUNS runs, 4 clients, one run per request, synchronous=$sync"
    record "$("$MESH_BENCH" submit --url "$URL" --runs "$RUNS" --clients 4 --durable "$sync")"
    stop_meshd
  done
  # Batches ask for Prefer: return=minimal (ids only); the last row shows
  # what full answers cost.
  for spec in 100:minimal 1000:minimal 1000:full; do
    batch=${spec%:*} answer=${spec#*:}
    start_meshd "submit-batch-$batch-$answer" 64 full
    log "submit: $RUNS runs, 4 clients, POST /v1/runs/batch of $batch, $answer answers, synchronous=full"
    record "$("$MESH_BENCH" submit --url "$URL" --runs "$RUNS" --clients 4 --batch "$batch" --answer "$answer" --durable full)"
    stop_meshd
  done
fi

if ! skip latency; then
  start_meshd latency 64 full
  log "latency: $LAT_RUNS sequential runs, one idle agent"
  record "$("$MESH_BENCH" latency --url "$URL" --runs "$LAT_RUNS") durable=full"
  stop_meshd
fi

if ! skip e2e; then
  start_meshd e2e 64 full
  log "e2e: $RUNS runs, 4 clients, 8 protocol-level agent processes x 1 slot"
  record "$("$MESH_BENCH" e2e --url "$URL" --runs "$RUNS" --clients 4 --agents 8 --slots 8 --batch 100 --durable full)"
  stop_meshd
fi

if ! skip e2e-report; then
  for proto in report report-implicit; do
    start_meshd "e2e-$proto" 64 full
    log "e2e-$proto: $RUNS runs, 4 clients, 1 protocol-level agent process x 8 slots over POST /v1/agents/{id}/report"
    record "$("$MESH_BENCH" e2e --url "$URL" --runs "$RUNS" --clients 4 --agents 1 --slots 8 --batch 100 --durable full --protocol "$proto")"
    stop_meshd
  done
fi

if ! skip e2e-sdk; then
  start_meshd e2e-sdk 64 full
  log "e2e-sdk: $RUNS runs, 4 clients, 8 mesh-agent processes x 1 slot (plan noop)"
  reg=$("$MESH_BENCH" token --url "$URL" --kind registration)
  AGENT_PIDS=()
  for i in 1 2 3 4 5 6 7 8; do
    d=$WORK/agent-$i
    mkdir -p "$d/work"
    printf 'mesh:\n  url: %s\n  registration_token: "%s"\nagent:\n  name: bench-sdk-%s\n  labels: {bench: "1"}\n  capacity: 1\n  work_dir: %s\nplans:\n  noop: {}\n' \
      "$URL" "$reg" "$i" "$d/work" >"$d/agent.yaml"
    chmod 600 "$d/agent.yaml"
    "$MESH_AGENT" --config "$d/agent.yaml" >"$d/stdout" 2>"$d/stderr" &
    AGENT_PIDS+=($!)
  done
  record "$("$MESH_BENCH" e2e --url "$URL" --runs "$RUNS" --clients 4 --agents 0 --expect-agents 8 --batch 100 --durable full) agent=mesh-agent"
  kill -TERM "${AGENT_PIDS[@]}" 2>/dev/null || true
  wait "${AGENT_PIDS[@]}" 2>/dev/null || true
  stop_meshd
fi

if ! skip agents; then
  for n in $AGENT_COUNTS; do
    start_meshd "agents-$n" $((n + 64)) full
    log "agents: $n simulated long-polling agents"
    record "$("$MESH_BENCH" agents --url "$URL" --pid "$MESHD_PID" --agents "$n" --rate 200 \
      --wake-seconds 5 --idle-seconds 10 --trace "${BENCH_RESULTS%.txt}-wakes-$n.txt")"
    stop_meshd
  done
fi

if ! skip restart; then
  mkdir -p "$WORK/restart"
  log "restart: $RESTART_FINISHED finished + $RESTART_UNFINISHED unfinished runs"
  record "$("$MESH_BENCH" restart --meshd "$MESHD" --dir "$WORK/restart" \
    --finished "$RESTART_FINISHED" --unfinished "$RESTART_UNFINISHED" --repeat 3)"
fi

cp "$RESULTS" "$BENCH_RESULTS"
T1=$(date +%s)

# -- table -----------------------------------------------------------------------
line() { grep "^bench=$1 " "$RESULTS" | grep -- "$2" | head -1 || true; }
row() { printf '| %-38s | %20s | %-16s |\n' "$1" "$2" "$3"; }
echo
echo "polymesh benchmarks ($(load_note), $((T1 - T0)) s, $(date -u +%FT%TZ))"
row "figure" "measured" "target"
row "--------------------------------------" "--------------------" "----------------"
if l=$(line micro 'BM_assign_place_one/busy_pct:0 ') && [ -n "$l" ]; then
  row "assign place(1), 10k agents idle" "$(field "$l" ns_per_op | cut -d. -f1) / $(field "$l" cpu_ns_per_op | cut -d. -f1) ns" "wall / cpu"
fi
if l=$(line micro 'BM_assign_place_one/busy_pct:99 ') && [ -n "$l" ]; then
  row "assign place(1), 99% agents busy" "$(field "$l" ns_per_op | cut -d. -f1) / $(field "$l" cpu_ns_per_op | cut -d. -f1) ns" "wall / cpu"
fi
if l=$(line micro 'BM_assign_new_class/ranked_all:0/') && [ -n "$l" ]; then
  row "assign new kind: 1st run, 10k agents" "$(field "$l" cpu_ns_per_op | cut -d. -f1) ns" "cpu"
fi
if l=$(line micro 'BM_assign_new_class/ranked_all:1/') && [ -n "$l" ]; then
  row "assign new kind: rank all 10k agents" "$(field "$l" cpu_ns_per_op | cut -d. -f1) ns" "cpu, in steps"
fi
if l=$(line micro 'BM_selector_parse_complex ') && [ -n "$l" ]; then
  row "selector parse (6 requirements)" "$(field "$l" ns_per_op | cut -d. -f1) / $(field "$l" cpu_ns_per_op | cut -d. -f1) ns" "wall / cpu"
fi
if l=$(line micro 'BM_selector_match_complex ') && [ -n "$l" ]; then
  row "selector match (6 requirements)" "$(field "$l" ns_per_op | cut -d. -f1) / $(field "$l" cpu_ns_per_op | cut -d. -f1) ns" "wall / cpu"
fi
if l=$(line submit 'batch=1 .*durable=full') && [ -n "$l" ]; then
  row "submit runs/s, 1 per request (full)" "$(field "$l" runs_per_s)" ">= 20000"
fi
if l=$(line submit 'batch=1 .*durable=normal') && [ -n "$l" ]; then
  row "submit runs/s, 1 per request (normal)" "$(field "$l" runs_per_s)" ""
fi
for spec in 100:minimal 1000:minimal 1000:full; do
  batch=${spec%:*} answer=${spec#*:}
  if l=$(line submit "batch=$batch answer=$answer .*durable=full") && [ -n "$l" ]; then
    row "submit runs/s, batches of $batch, $answer" "$(field "$l" runs_per_s)" ">= 20000"
  fi
done
if l=$(line latency .) && [ -n "$l" ]; then
  for p in p50 p90 p99 max; do
    row "dispatch $p (201 -> agent holds)" "$(field "$l" dispatch_${p}_us) us" "$([ $p = p99 ] && echo '<= 1000 us')"
  done
  for p in p50 p99; do
    row "submit -> success $p" "$(field "$l" e2e_${p}_us) us" ""
  done
  for p in p50 p99; do
    row "one request (?wait) -> result $p" "$(field "$l" one_request_${p}_us) us" ""
  done
fi
if l=$(line e2e ' agents=8 ') && [ -n "$l" ]; then
  row "e2e runs/s, protocol agents (verified=$(field "$l" verified))" "$(field "$l" runs_per_s)" ">= Gearman mem"
fi
if l=$(line e2e 'protocol=report runs=') && [ -n "$l" ]; then
  row "e2e runs/s, report, start confirmed (verified=$(field "$l" verified))" "$(field "$l" runs_per_s)" ">= Gearman mem"
fi
if l=$(line e2e 'protocol=report-implicit ') && [ -n "$l" ]; then
  row "e2e runs/s, report, start with finish (verified=$(field "$l" verified))" "$(field "$l" runs_per_s)" ">= Gearman mem"
fi
if l=$(line e2e 'agent=mesh-agent') && [ -n "$l" ]; then
  row "e2e runs/s, 8 mesh-agents (verified=$(field "$l" verified))" "$(field "$l" runs_per_s)" ">= Gearman mem"
fi
for n in $AGENT_COUNTS; do
  if l=$(line agents "agents=$n ") && [ -n "$l" ]; then
    row "$n agents: meshd RSS" "$(field "$l" rss_connected_mb) MB" "<= 512 MB"
    row "$n agents: idle CPU" "$(field "$l" idle_cpu_pct) %" "<= 10 %"
    row "$n agents: wake p50 / p99" "$(field "$l" wake_p50_us) / $(field "$l" wake_p99_us) us" "p99 <= 2000 us"
    row "$n agents: wake p50 / p99, kernel times" "$(field "$l" wake_kernel_p50_us) / $(field "$l" wake_kernel_p99_us) us" ""
    row "$n agents: connect all / register" "$(field "$l" connect_s) / $(field "$l" register_s) s" ""
  fi
done
if l=$(line restart .) && [ -n "$l" ]; then
  row "restart 1M runs: listening" "$(field "$l" listening_s) s" ""
  row "restart 1M runs: /healthz answers" "$(field "$l" healthz_s) s" "<= 2 s"
  row "restart 1M runs: /readyz answers" "$(field "$l" readyz_s) s" ""
fi
echo
echo "raw lines: $BENCH_RESULTS"
