/* calibrator_impl.h - internals of okv_calibrator_t and the calibration math pieces.
 *
 * Memory held per layer (allocated on the layer's first add):
 *   - float64 moment sums, upper triangles of d x d matrices, per KV head:
 *     sum q^T q over the group's query heads, K^T K, V^T V, and (value_target EXACT)
 *     sum o^T o of the causal attention outputs: 4 * Hkv * d^2 * 8 bytes
 *     (Qwen3-8B shapes, Hkv 8, d 128: 4 MiB per layer).
 *   - value_target REFERENCE only: the weights w_t = k_t C_Q,h k_t^T need the final C_Q,
 *     which is known only after the last add, so the layer's K and V rows are kept in
 *     their input encoding (2 bytes per element for F16/BF16 input, 4 for F32):
 *     N * Hkv * d * 2 * elem bytes per layer (N = 20K tokens, Hkv 8, d 128, BF16:
 *     82 MB per layer). The EXACT target keeps no rows.
 *   - the held-back rows for clip fitting: holdout_tokens * (Hq + 2 Hkv) * d floats.
 *   - float64 key sums per KV head (the k_mean of centered keys): Hkv * d doubles.
 * finalize() does not consume anything: it can be called again with other options. */
#ifndef OKV_CALIBRATOR_IMPL_H
#define OKV_CALIBRATOR_IMPL_H

#include "calib_util.h"

typedef struct calib_chunk {
    struct calib_chunk *next;
    okv_dtype_t dtype;
    int32_t n;
    unsigned char *k, *v; /* [n, Hkv, d] each, input encoding */
} calib_chunk_t;

typedef struct calib_layer {
    int64_t tokens;
    double *cq, *kk, *vv, *cs; /* [Hkv][d*d], upper triangles; cs only for EXACT */
    double *ksum;              /* [Hkv][d] sum over every added token of k (post-RoPE, as given) */
    calib_chunk_t *chunks, *last;
    /* held-back rows (reservoir sample of the layer's tokens) */
    float *hq, *hk, *hv; /* [holdout][Hq*d], [holdout][Hkv*d] x2 */
    int32_t *hpos;       /* [holdout] position of the row inside its add() call */
    int32_t held;
    int64_t seen;
    okv_rng_t rng;
} calib_layer_t;

struct okv_calibrator {
    okv_calib_desc_t desc;
    calib_layer_t *layers;
    okv_err_t err;
};

/* acc (d x d upper triangle) += sum_r x_r^T x_r over n rows of length d, stride ld. */
void okv_sym_accumulate(int d, double *acc, const float *x, int64_t n, int64_t ld);
/* acc += w x^T x for one row (double). */
void okv_sym_accumulate_w(int d, double *acc, const double *x, double w);
/* Copy the upper triangle into the lower one, scaling by s. */
void okv_sym_finish(int d, const double *acc, double s, double *out);

/* EXACT value target: for every query head i (KV head h = i / g) and token t, the
 * causal attention output o = softmax(q_t K_h[0..t]^T / sqrt(d)) V_h[0..t]; adds o^T o
 * into cs[h] (upper triangle). q [n, Hq, d], k/v [n, Hkv, d]. */
okv_status_t okv_exact_value_accumulate(int n, int hq, int hkv, int d, const float *q, const float *k, const float *v,
                                        double *cs);

/* REFERENCE value target of one KV head from the kept rows: w_t = k_t C k_t^T,
 * cv = sum_t w_t v_t^T v_t / max(sum_t w_t, 1e-12) (full symmetric d x d). */
okv_status_t okv_reference_value_target(const calib_chunk_t *chunks, int hkv, int d, int h, const double *cq_full,
                                        double *cv_full);

/* Reservoir-sample the tokens of one add into the layer's held-back rows. */
void okv_holdout_add(calib_layer_t *L, int32_t capacity, int n, int hq, int hkv, int d, const float *q, const float *k,
                     const float *v);

/* Clip-ratio fitting on rotated held-back rows (see clip_fit.c). */
typedef struct okv_clip_fit_result {
    float k_ratio, v_ratio;
    double k_err, v_err;             /* relative attention-output error at the chosen ratios */
    double k_err_fixed, v_err_fixed; /* ... at the fixed ratios */
} okv_clip_fit_result_t;
/* exact_rows (nullable, [t]): rows left unquantised, like the cache's BF16 sink rows. */
okv_status_t okv_clip_fit(int t, int hq, int hkv, int d, const float *q, const float *k, const float *v,
                          const unsigned char *exact_rows, const okv_cache_desc_t *quant, float fixed_k, float fixed_v,
                          okv_clip_fit_result_t *res, okv_err_t *err);
/* Relative attention-output error of quantising K (kv = 0) or V (kv = 1) at ratio. */
okv_status_t okv_clip_eval(int t, int hq, int hkv, int d, const float *q, const float *k, const float *v,
                           const unsigned char *exact_rows, const okv_cache_desc_t *quant, int kv, float ratio,
                           double *rel_err, okv_err_t *err);

/* Clip + quantise + dequantise one row of d in place per the format (SPEC 3). 0 on
 * metadata overflow. */
int okv_quant_row_roundtrip(float *x, int d, int g, float ratio, const okv_cache_desc_t *quant);

#endif
