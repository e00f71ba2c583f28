/* test_ref_attention.c - decode and prefill attention of the reference against a
 * float64 recomputation on the dequantized cache; split-count, page-placement and
 * rotation invariance; un-rotated output; input/output dtypes. */
#include "test_ref_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct scene {
    tu_geom_t g;
    int32_t batch;
    int32_t prefill[3]; /* first append per sequence */
    int32_t steps;      /* then this many single-token steps (sequences with prefill 0 stay empty) */
} scene_t;

static const scene_t scenes[3] = {
    {{8, 2, 128, 128, OKV_DTYPE_F32, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 4, 16, 8, 16}, 3, {290, 0, 13}, 10},
    {{4, 4, 64, 32, OKV_DTYPE_F16, OKV_QUANT_LLOYD_MAX, OKV_CLIP_BISECT, 2, 8, 4, 8}, 3, {70, 5, 1}, 9},
    {{16, 2, 256, 64, OKV_DTYPE_BF16, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 8, 32, 8, 16}, 2, {90, 7, 0}, 10},
};

/* Build a scene's cache: prefill, then single steps; rotations random orthogonal
 * (k then v, each [1, d, d]). Returns the max sequence length. */
static int32_t build(tu_cache_t *c, const scene_t *s, uint64_t page_seed, int32_t spare, uint64_t data_seed, float *rot)
{
    const int32_t max_len = 300 + s->steps;
    tu_cache_init(c, &s->g, s->batch, max_len, spare, page_seed);
    tu_rng_t rng = {data_seed};
    const int32_t d = s->g.d, hkv = s->g.hkv;
    tu_random_orthogonal(&rng, d, rot);
    tu_random_orthogonal(&rng, d, rot + (size_t)d * d);
    int32_t indptr[4] = {0, 0, 0, 0};
    for (int32_t step = 0; step <= s->steps; ++step) {
        for (int32_t b = 0; b < s->batch; ++b)
            indptr[b + 1] = indptr[b] + (step == 0 ? s->prefill[b] : (s->prefill[b] > 0 ? 1 : 0));
        int32_t n = indptr[s->batch];
        float *k = (float *)tu_calloc((size_t)n * hkv * d + 1, sizeof(float));
        float *v = (float *)tu_calloc((size_t)n * hkv * d + 1, sizeof(float));
        tu_fill_normal(&rng, k, (size_t)n * hkv * d, 1.0);
        tu_fill_normal(&rng, v, (size_t)n * hkv * d, 1.0);
        for (size_t i = 0; i < (size_t)n * hkv * d; i += 3)
            k[i] += 2.0f; /* a mean: peaked softmax */
        okv_err_t err;
        okv_status_t st = tu_append(c, k, v, OKV_DTYPE_F32, indptr, n, rot, rot + (size_t)d * d, 0, 0.96f, 0.92f, &err);
        ck_assert_msg(st == OKV_SUCCESS, "append: %s", err.msg);
        free(k);
        free(v);
    }
    int32_t m = 0;
    for (int32_t b = 0; b < s->batch; ++b)
        m = c->seq_lens[b] > m ? c->seq_lens[b] : m;
    return m;
}

/* Float64 decode reference on the dequantized cache: out [batch, hq, d], lse. */
static void decode_f64(tu_cache_t *c, int32_t max_len, const float *q, double scale, double *out, double *lse)
{
    const int32_t d = c->desc.head_dim, hq = c->desc.n_q_heads, hkv = c->desc.n_kv_heads, g = hq / hkv;
    size_t nel = (size_t)c->batch * max_len * hkv * d;
    float *k = (float *)tu_calloc(nel, sizeof(float)), *v = (float *)tu_calloc(nel, sizeof(float));
    okv_err_t err;
    ck_assert_int_eq(tu_dequantize(c, max_len, k, v, &err), OKV_SUCCESS);
    float *kh = (float *)tu_calloc((size_t)max_len * d, sizeof(float));
    float *vh = (float *)tu_calloc((size_t)max_len * d, sizeof(float));
    double qd[256];
    for (int32_t b = 0; b < c->batch; ++b)
        for (int32_t i = 0; i < hq; ++i) {
            int32_t h = i / g, len = c->seq_lens[b];
            for (int32_t t = 0; t < len; ++t) {
                memcpy(kh + (size_t)t * d, k + (((size_t)b * max_len + t) * hkv + h) * d, sizeof(float) * (size_t)d);
                memcpy(vh + (size_t)t * d, v + (((size_t)b * max_len + t) * hkv + h) * d, sizeof(float) * (size_t)d);
            }
            for (int j = 0; j < d; ++j)
                qd[j] = q[((size_t)b * hq + i) * d + j];
            lse[(size_t)b * hq + i] = tu_attention_f64(qd, kh, vh, len, d, scale, out + ((size_t)b * hq + i) * d);
        }
    free(k);
    free(v);
    free(kh);
    free(vh);
}

