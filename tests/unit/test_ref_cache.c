/* test_ref_cache.c - the paged cache through the "ref" backend table: sink /
 * INT2 / recent-ring placement and the flush rule, demotion, dequantization,
 * input dtypes and per-head rotations, and invalid inputs (status + nothing
 * written, checked on poisoned memory with guard bytes). */
#include "test_ref_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Raw (unrotated) rows of every sequence: [batch][max_len][2][hkv][d]. */
typedef struct rows {
    int32_t batch, max_len, hkv, d;
    float *x;
} rows_t;

static void rows_init(rows_t *r, int32_t batch, int32_t max_len, int32_t hkv, int32_t d)
{
    r->batch = batch;
    r->max_len = max_len;
    r->hkv = hkv;
    r->d = d;
    r->x = (float *)tu_calloc((size_t)batch * max_len * 2 * hkv * d, sizeof(float));
}

static float *row_at(const rows_t *r, int32_t b, int32_t pos, int kv, int h)
{
    return r->x + ((((size_t)b * r->max_len + pos) * 2 + kv) * r->hkv + h) * r->d;
}

/* Append n[b] new random rows to every sequence (recording them in r). */
static okv_status_t append_random(tu_cache_t *c, rows_t *r, tu_rng_t *rng, const int32_t *n, const float *krot,
                                  const float *vrot, int per_head, float kclip, float vclip, double sigma,
                                  okv_err_t *err)
{
    const int32_t hkv = c->desc.n_kv_heads, d = c->desc.head_dim;
    int32_t *indptr = (int32_t *)tu_calloc((size_t)c->batch + 1, sizeof(int32_t));
    for (int32_t b = 0; b < c->batch; ++b)
        indptr[b + 1] = indptr[b] + n[b];
    int32_t total = indptr[c->batch];
    float *k = (float *)tu_calloc((size_t)total * hkv * d + 1, sizeof(float));
    float *v = (float *)tu_calloc((size_t)total * hkv * d + 1, sizeof(float));
    for (int32_t b = 0; b < c->batch; ++b)
        for (int32_t j = 0; j < n[b]; ++j)
            for (int kv = 0; kv < 2; ++kv)
                for (int h = 0; h < hkv; ++h) {
                    float *dst = (kv ? v : k) + (((size_t)indptr[b] + j) * hkv + h) * d;
                    tu_fill_normal(rng, dst, (size_t)d, sigma);
                    if (r && c->seq_lens[b] + j < r->max_len)
                        memcpy(row_at(r, b, c->seq_lens[b] + j, kv, h), dst, sizeof(float) * (size_t)d);
                }
    okv_status_t st = tu_append(c, k, v, OKV_DTYPE_F32, indptr, total, krot, vrot, per_head, kclip, vclip, err);
    free(k);
    free(v);
    free(indptr);
    return st;
}

/* Rotated row of raw x, computed here independently: double sums, then f32. */
static void rotate_expect(const float *x, const float *rot, int d, float *out)
{
    for (int j = 0; j < d; ++j) {
        double s = 0.0;
        for (int i = 0; i < d; ++i)
            s += (double)x[i] * (double)rot[(size_t)i * d + j];
        out[j] = (float)s;
    }
}

enum { SRC_BF16 = 0, SRC_F32 = 1 };

/* Check every position of sequence b: BF16 positions hold bf16(x R) bit for bit;
 * INT2 positions hold the quantization of x R (src F32) or of bf16(x R) (src
 * BF16, i.e. demoted) as given by int2_src(pos). */
static void check_tiers(const tu_cache_t *c, const rows_t *r, int32_t b, const float *krot, const float *vrot,
                        int per_head, float kclip, float vclip, int (*int2_src)(int32_t b, int32_t pos))
{
    const okv_ref_cache_t *rc = &c->rc;
    const int d = rc->head_dim, hkv = rc->n_kv_heads;
    const int32_t len = c->seq_lens[b], i2 = c->int2_lens[b];
    float x[256], meta[16], got_meta[16];
    uint8_t codes[64], got_codes[64];
    for (int32_t p = 0; p < len; ++p)
        for (int kv = 0; kv < 2; ++kv)
            for (int h = 0; h < hkv; ++h) {
                const float *rot = (kv ? vrot : krot) + (per_head ? (size_t)h * d * d : 0);
                rotate_expect(row_at(r, b, p, kv, h), rot, d, x);
                int in_int2 = p >= rc->sink && p < rc->sink + i2;
                if (!in_int2) {
                    const uint8_t *row = rc->bf16_pool + okv_ref_bf16_row_offset(rc, b, p, kv, h);
                    for (int i = 0; i < d; ++i) {
                        uint16_t stored;
                        memcpy(&stored, row + 2 * i, 2);
                        ck_assert_msg(stored == okv_f32_to_bf16(x[i]), "seq %d pos %d kv %d head %d ch %d: bf16 %04x",
                                      b, p, kv, h, i, stored);
                    }
                    continue;
                }
                if (int2_src(b, p) == SRC_BF16)
                    for (int i = 0; i < d; ++i)
                        x[i] = okv_bf16_to_f32(okv_f32_to_bf16(x[i]));
                ck_assert(okv_ref_quantize_row(x, d, rc->group_size, kv ? vclip : kclip, rc->clip_mode, rc->quantizer,
                                               rc->meta_dtype, codes, meta));
                okv_ref_cache_read_int2(rc, b, p - rc->sink, kv, h, got_codes, got_meta);
                ck_assert_msg(memcmp(codes, got_codes, (size_t)d / 4) == 0, "seq %d pos %d kv %d head %d: codes", b, p,
                              kv, h);
                for (int gi = 0; gi < 2 * (d / rc->group_size); ++gi)
                    ck_assert_msg(meta[gi] == got_meta[gi], "seq %d pos %d kv %d head %d: meta %d %g vs %g", b, p, kv,
                                  h, gi, (double)got_meta[gi], (double)meta[gi]);
            }
}

