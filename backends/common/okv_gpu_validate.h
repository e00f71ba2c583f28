/*
 * okv_gpu_validate.h - device-side validation shared by the CUDA backend
 * (backends/cuda, nvcc) and the HIP backend (backends/hip: clang HIP, nvcc through
 * okv_hip_alias.h, and the CPU emulator of its tests). One copy of the checks the
 * scalar reference does on data it reads (reference/ref_cache.c, the indptr checks of
 * ref_append.c / ref_prefill.c / ref_dequantize.c, okv_ref_find_nonfinite), so that a
 * backend can refuse a call with the reference's status before any kernel writes.
 *
 * Kernels report into a device status word (int, OR of the OKV_GPU_FLAG_* bits);
 * the host clears it, enqueues the checks, reads it back once and maps the bits to
 * statuses (BAD_INDEX -> OKV_ERROR_INVALID_ARGUMENT, NONFINITE ->
 * OKV_ERROR_NONFINITE_INPUT, META_OVERFLOW -> OKV_ERROR_METADATA_OVERFLOW, in that
 * priority: the reference's order of checks).
 *
 * The cache description C is either backend's plain-pointer struct; it needs the
 * fields batch, page, s0, w, f, seq_lens, int2_lens, int2_indptr, int2_indices,
 * bf16_indptr, bf16_indices, int2_cap / bf16_cap (int32 entries the index buffers
 * hold from their offsets) and int2_pool_pages / bf16_pool_pages.
 *
 * Include after the vendor runtime (cuda_runtime.h, or okv_hip_alias.h, whose
 * OKVH_LAUNCH macro the launch helpers then use so the emulator can run them).
 * Everything device-side here is a template: a translation unit that does not
 * launch these kernels compiles nothing of them.
 */
#ifndef OKV_GPU_VALIDATE_H
#define OKV_GPU_VALIDATE_H

#include <stddef.h>

#include "oscarkv/oscarkv.h"
#include "okv_format.h"

/* Device status-word bits. */
#define OKV_GPU_FLAG_META_OVERFLOW 1 /* a group's scale/offset does not fit the metadata type */
#define OKV_GPU_FLAG_NONFINITE 2     /* NaN/Inf in an input, or a rotated row that overflows */
#define OKV_GPU_FLAG_BAD_INDEX 4     /* page table, lengths or indptr array invalid */

#ifdef OKVH_LAUNCH /* HIP sources: their macro (the CPU emulator replaces it) */
#define OKV_GPU_LAUNCH OKVH_LAUNCH
#else
#define OKV_GPU_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif

/* need_mode: INT2 pages a sequence must list.
 *   0: for its current int2_len;
 *   1: for okv_int2_len_after(seq_len, int2_len, rows of aip) (append);
 *   2: for int2_len + min(recent rows, n) (demote).
 * row_mode: the row indptr rip.
 *   0: none;
 *   1: an append / q indptr: rip[0] >= 0, monotone, rip[batch] == n_rows;
 *   2: an out_indptr: >= seq_len rows per sequence, rip[0] >= 0, rip[batch] <= n_rows. */
enum { OKV_GPU_NEED_CURRENT = 0, OKV_GPU_NEED_APPEND = 1, OKV_GPU_NEED_DEMOTE = 2 };
enum { OKV_GPU_ROWS_NONE = 0, OKV_GPU_ROWS_EXACT = 1, OKV_GPU_ROWS_OUT = 2 };

/* 1 when the tables of sequence b are in bounds (indptr entries non-negative,
 * monotone, within the index buffers): only then may its page entries be read. */
template <class C> __device__ __forceinline__ int okv_gpu_tables_in_bounds(const C &c, int b)
{
    const int *i2p = c.int2_indptr, *bfp = c.bf16_indptr;
    if (i2p[0] < 0 || bfp[0] < 0) return 0;
    const int i2a = i2p[b], i2b = i2p[b + 1], bfa = bfp[b], bfb = bfp[b + 1];
    if (i2a < 0 || bfa < 0 || i2b < i2a || bfb < bfa) return 0;
    return (long long)i2b <= c.int2_cap && (long long)bfb <= c.bf16_cap;
}

