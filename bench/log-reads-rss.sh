#!/usr/bin/env bash
# meshd's memory under many clients reading long logs at once, and after.
# One meshd and one mesh-agent; four runs of the built-in script plan each
# print 40,000 lines (4 MB); then READERS clients (24 by default) read the
# four logs from the start (`GET /v1/runs/{id}/logs?limit=1000`, one page)
# over and over for 15 s. Prints meshd's RSS after the runs, after the
# reads, and after 65 s idle (meshd hands freed heap back once a minute).
# Usage: bench/log-reads-rss.sh [BUILD_DIR]     (needs curl and python3)
set -euo pipefail
BUILD=${1:-build}
READERS=${READERS:-24}
MESHD=${MESHD:-$BUILD/mesh/meshd/meshd}
AGENT=${AGENT:-$BUILD/agent-sdk/mesh-agent}
BENCH=${BENCH:-$BUILD/bench/mesh-bench}
WORK=$(mktemp -d /tmp/polymesh-logrss.XXXXXX)
MP= AP=
trap 'kill $AP $MP 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/agent/work" "$WORK/scripts"
cat >"$WORK/scripts/biglog.sh" <<'SH'
#!/bin/sh
i=0
while [ $i -lt 40000 ]; do
  echo "line $i of run $POLYMESH_RUN_ID ......................................................................"
  i=$((i+1))
done
SH
chmod +x "$WORK/scripts/biglog.sh"
export POLYMESH_ADMIN_TOKEN=log-reads-rss-benchmark-admin
"$MESHD" --listen 127.0.0.1:0 --data-dir "$WORK/data" >"$WORK/meshd.out" 2>"$WORK/meshd.err" &
MP=$!
for _ in $(seq 1 1000); do
  grep -q 'listening on' "$WORK/meshd.out" 2>/dev/null && break
  kill -0 "$MP" 2>/dev/null || { cat "$WORK/meshd.err" >&2; exit 1; }
  sleep 0.01
done
URL=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/meshd.out" | head -1)
(umask 077 && "$BENCH" token --url "$URL" --kind registration >"$WORK/agent/reg.token")
cat >"$WORK/agent/agent.yaml" <<YAML
mesh: {url: "$URL", registration_token_file: reg.token}
agent: {name: log-rss, labels: {bench: logs}, capacity: 4, work_dir: "$WORK/agent/work"}
plans: {script: {dir: "$WORK/scripts"}}
log: {level: warn}
YAML
"$AGENT" --config "$WORK/agent/agent.yaml" >"$WORK/agent.out" 2>"$WORK/agent.err" &
AP=$!
AUTH="Authorization: Bearer $POLYMESH_ADMIN_TOKEN"
rss() { awk '/VmRSS/{printf "%d", $2 / 1024}' "/proc/$MP/status"; }
ids=()
for _ in 1 2 3 4; do
  ids+=("$(curl -sS -X POST "$URL/v1/runs?wait=120" -H "$AUTH" \
    -d '{"plan":"script","params":{"script":"biglog.sh"},"selector":"bench=logs"}' |
    python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit("run " + d.get("status", json.dumps(d))) if d.get("status") != "success" else print(d["id"])')")
done
after_runs=$(rss)
readers=()
for _ in $(seq 1 "$READERS"); do
  (
    end=$((SECONDS + 15))
    while [ $SECONDS -lt $end ]; do
      for id in "${ids[@]}"; do
        curl -sS -o /dev/null "$URL/v1/runs/$id/logs?after=-1&limit=1000" -H "$AUTH"
      done
    done
  ) &
  readers+=($!)
done
wait "${readers[@]}"
after_reads=$(rss)
sleep 65
echo "bench=log-reads-rss readers=$READERS log_mb_per_run=4 rss_after_runs_mb=$after_runs rss_after_reads_mb=$after_reads rss_after_65s_idle_mb=$(rss)"
