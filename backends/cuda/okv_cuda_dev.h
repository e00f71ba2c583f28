/*
 * okv_cuda_dev.h - device helpers shared by the CUDA backend's kernel files
 * (okv_cuda_decode.cu, okv_cuda_prefill.cu, okv_cuda_ops.cu): dtype-generic loads and
 * stores, fp16/bf16 pair packing for mma operands, and the fast exp2 the softmaxes use.
 * Internal; each kernel file includes it before its own anonymous namespace.
 */
#ifndef OKV_CUDA_DEV_H
#define OKV_CUDA_DEV_H

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "oscarkv/oscarkv.h"

/* 2^x on the SFU, flush-to-zero: scores are already scaled by log2(e). */
static __device__ __forceinline__ float ex2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
/* element lo in bits 0-15 (the lower column of an mma fragment), hi in 16-31 */
static __device__ __forceinline__ uint32_t pack_h2(float lo, float hi)
{
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
}
static __device__ __forceinline__ uint32_t pack_bf2(float lo, float hi)
{
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
}
static __device__ __forceinline__ float bf_lo(uint32_t x) { return __uint_as_float(x << 16); }
static __device__ __forceinline__ float bf_hi(uint32_t x) { return __uint_as_float(x & 0xffff0000u); }

/* element i of an f32 / f16 / bf16 array, as float */
static __device__ __forceinline__ float ld_any(const void *p, int dtype, size_t i)
{
    if (dtype == OKV_DTYPE_F32) return ((const float *)p)[i];
    unsigned short h = ((const unsigned short *)p)[i];
    return dtype == OKV_DTYPE_F16 ? __half2float(__ushort_as_half(h)) : __uint_as_float(((unsigned)h) << 16);
}
/* stores v as element i of an f32 / f16 / bf16 array (round to nearest even) */
static __device__ __forceinline__ void st_any(void *p, int dtype, size_t i, float v)
{
    if (dtype == OKV_DTYPE_F32)
        ((float *)p)[i] = v;
    else if (dtype == OKV_DTYPE_F16)
        ((__half *)p)[i] = __float2half_rn(v);
    else
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
}

#endif
