/* conf_internal.h - types shared by the conformance runner's translation units. */
#ifndef OKV_CONF_INTERNAL_H
#define OKV_CONF_INTERNAL_H

#include "okv_conformance.h"
#include "oscarkv/oscarkv.h"

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ cases -- */
typedef enum conf_op {
    CONF_OP_ROTATE = 0,
    CONF_OP_APPEND,
    CONF_OP_DEMOTE,
    CONF_OP_DEQUANTIZE,
    CONF_OP_DECODE,
    CONF_OP_PREFILL,
    CONF_OP_MOMENTS,
    CONF_OP_COUNT
} conf_op_t;

/* Invalid-argument variants: the op must fail, with the same status on every
 * backend as on ref (and on ref with one of the statuses the contract documents). */
typedef enum conf_err {
    CONF_ERR_NONE = 0,
    CONF_ERR_NULL_BUF,  /* a required input buffer is NULL */
    CONF_ERR_HEAD_DIM,  /* head_dim not in {64, 128, 256} */
    CONF_ERR_GQA,       /* Hq % Hkv != 0 (or n_heads % head_group != 0) */
    CONF_ERR_SMALL_BUF, /* an output buffer one element too small */
    CONF_ERR_NAN,       /* a NaN in the input data */
    CONF_ERR_BAD_PAGE,  /* a page index past the pool */
    CONF_ERR_META_OVF,  /* a value the fp16 metadata cannot hold */
    CONF_ERR_COUNT
} conf_err_t;

typedef struct conf_case {
    conf_op_t op;
    int quick;             /* member of the quick table */
    int batch;             /* sequences (or, for rotate/moments, unused: 1) */
    int hq, hkv, d, g;     /* heads, head_dim, quantisation group (g == d: one group) */
    int page;              /* tokens per page */
    int s0, w, f;          /* sink, recent window, flush interval */
    int ctx;               /* longest cached length (history) of the batch */
    int n_new;             /* append/prefill: rows per sequence per step; rotate/moments: rows */
    int steps;             /* append: consecutive calls */
    okv_dtype_t in_dtype;  /* q / kv / x */
    okv_dtype_t out_dtype; /* outputs (dequantize, decode, prefill, rotate); moments: acc dtype */
    okv_dtype_t meta;
    okv_quantizer_t quant;
    okv_clip_mode_t clip;
    int noclip;    /* clip ratios 1.0 instead of 0.96 / 0.92 */
    int splits;    /* decode num_splits (0: backend's choice) */
    int unrotate;  /* decode: unrotate_output; rotate: transpose */
    int per_head;  /* per-head rotations (append, decode, rotate) */
    int with_aux;  /* decode: lse output; moments: weights */
    int empty_seq; /* decode: the last sequence of the batch has length 0 */
    int kbias;     /* key centering: append k_bias, rotate bias (OKV_CAP_KEY_BIAS) */
    conf_err_t err;
    uint64_t seed;
} conf_case_t;

extern const char *const conf_op_names[CONF_OP_COUNT];
extern const char *const conf_err_names[CONF_ERR_COUNT];

/* The table (built once, deterministic). */
const conf_case_t *conf_table(int *count);
/* Canonical descriptor, e.g.
 * decode/b2/hq12/hkv4/d128/g128/p16/win=64,256,8/ctx4097/q=bf16/out=f32/meta=f16/uniform/sort/splits=7/seed=3 */
void conf_descriptor(const conf_case_t *c, char *buf, size_t cap);
const char *conf_dtype_name(okv_dtype_t t);

/* ----------------------------------------------------------------- verdicts -- */
typedef enum conf_verdict { CONF_PASS = 0, CONF_FAIL = 1, CONF_UNSUPPORTED = 2 } conf_verdict_t;

typedef struct conf_session {
    okv_context_t *ctx; /* backend under test */
    okv_context_t *ref; /* the ref backend (== ctx when testing ref) */
    const char *backend;
    long long codes_compared, code_ties;
} conf_session_t;

/* Runs one case; on FAIL writes why into msg. */
conf_verdict_t conf_run_case(conf_session_t *s, const conf_case_t *c, char *msg, size_t cap);

/* --------------------------------------------------------------- host side -- */
typedef struct conf_rng {
    uint64_t s[4];
} conf_rng_t;
void conf_rng_seed(conf_rng_t *r, uint64_t seed);
uint64_t conf_rng_u64(conf_rng_t *r);
double conf_rng_uniform(conf_rng_t *r); /* [0, 1) */
double conf_rng_normal(conf_rng_t *r);
int conf_rng_int(conf_rng_t *r, int n); /* [0, n) */

/* Host values <-> dtype storage. */
void conf_store(okv_dtype_t t, const float *src, void *dst, size_t n);
void conf_load(okv_dtype_t t, const void *src, float *dst, size_t n);
float conf_round(okv_dtype_t t, float x); /* x through the dtype's storage */
double conf_dtype_eps(okv_dtype_t t);     /* unit roundoff (half an ulp, relative) */
double conf_dtype_tiny(okv_dtype_t t);    /* absolute rounding error in the subnormal range */

/* Random orthogonal d x d (float32, row-major) from Gram-Schmidt on a Gaussian matrix. */
void conf_random_rotation(conf_rng_t *r, int d, float *out);
/* Activations with realistic structure: per head, N(b_c, s_c) channels with a mild
 * spread of scales and 3 outlier channels (scale and offset ~ outlier_scale) that
 * stay fixed across rows. Rows are [n][heads][d]. */
typedef struct conf_actgen {
    int heads, d;
    float *scale, *bias;
} conf_actgen_t;
int conf_actgen_init(conf_actgen_t *a, conf_rng_t *r, int heads, int d, float outlier_scale);
void conf_actgen_rows(const conf_actgen_t *a, conf_rng_t *r, int n, float *out);
void conf_actgen_free(conf_actgen_t *a);
int conf_activations(conf_rng_t *r, int n, int heads, int d, float outlier_scale, float *out);

#endif
