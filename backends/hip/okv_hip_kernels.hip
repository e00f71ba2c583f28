/*
 * okv_hip_kernels.hip - every kernel of the HIP backend and its launcher.
 *
 * Written once for any wave width: a "wave" is OKV_WAVE lanes (64 on CDNA, 32 on
 * RDNA and on NVIDIA through okv_hip_alias.h). Row kernels run one wave per row
 * (one token, one head, K or V) with blocks of exactly one wave; lane l holds the
 * channels l + OKV_WAVE * i (i < D / OKV_WAVE). Reductions are xor-shuffles over
 * the wave, counts are ballots. The INT2 format, the metadata rounding, the codes,
 * the packing and the page geometry all come from core/format/okv_format.h.
 *
 * Decode attention (generic dot-product path): grid (splits, Hkv x head chunks,
 * batch), blocks of OKVH_DEC_WAVES waves. A block takes one sequence, one KV head,
 * up to OKVH_GMAX query heads of that KV head (each K/V byte is read once for all
 * of them) and one contiguous range of the sequence's positions (split-K over the
 * whole logical sequence, both tiers). Each wave runs an online softmax over every
 * OKVH_DEC_WAVES-th token of the range; the waves' states are merged exactly in
 * shared memory and the block writes a normalised partial (o, lse) to the
 * workspace; a second kernel merges the splits exactly (log-sum-exp) and applies
 * R_V^T on request. Scores are kept in log2 units (q pre-scaled by sm_scale*log2 e).
 */
#include "okv_hip_alias.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "okv_format.h"
#include "okv_hip.h"

#define OKVH_DEC_WAVES 4 /* waves per decode block */
#define OKVH_GMAX 8      /* query heads per decode block */

