/*
 * okv_kernels.cl - OpenCL C 1.2 kernels of the oscarkv OpenCL backend.
 *
 * The host prepends core/format/okv_format.h (verbatim) to this text and builds it
 * with -cl-std=CL1.2 and -D defines describing one cache geometry:
 *   OKV_D head_dim, OKV_GS group size, OKV_META metadata dtype, OKV_QUANT quantizer,
 *   OKV_CLIP clip mode, OKV_P page size, OKV_HKV KV heads, OKV_GQA query heads per KV
 *   head, OKV_S0 / OKV_W / OKV_F sink, recent window, flush interval, OKV_CH tokens per
 *   attention chunk (<= OKV_D), OKV_HAS_FP64 (device has cl_khr_fp64).
 * Generic OpenCL C 1.2 only: no sub-groups, no half arithmetic (fp16/bf16 are converted
 * with the shared format helpers, bit-identical to the C reference).
 *
 * Every buffer argument is a (__global uchar *base, ulong byte_offset) pair: the host
 * passes the caller's cl_mem and the okv_ref_t offset (no sub-buffers).
 */

#ifndef OKV_D
#define OKV_D 128
#endif
#ifndef OKV_GS
#define OKV_GS OKV_D
#endif
#ifndef OKV_META
#define OKV_META OKV_FMT_META_F16
#endif
#ifndef OKV_QUANT
#define OKV_QUANT OKV_FMT_QUANT_UNIFORM
#endif
#ifndef OKV_CLIP
#define OKV_CLIP OKV_FMT_CLIP_SORT
#endif
#ifndef OKV_P
#define OKV_P 16
#endif
#ifndef OKV_HKV
#define OKV_HKV 1
#endif
#ifndef OKV_GQA
#define OKV_GQA 1
#endif
#ifndef OKV_S0
#define OKV_S0 64
#endif
#ifndef OKV_W
#define OKV_W 256
#endif
#ifndef OKV_F
#define OKV_F 8
#endif
#ifndef OKV_CH
#define OKV_CH OKV_D
#endif
#ifndef OKV_HAS_FP64
#define OKV_HAS_FP64 0
#endif
/* Kernel group of this program (each op builds only what it launches): 0 rotate /
 * moments, 1 append / demote, 2 dequantize / attention; validation in every group. */
#ifndef OKV_GROUP
#define OKV_GROUP 0
#endif

#if OKV_HAS_FP64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif
/* Fast path: sub-group reductions (cl_intel_subgroups at OpenCL C 1.2, or
 * cl_khr_subgroups at OpenCL C 2.0); the host rebuilds without them on failure. */
#ifndef OKV_HAS_SUBGROUPS
#define OKV_HAS_SUBGROUPS 0
#endif
#if OKV_HAS_SUBGROUPS
#if defined(OKV_SG_KHR) && OKV_SG_KHR
#pragma OPENCL EXTENSION cl_khr_subgroups : enable
#else
#pragma OPENCL EXTENSION cl_intel_subgroups : enable
#endif
#endif

#define OKV_HQ (OKV_HKV * OKV_GQA)
#define OKV_NG (OKV_D / OKV_GS)
#define OKV_Q4 (OKV_D / 4)
#define OKV_MSZ (OKV_META == OKV_FMT_META_F32 ? 4 : 2)
#define OKV_I2_PAGE (okv_int2_page_bytes(OKV_HKV, OKV_P, OKV_D, OKV_GS, OKV_META))
#define OKV_BF_PAGE_ELEMS ((ulong)2 * (ulong)OKV_HKV * (ulong)OKV_P * (ulong)OKV_D)
/* distance from a K row to the V row of the same (head, slot) */
#define OKV_I2_VCODES ((ulong)OKV_HKV * (ulong)OKV_P * (ulong)OKV_Q4)
#define OKV_I2_VMETA ((ulong)OKV_HKV * (ulong)OKV_P * (ulong)OKV_NG * 2ul * (ulong)OKV_MSZ)
#define OKV_BF_VROW ((ulong)OKV_HKV * (ulong)OKV_P * (ulong)OKV_D)

/* error flags (host reads them back after ops that can fail on data) */
#define OKV_FLAG_META_OVERFLOW 1
#define OKV_FLAG_NONFINITE 2
#define OKV_FLAG_BAD_INDEX 4

#define OKV_G(b, o) ((b) + (o))
#define OKV_I32(b, o) ((__global const int *)((b) + (o)))

/* ------------------------------------------------------------ loads/stores -- */
OKV_FN float okv_ld(__global const uchar *p, ulong i, int dt)
{
    if (dt == 0) return ((__global const float *)p)[i];
    if (dt == 1) return okv_f16_to_f32(((__global const ushort *)p)[i]);
#if OKV_HAS_FP64
    if (dt == 3) return (float)((__global const double *)p)[i];
#endif
    return okv_bf16_to_f32(((__global const ushort *)p)[i]);
}

OKV_FN void okv_st(__global uchar *p, ulong i, int dt, float v)
{
    if (dt == 0)
        ((__global float *)p)[i] = v;
    else if (dt == 1)
        ((__global ushort *)p)[i] = okv_f32_to_f16(v);
#if OKV_HAS_FP64
    else if (dt == 3)
        ((__global double *)p)[i] = (double)v;
#endif
    else
        ((__global ushort *)p)[i] = okv_f32_to_bf16(v);
}

OKV_FN float okv_ld_meta(__global const uchar *p, int i)
{
#if OKV_META == OKV_FMT_META_F32
    return ((__global const float *)p)[i];
#elif OKV_META == OKV_FMT_META_BF16
    return okv_bf16_to_f32(((__global const ushort *)p)[i]);
#else
    return okv_f16_to_f32(((__global const ushort *)p)[i]);
#endif
}

OKV_FN void okv_st_meta(__global uchar *p, int i, float v)
{
#if OKV_META == OKV_FMT_META_F32
    ((__global float *)p)[i] = v;
#elif OKV_META == OKV_FMT_META_BF16
    ((__global ushort *)p)[i] = okv_f32_to_bf16(v);
#else
    ((__global ushort *)p)[i] = okv_f32_to_f16(v);
#endif
}

