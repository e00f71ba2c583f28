/* ref_moments.c - weighted second moments acc += sum_t w x^T x (SPEC 5.7). */
#include "ref_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

okv_status_t okv_ref_moments(const void *x, okv_dtype_t x_dtype, const float *weights, void *acc, okv_dtype_t acc_dtype,
                             int32_t n_rows, int32_t n_heads, int32_t head_dim, int32_t head_group, okv_err_t *err)
{
    const int d = head_dim;
    if (d < 1 || d > OKV_FMT_MAX_HEAD_DIM || n_rows < 0 || n_heads < 1 || head_group < 1 || n_heads % head_group)
        return okv_ref_fail(err, OKV_ERROR_BAD_SHAPE, "moments: n_rows %d, n_heads %d, head_dim %d, head_group %d",
                            n_rows, n_heads, head_dim, head_group);
    if (acc_dtype != OKV_DTYPE_F32 && acc_dtype != OKV_DTYPE_F64)
        return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT, "moments: acc dtype %s (F32 or F64)",
                            okv_ref_dtype_name(acc_dtype));
    size_t n = (size_t)n_rows * n_heads * d;
    int64_t bad = okv_ref_find_nonfinite(x, x_dtype, n);
    if (bad >= 0) return okv_ref_fail(err, OKV_ERROR_NONFINITE_INPUT, "moments: x[%lld] is not finite", (long long)bad);
    if (weights) {
        bad = okv_ref_find_nonfinite(weights, OKV_DTYPE_F32, (size_t)n_rows * n_heads);
        if (bad >= 0)
            return okv_ref_fail(err, OKV_ERROR_NONFINITE_INPUT, "moments: weights[%lld] is not finite", (long long)bad);
    }
    double *sum = (double *)malloc(sizeof(double) * ((size_t)d * d + d));
    if (!sum) return okv_ref_fail(err, OKV_ERROR_OUT_OF_MEMORY, "moments: %d x %d scratch", d, d);
    double *row = sum + (size_t)d * d;
    const int32_t n_acc = n_heads / head_group;
    for (int32_t a = 0; a < n_acc; ++a) {
        memset(sum, 0, sizeof(double) * (size_t)d * d);
        for (int32_t t = 0; t < n_rows; ++t)
            for (int32_t h = a * head_group; h < (a + 1) * head_group; ++h) {
                size_t base = ((size_t)t * n_heads + h) * d;
                double w = weights ? (double)weights[(size_t)t * n_heads + h] : 1.0;
                if (w == 0.0) continue;
                for (int i = 0; i < d; ++i)
                    row[i] = (double)okv_ref_load(x, x_dtype, base + i);
                for (int i = 0; i < d; ++i) {
                    double wi = w * row[i];
                    double *si = sum + (size_t)i * d;
                    for (int j = 0; j < d; ++j)
                        si[j] += wi * row[j];
                }
            }
        size_t off = (size_t)a * d * d;
        if (acc_dtype == OKV_DTYPE_F64) {
            unsigned char *ad = (unsigned char *)acc + off * sizeof(double);
            for (size_t i = 0; i < (size_t)d * d; ++i) {
                double v;
                memcpy(&v, ad + i * sizeof v, sizeof v);
                v += sum[i];
                memcpy(ad + i * sizeof v, &v, sizeof v);
            }
        } else {
            for (size_t i = 0; i < (size_t)d * d; ++i)
                okv_ref_store(acc, OKV_DTYPE_F32, off + i,
                              (float)((double)okv_ref_load(acc, OKV_DTYPE_F32, off + i) + sum[i]));
        }
    }
    free(sum);
    return OKV_SUCCESS;
}
