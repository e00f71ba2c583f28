#!/bin/bash
# One device call comparing decode-kernel variants built HERE (bench/cuda/build.sh
# OUTDIR "" SRCDIR) plus a CMake build of okv-conformance/liboscarkv (no CUDA needed):
#   bash bench/cuda/run_dec.sh CONFDIR "VARDIR1 VARDIR2 ..." [PROFILE_VARDIR] ["CHECK_VARDIRS"]
# Per variant: okv-conformance --backend cuda --filter decode/ (module from VARDIR/lib),
# okv_cuda_bench check (only CHECK_VARDIRS when given), okv_cuda_bench bench (four target shapes, INT2 only).
# PROFILE_VARDIR: ncu --set full on (1,128K) and (32,32K), details + per-SASS source page.
# Files in $OUT: log.txt, ncu_*.txt, ncu_*_sass.csv.
set -u
conf=$1
vars=$2
prof=${3:-}
checks=${4:-$vars}
OUT=${OUT:-/tmp/okv-out}
mkdir -p "$OUT"
log=$OUT/log.txt
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
  for v in $vars; do
    echo "=== variant $v: conformance decode/"
    OKV_BACKEND_PATH=$PWD/$v/lib timeout 150 $conf/bin/okv-conformance --backend cuda --filter decode/ 2>&1 |
      grep -E "^FAIL|passed|^decode |time"
  done
  for v in $checks; do
    echo "=== variant $v: check"
    timeout 150 $v/bin/okv_cuda_bench check 2>&1 | grep -E "^FAIL|checks:|splits1 |131072|70001|20000"
  done
  for v in $vars; do
    echo "=== variant $v: bench (four shapes, INT2)"
    timeout 100 $v/bin/okv_cuda_bench bench /tmp/b.json four 2>&1 | tail -6
    cat /tmp/b.json
  done
} 2>&1 | tee "$log"
if [ -n "$prof" ]; then
  for m in one one32; do
    timeout 120 ncu --clock-control none --set full --import-source no -k regex:decode_kernel -s 1 -c 1 \
      -f -o /tmp/prof_$m $prof/bin/okv_cuda_bench $m > /tmp/ncu_$m.log 2>&1
    ncu -i /tmp/prof_$m.ncu-rep --page details > "$OUT/ncu_$m.txt" 2>&1
    ncu -i /tmp/prof_$m.ncu-rep --page source --csv --print-source sass > "$OUT/ncu_${m}_sass.csv" 2>&1
    tail -3 /tmp/ncu_$m.log
    grep -E "Duration|Issued Warp|Active Warps Per|Warp Cycles Per Issued|Memory Throughput|DRAM Throughput|Achieved Occupancy|No Eligible" "$OUT/ncu_$m.txt" | head -12
  done 2>&1 | tee -a "$log"
fi
