/*
 * okv_cuda_prefill.cu - prefill attention on tensor cores (flash style).
 *
 * Two steps, both on the context's stream, no allocation, no host sync (CUDA-graph
 * friendly); the caller's workspace (okvc_prefill_workspace bytes) holds the
 * staged keys and values:
 *  1. staging (prefill_stage_kernel in okv_cuda_ops.cu, which reads the cache with
 *     the same row reader as the dequantize op): for every (sequence b, KV head h)
 *     rows t < seq_len + n_b -- the history (sink, INT2 tier, BF16 recent tier, in
 *     the rotated basis), then the chunk's k_new / v_new -- land at row
 *     (b * Hkv + h) * cap + t (cap = max_seq_len) of three arrays: K as a bf16
 *     hi + lo pair (exact to ~16 bits: an INT2 value lo + code * scale does not fit
 *     in 8), V as fp16 scaled by a per-(b, h) power of two (okvc_prefill_vshift: the
 *     largest |v| lands in [2^14, 2^15), so every value keeps 11 bits and nothing
 *     overflows). A first pass takes the per-(b, h) max |v|.
 *  2. flash_kernel: a CTA per (sequence, 16 * NW query rows, query head); warp w
 *     owns 16 query rows. Key tiles of BN rows stream through a two-stage cp.async
 *     ring in shared memory (rows padded by 16 bytes: ldmatrix without bank
 *     conflicts); rows past seq_len + n_b are zero-filled. Per tile:
 *       S = Q K^T   mma.sync m16n8k16 bf16 (Q_hi K_hi, + Q_hi K_lo on tiles that hold
 *                   INT2 rows, + Q_lo K_hi for an f16/f32 query split into hi + lo),
 *       causal mask on the tiles that reach the chunk's diagonal (key t is visible
 *       to chunk row j when t <= seq_len + j), online softmax in fp32 (exp2 of
 *       log2e-scaled scores), P (<= 1) packed to fp16,
 *       O += P V    mma.sync m16n8k16 fp16, fp32 accumulate.
 *     The epilogue divides by the row sum, undoes the V scale and stores out in its
 *     dtype. Operand precision: K ~2^-16, V and P 2^-11 relative (the naive kernel
 *     is fp32 throughout; a plain bf16 flash kernel lands at ~2e-3 rel L2 on the
 *     benchmark's sharp softmax, above its 1e-3 check).
 * Head dims 64 / 128: 8 warps (128 query rows), 64-key tiles; 256: 4 warps, 32-key
 * tiles (shared memory). okv_cuda_backend.cu falls back to the naive kernel when
 * this path does not apply (no max_seq_len, too little shared memory, or
 * OKV_CUDA_PREFILL_NAIVE=1).
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

/* Tile geometry per head dim. RS: shared row stride in bytes (16 bytes of padding: the
 * 8 rows of one ldmatrix phase fall on 8 different 16-byte bank groups). */
template <int D> struct Geo {
    static constexpr int NW = D == 256 ? 4 : 8;   /* warps, 16 query rows each */
    static constexpr int BN = D == 256 ? 32 : 64; /* keys per tile */
    static constexpr int BM = 16 * NW;
    static constexpr int NT = 32 * NW;
    static constexpr int RS = 2 * D + 16;
    static constexpr int Q_BYTES = BM * RS;
    static constexpr int KV_TILE = BN * RS;
    static constexpr int STAGE = 3 * KV_TILE; /* K hi, K lo, V */
    static constexpr int smem(bool qs) { return Q_BYTES * (qs ? 2 : 1) + 2 * STAGE; }
};

struct FlashArgs {
    const int *q_indptr, *seq_lens, *int2_lens;
    const void *q;
    int q_dtype;
    void *out;
    int out_dtype;
    const unsigned short *khi, *klo, *vh;
    const unsigned *vmax;
    int batch, hq, hkv, s0, cap;
    float sm2; /* softmax scale * log2(e) */
};

/* S (16 query rows of this warp x BN keys) = Q K^T over the D channels. qa / qla:
 * this lane's ldmatrix row address in the Q hi / lo tile; ks / kls: K hi / lo tile. */
