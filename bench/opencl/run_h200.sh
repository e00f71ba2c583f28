#!/bin/bash
# run_h200.sh - build the OpenCL backend on the GPU machine (device tool) and run the
# conformance table, the backend's self-test and the decode benchmark on NVIDIA's
# OpenCL platform. Logs go to $OUT.
#
# Carried (ignored folder .oclcarry, named in the device call's `carry`): the Debian
# 12 .debs of CLBlast, the OpenCL headers and the ocl-icd loader, fetched here with
#   apt-get download libclblast1 libclblast-dev opencl-c-headers ocl-icd-libopencl1 ocl-icd-opencl-dev
# NVIDIA's ICD is registered per TOOLCHAIN.md (no .icd file names it on that machine).
#
# usage (device tool, repo root): bash bench/opencl/run_h200.sh [conformance-args...]
# Order: build, self-test (--quick), decode benchmark, conformance (last: it is the
# longest and its timeout shrinks to what is left of the budget).
# Environment (all optional):
#   OKV_BENCH_ARGS     extra bench_opencl_decode options, e.g. "--ctx 4096,32768,131072 --batch 1,8"
#   OKV_TOTAL_S        whole-script budget in seconds: the conformance timeout becomes
#                      min(OKV_CONF_TIMEOUT, OKV_TOTAL_S - elapsed - 5)
#   OKV_SELFTEST_TIMEOUT, OKV_BENCH_TIMEOUT, OKV_CONF_TIMEOUT  per-step timeouts (35, 80, 75)
# Quick call (~2 min): OKV_TOTAL_S=150 OKV_BENCH_TIMEOUT=40 \
#   OKV_BENCH_ARGS="--ctx 4096,32768,131072 --batch 1,8" bash bench/opencl/run_h200.sh --filter decode/
set -u
OUT=${OUT:-/tmp/okv-h200-out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0)) s] $*"; }

cb=/tmp/oclcarry
mkdir -p "$cb"
for f in .oclcarry/*.deb; do dpkg -x "$f" "$cb"; done
L=$cb/usr/lib/x86_64-linux-gnu
if [ -e /usr/lib/libnvidia-opencl.so.1 ]; then
  icd=$(mktemp -d)
  echo /usr/lib/libnvidia-opencl.so.1 > "$icd/nvidia.icd"
  export OCL_ICD_VENDORS="$icd"
fi
export LD_LIBRARY_PATH="$L${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OKV_CACHE_DIR=/tmp/okv-cache

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
  uname -srm
  ldd --version 2>&1 | head -1
} > "$OUT/env.txt"
cat "$OUT/env.txt"

stamp configure
B=/tmp/okv-build
if cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DOKV_BUILD_TESTS=OFF -DOKV_WERROR=OFF \
      -DOKV_WITH_OPENCL=ON -DOKV_WITH_CUDA=OFF -DOKV_WITH_HIP=OFF \
      -DOpenCL_INCLUDE_DIR=$cb/usr/include -DOpenCL_LIBRARY=$L/libOpenCL.so \
      -DCLBlast_DIR=$L/cmake/CLBlast > "$OUT/build.log" 2>&1 &&
   ninja -C $B oscarkv_backend_opencl okv-conformance bench_opencl_decode okv-opencl-selftest >> "$OUT/build.log" 2>&1; then
  stamp built
else
  stamp BUILD FAILED
  tail -40 "$OUT/build.log"
  exit 1
fi

stamp selftest
timeout "${OKV_SELFTEST_TIMEOUT:-35}" $B/bin/okv-opencl-selftest --quick > "$OUT/selftest.txt" 2>&1
echo "selftest exit $?" >> "$OUT/selftest.txt"
grep -E "^probe|^device|FAIL|passed|exit" "$OUT/selftest.txt"

stamp bench
# shellcheck disable=SC2086 # OKV_BENCH_ARGS is a word list on purpose
timeout "${OKV_BENCH_TIMEOUT:-80}" $B/bin/bench_opencl_decode --out "$OUT/decode.md" ${OKV_BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
echo "bench exit $?" >> "$OUT/bench.log"
cat "$OUT/bench.log"

stamp conformance
conf_t=${OKV_CONF_TIMEOUT:-75}
if [ -n "${OKV_TOTAL_S:-}" ]; then
  left=$((OKV_TOTAL_S - ($(date +%s) - t0) - 5))
  [ "$left" -lt "$conf_t" ] && conf_t=$left
  [ "$conf_t" -lt 1 ] && conf_t=1
fi
echo "conformance timeout ${conf_t} s, args: $*"
timeout "$conf_t" $B/bin/okv-conformance --backend opencl "$@" > "$OUT/conformance.txt" 2>&1
echo "okv-conformance exit $?" >> "$OUT/conformance.txt"
tail -16 "$OUT/conformance.txt"
stamp done