static int src_all_bf16(int32_t b, int32_t pos) { return SRC_BF16; }

/* Expected INT2 length after one-at-a-time growth to L (S0 4, W 8, F 4). */
static int32_t walk_int2(int32_t len) { return len < 16 ? 0 : 4 * ((len - 12) / 4); }

static const tu_geom_t walk_geoms[3] = {
    {2, 2, 64, 64, OKV_DTYPE_F32, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 4, 8, 4, 4},
    {4, 1, 128, 32, OKV_DTYPE_F16, OKV_QUANT_LLOYD_MAX, OKV_CLIP_BISECT, 4, 8, 4, 8},
    {2, 2, 64, 32, OKV_DTYPE_BF16, OKV_QUANT_UNIFORM, OKV_CLIP_BISECT, 4, 8, 4, 16},
};

START_TEST(test_flush_walk)
{
    const tu_geom_t *g = &walk_geoms[_i];
    const int32_t steps = 50, max_len = 7 + steps;
    tu_cache_t c;
    tu_cache_init(&c, g, 2, max_len, 3, 1000 + (uint64_t)_i);
    rows_t r;
    rows_init(&r, 2, max_len, g->hkv, g->d);
    tu_rng_t rng = {42};
    float *rot = (float *)tu_calloc(2 * (size_t)g->d * g->d, sizeof(float));
    tu_random_orthogonal(&rng, g->d, rot);
    tu_random_orthogonal(&rng, g->d, rot + g->d * g->d);
    const float *krot = rot, *vrot = rot + g->d * g->d;
    int32_t n[2] = {1, 7};
    okv_err_t err;
    for (int32_t s = 0; s <= steps; ++s) {
        ck_assert_msg(append_random(&c, &r, &rng, n, krot, vrot, 0, 0.96f, 0.92f, 1.0, &err) == OKV_SUCCESS, "%s",
                      err.msg);
        n[1] = 1;
        for (int32_t b = 0; b < 2; ++b) {
            ck_assert_int_eq(c.int2_lens[b], walk_int2(c.seq_lens[b]));
            check_tiers(&c, &r, b, krot, vrot, 0, 0.96f, 0.92f, src_all_bf16);
        }
    }
    ck_assert_int_eq(c.seq_lens[0], steps + 1);
    ck_assert_int_eq(c.seq_lens[1], steps + 7);
    /* hand-checked points of the rule */
    ck_assert_int_eq(walk_int2(15), 0);
    ck_assert_int_eq(walk_int2(16), 4);
    ck_assert_int_eq(walk_int2(19), 4);
    ck_assert_int_eq(walk_int2(20), 8);
    ck_assert_int_eq(c.int2_lens[0], 36); /* 51 tokens: 4 sink + 36 INT2 + 11 recent */
    /* guard page past the INT2 pool untouched */
    for (size_t i = 0; i < c.int2_page_bytes; ++i)
        ck_assert_uint_eq(c.int2_pool[(size_t)c.int2_pool_pages * c.int2_page_bytes + i], 0);
    free(rot);
    free(r.x);
    tu_cache_free(&c);
}
END_TEST

/* Long prefills: sequence 0 (50 tokens from empty) sends 4..41 straight to INT2
 * from f32; sequence 1 (10 then 20 more) demotes 4..9 from bf16, sends 10..21
 * straight from f32 and keeps 22..29 in the ring. */
static int src_prefill(int32_t b, int32_t pos) { return (b == 1 && pos < 10) ? SRC_BF16 : SRC_F32; }

