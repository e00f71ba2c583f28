/* test_calib_center.c - key centering: the calibrator's k_mean (float64 key sums, per
 * KV head or per layer), center_keys = 0 (reference-compatible: no k_mean), clip
 * fitting on centered keys, k_mean in rotation files (bit-exact round trip, optional
 * tensor, strict shape/finite checks), set_layer/get_layer, and end to end through the
 * public API on the "ref" backend: append with k_bias = k_mean lowers the decode
 * attention error on keys with a large common mean, and changes nothing (softmax
 * invariance) while every row sits in the BF16 tier. */
#define _POSIX_C_SOURCE 200809L
#include "calib/safetensors.h"
#include "oscarkv/oscarkv.h"
#include "test_ref_util.h"

#include <check.h>

#include "okv_check_run.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* First occurrence of needle in hay (NULL when absent). */
static unsigned char *find_bytes(unsigned char *hay, size_t len, const char *needle, size_t n)
{
    for (size_t i = 0; n <= len && i <= len - n; ++i)
        if (memcmp(hay + i, needle, n) == 0) return hay + i;
    return NULL;
}

/* ------------------------------------------------------------ calibrator -- */

typedef struct cal_data {
    int n_layers, hq, hkv, d;
    int n_adds, per_add;
    float *q, *k, *v; /* [layer][n_adds * per_add][H][d] */
} cal_data_t;

/* Keys x + mu_h with x ~ N(0,1) and, per layer, mu_h = 20 m + spread n_h (m, n_h ~ N(0,1)):
 * a mean common to the KV heads plus a per-head part; queries 0.3 N(0,1) + 2 x (of the
 * same token and KV head): selective attention; values N(0,1). */
static void make_data(cal_data_t *c, int n_layers, int hq, int hkv, int d, int n_adds, int per_add, double spread,
                      uint64_t seed)
{
    c->n_layers = n_layers;
    c->hq = hq;
    c->hkv = hkv;
    c->d = d;
    c->n_adds = n_adds;
    c->per_add = per_add;
    size_t n = (size_t)n_adds * per_add;
    c->q = tu_calloc((size_t)n_layers * n * hq * d, sizeof(float));
    c->k = tu_calloc((size_t)n_layers * n * hkv * d, sizeof(float));
    c->v = tu_calloc((size_t)n_layers * n * hkv * d, sizeof(float));
    tu_rng_t r = {seed};
    tu_fill_normal(&r, c->q, (size_t)n_layers * n * hq * d, 1.0);
    tu_fill_normal(&r, c->v, (size_t)n_layers * n * hkv * d, 1.0);
    tu_fill_normal(&r, c->k, (size_t)n_layers * n * hkv * d, 1.0);
    float *mu = tu_calloc((size_t)hkv * d, sizeof(float));
    for (int l = 0; l < n_layers; ++l) {
        tu_fill_normal(&r, mu, (size_t)d, 20.0);
        for (int h = 1; h < hkv; ++h)
            memcpy(mu + (size_t)h * d, mu, sizeof(float) * (size_t)d);
        for (int i = 0; i < hkv * d; ++i)
            mu[i] += (float)(spread * tu_normal(&r));
        for (size_t t = 0; t < n; ++t) {
            /* selective attention: a query mostly matches its own token's key noise */
            size_t row = (size_t)l * n + t;
            for (int i = 0; i < hq; ++i)
                for (int j = 0; j < d; ++j)
                    c->q[(row * hq + i) * d + j] =
                        0.3f * c->q[(row * hq + i) * d + j] + 2.0f * c->k[(row * hkv + i / (hq / hkv)) * d + j];
            for (int i = 0; i < hkv * d; ++i)
                c->k[row * hkv * d + i] += mu[i];
        }
    }
    free(mu);
}

static void free_data(cal_data_t *c)
{
    free(c->q);
    free(c->k);
    free(c->v);
}

static okv_calibrator_t *calibrate(const cal_data_t *c, okv_value_target_t target, int32_t holdout)
{
    okv_calib_desc_t cd;
    okv_calib_desc_init(&cd);
    cd.n_layers = c->n_layers;
    cd.n_q_heads = c->hq;
    cd.n_kv_heads = c->hkv;
    cd.head_dim = c->d;
    cd.value_target = target;
    cd.holdout_tokens = holdout;
    okv_calibrator_t *cal = NULL;
    ck_assert_int_eq(okv_calibrator_create(&cd, &cal), OKV_SUCCESS);
    size_t n = (size_t)c->n_adds * c->per_add;
    for (int l = 0; l < c->n_layers; ++l)
        for (int a = 0; a < c->n_adds; ++a) {
            size_t t0 = (size_t)l * n + (size_t)a * c->per_add;
            ck_assert_int_eq(okv_calibrator_add(cal, l, c->per_add, OKV_DTYPE_F32, c->q + t0 * c->hq * c->d,
                                                c->k + t0 * c->hkv * c->d, c->v + t0 * c->hkv * c->d),
                             OKV_SUCCESS);
        }
    return cal;
}

static okv_rotation_set_t *finalize(okv_calibrator_t *cal, okv_granularity_t gran, int center, int fit)
{
    okv_calib_options_t o;
    okv_calib_options_init(&o);
    ck_assert_int_eq(o.center_keys, 1); /* the default */
    o.granularity = gran;
    o.center_keys = center;
    o.scale_keys = 0; /* centering alone; with key scaling the centered moments also shape R_K */
    o.fit_clips = fit;
    o.quant.sink_tokens = 0;
    okv_rotation_set_t *rs = NULL;
    ck_assert_msg(okv_calibrator_finalize(cal, &o, &rs) == OKV_SUCCESS, "%s", okv_calibrator_last_error(cal));
    return rs;
}

