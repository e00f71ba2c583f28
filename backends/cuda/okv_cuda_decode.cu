/*
 * okv_cuda_decode.cu - decode attention over the mixed BF16 / INT2 paged cache.
 *
 * One kernel family, split-K over the context:
 *   grid (splits, Hkv * head_chunks, batch), 4 warps per CTA, each CTA one
 *   (sequence, KV head, <= 8 query heads of that KV head, context range). The
 *   context of a sequence is laid out as "work": its BF16 tier (sink + recent
 *   ring, weighted BF16_WEIGHT units per token) followed by its INT2 tier (1 unit
 *   per token); split s takes work [s*per, (s+1)*per). Ranges are computed on the
 *   device from the real lengths, so nothing needs a host sync.
 * Within a CTA warps take 32-token INT2 stages (16-token BF16 stages) round robin;
 * each warp streams its stages through a private cp.async ring in shared memory
 * (16-byte copies, NST stages in flight) and runs both products on tensor cores
 * (mma.sync m16n8k16, fp32 accumulate):
 *   S^T[token, head] = K[token, :] q^T  (M = 16 tokens, N = 8 query heads)
 *   O^T[chan, head] += V^T[chan, tok] P^T[tok, head]  (M = 16 channels)
 * P goes from the first product's accumulator layout to the second's B operand
 * with one movmatrix.trans per 8x8 block, without shared memory.
 * INT2 rows are never dequantized to values: a 2-bit code masked in place is the
 * mantissa of a subnormal fp16 number (exact 4^k c 2^-24 for the code in bits 2k of
 * a byte: the quartered packing puts quarter k there), so one LOP3 per two codes
 * builds the fp16 MMA operand; the 2^24 4^-k and the per-row affine map
 * (x = lo + scale * c) are applied to the accumulators:
 *   q.x = scale * (q.c) + lo * sum(q),   sum_t p_t x_t = sum_t (p_t scale_t) c_t + sum_t p_t lo_t.
 * The q operand is pre-scaled by 2^e (exact) so fp16 keeps its precision. The
 * operand carries no bias: an earlier version OR-ed the code into the mantissa of
 * 1024 and removed 1024 * sum(operand) afterwards, which cancelled ~10 bits of the
 * fp32 accumulators (the tensor cores align and truncate the products to the
 * accumulator), so the error grew with the tokens per CTA (conformance failures
 * at 4-5K tokens per split, rel L2 1.7-2.3e-2).
 * Each CTA writes a normalised partial (o, lse) to the workspace; a second kernel
 * merges the partials exactly and optionally multiplies by R_V^T.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "okv_cuda.h"
#include "okv_cuda_dev.h"
#include "okv_format.h"

extern "C" int okvc_decode_stages_override = 0;

namespace
{

constexpr int NW = 4;           /* warps per CTA */
constexpr int TT = 64;          /* INT2 tokens per stage */
constexpr int TTB = 16;         /* BF16 tokens per stage */
constexpr int NST_DEF = 3;      /* INT2 stages per warp */
constexpr int NSTB_ONLY = 3;    /* BF16 stages per warp in the BF16-cache kernel */
constexpr int BF16_WEIGHT = 12; /* work units of one BF16 token (512 B vs 72 B, and less pipelined) */
constexpr float NEG_INF = -__builtin_huge_valf();

template <int D> struct Geo {
    static constexpr int RS = D / 4;       /* INT2 code row stride (bytes), 16-byte chunks XOR-swizzled */
    static constexpr int CPR = D / 64;     /* 16-byte chunks per INT2 code row */
    static constexpr int RPB = 512 / D;    /* code rows per 128-byte bank cycle */
    static constexpr int RSB = 2 * D + 16; /* BF16 row stride (bytes) */
    static constexpr int SB = 2 * TTB * RSB;
};
template <int NG, int META> struct MetaB {
    static constexpr int MSZ = META == OKV_FMT_META_F32 ? 4 : 2;
    static constexpr int MBMAX = NG * 2 * MSZ; /* meta bytes per row */
};
template <int D, int NG, int META, int NST> struct GeoI {
    static constexpr int MSZ = MetaB<NG, META>::MSZ;
    static constexpr int MBMAX = MetaB<NG, META>::MBMAX;
    static constexpr int SI = 2 * TT * Geo<D>::RS + 2 * TT * MBMAX;
    static constexpr int WARP_MIXED = (NST * SI > Geo<D>::SB ? NST * SI : Geo<D>::SB);
    static constexpr int NSTB_MIXED = WARP_MIXED / Geo<D>::SB;
};
/* byte offset of (row, byte) in a swizzled INT2 code tile: chunk ^= (row / RPB) % CPR */
template <int D> __device__ __forceinline__ int swz(int row, int byte)
{
    return row * Geo<D>::RS + ((((byte >> 4) ^ (row / Geo<D>::RPB)) & (Geo<D>::CPR - 1)) << 4) + (byte & 15) +
           ((byte >> 4) & ~(Geo<D>::CPR - 1)) * 16;
}
template <int D> constexpr int epi_bytes() { return 8 * (D + 2) * 4; }

__device__ __forceinline__ void cp_async8(void *dst, const void *src, int bytes)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async4(void *dst, const void *src, int bytes)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(bytes));
}

__device__ __forceinline__ uint32_t movtrans(uint32_t x)
{
    uint32_t y;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
    return y;
}
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel)
{
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
    return r;
}
/* fp16 pair of subnormals 4^k c 2^-24 for the codes at bits 2k and 16 + 2k of x
 * (MASK = 0x00030003 << 2k): one LOP3. */
template <uint32_t MASK> __device__ __forceinline__ uint32_t codes(uint32_t x) { return x & MASK; }

struct Ctx {
    int b, h, qh0, gh; /* sequence, KV head, first query head, query heads in this chunk */
    int L, I, nb, ns;  /* seq_len, int2_len, bf16-tier rows, sink rows */
};

__device__ __forceinline__ int page_of(int i, int P, int psh) { return psh >= 0 ? i >> psh : i / P; }
__device__ __forceinline__ int slot_of(int i, int P, int psh) { return psh >= 0 ? i & (P - 1) : i % P; }

