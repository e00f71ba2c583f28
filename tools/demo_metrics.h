/* demo_metrics.h - full-precision attention on the host and the error measures. */
#ifndef OKV_DEMO_METRICS_H
#define OKV_DEMO_METRICS_H

#include <stdint.h>

typedef struct demo_shape {
    int32_t hq, hkv, d;
    int32_t n_tokens, n_queries; /* query b sees the first n_tokens - n_queries + b + 1 keys */
    double scale;
} demo_shape_t;

/* o[b, i, :] = softmax(scale q k^T) v over the causal prefix, in double. */
void demo_attention_ref(const demo_shape_t *s, const float *q, const float *k, const float *v, double *o);

/* Mean KL(p_ref || p_hat) over queries and heads, p from (q, k) and (q_hat, k_hat);
 * query b's keys in k_hat start at row rows_indptr[b]. */
double demo_attention_kl(const demo_shape_t *s, const float *q, const float *k, const float *q_hat, const float *k_hat,
                         const int32_t *rows_indptr);

/* ||o_hat - o_ref|| / ||o_ref|| over everything. */
double demo_rel_err(const double *ref, const float *got, int64_t n);

#endif
