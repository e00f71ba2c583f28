#!/bin/bash
# run_emu_conformance.sh - the HIP backend's sources compiled as C++ against the CPU
# SIMT emulator (okv_hip_emu.h) and run through the conformance suite at wave 32 and
# wave 64, without a GPU (x86-64 Linux). Tests only: the product module is built by
# CMake (backends/hip/CMakeLists.txt).
#
# usage (repository root): bash backends/hip/emu/run_emu_conformance.sh BUILD_DIR [conformance args...]
#   BUILD_DIR: any configured+built tree of this repository (for okv-conformance and
#   liboscarkv), e.g. build. Default args: --quick.
# Sanitizers: OKV_EMU_FLAGS="-fsanitize=address" with LD_PRELOAD=$(gcc -print-file-name=libasan.so).
set -u
B=${1:?usage: run_emu_conformance.sh BUILD_DIR [conformance args...]}
shift
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(--quick)
CXX=${CXX:-g++}
rc=0
for W in 32 64; do
  d=$(mktemp -d /tmp/okv-hip-emu$W.XXXXXX)
  $CXX -std=c++17 -O2 -g -fPIC -shared -x c++ -Wall -Wextra -Werror -Wno-unknown-pragmas ${OKV_EMU_FLAGS:-} \
    -DOKV_HIP_EMULATE -DOKV_EMU_WAVE=$W -Iinclude -Icore -Icore/format -Ibackends/hip \
    backends/hip/okv_hip_backend.hip backends/hip/okv_hip_kernels.hip -o "$d/liboscarkv_backend_hip.so" || exit 1
  echo "== wave $W: OKV_BACKEND_PATH=$d $B/bin/okv-conformance --backend hip ${ARGS[*]}"
  OKV_BACKEND_PATH="$d" "$B/bin/okv-conformance" --backend hip "${ARGS[@]}" || rc=1
done
exit $rc
