#!/usr/bin/env bash
# Configures and builds polymesh into ./build (or $BUILD_DIR).
# Extra arguments are passed to CMake, e.g. -DPOLYMESH_SANITIZE=ON.
# TARGETS="meshd mesh-agent" builds only those (default: everything, tests
# and benchmarks included).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build_dir" -G Ninja "${launcher[@]}" "$@" >/dev/null
targets=()
for t in ${TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$build_dir" -j "$(nproc)" "${targets[@]}"