/* BF16 stage: tier rows j0 .. j0+TTB-1 (< j1). Lanes 0..15 resolve one row each
 * (position -> slot -> page), the others get it by shuffle; 16-byte copies. */
template <int D>
__device__ __forceinline__ void load_bf16_stage(unsigned char *st, const okvc_cache_t &c, const Ctx &x, int j0, int j1,
                                                int lane, int bf16_only, int psh)
{
    constexpr int CPR = D / 8; /* 16-byte chunks per row */
    int pg = -1, sl = 0;
    {
        const int j = j0 + (lane & (TTB - 1));
        if (j < j1) {
            int slot;
            if (bf16_only)
                slot = j;
            else {
                const int pos = j < x.ns ? j : c.s0 + x.I + (j - x.ns);
                slot = pos < c.s0 ? pos : c.s0 + (pos - c.s0) % (c.w + c.f);
            }
            pg = c.bf16_indices[c.bf16_indptr[x.b] + page_of(slot, c.page, psh)];
            sl = slot_of(slot, c.page, psh);
        }
    }
    const unsigned long long hoff = (unsigned long long)x.h * c.page * D;
    const unsigned long long vofs = (unsigned long long)c.hkv * c.page * D;
#pragma unroll
    for (int it = 0; it < TTB * CPR / 32; ++it) {
        const int ci = lane + 32 * it, r = ci / CPR, part = ci % CPR;
        const int p = __shfl_sync(0xffffffffu, pg, r), s = __shfl_sync(0xffffffffu, sl, r);
        const unsigned short *src = c.bf16_pool;
        if (p >= 0) src = c.bf16_pool + (unsigned long long)p * c.bf16_page_elems + hoff + (unsigned)s * D + part * 8;
        const int n = p >= 0 ? 16 : 0;
        cp_async16(st + r * Geo<D>::RSB + part * 16, src, n);
        cp_async16(st + TTB * Geo<D>::RSB + r * Geo<D>::RSB + part * 16, p >= 0 ? src + vofs : src, n);
    }
}

/* Per-CTA constants of the INT2 loader. */
struct I2L {
    const unsigned char *kc, *km; /* pool + this head's code / meta offset inside a page */
    const int *idx;               /* this sequence's page list */
    unsigned long long pb, vofs, mvofs;
    int page, psh;
};

/* INT2 stage: tier rows i0 .. i0+TT-1 (< i1); lane l resolves rows l and l+32. */
template <int D, int NG, int META>
__device__ __forceinline__ void load_int2_stage(unsigned char *st, const I2L &L, int i0, int i1, int lane)
{
    constexpr int CPR = D / 64;
    constexpr int RS = Geo<D>::RS;
    constexpr int MB = MetaB<NG, META>::MBMAX;
    constexpr int UNIT = MB >= 16 ? 16 : MB;
    constexpr int UPR = MB / UNIT;
    constexpr int NQ = TT / 32;
    int pg[NQ], sl[NQ];
#pragma unroll
    for (int q = 0; q < NQ; ++q) {
        const int i = i0 + lane + 32 * q;
        pg[q] = i < i1 ? __ldg(L.idx + page_of(i, L.page, L.psh)) : -1;
        sl[q] = slot_of(i, L.page, L.psh);
    }
#pragma unroll
    for (int it = 0; it < TT * CPR / 32; ++it) {
        const int ci = lane + 32 * it, r = ci / CPR, part = ci % CPR;
        const int qq = it / CPR;
        const int p = __shfl_sync(0xffffffffu, pg[qq], r - 32 * qq), s = __shfl_sync(0xffffffffu, sl[qq], r - 32 * qq);
        const unsigned char *src =
            p >= 0 ? L.kc + (unsigned long long)(unsigned)p * L.pb + (unsigned)s * (D / 4) + part * 16 : L.kc;
        const int n = p >= 0 ? 16 : 0;
        const int dofs = swz<D>(r, part * 16);
        cp_async16(st + dofs, src, n);
        cp_async16(st + TT * RS + dofs, src + (p >= 0 ? L.vofs : 0), n);
    }
    unsigned char *km = st + 2 * TT * RS;
    unsigned char *vm = km + TT * MB;
#pragma unroll
    for (int it = 0; it < TT * UPR / 32; ++it) {
        const int ci = lane + 32 * it, r = ci / UPR, part = ci % UPR;
        const int qq = it / UPR;
        const int p = __shfl_sync(0xffffffffu, pg[qq], r - 32 * qq), s = __shfl_sync(0xffffffffu, sl[qq], r - 32 * qq);
        const unsigned char *src =
            p >= 0 ? L.km + (unsigned long long)(unsigned)p * L.pb + (unsigned)s * MB + part * UNIT : L.km;
        const unsigned char *sv = src + (p >= 0 ? L.mvofs : 0);
        const int n = p >= 0 ? UNIT : 0;
        unsigned char *dk = km + r * MB + part * UNIT, *dv = vm + r * MB + part * UNIT;
        if (UNIT == 16) {
            cp_async16(dk, src, n);
            cp_async16(dv, sv, n);
        } else if (UNIT == 8) {
            cp_async8(dk, src, n);
            cp_async8(dv, sv, n);
        } else {
            cp_async4(dk, src, n);
            cp_async4(dv, sv, n);
        }
    }
}

/* (scale, lo) pair of a stored metadata entry */
template <int META> __device__ __forceinline__ float2 ld_pair(const unsigned char *p)
{
    if (META == OKV_FMT_META_F32) return *(const float2 *)p;
    const uint32_t w = *(const uint32_t *)p;
    if (META == OKV_FMT_META_F16) {
        __half2 h = *reinterpret_cast<const __half2 *>(&w);
        return __half22float2(h);
    }
    return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
}

/* Online softmax over NT rows per thread; s[row][e] (e: head 2t+e) in log2 units.
 * Returns the correction factors and leaves p in s. */
