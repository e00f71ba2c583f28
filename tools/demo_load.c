/* demo_load.c - reads layer_{i}/{q,k,v}.npy activation dumps ([N, H, d], f16 or f32)
 * into float32; shared by `demo` and `calibrate`. */
#include "demo_data.h"
#include "npy.h"
#include "okv_format.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* layer_{i} directories looked for */
#define OKV_DEMO_MAX_LAYER_ID 1024

/* Converted copy of a loaded array as float32 (NULL on allocation failure). */
static float *to_f32(const okv_npy_array_t *a)
{
    float *out = malloc(sizeof(float) * (a->info.count ? a->info.count : 1));
    if (!out) return NULL;
    if (a->info.dtype == OKV_DTYPE_F32) {
        memcpy(out, a->data, sizeof(float) * a->info.count);
    } else {
        const okv_u16 *h = a->data;
        for (uint64_t i = 0; i < a->info.count; ++i)
            out[i] = okv_f16_to_f32(h[i]);
    }
    return out;
}

int demo_layer_load(const char *dir, int32_t layer, demo_layer_t *L, int32_t shape[3], char *err, size_t cap)
{
    static const char *names[3] = {"q", "k", "v"};
    char path[4096];
    snprintf(path, sizeof path, "%s/layer_%d", dir, layer);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        snprintf(err, cap, "%s: not found", path);
        return 1;
    }
    float *arrs[3] = {NULL, NULL, NULL};
    int64_t dims[3][3];
    for (int i = 0; i < 3; ++i) {
        okv_npy_array_t a;
        memset(&a, 0, sizeof a);
        snprintf(path, sizeof path, "%s/layer_%d/%s.npy", dir, layer, names[i]);
        char e[256] = "";
        okv_status_t st = okv_npy_load(path, &a, e, sizeof e);
        if (st != OKV_SUCCESS || a.info.ndim != 3) {
            snprintf(err, cap, "%s: %s", path, st != OKV_SUCCESS ? e : "expected shape [N, H, d]");
            okv_npy_free(&a);
            for (int j = 0; j < i; ++j)
                free(arrs[j]);
            return -1;
        }
        memcpy(dims[i], a.info.shape, sizeof dims[i]);
        arrs[i] = to_f32(&a);
        okv_npy_free(&a);
        if (!arrs[i]) {
            snprintf(err, cap, "%s: out of memory", path);
            for (int j = 0; j < i; ++j)
                free(arrs[j]);
            return -1;
        }
    }
    if (dims[0][0] != dims[1][0] || dims[0][0] != dims[2][0] || dims[1][1] != dims[2][1] || dims[0][2] != dims[1][2] ||
        dims[0][2] != dims[2][2] || dims[1][1] <= 0 || dims[0][1] % dims[1][1] != 0 || dims[0][0] > INT32_MAX) {
        snprintf(err, cap, "%s/layer_%d: inconsistent shapes q[%lld,%lld,%lld] k[%lld,%lld,%lld] v[%lld,%lld,%lld]",
                 dir, layer, (long long)dims[0][0], (long long)dims[0][1], (long long)dims[0][2], (long long)dims[1][0],
                 (long long)dims[1][1], (long long)dims[1][2], (long long)dims[2][0], (long long)dims[2][1],
                 (long long)dims[2][2]);
        for (int j = 0; j < 3; ++j)
            free(arrs[j]);
        return -1;
    }
    L->n_tokens = (int32_t)dims[0][0];
    L->q = arrs[0];
    L->k = arrs[1];
    L->v = arrs[2];
    shape[0] = (int32_t)dims[0][1];
    shape[1] = (int32_t)dims[1][1];
    shape[2] = (int32_t)dims[0][2];
    return 0;
}

int demo_data_load(const char *dir, int32_t max_layers, demo_data_t *out, char *err, size_t cap)
{
    memset(out, 0, sizeof *out);
    out->layers = calloc((size_t)max_layers, sizeof *out->layers);
    out->layer_ids = calloc((size_t)max_layers, sizeof *out->layer_ids);
    if (!out->layers || !out->layer_ids) {
        demo_data_free(out);
        snprintf(err, cap, "out of memory");
        return -1;
    }
    out->real = 1;
    int64_t tokens = 0;
    for (int32_t id = 0; id < OKV_DEMO_MAX_LAYER_ID && out->n_layers < max_layers; ++id) {
        int32_t shape[3], l = out->n_layers;
        int rc = demo_layer_load(dir, id, &out->layers[l], shape, err, cap);
        if (rc == 1) continue;
        if (rc == 0 && l > 0 &&
            (shape[0] != out->n_q_heads || shape[1] != out->n_kv_heads || shape[2] != out->head_dim)) {
            snprintf(err, cap, "%s/layer_%d: head shape differs from the first layer", dir, id);
            out->n_layers = l + 1;
            rc = -1;
        }
        if (rc != 0) {
            demo_data_free(out);
            return -1;
        }
        out->layer_ids[l] = id;
        out->n_q_heads = shape[0];
        out->n_kv_heads = shape[1];
        out->head_dim = shape[2];
        out->n_layers = l + 1;
        tokens += out->layers[l].n_tokens;
    }
    if (out->n_layers == 0) {
        snprintf(err, cap, "%.400s: no layer_*/ directories", dir);
        demo_data_free(out);
        return -1;
    }
    snprintf(out->source, sizeof out->source, "%d layers, %lld tokens from %.400s", out->n_layers, (long long)tokens,
             dir);
    return 0;
}