START_TEST(test_k_mean_matches_direct_mean)
{
    cal_data_t c;
    make_data(&c, 2, 8, 2, 64, 3, 50, 20.0, 11);
    okv_calibrator_t *cal = calibrate(&c, OKV_VALUE_TARGET_REFERENCE, 64);
    size_t n = (size_t)c.n_adds * c.per_add;
    for (int gi = 0; gi < 2; ++gi) {
        okv_granularity_t gran = gi ? OKV_GRANULARITY_HEAD : OKV_GRANULARITY_LAYER;
        okv_rotation_set_t *rs = finalize(cal, gran, 1, 0);
        okv_rotation_set_t *rs0 = finalize(cal, gran, 0, 0);
        int n_rot = gi ? c.hkv : 1;
        const char *m;
        ck_assert_int_eq(okv_rotation_set_get_meta(rs, "center_keys", &m), OKV_SUCCESS);
        ck_assert_str_eq(m, "1");
        ck_assert_int_eq(okv_rotation_set_get_meta(rs0, "center_keys", &m), OKV_SUCCESS);
        ck_assert_str_eq(m, "0");
        for (int l = 0; l < c.n_layers; ++l) {
            okv_layer_rotation_t L, L0;
            ck_assert_int_eq(okv_rotation_set_get_layer(rs, l, &L), OKV_SUCCESS);
            ck_assert_int_eq(okv_rotation_set_get_layer(rs0, l, &L0), OKV_SUCCESS);
            ck_assert_ptr_nonnull(L.k_mean);
            ck_assert_ptr_null(L0.k_mean);
            /* centering changes neither the rotations nor the fixed clips */
            size_t mat = (size_t)n_rot * c.d * c.d;
            ck_assert(memcmp(L.k_rotation, L0.k_rotation, mat * 4) == 0);
            ck_assert(memcmp(L.v_rotation, L0.v_rotation, mat * 4) == 0);
            ck_assert(L.k_clip_ratio == L0.k_clip_ratio && L.v_clip_ratio == L0.v_clip_ratio);
            double worst = 0.0, big = 0.0;
            for (int r = 0; r < n_rot; ++r)
                for (int i = 0; i < c.d; ++i) {
                    double s = 0.0;
                    int cnt = 0;
                    for (int h = 0; h < c.hkv; ++h) {
                        if (gi && h != r) continue;
                        for (size_t t = 0; t < n; ++t)
                            s += c.k[(((size_t)l * n + t) * c.hkv + h) * c.d + i];
                        cnt += (int)n;
                    }
                    double want = s / cnt, got = L.k_mean[(size_t)r * c.d + i];
                    worst = fmax(worst, fabs(got - want) / fmax(fabs(want), 1.0));
                    big = fmax(big, fabs(want));
                }
            ck_assert_msg(worst <= 1e-7, "layer %d %s: k_mean off by %g (rel)", l, gi ? "head" : "layer", worst);
            ck_assert(big > 10.0); /* the data has a large common mean */
        }
        okv_rotation_set_destroy(rs);
        okv_rotation_set_destroy(rs0);
    }
    okv_calibrator_destroy(cal);
    free_data(&c);
}
END_TEST

/* k_mean covers every added token (all add calls, both value targets, BF16 input). */
START_TEST(test_k_mean_all_tokens_and_dtypes)
{
    const int d = 64, hkv = 1, hq = 2, n = 40;
    okv_calib_desc_t cd;
    okv_calib_desc_init(&cd);
    cd.n_layers = 1;
    cd.n_q_heads = hq;
    cd.n_kv_heads = hkv;
    cd.head_dim = d;
    cd.value_target = OKV_VALUE_TARGET_EXACT;
    okv_calibrator_t *cal;
    ck_assert_int_eq(okv_calibrator_create(&cd, &cal), OKV_SUCCESS);
    uint16_t *q = tu_calloc((size_t)n * hq * d, 2), *k = tu_calloc((size_t)n * d, 2), *v = tu_calloc((size_t)n * d, 2);
    double sum[64] = {0};
    tu_rng_t r = {5};
    for (int a = 0; a < 3; ++a) {
        for (int i = 0; i < n * hq * d; ++i)
            q[i] = okv_f32_to_bf16((float)tu_normal(&r));
        for (int i = 0; i < n * d; ++i) {
            k[i] = okv_f32_to_bf16((float)(tu_normal(&r) + 3.0 * a + 0.1 * (i % d)));
            v[i] = okv_f32_to_bf16((float)tu_normal(&r));
            sum[i % d] += okv_bf16_to_f32(k[i]);
        }
        ck_assert_int_eq(okv_calibrator_add(cal, 0, n - a, OKV_DTYPE_BF16, q, k, v), OKV_SUCCESS);
        for (int i = (n - a) * d; i < n * d; ++i) /* rows not added */
            sum[i % d] -= okv_bf16_to_f32(k[i]);
    }
    /* a failed add (NaN) contributes nothing */
    k[7] = 0x7fc0;
    ck_assert_int_eq(okv_calibrator_add(cal, 0, n, OKV_DTYPE_BF16, q, k, v), OKV_ERROR_NONFINITE_INPUT);
    okv_rotation_set_t *rs = finalize(cal, OKV_GRANULARITY_LAYER, 1, 0);
    okv_layer_rotation_t L;
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, 0, &L), OKV_SUCCESS);
    for (int i = 0; i < d; ++i)
        ck_assert_msg(L.k_mean[i] == (float)(sum[i] / (3 * n - 3)), "channel %d: %.9g vs %.9g", i, (double)L.k_mean[i],
                      sum[i] / (3 * n - 3));
    okv_rotation_set_destroy(rs);
    okv_calibrator_destroy(cal);
    free(q);
    free(k);
    free(v);
}
END_TEST

