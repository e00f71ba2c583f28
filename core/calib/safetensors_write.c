/* safetensors_write.c - serialise a rotation set (okv_rotation_set_save). */
#include "safetensors.h"

#include "calib_util.h"
#include "json.h"
#include "rotation_set.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf_t;

static void sb_reserve(sbuf_t *b, size_t extra)
{
    if (b->oom) return;
    if (b->len + extra + 1 <= b->cap) return;
    size_t nc = b->cap ? b->cap : 1024;
    while (nc < b->len + extra + 1)
        nc *= 2;
    char *np = realloc(b->p, nc);
    if (!np) {
        b->oom = 1;
        return;
    }
    b->p = np;
    b->cap = nc;
}

static void sb_put(sbuf_t *b, const char *s)
{
    size_t n = strlen(s);
    sb_reserve(b, n);
    if (b->oom) return;
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
}

static void sb_json_string(sbuf_t *b, const char *s)
{
    size_t need = okv_json_escape(s, NULL, 0);
    sb_reserve(b, need);
    if (b->oom) return;
    okv_json_escape(s, b->p + b->len, need + 1);
    b->len += need;
}

static void sb_tensor(sbuf_t *b, const char *name, const size_t *shape, int ndim, size_t *offset)
{
    char tmp[160];
    size_t n = 1;
    for (int i = 0; i < ndim; ++i)
        n *= shape[i];
    sb_put(b, ",");
    sb_json_string(b, name);
    sb_put(b, ":{\"dtype\":\"F32\",\"shape\":[");
    for (int i = 0; i < ndim; ++i) {
        snprintf(tmp, sizeof tmp, "%s%zu", i ? "," : "", shape[i]);
        sb_put(b, tmp);
    }
    snprintf(tmp, sizeof tmp, "],\"data_offsets\":[%zu,%zu]}", *offset, *offset + 4 * n);
    sb_put(b, tmp);
    *offset += 4 * n;
}

static unsigned char *put_f32s(unsigned char *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        dst[0] = (unsigned char)u;
        dst[1] = (unsigned char)(u >> 8);
        dst[2] = (unsigned char)(u >> 16);
        dst[3] = (unsigned char)(u >> 24);
        dst += 4;
    }
    return dst;
}

okv_status_t okv_st_save_memory(const okv_rotation_set_t *rs, unsigned char **out, size_t *out_len)
{
    if (!rs || !out || !out_len) return okv_rot_fail(OKV_ERROR_NULL_POINTER, "save: NULL argument");
    *out = NULL;
    *out_len = 0;
    size_t d = (size_t)rs->head_dim, nr = (size_t)rs->n_rot;
    sbuf_t b = {0};
    sb_put(&b, "{\"__metadata__\":{");
    for (int i = 0; i < rs->n_meta; ++i) {
        if (i) sb_put(&b, ",");
        sb_json_string(&b, rs->meta[i].key);
        sb_put(&b, ":");
        sb_json_string(&b, rs->meta[i].value);
    }
    sb_put(&b, "}");
    size_t off = 0;
    size_t rot_shape[3] = {nr, d, d}, eig_shape[2] = {nr, d}, clip_shape[1] = {1};
    const size_t *rs_shape = nr == 1 ? rot_shape + 1 : rot_shape;
    const size_t *es_shape = nr == 1 ? eig_shape + 1 : eig_shape;
    int rnd = nr == 1 ? 2 : 3, end = nr == 1 ? 1 : 2;
    char name[64];
    for (int32_t l = 0; l < rs->n_layers; ++l) {
        const okv_rot_layer_t *L = &rs->layers[l];
        snprintf(name, sizeof name, "layer.%d.k_rotation", (int)l);
        sb_tensor(&b, name, rs_shape, rnd, &off);
        snprintf(name, sizeof name, "layer.%d.v_rotation", (int)l);
        sb_tensor(&b, name, rs_shape, rnd, &off);
        if (L->k_eig) {
            snprintf(name, sizeof name, "layer.%d.k_eigenvalues", (int)l);
            sb_tensor(&b, name, es_shape, end, &off);
        }
        if (L->v_eig) {
            snprintf(name, sizeof name, "layer.%d.v_eigenvalues", (int)l);
            sb_tensor(&b, name, es_shape, end, &off);
        }
        if (L->k_mean) {
            snprintf(name, sizeof name, "layer.%d.k_mean", (int)l);
            sb_tensor(&b, name, es_shape, end, &off);
        }
        if (L->q_rot) {
            snprintf(name, sizeof name, "layer.%d.q_rotation", (int)l);
            sb_tensor(&b, name, rs_shape, rnd, &off);
        }
        snprintf(name, sizeof name, "layer.%d.k_clip", (int)l);
        sb_tensor(&b, name, clip_shape, 1, &off);
        snprintf(name, sizeof name, "layer.%d.v_clip", (int)l);
        sb_tensor(&b, name, clip_shape, 1, &off);
    }
    sb_put(&b, "}");
    while (!b.oom && b.len % 8 != 0)
        sb_put(&b, " ");
    if (b.oom) {
        free(b.p);
        return okv_rot_fail(OKV_ERROR_OUT_OF_MEMORY, "save: out of memory (header)");
    }
    size_t total = 8 + b.len + off;
    unsigned char *buf = malloc(total);
    if (!buf) {
        free(b.p);
        return okv_rot_fail(OKV_ERROR_OUT_OF_MEMORY, "save: out of memory (%zu bytes)", total);
    }
    uint64_t hl = b.len;
    for (int i = 0; i < 8; ++i)
        buf[i] = (unsigned char)(hl >> (8 * i));
    memcpy(buf + 8, b.p, b.len);
    free(b.p);
    unsigned char *q = buf + 8 + hl;
    for (int32_t l = 0; l < rs->n_layers; ++l) {
        const okv_rot_layer_t *L = &rs->layers[l];
        q = put_f32s(q, L->k_rot, nr * d * d);
        q = put_f32s(q, L->v_rot, nr * d * d);
        if (L->k_eig) q = put_f32s(q, L->k_eig, nr * d);
        if (L->v_eig) q = put_f32s(q, L->v_eig, nr * d);
        if (L->k_mean) q = put_f32s(q, L->k_mean, nr * d);
        if (L->q_rot) q = put_f32s(q, L->q_rot, nr * d * d);
        q = put_f32s(q, &L->k_clip, 1);
        q = put_f32s(q, &L->v_clip, 1);
    }
    *out = buf;
    *out_len = total;
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_rotation_set_save(const okv_rotation_set_t *rs, const char *path)
{
    if (!rs || !path) return okv_rot_fail(OKV_ERROR_NULL_POINTER, "okv_rotation_set_save: NULL argument");
    unsigned char *buf;
    size_t len;
    okv_status_t st = okv_st_save_memory(rs, &buf, &len);
    if (st != OKV_SUCCESS) return st;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(buf);
        return okv_rot_fail(OKV_ERROR_IO, "cannot open %s for writing", path);
    }
    size_t w = fwrite(buf, 1, len, f);
    int cl = fclose(f);
    free(buf);
    if (w != len || cl != 0) return okv_rot_fail(OKV_ERROR_IO, "short write to %s (%zu of %zu bytes)", path, w, len);
    okv_rot_clear_error();
    return OKV_SUCCESS;
}
