/* test_core_api.c - the core's public surface: status names, cache geometry and the
 * flush rule, backend registry, contexts, buffers, and parameter validation of every
 * op (NULLs, bad shapes, unsupported head_dim, too-small buffers leave memory intact). */
#define _POSIX_C_SOURCE 200112L /* setenv */
#include "oscarkv/oscarkv.h"

#include <check.h>

#include "okv_check_run.h"
#include <math.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

START_TEST(status_names)
{
    for (int s = OKV_SUCCESS; s <= OKV_ERROR_INTERNAL; ++s) {
        const char *n = okv_status_string((okv_status_t)s);
        ck_assert_ptr_nonnull(n);
        ck_assert_msg(strncmp(n, "OKV_", 4) == 0 && strstr(n, "UNKNOWN") == NULL, "status %d named %s", s, n);
    }
    ck_assert_str_eq(okv_status_string((okv_status_t)9999), "OKV_ERROR_UNKNOWN_STATUS");
    int32_t a = -1, b = -1, c = -1;
    okv_get_version(&a, &b, &c);
    ck_assert_int_eq(a, OKV_VERSION_MAJOR);
    ck_assert_int_eq(b, OKV_VERSION_MINOR);
    okv_get_version(NULL, NULL, NULL);
    ck_assert_uint_eq(okv_dtype_size(OKV_DTYPE_BF16), 2);
    ck_assert_uint_eq(okv_dtype_size(OKV_DTYPE_F64), 8);
    ck_assert_uint_eq(okv_dtype_size((okv_dtype_t)77), 0);
}
END_TEST

