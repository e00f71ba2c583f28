#!/usr/bin/env bash
# The main job from a fresh machine: set up, build the CLI and the backend modules, run `oscarkv demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >build.configure.log 2>&1 || { cat build.configure.log; exit 1; }
targets=(oscarkv_cli)
for m in oscarkv_backend_cuda oscarkv_backend_hip oscarkv_backend_opencl; do
  if ninja -C build -t targets all | grep "^$m:" >/dev/null; then targets+=("$m"); fi
done
cmake --build build --target "${targets[@]}" >build.log 2>&1 || { tail -40 build.log; exit 1; }
exec ./build/bin/oscarkv demo "$@"
