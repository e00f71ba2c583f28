/* finalize.c - okv_calibrator_finalize: targets -> eigenvectors -> R = U H P (keys: U D H P
 * and the queries' U D^-1 H P with key scaling) -> k_mean -> clip ratios (fixed or fitted)
 * -> rotation set with provenance metadata. */
#include "calibrator_impl.h"

#include "eigen.h"
#include "hadamard.h"
#include "rotation_set.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *method_name(okv_rotation_method_t m)
{
    switch (m) {
    case OKV_ROT_OSCAR: return "oscar";
    case OKV_ROT_NONE: return "none";
    case OKV_ROT_HADAMARD: return "hadamard";
    case OKV_ROT_U_ONLY: return "u_only";
    case OKV_ROT_PLAIN_COV: return "plain_cov";
    case OKV_ROT_FORCE_32BIT: break;
    }
    return "?";
}

typedef struct fin_ctx {
    okv_calibrator_t *cal;
    const okv_calib_options_t *opt;
    int d, hq, hkv, g, n_rot;
    int scale_keys;                   /* key scaling applies (option set and an eigen method of C_Q) */
    double *target, *U, *w, *R, *tmp; /* d x d scratch (w: d) */
    double *scale;                    /* d: the key scaling D */
} fin_ctx_t;

/* Target matrix (full symmetric) of layer L, K (kv 0) or V (kv 1), rotation r
 * (r = KV head for per-head granularity, ignored per layer: mean over heads); plain: the
 * second moment K^T K / N (V^T V / N) instead of the attention-aware target. */
static okv_status_t build_target(fin_ctx_t *F, const calib_layer_t *L, int kv, int r, int plain, double *out)
{
    int d = F->d, hkv = F->hkv;
    int h0 = F->n_rot == 1 ? 0 : r, h1 = F->n_rot == 1 ? hkv : r + 1;
    double N = (double)L->tokens;
    memset(out, 0, sizeof(double) * (size_t)d * d);
    for (int h = h0; h < h1; ++h) {
        double weight = 1.0 / (double)(h1 - h0);
        size_t off = (size_t)h * d * d;
        if (kv == 0 && !plain)
            okv_sym_finish(d, L->cq + off, 1.0 / (N * F->g), F->tmp);
        else if (kv == 0)
            okv_sym_finish(d, L->kk + off, 1.0 / N, F->tmp);
        else if (plain)
            okv_sym_finish(d, L->vv + off, 1.0 / N, F->tmp);
        else if (F->cal->desc.value_target == OKV_VALUE_TARGET_EXACT)
            okv_sym_finish(d, L->cs + off, 1.0 / (N * F->g), F->tmp);
        else {
            okv_sym_finish(d, L->cq + off, 1.0 / (N * F->g), F->R); /* C_Q,h into scratch R */
            if (okv_reference_value_target(L->chunks, hkv, d, h, F->R, F->tmp) != OKV_SUCCESS)
                return OKV_ERROR_OUT_OF_MEMORY;
        }
        for (size_t i = 0; i < (size_t)d * d; ++i)
            out[i] += weight * F->tmp[i];
    }
    return OKV_SUCCESS;
}

/* Key scaling D (see okv_calib_options_t.scale_keys) of rotation r from C_Q's eigenpairs
 * (U columns, lam ascending): mu_i = u_i^T C_K u_i with C_K the second moment of the keys
 * as the cache stores them (centered by k_mean when it is set); lam and mu each get
 * scale_eps times their mean added (bounds D where both vanish), D_i = (lam_i / mu_i)^(1/4)
 * normalised to geometric mean 1. Minimises E[(q.e)^2] ~ (sum mu_i D_i^2)(sum lam_i / D_i^2)
 * over D when the INT2 error e is isotropic after H with variance ~ the row's energy. */
