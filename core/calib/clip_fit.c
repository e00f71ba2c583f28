/* clip_fit.c - fit the clip ratios of one layer (SPEC 2.6) on held-back rows.
 *
 * The held-back tokens (already rotated) form one attention problem: every held-back
 * query (each query head i, KV head i / g) attends to all held-back keys/values
 * (no causal mask; scale 1/sqrt(d)). For a candidate K ratio, the K rows are clipped,
 * quantised and dequantised exactly as the cache format does (okv_format.h, with the
 * options' group size, metadata type, quantizer and clip mode) while V stays exact;
 * for a V ratio the reverse. The error is ||O^ - O||_F / ||O||_F over all heads and
 * queries: keys are judged through q k^T, not by their own MSE. Candidates: the fixed
 * ratio first, then 0.80, 0.82, ..., 1.00; a candidate replaces the incumbent only
 * when strictly better, so the fitted error is never above the fixed one. */
#include "calibrator_impl.h"

#include "okv_format.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CLIP_GRID_N 11

int okv_quant_row_roundtrip(float *x, int d, int g, float ratio, const okv_cache_desc_t *quant)
{
    int clip_mode = quant->clip_mode == OKV_CLIP_BISECT ? OKV_FMT_CLIP_BISECT : OKV_FMT_CLIP_SORT;
    int qz = quant->quantizer == OKV_QUANT_LLOYD_MAX ? OKV_FMT_QUANT_LLOYD_MAX : OKV_FMT_QUANT_UNIFORM;
    int md = quant->meta_dtype == OKV_DTYPE_F32
                 ? OKV_FMT_META_F32
                 : (quant->meta_dtype == OKV_DTYPE_BF16 ? OKV_FMT_META_BF16 : OKV_FMT_META_F16);
    float tau = okv_clip_tau(x, d, ratio, clip_mode);
    if (tau >= 0.0f)
        for (int c = 0; c < d; ++c)
            x[c] = fminf(fmaxf(x[c], -tau), tau);
    for (int g0 = 0; g0 < d; g0 += g) {
        float scale, lo;
        if (!okv_group_meta(x + g0, g, qz, md, &scale, &lo)) return 0;
        for (int c = g0; c < g0 + g; ++c)
            x[c] = okv_dequant(okv_group_code(x[c], scale, lo, qz), scale, lo);
    }
    return 1;
}

/* y += a x. The fixed-length inner block lets -O2 vectorise it (no epilogue needed);
 * element-wise, so results do not depend on vectorisation. */
static void axpy(float *restrict y, float a, const float *restrict x, int n)
{
    int j = 0;
    for (; j + 16 <= n; j += 16)
        for (int u = 0; u < 16; ++u)
            y[j + u] += a * x[j + u];
    for (; j < n; ++j)
        y[j] += a * x[j];
}

typedef struct att_problem {
    int t, hq, hkv, d, g;
    const float *q, *k, *v;
    float *kt;   /* scratch: keys transposed per head [hkv][d][t] */
    float *p;    /* softmax probabilities [hq][t][t] */
    float *o;    /* output scratch [t][d] */
    double *ref; /* reference outputs [hq][t][d] */
    double ref_norm2;
} att_problem_t;

/* P[i] = softmax(Q_i K_h^T / sqrt(d)) for every query head, keys from k (rows [t][hkv][d]). */
static void probabilities(att_problem_t *A, const float *k)
{
    int t = A->t, d = A->d;
    float scale = 1.0f / sqrtf((float)d);
    for (int h = 0; h < A->hkv; ++h) {
        float *kt = A->kt + (size_t)h * d * t;
        for (int j = 0; j < t; ++j)
            for (int c = 0; c < d; ++c)
                kt[(size_t)c * t + j] = k[((size_t)j * A->hkv + h) * d + c];
    }
    for (int i = 0; i < A->hq; ++i) {
        const float *kt = A->kt + (size_t)(i / A->g) * d * t;
        for (int s = 0; s < t; ++s) {
            float *row = A->p + ((size_t)i * t + s) * t;
            const float *qr = A->q + ((size_t)s * A->hq + i) * d;
            memset(row, 0, sizeof(float) * (size_t)t);
            for (int c = 0; c < d; ++c)
                axpy(row, qr[c], kt + (size_t)c * t, t);
            float mx = -INFINITY;
            for (int j = 0; j < t; ++j) {
                row[j] *= scale;
                mx = fmaxf(mx, row[j]);
            }
            double z = 0.0;
            for (int j = 0; j < t; ++j) {
                row[j] = expf(row[j] - mx);
                z += row[j];
            }
            float inv = (float)(1.0 / z);
            for (int j = 0; j < t; ++j)
                row[j] *= inv;
        }
    }
}