START_TEST(cache_desc_validation)
{
    okv_cache_desc_t d;
    okv_cache_desc_init(&d);
    ck_assert_int_eq(okv_cache_desc_validate(&d), OKV_SUCCESS);
    ck_assert_int_eq(okv_cache_desc_validate(NULL), OKV_ERROR_NULL_POINTER);
    d.head_dim = 96;
    ck_assert_int_eq(okv_cache_desc_validate(&d), OKV_ERROR_UNSUPPORTED_HEAD_DIM);
    d.head_dim = 64;
    ck_assert_int_eq(okv_cache_desc_validate(&d), OKV_SUCCESS);
    d.n_q_heads = 12;
    d.n_kv_heads = 8;
    ck_assert_int_eq(okv_cache_desc_validate(&d), OKV_ERROR_BAD_SHAPE);
    d.n_q_heads = 24;
    d.group_size = 48;
    ck_assert_int_eq(okv_cache_desc_validate(&d), OKV_ERROR_INVALID_ARGUMENT);
    d.group_size = 128; /* larger than head_dim 64 */
    ck_assert_int_eq(okv_cache_desc_validate(&d), OKV_ERROR_INVALID_ARGUMENT);
    d.group_size = 32;
    d.page_size = 0;
    ck_assert_int_eq(okv_cache_desc_validate(&d), OKV_ERROR_INVALID_ARGUMENT);
    d.page_size = 16;
    d.meta_dtype = OKV_DTYPE_I32;
    ck_assert_int_eq(okv_cache_desc_validate(&d), OKV_ERROR_INVALID_ARGUMENT);
    d.meta_dtype = OKV_DTYPE_F16;
    d.size = 8;
    ck_assert_int_eq(okv_cache_desc_validate(&d), OKV_ERROR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(cache_sizes_and_bpe)
{
    okv_cache_desc_t d;
    okv_cache_desc_init(&d);
    okv_cache_sizes_t s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    ck_assert_int_eq(okv_cache_get_sizes(&d, &s), OKV_SUCCESS);
    /* 8 heads x 16 tokens x (32 code bytes + 4 meta bytes) x K,V = 9216 */
    ck_assert_uint_eq(s.int2_page_bytes, 9216);
    ck_assert_uint_eq(s.bf16_page_bytes, 2u * 8 * 16 * 128 * 2);
    ck_assert_int_eq(s.bf16_slots_per_seq, 64 + 256 + 8);
    ck_assert_int_eq(s.bf16_pages_per_seq, (328 + 15) / 16);
    ck_assert(fabs(s.int2_bytes_per_token - 2.0 * 8 * 36) < 1e-9);
    double bpe = 0;
    ck_assert_int_eq(okv_cache_bits_per_element(&d, 131072, &bpe), OKV_SUCCESS);
    ck_assert_msg(fabs(bpe - 2.2836) < 1e-4, "bpe(128K) = %f", bpe);
    ck_assert_int_eq(okv_cache_bits_per_element(&d, 32768, &bpe), OKV_SUCCESS);
    ck_assert_msg(fabs(bpe - 2.384) < 1e-3, "bpe(32K) = %f", bpe);
    ck_assert_int_eq(okv_cache_bits_per_element(&d, 100, &bpe), OKV_SUCCESS);
    ck_assert(fabs(bpe - 16.0) < 1e-12); /* short prompts stay BF16 */
    d.meta_dtype = OKV_DTYPE_F32;
    ck_assert_int_eq(okv_cache_bits_per_element(&d, 131072, &bpe), OKV_SUCCESS);
    ck_assert_msg(fabs(bpe - 2.53) < 5e-3, "fp32 meta bpe(128K) = %f", bpe);
    ck_assert_int_eq(okv_cache_bits_per_element(&d, 0, &bpe), OKV_ERROR_INVALID_ARGUMENT);
    int32_t n = 0;
    ck_assert_int_eq(okv_cache_last_page_len(&d, 33, &n), OKV_SUCCESS);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(okv_cache_int2_pages_needed(&d, 33, &n), OKV_SUCCESS);
    ck_assert_int_eq(n, 3);
}
END_TEST

/* The flush rule: a prefill keeps exactly W recent rows; decode steps let the
 * window grow to W + F - 1 and then demote F at once. */
START_TEST(flush_rule)
{
    okv_cache_desc_t d;
    okv_cache_desc_init(&d); /* S0 64, W 256, F 8 */
    int32_t i2 = -1;
    ck_assert_int_eq(okv_cache_int2_len_after(&d, 0, 0, 320, &i2), OKV_SUCCESS);
    ck_assert_int_eq(i2, 0);
    ck_assert_int_eq(okv_cache_int2_len_after(&d, 0, 0, 1000, &i2), OKV_SUCCESS);
    ck_assert_int_eq(i2, 1000 - 64 - 256);
    int32_t len = 1000, int2 = i2, demotions = 0;
    for (int step = 0; step < 100; ++step) {
        int32_t next = 0;
        ck_assert_int_eq(okv_cache_int2_len_after(&d, len, int2, 1, &next), OKV_SUCCESS);
        if (next != int2) {
            ck_assert_int_eq(next - int2, 8);
            demotions++;
        }
        len += 1;
        int2 = next;
        int32_t recent = len - 64 - int2;
        ck_assert_msg(recent >= 256 && recent < 256 + 8, "recent %d after step %d", recent, step);
    }
    ck_assert_int_eq(demotions, 100 / 8);
    ck_assert_int_eq(okv_cache_int2_len_after(&d, 10, 20, 1, &i2), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(okv_cache_int2_len_after(&d, 10, 0, -1, &i2), OKV_ERROR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(registry_and_context)
{
    int32_t n = 0;
    ck_assert_int_eq(okv_backend_count(&n), OKV_SUCCESS);
    ck_assert_int_eq(n, 4);
    int found_ref = 0;
    for (int32_t i = 0; i < n; ++i) {
        okv_backend_info_t bi;
        okv_backend_info_init(&bi);
        ck_assert_int_eq(okv_backend_get_info(i, &bi), OKV_SUCCESS);
        if (!bi.available) ck_assert_msg(strncmp(bi.reason, "unavailable: ", 13) == 0, "%s: %s", bi.name, bi.reason);
        if (strcmp(bi.name, "ref") == 0) found_ref = bi.available && bi.device_count == 1;
    }
    ck_assert(found_ref);
    okv_backend_info_t bi;
    okv_backend_info_init(&bi);
    ck_assert_int_eq(okv_backend_get_info(4, &bi), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(okv_backend_get_info(0, NULL), OKV_ERROR_NULL_POINTER);

    okv_context_desc_t cd;
    okv_context_desc_init(&cd);
    okv_context_t *ctx = (okv_context_t *)&n;
    cd.backend = "nope";
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_ptr_null(ctx);
    ck_assert_int_eq(okv_context_create(&cd, NULL), OKV_ERROR_NULL_POINTER);
    cd.backend = "ref";
    cd.device = 3;
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_ERROR_INVALID_ARGUMENT);
    cd.device = 0;
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_SUCCESS);
    ck_assert_str_eq(okv_context_backend_name(ctx), "ref");
    ck_assert_int_eq(okv_context_synchronize(ctx), OKV_SUCCESS);
    okv_context_destroy(ctx);
    /* OKV_BACKEND forces the auto choice */
    setenv("OKV_BACKEND", "ref", 1);
    cd.backend = NULL;
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_SUCCESS);
    ck_assert_str_eq(okv_context_backend_name(ctx), "ref");
    okv_context_destroy(ctx);
    setenv("OKV_BACKEND", "nope", 1);
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_ERROR_INVALID_ARGUMENT);
    unsetenv("OKV_BACKEND");
    /* flags: known bits accepted, unknown ones refused; a desc from before `flags` works */
    cd.backend = "ref";
    cd.flags = OKV_CONTEXT_TRUST_INPUTS;
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_SUCCESS);
    okv_context_destroy(ctx);
    cd.flags = 0x80u;
    ctx = (okv_context_t *)&n;
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_ptr_null(ctx);
    cd.size = offsetof(okv_context_desc_t, flags); /* flags unseen: 0x80 is not read */
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_SUCCESS);
    okv_context_destroy(ctx);
    cd.size = offsetof(okv_context_desc_t, native_stream);
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_ERROR_INVALID_ARGUMENT);
    okv_context_destroy(NULL);
}
END_TEST