template <int NT> __device__ __forceinline__ void softmax_step(float (&s)[NT][2], float m[2], float l[2], float corr[2])
{
#pragma unroll
    for (int e = 0; e < 2; ++e) {
        float mx = s[0][e];
#pragma unroll
        for (int r = 1; r < NT; ++r)
            mx = fmaxf(mx, s[r][e]);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
        float mn = fmaxf(m[e], mx);
        bool empty = mn == NEG_INF;
        corr[e] = empty ? 1.0f : ex2(m[e] - mn);
        float sum = 0.0f;
#pragma unroll
        for (int r = 0; r < NT; ++r) {
            float p = empty ? 0.0f : ex2(s[r][e] - mn);
            s[r][e] = p;
            sum += p;
        }
        l[e] = l[e] * corr[e] + sum;
        m[e] = mn;
    }
}

/* INT2 channel of accumulator row `half` (0: row g, 1: row g+8) of PV m-tile mt. */
template <int D> __device__ __forceinline__ int int2_chan(int mt, int g, int half)
{
    if (D == 64) return 2 * g + half + 16 * mt;
    int m = mt / 8, k = (mt / 2) % 4, jp = mt % 2;
    return 4 * g + 32 * m + 2 * jp + half + k * (D / 4);
}
template <int D> __device__ __forceinline__ int int2_k(int mt) { return D == 64 ? mt : (mt / 2) % 4; }
template <int D, int NG> __device__ __forceinline__ int int2_vgroup(int mt)
{
    return D == 64 ? (16 * mt) / (D / NG) : (32 * (mt / 8) + int2_k<D>(mt) * (D / 4)) / (D / NG);
}

/* MODE 0: mixed cache (NS INT2 stages per warp), 1: BF16 cache (NS BF16 stages per warp) */
template <int D, int NG, int META, int MODE, int NS>
__global__ void __launch_bounds__(NW * 32, (MODE == 0 && D == 128 && NG == 1) ? 4 : 1)
    decode_kernel(okvc_decode_args_t a, float sm2)
{
    extern __shared__ __align__(16) unsigned char smem[];
    constexpr int MT = D / 16;
    constexpr int NST = NS; /* INT2 stages (MODE 0; unused in MODE 1) */
    constexpr int WARP_BYTES = MODE == 0 ? GeoI<D, NG, META, NS>::WARP_MIXED : NS * Geo<D>::SB;
    constexpr int NSTB = MODE == 0 ? GeoI<D, NG, META, NS>::NSTB_MIXED : NS;
    constexpr int G = D / NG;
    const okvc_cache_t &c = a.c;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int gq = c.hq / c.hkv, hch = (gq + 7) / 8;
    const int psh = (c.page & (c.page - 1)) == 0 ? __ffs(c.page) - 1 : -1;
    Ctx x;
    x.b = blockIdx.z;
    x.h = blockIdx.y / hch;
    const int chunk = blockIdx.y % hch;
    x.qh0 = x.h * gq + chunk * 8;
    x.gh = min(8, gq - chunk * 8);
    x.L = c.seq_lens[x.b];
    if (MODE == 1) {
        x.I = 0;
        x.ns = x.L;
        x.nb = x.L;
    } else {
        x.I = c.int2_lens[x.b];
        x.ns = min(x.L, c.s0);
        x.nb = x.ns + max(0, x.L - c.s0 - x.I);
    }
    /* work split */
    const long long wb = MODE == 1 ? 1 : BF16_WEIGHT;
    const long long work = (long long)x.nb * wb + x.I;
    const long long per = (work + gridDim.x - 1) / gridDim.x;
    const long long w0 = min(work, per * blockIdx.x), w1 = min(work, per * (blockIdx.x + 1));
    const int jb0 = (int)min((long long)x.nb, (w0 + wb - 1) / wb), jb1 = (int)min((long long)x.nb, (w1 + wb - 1) / wb);
    const int i0 = (int)max(0LL, w0 - (long long)x.nb * wb), i1 = (int)max(0LL, w1 - (long long)x.nb * wb);

    unsigned char *wsm = smem + warp * WARP_BYTES;

    /* ---- query fragments (head g of this chunk) ---- */
    const bool hv = g < x.gh;
    const size_t qbase = ((size_t)x.b * c.hq + x.qh0 + g) * D;

    float o[MT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
        o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};

    /* ================= BF16 phase ================= */
    const int nbt = (jb1 - jb0 + TTB - 1) / TTB; /* BF16 stages of this CTA */
    const int my_b = nbt > warp ? (nbt - warp + NW - 1) / NW : 0;
    if (my_b > 0) {
        /* bf16 B fragments, natural channel order. An f16/f32 query is split into
         * hi + lo bf16 parts (two MMAs; P likewise) so the BF16 tier keeps ~16-bit
         * operand precision; a bf16 query is exact in one part. */
        const bool split = a.q_dtype != OKV_DTYPE_BF16;
        uint32_t qb[MT][2], ql[MT][2];
#pragma unroll
        for (int kt = 0; kt < MT; ++kt) {
            int c0 = kt * 16 + 2 * t;
            float v0 = hv ? ld_any(a.q, a.q_dtype, qbase + c0) : 0.f,
                  v1 = hv ? ld_any(a.q, a.q_dtype, qbase + c0 + 1) : 0.f;
            float v2 = hv ? ld_any(a.q, a.q_dtype, qbase + c0 + 8) : 0.f,
                  v3 = hv ? ld_any(a.q, a.q_dtype, qbase + c0 + 9) : 0.f;
            qb[kt][0] = pack_bf2(v0, v1);
            qb[kt][1] = pack_bf2(v2, v3);
            ql[kt][0] = pack_bf2(v0 - bf_lo(qb[kt][0]), v1 - bf_hi(qb[kt][0]));
            ql[kt][1] = pack_bf2(v2 - bf_lo(qb[kt][1]), v3 - bf_hi(qb[kt][1]));
        }
        auto stage_ptr = [&](int s) { return wsm + (s % NSTB) * Geo<D>::SB; };
#pragma unroll 1
        for (int s = 0; s < NSTB - 1; ++s) {
            if (s < my_b) {
                int j = jb0 + (warp + s * NW) * TTB;
                load_bf16_stage<D>(stage_ptr(s), c, x, j, jb1, lane, MODE == 1, psh);
            }
            cp_commit();
        }
#pragma unroll 1
        for (int s = 0; s < my_b; ++s) {
            int sn = s + NSTB - 1;
            if (sn < my_b) {
                int j = jb0 + (warp + sn * NW) * TTB;
                load_bf16_stage<D>(stage_ptr(sn), c, x, j, jb1, lane, MODE == 1, psh);
            }
            cp_commit();
            cp_wait<NSTB - 1>();
            __syncwarp();
            const unsigned char *ks = stage_ptr(s), *vs = ks + TTB * Geo<D>::RSB;
            const int j0 = jb0 + (warp + s * NW) * TTB;
            float acc[4] = {0.f, 0.f, 0.f, 0.f};
            {
                const int mi = lane >> 3, row = (mi & 1) * 8 + (lane & 7);
#pragma unroll
                for (int kt = 0; kt < MT; ++kt) {
                    uint32_t r[4];
                    ldsm_x4(r, ks + row * Geo<D>::RSB + (kt * 16 + (mi >> 1) * 8) * 2);
                    mma_bf16(acc, r[0], r[1], r[2], r[3], qb[kt][0], qb[kt][1]);
                    if (split) mma_bf16(acc, r[0], r[1], r[2], r[3], ql[kt][0], ql[kt][1]);
                }
            }
            float sc[2][2];
            const bool ok0 = j0 + g < jb1, ok1 = j0 + g + 8 < jb1;
            sc[0][0] = ok0 ? acc[0] * sm2 : NEG_INF;
            sc[0][1] = ok0 ? acc[1] * sm2 : NEG_INF;
            sc[1][0] = ok1 ? acc[2] * sm2 : NEG_INF;
            sc[1][1] = ok1 ? acc[3] * sm2 : NEG_INF;
            float corr[2];
            softmax_step<2>(sc, m, l, corr);
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                o[i][0] *= corr[0];
                o[i][2] *= corr[0];
                o[i][1] *= corr[1];
                o[i][3] *= corr[1];
            }
            const uint32_t h0 = pack_bf2(sc[0][0], sc[0][1]), h1 = pack_bf2(sc[1][0], sc[1][1]);
            const uint32_t b0 = movtrans(h0), b1 = movtrans(h1);
            uint32_t bl0 = 0u, bl1 = 0u;
            if (split) {
                bl0 = movtrans(pack_bf2(sc[0][0] - bf_lo(h0), sc[0][1] - bf_hi(h0)));
                bl1 = movtrans(pack_bf2(sc[1][0] - bf_lo(h1), sc[1][1] - bf_hi(h1)));
            }
            {
                const int mi = lane >> 3, tok = (mi >> 1) * 8 + (lane & 7);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    uint32_t r[4];
                    ldsm_x4_t(r, vs + tok * Geo<D>::RSB + (mt * 16 + (mi & 1) * 8) * 2);
                    mma_bf16(o[mt], r[0], r[1], r[2], r[3], b0, b1);
                    if (split) mma_bf16(o[mt], r[0], r[1], r[2], r[3], bl0, bl1);
                }
            }
            __syncwarp();
        }
        cp_wait<0>();
        __syncwarp();
    }

    /* ================= INT2 phase ================= */
    bool int2_layout = false;
    float plo[NG][2];
