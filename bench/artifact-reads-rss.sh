#!/usr/bin/env bash
# meshd's memory while many clients download one large artifact at once.
# One meshd and one mesh-agent; a run of the built-in script plan leaves a
# SIZE_MB artifact (64 MiB by default, runs.max_artifact_bytes' default);
# then READERS clients (16 by default) download it at once, ROUNDS times
# each (2), each download checked against the artifact's sha256. Prints
# meshd's RSS after the upload and its peak (VmHWM) over the downloads,
# both in MiB, and the downloads' wall time.
# Usage: bench/artifact-reads-rss.sh [BUILD_DIR]   (needs curl, python3; MESHD, MESH_AGENT)
set -euo pipefail
BUILD=${1:-build}
READERS=${READERS:-16}
ROUNDS=${ROUNDS:-2}
SIZE_MB=${SIZE_MB:-64}
WORK=$(mktemp -d /tmp/polymesh-artrss.XXXXXX)
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
trap stop_all EXIT
trap 'exit 130' INT TERM
bigfile_script "$SIZE_MB"

start_meshd artifact-reads 64 full
start_agent artifact-rss 1 "plans: {script: {dir: \"$WORK/scripts\"}}"
AUTH="Authorization: Bearer $POLYMESH_ADMIN_TOKEN"
id=$(curl -sS -X POST "$URL/v1/runs?wait=120" -H "$AUTH" \
  -d '{"plan":"script","params":{"script":"bigfile.sh"}}' |
  python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit("run " + d.get("status", json.dumps(d))) if d.get("status") != "success" else print(d["id"])')
sha=$(curl -sS "$URL/v1/runs/$id/artifacts" -H "$AUTH" |
  python3 -c 'import json,sys; a=json.load(sys.stdin)["artifacts"]; sys.exit("no artifact") if not a else print(a[0]["sha256"])')
status() { awk -v k="$1" '$1 == k":" {printf "%d", $2 / 1024}' "/proc/$MESHD_PID/status"; }
after_upload=$(status VmRSS)
# VmHWM is the peak since start; the upload's own peak is reset first.
echo 5 >"/proc/$MESHD_PID/clear_refs"
start=$(date +%s.%N)
readers=()
for r in $(seq 1 "$READERS"); do
  (
    for _ in $(seq 1 "$ROUNDS"); do
      got=$(curl -sS "$URL/v1/runs/$id/artifacts/big.bin" -H "$AUTH" | sha256sum | cut -d' ' -f1)
      [ "$got" = "$sha" ] || { echo "reader $r: sha256 $got, expected $sha" >&2; exit 1; }
    done
  ) &
  readers+=($!)
done
fail=0
for p in "${readers[@]}"; do wait "$p" || fail=1; done
[ $fail -eq 0 ] || exit 1
secs=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
echo "bench=artifact-reads-rss readers=$READERS rounds=$ROUNDS artifact_mb=$SIZE_MB rss_after_upload_mb=$after_upload peak_rss_during_downloads_mb=$(status VmHWM) downloads_s=$secs"
