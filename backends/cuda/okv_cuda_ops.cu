/*
 * okv_cuda_ops.cu - rotate, append (fused rotate + clip + quantize + pack +
 * placement), demote, dequantize, prefill attention and moments.
 *
 * One warp per row (token, head, K/V): lane holds channels lane + 32 i. The
 * quantizer uses the okv_format.h helpers for the metadata rounding, the codes and
 * the packing, so the stored bytes follow the shared format text; the clip
 * threshold is the exact order statistic (radix select over the float bits of
 * |x| with warp ballots) or the 7-step bisection of the format header.
 * Data-dependent failures (metadata overflow, non-finite rotated rows) set a bit in
 * the context's device status word. Append and demote run twice: a dry run
 * (commit = 0) that only sets those bits, which the host reads back before the
 * commit pass (commit = 1) stores anything; with OKV_CUDA_TRUST_INPUTS only the
 * commit pass runs, skips a failing row and the next synchronize reports it.
 * The validation kernels themselves are shared with the HIP backend
 * (backends/common/okv_gpu_validate.h); their launchers are at the end.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "okv_cuda.h"
#include "okv_cuda_dev.h"
#include "okv_format.h"

namespace
{

constexpr float NEG_INF = -__builtin_huge_valf();

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float warp_min(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ int warp_count(bool p) { return __popc(__ballot_sync(0xffffffffu, p)); }

/* first index b with indptr[b + 1] > r (indptr monotone, batch + 1 entries) */
__device__ __forceinline__ int find_seq(const int *indptr, int batch, int r)
{
    int lo = 0, hi = batch - 1;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (indptr[mid + 1] > r)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Rotate a row held in smem xs[d] into registers y[i] (channel lane + 32 i). */
template <int NPL>
__device__ __forceinline__ void rotate_row(const float *xs, const float *R, int d, int transpose, int lane,
                                           float (&y)[NPL])
{
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        y[i] = 0.f;
    if (!transpose) {
        for (int k = 0; k < d; ++k) {
            const float xk = xs[k];
            const float *rr = R + (size_t)k * d + lane;
#pragma unroll
            for (int i = 0; i < NPL; ++i)
                y[i] = fmaf(xk, __ldg(rr + 32 * i), y[i]);
        }
    } else {
        /* y[c] = sum_k x[k] R[c][k] */
#pragma unroll
        for (int i = 0; i < NPL; ++i) {
            const float *rr = R + (size_t)(lane + 32 * i) * d;
            float acc = 0.f;
            for (int k = 0; k < d; ++k)
                acc = fmaf(xs[k], __ldg(rr + k), acc);
            y[i] = acc;
        }
    }
}

/* Quantize one clipped row held as x[i] (channel lane + 32 i); writes packed codes
 * and metadata at the given global addresses when commit. Returns 0 (writing
 * nothing) on metadata overflow. codes_s: d bytes of per-warp scratch. */
template <int NPL>
__device__ int quantize_row(float (&x)[NPL], int d, int G, float ratio, int clip_mode, int quantizer, int meta_dtype,
                            unsigned char *codes_out, unsigned char *meta_out, unsigned char *codes_s, int lane,
                            int commit)
{
    /* ---- clip threshold ---- */
    const int k = (int)floorf(ratio * (float)d);
    if (k < d) {
        const int kk = k < 0 ? 0 : k;
        float tau;
        if (clip_mode == OKV_FMT_CLIP_BISECT) {
            float hi = 0.f;
#pragma unroll
            for (int i = 0; i < NPL; ++i)
                hi = fmaxf(hi, fabsf(x[i]));
            hi = warp_max(hi);
            float lo = 0.f;
            const int allowed = d - kk;
            for (int s = 0; s < OKV_FMT_BISECT_STEPS; ++s) {
                const float mid = 0.5f * (lo + hi);
                int cnt = 0;
#pragma unroll
                for (int i = 0; i < NPL; ++i)
                    cnt += warp_count(fabsf(x[i]) > mid);
                if (cnt > allowed)
                    lo = mid;
                else
                    hi = mid;
            }
            tau = hi;
        } else {
            unsigned u[NPL];
#pragma unroll
            for (int i = 0; i < NPL; ++i)
                u[i] = __float_as_uint(fabsf(x[i]));
            unsigned res = 0;
            for (int bit = 30; bit >= 0; --bit) {
                const unsigned test = res | (1u << bit);
                int cnt = 0;
#pragma unroll
                for (int i = 0; i < NPL; ++i)
                    cnt += warp_count(u[i] < test);
                if (cnt <= kk) res = test;
            }
            tau = __uint_as_float(res);
        }
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            x[i] = x[i] > tau ? tau : (x[i] < -tau ? -tau : x[i]);
    }
    /* ---- per-group metadata (G >= 32: element i of every lane is in group 32 i / G) ---- */
    const int ng = d / G;
    float sc[8], lo[8];
    int fits = 1;
    for (int j = 0; j < ng; ++j) {
        float mn = __builtin_huge_valf(), mx = -__builtin_huge_valf(), sum = 0.f;
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            if ((32 * i) / G == j) {
                mn = fminf(mn, x[i]);
                mx = fmaxf(mx, x[i]);
                sum += x[i];
            }
        float s, l;
        if (quantizer == OKV_FMT_QUANT_LLOYD_MAX) {
            const float mu = warp_sum(sum) / (float)G;
            float var = 0.f;
#pragma unroll
            for (int i = 0; i < NPL; ++i)
                if ((32 * i) / G == j) var += (x[i] - mu) * (x[i] - mu);
            var = warp_sum(var);
            const float sigma = sqrtf(var / (float)G);
            s = fmaxf(OKV_FMT_LM_SPACING * sigma, OKV_FMT_MIN_RANGE / 3.0f);
            l = mu - 1.5f * s;
            if (!okv_meta_fits(s, meta_dtype) || !okv_meta_fits(l, meta_dtype)) fits = 0;
            s = okv_meta_round(s, meta_dtype);
            l = okv_meta_round(l, meta_dtype);
        } else {
            float mm[2] = {warp_min(mn), warp_max(mx)};
            if (!okv_group_meta(mm, 2, OKV_FMT_QUANT_UNIFORM, meta_dtype, &s, &l)) fits = 0;
        }
        sc[j] = s;
        lo[j] = l;
    }
    if (!fits || !commit) return fits;
        /* ---- codes, packing ---- */
#pragma unroll
    for (int i = 0; i < NPL; ++i) {
        const int j = (32 * i) / G;
        float s = sc[0], l = lo[0];
        for (int jj = 1; jj < ng; ++jj)
            if (jj == j) {
                s = sc[jj];
                l = lo[jj];
            }
        codes_s[lane + 32 * i] = (unsigned char)okv_group_code(x[i], s, l, quantizer);
    }
    __syncwarp();
    const int q = d / 4;
    for (int c = lane; c < q; c += 32)
        codes_out[c] = okv_pack4(codes_s[c], codes_s[c + q], codes_s[c + 2 * q], codes_s[c + 3 * q]);
    const int msz = okv_meta_size(meta_dtype);
    if (lane < ng) {
        float s = sc[0], l = lo[0];
        for (int jj = 1; jj < ng; ++jj)
            if (jj == lane) {
                s = sc[jj];
                l = lo[jj];
            }
        unsigned char *mp = meta_out + (size_t)lane * 2 * msz;
        if (meta_dtype == OKV_FMT_META_F32) {
            ((float *)mp)[0] = s;
            ((float *)mp)[1] = l;
        } else if (meta_dtype == OKV_FMT_META_F16) {
            ((unsigned short *)mp)[0] = okv_f32_to_f16(s);
            ((unsigned short *)mp)[1] = okv_f32_to_f16(l);
        } else {
            ((unsigned short *)mp)[0] = okv_f32_to_bf16(s);
            ((unsigned short *)mp)[1] = okv_f32_to_bf16(l);
        }
    }
    __syncwarp();
    return 1;
}

__device__ __forceinline__ unsigned short *bf16_row_ptr(const okvc_cache_t &c, int b, int pos, int kv, int head)
{
    const int slot = okv_bf16_slot(pos, c.s0, c.w, c.f);
    const int page = c.bf16_indices[c.bf16_indptr[b] + slot / c.page];
    return c.bf16_pool + (size_t)page * c.bf16_page_elems +
           okv_bf16_row_elem(c.hkv, c.page, c.d, kv, head, slot % c.page);
}
__device__ __forceinline__ unsigned char *int2_page(const okvc_cache_t &c, int b, int idx)
{
    const int page = c.int2_indices[c.int2_indptr[b] + idx / c.page];
    return c.int2_pool + (size_t)page * c.int2_page_bytes;
}

constexpr int WPB = 8; /* warps per block */

/* A dry run after a failed validation reads nothing through the page tables. */
__device__ __forceinline__ bool dry_run_skipped(int commit, const int *status)
{
    return !commit && (*(const volatile int *)status & OKV_GPU_FLAG_BAD_INDEX);
}

/* Demotion: recent rows [S0 + I, S0 + after) of each sequence into INT2.
 * mode 0 (append): after = okv_int2_len_after(L, I, n_new); mode 1 (demote): I + min(recent, n_rows). */
template <int NPL>
__global__ void __launch_bounds__(WPB * 32) demote_kernel(okvc_cache_t c, const int *append_indptr, int n_rows,
                                                          float kclip, float vclip, int *status, int commit)
{
    __shared__ unsigned char cs[WPB][NPL * 32];
    __shared__ float xs_unused[1];
    (void)xs_unused;
    if (dry_run_skipped(commit, status)) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int b = blockIdx.y;
    const int item = blockIdx.x * WPB + warp; /* (row, kv, head) */
    const int row = item / (2 * c.hkv), kv = (item / c.hkv) % 2, head = item % c.hkv;
    const int L = c.seq_lens[b], I = c.int2_lens[b];
    int after;
    if (append_indptr)
        after = okv_int2_len_after(L, I, append_indptr[b + 1] - append_indptr[b], c.s0, c.w, c.f);
    else {
        int recent = L - c.s0 - I;
        if (recent < 0) recent = 0;
        after = I + (recent < n_rows ? recent : n_rows);
    }
    int to = c.s0 + after < L ? c.s0 + after : L;
    const int p = c.s0 + I + row;
    if (p >= to) return;
    const int d = c.d;
    const unsigned short *src = bf16_row_ptr(c, b, p, kv, head);
    float x[NPL];
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        x[i] = __uint_as_float(((unsigned)src[lane + 32 * i]) << 16);
    unsigned char *pg = int2_page(c, b, p - c.s0);
    const int slot = (p - c.s0) % c.page;
    if (!quantize_row<NPL>(x, d, c.group, kv ? vclip : kclip, c.clip_mode, c.quantizer, c.meta_dtype,
                           pg + okv_int2_codes_offset(c.hkv, c.page, d, kv, head, slot),
                           pg + okv_int2_meta_offset(c.hkv, c.page, d, c.group, c.meta_dtype, kv, head, slot), cs[warp],
                           lane, commit))
        if (lane == 0) atomicOr(status, OKV_GPU_FLAG_META_OVERFLOW);
}

/* New rows: rotate, then quantize into INT2 or store bf16 into the sink / ring. */
template <int NPL>
__global__ void __launch_bounds__(WPB * 32)
    place_kernel(okvc_cache_t c, const void *k, const void *v, int dtype, const int *append_indptr, int n_rows,
                 const float *krot, const float *vrot, int per_head, float kclip, float vclip, const float *kbias,
                 int *status, int commit)
{
    if (dry_run_skipped(commit, status)) return;
    __shared__ unsigned char cs[WPB][NPL * 32];
    __shared__ float xs[WPB][NPL * 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const long long item = (long long)blockIdx.x * WPB + warp;
    const int d = c.d;
    const int r = (int)(item / (2 * c.hkv)), kv = (int)((item / c.hkv) % 2), head = (int)(item % c.hkv);
    if (r >= n_rows) return;
    const int b = find_seq(append_indptr, c.batch, r);
    const int L = c.seq_lens[b], I = c.int2_lens[b];
    const int after = okv_int2_len_after(L, I, append_indptr[b + 1] - append_indptr[b], c.s0, c.w, c.f);
    const int p = L + (r - append_indptr[b]);
    const bool to_int2 = p >= c.s0 && p < c.s0 + after;
    const void *src = kv ? v : k;
    const size_t base = ((size_t)r * c.hkv + head) * d;
    const float *mu = (kv == 0 && kbias) ? kbias + (per_head ? (size_t)head * d : 0) : nullptr;
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        xs[warp][lane + 32 * i] = ld_any(src, dtype, base + lane + 32 * i) - (mu ? mu[lane + 32 * i] : 0.0f);
    __syncwarp();
    const float *R = (kv ? vrot : krot) + (per_head ? (size_t)head * d * d : 0);
    float y[NPL];
    rotate_row<NPL>(xs[warp], R, d, 0, lane, y);
    bool bad = false;
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        bad |= !isfinite(y[i]) || (!to_int2 && !isfinite(__bfloat162float(__float2bfloat16_rn(y[i]))));
    if (__any_sync(0xffffffffu, bad)) {
        if (lane == 0) atomicOr(status, OKV_GPU_FLAG_NONFINITE);
        return;
    }
    if (to_int2) {
        unsigned char *pg = int2_page(c, b, p - c.s0);
        const int slot = (p - c.s0) % c.page;
        if (!quantize_row<NPL>(y, d, c.group, kv ? vclip : kclip, c.clip_mode, c.quantizer, c.meta_dtype,
                               pg + okv_int2_codes_offset(c.hkv, c.page, d, kv, head, slot),
                               pg + okv_int2_meta_offset(c.hkv, c.page, d, c.group, c.meta_dtype, kv, head, slot),
                               cs[warp], lane, commit))
            if (lane == 0) atomicOr(status, OKV_GPU_FLAG_META_OVERFLOW);
    } else if (commit) {
        unsigned short *dst = bf16_row_ptr(c, b, p, kv, head);
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            dst[lane + 32 * i] = okv_f32_to_bf16(y[i]);
    }
}

__global__ void lens_kernel(okvc_cache_t c, const int *append_indptr, int n_rows)
{
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= c.batch) return;
    const int L = c.seq_lens[b], I = c.int2_lens[b];
    if (append_indptr) {
        const int n = append_indptr[b + 1] - append_indptr[b];
        c.int2_lens_rw[b] = okv_int2_len_after(L, I, n, c.s0, c.w, c.f);
        c.seq_lens_rw[b] = L + n;
    } else {
        int recent = L - c.s0 - I;
        if (recent < 0) recent = 0;
        c.int2_lens_rw[b] = I + (recent < n_rows ? recent : n_rows);
    }
}

template <int NPL>
__global__ void __launch_bounds__(WPB * 32)
    rotate_kernel(const void *x, int xd, void *out, int od, const float *R, int n_rows, int n_heads, int d,
                  int per_head, int hg, int transpose, const float *bias)
{
    __shared__ float xs[WPB][NPL * 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const long long item = (long long)blockIdx.x * WPB + warp;
    if (item >= (long long)n_rows * n_heads) return;
    const int head = (int)(item % n_heads);
    const size_t base = (size_t)item * d;
    const float *mu = bias ? bias + (per_head ? (size_t)(head / hg) * d : 0) : nullptr;
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        xs[warp][lane + 32 * i] = ld_any(x, xd, base + lane + 32 * i) - (mu ? mu[lane + 32 * i] : 0.0f);
    __syncwarp();
    float y[NPL];
    rotate_row<NPL>(xs[warp], R + (per_head ? (size_t)(head / hg) * d * d : 0), d, transpose, lane, y);
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        st_any(out, od, base + lane + 32 * i, y[i]);
}

/* Row of logical position pos (either tier) into registers. */
template <int NPL>
__device__ __forceinline__ void read_cache_row(const okvc_cache_t &c, int b, int I, int pos, int kv, int head, int lane,
                                               float (&y)[NPL])
{
    const int d = c.d;
    if (pos >= c.s0 && pos < c.s0 + I) {
        const unsigned char *pg = int2_page(c, b, pos - c.s0);
        const int slot = (pos - c.s0) % c.page;
        const unsigned char *cb = pg + okv_int2_codes_offset(c.hkv, c.page, d, kv, head, slot);
        const unsigned char *mb = pg + okv_int2_meta_offset(c.hkv, c.page, d, c.group, c.meta_dtype, kv, head, slot);
        const int msz = okv_meta_size(c.meta_dtype);
#pragma unroll
        for (int i = 0; i < NPL; ++i) {
            const int ch = lane + 32 * i, q = d / 4;
            const int code = okv_unpack_code(cb[ch % q], ch / q);
            const unsigned char *mp = mb + (size_t)(ch / c.group) * 2 * msz;
            float s, l;
            if (c.meta_dtype == OKV_FMT_META_F32) {
                s = ((const float *)mp)[0];
                l = ((const float *)mp)[1];
            } else if (c.meta_dtype == OKV_FMT_META_F16) {
                s = okv_f16_to_f32(((const unsigned short *)mp)[0]);
                l = okv_f16_to_f32(((const unsigned short *)mp)[1]);
            } else {
                s = okv_bf16_to_f32(((const unsigned short *)mp)[0]);
                l = okv_bf16_to_f32(((const unsigned short *)mp)[1]);
            }
            y[i] = okv_dequant(code, s, l);
        }
    } else {
        const unsigned short *src = bf16_row_ptr(c, b, pos, kv, head);
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            y[i] = okv_bf16_to_f32(src[lane + 32 * i]);
    }
}

template <int NPL>
__global__ void __launch_bounds__(WPB * 32)
    dequant_kernel(okvc_cache_t c, const int *out_indptr, int out_rows, void *kout, void *vout, int od)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const long long item = (long long)blockIdx.x * WPB + warp;
    const int r = (int)(item / (2 * c.hkv)), kv = (int)((item / c.hkv) % 2), head = (int)(item % c.hkv);
    if (r >= out_rows || c.batch == 0) return;
    if (r < out_indptr[0] || r >= out_indptr[c.batch]) return;
    const int b = find_seq(out_indptr, c.batch, r);
    const int p = r - out_indptr[b];
    const int L = c.seq_lens[b], I = c.int2_lens[b];
    if (p >= L) return;
    const int d = c.d;
    void *dst = kv ? vout : kout;
    const size_t ob = ((size_t)r * c.hkv + head) * d;
    float y[NPL];
    read_cache_row<NPL>(c, b, I, p, kv, head, lane, y);
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        st_any(dst, od, ob + lane + 32 * i, y[i]);
}

/* Prefill attention, simple version: one warp per (query row, query head). */
template <int NPL>
__global__ void __launch_bounds__(WPB * 32)
    prefill_kernel(okvc_cache_t c, const int *q_indptr, int n_rows, const void *q, const void *kn, const void *vn,
                   int idt, void *out, int od, float sm2)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const long long item = (long long)blockIdx.x * WPB + warp;
    const int r = (int)(item / c.hq), qh = (int)(item % c.hq);
    if (r >= n_rows) return;
    const int b = find_seq(q_indptr, c.batch, r);
    const int j = r - q_indptr[b];
    const int L = c.seq_lens[b], I = c.int2_lens[b];
    const int h = qh / (c.hq / c.hkv);
    const int d = c.d;
    float qv[NPL], acc[NPL];
#pragma unroll
    for (int i = 0; i < NPL; ++i) {
        qv[i] = ld_any(q, idt, ((size_t)r * c.hq + qh) * d + lane + 32 * i) * sm2;
        acc[i] = 0.f;
    }
    float m = NEG_INF, l = 0.f;
    const int total = L + j + 1;
    for (int t = 0; t < total; ++t) {
        float kr[NPL], vr[NPL];
        if (t < L) {
            read_cache_row<NPL>(c, b, I, t, 0, h, lane, kr);
            read_cache_row<NPL>(c, b, I, t, 1, h, lane, vr);
        } else {
            const size_t rb = ((size_t)(q_indptr[b] + t - L) * c.hkv + h) * d;
#pragma unroll
            for (int i = 0; i < NPL; ++i) {
                kr[i] = ld_any(kn, idt, rb + lane + 32 * i);
                vr[i] = ld_any(vn, idt, rb + lane + 32 * i);
            }
        }
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            s = fmaf(qv[i], kr[i], s);
        s = warp_sum(s);
        const float mn = fmaxf(m, s);
        const float corr = exp2f(m - mn), p = exp2f(s - mn);
        l = l * corr + p;
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            acc[i] = acc[i] * corr + p * vr[i];
        m = mn;
    }
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        st_any(out, od, ((size_t)r * c.hq + qh) * d + lane + 32 * i, acc[i] / l);
}

