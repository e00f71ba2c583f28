/* test_calib_real.c - calibration on the committed real activations (Gemma 3 270M,
 * data/gemma3-270m-sample: calib/ to calibrate, eval/ held out). Prints a comparison
 * table (ctest -V) and checks the qualitative claims that must hold on real data:
 * OSCAR beats no rotation, fitted clips beat fixed ones, the reference and exact value
 * targets agree closely. Evaluation: each eval sequence's causal attention with the
 * non-sink rows ([64, 256)) of K and V rotated, clipped, INT2-quantised (G = d, fp16
 * metadata) versus full precision; relative Frobenius error of the outputs. */
#include "calib/calibrator_impl.h"
#include "calib/npy.h"
#include "oscarkv/oscarkv.h"

#include <check.h>

#include "okv_check_run.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NL = 4, HQ = 4, HKV = 1, D = 256, N = 256, SINK = 64 };
static const int k_layers[NL] = {0, 5, 9, 17};
static char g_dir[512];

static int find_data(void)
{
    /* __FILE__ is .../tests/unit/test_calib_real.c in CMake builds */
    snprintf(g_dir, sizeof g_dir, "%s", __FILE__);
    char *p = strstr(g_dir, "tests/unit/test_calib_real.c");
    if (!p) return 0;
    snprintf(p, sizeof g_dir - (size_t)(p - g_dir), "data/gemma3-270m-sample");
    char probe[600];
    snprintf(probe, sizeof probe, "%s/calib/layer_0/q.npy", g_dir);
    FILE *f = fopen(probe, "rb");
    if (!f) return 0;
    fclose(f);
    return 1;
}

static float *load(const char *set, int layer, const char *name, size_t want)
{
    char path[700], err[128];
    snprintf(path, sizeof path, "%s/%s/layer_%d/%s.npy", g_dir, set, layer, name);
    okv_npy_array_t a;
    ck_assert_msg(okv_npy_load(path, &a, err, sizeof err) == OKV_SUCCESS, "%s: %s", path, err);
    ck_assert_uint_eq(a.info.count, want);
    float *f = malloc(sizeof(float) * want);
    ck_assert(okv_calib_to_f32(a.data, a.info.dtype, want, f, NULL));
    okv_npy_free(&a);
    return f;
}

static void rotate(const float *x, float *o, int rows, const float *R)
{
    for (int t = 0; t < rows; ++t)
        for (int c = 0; c < D; ++c) {
            double s = 0;
            for (int a = 0; a < D; ++a)
                s += (double)x[t * D + a] * R[a * D + c];
            o[t * D + c] = (float)s;
        }
}

static double attention_error(const float *q, const float *k, const float *v, const float *kq, const float *vq)
{
    static double p[N], ph[N];
    double e2 = 0, n2 = 0;
    for (int i = 0; i < HQ; ++i)
        for (int t = 0; t < N; ++t) {
            double mx = -INFINITY, mh = -INFINITY, z = 0, zh = 0;
            const float *qr = q + ((size_t)t * HQ + i) * D;
            for (int j = 0; j <= t; ++j) {
                double s = 0, sh = 0;
                for (int c = 0; c < D; ++c) {
                    s += (double)qr[c] * k[j * D + c];
                    sh += (double)qr[c] * kq[j * D + c];
                }
                p[j] = s / sqrt((double)D);
                ph[j] = sh / sqrt((double)D);
                mx = fmax(mx, p[j]);
                mh = fmax(mh, ph[j]);
            }
            for (int j = 0; j <= t; ++j) {
                p[j] = exp(p[j] - mx);
                z += p[j];
                ph[j] = exp(ph[j] - mh);
                zh += ph[j];
            }
            for (int c = 0; c < D; ++c) {
                double o = 0, oh = 0;
                for (int j = 0; j <= t; ++j) {
                    o += p[j] / z * v[j * D + c];
                    oh += ph[j] / zh * vq[j * D + c];
                }
                e2 += (o - oh) * (o - oh);
                n2 += o * o;
            }
        }
    return sqrt(e2 / n2);
}

