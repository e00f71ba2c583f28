/*
 * okv_cuda_dev.h - device helpers shared by the CUDA backend's kernel files
 * (okv_cuda_decode.cu, okv_cuda_prefill.cu, okv_cuda_ops.cu): dtype-generic loads and
 * stores, fp16/bf16 pair packing for mma operands, the fast exp2 the softmaxes use, and
 * the shared-memory / cp.async / ldmatrix / mma.sync wrappers of the two attention kernels.
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

/* ---- shared memory, cp.async, ldmatrix, mma.sync m16n8k16 (sm_80+) ---- */
static __device__ __forceinline__ unsigned smem_u32(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }
/* 16-byte copy; bytes = 0 zero-fills the destination without reading src */
static __device__ __forceinline__ void cp_async16(void *dst, const void *src, int bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(bytes));
}
static __device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> static __device__ __forceinline__ void cp_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
static __device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}
static __device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}
/* c += A B, A 16x16 (4 regs), B 16x8 (2 regs), fp32 accumulators */
static __device__ __forceinline__ void mma_f16(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
static __device__ __forceinline__ void mma_bf16(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
static __device__ __forceinline__ void mma_f16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    mma_f16(c, a[0], a[1], a[2], a[3], b0, b1);
}
static __device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    mma_bf16(c, a[0], a[1], a[2], a[3], b0, b1);
}

#endif
