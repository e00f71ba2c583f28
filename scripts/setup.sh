#!/usr/bin/env bash
# Installs what building and testing oscarkv needs on Debian 12 (idempotent).
# GPU toolchains are optional: nvcc / hipcc enable the CUDA / HIP modules when present.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
pkgs=(build-essential cmake ninja-build pkg-config check clang clang-format
      pocl-opencl-icd ocl-icd-opencl-dev opencl-headers clinfo libclblast-dev
      hipcc libamdhip64-dev rocm-device-libs rocminfo python3 python3-numpy)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check numpy 2>/dev/null || true