#pragma unroll
    for (int j = 0; j < NG; ++j)
        plo[j][0] = plo[j][1] = 0.f;
    if (MODE == 0) {
        const int nit = (i1 - i0 + TT - 1) / TT;
        const int my_i = nit > warp ? (nit - warp + NW - 1) / NW : 0;
        if (my_i > 0) {
            int2_layout = true;
            if (my_b > 0) {
                /* move the BF16-phase accumulators into the INT2 channel layout (x 4^k 2^-24) */
                float *buf = (float *)wsm; /* [8][D] */
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int r = 0; r < 4; ++r)
                        buf[(2 * t + (r & 1)) * D + mt * 16 + g + 8 * (r >> 1)] = o[mt][r];
                __syncwarp();
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int r = 0; r < 4; ++r)
                        o[mt][r] = buf[(2 * t + (r & 1)) * D + int2_chan<D>(mt, g, r >> 1)] *
                                   ((float)(1 << (2 * int2_k<D>(mt))) * (1.0f / 16777216.0f));
                __syncwarp();
            }
            /* fp16 q operand in the INT2 channel order, scaled by 2^e / 4^k */
            float amax = 0.f;
            uint32_t qh[MT][2];
            float qs0[NG]; /* per group: sum of q */
#pragma unroll
            for (int j = 0; j < NG; ++j)
                qs0[j] = 0.f;
            float qv[MT][4];
#pragma unroll
            for (int kt = 0; kt < MT; ++kt) {
                const int wi = kt / 4, k = kt % 4;
                const int c0 = 16 * wi + 4 * t + k * (D / 4);
#pragma unroll
                for (int jj = 0; jj < 4; ++jj) {
                    qv[kt][jj] = hv ? ld_any(a.q, a.q_dtype, qbase + c0 + jj) : 0.f;
                    amax = fmaxf(amax, fabsf(qv[kt][jj]));
                }
            }
            amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
            amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
            int ex = 0;
            if (amax > 0.f) frexpf(amax, &ex);
            const int e2 = min(100, max(-100, 8 - ex));
            const float qscale = ldexpf(1.0f, e2);
#pragma unroll
            for (int kt = 0; kt < MT; ++kt) {
                const int wi = kt / 4, k = kt % 4;
                const int j = (16 * wi + k * (D / 4)) / G;
                const float f = qscale / (float)(1 << (2 * k));
                /* b0 = channels c0, c0+2 ; b1 = c0+1, c0+3 */
                qh[kt][0] = pack_h2(qv[kt][0] * f, qv[kt][2] * f);
                qh[kt][1] = pack_h2(qv[kt][1] * f, qv[kt][3] * f);
                qs0[j] += qv[kt][0] + qv[kt][1] + qv[kt][2] + qv[kt][3];
            }
            /* per-head constants, then fetch those of heads 2t, 2t+1 */
            float Cc[NG][2], Ac[2];