static void key_scaling(fin_ctx_t *F, const calib_layer_t *L, const okv_rot_layer_t *RL, int r, double *D)
{
    int d = F->d;
    double *C = F->target;
    build_target(F, L, 0, r, 1, C); /* K^T K / N: cannot fail (no reference value target) */
    if (RL->k_mean) {               /* E[(k - m)(k - m)^T] = E[k k^T] - m m^T when m is the mean of those keys */
        const float *m = RL->k_mean + (size_t)r * d;
        for (int i = 0; i < d; ++i)
            for (int j = 0; j < d; ++j)
                C[(size_t)i * d + j] -= (double)m[i] * (double)m[j];
    }
    double lam_mean = 0.0, mu_mean = 0.0;
    for (int k = 0; k < d; ++k) {
        double mu = 0.0;
        for (int i = 0; i < d; ++i) {
            double ci = 0.0;
            for (int j = 0; j < d; ++j)
                ci += C[(size_t)i * d + j] * F->U[(size_t)j * d + k];
            mu += F->U[(size_t)i * d + k] * ci;
        }
        D[k] = mu > 0.0 ? mu : 0.0; /* mu for now */
        mu_mean += D[k] / d;
        lam_mean += (F->w[k] > 0.0 ? F->w[k] : 0.0) / d;
    }
    double eps = (double)F->opt->scale_eps, log_mean = 0.0;
    for (int k = 0; k < d; ++k) {
        double lam = (F->w[k] > 0.0 ? F->w[k] : 0.0) + eps * lam_mean;
        double mu = D[k] + eps * mu_mean;
        D[k] = (lam > 0.0 && mu > 0.0) ? pow(lam / mu, 0.25) : 1.0;
        log_mean += log(D[k]) / d;
    }
    double norm = exp(-log_mean);
    for (int k = 0; k < d; ++k)
        D[k] *= norm;
}

/* rot <- compose(U diag(D^sign)): the key (sign +1) or query (sign -1) matrix of key scaling. */
static okv_status_t compose_scaled(fin_ctx_t *F, const double *D, int sign, float *rot)
{
    int d = F->d;
    for (int i = 0; i < d; ++i)
        for (int k = 0; k < d; ++k)
            F->tmp[(size_t)i * d + k] = sign > 0 ? F->U[(size_t)i * d + k] * D[k] : F->U[(size_t)i * d + k] / D[k];
    okv_status_t st = okv_compose_rotation(F->opt->method, d, F->tmp, F->opt->use_permutation, F->R);
    for (size_t i = 0; st == OKV_SUCCESS && i < (size_t)d * d; ++i)
        rot[i] = (float)F->R[i];
    return st;
}

static okv_status_t rotate_rows(const float *x, float *out, int rows, int heads, int d, const float *rot, int n_rot,
                                int head_group)
{
    for (int t = 0; t < rows; ++t)
        for (int h = 0; h < heads; ++h) {
            const float *R = rot + (size_t)(n_rot == 1 ? 0 : h / head_group) * d * d;
            const float *xr = x + ((size_t)t * heads + h) * d;
            float *o = out + ((size_t)t * heads + h) * d;
            double acc[256];
            for (int c = 0; c < d; ++c)
                acc[c] = 0.0;
            for (int a = 0; a < d; ++a) {
                double xa = xr[a];
                const float *Rr = R + (size_t)a * d;
                for (int c = 0; c < d; ++c)
                    acc[c] += xa * Rr[c];
            }
            for (int c = 0; c < d; ++c)
                o[c] = (float)acc[c];
        }
    return OKV_SUCCESS;
}