/* "i:k=ratio,err_fitted,err_fixed;..." -> K's error at the fixed ratio. */
static double k_err_fixed(const okv_rotation_set_t *rs, int layer)
{
    const char *rep;
    ck_assert_int_eq(okv_rotation_set_get_meta(rs, "clip_fit", &rep), OKV_SUCCESS);
    ck_assert_ptr_nonnull(rep);
    char pat[16];
    snprintf(pat, sizeof pat, "%d:k=", layer);
    const char *p = strstr(rep, pat);
    ck_assert_ptr_nonnull(p);
    double ratio, fitted, fixed;
    ck_assert_int_eq(sscanf(p + strlen(pat), "%lf,%lf,%lf", &ratio, &fitted, &fixed), 3);
    ck_assert(fitted <= fixed);
    return fixed;
}

/* Clip fitting quantises the centered keys when center_keys (that is what the cache
 * stores): on keys with a large common mean K's fitted-on error drops a lot. */
START_TEST(test_clip_fit_on_centered_keys)
{
    /* per layer: one k_mean for all KV heads, so the heads share most of their mean
     * (spread 1); per head: independent means (spread 20) */
    for (int gi = 0; gi < 2; ++gi) {
        cal_data_t c;
        make_data(&c, 2, 4, 2, 64, 2, 100, gi ? 20.0 : 1.0, 21);
        okv_calibrator_t *cal = calibrate(&c, OKV_VALUE_TARGET_REFERENCE, 128);
        okv_granularity_t gran = gi ? OKV_GRANULARITY_HEAD : OKV_GRANULARITY_LAYER;
        okv_rotation_set_t *rs = finalize(cal, gran, 1, 1), *rs0 = finalize(cal, gran, 0, 1);
        for (int l = 0; l < 2; ++l) {
            double e1 = k_err_fixed(rs, l), e0 = k_err_fixed(rs0, l);
            fprintf(stderr, "clip fit %s layer %d: K error at the fixed ratio, centered %.4f, uncentered %.4f\n",
                    gi ? "head" : "layer", l, e1, e0);
            ck_assert_msg(e1 < 0.5 * e0, "%s layer %d: centered K error %g, uncentered %g", gi ? "head" : "layer", l,
                          e1, e0);
        }
        okv_rotation_set_destroy(rs);
        okv_rotation_set_destroy(rs0);
        okv_calibrator_destroy(cal);
        free_data(&c);
    }
}
END_TEST

/* ------------------------------------------------------------------ files -- */

START_TEST(test_file_round_trip_with_k_mean)
{
    cal_data_t c;
    make_data(&c, 3, 4, 2, 64, 1, 60, 20.0, 31);
    okv_calibrator_t *cal = calibrate(&c, OKV_VALUE_TARGET_REFERENCE, 32);
    for (int gi = 0; gi < 2; ++gi) {
        okv_rotation_set_t *rs = finalize(cal, gi ? OKV_GRANULARITY_HEAD : OKV_GRANULARITY_LAYER, 1, 0), *back = NULL;
        unsigned char *buf, *buf2;
        size_t len, len2;
        ck_assert_int_eq(okv_st_save_memory(rs, &buf, &len), OKV_SUCCESS);
        char name[32];
        snprintf(name, sizeof name, "\"layer.2.k_mean\"");
        ck_assert_ptr_nonnull(find_bytes(buf, len, name, strlen(name)));
        ck_assert_int_eq(okv_rotation_set_load_memory(buf, len, &back), OKV_SUCCESS);
        int n_rot = gi ? 2 : 1;
        for (int l = 0; l < 3; ++l) {
            okv_layer_rotation_t a, b;
            okv_rotation_set_get_layer(rs, l, &a);
            okv_rotation_set_get_layer(back, l, &b);
            ck_assert_ptr_nonnull(b.k_mean);
            ck_assert(memcmp(a.k_mean, b.k_mean, (size_t)n_rot * 64 * 4) == 0);
        }
        const char *m;
        okv_rotation_set_get_meta(back, "center_keys", &m);
        ck_assert_str_eq(m, "1");
        ck_assert_int_eq(okv_st_save_memory(back, &buf2, &len2), OKV_SUCCESS);
        ck_assert_uint_eq(len, len2);
        ck_assert(memcmp(buf, buf2, len) == 0);
        free(buf);
        free(buf2);
        okv_rotation_set_destroy(rs);
        okv_rotation_set_destroy(back);
    }
    /* center_keys = 0: no k_mean tensor at all (reference-compatible file) */
    okv_rotation_set_t *rs0 = finalize(cal, OKV_GRANULARITY_LAYER, 0, 0);
    unsigned char *buf;
    size_t len;
    ck_assert_int_eq(okv_st_save_memory(rs0, &buf, &len), OKV_SUCCESS);
    ck_assert_ptr_null(find_bytes(buf, len, "k_mean", 6));
    free(buf);
    okv_rotation_set_destroy(rs0);
    okv_calibrator_destroy(cal);
    free_data(&c);
}
END_TEST