/* Staging of the flash prefill (okv_cuda_prefill.cu): row t of (sequence b, KV head
 * h) -- the history through read_cache_row, then the chunk's rows -- into row
 * ((b * Hkv + h) * cap + t) of the workspace arrays. pass 0 (V rows only): the
 * per-(b, h) max |v| and the cap check; pass 1: K as bf16 hi + lo, V as fp16 scaled
 * by 2^okvc_prefill_vshift(max). One warp per (row, K/V, head), grid.y = sequence. */
template <int NPL>
__global__ void __launch_bounds__(WPB * 32)
    prefill_stage_kernel(okvc_cache_t c, const int *q_indptr, const void *kn, const void *vn, int idt, int cap,
                         int pass, unsigned short *khi, unsigned short *klo, unsigned short *vh, unsigned *vmax,
                         int *status)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int b = blockIdx.y;
    const long long item = (long long)blockIdx.x * WPB + warp;
    const int t = (int)(pass == 0 ? item / c.hkv : item / (2 * c.hkv));
    const int kv = pass == 0 ? 1 : (int)((item / c.hkv) % 2), head = (int)(item % c.hkv);
    const int L = c.seq_lens[b], I = c.int2_lens[b], n = q_indptr[b + 1] - q_indptr[b];
    if (pass == 0 && item == 0 && lane == 0 && (long long)L + n > cap) atomicOr(status, OKV_GPU_FLAG_BAD_INDEX);
    if (t >= cap || (long long)t >= (long long)L + n) return;
    const int d = c.d;
    float y[NPL];
    if (t < L)
        read_cache_row<NPL>(c, b, I, t, kv, head, lane, y);
    else {
        const size_t rb = ((size_t)(q_indptr[b] + t - L) * c.hkv + head) * d;
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            y[i] = ld_any(kv ? vn : kn, idt, rb + lane + 32 * i);
    }
    const size_t bh = (size_t)b * c.hkv + head;
    if (pass == 0) {
        float mx = 0.f;
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            mx = fmaxf(mx, fabsf(y[i]));
        mx = warp_max(mx);
        if (lane == 0) atomicMax(vmax + bh, __float_as_uint(mx));
        return;
    }
    const size_t o = (bh * cap + t) * d;
    if (kv == 0) {
#pragma unroll
        for (int i = 0; i < NPL; ++i) {
            const __nv_bfloat16 hi = __float2bfloat16_rn(y[i]);
            khi[o + lane + 32 * i] = __bfloat16_as_ushort(hi);
            klo[o + lane + 32 * i] = __bfloat16_as_ushort(__float2bfloat16_rn(y[i] - __bfloat162float(hi)));
        }
    } else {
        const int sh = okvc_prefill_vshift(vmax[bh]);
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            vh[o + lane + 32 * i] = __half_as_ushort(__float2half_rn(ldexpf(y[i], sh)));
    }
}

