/* test_calib_scale.c - query-energy key scaling (okv_calib_options_t.scale_keys): the
 * calibrator's pair R_K = U D H P / q_rotation = U D^-1 H P (logits unchanged, per layer
 * and per KV head), which methods get it, the INT2 logit error it removes when queries
 * and keys live in different directions, options structs from before the field, and
 * q_rotation in rotation sets and files (bit-exact round trip, a broken pair rejected). */
#include "calib/calibrator_impl.h"
#include "calib/safetensors.h"
#include "oscarkv/oscarkv.h"
#include "test_ref_util.h"

#include <check.h>

#include "okv_check_run.h"
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NL = 2, HQ = 4, HKV = 2, D = 64, NTOK = 600 };

typedef struct data {
    float *q, *k, *v; /* [NL][NTOK][H][D] */
} data_t;

/* Queries read mostly channels [0, D/2) (x 0.05 on the rest); keys carry large energy
 * in [D/2, D) (x 6) plus a common mean: the case an orthogonal rotation cannot help. */
static data_t make_data(uint64_t seed)
{
    data_t s;
    size_t nq = (size_t)NL * NTOK * HQ * D, nk = (size_t)NL * NTOK * HKV * D;
    s.q = tu_calloc(nq, sizeof(float));
    s.k = tu_calloc(nk, sizeof(float));
    s.v = tu_calloc(nk, sizeof(float));
    tu_rng_t r = {seed};
    tu_fill_normal(&r, s.q, nq, 1.0);
    tu_fill_normal(&r, s.k, nk, 1.0);
    tu_fill_normal(&r, s.v, nk, 1.0);
    for (size_t i = 0; i < nq; ++i)
        if (i % D >= D / 2) s.q[i] *= 0.05f;
    for (size_t i = 0; i < nk; ++i)
        s.k[i] = (i % D >= D / 2 ? 6.0f * s.k[i] : s.k[i]) + (float)(i % 7) - 3.0f;
    return s;
}

static void free_data(data_t *s)
{
    free(s->q);
    free(s->k);
    free(s->v);
}

static okv_calibrator_t *calibrate(const data_t *s)
{
    okv_calib_desc_t cd;
    okv_calib_desc_init(&cd);
    cd.n_layers = NL;
    cd.n_q_heads = HQ;
    cd.n_kv_heads = HKV;
    cd.head_dim = D;
    okv_calibrator_t *cal = NULL;
    ck_assert_int_eq(okv_calibrator_create(&cd, &cal), OKV_SUCCESS);
    for (int l = 0; l < NL; ++l)
        ck_assert_int_eq(okv_calibrator_add(cal, l, NTOK, OKV_DTYPE_F32, s->q + (size_t)l * NTOK * HQ * D,
                                            s->k + (size_t)l * NTOK * HKV * D, s->v + (size_t)l * NTOK * HKV * D),
                         OKV_SUCCESS);
    return cal;
}

static okv_rotation_set_t *finalize(okv_calibrator_t *cal, okv_rotation_method_t m, okv_granularity_t g, int scale)
{
    okv_calib_options_t o;
    okv_calib_options_init(&o);
    ck_assert_int_eq(o.scale_keys, 1); /* the default */
    o.method = m;
    o.granularity = g;
    o.scale_keys = scale;
    okv_rotation_set_t *rs = NULL;
    ck_assert_msg(okv_calibrator_finalize(cal, &o, &rs) == OKV_SUCCESS, "%s", okv_calibrator_last_error(cal));
    return rs;
}

static const char *meta(const okv_rotation_set_t *rs, const char *key)
{
    const char *v = NULL;
    ck_assert_int_eq(okv_rotation_set_get_meta(rs, key, &v), OKV_SUCCESS);
    ck_assert_ptr_nonnull(v);
    return v;
}

/* max |R Q^T - I| in double */
static double pair_err(const float *R, const float *Q)
{
    double worst = 0.0;
    for (int i = 0; i < D; ++i)
        for (int j = 0; j < D; ++j) {
            double s = 0.0;
            for (int k = 0; k < D; ++k)
                s += (double)R[i * D + k] * (double)Q[j * D + k];
            worst = fmax(worst, fabs(s - (i == j)));
        }
    return worst;
}

