/* demo_cache.h - builds one layer's caches through the public API and runs decode
 * attention: a batch of M sequences, sequence b holding the first
 * n_tokens - M + 1 + b tokens (one batched append places sink / INT2 / recent rows
 * by the cache rules), and one decode step per sequence. */
#ifndef OKV_DEMO_CACHE_H
#define OKV_DEMO_CACHE_H

#include "oscarkv/oscarkv.h"

typedef struct demo_run {
    /* inputs */
    okv_context_t *ctx;
    const okv_cache_desc_t *desc;
    int32_t n_tokens;           /* tokens in the cache */
    int32_t n_queries;          /* prefixes ending at the last n_queries positions */
    const float *k, *v;         /* [n_tokens, Hkv, d], unrotated */
    const float *q;             /* [n_queries, Hq, d], unrotated, query b sees n_tokens-n_queries+b+1 keys */
    const float *k_rot, *v_rot; /* [d, d] */
    const float *q_matrix;      /* [d, d] the queries' matrix (key scaling's q_rotation), or NULL: k_rot */
    float k_clip, v_clip;
    const float *k_bias; /* [d] key centering vector (calibration k_mean), or NULL */
    int32_t timing_reps;
    /* outputs */
    float *out;           /* [n_queries, Hq, d], un-rotated */
    float *k_hat;         /* [rows, Hkv, d]: every sequence's logical keys, rotated basis */
    int32_t *rows_indptr; /* [n_queries + 1]: sequence b's rows in k_hat */
    float *q_rot;         /* [n_queries, Hq, d] */
    double decode_ms;     /* median decode call */
} demo_run_t;

/* Returns OKV_SUCCESS or the failing status with a message in err. */
okv_status_t demo_run_layer(demo_run_t *r, char *err, size_t err_cap);

#endif