/* acc[hg] (i, j) += sum_t sum_{h in group} w x_i x_j; one thread per (i, j). */
template <typename T>
__global__ void moments_kernel(const void *x, int xd, const float *w, T *acc, int n_rows, int n_heads, int d, int hg)
{
    const int i = blockIdx.y * 16 + threadIdx.y, j = blockIdx.x * 16 + threadIdx.x;
    const int grp = blockIdx.z;
    __shared__ float xi[16][17], xj[16][17];
    double sum = 0.0;
    const long long n = (long long)n_rows * hg;
    for (long long base = 0; base < n; base += 16) {
        const long long e = base + threadIdx.y;
        float a = 0.f, bb = 0.f;
        if (e < n) {
            const long long t = e / hg, hh = grp * hg + e % hg;
            const size_t o = ((size_t)t * n_heads + hh) * d;
            const float ww = w ? w[(size_t)t * n_heads + hh] : 1.0f;
            a = ld_any(x, xd, o + blockIdx.y * 16 + threadIdx.x) * ww;
            bb = ld_any(x, xd, o + blockIdx.x * 16 + threadIdx.x);
        }
        __syncthreads();
        xi[threadIdx.y][threadIdx.x] = a;
        xj[threadIdx.y][threadIdx.x] = bb;
        __syncthreads();
        const int lim = (int)((n - base) < 16 ? (n - base) : 16);
        float part = 0.f;
        for (int r = 0; r < lim; ++r)
            part = fmaf(xi[r][threadIdx.y], xj[r][threadIdx.x], part);
        sum += (double)part;
    }
    acc[((size_t)grp * d + i) * d + j] += (T)sum;
}

} // namespace

