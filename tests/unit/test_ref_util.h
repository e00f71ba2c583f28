/* test_ref_util.h - helpers shared by the reference's Check suites: a seeded RNG,
 * random orthogonal matrices, host-memory paged caches with permuted page
 * placement, wrappers that call the "ref" backend's ops table, and float64
 * attention recomputation. */
#ifndef TEST_REF_UTIL_H
#define TEST_REF_UTIL_H

#include "ref_backend.h"
#include "ref_ops.h"

#include <check.h>
#include "okv_check_run.h"
#include <stddef.h>
#include <stdint.h>

/* ---- RNG (splitmix64) */
typedef struct tu_rng {
    uint64_t s;
} tu_rng_t;
uint64_t tu_next(tu_rng_t *r);
double tu_uniform(tu_rng_t *r); /* [0, 1) */
double tu_normal(tu_rng_t *r);
void tu_fill_normal(tu_rng_t *r, float *x, size_t n, double sigma);
/* Random orthogonal d x d (Gram-Schmidt of a Gaussian matrix, in double). */
void tu_random_orthogonal(tu_rng_t *r, int d, float *out);
void tu_identity(int d, float *out);
/* A random permutation of [0, n). */
void tu_permutation(tu_rng_t *r, int32_t n, int32_t *perm);

/* ---- buffers: wrap host memory as an okv_ref_t (freed by tu_release_all) */
okv_ref_t tu_ref(void *p, size_t bytes);
void tu_release_all(void);
void *tu_calloc(size_t n, size_t size); /* ck_assert on failure */
size_t tu_dtype_size(okv_dtype_t dt);

/* ---- host paged cache */
typedef struct tu_cache {
    okv_cache_desc_t desc;
    int32_t batch;
    int32_t int2_pages_per_seq, bf16_pages_per_seq;
    int32_t int2_pool_pages, bf16_pool_pages;
    size_t int2_page_bytes, bf16_page_bytes;
    uint8_t *int2_pool, *bf16_pool;
    int32_t *int2_indptr, *int2_indices, *bf16_indptr, *bf16_indices;
    int32_t *seq_lens, *int2_lens;
    okv_cache_view_t view;
    okv_ref_cache_t rc; /* the same cache as raw pointers */
} tu_cache_t;

typedef struct tu_geom {
    int32_t hq, hkv, d, g;
    int32_t meta;      /* OKV_DTYPE_F16 / BF16 / F32 */
    int32_t quantizer; /* OKV_QUANT_* */
    int32_t clip_mode;
    int32_t s0, w, f, p;
} tu_geom_t;

/* A cache of `batch` empty sequences with room for max_int2 INT2 tokens each.
 * Pages are placed at positions given by a random permutation of the pools
 * (seed), with `spare` unused pages in each pool. */
void tu_cache_init(tu_cache_t *c, const tu_geom_t *g, int32_t batch, int32_t max_int2, int32_t spare, uint64_t seed);
void tu_cache_free(tu_cache_t *c);
/* Re-derive view and rc after editing the arrays (the pointers stay). */
void tu_cache_sync(tu_cache_t *c);

/* ---- ops through the ref backend's table */
okv_status_t tu_append(tu_cache_t *c, const void *k, const void *v, okv_dtype_t dt, const int32_t *indptr,
                       int32_t n_rows, const float *krot, const float *vrot, int32_t per_head, float kclip, float vclip,
                       okv_err_t *err);
/* All sequences append the same count n (rows b*n ..). */
okv_status_t tu_append_even(tu_cache_t *c, const float *k, const float *v, int32_t n, const float *krot,
                            const float *vrot, float kclip, float vclip, okv_err_t *err);
okv_status_t tu_demote(tu_cache_t *c, int32_t n_rows, float kclip, float vclip, okv_err_t *err);
/* Dequantized logical cache, f32, sequence b at rows [b * max_len, ...). */
okv_status_t tu_dequantize(tu_cache_t *c, int32_t max_len, float *k_out, float *v_out, okv_err_t *err);
typedef struct tu_decode_args {
    const void *q;
    okv_dtype_t q_dtype, out_dtype;
    void *out;
    float *lse;
    float sm_scale;
    int32_t num_splits;
    const float *v_rotation;
    int32_t per_head, unrotate;
} tu_decode_args_t;
okv_status_t tu_decode(tu_cache_t *c, const tu_decode_args_t *a, okv_err_t *err);

/* ---- float64 attention: one query row q (d) against n keys / values (rows of
 * stride d), scale; returns lse, writes out (d). */
double tu_attention_f64(const double *q, const float *k, const float *v, int64_t n, int d, double scale, double *out);

/* max |a - b| / max(max |b|, tiny) */
double tu_rel_err(const float *a, const double *b, size_t n);

/* Assert byte equality of two snapshots. */
#define TU_ASSERT_SAME_BYTES(a, b, n, what) ck_assert_msg(memcmp((a), (b), (n)) == 0, "%s changed", (what))

#endif