static unsigned char *craft(const char *header, const float *data, size_t n_floats, size_t *len)
{
    size_t hl = strlen(header);
    *len = 8 + hl + 4 * n_floats;
    unsigned char *b = malloc(*len);
    for (int i = 0; i < 8; ++i)
        b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    memcpy(b + 8 + hl, data, 4 * n_floats);
    return b;
}

static okv_status_t load_header(const char *header, const float *data, size_t n_floats, okv_rotation_set_t **out)
{
    size_t len;
    unsigned char *b = craft(header, data, n_floats, &len);
    okv_rotation_set_t *rs = NULL;
    okv_status_t st = okv_rotation_set_load_memory(b, len, &rs);
    free(b);
    if (out)
        *out = rs;
    else
        okv_rotation_set_destroy(rs);
    return st;
}

#define META "\"__metadata__\":{\"head_dim\":\"64\",\"n_layers\":\"1\"}"
#define ROTS                                                                                                           \
    "\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[0,16384]},"                         \
    "\"layer.0.v_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[16384,32768]},"                     \
    "\"layer.0.k_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32768,32772]},"                             \
    "\"layer.0.v_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32772,32776]}"

START_TEST(test_file_k_mean_optional_and_strict)
{
    size_t nf = 2 * 64 * 64 + 2 + 64;
    float *f = calloc(nf + 64, sizeof(float));
    for (int i = 0; i < 64; ++i)
        f[i * 64 + i] = f[64 * 64 + i * 64 + i] = 1.0f;
    f[2 * 64 * 64] = 0.96f;
    f[2 * 64 * 64 + 1] = 0.92f;
    for (int i = 0; i < 64; ++i)
        f[2 * 64 * 64 + 2 + i] = 0.5f * (float)i - 3.25f;
    okv_rotation_set_t *rs = NULL;
    okv_layer_rotation_t L;
    /* without k_mean (files written before centering): loads, k_mean NULL */
    ck_assert_int_eq(load_header("{" META "," ROTS "}", f, nf - 64, &rs), OKV_SUCCESS);
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, 0, &L), OKV_SUCCESS);
    ck_assert_ptr_null(L.k_mean);
    okv_rotation_set_destroy(rs);
    /* with k_mean [d] */
    const char *good = "{" META "," ROTS ",\"layer.0.k_mean\":{\"dtype\":\"F32\",\"shape\":[64],"
                       "\"data_offsets\":[32776,33032]}}";
    ck_assert_int_eq(load_header(good, f, nf, &rs), OKV_SUCCESS);
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, 0, &L), OKV_SUCCESS);
    ck_assert_ptr_nonnull(L.k_mean);
    ck_assert(memcmp(L.k_mean, f + 2 * 64 * 64 + 2, 64 * 4) == 0);
    okv_rotation_set_destroy(rs);
    static const char *bad[] = {
        /* [1, d] for a per-layer file, [d + 1], [d / 2], scalar, 3-D */
        "{" META "," ROTS ",\"layer.0.k_mean\":{\"dtype\":\"F32\",\"shape\":[1,64],\"data_offsets\":[32776,33032]}}",
        "{" META "," ROTS ",\"layer.0.k_mean\":{\"dtype\":\"F32\",\"shape\":[65],\"data_offsets\":[32776,33036]}}",
        "{" META "," ROTS ",\"layer.0.k_mean\":{\"dtype\":\"F32\",\"shape\":[32],\"data_offsets\":[32776,32904]}}",
        "{" META "," ROTS ",\"layer.0.k_mean\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[32776,32780]}}",
        "{" META "," ROTS ",\"layer.0.k_mean\":{\"dtype\":\"F32\",\"shape\":[1,1,64],\"data_offsets\":[32776,33032]}}",
        /* wrong dtype, byte count disagreeing with the shape, gap, overlap, past the end */
        "{" META "," ROTS ",\"layer.0.k_mean\":{\"dtype\":\"F16\",\"shape\":[64],\"data_offsets\":[32776,33032]}}",
        "{" META "," ROTS ",\"layer.0.k_mean\":{\"dtype\":\"F32\",\"shape\":[64],\"data_offsets\":[32776,33028]}}",
        "{" META "," ROTS ",\"layer.0.k_mean\":{\"dtype\":\"F32\",\"shape\":[63],\"data_offsets\":[32780,33032]}}",
        "{" META "," ROTS ",\"layer.0.k_mean\":{\"dtype\":\"F32\",\"shape\":[64],\"data_offsets\":[32772,33028]}}",
        "{" META "," ROTS ",\"layer.0.k_mean\":{\"dtype\":\"F32\",\"shape\":[64],\"data_offsets\":[32780,33036]}}",
        /* layer out of range, duplicate, misspelt */
        "{" META "," ROTS ",\"layer.1.k_mean\":{\"dtype\":\"F32\",\"shape\":[64],\"data_offsets\":[32776,33032]}}",
        "{" META "," ROTS ",\"layer.0.k_mean\":{\"dtype\":\"F32\",\"shape\":[64],\"data_offsets\":[32776,33032]},"
        "\"layer.0.k_mean\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[33032,33032]}}",
        "{" META "," ROTS ",\"layer.0.k_means\":{\"dtype\":\"F32\",\"shape\":[64],\"data_offsets\":[32776,33032]}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        okv_status_t st = load_header(bad[i], f, nf, NULL);
        ck_assert_msg(st == OKV_ERROR_CORRUPT_FILE, "case %zu: status %d (%s)", i, (int)st, okv_rotation_last_error());
        ck_assert(okv_rotation_last_error()[0] != '\0');
    }
    /* non-finite k_mean */
    float keep = f[2 * 64 * 64 + 2 + 17];
    f[2 * 64 * 64 + 2 + 17] = NAN;
    ck_assert_int_eq(load_header(good, f, nf, NULL), OKV_ERROR_CORRUPT_FILE);
    ck_assert_ptr_nonnull(strstr(okv_rotation_last_error(), "k_mean"));
    f[2 * 64 * 64 + 2 + 17] = INFINITY;
    ck_assert_int_eq(load_header(good, f, nf, NULL), OKV_ERROR_CORRUPT_FILE);
    f[2 * 64 * 64 + 2 + 17] = keep;
    ck_assert_int_eq(load_header(good, f, nf, NULL), OKV_SUCCESS);
    free(f);
}
END_TEST