START_TEST(test_decode_vs_f64)
{
    const scene_t *s = &scenes[_i];
    const int32_t d = s->g.d, hq = s->g.hq;
    float *rot = (float *)tu_calloc(2 * (size_t)d * d, sizeof(float));
    tu_cache_t c;
    int32_t max_len = build(&c, s, 3, 2, 100 + (uint64_t)_i, rot);
    if (s == &scenes[0]) ck_assert_int_gt(c.int2_lens[0], 250);
    tu_rng_t rng = {55};
    size_t n = (size_t)s->batch * hq * d;
    float *q = (float *)tu_calloc(n, sizeof(float)), *out = (float *)tu_calloc(n, sizeof(float));
    float lse[3 * 16];
    tu_fill_normal(&rng, q, n, 1.0);
    double *ref = (double *)tu_calloc(n, sizeof(double)), ref_lse[3 * 16];
    decode_f64(&c, max_len, q, 1.0 / sqrt((double)d), ref, ref_lse);
    okv_err_t err;
    tu_decode_args_t a = {q, OKV_DTYPE_F32, OKV_DTYPE_F32, out, lse, 0.0f, 3, NULL, 0, 0};
    ck_assert_msg(tu_decode(&c, &a, &err) == OKV_SUCCESS, "%s", err.msg);
    for (int32_t b = 0; b < s->batch; ++b)
        for (int32_t i = 0; i < hq; ++i) {
            size_t row = (size_t)b * hq + i;
            if (c.seq_lens[b] == 0) {
                for (int j = 0; j < d; ++j)
                    ck_assert(out[row * d + j] == 0.0f);
                ck_assert(isinf(lse[row]) && lse[row] < 0.0f);
                continue;
            }
            double e = tu_rel_err(out + row * d, ref + row * d, (size_t)d);
            ck_assert_msg(e < 1e-5, "seq %d head %d: rel err %g", b, i, e);
            ck_assert_msg(fabs(lse[row] - ref_lse[row]) < 1e-5 * fmax(1.0, fabs(ref_lse[row])), "lse %g vs %g",
                          (double)lse[row], ref_lse[row]);
        }
    free(q);
    free(out);
    free(ref);
    free(rot);
    tu_cache_free(&c);
}
END_TEST