#define OKV_BY_NPL(d, CALL)                                                                                            \
    do {                                                                                                               \
        if ((d) == 64) {                                                                                               \
            constexpr int NPL = 2;                                                                                     \
            CALL;                                                                                                      \
        } else if ((d) == 128) {                                                                                       \
            constexpr int NPL = 4;                                                                                     \
            CALL;                                                                                                      \
        } else {                                                                                                       \
            constexpr int NPL = 8;                                                                                     \
            CALL;                                                                                                      \
        }                                                                                                              \
    } while (0)

extern "C" int okvc_validate_launch(const okvc_state_t *st, const okvc_cache_t *c, int need_mode, int n, const int *aip,
                                    int row_mode, const int *rip, int n_rows)
{
    okv_gpu_validate_enqueue(st->stream, *c, need_mode, n, aip, row_mode, rip, n_rows, st->d_status);
    return cudaGetLastError();
}

extern "C" int okvc_check_finite_launch(const okvc_state_t *st, const void *x, int dtype, size_t n)
{
    okv_gpu_finite_enqueue(st->stream, x, dtype, n, st->d_status);
    return cudaGetLastError();
}

extern "C" int okvc_append_launch(const okvc_state_t *st, const okvc_cache_t *cp, const void *k, const void *v,
                                  int dtype, const int *append_indptr, int n_rows, const float *krot, const float *vrot,
                                  int per_head, float kclip, float vclip, const float *kbias, int commit)
{
    const okvc_cache_t c = *cp;
    if (c.batch == 0) return cudaSuccess;
    const int maxdem = c.w + c.f;
    dim3 g1((maxdem * 2 * c.hkv + WPB - 1) / WPB, c.batch);
    OKV_BY_NPL(c.d, (demote_kernel<NPL>
                     <<<g1, WPB * 32, 0, st->stream>>>(c, append_indptr, 0, kclip, vclip, st->d_status, commit)));
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    if (n_rows > 0) {
        const long long items = (long long)n_rows * 2 * c.hkv;
        const unsigned nb = (unsigned)((items + WPB - 1) / WPB);
        OKV_BY_NPL(c.d, (place_kernel<NPL><<<nb, WPB * 32, 0, st->stream>>>(c, k, v, dtype, append_indptr, n_rows, krot,
                                                                            vrot, per_head, kclip, vclip, kbias,
                                                                            st->d_status, commit)));
        e = cudaGetLastError();
        if (e != cudaSuccess) return e;
    }
    if (!commit) return cudaSuccess;
    lens_kernel<<<(c.batch + 127) / 128, 128, 0, st->stream>>>(c, append_indptr, n_rows);
    return cudaGetLastError();
}

