/*
 * okv_format.h - the INT2 row format and page geometry shared by every backend.
 *
 * This one text is included verbatim by the C reference (C99/C11), by the CUDA and
 * HIP sources, and is embedded into the OpenCL C 1.2 program source. It therefore
 * uses only the common subset: no standard headers, no pointers to global memory
 * (row helpers work on private/stack arrays), scalar float math only.
 *
 * Row format (SPEC section 3): a rotated row of d channels (one token, one KV head)
 * is clipped over the whole row, then split into groups of G channels; each group
 * stores (scale, lo) metadata and d/4 bytes of 2-bit codes, "quartered" packed:
 *   byte i = code[i] | code[i+d/4] << 2 | code[i+d/2] << 4 | code[i+3d/4] << 6.
 * Dequantised value: lo + code * scale, computed from the STORED (rounded) metadata;
 * codes are chosen against the stored metadata too, so encode/decode agree exactly.
 *
 * Page geometry (SPEC section 4), per layer:
 *   INT2 page (P tokens, Hkv heads), byte offsets from the page start:
 *     [0]                      K codes  [Hkv][P][d/4]  u8
 *     [Hkv*P*d/4]              V codes  [Hkv][P][d/4]  u8
 *     [2*Hkv*P*d/4]            K meta   [Hkv][P][ng][2] meta_dtype  (scale, lo)
 *     [.. + Hkv*P*ng*2*msz]    V meta   [Hkv][P][ng][2] meta_dtype
 *     padded up to a multiple of OKV_PAGE_ALIGN bytes.
 *   BF16 page (P token slots): [2 (K,V)][Hkv][P][d] bf16, rows already rotated.
 * A sequence's BF16 tier has S0 + W + F slots: slot p for sink position p < S0, and
 * slot S0 + (p - S0) mod (W + F) for a recent position p >= S0 (a ring: at most
 * W + F - 1 recent rows live at once between appends).
 */
#ifndef OKV_FORMAT_H
#define OKV_FORMAT_H

#if defined(__OPENCL_VERSION__)
#define OKV_FN static inline
typedef uint okv_u32;
typedef ushort okv_u16;
typedef uchar okv_u8;
#elif defined(__CUDACC__) || defined(__HIPCC__)
#define OKV_FN static __host__ __device__ __forceinline__
typedef unsigned int okv_u32;
typedef unsigned short okv_u16;
typedef unsigned char okv_u8;
#else
#include <math.h>
#define OKV_FN static inline
typedef unsigned int okv_u32;
typedef unsigned short okv_u16;
typedef unsigned char okv_u8;
#endif

/* ---- constants of the format (values of the public enums, kept in sync) ---- */
#define OKV_FMT_META_F16 1
#define OKV_FMT_META_BF16 2
#define OKV_FMT_META_F32 0
#define OKV_FMT_QUANT_UNIFORM 0
#define OKV_FMT_QUANT_LLOYD_MAX 1
#define OKV_FMT_CLIP_SORT 0
#define OKV_FMT_CLIP_BISECT 1
#define OKV_FMT_BISECT_STEPS 7
#define OKV_FMT_MIN_RANGE 1e-8f
#define OKV_FMT_MAX_HEAD_DIM 256
#define OKV_PAGE_ALIGN 64
/* Lloyd-Max for N(0,1) at 4 levels: thresholds +-0.9816 (and 0), levels
 * +-0.4528, +-1.5104; stored as a uniform grid of spacing 1.16*(2*1.5104/3) sigma. */
#define OKV_FMT_LM_THRESHOLD 0.9816f
#define OKV_FMT_LM_SPACING (1.16f * (2.0f * 1.5104f / 3.0f))

/* ---- bit casts per dialect ---- */
#if defined(__OPENCL_VERSION__)
#define OKV_F2U(f) as_uint(f)
#define OKV_U2F(u) as_float(u)
#else /* C, and CUDA/HIP host+device: a union cast compiles to a register move */
OKV_FN okv_u32 okv_f2u_(float f)
{
    union {
        float f;
        okv_u32 u;
    } c;
    c.f = f;
    return c.u;
}
OKV_FN float okv_u2f_(okv_u32 u)
{
    union {
        float f;
        okv_u32 u;
    } c;
    c.u = u;
    return c.f;
}
#define OKV_F2U(f) okv_f2u_(f)
#define OKV_U2F(u) okv_u2f_(u)
#endif

