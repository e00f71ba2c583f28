/* ref_decode.c - decode attention over [BF16 tier | INT2 tier] with GQA, explicit
 * split-K over the INT2 tier and an exact log-sum-exp merge (SPEC section 5.5). */
#include "ref_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int32_t okv_ref_default_splits(int32_t max_seq_len)
{
    int32_t s = (int32_t)(((int64_t)max_seq_len + 1023) / 1024);
    return s < 1 ? 1 : (s > 64 ? 64 : s);
}

/* Softmax state of query heads [0, g) (q [g][d], double) over positions [from, to)
 * of sequence b, KV head h; o [g][d] normalised, lse [g]. */
static void partial_state(const okv_ref_cache_t *c, int32_t b, int h, const double *q, int g, double scale,
                          int32_t from, int32_t to, double *lse, double *o, double *m, double *l)
{
    const int d = c->head_dim;
    float k[OKV_FMT_MAX_HEAD_DIM], v[OKV_FMT_MAX_HEAD_DIM];
    for (int j = 0; j < g; ++j) {
        m[j] = -INFINITY;
        l[j] = 0.0;
    }
    memset(o, 0, sizeof(double) * (size_t)g * d);
    for (int32_t p = from; p < to; ++p) {
        okv_ref_cache_read_row(c, b, p, 0, h, k);
        okv_ref_cache_read_row(c, b, p, 1, h, v);
        for (int j = 0; j < g; ++j) {
            double s = 0.0;
            for (int i = 0; i < d; ++i)
                s += q[(size_t)j * d + i] * (double)k[i];
            s *= scale;
            double *oj = o + (size_t)j * d;
            if (s > m[j]) {
                double a = exp(m[j] - s); /* 0 for the first key */
                l[j] = l[j] * a + 1.0;
                for (int i = 0; i < d; ++i)
                    oj[i] = oj[i] * a + (double)v[i];
                m[j] = s;
            } else {
                double e = exp(s - m[j]);
                l[j] += e;
                for (int i = 0; i < d; ++i)
                    oj[i] += e * (double)v[i];
            }
        }
    }
    for (int j = 0; j < g; ++j) {
        if (l[j] > 0.0) {
            lse[j] = m[j] + log(l[j]);
            for (int i = 0; i < d; ++i)
                o[(size_t)j * d + i] /= l[j];
        } else {
            lse[j] = -INFINITY;
        }
    }
}

okv_status_t okv_ref_decode(const okv_ref_cache_t *c, const void *q, okv_dtype_t q_dtype, void *out,
                            okv_dtype_t out_dtype, float *lse, float sm_scale, int32_t max_seq_len, int32_t num_splits,
                            const float *v_rotation, int32_t per_head_rotation, int32_t unrotate_output, okv_err_t *err)
{
    const int d = c->head_dim, hq = c->n_q_heads, hkv = c->n_kv_heads;
    if (hkv < 1 || hq % hkv || num_splits < 0)
        return okv_ref_fail(err, OKV_ERROR_BAD_SHAPE, "decode: Hq %d, Hkv %d, num_splits %d", hq, hkv, num_splits);
    okv_status_t st = okv_ref_cache_validate(c, NULL, err);
    if (st != OKV_SUCCESS) return st;
    int64_t bad = okv_ref_find_nonfinite(q, q_dtype, (size_t)c->batch * hq * d);
    if (bad >= 0)
        return okv_ref_fail(err, OKV_ERROR_NONFINITE_INPUT, "decode: q[%lld] (sequence %lld) is not finite",
                            (long long)bad, (long long)(bad / ((int64_t)hq * d)));
    if (unrotate_output) {
        bad = okv_ref_find_nonfinite(v_rotation, OKV_DTYPE_F32, (size_t)(per_head_rotation ? hkv : 1) * d * d);
        if (bad >= 0)
            return okv_ref_fail(err, OKV_ERROR_NONFINITE_INPUT, "decode: v_rotation[%lld] is not finite",
                                (long long)bad);
    }
    const int g = hq / hkv;
    const int32_t splits = num_splits ? num_splits : okv_ref_default_splits(max_seq_len);
    const double scale = sm_scale > 0.0f ? (double)sm_scale : 1.0 / sqrt((double)d);
    /* q, acc, part: [g][d]; lse_acc, lse_part, m, l: [g] */
    double *mem = (double *)malloc(sizeof(double) * ((size_t)3 * g * d + 4 * (size_t)g));
    if (!mem) return okv_ref_fail(err, OKV_ERROR_OUT_OF_MEMORY, "decode: scratch for %d heads", g);
    double *qd = mem, *acc = qd + (size_t)g * d, *part = acc + (size_t)g * d;
    double *lse_acc = part + (size_t)g * d, *lse_part = lse_acc + g, *m = lse_part + g, *l = m + g;

    for (int32_t b = 0; b < c->batch; ++b) {
        const int32_t len = c->seq_lens[b], i2 = c->int2_lens[b];
        const int32_t sink_end = len < c->sink ? len : c->sink;
        const int64_t chunk = ((int64_t)i2 + splits - 1) / splits;
        for (int h = 0; h < hkv; ++h) {
            for (int j = 0; j < g; ++j)
                for (int i = 0; i < d; ++i)
                    qd[(size_t)j * d + i] = (double)okv_ref_load(q, q_dtype, ((size_t)b * hq + h * g + j) * d + i);
            /* BF16 tier: sink then recent window, one state */
            partial_state(c, b, h, qd, g, scale, 0, sink_end, lse_acc, acc, m, l);
            partial_state(c, b, h, qd, g, scale, c->sink + i2, len > c->sink + i2 ? len : c->sink + i2, lse_part, part,
                          m, l);
            for (int j = 0; j < g; ++j)
                okv_ref_merge_state(&lse_acc[j], acc + (size_t)j * d, lse_part[j], part + (size_t)j * d, d);
            /* INT2 tier in `splits` contiguous ranges */
            for (int32_t s = 0; s < splits && chunk > 0; ++s) {
                int64_t from = (int64_t)s * chunk, to = from + chunk < i2 ? from + chunk : i2;
                if (from >= to) break;
                partial_state(c, b, h, qd, g, scale, c->sink + (int32_t)from, c->sink + (int32_t)to, lse_part, part, m,
                              l);
                for (int j = 0; j < g; ++j)
                    okv_ref_merge_state(&lse_acc[j], acc + (size_t)j * d, lse_part[j], part + (size_t)j * d, d);
            }
            for (int j = 0; j < g; ++j) {
                double *oj = acc + (size_t)j * d;
                if (unrotate_output && lse_acc[j] != -INFINITY)
                    okv_ref_rotate_row_f64(oj, v_rotation + (per_head_rotation ? (size_t)h * d * d : 0), d, 1, oj);
                size_t row = (size_t)b * hq + (size_t)h * g + j;
                for (int i = 0; i < d; ++i)
                    okv_ref_store(out, out_dtype, row * d + i, (float)oj[i]);
                if (lse) okv_ref_store(lse, OKV_DTYPE_F32, row, (float)lse_acc[j]);
            }
        }
    }
    free(mem);
    return OKV_SUCCESS;
}