START_TEST(test_prefill_placement)
{
    const tu_geom_t g = {2, 2, 64, 64, OKV_DTYPE_F32, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 4, 8, 4, 4};
    tu_cache_t c;
    tu_cache_init(&c, &g, 2, 64, 0, 5);
    rows_t r;
    rows_init(&r, 2, 64, 2, 64);
    tu_rng_t rng = {77};
    float *rot = (float *)tu_calloc(64 * 64, sizeof(float));
    tu_random_orthogonal(&rng, 64, rot);
    okv_err_t err;
    int32_t n1[2] = {50, 10}, n2[2] = {0, 20};
    ck_assert_int_eq(append_random(&c, &r, &rng, n1, rot, rot, 0, 0.96f, 0.92f, 1.0, &err), OKV_SUCCESS);
    ck_assert_int_eq(c.int2_lens[0], 38);
    ck_assert_int_eq(c.int2_lens[1], 0);
    ck_assert_int_eq(append_random(&c, &r, &rng, n2, rot, rot, 0, 0.96f, 0.92f, 1.0, &err), OKV_SUCCESS);
    ck_assert_int_eq(c.seq_lens[0], 50);
    ck_assert_int_eq(c.seq_lens[1], 30);
    ck_assert_int_eq(c.int2_lens[1], 18);
    for (int32_t b = 0; b < 2; ++b)
        check_tiers(&c, &r, b, rot, rot, 0, 0.96f, 0.92f, src_prefill);
    /* direct rows really come from f32: some metadata differs from the bf16 route */
    int differs = 0;
    float x[64], m32[2], m16[2];
    uint8_t codes[16];
    for (int32_t p = 4; p < 42 && !differs; ++p) {
        rotate_expect(row_at(&r, 0, p, 0, 0), rot, 64, x);
        okv_ref_quantize_row(x, 64, 64, 0.96f, 0, 0, 0, codes, m32);
        for (int i = 0; i < 64; ++i)
            x[i] = okv_bf16_to_f32(okv_f32_to_bf16(x[i]));
        okv_ref_quantize_row(x, 64, 64, 0.96f, 0, 0, 0, codes, m16);
        differs = m32[0] != m16[0] || m32[1] != m16[1];
    }
    ck_assert(differs);
    free(rot);
    free(r.x);
    tu_cache_free(&c);
}
END_TEST

START_TEST(test_demote_op)
{
    const tu_geom_t g = {2, 2, 64, 64, OKV_DTYPE_F16, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 4, 8, 4, 4};
    tu_cache_t c;
    tu_cache_init(&c, &g, 2, 32, 1, 9);
    rows_t r;
    rows_init(&r, 2, 32, 2, 64);
    tu_rng_t rng = {8};
    float *rot = (float *)tu_calloc(64 * 64, sizeof(float));
    tu_random_orthogonal(&rng, 64, rot);
    okv_err_t err;
    int32_t n[2] = {14, 3};
    ck_assert_int_eq(append_random(&c, &r, &rng, n, rot, rot, 0, 0.9f, 0.9f, 1.0, &err), OKV_SUCCESS);
    ck_assert_int_eq(tu_demote(&c, 3, 0.9f, 0.9f, &err), OKV_SUCCESS);
    ck_assert_int_eq(c.int2_lens[0], 3);
    ck_assert_int_eq(c.int2_lens[1], 0); /* all sink: nothing to demote */
    ck_assert_int_eq(c.seq_lens[0], 14);
    for (int32_t b = 0; b < 2; ++b)
        check_tiers(&c, &r, b, rot, rot, 0, 0.9f, 0.9f, src_all_bf16);
    ck_assert_int_eq(tu_demote(&c, 100, 0.9f, 0.9f, &err), OKV_SUCCESS);
    ck_assert_int_eq(c.int2_lens[0], 10); /* the whole recent window, never the sink */
    ck_assert_int_eq(tu_demote(&c, 5, 0.9f, 0.9f, &err), OKV_SUCCESS);
    ck_assert_int_eq(c.int2_lens[0], 10);
    for (int32_t b = 0; b < 2; ++b)
        check_tiers(&c, &r, b, rot, rot, 0, 0.9f, 0.9f, src_all_bf16);
    /* appending after a demotion keeps the ring consistent */
    int32_t n2[2] = {3, 5};
    ck_assert_int_eq(append_random(&c, &r, &rng, n2, rot, rot, 0, 0.9f, 0.9f, 1.0, &err), OKV_SUCCESS);
    ck_assert_int_eq(c.seq_lens[0], 17);
    ck_assert_int_eq(c.int2_lens[0], 10);
    ck_assert_int_eq(c.int2_lens[1], 0);
    for (int32_t b = 0; b < 2; ++b)
        check_tiers(&c, &r, b, rot, rot, 0, 0.9f, 0.9f, src_all_bf16);
    free(rot);
    free(r.x);
    tu_cache_free(&c);
}
END_TEST

