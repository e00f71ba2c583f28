#!/usr/bin/env bash
# The main job from a fresh machine: set up, build, run `oscarkv demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh build >/dev/null
exec ./build/bin/oscarkv demo "$@"
