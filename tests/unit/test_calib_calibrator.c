/* test_calib_calibrator.c - okv_calibrator_*: argument checks, the key and value
 * targets against a direct float64 computation (reference surrogate and exact causal
 * C_S), every rotation method's structure, granularity, input dtypes, NaN rejection. */
#include "calib/eigen.h"
#include "calib/hadamard.h"
#include "okv_format.h"
#include "oscarkv/oscarkv.h"

#include <check.h>

#include "okv_check_run.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define D 64
#define HQ 4
#define HKV 2
#define G (HQ / HKV)

static uint64_t rng_state;
static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return ((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0 - 1.0;
}

/* Anisotropic data with a couple of outlier channels, like real keys. */
static void gen(float *x, int n, int heads, double bias)
{
    for (int t = 0; t < n; ++t)
        for (int h = 0; h < heads; ++h)
            for (int c = 0; c < D; ++c) {
                double s = 0.2 + (c % 7) * 0.3 + (c == 3 ? 6.0 : 0.0) + (c == 40 ? 3.0 : 0.0);
                x[((size_t)t * heads + h) * D + c] = (float)(s * urand() + (c == 3 ? bias : 0.0) + 0.05 * h);
            }
}

typedef struct seqs {
    int n_seq;
    int n[3];
    float *q[3], *k[3], *v[3];
} seqs_t;

static seqs_t make_seqs(uint64_t seed)
{
    seqs_t s = {3, {24, 17, 9}, {0}, {0}, {0}};
    rng_state = seed;
    for (int i = 0; i < s.n_seq; ++i) {
        s.q[i] = malloc(sizeof(float) * s.n[i] * HQ * D);
        s.k[i] = malloc(sizeof(float) * s.n[i] * HKV * D);
        s.v[i] = malloc(sizeof(float) * s.n[i] * HKV * D);
        gen(s.q[i], s.n[i], HQ, 1.0);
        gen(s.k[i], s.n[i], HKV, 2.0);
        gen(s.v[i], s.n[i], HKV, 0.0);
    }
    return s;
}

static void free_seqs(seqs_t *s)
{
    for (int i = 0; i < s->n_seq; ++i) {
        free(s->q[i]);
        free(s->k[i]);
        free(s->v[i]);
    }
}

/* ---- direct float64 targets (independent of the library code) ---- */
typedef struct targets {
    double cq[HKV][D * D], kk[HKV][D * D], vv[HKV][D * D], cvref[HKV][D * D], cs[HKV][D * D];
} targets_t;

static void direct_targets(const seqs_t *s, targets_t *T)
{
    memset(T, 0, sizeof *T);
    double N = 0;
    for (int i = 0; i < s->n_seq; ++i)
        N += s->n[i];
    for (int h = 0; h < HKV; ++h) {
        for (int i = 0; i < s->n_seq; ++i)
            for (int t = 0; t < s->n[i]; ++t) {
                const float *k = s->k[i] + ((size_t)t * HKV + h) * D, *v = s->v[i] + ((size_t)t * HKV + h) * D;
                for (int a = 0; a < D; ++a)
                    for (int b = 0; b < D; ++b) {
                        for (int j = h * G; j < (h + 1) * G; ++j) {
                            const float *q = s->q[i] + ((size_t)t * HQ + j) * D;
                            T->cq[h][a * D + b] += (double)q[a] * q[b] / (N * G);
                        }
                        T->kk[h][a * D + b] += (double)k[a] * k[b] / N;
                        T->vv[h][a * D + b] += (double)v[a] * v[b] / N;
                    }
            }
        /* reference: w_t = k C_Q,h k^T normalised to mean 1; C_V = mean_t w_t v^T v */
        double *w = malloc(sizeof(double) * (size_t)N), sw = 0;
        int idx = 0;
        for (int i = 0; i < s->n_seq; ++i)
            for (int t = 0; t < s->n[i]; ++t, ++idx) {
                const float *k = s->k[i] + ((size_t)t * HKV + h) * D;
                double x = 0;
                for (int a = 0; a < D; ++a)
                    for (int b = 0; b < D; ++b)
                        x += k[a] * T->cq[h][a * D + b] * k[b];
                w[idx] = x;
                sw += x;
            }
        idx = 0;
        for (int i = 0; i < s->n_seq; ++i)
            for (int t = 0; t < s->n[i]; ++t, ++idx) {
                const float *v = s->v[i] + ((size_t)t * HKV + h) * D;
                double wn = N * w[idx] / fmax(sw, 1e-12);
                for (int a = 0; a < D; ++a)
                    for (int b = 0; b < D; ++b)
                        T->cvref[h][a * D + b] += wn * v[a] * v[b] / N;
            }
        free(w);
        /* exact: per sequence, causal softmax attention per query head, averaged over the group */
        for (int i = 0; i < s->n_seq; ++i) {
            int n = s->n[i];
            for (int j = h * G; j < (h + 1) * G; ++j)
                for (int t = 0; t < n; ++t) {
                    double lg[32], o[D] = {0}, mx = -1e300, z = 0;
                    for (int u = 0; u <= t; ++u) {
                        double x = 0;
                        for (int c = 0; c < D; ++c)
                            x += (double)s->q[i][((size_t)t * HQ + j) * D + c] * s->k[i][((size_t)u * HKV + h) * D + c];
                        lg[u] = x / sqrt((double)D);
                        mx = fmax(mx, lg[u]);
                    }
                    for (int u = 0; u <= t; ++u)
                        z += exp(lg[u] - mx);
                    for (int u = 0; u <= t; ++u)
                        for (int c = 0; c < D; ++c)
                            o[c] += exp(lg[u] - mx) / z * s->v[i][((size_t)u * HKV + h) * D + c];
                    for (int a = 0; a < D; ++a)
                        for (int b = 0; b < D; ++b)
                            T->cs[h][a * D + b] += o[a] * o[b] / (N * G);
                }
        }
    }
}

static void mean_heads(double (*m)[D * D], double *out)
{
    for (int i = 0; i < D * D; ++i) {
        out[i] = 0;
        for (int h = 0; h < HKV; ++h)
            out[i] += m[h][i] / HKV;
    }
}

/* || U diag(w) U^T - C ||_F / ||C||_F from float outputs */
static double recon_err(const float *U, const float *w, const double *C)
{
    double e = 0, n = 0;
    for (int a = 0; a < D; ++a)
        for (int b = 0; b < D; ++b) {
            double s = 0;
            for (int k = 0; k < D; ++k)
                s += (double)U[a * D + k] * w[k] * U[b * D + k];
            e += (s - C[a * D + b]) * (s - C[a * D + b]);
            n += C[a * D + b] * C[a * D + b];
        }
    return sqrt(e / n);
}

static double float_ortho(const float *R)
{
    double worst = 0;
    for (int i = 0; i < D; ++i)
        for (int j = 0; j < D; ++j) {
            double s = 0;
            for (int k = 0; k < D; ++k)
                s += (double)R[k * D + i] * R[k * D + j];
            worst = fmax(worst, fabs(s - (i == j)));
        }
    return worst;
}

static okv_calibrator_t *make_cal(okv_value_target_t vt, int n_layers, const seqs_t *s)
{
    okv_calib_desc_t desc;
    okv_calib_desc_init(&desc);
    desc.n_layers = n_layers;
    desc.n_q_heads = HQ;
    desc.n_kv_heads = HKV;
    desc.head_dim = D;
    desc.value_target = vt;
    desc.holdout_tokens = 32;
    okv_calibrator_t *cal;
    ck_assert_int_eq(okv_calibrator_create(&desc, &cal), OKV_SUCCESS);
    for (int l = 0; l < n_layers; ++l)
        for (int i = 0; i < s->n_seq; ++i)
            ck_assert_int_eq(okv_calibrator_add(cal, l, s->n[i], OKV_DTYPE_F32, s->q[i], s->k[i], s->v[i]),
                             OKV_SUCCESS);
    return cal;
}

static okv_rotation_set_t *finalize(okv_calibrator_t *cal, okv_rotation_method_t m, okv_granularity_t g)
{
    okv_calib_options_t opt;
    okv_calib_options_init(&opt);
    opt.method = m;
    opt.granularity = g;
    opt.scale_keys = 0; /* the paper's orthogonal R = U H P (key scaling: test_calib_scale.c) */
    okv_rotation_set_t *rs = NULL;
    okv_status_t st = okv_calibrator_finalize(cal, &opt, &rs);
    ck_assert_msg(st == OKV_SUCCESS, "finalize: %d %s", (int)st, okv_calibrator_last_error(cal));
    return rs;
}

START_TEST(test_targets_match_direct)
{
    seqs_t s = make_seqs(42);
    targets_t *T = malloc(sizeof *T);
    direct_targets(&s, T);
    double *tmp = malloc(sizeof(double) * D * D);
    for (int vt = 0; vt < 2; ++vt) {
        okv_calibrator_t *cal = make_cal((okv_value_target_t)vt, 1, &s);
        int64_t tok;
        ck_assert_int_eq(okv_calibrator_tokens(cal, 0, &tok), OKV_SUCCESS);
        ck_assert_int_eq(tok, 24 + 17 + 9);
        for (int gran = 0; gran < 2; ++gran) {
            okv_rotation_set_t *rs = finalize(cal, OKV_ROT_U_ONLY, (okv_granularity_t)gran);
            okv_layer_rotation_t L;
            ck_assert_int_eq(okv_rotation_set_get_layer(rs, 0, &L), OKV_SUCCESS);
            ck_assert_int_eq(L.n_rot, gran ? HKV : 1);
            for (int r = 0; r < L.n_rot; ++r) {
                const double *ck, *cv;
                if (gran) {
                    ck = T->cq[r];
                    cv = vt ? T->cs[r] : T->cvref[r];
                } else {
                    mean_heads(T->cq, tmp);
                    ck = tmp;
                }
                double e = recon_err(L.k_rotation + r * D * D, L.k_eigenvalues + r * D, ck);
                ck_assert_msg(e < 2e-6, "K target vt=%d gran=%d r=%d rel err %g", vt, gran, r, e);
                if (!gran) {
                    mean_heads(vt ? T->cs : T->cvref, tmp);
                    cv = tmp;
                }
                e = recon_err(L.v_rotation + r * D * D, L.v_eigenvalues + r * D, cv);
                ck_assert_msg(e < 2e-6, "V target vt=%d gran=%d r=%d rel err %g", vt, gran, r, e);
                for (int i = 1; i < D; ++i)
                    ck_assert(L.k_eigenvalues[r * D + i - 1] <= L.k_eigenvalues[r * D + i]);
            }
            const char *val;
            okv_rotation_set_get_meta(rs, "value_target", &val);
            ck_assert_str_eq(val, vt ? "exact" : "reference");
            okv_rotation_set_get_meta(rs, "method", &val);
            ck_assert_str_eq(val, "u_only");
            okv_rotation_set_get_meta(rs, "tokens", &val);
            ck_assert_str_eq(val, "50");
            okv_rotation_set_get_meta(rs, "granularity", &val);
            ck_assert_str_eq(val, gran ? "head" : "layer");
            okv_rotation_set_destroy(rs);
        }
        /* OSCAR: diag(R^T C R) = tr(C)/d for the direct C_Q,h and value targets (per head) */
        {
            okv_rotation_set_t *ro = finalize(cal, OKV_ROT_OSCAR, OKV_GRANULARITY_HEAD);
            okv_layer_rotation_t Lo;
            okv_rotation_set_get_layer(ro, 0, &Lo);
            for (int r = 0; r < HKV; ++r)
                for (int kv = 0; kv < 2; ++kv) {
                    const double *C = kv ? (vt ? T->cs[r] : T->cvref[r]) : T->cq[r];
                    const float *R = (kv ? Lo.v_rotation : Lo.k_rotation) + r * D * D;
                    double tr = 0;
                    for (int i = 0; i < D; ++i)
                        tr += C[i * D + i];
                    for (int j = 0; j < D; ++j) {
                        double dj = 0;
                        for (int a = 0; a < D; ++a)
                            for (int b = 0; b < D; ++b)
                                dj += (double)R[a * D + j] * C[a * D + b] * R[b * D + j];
                        ck_assert_msg(fabs(dj - tr / D) <= 1e-5 * tr, "vt=%d kv=%d r=%d diag %d: %g vs %g", vt, kv, r,
                                      j, dj, tr / D);
                    }
                }
            okv_rotation_set_destroy(ro);
        }
        /* PLAIN_COV: eigenvalues of K^T K / V^T V, and R = U H P equalises their diagonal */
        okv_rotation_set_t *rs = finalize(cal, OKV_ROT_PLAIN_COV, OKV_GRANULARITY_HEAD);
        okv_layer_rotation_t L;
        okv_rotation_set_get_layer(rs, 0, &L);
        for (int r = 0; r < HKV; ++r) {
            for (int kv = 0; kv < 2; ++kv) {
                const double *C = kv ? T->vv[r] : T->kk[r];
                const float *R = (kv ? L.v_rotation : L.k_rotation) + r * D * D;
                double w[D], tr = 0;
                double *U = malloc(sizeof(double) * D * D);
                ck_assert_int_eq(okv_eig_sym(D, C, U, w), OKV_SUCCESS);
                for (int i = 0; i < D; ++i) {
                    tr += C[i * D + i];
                    ck_assert_double_eq_tol((kv ? L.v_eigenvalues : L.k_eigenvalues)[r * D + i], w[i], 1e-5 * w[D - 1]);
                }
                for (int j = 0; j < D; ++j) {
                    double dj = 0;
                    for (int a = 0; a < D; ++a)
                        for (int b = 0; b < D; ++b)
                            dj += (double)R[a * D + j] * C[a * D + b] * R[b * D + j];
                    ck_assert_double_eq_tol(dj, tr / D, 1e-5 * tr);
                }
                free(U);
            }
        }
        okv_rotation_set_destroy(rs);
        okv_calibrator_destroy(cal);
    }
    free(tmp);
    free(T);
    free_seqs(&s);
}
END_TEST

START_TEST(test_method_structure)
{
    seqs_t s = make_seqs(7);
    okv_calibrator_t *cal = make_cal(OKV_VALUE_TARGET_REFERENCE, 2, &s);
    okv_rotation_set_t *u = finalize(cal, OKV_ROT_U_ONLY, OKV_GRANULARITY_LAYER);
    okv_rotation_set_t *o = finalize(cal, OKV_ROT_OSCAR, OKV_GRANULARITY_LAYER);
    okv_rotation_set_t *o2 = finalize(cal, OKV_ROT_OSCAR, OKV_GRANULARITY_LAYER); /* finalize is repeatable */
    okv_rotation_set_t *none = finalize(cal, OKV_ROT_NONE, OKV_GRANULARITY_LAYER);
    okv_rotation_set_t *had = finalize(cal, OKV_ROT_HADAMARD, OKV_GRANULARITY_HEAD);
    double H[D * D];
    int perm[D];
    okv_hadamard(D, H);
    okv_bitrev_perm(D, perm);
    for (int l = 0; l < 2; ++l) {
        okv_layer_rotation_t U, O, O2, N, Hh;
        okv_rotation_set_get_layer(u, l, &U);
        okv_rotation_set_get_layer(o, l, &O);
        okv_rotation_set_get_layer(o2, l, &O2);
        okv_rotation_set_get_layer(none, l, &N);
        okv_rotation_set_get_layer(had, l, &Hh);
        ck_assert(memcmp(O.k_rotation, O2.k_rotation, sizeof(float) * D * D) == 0);
        ck_assert(memcmp(O.v_rotation, O2.v_rotation, sizeof(float) * D * D) == 0);
        ck_assert(memcmp(O.k_eigenvalues, U.k_eigenvalues, sizeof(float) * D) == 0);
        for (int kv = 0; kv < 2; ++kv) {
            const float *Ro = kv ? O.v_rotation : O.k_rotation, *Ru = kv ? U.v_rotation : U.k_rotation;
            ck_assert(float_ortho(Ro) < 1e-5);
            ck_assert(float_ortho(Ru) < 1e-5);
            /* OSCAR R = U H P with U the U_ONLY rotation */
            for (int i = 0; i < D; ++i)
                for (int c = 0; c < D; ++c) {
                    double x = 0;
                    for (int k = 0; k < D; ++k)
                        x += (double)Ru[i * D + k] * H[k * D + perm[c]];
                    ck_assert_double_eq_tol(Ro[i * D + c], x, 1e-5);
                }
            /* NONE: identity, HADAMARD: H per head, no eigenvalues */
            for (int i = 0; i < D * D; ++i) {
                ck_assert((kv ? N.v_rotation : N.k_rotation)[i] == ((i / D == i % D) ? 1.0f : 0.0f));
                for (int r = 0; r < HKV; ++r)
                    ck_assert((kv ? Hh.v_rotation : Hh.k_rotation)[r * D * D + i] == (float)H[i]);
            }
        }
        ck_assert_ptr_null(N.k_eigenvalues);
        ck_assert_ptr_null(Hh.v_eigenvalues);
        ck_assert(O.k_clip_ratio == 0.96f && O.v_clip_ratio == 0.92f);
    }
    okv_rotation_set_destroy(u);
    okv_rotation_set_destroy(o);
    okv_rotation_set_destroy(o2);
    okv_rotation_set_destroy(none);
    okv_rotation_set_destroy(had);
    okv_calibrator_destroy(cal);
    free_seqs(&s);
}
END_TEST

START_TEST(test_dtypes_and_nonfinite)
{
    seqs_t s = make_seqs(99);
    /* round the data to f16 / bf16; those inputs must equal f32 input of the rounded values */
    for (int dt = 1; dt <= 2; ++dt) {
        okv_calib_desc_t desc;
        okv_calib_desc_init(&desc);
        desc.n_q_heads = HQ;
        desc.n_kv_heads = HKV;
        desc.head_dim = D;
        okv_calibrator_t *a, *b;
        ck_assert_int_eq(okv_calibrator_create(&desc, &a), OKV_SUCCESS);
        ck_assert_int_eq(okv_calibrator_create(&desc, &b), OKV_SUCCESS);
        for (int i = 0; i < s.n_seq; ++i) {
            size_t nq = (size_t)s.n[i] * HQ * D, nk = (size_t)s.n[i] * HKV * D;
            uint16_t *h[3];
            float *r[3];
            const float *src[3] = {s.q[i], s.k[i], s.v[i]};
            size_t cnt[3] = {nq, nk, nk};
            for (int x = 0; x < 3; ++x) {
                h[x] = malloc(2 * cnt[x]);
                r[x] = malloc(4 * cnt[x]);
                for (size_t j = 0; j < cnt[x]; ++j) {
                    h[x][j] = dt == 1 ? okv_f32_to_f16(src[x][j]) : okv_f32_to_bf16(src[x][j]);
                    r[x][j] = dt == 1 ? okv_f16_to_f32(h[x][j]) : okv_bf16_to_f32(h[x][j]);
                }
            }
            ck_assert_int_eq(okv_calibrator_add(a, 0, s.n[i], (okv_dtype_t)dt, h[0], h[1], h[2]), OKV_SUCCESS);
            ck_assert_int_eq(okv_calibrator_add(b, 0, s.n[i], OKV_DTYPE_F32, r[0], r[1], r[2]), OKV_SUCCESS);
            /* a non-finite value anywhere: rejected, nothing added */
            uint16_t keep = h[2][5];
            h[2][5] = dt == 1 ? 0x7c00 : 0x7f80; /* +inf */
            ck_assert_int_eq(okv_calibrator_add(a, 0, s.n[i], (okv_dtype_t)dt, h[0], h[1], h[2]),
                             OKV_ERROR_NONFINITE_INPUT);
            ck_assert(strlen(okv_calibrator_last_error(a)) > 0);
            h[2][5] = keep;
            float kq = r[0][7];
            r[0][7] = NAN;
            ck_assert_int_eq(okv_calibrator_add(b, 0, s.n[i], OKV_DTYPE_F32, r[0], r[1], r[2]),
                             OKV_ERROR_NONFINITE_INPUT);
            r[0][7] = kq;
            for (int x = 0; x < 3; ++x) {
                free(h[x]);
                free(r[x]);
            }
        }
        int64_t ta, tb;
        okv_calibrator_tokens(a, 0, &ta);
        okv_calibrator_tokens(b, 0, &tb);
        ck_assert_int_eq(ta, 50);
        ck_assert_int_eq(tb, 50);
        okv_rotation_set_t *ra = finalize(a, OKV_ROT_OSCAR, OKV_GRANULARITY_HEAD);
        okv_rotation_set_t *rb = finalize(b, OKV_ROT_OSCAR, OKV_GRANULARITY_HEAD);
        okv_layer_rotation_t La, Lb;
        okv_rotation_set_get_layer(ra, 0, &La);
        okv_rotation_set_get_layer(rb, 0, &Lb);
        ck_assert(memcmp(La.k_rotation, Lb.k_rotation, sizeof(float) * HKV * D * D) == 0);
        ck_assert(memcmp(La.v_rotation, Lb.v_rotation, sizeof(float) * HKV * D * D) == 0);
        okv_rotation_set_destroy(ra);
        okv_rotation_set_destroy(rb);
        okv_calibrator_destroy(a);
        okv_calibrator_destroy(b);
    }
    free_seqs(&s);
}
END_TEST

START_TEST(test_argument_checks)
{
    okv_calib_desc_t desc;
    okv_calibrator_t *cal = NULL;
    okv_calib_desc_init(&desc);
    ck_assert_int_eq(okv_calibrator_create(NULL, &cal), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_calibrator_create(&desc, NULL), OKV_ERROR_NULL_POINTER);
    desc.head_dim = 96;
    ck_assert_int_eq(okv_calibrator_create(&desc, &cal), OKV_ERROR_UNSUPPORTED_HEAD_DIM);
    okv_calib_desc_init(&desc);
    desc.n_q_heads = 6;
    desc.n_kv_heads = 4;
    ck_assert_int_eq(okv_calibrator_create(&desc, &cal), OKV_ERROR_BAD_SHAPE);
    okv_calib_desc_init(&desc);
    desc.size = 0;
    ck_assert_int_eq(okv_calibrator_create(&desc, &cal), OKV_ERROR_INVALID_ARGUMENT);
    okv_calib_desc_init(&desc);
    desc.value_target = (okv_value_target_t)5;
    ck_assert_int_eq(okv_calibrator_create(&desc, &cal), OKV_ERROR_INVALID_ARGUMENT);
    okv_calib_desc_init(&desc);
    desc.n_layers = 0;
    ck_assert_int_eq(okv_calibrator_create(&desc, &cal), OKV_ERROR_INVALID_ARGUMENT);
    okv_calib_desc_init(&desc);
    desc.holdout_tokens = -1;
    ck_assert_int_eq(okv_calibrator_create(&desc, &cal), OKV_ERROR_INVALID_ARGUMENT);
    desc.holdout_tokens = 1025;
    ck_assert_int_eq(okv_calibrator_create(&desc, &cal), OKV_ERROR_INVALID_ARGUMENT);

    okv_calib_desc_init(&desc);
    desc.n_layers = 2;
    desc.n_q_heads = HQ;
    desc.n_kv_heads = HKV;
    desc.head_dim = D;
    desc.holdout_tokens = 0;
    ck_assert_int_eq(okv_calibrator_create(&desc, &cal), OKV_SUCCESS);
    float q[HQ * D] = {0}, k[HKV * D] = {0}, v[HKV * D] = {0};
    q[0] = k[1] = v[2] = 1.0f;
    ck_assert_int_eq(okv_calibrator_add(NULL, 0, 1, OKV_DTYPE_F32, q, k, v), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_calibrator_add(cal, 0, 1, OKV_DTYPE_F32, NULL, k, v), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_calibrator_add(cal, 2, 1, OKV_DTYPE_F32, q, k, v), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(okv_calibrator_add(cal, -1, 1, OKV_DTYPE_F32, q, k, v), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(okv_calibrator_add(cal, 0, -1, OKV_DTYPE_F32, q, k, v), OKV_ERROR_BAD_SHAPE);
    ck_assert_int_eq(okv_calibrator_add(cal, 0, 1, OKV_DTYPE_F64, q, k, v), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(okv_calibrator_add(cal, 0, 0, OKV_DTYPE_F32, q, k, v), OKV_SUCCESS);
    int64_t t;
    ck_assert_int_eq(okv_calibrator_tokens(cal, 0, NULL), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_calibrator_tokens(cal, 5, &t), OKV_ERROR_INVALID_ARGUMENT);
    okv_calib_options_t opt;
    okv_calib_options_init(&opt);
    okv_rotation_set_t *rs = NULL;
    ck_assert_int_eq(okv_calibrator_finalize(cal, &opt, &rs), OKV_ERROR_INSUFFICIENT_DATA);
    ck_assert_int_eq(okv_calibrator_add(cal, 0, 1, OKV_DTYPE_F32, q, k, v), OKV_SUCCESS);
    ck_assert_int_eq(okv_calibrator_finalize(cal, &opt, &rs), OKV_ERROR_INSUFFICIENT_DATA); /* layer 1 empty */
    ck_assert_ptr_nonnull(strstr(okv_calibrator_last_error(cal), "layer 1"));
    ck_assert_int_eq(okv_calibrator_add(cal, 1, 1, OKV_DTYPE_F32, q, k, v), OKV_SUCCESS);
    ck_assert_int_eq(okv_calibrator_finalize(cal, NULL, &rs), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_calibrator_finalize(cal, &opt, NULL), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_calibrator_finalize(NULL, &opt, &rs), OKV_ERROR_NULL_POINTER);
    opt.method = (okv_rotation_method_t)17;
    ck_assert_int_eq(okv_calibrator_finalize(cal, &opt, &rs), OKV_ERROR_INVALID_ARGUMENT);
    okv_calib_options_init(&opt);
    opt.k_clip_ratio = 0.0f;
    ck_assert_int_eq(okv_calibrator_finalize(cal, &opt, &rs), OKV_ERROR_INVALID_ARGUMENT);
    okv_calib_options_init(&opt);
    opt.size = 8;
    ck_assert_int_eq(okv_calibrator_finalize(cal, &opt, &rs), OKV_ERROR_INVALID_ARGUMENT);
    okv_calib_options_init(&opt);
    opt.fit_clips = 1; /* holdout_tokens 0 */
    ck_assert_int_eq(okv_calibrator_finalize(cal, &opt, &rs), OKV_ERROR_INSUFFICIENT_DATA);
    okv_calib_options_init(&opt);
    ck_assert_int_eq(okv_calibrator_finalize(cal, &opt, &rs), OKV_SUCCESS); /* rank-1 data still works */
    okv_rotation_set_destroy(rs);
    okv_calibrator_destroy(cal);
    okv_calibrator_destroy(NULL);
    ck_assert_str_eq(okv_calibrator_last_error(NULL), "");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("calib_calibrator");
    TCase *tc = tcase_create("calibrator");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_targets_match_direct);
    tcase_add_test(tc, test_method_structure);
    tcase_add_test(tc, test_dtypes_and_nonfinite);
    tcase_add_test(tc, test_argument_checks);
    suite_add_tcase(s, tc);
    return okv_check_run(s);
}