START_TEST(test_split_invariance)
{
    const scene_t *s = &scenes[_i];
    const int32_t d = s->g.d, hq = s->g.hq;
    float *rot = (float *)tu_calloc(2 * (size_t)d * d, sizeof(float));
    tu_cache_t c;
    build(&c, s, 8, 0, 200 + (uint64_t)_i, rot);
    tu_rng_t rng = {56};
    size_t n = (size_t)s->batch * hq * d;
    float *q = (float *)tu_calloc(n, sizeof(float));
    tu_fill_normal(&rng, q, n, 1.0);
    float *base = (float *)tu_calloc(n, sizeof(float)), *out = (float *)tu_calloc(n, sizeof(float));
    float lse0[48], lse[48];
    const int32_t splits[5] = {1, 2, 7, 64, 0};
    okv_err_t err;
    for (int t = 0; t < 5; ++t) {
        tu_decode_args_t a = {q, OKV_DTYPE_F32, OKV_DTYPE_F32, t ? out : base, t ? lse : lse0, 0.0f, splits[t], NULL, 0,
                              0};
        ck_assert_msg(tu_decode(&c, &a, &err) == OKV_SUCCESS, "%s", err.msg);
        if (!t) continue;
        for (size_t r = 0; r < (size_t)s->batch * hq; ++r) {
            double mx = 1e-30, e = 0.0;
            for (int j = 0; j < d; ++j) {
                mx = fmax(mx, fabs(base[r * d + j]));
                e = fmax(e, fabs((double)out[r * d + j] - base[r * d + j]));
            }
            ck_assert_msg(e <= 1e-5 * mx, "splits %d row %zu: %g", splits[t], r, e / mx);
            if (isinf(lse0[r]))
                ck_assert(isinf(lse[r]));
            else
                ck_assert_msg(fabs(lse[r] - lse0[r]) <= 1e-5 * fmax(1.0, fabs(lse0[r])), "lse");
        }
    }
    free(q);
    free(base);
    free(out);
    free(rot);
    tu_cache_free(&c);
}
END_TEST

START_TEST(test_page_placement_invariance)
{
    const scene_t *s = &scenes[_i];
    const int32_t d = s->g.d, hq = s->g.hq, hkv = s->g.hkv;
    float *rot = (float *)tu_calloc(2 * (size_t)d * d, sizeof(float));
    tu_cache_t a, b;
    int32_t max_len = build(&a, s, 1, 0, 300, rot);
    build(&b, s, 2, 5, 300, rot); /* same data, other physical pages, bigger pools */
    ck_assert(memcmp(a.int2_indices, b.int2_indices, sizeof(int32_t) * (size_t)a.batch * a.int2_pages_per_seq));
    tu_rng_t rng = {57};
    size_t n = (size_t)s->batch * hq * d;
    float *q = (float *)tu_calloc(n, sizeof(float));
    tu_fill_normal(&rng, q, n, 1.0);
    float *oa = (float *)tu_calloc(n, sizeof(float)), *ob = (float *)tu_calloc(n, sizeof(float));
    float la[48], lb[48];
    okv_err_t err;
    tu_decode_args_t da = {q, OKV_DTYPE_F32, OKV_DTYPE_F32, oa, la, 0.0f, 5, NULL, 0, 0};
    tu_decode_args_t db = {q, OKV_DTYPE_F32, OKV_DTYPE_F32, ob, lb, 0.0f, 5, NULL, 0, 0};
    ck_assert_int_eq(tu_decode(&a, &da, &err), OKV_SUCCESS);
    ck_assert_int_eq(tu_decode(&b, &db, &err), OKV_SUCCESS);
    ck_assert(memcmp(oa, ob, n * sizeof(float)) == 0);
    ck_assert(memcmp(la, lb, sizeof(float) * (size_t)s->batch * hq) == 0);
    size_t nel = (size_t)s->batch * max_len * hkv * d;
    float *ka = (float *)tu_calloc(nel, 4), *va = (float *)tu_calloc(nel, 4);
    float *kb = (float *)tu_calloc(nel, 4), *vb = (float *)tu_calloc(nel, 4);
    ck_assert_int_eq(tu_dequantize(&a, max_len, ka, va, &err), OKV_SUCCESS);
    ck_assert_int_eq(tu_dequantize(&b, max_len, kb, vb, &err), OKV_SUCCESS);
    ck_assert(memcmp(ka, kb, nel * 4) == 0 && memcmp(va, vb, nel * 4) == 0);
    free(ka);
    free(va);
    free(kb);
    free(vb);
    free(q);
    free(oa);
    free(ob);
    free(rot);
    tu_cache_free(&a);
    tu_cache_free(&b);
}
END_TEST

/* A cache built with random orthogonal R_K, R_V, everything in the BF16 tier, q
 * rotated by R_K and the output un-rotated by R_V^T, equals plain attention on
 * the raw q, k, v. The raw k, v are made as k_rot R^T with k_rot on the bf16 grid
 * (|k_rot| in [1, 2)), so storing bf16(k R) recovers k_rot exactly and the check
 * can be tight. Loop index 1 uses per-head rotations. */
