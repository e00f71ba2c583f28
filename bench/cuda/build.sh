#!/bin/bash
# Build the CUDA backend module + bench/check driver with plain nvcc (no CMake), for
# the device machine. Usage: bench/cuda/build.sh OUTDIR [ARCH_FLAGS] [SRCDIR] [EXTRA_NVCC_FLAGS]
# SRCDIR (default backends/cuda) holds okv_cuda_{backend,decode,ops,prefill}.cu + okv_cuda.h, so a
# snapshot (e.g. an older decode kernel) can be built beside the working tree's.
set -e
out=${1:-build-cuda}
arch=${2:-"-gencode=arch=compute_90,code=sm_90"}
src=${3:-backends/cuda}
extra=${4:-}
mkdir -p "$out/obj" "$out/lib" "$out/bin"
inc="-I$src -Iinclude -Icore -Icore/format -Ireference"
flags="-std=c++17 -O3 --expt-relaxed-constexpr $arch -Xcompiler=-fPIC $extra"
pids=()
srcs="$src/okv_cuda_backend.cu $src/okv_cuda_decode.cu $src/okv_cuda_ops.cu"
[ -f $src/okv_cuda_prefill.cu ] && srcs="$srcs $src/okv_cuda_prefill.cu" # absent in older snapshots
for f in $srcs; do
  nvcc $flags -Xcompiler=-fvisibility=hidden $inc -Xptxas -v -c $f -o "$out/obj/$(basename $f .cu).o" \
    > "$out/obj/$(basename $f .cu).ptxas.txt" 2>&1 &
  pids+=($!)
done
nvcc $flags $inc -c bench/cuda/okv_cuda_bench.cu -o "$out/obj/okv_cuda_bench.o" &
pids+=($!)
refs=()
for f in reference/ref_*.c; do
  [ "$(basename $f)" = ref_backend.c ] && continue
  gcc -std=c11 -O2 -fPIC $inc -c $f -o "$out/obj/$(basename $f .c).o"
  refs+=("$out/obj/$(basename $f .c).o")
done
for p in "${pids[@]}"; do wait $p || { cat "$out"/obj/*.ptxas.txt | grep -i error; exit 1; }; done
objs=""
for f in $srcs; do objs="$objs $out/obj/$(basename $f .cu).o"; done
nvcc $arch -shared -o "$out/lib/liboscarkv_backend_cuda.so" $objs -cudart static
nvcc $arch -o "$out/bin/okv_cuda_bench" "$out/obj/okv_cuda_bench.o" $objs "${refs[@]}" -cudart static -lm
echo "built $out/lib/liboscarkv_backend_cuda.so $out/bin/okv_cuda_bench"
