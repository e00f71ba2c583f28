/* demo_cache.c - see demo_cache.h. */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#include "demo_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct bufset {
    okv_buffer_t *b[40];
    int n;
} bufset_t;

static okv_status_t mk(okv_context_t *ctx, bufset_t *s, size_t bytes, const void *init, okv_ref_t *ref)
{
    okv_buffer_t *b = NULL;
    if (s->n == (int)(sizeof s->b / sizeof s->b[0])) return OKV_ERROR_INTERNAL;
    okv_status_t st = okv_buffer_create(ctx, bytes ? bytes : 4, &b);
    if (st != OKV_SUCCESS) return st;
    s->b[s->n++] = b;
    ref->buffer = b;
    ref->offset = 0;
    if (init) st = okv_buffer_write(ctx, b, 0, init, bytes);
    return st;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        st = (x);                                                                                                      \
        if (st != OKV_SUCCESS) {                                                                                       \
            snprintf(err, err_cap, "%s: %s (%s)", #x, okv_status_string(st), okv_context_last_error(ctx));             \
            goto done;                                                                                                 \
        }                                                                                                              \
    } while (0)

/* Host staging of one batch: sequence b holds the first len[b] tokens. */
typedef struct plan {
    int32_t *len, *int2_len, *int2_indptr, *int2_idx, *bf16_indptr, *bf16_idx, *rows_indptr;
    int32_t int2_pages, bf16_pages, rows;
} plan_t;

static void plan_free(plan_t *p)
{
    free(p->len), free(p->int2_len), free(p->int2_indptr), free(p->int2_idx);
    free(p->bf16_indptr), free(p->bf16_idx), free(p->rows_indptr);
}

static okv_status_t plan_make(const okv_cache_desc_t *d, const okv_cache_sizes_t *sz, int32_t T, int32_t M, plan_t *p)
{
    memset(p, 0, sizeof *p);
    p->len = calloc((size_t)M, sizeof(int32_t));
    p->int2_len = calloc((size_t)M, sizeof(int32_t));
    p->int2_indptr = calloc((size_t)M + 1, sizeof(int32_t));
    p->bf16_indptr = calloc((size_t)M + 1, sizeof(int32_t));
    p->rows_indptr = calloc((size_t)M + 1, sizeof(int32_t));
    if (!p->len || !p->int2_len || !p->int2_indptr || !p->bf16_indptr || !p->rows_indptr)
        return OKV_ERROR_OUT_OF_MEMORY;
    for (int32_t b = 0; b < M; ++b) {
        int32_t pages = 0;
        p->len[b] = T - M + 1 + b;
        okv_status_t st = okv_cache_int2_len_after(d, 0, 0, p->len[b], &p->int2_len[b]);
        if (st == OKV_SUCCESS) st = okv_cache_int2_pages_needed(d, p->int2_len[b], &pages);
        if (st != OKV_SUCCESS) return st;
        p->int2_indptr[b + 1] = p->int2_indptr[b] + pages;
        p->bf16_indptr[b + 1] = p->bf16_indptr[b] + sz->bf16_pages_per_seq;
        p->rows_indptr[b + 1] = p->rows_indptr[b] + p->len[b];
    }
    p->int2_pages = p->int2_indptr[M];
    p->bf16_pages = p->bf16_indptr[M];
    p->rows = p->rows_indptr[M];
    /* pages handed out in reverse so that the page table, not the pool order, places data */
    p->int2_idx = calloc((size_t)p->int2_pages + 1, sizeof(int32_t));
    p->bf16_idx = calloc((size_t)p->bf16_pages, sizeof(int32_t));
    if (!p->int2_idx || !p->bf16_idx) return OKV_ERROR_OUT_OF_MEMORY;
    for (int32_t i = 0; i < p->int2_pages; ++i)
        p->int2_idx[i] = p->int2_pages - 1 - i;
    for (int32_t i = 0; i < p->bf16_pages; ++i)
        p->bf16_idx[i] = p->bf16_pages - 1 - i;
    return OKV_SUCCESS;
}

okv_status_t demo_run_layer(demo_run_t *r, char *err, size_t err_cap)
{
    okv_context_t *ctx = r->ctx;
    const okv_cache_desc_t *d = r->desc;
    const int32_t T = r->n_tokens, M = r->n_queries, hd = d->head_dim, hkv = d->n_kv_heads, hq = d->n_q_heads;
    const size_t row = (size_t)hkv * hd;
    okv_status_t st = OKV_SUCCESS;
    bufset_t bs = {{0}, 0};
    plan_t pl;
    float *kin = NULL, *vin = NULL;
    double *times = NULL;
    int32_t zeros_len = 0;
    int32_t *zeros = NULL;
    okv_cache_sizes_t sz = {sizeof sz, 0, 0, 0, 0, 0, 0};
    memset(&pl, 0, sizeof pl);
    TRY(okv_cache_get_sizes(d, &sz));
    TRY(plan_make(d, &sz, T, M, &pl));

    /* the batch's K/V rows: every prefix, concatenated (one batched append) */
    kin = malloc(sizeof(float) * row * (size_t)pl.rows);
    vin = malloc(sizeof(float) * row * (size_t)pl.rows);
    times = calloc((size_t)(r->timing_reps > 0 ? r->timing_reps : 1), sizeof *times);
    zeros_len = M;
    zeros = calloc((size_t)zeros_len, sizeof *zeros);
    if (!kin || !vin || !times || !zeros) TRY(OKV_ERROR_OUT_OF_MEMORY);
    for (int32_t b = 0; b < M; ++b) {
        memcpy(kin + row * pl.rows_indptr[b], r->k, sizeof(float) * row * pl.len[b]);
        memcpy(vin + row * pl.rows_indptr[b], r->v, sizeof(float) * row * pl.len[b]);
    }

    okv_cache_view_t view;
    memset(&view, 0, sizeof view);
    view.desc = d;
    view.batch = M;
    view.int2_pool_pages = pl.int2_pages;
    view.bf16_pool_pages = pl.bf16_pages;
    if (pl.int2_pages) TRY(mk(ctx, &bs, (size_t)pl.int2_pages * sz.int2_page_bytes, NULL, &view.int2_pool));
    TRY(mk(ctx, &bs, (size_t)pl.bf16_pages * sz.bf16_page_bytes, NULL, &view.bf16_pool));
    TRY(mk(ctx, &bs, sizeof(int32_t) * (size_t)(pl.int2_pages + 1), pl.int2_idx, &view.int2_indices));
    TRY(mk(ctx, &bs, sizeof(int32_t) * (size_t)pl.bf16_pages, pl.bf16_idx, &view.bf16_indices));
    TRY(mk(ctx, &bs, sizeof(int32_t) * (size_t)(M + 1), pl.int2_indptr, &view.int2_indptr));
    TRY(mk(ctx, &bs, sizeof(int32_t) * (size_t)(M + 1), pl.bf16_indptr, &view.bf16_indptr));
    TRY(mk(ctx, &bs, sizeof(int32_t) * (size_t)M, zeros, &view.seq_lens));
    TRY(mk(ctx, &bs, sizeof(int32_t) * (size_t)M, zeros, &view.int2_lens));

    okv_append_params_t ap;
    okv_append_params_init(&ap);
    ap.cache = view;
    ap.kv_dtype = OKV_DTYPE_F32;
    ap.n_rows = pl.rows;
    size_t kv_bytes = sizeof(float) * row * (size_t)pl.rows;
    TRY(mk(ctx, &bs, kv_bytes, kin, &ap.k));
    TRY(mk(ctx, &bs, kv_bytes, vin, &ap.v));
    TRY(mk(ctx, &bs, sizeof(int32_t) * (size_t)(M + 1), pl.rows_indptr, &ap.append_indptr));
    TRY(mk(ctx, &bs, sizeof(float) * hd * hd, r->k_rot, &ap.k_rotation));
    TRY(mk(ctx, &bs, sizeof(float) * hd * hd, r->v_rot, &ap.v_rotation));
    if (r->k_bias) TRY(mk(ctx, &bs, sizeof(float) * hd, r->k_bias, &ap.k_bias));
    ap.k_clip_ratio = r->k_clip;
    ap.v_clip_ratio = r->v_clip;
    TRY(okv_append(ctx, &ap));

    /* the logical caches, dequantized (rotated basis), for the probability metrics */
    okv_dequantize_params_t dq;
    okv_dequantize_params_init(&dq);
    dq.cache = view;
    dq.out_rows = pl.rows;
    dq.out_dtype = OKV_DTYPE_F32;
    dq.out_indptr = ap.append_indptr;
    TRY(mk(ctx, &bs, kv_bytes, NULL, &dq.k_out));
    TRY(mk(ctx, &bs, kv_bytes, NULL, &dq.v_out));
    TRY(okv_dequantize(ctx, &dq));
    TRY(okv_buffer_read(ctx, dq.k_out.buffer, 0, r->k_hat, kv_bytes));
    memcpy(r->rows_indptr, pl.rows_indptr, sizeof(int32_t) * (size_t)(M + 1));

    /* rotate the queries by R_K (by q_rotation = R_K^-T with key scaling), then decode with
     * the output un-rotated by R_V^T */
    size_t q_bytes = sizeof(float) * (size_t)M * hq * hd;
    okv_rotate_params_t rp;
    okv_rotate_params_init(&rp);
    TRY(mk(ctx, &bs, q_bytes, r->q, &rp.x));
    TRY(mk(ctx, &bs, q_bytes, NULL, &rp.out));
    rp.x_dtype = rp.out_dtype = OKV_DTYPE_F32;
    rp.rotation = ap.k_rotation;
    if (r->q_matrix) TRY(mk(ctx, &bs, sizeof(float) * hd * hd, r->q_matrix, &rp.rotation));
    rp.n_rows = M;
    rp.n_heads = hq;
    rp.head_dim = hd;
    TRY(okv_rotate(ctx, &rp));
    TRY(okv_buffer_read(ctx, rp.out.buffer, 0, r->q_rot, q_bytes));

    okv_decode_params_t dp;
    okv_decode_params_init(&dp);
    dp.cache = view;
    dp.q = rp.out;
    dp.q_dtype = OKV_DTYPE_F32;
    dp.out_dtype = OKV_DTYPE_F32;
    dp.max_seq_len = T;
    dp.v_rotation = ap.v_rotation;
    dp.unrotate_output = 1;
    TRY(mk(ctx, &bs, q_bytes, NULL, &dp.out));
    size_t ws = 0;
    TRY(okv_decode_workspace_size(ctx, &dp, &ws));
    if (ws) {
        TRY(mk(ctx, &bs, ws, NULL, &dp.workspace));
        dp.workspace_bytes = ws;
    }
    TRY(okv_decode_attention(ctx, &dp));
    TRY(okv_context_synchronize(ctx));
    int reps = r->timing_reps > 0 ? r->timing_reps : 1;
    for (int i = 0; i < reps; ++i) {
        double t0 = now_ms();
        TRY(okv_decode_attention(ctx, &dp));
        TRY(okv_context_synchronize(ctx));
        times[i] = now_ms() - t0;
    }
    qsort(times, (size_t)reps, sizeof *times, cmp_double);
    r->decode_ms = times[reps / 2];
    TRY(okv_buffer_read(ctx, dp.out.buffer, 0, r->out, q_bytes));

done:
    for (int i = 0; i < bs.n; ++i)
        okv_buffer_destroy(bs.b[i]);
    plan_free(&pl);
    free(kin), free(vin), free(times), free(zeros);
    return st;
}