START_TEST(test_dequantize_matches_tiers)
{
    const tu_geom_t g = {4, 2, 64, 32, OKV_DTYPE_F16, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 4, 8, 4, 4};
    tu_cache_t c;
    tu_cache_init(&c, &g, 3, 64, 2, 11);
    tu_rng_t rng = {3};
    float *rot = (float *)tu_calloc(64 * 64, sizeof(float));
    tu_random_orthogonal(&rng, 64, rot);
    okv_err_t err;
    int32_t n[3] = {40, 0, 13};
    ck_assert_int_eq(append_random(&c, NULL, &rng, n, rot, rot, 0, 0.96f, 0.92f, 2.0, &err), OKV_SUCCESS);
    const int32_t max_len = 48;
    size_t nel = (size_t)3 * max_len * 2 * 64;
    float *k = (float *)tu_calloc(nel, sizeof(float)), *v = (float *)tu_calloc(nel, sizeof(float));
    ck_assert_int_eq(tu_dequantize(&c, max_len, k, v, &err), OKV_SUCCESS);
    float row[64];
    for (int32_t b = 0; b < 3; ++b)
        for (int32_t p = 0; p < c.seq_lens[b]; ++p)
            for (int h = 0; h < 2; ++h) {
                okv_ref_cache_read_row(&c.rc, b, p, 0, h, row);
                ck_assert(memcmp(row, k + (((size_t)b * max_len + p) * 2 + h) * 64, sizeof row) == 0);
                okv_ref_cache_read_row(&c.rc, b, p, 1, h, row);
                ck_assert(memcmp(row, v + (((size_t)b * max_len + p) * 2 + h) * 64, sizeof row) == 0);
            }
    /* rows past seq_len untouched; f16 / bf16 outputs are the f32 values rounded */
    ck_assert(k[(((size_t)1 * max_len + 0) * 2) * 64] == 0.0f);
    int32_t indptr[4] = {0, 40, 40, 53};
    uint16_t *k16 = (uint16_t *)tu_calloc((size_t)53 * 2 * 64, 2), *v16 = (uint16_t *)tu_calloc((size_t)53 * 2 * 64, 2);
    okv_dequantize_params_t p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.cache = c.view;
    p.out_indptr = tu_ref(indptr, sizeof indptr);
    p.out_rows = 53;
    p.k_out = tu_ref(k16, (size_t)53 * 2 * 64 * 2);
    p.v_out = tu_ref(v16, (size_t)53 * 2 * 64 * 2);
    p.out_dtype = OKV_DTYPE_BF16;
    ck_assert_int_eq(okv_ref_backend_ops()->dequantize(NULL, &p, &err), OKV_SUCCESS);
    for (int32_t t = 0; t < 13; ++t)
        for (int i = 0; i < 128; ++i)
            ck_assert_uint_eq(v16[((size_t)40 + t) * 128 + i],
                              okv_f32_to_bf16(v[(((size_t)2 * max_len + t) * 2) * 64 + i]));
    free(k16);
    free(v16);
    free(k);
    free(v);
    free(rot);
    tu_cache_free(&c);
}
END_TEST

START_TEST(test_input_dtypes_and_per_head)
{
    /* f16 / bf16 inputs give the cache of their f32 values; per-head rotations */
    const tu_geom_t g = {4, 2, 64, 64, OKV_DTYPE_F16, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 4, 8, 4, 4};
    tu_rng_t rng = {21};
    float *rot = (float *)tu_calloc(2 * 64 * 64, sizeof(float));
    tu_random_orthogonal(&rng, 64, rot);
    tu_random_orthogonal(&rng, 64, rot + 64 * 64);
    const int32_t rows = 30;
    const size_t nel = (size_t)rows * 2 * 64;
    float *k = (float *)tu_calloc(nel, sizeof(float)), *v = (float *)tu_calloc(nel, sizeof(float));
    uint16_t *k16 = (uint16_t *)tu_calloc(nel, 2), *v16 = (uint16_t *)tu_calloc(nel, 2);
    int32_t indptr[2] = {0, rows};
    okv_err_t err;
    for (int t = 0; t < 2; ++t) {
        okv_dtype_t dt = t ? OKV_DTYPE_BF16 : OKV_DTYPE_F16;
        tu_fill_normal(&rng, k, nel, 1.0);
        tu_fill_normal(&rng, v, nel, 1.0);
        for (size_t i = 0; i < nel; ++i) {
            okv_ref_store(k16, dt, i, k[i]);
            okv_ref_store(v16, dt, i, v[i]);
            k[i] = okv_ref_load(k16, dt, i);
            v[i] = okv_ref_load(v16, dt, i);
        }
        tu_cache_t a, b;
        tu_cache_init(&a, &g, 1, 32, 0, 1);
        tu_cache_init(&b, &g, 1, 32, 0, 1);
        ck_assert_int_eq(tu_append(&a, k, v, OKV_DTYPE_F32, indptr, rows, rot, rot, 1, 0.96f, 0.92f, &err),
                         OKV_SUCCESS);
        ck_assert_int_eq(tu_append(&b, k16, v16, dt, indptr, rows, rot, rot, 1, 0.96f, 0.92f, &err), OKV_SUCCESS);
        ck_assert(memcmp(a.int2_pool, b.int2_pool, a.int2_page_bytes * (size_t)a.int2_pool_pages) == 0);
        ck_assert(memcmp(a.bf16_pool, b.bf16_pool, a.bf16_page_bytes * (size_t)a.bf16_pool_pages) == 0);
        /* per-head: head 1's BF16 rows are x R_1 */
        rows_t r;
        rows_init(&r, 1, rows, 2, 64);
        for (int32_t p = 0; p < rows; ++p)
            for (int h = 0; h < 2; ++h) {
                memcpy(row_at(&r, 0, p, 0, h), k + ((size_t)p * 2 + h) * 64, 64 * sizeof(float));
                memcpy(row_at(&r, 0, p, 1, h), v + ((size_t)p * 2 + h) * 64, 64 * sizeof(float));
            }
        check_tiers(&a, &r, 0, rot, rot, 1, 0.96f, 0.92f, src_prefill);
        free(r.x);
        tu_cache_free(&a);
        tu_cache_free(&b);
    }
    free(k);
    free(v);
    free(k16);
    free(v16);
    free(rot);
}
END_TEST