/* Per-head file: k_mean must be [n_rot, d]. */
START_TEST(test_file_k_mean_per_head_shape)
{
    okv_rotation_set_t *rs;
    ck_assert_int_eq(okv_rotation_set_create(1, 64, 3, &rs), OKV_SUCCESS);
    okv_layer_rotation_t L;
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, 0, &L), OKV_SUCCESS);
    float mu[3 * 64];
    for (int i = 0; i < 3 * 64; ++i)
        mu[i] = (float)i / 7.0f;
    L.k_mean = mu;
    ck_assert_int_eq(okv_rotation_set_set_layer(rs, 0, &L), OKV_SUCCESS);
    unsigned char *buf;
    size_t len;
    ck_assert_int_eq(okv_st_save_memory(rs, &buf, &len), OKV_SUCCESS);
    ck_assert_ptr_nonnull(find_bytes(buf, len, "\"layer.0.k_mean\":{\"dtype\":\"F32\",\"shape\":[3,64]", 46));
    okv_rotation_set_t *back;
    ck_assert_int_eq(okv_rotation_set_load_memory(buf, len, &back), OKV_SUCCESS);
    ck_assert_int_eq(okv_rotation_set_get_layer(back, 0, &L), OKV_SUCCESS);
    ck_assert(memcmp(L.k_mean, mu, sizeof mu) == 0);
    okv_rotation_set_destroy(back);
    /* [d] in a per-head file: corrupt (same byte count trick: shape [192] = 3*64) */
    char *h = (char *)find_bytes(buf, len, "[3,64]", 6);
    ck_assert_ptr_nonnull(h);
    memcpy(h, "[192] ", 6); /* JSON whitespace keeps the header length */
    ck_assert_int_eq(okv_rotation_set_load_memory(buf, len, &back), OKV_ERROR_CORRUPT_FILE);
    ck_assert_ptr_nonnull(strstr(okv_rotation_last_error(), "k_mean"));
    free(buf);
    okv_rotation_set_destroy(rs);
}
END_TEST

START_TEST(test_set_layer_k_mean)
{
    okv_rotation_set_t *rs;
    ck_assert_int_eq(okv_rotation_set_create(2, 64, 1, &rs), OKV_SUCCESS);
    okv_layer_rotation_t L;
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, 0, &L), OKV_SUCCESS);
    ck_assert_ptr_null(L.k_mean); /* default */
    float mu[64];
    for (int i = 0; i < 64; ++i)
        mu[i] = 1.0f + (float)i;
    L.k_mean = mu;
    ck_assert_int_eq(okv_rotation_set_set_layer(rs, 0, &L), OKV_SUCCESS);
    mu[0] = -5.0f; /* copied, not referenced */
    okv_layer_rotation_t G;
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, 0, &G), OKV_SUCCESS);
    ck_assert_ptr_nonnull(G.k_mean);
    ck_assert(G.k_mean != mu && G.k_mean[0] == 1.0f && G.k_mean[63] == 64.0f);
    /* aliasing: set a layer from its own get_layer view, and another layer from it */
    ck_assert_int_eq(okv_rotation_set_set_layer(rs, 0, &G), OKV_SUCCESS);
    ck_assert_int_eq(okv_rotation_set_set_layer(rs, 1, &G), OKV_SUCCESS);
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, 1, &L), OKV_SUCCESS);
    ck_assert(L.k_mean && L.k_mean[0] == 1.0f && L.k_mean != G.k_mean);
    /* non-finite: refused, layer unchanged */
    mu[0] = NAN;
    L.k_mean = mu;
    ck_assert_int_eq(okv_rotation_set_set_layer(rs, 1, &L), OKV_ERROR_NONFINITE_INPUT);
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, 1, &L), OKV_SUCCESS);
    ck_assert(L.k_mean[0] == 1.0f);
    /* NULL clears */
    L.k_mean = NULL;
    ck_assert_int_eq(okv_rotation_set_set_layer(rs, 1, &L), OKV_SUCCESS);
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, 1, &L), OKV_SUCCESS);
    ck_assert_ptr_null(L.k_mean);
    okv_rotation_set_destroy(rs);
}
END_TEST

/* ------------------------------------------------- end to end (ref backend) -- */

typedef struct api_run {
    okv_context_t *ctx;
    tu_geom_t g;
    int32_t batch, max_int2;
} api_run_t;

#define MK(name, ptr, bytes)                                                                                           \
    okv_buffer_t *name = NULL;                                                                                         \
    ck_assert_int_eq(okv_buffer_create(R->ctx, (bytes), &name), OKV_SUCCESS);                                          \
    ck_assert_int_eq(okv_buffer_write(R->ctx, name, 0, (ptr), (bytes)), OKV_SUCCESS)

