/*
 * okv_hip_alias.h - the one vendor header of the HIP backend.
 *
 * The backend's sources (*.hip) are written in the HIP dialect. Compiled by clang
 * in HIP mode (CMake's HIP language, AMD GPUs) this header includes the HIP
 * runtime. Compiled by nvcc (OKV_HIP_ON_NVIDIA=ON) it maps the few hip* runtime
 * names the backend uses onto their cuda* twins, so the same sources build and run
 * on an NVIDIA GPU (the ROCm 5.2 nvidia_detail headers do not compile with CUDA 13).
 *
 * Wave width: OKV_WAVE is a compile-time constant of the device pass:
 *   AMD device pass   __AMDGCN_WAVEFRONT_SIZE (64 on CDNA gfx90a/gfx940, 32 on RDNA gfx1030)
 *   NVIDIA            32 (a warp), set below and only here
 *   AMD host pass     OKV_WAVE_MAX: a placeholder so kernel bodies parse; the host never
 *                     uses it - launch shapes come from the device's warpSize at run time.
 * Kernels size per-lane register arrays as D / OKV_WAVE and must be launched with
 * blocks that are a multiple of the device's warpSize (the host glue guarantees it).
 * Wave-wide helpers (shuffle-xor, ballot count, any) are defined here for both
 * vendors; on AMD a wave executes in lock step and the intrinsics take no mask.
 */
#ifndef OKV_HIP_ALIAS_H
#define OKV_HIP_ALIAS_H

/* Largest wave width of any supported target (AMD wave64); sizes shared scratch. */
#define OKV_WAVE_MAX 64

/* Kernel launch (a macro so that the CPU emulator used by the local tests can
 * replace it; a kernel name holding a comma is passed in parentheses). */
#define OKVH_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)

#if defined(OKV_HIP_EMULATE) /* tests only: run the kernels on the CPU (emu/okv_hip_emu.h) */
#include "emu/okv_hip_emu.h"

#elif defined(__HIP__) /* clang, HIP language: AMD GPUs */
#include <hip/hip_runtime.h>
#define OKV_HIP_VENDOR_AMD 1
#if defined(__HIP_DEVICE_COMPILE__)
/* __AMDGCN_WAVEFRONT_SIZE is also defined (as 64) in the host pass: use it only here. */
#define OKV_WAVE __AMDGCN_WAVEFRONT_SIZE
#else
#define OKV_WAVE OKV_WAVE_MAX
#endif
/* CDNA matrix cores (MFMA): compiled in only for the CDNA device passes. */
#if defined(__HIP_DEVICE_COMPILE__) && (defined(__gfx90a__) || defined(__gfx940__))
#define OKV_HAVE_MFMA 1
#else
#define OKV_HAVE_MFMA 0
#endif

__device__ __forceinline__ float okv_shfl_xor(float v, int m) { return __shfl_xor(v, m); }
__device__ __forceinline__ int okv_wave_count(bool p) { return (int)__popcll((unsigned long long)__ballot(p)); }
__device__ __forceinline__ bool okv_wave_any(bool p) { return __any(p) != 0; }
#define OKV_DEVICE_VENDOR "AMD"

#elif defined(__CUDACC__) /* nvcc: the same sources on NVIDIA GPUs */
#include <cuda_runtime.h>
#define OKV_HIP_VENDOR_NVIDIA 1
#define OKV_WAVE 32 /* NVIDIA warp; the only place this width is written */
#define OKV_HAVE_MFMA 0
#define OKV_FULL_MASK 0xffffffffu

typedef cudaError_t hipError_t;
typedef cudaStream_t hipStream_t;
typedef cudaDeviceProp hipDeviceProp_t;
#define hipSuccess cudaSuccess
#define hipErrorOutOfMemory cudaErrorMemoryAllocation
#define hipMemcpyHostToDevice cudaMemcpyHostToDevice
#define hipMemcpyDeviceToHost cudaMemcpyDeviceToHost
#define hipStreamNonBlocking cudaStreamNonBlocking
#define hipGetDeviceCount cudaGetDeviceCount
#define hipSetDevice cudaSetDevice
#define hipGetDeviceProperties cudaGetDeviceProperties
#define hipDriverGetVersion cudaDriverGetVersion
#define hipRuntimeGetVersion cudaRuntimeGetVersion
#define hipGetLastError cudaGetLastError
#define hipGetErrorString cudaGetErrorString
#define hipGetErrorName cudaGetErrorName
#define hipMalloc cudaMalloc
#define hipFree cudaFree
#define hipMemcpy cudaMemcpy
#define hipMemcpyAsync cudaMemcpyAsync
#define hipMemsetAsync cudaMemsetAsync
#define hipStreamCreateWithFlags cudaStreamCreateWithFlags
#define hipStreamDestroy cudaStreamDestroy
#define hipStreamSynchronize cudaStreamSynchronize

__device__ __forceinline__ float okv_shfl_xor(float v, int m) { return __shfl_xor_sync(OKV_FULL_MASK, v, m); }
__device__ __forceinline__ int okv_wave_count(bool p) { return __popc(__ballot_sync(OKV_FULL_MASK, p)); }
__device__ __forceinline__ bool okv_wave_any(bool p) { return __any_sync(OKV_FULL_MASK, p) != 0; }
#define OKV_DEVICE_VENDOR "NVIDIA"

#else
#error "okv_hip_alias.h: compile with clang -x hip (AMD) or nvcc (NVIDIA)"
#endif

/* Wave-wide reductions over all OKV_WAVE lanes (every lane gets the result). */
__device__ __forceinline__ float okv_wave_sum(float v)
{
#pragma unroll
    for (int o = OKV_WAVE / 2; o > 0; o >>= 1)
        v += okv_shfl_xor(v, o);
    return v;
}
__device__ __forceinline__ float okv_wave_max(float v)
{
#pragma unroll
    for (int o = OKV_WAVE / 2; o > 0; o >>= 1)
        v = fmaxf(v, okv_shfl_xor(v, o));
    return v;
}
__device__ __forceinline__ float okv_wave_min(float v)
{
#pragma unroll
    for (int o = OKV_WAVE / 2; o > 0; o >>= 1)
        v = fminf(v, okv_shfl_xor(v, o));
    return v;
}
#endif /* OKV_HIP_ALIAS_H */