static void row_times(const float *x, const float *M, double *out)
{
    for (int c = 0; c < D; ++c) {
        out[c] = 0.0;
        for (int a = 0; a < D; ++a)
            out[c] += (double)x[a] * (double)M[a * D + c];
    }
}

START_TEST(test_pair_preserves_logits)
{
    data_t s = make_data(3);
    okv_calibrator_t *cal = calibrate(&s);
    for (int gi = 0; gi < 2; ++gi) {
        okv_granularity_t gran = gi ? OKV_GRANULARITY_HEAD : OKV_GRANULARITY_LAYER;
        int n_rot = gi ? HKV : 1;
        okv_rotation_set_t *rs = finalize(cal, OKV_ROT_OSCAR, gran, 1);
        ck_assert_str_eq(meta(rs, "key_scaling"), "query_energy");
        ck_assert_str_eq(meta(rs, "format_version"), "2");
        for (int l = 0; l < NL; ++l) {
            okv_layer_rotation_t L;
            ck_assert_int_eq(okv_rotation_set_get_layer(rs, l, &L), OKV_SUCCESS);
            ck_assert_ptr_nonnull(L.q_rotation);
            for (int r = 0; r < n_rot; ++r) {
                const float *R = L.k_rotation + (size_t)r * D * D, *Q = L.q_rotation + (size_t)r * D * D;
                ck_assert_msg(pair_err(R, Q) < 1e-4, "layer %d rot %d: %g", l, r, pair_err(R, Q));
                /* the keys' matrix really is scaled (not orthogonal) */
                double rr = 0.0;
                for (int k = 0; k < D; ++k)
                    rr += (double)R[k] * R[k]; /* |row 0|^2: 1 for an orthogonal R */
                double qq = 0.0;
                for (int k = 0; k < D; ++k)
                    qq += (double)Q[k] * Q[k];
                ck_assert(fabs(rr - 1.0) > 1e-2 || fabs(qq - 1.0) > 1e-2);
                /* (q Q) . (k R) = q . k on calibration rows of this head */
                for (int t = 0; t < 5; ++t) {
                    const float *q = s.q + (((size_t)l * NTOK + t) * HQ + r * (HQ / HKV)) * D;
                    const float *k = s.k + (((size_t)l * NTOK + 50 + t) * HKV + r) * D;
                    double qr[D], kr[D], a = 0.0, b = 0.0;
                    row_times(q, Q, qr);
                    row_times(k, R, kr);
                    for (int c = 0; c < D; ++c) {
                        a += qr[c] * kr[c];
                        b += (double)q[c] * k[c];
                    }
                    ck_assert_double_eq_tol(a, b, 1e-4 * (1.0 + fabs(b)));
                }
            }
            /* values stay orthogonal */
            ck_assert(pair_err(L.v_rotation, L.v_rotation) < 1e-5);
        }
        okv_rotation_set_destroy(rs);
    }
    /* scale_keys = 0 and methods without C_Q eigenvectors: no q_rotation */
    const okv_rotation_method_t none_of[] = {OKV_ROT_NONE, OKV_ROT_HADAMARD, OKV_ROT_PLAIN_COV};
    for (int i = 0; i < 4; ++i) {
        okv_rotation_set_t *rs =
            i == 3 ? finalize(cal, OKV_ROT_OSCAR, OKV_GRANULARITY_LAYER, 0) : finalize(cal, none_of[i], 0, 1);
        okv_layer_rotation_t L;
        ck_assert_int_eq(okv_rotation_set_get_layer(rs, 0, &L), OKV_SUCCESS);
        ck_assert_ptr_null(L.q_rotation);
        ck_assert_str_eq(meta(rs, "key_scaling"), "none");
        ck_assert_str_eq(meta(rs, "format_version"), "1");
        okv_rotation_set_destroy(rs);
    }
    okv_rotation_set_t *u = finalize(cal, OKV_ROT_U_ONLY, OKV_GRANULARITY_LAYER, 1);
    ck_assert_str_eq(meta(u, "key_scaling"), "query_energy");
    okv_rotation_set_destroy(u);
    okv_calibrator_destroy(cal);
    free_data(&s);
}
END_TEST

