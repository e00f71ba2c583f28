/* safetensors_read.c - parse and validate a rotation file (okv_rotation_set_load*).
 * Every size is checked before it is used; nothing is read outside the input. */
#include "safetensors.h"

#include "calib_util.h"
#include "json.h"
#include "rotation_set.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { T_KROT, T_VROT, T_KEIG, T_VEIG, T_KCLIP, T_VCLIP, T_KMEAN, T_QROT, T_COUNT };
static const char *const k_suffix[T_COUNT] = {"k_rotation", "v_rotation", "k_eigenvalues", "v_eigenvalues",
                                              "k_clip",     "v_clip",     "k_mean",        "q_rotation"};

typedef struct tensor_ref {
    const okv_json_t *entry; /* NULL when absent */
    const char *name;
    int ndim;
    uint64_t shape[8];
    uint64_t begin, end;
} tensor_ref_t;

#define CORRUPT(...) okv_rot_fail(OKV_ERROR_CORRUPT_FILE, __VA_ARGS__)

/* Strict decimal: no sign, no leading zeros (except "0"), fits in int32. */
static int parse_dec(const char *s, int32_t *out)
{
    if (!s || !*s) return 0;
    if (s[0] == '0' && s[1] != '\0') return 0;
    int64_t v = 0;
    for (const char *c = s; *c; ++c) {
        if (*c < '0' || *c > '9') return 0;
        v = v * 10 + (*c - '0');
        if (v > INT32_MAX) return 0;
    }
    *out = (int32_t)v;
    return 1;
}

/* "layer.<i>.<suffix>" -> (i, t). 1 matched, 0 not a layer tensor, -1 malformed. */
static int parse_name(const char *name, int32_t *layer, int *t)
{
    if (strncmp(name, "layer.", 6) != 0) return 0;
    const char *p = name + 6;
    const char *dot = strchr(p, '.');
    if (!dot || dot == p || dot - p > 9) return -1;
    char num[16];
    memcpy(num, p, (size_t)(dot - p));
    num[dot - p] = '\0';
    if (!parse_dec(num, layer)) return -1;
    for (int k = 0; k < T_COUNT; ++k)
        if (strcmp(dot + 1, k_suffix[k]) == 0) {
            *t = k;
            return 1;
        }
    return -1;
}

static okv_status_t read_entry(const char *name, const okv_json_t *e, uint64_t data_len, tensor_ref_t *out)
{
    if (e->type != OKV_JSON_OBJECT) return CORRUPT("tensor %s: entry is not an object", name);
    const okv_json_t *dt = okv_json_get(e, "dtype"), *sh = okv_json_get(e, "shape"),
                     *of = okv_json_get(e, "data_offsets");
    if (!dt || !sh || !of) return CORRUPT("tensor %s: missing dtype, shape or data_offsets", name);
    if (dt->type != OKV_JSON_STRING || strcmp(dt->str, "F32") != 0)
        return CORRUPT("tensor %s: dtype must be \"F32\"", name);
    if (sh->type != OKV_JSON_ARRAY || sh->count > 8)
        return CORRUPT("tensor %s: shape must be an array of <= 8 ints", name);
    uint64_t n = 1;
    out->ndim = (int)sh->count;
    for (size_t i = 0; i < sh->count; ++i) {
        const okv_json_t *x = &sh->items[i];
        if (x->type != OKV_JSON_NUMBER || !x->is_int || x->ival < 0)
            return CORRUPT("tensor %s: shape entries must be non-negative integers", name);
        out->shape[i] = (uint64_t)x->ival;
        if (out->shape[i] != 0 && n > UINT64_MAX / 8 / out->shape[i])
            return CORRUPT("tensor %s: shape too large", name);
        n *= out->shape[i];
    }
    if (of->type != OKV_JSON_ARRAY || of->count != 2)
        return CORRUPT("tensor %s: data_offsets must be [begin, end]", name);
    for (int i = 0; i < 2; ++i)
        if (of->items[i].type != OKV_JSON_NUMBER || !of->items[i].is_int || of->items[i].ival < 0)
            return CORRUPT("tensor %s: data_offsets must be non-negative integers", name);
    out->begin = (uint64_t)of->items[0].ival;
    out->end = (uint64_t)of->items[1].ival;
    if (out->begin > out->end || out->end > data_len)
        return CORRUPT("tensor %s: data_offsets [%llu, %llu] outside the data section (%llu bytes)", name,
                       (unsigned long long)out->begin, (unsigned long long)out->end, (unsigned long long)data_len);
    if (out->end - out->begin != 4 * n)
        return CORRUPT("tensor %s: %llu bytes for %llu F32 elements", name, (unsigned long long)(out->end - out->begin),
                       (unsigned long long)n);
    out->entry = e;
    out->name = name;
    return OKV_SUCCESS;
}

