/* calibrator.c - okv_calibrator_* handle: create, add (streaming moments), tokens,
 * destroy; the desc/options initialisers. finalize lives in finalize.c. */
#include "calibrator_impl.h"

#include <stdlib.h>
#include <string.h>

OKV_API void okv_calib_desc_init(okv_calib_desc_t *desc)
{
    if (!desc) return;
    memset(desc, 0, sizeof *desc);
    desc->size = sizeof *desc;
    desc->n_layers = 1;
    desc->n_q_heads = 32;
    desc->n_kv_heads = 8;
    desc->head_dim = 128;
    desc->value_target = OKV_VALUE_TARGET_REFERENCE;
    desc->holdout_tokens = 256;
    desc->seed = 0x05ca12u;
}

OKV_API void okv_calib_options_init(okv_calib_options_t *opt)
{
    if (!opt) return;
    memset(opt, 0, sizeof *opt);
    opt->size = sizeof *opt;
    opt->method = OKV_ROT_OSCAR;
    opt->granularity = OKV_GRANULARITY_LAYER;
    opt->use_permutation = 1;
    opt->fit_clips = 0;
    opt->k_clip_ratio = 0.96f;
    opt->v_clip_ratio = 0.92f;
    okv_cache_desc_init(&opt->quant);
    opt->progress = 0;
    opt->center_keys = 1;
    opt->scale_keys = 1;
    opt->scale_eps = 0.01f;
}

#define MAX_CALIB_LAYERS 4096
#define MAX_CALIB_HEADS 1024
/* clip fitting keeps Hq x t^2 softmax probabilities: 128 MiB at Hq 32, t 1024 */
#define MAX_HOLDOUT 1024

OKV_API okv_status_t okv_calibrator_create(const okv_calib_desc_t *desc, okv_calibrator_t **out)
{
    if (!desc || !out) return OKV_ERROR_NULL_POINTER;
    *out = NULL;
    if (desc->size < sizeof *desc) return OKV_ERROR_INVALID_ARGUMENT;
    if (!okv_calib_head_dim_ok(desc->head_dim)) return OKV_ERROR_UNSUPPORTED_HEAD_DIM;
    if (desc->n_layers < 1 || desc->n_layers > MAX_CALIB_LAYERS) return OKV_ERROR_INVALID_ARGUMENT;
    if (desc->n_kv_heads < 1 || desc->n_q_heads < 1 || desc->n_q_heads > MAX_CALIB_HEADS ||
        desc->n_q_heads % desc->n_kv_heads != 0)
        return OKV_ERROR_BAD_SHAPE;
    if (desc->value_target != OKV_VALUE_TARGET_REFERENCE && desc->value_target != OKV_VALUE_TARGET_EXACT)
        return OKV_ERROR_INVALID_ARGUMENT;
    if (desc->holdout_tokens < 0 || desc->holdout_tokens > MAX_HOLDOUT) return OKV_ERROR_INVALID_ARGUMENT;
    okv_calibrator_t *cal = calloc(1, sizeof *cal);
    if (!cal) return OKV_ERROR_OUT_OF_MEMORY;
    cal->desc = *desc;
    cal->desc.size = sizeof cal->desc;
    cal->layers = calloc((size_t)desc->n_layers, sizeof *cal->layers);
    if (!cal->layers) {
        free(cal);
        return OKV_ERROR_OUT_OF_MEMORY;
    }
    for (int32_t l = 0; l < desc->n_layers; ++l)
        okv_rng_seed(&cal->layers[l].rng, desc->seed ^ (0xd1b54a32d192ed03ull * (uint64_t)(l + 1)));
    *out = cal;
    return OKV_SUCCESS;
}

static void free_layer(calib_layer_t *L)
{
    free(L->cq);
    free(L->kk);
    free(L->vv);
    free(L->cs);
    free(L->ksum);
    free(L->hq);
    free(L->hk);
    free(L->hv);
    free(L->hpos);
    for (calib_chunk_t *c = L->chunks; c;) {
        calib_chunk_t *nx = c->next;
        free(c->k);
        free(c->v);
        free(c);
        c = nx;
    }
    memset(L, 0, sizeof *L);
}