START_TEST(test_rotation_invariance)
{
    const int per_head = _i;
    const tu_geom_t g = {4, 2, 64, 64, OKV_DTYPE_F16, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 16, 512, 8, 16};
    const int32_t d = 64, hq = 4, hkv = 2, lens[2] = {200, 57};
    tu_cache_t c;
    tu_cache_init(&c, &g, 2, 0, 1, 31);
    tu_rng_t rng = {4242};
    const int32_t nrot = per_head ? hkv : 1;
    float *rk = (float *)tu_calloc((size_t)nrot * d * d, 4), *rv = (float *)tu_calloc((size_t)nrot * d * d, 4);
    for (int32_t r = 0; r < nrot; ++r) {
        tu_random_orthogonal(&rng, d, rk + (size_t)r * d * d);
        tu_random_orthogonal(&rng, d, rv + (size_t)r * d * d);
    }
    const int32_t rows = lens[0] + lens[1];
    float *k = (float *)tu_calloc((size_t)rows * hkv * d, 4), *v = (float *)tu_calloc((size_t)rows * hkv * d, 4);
    float *krot = (float *)tu_calloc((size_t)rows * hkv * d, 4);
    for (int32_t t = 0; t < rows; ++t)
        for (int32_t h = 0; h < hkv; ++h)
            for (int kv = 0; kv < 2; ++kv) {
                const float *r = (kv ? rv : rk) + (per_head ? (size_t)h * d * d : 0);
                double xr[64];
                for (int j = 0; j < d; ++j)
                    xr[j] = ((tu_next(&rng) & 1u) ? -1.0 : 1.0) * (1.0 + (double)(tu_next(&rng) % 128u) / 128.0);
                if (!kv)
                    for (int j = 0; j < d; ++j)
                        krot[((size_t)t * hkv + h) * d + j] = (float)xr[j];
                float *dst = (kv ? v : k) + ((size_t)t * hkv + h) * d;
                for (int i = 0; i < d; ++i) { /* x = x_rot R^T */
                    double sacc = 0.0;
                    for (int j = 0; j < d; ++j)
                        sacc += xr[j] * (double)r[(size_t)i * d + j];
                    dst[i] = (float)sacc;
                }
            }
    int32_t indptr[3] = {0, lens[0], rows};
    okv_err_t err;
    ck_assert_msg(tu_append(&c, k, v, OKV_DTYPE_F32, indptr, rows, rk, rv, per_head, 1.0f, 1.0f, &err) == OKV_SUCCESS,
                  "%s", err.msg);
    ck_assert_int_eq(c.int2_lens[0], 0);
    ck_assert_int_eq(c.int2_lens[1], 0);
    /* the premise: stored rows are k_rot exactly */
    float row[64];
    for (int32_t t = 0; t < lens[0]; t += 17) {
        okv_ref_cache_read_row(&c.rc, 0, t, 0, 1, row);
        ck_assert(memcmp(row, krot + ((size_t)t * hkv + 1) * d, sizeof row) == 0);
    }
    /* q rotated through the backend's rotate op (per-head: query head i uses R[i / g]) */
    float q[2 * 4 * 64], qr[2 * 4 * 64], out[2 * 4 * 64], lse[8];
    tu_fill_normal(&rng, q, sizeof q / sizeof q[0], 1.0);
    okv_rotate_params_t rp;
    memset(&rp, 0, sizeof rp);
    rp.size = sizeof rp;
    rp.x = tu_ref(q, sizeof q);
    rp.x_dtype = OKV_DTYPE_F32;
    rp.out = tu_ref(qr, sizeof qr);
    rp.out_dtype = OKV_DTYPE_F32;
    rp.rotation = tu_ref(rk, sizeof(float) * (size_t)nrot * d * d);
    rp.n_rows = 2;
    rp.n_heads = hq;
    rp.head_dim = d;
    rp.per_head = per_head;
    rp.head_group = hq / hkv;
    ck_assert_int_eq(okv_ref_backend_ops()->rotate(NULL, &rp, &err), OKV_SUCCESS);
    tu_decode_args_t a = {qr, OKV_DTYPE_F32, OKV_DTYPE_F32, out, lse, 0.0f, 4, rv, per_head, 1};
    ck_assert_msg(tu_decode(&c, &a, &err) == OKV_SUCCESS, "%s", err.msg);
    float *kh = (float *)tu_calloc((size_t)lens[0] * d, 4), *vh = (float *)tu_calloc((size_t)lens[0] * d, 4);
    double qd[64], ref[64];
    for (int32_t b = 0; b < 2; ++b)
        for (int32_t i = 0; i < hq; ++i) {
            int32_t h = i / (hq / hkv);
            for (int32_t t = 0; t < lens[b]; ++t) {
                size_t src = (((size_t)indptr[b] + t) * hkv + h) * d;
                memcpy(kh + (size_t)t * d, k + src, sizeof(float) * d);
                memcpy(vh + (size_t)t * d, v + src, sizeof(float) * d);
            }
            for (int j = 0; j < d; ++j)
                qd[j] = q[((size_t)b * hq + i) * d + j];
            double l = tu_attention_f64(qd, kh, vh, lens[b], d, 0.125, ref);
            double e = tu_rel_err(out + ((size_t)b * hq + i) * d, ref, (size_t)d);
            ck_assert_msg(e < 1e-5, "seq %d head %d: rel err %g", b, i, e);
            ck_assert_msg(fabs(lse[b * hq + i] - l) < 1e-5 * fmax(1.0, fabs(l)), "lse %g vs %g",
                          (double)lse[b * hq + i], l);
        }
    free(kh);
    free(vh);
    free(k);
    free(v);
    free(krot);
    free(rk);
    free(rv);
    tu_cache_free(&c);
}
END_TEST