/* Outputs O = P V; returns sum ||O - ref||^2 (or stores ref when store_ref). */
static double outputs(att_problem_t *A, const float *v, int store_ref)
{
    int t = A->t, d = A->d;
    double err2 = 0.0;
    for (int i = 0; i < A->hq; ++i) {
        int h = i / A->g;
        for (int s = 0; s < t; ++s) {
            const float *row = A->p + ((size_t)i * t + s) * t;
            float *o = A->o;
            memset(o, 0, sizeof(float) * (size_t)d);
            for (int j = 0; j < t; ++j)
                axpy(o, row[j], v + ((size_t)j * A->hkv + h) * d, d);
            double *ref = A->ref + ((size_t)i * t + s) * d;
            for (int c = 0; c < d; ++c) {
                if (store_ref)
                    ref[c] = o[c];
                else {
                    double e = (double)o[c] - ref[c];
                    err2 += e * e;
                }
            }
        }
    }
    return err2;
}

static int group_of(const okv_cache_desc_t *quant, int d) { return quant->group_size > 0 ? quant->group_size : d; }

static okv_status_t setup(att_problem_t *A, int t, int hq, int hkv, int d, const float *q, const float *k,
                          const float *v, okv_err_t *err)
{
    memset(A, 0, sizeof *A);
    A->t = t;
    A->hq = hq;
    A->hkv = hkv;
    A->d = d;
    A->g = hq / hkv;
    A->q = q;
    A->k = k;
    A->v = v;
    A->kt = malloc(sizeof(float) * (size_t)hkv * d * t);
    A->p = malloc(sizeof(float) * (size_t)hq * t * t);
    A->o = malloc(sizeof(float) * (size_t)d);
    A->ref = malloc(sizeof(double) * (size_t)hq * t * d);
    if (!A->kt || !A->p || !A->o || !A->ref)
        return okv_fail(err, OKV_ERROR_OUT_OF_MEMORY, "clip fit: out of memory (%d held-back tokens)", t);
    probabilities(A, k);
    outputs(A, v, 1);
    for (size_t i = 0; i < (size_t)hq * t * d; ++i)
        A->ref_norm2 += A->ref[i] * A->ref[i];
    return OKV_SUCCESS;
}

static void teardown(att_problem_t *A)
{
    free(A->kt);
    free(A->p);
    free(A->o);
    free(A->ref);
}

/* Quantise all rows of x ([t][hkv][d]) at ratio into out. */
static okv_status_t quantize_all(const float *x, float *out, int t, int hkv, int d, float ratio,
                                 const unsigned char *exact_rows, const okv_cache_desc_t *quant, okv_err_t *err)
{
    int g = group_of(quant, d);
    memcpy(out, x, sizeof(float) * (size_t)t * hkv * d);
    for (size_t r = 0; r < (size_t)t * hkv; ++r)
        if (!(exact_rows && exact_rows[r / (size_t)hkv]) && !okv_quant_row_roundtrip(out + r * d, d, g, ratio, quant))
            return okv_fail(err, OKV_ERROR_METADATA_OVERFLOW,
                            "clip fit: a held-back row's scale/offset does not fit the metadata type");
    return OKV_SUCCESS;
}

/* Error of quantising K (kv 0) or V (kv 1) at ratio; A's probabilities are restored
 * to the exact ones on return. */
static okv_status_t eval(att_problem_t *A, int kv, float ratio, const unsigned char *exact_rows,
                         const okv_cache_desc_t *quant, float *scratch, double *rel, okv_err_t *err)
{
    okv_status_t st = quantize_all(kv ? A->v : A->k, scratch, A->t, A->hkv, A->d, ratio, exact_rows, quant, err);
    if (st != OKV_SUCCESS) return st;
    double e2;
    if (kv == 0) {
        probabilities(A, scratch);
        e2 = outputs(A, A->v, 0);
        probabilities(A, A->k);
    } else {
        e2 = outputs(A, scratch, 0);
    }
    *rel = A->ref_norm2 > 0 ? sqrt(e2 / A->ref_norm2) : sqrt(e2);
    return OKV_SUCCESS;
}

