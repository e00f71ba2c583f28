#!/bin/bash
# One device call for the flash prefill (okv_cuda_prefill.cu), <= ~150 s (timeouts 25 + 55 + 40 + 32):
#   1. CUDA conformance, prefill cases (flash path: the conformance passes max_seq_len
#      and the workspace; q bf16 / f16 / f32, d 64 / 128 / 256)
#   2. + 3. the same under compute-sanitizer memcheck and racecheck (in parallel)
#   4. okv_cuda_bench check (its small prefill check passes no max_seq_len: naive path)
#   5. okv_cuda_bench prefill (4096-token chunk over 32768, INT2 and BF16 tiers, sampled
#      rows vs the host oracle), flash and OKV_CUDA_PREFILL_NAIVE=1 (capped)
# Usage: bench/cuda/run_prefill_check.sh CONF_DIR BENCH_DIR
#   CONF_DIR/bin/okv-conformance (+ CONF_DIR/lib/liboscarkv_backend_cuda.so),
#   BENCH_DIR/bin/okv_cuda_bench. Logs: $OUT (or /tmp/prefill-check): conf.log,
#   sanitizer.log, bench.log, summary.txt.
conf=${1:?CONF_DIR}
bench=${2:?BENCH_DIR}
out=${OUT:-/tmp/prefill-check}
mkdir -p "$out"
clib=$(cd "$conf/lib" && pwd) # the build's RUNPATH is absolute (the dev machine's checkout)
export LD_LIBRARY_PATH="$clib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OKV_BACKEND_PATH=${OKV_BACKEND_PATH:-$clib}
cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$out/summary.txt" 2>&1
t0=$(date +%s)

# 1: conformance, plain
timeout 25 "$conf/bin/okv-conformance" --backend cuda --filter prefill/ > "$out/conf.log" 2>&1
echo "conformance rc=$?" >> "$out/conf.log"

# 2 + 3: sanitizers in parallel with 4 (different processes on one GPU)
san_pids=()
if [ -n "$cs" ]; then
  for tool in memcheck racecheck; do
    timeout 55 "$cs" --tool $tool --target-processes all --error-exitcode 9 \
      "$conf/bin/okv-conformance" --backend cuda --filter prefill/ > "$out/san_$tool.tmp" 2>&1 &
    san_pids+=($!)
  done
fi
timeout 30 "$bench/bin/okv_cuda_bench" check > "$out/bench.log" 2>&1
echo "check rc=$?" >> "$out/bench.log"
for p in "${san_pids[@]}"; do wait $p; done
for tool in memcheck racecheck; do
  [ -f "$out/san_$tool.tmp" ] || continue
  { echo "=== $tool"; tail -n 25 "$out/san_$tool.tmp"; } >> "$out/sanitizer.log"
  rm -f "$out/san_$tool.tmp"
done
[ -n "$cs" ] || echo "compute-sanitizer not found" > "$out/sanitizer.log"

# 5: prefill benchmark, flash then naive (naive capped: 5.5 s per INT2 call)
echo "=== prefill (flash)" >> "$out/bench.log"
OKV_PREFILL_BUDGET_S=3 timeout 40 "$bench/bin/okv_cuda_bench" prefill /tmp/p.json >> "$out/bench.log" 2>&1
cp /tmp/p.json "$out/prefill.json" 2>/dev/null
echo "prefill rc=$?" >> "$out/bench.log"
if [ "${SKIP_NAIVE:-0}" != 1 ]; then # SKIP_NAIVE=1: its numbers are already known
  echo "=== prefill (naive, OKV_CUDA_PREFILL_NAIVE=1)" >> "$out/bench.log"
  OKV_CUDA_PREFILL_NAIVE=1 OKV_PREFILL_BUDGET_S=0.1 timeout 32 "$bench/bin/okv_cuda_bench" prefill /tmp/pn.json \
    >> "$out/bench.log" 2>&1
  echo "prefill naive rc=$? (124 = cut at 32 s)" >> "$out/bench.log"
fi

{
  echo "elapsed $(($(date +%s) - t0)) s"
  echo "--- conformance (prefill/)"
  grep -E "^FAIL|^prefill|passed|rc=" "$out/conf.log" | tail -n 10
  echo "--- sanitizers"
  grep -E "^===|ERROR SUMMARY|RACECHECK SUMMARY|passed|failed|Error" "$out/sanitizer.log" | head -n 12
  echo "--- okv_cuda_bench check"
  grep -E "^FAIL|checks:|rc=" "$out/bench.log" | head -n 12
  echo "--- prefill 4096 over 32768 (flash, then naive)"
  grep -E "^prefill (int2|bf16)|prefill.*vs host oracle|rc=" "$out/bench.log" | grep -v "^check"
} >> "$out/summary.txt"
cat "$out/summary.txt"