START_TEST(test_unrotate_output)
{
    const scene_t *s = &scenes[0];
    const int32_t d = s->g.d, hq = s->g.hq, hkv = s->g.hkv;
    float *rot = (float *)tu_calloc(2 * (size_t)d * d, sizeof(float));
    tu_cache_t c;
    build(&c, s, 4, 0, 400, rot);
    tu_rng_t rng = {58};
    float *rv = (float *)tu_calloc((size_t)hkv * d * d, 4);
    for (int32_t h = 0; h < hkv; ++h)
        tu_random_orthogonal(&rng, d, rv + (size_t)h * d * d);
    size_t n = (size_t)s->batch * hq * d;
    float *q = (float *)tu_calloc(n, 4), *o = (float *)tu_calloc(n, 4), *ou = (float *)tu_calloc(n, 4);
    tu_fill_normal(&rng, q, n, 1.0);
    okv_err_t err;
    tu_decode_args_t a = {q, OKV_DTYPE_F32, OKV_DTYPE_F32, o, NULL, 0.0f, 2, NULL, 0, 0};
    tu_decode_args_t b = {q, OKV_DTYPE_F32, OKV_DTYPE_F32, ou, NULL, 0.0f, 2, rv, 1, 1};
    ck_assert_int_eq(tu_decode(&c, &a, &err), OKV_SUCCESS);
    ck_assert_int_eq(tu_decode(&c, &b, &err), OKV_SUCCESS);
    double ref[128];
    for (size_t r = 0; r < (size_t)s->batch * hq; ++r) {
        const float *R = rv + (size_t)((r % hq) / (hq / hkv)) * d * d;
        for (int i = 0; i < d; ++i) {
            double acc = 0.0;
            for (int j = 0; j < d; ++j)
                acc += (double)o[r * d + j] * R[(size_t)i * d + j]; /* o R^T */
            ref[i] = acc;
        }
        ck_assert_msg(tu_rel_err(ou + r * d, ref, (size_t)d) < 1e-5, "row %zu", r);
    }
    free(q);
    free(o);
    free(ou);
    free(rv);
    free(rot);
    tu_cache_free(&c);
}
END_TEST

