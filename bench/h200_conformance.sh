#!/bin/bash
# Conformance table on the H200 for the CUDA backend, from a build made on the dev
# machine and carried to the device (nvcc 13.0 builds sm_90 here; the device has no
# Check library). Prepare here:
#   cmake -S . -B build-h200 -G Ninja -DCMAKE_BUILD_TYPE=Release -DOKV_WITH_CUDA=ON \
#     -DCMAKE_CUDA_ARCHITECTURES=90 -DOKV_WITH_OPENCL=OFF -DOKV_WITH_HIP=OFF -DOKV_BUILD_TESTS=OFF
#   ninja -C build-h200 oscarkv_backend_cuda okv-conformance oscarkv_cli
#   git rev-parse --short HEAD > build-h200/COMMIT
# then on the device (carry build-h200): bash bench/h200_conformance.sh build-h200
set -u
B=${1:-build-h200}
OUT=${OUT:-/tmp/okv-out}
mkdir -p "$OUT"
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
    echo "commit: $(cat "$B/COMMIT" 2>/dev/null || echo unknown) (built on the dev machine, sm_90)"
    echo "command: bash bench/h200_conformance.sh $B"
    "$B/bin/oscarkv" devices
    timeout 400 "$B/bin/okv-conformance" --backend cuda
    echo "okv-conformance exit $?"
} > "$OUT/cuda-conformance.txt" 2>&1
grep -E "^FAIL|passed|exit|^op |^[a-z]+ +(PASS|FAIL)" "$OUT/cuda-conformance.txt" | tail -30