extern "C" int okvc_demote_launch(const okvc_state_t *st, const okvc_cache_t *cp, int n_rows, float kclip, float vclip,
                                  int commit)
{
    const okvc_cache_t c = *cp;
    if (c.batch == 0 || n_rows <= 0) return cudaSuccess;
    int maxdem = c.w + c.f;
    if (n_rows < maxdem) maxdem = n_rows;
    dim3 g1((maxdem * 2 * c.hkv + WPB - 1) / WPB, c.batch);
    OKV_BY_NPL(c.d, (demote_kernel<NPL>
                     <<<g1, WPB * 32, 0, st->stream>>>(c, nullptr, n_rows, kclip, vclip, st->d_status, commit)));
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || !commit) return e;
    lens_kernel<<<(c.batch + 127) / 128, 128, 0, st->stream>>>(c, nullptr, n_rows);
    return cudaGetLastError();
}

extern "C" int okvc_rotate_launch(const okvc_state_t *st, const void *x, int xd, void *out, int od, const float *R,
                                  int n_rows, int n_heads, int d, int per_head, int hg, int transpose,
                                  const float *bias)
{
    const long long items = (long long)n_rows * n_heads;
    if (items == 0) return cudaSuccess;
    const unsigned nb = (unsigned)((items + WPB - 1) / WPB);
    OKV_BY_NPL(d, (rotate_kernel<NPL><<<nb, WPB * 32, 0, st->stream>>>(x, xd, out, od, R, n_rows, n_heads, d, per_head,
                                                                       hg > 0 ? hg : 1, transpose, bias)));
    return cudaGetLastError();
}