OKV_API void okv_calibrator_destroy(okv_calibrator_t *cal)
{
    if (!cal) return;
    for (int32_t l = 0; l < cal->desc.n_layers; ++l)
        free_layer(&cal->layers[l]);
    free(cal->layers);
    free(cal);
}

OKV_API const char *okv_calibrator_last_error(const okv_calibrator_t *cal) { return cal ? cal->err.msg : ""; }

OKV_API okv_status_t okv_calibrator_tokens(const okv_calibrator_t *cal, int32_t layer, int64_t *tokens)
{
    if (!cal || !tokens) return OKV_ERROR_NULL_POINTER;
    if (layer < 0 || layer >= cal->desc.n_layers) return OKV_ERROR_INVALID_ARGUMENT;
    *tokens = cal->layers[layer].tokens;
    return OKV_SUCCESS;
}

static okv_status_t ensure_layer(okv_calibrator_t *cal, calib_layer_t *L)
{
    if (L->cq) return OKV_SUCCESS;
    const okv_calib_desc_t *D = &cal->desc;
    size_t dd = (size_t)D->head_dim * D->head_dim, m = dd * (size_t)D->n_kv_heads;
    size_t hold = (size_t)D->holdout_tokens;
    L->cq = calloc(m, sizeof(double));
    L->kk = calloc(m, sizeof(double));
    L->vv = calloc(m, sizeof(double));
    if (D->value_target == OKV_VALUE_TARGET_EXACT) L->cs = calloc(m, sizeof(double));
    L->ksum = calloc((size_t)D->n_kv_heads * D->head_dim, sizeof(double));
    if (hold) {
        L->hq = malloc(hold * (size_t)D->n_q_heads * D->head_dim * sizeof(float));
        L->hk = malloc(hold * (size_t)D->n_kv_heads * D->head_dim * sizeof(float));
        L->hv = malloc(hold * (size_t)D->n_kv_heads * D->head_dim * sizeof(float));
        L->hpos = malloc(hold * sizeof(int32_t));
    }
    if (!L->cq || !L->kk || !L->vv || !L->ksum || (D->value_target == OKV_VALUE_TARGET_EXACT && !L->cs) ||
        (hold && (!L->hq || !L->hk || !L->hv || !L->hpos))) {
        okv_rng_t rng = L->rng;
        free_layer(L);
        L->rng = rng;
        return OKV_ERROR_OUT_OF_MEMORY;
    }
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_calibrator_add(okv_calibrator_t *cal, int32_t layer, int32_t n_tokens, okv_dtype_t dtype,
                                        const void *q, const void *k, const void *v)
{
    if (!cal) return OKV_ERROR_NULL_POINTER;
    okv_err_t *e = &cal->err;
    const okv_calib_desc_t *D = &cal->desc;
    if (!q || !k || !v) return okv_fail(e, OKV_ERROR_NULL_POINTER, "okv_calibrator_add: q, k or v is NULL");
    if (layer < 0 || layer >= D->n_layers)
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "layer %d outside [0, %d)", (int)layer, (int)D->n_layers);
    if (n_tokens < 0) return okv_fail(e, OKV_ERROR_BAD_SHAPE, "n_tokens %d < 0", (int)n_tokens);
    if (dtype != OKV_DTYPE_F32 && dtype != OKV_DTYPE_F16 && dtype != OKV_DTYPE_BF16)
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "dtype %d: inputs must be F32, F16 or BF16", (int)dtype);
    if (n_tokens == 0) return OKV_SUCCESS;
    int d = D->head_dim, hq = D->n_q_heads, hkv = D->n_kv_heads, g = hq / hkv;
    if ((size_t)n_tokens > SIZE_MAX / ((size_t)hq * (size_t)d * sizeof(float)))
        return okv_fail(e, OKV_ERROR_BAD_SHAPE, "n_tokens %d too large for this address space", (int)n_tokens);
    size_t nq = (size_t)n_tokens * hq * d, nkv = (size_t)n_tokens * hkv * d;
    size_t esz = dtype == OKV_DTYPE_F32 ? 4 : 2;
    float *qf = malloc(nq * sizeof(float));
    float *kf = malloc(nkv * sizeof(float));
    float *vf = malloc(nkv * sizeof(float));
    calib_chunk_t *chunk = NULL;
    okv_status_t st = OKV_SUCCESS;
    if (!qf || !kf || !vf) {
        st = okv_fail(e, OKV_ERROR_OUT_OF_MEMORY, "okv_calibrator_add: out of memory (%d tokens)", (int)n_tokens);
        goto done;
    }
    size_t bad;
    const char *which = NULL;
    if (!okv_calib_to_f32(q, dtype, nq, qf, &bad))
        which = "q";
    else if (!okv_calib_to_f32(k, dtype, nkv, kf, &bad))
        which = "k";
    else if (!okv_calib_to_f32(v, dtype, nkv, vf, &bad))
        which = "v";
    if (which) {
        size_t per = (size_t)(which[0] == 'q' ? hq : hkv) * d;
        st = okv_fail(e, OKV_ERROR_NONFINITE_INPUT,
                      "layer %d: NaN/Inf in %s at token %zu head %zu channel %zu; nothing added", (int)layer, which,
                      bad / per, (bad % per) / (size_t)d, bad % (size_t)d);
        goto done;
    }
    calib_layer_t *L = &cal->layers[layer];
    if (ensure_layer(cal, L) != OKV_SUCCESS) {
        st = okv_fail(e, OKV_ERROR_OUT_OF_MEMORY, "layer %d: out of memory for the moment sums", (int)layer);
        goto done;
    }
    if (D->value_target == OKV_VALUE_TARGET_REFERENCE) {
        chunk = calloc(1, sizeof *chunk);
        if (chunk) {
            chunk->k = malloc(nkv * esz);
            chunk->v = malloc(nkv * esz);
        }
        if (!chunk || !chunk->k || !chunk->v) {
            st = okv_fail(e, OKV_ERROR_OUT_OF_MEMORY, "layer %d: out of memory keeping K/V rows", (int)layer);
            goto done;
        }
        chunk->dtype = dtype;
        chunk->n = n_tokens;
        memcpy(chunk->k, k, nkv * esz);
        memcpy(chunk->v, v, nkv * esz);
    }
    /* From here on nothing can fail except the EXACT target's scratch allocation,
     * which runs first so that a failure leaves the layer untouched. */
    if (D->value_target == OKV_VALUE_TARGET_EXACT) {
        double *cs_new = calloc((size_t)hkv * d * d, sizeof(double));
        if (!cs_new || okv_exact_value_accumulate(n_tokens, hq, hkv, d, qf, kf, vf, cs_new) != OKV_SUCCESS) {
            free(cs_new);
            st = okv_fail(e, OKV_ERROR_OUT_OF_MEMORY, "layer %d: out of memory for the exact value target", (int)layer);
            goto done;
        }
        for (size_t i = 0; i < (size_t)hkv * d * d; ++i)
            L->cs[i] += cs_new[i];
        free(cs_new);
    }
    for (int h = 0; h < hkv; ++h) {
        double *dd = L->cq + (size_t)h * d * d;
        for (int i = h * g; i < (h + 1) * g; ++i)
            okv_sym_accumulate(d, dd, qf + (size_t)i * d, n_tokens, (int64_t)hq * d);
        okv_sym_accumulate(d, L->kk + (size_t)h * d * d, kf + (size_t)h * d, n_tokens, (int64_t)hkv * d);
        okv_sym_accumulate(d, L->vv + (size_t)h * d * d, vf + (size_t)h * d, n_tokens, (int64_t)hkv * d);
        double *ks = L->ksum + (size_t)h * d;
        for (int32_t t = 0; t < n_tokens; ++t) {
            const float *kr = kf + ((size_t)t * hkv + h) * d;
            for (int c = 0; c < d; ++c)
                ks[c] += (double)kr[c];
        }
    }
    okv_holdout_add(L, D->holdout_tokens, n_tokens, hq, hkv, d, qf, kf, vf);
    if (chunk) {
        if (L->last)
            L->last->next = chunk;
        else
            L->chunks = chunk;
        L->last = chunk;
        chunk = NULL;
    }
    L->tokens += n_tokens;
done:
    if (chunk) {
        free(chunk->k);
        free(chunk->v);
        free(chunk);
    }
    free(qf);
    free(kf);
    free(vf);
    return st;
}
