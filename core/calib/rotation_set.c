/* rotation_set.c - rotation set handle: create/destroy/info, layers, metadata. */
#include "rotation_set.h"

#include "calib_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const k_readonly_keys[] = {"head_dim", "n_layers", "n_rot"};

static void set_structural_meta(okv_rotation_set_t *rs)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%d", (int)rs->head_dim);
    okv_rot_meta_put(rs, "head_dim", buf);
    snprintf(buf, sizeof buf, "%d", (int)rs->n_layers);
    okv_rot_meta_put(rs, "n_layers", buf);
    snprintf(buf, sizeof buf, "%d", (int)rs->n_rot);
    okv_rot_meta_put(rs, "n_rot", buf);
}

OKV_API okv_status_t okv_rotation_set_create(int32_t n_layers, int32_t head_dim, int32_t n_rot,
                                             okv_rotation_set_t **out)
{
    if (!out) return okv_rot_fail(OKV_ERROR_NULL_POINTER, "okv_rotation_set_create: out is NULL");
    *out = NULL;
    if (!okv_calib_head_dim_ok(head_dim))
        return okv_rot_fail(OKV_ERROR_UNSUPPORTED_HEAD_DIM, "head_dim %d (supported: 64, 128, 256)", (int)head_dim);
    if (n_layers < 1 || n_layers > OKV_ROT_MAX_LAYERS)
        return okv_rot_fail(OKV_ERROR_INVALID_ARGUMENT, "n_layers %d outside [1, %d]", (int)n_layers,
                            OKV_ROT_MAX_LAYERS);
    if (n_rot < 1 || n_rot > OKV_ROT_MAX_NROT)
        return okv_rot_fail(OKV_ERROR_INVALID_ARGUMENT, "n_rot %d outside [1, %d]", (int)n_rot, OKV_ROT_MAX_NROT);
    okv_rotation_set_t *rs = calloc(1, sizeof *rs);
    if (!rs) return okv_rot_fail(OKV_ERROR_OUT_OF_MEMORY, "rotation set: out of memory");
    rs->n_layers = n_layers;
    rs->head_dim = head_dim;
    rs->n_rot = n_rot;
    rs->layers = calloc((size_t)n_layers, sizeof *rs->layers);
    if (!rs->layers) {
        free(rs);
        return okv_rot_fail(OKV_ERROR_OUT_OF_MEMORY, "rotation set: out of memory");
    }
    size_t d = (size_t)head_dim, mat = (size_t)n_rot * d * d;
    for (int32_t l = 0; l < n_layers; ++l) {
        okv_rot_layer_t *L = &rs->layers[l];
        L->k_rot = calloc(mat, sizeof(float));
        L->v_rot = calloc(mat, sizeof(float));
        if (!L->k_rot || !L->v_rot) {
            okv_rotation_set_destroy(rs);
            return okv_rot_fail(OKV_ERROR_OUT_OF_MEMORY, "rotation set: out of memory (%d layers)", (int)n_layers);
        }
        for (size_t r = 0; r < (size_t)n_rot; ++r)
            for (size_t i = 0; i < d; ++i)
                L->k_rot[r * d * d + i * d + i] = L->v_rot[r * d * d + i * d + i] = 1.0f;
        L->k_clip = 0.96f;
        L->v_clip = 0.92f;
    }
    set_structural_meta(rs);
    okv_rot_meta_put(rs, "granularity", n_rot == 1 ? "layer" : "head");
    *out = rs;
    return OKV_SUCCESS;
}

OKV_API void okv_rotation_set_destroy(okv_rotation_set_t *rs)
{
    if (!rs) return;
    if (rs->layers) {
        for (int32_t l = 0; l < rs->n_layers; ++l) {
            free(rs->layers[l].k_rot);
            free(rs->layers[l].v_rot);
            free(rs->layers[l].k_eig);
            free(rs->layers[l].v_eig);
            free(rs->layers[l].k_mean);
            free(rs->layers[l].q_rot);
        }
        free(rs->layers);
    }
    for (int i = 0; i < rs->n_meta; ++i) {
        free(rs->meta[i].key);
        free(rs->meta[i].value);
    }
    free(rs);
}

