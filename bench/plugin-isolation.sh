#!/usr/bin/env bash
# What plugin isolation costs per run (docs/plugins.md, "Isolation"): one
# mesh-agent with 8 slots and the example plugin, against a fresh meshd.
#
#   bench/plugin-isolation.sh [BUILD_DIR] [PLAN]    (default: ./build, hello)
#
# PLAN is `hello` (the example plugin, isolation process), `hello-none` (the
# same plugin with isolation none) or a built-in plan such as `noop`. Prints
# two machine-readable lines: runs submitted one at a time (start to finish
# as the mesh recorded it, p50/p90) and a batch through the 8 slots (runs/s
# from the submit to the last finish). Knobs: ONE (50), BATCH (500),
# MESH_AGENT, MESHD. Needs curl, jq and python3.
set -euo pipefail
BUILD=${1:-${BUILD_DIR:-build}}
BUILD=$(cd "$BUILD" && pwd)
PLAN=${2:-hello}
ONE=${ONE:-50}
BATCH=${BATCH:-500}
WORK=$(mktemp -d /tmp/polymesh-plugin-bench.XXXXXX)
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
trap stop_all EXIT
trap 'exit 130' INT TERM

plugin=$BUILD/agent-sdk/polymesh_hello_plugin.so
case $PLAN in
  hello) plugins="[$plugin]"; plan=hello ;;
  hello-none) plugins="[{path: $plugin, isolation: none}]"; plan=hello ;;
  *) plugins="[]"; plan=$PLAN ;;
esac

start_meshd plugin-isolation 64 full
api() { # api METHOD PATH [JSON]
  curl -sSf -X "$1" "$URL$2" -H "Authorization: Bearer $POLYMESH_ADMIN_TOKEN" \
    ${3:+-H 'Content-Type: application/json' -d "$3"}
}
start_agent bench-plugin 8 "plugins: $plugins
plans: {$plan: {}}"
for _ in $(seq 1 200); do
  [ "$(api GET /v1/agents/bench-plugin 2>/dev/null | jq -r .status)" = online ] && break
  kill -0 "$AGENT_PID" 2>/dev/null || { cat "$WORK/agent/stderr" >&2; exit 1; }
  sleep 0.05
done
log "plugin-isolation: plan $PLAN, $ONE runs one at a time, then $BATCH through 8 slots"

ended() { # runs in a terminal status
  api GET /metrics | awk '/^polymesh_runs\{status="(success|error|canceled)"\}/ {s += $2} END {print s + 0}'
}

runs=()
for _ in $(seq 1 "$ONE"); do
  id=$(api POST /v1/runs "{\"plan\":\"$plan\",\"payload\":\"bench\"}" | jq -r .id)
  while :; do
    run=$(api GET "/v1/runs/$id")
    case $(jq -r .status <<<"$run") in success) break ;; error | canceled) echo "$run" >&2; exit 1 ;; esac
    sleep 0.005
  done
  runs+=("$run")
done
printf '%s\n' "${runs[@]}" | python3 -c '
import datetime, json, sys
t = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
ms = sorted((t(r["finished_at"]) - t(r["started_at"])).total_seconds() * 1000
            for r in map(json.loads, sys.stdin))
pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
print("bench=plugin-one plan='"$PLAN"' runs=%d start_to_finish_p50_ms=%.1f p90_ms=%.1f"
      % (len(ms), pick(0.5), pick(0.9)))'

body=$(jq -cn --arg plan "$plan" --argjson n "$BATCH" '{runs: [range($n) | {plan: $plan, payload: "bench"}]}')
t0=$(date +%s.%N)
api POST /v1/runs/batch "$body" >/dev/null
while [ "$(ended)" -lt $((ONE + BATCH)) ]; do sleep 0.02; done
t1=$(date +%s.%N)
awk -v n="$BATCH" -v a="$t0" -v b="$t1" -v p="$PLAN" \
  'BEGIN {printf "bench=plugin-slots plan=%s runs=%d slots=8 seconds=%.2f runs_per_s=%.0f\n", p, n, b - a, n / (b - a)}'