template <int D, bool QS, bool KL>
__device__ __forceinline__ void qk_tile(float (&s)[Geo<D>::BN / 8][4], const unsigned char *qa,
                                        const unsigned char *qla, const unsigned char *ks, const unsigned char *kls,
                                        int lane)
{
    using G = Geo<D>;
    const int mi = lane >> 3, lr = lane & 7;
    /* B operand (k = channel, n = key) from row-major K: matrix mi holds keys
     * (mi >> 1) * 8 + 0..7 and channels (mi & 1) * 8 + 0..7 of the 16 x 16 block:
     * r0, r1 = b0, b1 of the first 8 keys, r2, r3 = b0, b1 of the next 8. */
    const int koff = ((mi >> 1) * 8 + lr) * G::RS + (mi & 1) * 16;
#pragma unroll
    for (int kt = 0; kt < D / 16; ++kt) {
        uint32_t a[4], al[4];
        ldsm_x4(a, qa + kt * 32);
        if constexpr (QS) ldsm_x4(al, qla + kt * 32);
#pragma unroll
        for (int np = 0; np < G::BN / 16; ++np) {
            uint32_t bk[4];
            ldsm_x4(bk, ks + np * 16 * G::RS + koff + kt * 32);
            mma_bf16(s[2 * np], a, bk[0], bk[1]);
            mma_bf16(s[2 * np + 1], a, bk[2], bk[3]);
            if constexpr (QS) {
                mma_bf16(s[2 * np], al, bk[0], bk[1]);
                mma_bf16(s[2 * np + 1], al, bk[2], bk[3]);
            }
            if constexpr (KL) {
                uint32_t bl[4];
                ldsm_x4(bl, kls + np * 16 * G::RS + koff + kt * 32);
                mma_bf16(s[2 * np], a, bl[0], bl[1]);
                mma_bf16(s[2 * np + 1], a, bl[2], bl[3]);
            }
        }
    }
}