namespace
{

constexpr float NEG_INF = -__builtin_huge_valf();
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.69314718055994531f;

inline hipStream_t S(const okvh_state_t *st) { return (hipStream_t)st->stream; }

__device__ __forceinline__ int lane_id() { return (int)(threadIdx.x % OKV_WAVE); }
__device__ __forceinline__ int wave_id() { return (int)(threadIdx.x / OKV_WAVE); }

__device__ __forceinline__ float ld_any(const void *p, int dtype, size_t i)
{
    if (dtype == OKV_DTYPE_F32) return ((const float *)p)[i];
    const unsigned short h = ((const unsigned short *)p)[i];
    return dtype == OKV_DTYPE_F16 ? okv_f16_to_f32(h) : okv_bf16_to_f32(h);
}
__device__ __forceinline__ void st_any(void *p, int dtype, size_t i, float v)
{
    if (dtype == OKV_DTYPE_F32)
        ((float *)p)[i] = v;
    else
        ((unsigned short *)p)[i] = dtype == OKV_DTYPE_F16 ? okv_f32_to_f16(v) : okv_f32_to_bf16(v);
}
__device__ __forceinline__ float ld_meta(const unsigned char *p, int md)
{
    if (md == OKV_FMT_META_F32) return *(const float *)p;
    const unsigned short h = *(const unsigned short *)p;
    return md == OKV_FMT_META_F16 ? okv_f16_to_f32(h) : okv_bf16_to_f32(h);
}
__device__ __forceinline__ void st_meta(unsigned char *p, int md, float v)
{
    if (md == OKV_FMT_META_F32)
        *(float *)p = v;
    else
        *(unsigned short *)p = md == OKV_FMT_META_F16 ? okv_f32_to_f16(v) : okv_f32_to_bf16(v);
}
__device__ __forceinline__ bool finite_f(float x) { return (x - x) == 0.0f; }

/* first index b with indptr[b + 1] > r (indptr monotone, batch + 1 entries) */
__device__ __forceinline__ int find_seq(const int *indptr, int batch, int r)
{
    int lo = 0, hi = batch - 1;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (indptr[mid + 1] > r)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

__device__ __forceinline__ unsigned short *bf16_row(const okvh_cache_t &c, int b, int pos, int kv, int head)
{
    const int slot = okv_bf16_slot(pos, c.s0, c.w, c.f);
    const int page = c.bf16_indices[c.bf16_indptr[b] + slot / c.page];
    return c.bf16_pool + (size_t)page * c.bf16_page_elems +
           okv_bf16_row_elem(c.hkv, c.page, c.d, kv, head, slot % c.page);
}
__device__ __forceinline__ unsigned char *int2_page(const okvh_cache_t &c, int b, int idx)
{
    const int page = c.int2_indices[c.int2_indptr[b] + idx / c.page];
    return c.int2_pool + (size_t)page * c.int2_page_bytes;
}

/* Row of logical position pos (either tier) of sequence b: y[i] = channel lane + WAVE*i. */
template <int D>
__device__ __forceinline__ void read_row(const okvh_cache_t &c, int b, int I, int pos, int kv, int head, int lane,
                                         float (&y)[D / OKV_WAVE])
{
    constexpr int NPL = D / OKV_WAVE, Q = D / 4;
    if (pos >= c.s0 && pos < c.s0 + I) {
        const unsigned char *pg = int2_page(c, b, pos - c.s0);
        const int slot = (pos - c.s0) % c.page;
        const unsigned char *cb = pg + okv_int2_codes_offset(c.hkv, c.page, D, kv, head, slot);
        const unsigned char *mb = pg + okv_int2_meta_offset(c.hkv, c.page, D, c.group, c.meta_dtype, kv, head, slot);
        const int msz = okv_meta_size(c.meta_dtype);
#pragma unroll
        for (int i = 0; i < NPL; ++i) {
            const int ch = lane + OKV_WAVE * i;
            const int code = okv_unpack_code(cb[ch % Q], ch / Q);
            const unsigned char *mp = mb + (size_t)(ch / c.group) * 2 * msz;
            y[i] = okv_dequant(code, ld_meta(mp, c.meta_dtype), ld_meta(mp + msz, c.meta_dtype));
        }
    } else {
        const unsigned short *src = bf16_row(c, b, pos, kv, head);
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            y[i] = okv_bf16_to_f32(src[lane + OKV_WAVE * i]);
    }
}

/* Clip + per-group metadata + codes of one row held by the wave (x[i] = channel
 * lane + WAVE*i). Must be called by the whole block (= one wave). Writes codes and
 * metadata only when commit and the metadata fit; returns 0 on metadata overflow.
 * codes_s: D bytes of shared scratch. */
template <int D>
__device__ int quantize_row(float (&x)[D / OKV_WAVE], int G, float ratio, int clip_mode, int quantizer, int md,
                            unsigned char *codes_out, unsigned char *meta_out, unsigned char *codes_s, int lane,
                            int commit)
{
    constexpr int NPL = D / OKV_WAVE;
    /* ---- clip threshold (the format header's definitions, evaluated wave-wide) ---- */
    const int k = (int)floorf(ratio * (float)D);
    if (k < D) {
        const int kk = k < 0 ? 0 : k;
        float tau;
        if (clip_mode == OKV_FMT_CLIP_BISECT) {
            float hi = 0.f;
#pragma unroll
            for (int i = 0; i < NPL; ++i)
                hi = fmaxf(hi, fabsf(x[i]));
            hi = okv_wave_max(hi);
            float lo = 0.f;
            const int allowed = D - kk;
            for (int s = 0; s < OKV_FMT_BISECT_STEPS; ++s) {
                const float mid = 0.5f * (lo + hi);
                int cnt = 0;
#pragma unroll
                for (int i = 0; i < NPL; ++i)
                    cnt += okv_wave_count(fabsf(x[i]) > mid);
                if (cnt > allowed)
                    lo = mid;
                else
                    hi = mid;
            }
            tau = hi;
        } else {
            /* exact order statistic: the largest u with #{|x| < u} <= k, bit by bit
             * over the (monotone) float bits of |x| */
            unsigned u[NPL];
#pragma unroll
            for (int i = 0; i < NPL; ++i)
                u[i] = okv_f2u_(fabsf(x[i]));
            unsigned res = 0;
            for (int bit = 30; bit >= 0; --bit) {
                const unsigned test = res | (1u << bit);
                int cnt = 0;
#pragma unroll
                for (int i = 0; i < NPL; ++i)
                    cnt += okv_wave_count(u[i] < test);
                if (cnt <= kk) res = test;
            }
            tau = okv_u2f_(res);
        }
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            x[i] = x[i] > tau ? tau : (x[i] < -tau ? -tau : x[i]);
    }
    /* ---- per-group metadata: group of channel ch is ch / G ---- */
    const int ng = D / G;
    float sc[OKV_FMT_MAX_HEAD_DIM / 32], lo[OKV_FMT_MAX_HEAD_DIM / 32];
    int fits = 1;
    for (int j = 0; j < ng; ++j) {
        float mn = __builtin_huge_valf(), mx = -__builtin_huge_valf(), sum = 0.f;
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            if ((lane + OKV_WAVE * i) / G == j) {
                mn = fminf(mn, x[i]);
                mx = fmaxf(mx, x[i]);
                sum += x[i];
            }
        float s, l;
        if (quantizer == OKV_FMT_QUANT_LLOYD_MAX) {
            const float mu = okv_wave_sum(sum) / (float)G;
            float var = 0.f;
#pragma unroll
            for (int i = 0; i < NPL; ++i)
                if ((lane + OKV_WAVE * i) / G == j) var += (x[i] - mu) * (x[i] - mu);
            var = okv_wave_sum(var);
            const float sigma = sqrtf(var / (float)G);
            s = fmaxf(OKV_FMT_LM_SPACING * sigma, OKV_FMT_MIN_RANGE / 3.0f);
            l = mu - 1.5f * s;
            if (!okv_meta_fits(s, md) || !okv_meta_fits(l, md)) fits = 0;
            s = okv_meta_round(s, md);
            l = okv_meta_round(l, md);
        } else {
            float mm[2] = {okv_wave_min(mn), okv_wave_max(mx)};
            s = 0.f;
            l = 0.f;
            if (!okv_group_meta(mm, 2, OKV_FMT_QUANT_UNIFORM, md, &s, &l)) fits = 0;
        }
        sc[j] = s;
        lo[j] = l;
    }
    if (!fits || !commit) return fits;
        /* ---- codes through shared memory, then quartered packing ---- */
#pragma unroll
    for (int i = 0; i < NPL; ++i) {
        const int ch = lane + OKV_WAVE * i;
        const int j = ch / G;
        codes_s[ch] = (unsigned char)okv_group_code(x[i], sc[j], lo[j], quantizer);
    }
    __syncthreads();
    constexpr int Q = D / 4;
    for (int cidx = lane; cidx < Q; cidx += OKV_WAVE)
        codes_out[cidx] = okv_pack4(codes_s[cidx], codes_s[cidx + Q], codes_s[cidx + 2 * Q], codes_s[cidx + 3 * Q]);
    const int msz = okv_meta_size(md);
    for (int j = lane; j < ng; j += OKV_WAVE) {
        st_meta(meta_out + (size_t)j * 2 * msz, md, sc[j]);
        st_meta(meta_out + (size_t)j * 2 * msz + msz, md, lo[j]);
    }
    __syncthreads();
    return 1;
}

/* ----------------------------------------------------------------- rotate -- */
/* y[i] (channel lane + WAVE*i) = sum_k xs[k] R[k][ch] (or R[ch][k] when transpose). */
template <int D>
__device__ __forceinline__ void rotate_row(const float *xs, const float *R, int transpose, int lane,
                                           float (&y)[D / OKV_WAVE])
{
    constexpr int NPL = D / OKV_WAVE;
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        y[i] = 0.f;
    if (!transpose) {
        for (int k = 0; k < D; ++k) {
            const float xk = xs[k];
            const float *rr = R + (size_t)k * D + lane;
#pragma unroll
            for (int i = 0; i < NPL; ++i)
                y[i] = fmaf(xk, rr[OKV_WAVE * i], y[i]);
        }
    } else {
#pragma unroll
        for (int i = 0; i < NPL; ++i) {
            const float *rr = R + (size_t)(lane + OKV_WAVE * i) * D;
            float acc = 0.f;
            for (int k = 0; k < D; ++k)
                acc = fmaf(xs[k], rr[k], acc);
            y[i] = acc;
        }
    }
}

/* out = (x - bias) R (or R^T); bias NULL: none, else [d] or [n_rot, d] (per_head). */
template <int D>
__global__ void rotate_kernel(const void *x, int xd, void *out, int od, const float *R, int n_heads, int per_head,
                              int hg, int transpose, const float *bias)
{
    constexpr int NPL = D / OKV_WAVE;
    __shared__ float xs[D];
    const int lane = lane_id();
    const long long item = blockIdx.x;
    const int head = (int)(item % n_heads);
    const size_t base = (size_t)item * D;
    const float *mu = bias ? bias + (per_head ? (size_t)(head / hg) * D : 0) : nullptr;
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        xs[lane + OKV_WAVE * i] = ld_any(x, xd, base + lane + OKV_WAVE * i) - (mu ? mu[lane + OKV_WAVE * i] : 0.0f);
    __syncthreads(); /* the whole row is read before any store (x and out may alias) */
    float y[NPL];
    rotate_row<D>(xs, R + (per_head ? (size_t)(head / hg) * D * D : 0), transpose, lane, y);
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        st_any(out, od, base + lane + OKV_WAVE * i, y[i]);
}

/* ----------------------------------------------------------- append/demote -- */
__device__ __forceinline__ int demote_after(const okvh_cache_t &c, int b, const int *aip, int n_rows)
{
    const int L = c.seq_lens[b], I = c.int2_lens[b];
    if (aip) return okv_int2_len_after(L, I, aip[b + 1] - aip[b], c.s0, c.w, c.f);
    int recent = L - c.s0 - I;
    if (recent < 0) recent = 0;
    return I + (recent < n_rows ? recent : n_rows);
}

/* Recent rows [S0 + I, min(L, S0 + after)) into the INT2 tier (grid: rows x kv x heads, batch). */
template <int D>
__global__ void demote_kernel(okvh_cache_t c, const int *aip, int n_rows, float kclip, float vclip, int *flags,
                              int commit)
{
    constexpr int NPL = D / OKV_WAVE;
    __shared__ unsigned char cs[D];
    const int lane = lane_id();
    const int b = blockIdx.y;
    const int item = blockIdx.x;
    const int row = item / (2 * c.hkv), kv = (item / c.hkv) % 2, head = item % c.hkv;
    const int L = c.seq_lens[b], I = c.int2_lens[b];
    const int after = demote_after(c, b, aip, n_rows);
    const int to = c.s0 + after < L ? c.s0 + after : L;
    const int p = c.s0 + I + row;
    if (p >= to) return;
    const unsigned short *src = bf16_row(c, b, p, kv, head);
    float x[NPL];
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        x[i] = okv_bf16_to_f32(src[lane + OKV_WAVE * i]);
    unsigned char *pg = int2_page(c, b, p - c.s0);
    const int slot = (p - c.s0) % c.page;
    if (!quantize_row<D>(x, c.group, kv ? vclip : kclip, c.clip_mode, c.quantizer, c.meta_dtype,
                         pg + okv_int2_codes_offset(c.hkv, c.page, D, kv, head, slot),
                         pg + okv_int2_meta_offset(c.hkv, c.page, D, c.group, c.meta_dtype, kv, head, slot), cs, lane,
                         commit))
        if (lane == 0) atomicOr(flags, OKVH_FLAG_META_OVERFLOW);
}

/* New rows: rotate, then quantize into INT2 or store bf16 into the sink / ring. Keys
 * are centered first when kbias is set: (k - kbias) R_K in both tiers. */
template <int D>
__global__ void place_kernel(okvh_cache_t c, const void *k, const void *v, int dtype, const int *aip, int n_rows,
                             const float *krot, const float *vrot, int per_head, float kclip, float vclip,
                             const float *kbias, int *flags, int commit)
{
    constexpr int NPL = D / OKV_WAVE;
    __shared__ unsigned char cs[D];
    __shared__ float xs[D];
    const int lane = lane_id();
    const long long item = blockIdx.x;
    const int r = (int)(item / (2 * c.hkv)), kv = (int)((item / c.hkv) % 2), head = (int)(item % c.hkv);
    if (r >= n_rows) return;
    const int b = find_seq(aip, c.batch, r);
    const int L = c.seq_lens[b], I = c.int2_lens[b];
    const int after = okv_int2_len_after(L, I, aip[b + 1] - aip[b], c.s0, c.w, c.f);
    const int p = L + (r - aip[b]);
    const bool to_int2 = p >= c.s0 && p < c.s0 + after;
    const void *src = kv ? v : k;
    const size_t base = ((size_t)r * c.hkv + head) * D;
    const float *mu = (kv == 0 && kbias) ? kbias + (per_head ? (size_t)head * D : 0) : nullptr;
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        xs[lane + OKV_WAVE * i] =
            ld_any(src, dtype, base + lane + OKV_WAVE * i) - (mu ? mu[lane + OKV_WAVE * i] : 0.0f);
    __syncthreads();
    const float *R = (kv ? vrot : krot) + (per_head ? (size_t)head * D * D : 0);
    float y[NPL];
    rotate_row<D>(xs, R, 0, lane, y);
    bool bad = false;
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        bad |= !finite_f(y[i]) || (!to_int2 && !finite_f(okv_bf16_to_f32(okv_f32_to_bf16(y[i]))));
    if (okv_wave_any(bad)) {
        if (lane == 0) atomicOr(flags, OKVH_FLAG_NONFINITE);
        return;
    }
    if (to_int2) {
        unsigned char *pg = int2_page(c, b, p - c.s0);
        const int slot = (p - c.s0) % c.page;
        if (!quantize_row<D>(y, c.group, kv ? vclip : kclip, c.clip_mode, c.quantizer, c.meta_dtype,
                             pg + okv_int2_codes_offset(c.hkv, c.page, D, kv, head, slot),
                             pg + okv_int2_meta_offset(c.hkv, c.page, D, c.group, c.meta_dtype, kv, head, slot), cs,
                             lane, commit))
            if (lane == 0) atomicOr(flags, OKVH_FLAG_META_OVERFLOW);
    } else if (commit) {
        unsigned short *dst = bf16_row(c, b, p, kv, head);
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            dst[lane + OKV_WAVE * i] = okv_f32_to_bf16(y[i]);
    }
}

__global__ void lens_kernel(okvh_cache_t c, const int *aip, int n_rows)
{
    const int b = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (b >= c.batch) return;
    const int L = c.seq_lens[b];
    const int after = demote_after(c, b, aip, n_rows);
    c.int2_lens[b] = after;
    if (aip) c.seq_lens[b] = L + (aip[b + 1] - aip[b]);
}

/* -------------------------------------------------------------- dequantize -- */
template <int D> __global__ void dequant_kernel(okvh_cache_t c, const int *out_indptr, void *kout, void *vout, int od)
{
    constexpr int NPL = D / OKV_WAVE;
    const int lane = lane_id();
    const long long item = blockIdx.x;
    const int r = (int)(item / (2 * c.hkv)), kv = (int)((item / c.hkv) % 2), head = (int)(item % c.hkv);
    if (r < out_indptr[0] || r >= out_indptr[c.batch]) return;
    const int b = find_seq(out_indptr, c.batch, r);
    const int p = r - out_indptr[b];
    if (p >= c.seq_lens[b]) return;
    float y[NPL];
    read_row<D>(c, b, c.int2_lens[b], p, kv, head, lane, y);
    void *dst = kv ? vout : kout;
    const size_t ob = ((size_t)r * c.hkv + head) * D;
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        st_any(dst, od, ob + lane + OKV_WAVE * i, y[i]);
}

/* ------------------------------------------------------------------ decode -- */
#if OKV_HAVE_MFMA
/* One element (channel ch) of the row at logical position pos, either tier. */
__device__ __forceinline__ float read_elem(const okvh_cache_t &c, int b, int I, int pos, int kv, int head, int ch)
{
    if (pos >= c.s0 && pos < c.s0 + I) {
        const unsigned char *pg = int2_page(c, b, pos - c.s0);
        const int slot = (pos - c.s0) % c.page, q4 = c.d / 4;
        const unsigned char *cb = pg + okv_int2_codes_offset(c.hkv, c.page, c.d, kv, head, slot);
        const unsigned char *mp = pg + okv_int2_meta_offset(c.hkv, c.page, c.d, c.group, c.meta_dtype, kv, head, slot) +
                                  (size_t)(ch / c.group) * 2 * okv_meta_size(c.meta_dtype);
        const int code = okv_unpack_code(cb[ch % q4], ch / q4);
        return okv_dequant(code, ld_meta(mp, c.meta_dtype), ld_meta(mp + okv_meta_size(c.meta_dtype), c.meta_dtype));
    }
    return okv_bf16_to_f32(bf16_row(c, b, pos, kv, head)[ch]);
}

/* CDNA matrix cores (compiled only for gfx90a / gfx940, wave64):
 * v_mfma_f32_16x16x4f32, S[tok][head] = sum_c K[tok][c] Q[head][c] over d channels.
 * Operand layout (AMD matrix instruction calculator, 16x16x4 f32, one block):
 *   A[i][k] from lane i + 16 k,  B[k][j] from lane j + 16 k,
 *   D[i][j] in lane j + 16 (i / 4), register i % 4.
 * The start-up self-test (okvh_mfma_selftest) checks this layout on the device and
 * the backend falls back to the dot-product path if it disagrees. */
typedef float okvh_f4 __attribute__((ext_vector_type(4)));
template <class KF, class QF> __device__ __forceinline__ okvh_f4 mfma_scores16(int lane, int d, KF kat, QF qat)
{
    okvh_f4 acc = {0.f, 0.f, 0.f, 0.f};
    const int row = lane % 16, kq = lane / 16;
    for (int c0 = 0; c0 < d; c0 += 4)
        acc = __builtin_amdgcn_mfma_f32_16x16x4f32(kat(row, c0 + kq), qat(row, c0 + kq), acc, 0, 0, 0);
    return acc;
}
#endif

/* Self-test of the MFMA layout: s[16][16] = k[16][d] q[16][d]^T by one wave. */
__global__ void mfma_selftest_kernel(const float *k, const float *q, float *s, int d)
{
#if OKV_HAVE_MFMA
    const int lane = lane_id();
    okvh_f4 acc = mfma_scores16(
        lane, d, [&](int t, int ch) { return k[t * d + ch]; }, [&](int j, int ch) { return q[j * d + ch]; });
#pragma unroll
    for (int r = 0; r < 4; ++r)
        s[(4 * (lane / 16) + r) * 16 + lane % 16] = acc[r];
#else
    if (threadIdx.x == 0) s[0] = __builtin_nanf(""); /* no matrix cores in this code object */
    (void)k;
    (void)q;
    (void)d;
#endif
}

template <int D, bool MFMA>
__global__ void decode_split_kernel(okvh_cache_t c, const void *q, int qd, float sm2, int splits, int nchunks,
                                    float *ws)
{
    constexpr int NPL = D / OKV_WAVE;
    __shared__ float sm_acc[OKVH_DEC_WAVES][OKVH_GMAX][D];
    __shared__ float sm_m[OKVH_DEC_WAVES][OKVH_GMAX], sm_l[OKVH_DEC_WAVES][OKVH_GMAX];
    const int lane = lane_id(), wave = wave_id();
    const int s = blockIdx.x, b = blockIdx.z;
    const int h = blockIdx.y / nchunks, chunk = blockIdx.y % nchunks;
    const int g = c.hq / c.hkv;
    const int qh0 = h * g + chunk * OKVH_GMAX;
    const int gh = g - chunk * OKVH_GMAX < OKVH_GMAX ? g - chunk * OKVH_GMAX : OKVH_GMAX;
    const int L = c.seq_lens[b], I = c.int2_lens[b];
    const int per = (L + splits - 1) / splits;
    const int from = s * per, to = from + per < L ? from + per : L;

    float qv[OKVH_GMAX][NPL], acc[OKVH_GMAX][NPL], m[OKVH_GMAX], l[OKVH_GMAX];
#pragma unroll
    for (int j = 0; j < OKVH_GMAX; ++j) {
        m[j] = NEG_INF;
        l[j] = 0.f;
#pragma unroll
        for (int i = 0; i < NPL; ++i) {
            acc[j][i] = 0.f;
            qv[j][i] = j < gh ? ld_any(q, qd, ((size_t)b * c.hq + qh0 + j) * D + lane + OKV_WAVE * i) * sm2 : 0.f;
        }
    }
#if OKV_HAVE_MFMA
    if constexpr (MFMA) {
        /* CDNA: scores of 16-token tiles on the matrix cores, p.V on the vector units */
        __shared__ float sq[OKVH_GMAX][D];
#pragma unroll
        for (int j = 0; j < OKVH_GMAX; ++j)
#pragma unroll
            for (int i = 0; i < NPL; ++i)
                if (wave == 0) sq[j][lane + OKV_WAVE * i] = qv[j][i];
        __syncthreads();
        for (int t0 = from + 16 * wave; t0 < to; t0 += 16 * OKVH_DEC_WAVES) {
            const okvh_f4 sacc = mfma_scores16(
                lane, D, [&](int tt, int ch) { return t0 + tt < to ? read_elem(c, b, I, t0 + tt, 0, h, ch) : 0.f; },
                [&](int j, int ch) { return j < gh ? sq[j][ch] : 0.f; });
#pragma unroll
            for (int tt = 0; tt < 16; ++tt) {
                float vr[NPL];
                if (t0 + tt < to)
                    read_row<D>(c, b, I, t0 + tt, 1, h, lane, vr);
                else
#pragma unroll
                    for (int i = 0; i < NPL; ++i)
                        vr[i] = 0.f;
                if (t0 + tt >= to) continue;
#pragma unroll
                for (int j = 0; j < OKVH_GMAX; ++j) {
                    const float sc = __shfl(sacc[tt % 4], (tt / 4) * 16 + j);
                    if (j < gh) {
                        const float mn = fmaxf(m[j], sc);
                        const float corr = exp2f(m[j] - mn), pr = exp2f(sc - mn);
                        l[j] = l[j] * corr + pr;
#pragma unroll
                        for (int i = 0; i < NPL; ++i)
                            acc[j][i] = fmaf(pr, vr[i], acc[j][i] * corr);
                        m[j] = mn;
                    }
                }
            }
        }
    } else
#endif
        for (int t = from + wave; t < to; t += OKVH_DEC_WAVES) {
            float kr[NPL], vr[NPL];
            read_row<D>(c, b, I, t, 0, h, lane, kr);
            read_row<D>(c, b, I, t, 1, h, lane, vr);
#pragma unroll
            for (int j = 0; j < OKVH_GMAX; ++j) {
                if (j < gh) {
                    float sc = 0.f;
#pragma unroll
                    for (int i = 0; i < NPL; ++i)
                        sc = fmaf(qv[j][i], kr[i], sc);
                    sc = okv_wave_sum(sc);
                    const float mn = fmaxf(m[j], sc);
                    const float corr = exp2f(m[j] - mn), pr = exp2f(sc - mn);
                    l[j] = l[j] * corr + pr;
#pragma unroll
                    for (int i = 0; i < NPL; ++i)
                        acc[j][i] = fmaf(pr, vr[i], acc[j][i] * corr);
                    m[j] = mn;
                }
            }
        }
#pragma unroll
    for (int j = 0; j < OKVH_GMAX; ++j) {
        if (lane == 0) {
            sm_m[wave][j] = m[j];
            sm_l[wave][j] = l[j];
        }
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            sm_acc[wave][j][lane + OKV_WAVE * i] = acc[j][i];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < gh * D; e += blockDim.x) {
        const int j = e / D, ch = e % D;
        float M = NEG_INF;
        for (int w = 0; w < OKVH_DEC_WAVES; ++w)
            M = fmaxf(M, sm_m[w][j]);
        float o = 0.f, lse = NEG_INF;
        if (M != NEG_INF) {
            float lsum = 0.f, osum = 0.f;
            for (int w = 0; w < OKVH_DEC_WAVES; ++w) {
                if (sm_m[w][j] == NEG_INF) continue;
                const float wt = exp2f(sm_m[w][j] - M);
                lsum += sm_l[w][j] * wt;
                osum += sm_acc[w][j][ch] * wt;
            }
            o = osum / lsum;
            lse = (M + log2f(lsum)) * LN2;
        }
        float *part = ws + (((size_t)b * c.hq + qh0 + j) * splits + s) * (D + 1);
        part[ch] = o;
        if (ch == 0) part[D] = lse;
    }
}

/* Exact merge of the splits of one (sequence, query head); optional x R_V^T. */
template <int D>
__global__ void decode_merge_kernel(const float *ws, int splits, int hq, int g, void *out, int od, float *lse_out,
                                    const float *vrot, int per_head, int unrotate)
{
    __shared__ float os[D];
    const int row = blockIdx.x;
    const int ch = threadIdx.x;
    const float *base = ws + (size_t)row * splits * (D + 1);
    float M = NEG_INF;
    for (int s = 0; s < splits; ++s)
        M = fmaxf(M, base[(size_t)s * (D + 1) + D]);
    float o = 0.f, lse = NEG_INF;
    if (M != NEG_INF) {
        float wsum = 0.f, osum = 0.f;
        for (int s = 0; s < splits; ++s) {
            const float ls = base[(size_t)s * (D + 1) + D];
            if (ls == NEG_INF) continue;
            const float wt = expf(ls - M);
            wsum += wt;
            osum += wt * base[(size_t)s * (D + 1) + ch];
        }
        o = osum / wsum;
        lse = M + logf(wsum);
    }
    if (unrotate) {
        os[ch] = o;
        __syncthreads();
        const int h = (row % hq) / g;
        const float *R = vrot + (per_head ? (size_t)h * D * D : 0) + (size_t)ch * D;
        float acc = 0.f;
        for (int k = 0; k < D; ++k)
            acc = fmaf(os[k], R[k], acc);
        o = acc;
    }
    st_any(out, od, (size_t)row * D + ch, o);
    if (lse_out && ch == 0) lse_out[row] = lse;
}

/* ----------------------------------------------------------------- prefill -- */
/* One wave per (query row, query head): online softmax over the cached history
 * (either tier) then the chunk's own rows 0..j in full precision. */
template <int D>
__global__ void prefill_kernel(okvh_cache_t c, const int *q_indptr, int n_rows, const void *q, const void *kn,
                               const void *vn, int idt, void *out, int od, float sm2)
{
    constexpr int NPL = D / OKV_WAVE;
    const int lane = lane_id();
    const long long item = blockIdx.x;
    const int r = (int)(item / c.hq), qh = (int)(item % c.hq);
    if (r >= n_rows) return;
    const int b = find_seq(q_indptr, c.batch, r);
    const int j = r - q_indptr[b];
    const int L = c.seq_lens[b], I = c.int2_lens[b];
    const int h = qh / (c.hq / c.hkv);
    float qv[NPL], acc[NPL];
#pragma unroll
    for (int i = 0; i < NPL; ++i) {
        qv[i] = ld_any(q, idt, ((size_t)r * c.hq + qh) * D + lane + OKV_WAVE * i) * sm2;
        acc[i] = 0.f;
    }
    float m = NEG_INF, l = 0.f;
    const int total = L + j + 1;
    for (int t = 0; t < total; ++t) {
        float kr[NPL], vr[NPL];
        if (t < L) {
            read_row<D>(c, b, I, t, 0, h, lane, kr);
            read_row<D>(c, b, I, t, 1, h, lane, vr);
        } else {
            const size_t rb = ((size_t)(q_indptr[b] + t - L) * c.hkv + h) * D;
#pragma unroll
            for (int i = 0; i < NPL; ++i) {
                kr[i] = ld_any(kn, idt, rb + lane + OKV_WAVE * i);
                vr[i] = ld_any(vn, idt, rb + lane + OKV_WAVE * i);
            }
        }
        float sc = 0.f;
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            sc = fmaf(qv[i], kr[i], sc);
        sc = okv_wave_sum(sc);
        const float mn = fmaxf(m, sc);
        const float corr = exp2f(m - mn), pr = exp2f(sc - mn);
        l = l * corr + pr;
#pragma unroll
        for (int i = 0; i < NPL; ++i)
            acc[i] = fmaf(pr, vr[i], acc[i] * corr);
        m = mn;
    }
#pragma unroll
    for (int i = 0; i < NPL; ++i)
        st_any(out, od, ((size_t)r * c.hq + qh) * D + lane + OKV_WAVE * i, acc[i] / l);
}

/* ----------------------------------------------------------------- moments -- */
/* acc[grp](i, j) += sum_t sum_{h in group} w x_i x_j; a 16 x 16 tile of (i, j) per
 * block (not wave-dependent), 16-row partial sums in f32, the total in f64. */
template <typename T>
__global__ void moments_kernel(const void *x, int xd, const float *w, T *acc, int n_rows, int n_heads, int d, int hg)
{
    const int ty = threadIdx.y, tx = threadIdx.x;
    const int i = blockIdx.y * 16 + ty, j = blockIdx.x * 16 + tx;
    const int grp = blockIdx.z;
    __shared__ float xi[16][17], xj[16][17];
    double sum = 0.0;
    const long long n = (long long)n_rows * hg;
    for (long long base = 0; base < n; base += 16) {
        const long long e = base + ty;
        float a = 0.f, bb = 0.f;
        if (e < n) {
            const long long t = e / hg, hh = (long long)grp * hg + e % hg;
            const size_t o = ((size_t)t * n_heads + hh) * d;
            const float ww = w ? w[(size_t)t * n_heads + hh] : 1.0f;
            const int ci = blockIdx.y * 16 + tx, cj = blockIdx.x * 16 + tx;
            if (ci < d) a = ld_any(x, xd, o + ci) * ww;
            if (cj < d) bb = ld_any(x, xd, o + cj);
        }
        __syncthreads();
        xi[ty][tx] = a;
        xj[ty][tx] = bb;
        __syncthreads();
        const int lim = (int)((n - base) < 16 ? (n - base) : 16);
        float part = 0.f;
        for (int rr = 0; rr < lim; ++rr)
            part = fmaf(xi[rr][ty], xj[rr][tx], part);
        sum += (double)part;
    }
    if (i < d && j < d) {
        T *dst = acc + ((size_t)grp * d + i) * d + j;
        *dst = (T)((double)*dst + sum);
    }
}

} // namespace

#define OKVH_BY_D(d, CALL)                                                                                             \
    do {                                                                                                               \
        if ((d) == 64) {                                                                                               \
            constexpr int D = 64;                                                                                      \
            CALL;                                                                                                      \
        } else if ((d) == 128) {                                                                                       \
            constexpr int D = 128;                                                                                     \
            CALL;                                                                                                      \
        } else {                                                                                                       \
            constexpr int D = 256;                                                                                     \
            CALL;                                                                                                      \
        }                                                                                                              \
    } while (0)

static int okvh_bad_dim(int d) { return d != 64 && d != 128 && d != 256; }

extern "C" int okvh_validate_launch(const okvh_state_t *st, const okvh_cache_t *c, int need_mode, int n, const int *aip,
                                    int row_mode, const int *rip, int n_rows)
{
    okv_gpu_validate_enqueue(S(st), *c, need_mode, n, aip, row_mode, rip, n_rows, st->d_flags);
    return hipGetLastError();
}

extern "C" int okvh_check_finite_launch(const okvh_state_t *st, const void *x, int dtype, size_t n)
{
    okv_gpu_finite_enqueue(S(st), x, dtype, n, st->d_flags);
    return hipGetLastError();
}

extern "C" int okvh_rotate_launch(const okvh_state_t *st, const void *x, int xd, void *out, int od, const float *R,
                                  int n_rows, int n_heads, int d, int per_head, int hg, int transpose,
                                  const float *bias)
{
    const long long items = (long long)n_rows * n_heads;
    if (items == 0) return hipSuccess;
    if (okvh_bad_dim(d)) return hipSuccess;
    OKVH_BY_D(d, (OKVH_LAUNCH(rotate_kernel<D>, (unsigned)items, st->warp, S(st), x, xd, out, od, R, n_heads, per_head,
                              hg > 0 ? hg : 1, transpose, bias)));
    return hipGetLastError();
}

extern "C" int okvh_append_launch(const okvh_state_t *st, const okvh_cache_t *cp, const void *k, const void *v,
                                  int dtype, const int *aip, int n_rows, const float *krot, const float *vrot,
                                  int per_head, float kclip, float vclip, const float *kbias, int commit)
{
    const okvh_cache_t c = *cp;
    if (c.batch == 0) return hipSuccess;
    const int maxdem = c.w + c.f;
    dim3 g1((unsigned)(maxdem * 2 * c.hkv), (unsigned)c.batch);
    OKVH_BY_D(c.d, (OKVH_LAUNCH(demote_kernel<D>, g1, st->warp, S(st), c, aip, 0, kclip, vclip, st->d_flags, commit)));
    hipError_t e = hipGetLastError();
    if (e != hipSuccess) return e;
    if (n_rows > 0) {
        const long long items = (long long)n_rows * 2 * c.hkv;
        OKVH_BY_D(c.d, (OKVH_LAUNCH(place_kernel<D>, (unsigned)items, st->warp, S(st), c, k, v, dtype, aip, n_rows,
                                    krot, vrot, per_head, kclip, vclip, kbias, st->d_flags, commit)));
        e = hipGetLastError();
        if (e != hipSuccess) return e;
    }
    if (!commit) return hipSuccess;
    OKVH_LAUNCH(lens_kernel, (c.batch + 127) / 128, 128, S(st), c, aip, n_rows);
    return hipGetLastError();
}

extern "C" int okvh_demote_launch(const okvh_state_t *st, const okvh_cache_t *cp, int n_rows, float kclip, float vclip,
                                  int commit)
{
    const okvh_cache_t c = *cp;
    if (c.batch == 0 || n_rows <= 0) return hipSuccess;
    int maxdem = c.w + c.f;
    if (n_rows < maxdem) maxdem = n_rows;
    dim3 g1((unsigned)(maxdem * 2 * c.hkv), (unsigned)c.batch);
    OKVH_BY_D(c.d, (OKVH_LAUNCH(demote_kernel<D>, g1, st->warp, S(st), c, nullptr, n_rows, kclip, vclip, st->d_flags,
                                commit)));
    hipError_t e = hipGetLastError();
    if (e != hipSuccess || !commit) return e;
    OKVH_LAUNCH(lens_kernel, (c.batch + 127) / 128, 128, S(st), c, nullptr, n_rows);
    return hipGetLastError();
}

extern "C" int okvh_dequantize_launch(const okvh_state_t *st, const okvh_cache_t *cp, const int *out_indptr,
                                      int out_rows, void *kout, void *vout, int od)
{
    const okvh_cache_t c = *cp;
    const long long items = (long long)out_rows * 2 * c.hkv;
    if (items == 0 || c.batch == 0) return hipSuccess;
    OKVH_BY_D(c.d, (OKVH_LAUNCH(dequant_kernel<D>, (unsigned)items, st->warp, S(st), c, out_indptr, kout, vout, od)));
    return hipGetLastError();
}

static int okvh_head_chunks(const okvh_cache_t *c)
{
    const int g = c->hq / c->hkv;
    return (g + OKVH_GMAX - 1) / OKVH_GMAX;
}

extern "C" int okvh_decode_splits(const okvh_state_t *st, const okvh_decode_args_t *a)
{
    if (a->num_splits > 0) return a->num_splits;
    /* fill about two blocks per compute unit, keeping >= 64 positions per split */
    const long long base = (long long)(a->c.batch > 0 ? a->c.batch : 1) * a->c.hkv * okvh_head_chunks(&a->c);
    const long long want = (2LL * (st->num_cus > 0 ? st->num_cus : 1) + base - 1) / base;
    long long cap = ((long long)(a->max_seq_len > 0 ? a->max_seq_len : 1) + 63) / 64;
    if (cap > 256) cap = 256;
    long long s = want < cap ? want : cap;
    return (int)(s < 1 ? 1 : s);
}

extern "C" size_t okvh_decode_workspace(const okvh_state_t *st, const okvh_decode_args_t *a)
{
    return (size_t)a->c.batch * (size_t)a->c.hq * (size_t)okvh_decode_splits(st, a) * (size_t)(a->c.d + 1) *
           sizeof(float);
}

extern "C" int okvh_decode_launch(const okvh_state_t *st, const okvh_decode_args_t *a)
{
    const okvh_cache_t &c = a->c;
    if (c.batch == 0) return hipSuccess;
    const int splits = okvh_decode_splits(st, a);
    const int nchunks = okvh_head_chunks(&c);
    const float sm = (a->sm_scale > 0.f ? a->sm_scale : 1.0f / sqrtf((float)c.d)) * LOG2E;
    float *ws = (float *)a->workspace;
    dim3 grid((unsigned)splits, (unsigned)(c.hkv * nchunks), (unsigned)c.batch);
    const int threads = OKVH_DEC_WAVES * st->warp;
    if (st->use_mfma && st->warp == 64 /* the MFMA tiles assume wave64 (CDNA) */)
        OKVH_BY_D(c.d, (OKVH_LAUNCH((decode_split_kernel<D, true>), grid, threads, S(st), c, a->q, a->q_dtype, sm,
                                    splits, nchunks, ws)));
    else
        OKVH_BY_D(c.d, (OKVH_LAUNCH((decode_split_kernel<D, false>), grid, threads, S(st), c, a->q, a->q_dtype, sm,
                                    splits, nchunks, ws)));
    hipError_t e = hipGetLastError();
    if (e != hipSuccess) return e;
    const unsigned rows = (unsigned)(c.batch * c.hq);
    OKVH_BY_D(c.d, (OKVH_LAUNCH(decode_merge_kernel<D>, rows, D, S(st), ws, splits, c.hq, c.hq / c.hkv, a->out,
                                a->out_dtype, a->lse, a->v_rotation, a->per_head_rotation, a->unrotate)));
    return hipGetLastError();
}

extern "C" int okvh_prefill_launch(const okvh_state_t *st, const okvh_cache_t *cp, const int *q_indptr, int n_rows,
                                   const void *q, const void *kn, const void *vn, int idt, void *out, int od,
                                   float sm_scale)
{
    const okvh_cache_t c = *cp;
    const long long items = (long long)n_rows * c.hq;
    if (items == 0 || c.batch == 0) return hipSuccess;
    const float sm = (sm_scale > 0.f ? sm_scale : 1.0f / sqrtf((float)c.d)) * LOG2E;
    OKVH_BY_D(c.d, (OKVH_LAUNCH(prefill_kernel<D>, (unsigned)items, st->warp, S(st), c, q_indptr, n_rows, q, kn, vn,
                                idt, out, od, sm)));
    return hipGetLastError();
}

extern "C" int okvh_moments_launch(const okvh_state_t *st, const void *x, int xd, const float *w, void *acc,
                                   int acc_dtype, int n_rows, int n_heads, int d, int hg)
{
    if (hg <= 0) hg = 1;
    dim3 grid((unsigned)((d + 15) / 16), (unsigned)((d + 15) / 16), (unsigned)(n_heads / hg)), block(16, 16);
    if (acc_dtype == OKV_DTYPE_F64)
        OKVH_LAUNCH(moments_kernel<double>, grid, block, S(st), x, xd, w, (double *)acc, n_rows, n_heads, d, hg);
    else
        OKVH_LAUNCH(moments_kernel<float>, grid, block, S(st), x, xd, w, (float *)acc, n_rows, n_heads, d, hg);
    return hipGetLastError();
}

/* 1 when the device is CDNA (gfx90a / gfx940 family) and the MFMA score kernel
 * reproduces an exact host product (small integers times 1/4: every partial sum is
 * exact in fp32, so any layout error shows). */
extern "C" int okvh_mfma_selftest(const okvh_state_t *st)
{
    if (strncmp(st->arch, "gfx90a", 6) != 0 && strncmp(st->arch, "gfx94", 5) != 0) return 0;
    if (st->warp != 64) return 0;
    const int d = 64;
    float hk[16 * 64], hq[16 * 64], hs[256], ref[256];
    for (int t = 0; t < 16; ++t)
        for (int ch = 0; ch < d; ++ch) {
            hk[t * d + ch] = (float)((t * 7 + ch * 3) % 11 - 5) * 0.25f;
            hq[t * d + ch] = (float)((t * 5 + ch * 13) % 9 - 4) * 0.25f;
        }
    for (int t = 0; t < 16; ++t)
        for (int j = 0; j < 16; ++j) {
            double acc = 0.0;
            for (int ch = 0; ch < d; ++ch)
                acc += (double)hk[t * d + ch] * hq[j * d + ch];
            ref[t * 16 + j] = (float)acc;
        }
    float *dk = nullptr, *dq = nullptr, *ds = nullptr;
    int ok = 0;
    if (hipMalloc((void **)&dk, sizeof hk) == hipSuccess && hipMalloc((void **)&dq, sizeof hq) == hipSuccess &&
        hipMalloc((void **)&ds, sizeof hs) == hipSuccess &&
        hipMemcpyAsync(dk, hk, sizeof hk, hipMemcpyHostToDevice, S(st)) == hipSuccess &&
        hipMemcpyAsync(dq, hq, sizeof hq, hipMemcpyHostToDevice, S(st)) == hipSuccess) {
        OKVH_LAUNCH(mfma_selftest_kernel, 1, st->warp, S(st), dk, dq, ds, d);
        if (hipGetLastError() == hipSuccess &&
            hipMemcpyAsync(hs, ds, sizeof hs, hipMemcpyDeviceToHost, S(st)) == hipSuccess &&
            hipStreamSynchronize(S(st)) == hipSuccess) {
            ok = 1;
            for (int i = 0; i < 256; ++i)
                if (!(hs[i] == ref[i])) ok = 0;
        }
    }
    (void)hipGetLastError();
    if (dk) (void)hipFree(dk);
    if (dq) (void)hipFree(dq);
    if (ds) (void)hipFree(ds);
    return ok;
}
