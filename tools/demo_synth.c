/* demo_synth.c - synthetic attention activations with the structure that makes
 * 2-bit KV quantization hard: a few massive key channels, RoPE rotating channel
 * pairs with position, queries that weight channels very unevenly, and values with
 * heavy-tailed per-token scales. */
#include "demo_data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: small, fast, good enough for test data */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *s) { return ((double)(rng_next(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static double rng_normal(uint64_t *s)
{
    double u1 = rng_uniform(s), u2 = rng_uniform(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Rotate channel pairs (i, i + d/2) by pos * base^(-2i/d), as RoPE does. */
static void rope(float *x, int32_t d, int32_t pos)
{
    for (int32_t i = 0; i < d / 2; ++i) {
        double th = pos * pow(10000.0, -2.0 * i / d);
        double c = cos(th), s = sin(th), a = x[i], b = x[i + d / 2];
        x[i] = (float)(a * c - b * s);
        x[i + d / 2] = (float)(a * s + b * c);
    }
}

/* Channel statistics come from the layer's model stream ms, token draws from ts, so
 * two token seeds give two samples of one synthetic "model". */
static int synth_layer(demo_layer_t *L, int32_t n, int32_t hq, int32_t hkv, int32_t d, uint64_t *ms, uint64_t *ts)
{
    L->n_tokens = n;
    L->q = malloc(sizeof(float) * (size_t)n * hq * d);
    L->k = malloc(sizeof(float) * (size_t)n * hkv * d);
    L->v = malloc(sizeof(float) * (size_t)n * hkv * d);
    float *kmean = malloc(sizeof(float) * (size_t)hkv * d), *kstd = malloc(sizeof(float) * (size_t)hkv * d);
    float *qstd = malloc(sizeof(float) * (size_t)hq * d), *vstd = malloc(sizeof(float) * (size_t)hkv * d);
    if (!L->q || !L->k || !L->v || !kmean || !kstd || !qstd || !vstd) {
        free(kmean), free(kstd), free(qstd), free(vstd);
        return -1;
    }
    for (int32_t i = 0; i < hkv * d; ++i) {
        int outlier = (i % d) < d / 2 && rng_uniform(ms) < 0.04; /* low-frequency RoPE channels carry outliers */
        kmean[i] = outlier ? (float)(8.0 * rng_normal(ms)) : (float)(0.3 * rng_normal(ms));
        kstd[i] = (float)(outlier ? 3.0 : exp(0.5 * rng_normal(ms)));
        vstd[i] = (float)(rng_uniform(ms) < 0.02 ? 6.0 : exp(0.4 * rng_normal(ms)));
    }
    for (int32_t i = 0; i < hq * d; ++i)
        qstd[i] = (float)exp(1.2 * rng_normal(ms)); /* very uneven channel weight */
    for (int32_t t = 0; t < n; ++t) {
        for (int32_t h = 0; h < hkv; ++h) {
            float *k = L->k + ((size_t)t * hkv + h) * d, *v = L->v + ((size_t)t * hkv + h) * d;
            double tok_scale = exp(0.5 * rng_normal(ts));
            for (int32_t c = 0; c < d; ++c) {
                k[c] = kmean[h * d + c] + kstd[h * d + c] * (float)rng_normal(ts);
                v[c] = (float)(tok_scale * vstd[h * d + c] * rng_normal(ts));
            }
            rope(k, d, t);
        }
        for (int32_t h = 0; h < hq; ++h) {
            float *q = L->q + ((size_t)t * hq + h) * d;
            const float *km = kmean + (size_t)(h / (hq / hkv)) * d;
            for (int32_t c = 0; c < d; ++c)
                q[c] = 0.05f * km[c] + qstd[h * d + c] * (float)rng_normal(ts) * 0.3f;
            rope(q, d, t);
        }
    }
    free(kmean), free(kstd), free(qstd), free(vstd);
    return 0;
}

int demo_data_synthesize(int32_t n_layers, int32_t n_tokens, int32_t hq, int32_t hkv, int32_t d, uint64_t model_seed,
                         uint64_t token_seed, demo_data_t *out)
{
    memset(out, 0, sizeof *out);
    out->layers = calloc((size_t)n_layers, sizeof *out->layers);
    out->layer_ids = calloc((size_t)n_layers, sizeof *out->layer_ids);
    if (!out->layers || !out->layer_ids) {
        demo_data_free(out);
        return -1;
    }
    out->n_layers = n_layers;
    out->n_q_heads = hq;
    out->n_kv_heads = hkv;
    out->head_dim = d;
    snprintf(out->source, sizeof out->source,
             "SYNTHETIC activations (outlier key channels, RoPE pairs, GQA %d/%d, d=%d, %d tokens/layer)", hq, hkv, d,
             n_tokens);
    uint64_t ms = model_seed, ts = token_seed;
    for (int32_t l = 0; l < n_layers; ++l) {
        out->layer_ids[l] = l;
        if (synth_layer(&out->layers[l], n_tokens, hq, hkv, d, &ms, &ts) != 0) {
            demo_data_free(out);
            return -1;
        }
    }
    return 0;
}

void demo_data_free(demo_data_t *data)
{
    if (!data) return;
    if (!data->layers) {
        free(data->layer_ids);
        data->layer_ids = NULL;
        return;
    }
    for (int32_t l = 0; l < data->n_layers; ++l) {
        free(data->layers[l].q);
        free(data->layers[l].k);
        free(data->layers[l].v);
    }
    free(data->layers);
    free(data->layer_ids);
    data->layers = NULL;
    data->layer_ids = NULL;
}
