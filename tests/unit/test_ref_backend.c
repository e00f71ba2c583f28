/* test_ref_backend.c - the "ref" backend's function table (probe, device info,
 * host buffers, workspace sizes, rotate and moments ops) and the same backend
 * reached through the public API (context, buffers, append, decode), which must
 * give bit-identical results to the reference functions called directly. */
#include "test_ref_util.h"

#include "oscarkv/oscarkv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_table)
{
    const okv_backend_ops_t *ops = okv_ref_backend_ops();
    ck_assert_ptr_nonnull(ops);
    ck_assert_ptr_eq(ops, okv_ref_backend_ops());
    ck_assert_uint_eq(ops->iface_version, OKV_BACKEND_IFACE_VERSION);
    ck_assert_uint_eq(ops->struct_size, sizeof(okv_backend_ops_t));
    ck_assert_str_eq(ops->name, "ref");
    const void *fns[] = {(const void *)ops->probe,       (const void *)ops->device_info,
                         (const void *)ops->create,      (const void *)ops->destroy,
                         (const void *)ops->alloc,       (const void *)ops->release,
                         (const void *)ops->write,       (const void *)ops->read,
                         (const void *)ops->synchronize, (const void *)ops->rotate,
                         (const void *)ops->append,      (const void *)ops->demote,
                         (const void *)ops->dequantize,  (const void *)ops->decode_workspace,
                         (const void *)ops->decode,      (const void *)ops->prefill_workspace,
                         (const void *)ops->prefill,     (const void *)ops->moments};
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; ++i)
        ck_assert_ptr_nonnull(fns[i]);

    int32_t n = 0;
    char reason[OKV_REASON_MAX];
    ck_assert_int_eq(ops->probe(&n, reason, sizeof reason), OKV_SUCCESS);
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(reason, "scalar C reference");
    okv_device_info_t info;
    memset(&info, 0x5a, sizeof info);
    info.size = sizeof info;
    ck_assert_int_eq(ops->device_info(0, &info), OKV_SUCCESS);
    ck_assert_str_eq(info.name, "scalar C reference");
    ck_assert_int_eq(info.warp_size, 1);
    ck_assert_int_eq(info.has_fp64, 1);
    ck_assert_int_eq(info.has_subgroups, 0);
    ck_assert_int_ne(ops->device_info(1, &info), OKV_SUCCESS);

    okv_err_t err;
    void *state = NULL;
    ck_assert_int_eq(ops->create(0, NULL, &state, &err), OKV_SUCCESS);
    ck_assert_int_ne(ops->create(1, NULL, &state, &err), OKV_SUCCESS);
    void *mem = NULL;
    ck_assert_int_eq(ops->alloc(state, 64, &mem, &err), OKV_SUCCESS);
    for (int i = 0; i < 64; ++i)
        ck_assert_uint_eq(((uint8_t *)mem)[i], 0);
    const char msg[] = "0123456789";
    char back[10];
    ck_assert_int_eq(ops->write(state, mem, 7, msg, 10, &err), OKV_SUCCESS);
    ck_assert_int_eq(ops->read(state, mem, 7, back, 10, &err), OKV_SUCCESS);
    ck_assert(memcmp(back, msg, 10) == 0);
    ck_assert_uint_eq(((uint8_t *)mem)[6], 0);
    ck_assert_uint_eq(((uint8_t *)mem)[17], 0);
    ck_assert_int_eq(ops->synchronize(state, &err), OKV_SUCCESS);
    void *empty = NULL;
    ck_assert_int_eq(ops->alloc(state, 0, &empty, &err), OKV_SUCCESS);
    ops->release(state, empty);
    ops->release(state, mem);
    size_t ws = 123;
    okv_decode_params_t dp;
    memset(&dp, 0, sizeof dp);
    ck_assert_int_eq(ops->decode_workspace(state, &dp, &ws, &err), OKV_SUCCESS);
    ck_assert_uint_eq(ws, 0);
    okv_prefill_params_t pp;
    memset(&pp, 0, sizeof pp);
    ws = 123;
    ck_assert_int_eq(ops->prefill_workspace(state, &pp, &ws, &err), OKV_SUCCESS);
    ck_assert_uint_eq(ws, 0);
    ops->destroy(state);
}
END_TEST

