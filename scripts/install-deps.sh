#!/usr/bin/env bash
# Installs, from Debian 12's own repositories, whatever polymesh needs to
# build, test and run that is not installed yet. Safe to run again.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config ccache
  libcaf-dev libcpp-httplib-dev libsqlite3-dev nlohmann-json3-dev libyaml-cpp-dev
  libssl-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev
  curl jq sqlite3
)

missing=()
for p in "${packages[@]}"; do
  # No pipe into `grep -q`: under pipefail its early exit could fail the query.
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: everything is installed"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
