#!/bin/bash
# run_final.sh - one device call on the H200, everything from builds made on the dev
# machine and carried (nothing is built on the device):
#   (a) okv_cuda_bench check                  (checkq if the full check runs out of time)
#   (b) okv_cuda_bench bench ... four, twice:  OKV_CUDA_TRUST_INPUTS=1 (as graph capture runs)
#       and OKV_CUDA_TRUST_INPUTS=0 (validated: input checks + one host sync per call),
#       and a table of both (the validation overhead per call)
#   (c) okv_cuda_bench prefill (4096-token chunk over a 32768-token history, INT2 and
#       all-BF16 tier, sampled rows checked) + sdpa_bench.py: torch SDPA BF16 prefill
#       (and decode on the four shapes) -> $OUT/h200-final.{json,md}
#   (d) bash bench/h200_conformance.sh $CONF_DIR   (full table, CUDA) -> $OUT/cuda-conformance.txt
#   (e) bash backends/hip/run_h200.sh $HIP_DIR --quick -> $OUT/hip-on-h200-conformance.txt
#   then a summary table.
# Usage (repository root, on the GPU machine):
#   BENCH_DIR=build-final-bench CONF_DIR=build-final-conf HIP_DIR=build-final-hip bash bench/cuda/run_final.sh
# Prepare on the dev machine (repository root; carry the three directories, ~55 MiB):
#   bash bench/cuda/build.sh build-final-bench "" backends/cuda
#   cmake -S . -B build-final-conf -G Ninja -DCMAKE_BUILD_TYPE=Release -DOKV_WITH_CUDA=ON \
#     -DCMAKE_CUDA_ARCHITECTURES=90 -DOKV_WITH_OPENCL=OFF -DOKV_WITH_HIP=OFF -DOKV_BUILD_TESTS=OFF
#   ninja -C build-final-conf oscarkv_backend_cuda okv-conformance oscarkv_cli
#   cmake -S . -B build-final-hip -G Ninja -DOKV_HIP_ON_NVIDIA=ON -DOKV_WITH_CUDA=OFF -DOKV_WITH_OPENCL=OFF \
#     -DOKV_BUILD_TESTS=OFF -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release
#   cmake --build build-final-hip -j 2
#   for d in build-final-bench build-final-conf build-final-hip; do git rev-parse --short HEAD > $d/COMMIT; done
# Files in $OUT (5; 7 if the HIP build has to be rebuilt on the device): final-log.txt (every
# step's full output), h200-final.json, h200-final.md, cuda-conformance.txt,
# hip-on-h200-conformance.txt. Every step has a timeout; the whole run is kept under
# LIMIT_S (default 540 s) by shrinking a step's timeout so that later steps keep a minimum.
set -u
BENCH_DIR=${BENCH_DIR:-${1:-build-final-bench}}
CONF_DIR=${CONF_DIR:-${2:-build-final-conf}}
HIP_DIR=${HIP_DIR:-${3:-build-final-hip}}
export OUT=${OUT:-/tmp/okv-out}
LIMIT=${LIMIT_S:-540}
WORK=$(mktemp -d /tmp/okv-final.XXXXXX)
mkdir -p "$OUT"
LOG=$OUT/final-log.txt
: > "$LOG"
B=$BENCH_DIR/bin/okv_cuda_bench
commit=$(cat "$BENCH_DIR/COMMIT" 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -f "$HIP_DIR/COMMIT" ] && export OKV_COMMIT=$(cat "$HIP_DIR/COMMIT")
SECONDS=0

say() { echo "$*" | tee -a "$LOG"; }
# timeout for a step: CAP seconds, less if the run would otherwise leave later steps
# fewer than RESERVE seconds of the LIMIT; at least 10
cap() {
    local c=$1 left=$((LIMIT - SECONDS - $2))
    [ "$left" -lt "$c" ] && c=$left
    [ "$c" -lt 10 ] && c=10
    echo "$c"
}
declare -A RC DUR
# step NAME CAP RESERVE FILTER CMD...: full output to the log, lines matching FILTER to stdout
step() {
    local name=$1 c t0 filter=$4
    c=$(cap "$2" "$3")
    shift 4
    t0=$SECONDS
    say ""
    say "== [$name] $(date -u '+%H:%M:%S') (t=${SECONDS}s, timeout ${c}s): $*"
    timeout "$c" "$@" > "$WORK/$name.txt" 2>&1
    RC[$name]=$?
    DUR[$name]=$((SECONDS - t0))
    cat "$WORK/$name.txt" >> "$LOG"
    grep -aE "$filter" "$WORK/$name.txt" | tail -n 60
    say "== [$name] rc=${RC[$name]}$([ "${RC[$name]}" = 124 ] && echo ' (TIMED OUT)') in ${DUR[$name]}s"
}

{
    echo "run_final.sh: commit $commit (bench build $BENCH_DIR, conformance build $CONF_DIR, HIP build $HIP_DIR)"
    date -u
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
} 2>&1 | tee -a "$LOG"
[ -x "$B" ] || { say "missing $B"; exit 1; }

# (a) device check vs the scalar reference
step check 75 295 "^FAIL|checks:|probe:" "$B" check
CHECK_MODE=full
if [ "${RC[check]}" = 124 ]; then
    CHECK_MODE="quick (full check timed out)"
    step checkq 45 295 "^FAIL|checks:" "$B" checkq
fi