/* ---- invalid inputs: status and byte-identical memory */
typedef struct snap {
    uint8_t *int2, *bf16;
    int32_t lens[8], i2[8];
    size_t int2_bytes, bf16_bytes;
} snap_t;

static void snap_take(const tu_cache_t *c, snap_t *s)
{
    s->int2_bytes = c->int2_page_bytes * ((size_t)c->int2_pool_pages + 1); /* + guard page */
    s->bf16_bytes = c->bf16_page_bytes * (size_t)c->bf16_pool_pages;
    s->int2 = (uint8_t *)tu_calloc(s->int2_bytes, 1);
    s->bf16 = (uint8_t *)tu_calloc(s->bf16_bytes, 1);
    memcpy(s->int2, c->int2_pool, s->int2_bytes);
    memcpy(s->bf16, c->bf16_pool, s->bf16_bytes);
    memcpy(s->lens, c->seq_lens, sizeof(int32_t) * (size_t)c->batch);
    memcpy(s->i2, c->int2_lens, sizeof(int32_t) * (size_t)c->batch);
}

static void snap_check(const tu_cache_t *c, const snap_t *s, const char *what)
{
    ck_assert_msg(memcmp(s->int2, c->int2_pool, s->int2_bytes) == 0, "%s: INT2 pool changed", what);
    ck_assert_msg(memcmp(s->bf16, c->bf16_pool, s->bf16_bytes) == 0, "%s: BF16 pool changed", what);
    ck_assert_msg(memcmp(s->lens, c->seq_lens, sizeof(int32_t) * (size_t)c->batch) == 0, "%s: seq_lens changed", what);
    ck_assert_msg(memcmp(s->i2, c->int2_lens, sizeof(int32_t) * (size_t)c->batch) == 0, "%s: int2_lens changed", what);
}

static void snap_free(snap_t *s)
{
    free(s->int2);
    free(s->bf16);
}

#define EXPECT_FAIL(call, status, what)                                                                                \
    do {                                                                                                               \
        snap_t s_;                                                                                                     \
        snap_take(&c, &s_);                                                                                            \
        err.msg[0] = 0;                                                                                                \
        okv_status_t st_ = (call);                                                                                     \
        ck_assert_msg(st_ == (status), "%s: status %d, expected %d (%s)", (what), (int)st_, (int)(status), err.msg);   \
        ck_assert_msg(err.msg[0] != 0, "%s: no detail", (what));                                                       \
        snap_check(&c, &s_, (what));                                                                                   \
        snap_free(&s_);                                                                                                \
    } while (0)