/* Relative error of the logits q.k when the keys are clipped + INT2-quantised in the
 * rotated basis (centered by k_mean, as the cache stores them), on fresh rows. */
static double int2_logit_err(const okv_rotation_set_t *rs, const data_t *s)
{
    okv_layer_rotation_t L;
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, 0, &L), OKV_SUCCESS);
    const float *Q = L.q_rotation ? L.q_rotation : L.k_rotation;
    okv_cache_desc_t quant;
    okv_cache_desc_init(&quant);
    double err = 0.0, ref = 0.0;
    for (int t = 0; t < 200; ++t) {
        float kc[D], kr[D];
        double tmp[D];
        const float *k = s->k + (size_t)t * HKV * D; /* layer 0, KV head 0 */
        for (int c = 0; c < D; ++c)
            kc[c] = k[c] - (L.k_mean ? L.k_mean[c] : 0.0f);
        row_times(kc, L.k_rotation, tmp);
        for (int c = 0; c < D; ++c)
            kr[c] = (float)tmp[c];
        float kq[D];
        memcpy(kq, kr, sizeof kq);
        ck_assert(okv_quant_row_roundtrip(kq, D, D, L.k_clip_ratio, &quant));
        for (int j = 0; j < 20; ++j) {
            const float *q = s->q + (size_t)(300 + j) * HQ * D;
            double qr[D], e = 0.0, x = 0.0;
            row_times(q, Q, qr);
            for (int c = 0; c < D; ++c) {
                e += qr[c] * ((double)kq[c] - kr[c]);
                x += qr[c] * kr[c];
            }
            err += e * e;
            ref += x * x;
        }
    }
    return sqrt(err / ref);
}

START_TEST(test_scaling_lowers_int2_logit_error)
{
    data_t s = make_data(5), fresh = make_data(6);
    okv_calibrator_t *cal = calibrate(&s);
    okv_rotation_set_t *plain = finalize(cal, OKV_ROT_OSCAR, OKV_GRANULARITY_LAYER, 0);
    okv_rotation_set_t *scaled = finalize(cal, OKV_ROT_OSCAR, OKV_GRANULARITY_LAYER, 1);
    double e0 = int2_logit_err(plain, &fresh), e1 = int2_logit_err(scaled, &fresh);
    ck_assert_msg(e1 < 0.5 * e0, "scaled %g vs orthogonal %g", e1, e0);
    okv_rotation_set_destroy(plain);
    okv_rotation_set_destroy(scaled);
    okv_calibrator_destroy(cal);
    free_data(&s);
    free_data(&fresh);
}
END_TEST

START_TEST(test_options_size_and_eps)
{
    data_t s = make_data(7);
    okv_calibrator_t *cal = calibrate(&s);
    okv_calib_options_t o;
    okv_calib_options_init(&o);
    okv_rotation_set_t *rs = NULL;
    /* a caller built before scale_keys: accepted, no scaling */
    o.size = offsetof(okv_calib_options_t, scale_keys);
    ck_assert_int_eq(okv_calibrator_finalize(cal, &o, &rs), OKV_SUCCESS);
    okv_layer_rotation_t L;
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, 1, &L), OKV_SUCCESS);
    ck_assert_ptr_null(L.q_rotation);
    okv_rotation_set_destroy(rs);
    o.size = offsetof(okv_calib_options_t, center_keys);
    ck_assert_int_eq(okv_calibrator_finalize(cal, &o, &rs), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_ptr_null(rs);
    okv_calib_options_init(&o);
    o.scale_eps = 0.0f;
    ck_assert_int_eq(okv_calibrator_finalize(cal, &o, &rs), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(okv_calibrator_last_error(cal), "scale_eps"));
    ck_assert_ptr_null(rs);
    okv_calibrator_destroy(cal);
    free_data(&s);
}
END_TEST

