#!/usr/bin/env bash
# The main job, end to end on one machine: installs what is missing, builds,
# starts meshd on its embedded SQLite store (./polymesh-data), brings up a
# local mesh-agent labelled env=dev, submits a run of the built-in shell plan
# to env=dev over the REST API in one request that answers once the run has
# ended, prints its output, and shuts everything down.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# Only what the quickstart runs (scripts/test.sh builds the rest).
TARGETS="meshd mesh-agent mesh-plugin-host meshctl" scripts/build.sh
build=${BUILD_DIR:-build}
data=${POLYMESH_DATA_DIR:-./polymesh-data}
mkdir -p "$data"
data=$(cd "$data" && pwd)

log=$(mktemp)
"$build/mesh/meshd/meshd" --listen 127.0.0.1:0 --data-dir "$data" >"$log" 2>&1 &
meshd_pid=$!
agent_pid=""
cleanup() {
  [ -n "$agent_pid" ] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  kill -TERM "$meshd_pid" 2>/dev/null && wait "$meshd_pid" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT

url=""
for _ in $(seq 1 200); do
  url=$(sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' "$log")
  [ -n "$url" ] && break
  kill -0 "$meshd_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.05
done
[ -n "$url" ] || { echo "quickstart: meshd did not start" >&2; cat "$log" >&2; exit 1; }
echo "quickstart: meshd is up at $url (data in $data)"
admin=$(cat "$data/admin.token")

api() { # api METHOD PATH TOKEN [JSON]
  curl -sS -X "$1" "$url$2" -H "Authorization: Bearer $3" ${4:+-H 'Content-Type: application/json' -d "$4"}
}

registration=$(api POST /v1/tokens "$admin" '{"kind":"registration","name":"quickstart agent"}' | jq -r .token)
submitter=$(api POST /v1/tokens "$admin" '{"kind":"submitter","name":"quickstart"}' | jq -r .token)

# The local agent: mesh-agent labelled env=dev, offering the built-in plans
# echo, sleep and shell (the shell plan runs only the programs allowed here,
# as argv, never through a shell).
printf '%s\n' "$registration" > "$data/agent.token"
chmod 600 "$data/agent.token"
cat > "$data/agent.yaml" <<YAML
mesh: {url: "$url", registration_token_file: agent.token}
agent: {name: local-dev, labels: {env: dev}, capacity: 2, work_dir: "$data/agent-runs"}
plans: {echo: {}, sleep: {}, shell: {programs: [echo, uname, uptime, df]}}
YAML
"$build/agent-sdk/mesh-agent" --config "$data/agent.yaml" 2>"$data/agent.log" &
agent_pid=$!
for _ in $(seq 1 100); do
  [ "$(api GET /v1/agents/local-dev "$admin" | jq -r .status)" = online ] && break
  sleep 0.05
done

# One request: the answer comes once the run has ended (or after 30 s).
echo "quickstart: submitting a run (plan shell, payload 'uname -sr', selector env=dev) and waiting for it"
run=$(api POST "/v1/runs?wait=30" "$submitter" \
  '{"plan":"shell","selector":"env=dev","payload":"uname -sr"}')
id=$(echo "$run" | jq -r .id)
[ "$id" != null ] || { echo "quickstart: submit failed: $run" >&2; exit 1; }
status=$(echo "$run" | jq -r .status)
echo "quickstart: run $id ended: $status"
echo "quickstart: output:"
api GET "/v1/runs/$id/logs" "$submitter" | jq -r '.chunks[].data'
api GET "/v1/runs/$id" "$submitter" | jq '{id, plan, status, skadi_status, assigned_agent, exit_code, result, created_at, finished_at}'
[ "$status" = success ]