/* grid (query-row tiles over all sequences + batch, Hq); block 32 * NW. */
template <int D, bool QS> __global__ void __launch_bounds__(Geo<D>::NT, 1) flash_kernel(FlashArgs a)
{
    using G = Geo<D>;
    constexpr int BN = G::BN, BM = G::BM, NT = G::NT, RS = G::RS;
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char *qs = smem, *qls = smem + G::Q_BYTES, *kvs = smem + G::Q_BYTES * (QS ? 2 : 1);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t4 = lane & 3;

    /* this CTA's sequence and query tile: tiles of sequence b follow those of b - 1 */
    int rem = blockIdx.x, b = -1, n = 0;
    for (int bb = 0; bb < a.batch; ++bb) {
        const int nb = a.q_indptr[bb + 1] - a.q_indptr[bb];
        const int nt = nb > 0 ? (nb + BM - 1) / BM : 0;
        if (rem < nt) {
            b = bb;
            n = nb;
            break;
        }
        rem -= nt;
    }
    if (b < 0) return;
    const int qh = blockIdx.y, h = qh / (a.hq / a.hkv);
    const int j0 = rem * BM, qrow0 = a.q_indptr[b];
    const int L = a.seq_lens[b], I = a.int2_lens[b];
    if (L < 0 || (long long)L + n > a.cap) {
        /* max_seq_len too small (flagged by the staging kernel): zeros, no reads */
        for (int e = tid; e < BM * D; e += NT) {
            const int j = j0 + e / D;
            if (j < n) st_any(a.out, a.out_dtype, ((size_t)(qrow0 + j) * a.hq + qh) * D + e % D, 0.f);
        }
        return;
    }

    /* Q tile (bf16 hi [+ lo]); rows past the chunk are zero */
    for (int e = tid; e < BM * (D / 2); e += NT) {
        const int r = e / (D / 2), c2 = (e % (D / 2)) * 2, j = j0 + r;
        float x0 = 0.f, x1 = 0.f;
        if (j < n) {
            const size_t qi = ((size_t)(qrow0 + j) * a.hq + qh) * D + c2;
            x0 = ld_any(a.q, a.q_dtype, qi);
            x1 = ld_any(a.q, a.q_dtype, qi + 1);
        }
        const uint32_t hi = pack_bf2(x0, x1);
        *(uint32_t *)(qs + r * RS + c2 * 2) = hi;
        if constexpr (QS) *(uint32_t *)(qls + r * RS + c2 * 2) = pack_bf2(x0 - bf_lo(hi), x1 - bf_hi(hi));
    }

    const int nkeys = L + n;                          /* staged rows of (b, h) */
    const int kend = L + (j0 + BM < n ? j0 + BM : n); /* keys this CTA can see */
    const int ntiles = (kend + BN - 1) / BN;
    const size_t bh = (size_t)b * a.hkv + h;
    const unsigned short *Kh = a.khi + bh * a.cap * D, *Kl = a.klo + bh * a.cap * D, *Vv = a.vh + bh * a.cap * D;
    const int i2a = a.s0, i2b = a.s0 + I; /* INT2 rows [s0, s0 + I): the only ones with K lo != 0 */
    auto tile_lo = [&](int it) { return I > 0 && it * BN < i2b && it * BN + BN > i2a; };
    auto load_tile = [&](int it, int stg) {
        constexpr int CPR = D / 8, NCH = BN * CPR; /* 16-byte chunks per row, per array */
        unsigned char *base = kvs + stg * G::STAGE;
        const bool lo = tile_lo(it);
        const int t0 = it * BN;
#pragma unroll 1
        for (int e = tid; e < 3 * NCH; e += NT) {
            const int arr = e / NCH, rc = e % NCH, r = rc / CPR, ch = rc % CPR;
            if (arr == 1 && !lo) continue;
            const unsigned short *src = arr == 0 ? Kh : (arr == 1 ? Kl : Vv);
            const int t = t0 + r;
            const bool ok = t < nkeys;
            cp_async16(base + arr * G::KV_TILE + r * RS + ch * 16, ok ? src + (size_t)t * D + ch * 8 : src,
                       ok ? 16 : 0);
        }
    };

    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; ++i)
        o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};
    const int r0 = j0 + warp * 16 + g; /* this lane's chunk rows r0 and r0 + 8 */
    const int lim0 = L + (r0 < n ? r0 : n - 1), lim1 = L + (r0 + 8 < n ? r0 + 8 : n - 1);
    const int mi = lane >> 3, lr = lane & 7;
    /* A operand (Q): matrix mi holds rows (mi & 1) * 8 + 0..7, channels (mi >> 1) * 8 + 0..7 */
    const unsigned char *qa = qs + (warp * 16 + (mi & 1) * 8 + lr) * RS + (mi >> 1) * 16;
    const unsigned char *qla = qa + G::Q_BYTES;
    /* B operand (V, k = key, n = channel) through ldmatrix.trans: matrix mi holds keys
     * (mi & 1) * 8 + 0..7, channels (mi >> 1) * 8 + 0..7 */
    const int voff = ((mi & 1) * 8 + lr) * RS + (mi >> 1) * 16;

    load_tile(0, 0);
    cp_commit();
