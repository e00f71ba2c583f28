#!/bin/bash
# Conformance table on the H200 for the CUDA backend, from a build made on the dev
# machine and carried to the device (nvcc builds sm_90 here; the device has no Check
# library). Prepare here:
#   cmake -S . -B build-h200 -G Ninja -DCMAKE_BUILD_TYPE=Release -DOKV_WITH_CUDA=ON \
#     -DCMAKE_CUDA_ARCHITECTURES=90 -DOKV_WITH_OPENCL=OFF -DOKV_WITH_HIP=OFF -DOKV_BUILD_TESTS=OFF
#   ninja -C build-h200 oscarkv_backend_cuda okv-conformance oscarkv_cli
#   git rev-parse --short HEAD > build-h200/COMMIT
# then on the device (carry build-h200):
#   bash bench/h200_conformance.sh build-h200            # full table
#   SANITIZE=1 bash bench/h200_conformance.sh build-h200 # + memcheck and racecheck over it
# With SANITIZE=1 the full table also runs under compute-sanitizer memcheck and
# racecheck, one process per (tool, op) in parallel (the worker processes the runner
# forks are followed: --target-processes all). Logs: $OUT/cuda-conformance.txt,
# $OUT/sanitizer-memcheck.txt, $OUT/sanitizer-racecheck.txt.
set -u
B=${1:-build-h200}
OUT=${OUT:-/tmp/okv-out}
mkdir -p "$OUT"
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
    echo "commit: $(cat "$B/COMMIT" 2>/dev/null || echo unknown) (built on the dev machine, sm_90)"
    echo "command: ${SANITIZE:+SANITIZE=$SANITIZE }bash bench/h200_conformance.sh $B"
    "$B/bin/oscarkv" devices
    timeout 300 "$B/bin/okv-conformance" --backend cuda
    echo "okv-conformance exit $?"
} > "$OUT/cuda-conformance.txt" 2>&1
grep -E "^FAIL|passed|exit|^op |^[a-z]+ +(PASS|FAIL)" "$OUT/cuda-conformance.txt" | tail -30

[ "${SANITIZE:-0}" = 1 ] || exit 0
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
ops="rotate append demote dequantize decode prefill moments"
tmp=$(mktemp -d)
t0=$(date +%s)
for tool in memcheck racecheck; do
    for op in $ops; do
        OKV_CONFORMANCE_CASE_TIMEOUT=400 timeout "${SANITIZE_TIMEOUT:-450}" "$CS" --tool "$tool" \
            --target-processes all --error-exitcode 99 \
            "$B/bin/okv-conformance" --backend cuda --filter "$op/" > "$tmp/$tool-$op.txt" 2>&1 &
    done
done
wait
for tool in memcheck racecheck; do
    {
        echo "compute-sanitizer --tool $tool --target-processes all --error-exitcode 99 okv-conformance --backend cuda --filter OP/"
        echo "(one process per op, all in parallel; wall $(($(date +%s) - t0)) s for both tools)"
        for op in $ops; do
            f="$tmp/$tool-$op.txt"
            echo "===== $op: $(grep -E '^[0-9]+ passed' "$f" | tail -1) | $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$f" | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
            grep -E "^FAIL|=========  (Invalid|Race|Error|Program hit)|exit" "$f" | head -40
        done
    } > "$OUT/sanitizer-$tool.txt"
    grep -E "^=====" "$OUT/sanitizer-$tool.txt" | sed "s/^=====/$tool/"
done
