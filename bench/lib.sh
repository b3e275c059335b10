# shellcheck shell=bash
# Shared helpers of the scripts under bench/ (sourced).
# Expects: BUILD (build directory), WORK (scratch directory).

MESHD=${MESHD:-$BUILD/mesh/meshd/meshd}
MESH_BENCH=${MESH_BENCH:-$BUILD/bench/mesh-bench}
MICRO_BENCH=${MICRO_BENCH:-$BUILD/bench/polymesh_micro_bench}
MESH_AGENT=${MESH_AGENT:-$BUILD/agent-sdk/mesh-agent}
GEARMAN_BENCH=${GEARMAN_BENCH:-$BUILD/bench/gearman-bench}
export POLYMESH_ADMIN_TOKEN=${POLYMESH_ADMIN_TOKEN:-bench-admin-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}

MESHD_PID=
URL=

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# start_meshd NAME [HTTP_THREADS] [SYNCHRONOUS]: a fresh meshd on 127.0.0.1:0
# with its own data dir; sets URL and MESHD_PID.
start_meshd() {
  local name=$1 threads=${2:-64} sync=${3:-full}
  local dir=$WORK/$name
  mkdir -p "$dir"
  printf 'http:\n  threads: %s\nstore:\n  synchronous: %s\nlog:\n  level: warn\n' \
    "$threads" "$sync" >"$dir/mesh.yaml"
  "$MESHD" --listen 127.0.0.1:0 --data-dir "$dir" --config "$dir/mesh.yaml" \
    >"$dir/stdout" 2>"$dir/stderr" &
  MESHD_PID=$!
  for _ in $(seq 1 600); do
    grep -q 'listening on' "$dir/stdout" 2>/dev/null && break
    kill -0 "$MESHD_PID" 2>/dev/null || break
    sleep 0.05
  done
  URL=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$dir/stdout" | head -1)
  if [ -z "$URL" ]; then
    log "meshd ($name) did not start:"; cat "$dir/stderr" >&2
    return 1
  fi
  log "meshd $name (threads=$threads, synchronous=$sync) pid $MESHD_PID at $URL"
}

# stop_meshd: SIGTERM, then SIGKILL after 15 s.
stop_meshd() {
  [ -n "$MESHD_PID" ] || return 0
  kill -TERM "$MESHD_PID" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$MESHD_PID" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$MESHD_PID" 2>/dev/null; then
    log "meshd $MESHD_PID did not stop in 15 s; killing it"
    kill -KILL "$MESHD_PID" 2>/dev/null || true
  fi
  wait "$MESHD_PID" 2>/dev/null || true
  MESHD_PID=
}

AGENT_PID=

# start_agent NAME CAPACITY YAML: one mesh-agent named NAME against $URL,
# registered with a fresh token, with YAML (its `plans:`, `plugins:`,
# labels ...) appended to its config; sets AGENT_PID.
start_agent() {
  local dir=$WORK/agent
  mkdir -p "$dir/work"
  (umask 077 && "$MESH_BENCH" token --url "$URL" --kind registration >"$dir/reg.token")
  printf 'mesh: {url: "%s", registration_token_file: reg.token}\nagent: {name: %s, capacity: %s, work_dir: "%s"}\nlog: {level: warn}\n%s\n' \
    "$URL" "$1" "$2" "$dir/work" "$3" >"$dir/agent.yaml"
  "$MESH_AGENT" --config "$dir/agent.yaml" >"$dir/stdout" 2>"$dir/stderr" &
  AGENT_PID=$!
}

# stop_all: the agent (SIGTERM, waited for), meshd, and the scratch dir.
stop_all() {
  [ -z "$AGENT_PID" ] || { kill -TERM "$AGENT_PID" 2>/dev/null; wait "$AGENT_PID" 2>/dev/null || true; }
  AGENT_PID=
  stop_meshd
  rm -rf "$WORK"
}

# bigfile_script MB: $WORK/scripts/bigfile.sh, a script (for the built-in
# script plan, `plans: {script: {dir: "$WORK/scripts"}}`) that leaves an
# artifact big.bin of MB MiB of random bytes.
bigfile_script() {
  mkdir -p "$WORK/scripts"
  printf '#!/bin/sh\nhead -c %s /dev/urandom >"$POLYMESH_ARTIFACTS_DIR/big.bin"\n' \
    "$(($1 * 1048576))" >"$WORK/scripts/bigfile.sh"
  chmod +x "$WORK/scripts/bigfile.sh"
}

# field LINE KEY: the value of key=value in a result line.
field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }

# ratio A B: A/B with two decimals, "-" when either is missing.
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}

load_note() { printf 'nproc=%s load=%s' "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' '/')"; }
