/* demo_data.h - activations the demo runs on: the committed real sample, or a
 * synthetic stand-in with realistic structure when the sample is absent. */
#ifndef OKV_DEMO_DATA_H
#define OKV_DEMO_DATA_H

#include <stddef.h>
#include <stdint.h>

typedef struct demo_layer {
    int32_t n_tokens;
    float *q; /* [n, Hq, d], after q-norm and RoPE */
    float *k; /* [n, Hkv, d], after k-norm and RoPE */
    float *v; /* [n, Hkv, d] */
} demo_layer_t;

typedef struct demo_data {
    int32_t n_layers, n_q_heads, n_kv_heads, head_dim;
    int32_t real;     /* 1: model activations read from disk */
    char source[512]; /* what the data is, for the report */
    demo_layer_t *layers;
    int32_t *layer_ids; /* model layer index of each entry */
} demo_data_t;

/* Reads dir/layer_{i}/{q,k,v}.npy for every i present (in increasing order, at most
 * max_layers of them). Returns 0 on success, -1 with a message in err otherwise. */
int demo_data_load(const char *dir, int32_t max_layers, demo_data_t *out, char *err, size_t err_cap);

/* Synthetic activations: outlier key channels, RoPE-like pairs, anisotropic
 * queries per group, heavy-tailed values. Channel statistics depend on model_seed,
 * the token draws on token_seed. */
int demo_data_synthesize(int32_t n_layers, int32_t n_tokens, int32_t hq, int32_t hkv, int32_t d, uint64_t model_seed,
                         uint64_t token_seed, demo_data_t *out);

/* One layer's dumps: 0 ok, 1 when dir/layer_{layer} does not exist, -1 on error.
 * shape receives Hq, Hkv, d. */
int demo_layer_load(const char *dir, int32_t layer, demo_layer_t *L, int32_t shape[3], char *err, size_t cap);

void demo_data_free(demo_data_t *data);

#endif