START_TEST(test_invalid_page_tables)
{
    const tu_geom_t g = {2, 2, 64, 64, OKV_DTYPE_F16, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 4, 8, 4, 4};
    tu_cache_t c;
    tu_cache_init(&c, &g, 2, 40, 2, 17);
    memset(c.int2_pool + (size_t)c.int2_pool_pages * c.int2_page_bytes, 0xcd, c.int2_page_bytes); /* guard */
    tu_rng_t rng = {5};
    float *rot = (float *)tu_calloc(64 * 64, sizeof(float));
    tu_random_orthogonal(&rng, 64, rot);
    okv_err_t err;
    int32_t n[2] = {20, 25};
    ck_assert_int_eq(append_random(&c, NULL, &rng, n, rot, rot, 0, 0.96f, 0.92f, 1.0, &err), OKV_SUCCESS);
    int32_t step[2] = {1, 1};
    int32_t saved;

    /* INT2 page index outside the pool */
    saved = c.int2_indices[c.int2_indptr[1]];
    c.int2_indices[c.int2_indptr[1]] = c.int2_pool_pages;
    EXPECT_FAIL(append_random(&c, NULL, &rng, step, rot, rot, 0, 0.96f, 0.92f, 1.0, &err), OKV_ERROR_INVALID_ARGUMENT,
                "int2 index past pool");
    ck_assert_msg(strstr(err.msg, "sequence 1") != NULL, "detail: %s", err.msg);
    c.int2_indices[c.int2_indptr[1]] = saved;
    /* negative BF16 page index */
    saved = c.bf16_indices[1];
    c.bf16_indices[1] = -1;
    EXPECT_FAIL(append_random(&c, NULL, &rng, step, rot, rot, 0, 0.96f, 0.92f, 1.0, &err), OKV_ERROR_INVALID_ARGUMENT,
                "negative bf16 index");
    ck_assert_msg(strstr(err.msg, "sequence 0") != NULL, "detail: %s", err.msg);
    c.bf16_indices[1] = saved;
    /* too few INT2 pages for the new length: sequence 1 lists only what it has now */
    saved = c.int2_indptr[2];
    c.int2_indptr[2] = c.int2_indptr[1] + (c.int2_lens[1] + 3) / 4;
    int32_t big[2] = {0, 12};
    EXPECT_FAIL(append_random(&c, NULL, &rng, big, rot, rot, 0, 0.96f, 0.92f, 1.0, &err), OKV_ERROR_INVALID_ARGUMENT,
                "too few int2 pages");
    c.int2_indptr[2] = saved;
    /* indptr not monotone */
    saved = c.int2_indptr[1];
    c.int2_indptr[1] = c.int2_indptr[2] + 1;
    EXPECT_FAIL(append_random(&c, NULL, &rng, step, rot, rot, 0, 0.96f, 0.92f, 1.0, &err), OKV_ERROR_INVALID_ARGUMENT,
                "indptr not monotone");
    c.int2_indptr[1] = saved;
    /* inconsistent lengths: int2_len beyond seq_len - S0, recent window too long, negative */
    saved = c.int2_lens[0];
    c.int2_lens[0] = c.seq_lens[0] - 3;
    EXPECT_FAIL(tu_demote(&c, 1, 0.96f, 0.92f, &err), OKV_ERROR_INVALID_ARGUMENT, "int2_len too large");
    c.int2_lens[0] = 0; /* recent window 16 > W + F - 1 */
    EXPECT_FAIL(tu_demote(&c, 1, 0.96f, 0.92f, &err), OKV_ERROR_INVALID_ARGUMENT, "recent window too long");
    c.int2_lens[0] = -1;
    EXPECT_FAIL(append_random(&c, NULL, &rng, step, rot, rot, 0, 0.96f, 0.92f, 1.0, &err), OKV_ERROR_INVALID_ARGUMENT,
                "negative int2_len");
    c.int2_lens[0] = saved;

    /* read-only ops report the same and leave their outputs alone */
    const int32_t max_len = 32;
    size_t nel = (size_t)2 * max_len * 2 * 64;
    float *k = (float *)tu_calloc(nel, sizeof(float)), *v = (float *)tu_calloc(nel, sizeof(float));
    memset(k, 0xff, nel * sizeof(float));
    memset(v, 0xff, nel * sizeof(float));
    uint8_t *k0 = (uint8_t *)tu_calloc(nel, sizeof(float));
    memcpy(k0, k, nel * sizeof(float));
    c.int2_indices[0] = -5;
    EXPECT_FAIL(tu_dequantize(&c, max_len, k, v, &err), OKV_ERROR_INVALID_ARGUMENT, "dequantize bad page");
    ck_assert(memcmp(k, k0, nel * sizeof(float)) == 0 && memcmp(v, k0, nel * sizeof(float)) == 0);
    float q[2 * 2 * 64], out[2 * 2 * 64 + 16], lse[2 + 4];
    tu_fill_normal(&rng, q, sizeof q / sizeof q[0], 1.0);
    memset(out, 0xff, sizeof out);
    memset(lse, 0xff, sizeof lse);
    tu_decode_args_t a = {q, OKV_DTYPE_F32, OKV_DTYPE_F32, out, lse, 0.0f, 3, NULL, 0, 0};
    EXPECT_FAIL(tu_decode(&c, &a, &err), OKV_ERROR_INVALID_ARGUMENT, "decode bad page");
    for (size_t i = 0; i < sizeof out; ++i)
        ck_assert_uint_eq(((uint8_t *)out)[i], 0xff);
    for (size_t i = 0; i < sizeof lse; ++i)
        ck_assert_uint_eq(((uint8_t *)lse)[i], 0xff);
    c.int2_indices[0] = saved = c.int2_indices[0]; /* restore below from a fresh table */
    for (int32_t b = 0; b <= 2; ++b)
        c.int2_indptr[b] = b * c.int2_pages_per_seq;
    tu_rng_t pr = {17};
    int32_t *perm = (int32_t *)tu_calloc((size_t)c.int2_pool_pages, sizeof(int32_t));
    tu_permutation(&pr, c.int2_pool_pages, perm);
    for (int32_t i = 0; i < 2 * c.int2_pages_per_seq; ++i)
        c.int2_indices[i] = perm[i];
    free(perm);
    /* the restored table works, and outputs beyond the written rows keep their guard bytes */
    ck_assert_msg(tu_decode(&c, &a, &err) == OKV_SUCCESS, "%s", err.msg);
    for (size_t i = 2 * 2 * 64 * sizeof(float); i < sizeof out; ++i)
        ck_assert_uint_eq(((uint8_t *)out)[i], 0xff);
    for (size_t i = 2 * 2 * sizeof(float); i < sizeof lse; ++i)
        ck_assert_uint_eq(((uint8_t *)lse)[i], 0xff);
    /* dequantize: out_indptr too short for a sequence */
    int32_t bad_indptr[3] = {0, 5, 64};
    okv_dequantize_params_t p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.cache = c.view;
    p.out_indptr = tu_ref(bad_indptr, sizeof bad_indptr);
    p.out_rows = 64;
    p.k_out = tu_ref(k, nel * sizeof(float));
    p.v_out = tu_ref(v, nel * sizeof(float));
    p.out_dtype = OKV_DTYPE_F32;
    EXPECT_FAIL(okv_ref_backend_ops()->dequantize(NULL, &p, &err), OKV_ERROR_INVALID_ARGUMENT, "out_indptr short");
    ck_assert(memcmp(k, k0, nel * sizeof(float)) == 0);
    for (size_t i = 0; i < c.int2_page_bytes; ++i)
        ck_assert_uint_eq(c.int2_pool[(size_t)c.int2_pool_pages * c.int2_page_bytes + i], 0xcd);
    free(k);
    free(v);
    free(k0);
    free(rot);
    tu_cache_free(&c);
}
END_TEST

