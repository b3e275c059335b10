#!/usr/bin/env bash
# meshd's start-up with many agents that left (deregistered, not yet
# forgotten): their names are kept for their scope without an actor each.
# Writes N deregistered agent rows into a fresh database and times three
# starts, meshd's launch to "listening on", with its RSS then.
# Usage: bench/restart-left-agents.sh [BUILD_DIR]   (N=100000 by default)
# AGO_S=2592000 writes them as last seen 30 days ago, past agents.forget_after
# (7 days by default): rows of agents forgotten, which the first start deletes.
set -euo pipefail
BUILD=${1:-build}
N=${N:-100000}
AGO_S=${AGO_S:-3600}
MESHD=${MESHD:-$BUILD/mesh/meshd/meshd}
WORK=$(mktemp -d /tmp/polymesh-left.XXXXXX)
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
PID=
start() {
  : >"$WORK/out"
  "$MESHD" --listen 127.0.0.1:0 --data-dir "$WORK/data" >"$WORK/out" 2>"$WORK/err" &
  PID=$!
  for _ in $(seq 1 6000); do
    grep -q 'listening on' "$WORK/out" 2>/dev/null && return 0
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.005
  done
  echo "meshd did not start:" >&2; cat "$WORK/err" >&2; exit 1
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=; }
mkdir -p "$WORK/data"
start; stop
python3 - "$WORK/data/mesh.db" "$N" "$AGO_S" <<'PY'
import json, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
seen = int(time.time() * 1000) - int(sys.argv[3]) * 1000  # AGO_S ago (an hour by default: not forgotten)
rows = [(f"agt_left{i:08d}", f"ephemeral-{i}", json.dumps({"env": "ci"}), json.dumps(["shell"]),
         1, "deregistered", "0.1", f"host-{i}", "", seen, seen, 1, 0, f"inst{i}")
        for i in range(int(sys.argv[2]))]
db.executemany("INSERT INTO agents (id, name, labels, plans, capacity, status, version, hostname,"
               " scope, registered_at, last_seen_at, session, drained, instance)"
               " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
db.commit()
PY
for k in 1 2 3; do
  t0=$(date +%s%N); start; t1=$(date +%s%N)
  rss=$(awk '/VmRSS/{print $2}' "/proc/$PID/status")
  printf 'left agents %d: start to listening %.3f s, RSS %d MB' "$N" \
    "$(echo "($t1 - $t0) / 1000000000" | bc -l)" $((rss / 1024))
  stop
  python3 -c "import sqlite3, sys; print(', rows kept', sqlite3.connect(sys.argv[1])
    .execute('SELECT COUNT(*) FROM agents').fetchone()[0])" "$WORK/data/mesh.db"
done