/* A fresh cache; append n rows per sequence (k, v [batch * n, Hkv, d] f32) with the
 * per-layer rotations and optional k_bias [d]; decode q (f32 [batch, Hq, d], already
 * rotated by R_K) with unrotate_output; out f32 [batch, Hq, d], lse [batch, Hq]. */
static void api_append_decode(api_run_t *R, const float *k, const float *v, int32_t n, const float *krot,
                              const float *vrot, const float *k_bias, float kclip, float vclip, const float *q,
                              float *out, float *lse, int32_t *int2_len)
{
    const tu_geom_t *g = &R->g;
    tu_cache_t host;
    tu_cache_init(&host, g, R->batch, R->max_int2, 1, 99);
    size_t i2b = host.int2_page_bytes * (size_t)host.int2_pool_pages,
           bfb = host.bf16_page_bytes * (size_t)host.bf16_pool_pages;
    size_t ptrb = sizeof(int32_t) * ((size_t)R->batch + 1), lenb = sizeof(int32_t) * (size_t)R->batch;
    MK(b_i2, host.int2_pool, i2b);
    MK(b_bf, host.bf16_pool, bfb);
    MK(b_i2ptr, host.int2_indptr, ptrb);
    MK(b_i2idx, host.int2_indices, sizeof(int32_t) * (size_t)R->batch * host.int2_pages_per_seq);
    MK(b_bfptr, host.bf16_indptr, ptrb);
    MK(b_bfidx, host.bf16_indices, sizeof(int32_t) * (size_t)R->batch * host.bf16_pages_per_seq);
    MK(b_len, host.seq_lens, lenb);
    MK(b_i2len, host.int2_lens, lenb);
    okv_cache_view_t view;
    memset(&view, 0, sizeof view);
    view.desc = &host.desc;
    view.batch = R->batch;
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

    size_t nel = (size_t)R->batch * n * g->hkv * g->d;
    int32_t *indptr = tu_calloc((size_t)R->batch + 1, sizeof(int32_t));
    for (int32_t b = 0; b <= R->batch; ++b)
        indptr[b] = b * n;
    MK(b_k, k, nel * 4);
    MK(b_v, v, nel * 4);
    MK(b_kr, krot, (size_t)g->d * g->d * 4);
    MK(b_vr, vrot, (size_t)g->d * g->d * 4);
    MK(b_ptr, indptr, ptrb);
    okv_buffer_t *b_bias = NULL;
    okv_append_params_t ap;
    okv_append_params_init(&ap);
    ap.cache = view;
    ap.k = (okv_ref_t){b_k, 0};
    ap.v = (okv_ref_t){b_v, 0};
    ap.kv_dtype = OKV_DTYPE_F32;
    ap.append_indptr = (okv_ref_t){b_ptr, 0};
    ap.n_rows = R->batch * n;
    ap.k_rotation = (okv_ref_t){b_kr, 0};
    ap.v_rotation = (okv_ref_t){b_vr, 0};
    ap.k_clip_ratio = kclip;
    ap.v_clip_ratio = vclip;
    if (k_bias) {
        ck_assert_int_eq(okv_buffer_create(R->ctx, (size_t)g->d * 4, &b_bias), OKV_SUCCESS);
        ck_assert_int_eq(okv_buffer_write(R->ctx, b_bias, 0, k_bias, (size_t)g->d * 4), OKV_SUCCESS);
        ap.k_bias = (okv_ref_t){b_bias, 0};
    }
    ck_assert_msg(okv_append(R->ctx, &ap) == OKV_SUCCESS, "%s", okv_context_last_error(R->ctx));
    int32_t *i2lens = tu_calloc((size_t)R->batch, sizeof(int32_t));
    ck_assert_int_eq(okv_buffer_read(R->ctx, b_i2len, 0, i2lens, lenb), OKV_SUCCESS);
    *int2_len = i2lens[0];

    size_t nq = (size_t)R->batch * g->hq * g->d;
    MK(b_q, q, nq * 4);
    MK(b_o, out, nq * 4);
    MK(b_lse, lse, (size_t)R->batch * g->hq * 4);
    okv_decode_params_t dp;
    okv_decode_params_init(&dp);
    dp.cache = view;
    dp.q = (okv_ref_t){b_q, 0};
    dp.q_dtype = OKV_DTYPE_F32;
    dp.out = (okv_ref_t){b_o, 0};
    dp.out_dtype = OKV_DTYPE_F32;
    dp.lse = (okv_ref_t){b_lse, 0};
    dp.max_seq_len = n;
    dp.num_splits = 3;
    dp.v_rotation = (okv_ref_t){b_vr, 0};
    dp.unrotate_output = 1;
    ck_assert_msg(okv_decode_attention(R->ctx, &dp) == OKV_SUCCESS, "%s", okv_context_last_error(R->ctx));
    ck_assert_int_eq(okv_buffer_read(R->ctx, b_o, 0, out, nq * 4), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_read(R->ctx, b_lse, 0, lse, (size_t)R->batch * g->hq * 4), OKV_SUCCESS);

    okv_buffer_t *all[] = {b_i2, b_bf, b_i2ptr, b_i2idx, b_bfptr, b_bfidx, b_len, b_i2len,
                           b_k,  b_v,  b_kr,    b_vr,    b_ptr,   b_q,     b_o,   b_lse};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        okv_buffer_destroy(all[i]);
    okv_buffer_destroy(b_bias);
    free(indptr);
    free(i2lens);
    tu_cache_free(&host);
}
#undef MK

static okv_context_t *ref_context(void)
{
    okv_context_desc_t cd;
    okv_context_desc_init(&cd);
    cd.backend = "ref";
    okv_context_t *ctx = NULL;
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_SUCCESS);
    return ctx;
}