static okv_context_t *ref_ctx(void)
{
    okv_context_desc_t cd;
    okv_context_desc_init(&cd);
    cd.backend = "ref";
    okv_context_t *ctx = NULL;
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_SUCCESS);
    return ctx;
}

START_TEST(buffers)
{
    okv_context_t *ctx = ref_ctx(), *other = ref_ctx();
    okv_buffer_t *b = NULL, *w = NULL;
    ck_assert_int_eq(okv_buffer_create(ctx, 0, &b), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(okv_buffer_create(ctx, 64, &b), OKV_SUCCESS);
    ck_assert_uint_eq(okv_buffer_size(b), 64);
    unsigned char src[80], dst[80];
    for (int i = 0; i < 80; ++i)
        src[i] = (unsigned char)i;
    ck_assert_int_eq(okv_buffer_write(ctx, b, 0, src, 64), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_write(ctx, b, 60, src, 8), OKV_ERROR_BAD_SHAPE);
    ck_assert_int_eq(okv_buffer_write(ctx, b, SIZE_MAX, src, 8), OKV_ERROR_BAD_SHAPE);
    ck_assert_ptr_nonnull(strstr(okv_context_last_error(ctx), "outside"));
    memset(dst, 0xee, sizeof dst);
    ck_assert_int_eq(okv_buffer_read(ctx, b, 0, dst, 64), OKV_SUCCESS);
    ck_assert_int_eq(memcmp(src, dst, 64), 0);
    ck_assert_int_eq(dst[64], 0xee);
    ck_assert_int_eq(okv_buffer_read(other, b, 0, dst, 4), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(okv_buffer_read(ctx, b, 0, NULL, 4), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_buffer_wrap(ctx, src, sizeof src, &w), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_read(ctx, w, 8, dst, 4), OKV_SUCCESS);
    ck_assert_int_eq(dst[0], 8);
    ck_assert_int_eq(okv_buffer_wrap(ctx, NULL, 8, &w), OKV_ERROR_NULL_POINTER);
    okv_buffer_destroy(w);
    okv_buffer_destroy(b);
    okv_buffer_destroy(NULL);
    okv_context_destroy(ctx);
    okv_context_destroy(other);
}
END_TEST

/* A rotate call whose `out` is one element short must fail before touching memory. */
START_TEST(op_validation_rotate)
{
    okv_context_t *ctx = ref_ctx();
    const int d = 64, rows = 3, heads = 2;
    okv_buffer_t *x = NULL, *out = NULL, *r = NULL;
    ck_assert_int_eq(okv_buffer_create(ctx, sizeof(float) * rows * heads * d, &x), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_create(ctx, sizeof(float) * rows * heads * d - 4, &out), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_create(ctx, sizeof(float) * d * d, &r), OKV_SUCCESS);
    float *poison = malloc(okv_buffer_size(out));
    memset(poison, 0x7f, okv_buffer_size(out));
    okv_buffer_write(ctx, out, 0, poison, okv_buffer_size(out));
    okv_rotate_params_t p;
    okv_rotate_params_init(&p);
    p.x.buffer = x;
    p.out.buffer = out;
    p.rotation.buffer = r;
    p.x_dtype = p.out_dtype = OKV_DTYPE_F32;
    p.n_rows = rows;
    p.n_heads = heads;
    p.head_dim = d;
    ck_assert_int_eq(okv_rotate(ctx, &p), OKV_ERROR_BAD_SHAPE);
    ck_assert_ptr_nonnull(strstr(okv_context_last_error(ctx), "out"));
    float *back = malloc(okv_buffer_size(out));
    okv_buffer_read(ctx, out, 0, back, okv_buffer_size(out));
    ck_assert_int_eq(memcmp(back, poison, okv_buffer_size(out)), 0);
    ck_assert_int_eq(okv_rotate(ctx, NULL), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_rotate(NULL, &p), OKV_ERROR_NULL_POINTER);
    p.head_dim = 96;
    ck_assert_int_eq(okv_rotate(ctx, &p), OKV_ERROR_UNSUPPORTED_HEAD_DIM);
    p.head_dim = d;
    p.x_dtype = OKV_DTYPE_I32;
    ck_assert_int_eq(okv_rotate(ctx, &p), OKV_ERROR_INVALID_ARGUMENT);
    p.x_dtype = OKV_DTYPE_F32;
    p.out.buffer = x; /* large enough: the next failures are about the rotation */
    p.rotation.buffer = NULL;
    ck_assert_int_eq(okv_rotate(ctx, &p), OKV_ERROR_NULL_POINTER);
    p.rotation.buffer = r;
    p.per_head = 1;
    p.head_group = 3; /* does not divide 2 heads */
    ck_assert_int_eq(okv_rotate(ctx, &p), OKV_ERROR_BAD_SHAPE);
    p.size = 4;
    ck_assert_int_eq(okv_rotate(ctx, &p), OKV_ERROR_INVALID_ARGUMENT);
    free(poison);
    free(back);
    okv_buffer_destroy(x);
    okv_buffer_destroy(out);
    okv_buffer_destroy(r);
    okv_context_destroy(ctx);
}
END_TEST

/* Decode validation: cache view, missing pools, lse and workspace sizes. */
START_TEST(op_validation_decode)
{
    okv_context_t *ctx = ref_ctx();
    okv_cache_desc_t d;
    okv_cache_desc_init(&d);
    okv_cache_sizes_t s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    ck_assert_int_eq(okv_cache_get_sizes(&d, &s), OKV_SUCCESS);
    okv_buffer_t *bf = NULL, *idx = NULL, *q = NULL, *out = NULL, *small = NULL;
    ck_assert_int_eq(okv_buffer_create(ctx, s.bf16_page_bytes * s.bf16_pages_per_seq, &bf), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_create(ctx, 4096, &idx), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_create(ctx, 2 * 32 * 128, &q), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_create(ctx, 2 * 32 * 128, &out), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_create(ctx, 8, &small), OKV_SUCCESS);
    okv_decode_params_t p;
    okv_decode_params_init(&p);
    okv_cache_view_t *c = &p.cache;
    c->desc = &d;
    c->batch = 1;
    c->bf16_pool.buffer = bf;
    c->bf16_pool_pages = s.bf16_pages_per_seq;
    c->int2_indptr.buffer = c->bf16_indptr.buffer = c->seq_lens.buffer = c->int2_lens.buffer = idx;
    c->bf16_indices.buffer = c->int2_indices.buffer = idx;
    p.q.buffer = q;
    p.out.buffer = out;
    size_t ws = 0;
    ck_assert_int_eq(okv_decode_workspace_size(ctx, &p, &ws), OKV_SUCCESS);
    c->bf16_pool_pages = s.bf16_pages_per_seq + 1; /* pool larger than its buffer */
    ck_assert_int_eq(okv_decode_attention(ctx, &p), OKV_ERROR_BAD_SHAPE);
    c->bf16_pool_pages = s.bf16_pages_per_seq;
    p.lse.buffer = small;
    ck_assert_int_eq(okv_decode_attention(ctx, &p), OKV_ERROR_BAD_SHAPE);
    p.lse.buffer = NULL;
    p.sm_scale = NAN;
    ck_assert_int_eq(okv_decode_attention(ctx, &p), OKV_ERROR_INVALID_ARGUMENT);
    p.sm_scale = 0;
    p.unrotate_output = 1; /* without a v_rotation */
    ck_assert_int_eq(okv_decode_attention(ctx, &p), OKV_ERROR_NULL_POINTER);
    p.unrotate_output = 0;
    c->desc = NULL;
    ck_assert_int_eq(okv_decode_attention(ctx, &p), OKV_ERROR_NULL_POINTER);
    c->desc = &d;
    d.head_dim = 32;
    ck_assert_int_eq(okv_decode_attention(ctx, &p), OKV_ERROR_UNSUPPORTED_HEAD_DIM);
    d.head_dim = 128;
    c->batch = 0;
    ck_assert_int_eq(okv_decode_attention(ctx, &p), OKV_ERROR_BAD_SHAPE);
    okv_buffer_destroy(bf);
    okv_buffer_destroy(idx);
    okv_buffer_destroy(q);
    okv_buffer_destroy(out);
    okv_buffer_destroy(small);
    okv_context_destroy(ctx);
}
END_TEST

/* Buffers of another context are refused by every op before any work. */
START_TEST(op_validation_foreign_buffer)
{
    okv_context_t *a = ref_ctx(), *b = ref_ctx();
    okv_buffer_t *x = NULL, *acc = NULL;
    ck_assert_int_eq(okv_buffer_create(a, 4 * 64 * 4, &x), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_create(b, 8 * 64 * 64, &acc), OKV_SUCCESS);
    okv_moments_params_t p;
    okv_moments_params_init(&p);
    p.x.buffer = x;
    p.acc.buffer = acc;
    p.n_rows = 4;
    p.n_heads = 1;
    p.head_dim = 64;
    ck_assert_int_eq(okv_moments(a, &p), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(okv_context_last_error(a), "another context"));
    p.acc_dtype = OKV_DTYPE_F16;
    ck_assert_int_eq(okv_moments(a, &p), OKV_ERROR_INVALID_ARGUMENT);
    okv_buffer_destroy(x);
    okv_buffer_destroy(acc);
    okv_context_destroy(a);
    okv_context_destroy(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("core_api");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, status_names);
    tcase_add_test(tc, cache_desc_validation);
    tcase_add_test(tc, cache_sizes_and_bpe);
    tcase_add_test(tc, flush_rule);
    tcase_add_test(tc, registry_and_context);
    tcase_add_test(tc, buffers);
    tcase_add_test(tc, op_validation_rotate);
    tcase_add_test(tc, op_validation_decode);
    tcase_add_test(tc, op_validation_foreign_buffer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return okv_check_run(suite()); }
