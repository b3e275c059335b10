#!/usr/bin/env bash
# A minimal agent in shell, speaking the agent protocol with curl: it
# implements one plan, `echo`, which prints the run's payload. It registers
# with labels env=dev, keeps one long-poll outstanding, reports `canceled`
# for each id in a poll's `cancel` list, registers again (same name) when a
# call answers 401 (its token expired, or its session ended), and
# deregisters on SIGTERM. It never refreshes its token, so each
# agents.token_ttl it starts a new session. The real daemon is mesh-agent;
# this script shows the protocol.
#   usage: scripted-agent.sh MESH_URL REGISTRATION_TOKEN NAME
set -euo pipefail
url=$1 registration=$2 name=$3

register() {
  local reg new_id
  reg=$(curl -sS -X POST "$url/v1/agents/register" -H "Authorization: Bearer $registration" \
    -H 'Content-Type: application/json' \
    -d "$(jq -cn --arg n "$name" '{name: $n, labels: {env: "dev"}, plans: ["echo"], capacity: 1}')") ||
    return 1
  new_id=$(echo "$reg" | jq -r '.id // empty' 2>/dev/null) || true
  [ -n "$new_id" ] || { echo "scripted-agent: register failed: $reg" >&2; return 1; }
  id=$new_id
  token=$(echo "$reg" | jq -r .access_token)
}
# Puts the answer's body in $body; fails on anything but a 2xx, and
# registers again first on a 401 unless stopping (keeping the old id and
# token if that fails: the next call tries again). (Not called in $(...):
# register must set id and token in this shell.)
call() {
  local out
  out=$(curl -sS -w '\n%{http_code}' -X "$1" "$url$2" -H "Authorization: Bearer $token" \
    ${3:+-H 'Content-Type: application/json' -d "$3"}) || return 1
  body=${out%$'\n'*}
  case ${out##*$'\n'} in
    2??) ;;
    401) [ -n "$stopping" ] || register || true; return 1 ;;
    *) return 1 ;;
  esac
}

stopping=""
register || exit 1
trap 'stopping=1' TERM INT
while [ -z "$stopping" ]; do
  call GET "/v1/agents/$id/runs?wait=1" || { sleep 1; continue; }
  batch=$body
  for rid in $(echo "$batch" | jq -r '.cancel[]?'); do
    call POST "/v1/runs/$rid/finish" '{"status":"canceled"}' || true
  done
  for run in $(echo "$batch" | jq -r '.runs[]? | @base64'); do
    r=$(echo "$run" | base64 -d)
    rid=$(echo "$r" | jq -r .id)
    call POST "/v1/runs/$rid/start" '{}' || continue
    out=$(echo "$r" | jq -r .payload)
    call POST "/v1/runs/$rid/logs" "$(jq -cn --arg d "$out"$'\n' '{chunks:[{seq:0,stream:"stdout",data:$d}]}')" || true
    call POST "/v1/runs/$rid/finish" "$(jq -cn --arg r "$out" '{status:"success",exit_code:0,result:$r}')" || true
  done
done
call DELETE "/v1/agents/$id" || true