START_TEST(test_decode_dtypes)
{
    const scene_t *s = &scenes[1];
    const int32_t d = s->g.d, hq = s->g.hq;
    float *rot = (float *)tu_calloc(2 * (size_t)d * d, sizeof(float));
    tu_cache_t c;
    int32_t max_len = build(&c, s, 6, 1, 500, rot);
    tu_rng_t rng = {59};
    size_t n = (size_t)s->batch * hq * d;
    float *q = (float *)tu_calloc(n, 4);
    uint16_t *q16 = (uint16_t *)tu_calloc(n, 2), *o16 = (uint16_t *)tu_calloc(n, 2);
    tu_fill_normal(&rng, q, n, 1.0);
    const okv_dtype_t dts[2] = {OKV_DTYPE_F16, OKV_DTYPE_BF16};
    okv_err_t err;
    for (int t = 0; t < 2; ++t) {
        for (size_t i = 0; i < n; ++i) {
            okv_ref_store(q16, dts[t], i, q[i]);
            q[i] = okv_ref_load(q16, dts[t], i);
        }
        double *ref = (double *)tu_calloc(n, 8), lse[16];
        decode_f64(&c, max_len, q, 0.3, ref, lse);
        tu_decode_args_t a = {q16, dts[t], dts[1 - t], o16, NULL, 0.3f, 0, NULL, 0, 0};
        ck_assert_int_eq(tu_decode(&c, &a, &err), OKV_SUCCESS);
        float *of = (float *)tu_calloc(n, 4);
        for (size_t i = 0; i < n; ++i)
            of[i] = okv_ref_load(o16, dts[1 - t], i);
        double tol = dts[1 - t] == OKV_DTYPE_BF16 ? 8e-3 : 1e-3;
        for (size_t r = 0; r < (size_t)s->batch * hq; ++r)
            ck_assert_msg(tu_rel_err(of + r * d, ref + r * d, (size_t)d) < tol, "dtype %d row %zu", t, r);
        free(of);
        free(ref);
    }
    free(q);
    free(q16);
    free(o16);
    free(rot);
    tu_cache_free(&c);
}
END_TEST