#pragma unroll
            for (int j = 0; j < NG; ++j) {
                qs0[j] += __shfl_xor_sync(0xffffffffu, qs0[j], 1);
                qs0[j] += __shfl_xor_sync(0xffffffffu, qs0[j], 2);
#pragma unroll
                for (int e = 0; e < 2; ++e)
                    Cc[j][e] = sm2 * __shfl_sync(0xffffffffu, qs0[j], (2 * t + e) * 4);
            }
#pragma unroll
            for (int e = 0; e < 2; ++e) /* 2^24: the subnormal code operand */
                Ac[e] = sm2 * 16777216.0f / __shfl_sync(0xffffffffu, qscale, (2 * t + e) * 4);

            constexpr int MB = GeoI<D, NG, META, NST>::MBMAX;
            constexpr int MSZ = GeoI<D, NG, META, NST>::MSZ;
            constexpr int SI = GeoI<D, NG, META, NST>::SI;
            constexpr int RS = Geo<D>::RS;
            auto stage_ptr = [&](int s) { return wsm + (s % NST) * SI; };
            I2L ld;
            ld.page = c.page;
            ld.psh = psh;
            ld.pb = c.int2_page_bytes;
            ld.vofs = (unsigned long long)c.hkv * c.page * (D / 4);
            ld.mvofs = (unsigned long long)c.hkv * c.page * MB;
            ld.kc = c.int2_pool + (unsigned long long)x.h * c.page * (D / 4);
            ld.km = c.int2_pool + 2ull * c.hkv * c.page * (D / 4) + (unsigned long long)x.h * c.page * MB;
            ld.idx = c.int2_indices + c.int2_indptr[x.b];
#pragma unroll 1
            for (int s = 0; s < NST - 1; ++s) {
                if (s < my_i) load_int2_stage<D, NG, META>(stage_ptr(s), ld, i0 + (warp + s * NW) * TT, i1, lane);
                cp_commit();
            }