START_TEST(test_rotate_op_dtypes_and_nan)
{
    const int d = 128, nh = 3, rows = 5;
    tu_rng_t rng = {1};
    float *rot = (float *)tu_calloc((size_t)d * d, 4);
    tu_random_orthogonal(&rng, d, rot);
    const size_t n = (size_t)rows * nh * d;
    float *x = (float *)tu_calloc(n, 4), *y = (float *)tu_calloc(n, 4);
    uint16_t *xb = (uint16_t *)tu_calloc(n, 2), *yh = (uint16_t *)tu_calloc(n + 8, 2);
    tu_fill_normal(&rng, x, n, 1.0);
    for (size_t i = 0; i < n; ++i)
        xb[i] = okv_f32_to_bf16(x[i]);
    memset(yh, 0xee, (n + 8) * 2);
    okv_rotate_params_t p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.x = tu_ref(xb, n * 2);
    p.x_dtype = OKV_DTYPE_BF16;
    p.out = tu_ref(yh, n * 2);
    p.out_dtype = OKV_DTYPE_F16;
    p.rotation = tu_ref(rot, (size_t)d * d * 4);
    p.n_rows = rows;
    p.n_heads = nh;
    p.head_dim = d;
    okv_err_t err;
    ck_assert_int_eq(okv_ref_backend_ops()->rotate(NULL, &p, &err), OKV_SUCCESS);
    for (size_t r = 0; r < (size_t)rows * nh; ++r)
        for (int j = 0; j < d; ++j) {
            double s = 0.0;
            for (int i = 0; i < d; ++i)
                s += (double)okv_bf16_to_f32(xb[r * d + i]) * rot[(size_t)i * d + j];
            ck_assert_uint_eq(yh[r * d + j], okv_f32_to_f16((float)s));
        }
    for (size_t i = n; i < n + 8; ++i)
        ck_assert_uint_eq(yh[i], 0xeeee); /* guard */
    /* in place, f32 */
    memcpy(y, x, n * 4);
    p.x = tu_ref(y, n * 4);
    p.out = p.x;
    p.x_dtype = p.out_dtype = OKV_DTYPE_F32;
    ck_assert_int_eq(okv_ref_backend_ops()->rotate(NULL, &p, &err), OKV_SUCCESS);
    float row[128];
    okv_ref_rotate_row(x + d, rot, d, 0, row);
    ck_assert(memcmp(row, y + d, sizeof row) == 0);
    /* NaN in x or the rotation: status, output untouched */
    memcpy(y, x, n * 4);
    p.x = tu_ref(x, n * 4);
    p.out = tu_ref(y, n * 4);
    x[n - 1] = NAN;
    ck_assert_int_eq(okv_ref_backend_ops()->rotate(NULL, &p, &err), OKV_ERROR_NONFINITE_INPUT);
    x[n - 1] = 0.0f;
    rot[5] = INFINITY;
    ck_assert_int_eq(okv_ref_backend_ops()->rotate(NULL, &p, &err), OKV_ERROR_NONFINITE_INPUT);
    ck_assert(memcmp(y, x, (n - 1) * 4) == 0);
    free(rot);
    free(x);
    free(y);
    free(xb);
    free(yh);
}
END_TEST