static int cmp_begin(const void *a, const void *b)
{
    const tensor_ref_t *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : (x->end > y->end);
}

static void get_f32s(float *dst, const unsigned char *src, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        uint32_t u = (uint32_t)src[4 * i] | (uint32_t)src[4 * i + 1] << 8 | (uint32_t)src[4 * i + 2] << 16 |
                     (uint32_t)src[4 * i + 3] << 24;
        memcpy(&dst[i], &u, 4);
    }
}

static int shape_is(const tensor_ref_t *t, int ndim, uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t want[3] = {a, b, c};
    if (t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; ++i)
        if (t->shape[i] != want[i]) return 0;
    return 1;
}

static okv_status_t build_set(const okv_json_t *root, const okv_json_t *meta, const unsigned char *data,
                              const tensor_ref_t *all, size_t n_all, okv_rotation_set_t **out)
{
    const okv_json_t *hd = okv_json_get(meta, "head_dim"), *nl = okv_json_get(meta, "n_layers");
    int32_t d, n_layers;
    if (!hd || !nl) return CORRUPT("__metadata__ lacks head_dim or n_layers");
    if (!parse_dec(hd->str, &d) || !okv_calib_head_dim_ok(d))
        return CORRUPT("__metadata__.head_dim \"%s\" invalid", hd->str);
    if (!parse_dec(nl->str, &n_layers) || n_layers < 1 || n_layers > OKV_ROT_MAX_LAYERS)
        return CORRUPT("__metadata__.n_layers \"%s\" invalid (1..%d)", nl->str, OKV_ROT_MAX_LAYERS);
    (void)root;
    /* slot table: n_layers x T_COUNT */
    const tensor_ref_t **slot = calloc((size_t)n_layers * T_COUNT, sizeof *slot);
    if (!slot) return okv_rot_fail(OKV_ERROR_OUT_OF_MEMORY, "load: out of memory");
    okv_status_t st = OKV_SUCCESS;
    for (size_t i = 0; i < n_all && st == OKV_SUCCESS; ++i) {
        int32_t layer;
        int t;
        int r = parse_name(all[i].name, &layer, &t);
        if (r == 0) continue;
        if (r < 0)
            st = CORRUPT("tensor name \"%s\" is not layer.<i>.<known suffix>", all[i].name);
        else if (layer >= n_layers)
            st = CORRUPT("tensor %s: layer >= n_layers (%d)", all[i].name, (int)n_layers);
        else if (slot[(size_t)layer * T_COUNT + t])
            st = CORRUPT("tensor %s given twice", all[i].name);
        else
            slot[(size_t)layer * T_COUNT + t] = &all[i];
    }
    /* n_rot from layer 0's k_rotation */
    int32_t n_rot = 0;
    if (st == OKV_SUCCESS) {
        const tensor_ref_t *k0 = slot[T_KROT];
        if (!k0)
            st = CORRUPT("layer.0.k_rotation missing");
        else if (shape_is(k0, 2, (uint64_t)d, (uint64_t)d, 0))
            n_rot = 1;
        else if (k0->ndim == 3 && k0->shape[0] >= 1 && k0->shape[0] <= OKV_ROT_MAX_NROT &&
                 shape_is(k0, 3, k0->shape[0], (uint64_t)d, (uint64_t)d))
            n_rot = (int32_t)k0->shape[0];
        else
            st = CORRUPT("layer.0.k_rotation: shape is not [d, d] or [n_rot, d, d] with d = %d", (int)d);
    }
    if (st == OKV_SUCCESS) {
        const okv_json_t *nr = okv_json_get(meta, "n_rot");
        int32_t v;
        if (nr && (!parse_dec(nr->str, &v) || v != n_rot))
            st = CORRUPT("__metadata__.n_rot \"%s\" disagrees with the tensors (%d)", nr->str, (int)n_rot);
    }
    /* shapes of every layer, before allocating anything large */
    for (int32_t l = 0; l < n_layers && st == OKV_SUCCESS; ++l) {
        for (int t = 0; t < T_COUNT && st == OKV_SUCCESS; ++t) {
            const tensor_ref_t *x = slot[(size_t)l * T_COUNT + t];
            if (!x) {
                if (t != T_KEIG && t != T_VEIG && t != T_KMEAN && t != T_QROT)
                    st = CORRUPT("layer.%d.%s missing", (int)l, k_suffix[t]);
                continue;
            }
            int ok;
            if (t == T_KROT || t == T_VROT || t == T_QROT)
                ok = n_rot == 1 ? shape_is(x, 2, (uint64_t)d, (uint64_t)d, 0)
                                : shape_is(x, 3, (uint64_t)n_rot, (uint64_t)d, (uint64_t)d);
            else if (t == T_KEIG || t == T_VEIG || t == T_KMEAN)
                ok = n_rot == 1 ? shape_is(x, 1, (uint64_t)d, 0, 0) : shape_is(x, 2, (uint64_t)n_rot, (uint64_t)d, 0);
            else
                ok = shape_is(x, 1, 1, 0, 0);
            if (!ok) st = CORRUPT("tensor %s: wrong shape for head_dim %d, n_rot %d", x->name, (int)d, (int)n_rot);
        }
    }
    okv_rotation_set_t *rs = NULL;
    if (st == OKV_SUCCESS) st = okv_rotation_set_create(n_layers, d, n_rot, &rs);
    size_t mat = (size_t)n_rot * (size_t)d * (size_t)d, ev = (size_t)n_rot * (size_t)d;
    for (int32_t l = 0; l < n_layers && st == OKV_SUCCESS; ++l) {
        okv_rot_layer_t *L = &rs->layers[l];
        const tensor_ref_t *const *s = &slot[(size_t)l * T_COUNT];
        get_f32s(L->k_rot, data + s[T_KROT]->begin, mat);
        get_f32s(L->v_rot, data + s[T_VROT]->begin, mat);
        get_f32s(&L->k_clip, data + s[T_KCLIP]->begin, 1);
        get_f32s(&L->v_clip, data + s[T_VCLIP]->begin, 1);
        for (int e = 0; e < 3 && st == OKV_SUCCESS; ++e) {
            static const int which[3] = {T_KEIG, T_VEIG, T_KMEAN};
            const tensor_ref_t *x = s[which[e]];
            float **dst = e == 0 ? &L->k_eig : (e == 1 ? &L->v_eig : &L->k_mean);
            if (!x) continue;
            *dst = malloc(ev * sizeof(float));
            if (!*dst)
                st = okv_rot_fail(OKV_ERROR_OUT_OF_MEMORY, "load: out of memory");
            else
                get_f32s(*dst, data + x->begin, ev);
        }
        if (st == OKV_SUCCESS && s[T_QROT]) {
            L->q_rot = malloc(mat * sizeof(float));
            if (!L->q_rot)
                st = okv_rot_fail(OKV_ERROR_OUT_OF_MEMORY, "load: out of memory");
            else
                get_f32s(L->q_rot, data + s[T_QROT]->begin, mat);
        }
        if (st != OKV_SUCCESS) break;
        if (!(L->k_clip > 0.0f && L->k_clip <= 1.0f) || !(L->v_clip > 0.0f && L->v_clip <= 1.0f)) {
            st = CORRUPT("layer %d: clip ratios %g / %g outside (0, 1]", (int)l, (double)L->k_clip, (double)L->v_clip);
            break;
        }
        for (size_t i = 0; i < ev && st == OKV_SUCCESS; ++i)
            if ((L->k_eig && !isfinite(L->k_eig[i])) || (L->v_eig && !isfinite(L->v_eig[i])))
                st = CORRUPT("layer %d: NaN/Inf eigenvalue", (int)l);
        for (size_t i = 0; i < ev && st == OKV_SUCCESS && L->k_mean; ++i)
            if (!isfinite(L->k_mean[i])) st = CORRUPT("layer %d: NaN/Inf in k_mean", (int)l);
        for (int32_t r = 0; r < n_rot && st == OKV_SUCCESS; ++r) {
            for (int kv = 0; kv < 2 && st == OKV_SUCCESS; ++kv) {
                const float *R = (kv ? L->v_rot : L->k_rot) + (size_t)r * d * d;
                if (!kv && L->q_rot) { /* key scaling: R is not orthogonal, but q_rotation must be R^-T */
                    double err = okv_rot_pair_error(d, R, L->q_rot + (size_t)r * d * d);
                    if (!(err <= OKV_ROT_ORTHO_TOL))
                        st = CORRUPT("layer %d q_rotation[%d] is not k_rotation^-T (max |R Q^T - I| = %g > %g)", (int)l,
                                     (int)r, err, OKV_ROT_ORTHO_TOL);
                    continue;
                }
                double err = okv_rot_ortho_error(d, R); /* NaN/Inf -> not <= tol */
                if (!(err <= OKV_ROT_ORTHO_TOL))
                    st = CORRUPT("layer %d %c_rotation[%d] is not orthogonal (max |R^T R - I| = %g > %g)", (int)l,
                                 kv ? 'v' : 'k', (int)r, err, OKV_ROT_ORTHO_TOL);
            }
        }
    }
    /* metadata: every entry (structural keys are already set and consistent) */
    for (size_t i = 0; i < meta->count && st == OKV_SUCCESS; ++i) {
        const char *k = meta->keys[i];
        if (strcmp(k, "head_dim") == 0 || strcmp(k, "n_layers") == 0 || strcmp(k, "n_rot") == 0) continue;
        st = okv_rot_meta_put(rs, k, meta->items[i].str);
        if (st == OKV_ERROR_INVALID_ARGUMENT) st = CORRUPT("__metadata__: %s", okv_rotation_last_error());
    }
    free(slot);
    if (st != OKV_SUCCESS) {
        okv_rotation_set_destroy(rs);
        return st;
    }
    *out = rs;
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_rotation_set_load_memory(const void *data, size_t bytes, okv_rotation_set_t **out)
{
    if (out) *out = NULL;
    if (!data || !out) return okv_rot_fail(OKV_ERROR_NULL_POINTER, "okv_rotation_set_load_memory: NULL argument");
    const unsigned char *b = data;
    if (bytes < 8) return CORRUPT("truncated: %zu bytes, no header length", bytes);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; --i)
        hl = hl << 8 | b[i];
    if (hl == 0 || hl > OKV_ST_MAX_HEADER) return CORRUPT("header length %llu out of range", (unsigned long long)hl);
    if (hl > bytes - 8)
        return CORRUPT("truncated: header length %llu but only %zu bytes follow", (unsigned long long)hl, bytes - 8);
    uint64_t data_len = bytes - 8 - hl;
    okv_json_t root;
    char jerr[160];
    if (okv_json_parse((const char *)b + 8, (size_t)hl, &root, jerr, sizeof jerr) != 0)
        return CORRUPT("header: %s", jerr);
    okv_status_t st = OKV_SUCCESS;
    tensor_ref_t *all = NULL;
    size_t n_all = 0;
    const okv_json_t *meta = okv_json_get(&root, "__metadata__");
    if (root.type != OKV_JSON_OBJECT)
        st = CORRUPT("header is not a JSON object");
    else if (!meta || meta->type != OKV_JSON_OBJECT)
        st = CORRUPT("header lacks a __metadata__ object");
    if (st == OKV_SUCCESS && meta)
        for (size_t i = 0; st == OKV_SUCCESS && i < meta->count; ++i)
            if (meta->items[i].type != OKV_JSON_STRING) st = CORRUPT("__metadata__.%s is not a string", meta->keys[i]);
    if (st == OKV_SUCCESS) {
        all = calloc(root.count ? root.count : 1, sizeof *all);
        if (!all) st = okv_rot_fail(OKV_ERROR_OUT_OF_MEMORY, "load: out of memory");
    }
    for (size_t i = 0; st == OKV_SUCCESS && i < root.count; ++i) {
        if (strcmp(root.keys[i], "__metadata__") == 0) continue;
        st = read_entry(root.keys[i], &root.items[i], data_len, &all[n_all]);
        if (st == OKV_SUCCESS) n_all++;
    }
    if (st == OKV_SUCCESS) {
        /* the tensors must tile [0, data_len) exactly */
        qsort(all, n_all, sizeof *all, cmp_begin);
        uint64_t pos = 0;
        for (size_t i = 0; i < n_all && st == OKV_SUCCESS; ++i) {
            if (all[i].begin != pos)
                st = CORRUPT("tensor %s: data_offsets begin %llu, expected %llu (gap or overlap)", all[i].name,
                             (unsigned long long)all[i].begin, (unsigned long long)pos);
            pos = all[i].end;
        }
        if (st == OKV_SUCCESS && pos != data_len)
            st = CORRUPT("data section has %llu bytes, tensors cover %llu", (unsigned long long)data_len,
                         (unsigned long long)pos);
    }
    if (st == OKV_SUCCESS) st = build_set(&root, meta, b + 8 + hl, all, n_all, out);
    free(all);
    okv_json_free(&root);
    if (st == OKV_SUCCESS) okv_rot_clear_error();
    return st;
}