START_TEST(test_invalid_nonfinite)
{
    const tu_geom_t g = {2, 2, 64, 64, OKV_DTYPE_F16, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 4, 8, 4, 4};
    tu_cache_t c;
    tu_cache_init(&c, &g, 2, 40, 0, 2);
    tu_rng_t rng = {6};
    float *rot = (float *)tu_calloc(64 * 64, sizeof(float));
    tu_random_orthogonal(&rng, 64, rot);
    okv_err_t err;
    int32_t n[2] = {9, 30};
    ck_assert_int_eq(append_random(&c, NULL, &rng, n, rot, rot, 0, 0.96f, 0.92f, 1.0, &err), OKV_SUCCESS);
    const int32_t rows = 2 * 20;
    float *k = (float *)tu_calloc((size_t)rows * 128, sizeof(float)), *v = (float *)tu_calloc((size_t)rows * 128, 4);
    tu_fill_normal(&rng, k, (size_t)rows * 128, 1.0);
    tu_fill_normal(&rng, v, (size_t)rows * 128, 1.0);
    int32_t indptr[3] = {0, 20, 40};
    k[33 * 128 + 5] = NAN;
    EXPECT_FAIL(tu_append(&c, k, v, OKV_DTYPE_F32, indptr, rows, rot, rot, 0, 0.96f, 0.92f, &err),
                OKV_ERROR_NONFINITE_INPUT, "NaN in k");
    k[33 * 128 + 5] = 0.0f;
    v[0] = -INFINITY;
    EXPECT_FAIL(tu_append(&c, k, v, OKV_DTYPE_F32, indptr, rows, rot, rot, 0, 0.96f, 0.92f, &err),
                OKV_ERROR_NONFINITE_INPUT, "Inf in v");
    v[0] = 0.0f;
    float saved = rot[77];
    rot[77] = NAN;
    EXPECT_FAIL(tu_append(&c, k, v, OKV_DTYPE_F32, indptr, rows, rot, rot, 0, 0.96f, 0.92f, &err),
                OKV_ERROR_NONFINITE_INPUT, "NaN in rotation");
    /* decode: NaN in v_rotation only matters when un-rotating */
    float q[2 * 2 * 64], out[2 * 2 * 64], lse[2];
    tu_fill_normal(&rng, q, sizeof q / sizeof q[0], 1.0);
    memset(out, 0xff, sizeof out);
    memset(lse, 0xff, sizeof lse);
    tu_decode_args_t a = {q, OKV_DTYPE_F32, OKV_DTYPE_F32, out, lse, 0.0f, 2, rot, 0, 1};
    EXPECT_FAIL(tu_decode(&c, &a, &err), OKV_ERROR_NONFINITE_INPUT, "NaN in v_rotation");
    for (size_t i = 0; i < sizeof out; ++i)
        ck_assert_uint_eq(((uint8_t *)out)[i], 0xff);
    rot[77] = saved;
    q[70] = INFINITY;
    EXPECT_FAIL(tu_decode(&c, &a, &err), OKV_ERROR_NONFINITE_INPUT, "Inf in q");
    for (size_t i = 0; i < sizeof out; ++i)
        ck_assert_uint_eq(((uint8_t *)out)[i], 0xff);
    for (size_t i = 0; i < sizeof lse; ++i)
        ck_assert_uint_eq(((uint8_t *)lse)[i], 0xff);
    /* prefill: NaN in k_new */
    q[70] = 0.0f;
    k[5] = NAN;
    int32_t qptr[3] = {0, 1, 2};
    okv_prefill_params_t pp;
    memset(&pp, 0, sizeof pp);
    pp.size = sizeof pp;
    pp.cache = c.view;
    pp.q_indptr = tu_ref(qptr, sizeof qptr);
    pp.n_rows = 2;
    pp.q = tu_ref(q, sizeof q);
    pp.k_new = tu_ref(k, 2 * 128 * sizeof(float));
    pp.v_new = tu_ref(v, 2 * 128 * sizeof(float));
    pp.in_dtype = OKV_DTYPE_F32;
    pp.out = tu_ref(out, sizeof out);
    pp.out_dtype = OKV_DTYPE_F32;
    EXPECT_FAIL(okv_ref_backend_ops()->prefill(NULL, &pp, &err), OKV_ERROR_NONFINITE_INPUT, "NaN in k_new");
    for (size_t i = 0; i < sizeof out; ++i)
        ck_assert_uint_eq(((uint8_t *)out)[i], 0xff);
    free(k);
    free(v);
    free(rot);
    tu_cache_free(&c);
}
END_TEST