START_TEST(test_moments_op)
{
    const int d = 64, nh = 4, hg = 2, rows = 37;
    tu_rng_t rng = {2};
    const size_t n = (size_t)rows * nh * d;
    float *x = (float *)tu_calloc(n, 4), *w = (float *)tu_calloc((size_t)rows * nh, 4);
    tu_fill_normal(&rng, x, n, 1.0);
    for (int i = 0; i < rows * nh; ++i)
        w[i] = (float)tu_uniform(&rng);
    const int na = nh / hg;
    double *acc = (double *)tu_calloc((size_t)na * d * d, 8), *ref = (double *)tu_calloc((size_t)na * d * d, 8);
    float *accf = (float *)tu_calloc((size_t)na * d * d, 4);
    for (int t = 0; t < rows; ++t)
        for (int h = 0; h < nh; ++h)
            for (int i = 0; i < d; ++i)
                for (int j = 0; j < d; ++j)
                    ref[((size_t)(h / hg) * d + i) * d + j] +=
                        2.0 * (double)w[t * nh + h] * x[((size_t)t * nh + h) * d + i] * x[((size_t)t * nh + h) * d + j];
    okv_moments_params_t p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.x = tu_ref(x, n * 4);
    p.x_dtype = OKV_DTYPE_F32;
    p.weights = tu_ref(w, (size_t)rows * nh * 4);
    p.acc = tu_ref(acc, (size_t)na * d * d * 8);
    p.acc_dtype = OKV_DTYPE_F64;
    p.n_rows = rows;
    p.n_heads = nh;
    p.head_dim = d;
    p.head_group = hg;
    okv_err_t err;
    /* two calls accumulate */
    ck_assert_int_eq(okv_ref_backend_ops()->moments(NULL, &p, &err), OKV_SUCCESS);
    ck_assert_int_eq(okv_ref_backend_ops()->moments(NULL, &p, &err), OKV_SUCCESS);
    p.acc = tu_ref(accf, (size_t)na * d * d * 4);
    p.acc_dtype = OKV_DTYPE_F32;
    ck_assert_int_eq(okv_ref_backend_ops()->moments(NULL, &p, &err), OKV_SUCCESS);
    ck_assert_int_eq(okv_ref_backend_ops()->moments(NULL, &p, &err), OKV_SUCCESS);
    for (size_t i = 0; i < (size_t)na * d * d; ++i) {
        ck_assert_msg(fabs(acc[i] - ref[i]) <= 1e-10 * (1.0 + fabs(ref[i])), "f64 acc %zu", i);
        ck_assert_msg(fabs(accf[i] - ref[i]) <= 1e-5 * (1.0 + fabs(ref[i])), "f32 acc %zu", i);
        ck_assert(acc[i] == acc[(i / (d * d)) * d * d + (i % d) * d + (i / d) % d]); /* symmetric */
    }
    /* NaN weight: status and accumulator untouched */
    double *acc0 = (double *)tu_calloc((size_t)na * d * d, 8);
    memcpy(acc0, acc, (size_t)na * d * d * 8);
    w[3] = NAN;
    p.acc = tu_ref(acc, (size_t)na * d * d * 8);
    p.acc_dtype = OKV_DTYPE_F64;
    ck_assert_int_eq(okv_ref_backend_ops()->moments(NULL, &p, &err), OKV_ERROR_NONFINITE_INPUT);
    ck_assert(memcmp(acc0, acc, (size_t)na * d * d * 8) == 0);
    free(acc0);
    free(x);
    free(w);
    free(acc);
    free(ref);
    free(accf);
}
END_TEST

/* The public API on the "ref" backend gives the same bytes as the table. */
START_TEST(test_public_api_matches_table)
{
    okv_context_desc_t cd;
    okv_context_desc_init(&cd);
    cd.backend = "ref";
    okv_context_t *ctx = NULL;
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_SUCCESS);
    ck_assert_str_eq(okv_context_backend_name(ctx), "ref");

    okv_cache_desc_t desc;
    okv_cache_desc_init(&desc);
    desc.n_q_heads = 8;
    desc.n_kv_heads = 2;
    desc.head_dim = 64;
    desc.sink_tokens = 4;
    desc.recent_tokens = 16;
    desc.flush_interval = 8;
    desc.page_size = 16;
    ck_assert_int_eq(okv_cache_desc_validate(&desc), OKV_SUCCESS);
    okv_cache_sizes_t sz;
    memset(&sz, 0, sizeof sz);
    sz.size = sizeof sz;
    ck_assert_int_eq(okv_cache_get_sizes(&desc, &sz), OKV_SUCCESS);
    const tu_geom_t g = {8, 2,  64, 0, (int32_t)desc.meta_dtype, (int32_t)desc.quantizer, (int32_t)desc.clip_mode,
                         4, 16, 8,  16};
    tu_cache_t host;
    tu_cache_init(&host, &g, 2, 128, 0, 77);
    ck_assert_uint_eq(sz.int2_page_bytes, host.int2_page_bytes);
    ck_assert_uint_eq(sz.bf16_page_bytes, host.bf16_page_bytes);
    ck_assert_int_eq(sz.bf16_pages_per_seq, host.bf16_pages_per_seq);

    /* device (ref) buffers mirroring the host cache's tables */