/* Sequence owning row r of a CSR indptr[batch + 1] (largest b with indptr[b] <= r). */
OKV_FN int okv_find_seq(__global const int *indptr, int batch, int r)
{
    int lo = 0, hi = batch;
    while (hi - lo > 1) {
        int mid = (lo + hi) >> 1;
        if (indptr[mid] <= r)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* ----------------------------------------------------------- cache access -- */
/* The cache view: 8 (buffer, offset) pairs, in this order everywhere. */
#define OKV_CACHE_ARGS                                                                                                 \
    __global const uchar *seql_b, ulong seql_o, __global const uchar *i2l_b, ulong i2l_o, __global const uchar *i2p_b, \
        ulong i2p_o, __global const uchar *i2x_b, ulong i2x_o, __global const uchar *bfp_b, ulong bfp_o,               \
        __global const uchar *bfx_b, ulong bfx_o, __global uchar *i2pool_b, ulong i2pool_o, __global uchar *bfpool_b,  \
        ulong bfpool_o
/* Same, with writable lengths (append, demote). */
#define OKV_CACHE_ARGS_RW                                                                                              \
    __global uchar *seql_b, ulong seql_o, __global uchar *i2l_b, ulong i2l_o, __global const uchar *i2p_b,             \
        ulong i2p_o, __global const uchar *i2x_b, ulong i2x_o, __global const uchar *bfp_b, ulong bfp_o,               \
        __global const uchar *bfx_b, ulong bfx_o, __global uchar *i2pool_b, ulong i2pool_o, __global uchar *bfpool_b,  \
        ulong bfpool_o

#define OKV_SEQ_LEN(b) (((__global const int *)(seql_b + seql_o))[b])
#define OKV_INT2_LEN(b) (((__global const int *)(i2l_b + i2l_o))[b])

/* Byte offset (inside the INT2 pool) of the page holding INT2 index i of sequence b. */
OKV_FN ulong okv_i2_page(__global const uchar *i2p_b, ulong i2p_o, __global const uchar *i2x_b, ulong i2x_o, int b,
                         int i)
{
    int first = OKV_I32(i2p_b, i2p_o)[b];
    int pg = OKV_I32(i2x_b, i2x_o)[first + i / OKV_P];
    return (ulong)pg * (ulong)OKV_I2_PAGE;
}

/* Element offset (inside the BF16 pool, as ushort) of the K row of position pos. */
OKV_FN ulong okv_bf_row(__global const uchar *bfp_b, ulong bfp_o, __global const uchar *bfx_b, ulong bfx_o, int b,
                        int pos, int head)
{
    int slot = okv_bf16_slot(pos, OKV_S0, OKV_W, OKV_F);
    int first = OKV_I32(bfp_b, bfp_o)[b];
    int pg = OKV_I32(bfx_b, bfx_o)[first + slot / OKV_P];
    return (ulong)pg * OKV_BF_PAGE_ELEMS + okv_bf16_row_elem(OKV_HKV, OKV_P, OKV_D, 0, head, slot % OKV_P);
}

/* Clip, quantize and pack one rotated row x (private, modified) into INT2 slot
 * (page_base, slot) for (kv, head). Returns 0, or an OKV_FLAG_* without writing. */
OKV_FN int okv_quant_store(float *x, float ratio, __global uchar *pool, ulong page_base, int kv, int head, int slot,
                           int commit)
{
    for (int c = 0; c < OKV_D; ++c)
        if (isinf(x[c]) || isnan(x[c])) return OKV_FLAG_NONFINITE;
    okv_clip_apply(x, OKV_D, okv_clip_tau(x, OKV_D, ratio, OKV_CLIP));
    float sc[OKV_NG], lo[OKV_NG];
    for (int g = 0; g < OKV_NG; ++g)
        if (!okv_group_meta(x + g * OKV_GS, OKV_GS, OKV_QUANT, OKV_META, &sc[g], &lo[g])) return OKV_FLAG_META_OVERFLOW;
    if (!commit) return 0;
    __global uchar *codes = pool + page_base + okv_int2_codes_offset(OKV_HKV, OKV_P, OKV_D, kv, head, slot);
    __global uchar *meta =
        pool + page_base + okv_int2_meta_offset(OKV_HKV, OKV_P, OKV_D, OKV_GS, OKV_META, kv, head, slot);
    for (int g = 0; g < OKV_NG; ++g) {
        okv_st_meta(meta, 2 * g, sc[g]);
        okv_st_meta(meta, 2 * g + 1, lo[g]);
    }
    for (int i = 0; i < OKV_Q4; ++i) {
        int c0 = okv_group_code(x[i], sc[i / OKV_GS], lo[i / OKV_GS], OKV_QUANT);
        int c1 = okv_group_code(x[i + OKV_Q4], sc[(i + OKV_Q4) / OKV_GS], lo[(i + OKV_Q4) / OKV_GS], OKV_QUANT);
        int c2 =
            okv_group_code(x[i + 2 * OKV_Q4], sc[(i + 2 * OKV_Q4) / OKV_GS], lo[(i + 2 * OKV_Q4) / OKV_GS], OKV_QUANT);
        int c3 =
            okv_group_code(x[i + 3 * OKV_Q4], sc[(i + 3 * OKV_Q4) / OKV_GS], lo[(i + 3 * OKV_Q4) / OKV_GS], OKV_QUANT);
        codes[i] = okv_pack4(c0, c1, c2, c3);
    }
    return 0;
}

/* Dequantized channel c of the INT2 row at (page_base, kv, head, slot). */
OKV_FN float okv_i2_value(__global const uchar *pool, ulong page_base, int kv, int head, int slot, int c)
{
    __global const uchar *codes = pool + page_base + okv_int2_codes_offset(OKV_HKV, OKV_P, OKV_D, kv, head, slot);
    __global const uchar *meta =
        pool + page_base + okv_int2_meta_offset(OKV_HKV, OKV_P, OKV_D, OKV_GS, OKV_META, kv, head, slot);
    int g = c / OKV_GS;
    int code = okv_unpack_code(codes[c % OKV_Q4], c / OKV_Q4);
    return okv_dequant(code, okv_ld_meta(meta, 2 * g), okv_ld_meta(meta, 2 * g + 1));
}

/* INT2 length of sequence b after this op: mode 0 = demote n (op demote), mode 1 =
 * append n_new rows (flush rule). */
OKV_FN int okv_target_int2(int mode, int t, int n2, int n)
{
    if (mode == 1) return okv_int2_len_after(t, n2, n, OKV_S0, OKV_W, OKV_F);
    int recent = t > OKV_S0 ? t - OKV_S0 - n2 : 0;
    if (recent < 0) recent = 0;
    return n2 + (n < recent ? n : recent);
}

/* ------------------------------------------------------------------ demote -- */
/* Grid (max_rows, HKV, batch * 2). Row k of sequence b (kv = gid2 & 1) is the k-th
 * oldest recent row: position S0 + int2_len + k, moved from the BF16 ring to INT2
 * when it lies below the new INT2 end (and, for append, below the old seq_len).
 * mode 0: n = rows to demote; mode 1: n rows are being appended (append_indptr). */
#if OKV_GROUP == 1
__kernel void okv_demote(OKV_CACHE_ARGS_RW, int batch, int mode, int n, __global const uchar *aip_b, ulong aip_o,
                         float k_ratio, float v_ratio, __global int *flags, int commit)
{
    int k = (int)get_global_id(0);
    int head = (int)get_global_id(1);
    int b = (int)get_global_id(2) >> 1;
    int kv = (int)get_global_id(2) & 1;
    if (b >= batch) return;
    int t = OKV_SEQ_LEN(b), n2 = OKV_INT2_LEN(b);
    int nn = mode == 1 ? OKV_I32(aip_b, aip_o)[b + 1] - OKV_I32(aip_b, aip_o)[b] : n;
    int n2new = okv_target_int2(mode, t, n2, nn);
    int pos = OKV_S0 + n2 + k;
    if (pos >= OKV_S0 + n2new || pos >= t) return;
    __global const ushort *bf = (__global const ushort *)(bfpool_b + bfpool_o);
    ulong row = okv_bf_row(bfp_b, bfp_o, bfx_b, bfx_o, b, pos, head) + (kv ? OKV_BF_VROW : 0ul);
    float x[OKV_D];
    for (int c = 0; c < OKV_D; ++c)
        x[c] = okv_bf16_to_f32(bf[row + c]);
    int i = pos - OKV_S0;
    ulong pb = okv_i2_page(i2p_b, i2p_o, i2x_b, i2x_o, b, i);
    int f = okv_quant_store(x, kv ? v_ratio : k_ratio, i2pool_b + i2pool_o, pb, kv, head, i % OKV_P, commit);
    if (f) atomic_or(flags, f);
}
#endif

/* Grid (batch): write the new lengths (after okv_demote / okv_append_rows ran). */
#if OKV_GROUP == 1
__kernel void okv_update_lens(OKV_CACHE_ARGS_RW, int batch, int mode, int n, __global const uchar *aip_b, ulong aip_o)
{
    int b = (int)get_global_id(0);
    if (b >= batch) return;
    __global int *sl = (__global int *)(seql_b + seql_o);
    __global int *il = (__global int *)(i2l_b + i2l_o);
    int t = sl[b], n2 = il[b];
    int nn = mode == 1 ? OKV_I32(aip_b, aip_o)[b + 1] - OKV_I32(aip_b, aip_o)[b] : n;
    il[b] = okv_target_int2(mode, t, n2, nn);
    if (mode == 1) sl[b] = t + nn;
}
#endif

/* ------------------------------------------------------------------ append -- */
/* Grid (n_rows, HKV, 2). Row r (sequence b, j-th new row) lands at position
 * seq_len + j: sink -> BF16, below the new INT2 end -> quantized into INT2, else the
 * BF16 recent ring. prerot: rows were already rotated into f32 (kr/vr [n, HKV, D]). */
#if OKV_GROUP == 1
__kernel void okv_append_rows(OKV_CACHE_ARGS_RW, int batch, __global const uchar *aip_b, ulong aip_o,
                              __global const uchar *k_b, ulong k_o, __global const uchar *v_b, ulong v_o, int kv_dt,
                              __global const uchar *rk_b, ulong rk_o, __global const uchar *rv_b, ulong rv_o,
                              int per_head, int prerot, float k_ratio, float v_ratio, __global int *flags, int commit,
                              __global float *keep_k, __global float *keep_v, int keep, __global const uchar *kb_b,
                              ulong kb_o, int has_kb)
{
    int r = (int)get_global_id(0);
    int head = (int)get_global_id(1);
    int kv = (int)get_global_id(2);
    __global const int *aip = OKV_I32(aip_b, aip_o);
    if (r >= aip[batch]) return;
    int b = okv_find_seq(aip, batch, r);
    int j = r - aip[b];
    int nn = aip[b + 1] - aip[b];
    int t = OKV_SEQ_LEN(b), n2 = OKV_INT2_LEN(b);
    int n2new = okv_int2_len_after(t, n2, nn, OKV_S0, OKV_W, OKV_F);
    int pos = t + j;
    ulong rowe = ((ulong)r * OKV_HKV + (ulong)head) * OKV_D;
    float x[OKV_D];
    if (prerot) {
        __global const float *src = (__global const float *)(kv ? v_b + v_o : k_b + k_o);
        for (int c = 0; c < OKV_D; ++c)
            x[c] = src[rowe + c];
    } else {
        __global const uchar *src = kv ? v_b + v_o : k_b + k_o;
        __global const float *R = (__global const float *)(kv ? rv_b + rv_o : rk_b + rk_o);
        if (per_head) R += (ulong)head * OKV_D * OKV_D;
        float in[OKV_D];
        for (int c = 0; c < OKV_D; ++c)
            in[c] = okv_ld(src, rowe + c, kv_dt);
        if (kv == 0 && has_kb) { /* key centering: (k - bias) R */
            __global const float *mu = (__global const float *)(kb_b + kb_o) + (per_head ? (ulong)head * OKV_D : 0ul);
            for (int c = 0; c < OKV_D; ++c)
                in[c] -= mu[c];
        }
        for (int c = 0; c < OKV_D; ++c) {
#if OKV_HAS_FP64
            /* double accumulation in the reference's order: the same rounded row */
            double acc = 0.0;
            for (int jj = 0; jj < OKV_D; ++jj)
                acc += (double)in[jj] * (double)R[jj * OKV_D + c];
            x[c] = (float)acc;
#else
            float acc = 0.0f;
            for (int jj = 0; jj < OKV_D; ++jj)
                acc = fma(in[jj], R[jj * OKV_D + c], acc);
            x[c] = acc;
#endif
        }
    }
    if (keep) { /* dry run: keep the rotated row for the commit pass */
        __global float *kp = kv ? keep_v : keep_k;
        for (int c = 0; c < OKV_D; ++c)
            kp[rowe + c] = x[c];
    }
    if (pos >= OKV_S0 && pos < OKV_S0 + n2new) {
        int i = pos - OKV_S0;
        ulong pb = okv_i2_page(i2p_b, i2p_o, i2x_b, i2x_o, b, i);
        int f = okv_quant_store(x, kv ? v_ratio : k_ratio, i2pool_b + i2pool_o, pb, kv, head, i % OKV_P, commit);
        if (f) atomic_or(flags, f);
    } else {
        for (int c = 0; c < OKV_D; ++c) {
            float r = okv_bf16_to_f32(okv_f32_to_bf16(x[c])); /* the rotated row must fit bf16 */
            if (isinf(r) || isnan(r)) {
                atomic_or(flags, OKV_FLAG_NONFINITE);
                return;
            }
        }
        if (!commit) return;
        __global ushort *bf = (__global ushort *)(bfpool_b + bfpool_o);
        ulong row = okv_bf_row(bfp_b, bfp_o, bfx_b, bfx_o, b, pos, head) + (kv ? OKV_BF_VROW : 0ul);
        for (int c = 0; c < OKV_D; ++c)
            bf[row + c] = okv_f32_to_bf16(x[c]);
    }
}
#endif

/* -------------------------------------------------------------- dequantize -- */
/* Grid (out_rows, HKV, 2): output row r -> (sequence, position). */
#if OKV_GROUP == 2
__kernel void okv_dequantize(OKV_CACHE_ARGS, int batch, __global const uchar *oip_b, ulong oip_o, int out_rows,
                             __global uchar *ko_b, ulong ko_o, __global uchar *vo_b, ulong vo_o, int out_dt)
{
    int r = (int)get_global_id(0);
    int head = (int)get_global_id(1);
    int kv = (int)get_global_id(2);
    if (r >= out_rows) return;
    __global const int *oip = OKV_I32(oip_b, oip_o);
    if (r < oip[0] || r >= oip[batch]) return;
    int b = okv_find_seq(oip, batch, r);
    int pos = r - oip[b];
    int t = OKV_SEQ_LEN(b), n2 = OKV_INT2_LEN(b);
    if (pos >= t) return;
    __global uchar *dst = kv ? vo_b + vo_o : ko_b + ko_o;
    ulong oe = ((ulong)r * OKV_HKV + (ulong)head) * OKV_D;
    if (pos >= OKV_S0 && pos < OKV_S0 + n2) {
        int i = pos - OKV_S0;
        ulong pb = okv_i2_page(i2p_b, i2p_o, i2x_b, i2x_o, b, i);
        __global const uchar *pool = i2pool_b + i2pool_o;
        for (int c = 0; c < OKV_D; ++c)
            okv_st(dst, oe + c, out_dt, okv_i2_value(pool, pb, kv, head, i % OKV_P, c));
    } else {
        __global const ushort *bf = (__global const ushort *)(bfpool_b + bfpool_o);
        ulong row = okv_bf_row(bfp_b, bfp_o, bfx_b, bfx_o, b, pos, head) + (kv ? OKV_BF_VROW : 0ul);
        for (int c = 0; c < OKV_D; ++c)
            okv_st(dst, oe + c, out_dt, okv_bf16_to_f32(bf[row + c]));
    }
}
#endif

/* --------------------------------------------------------------- attention -- */
/* Split-K attention of the OKV_GQA query heads of one KV head over one tier:
 *   tier 0: the BF16 tier (sink then recent, in position order)
 *   tier 1: the INT2 tier
 *   tier 2: the chunk's own new rows (prefill only; causal)
 * Grid (OKV_D * n_splits, HKV, n_rows), work-group (OKV_D). Each work-group writes
 * its unnormalised partial (acc[D], m, l) to ws[row][hq][split_base + group]. One
 * launch may hold two tiers: groups [0, ns_a) run tier_a with chunk_a, the rest
 * tier_b (>= 0) with chunk_b. Decode runs the BF16 and INT2 tiers in one launch: the
 * small BF16 tier no longer occupies the device alone (a few dozen work-groups for
 * the time of one chunk) before the INT2 launch starts, and one launch gap less. Rows:
 * row_mode 0 -> row = sequence (decode); row_mode 1 -> row is a prefill query row of
 * sequence find_seq(q_indptr, row).
 * Per chunk of OKV_CH tokens: (1) work item t scores token t for all GQA heads (q in
 * local memory, INT2 rows read as 16-byte words, no per-channel dequantisation when
 * the row is one group: s = lo * sum(q) + scale * sum(q * code)); (2) tree max and
 * exp in local memory (online softmax); (3) p V with work item (j, tg) owning the 4
 * channels of packed byte j (INT2) or 4 adjacent channels (BF16) for the tokens
 * t = tg mod 4, so every code byte is read once per work-group; (4) the 4 token groups
 * are summed through local memory at the end. */
#define OKV_NTG 4
#define OKV_PVU 8                /* BF16 p V: tokens per batch of loads */
#define OKV_CW (OKV_D / OKV_NTG) /* work items per token group = byte columns */
#define OKV_LM_Q 0
#define OKV_LM_QS (OKV_LM_Q + OKV_GQA * OKV_D)
#define OKV_LM_SC (OKV_LM_QS + 4 * ((OKV_GQA + 3) / 4))
#define OKV_LM_RED (OKV_LM_SC + OKV_GQA * OKV_CH)
#define OKV_LM_VM (OKV_LM_RED + OKV_GQA * OKV_CH)
#define OKV_LM_MAIN (OKV_LM_VM + 2 * OKV_NG * OKV_CH)
#define OKV_LM_FIN_ACC 0
#define OKV_LM_FIN_L (OKV_NTG * OKV_D)
#define OKV_LM_FIN_B (OKV_LM_FIN_L + OKV_NTG)
#define OKV_LM_FIN (OKV_LM_FIN_B + OKV_NTG)
#define OKV_LM_SIZE (OKV_LM_MAIN > OKV_LM_FIN ? OKV_LM_MAIN : OKV_LM_FIN)
#ifndef OKV_VEC
#define OKV_VEC 0
#endif

/* 2-bit code (0..3) -> float, exact: the code becomes the low mantissa bits of 2^23 and
 * 2^23 is subtracted. One LOP + one FADD on full-rate pipes instead of an int->float
 * conversion (a quarter/eighth-rate unit on NVIDIA GPUs: it bounded the INT2 path). */
#define OKV_C2F(x) (as_float((uint)(x) | 0x4B000000u) - 8388608.0f)

/* The OKV_GQA probabilities of one token (local, 16-byte aligned when OKV_GQA % 4 == 0:
 * one 128-bit load per 4 heads instead of 4 scalar loads). */
OKV_FN void okv_ld_p(__local const float *sc, float *p)
{
#if OKV_GQA % 4 == 0
    for (int i = 0; i < OKV_GQA; i += 4) {
        float4 v = *(__local const float4 *)(sc + i);
        p[i] = v.x;
        p[i + 1] = v.y;
        p[i + 2] = v.z;
        p[i + 3] = v.w;
    }
#else
    for (int i = 0; i < OKV_GQA; ++i)
        p[i] = sc[i];
#endif
}

OKV_FN float4 okv_bf16x4(uint2 w)
{
    return (float4)(as_float(w.x << 16), as_float(w.x & 0xffff0000u), as_float(w.y << 16), as_float(w.y & 0xffff0000u));
}

#if OKV_GROUP == 2
__kernel __attribute__((reqd_work_group_size(OKV_D, 1, 1))) void
okv_attn_split(OKV_CACHE_ARGS, int batch, __global const uchar *q_b, ulong q_o, int q_dt, int row_mode,
               __global const uchar *qip_b, ulong qip_o, __global const uchar *kn_b, ulong kn_o,
               __global const uchar *vn_b, ulong vn_o, int new_dt, float sm_scale, int tier_a, int chunk_a, int ns_a,
               int tier_b, int chunk_b, int split_base, int ns_total, __global uchar *ws_b, ulong ws_o)
{
    /* float4 storage: 16-byte alignment is then known to the compiler, so the q and
     * probability reads below are single 128-bit local loads (local-memory instruction
     * issue, not the FMAs, limits this kernel on NVIDIA) */
    __local float4 lm4[(OKV_LM_SIZE + 3) / 4];
    __local float *lm = (__local float *)lm4;
    __local ulong toff[OKV_CH];
    /* INT2 tier: the chunk's V code rows, staged in phase (1) together with the K rows.
     * Phase (3) then reads them from local memory; before, each p V step issued a
     * dependent global byte load (toff -> load -> FMAs), ~1 memory latency per token
     * per warp that nothing hid at low occupancy. */
    __local uint4 vst[OKV_CH * (OKV_Q4 / 16)];

    const int lid = (int)get_local_id(0);
    const int group = (int)get_group_id(0);
    const int in_b = tier_b >= 0 && group >= ns_a; /* uniform over the work-group */
    const int tier = in_b ? tier_b : tier_a;
    const int chunk = in_b ? chunk_b : chunk_a;
    const int split = in_b ? group - ns_a : group;
    const int nsplit = in_b ? (int)get_num_groups(0) - ns_a : ns_a;
    const int head = (int)get_global_id(1);
    const int row = (int)get_global_id(2);
    const int jb = lid % OKV_CW, tg = lid / OKV_CW;

    int b = row, jrow = 0;
    if (row_mode == 1) {
        __global const int *qip = OKV_I32(qip_b, qip_o);
        b = okv_find_seq(qip, batch, row);
        jrow = row - qip[b];
    }
    const int t = OKV_SEQ_LEN(b), n2 = OKV_INT2_LEN(b);
    const int nsink = t < OKV_S0 ? t : OKV_S0;
    int count;
    if (tier == 0)
        count = t - n2;
    else if (tier == 1)
        count = n2;
    else
        count = jrow + 1;
    if (count < 0) count = 0;
    const int start = split * chunk;
    int end = start + chunk;
    /* the last split runs to the end: a max_seq_len below the real length costs time, not tokens */
    if (end > count || split == nsplit - 1) end = count;

    /* q -> local; INT2 tier: permuted so that the 4 channels of packed byte j sit at 4j..4j+3 */
    for (int i = 0; i < OKV_GQA; ++i) {
        ulong qe = ((ulong)row * OKV_HQ + (ulong)(head * OKV_GQA + i)) * OKV_D + (ulong)lid;
        float qv = okv_ld(q_b + q_o, qe, q_dt);
        int dst = tier == 1 ? (lid % OKV_Q4) * 4 + lid / OKV_Q4 : lid;
        lm[OKV_LM_Q + i * OKV_D + dst] = qv;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
#if OKV_NG == 1
    if (tier == 1 && lid < OKV_GQA) {
        float qs = 0.0f;
        for (int c = 0; c < OKV_D; ++c)
            qs += lm[OKV_LM_Q + lid * OKV_D + c];
        lm[OKV_LM_QS + lid] = qs;
    }
#endif
    float m[OKV_GQA], l[OKV_GQA], bl[OKV_GQA], acc[OKV_GQA][4];
    for (int i = 0; i < OKV_GQA; ++i) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
        bl[i] = 0.0f;
        for (int k = 0; k < 4; ++k)
            acc[i][k] = 0.0f;
    }
    __global const uchar *i2pool = i2pool_b + i2pool_o;
    __global const ushort *bfpool = (__global const ushort *)(bfpool_b + bfpool_o);
    __local const float *qloc = lm + OKV_LM_Q;
    barrier(CLK_LOCAL_MEM_FENCE);

    for (int c0 = start; c0 < end; c0 += OKV_CH) {
        const int n_in = end - c0 < OKV_CH ? end - c0 : OKV_CH;
        /* ---- (1) scores: work item lid -> token c0 + lid ---- */
        if (lid < OKV_CH) {
            float s[OKV_GQA];
            for (int i = 0; i < OKV_GQA; ++i)
                s[i] = 0.0f;
            if (lid < n_in) {
                const int idx = c0 + lid;
                if (tier == 1) {
                    ulong pb = okv_i2_page(i2p_b, i2p_o, i2x_b, i2x_o, b, idx);
                    int slot = idx % OKV_P;
                    ulong kco = pb + okv_int2_codes_offset(OKV_HKV, OKV_P, OKV_D, 0, head, slot);
                    ulong kmo = pb + okv_int2_meta_offset(OKV_HKV, OKV_P, OKV_D, OKV_GS, OKV_META, 0, head, slot);
                    __global const uchar *kmeta = i2pool + kmo;
                    __global const uchar *vmeta = i2pool + kmo + OKV_I2_VMETA;
                    float msc[OKV_NG], mlo[OKV_NG];
                    for (int g = 0; g < OKV_NG; ++g) {
                        msc[g] = okv_ld_meta(kmeta, 2 * g);
                        mlo[g] = okv_ld_meta(kmeta, 2 * g + 1);
                        lm[OKV_LM_VM + (lid * OKV_NG + g) * 2] = okv_ld_meta(vmeta, 2 * g);
                        lm[OKV_LM_VM + (lid * OKV_NG + g) * 2 + 1] = okv_ld_meta(vmeta, 2 * g + 1);
                    }
                    __global const uchar *kc = i2pool + kco;
                    __global const uchar *vc = kc + OKV_I2_VCODES;
                    /* issue the K and V code loads together, then stage V (used in phase 3) */
                    uint4 kw[OKV_Q4 / 16], vw[OKV_Q4 / 16];
                    for (int w = 0; w < OKV_Q4 / 16; ++w) {
#if OKV_VEC
                        kw[w] = ((__global const uint4 *)kc)[w];
                        vw[w] = ((__global const uint4 *)vc)[w];
#else
                        kw[w] = as_uint4(vload16(w, kc));
                        vw[w] = as_uint4(vload16(w, vc));
#endif
                    }
                    for (int w = 0; w < OKV_Q4 / 16; ++w)
                        vst[lid * (OKV_Q4 / 16) + w] = vw[w];
                    for (int w = 0; w < OKV_Q4 / 16; ++w) {
                        uint4 u = kw[w];
                        uint words[4] = {u.x, u.y, u.z, u.w};
                        for (int wi = 0; wi < 4; ++wi) {
                            uint word = words[wi];
                            for (int bi = 0; bi < 4; ++bi) {
                                const int j = w * 16 + wi * 4 + bi;
                                uint byte = (word >> (8 * bi)) & 0xffu;
#if OKV_NG == 1
                                float4 cv = (float4)(OKV_C2F(byte & 3u), OKV_C2F((byte >> 2) & 3u),
                                                     OKV_C2F((byte >> 4) & 3u), OKV_C2F(byte >> 6));
#else
                                float4 cv =
                                    (float4)(okv_dequant((int)(byte & 3u), msc[j / OKV_GS], mlo[j / OKV_GS]),
                                             okv_dequant((int)((byte >> 2) & 3u), msc[(j + OKV_Q4) / OKV_GS],
                                                         mlo[(j + OKV_Q4) / OKV_GS]),
                                             okv_dequant((int)((byte >> 4) & 3u), msc[(j + 2 * OKV_Q4) / OKV_GS],
                                                         mlo[(j + 2 * OKV_Q4) / OKV_GS]),
                                             okv_dequant((int)(byte >> 6), msc[(j + 3 * OKV_Q4) / OKV_GS],
                                                         mlo[(j + 3 * OKV_Q4) / OKV_GS]));
#endif
                                for (int i = 0; i < OKV_GQA; ++i) {
                                    float4 qv = ((__local const float4 *)(qloc + i * OKV_D))[j];
                                    s[i] = fma(qv.x, cv.x, s[i]);
                                    s[i] = fma(qv.y, cv.y, s[i]);
                                    s[i] = fma(qv.z, cv.z, s[i]);
                                    s[i] = fma(qv.w, cv.w, s[i]);
                                }
                            }
                        }
                    }
#if OKV_NG == 1
                    for (int i = 0; i < OKV_GQA; ++i)
                        s[i] = fma(mlo[0], lm[OKV_LM_QS + i], msc[0] * s[i]);
#endif
                } else if (tier == 0) {
                    int pos = idx < nsink ? idx : OKV_S0 + n2 + (idx - nsink);
                    ulong re = okv_bf_row(bfp_b, bfp_o, bfx_b, bfx_o, b, pos, head);
                    toff[lid] = re + OKV_BF_VROW;
                    __global const ushort *kr = bfpool + re;
                    for (int w = 0; w < OKV_D / 8; ++w) {
#if OKV_VEC
                        uint4 u = ((__global const uint4 *)kr)[w];
#else
                        uint4 u = as_uint4(vload8(w, kr));
#endif
                        float4 k0 = okv_bf16x4(u.xy), k1 = okv_bf16x4(u.zw);
                        for (int i = 0; i < OKV_GQA; ++i) {
                            __local const float4 *q4 = (__local const float4 *)(qloc + i * OKV_D);
                            float4 qa = q4[2 * w], qb = q4[2 * w + 1];
                            s[i] = fma(qa.x, k0.x, s[i]);
                            s[i] = fma(qa.y, k0.y, s[i]);
                            s[i] = fma(qa.z, k0.z, s[i]);
                            s[i] = fma(qa.w, k0.w, s[i]);
                            s[i] = fma(qb.x, k1.x, s[i]);
                            s[i] = fma(qb.y, k1.y, s[i]);
                            s[i] = fma(qb.z, k1.z, s[i]);
                            s[i] = fma(qb.w, k1.w, s[i]);
                        }
                    }
                } else {
                    __global const int *qip = OKV_I32(qip_b, qip_o);
                    ulong re = ((ulong)(qip[b] + idx) * OKV_HKV + (ulong)head) * OKV_D;
                    toff[lid] = re;
                    for (int c = 0; c < OKV_D; ++c) {
                        float kval = okv_ld(kn_b + kn_o, re + (ulong)c, new_dt);
                        for (int i = 0; i < OKV_GQA; ++i)
                            s[i] = fma(qloc[i * OKV_D + c], kval, s[i]);
                    }
                }
                for (int i = 0; i < OKV_GQA; ++i) {
                    float v = s[i] * sm_scale;
                    lm[OKV_LM_SC + lid * OKV_GQA + i] = v;
                    lm[OKV_LM_RED + i * OKV_CH + lid] = v;
                }
            } else {
                for (int i = 0; i < OKV_GQA; ++i) {
                    lm[OKV_LM_SC + lid * OKV_GQA + i] = -INFINITY;
                    lm[OKV_LM_RED + i * OKV_CH + lid] = -INFINITY;
                }
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        /* ---- (2) chunk maxima, online-softmax rescale, p = exp(s - m) ---- */
#if OKV_HAS_SUBGROUPS
        {
            const int sgid = (int)get_sub_group_id(), nsg = (int)get_num_sub_groups();
            for (int i = 0; i < OKV_GQA; ++i) {
                float v = lid < OKV_CH ? lm[OKV_LM_SC + lid * OKV_GQA + i] : -INFINITY;
                float r = sub_group_reduce_max(v);
                if (get_sub_group_local_id() == 0) lm[OKV_LM_RED + i * OKV_CH + sgid] = r;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            for (int i = 0; i < OKV_GQA; ++i) {
                float r = -INFINITY;
                for (int k = 0; k < nsg; ++k)
                    r = fmax(r, lm[OKV_LM_RED + i * OKV_CH + k]);
                /* slot 0 of the row holds the chunk max, read below like the tree result */
                if (lid == 0) lm[OKV_LM_RED + i * OKV_CH] = r;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
#else
        for (int stride = OKV_CH / 2; stride > 0; stride >>= 1) {
            if (lid < stride)
                for (int i = 0; i < OKV_GQA; ++i)
                    lm[OKV_LM_RED + i * OKV_CH + lid] =
                        fmax(lm[OKV_LM_RED + i * OKV_CH + lid], lm[OKV_LM_RED + i * OKV_CH + lid + stride]);
            barrier(CLK_LOCAL_MEM_FENCE);
        }
#endif
        float alpha[OKV_GQA];
        for (int i = 0; i < OKV_GQA; ++i) {
            float mn = fmax(m[i], lm[OKV_LM_RED + i * OKV_CH]);
            alpha[i] = mn == -INFINITY ? 1.0f : exp(m[i] - mn);
            m[i] = mn;
        }
        if (lid < n_in)
            for (int i = 0; i < OKV_GQA; ++i) {
                float sv = lm[OKV_LM_SC + lid * OKV_GQA + i];
                lm[OKV_LM_SC + lid * OKV_GQA + i] = m[i] == -INFINITY ? 0.0f : exp(sv - m[i]);
            }
        barrier(CLK_LOCAL_MEM_FENCE);
        /* ---- (3) p V: work item (jb, tg) -> 4 channels, tokens tg, tg + 4, ... ---- */
        for (int i = 0; i < OKV_GQA; ++i) {
            l[i] *= alpha[i];
            bl[i] *= alpha[i];
            for (int k = 0; k < 4; ++k)
                acc[i][k] *= alpha[i];
        }
        if (tier == 0) {
            /* BF16 V rows come from global memory: batches of OKV_PVU tokens with every
             * load issued before the FMAs, so a warp has OKV_PVU rows in flight instead of
             * one memory latency per token (same per-channel operations and order). */
            for (int t0 = tg; t0 < n_in; t0 += OKV_NTG * OKV_PVU) {
                uint2 w2[OKV_PVU];
                for (int u = 0; u < OKV_PVU; ++u) {
                    const int tt = t0 + u * OKV_NTG;
                    w2[u] = (uint2)(0u, 0u);
                    if (tt < n_in)
#if OKV_VEC
                        w2[u] = ((__global const uint2 *)(bfpool + toff[tt]))[jb];
#else
                        w2[u] = as_uint2(vload4(jb, bfpool + toff[tt]));
#endif
                }
                for (int u = 0; u < OKV_PVU; ++u) {
                    const int tt = t0 + u * OKV_NTG;
                    if (tt >= n_in) break;
                    float4 vv = okv_bf16x4(w2[u]);
                    float p[OKV_GQA];
                    okv_ld_p(lm + OKV_LM_SC + tt * OKV_GQA, p);
                    for (int i = 0; i < OKV_GQA; ++i) {
                        l[i] += p[i];
                        acc[i][0] = fma(p[i], vv.x, acc[i][0]);
                        acc[i][1] = fma(p[i], vv.y, acc[i][1]);
                        acc[i][2] = fma(p[i], vv.z, acc[i][2]);
                        acc[i][3] = fma(p[i], vv.w, acc[i][3]);
                    }
                }
            }
        }
        for (int tt = tier == 0 ? n_in : tg; tt < n_in; tt += OKV_NTG) {
            float p[OKV_GQA];
            okv_ld_p(lm + OKV_LM_SC + tt * OKV_GQA, p);
            for (int i = 0; i < OKV_GQA; ++i)
                l[i] += p[i];
            float4 vv;
            if (tier == 1) {
                uint byte = ((__local const uchar *)vst)[tt * OKV_Q4 + jb];
#if OKV_NG == 1
                float2 vm2 = ((__local const float2 *)(lm + OKV_LM_VM))[tt]; /* (scale, lo) */
                float vs = vm2.x, vl = vm2.y;
                vv = (float4)(OKV_C2F(byte & 3u), OKV_C2F((byte >> 2) & 3u), OKV_C2F((byte >> 4) & 3u),
                              OKV_C2F(byte >> 6));
                for (int i = 0; i < OKV_GQA; ++i) {
                    bl[i] = fma(p[i], vl, bl[i]);
                    p[i] *= vs;
                }
#else
                __local const float *vm = lm + OKV_LM_VM + tt * OKV_NG * 2;
                vv = (float4)(okv_dequant((int)(byte & 3u), vm[2 * (jb / OKV_GS)], vm[2 * (jb / OKV_GS) + 1]),
                              okv_dequant((int)((byte >> 2) & 3u), vm[2 * ((jb + OKV_Q4) / OKV_GS)],
                                          vm[2 * ((jb + OKV_Q4) / OKV_GS) + 1]),
                              okv_dequant((int)((byte >> 4) & 3u), vm[2 * ((jb + 2 * OKV_Q4) / OKV_GS)],
                                          vm[2 * ((jb + 2 * OKV_Q4) / OKV_GS) + 1]),
                              okv_dequant((int)(byte >> 6), vm[2 * ((jb + 3 * OKV_Q4) / OKV_GS)],
                                          vm[2 * ((jb + 3 * OKV_Q4) / OKV_GS) + 1]));
#endif
            } else {
                __global const uchar *vr = vn_b + vn_o;
                ulong e = toff[tt] + (ulong)(4 * jb);
                vv = (float4)(okv_ld(vr, e, new_dt), okv_ld(vr, e + 1, new_dt), okv_ld(vr, e + 2, new_dt),
                              okv_ld(vr, e + 3, new_dt));
            }
            for (int i = 0; i < OKV_GQA; ++i) {
                acc[i][0] = fma(p[i], vv.x, acc[i][0]);
                acc[i][1] = fma(p[i], vv.y, acc[i][1]);
                acc[i][2] = fma(p[i], vv.z, acc[i][2]);
                acc[i][3] = fma(p[i], vv.w, acc[i][3]);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    /* ---- (4) sum the 4 token groups (one head at a time through local memory), write ---- */
    __global float *ws = (__global float *)(ws_b + ws_o);
    for (int i = 0; i < OKV_GQA; ++i) {
        for (int k = 0; k < 4; ++k) {
            int c = tier == 1 ? k * OKV_Q4 + jb : 4 * jb + k;
            lm[OKV_LM_FIN_ACC + tg * OKV_D + c] = acc[i][k];
        }
        if (jb == 0) {
            lm[OKV_LM_FIN_L + tg] = l[i];
            lm[OKV_LM_FIN_B + tg] = bl[i];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        float a = 0.0f, lt = 0.0f, bt = 0.0f;
        for (int g = 0; g < OKV_NTG; ++g) {
            a += lm[OKV_LM_FIN_ACC + g * OKV_D + lid];
            lt += lm[OKV_LM_FIN_L + g];
            bt += lm[OKV_LM_FIN_B + g];
        }
        ulong base =
            (((ulong)row * OKV_HQ + (ulong)(head * OKV_GQA + i)) * (ulong)ns_total + (ulong)(split_base + group)) *
            (ulong)(OKV_D + 2);
        ws[base + lid] = a + bt;
        if (lid == 0) {
            ws[base + OKV_D] = m[i];
            ws[base + OKV_D + 1] = lt;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}
#endif

/* Grid (OKV_D, HQ, n_rows), work-group (OKV_D): exact log-sum-exp merge of the
 * ns_total partials of (row, hq); optional un-rotation o R_V^T and lse.
 * The global max M is a strided max plus a tree in local memory; the split weights
 * exp(m_s - M) are computed once per split (one work item each, blocks of OKV_D
 * splits) into local memory; every work item then sums its channel over the splits
 * in split order (the same operations as a plain serial loop, so the same bits),
 * OKV_MGU splits per step with all their loads issued first. Before, each work item walked
 * the splits twice, one dependent global load (+ exp) at a time: a fixed 10-80 us at
 * batch 1, growing with the split count. */
#define OKV_MGU 16 /* merge: splits per step (loads in flight per work item) */
#if OKV_GROUP == 2
__kernel __attribute__((reqd_work_group_size(OKV_D, 1, 1))) void
okv_attn_merge(__global const uchar *ws_b, ulong ws_o, int ns_total, __global uchar *o_b, ulong o_o, int o_dt,
               __global uchar *lse_b, ulong lse_o, int has_lse, __global const uchar *rv_b, ulong rv_o, int per_head,
               int unrotate)
{
    __local float ol[OKV_D];
    __local float wl[OKV_D]; /* weights of one block of splits; -INFINITY marks an empty split */
    const int lid = (int)get_local_id(0);
    const int hq = (int)get_global_id(1);
    const int row = (int)get_global_id(2);
    __global const float *ws = (__global const float *)(ws_b + ws_o);
    const ulong RS = OKV_D + 2; /* floats per partial */
    ulong base = ((ulong)row * OKV_HQ + (ulong)hq) * (ulong)ns_total * RS;
    float mx = -INFINITY;
    for (int s = lid; s < ns_total; s += OKV_D)
        mx = fmax(mx, ws[base + (ulong)s * RS + OKV_D]);
    ol[lid] = mx;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int stride = OKV_D / 2; stride > 0; stride >>= 1) {
        if (lid < stride) ol[lid] = fmax(ol[lid], ol[lid + stride]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float M = ol[0];
    barrier(CLK_LOCAL_MEM_FENCE); /* ol is reused by the un-rotation */
    float L = 0.0f, o = 0.0f;
    if (M != -INFINITY) { /* uniform over the work-group */
        for (int s0 = 0; s0 < ns_total; s0 += OKV_D) {
            const int nb = ns_total - s0 < OKV_D ? ns_total - s0 : OKV_D;
            if (lid < nb) {
                float ms = ws[base + (ulong)(s0 + lid) * RS + OKV_D];
                wl[lid] = ms == -INFINITY ? -INFINITY : exp(ms - M);
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            __global const float *pp = ws + base + (ulong)s0 * RS;
            int k = 0;
            for (; k + OKV_MGU <= nb; k += OKV_MGU) {
                float a[OKV_MGU], lv[OKV_MGU];
                for (int u = 0; u < OKV_MGU; ++u) {
                    a[u] = pp[(ulong)(k + u) * RS + (ulong)lid];
                    lv[u] = pp[(ulong)(k + u) * RS + OKV_D + 1];
                }
                for (int u = 0; u < OKV_MGU; ++u) {
                    float w = wl[k + u];
                    if (w != -INFINITY) {
                        L = fma(lv[u], w, L);
                        o = fma(a[u], w, o);
                    }
                }
            }
            for (; k < nb; ++k) {
                float w = wl[k];
                if (w != -INFINITY) {
                    L = fma(pp[(ulong)k * RS + OKV_D + 1], w, L);
                    o = fma(pp[(ulong)k * RS + (ulong)lid], w, o);
                }
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }
    o = L > 0.0f ? o / L : 0.0f;
    ulong oe = ((ulong)row * OKV_HQ + (ulong)hq) * OKV_D + (ulong)lid;
    if (unrotate) {
        ol[lid] = o;
        barrier(CLK_LOCAL_MEM_FENCE);
        __global const float *R = (__global const float *)(rv_b + rv_o);
        if (per_head) R += (ulong)(hq / OKV_GQA) * OKV_D * OKV_D;
        float u = 0.0f;
        for (int j = 0; j < OKV_D; ++j)
            u = fma(ol[j], R[(ulong)lid * OKV_D + j], u);
        o = u;
    }
    okv_st(o_b + o_o, oe, o_dt, o);
    if (has_lse && lid == 0) {
        __global float *lse = (__global float *)(lse_b + lse_o);
        lse[(ulong)row * OKV_HQ + hq] = L > 0.0f ? M + log(L) : -INFINITY;
    }
}
#endif

/* ------------------------------------------------------------------ rotate -- */
/* Grid (OKV_D, n_rows * n_heads), work-group (OKV_D): out = x R (or x R^T). Each
 * work-group reads its row into local memory first, so out may alias x. */
#if OKV_GROUP == 0
__kernel __attribute__((reqd_work_group_size(OKV_D, 1, 1))) void
okv_rotate(__global const uchar *x_b, ulong x_o, int x_dt, __global uchar *o_b, ulong o_o, int o_dt,
           __global const uchar *r_b, ulong r_o, int n_heads, int per_head, int head_group, int transpose,
           __global const uchar *bias_b, ulong bias_o, int has_bias)
{
    __local float xl[OKV_D];
    const int c = (int)get_local_id(0);
    const ulong rh = get_global_id(1);
    const int h = (int)(rh % (ulong)n_heads);
    float xv = okv_ld(x_b + x_o, rh * OKV_D + (ulong)c, x_dt);
    if (has_bias) /* out = (x - bias) R */
        xv -=
            ((__global const float *)(bias_b + bias_o))[(per_head ? (ulong)(h / head_group) * OKV_D : 0ul) + (ulong)c];
    xl[c] = xv;
    barrier(CLK_LOCAL_MEM_FENCE);
    __global const float *R = (__global const float *)(r_b + r_o);
    if (per_head) R += (ulong)(h / head_group) * OKV_D * OKV_D;
#if OKV_HAS_FP64
    double s = 0.0;
    if (transpose)
        for (int j = 0; j < OKV_D; ++j)
            s += (double)xl[j] * (double)R[(ulong)c * OKV_D + j];
    else
        for (int j = 0; j < OKV_D; ++j)
            s += (double)xl[j] * (double)R[(ulong)j * OKV_D + c];
#else
    float s = 0.0f;
    if (transpose)
        for (int j = 0; j < OKV_D; ++j)
            s = fma(xl[j], R[(ulong)c * OKV_D + j], s);
    else
        for (int j = 0; j < OKV_D; ++j)
            s = fma(xl[j], R[(ulong)j * OKV_D + c], s);
#endif
    okv_st(o_b + o_o, rh * OKV_D + (ulong)c, o_dt, (float)s);
}
#endif

/* Grid (n): element-wise dtype conversion; with w (has_w), row t = i / row_elems of
 * head (i / D) % n_heads is scaled by w[t * n_heads + head]. */
#if OKV_GROUP != 2
__kernel void okv_convert(__global const uchar *x_b, ulong x_o, int x_dt, __global uchar *o_b, ulong o_o, int o_dt,
                          ulong n, __global const uchar *w_b, ulong w_o, int has_w)
{
    ulong i = get_global_id(0);
    if (i >= n) return;
    float v = okv_ld(x_b + x_o, i, x_dt);
    if (has_w) v *= ((__global const float *)(w_b + w_o))[i / OKV_D];
    okv_st(o_b + o_o, i, o_dt, v);
}
#endif

/* ----------------------------------------------------------------- moments -- */
/* Grid (OKV_D, OKV_D, n_heads / head_group): acc[a][i][j] += sum over rows t and the
 * head_group heads h of a of w[t, h] x[t, h, i] x[t, h, j]; f64 accumulation where
 * the device has it (acc_dt 3), else f32. */
#if OKV_GROUP == 0
__kernel void okv_moments(__global const uchar *x_b, ulong x_o, int x_dt, __global const uchar *w_b, ulong w_o,
                          int has_w, __global uchar *a_b, ulong a_o, int acc_dt, int n_rows, int n_heads,
                          int head_group)
{
    const int i = (int)get_global_id(0);
    const int j = (int)get_global_id(1);
    const int a = (int)get_global_id(2);
    __global const uchar *x = x_b + x_o;
    __global const float *w = (__global const float *)(w_b + w_o);
    ulong ae = ((ulong)a * OKV_D + (ulong)i) * OKV_D + (ulong)j;
#if OKV_HAS_FP64
    if (acc_dt == 3) {
        double s = 0.0;
        for (int t = 0; t < n_rows; ++t)
            for (int hh = 0; hh < head_group; ++hh) {
                int h = a * head_group + hh;
                ulong re = ((ulong)t * (ulong)n_heads + (ulong)h) * OKV_D;
                double xi = (double)okv_ld(x, re + (ulong)i, x_dt);
                double xj = (double)okv_ld(x, re + (ulong)j, x_dt);
                double ww = has_w ? (double)w[(ulong)t * (ulong)n_heads + (ulong)h] : 1.0;
                s += ww * xi * xj;
            }
        ((__global double *)(a_b + a_o))[ae] += s;
        return;
    }
#endif
    float s = 0.0f;
    for (int t = 0; t < n_rows; ++t)
        for (int hh = 0; hh < head_group; ++hh) {
            int h = a * head_group + hh;
            ulong re = ((ulong)t * (ulong)n_heads + (ulong)h) * OKV_D;
            float xi = okv_ld(x, re + (ulong)i, x_dt);
            float xj = okv_ld(x, re + (ulong)j, x_dt);
            float ww = has_w ? w[(ulong)t * (ulong)n_heads + (ulong)h] : 1.0f;
            s = fma(ww * xi, xj, s);
        }
    ((__global float *)(a_b + a_o))[ae] += s;
}
#endif

/* -------------------------------------------------------------- validation -- */
/* Grid (batch): the page-table and length checks of the reference
 * (okv_ref_cache_validate) on device data; sets OKV_FLAG_BAD_INDEX. need_mode: 0 =
 * INT2 pages for the current int2_len, 1 = after appending (aip), 2 = after demoting
 * n rows. row_mode: 0 none, 1 = q/append indptr (rip) must end at n_rows, 2 =
 * out_indptr (rip) must give seq_len rows per sequence and end <= n_rows. */
__kernel void okv_validate(OKV_CACHE_ARGS, int batch, ulong i2_cap, ulong bf_cap, int i2_pages, int bf_pages,
                           int need_mode, int n, __global const uchar *aip_b, ulong aip_o, int row_mode,
                           __global const uchar *rip_b, ulong rip_o, int n_rows, __global int *flags)
{
    int b = (int)get_global_id(0);
    if (b >= batch) return;
    __global const int *i2p = OKV_I32(i2p_b, i2p_o), *i2x = OKV_I32(i2x_b, i2x_o);
    __global const int *bfp = OKV_I32(bfp_b, bfp_o), *bfx = OKV_I32(bfx_b, bfx_o);
    int bad = 0;
    if (i2p[0] < 0 || bfp[0] < 0) bad = 1;
    if (i2p[b + 1] < i2p[b] || bfp[b + 1] < bfp[b]) bad = 1;
    if ((ulong)(long)i2p[b + 1] > i2_cap || (ulong)(long)bfp[b + 1] > bf_cap) bad = 1;
    if (!bad) {
        for (int j = i2p[b]; j < i2p[b + 1]; ++j)
            if (i2x[j] < 0 || i2x[j] >= i2_pages) bad = 1;
        for (int j = bfp[b]; j < bfp[b + 1]; ++j)
            if (bfx[j] < 0 || bfx[j] >= bf_pages) bad = 1;
    }
    int t = OKV_SEQ_LEN(b), n2 = OKV_INT2_LEN(b);
    int max_i2 = t > OKV_S0 ? t - OKV_S0 : 0;
    if (t < 0 || n2 < 0 || n2 > max_i2) bad = 1;
    if (t > OKV_S0 && t - OKV_S0 - n2 > OKV_W + OKV_F - 1) bad = 1;
    int bf_need = (OKV_S0 + OKV_W + OKV_F + OKV_P - 1) / OKV_P;
    if (bfp[b + 1] - bfp[b] < bf_need) bad = 1;
    int need = n2;
    if (!bad && need_mode == 1) {
        __global const int *aip = OKV_I32(aip_b, aip_o);
        int nn = aip[b + 1] - aip[b];
        if (aip[0] < 0 || nn < 0 || (long)t + (long)nn > 2147483647L)
            bad = 1;
        else
            need = okv_int2_len_after(t, n2, nn, OKV_S0, OKV_W, OKV_F);
    } else if (!bad && need_mode == 2) {
        need = okv_target_int2(0, t, n2, n);
    }
    if (!bad && (long)(i2p[b + 1] - i2p[b]) * OKV_P < (long)need) bad = 1;
    if (row_mode) {
        __global const int *rip = OKV_I32(rip_b, rip_o);
        if (rip[0] < 0 || rip[b + 1] < rip[b]) bad = 1;
        if (row_mode == 1 && b == batch - 1 && rip[batch] != n_rows) bad = 1;
        if (row_mode == 2 && ((long)rip[b + 1] - (long)rip[b] < (long)t || rip[batch] > n_rows)) bad = 1;
    }
    if (bad) atomic_or(flags, OKV_FLAG_BAD_INDEX);
}

/* Grid (>= n): flags OKV_FLAG_NONFINITE when an element is NaN or Inf. */
__kernel void okv_check_finite(__global const uchar *x_b, ulong x_o, int x_dt, ulong n, __global int *flags)
{
    ulong i = get_global_id(0);
    if (i >= n) return;
    float v = okv_ld(x_b + x_o, i, x_dt);
    if (isinf(v) || isnan(v)) atomic_or(flags, OKV_FLAG_NONFINITE);
}