/* float64 attention of query head i of sequence b over the raw (unrotated) rows. */
static void attention_f64(const float *q, const float *k, const float *v, int n, int hq, int hkv, int d, int b, int i,
                          double *out)
{
    int h = i / (hq / hkv);
    double *s = tu_calloc((size_t)n, sizeof(double)), m = -INFINITY, z = 0.0;
    const float *qr = q + ((size_t)b * hq + i) * d;
    for (int t = 0; t < n; ++t) {
        const float *kr = k + (((size_t)b * n + t) * hkv + h) * d;
        double dot = 0.0;
        for (int c = 0; c < d; ++c)
            dot += (double)qr[c] * kr[c];
        s[t] = dot / sqrt((double)d);
        m = fmax(m, s[t]);
    }
    for (int c = 0; c < d; ++c)
        out[c] = 0.0;
    for (int t = 0; t < n; ++t) {
        double e = exp(s[t] - m);
        z += e;
        const float *vr = v + (((size_t)b * n + t) * hkv + h) * d;
        for (int c = 0; c < d; ++c)
            out[c] += e * vr[c];
    }
    for (int c = 0; c < d; ++c)
        out[c] /= z;
    free(s);
}

/* ||o - ref||_F / ||ref||_F over all sequences and heads. */
static double rel_err_f64(const float *o, const float *q, const float *k, const float *v, int n, int batch, int hq,
                          int hkv, int d)
{
    double e2 = 0.0, r2 = 0.0, ref[256];
    for (int b = 0; b < batch; ++b)
        for (int i = 0; i < hq; ++i) {
            attention_f64(q, k, v, n, hq, hkv, d, b, i, ref);
            for (int c = 0; c < d; ++c) {
                double e = (double)o[((size_t)b * hq + i) * d + c] - ref[c];
                e2 += e * e;
                r2 += ref[c] * ref[c];
            }
        }
    return sqrt(e2 / r2);
}

/* q R (one d x d rotation for every head). */
static void rotate_q(const float *q, const float *R, int rows, int d, float *out)
{
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < d; ++c) {
            double s = 0.0;
            for (int a = 0; a < d; ++a)
                s += (double)q[(size_t)r * d + a] * R[(size_t)a * d + c];
            out[(size_t)r * d + c] = (float)s;
        }
}

/* Calibrate on keys N(0,1) + 20 mu, then append the evaluation keys (same
 * distribution) with k_bias = k_mean and without; decode error vs float64. */
START_TEST(test_e2e_centering_lowers_int2_error)
{
    const int d = 64, hq = 4, hkv = 1, batch = 2, n = 320;
    cal_data_t c;
    make_data(&c, 1, hq, hkv, d, 4, 128, 0.0, 41);
    okv_calibrator_t *cal = calibrate(&c, OKV_VALUE_TARGET_REFERENCE, 0);
    okv_rotation_set_t *rs = finalize(cal, OKV_GRANULARITY_LAYER, 1, 0);
    okv_layer_rotation_t L;
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, 0, &L), OKV_SUCCESS);
    ck_assert_ptr_nonnull(L.k_mean);

    /* evaluation data: fresh noise around the calibration data's mean direction */
    tu_rng_t r = {4242};
    size_t nel = (size_t)batch * n * hkv * d;
    float *k = tu_calloc(nel, 4), *v = tu_calloc(nel, 4), *q = tu_calloc((size_t)batch * hq * d, 4),
          *qr = tu_calloc((size_t)batch * hq * d, 4);
    tu_fill_normal(&r, k, nel, 1.0);
    tu_fill_normal(&r, v, nel, 1.0);
    /* the calibration mean: c.k rows are N(0,1) + 20 mu */
    double mu[64] = {0};
    for (int t = 0; t < 512; ++t)
        for (int i = 0; i < d; ++i)
            mu[i] += c.k[(size_t)t * d + i] / 512.0;
    for (size_t t = 0; t < (size_t)batch * n; ++t)
        for (int i = 0; i < d; ++i)
            k[t * d + i] += (float)mu[i];
    /* queries that make the softmax selective: aligned with some keys' noise */
    tu_fill_normal(&r, q, (size_t)batch * hq * d, 0.5);
    for (int b = 0; b < batch; ++b)
        for (int i = 0; i < hq; ++i)
            for (int cc = 0; cc < d; ++cc)
                q[((size_t)b * hq + i) * d + cc] += 1.5f * (k[((size_t)b * n + 37 * (i + 1)) * d + cc] - (float)mu[cc]);
    rotate_q(q, L.k_rotation, batch * hq, d, qr);

    api_run_t R = {
        ref_context(), {hq, hkv, d, 0, OKV_DTYPE_F16, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 4, 16, 8, 16}, batch, n};
    float *o_c = tu_calloc((size_t)batch * hq * d, 4), *o_u = tu_calloc((size_t)batch * hq * d, 4),
          *lse_c = tu_calloc((size_t)batch * hq, 4), *lse_u = tu_calloc((size_t)batch * hq, 4);
    int32_t i2c, i2u;
    api_append_decode(&R, k, v, n, L.k_rotation, L.v_rotation, L.k_mean, L.k_clip_ratio, L.v_clip_ratio, qr, o_c, lse_c,
                      &i2c);
    api_append_decode(&R, k, v, n, L.k_rotation, L.v_rotation, NULL, L.k_clip_ratio, L.v_clip_ratio, qr, o_u, lse_u,
                      &i2u);
    ck_assert_int_eq(i2c, i2u);
    ck_assert_int_ge(i2c, n - 4 - 16 - 8); /* nearly all rows in the INT2 tier */
    double ec = rel_err_f64(o_c, q, k, v, n, batch, hq, hkv, d), eu = rel_err_f64(o_u, q, k, v, n, batch, hq, hkv, d);
    fprintf(stderr, "e2e INT2 (%d of %d rows): rel err centered %.4f, uncentered %.4f\n", i2c, n, ec, eu);
    ck_assert_msg(ec < 0.5 * eu, "centered %g, uncentered %g", ec, eu);
    ck_assert(ec < 0.5);

    okv_context_destroy(R.ctx);
    okv_rotation_set_destroy(rs);
    okv_calibrator_destroy(cal);
    free_data(&c);
    free(k);
    free(v);
    free(q);
    free(qr);
    free(o_c);
    free(o_u);
    free(lse_c);
    free(lse_u);
}
END_TEST