/* Prefill: chunk rows attend to the dequantized history and causally to the chunk. */
START_TEST(test_prefill_vs_f64)
{
    const scene_t *s = &scenes[_i];
    const int32_t d = s->g.d, hq = s->g.hq, hkv = s->g.hkv, g = hq / hkv;
    float *rot = (float *)tu_calloc(2 * (size_t)d * d, sizeof(float));
    tu_cache_t c;
    int32_t max_len = build(&c, s, 7, 1, 600 + (uint64_t)_i, rot);
    const int32_t chunk[3] = {9, 4, 0};
    int32_t qptr[4] = {0, 0, 0, 0};
    for (int32_t b = 0; b < s->batch; ++b)
        qptr[b + 1] = qptr[b] + chunk[b];
    const int32_t rows = qptr[s->batch];
    tu_rng_t rng = {60};
    float *q = (float *)tu_calloc((size_t)rows * hq * d, 4), *out = (float *)tu_calloc((size_t)rows * hq * d, 4);
    float *kn = (float *)tu_calloc((size_t)rows * hkv * d, 4), *vn = (float *)tu_calloc((size_t)rows * hkv * d, 4);
    tu_fill_normal(&rng, q, (size_t)rows * hq * d, 1.0);
    tu_fill_normal(&rng, kn, (size_t)rows * hkv * d, 1.0);
    tu_fill_normal(&rng, vn, (size_t)rows * hkv * d, 1.0);
    size_t nel = (size_t)s->batch * max_len * hkv * d;
    float *k = (float *)tu_calloc(nel, 4), *v = (float *)tu_calloc(nel, 4);
    okv_err_t err;
    ck_assert_int_eq(tu_dequantize(&c, max_len, k, v, &err), OKV_SUCCESS);
    uint8_t *int2_0 = (uint8_t *)tu_calloc(c.int2_page_bytes, (size_t)c.int2_pool_pages + 1);
    memcpy(int2_0, c.int2_pool, c.int2_page_bytes * (size_t)c.int2_pool_pages);
    okv_prefill_params_t p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.cache = c.view;
    p.q_indptr = tu_ref(qptr, sizeof qptr);
    p.n_rows = rows;
    p.q = tu_ref(q, (size_t)rows * hq * d * 4);
    p.k_new = tu_ref(kn, (size_t)rows * hkv * d * 4);
    p.v_new = tu_ref(vn, (size_t)rows * hkv * d * 4);
    p.in_dtype = OKV_DTYPE_F32;
    p.out = tu_ref(out, (size_t)rows * hq * d * 4);
    p.out_dtype = OKV_DTYPE_F32;
    p.max_seq_len = max_len;
    ck_assert_msg(okv_ref_backend_ops()->prefill(NULL, &p, &err) == OKV_SUCCESS, "%s", err.msg);
    ck_assert(memcmp(int2_0, c.int2_pool, c.int2_page_bytes * (size_t)c.int2_pool_pages) == 0); /* read-only */
    float *kh = (float *)tu_calloc((size_t)(max_len + 16) * d, 4),
          *vh = (float *)tu_calloc((size_t)(max_len + 16) * d, 4);
    double qd[256], ref[256];
    for (int32_t b = 0; b < s->batch; ++b)
        for (int32_t i = 0; i < hq; ++i) {
            int32_t h = i / g, len = c.seq_lens[b];
            for (int32_t t = 0; t < len; ++t) {
                memcpy(kh + (size_t)t * d, k + (((size_t)b * max_len + t) * hkv + h) * d, 4 * (size_t)d);
                memcpy(vh + (size_t)t * d, v + (((size_t)b * max_len + t) * hkv + h) * d, 4 * (size_t)d);
            }
            for (int32_t j = 0; j < chunk[b]; ++j) {
                memcpy(kh + ((size_t)len + j) * d, kn + (((size_t)qptr[b] + j) * hkv + h) * d, 4 * (size_t)d);
                memcpy(vh + ((size_t)len + j) * d, vn + (((size_t)qptr[b] + j) * hkv + h) * d, 4 * (size_t)d);
            }
            for (int32_t j = 0; j < chunk[b]; ++j) {
                size_t row = ((size_t)qptr[b] + j) * hq + i;
                for (int x = 0; x < d; ++x)
                    qd[x] = q[row * d + x];
                tu_attention_f64(qd, kh, vh, (int64_t)len + j + 1, d, 1.0 / sqrt((double)d), ref);
                double e = tu_rel_err(out + row * d, ref, (size_t)d);
                ck_assert_msg(e < 1e-5, "seq %d chunk row %d head %d: rel err %g", b, j, i, e);
            }
        }
    free(kh);
    free(vh);
    free(int2_0);
    free(k);
    free(v);
    free(q);
    free(out);
    free(kn);
    free(vn);
    free(rot);
    tu_cache_free(&c);
}
END_TEST

START_TEST(test_default_splits)
{
    ck_assert_int_eq(okv_ref_default_splits(0), 1);
    ck_assert_int_eq(okv_ref_default_splits(1024), 1);
    ck_assert_int_eq(okv_ref_default_splits(1025), 2);
    ck_assert_int_eq(okv_ref_default_splits(32768), 32);
    ck_assert_int_eq(okv_ref_default_splits(1 << 30), 64);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("ref_attention");
    TCase *tc = tcase_create("attention");
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, NULL, tu_release_all);
    tcase_add_loop_test(tc, test_decode_vs_f64, 0, 3);
    tcase_add_loop_test(tc, test_split_invariance, 0, 3);
    tcase_add_loop_test(tc, test_page_placement_invariance, 0, 3);
    tcase_add_loop_test(tc, test_rotation_invariance, 0, 2);
    tcase_add_test(tc, test_unrotate_output);
    tcase_add_test(tc, test_decode_dtypes);
    tcase_add_loop_test(tc, test_prefill_vs_f64, 0, 3);
    tcase_add_test(tc, test_default_splits);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return okv_check_run(suite()); }
