/*
 * ref_ops.h - the scalar C reference of every oscarkv operation (SPEC section 5).
 *
 * Pure host functions on raw pointers: the oracle every GPU backend is checked
 * against, and the body of the "ref" backend (ref_backend.c). Semantics are those
 * of the comments in include/oscarkv/oscarkv.h; the row format, quantizer and page
 * geometry come from core/format/okv_format.h (nothing here re-implements them).
 *
 * Accuracy: dot products, rotations, softmax and moments accumulate in double.
 * Errors: every function returns an okv_status_t and, on failure, writes a one-line
 * detail into err (may be NULL). A failing call writes nothing: data-dependent
 * checks (page tables, NaN/Inf inputs, metadata overflow) all run before the first
 * store. Functions never write outside the sizes they are given.
 */
#ifndef OKV_REF_OPS_H
#define OKV_REF_OPS_H

#include "backend_iface.h"
#include "okv_format.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ utilities -- */

/* printf-style detail into err (NULL: ignored); returns status. */
okv_status_t okv_ref_fail(okv_err_t *err, okv_status_t status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Element i of a f32/f16/bf16 array (unaligned access is fine). */
float okv_ref_load(const void *base, okv_dtype_t dtype, size_t i);
/* Store v into element i of a f32/f16/bf16 array (round to nearest even). */
void okv_ref_store(void *base, okv_dtype_t dtype, size_t i, float v);
/* Index of the first NaN/Inf among n elements, or -1 when all are finite. */
int64_t okv_ref_find_nonfinite(const void *base, okv_dtype_t dtype, size_t n);
/* Name of a float dtype for messages ("f32", "f16", "bf16", "f64"). */
const char *okv_ref_dtype_name(okv_dtype_t dtype);

/* Log-sum-exp merge of attention states. A state is (lse, o) with o the softmax-
 * normalised output of its keys; the empty state is (-inf, 0). Merges (lse_b, o_b)
 * into (lse_a, o_a) in place: lse = log(e^lse_a + e^lse_b),
 * o = e^(lse_a - lse) o_a + e^(lse_b - lse) o_b. */
void okv_ref_merge_state(double *lse_a, double *o_a, double lse_b, const double *o_b, int d);

/* --------------------------------------------------------------- rotate -- */

/* out[j] = sum_i x[i] R[i][j] (x R), or sum_i x[i] R[j][i] (x R^T) when transpose;
 * double accumulation. x and out may alias. */
void okv_ref_rotate_row(const float *x, const float *r, int d, int transpose, float *out);
void okv_ref_rotate_row_f64(const double *x, const float *r, int d, int transpose, double *out);

/* out = x R per head: x, out [n_rows, n_heads, d]; rotation [d, d] or, when
 * per_head, [n_heads / head_group, d, d] with head h using R[h / head_group].
 * x and out may be the same array (same dtype). NaN/Inf in x or R:
 * OKV_ERROR_NONFINITE_INPUT. */
okv_status_t okv_ref_rotate(const void *x, okv_dtype_t x_dtype, void *out, okv_dtype_t out_dtype, const float *rotation,
                            int32_t n_rows, int32_t n_heads, int32_t head_dim, int32_t per_head, int32_t head_group,
                            int32_t transpose, okv_err_t *err);
/* okv_ref_rotate with an optional bias (f32 [n_rot, d], NULL: none): out = (x - bias) R. */
okv_status_t okv_ref_rotate_biased(const void *x, okv_dtype_t x_dtype, void *out, okv_dtype_t out_dtype,
                                   const float *rotation, const float *bias, int32_t n_rows, int32_t n_heads,
                                   int32_t head_dim, int32_t per_head, int32_t head_group, int32_t transpose,
                                   okv_err_t *err);

/* ------------------------------------------------------------ quantizer -- */

/* Codes of a row, quartered-packed: bytes[i] = c[i] | c[i+d/4] << 2 | c[i+d/2] << 4 |
 * c[i+3d/4] << 6 (d a multiple of 4). */
void okv_ref_pack_row(const int *codes, int d, uint8_t *bytes);
void okv_ref_unpack_row(const uint8_t *bytes, int d, int *codes);

/* Clip (ratio >= 1: none), then quantize each group of g channels: codes [d/4]
 * bytes packed, meta [d/g][2] = (scale, lo) as stored (already rounded to
 * meta_dtype). Returns 0 (writing nothing) when a group's metadata does not fit
 * meta_dtype. d <= OKV_FMT_MAX_HEAD_DIM. */
int okv_ref_quantize_row(const float *x, int d, int g, float clip_ratio, int clip_mode, int quantizer, int meta_dtype,
                         uint8_t *codes, float *meta);
/* lo + code * scale per channel. */
void okv_ref_dequantize_row(const uint8_t *codes, const float *meta, int d, int g, float *out);

/* ----------------------------------------------------------------- cache -- */

/* One layer's paged cache as host pointers (see okv_cache_view_t). Capacities are
 * the number of int32 elements the index arrays hold (page tables are checked
 * against them). */
typedef struct okv_ref_cache {
    int32_t n_q_heads, n_kv_heads, head_dim, group_size; /* group_size resolved (never 0) */
    int32_t meta_dtype, quantizer, clip_mode;            /* OKV_FMT_* values */
    int32_t sink, recent, flush, page_size;              /* S0, W, F, P */
    int32_t batch;
    uint8_t *int2_pool;
    int32_t int2_pool_pages;
    uint8_t *bf16_pool; /* bf16 elements, byte addressed */
    int32_t bf16_pool_pages;
    const int32_t *int2_indptr, *int2_indices;
    int64_t int2_indices_cap;
    const int32_t *bf16_indptr, *bf16_indices;
    int64_t bf16_indices_cap;
    int32_t *seq_lens, *int2_lens;
} okv_ref_cache_t;

/* Host pointers of a view whose buffers live in host memory ("ref" buffers):
 * okv_ref_ptr of each ref; index capacities from the buffers' sizes. */
void okv_ref_cache_from_view(const okv_cache_view_t *view, okv_ref_cache_t *c);

/* Bytes of one INT2 / BF16 page of this cache. */
size_t okv_ref_int2_page_bytes(const okv_ref_cache_t *c);
size_t okv_ref_bf16_page_bytes(const okv_ref_cache_t *c);
/* BF16 pages every sequence must list: ceil((S0 + W + F) / P). */
int32_t okv_ref_bf16_pages_per_seq(const okv_ref_cache_t *c);

/* Checks the page tables and lengths (OKV_ERROR_INVALID_ARGUMENT, detail names the
 * sequence): indptr monotone from >= 0 and within the index capacity; every listed
 * index inside its pool; seq_len >= 0, 0 <= int2_len <= max(0, seq_len - S0) and,
 * when seq_len > S0, seq_len - S0 - int2_len <= W + F - 1; enough BF16 pages for
 * S0 + W + F slots; enough INT2 pages for int2_need[b] tokens (int2_need NULL: the
 * current int2_lens). */
okv_status_t okv_ref_cache_validate(const okv_ref_cache_t *c, const int32_t *int2_need, okv_err_t *err);

/* Byte offsets into the pools (tables must have been validated). kv: 0 = K, 1 = V. */
size_t okv_ref_bf16_row_offset(const okv_ref_cache_t *c, int32_t b, int32_t pos, int kv, int head);
size_t okv_ref_int2_codes_offset(const okv_ref_cache_t *c, int32_t b, int32_t idx, int kv, int head);
size_t okv_ref_int2_meta_offset(const okv_ref_cache_t *c, int32_t b, int32_t idx, int kv, int head);

/* Row of logical position pos of sequence b (either tier), rotated basis, f32. */
void okv_ref_cache_read_row(const okv_ref_cache_t *c, int32_t b, int32_t pos, int kv, int head, float *out);
/* Store a BF16-tier row (pos < S0 or in the recent window) from f32 values. */
void okv_ref_cache_write_bf16(okv_ref_cache_t *c, int32_t b, int32_t pos, int kv, int head, const float *x);
/* Store a quantized row (packed codes + stored meta) at INT2 index idx. */
void okv_ref_cache_write_int2(okv_ref_cache_t *c, int32_t b, int32_t idx, int kv, int head, const uint8_t *codes,
                              const float *meta);
/* Raw quantized row at INT2 index idx: packed codes and stored meta as floats. */
void okv_ref_cache_read_int2(const okv_ref_cache_t *c, int32_t b, int32_t idx, int kv, int head, uint8_t *codes,
                             float *meta);

/* ------------------------------------------------------------ operations -- */

/* okv_append on host pointers. k, v [n_rows, Hkv, d] raw; append_indptr [batch+1]
 * with append_indptr[0] = 0 ... append_indptr[batch] = n_rows, monotone; rotations
 * [1 or Hkv, d, d]. */
okv_status_t okv_ref_append(okv_ref_cache_t *c, const void *k, const void *v, okv_dtype_t kv_dtype,
                            const int32_t *append_indptr, int32_t n_rows, const float *k_rotation,
                            const float *v_rotation, int32_t per_head_rotation, float k_clip_ratio, float v_clip_ratio,
                            okv_err_t *err);
/* okv_ref_append with optional key centering: keys become (k - k_bias) R (k_bias f32
 * [1 or Hkv][d], NULL: none). */
okv_status_t okv_ref_append_centered(okv_ref_cache_t *c, const void *k, const void *v, okv_dtype_t kv_dtype,
                                     const int32_t *append_indptr, int32_t n_rows, const float *k_rotation,
                                     const float *v_rotation, const float *k_bias, int32_t per_head_rotation,
                                     float k_clip_ratio, float v_clip_ratio, okv_err_t *err);

/* okv_demote: up to n_rows oldest recent rows of every sequence into INT2. */
okv_status_t okv_ref_demote(okv_ref_cache_t *c, int32_t n_rows, float k_clip_ratio, float v_clip_ratio, okv_err_t *err);

/* okv_dequantize: positions [0, seq_len) of sequence b to rows out_indptr[b] + pos
 * of k_out / v_out ([out_rows, Hkv, d]); needs out_indptr monotone from >= 0 with
 * out_indptr[b+1] - out_indptr[b] >= seq_lens[b] and out_indptr[batch] <= out_rows. */
okv_status_t okv_ref_dequantize(const okv_ref_cache_t *c, const int32_t *out_indptr, int32_t out_rows, void *k_out,
                                void *v_out, okv_dtype_t out_dtype, okv_err_t *err);

/* Splits the reference uses for num_splits = 0: ceil(max_seq_len / 1024) in [1, 64]. */
int32_t okv_ref_default_splits(int32_t max_seq_len);

/* okv_decode_attention. q [batch, Hq, d]; out [batch, Hq, d]; lse NULL or f32
 * [batch, Hq]; sm_scale 0 -> 1/sqrt(d); num_splits 0 -> okv_ref_default_splits
 * (max_seq_len). The INT2 tier is cut into num_splits contiguous ranges of
 * ceil(int2_len / num_splits) tokens; each range and the BF16 tier (sink +
 * recent) are softmax states merged exactly by okv_ref_merge_state. With
 * unrotate_output the output is multiplied by R_V^T (v_rotation [1 or Hkv, d, d]).
 * seq_len 0: zeros and lse -inf. */
okv_status_t okv_ref_decode(const okv_ref_cache_t *c, const void *q, okv_dtype_t q_dtype, void *out,
                            okv_dtype_t out_dtype, float *lse, float sm_scale, int32_t max_seq_len, int32_t num_splits,
                            const float *v_rotation, int32_t per_head_rotation, int32_t unrotate_output,
                            okv_err_t *err);

/* okv_prefill_attention. q [n_rows, Hq, d], k_new/v_new [n_rows, Hkv, d] rotated,
 * out [n_rows, Hq, d]; q_indptr monotone, q_indptr[0] = 0, q_indptr[batch] =
 * n_rows. Row j of sequence b's chunk sits at position seq_len + j and attends to
 * the cache [0, seq_len) and chunk rows 0..j. */
okv_status_t okv_ref_prefill(const okv_ref_cache_t *c, const int32_t *q_indptr, int32_t n_rows, const void *q,
                             const void *k_new, const void *v_new, okv_dtype_t in_dtype, void *out,
                             okv_dtype_t out_dtype, float sm_scale, okv_err_t *err);

/* okv_moments: acc[h / head_group] += sum_t w[t, h] x[t, h]^T x[t, h]; x [n_rows,
 * n_heads, d]; w NULL or f32 [n_rows, n_heads]; acc [n_heads / head_group, d, d] in
 * F64 or F32 (the sum of this call is formed in double, then added). */
okv_status_t okv_ref_moments(const void *x, okv_dtype_t x_dtype, const float *weights, void *acc, okv_dtype_t acc_dtype,
                             int32_t n_rows, int32_t n_heads, int32_t head_dim, int32_t head_group, okv_err_t *err);

#ifdef __cplusplus
}
#endif
#endif /* OKV_REF_OPS_H */