/* ---- scalar conversions (software, bit-identical on every dialect) ---- */
OKV_FN float okv_bf16_to_f32(okv_u16 h) { return OKV_U2F(((okv_u32)h) << 16); }

/* Round to nearest even; NaN stays NaN. */
OKV_FN okv_u16 okv_f32_to_bf16(float f)
{
    okv_u32 u = OKV_F2U(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (okv_u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (okv_u16)(u >> 16);
}

OKV_FN float okv_f16_to_f32(okv_u16 h)
{
    okv_u32 sign = ((okv_u32)h & 0x8000u) << 16;
    okv_u32 exp = ((okv_u32)h >> 10) & 0x1fu;
    okv_u32 man = (okv_u32)h & 0x3ffu;
    if (exp == 0x1fu) return OKV_U2F(sign | 0x7f800000u | (man << 13));
    if (exp == 0u) {
        /* subnormal: man * 2^-24, exact in float */
        float v = (float)man * 5.9604644775390625e-8f;
        return (sign != 0u) ? -v : v;
    }
    return OKV_U2F(sign | ((exp + 112u) << 23) | (man << 13));
}

/* Round to nearest even; overflow -> inf (callers check okv_f16_fits first). */
OKV_FN okv_u16 okv_f32_to_f16(float f)
{
    okv_u32 u = OKV_F2U(f);
    okv_u32 sign = (u >> 16) & 0x8000u;
    okv_u32 a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (okv_u16)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (okv_u16)(sign | 0x7c00u); /* rounds to >= 65520 */
    if (a < 0x38800000u) {
        /* result is subnormal or zero: round a/2^-24 to an integer, ties to even */
        float v = OKV_U2F(a) * 16777216.0f; /* exact scaling by 2^24 */
        okv_u32 i = (okv_u32)v;
        float rem = v - (float)i;
        if (rem > 0.5f || (rem == 0.5f && (i & 1u))) i += 1u;
        return (okv_u16)(sign | i);
    }
    okv_u32 m = a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u;
    return (okv_u16)(sign | (m >> 13));
}

/* Largest finite magnitudes the metadata types hold. */
#define OKV_F16_MAX 65504.0f
#define OKV_BF16_MAX 3.38953139e38f

OKV_FN int okv_meta_size(int meta_dtype) { return meta_dtype == OKV_FMT_META_F32 ? 4 : 2; }

/* Round a metadata value through its storage type. */
OKV_FN float okv_meta_round(float x, int meta_dtype)
{
    if (meta_dtype == OKV_FMT_META_F16) return okv_f16_to_f32(okv_f32_to_f16(x));
    if (meta_dtype == OKV_FMT_META_BF16) return okv_bf16_to_f32(okv_f32_to_bf16(x));
    return x;
}

/* 1 when x is finite and stays finite once stored in meta_dtype. */
OKV_FN int okv_meta_fits(float x, int meta_dtype)
{
    float r = okv_meta_round(x, meta_dtype);
    return (r - r) == 0.0f; /* false for inf and NaN */
}

/* ---- geometry ---- */
OKV_FN int okv_groups_per_row(int d, int g) { return d / g; }
OKV_FN int okv_row_code_bytes(int d) { return d / 4; }

OKV_FN unsigned long okv_align_up(unsigned long x, unsigned long a) { return (x + a - 1ul) / a * a; }

/* Bytes of one INT2 page (both K and V, all KV heads). */
OKV_FN unsigned long okv_int2_page_bytes(int hkv, int p, int d, int g, int meta_dtype)
{
    unsigned long codes = (unsigned long)hkv * (unsigned long)p * (unsigned long)(d / 4);
    unsigned long meta =
        (unsigned long)hkv * (unsigned long)p * (unsigned long)(d / g) * 2ul * (unsigned long)okv_meta_size(meta_dtype);
    return okv_align_up(2ul * codes + 2ul * meta, OKV_PAGE_ALIGN);
}

/* Byte offset, inside an INT2 page, of the codes of (kv: 0=K 1=V, head, slot). */
OKV_FN unsigned long okv_int2_codes_offset(int hkv, int p, int d, int kv, int head, int slot)
{
    unsigned long row =
        ((unsigned long)kv * (unsigned long)hkv + (unsigned long)head) * (unsigned long)p + (unsigned long)slot;
    return row * (unsigned long)(d / 4);
}

/* Byte offset, inside an INT2 page, of the metadata pair (scale, lo) of group 0. */
OKV_FN unsigned long okv_int2_meta_offset(int hkv, int p, int d, int g, int meta_dtype, int kv, int head, int slot)
{
    unsigned long codes_all = 2ul * (unsigned long)hkv * (unsigned long)p * (unsigned long)(d / 4);
    unsigned long row =
        ((unsigned long)kv * (unsigned long)hkv + (unsigned long)head) * (unsigned long)p + (unsigned long)slot;
    return codes_all + row * (unsigned long)(d / g) * 2ul * (unsigned long)okv_meta_size(meta_dtype);
}

/* Bytes of one BF16 page and the element offset of (kv, head, slot, channel 0). */
OKV_FN unsigned long okv_bf16_page_bytes(int hkv, int p, int d)
{
    return 2ul * (unsigned long)hkv * (unsigned long)p * (unsigned long)d * 2ul;
}
OKV_FN unsigned long okv_bf16_row_elem(int hkv, int p, int d, int kv, int head, int slot)
{
    return (((unsigned long)kv * (unsigned long)hkv + (unsigned long)head) * (unsigned long)p + (unsigned long)slot) *
           (unsigned long)d;
}

/* BF16-tier slot of logical position pos (sink or recent ring). */
OKV_FN int okv_bf16_slot(int pos, int s0, int w, int f) { return pos < s0 ? pos : s0 + (pos - s0) % (w + f); }
OKV_FN int okv_bf16_tier_slots(int s0, int w, int f) { return s0 + w + f; }

/* INT2-tier length after appending n_new tokens to a sequence of length seq_len whose
 * INT2 tier holds int2_len tokens: once the recent window would reach W + F rows, the
 * oldest rows are demoted so that exactly W stay (a decode step demotes F at once; a
 * long prefill sends everything but the sink and the last W tokens to INT2). */
OKV_FN int okv_int2_len_after(int seq_len, int int2_len, int n_new, int s0, int w, int f)
{
    int t = seq_len + n_new;
    if (t - s0 - int2_len >= w + f) return t - s0 - w;
    return int2_len;
}

/* ---- the quantizer on one row (private arrays; d <= OKV_FMT_MAX_HEAD_DIM) ---- */

/* 2-bit code of x on the grid lo + c*scale (scale already rounded to storage). */
OKV_FN int okv_code_uniform(float x, float lo, float inv_scale)
{
    float c = floor((x - lo) * inv_scale + 0.5f);
    c = c < 0.0f ? 0.0f : (c > 3.0f ? 3.0f : c);
    return (int)c;
}

/* Lloyd-Max code: thresholds mu + {-t, 0, +t} sigma. */
OKV_FN int okv_code_lloyd(float x, float mu, float sigma)
{
    float z = x - mu;
    float t = OKV_FMT_LM_THRESHOLD * sigma;
    return (z < -t) ? 0 : (z < 0.0f ? 1 : (z < t ? 2 : 3));
}

OKV_FN okv_u8 okv_pack4(int c0, int c1, int c2, int c3)
{
    return (okv_u8)((c0 & 3) | ((c1 & 3) << 2) | ((c2 & 3) << 4) | ((c3 & 3) << 6));
}

/* Code of channel c from a quartered-packed row. */
OKV_FN int okv_unpack_code(okv_u8 byte, int quarter) { return (byte >> (2 * quarter)) & 3; }

/* Clip threshold tau of a row: element floor(ratio*d) of |x| sorted ascending
 * (partial selection, O(d^2) worst case but d <= 256); ratio >= 1 means no clip. */
OKV_FN float okv_clip_tau_sort(const float *x, int d, float ratio)
{
    int k = (int)floor(ratio * (float)d);
    if (k >= d) return -1.0f;
    if (k < 0) k = 0;
    /* the k-th smallest |x|: count, for each candidate, elements strictly smaller and equal */
    for (int i = 0; i < d; ++i) {
        float a = fabs(x[i]);
        int lt = 0, le = 0;
        for (int j = 0; j < d; ++j) {
            float b = fabs(x[j]);
            lt += b < a;
            le += b <= a;
        }
        if (lt <= k && k < le) return a;
    }
    return -1.0f; /* unreachable for finite input */
}

/* Bisection variant: 7 halvings of [0, max|x|]; clips at most one element more. */
OKV_FN float okv_clip_tau_bisect(const float *x, int d, float ratio)
{
    int k = (int)floor(ratio * (float)d);
    if (k >= d) return -1.0f;
    if (k < 0) k = 0;
    float hi = 0.0f;
    for (int i = 0; i < d; ++i)
        hi = fmax(hi, fabs(x[i]));
    float lo = 0.0f;
    int allowed = d - k;
    for (int s = 0; s < OKV_FMT_BISECT_STEPS; ++s) {
        float mid = 0.5f * (lo + hi);
        int cnt = 0;
        for (int i = 0; i < d; ++i)
            cnt += fabs(x[i]) > mid;
        if (cnt > allowed)
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

OKV_FN float okv_clip_tau(const float *x, int d, float ratio, int clip_mode)
{
    return clip_mode == OKV_FMT_CLIP_BISECT ? okv_clip_tau_bisect(x, d, ratio) : okv_clip_tau_sort(x, d, ratio);
}

/* Clamp a row to [-tau, tau] in place; tau < 0 (ratio >= 1) leaves it untouched. */
OKV_FN void okv_clip_apply(float *x, int d, float tau)
{
    if (tau < 0.0f) return;
    for (int i = 0; i < d; ++i)
        x[i] = fmin(fmax(x[i], -tau), tau);
}

/* Metadata (scale, lo) of one group x[0..g) after clipping, rounded to storage.
 * Returns 0 when a value does not fit the metadata type. */
OKV_FN int okv_group_meta(const float *x, int g, int quantizer, int meta_dtype, float *scale_out, float *lo_out)
{
    float scale, lo;
    if (quantizer == OKV_FMT_QUANT_LLOYD_MAX) {
        float mu = 0.0f, var = 0.0f;
        for (int i = 0; i < g; ++i)
            mu += x[i];
        mu /= (float)g;
        for (int i = 0; i < g; ++i)
            var += (x[i] - mu) * (x[i] - mu);
        float sigma = sqrt(var / (float)g);
        scale = fmax(OKV_FMT_LM_SPACING * sigma, OKV_FMT_MIN_RANGE / 3.0f);
        lo = mu - 1.5f * scale;
    } else {
        float mn = x[0], mx = x[0];
        for (int i = 1; i < g; ++i) {
            mn = fmin(mn, x[i]);
            mx = fmax(mx, x[i]);
        }
        scale = fmax(mx - mn, OKV_FMT_MIN_RANGE) / 3.0f;
        lo = mn;
    }
    if (!okv_meta_fits(scale, meta_dtype) || !okv_meta_fits(lo, meta_dtype)) return 0;
    *scale_out = okv_meta_round(scale, meta_dtype);
    *lo_out = okv_meta_round(lo, meta_dtype);
    return 1;
}

/* Code of x in a group whose stored metadata is (scale, lo). For Lloyd-Max the
 * thresholds are derived from the stored grid: mu = lo + 1.5 scale,
 * sigma = scale / spacing, so decode needs nothing beyond (scale, lo). */
OKV_FN int okv_group_code(float x, float scale, float lo, int quantizer)
{
    if (quantizer == OKV_FMT_QUANT_LLOYD_MAX) {
        float mu = lo + 1.5f * scale;
        return okv_code_lloyd(x, mu, scale / OKV_FMT_LM_SPACING);
    }
    if (!(scale > 0.0f)) return 0; /* underflowed metadata: every value decodes to lo */
    return okv_code_uniform(x, lo, 1.0f / scale);
}

OKV_FN float okv_dequant(int code, float scale, float lo) { return lo + (float)code * scale; }

#endif /* OKV_FORMAT_H */
