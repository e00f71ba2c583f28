/* ref_append.c - rotate + clip + quantize + pack new K/V rows into the paged cache
 * with the sink / INT2 / recent-ring placement of SPEC section 4.
 *
 * Per sequence (length L, INT2 length I, n new rows, I2 = okv_int2_len_after):
 * recent rows at positions [S0 + I, min(L, S0 + I2)) are demoted first (quantized
 * from their stored bf16 values), then new position p = L + j goes to BF16 slot p
 * (p < S0), to INT2 index p - S0 quantized from the rotated fp32 row
 * (p < S0 + I2), or to the recent ring (rotated fp32 rounded to bf16). With a key
 * bias (centering), keys are (k - bias) R in both tiers.
 * Two passes: the first checks everything that can fail (metadata overflow,
 * overflow of a rotated row) without storing; the second stores. */
#include "ref_ops.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>

typedef struct append_args {
    const void *k, *v;
    okv_dtype_t dtype;
    const int32_t *indptr;
    const float *rot[2];
    int32_t per_head;
    float clip[2];
    const float *k_bias; /* [1 or Hkv][d], subtracted from keys before rotation; NULL: none */
} append_args_t;

static const char *kv_name(int kv) { return kv ? "V" : "K"; }

static okv_status_t demote_range(okv_ref_cache_t *c, int32_t b, int32_t from, int32_t to, const float clip[2],
                                 int commit, okv_err_t *err)
{
    const int d = c->head_dim;
    float x[OKV_FMT_MAX_HEAD_DIM], meta[2 * OKV_FMT_MAX_HEAD_DIM];
    uint8_t codes[OKV_FMT_MAX_HEAD_DIM / 4];
    for (int32_t p = from; p < to; ++p)
        for (int kv = 0; kv < 2; ++kv)
            for (int h = 0; h < c->n_kv_heads; ++h) {
                okv_ref_cache_read_row(c, b, p, kv, h, x);
                if (!okv_ref_quantize_row(x, d, c->group_size, clip[kv], c->clip_mode, c->quantizer, c->meta_dtype,
                                          codes, meta))
                    return okv_ref_fail(err, OKV_ERROR_METADATA_OVERFLOW,
                                        "sequence %d position %d KV head %d: %s metadata does not fit the metadata "
                                        "type (demotion)",
                                        b, p, h, kv_name(kv));
                if (commit) okv_ref_cache_write_int2(c, b, p - c->sink, kv, h, codes, meta);
            }
    return OKV_SUCCESS;
}

static okv_status_t place_new(okv_ref_cache_t *c, const append_args_t *a, int32_t b, int32_t i2_after, int commit,
                              okv_err_t *err)
{
    const int d = c->head_dim, hkv = c->n_kv_heads;
    const int32_t len = c->seq_lens[b];
    float x[OKV_FMT_MAX_HEAD_DIM], meta[2 * OKV_FMT_MAX_HEAD_DIM];
    uint8_t codes[OKV_FMT_MAX_HEAD_DIM / 4];
    for (int32_t r = a->indptr[b]; r < a->indptr[b + 1]; ++r) {
        int32_t p = len + (r - a->indptr[b]);
        int to_int2 = p >= c->sink && p < c->sink + i2_after;
        for (int kv = 0; kv < 2; ++kv)
            for (int h = 0; h < hkv; ++h) {
                const void *src = kv ? a->v : a->k;
                size_t base = ((size_t)r * hkv + h) * d;
                for (int i = 0; i < d; ++i)
                    x[i] = okv_ref_load(src, a->dtype, base + i);
                if (kv == 0 && a->k_bias) {
                    const float *mu = a->k_bias + (a->per_head ? (size_t)h * d : 0);
                    for (int i = 0; i < d; ++i)
                        x[i] -= mu[i];
                }
                okv_ref_rotate_row(x, a->rot[kv] + (a->per_head ? (size_t)h * d * d : 0), d, 0, x);
                for (int i = 0; i < d; ++i)
                    if (!isfinite(x[i]) || (!to_int2 && !isfinite(okv_bf16_to_f32(okv_f32_to_bf16(x[i])))))
                        return okv_ref_fail(err, OKV_ERROR_NONFINITE_INPUT,
                                            "sequence %d row %d KV head %d: rotated %s overflows %s", b, r, h,
                                            kv_name(kv), to_int2 ? "f32" : "bf16");
                if (to_int2) {
                    if (!okv_ref_quantize_row(x, d, c->group_size, a->clip[kv], c->clip_mode, c->quantizer,
                                              c->meta_dtype, codes, meta))
                        return okv_ref_fail(err, OKV_ERROR_METADATA_OVERFLOW,
                                            "sequence %d position %d KV head %d: %s metadata does not fit the "
                                            "metadata type",
                                            b, p, h, kv_name(kv));
                    if (commit) okv_ref_cache_write_int2(c, b, p - c->sink, kv, h, codes, meta);
                } else if (commit) {
                    okv_ref_cache_write_bf16(c, b, p, kv, h, x);
                }
            }
    }
    return OKV_SUCCESS;
}

