#!/usr/bin/env bash
# Configures and builds into ${1:-build} with warnings as errors; extra args go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}; shift || true
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DOKV_WERROR=ON "$@" >"$dir.configure.log" 2>&1 ||
  { cat "$dir.configure.log"; exit 1; }
grep -E "^-- oscarkv" "$dir.configure.log" || true
cmake --build "$dir" -j"$(nproc)"