/* mean over the stored layers of the eval error; per-layer values into per[] */
static double evaluate(const okv_rotation_set_t *rs, double *per)
{
    okv_cache_desc_t quant;
    okv_cache_desc_init(&quant);
    double mean = 0;
    for (int li = 0; li < NL; ++li) {
        okv_layer_rotation_t L;
        ck_assert_int_eq(okv_rotation_set_get_layer(rs, li, &L), OKV_SUCCESS);
        float *q = load("eval", k_layers[li], "q", N * HQ * D), *k = load("eval", k_layers[li], "k", N * D),
              *v = load("eval", k_layers[li], "v", N * D);
        float *qr = malloc(sizeof(float) * N * HQ * D), *kr = malloc(sizeof(float) * N * D),
              *vr = malloc(sizeof(float) * N * D), *kq = malloc(sizeof(float) * N * D),
              *vq = malloc(sizeof(float) * N * D);
        /* key scaling (q_rotation set): queries use R_K^-T and the keys are centered by k_mean
         * as the cache stores them; the paper's rows keep the uncentered keys */
        rotate(q, qr, N * HQ, L.q_rotation ? L.q_rotation : L.k_rotation);
        for (int t = 0; L.q_rotation && L.k_mean && t < N; ++t)
            for (int c = 0; c < D; ++c)
                k[t * D + c] -= L.k_mean[c];
        rotate(k, kr, N, L.k_rotation);
        rotate(v, vr, N, L.v_rotation);
        memcpy(kq, kr, sizeof(float) * N * D);
        memcpy(vq, vr, sizeof(float) * N * D);
        for (int t = SINK; t < N; ++t) {
            ck_assert(okv_quant_row_roundtrip(kq + t * D, D, D, L.k_clip_ratio, &quant));
            ck_assert(okv_quant_row_roundtrip(vq + t * D, D, D, L.v_clip_ratio, &quant));
        }
        per[li] = attention_error(qr, kr, vr, kq, vq);
        ck_assert(isfinite(per[li]));
        mean += per[li] / NL;
        free(q);
        free(k);
        free(v);
        free(qr);
        free(kr);
        free(vr);
        free(kq);
        free(vq);
    }
    return mean;
}

START_TEST(test_real_gemma)
{
    if (!find_data()) {
        printf("test_calib_real: data/gemma3-270m-sample not found next to the sources; nothing to check\n");
        return;
    }
    okv_calibrator_t *cal[2];
    for (int vt = 0; vt < 2; ++vt) {
        okv_calib_desc_t desc;
        okv_calib_desc_init(&desc);
        desc.n_layers = NL;
        desc.n_q_heads = HQ;
        desc.n_kv_heads = HKV;
        desc.head_dim = D;
        desc.value_target = (okv_value_target_t)vt;
        desc.holdout_tokens = 128;
        ck_assert_int_eq(okv_calibrator_create(&desc, &cal[vt]), OKV_SUCCESS);
        for (int li = 0; li < NL; ++li) {
            float *q = load("calib", k_layers[li], "q", N * HQ * D), *k = load("calib", k_layers[li], "k", N * D),
                  *v = load("calib", k_layers[li], "v", N * D);
            ck_assert_int_eq(okv_calibrator_add(cal[vt], li, N, OKV_DTYPE_F32, q, k, v), OKV_SUCCESS);
            free(q);
            free(k);
            free(v);
        }
    }
    static const struct {
        const char *name;
        int vt;
        okv_rotation_method_t method;
        int fit, scale;
    } cfg[] = {
        {"none", 0, OKV_ROT_NONE, 0, 0},
        {"hadamard", 0, OKV_ROT_HADAMARD, 0, 0},
        {"plain_cov", 0, OKV_ROT_PLAIN_COV, 0, 0},
        {"u_only", 0, OKV_ROT_U_ONLY, 0, 0},
        {"oscar/ref", 0, OKV_ROT_OSCAR, 0, 0},
        {"oscar/exact", 1, OKV_ROT_OSCAR, 0, 0},
        {"oscar/ref+fit", 0, OKV_ROT_OSCAR, 1, 0},
        {"oscar/exact+fit", 1, OKV_ROT_OSCAR, 1, 0},
        {"oscar/ref+fit+scale", 0, OKV_ROT_OSCAR, 1, 1}, /* + centering + key scaling: the library default */
    };
    enum { NCFG = sizeof cfg / sizeof cfg[0] };
    double mean[NCFG], per[NL];
    printf("Gemma 3 270M sample, eval set, rel. attention-output error (layers 0 5 9 17 | mean):\n");
    for (int c = 0; c < NCFG; ++c) {
        okv_calib_options_t opt;
        okv_calib_options_init(&opt);
        opt.method = cfg[c].method;
        opt.fit_clips = cfg[c].fit;
        opt.scale_keys = cfg[c].scale;
        okv_rotation_set_t *rs;
        ck_assert_msg(okv_calibrator_finalize(cal[cfg[c].vt], &opt, &rs) == OKV_SUCCESS, "%s",
                      okv_calibrator_last_error(cal[cfg[c].vt]));
        mean[c] = evaluate(rs, per);
        printf("  %-16s %.4f %.4f %.4f %.4f | %.4f\n", cfg[c].name, per[0], per[1], per[2], per[3], mean[c]);
        okv_rotation_set_destroy(rs);
    }
    ck_assert(mean[4] < mean[0]);                        /* OSCAR beats no rotation */
    ck_assert(mean[6] < mean[4] && mean[7] < mean[5]);   /* fitted clips beat fixed ones */
    ck_assert(fabs(mean[4] - mean[5]) < 0.05 * mean[4]); /* reference ~ exact value target */
    ck_assert(fabs(mean[6] - mean[7]) < 0.05 * mean[6]);
    ck_assert(mean[8] < mean[0]); /* 256 tokens cannot rank the OSCAR variants (see core/calib/README.md) */
    okv_calibrator_destroy(cal[0]);
    okv_calibrator_destroy(cal[1]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("calib_real");
    TCase *tc = tcase_create("real");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_real_gemma);
    suite_add_tcase(s, tc);
    return okv_check_run(s);
}