OKV_API okv_status_t okv_rotation_set_load(const char *path, okv_rotation_set_t **out)
{
    if (out) *out = NULL;
    if (!path || !out) return okv_rot_fail(OKV_ERROR_NULL_POINTER, "okv_rotation_set_load: NULL argument");
    FILE *f = fopen(path, "rb");
    if (!f) return okv_rot_fail(OKV_ERROR_IO, "cannot open %s", path);
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    okv_status_t st = OKV_SUCCESS;
    for (;;) {
        if (len == cap) {
            size_t nc = cap ? cap * 2 : 65536;
            unsigned char *nb = nc > cap ? realloc(buf, nc) : NULL;
            if (!nb) {
                st = okv_rot_fail(OKV_ERROR_OUT_OF_MEMORY, "load %s: out of memory", path);
                break;
            }
            buf = nb;
            cap = nc;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0) {
            if (ferror(f)) st = okv_rot_fail(OKV_ERROR_IO, "read error on %s", path);
            break;
        }
    }
    fclose(f);
    if (st == OKV_SUCCESS) {
        st = okv_rotation_set_load_memory(buf, len, out);
        if (st == OKV_ERROR_CORRUPT_FILE) {
            char detail[OKV_ERR_MAX];
            snprintf(detail, sizeof detail, "%s", okv_rotation_last_error());
            okv_rot_fail(st, "%s: %s", path, detail);
        }
    }
    free(buf);
    return st;
}
