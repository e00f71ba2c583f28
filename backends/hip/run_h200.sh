#!/bin/bash
# run_h200.sh - the HIP backend's sources built for NVIDIA (OKV_HIP_ON_NVIDIA=ON,
# through okv_hip_alias.h) and run through the conformance suite on an NVIDIA GPU.
#
# usage (repository root, on the GPU machine):
#   bash backends/hip/run_h200.sh [BUILD_DIR] [conformance args...]
# BUILD_DIR (default build-hipnv) may be a build made elsewhere and carried; when its
# okv-conformance does not start there, the script configures and builds one with
# cmake + ninja (-DOKV_BUILD_TESTS=OFF: no Check library needed).
# Writes $OUT/hip-on-h200-conformance.txt (date, GPU, commit, command, full output).
set -u
OUT=${OUT:-/tmp/okv-hip-out}
mkdir -p "$OUT"
B=${1:-build-hipnv}
shift || true
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(--quick)
LOG=$OUT/hip-on-h200-conformance.txt
t0=$(date +%s)
# a carried build keeps the RPATH of the machine it was built on
case "$B" in /*) ;; *) B="$PWD/$B" ;; esac
export LD_LIBRARY_PATH="$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
  echo "commit: ${OKV_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}$(git diff --quiet HEAD -- backends/hip 2>/dev/null || echo ' (+ uncommitted backends/hip changes)')"
  echo "working tree: $(git status --short --untracked-files=no 2>/dev/null | wc -l) modified tracked files outside this commit (other engineers' work in progress: $(git status --short --untracked-files=no 2>/dev/null | awk '{print $2}' | tr '\n' ' '))"
  echo "host: $(uname -srm); $(ldd --version 2>&1 | head -1)"
  echo "command: bash backends/hip/run_h200.sh $B ${ARGS[*]}"
} > "$LOG"
if ! "$B/bin/okv-conformance" --backend ref --list > /dev/null 2>&1; then
  echo "carried build $B does not run here: building (cmake + ninja, nvcc sm_90)" >> "$LOG"
  B=/tmp/okv-hipnv
  { cmake -S . -B "$B" -G Ninja -DOKV_HIP_ON_NVIDIA=ON -DOKV_WITH_CUDA=OFF -DOKV_WITH_OPENCL=OFF \
      -DOKV_BUILD_TESTS=OFF -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.txt" 2>&1 &&
    cmake --build "$B" -j 16 > "$OUT/build.txt" 2>&1; } || { echo "BUILD FAILED" >> "$LOG"; tail -30 "$OUT/build.txt" >> "$LOG"; exit 1; }
  echo "built in $(($(date +%s) - t0)) s" >> "$LOG"
fi
{
  echo
  echo "== $B/bin/oscarkv devices"
  "$B/bin/oscarkv" devices 2>&1
  echo
  echo "== $B/bin/okv-conformance --backend hip ${ARGS[*]}"
  "$B/bin/okv-conformance" --backend hip "${ARGS[@]}" 2>&1
  echo "exit status: $?"
  echo
  echo "== $B/bin/oscarkv conformance --backend hip --quick --filter decode/  (the same runner through the CLI)"
  "$B/bin/oscarkv" conformance --backend hip --quick --filter decode/ 2>&1 | tail -14
  echo "exit status: ${PIPESTATUS[0]}"
  echo
  echo "== $B/bin/okv_hip_bench --backend hip --batch 4 --ctx 32768 (HIP dialect on NVIDIA, generic path)"
  "$B/bin/okv_hip_bench" --backend hip --batch 4 --ctx 32768 2>&1
  echo
  echo "total $(($(date +%s) - t0)) s"
} >> "$LOG" 2>&1
cat "$LOG"
