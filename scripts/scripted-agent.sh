#!/usr/bin/env bash
# A minimal agent in shell, speaking the agent protocol with curl: it
# implements one plan, `echo`, which prints the run's payload. It registers
# with labels env=dev, keeps one long-poll outstanding, and deregisters on
# SIGTERM. The real daemon is mesh-agent; this script shows the protocol.
#   usage: scripted-agent.sh MESH_URL REGISTRATION_TOKEN NAME
set -euo pipefail
url=$1 registration=$2 name=$3

reg=$(curl -sS -X POST "$url/v1/agents/register" -H "Authorization: Bearer $registration" \
  -H 'Content-Type: application/json' \
  -d "{\"name\":\"$name\",\"labels\":{\"env\":\"dev\"},\"plans\":[\"echo\"],\"capacity\":1}")
id=$(echo "$reg" | jq -r .id)
token=$(echo "$reg" | jq -r .access_token)
[ "$id" != null ] || { echo "scripted-agent: register failed: $reg" >&2; exit 1; }
call() { curl -sS -X "$1" "$url$2" -H "Authorization: Bearer $token" ${3:+-H 'Content-Type: application/json' -d "$3"}; }

stopping=""
trap 'stopping=1' TERM INT
while [ -z "$stopping" ]; do
  batch=$(call GET "/v1/agents/$id/runs?wait=1" || true)
  for run in $(echo "$batch" | jq -r '.runs[]? | @base64'); do
    r=$(echo "$run" | base64 -d)
    rid=$(echo "$r" | jq -r .id)
    call POST "/v1/runs/$rid/start" '{}' >/dev/null
    out=$(echo "$r" | jq -r .payload)
    call POST "/v1/runs/$rid/logs" "$(jq -cn --arg d "$out"$'\n' '{chunks:[{seq:0,stream:"stdout",data:$d}]}')" >/dev/null
    call POST "/v1/runs/$rid/finish" "$(jq -cn --arg r "$out" '{status:"success",exit_code:0,result:$r}')" >/dev/null
  done
done
call DELETE "/v1/agents/$id" >/dev/null