extern "C" int okvc_dequantize_launch(const okvc_state_t *st, const okvc_cache_t *cp, const int *out_indptr,
                                      int out_rows, void *kout, void *vout, int od)
{
    const okvc_cache_t c = *cp;
    const long long items = (long long)out_rows * 2 * c.hkv;
    if (items == 0 || c.batch == 0) return cudaSuccess;
    const unsigned nb = (unsigned)((items + WPB - 1) / WPB);
    OKV_BY_NPL(c.d, (dequant_kernel<NPL><<<nb, WPB * 32, 0, st->stream>>>(c, out_indptr, out_rows, kout, vout, od)));
    return cudaGetLastError();
}

extern "C" int okvc_prefill_launch(const okvc_state_t *st, const okvc_cache_t *cp, const int *q_indptr, int n_rows,
                                   const void *q, const void *kn, const void *vn, int idt, void *out, int od,
                                   float sm_scale)
{
    const okvc_cache_t c = *cp;
    const long long items = (long long)n_rows * c.hq;
    if (items == 0 || c.batch == 0) return cudaSuccess;
    const float sm = (sm_scale > 0.f ? sm_scale : 1.0f / sqrtf((float)c.d)) * 1.4426950408889634f;
    const unsigned nb = (unsigned)((items + WPB - 1) / WPB);
    OKV_BY_NPL(
        c.d, (prefill_kernel<NPL><<<nb, WPB * 32, 0, st->stream>>>(c, q_indptr, n_rows, q, kn, vn, idt, out, od, sm)));
    return cudaGetLastError();
}

