/* moments.c - float64 second moments and the two value targets (SPEC 2.1-2.2). */
#include "calibrator_impl.h"

#include "okv_format.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* y += a x over n doubles; fixed-length blocks let -O2 vectorise (element-wise, so the
 * result does not depend on it). */
static void daxpy(double *restrict y, double a, const double *restrict x, int n)
{
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int u = 0; u < 8; ++u)
            y[j + u] += a * x[j + u];
    for (; j < n; ++j)
        y[j] += a * x[j];
}

/* y += a0 x0 + a1 x1 + a2 x2 + a3 x3: four rank-1 updates per pass over y (4x less
 * traffic on the accumulator than four daxpy calls). */
static void daxpy4(double *restrict y, const double *a, const double *restrict x0, const double *restrict x1,
                   const double *restrict x2, const double *restrict x3, int n)
{
    double a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int u = 0; u < 8; ++u)
            y[j + u] += a0 * x0[j + u] + a1 * x1[j + u] + a2 * x2[j + u] + a3 * x3[j + u];
    for (; j < n; ++j)
        y[j] += a0 * x0[j] + a1 * x1[j] + a2 * x2[j] + a3 * x3[j];
}

void okv_sym_accumulate(int d, double *acc, const float *x, int64_t n, int64_t ld)
{
    double xd[4][OKV_FMT_MAX_HEAD_DIM];
    int64_t r = 0;
    for (; r + 4 <= n; r += 4) {
        for (int i = 0; i < 4; ++i)
            for (int a = 0; a < d; ++a)
                xd[i][a] = x[(r + i) * ld + a];
        for (int a = 0; a < d; ++a) {
            double coef[4] = {xd[0][a], xd[1][a], xd[2][a], xd[3][a]};
            daxpy4(acc + (size_t)a * d + a, coef, xd[0] + a, xd[1] + a, xd[2] + a, xd[3] + a, d - a);
        }
    }
    for (; r < n; ++r) {
        const float *row = x + r * ld;
        for (int a = 0; a < d; ++a)
            xd[0][a] = row[a];
        for (int a = 0; a < d; ++a)
            daxpy(acc + (size_t)a * d + a, xd[0][a], xd[0] + a, d - a);
    }
}

void okv_sym_accumulate_w(int d, double *acc, const double *x, double w)
{
    for (int a = 0; a < d; ++a)
        daxpy(acc + (size_t)a * d + a, w * x[a], x + a, d - a);
}

void okv_sym_finish(int d, const double *acc, double s, double *out)
{
    for (int a = 0; a < d; ++a)
        for (int b = a; b < d; ++b)
            out[(size_t)a * d + b] = out[(size_t)b * d + a] = s * acc[(size_t)a * d + b];
}

okv_status_t okv_exact_value_accumulate(int n, int hq, int hkv, int d, const float *q, const float *k, const float *v,
                                        double *cs)
{
    int g = hq / hkv;
    double *p = malloc(sizeof(double) * (size_t)n);
    double *kd = malloc(sizeof(double) * (size_t)n * d);
    double *vd = malloc(sizeof(double) * (size_t)n * d);
    if (!p || !kd || !vd) {
        free(p);
        free(kd);
        free(vd);
        return OKV_ERROR_OUT_OF_MEMORY;
    }
    double scale = 1.0 / sqrt((double)d);
    double o[OKV_FMT_MAX_HEAD_DIM], qd[OKV_FMT_MAX_HEAD_DIM];
    for (int h = 0; h < hkv; ++h) {
        for (int t = 0; t < n; ++t)
            for (int c = 0; c < d; ++c) {
                kd[(size_t)c * n + t] = k[((size_t)t * hkv + h) * d + c]; /* transposed [d][n] */
                vd[(size_t)t * d + c] = v[((size_t)t * hkv + h) * d + c];
            }
        double *acc = cs + (size_t)h * d * d;
        for (int i = h * g; i < (h + 1) * g; ++i) {
            for (int t = 0; t < n; ++t) {
                const float *qr = q + ((size_t)t * hq + i) * d;
                for (int c = 0; c < d; ++c)
                    qd[c] = qr[c];
                double mx = -INFINITY;
                memset(p, 0, sizeof(double) * (size_t)(t + 1));
                for (int c = 0; c < d; ++c)
                    daxpy(p, qd[c] * scale, kd + (size_t)c * n, t + 1);
                for (int j = 0; j <= t; ++j)
                    if (p[j] > mx) mx = p[j];
                double z = 0.0;
                for (int j = 0; j <= t; ++j) {
                    p[j] = exp(p[j] - mx);
                    z += p[j];
                }
                memset(o, 0, sizeof(double) * (size_t)d);
                for (int j = 0; j <= t; ++j)
                    daxpy(o, p[j] / z, vd + (size_t)j * d, d);
                okv_sym_accumulate_w(d, acc, o, 1.0);
            }
        }
    }
    free(p);
    free(kd);
    free(vd);
    return OKV_SUCCESS;
}

static void load_row(const unsigned char *base, okv_dtype_t dt, size_t idx, int d, double *out)
{
    if (dt == OKV_DTYPE_F32) {
        for (int c = 0; c < d; ++c) {
            float f;
            memcpy(&f, base + 4 * (idx + (size_t)c), 4);
            out[c] = f;
        }
    } else {
        for (int c = 0; c < d; ++c) {
            uint16_t u;
            memcpy(&u, base + 2 * (idx + (size_t)c), 2);
            out[c] = dt == OKV_DTYPE_F16 ? okv_f16_to_f32(u) : okv_bf16_to_f32(u);
        }
    }
}

okv_status_t okv_reference_value_target(const calib_chunk_t *chunks, int hkv, int d, int h, const double *cq_full,
                                        double *cv_full)
{
    double *acc = calloc((size_t)d * d, sizeof(double));
    if (!acc) return OKV_ERROR_OUT_OF_MEMORY;
    double kr[OKV_FMT_MAX_HEAD_DIM], vr[OKV_FMT_MAX_HEAD_DIM], y[OKV_FMT_MAX_HEAD_DIM];
    double sum_w = 0.0;
    for (const calib_chunk_t *c = chunks; c; c = c->next) {
        for (int t = 0; t < c->n; ++t) {
            size_t idx = ((size_t)t * hkv + h) * d;
            load_row(c->k, c->dtype, idx, d, kr);
            load_row(c->v, c->dtype, idx, d, vr);
            /* w = k C k^T */
            for (int a = 0; a < d; ++a) {
                const double *crow = cq_full + (size_t)a * d;
                double s = 0.0;
                for (int b = 0; b < d; ++b)
                    s += crow[b] * kr[b];
                y[a] = s;
            }
            double w = 0.0;
            for (int a = 0; a < d; ++a)
                w += kr[a] * y[a];
            sum_w += w;
            okv_sym_accumulate_w(d, acc, vr, w);
        }
    }
    okv_sym_finish(d, acc, 1.0 / fmax(sum_w, 1e-12), cv_full);
    free(acc);
    return OKV_SUCCESS;
}
