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

okv_status_t demo_run_layer(demo_run_t *r, char *err, size_t err_cap)
{
    okv_context_t *ctx = r->ctx;
    const okv_cache_desc_t *d = r->desc;
    const int32_t T = r->n_tokens, M = r->n_queries, hd = d->head_dim, hkv = d->n_kv_heads, hq = d->n_q_heads;
    okv_status_t st = OKV_SUCCESS;
    bufset_t bs = {{0}, 0};
    int32_t *tmp = NULL;
    double *times = NULL;
    okv_cache_sizes_t sz = {sizeof sz, 0, 0, 0, 0, 0, 0};
    TRY(okv_cache_get_sizes(d, &sz));

    int32_t after = 0, int2_pages = 0;
    TRY(okv_cache_int2_len_after(d, 0, 0, T, &after));
    TRY(okv_cache_int2_pages_needed(d, after, &int2_pages));
    const int32_t bpp = sz.bf16_pages_per_seq;
    tmp = calloc((size_t)(int2_pages + bpp + 2 * M + 4) * 2, sizeof *tmp);
    times = calloc((size_t)(r->timing_reps > 0 ? r->timing_reps : 1), sizeof *times);
    if (!tmp || !times) {
        st = OKV_ERROR_OUT_OF_MEMORY;
        snprintf(err, err_cap, "out of host memory");
        goto done;
    }

    okv_cache_view_t view;
    memset(&view, 0, sizeof view);
    view.desc = d;
    view.batch = 1;
    view.int2_pool_pages = int2_pages;
    view.bf16_pool_pages = bpp;
    if (int2_pages) TRY(mk(ctx, &bs, (size_t)int2_pages * sz.int2_page_bytes, NULL, &view.int2_pool));
    TRY(mk(ctx, &bs, (size_t)bpp * sz.bf16_page_bytes, NULL, &view.bf16_pool));
    for (int32_t i = 0; i < int2_pages + bpp; ++i)
        tmp[i] = i < int2_pages ? i : i - int2_pages;
    TRY(mk(ctx, &bs, sizeof(int32_t) * (size_t)(int2_pages ? int2_pages : 1), tmp, &view.int2_indices));
    TRY(mk(ctx, &bs, sizeof(int32_t) * (size_t)bpp, tmp + int2_pages, &view.bf16_indices));
    int32_t ip_int2[2] = {0, int2_pages}, ip_bf16[2] = {0, bpp}, zero = 0;
    TRY(mk(ctx, &bs, sizeof ip_int2, ip_int2, &view.int2_indptr));
    TRY(mk(ctx, &bs, sizeof ip_bf16, ip_bf16, &view.bf16_indptr));
    TRY(mk(ctx, &bs, 4, &zero, &view.seq_lens));
    TRY(mk(ctx, &bs, 4, &zero, &view.int2_lens));

    /* one prefill append of all tokens */
    okv_append_params_t ap;
    okv_append_params_init(&ap);
    ap.cache = view;
    ap.kv_dtype = OKV_DTYPE_F32;
    ap.n_rows = T;
    int32_t aip[2] = {0, T};
    size_t kv_bytes = sizeof(float) * (size_t)T * hkv * hd;
    TRY(mk(ctx, &bs, kv_bytes, r->k, &ap.k));
    TRY(mk(ctx, &bs, kv_bytes, r->v, &ap.v));
    TRY(mk(ctx, &bs, sizeof aip, aip, &ap.append_indptr));
    TRY(mk(ctx, &bs, sizeof(float) * hd * hd, r->k_rot, &ap.k_rotation));
    TRY(mk(ctx, &bs, sizeof(float) * hd * hd, r->v_rot, &ap.v_rotation));
    ap.k_clip_ratio = r->k_clip;
    ap.v_clip_ratio = r->v_clip;
    TRY(okv_append(ctx, &ap));

    /* read back the dequantized cache (rotated basis) for the probability metrics */
    okv_dequantize_params_t dq;
    okv_dequantize_params_init(&dq);
    dq.cache = view;
    dq.out_rows = T;
    dq.out_dtype = OKV_DTYPE_F32;
    TRY(mk(ctx, &bs, sizeof aip, aip, &dq.out_indptr));
    TRY(mk(ctx, &bs, kv_bytes, NULL, &dq.k_out));
    TRY(mk(ctx, &bs, kv_bytes, NULL, &dq.v_out));
    TRY(okv_dequantize(ctx, &dq));
    TRY(okv_buffer_read(ctx, dq.k_out.buffer, 0, r->k_hat, kv_bytes));

    /* M prefixes sharing the pages: sequence b holds the first T - M + 1 + b tokens */
    okv_cache_view_t dv = view;
    dv.batch = M;
    int32_t *seq = tmp, *i2 = tmp + M, *iptr = tmp + 2 * M, *bptr = tmp + 3 * M + 1;
    int32_t *bidx = calloc((size_t)M * bpp, sizeof *bidx);
    if (!bidx) {
        st = OKV_ERROR_OUT_OF_MEMORY;
        goto done;
    }
    for (int32_t b = 0; b < M; ++b) {
        seq[b] = T - M + 1 + b;
        int32_t a = 0;
        okv_cache_int2_len_after(d, 0, 0, seq[b], &a);
        i2[b] = a;
        for (int32_t j = 0; j < bpp; ++j)
            bidx[b * bpp + j] = j; /* shared: decode only reads */
    }
    /* every sequence lists the same INT2 and BF16 pages (prefix sharing; decode only reads) */
    int32_t *i2idx = calloc((size_t)M * (int2_pages ? int2_pages : 1), sizeof *i2idx);
    if (!i2idx) {
        free(bidx);
        st = OKV_ERROR_OUT_OF_MEMORY;
        goto done;
    }
    for (int32_t b = 0; b < M; ++b)
        for (int32_t j = 0; j < int2_pages; ++j)
            i2idx[b * int2_pages + j] = j;
    for (int32_t b = 0; b <= M; ++b) {
        iptr[b] = b * int2_pages;
        bptr[b] = b * bpp;
    }
    st = mk(ctx, &bs, sizeof(int32_t) * (size_t)M * (int2_pages ? int2_pages : 1), i2idx, &dv.int2_indices);
    free(i2idx);
    if (st == OKV_SUCCESS) st = mk(ctx, &bs, sizeof(int32_t) * (size_t)M * bpp, bidx, &dv.bf16_indices);
    free(bidx);
    TRY(st);
    TRY(mk(ctx, &bs, sizeof(int32_t) * (size_t)(M + 1), iptr, &dv.int2_indptr));
    TRY(mk(ctx, &bs, sizeof(int32_t) * (size_t)(M + 1), bptr, &dv.bf16_indptr));
    TRY(mk(ctx, &bs, sizeof(int32_t) * (size_t)M, seq, &dv.seq_lens));
    TRY(mk(ctx, &bs, sizeof(int32_t) * (size_t)M, i2, &dv.int2_lens));

    /* rotate the queries by R_K, then decode with the output un-rotated by R_V^T */
    size_t q_bytes = sizeof(float) * (size_t)M * hq * hd;
    okv_rotate_params_t rp;
    okv_rotate_params_init(&rp);
    TRY(mk(ctx, &bs, q_bytes, r->q, &rp.x));
    TRY(mk(ctx, &bs, q_bytes, NULL, &rp.out));
    rp.x_dtype = rp.out_dtype = OKV_DTYPE_F32;
    rp.rotation = ap.k_rotation;
    rp.n_rows = M;
    rp.n_heads = hq;
    rp.head_dim = hd;
    TRY(okv_rotate(ctx, &rp));
    TRY(okv_buffer_read(ctx, rp.out.buffer, 0, r->q_rot, q_bytes));

    okv_decode_params_t dp;
    okv_decode_params_init(&dp);
    dp.cache = dv;
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
    free(tmp);
    free(times);
    return st;
}