static okv_status_t fit_layer_clips(fin_ctx_t *F, const calib_layer_t *L, okv_rot_layer_t *RL, int layer, char *report,
                                    size_t report_cap)
{
    int t = L->held, d = F->d;
    float *q = malloc(sizeof(float) * (size_t)t * F->hq * d);
    float *k = malloc(sizeof(float) * (size_t)t * F->hkv * d);
    float *v = malloc(sizeof(float) * (size_t)t * F->hkv * d);
    unsigned char *exact = malloc((size_t)t);
    okv_status_t st = OKV_SUCCESS;
    if (!q || !k || !v || !exact) st = okv_fail(&F->cal->err, OKV_ERROR_OUT_OF_MEMORY, "clip fit: out of memory");
    if (st == OKV_SUCCESS) {
        rotate_rows(L->hq, q, t, F->hq, d, RL->q_rot ? RL->q_rot : RL->k_rot, F->n_rot, F->g);
        if (RL->k_mean) {
            /* the cache stores (k - k_mean) R: center in float like the backends, into v's
             * buffer (rotated into k, then v is overwritten below) */
            for (int i = 0; i < t; ++i)
                for (int h = 0; h < F->hkv; ++h) {
                    const float *mu = RL->k_mean + (size_t)(F->n_rot == 1 ? 0 : h) * d;
                    const float *src = L->hk + ((size_t)i * F->hkv + h) * d;
                    float *dst = v + ((size_t)i * F->hkv + h) * d;
                    for (int c = 0; c < d; ++c)
                        dst[c] = src[c] - mu[c];
                }
            rotate_rows(v, k, t, F->hkv, d, RL->k_rot, F->n_rot, 1);
        } else {
            rotate_rows(L->hk, k, t, F->hkv, d, RL->k_rot, F->n_rot, 1);
        }
        rotate_rows(L->hv, v, t, F->hkv, d, RL->v_rot, F->n_rot, 1);
        /* held-back rows at sink positions (position inside their add() call < sink_tokens)
         * stay exact, as the cache keeps them in BF16 */
        for (int i = 0; i < t; ++i)
            exact[i] = L->hpos[i] < F->opt->quant.sink_tokens;
        okv_clip_fit_result_t res;
        st = okv_clip_fit(t, F->hq, F->hkv, d, q, k, v, exact, &F->opt->quant, F->opt->k_clip_ratio,
                          F->opt->v_clip_ratio, &res, &F->cal->err);
        if (st == OKV_SUCCESS) {
            RL->k_clip = res.k_ratio;
            RL->v_clip = res.v_ratio;
            size_t n = strlen(report);
            snprintf(report + n, report_cap - n, "%s%d:k=%.2f,%.6g,%.6g;v=%.2f,%.6g,%.6g", n ? " " : "", layer,
                     (double)res.k_ratio, res.k_err, res.k_err_fixed, (double)res.v_ratio, res.v_err, res.v_err_fixed);
        } else {
            size_t n = strlen(F->cal->err.msg);
            snprintf(F->cal->err.msg + n, sizeof F->cal->err.msg - n, " (layer %d)", layer);
        }
    }
    free(q);
    free(k);
    free(v);
    free(exact);
    return st;
}

/* k_mean [n_rot, d]: the mean key per KV head (per-head granularity) or the mean over
 * the layer's KV heads (per layer), float64 sums -> float32. */
static okv_status_t set_k_mean(fin_ctx_t *F, const calib_layer_t *L, okv_rot_layer_t *RL)
{
    int d = F->d;
    RL->k_mean = malloc(sizeof(float) * (size_t)F->n_rot * d);
    if (!RL->k_mean) return okv_fail(&F->cal->err, OKV_ERROR_OUT_OF_MEMORY, "finalize: out of memory");
    double N = (double)L->tokens;
    for (int r = 0; r < F->n_rot; ++r) {
        int h0 = F->n_rot == 1 ? 0 : r, h1 = F->n_rot == 1 ? F->hkv : r + 1;
        for (int c = 0; c < d; ++c) {
            double s = 0.0;
            for (int h = h0; h < h1; ++h)
                s += L->ksum[(size_t)h * d + c];
            RL->k_mean[(size_t)r * d + c] = (float)(s / (N * (double)(h1 - h0)));
        }
    }
    return OKV_SUCCESS;
}

/* Key scaling needs C_Q's eigenvectors: OSCAR and U_ONLY (PLAIN_COV's U comes from K^T K). */
static int scaling_applies(const okv_calib_options_t *o)
{
    return o->scale_keys && (o->method == OKV_ROT_OSCAR || o->method == OKV_ROT_U_ONLY);
}

