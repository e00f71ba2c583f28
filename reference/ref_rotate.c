/* ref_rotate.c - x R and x R^T per head (SPEC section 5.1). */
#include "ref_ops.h"

void okv_ref_rotate_row_f64(const double *x, const float *r, int d, int transpose, double *out)
{
    double tmp[OKV_FMT_MAX_HEAD_DIM];
    for (int j = 0; j < d; ++j) {
        double s = 0.0;
        if (transpose)
            for (int i = 0; i < d; ++i)
                s += x[i] * (double)r[(size_t)j * d + i];
        else
            for (int i = 0; i < d; ++i)
                s += x[i] * (double)r[(size_t)i * d + j];
        tmp[j] = s;
    }
    for (int j = 0; j < d; ++j)
        out[j] = tmp[j];
}

void okv_ref_rotate_row(const float *x, const float *r, int d, int transpose, float *out)
{
    float tmp[OKV_FMT_MAX_HEAD_DIM];
    for (int j = 0; j < d; ++j) {
        double s = 0.0;
        if (transpose)
            for (int i = 0; i < d; ++i)
                s += (double)x[i] * (double)r[(size_t)j * d + i];
        else
            for (int i = 0; i < d; ++i)
                s += (double)x[i] * (double)r[(size_t)i * d + j];
        tmp[j] = (float)s;
    }
    for (int j = 0; j < d; ++j)
        out[j] = tmp[j];
}

okv_status_t okv_ref_rotate(const void *x, okv_dtype_t x_dtype, void *out, okv_dtype_t out_dtype, const float *rotation,
                            int32_t n_rows, int32_t n_heads, int32_t head_dim, int32_t per_head, int32_t head_group,
                            int32_t transpose, okv_err_t *err)
{
    return okv_ref_rotate_biased(x, x_dtype, out, out_dtype, rotation, NULL, n_rows, n_heads, head_dim, per_head,
                                 head_group, transpose, err);
}

okv_status_t okv_ref_rotate_biased(const void *x, okv_dtype_t x_dtype, void *out, okv_dtype_t out_dtype,
                                   const float *rotation, const float *bias, int32_t n_rows, int32_t n_heads,
                                   int32_t head_dim, int32_t per_head, int32_t head_group, int32_t transpose,
                                   okv_err_t *err)
{
    const int d = head_dim;
    if (d < 4 || d > OKV_FMT_MAX_HEAD_DIM || n_rows < 0 || n_heads < 1)
        return okv_ref_fail(err, OKV_ERROR_BAD_SHAPE, "rotate: n_rows %d, n_heads %d, head_dim %d", n_rows, n_heads,
                            head_dim);
    int32_t n_rot = 1;
    if (per_head) {
        if (head_group < 1 || n_heads % head_group)
            return okv_ref_fail(err, OKV_ERROR_BAD_SHAPE, "rotate: head_group %d must divide n_heads %d", head_group,
                                n_heads);
        n_rot = n_heads / head_group;
    }
    size_t n = (size_t)n_rows * (size_t)n_heads * (size_t)d;
    int64_t bad = okv_ref_find_nonfinite(x, x_dtype, n);
    if (bad >= 0)
        return okv_ref_fail(err, OKV_ERROR_NONFINITE_INPUT, "rotate: x[%lld] (row %lld, head %lld) is not finite",
                            (long long)bad, (long long)(bad / ((int64_t)n_heads * d)), (long long)(bad / d % n_heads));
    bad = okv_ref_find_nonfinite(rotation, OKV_DTYPE_F32, (size_t)n_rot * d * d);
    if (bad >= 0)
        return okv_ref_fail(err, OKV_ERROR_NONFINITE_INPUT, "rotate: rotation[%lld] is not finite", (long long)bad);
    bad = bias ? okv_ref_find_nonfinite(bias, OKV_DTYPE_F32, (size_t)n_rot * d) : -1;
    if (bad >= 0)
        return okv_ref_fail(err, OKV_ERROR_NONFINITE_INPUT, "rotate: bias[%lld] is not finite", (long long)bad);

    float row[OKV_FMT_MAX_HEAD_DIM];
    for (int32_t t = 0; t < n_rows; ++t)
        for (int32_t h = 0; h < n_heads; ++h) {
            size_t base = ((size_t)t * n_heads + h) * d;
            const float *r = rotation + (per_head ? (size_t)(h / head_group) * d * d : 0);
            const float *mu = bias ? bias + (per_head ? (size_t)(h / head_group) * d : 0) : NULL;
            for (int i = 0; i < d; ++i)
                row[i] = okv_ref_load(x, x_dtype, base + i) - (mu ? mu[i] : 0.0f);
            okv_ref_rotate_row(row, r, d, transpose, row);
            for (int i = 0; i < d; ++i)
                okv_ref_store(out, out_dtype, base + i, row[i]);
        }
    return OKV_SUCCESS;
}