START_TEST(test_q_rotation_in_sets_and_files)
{
    data_t s = make_data(9);
    okv_calibrator_t *cal = calibrate(&s);
    okv_rotation_set_t *rs = finalize(cal, OKV_ROT_OSCAR, OKV_GRANULARITY_HEAD, 1);
    unsigned char *buf;
    size_t len;
    ck_assert_int_eq(okv_st_save_memory(rs, &buf, &len), OKV_SUCCESS);
    okv_rotation_set_t *back = NULL;
    ck_assert_int_eq(okv_rotation_set_load_memory(buf, len, &back), OKV_SUCCESS);
    for (int l = 0; l < NL; ++l) {
        okv_layer_rotation_t a, b;
        okv_rotation_set_get_layer(rs, l, &a);
        okv_rotation_set_get_layer(back, l, &b);
        ck_assert_ptr_nonnull(b.q_rotation);
        ck_assert(memcmp(a.q_rotation, b.q_rotation, sizeof(float) * HKV * D * D) == 0);
        ck_assert(memcmp(a.k_rotation, b.k_rotation, sizeof(float) * HKV * D * D) == 0);
    }
    ck_assert_str_eq(meta(back, "key_scaling"), "query_energy");
    okv_rotation_set_destroy(back);
    /* a q_rotation that is not k_rotation^-T: the loader rejects the file */
    const char *name = "\"layer.1.q_rotation\"";
    unsigned char *at = NULL;
    for (size_t i = 8; i + strlen(name) < len && !at; ++i)
        if (memcmp(buf + i, name, strlen(name)) == 0) at = buf + i;
    ck_assert_ptr_nonnull(at);
    unsigned long long b0 = 0, b1 = 0, hl = 0;
    for (int i = 7; i >= 0; --i)
        hl = hl << 8 | buf[i];
    ck_assert_int_eq(sscanf(strstr((char *)at, "data_offsets"), "data_offsets\":[%llu,%llu]", &b0, &b1), 2);
    ck_assert_uint_eq(b1 - b0, sizeof(float) * HKV * D * D);
    float x;
    unsigned char *p = buf + 8 + hl + b0 + 4 * (D * D + 3); /* second head, row 0, column 3 */
    memcpy(&x, p, 4);
    x = x * 2.0f + 0.5f;
    memcpy(p, &x, 4);
    ck_assert_int_eq(okv_rotation_set_load_memory(buf, len, &back), OKV_ERROR_CORRUPT_FILE);
    ck_assert_ptr_nonnull(strstr(okv_rotation_last_error(), "k_rotation^-T"));
    free(buf);
    /* set_layer: a broken pair is refused; a struct from before q_rotation leaves it unset */
    okv_layer_rotation_t L;
    okv_rotation_set_get_layer(rs, 0, &L);
    float *bad = tu_calloc((size_t)HKV * D * D, sizeof(float));
    memcpy(bad, L.q_rotation, sizeof(float) * HKV * D * D);
    bad[5] += 0.25f;
    okv_layer_rotation_t in = L;
    in.q_rotation = bad;
    ck_assert_int_eq(okv_rotation_set_set_layer(rs, 1, &in), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(okv_rotation_last_error(), "k_rotation^-T"));
    okv_rotation_set_t *orth = finalize(cal, OKV_ROT_OSCAR, OKV_GRANULARITY_HEAD, 0);
    okv_layer_rotation_t O;
    okv_rotation_set_get_layer(orth, 0, &O);
    O.size = offsetof(okv_layer_rotation_t, q_rotation);
    O.q_rotation = bad; /* outside the caller's struct: never read */
    ck_assert_int_eq(okv_rotation_set_set_layer(rs, 1, &O), OKV_SUCCESS);
    okv_rotation_set_get_layer(rs, 1, &L);
    ck_assert_ptr_null(L.q_rotation);
    free(bad);
    okv_rotation_set_destroy(orth);
    okv_rotation_set_destroy(rs);
    okv_calibrator_destroy(cal);
    free_data(&s);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("calib_scale");
    TCase *t = tcase_create("scale");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_pair_preserves_logits);
    tcase_add_test(t, test_scaling_lowers_int2_logit_error);
    tcase_add_test(t, test_options_size_and_eps);
    tcase_add_test(t, test_q_rotation_in_sets_and_files);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return okv_check_run(suite()); }
