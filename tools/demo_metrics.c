/* demo_metrics.c - see demo_metrics.h. */
#include "demo_metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Softmax of scale * q.k over keys [0, n) of KV head h into p (double). */
static void probs(const demo_shape_t *s, const float *q, const float *k, int32_t h, int32_t n, double *p)
{
    double mx = -INFINITY;
    for (int32_t t = 0; t < n; ++t) {
        const float *kr = k + ((size_t)t * s->hkv + h) * s->d;
        double dot = 0;
        for (int32_t c = 0; c < s->d; ++c)
            dot += (double)q[c] * kr[c];
        p[t] = dot * s->scale;
        if (p[t] > mx) mx = p[t];
    }
    double sum = 0;
    for (int32_t t = 0; t < n; ++t)
        sum += (p[t] = exp(p[t] - mx));
    for (int32_t t = 0; t < n; ++t)
        p[t] /= sum;
}

void demo_attention_ref(const demo_shape_t *s, const float *q, const float *k, const float *v, double *o)
{
    double *p = malloc(sizeof(double) * (size_t)s->n_tokens);
    if (!p) return;
    int32_t g = s->hq / s->hkv;
    for (int32_t b = 0; b < s->n_queries; ++b) {
        int32_t n = s->n_tokens - s->n_queries + b + 1;
        for (int32_t i = 0; i < s->hq; ++i) {
            int32_t h = i / g;
            probs(s, q + ((size_t)b * s->hq + i) * s->d, k, h, n, p);
            double *out = o + ((size_t)b * s->hq + i) * s->d;
            memset(out, 0, sizeof(double) * (size_t)s->d);
            for (int32_t t = 0; t < n; ++t) {
                const float *vr = v + ((size_t)t * s->hkv + h) * s->d;
                for (int32_t c = 0; c < s->d; ++c)
                    out[c] += p[t] * vr[c];
            }
        }
    }
    free(p);
}

double demo_attention_kl(const demo_shape_t *s, const float *q, const float *k, const float *q_hat, const float *k_hat,
                         const int32_t *rows_indptr)
{
    double *p = malloc(sizeof(double) * (size_t)s->n_tokens), *ph = malloc(sizeof(double) * (size_t)s->n_tokens);
    double total = 0;
    if (!p || !ph) {
        free(p), free(ph);
        return NAN;
    }
    int32_t g = s->hq / s->hkv;
    for (int32_t b = 0; b < s->n_queries; ++b) {
        int32_t n = s->n_tokens - s->n_queries + b + 1;
        for (int32_t i = 0; i < s->hq; ++i) {
            size_t qo = ((size_t)b * s->hq + i) * s->d;
            probs(s, q + qo, k, i / g, n, p);
            probs(s, q_hat + qo, k_hat + (size_t)rows_indptr[b] * s->hkv * s->d, i / g, n, ph);
            double kl = 0;
            for (int32_t t = 0; t < n; ++t)
                if (p[t] > 0) kl += p[t] * (log(p[t]) - log(ph[t] > 1e-300 ? ph[t] : 1e-300));
            total += kl;
        }
    }
    free(p), free(ph);
    return total / ((double)s->n_queries * s->hq);
}

double demo_rel_err(const double *ref, const float *got, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; ++i) {
        double e = (double)got[i] - ref[i];
        num += e * e;
        den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
