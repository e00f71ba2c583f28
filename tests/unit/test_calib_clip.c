/* test_calib_clip.c - clip-ratio fitting: ratios in range, never worse than the fixed
 * ratios on the held-back data, clipping chosen on outlier data, reproducible with the
 * seed, reported in the file metadata; the row round trip follows the format. */
#include "calib/calibrator_impl.h"
#include "okv_format.h"
#include "oscarkv/oscarkv.h"

#include <check.h>

#include "okv_check_run.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define D 64
#define HQ 4
#define HKV 2

static uint64_t rng_state;
static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return ((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0 - 1.0;
}
static double gauss(void)
{
    double u = 0;
    for (int i = 0; i < 12; ++i)
        u += 0.5 * (urand() + 1.0);
    return u - 6.0;
}

/* rows with one large outlier at a random channel in most rows */
static void outlier_rows(float *x, int rows, double mag)
{
    for (int r = 0; r < rows; ++r) {
        for (int c = 0; c < D; ++c)
            x[r * D + c] = (float)gauss();
        if (r % 4 != 0) x[r * D + (int)((urand() + 1.0) * 0.5 * (D - 1))] = (float)(mag * (urand() > 0 ? 1 : -1));
    }
}

START_TEST(test_row_roundtrip_format)
{
    okv_cache_desc_t q;
    okv_cache_desc_init(&q);
    rng_state = 1;
    float x[D], y[D];
    for (int c = 0; c < D; ++c)
        x[c] = y[c] = (float)gauss();
    ck_assert(okv_quant_row_roundtrip(y, D, D, 1.0f, &q));
    float mn = x[0], mx = x[0];
    for (int c = 1; c < D; ++c) {
        mn = fminf(mn, x[c]);
        mx = fmaxf(mx, x[c]);
    }
    float scale, lo;
    ck_assert(okv_group_meta(x, D, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_F16, &scale, &lo));
    for (int c = 0; c < D; ++c) {
        float code = (y[c] - lo) / scale;
        ck_assert(fabsf(code - roundf(code)) < 1e-3f && code > -0.01f && code < 3.01f);
        ck_assert(fabsf(y[c] - x[c]) <= 0.5f * scale + 1e-2f * scale + 1e-3f);
    }
    /* clipping at 0.92 bounds the row by the order statistic */
    for (int c = 0; c < D; ++c)
        y[c] = x[c];
    float tau = okv_clip_tau_sort(x, D, 0.92f);
    ck_assert(okv_quant_row_roundtrip(y, D, 32, 0.92f, &q));
    for (int c = 0; c < D; ++c)
        ck_assert(fabsf(y[c]) <= tau * 1.001f + 1e-3f);
    /* metadata overflow is reported */
    x[0] = 1e6f;
    x[1] = -1e6f;
    ck_assert(!okv_quant_row_roundtrip(x, D, D, 1.0f, &q));
}
END_TEST

START_TEST(test_fit_direct)
{
    const int t = 48;
    float *q = malloc(sizeof(float) * t * HQ * D), *k = malloc(sizeof(float) * t * HKV * D),
          *v = malloc(sizeof(float) * t * HKV * D);
    rng_state = 2024;
    for (int i = 0; i < t * HQ * D; ++i)
        q[i] = (float)gauss();
    outlier_rows(k, t * HKV, 12.0);
    outlier_rows(v, t * HKV, 25.0);
    okv_cache_desc_t quant;
    okv_cache_desc_init(&quant);
    okv_err_t err;
    for (int variant = 0; variant < 3; ++variant) {
        quant.group_size = variant == 1 ? 32 : 0;
        quant.clip_mode = variant == 2 ? OKV_CLIP_BISECT : OKV_CLIP_SORT;
        quant.meta_dtype = variant == 2 ? OKV_DTYPE_BF16 : OKV_DTYPE_F16;
        okv_clip_fit_result_t r;
        ck_assert_int_eq(okv_clip_fit(t, HQ, HKV, D, q, k, v, NULL, &quant, 0.96f, 0.92f, &r, &err), OKV_SUCCESS);
        ck_assert(r.k_ratio >= 0.80f && r.k_ratio <= 1.0f);
        ck_assert(r.v_ratio >= 0.80f && r.v_ratio <= 1.0f);
        ck_assert(r.k_err <= r.k_err_fixed && r.v_err <= r.v_err_fixed);
        ck_assert(r.k_err > 0 && r.v_err > 0 && r.k_err < 1 && r.v_err < 1);
        /* the reported errors are what clip_eval measures */
        double e;
        ck_assert_int_eq(okv_clip_eval(t, HQ, HKV, D, q, k, v, NULL, &quant, 1, r.v_ratio, &e, &err), OKV_SUCCESS);
        ck_assert_double_eq_tol(e, r.v_err, 1e-12);
        ck_assert_int_eq(okv_clip_eval(t, HQ, HKV, D, q, k, v, NULL, &quant, 0, 0.96f, &e, &err), OKV_SUCCESS);
        ck_assert_double_eq_tol(e, r.k_err_fixed, 1e-12);
        /* Gaussian rows (no outliers): at 2 bits clipping the tails beats no clipping */
        float *vg = malloc(sizeof(float) * t * HKV * D);
        for (int i = 0; i < t * HKV * D; ++i)
            vg[i] = (float)gauss();
        okv_clip_fit_result_t rg;
        double e1;
        ck_assert_int_eq(okv_clip_fit(t, HQ, HKV, D, q, k, vg, NULL, &quant, 0.96f, 0.92f, &rg, &err), OKV_SUCCESS);
        ck_assert_int_eq(okv_clip_eval(t, HQ, HKV, D, q, k, vg, NULL, &quant, 1, 1.0f, &e1, &err), OKV_SUCCESS);
        ck_assert_msg(rg.v_ratio < 1.0f && rg.v_err < e1, "v ratio %g err %g vs unclipped %g", rg.v_ratio, rg.v_err,
                      e1);
        free(vg);
    }
    /* rows marked exact (sink positions) are not quantised: all exact -> zero error */
    unsigned char *all = malloc((size_t)t);
    memset(all, 1, (size_t)t);
    double ez;
    quant.group_size = 0;
    ck_assert_int_eq(okv_clip_eval(t, HQ, HKV, D, q, k, v, all, &quant, 0, 0.9f, &ez, &err), OKV_SUCCESS);
    ck_assert(ez == 0.0);
    all[0] = 0;
    ck_assert_int_eq(okv_clip_eval(t, HQ, HKV, D, q, k, v, all, &quant, 1, 0.9f, &ez, &err), OKV_SUCCESS);
    ck_assert(ez > 0.0);
    free(all);
    quant.group_size = 48;
    okv_clip_fit_result_t r;
    ck_assert_int_eq(okv_clip_fit(t, HQ, HKV, D, q, k, v, NULL, &quant, 0.96f, 0.92f, &r, &err),
                     OKV_ERROR_INVALID_ARGUMENT);
    free(q);
    free(k);
    free(v);
}
END_TEST

static okv_calibrator_t *outlier_calibrator(uint64_t seed, int holdout)
{
    okv_calib_desc_t desc;
    okv_calib_desc_init(&desc);
    desc.n_layers = 2;
    desc.n_q_heads = HQ;
    desc.n_kv_heads = HKV;
    desc.head_dim = D;
    desc.holdout_tokens = holdout;
    desc.seed = seed;
    okv_calibrator_t *cal;
    ck_assert_int_eq(okv_calibrator_create(&desc, &cal), OKV_SUCCESS);
    rng_state = 5;
    const int n = 40;
    float *q = malloc(sizeof(float) * n * HQ * D), *k = malloc(sizeof(float) * n * HKV * D),
          *v = malloc(sizeof(float) * n * HKV * D);
    for (int l = 0; l < 2; ++l)
        for (int rep = 0; rep < 3; ++rep) {
            for (int i = 0; i < n * HQ * D; ++i)
                q[i] = (float)(gauss() * (i % D == 5 ? 4.0 : 1.0));
            outlier_rows(k, n * HKV, 10.0 + l);
            outlier_rows(v, n * HKV, 20.0);
            ck_assert_int_eq(okv_calibrator_add(cal, l, n, OKV_DTYPE_F32, q, k, v), OKV_SUCCESS);
        }
    free(q);
    free(k);
    free(v);
    return cal;
}

START_TEST(test_fit_through_finalize)
{
    okv_calibrator_t *a = outlier_calibrator(11, 64), *b = outlier_calibrator(11, 64);
    for (int m = 0; m < 3; ++m) {
        okv_calib_options_t opt;
        okv_calib_options_init(&opt);
        opt.method = m == 1 ? OKV_ROT_NONE : OKV_ROT_OSCAR;
        opt.granularity = m == 2 ? OKV_GRANULARITY_HEAD : OKV_GRANULARITY_LAYER;
        opt.fit_clips = 1;
        okv_rotation_set_t *ra, *rb;
        ck_assert_int_eq(okv_calibrator_finalize(a, &opt, &ra), OKV_SUCCESS);
        ck_assert_int_eq(okv_calibrator_finalize(b, &opt, &rb), OKV_SUCCESS);
        const char *mode, *fit, *fitb;
        okv_rotation_set_get_meta(ra, "clip_mode", &mode);
        ck_assert_str_eq(mode, "fitted");
        okv_rotation_set_get_meta(ra, "clip_fit", &fit);
        okv_rotation_set_get_meta(rb, "clip_fit", &fitb);
        ck_assert_ptr_nonnull(fit);
        ck_assert_str_eq(fit, fitb); /* same seed, same data: same holdout, same fit */
        const char *p = fit;
        for (int l = 0; l < 2; ++l) {
            int layer, used;
            double kr, ke, kef, vr, ve, vef;
            ck_assert_int_eq(
                sscanf(p, " %d:k=%lf,%lf,%lf;v=%lf,%lf,%lf%n", &layer, &kr, &ke, &kef, &vr, &ve, &vef, &used), 7);
            p += used;
            ck_assert_int_eq(layer, l);
            ck_assert(ke <= kef && ve <= vef);
            okv_layer_rotation_t L;
            okv_rotation_set_get_layer(ra, l, &L);
            ck_assert(L.k_clip_ratio >= 0.80f && L.k_clip_ratio <= 1.0f);
            ck_assert(L.v_clip_ratio >= 0.80f && L.v_clip_ratio <= 1.0f);
            ck_assert_double_eq_tol(L.k_clip_ratio, kr, 0.006);
            ck_assert_double_eq_tol(L.v_clip_ratio, vr, 0.006);
        }
        okv_rotation_set_destroy(ra);
        okv_rotation_set_destroy(rb);
    }
    okv_calibrator_destroy(a);
    okv_calibrator_destroy(b);
}
END_TEST

START_TEST(test_holdout_reservoir)
{
    calib_layer_t L;
    memset(&L, 0, sizeof L);
    okv_rng_seed(&L.rng, 3);
    const int cap = 8, n = 100;
    L.hq = malloc(sizeof(float) * cap * D);
    L.hk = malloc(sizeof(float) * cap * D);
    L.hv = malloc(sizeof(float) * cap * D);
    L.hpos = malloc(sizeof(int32_t) * cap);
    float *x = malloc(sizeof(float) * n * D);
    for (int t = 0; t < n; ++t)
        for (int c = 0; c < D; ++c)
            x[t * D + c] = (float)t;
    okv_holdout_add(&L, cap, 5, 1, 1, D, x, x, x); /* fewer than capacity: all kept in order */
    ck_assert_int_eq(L.held, 5);
    for (int t = 0; t < 5; ++t)
        ck_assert(L.hk[t * D] == (float)t);
    okv_holdout_add(&L, cap, n - 5, 1, 1, D, x + 5 * D, x + 5 * D, x + 5 * D);
    ck_assert_int_eq(L.held, cap);
    ck_assert_int_eq(L.seen, n);
    int distinct = 1, late = 0;
    for (int i = 0; i < cap; ++i) {
        ck_assert(L.hq[i * D] == L.hk[i * D] && L.hk[i * D] == L.hv[i * D]); /* rows stay together */
        ck_assert_int_eq(L.hpos[i],
                         L.hk[i * D] < 5.0f ? (int)L.hk[i * D] : (int)L.hk[i * D] - 5); /* position in its add */
        for (int j = 0; j < i; ++j)
            distinct &= L.hk[i * D] != L.hk[j * D];
        late += L.hk[i * D] >= 8.0f;
    }
    ck_assert(distinct);
    ck_assert_int_gt(late, 0); /* later tokens do get sampled */
    free(L.hq);
    free(L.hk);
    free(L.hv);
    free(L.hpos);
    free(x);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("calib_clip");
    TCase *tc = tcase_create("clip");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_row_roundtrip_format);
    tcase_add_test(tc, test_fit_direct);
    tcase_add_test(tc, test_fit_through_finalize);
    tcase_add_test(tc, test_holdout_reservoir);
    suite_add_tcase(s, tc);
    return okv_check_run(s);
}