#pragma unroll 1
            for (int s = 0; s < my_i; ++s) {
                const int sn = s + NST - 1;
                if (sn < my_i) load_int2_stage<D, NG, META>(stage_ptr(sn), ld, i0 + (warp + sn * NW) * TT, i1, lane);
                cp_commit();
                cp_wait<NST - 1>();
                __syncwarp();
                const unsigned char *ks = stage_ptr(s), *vs = ks + TT * RS, *km = ks + 2 * TT * RS, *vm = km + TT * MB;
                const int ib = i0 + (warp + s * NW) * TT;
                float sc[TT / 8][2]; /* rows: 16 m + g, 16 m + g + 8 */
                /* QK of QB m-tiles at a time, k-step outer: QB independent HMMA chains
                 * in flight instead of one chain of D/16 (latency, not issue, bound) */
                constexpr int QB = NG <= 2 ? TT / 16 : (NG == 4 ? 2 : 1);
#pragma unroll
                for (int mb = 0; mb < TT / 16; mb += QB) {
                    float acc[QB][NG][4];
#pragma unroll
                    for (int u = 0; u < QB; ++u)
#pragma unroll
                        for (int j = 0; j < NG; ++j)
                            acc[u][j][0] = acc[u][j][1] = acc[u][j][2] = acc[u][j][3] = 0.f;
#pragma unroll
                    for (int wi = 0; wi < D / 64; ++wi) {
                        uint32_t xw[QB][4];
#pragma unroll
                        for (int u = 0; u < QB; ++u) {
                            const int r0 = (mb + u) * 16 + g;
                            xw[u][0] = *(const uint32_t *)(ks + swz<D>(r0, 16 * wi + 4 * t));
                            xw[u][1] = *(const uint32_t *)(ks + swz<D>(r0 + 8, 16 * wi + 4 * t));
                            xw[u][2] = xw[u][0] >> 8;
                            xw[u][3] = xw[u][1] >> 8;
                        }
#define OKV_QK(K)                                                                                                      \
    {                                                                                                                  \
        const int kt = wi * 4 + K;                                                                                     \
        const int j = (16 * wi + K * (D / 4)) / G;                                                                     \
        constexpr uint32_t msk = 0x00030003u << (2 * K);                                                               \
        _Pragma("unroll") for (int u = 0; u < QB; ++u)                                                                 \
            mma_f16(acc[u][j], codes<msk>(xw[u][0]), codes<msk>(xw[u][1]), codes<msk>(xw[u][2]), codes<msk>(xw[u][3]), \
                    qh[kt][0], qh[kt][1]);                                                                             \
    }
                        OKV_QK(0) OKV_QK(1) OKV_QK(2) OKV_QK(3)
#undef OKV_QK
                    }
#pragma unroll
                    for (int u = 0; u < QB; ++u) {
                        const int mt2 = mb + u;
                        const int r0 = mt2 * 16 + g, r1 = r0 + 8;
                        const bool ok0 = ib + r0 < i1, ok1 = ib + r1 < i1;
                        float s00 = 0.f, s01 = 0.f, s10 = 0.f, s11 = 0.f;
#pragma unroll
                        for (int j = 0; j < NG; ++j) {
                            const float2 k0 = ld_pair<META>(km + r0 * MB + j * 2 * MSZ);
                            const float2 k1 = ld_pair<META>(km + r1 * MB + j * 2 * MSZ);
                            s00 += k0.x * acc[u][j][0] * Ac[0] + k0.y * Cc[j][0];
                            s01 += k0.x * acc[u][j][1] * Ac[1] + k0.y * Cc[j][1];
                            s10 += k1.x * acc[u][j][2] * Ac[0] + k1.y * Cc[j][0];
                            s11 += k1.x * acc[u][j][3] * Ac[1] + k1.y * Cc[j][1];
                        }
                        sc[2 * mt2][0] = ok0 ? s00 : NEG_INF;
                        sc[2 * mt2][1] = ok0 ? s01 : NEG_INF;
                        sc[2 * mt2 + 1][0] = ok1 ? s10 : NEG_INF;
                        sc[2 * mt2 + 1][1] = ok1 ? s11 : NEG_INF;
                    }
                }
                float corr[2];
                softmax_step<TT / 8>(sc, m, l, corr);
#pragma unroll
                for (int i = 0; i < MT; ++i) {
                    o[i][0] *= corr[0];
                    o[i][2] *= corr[0];
                    o[i][1] *= corr[1];
                    o[i][3] *= corr[1];
                }
#pragma unroll
                for (int j = 0; j < NG; ++j) {
                    plo[j][0] *= corr[0];
                    plo[j][1] *= corr[1];
                }
#pragma unroll
                for (int mt2 = 0; mt2 < TT / 16; ++mt2) {
                    const int r0 = mt2 * 16 + g, r1 = r0 + 8;
                    uint32_t bj[NG][2];
#pragma unroll
                    for (int j = 0; j < NG; ++j) {
                        const float2 v0 = ld_pair<META>(vm + r0 * MB + j * 2 * MSZ);
                        const float2 v1 = ld_pair<META>(vm + r1 * MB + j * 2 * MSZ);
                        const float p00 = sc[2 * mt2][0], p01 = sc[2 * mt2][1];
                        const float p10 = sc[2 * mt2 + 1][0], p11 = sc[2 * mt2 + 1][1];
                        plo[j][0] += p00 * v0.y + p10 * v1.y;
                        plo[j][1] += p01 * v0.y + p11 * v1.y;
                        bj[j][0] = movtrans(pack_h2(p00 * v0.x, p01 * v0.x));
                        bj[j][1] = movtrans(pack_h2(p10 * v1.x, p11 * v1.x));
                    }
                    /* V words of tokens 2t, 2t+1, 2t+8, 2t+9 of this m-tile */
                    const int vr = mt2 * 16 + 2 * t;
                    if (D == 64) {
                        const uint32_t ua = *(const unsigned short *)(vs + swz<D>(vr, 2 * g));
                        const uint32_t ub = *(const unsigned short *)(vs + swz<D>(vr + 1, 2 * g));
                        const uint32_t uc = *(const unsigned short *)(vs + swz<D>(vr + 8, 2 * g));
                        const uint32_t ud = *(const unsigned short *)(vs + swz<D>(vr + 9, 2 * g));
                        const uint32_t xa = ua | (ub << 16), xb = uc | (ud << 16);
                        const uint32_t xah = xa >> 8, xbh = xb >> 8;
#define OKV_PV64(K)                                                                                                    \
    {                                                                                                                  \
        constexpr uint32_t msk = 0x00030003u << (2 * K);                                                               \
        const int j = int2_vgroup<D, NG>(K);                                                                           \
        mma_f16(o[K], codes<msk>(xa), codes<msk>(xah), codes<msk>(xb), codes<msk>(xbh), bj[j][0], bj[j][1]);           \
    }
                        OKV_PV64(0) OKV_PV64(1) OKV_PV64(2) OKV_PV64(3)
#undef OKV_PV64
                    } else {
#pragma unroll
                        for (int mw = 0; mw < D / 128; ++mw) {
                            const int off = 4 * g + 32 * mw;
                            const uint32_t wa = *(const uint32_t *)(vs + swz<D>(vr, off));
                            const uint32_t wb2 = *(const uint32_t *)(vs + swz<D>(vr + 1, off));
                            const uint32_t wc = *(const uint32_t *)(vs + swz<D>(vr + 8, off));
                            const uint32_t wd = *(const uint32_t *)(vs + swz<D>(vr + 9, off));
                            uint32_t xa[4], xb[4];
                            xa[0] = prmt(wa, wb2, 0x5410);
                            xa[2] = prmt(wa, wb2, 0x7632);
                            xb[0] = prmt(wc, wd, 0x5410);
                            xb[2] = prmt(wc, wd, 0x7632);
                            xa[1] = xa[0] >> 8;
                            xa[3] = xa[2] >> 8;
                            xb[1] = xb[0] >> 8;
                            xb[3] = xb[2] >> 8;
#define OKV_PV(K)                                                                                                      \
    {                                                                                                                  \
        constexpr uint32_t msk = 0x00030003u << (2 * K);                                                               \
        _Pragma("unroll") for (int jp = 0; jp < 2; ++jp)                                                               \
        {                                                                                                              \
            const int mt = (mw * 4 + K) * 2 + jp;                                                                      \
            const int j = int2_vgroup<D, NG>(mt);                                                                      \
            mma_f16(o[mt], codes<msk>(xa[2 * jp]), codes<msk>(xa[2 * jp + 1]), codes<msk>(xb[2 * jp]),                 \
                    codes<msk>(xb[2 * jp + 1]), bj[j][0], bj[j][1]);                                                   \
        }                                                                                                              \
    }
                            OKV_PV(0) OKV_PV(1) OKV_PV(2) OKV_PV(3)
#undef OKV_PV
                        }
                    }
                }
                __syncwarp();
            }
            cp_wait<0>();
            __syncwarp();
        }
    }

    /* ================= warp epilogue ================= */
#pragma unroll
    for (int e = 0; e < 2; ++e) {
        l[e] += __shfl_xor_sync(0xffffffffu, l[e], 4);
        l[e] += __shfl_xor_sync(0xffffffffu, l[e], 8);
        l[e] += __shfl_xor_sync(0xffffffffu, l[e], 16);
#pragma unroll
        for (int j = 0; j < NG; ++j) {
            plo[j][e] += __shfl_xor_sync(0xffffffffu, plo[j][e], 4);
            plo[j][e] += __shfl_xor_sync(0xffffffffu, plo[j][e], 8);
            plo[j][e] += __shfl_xor_sync(0xffffffffu, plo[j][e], 16);
        }
    }
    __syncthreads();                                 /* every warp is done with its stage buffers */
    float *ep = (float *)(smem + warp * WARP_BYTES); /* [8][D + 2]: O, m, l */
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int e = r & 1, hh = 2 * t + e, half = r >> 1;
            float v;
            int ch;
            if (int2_layout) {
                const int j = int2_vgroup<D, NG>(mt);
                ch = int2_chan<D>(mt, g, half);
                v = o[mt][r] * (16777216.0f / (float)(1 << (2 * int2_k<D>(mt)))) + plo[j][e];
            } else {
                ch = mt * 16 + g + 8 * half;
                v = o[mt][r];
            }
            ep[hh * (D + 2) + ch] = v;
        }
    if (g == 0) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            ep[(2 * t + e) * (D + 2) + D] = m[e];
            ep[(2 * t + e) * (D + 2) + D + 1] = l[e];
        }
    }
    __syncthreads();
    /* ================= CTA combine -> workspace partial ================= */
    const int nsplit = gridDim.x;
    float *wso = (float *)a.workspace;
    float *wsl = wso + (size_t)c.batch * c.hq * nsplit * D;
    for (int it = threadIdx.x; it < x.gh * D; it += NW * 32) {
        const int hh = it / D, ch = it % D;
        float M = NEG_INF;
#pragma unroll
        for (int w = 0; w < NW; ++w)
            M = fmaxf(M, ((float *)(smem + w * WARP_BYTES))[hh * (D + 2) + D]);
        float Ls = 0.f, O = 0.f;
        if (M != NEG_INF) {
#pragma unroll
            for (int w = 0; w < NW; ++w) {
                const float *pw = (float *)(smem + w * WARP_BYTES) + hh * (D + 2);
                const float mw = pw[D];
                if (mw == NEG_INF) continue;
                const float f = exp2f(mw - M);
                Ls += f * pw[D + 1];
                O += f * pw[ch];
            }
        }
        const size_t qi = (size_t)x.b * c.hq + x.qh0 + hh;
        const bool any = Ls > 0.f;
        wso[(qi * nsplit + blockIdx.x) * D + ch] = any ? O / Ls : 0.f;
        if (ch == 0) wsl[qi * nsplit + blockIdx.x] = any ? M + log2f(Ls) : NEG_INF;
    }
}