static okv_status_t run_pass(okv_ref_cache_t *c, const append_args_t *a, const int32_t *i2_after, int commit,
                             okv_err_t *err)
{
    for (int32_t b = 0; b < c->batch; ++b) {
        int32_t len = c->seq_lens[b], i2 = c->int2_lens[b];
        int32_t to = c->sink + i2_after[b] < len ? c->sink + i2_after[b] : len;
        okv_status_t st = demote_range(c, b, c->sink + i2, to, a->clip, commit, err);
        if (st == OKV_SUCCESS) st = place_new(c, a, b, i2_after[b], commit, err);
        if (st != OKV_SUCCESS) return st;
        if (commit) {
            c->seq_lens[b] = len + (a->indptr[b + 1] - a->indptr[b]);
            c->int2_lens[b] = i2_after[b];
        }
    }
    return OKV_SUCCESS;
}

okv_status_t okv_ref_append(okv_ref_cache_t *c, const void *k, const void *v, okv_dtype_t kv_dtype,
                            const int32_t *append_indptr, int32_t n_rows, const float *k_rotation,
                            const float *v_rotation, int32_t per_head_rotation, float k_clip_ratio, float v_clip_ratio,
                            okv_err_t *err)
{
    return okv_ref_append_centered(c, k, v, kv_dtype, append_indptr, n_rows, k_rotation, v_rotation, NULL,
                                   per_head_rotation, k_clip_ratio, v_clip_ratio, err);
}

