#!/usr/bin/env bash
# Installs the build into a scratch prefix, builds the example plugin as a
# project of its own against it (find_package(polymesh)), and has the
# installed mesh-agent load it: what docs/plugins.md tells plugin authors.
# usage: out_of_tree_plugin_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
tmp=$(realpath "$(mktemp -d)") # as /proc/self/exe names it
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log"
cmake -S "$src/agent-sdk/examples/plugin-out-of-tree" -B "$tmp/build" \
  -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_TYPE=Release >"$tmp/configure.log" \
  || { cat "$tmp/configure.log"; exit 1; }
cmake --build "$tmp/build" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
cat >"$tmp/agent.yaml" <<YAML
mesh: {url: "http://127.0.0.1:9", registration_token: unused}
agent: {name: out-of-tree}
plugins: [$tmp/build/my_plugin.so]
plans: {hello: {greeting: Howdy}}
YAML
out=$("$tmp/prefix/bin/mesh-agent" --config "$tmp/agent.yaml" --list-plans)
echo "$out"
grep -Eq "^hello[[:space:]]+$tmp/build/my_plugin.so" <<<"$out"
test -f "$tmp/prefix/lib/polymesh/polymesh_hello_plugin.so" || test -f "$tmp/prefix/lib64/polymesh/polymesh_hello_plugin.so"
test -x "$tmp/prefix/bin/meshd" && test -x "$tmp/prefix/bin/meshctl"
# Isolated runs (the default) start the host installed beside the agent;
# a copy of mesh-agent without it is refused at start, saying where it looked.
test -x "$tmp/prefix/libexec/polymesh/mesh-plugin-host"
mkdir "$tmp/lonely"
cp "$tmp/prefix/bin/mesh-agent" "$tmp/lonely/"
# (a literal the compiler stores without its NUL runs into the next one)
installed_host=$(strings "$tmp/lonely/mesh-agent" | grep -o '/[^[:space:]]*/polymesh/mesh-plugin-host$' | head -1 || true)
[[ -n $installed_host ]] || { echo "mesh-agent names no installed mesh-plugin-host"; exit 1; }
if [[ ! -e $installed_host ]]; then # else a system-wide install would be found
  if "$tmp/lonely/mesh-agent" --config "$tmp/agent.yaml" --check >"$tmp/lonely.log" 2>&1; then
    echo "mesh-agent without mesh-plugin-host started:"; cat "$tmp/lonely.log"; exit 1
  fi
  grep -Fq "isolation 'process' runs each plan in mesh-plugin-host, which is not at $tmp/lonely/mesh-plugin-host" "$tmp/lonely.log" \
    || { echo "unexpected message:"; cat "$tmp/lonely.log"; exit 1; }
  POLYMESH_PLUGIN_HOST="$tmp/prefix/libexec/polymesh/mesh-plugin-host" \
    "$tmp/lonely/mesh-agent" --config "$tmp/agent.yaml" --check
fi