/* Every row in the BF16 tier: centering must not change the attention output
 * (softmax invariance). Keys, mean and queries sit on coarse dyadic grids so that
 * k, k - mean and every logit are exact in bf16/f32; the outputs then agree to float
 * rounding of the softmax and lse moves by exactly q.mean / sqrt(d). */
START_TEST(test_e2e_bf16_tier_invariance)
{
    const int d = 64, hq = 4, hkv = 1, batch = 2, n = 18;
    tu_rng_t r = {777};
    size_t nel = (size_t)batch * n * hkv * d;
    float *k = tu_calloc(nel, 4), *v = tu_calloc(nel, 4), *q = tu_calloc((size_t)batch * hq * d, 4);
    float mu[64], I[64 * 64];
    tu_identity(d, I);
    for (int i = 0; i < d; ++i)
        mu[i] = 16.0f * (float)((int)(tu_uniform(&r) * 9.0) - 4); /* multiples of 16 in [-64, 64] */
    for (size_t t = 0; t < (size_t)batch * n; ++t)
        for (int i = 0; i < d; ++i)
            k[t * d + i] = (float)((int)(tu_uniform(&r) * 17.0) - 8) + mu[i]; /* integers, |k| <= 72 */
    for (size_t i = 0; i < nel; ++i)
        v[i] = okv_bf16_to_f32(okv_f32_to_bf16((float)tu_normal(&r)));
    for (size_t i = 0; i < (size_t)batch * hq * d; ++i)
        q[i] = 0.25f * (float)((int)(tu_uniform(&r) * 9.0) - 4); /* quarters in [-1, 1] */
    api_run_t R = {
        ref_context(), {hq, hkv, d, 0, OKV_DTYPE_F16, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 4, 16, 8, 16}, batch, 16};
    float *o_c = tu_calloc((size_t)batch * hq * d, 4), *o_u = tu_calloc((size_t)batch * hq * d, 4),
          *lse_c = tu_calloc((size_t)batch * hq, 4), *lse_u = tu_calloc((size_t)batch * hq, 4);
    int32_t i2c, i2u;
    api_append_decode(&R, k, v, n, I, I, mu, 0.96f, 0.92f, q, o_c, lse_c, &i2c);
    api_append_decode(&R, k, v, n, I, I, NULL, 0.96f, 0.92f, q, o_u, lse_u, &i2u);
    ck_assert_int_eq(i2c, 0);
    ck_assert_int_eq(i2u, 0);
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < (size_t)batch * hq * d; ++i) {
        num = fmax(num, fabs((double)o_c[i] - o_u[i]));
        den = fmax(den, fabs((double)o_u[i]));
    }
    fprintf(stderr, "e2e BF16 tier: max |o_centered - o_raw| / max |o| = %.3g\n", num / den);
    ck_assert_msg(num <= 1e-5 * den, "centering changed the BF16-tier output: %g of %g", num, den);
    /* the outputs are real attention: close to float64 */
    ck_assert(rel_err_f64(o_u, q, k, v, n, batch, hq, hkv, d) < 1e-5);
    for (int b = 0; b < batch; ++b)
        for (int i = 0; i < hq; ++i) {
            double qm = 0.0;
            for (int cc = 0; cc < d; ++cc)
                qm += (double)q[((size_t)b * hq + i) * d + cc] * mu[cc];
            double shift = qm / sqrt((double)d), got = (double)lse_u[b * hq + i] - lse_c[b * hq + i];
            ck_assert_msg(fabs(got - shift) <= 1e-5 * fmax(1.0, fabs(lse_u[b * hq + i])),
                          "lse shift %g, q.mu/sqrt(d) %g", got, shift);
        }
    okv_context_destroy(R.ctx);
    free(k);
    free(v);
    free(q);
    free(o_c);
    free(o_u);
    free(lse_c);
    free(lse_u);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("calib_center");
    TCase *tc = tcase_create("center");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_k_mean_matches_direct_mean);
    tcase_add_test(tc, test_k_mean_all_tokens_and_dtypes);
    tcase_add_test(tc, test_clip_fit_on_centered_keys);
    tcase_add_test(tc, test_file_round_trip_with_k_mean);
    tcase_add_test(tc, test_file_k_mean_optional_and_strict);
    tcase_add_test(tc, test_file_k_mean_per_head_shape);
    tcase_add_test(tc, test_set_layer_k_mean);
    tcase_add_test(tc, test_e2e_centering_lowers_int2_error);
    tcase_add_test(tc, test_e2e_bf16_tier_invariance);
    suite_add_tcase(s, tc);
    return okv_check_run(s);
}
