#!/usr/bin/env bash
# The whole test suite from a fresh machine (this is what .ci/run runs):
#   1. set up, build everything with -Werror, run every ctest suite;
#   2. rebuild the CPU parts under ASan + UBSan and run their suites again;
#   3. check formatting.
# A suite that runs zero checks fails (Check prints "Checks: 0" and passes otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export POCL_CACHE_DIR="$PWD/build/pocl-cache" OKV_CACHE_DIR="$PWD/build/okv-cache"

zero_check() { # fail when any Check suite in a ctest log ran no test
  if grep -E "Checks: 0," "$1"; then echo "run-tests: a suite ran zero checks" >&2; return 1; fi
}

echo "== build (Release, -Werror)"
./scripts/build.sh build
echo "== HIP module code objects (AMD targets this toolchain builds)"
objs=$(roc-obj-ls build/lib/liboscarkv_backend_hip.so)
echo "$objs"
for arch in gfx90a gfx940 gfx1030; do
  grep -q -- "--$arch " <<<"$objs" || { echo "run-tests: no $arch code object in the HIP module" >&2; exit 1; }
done
echo "== ctest"
ctest --test-dir build --output-on-failure --no-tests=error -j2 2>&1 | tee build/ctest.log
zero_check build/ctest.log

echo "== ASan + UBSan build of the CPU parts"
./scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DOKV_SANITIZE=ON -DOKV_WITH_CUDA=OFF -DOKV_WITH_HIP=OFF
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-asan --output-on-failure --no-tests=error -j2 -LE "opencl|gpu|python" 2>&1 | tee build-asan/ctest.log
zero_check build-asan/ctest.log

echo "== clang-format"
git ls-files '*.c' '*.h' '*.cu' '*.cl' '*.hip' | xargs clang-format --dry-run -Werror
echo "run-tests: all passed"