static okv_status_t check_quant(const okv_cache_desc_t *quant, int d, okv_err_t *err)
{
    int g = group_of(quant, d);
    if (!(g == 32 || g == 64 || g == 128 || g == d) || g > d || d % g != 0)
        return okv_fail(err, OKV_ERROR_INVALID_ARGUMENT, "clip fit: group_size %d invalid for head_dim %d",
                        (int)quant->group_size, d);
    if (quant->meta_dtype != OKV_DTYPE_F16 && quant->meta_dtype != OKV_DTYPE_BF16 && quant->meta_dtype != OKV_DTYPE_F32)
        return okv_fail(err, OKV_ERROR_INVALID_ARGUMENT, "clip fit: meta_dtype must be F16, BF16 or F32");
    if (quant->quantizer != OKV_QUANT_UNIFORM && quant->quantizer != OKV_QUANT_LLOYD_MAX)
        return okv_fail(err, OKV_ERROR_INVALID_ARGUMENT, "clip fit: unknown quantizer %d", (int)quant->quantizer);
    if (quant->clip_mode != OKV_CLIP_SORT && quant->clip_mode != OKV_CLIP_BISECT)
        return okv_fail(err, OKV_ERROR_INVALID_ARGUMENT, "clip fit: unknown clip mode %d", (int)quant->clip_mode);
    return OKV_SUCCESS;
}

okv_status_t okv_clip_eval(int t, int hq, int hkv, int d, const float *q, const float *k, const float *v,
                           const unsigned char *exact_rows, const okv_cache_desc_t *quant, int kv, float ratio,
                           double *rel_err, okv_err_t *err)
{
    okv_status_t st = check_quant(quant, d, err);
    if (st != OKV_SUCCESS) return st;
    att_problem_t A;
    float *scratch = malloc(sizeof(float) * (size_t)t * hkv * d);
    st = setup(&A, t, hq, hkv, d, q, k, v, err);
    if (st == OKV_SUCCESS && !scratch) st = okv_fail(err, OKV_ERROR_OUT_OF_MEMORY, "clip fit: out of memory");
    if (st == OKV_SUCCESS) st = eval(&A, kv, ratio, exact_rows, quant, scratch, rel_err, err);
    teardown(&A);
    free(scratch);
    return st;
}

okv_status_t okv_clip_fit(int t, int hq, int hkv, int d, const float *q, const float *k, const float *v,
                          const unsigned char *exact_rows, const okv_cache_desc_t *quant, float fixed_k, float fixed_v,
                          okv_clip_fit_result_t *res, okv_err_t *err)
{
    okv_status_t st = check_quant(quant, d, err);
    if (st != OKV_SUCCESS) return st;
    att_problem_t A;
    float *scratch = malloc(sizeof(float) * (size_t)t * hkv * d);
    st = setup(&A, t, hq, hkv, d, q, k, v, err);
    if (st == OKV_SUCCESS && !scratch) st = okv_fail(err, OKV_ERROR_OUT_OF_MEMORY, "clip fit: out of memory");
    for (int kv = 0; kv < 2 && st == OKV_SUCCESS; ++kv) {
        float fixed = kv ? fixed_v : fixed_k, best = fixed;
        double best_err = 0.0, fixed_err = 0.0;
        st = eval(&A, kv, fixed, exact_rows, quant, scratch, &fixed_err, err);
        best_err = fixed_err;
        for (int i = 0; i < CLIP_GRID_N && st == OKV_SUCCESS; ++i) {
            float r = (float)(0.80 + 0.02 * i);
            if (i == CLIP_GRID_N - 1) r = 1.0f;
            if (r == fixed) continue;
            double e;
            st = eval(&A, kv, r, exact_rows, quant, scratch, &e, err);
            if (st == OKV_SUCCESS && e < best_err) {
                best_err = e;
                best = r;
            }
        }
        if (kv) {
            res->v_ratio = best;
            res->v_err = best_err;
            res->v_err_fixed = fixed_err;
        } else {
            res->k_ratio = best;
            res->k_err = best_err;
            res->k_err_fixed = fixed_err;
        }
    }
    teardown(&A);
    free(scratch);
    return st;
}