#pragma unroll 1
    for (int it = 0; it < ntiles; ++it) {
        if (it + 1 < ntiles) load_tile(it + 1, (it + 1) & 1);
        cp_commit();
        cp_wait<1>();
        __syncthreads();
        const unsigned char *ks = kvs + (it & 1) * G::STAGE, *kls = ks + G::KV_TILE, *vs = ks + 2 * G::KV_TILE;
        float s[BN / 8][4];
#pragma unroll
        for (int i = 0; i < BN / 8; ++i)
            s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
        if (tile_lo(it))
            qk_tile<D, QS, true>(s, qa, qla, ks, kls, lane);
        else
            qk_tile<D, QS, false>(s, qa, qla, ks, kls, lane);

        /* scale, causal mask (only tiles past the CTA's first diagonal key), online softmax */
        const int t0 = it * BN;
        const bool diag = t0 + BN - 1 > L + j0;
        float mx0 = NEG_INF, mx1 = NEG_INF;
#pragma unroll
        for (int nb = 0; nb < BN / 8; ++nb) {
            const int key = t0 + nb * 8 + 2 * t4;
            s[nb][0] = (diag && key > lim0) ? NEG_INF : s[nb][0] * a.sm2;
            s[nb][1] = (diag && key + 1 > lim0) ? NEG_INF : s[nb][1] * a.sm2;
            s[nb][2] = (diag && key > lim1) ? NEG_INF : s[nb][2] * a.sm2;
            s[nb][3] = (diag && key + 1 > lim1) ? NEG_INF : s[nb][3] * a.sm2;
            mx0 = fmaxf(mx0, fmaxf(s[nb][0], s[nb][1]));
            mx1 = fmaxf(mx1, fmaxf(s[nb][2], s[nb][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        const float mn0 = fmaxf(m[0], mx0), mn1 = fmaxf(m[1], mx1);
        const float base0 = mn0 == NEG_INF ? 0.f : mn0, base1 = mn1 == NEG_INF ? 0.f : mn1;
        const float corr0 = ex2(m[0] - base0), corr1 = ex2(m[1] - base1);
        m[0] = mn0;
        m[1] = mn1;
        float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
        for (int nb = 0; nb < BN / 8; ++nb) {
            s[nb][0] = ex2(s[nb][0] - base0);
            s[nb][1] = ex2(s[nb][1] - base0);
            s[nb][2] = ex2(s[nb][2] - base1);
            s[nb][3] = ex2(s[nb][3] - base1);
            ps0 += s[nb][0] + s[nb][1];
            ps1 += s[nb][2] + s[nb][3];
        }
        l[0] = l[0] * corr0 + ps0; /* per-lane partial sums; the quad is summed at the end */
        l[1] = l[1] * corr1 + ps1;
#pragma unroll
        for (int i = 0; i < D / 8; ++i) {
            o[i][0] *= corr0;
            o[i][1] *= corr0;
            o[i][2] *= corr1;
            o[i][3] *= corr1;
        }

        /* O += P V: the S accumulators of key blocks 2kk, 2kk + 1 are the A fragment */
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            const uint32_t pa[4] = {pack_h2(s[2 * kk][0], s[2 * kk][1]), pack_h2(s[2 * kk][2], s[2 * kk][3]),
                                    pack_h2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    pack_h2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                uint32_t bv[4];
                ldsm_x4_t(bv, vs + kk * 16 * RS + voff + dp * 32);
                mma_f16(o[2 * dp], pa, bv[0], bv[1]);
                mma_f16(o[2 * dp + 1], pa, bv[2], bv[3]);
            }
        }
        __syncthreads(); /* the next iteration's copy overwrites this stage */
    }
    cp_wait<0>();

    /* epilogue: 1 / l, undo the V scale, store */
    float l0 = l[0], l1 = l[1];
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float osc = ldexpf(1.0f, -okvc_prefill_vshift(a.vmax[bh])); /* 2^-shift, exact (>= 2^-140) */
    const float inv0 = l0 > 0.f ? 1.0f / l0 : 0.f, inv1 = l1 > 0.f ? 1.0f / l1 : 0.f;
#pragma unroll
    for (int nb = 0; nb < D / 8; ++nb) {
        const int ch = nb * 8 + 2 * t4;
        if (r0 < n) {
            const size_t oi = ((size_t)(qrow0 + r0) * a.hq + qh) * D + ch;
            st_any(a.out, a.out_dtype, oi, o[nb][0] * inv0 * osc);
            st_any(a.out, a.out_dtype, oi + 1, o[nb][1] * inv0 * osc);
        }
        if (r0 + 8 < n) {
            const size_t oi = ((size_t)(qrow0 + r0 + 8) * a.hq + qh) * D + ch;
            st_any(a.out, a.out_dtype, oi, o[nb][2] * inv1 * osc);
            st_any(a.out, a.out_dtype, oi + 1, o[nb][3] * inv1 * osc);
        }
    }
}

__global__ void bound_kernel(const int *seq_lens, const int *q_indptr, int batch, int cap, int *status)
{
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= batch) return;
    if ((long long)seq_lens[b] + (q_indptr[b + 1] - q_indptr[b]) > cap) atomicOr(status, OKV_GPU_FLAG_BAD_INDEX);
}

size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

struct WsLayout {
    unsigned short *khi, *klo, *vh;
    unsigned *vmax;
    size_t vmax_bytes;
};
WsLayout ws_layout(void *ws, int batch, int hkv, int d, int cap)
{
    const size_t arr = align256((size_t)batch * hkv * cap * d * 2);
    unsigned char *p = (unsigned char *)(((uintptr_t)ws + 255) & ~(uintptr_t)255);
    WsLayout w;
    w.khi = (unsigned short *)p;
    w.klo = (unsigned short *)(p + arr);
    w.vh = (unsigned short *)(p + 2 * arr);
    w.vmax = (unsigned *)(p + 3 * arr);
    w.vmax_bytes = (size_t)batch * hkv * 4;
    return w;
}

template <int D, bool QS> cudaError_t launch_flash(const okvc_state_t *st, const FlashArgs &a, int n_rows)
{
    using G = Geo<D>;
    const int smem = G::smem(QS);
    cudaError_t e = cudaFuncSetAttribute(flash_kernel<D, QS>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return e;
    const dim3 grid((unsigned)((n_rows + G::BM - 1) / G::BM + a.batch), (unsigned)a.hq);
    flash_kernel<D, QS><<<grid, G::NT, smem, st->stream>>>(a);
    return cudaGetLastError();
}

} // namespace

extern "C" int okvc_prefill_flash_ok(const okvc_state_t *st, int d, int in_dtype)
{
    const bool qs = in_dtype != OKV_DTYPE_BF16;
    int smem;
    if (d == 64)
        smem = Geo<64>::smem(qs);
    else if (d == 128)
        smem = Geo<128>::smem(qs);
    else if (d == 256)
        smem = Geo<256>::smem(qs);
    else
        return 0;
    return st->cc_major >= 8 && smem <= st->max_smem_optin;
}

extern "C" size_t okvc_prefill_workspace(int batch, int hkv, int d, int cap)
{
    if (batch <= 0 || hkv <= 0 || d <= 0 || cap <= 0) return 0;
    return 256 + 3 * align256((size_t)batch * hkv * cap * d * 2) + align256((size_t)batch * hkv * 4);
}

extern "C" int okvc_prefill_bound_launch(const okvc_state_t *st, const okvc_cache_t *c, const int *q_indptr, int cap)
{
    if (c->batch <= 0) return cudaSuccess;
    bound_kernel<<<(c->batch + 127) / 128, 128, 0, st->stream>>>(c->seq_lens, q_indptr, c->batch, cap, st->d_status);
    return cudaGetLastError();
}

extern "C" int okvc_prefill_flash_launch(const okvc_state_t *st, const okvc_cache_t *cp, const int *q_indptr,
                                         int n_rows, const void *q, const void *kn, const void *vn, int idt, void *out,
                                         int od, float sm_scale, void *ws, int cap)
{
    const okvc_cache_t c = *cp;
    if (n_rows <= 0 || c.batch <= 0) return cudaSuccess;
    const WsLayout w = ws_layout(ws, c.batch, c.hkv, c.d, cap);
    cudaError_t e = cudaMemsetAsync(w.vmax, 0, w.vmax_bytes, st->stream);
    if (e != cudaSuccess) return e;
    for (int pass = 0; pass < 2; ++pass) {
        const int r = okvc_prefill_stage_launch(st, &c, q_indptr, kn, vn, idt, cap, pass, w.khi, w.klo, w.vh, w.vmax);
        if (r != cudaSuccess) return r;
    }
    FlashArgs a;
    a.q_indptr = q_indptr;
    a.seq_lens = c.seq_lens;
    a.int2_lens = c.int2_lens;
    a.q = q;
    a.q_dtype = idt;
    a.out = out;
    a.out_dtype = od;
    a.khi = w.khi;
    a.klo = w.klo;
    a.vh = w.vh;
    a.vmax = w.vmax;
    a.batch = c.batch;
    a.hq = c.hq;
    a.hkv = c.hkv;
    a.s0 = c.s0;
    a.cap = cap;
    a.sm2 = (sm_scale > 0.f ? sm_scale : 1.0f / sqrtf((float)c.d)) * 1.4426950408889634f;
    const bool qs = idt != OKV_DTYPE_BF16;
    if (c.d == 64)
        e = qs ? launch_flash<64, true>(st, a, n_rows) : launch_flash<64, false>(st, a, n_rows);
    else if (c.d == 128)
        e = qs ? launch_flash<128, true>(st, a, n_rows) : launch_flash<128, false>(st, a, n_rows);
    else
        e = qs ? launch_flash<256, true>(st, a, n_rows) : launch_flash<256, false>(st, a, n_rows);
    return e;
}