/* Merge the partials of one (sequence, query head); optional o R^T. MSG split groups
 * of D threads each: the split weights are computed once per block (in parallel over
 * the splits) and every thread sums ~nsplit / MSG independent partial loads, so the
 * merge is not a chain of nsplit dependent L2 round trips (batch 1 at 128K: 45 splits). */
constexpr int MSG = 4;
constexpr int MMAXS = 1024; /* okvc_decode_plan never returns more splits */
template <int D> __global__ void __launch_bounds__(D *MSG) merge_kernel(okvc_decode_args_t a, int nsplit)
{
    __shared__ float fs[MMAXS];
    __shared__ float red[D * MSG];
    __shared__ float wred[D * MSG / 32];
    __shared__ float os[D];
    const okvc_cache_t &c = a.c;
    const size_t qi = blockIdx.x;
    const int tid = threadIdx.x, ch = tid % D, sg = tid / D;
    const int lane = tid & 31, wid = tid >> 5;
    constexpr int NWM = D * MSG / 32;
    const float *wso = (const float *)a.workspace;
    const float *wsl = wso + (size_t)c.batch * c.hq * nsplit * D;
    /* max of the partial lse */
    float M = NEG_INF;
    for (int s = tid; s < nsplit; s += D * MSG)
        M = fmaxf(M, wsl[qi * nsplit + s]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    if (lane == 0) wred[wid] = M;
    __syncthreads();
    M = wred[0];
#pragma unroll
    for (int w = 1; w < NWM; ++w)
        M = fmaxf(M, wred[w]);
    __syncthreads();
    /* weights f_s = 2^(lse_s - M) and their sum */
    float sum = 0.f;
    for (int s = tid; s < nsplit; s += D * MSG) {
        const float ls = wsl[qi * nsplit + s];
        const float f = (M == NEG_INF || ls == NEG_INF) ? 0.f : exp2f(ls - M);
        fs[s] = f;
        sum += f;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) wred[wid] = sum;
    __syncthreads();
    sum = 0.f;
#pragma unroll
    for (int w = 0; w < NWM; ++w)
        sum += wred[w];
    /* weighted sum of the partial outputs, MSG split groups, then across groups */
    float acc = 0.f;
    const float *po = wso + qi * nsplit * D + ch;
#pragma unroll 4
    for (int s = sg; s < nsplit; s += MSG) {
        const float f = fs[s];
        if (f != 0.f) acc += f * po[(size_t)s * D];
    }
    red[tid] = acc;
    __syncthreads();
    if (sg != 0) return;
#pragma unroll
    for (int j = 1; j < MSG; ++j)
        acc += red[j * D + ch];
    const float ov = sum > 0.f ? acc / sum : 0.f;
    if (a.unrotate && a.v_rotation) {
        os[ch] = ov;
        asm volatile("bar.sync 1, %0;\n" ::"n"(D) : "memory"); /* the other groups have left */
        const int h = (int)(qi % c.hq) / (c.hq / c.hkv);
        const float *R = a.v_rotation + (a.per_head_rotation ? (size_t)h * D * D : 0);
        float r = 0.f;
        for (int i = 0; i < D; ++i)
            r += os[i] * R[(size_t)ch * D + i];
        st_any(a.out, a.out_dtype, qi * D + ch, r);
    } else {
        st_any(a.out, a.out_dtype, qi * D + ch, ov);
    }
    if (ch == 0 && a.lse) a.lse[qi] = M == NEG_INF ? NEG_INF : (M + log2f(sum)) * 0.69314718055994531f;
}

template <int D, int NG, int META, int MODE, int NS> size_t kernel_smem()
{
    size_t w = MODE == 0 ? (size_t)GeoI<D, NG, META, NS>::WARP_MIXED : (size_t)NS * Geo<D>::SB;
    size_t e = (size_t)epi_bytes<D>();
    return (w > e ? w : e) * NW;
}

typedef void (*kfn_t)(okvc_decode_args_t, float);

template <int D, int NG, int META, int MODE, int NS> kfn_t kernel_ptr(size_t *smem)
{
    *smem = kernel_smem<D, NG, META, MODE, NS>();
    return decode_kernel<D, NG, META, MODE, NS>;
}

template <int D, int NG> kfn_t pick_meta(int meta, size_t *smem)
{
    if (meta == OKV_FMT_META_F16) return kernel_ptr<D, NG, OKV_FMT_META_F16, 0, NST_DEF>(smem);
    if (meta == OKV_FMT_META_BF16) return kernel_ptr<D, NG, OKV_FMT_META_BF16, 0, NST_DEF>(smem);
    return kernel_ptr<D, NG, OKV_FMT_META_F32, 0, NST_DEF>(smem);
}

kfn_t pick_kernel(int d, int ng, int meta, int mode, size_t *smem)
{
    const int ov = okvc_decode_stages_override;
    if (mode) {
        if (d == 128 && ov == 2) return kernel_ptr<128, 1, OKV_FMT_META_F16, 1, 2>(smem);
        if (d == 128 && ov == 4) return kernel_ptr<128, 1, OKV_FMT_META_F16, 1, 4>(smem);
        if (d == 64) return kernel_ptr<64, 1, OKV_FMT_META_F16, 1, NSTB_ONLY>(smem);
        if (d == 128) return kernel_ptr<128, 1, OKV_FMT_META_F16, 1, NSTB_ONLY>(smem);
        if (d == 256) return kernel_ptr<256, 1, OKV_FMT_META_F16, 1, 2>(smem);
        return nullptr;
    }
    if (d == 128 && ng == 1 && meta == OKV_FMT_META_F16 && ov == 2)
        return kernel_ptr<128, 1, OKV_FMT_META_F16, 0, 2>(smem);
    if (d == 128 && ng == 1 && meta == OKV_FMT_META_F16 && ov == 4)
        return kernel_ptr<128, 1, OKV_FMT_META_F16, 0, 4>(smem);
        // clang-format off
#define OKV_K(D, NG) if (d == D && ng == NG) return pick_meta<D, NG>(meta, smem);
    OKV_K(64, 1) OKV_K(64, 2)
    OKV_K(128, 1) OKV_K(128, 2) OKV_K(128, 4)
    OKV_K(256, 1) OKV_K(256, 2) OKV_K(256, 4) OKV_K(256, 8)
#undef OKV_K
        // clang-format on
        return nullptr;
}

/* Per-kernel: dynamic shared memory limit raised once, occupancy queried once
 * (per process; all devices of one process are assumed alike). */
struct KInfo {
    kfn_t k;
    int occ;
};
KInfo g_kinfo[32];
int g_nkinfo = 0;

int kernel_prepare(kfn_t k, size_t smem, int *occ_out)
{
    for (int i = 0; i < g_nkinfo; ++i)
        if (g_kinfo[i].k == k) {
            *occ_out = g_kinfo[i].occ;
            return cudaSuccess;
        }
    cudaError_t e = cudaFuncSetAttribute((const void *)k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    int n = 0;
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, (const void *)k, NW * 32, smem);
    if (e != cudaSuccess) return e;
    if (g_nkinfo < 32) g_kinfo[g_nkinfo++] = KInfo{k, n};
    *occ_out = n;
    return cudaSuccess;
}

} // namespace