#define MK(name, ptr, bytes)                                                                                           \
    okv_buffer_t *name = NULL;                                                                                         \
    ck_assert_int_eq(okv_buffer_create(ctx, (bytes), &name), OKV_SUCCESS);                                             \
    ck_assert_int_eq(okv_buffer_write(ctx, name, 0, (ptr), (bytes)), OKV_SUCCESS)
    size_t i2b = host.int2_page_bytes * (size_t)host.int2_pool_pages,
           bfb = host.bf16_page_bytes * (size_t)host.bf16_pool_pages;
    MK(b_i2, host.int2_pool, i2b);
    MK(b_bf, host.bf16_pool, bfb);
    MK(b_i2ptr, host.int2_indptr, 12);
    MK(b_i2idx, host.int2_indices, sizeof(int32_t) * 2 * (size_t)host.int2_pages_per_seq);
    MK(b_bfptr, host.bf16_indptr, 12);
    MK(b_bfidx, host.bf16_indices, sizeof(int32_t) * 2 * (size_t)host.bf16_pages_per_seq);
    MK(b_len, host.seq_lens, 8);
    MK(b_i2len, host.int2_lens, 8);
    okv_cache_view_t view;
    memset(&view, 0, sizeof view);
    view.desc = &desc;
    view.batch = 2;
    view.int2_pool = (okv_ref_t){b_i2, 0};
    view.int2_pool_pages = host.int2_pool_pages;
    view.bf16_pool = (okv_ref_t){b_bf, 0};
    view.bf16_pool_pages = host.bf16_pool_pages;
    view.int2_indptr = (okv_ref_t){b_i2ptr, 0};
    view.int2_indices = (okv_ref_t){b_i2idx, 0};
    view.bf16_indptr = (okv_ref_t){b_bfptr, 0};
    view.bf16_indices = (okv_ref_t){b_bfidx, 0};
    view.seq_lens = (okv_ref_t){b_len, 0};
    view.int2_lens = (okv_ref_t){b_i2len, 0};

    tu_rng_t rng = {3};
    const int32_t rows = 100;
    const size_t nel = (size_t)rows * 2 * 64;
    float *k = (float *)tu_calloc(nel, 4), *v = (float *)tu_calloc(nel, 4), *rot = (float *)tu_calloc(64 * 64, 4);
    tu_fill_normal(&rng, k, nel, 1.0);
    tu_fill_normal(&rng, v, nel, 1.0);
    tu_random_orthogonal(&rng, 64, rot);
    int32_t indptr[3] = {0, 70, 100};
    MK(b_k, k, nel * 4);
    MK(b_v, v, nel * 4);
    MK(b_rot, rot, 64 * 64 * 4);
    MK(b_ptr, indptr, 12);
    okv_append_params_t ap;
    okv_append_params_init(&ap);
    ap.cache = view;
    ap.k = (okv_ref_t){b_k, 0};
    ap.v = (okv_ref_t){b_v, 0};
    ap.kv_dtype = OKV_DTYPE_F32;
    ap.append_indptr = (okv_ref_t){b_ptr, 0};
    ap.n_rows = rows;
    ap.k_rotation = (okv_ref_t){b_rot, 0};
    ap.v_rotation = (okv_ref_t){b_rot, 0};
    ck_assert_msg(okv_append(ctx, &ap) == OKV_SUCCESS, "%s", okv_context_last_error(ctx));
    okv_err_t err;
    ck_assert_int_eq(
        tu_append(&host, k, v, OKV_DTYPE_F32, indptr, rows, rot, rot, 0, ap.k_clip_ratio, ap.v_clip_ratio, &err),
        OKV_SUCCESS);
    uint8_t *i2 = (uint8_t *)tu_calloc(i2b, 1), *bf = (uint8_t *)tu_calloc(bfb, 1);
    int32_t lens[2], i2lens[2];
    ck_assert_int_eq(okv_buffer_read(ctx, b_i2, 0, i2, i2b), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_read(ctx, b_bf, 0, bf, bfb), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_read(ctx, b_len, 0, lens, 8), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_read(ctx, b_i2len, 0, i2lens, 8), OKV_SUCCESS);
    ck_assert(memcmp(i2, host.int2_pool, i2b) == 0);
    ck_assert(memcmp(bf, host.bf16_pool, bfb) == 0);
    ck_assert(lens[0] == 70 && lens[1] == 30 && i2lens[0] == 50 && i2lens[1] == 10);

    /* decode through the API (bf16 q/out, the defaults) vs the table */
    const size_t nq = 2 * 8 * 64;
    uint16_t *q = (uint16_t *)tu_calloc(nq, 2), *o_api = (uint16_t *)tu_calloc(nq, 2),
             *o_tab = (uint16_t *)tu_calloc(nq, 2);
    for (size_t i = 0; i < nq; ++i)
        q[i] = okv_f32_to_bf16((float)tu_normal(&rng));
    MK(b_q, q, nq * 2);
    MK(b_o, o_api, nq * 2);
    okv_decode_params_t dp;
    okv_decode_params_init(&dp);
    dp.cache = view;
    dp.q = (okv_ref_t){b_q, 0};
    dp.out = (okv_ref_t){b_o, 0};
    dp.max_seq_len = 70;
    dp.num_splits = 3;
    size_t ws = 1;
    ck_assert_int_eq(okv_decode_workspace_size(ctx, &dp, &ws), OKV_SUCCESS);
    ck_assert_uint_eq(ws, 0);
    ck_assert_msg(okv_decode_attention(ctx, &dp) == OKV_SUCCESS, "%s", okv_context_last_error(ctx));
    ck_assert_int_eq(okv_buffer_read(ctx, b_o, 0, o_api, nq * 2), OKV_SUCCESS);
    tu_decode_args_t a = {q, OKV_DTYPE_BF16, OKV_DTYPE_BF16, o_tab, NULL, 0.0f, 3, NULL, 0, 0};
    ck_assert_int_eq(tu_decode(&host, &a, &err), OKV_SUCCESS);
    ck_assert(memcmp(o_api, o_tab, nq * 2) == 0);

    /* a data-dependent error keeps its status and detail through the API */
    int32_t bad = host.int2_pool_pages + 3;
    ck_assert_int_eq(okv_buffer_write(ctx, b_i2idx, 4, &bad, 4), OKV_SUCCESS);
    ck_assert_int_eq(okv_decode_attention(ctx, &dp), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(okv_context_last_error(ctx), "sequence 0"));

    okv_buffer_t *all[] = {b_i2,    b_bf, b_i2ptr, b_i2idx, b_bfptr, b_bfidx, b_len,
                           b_i2len, b_k,  b_v,     b_rot,   b_ptr,   b_q,     b_o};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        okv_buffer_destroy(all[i]);
#undef MK
    free(q);
    free(o_api);
    free(o_tab);
    free(i2);
    free(bf);
    free(k);
    free(v);
    free(rot);
    tu_cache_free(&host);
    okv_context_destroy(ctx);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("ref_backend");
    TCase *tc = tcase_create("backend");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, NULL, tu_release_all);
    tcase_add_test(tc, test_table);
    tcase_add_test(tc, test_rotate_op_dtypes_and_nan);
    tcase_add_test(tc, test_moments_op);
    tcase_add_test(tc, test_public_api_matches_table);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return okv_check_run(suite()); }