OKV_API okv_status_t okv_rotation_set_info(const okv_rotation_set_t *rs, int32_t *n_layers, int32_t *head_dim,
                                           int32_t *n_rot)
{
    if (!rs) return okv_rot_fail(OKV_ERROR_NULL_POINTER, "okv_rotation_set_info: rotation set is NULL");
    if (n_layers) *n_layers = rs->n_layers;
    if (head_dim) *head_dim = rs->head_dim;
    if (n_rot) *n_rot = rs->n_rot;
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_rotation_set_get_layer(const okv_rotation_set_t *rs, int32_t layer, okv_layer_rotation_t *out)
{
    if (!rs || !out) return okv_rot_fail(OKV_ERROR_NULL_POINTER, "okv_rotation_set_get_layer: NULL argument");
    if (layer < 0 || layer >= rs->n_layers)
        return okv_rot_fail(OKV_ERROR_INVALID_ARGUMENT, "layer %d outside [0, %d)", (int)layer, (int)rs->n_layers);
    const okv_rot_layer_t *L = &rs->layers[layer];
    memset(out, 0, sizeof *out);
    out->size = sizeof *out;
    out->head_dim = rs->head_dim;
    out->n_rot = rs->n_rot;
    out->k_rotation = L->k_rot;
    out->v_rotation = L->v_rot;
    out->k_eigenvalues = L->k_eig;
    out->v_eigenvalues = L->v_eig;
    out->k_clip_ratio = L->k_clip;
    out->v_clip_ratio = L->v_clip;
    out->k_mean = L->k_mean;
    out->q_rotation = L->q_rot;
    return OKV_SUCCESS;
}

static int all_finite_f(size_t n, const float *x)
{
    for (size_t i = 0; i < n; ++i)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* Copy an optional array of n floats (NULL clears it). memmove: src may be *dst. */
static okv_status_t copy_opt(float **dst, const float *src, size_t n)
{
    if (!src) {
        free(*dst);
        *dst = NULL;
        return OKV_SUCCESS;
    }
    if (!*dst) {
        *dst = malloc(n * sizeof(float));
        if (!*dst) return OKV_ERROR_OUT_OF_MEMORY;
    }
    memmove(*dst, src, n * sizeof(float));
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_rotation_set_set_layer(okv_rotation_set_t *rs, int32_t layer, const okv_layer_rotation_t *in)
{
    if (!rs || !in) return okv_rot_fail(OKV_ERROR_NULL_POINTER, "okv_rotation_set_set_layer: NULL argument");
    if (in->size < offsetof(okv_layer_rotation_t, q_rotation))
        return okv_rot_fail(OKV_ERROR_INVALID_ARGUMENT, "okv_layer_rotation_t.size %zu < %zu", in->size,
                            offsetof(okv_layer_rotation_t, q_rotation));
    const float *q_rotation = OKV_LAYER_ROTATION_HAS_Q(in->size) ? in->q_rotation : NULL;
    if (!in->k_rotation || !in->v_rotation)
        return okv_rot_fail(OKV_ERROR_NULL_POINTER, "okv_rotation_set_set_layer: rotation pointer is NULL");
    if (layer < 0 || layer >= rs->n_layers)
        return okv_rot_fail(OKV_ERROR_INVALID_ARGUMENT, "layer %d outside [0, %d)", (int)layer, (int)rs->n_layers);
    if (in->head_dim != rs->head_dim || in->n_rot != rs->n_rot)
        return okv_rot_fail(OKV_ERROR_BAD_SHAPE, "layer has head_dim %d n_rot %d, set has %d / %d", (int)in->head_dim,
                            (int)in->n_rot, (int)rs->head_dim, (int)rs->n_rot);
    size_t d = (size_t)rs->head_dim, mat = (size_t)rs->n_rot * d * d, ev = (size_t)rs->n_rot * d;
    if (!all_finite_f(mat, in->k_rotation) || !all_finite_f(mat, in->v_rotation) ||
        (in->k_eigenvalues && !all_finite_f(ev, in->k_eigenvalues)) ||
        (in->v_eigenvalues && !all_finite_f(ev, in->v_eigenvalues)) || (in->k_mean && !all_finite_f(ev, in->k_mean)) ||
        (q_rotation && !all_finite_f(mat, q_rotation)) || !isfinite(in->k_clip_ratio) || !isfinite(in->v_clip_ratio))
        return okv_rot_fail(OKV_ERROR_NONFINITE_INPUT, "layer %d: NaN/Inf in rotation, eigenvalues, k_mean or clip",
                            (int)layer);
    for (size_t r = 0; q_rotation && r < (size_t)rs->n_rot; ++r) {
        double err = okv_rot_pair_error((int)d, in->k_rotation + r * d * d, q_rotation + r * d * d);
        if (!(err <= OKV_ROT_ORTHO_TOL))
            return okv_rot_fail(OKV_ERROR_INVALID_ARGUMENT,
                                "layer %d: q_rotation[%d] is not k_rotation^-T (max |R Q^T - I| = %g > %g)", (int)layer,
                                (int)r, err, OKV_ROT_ORTHO_TOL);
    }
    if (!(in->k_clip_ratio > 0.0f && in->k_clip_ratio <= 1.0f) ||
        !(in->v_clip_ratio > 0.0f && in->v_clip_ratio <= 1.0f))
        return okv_rot_fail(OKV_ERROR_INVALID_ARGUMENT, "layer %d: clip ratios %g / %g outside (0, 1]", (int)layer,
                            (double)in->k_clip_ratio, (double)in->v_clip_ratio);
    okv_rot_layer_t *L = &rs->layers[layer];
    if (copy_opt(&L->k_eig, in->k_eigenvalues, ev) != OKV_SUCCESS ||
        copy_opt(&L->v_eig, in->v_eigenvalues, ev) != OKV_SUCCESS ||
        copy_opt(&L->k_mean, in->k_mean, ev) != OKV_SUCCESS || copy_opt(&L->q_rot, q_rotation, mat) != OKV_SUCCESS)
        return okv_rot_fail(OKV_ERROR_OUT_OF_MEMORY, "rotation set: out of memory");
    memmove(L->k_rot, in->k_rotation, mat * sizeof(float));
    memmove(L->v_rot, in->v_rotation, mat * sizeof(float));
    L->k_clip = in->k_clip_ratio;
    L->v_clip = in->v_clip_ratio;
    return OKV_SUCCESS;
}

static int find_meta(const okv_rotation_set_t *rs, const char *key)
{
    for (int i = 0; i < rs->n_meta; ++i)
        if (strcmp(rs->meta[i].key, key) == 0) return i;
    return -1;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

okv_status_t okv_rot_meta_put(okv_rotation_set_t *rs, const char *key, const char *value)
{
    size_t kl = strlen(key), vl = strlen(value);
    if (kl == 0 || kl > OKV_ROT_MAX_META_KEY || vl > OKV_ROT_MAX_META_VALUE)
        return okv_rot_fail(OKV_ERROR_INVALID_ARGUMENT, "metadata key length %zu / value length %zu out of range", kl,
                            vl);
    int i = find_meta(rs, key);
    char *v = dup_str(value);
    if (!v) return okv_rot_fail(OKV_ERROR_OUT_OF_MEMORY, "metadata: out of memory");
    if (i >= 0) {
        free(rs->meta[i].value);
        rs->meta[i].value = v;
        return OKV_SUCCESS;
    }
    if (rs->n_meta >= OKV_ROT_MAX_META) {
        free(v);
        return okv_rot_fail(OKV_ERROR_INVALID_ARGUMENT, "more than %d metadata entries", OKV_ROT_MAX_META);
    }
    char *k = dup_str(key);
    if (!k) {
        free(v);
        return okv_rot_fail(OKV_ERROR_OUT_OF_MEMORY, "metadata: out of memory");
    }
    rs->meta[rs->n_meta].key = k;
    rs->meta[rs->n_meta].value = v;
    rs->n_meta++;
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_rotation_set_get_meta(const okv_rotation_set_t *rs, const char *key, const char **value)
{
    if (value) *value = NULL;
    if (!rs || !key || !value) return okv_rot_fail(OKV_ERROR_NULL_POINTER, "okv_rotation_set_get_meta: NULL argument");
    int i = find_meta(rs, key);
    if (i >= 0) *value = rs->meta[i].value;
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_rotation_set_set_meta(okv_rotation_set_t *rs, const char *key, const char *value)
{
    if (!rs || !key || !value) return okv_rot_fail(OKV_ERROR_NULL_POINTER, "okv_rotation_set_set_meta: NULL argument");
    for (size_t i = 0; i < sizeof k_readonly_keys / sizeof k_readonly_keys[0]; ++i)
        if (strcmp(key, k_readonly_keys[i]) == 0)
            return okv_rot_fail(OKV_ERROR_INVALID_ARGUMENT, "metadata key \"%s\" is derived from the set (read-only)",
                                key);
    return okv_rot_meta_put(rs, key, value);
}

double okv_rot_ortho_error(int d, const float *R)
{
    double worst = 0.0;
    for (int i = 0; i < d; ++i) {
        for (int j = i; j < d; ++j) {
            double s = 0.0;
            for (int k = 0; k < d; ++k)
                s += (double)R[(size_t)k * d + i] * (double)R[(size_t)k * d + j];
            s -= (i == j) ? 1.0 : 0.0;
            double a = fabs(s);
            if (a != a) return INFINITY; /* NaN/Inf input */
            if (a > worst) worst = a;
        }
    }
    return worst;
}

double okv_rot_pair_error(int d, const float *R, const float *Q)
{
    double worst = 0.0;
    for (int i = 0; i < d; ++i) {
        const float *r = R + (size_t)i * d;
        for (int j = 0; j < d; ++j) {
            const float *q = Q + (size_t)j * d;
            double s = 0.0;
            for (int k = 0; k < d; ++k)
                s += (double)r[k] * (double)q[k];
            s -= (i == j) ? 1.0 : 0.0;
            double a = fabs(s);
            if (a != a) return INFINITY; /* NaN/Inf input */
            if (a > worst) worst = a;
        }
    }
    return worst;
}