static okv_status_t check_options(okv_calibrator_t *cal, const okv_calib_options_t *opt)
{
    okv_err_t *e = &cal->err;
    if (opt->size < offsetof(okv_calib_options_t, scale_keys))
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT,
                        "okv_calib_options_t.size %zu < %zu (use okv_calib_options_init)", opt->size,
                        offsetof(okv_calib_options_t, scale_keys));
    if (opt->scale_keys && !(opt->scale_eps > 0.0f && opt->scale_eps <= 1e3f))
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "scale_eps %g outside (0, 1000]", (double)opt->scale_eps);
    if ((int)opt->method < OKV_ROT_OSCAR || (int)opt->method > OKV_ROT_PLAIN_COV)
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "unknown rotation method %d", (int)opt->method);
    if (opt->granularity != OKV_GRANULARITY_LAYER && opt->granularity != OKV_GRANULARITY_HEAD)
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "unknown granularity %d", (int)opt->granularity);
    if (!(opt->k_clip_ratio > 0.0f && opt->k_clip_ratio <= 1.0f) ||
        !(opt->v_clip_ratio > 0.0f && opt->v_clip_ratio <= 1.0f))
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "clip ratios %g / %g outside (0, 1]", (double)opt->k_clip_ratio,
                        (double)opt->v_clip_ratio);
    for (int32_t l = 0; l < cal->desc.n_layers; ++l) {
        if (cal->layers[l].tokens < 1)
            return okv_fail(e, OKV_ERROR_INSUFFICIENT_DATA, "layer %d has no calibration tokens", (int)l);
        if (opt->fit_clips && cal->layers[l].held < 2)
            return okv_fail(e, OKV_ERROR_INSUFFICIENT_DATA,
                            "layer %d: %d held-back tokens, clip fitting needs >= 2 (holdout_tokens %d)", (int)l,
                            (int)cal->layers[l].held, (int)cal->desc.holdout_tokens);
    }
    return OKV_SUCCESS;
}

static okv_status_t put_meta(okv_calibrator_t *cal, okv_rotation_set_t *rs, const okv_calib_options_t *opt,
                             const char *report)
{
    char buf[64];
    int64_t tmin = INT64_MAX, tmax = 0;
    for (int32_t l = 0; l < cal->desc.n_layers; ++l) {
        tmin = cal->layers[l].tokens < tmin ? cal->layers[l].tokens : tmin;
        tmax = cal->layers[l].tokens > tmax ? cal->layers[l].tokens : tmax;
    }
    okv_status_t st = OKV_SUCCESS;
#define PUT(k, v)                                                                                                      \
    do {                                                                                                               \
        if (st == OKV_SUCCESS) st = okv_rot_meta_put(rs, k, v);                                                        \
    } while (0)
    PUT("format", "oscarkv-rotation");
    /* 2: the set carries q_rotation (queries must not use k_rotation); 1 otherwise */
    PUT("format_version", scaling_applies(opt) ? "2" : "1");
    PUT("method", method_name(opt->method));
    PUT("granularity", opt->granularity == OKV_GRANULARITY_HEAD ? "head" : "layer");
    PUT("value_target", cal->desc.value_target == OKV_VALUE_TARGET_EXACT ? "exact" : "reference");
    PUT("permutation", opt->use_permutation ? "bit_reversal" : "none");
    snprintf(buf, sizeof buf, "%lld", (long long)tmin);
    PUT("tokens", buf);
    if (tmax != tmin) {
        snprintf(buf, sizeof buf, "%lld", (long long)tmax);
        PUT("tokens_max", buf);
    }
    snprintf(buf, sizeof buf, "%d", (int)cal->desc.n_q_heads);
    PUT("n_q_heads", buf);
    snprintf(buf, sizeof buf, "%d", (int)cal->desc.n_kv_heads);
    PUT("n_kv_heads", buf);
    PUT("center_keys", opt->center_keys ? "1" : "0");
    PUT("key_scaling", scaling_applies(opt) ? "query_energy" : "none");
    if (scaling_applies(opt)) {
        snprintf(buf, sizeof buf, "%.4g", (double)opt->scale_eps);
        PUT("scale_eps", buf);
    }
    PUT("clip_mode", opt->fit_clips ? "fitted" : "fixed");
    snprintf(buf, sizeof buf, "%.4g", (double)opt->k_clip_ratio);
    PUT("k_clip_fixed", buf);
    snprintf(buf, sizeof buf, "%.4g", (double)opt->v_clip_ratio);
    PUT("v_clip_fixed", buf);
    if (opt->fit_clips) {
        snprintf(buf, sizeof buf, "%d", (int)cal->desc.holdout_tokens);
        PUT("holdout_tokens", buf);
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)cal->desc.seed);
        PUT("seed", buf);
        snprintf(buf, sizeof buf, "group=%d,meta=%s,quantizer=%s,clip=%s",
                 (int)(opt->quant.group_size ? opt->quant.group_size : cal->desc.head_dim),
                 opt->quant.meta_dtype == OKV_DTYPE_F32 ? "f32"
                                                        : (opt->quant.meta_dtype == OKV_DTYPE_BF16 ? "bf16" : "f16"),
                 opt->quant.quantizer == OKV_QUANT_LLOYD_MAX ? "lloyd_max" : "uniform",
                 opt->quant.clip_mode == OKV_CLIP_BISECT ? "bisect" : "sort");
        PUT("clip_fit_quant", buf);
        /* per layer "i:k=ratio,err_fitted,err_fixed;v=ratio,err_fitted,err_fixed" */
        PUT("clip_fit", report);
    }