# (b) decode, four target shapes, INT2 only: trusted, then validated
step decode_trusted 50 265 "^ops:|^decode|copy" env OKV_CUDA_TRUST_INPUTS=1 "$B" bench "$WORK/dec-trust.json" four
step decode_validated 50 235 "^ops:|^decode|copy" env OKV_CUDA_TRUST_INPUTS=0 "$B" bench "$WORK/dec-valid.json" four
dec_table() {
    python3 - "$WORK/dec-trust.json" "$WORK/dec-valid.json" <<'EOF'
import json, os, sys
rows = {}
for path in sys.argv[1:]:
    if not os.path.exists(path):
        print(f"{path}: missing (step failed)")
        continue
    for r in json.load(open(path))["rows"]:
        if r["op"] == "decode":
            rows.setdefault((r["batch"], r["ctx"]), {})[r["kv"]] = r["median_us"]
print("| batch | ctx | INT2 trusted us | INT2 validated us | validation cost us | validated / trusted |")
print("|---|---|---|---|---|---|")
for (b, c), v in rows.items():
    t, u = v.get("int2"), v.get("int2_validated")
    d = f"{u - t:+.1f}" if (t and u) else "-"
    q = f"{u / t:.2f}x" if (t and u) else "-"
    print(f"| {b} | {c} | {t if t else '-'} | {u if u else '-'} | {d} | {q} |")
EOF
}
say ""
say "decode, OKV_CUDA_TRUST_INPUTS=1 vs =0 (Hq 32, Hkv 8, d 128, fp16 meta, G 128):"
dec_table 2>&1 | tee -a "$LOG"

# (c) prefill: ours (INT2, all-BF16 tier) + torch SDPA BF16
export OKV_PREFILL_BUDGET_S=${OKV_PREFILL_BUDGET_S:-15}
step prefill 150 145 "^ops:|^prefill|^FAIL|^ok|checks:|copy" env OKV_CUDA_TRUST_INPUTS=1 "$B" prefill "$WORK/prefill.json"
step sdpa 75 100 "^prefill|^decode sdpa|missing|failed|Error|error" env OKV_NO_PLOT=1 PYTHONUNBUFFERED=1 \
    python3 bench/cuda/sdpa_bench.py "$WORK/dec-trust.json,$WORK/dec-valid.json,$WORK/prefill.json" "$OUT" "$commit" \
    "BENCH_DIR=$BENCH_DIR CONF_DIR=$CONF_DIR HIP_DIR=$HIP_DIR bash bench/cuda/run_final.sh" h200-final

# (d) full CUDA conformance table
step conformance 110 40 "FAIL|passed|exit|^op |PASS|time" bash bench/h200_conformance.sh "$CONF_DIR"

# (e) HIP sources on NVIDIA, quick table
step hip 75 0 "passed|exit status|FAIL|BUILD|total|does not run" bash backends/hip/run_h200.sh "$HIP_DIR" --quick

# summary
{
    echo ""
    echo "================ summary (commit $commit, ${SECONDS}s) ================"
    echo "| step | rc | s | result |"
    echo "|---|---|---|---|"
    r=$(grep -a "^checks:" "$WORK/check.txt" "$WORK/checkq.txt" 2>/dev/null | tail -1 | sed 's/.*checks:/checks:/')
    echo "| (a) check, $CHECK_MODE | ${RC[checkq]:-${RC[check]}} | ${DUR[check]} | ${r:-no result} |"
    for s in decode_trusted decode_validated; do
        r=$(grep -a "^decode int2" "$WORK/$s.txt" 2>/dev/null | awk '{printf "%s%s", sep, $13; sep=" / "}')
        echo "| (b) $s: us at (1,128K) / (4,128K) / (8,32K) / (32,32K) | ${RC[$s]} | ${DUR[$s]} | ${r:-no result} |"
    done
    r=$(grep -a "^checks:" "$WORK/prefill.txt" 2>/dev/null | tail -1)
    echo "| (c) prefill (ours) | ${RC[prefill]} | ${DUR[prefill]} | ${r:-no result} |"
    echo "| (c) sdpa_bench.py | ${RC[sdpa]} | ${DUR[sdpa]} | $(ls "$OUT"/h200-final.md >/dev/null 2>&1 && echo h200-final.md written || echo no report) |"
    r=$(grep -aE "^[0-9]+ passed" "$OUT/cuda-conformance.txt" 2>/dev/null | tail -1)
    echo "| (d) conformance, CUDA, full | ${RC[conformance]} | ${DUR[conformance]} | ${r:-no result} |"
    r=$(grep -aE "^[0-9]+ passed" "$OUT/hip-on-h200-conformance.txt" 2>/dev/null | head -2 | tr '\n' ';')
    echo "| (e) HIP on H200, --quick (table; CLI decode/) | ${RC[hip]} | ${DUR[hip]} | ${r:-no result} |"
    echo ""
    python3 - "$OUT/h200-final.json" "$WORK/prefill.json" <<'EOF'
import json, os, sys
path = next((p for p in sys.argv[1:] if os.path.exists(p)), None)
if not path:
    print("prefill: no JSON")
    sys.exit(0)
rows = [r for r in json.load(open(path))["rows"] if r["op"] == "prefill"]
print("prefill, history 32768 + chunk 4096, Hq 32, Hkv 8, d 128 (batch 1):")
print("| path | ms | eff. TFLOP/s | reps x calls | check rel L2 |")
print("|---|---|---|---|---|")
for r in rows:
    print(f"| {r['kv']} | {r['median_us'] / 1000:.2f} | {r['flops'] / r['median_us'] * 1e-6:.1f} | "
          f"{r.get('reps')} x {r.get('calls')} | {r.get('check_rel', '-')} |")
EOF
    echo ""
    dec_table
} 2>&1 | tee -a "$LOG"
rm -rf "$WORK"