START_TEST(test_invalid_metadata_overflow)
{
    /* f16 metadata cannot hold lo ~ -1e6: the whole batch is refused, nothing written */
    const tu_geom_t g = {2, 2, 128, 128, OKV_DTYPE_F16, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 4, 8, 4, 4};
    tu_cache_t c;
    tu_cache_init(&c, &g, 2, 64, 1, 4);
    tu_rng_t rng = {10};
    float *ident = (float *)tu_calloc(128 * 128, sizeof(float));
    tu_identity(128, ident);
    okv_err_t err;
    int32_t n[2] = {6, 4};
    ck_assert_int_eq(append_random(&c, NULL, &rng, n, ident, ident, 0, 1.0f, 1.0f, 1.0, &err), OKV_SUCCESS);
    /* sequence 0 appends normal rows, sequence 1 a prefill of 1e6-sized rows that reaches INT2 */
    int32_t indptr[3] = {0, 3, 43};
    const size_t nel = (size_t)43 * 2 * 128;
    float *k = (float *)tu_calloc(nel, sizeof(float)), *v = (float *)tu_calloc(nel, sizeof(float));
    tu_fill_normal(&rng, k, nel, 1.0);
    tu_fill_normal(&rng, v, nel, 1.0);
    for (size_t i = (size_t)3 * 256; i < nel; ++i)
        v[i] *= 1e6f;
    EXPECT_FAIL(tu_append(&c, k, v, OKV_DTYPE_F32, indptr, 43, ident, ident, 0, 1.0f, 1.0f, &err),
                OKV_ERROR_METADATA_OVERFLOW, "f16 metadata overflow (direct)");
    ck_assert_msg(strstr(err.msg, "sequence 1") != NULL, "detail: %s", err.msg);
    /* demotion path: put 1e6 rows into the BF16 ring (short append), then flush them */
    int32_t indptr2[3] = {0, 0, 11};
    ck_assert_msg(tu_append(&c, k, v + (size_t)3 * 256, OKV_DTYPE_F32, indptr2, 11, ident, ident, 0, 1.0f, 1.0f,
                            &err) == OKV_SUCCESS,
                  "%s", err.msg); /* len 15, recent 11: all BF16 */
    ck_assert_int_eq(c.seq_lens[1], 15);
    ck_assert_int_eq(c.int2_lens[1], 0);
    EXPECT_FAIL(tu_demote(&c, 8, 1.0f, 1.0f, &err), OKV_ERROR_METADATA_OVERFLOW, "f16 overflow on demote");
    int32_t one[3] = {0, 1, 2};
    EXPECT_FAIL(tu_append(&c, k, v, OKV_DTYPE_F32, one, 2, ident, ident, 0, 1.0f, 1.0f, &err),
                OKV_ERROR_METADATA_OVERFLOW, "f16 overflow on flush");
    /* rows that stay BF16 never need metadata: sequence 0 alone is fine */
    int32_t only0[3] = {0, 1, 1};
    ck_assert_int_eq(tu_append(&c, k, v, OKV_DTYPE_F32, only0, 1, ident, ident, 0, 1.0f, 1.0f, &err), OKV_SUCCESS);
    free(k);
    free(v);
    free(ident);
    tu_cache_free(&c);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("ref_cache");
    TCase *tc = tcase_create("placement");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, NULL, tu_release_all);
    tcase_add_loop_test(tc, test_flush_walk, 0, 3);
    tcase_add_test(tc, test_prefill_placement);
    tcase_add_test(tc, test_demote_op);
    tcase_add_test(tc, test_dequantize_matches_tiers);
    tcase_add_test(tc, test_input_dtypes_and_per_head);
    suite_add_tcase(s, tc);
    TCase *ti = tcase_create("invalid");
    tcase_set_timeout(ti, 60);
    tcase_add_checked_fixture(ti, NULL, tu_release_all);
    tcase_add_test(ti, test_invalid_page_tables);
    tcase_add_test(ti, test_invalid_nonfinite);
    tcase_add_test(ti, test_invalid_metadata_overflow);
    suite_add_tcase(s, ti);
    return s;
}

int main(void) { return okv_check_run(suite()); }