okv_status_t okv_ref_append_centered(okv_ref_cache_t *c, const void *k, const void *v, okv_dtype_t kv_dtype,
                                     const int32_t *append_indptr, int32_t n_rows, const float *k_rotation,
                                     const float *v_rotation, const float *k_bias, int32_t per_head_rotation,
                                     float k_clip_ratio, float v_clip_ratio, okv_err_t *err)
{
    const int d = c->head_dim;
    if (c->batch < 0 || n_rows < 0)
        return okv_ref_fail(err, OKV_ERROR_BAD_SHAPE, "append: batch %d, n_rows %d", c->batch, n_rows);
    if (append_indptr[0] < 0)
        return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT, "append_indptr[0] = %d is negative", append_indptr[0]);
    for (int32_t b = 0; b < c->batch; ++b)
        if (append_indptr[b + 1] < append_indptr[b])
            return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT, "sequence %d: append_indptr not monotone (%d then %d)",
                                b, append_indptr[b], append_indptr[b + 1]);
    if (append_indptr[c->batch] != n_rows)
        return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT, "append_indptr[%d] = %d differs from n_rows %d", c->batch,
                            append_indptr[c->batch], n_rows);
    okv_status_t st = okv_ref_cache_validate(c, NULL, err); /* lengths sane before they are used */
    if (st != OKV_SUCCESS) return st;
    for (int32_t b = 0; b < c->batch; ++b)
        if ((int64_t)c->seq_lens[b] + (append_indptr[b + 1] - append_indptr[b]) > INT32_MAX)
            return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT, "sequence %d: length overflows int32", b);

    int32_t *after = (int32_t *)malloc(sizeof(int32_t) * (size_t)(c->batch > 0 ? c->batch : 1));
    if (!after) return okv_ref_fail(err, OKV_ERROR_OUT_OF_MEMORY, "append: %d lengths", c->batch);
    for (int32_t b = 0; b < c->batch; ++b)
        after[b] = okv_int2_len_after(c->seq_lens[b], c->int2_lens[b], append_indptr[b + 1] - append_indptr[b], c->sink,
                                      c->recent, c->flush);
    st = okv_ref_cache_validate(c, after, err);
    if (st == OKV_SUCCESS) {
        size_t n = (size_t)n_rows * c->n_kv_heads * d, nr = (size_t)(per_head_rotation ? c->n_kv_heads : 1) * d * d;
        size_t nb = (size_t)(per_head_rotation ? c->n_kv_heads : 1) * d;
        const void *arr[5] = {k, v, k_rotation, v_rotation, k_bias};
        const size_t count[5] = {n, n, nr, nr, k_bias ? nb : 0};
        const char *names[5] = {"k", "v", "k_rotation", "v_rotation", "k_bias"};
        for (int i = 0; i < 5 && st == OKV_SUCCESS; ++i) {
            int64_t bad = count[i] ? okv_ref_find_nonfinite(arr[i], i < 2 ? kv_dtype : OKV_DTYPE_F32, count[i]) : -1;
            if (bad >= 0)
                st = okv_ref_fail(err, OKV_ERROR_NONFINITE_INPUT, "append: %s[%lld] is not finite", names[i],
                                  (long long)bad);
        }
    }
    if (st == OKV_SUCCESS) {
        append_args_t a = {k,
                           v,
                           kv_dtype,
                           append_indptr,
                           {k_rotation, v_rotation},
                           per_head_rotation,
                           {k_clip_ratio, v_clip_ratio},
                           k_bias};
        st = run_pass(c, &a, after, 0, err);
        if (st == OKV_SUCCESS) st = run_pass(c, &a, after, 1, err);
    }
    free(after);
    return st;
}

okv_status_t okv_ref_demote(okv_ref_cache_t *c, int32_t n_rows, float k_clip_ratio, float v_clip_ratio, okv_err_t *err)
{
    if (c->batch < 0 || n_rows < 0)
        return okv_ref_fail(err, OKV_ERROR_BAD_SHAPE, "demote: batch %d, n_rows %d", c->batch, n_rows);
    int32_t *after = (int32_t *)malloc(sizeof(int32_t) * (size_t)(c->batch > 0 ? c->batch : 1));
    if (!after) return okv_ref_fail(err, OKV_ERROR_OUT_OF_MEMORY, "demote: %d lengths", c->batch);
    /* validate the current lengths first: a bad int2_len must not skew `after` */
    okv_status_t st = okv_ref_cache_validate(c, NULL, err);
    for (int32_t b = 0; b < c->batch && st == OKV_SUCCESS; ++b) {
        int64_t recent = (int64_t)c->seq_lens[b] - c->sink - c->int2_lens[b];
        if (recent < 0) recent = 0;
        after[b] = c->int2_lens[b] + (int32_t)(recent < n_rows ? recent : n_rows);
    }
    if (st == OKV_SUCCESS) st = okv_ref_cache_validate(c, after, err);
    const float clip[2] = {k_clip_ratio, v_clip_ratio};
    for (int commit = 0; commit < 2 && st == OKV_SUCCESS; ++commit)
        for (int32_t b = 0; b < c->batch && st == OKV_SUCCESS; ++b) {
            st = demote_range(c, b, c->sink + c->int2_lens[b], c->sink + after[b], clip, commit, err);
            if (commit && st == OKV_SUCCESS) c->int2_lens[b] = after[b];
        }
    free(after);
    return st;
}
