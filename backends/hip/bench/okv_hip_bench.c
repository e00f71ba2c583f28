/*
 * okv_hip_bench.c - decode-attention benchmark of one backend through the public
 * API only (so it runs unchanged on AMD MI200/MI300 with the HIP module, or on any
 * other backend): fills an INT2 paged cache of `ctx` tokens per sequence with
 * okv_append, then times okv_decode_attention.
 *
 *   okv_hip_bench [--backend hip] [--batch 1] [--ctx 32768] [--hq 32] [--hkv 8]
 *                 [--d 128] [--splits 0] [--reps 20] [--meta f16|bf16|f32]
 *
 * Time is host wall clock around `reps` back-to-back calls and one
 * okv_context_synchronize (the public API has no device events), median of 5
 * such batches; it includes each call's device-side validation and status read.
 * Bytes are the cache bytes a decode must read (INT2 tier with metadata + BF16
 * sink/recent tier) over all sequences; GB/s = bytes / time.
 */
#define _POSIX_C_SOURCE 200809L
#include "oscarkv/oscarkv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static unsigned short f2bf(float f)
{
    unsigned u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

#define CK(call)                                                                                                       \
    do {                                                                                                               \
        okv_status_t s_ = (call);                                                                                      \
        if (s_ != OKV_SUCCESS) {                                                                                       \
            fprintf(stderr, "%s:%d %s -> %s: %s\n", __FILE__, __LINE__, #call, okv_status_string(s_),                  \
                    ctx ? okv_context_last_error(ctx) : "");                                                           \
            return 1;                                                                                                  \
        }                                                                                                              \
    } while (0)

static okv_buffer_t *upload(okv_context_t *ctx, const void *src, size_t bytes)
{
    okv_buffer_t *b = NULL;
    if (okv_buffer_create(ctx, bytes ? bytes : 4, &b) != OKV_SUCCESS) return NULL;
    if (src && bytes && okv_buffer_write(ctx, b, 0, src, bytes) != OKV_SUCCESS) return NULL;
    return b;
}

int main(int argc, char **argv)
{
    const char *backend = "hip", *meta = "f16";
    int batch = 1, ctxlen = 32768, hq = 32, hkv = 8, d = 128, splits = 0, reps = 20;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr,
                    "usage: %s [--backend B] [--batch N] [--ctx L] [--hq H] [--hkv H] [--d D] [--splits S] "
                    "[--reps R] [--meta f16|bf16|f32]\n",
                    argv[0]);
            return 2;
        }
        if (!strcmp(a, "--backend"))
            backend = v;
        else if (!strcmp(a, "--batch"))
            batch = atoi(v);
        else if (!strcmp(a, "--ctx"))
            ctxlen = atoi(v);
        else if (!strcmp(a, "--hq"))
            hq = atoi(v);
        else if (!strcmp(a, "--hkv"))
            hkv = atoi(v);
        else if (!strcmp(a, "--d"))
            d = atoi(v);
        else if (!strcmp(a, "--splits"))
            splits = atoi(v);
        else if (!strcmp(a, "--reps"))
            reps = atoi(v);
        else if (!strcmp(a, "--meta"))
            meta = v;
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
        ++i;
    }
    okv_context_t *ctx = NULL;
    okv_context_desc_t cd;
    okv_context_desc_init(&cd);
    cd.backend = backend;
    CK(okv_context_create(&cd, &ctx));
    okv_device_info_t di;
    okv_device_info_init(&di);
    okv_device_get_info(okv_context_backend_name(ctx), 0, &di);

    okv_cache_desc_t desc;
    okv_cache_desc_init(&desc);
    desc.n_q_heads = hq;
    desc.n_kv_heads = hkv;
    desc.head_dim = d;
    desc.meta_dtype = !strcmp(meta, "f32") ? OKV_DTYPE_F32 : (!strcmp(meta, "bf16") ? OKV_DTYPE_BF16 : OKV_DTYPE_F16);
    CK(okv_cache_desc_validate(&desc));
    okv_cache_sizes_t sz;
    memset(&sz, 0, sizeof sz);
    sz.size = sizeof sz;
    CK(okv_cache_get_sizes(&desc, &sz));
    int32_t i2 = 0, i2pages = 0;
    CK(okv_cache_int2_len_after(&desc, 0, 0, ctxlen, &i2));
    CK(okv_cache_int2_pages_needed(&desc, i2, &i2pages));
    if (i2pages < 1) i2pages = 1;
    const int bfp = sz.bf16_pages_per_seq;

    /* page tables: sequence b owns a contiguous run of pages */
    int32_t *i2ptr = malloc(sizeof(int32_t) * (batch + 1)), *bfptr = malloc(sizeof(int32_t) * (batch + 1));
    int32_t *i2idx = malloc(sizeof(int32_t) * (size_t)batch * i2pages), *bfidx = malloc(sizeof(int32_t) * batch * bfp);
    int32_t *zeros = calloc((size_t)batch, sizeof(int32_t));
    if (!i2ptr || !bfptr || !i2idx || !bfidx || !zeros) return 1;
    for (int b = 0; b <= batch; ++b) {
        i2ptr[b] = b * i2pages;
        bfptr[b] = b * bfp;
    }
    for (int i = 0; i < batch * i2pages; ++i)
        i2idx[i] = i;
    for (int i = 0; i < batch * bfp; ++i)
        bfidx[i] = i;
    okv_buffer_t *pool2 = upload(ctx, NULL, sz.int2_page_bytes * (size_t)batch * i2pages);
    okv_buffer_t *poolb = upload(ctx, NULL, sz.bf16_page_bytes * (size_t)batch * bfp);
    okv_buffer_t *b_i2ptr = upload(ctx, i2ptr, sizeof(int32_t) * (batch + 1));
    okv_buffer_t *b_i2idx = upload(ctx, i2idx, sizeof(int32_t) * (size_t)batch * i2pages);
    okv_buffer_t *b_bfptr = upload(ctx, bfptr, sizeof(int32_t) * (batch + 1));
    okv_buffer_t *b_bfidx = upload(ctx, bfidx, sizeof(int32_t) * (size_t)batch * bfp);
    okv_buffer_t *b_len = upload(ctx, zeros, sizeof(int32_t) * batch);
    okv_buffer_t *b_i2len = upload(ctx, zeros, sizeof(int32_t) * batch);
    if (!pool2 || !poolb || !b_i2ptr || !b_i2idx || !b_bfptr || !b_bfidx || !b_len || !b_i2len) {
        fprintf(stderr, "allocation failed: %s\n", okv_context_last_error(ctx));
        return 1;
    }
    okv_cache_view_t view;
    memset(&view, 0, sizeof view);
    view.desc = &desc;
    view.batch = batch;
    view.int2_pool = (okv_ref_t){pool2, 0};
    view.int2_pool_pages = batch * i2pages;
    view.bf16_pool = (okv_ref_t){poolb, 0};
    view.bf16_pool_pages = batch * bfp;
    view.int2_indptr = (okv_ref_t){b_i2ptr, 0};
    view.int2_indices = (okv_ref_t){b_i2idx, 0};
    view.bf16_indptr = (okv_ref_t){b_bfptr, 0};
    view.bf16_indices = (okv_ref_t){b_bfidx, 0};
    view.seq_lens = (okv_ref_t){b_len, 0};
    view.int2_lens = (okv_ref_t){b_i2len, 0};

    /* rotation: normalised Sylvester-Hadamard (orthogonal) */
    float *R = malloc(sizeof(float) * d * d);
    if (!R) return 1;
    for (int i = 0; i < d; ++i)
        for (int j = 0; j < d; ++j)
            R[i * d + j] = (__builtin_popcount((unsigned)(i & j)) & 1 ? -1.f : 1.f) / sqrtf(d);
    okv_buffer_t *b_R = upload(ctx, R, sizeof(float) * d * d);

    /* fill: chunks of up to 4096 rows per sequence */
    const int chunk = ctxlen < 4096 ? (ctxlen > 0 ? ctxlen : 1) : 4096;
    size_t rows_max = (size_t)batch * chunk;
    unsigned short *kv = malloc(sizeof(unsigned short) * rows_max * hkv * d);
    int32_t *aptr = malloc(sizeof(int32_t) * (batch + 1));
    if (!kv || !aptr) return 1;
    unsigned rng = 12345u;
    for (size_t i = 0; i < rows_max * hkv * d; ++i) {
        rng = rng * 1664525u + 1013904223u;
        kv[i] = f2bf(((float)(rng >> 8) / 16777216.0f - 0.5f) * 4.0f);
    }
    okv_buffer_t *b_kv = upload(ctx, kv, sizeof(unsigned short) * rows_max * hkv * d);
    okv_buffer_t *b_aptr = upload(ctx, NULL, sizeof(int32_t) * (batch + 1));
    double t_fill = now_s();
    for (int done = 0; done < ctxlen; done += chunk) {
        const int n = ctxlen - done < chunk ? ctxlen - done : chunk;
        for (int b = 0; b <= batch; ++b)
            aptr[b] = b * n;
        CK(okv_buffer_write(ctx, b_aptr, 0, aptr, sizeof(int32_t) * (batch + 1)));
        okv_append_params_t ap;
        okv_append_params_init(&ap);
        ap.cache = view;
        ap.k = (okv_ref_t){b_kv, 0};
        ap.v = (okv_ref_t){b_kv, 0};
        ap.kv_dtype = OKV_DTYPE_BF16;
        ap.append_indptr = (okv_ref_t){b_aptr, 0};
        ap.n_rows = batch * n;
        ap.k_rotation = (okv_ref_t){b_R, 0};
        ap.v_rotation = (okv_ref_t){b_R, 0};
        CK(okv_append(ctx, &ap));
    }
    CK(okv_context_synchronize(ctx));
    t_fill = now_s() - t_fill;

    /* decode */
    size_t qn = (size_t)batch * hq * d;
    unsigned short *q = malloc(sizeof(unsigned short) * qn);
    if (!q) return 1;
    for (size_t i = 0; i < qn; ++i) {
        rng = rng * 1664525u + 1013904223u;
        q[i] = f2bf(((float)(rng >> 8) / 16777216.0f - 0.5f) * 2.0f);
    }
    okv_buffer_t *b_q = upload(ctx, q, sizeof(unsigned short) * qn);
    okv_buffer_t *b_o = upload(ctx, NULL, sizeof(unsigned short) * qn);
    okv_decode_params_t dp;
    okv_decode_params_init(&dp);
    dp.cache = view;
    dp.q = (okv_ref_t){b_q, 0};
    dp.out = (okv_ref_t){b_o, 0};
    dp.max_seq_len = ctxlen;
    dp.num_splits = splits;
    size_t wsb = 0;
    CK(okv_decode_workspace_size(ctx, &dp, &wsb));
    okv_buffer_t *b_ws = wsb ? upload(ctx, NULL, wsb) : NULL;
    dp.workspace = (okv_ref_t){b_ws, 0};
    dp.workspace_bytes = wsb;
    for (int i = 0; i < 3; ++i)
        CK(okv_decode_attention(ctx, &dp));
    CK(okv_context_synchronize(ctx));
    double t[5];
    for (int k = 0; k < 5; ++k) {
        double t0 = now_s();
        for (int i = 0; i < reps; ++i)
            CK(okv_decode_attention(ctx, &dp));
        CK(okv_context_synchronize(ctx));
        t[k] = (now_s() - t0) / reps;
    }
    qsort(t, 5, sizeof t[0], cmp_d);
    const double med = t[2];
    const int64_t i2len = i2, bflen = ctxlen - i2;
    const double bytes =
        (double)batch * ((double)i2len * sz.int2_bytes_per_token + (double)bflen * sz.bf16_bytes_per_token);
    const double bf16_bytes = (double)batch * (double)ctxlen * 2.0 * hkv * d * 2.0;
    printf("backend %s | device %s | warp %d\n", okv_context_backend_name(ctx), di.name, di.warp_size);
    printf("batch %d ctx %d (int2 %d, bf16 %d) Hq %d Hkv %d d %d meta %s splits %d | fill %.2f s\n", batch, ctxlen,
           (int)i2len, (int)bflen, hq, hkv, d, meta, splits, t_fill);
    printf("decode: median %.1f us per call (%d calls x 5) | cache bytes read %.2f MB (BF16 cache would be %.2f MB) | "
           "%.1f GB/s\n",
           med * 1e6, reps, bytes / 1e6, bf16_bytes / 1e6, bytes / med / 1e9);
    return 0; /* buffers and context are released with the process */
}
