#!/usr/bin/env bash
# Installs the build into a scratch prefix, builds the embedded example as a
# project of its own against it (find_package(polymesh COMPONENTS agent_sdk),
# polymesh::agent_sdk and polymesh::builtin_plans), starts the installed
# meshd on 127.0.0.1 port 0, and has that program serve a run of its own plan
# and one of the built-in `echo`: what docs/agent.md tells embedding authors.
# usage: out_of_tree_agent_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
tmp=$(realpath "$(mktemp -d)")
meshd_pid=""
agent_pid=""
cleanup() {
  [[ -n $agent_pid ]] && kill -KILL "$agent_pid" 2>/dev/null || true
  [[ -n $meshd_pid ]] && kill -TERM "$meshd_pid" 2>/dev/null && wait "$meshd_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "out_of_tree_agent_test: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log"
cmake -S "$src/agent-sdk/examples/embedded-out-of-tree" -B "$tmp/build" \
  -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_TYPE=Release >"$tmp/configure.log" 2>&1 \
  || { cat "$tmp/configure.log"; exit 1; }
cmake --build "$tmp/build" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }

# The installed meshd; its first line on stdout says where it listens.
mkfifo "$tmp/meshd.out"
"$tmp/prefix/bin/meshd" --listen 127.0.0.1:0 --data-dir "$tmp/data" \
  >"$tmp/meshd.out" 2>"$tmp/meshd.err" &
meshd_pid=$!
exec 3<"$tmp/meshd.out"
url=""
while IFS= read -r -t 60 line <&3; do
  if [[ $line =~ ^listening\ on\ (http://[^ ]+)$ ]]; then url=${BASH_REMATCH[1]}; break; fi
done
[[ -n $url ]] || { cat "$tmp/meshd.err" >&2; fail "meshd did not say where it listens"; }
cat <&3 >"$tmp/meshd.rest" & # keeps the pipe drained
admin=$(cat "$tmp/data/admin.token")
api() { # api METHOD PATH TOKEN [JSON]
  curl -sS --fail-with-body -X "$1" "$url$2" -H "Authorization: Bearer $3" \
    ${4:+-H 'Content-Type: application/json' -d "$4"}
}
api POST /v1/tokens "$admin" '{"kind":"registration","name":"out of tree"}' \
  | jq -r .token >"$tmp/registration.token"
submitter=$(api POST /v1/tokens "$admin" '{"kind":"submitter","name":"out of tree"}' | jq -r .token)

"$tmp/build/my_agent" --mesh "$url" --token-file "$tmp/registration.token" \
  --name out-of-tree --label env=oot --runs 2 >"$tmp/agent.out" 2>"$tmp/agent.err" &
agent_pid=$!

# Each answer comes once the run has ended; a run submitted before the
# agent has registered waits for it in the queue.
greet=$(api POST '/v1/runs?wait=60' "$submitter" '{"plan":"greet","selector":"env=oot","payload":"hi"}')
echo "greet: $greet"
[[ $(jq -r .status <<<"$greet") == success ]] || fail "greet did not succeed"
[[ $(jq -r .result <<<"$greet") == "embedded says: hi" ]] || fail "greet's result"
agent_id=$(api GET /v1/agents/out-of-tree "$admin" | jq -r .id)
[[ $(jq -r .assigned_agent <<<"$greet") == "$agent_id" ]] || fail "greet ran elsewhere"
echo=$(api POST '/v1/runs?wait=60' "$submitter" '{"plan":"echo","selector":"env=oot","payload":"built in"}')
echo "echo: $echo"
[[ $(jq -r .status <<<"$echo") == success ]] || fail "echo did not succeed"
[[ $(jq -r .result <<<"$echo") == "built in" ]] || fail "echo's result"

# After its two runs the program drains the agent (deregistering) and exits 0.
status=0
wait "$agent_pid" || status=$?
agent_pid=""
cat "$tmp/agent.out"
[[ $status -eq 0 ]] || { cat "$tmp/agent.err" >&2; fail "the program exited $status"; }
grep -Fq "agent stopped after 2 runs" "$tmp/agent.out" || fail "no 'stopped after 2 runs'"
[[ $(api GET /v1/agents/out-of-tree "$admin" | jq -r .status) == deregistered ]] \
  || fail "the agent did not deregister: $(api GET /v1/agents/out-of-tree "$admin")"