extern "C" int okvc_decode_plan(const okvc_state_t *st, const okvc_decode_args_t *a)
{
    const okvc_cache_t &c = a->c;
    const int gq = c.hq / c.hkv, hch = (gq + 7) / 8;
    const long long units = (long long)c.batch * c.hkv * hch;
    long long ms = a->max_seq_len > 0 ? a->max_seq_len : 1;
    long long work;
    if (a->bf16_only)
        work = ms;
    else {
        long long nb = ms < (long long)c.s0 + c.w + c.f ? ms : (long long)c.s0 + c.w + c.f;
        long long ni = ms - c.s0 > 0 ? ms - c.s0 : 0;
        work = nb * BF16_WEIGHT + ni;
    }
    long long maxs = (work + 255) / 256; /* at least ~256 work units per split */
    if (maxs < 1) maxs = 1;
    if (maxs > MMAXS) maxs = MMAXS; /* the merge kernel's weight table */
    if (a->num_splits > 0) return (int)(a->num_splits < maxs ? a->num_splits : maxs);
    size_t smem = 0;
    kfn_t k = pick_kernel(c.d, c.ng, c.meta_dtype, a->bf16_only, &smem);
    int occ = 1;
    if (!k || kernel_prepare(k, smem, &occ) != cudaSuccess || occ < 1) occ = 1;
    const long long slots = (long long)st->num_sms * occ;
    /* minimise waves / splits (wave quantisation) + a small per-split merge cost */
    long long best = 1;
    double bestc = 1e30;
    long long top = maxs;
    for (long long s = 1; s <= top; ++s) {
        long long waves = (units * s + slots - 1) / slots;
        double cost = (double)waves / (double)s + 0.0005 * (double)s;
        if (cost < bestc - 1e-12) {
            bestc = cost;
            best = s;
        }
    }
    return (int)best;
}

extern "C" size_t okvc_decode_workspace(const okvc_state_t *st, const okvc_decode_args_t *a)
{
    const okvc_cache_t &c = a->c;
    size_t ns = (size_t)okvc_decode_plan(st, a);
    return (size_t)c.batch * c.hq * ns * ((size_t)c.d + 1) * sizeof(float);
}

extern "C" int okvc_decode_launch(const okvc_state_t *st, const okvc_decode_args_t *a)
{
    const okvc_cache_t &c = a->c;
    if (c.batch == 0) return cudaSuccess;
    size_t smem = 0;
    kfn_t k = pick_kernel(c.d, c.ng, c.meta_dtype, a->bf16_only, &smem);
    if (!k) return cudaErrorInvalidValue;
    int occ = 0;
    cudaError_t e = (cudaError_t)kernel_prepare(k, smem, &occ);
    if (e != cudaSuccess) return e;
    const int ns = okvc_decode_plan(st, a);
    const int gq = c.hq / c.hkv, hch = (gq + 7) / 8;
    float sm = a->sm_scale > 0.f ? a->sm_scale : 1.0f / sqrtf((float)c.d);
    dim3 grid(ns, c.hkv * hch, c.batch);
    k<<<grid, NW * 32, smem, st->stream>>>(*a, sm * 1.4426950408889634f);
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    const unsigned nq = (unsigned)(c.batch * c.hq);
    if (c.d == 64)
        merge_kernel<64><<<nq, 64 * MSG, 0, st->stream>>>(*a, ns);
    else if (c.d == 128)
        merge_kernel<128><<<nq, 128 * MSG, 0, st->stream>>>(*a, ns);
    else
        merge_kernel<256><<<nq, 256 * MSG, 0, st->stream>>>(*a, ns);
    return cudaGetLastError();
}
