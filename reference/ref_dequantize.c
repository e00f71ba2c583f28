/* ref_dequantize.c - materialise the logical cache (rotated basis). */
#include "ref_ops.h"

okv_status_t okv_ref_dequantize(const okv_ref_cache_t *c, const int32_t *out_indptr, int32_t out_rows, void *k_out,
                                void *v_out, okv_dtype_t out_dtype, okv_err_t *err)
{
    okv_status_t st = okv_ref_cache_validate(c, NULL, err);
    if (st != OKV_SUCCESS) return st;
    if (out_indptr[0] < 0)
        return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT, "out_indptr[0] = %d is negative", out_indptr[0]);
    for (int32_t b = 0; b < c->batch; ++b) {
        if ((int64_t)out_indptr[b + 1] - out_indptr[b] < c->seq_lens[b])
            return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT,
                                "sequence %d: out_indptr gives %lld rows for %d tokens", b,
                                (long long)out_indptr[b + 1] - out_indptr[b], c->seq_lens[b]);
    }
    if (out_indptr[c->batch] > out_rows)
        return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT, "out_indptr[%d] = %d exceeds out_rows %d", c->batch,
                            out_indptr[c->batch], out_rows);
    const int d = c->head_dim, hkv = c->n_kv_heads;
    float x[OKV_FMT_MAX_HEAD_DIM];
    for (int32_t b = 0; b < c->batch; ++b)
        for (int32_t p = 0; p < c->seq_lens[b]; ++p)
            for (int kv = 0; kv < 2; ++kv)
                for (int h = 0; h < hkv; ++h) {
                    okv_ref_cache_read_row(c, b, p, kv, h, x);
                    size_t base = (((size_t)out_indptr[b] + p) * hkv + h) * d;
                    for (int i = 0; i < d; ++i)
                        okv_ref_store(kv ? v_out : k_out, out_dtype, base + i, x[i]);
                }
    return OKV_SUCCESS;
}