#undef PUT
    return st;
}

OKV_API okv_status_t okv_calibrator_finalize(okv_calibrator_t *cal, const okv_calib_options_t *opt,
                                             okv_rotation_set_t **rotations)
{
    if (!cal) return OKV_ERROR_NULL_POINTER;
    if (!opt || !rotations)
        return okv_fail(&cal->err, OKV_ERROR_NULL_POINTER, "okv_calibrator_finalize: NULL argument");
    *rotations = NULL;
    /* options structs from before scale_keys (smaller size): no key scaling */
    okv_calib_options_t o;
    okv_calib_options_init(&o);
    o.scale_keys = 0;
    memcpy(&o, opt, opt->size < sizeof o ? opt->size : sizeof o);
    opt = &o;
    okv_status_t st = check_options(cal, opt);
    if (st != OKV_SUCCESS) return st;
    fin_ctx_t F = {0};
    F.cal = cal;
    F.opt = opt;
    F.scale_keys = scaling_applies(opt);
    F.d = cal->desc.head_dim;
    F.hq = cal->desc.n_q_heads;
    F.hkv = cal->desc.n_kv_heads;
    F.g = F.hq / F.hkv;
    F.n_rot = opt->granularity == OKV_GRANULARITY_HEAD ? F.hkv : 1;
    size_t dd = (size_t)F.d * F.d;
    okv_rotation_set_t *rs = NULL;
    char *report = calloc((size_t)cal->desc.n_layers * 96 + 1, 1);
    F.target = malloc(sizeof(double) * dd);
    F.U = malloc(sizeof(double) * dd);
    F.R = malloc(sizeof(double) * dd);
    F.tmp = malloc(sizeof(double) * dd);
    F.w = malloc(sizeof(double) * (size_t)F.d);
    F.scale = malloc(sizeof(double) * (size_t)F.d);
    if (!report || !F.target || !F.U || !F.R || !F.tmp || !F.w || !F.scale) {
        st = okv_fail(&cal->err, OKV_ERROR_OUT_OF_MEMORY, "finalize: out of memory");
        goto done;
    }
    st = okv_rotation_set_create(cal->desc.n_layers, F.d, F.n_rot, &rs);
    if (st != OKV_SUCCESS) {
        okv_fail(&cal->err, st, "finalize: %s", okv_rotation_last_error());
        goto done;
    }
    int eigen = okv_method_uses_eigen(opt->method);
    for (int32_t l = 0; l < cal->desc.n_layers && st == OKV_SUCCESS; ++l) {
        const calib_layer_t *L = &cal->layers[l];
        okv_rot_layer_t *RL = &rs->layers[l];
        if (opt->center_keys) { /* before the rotations: key scaling measures the centered keys */
            st = set_k_mean(&F, L, RL);
            if (st != OKV_SUCCESS) break;
        }
        if (F.scale_keys && !(RL->q_rot = malloc(sizeof(float) * (size_t)F.n_rot * dd))) {
            st = okv_fail(&cal->err, OKV_ERROR_OUT_OF_MEMORY, "finalize: out of memory");
            break;
        }
        for (int kv = 0; kv < 2 && st == OKV_SUCCESS; ++kv) {
            float *rot = kv ? RL->v_rot : RL->k_rot;
            float **eig = kv ? &RL->v_eig : &RL->k_eig;
            if (eigen) {
                *eig = malloc(sizeof(float) * (size_t)F.n_rot * F.d);
                if (!*eig) {
                    st = okv_fail(&cal->err, OKV_ERROR_OUT_OF_MEMORY, "finalize: out of memory");
                    break;
                }
            }
            for (int r = 0; r < F.n_rot && st == OKV_SUCCESS; ++r) {
                if (eigen) {
                    st = build_target(&F, L, kv, r, opt->method == OKV_ROT_PLAIN_COV, F.target);
                    if (st != OKV_SUCCESS) {
                        okv_fail(&cal->err, st, "finalize: out of memory building layer %d targets", (int)l);
                        break;
                    }
                    st = okv_eig_sym(F.d, F.target, F.U, F.w);
                    if (st != OKV_SUCCESS) {
                        okv_fail(&cal->err, st, "layer %d %c target (rotation %d): eigensolver did not converge",
                                 (int)l, kv ? 'V' : 'K', r);
                        break;
                    }
                    for (int i = 0; i < F.d; ++i)
                        (*eig)[(size_t)r * F.d + i] = (float)F.w[i];
                }
                if (kv == 0 && F.scale_keys) {
                    key_scaling(&F, L, RL, r, F.scale);
                    st = compose_scaled(&F, F.scale, +1, rot + (size_t)r * dd);
                    if (st == OKV_SUCCESS) st = compose_scaled(&F, F.scale, -1, RL->q_rot + (size_t)r * dd);
                } else {
                    st = okv_compose_rotation(opt->method, F.d, eigen ? F.U : NULL, opt->use_permutation, F.R);
                    for (size_t i = 0; st == OKV_SUCCESS && i < dd; ++i)
                        rot[(size_t)r * dd + i] = (float)F.R[i];
                }
                if (st != OKV_SUCCESS) {
                    okv_fail(&cal->err, st, "finalize: composing the rotation failed");
                    break;
                }
            }
        }
        if (st != OKV_SUCCESS) break;
        RL->k_clip = opt->k_clip_ratio;
        RL->v_clip = opt->v_clip_ratio;
        if (opt->fit_clips) st = fit_layer_clips(&F, L, RL, (int)l, report, (size_t)cal->desc.n_layers * 96 + 1);
        if (opt->progress && st == OKV_SUCCESS)
            okv_log(OKV_LOG_INFO, "calibration: layer %d/%d done (%s, %lld tokens, clips %.2f/%.2f)", (int)l + 1,
                    (int)cal->desc.n_layers, method_name(opt->method), (long long)L->tokens, (double)RL->k_clip,
                    (double)RL->v_clip);
    }
    if (st == OKV_SUCCESS) {
        st = put_meta(cal, rs, opt, report);
        if (st != OKV_SUCCESS) okv_fail(&cal->err, st, "finalize: %s", okv_rotation_last_error());
    }
done:
    free(report);
    free(F.target);
    free(F.U);
    free(F.R);
    free(F.tmp);
    free(F.w);
    free(F.scale);
    if (st != OKV_SUCCESS) {
        okv_rotation_set_destroy(rs);
        return st;
    }
    *rotations = rs;
    return OKV_SUCCESS;
}
