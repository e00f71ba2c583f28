#!/bin/bash
# One device call: build (nvcc, sm_90) + device check vs the scalar reference +
# decode benchmark (ours INT2, ours BF16, torch SDPA BF16) + optional
# compute-sanitizer (memcheck, racecheck on a reduced check). Usage (repository
# root, on the GPU machine):
#   bash bench/cuda/run_h200.sh COMMIT [quick|full|probe] [sanitize]
# PREBUILT=DIR: use DIR/bin/okv_cuda_bench built on the dev machine (bench/cuda/build.sh
# DIR "" SRCDIR) instead of building from the working tree on the device.
# full mode also runs the prefill bench (okv_cuda_bench prefill; PREFILL=0 skips it) and
# SDPA prefill, reported as a second table in h200-decode.md.
# Files land in $OUT: log.txt, h200-decode.{json,md,png}, memcheck.txt, racecheck.txt.
set -o pipefail
commit=${1:-unknown}
mode=${2:-full}
san=${3:-}
OUT=${OUT:-/tmp/okv-out}
mkdir -p "$OUT"
log="$OUT/log.txt"
b=${PREBUILT:-/tmp/okvb}
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
  echo "== build"
  if [ -n "${PREBUILT:-}" ]; then echo "prebuilt $b"; else bench/cuda/build.sh $b || { echo BUILD FAILED; exit 1; }; fi
  grep -h "registers\|spill" $b/obj/okv_cuda_decode.ptxas.txt 2>/dev/null | paste - - | sort | uniq -c | head -20; true
} 2>&1 | tee "$log" || exit 1
[ "$mode" = probe ] || {
  echo "== check"
  $b/bin/okv_cuda_bench check
  echo "check rc=$?"
} 2>&1 | tee -a "$log"
[ "$mode" = probe ] || {
  echo "== bench ($mode)"
  q=""; [ "$mode" = quick ] && q=quick
  $b/bin/okv_cuda_bench bench "$OUT/ours.json" $q
  inputs="$OUT/ours.json"
  if [ "$mode" = full ] && [ "${PREFILL:-1}" != 0 ]; then
    echo "== prefill (4096-token chunk over 32768 history)"
    timeout 200 $b/bin/okv_cuda_bench prefill "$OUT/prefill.json"
    inputs="$inputs,$OUT/prefill.json"
  fi
  echo "== torch SDPA + report"
  PYTHONUNBUFFERED=1 python3 bench/cuda/sdpa_bench.py "$inputs" "$OUT" "$commit" \
    "bash bench/cuda/run_h200.sh $commit $mode $san"
} 2>&1 | tee -a "$log"
rm -f "$OUT/ours.json" "$OUT/prefill.json"
if [ "$san" = sanitize ]; then
  timeout 80 compute-sanitizer --tool memcheck --error-exitcode 9 $b/bin/okv_cuda_bench checkq > "$OUT/memcheck.txt" 2>&1 &
  p1=$!
  timeout 80 compute-sanitizer --tool racecheck --error-exitcode 9 $b/bin/okv_cuda_bench checkq > "$OUT/racecheck.txt" 2>&1 &
  p2=$!
  wait $p1; r1=$?
  wait $p2; r2=$?
  echo "memcheck rc=$r1 (124 = timed out): $(grep -a 'ERROR SUMMARY\|checks:' $OUT/memcheck.txt | tr '\n' ' ')" | tee -a "$log"
  echo "racecheck rc=$r2 (124 = timed out): $(grep -a 'RACECHECK SUMMARY\|ERROR SUMMARY\|checks:' $OUT/racecheck.txt | tr '\n' ' ')" | tee -a "$log"
fi
if [ "$mode" = probe ]; then
  {
    echo "== probe"
    $b/bin/okv_cuda_bench probe
    echo "== ncu"
    timeout 200 ncu --clock-control none -k regex:decode_kernel -s 1 -c 2 \
      --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy \
      --section MemoryWorkloadAnalysis --section LaunchStats $b/bin/okv_cuda_bench one
  } > "$OUT/probe.txt" 2>&1
  grep -v "^    ---\|^$" "$OUT/probe.txt" | tail -150
fi
