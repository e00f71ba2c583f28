#!/bin/bash
# One-off diagnostic (2026-11-29): runs okv_cuda_bench check twice with two bench builds and the
# decode conformance with the prefill build, to tell a flaky check from a build-specific one.
# Usage on the device: bash bench/cuda/diag_check_flaky.sh (carry the named build dirs).
# diagnostic: is the decode check failure (qf32 unrot1 splits7) flaky or build-specific?
set -u
clib=$PWD/build-prefill/lib
for i in 1 2; do
  for b in build-bench-final build-bench-prefill; do
    echo "== $b run $i: $(timeout 25 $b/bin/okv_cuda_bench check 2>&1 | grep -E '^FAIL|checks:' | tr '\n' ' ')"
  done
done
echo "== decode conformance with the prefill build: $(LD_LIBRARY_PATH=$clib OKV_BACKEND_PATH=$clib timeout 40 build-prefill/bin/okv-conformance --backend cuda --filter decode/ 2>&1 | grep -E '^FAIL|passed' | tr '\n' ' ')"
