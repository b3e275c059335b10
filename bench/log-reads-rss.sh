#!/usr/bin/env bash
# meshd's memory under many clients reading long logs at once, and after.
# One meshd and one mesh-agent; four runs of the built-in script plan each
# print 40,000 lines (4 MB); then READERS clients (24 by default) read the
# four logs from the start (`GET /v1/runs/{id}/logs?limit=1000`, one page)
# over and over for 15 s. Prints meshd's RSS after the runs, after the
# reads, and after 65 s idle (meshd hands freed heap back once a minute).
# Usage: bench/log-reads-rss.sh [BUILD_DIR]   (needs curl, python3; MESHD, MESH_AGENT)
set -euo pipefail
BUILD=${1:-build}
READERS=${READERS:-24}
WORK=$(mktemp -d /tmp/polymesh-logrss.XXXXXX)
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
trap stop_all EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/scripts"
cat >"$WORK/scripts/biglog.sh" <<'SH'
#!/bin/sh
i=0
while [ $i -lt 40000 ]; do
  echo "line $i of run $POLYMESH_RUN_ID ......................................................................"
  i=$((i+1))
done
SH
chmod +x "$WORK/scripts/biglog.sh"
start_meshd log-reads 64 full
start_agent log-rss 4 "plans: {script: {dir: \"$WORK/scripts\"}}"
AUTH="Authorization: Bearer $POLYMESH_ADMIN_TOKEN"
rss() { awk '/VmRSS/{printf "%d", $2 / 1024}' "/proc/$MESHD_PID/status"; }
ids=()
for _ in 1 2 3 4; do
  ids+=("$(curl -sS -X POST "$URL/v1/runs?wait=120" -H "$AUTH" \
    -d '{"plan":"script","params":{"script":"biglog.sh"}}' |
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
