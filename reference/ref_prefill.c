/* ref_prefill.c - prefill attention: a chunk of queries over the cached history
 * (dequantized) plus the chunk itself causally in full precision (SPEC 5.6). */
#include "ref_ops.h"

#include <math.h>
#include <stdlib.h>

okv_status_t okv_ref_prefill(const okv_ref_cache_t *c, const int32_t *q_indptr, int32_t n_rows, const void *q,
                             const void *k_new, const void *v_new, okv_dtype_t in_dtype, void *out,
                             okv_dtype_t out_dtype, float sm_scale, okv_err_t *err)
{
    const int d = c->head_dim, hq = c->n_q_heads, hkv = c->n_kv_heads;
    if (hkv < 1 || hq % hkv || n_rows < 0)
        return okv_ref_fail(err, OKV_ERROR_BAD_SHAPE, "prefill: Hq %d, Hkv %d, n_rows %d", hq, hkv, n_rows);
    okv_status_t st = okv_ref_cache_validate(c, NULL, err);
    if (st != OKV_SUCCESS) return st;
    if (q_indptr[0] < 0)
        return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT, "q_indptr[0] = %d is negative", q_indptr[0]);
    for (int32_t b = 0; b < c->batch; ++b)
        if (q_indptr[b + 1] < q_indptr[b])
            return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT, "sequence %d: q_indptr not monotone (%d then %d)", b,
                                q_indptr[b], q_indptr[b + 1]);
    if (q_indptr[c->batch] != n_rows)
        return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT, "q_indptr[%d] = %d differs from n_rows %d", c->batch,
                            q_indptr[c->batch], n_rows);
    const void *arr[3] = {q, k_new, v_new};
    const char *names[3] = {"q", "k_new", "v_new"};
    for (int a = 0; a < 3; ++a) {
        int64_t bad = okv_ref_find_nonfinite(arr[a], in_dtype, (size_t)n_rows * (a ? hkv : hq) * d);
        if (bad >= 0)
            return okv_ref_fail(err, OKV_ERROR_NONFINITE_INPUT, "prefill: %s[%lld] is not finite", names[a],
                                (long long)bad);
    }
    /* per (sequence, KV head): history + chunk keys and values as f32 [len + n][d] */
    int64_t most = 1;
    for (int32_t b = 0; b < c->batch; ++b) {
        int64_t t = (int64_t)c->seq_lens[b] + (q_indptr[b + 1] - q_indptr[b]);
        most = t > most ? t : most;
    }
    float *kv = (float *)malloc(sizeof(float) * 2 * (size_t)most * d);
    double *o = (double *)malloc(sizeof(double) * (size_t)d);
    if (!kv || !o) {
        free(kv);
        free(o);
        return okv_ref_fail(err, OKV_ERROR_OUT_OF_MEMORY, "prefill: scratch for %lld tokens", (long long)most);
    }
    float *kk = kv, *vv = kv + (size_t)most * d;
    const int g = hq / hkv;
    const double scale = sm_scale > 0.0f ? (double)sm_scale : 1.0 / sqrt((double)d);
    for (int32_t b = 0; b < c->batch; ++b) {
        const int32_t len = c->seq_lens[b], n = q_indptr[b + 1] - q_indptr[b];
        if (n == 0) continue;
        for (int h = 0; h < hkv; ++h) {
            for (int32_t p = 0; p < len; ++p) {
                okv_ref_cache_read_row(c, b, p, 0, h, kk + (size_t)p * d);
                okv_ref_cache_read_row(c, b, p, 1, h, vv + (size_t)p * d);
            }
            for (int32_t j = 0; j < n; ++j) {
                size_t src = (((size_t)q_indptr[b] + j) * hkv + h) * d;
                for (int i = 0; i < d; ++i) {
                    kk[((size_t)len + j) * d + i] = okv_ref_load(k_new, in_dtype, src + i);
                    vv[((size_t)len + j) * d + i] = okv_ref_load(v_new, in_dtype, src + i);
                }
            }
            for (int32_t j = 0; j < n; ++j)
                for (int qh = h * g; qh < (h + 1) * g; ++qh) {
                    size_t qrow = ((size_t)q_indptr[b] + j) * hq + qh;
                    double qd[OKV_FMT_MAX_HEAD_DIM];
                    for (int i = 0; i < d; ++i)
                        qd[i] = (double)okv_ref_load(q, in_dtype, qrow * d + i);
                    double m = -INFINITY, l = 0.0;
                    for (int i = 0; i < d; ++i)
                        o[i] = 0.0;
                    for (int64_t p = 0; p <= (int64_t)len + j; ++p) {
                        const float *kp = kk + (size_t)p * d, *vp = vv + (size_t)p * d;
                        double s = 0.0;
                        for (int i = 0; i < d; ++i)
                            s += qd[i] * (double)kp[i];
                        s *= scale;
                        if (s > m) {
                            double a = exp(m - s);
                            l = l * a + 1.0;
                            for (int i = 0; i < d; ++i)
                                o[i] = o[i] * a + (double)vp[i];
                            m = s;
                        } else {
                            double e = exp(s - m);
                            l += e;
                            for (int i = 0; i < d; ++i)
                                o[i] += e * (double)vp[i];
                        }
                    }
                    for (int i = 0; i < d; ++i)
                        okv_ref_store(out, out_dtype, qrow * d + i, (float)(o[i] / l));
                }
        }
    }
    free(kv);
    free(o);
    return OKV_SUCCESS;
}
