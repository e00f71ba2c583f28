#!/bin/bash
# One device call comparing prebuilt okv_cuda_bench variants (bench/cuda/build.sh DIR "" SRCDIR,
# then DIR/bin/okv_cuda_bench copied to VDIR/bin):
#   bash bench/cuda/run_cmp.sh "VDIR1 VDIR2 ..." "CHECK_VDIRS" [CONFDIR] [PROFILE_VDIR]
# Bench (four target shapes, INT2) of every variant in the order given (repeat a variant
# to see drift), then in parallel: okv_cuda_bench check of CHECK_VDIRS and, with CONFDIR
# (a CMake build-h200), okv-conformance --backend cuda --filter decode/. PROFILE_VDIR:
# ncu --set full at (32, 32K) and decode + merge kernel durations at (1, 128K).
# Files in $OUT: log.txt, check_*.txt, ncu_one32.txt, ncu_one.txt.
set -u
vars=$1
checks=$2
conf=${3:-}
prof=${4:-}
OUT=${OUT:-/tmp/okv-out}
mkdir -p "$OUT"
log=$OUT/log.txt
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
  for v in $vars; do
    echo "=== $v: bench four"
    timeout 100 $v/bin/okv_cuda_bench bench /tmp/b.json four 2>&1 | grep -E "copy|INT2|us" | tail -6
  done
  pids=()
  for v in $checks; do
    n=$(echo $v | tr '/' '_')
    (timeout 200 $v/bin/okv_cuda_bench check > "$OUT/check_$n.txt" 2>&1; echo "rc=$?" >> "$OUT/check_$n.txt") &
    pids+=($!)
  done
  if [ -n "$conf" ]; then
    echo "=== conformance decode/ ($conf)"
    timeout 200 $conf/bin/okv-conformance --backend cuda --filter decode/ 2>&1 | grep -E "^FAIL|passed|^decode |time"
  fi
  for p in "${pids[@]}"; do wait $p; done
  for v in $checks; do
    n=$(echo $v | tr '/' '_')
    echo "=== $v: check"
    grep -E "^FAIL|checks:|rc=|131072|70001|20000" "$OUT/check_$n.txt"
  done
} 2>&1 | tee "$log"
if [ -n "$prof" ]; then
  {
    timeout 150 ncu --clock-control none --set full --import-source no -k regex:decode_kernel -s 1 -c 1 \
      $prof/bin/okv_cuda_bench one32 > "$OUT/ncu_one32.txt" 2>&1
    grep -E "Duration|Issued Warp|Active Warps Per|Warp Cycles Per Issued|DRAM Throughput|Achieved Occupancy|No Eligible|Registers Per|Block Limit|Theoretical Occ" "$OUT/ncu_one32.txt" | head -20
    timeout 90 ncu --clock-control none --section SpeedOfLight -k regex:"decode_kernel|merge_kernel" -s 2 -c 2 \
      $prof/bin/okv_cuda_bench one > "$OUT/ncu_one.txt" 2>&1
    grep -E "decode_kernel|merge_kernel|Duration" "$OUT/ncu_one.txt" | head -8
  } 2>&1 | tee -a "$log"
fi