/* Lengths, page counts and the row indptr of sequence b (not its page entries). */
template <class C>
__device__ __forceinline__ int okv_gpu_seq_invalid(const C &c, int b, int need_mode, int n, const int *aip,
                                                   int row_mode, const int *rip, int n_rows)
{
    if (!okv_gpu_tables_in_bounds(c, b)) return 1;
    const int i2a = c.int2_indptr[b], i2b = c.int2_indptr[b + 1];
    const int bfa = c.bf16_indptr[b], bfb = c.bf16_indptr[b + 1];
    int bad = 0;
    const int t = c.seq_lens[b], i2 = c.int2_lens[b];
    const int max_i2 = t > c.s0 ? t - c.s0 : 0;
    if (t < 0 || i2 < 0 || i2 > max_i2) bad = 1;
    if (t > c.s0 && t - c.s0 - i2 > c.w + c.f - 1) bad = 1;
    const int bf_need = (okv_bf16_tier_slots(c.s0, c.w, c.f) + c.page - 1) / c.page;
    if (bfb - bfa < bf_need) bad = 1;
    long long need = i2;
    if (!bad && need_mode == OKV_GPU_NEED_APPEND) {
        const int nn = aip[b + 1] - aip[b];
        if (aip[0] < 0 || nn < 0 || (long long)t + nn > 2147483647LL)
            bad = 1;
        else
            need = okv_int2_len_after(t, i2, nn, c.s0, c.w, c.f);
    } else if (!bad && need_mode == OKV_GPU_NEED_DEMOTE) {
        int recent = t - c.s0 - i2;
        if (recent < 0) recent = 0;
        need = (long long)i2 + (recent < n ? recent : n);
    }
    if (!bad && (long long)(i2b - i2a) * c.page < need) bad = 1;
    if (row_mode != OKV_GPU_ROWS_NONE) {
        if (rip[0] < 0 || rip[b + 1] < rip[b]) bad = 1;
        if (row_mode == OKV_GPU_ROWS_EXACT && b == c.batch - 1 && rip[c.batch] != n_rows) bad = 1;
        if (row_mode == OKV_GPU_ROWS_OUT && ((long long)rip[b + 1] - rip[b] < (long long)t || rip[c.batch] > n_rows))
            bad = 1;
    }
    return bad;
}

/* One block per sequence: thread 0 checks lengths and indptr arrays, every thread
 * a strided share of the sequence's page entries (each inside its pool). */
template <class C>
__global__ void okv_gpu_validate_kernel(C c, int need_mode, int n, const int *aip, int row_mode, const int *rip,
                                        int n_rows, int *flags)
{
    const int b = (int)blockIdx.x;
    if (b >= c.batch) return;
    int bad = 0;
    if (threadIdx.x == 0) bad = okv_gpu_seq_invalid(c, b, need_mode, n, aip, row_mode, rip, n_rows);
    if (okv_gpu_tables_in_bounds(c, b)) {
        for (int j = c.int2_indptr[b] + (int)threadIdx.x; j < c.int2_indptr[b + 1]; j += (int)blockDim.x)
            if (c.int2_indices[j] < 0 || c.int2_indices[j] >= c.int2_pool_pages) bad = 1;
        for (int j = c.bf16_indptr[b] + (int)threadIdx.x; j < c.bf16_indptr[b + 1]; j += (int)blockDim.x)
            if (c.bf16_indices[j] < 0 || c.bf16_indices[j] >= c.bf16_pool_pages) bad = 1;
    }
    if (bad) atomicOr(flags, OKV_GPU_FLAG_BAD_INDEX);
}

/* NaN or +-Inf: every exponent bit set (f32, f16, bf16 bit patterns). */
template <int DT> __device__ __forceinline__ bool okv_gpu_nonfinite_at(const void *x, size_t i)
{
    if (DT == OKV_DTYPE_F32) return (((const unsigned *)x)[i] & 0x7f800000u) == 0x7f800000u;
    const unsigned h = ((const unsigned short *)x)[i];
    return DT == OKV_DTYPE_F16 ? (h & 0x7c00u) == 0x7c00u : (h & 0x7f80u) == 0x7f80u;
}

template <int DT> __global__ void okv_gpu_finite_kernel(const void *x, size_t n, int *flags)
{
    int bad = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        if (okv_gpu_nonfinite_at<DT>(x, i)) bad = 1;
    if (bad) atomicOr(flags, OKV_GPU_FLAG_NONFINITE);
}

/* ---- host side: enqueue on a stream; the caller checks the launch error ---- */
template <class Stream, class C>
inline void okv_gpu_validate_enqueue(Stream s, const C &c, int need_mode, int n, const int *aip, int row_mode,
                                     const int *rip, int n_rows, int *flags)
{
    if (c.batch <= 0) return;
    OKV_GPU_LAUNCH(okv_gpu_validate_kernel<C>, (unsigned)c.batch, 128, s, c, need_mode, n, aip, row_mode, rip, n_rows,
                   flags);
}

/* x: n elements of dtype (F32, F16; anything else is read as BF16). */
template <class Stream> inline void okv_gpu_finite_enqueue(Stream s, const void *x, int dtype, size_t n, int *flags)
{
    if (!x || n == 0) return;
    const int threads = 256;
    size_t blocks = (n + threads - 1) / threads;
    if (blocks > 4096) blocks = 4096;
    if (dtype == OKV_DTYPE_F32)
        OKV_GPU_LAUNCH(okv_gpu_finite_kernel<OKV_DTYPE_F32>, (unsigned)blocks, threads, s, x, n, flags);
    else if (dtype == OKV_DTYPE_F16)
        OKV_GPU_LAUNCH(okv_gpu_finite_kernel<OKV_DTYPE_F16>, (unsigned)blocks, threads, s, x, n, flags);
    else
        OKV_GPU_LAUNCH(okv_gpu_finite_kernel<OKV_DTYPE_BF16>, (unsigned)blocks, threads, s, x, n, flags);
}

#endif /* OKV_GPU_VALIDATE_H */
