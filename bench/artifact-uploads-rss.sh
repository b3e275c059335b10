#!/usr/bin/env bash
# meshd's memory while many runs upload large artifacts at once. One meshd
# and one mesh-agent with UPLOADERS slots (8 by default); UPLOADERS runs of
# the built-in script plan, submitted in one batch, each leave a SIZE_MB
# artifact (64 MiB by default, runs.max_artifact_bytes' default) that the
# agent uploads as the run ends, all at about the same time. Prints meshd's
# peak RSS (VmHWM) over the uploads in MiB, the time from the submit to the
# last run's end, and checks every stored artifact's size.
# Usage: bench/artifact-uploads-rss.sh [BUILD_DIR]   (needs curl, python3; MESHD, MESH_AGENT)
set -euo pipefail
BUILD=${1:-build}
UPLOADERS=${UPLOADERS:-8}
SIZE_MB=${SIZE_MB:-64}
WORK=$(mktemp -d /tmp/polymesh-artup.XXXXXX)
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
trap stop_all EXIT
trap 'exit 130' INT TERM
bigfile_script "$SIZE_MB"

start_meshd artifact-uploads 64 full
start_agent artifact-up "$UPLOADERS" "plans: {script: {dir: \"$WORK/scripts\"}}"
AUTH="Authorization: Bearer $POLYMESH_ADMIN_TOKEN"
for _ in $(seq 1 600); do
  curl -sS "$URL/v1/agents" -H "$AUTH" | grep -q '"artifact-up"' && break
  sleep 0.05
done
status() { awk -v k="$1" '$1 == k":" {printf "%d", $2 / 1024}' "/proc/$MESHD_PID/status"; }
before=$(status VmRSS)
# VmHWM is the peak since start; reset to now.
echo 5 >"/proc/$MESHD_PID/clear_refs"
start=$(date +%s.%N)
ids=$(python3 -c "import json; print(json.dumps({'runs': [{'plan': 'script', 'params': {'script': 'bigfile.sh'}}] * $UPLOADERS}))" |
  curl -sS -X POST "$URL/v1/runs/batch" -H "$AUTH" -H 'Content-Type: application/json' -d @- |
  python3 -c 'import json,sys; print(" ".join(r["run"]["id"] for r in json.load(sys.stdin)["results"]))')
for id in $ids; do
  st=running
  while [ "$st" = created ] || [ "$st" = pending ] || [ "$st" = running ]; do
    st=$(curl -sS "$URL/v1/runs/$id?wait=30" -H "$AUTH" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  done
  [ "$st" = success ] || { echo "run $id ended $st" >&2; exit 1; }
done
secs=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
peak=$(status VmHWM)
for id in $ids; do
  size=$(curl -sS "$URL/v1/runs/$id/artifacts" -H "$AUTH" |
    python3 -c 'import json,sys; a=json.load(sys.stdin)["artifacts"]; print(a[0]["size"] if a else 0)')
  [ "$size" = $((SIZE_MB * 1048576)) ] || { echo "run $id: artifact of $size bytes" >&2; exit 1; }
done
echo "bench=artifact-uploads-rss uploaders=$UPLOADERS artifact_mb=$SIZE_MB rss_before_mb=$before peak_rss_during_uploads_mb=$peak wall_s=$secs"