extern "C" int okvc_prefill_stage_launch(const okvc_state_t *st, const okvc_cache_t *cp, const int *q_indptr,
                                         const void *kn, const void *vn, int idt, int cap, int pass,
                                         unsigned short *khi, unsigned short *klo, unsigned short *vh,
                                         unsigned int *vmax)
{
    const okvc_cache_t c = *cp;
    if (c.batch == 0 || cap <= 0) return cudaSuccess;
    const long long items = (long long)cap * c.hkv * (pass == 0 ? 1 : 2);
    const dim3 grid((unsigned)((items + WPB - 1) / WPB), (unsigned)c.batch);
    OKV_BY_NPL(c.d, (prefill_stage_kernel<NPL><<<grid, WPB * 32, 0, st->stream>>>(c, q_indptr, kn, vn, idt, cap, pass,
                                                                                  khi, klo, vh, vmax, st->d_status)));
    return cudaGetLastError();
}

extern "C" int okvc_moments_launch(const okvc_state_t *st, const void *x, int xd, const float *w, void *acc,
                                   int acc_dtype, int n_rows, int n_heads, int d, int hg)
{
    if (hg <= 0) hg = 1;
    dim3 grid(d / 16, d / 16, n_heads / hg), block(16, 16);
    if (acc_dtype == OKV_DTYPE_F64)
        moments_kernel<double><<<grid, block, 0, st->stream>>>(x, xd, w, (double *)acc, n_rows, n_heads, d, hg);
    else
        moments_kernel<float><<<grid, block, 0, st->stream>>>(x, xd, w, (float *)acc, n_rows, n_heads, d, hg);
    return cudaGetLastError();
}
