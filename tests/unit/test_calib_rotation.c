/* test_calib_rotation.c - Hadamard matrix, bit-reversal permutation, R = U H P and
 * its ablations, diag(R^T C R) = tr(C)/d, projection folds. */
#include "calib/eigen.h"
#include "calib/hadamard.h"
#include "oscarkv/oscarkv.h"

#include <check.h>

#include "okv_check_run.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 777;
static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return ((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0 - 1.0;
}

static double *random_cov(int n)
{
    double *A = malloc(sizeof(double) * n * n), *C = calloc((size_t)n * n, sizeof(double));
    for (int i = 0; i < n * n; ++i)
        A[i] = urand();
    for (int r = 0; r < n; ++r) {
        double s = pow(10.0, 3.0 * r / n);
        for (int a = 0; a < n; ++a)
            for (int b = 0; b < n; ++b)
                C[a * n + b] += s * A[r * n + a] * A[r * n + b];
    }
    free(A);
    return C;
}

static double ortho_err(int d, const double *R)
{
    double worst = 0;
    for (int i = 0; i < d; ++i)
        for (int j = 0; j < d; ++j) {
            double s = 0;
            for (int k = 0; k < d; ++k)
                s += R[k * d + i] * R[k * d + j];
            worst = fmax(worst, fabs(s - (i == j)));
        }
    return worst;
}

START_TEST(test_hadamard_properties)
{
    static const int dims[] = {64, 128, 256};
    for (int k = 0; k < 3; ++k) {
        int d = dims[k];
        double *H = malloc(sizeof(double) * d * d);
        okv_hadamard(d, H);
        double s = 1.0 / sqrt((double)d);
        for (int i = 0; i < d; ++i)
            for (int m = 0; m < d; ++m) {
                ck_assert(H[i * d + m] == s || H[i * d + m] == -s);
                ck_assert(H[i * d + m] == H[m * d + i]); /* symmetric */
                int par = __builtin_popcount((unsigned)(i & m)) & 1;
                ck_assert(H[i * d + m] == (par ? -s : s));
            }
        for (int m = 0; m < d; ++m)
            ck_assert(H[m] == s); /* row 0 all positive */
        ck_assert(ortho_err(d, H) < 1e-14);
        free(H);
    }
}
END_TEST

START_TEST(test_bitrev_perm)
{
    int perm[256];
    okv_bitrev_perm(8, perm);
    static const int want8[8] = {7, 3, 5, 1, 6, 2, 4, 0}; /* 7 - br3(j) */
    for (int j = 0; j < 8; ++j)
        ck_assert_int_eq(perm[j], want8[j]);
    ck_assert_int_eq(okv_bit_reverse(1, 128), 64);
    ck_assert_int_eq(okv_bit_reverse(3, 256), 192);
    static const int dims[] = {64, 128, 256};
    for (int k = 0; k < 3; ++k) {
        int d = dims[k], seen[256] = {0};
        okv_bitrev_perm(d, perm);
        for (int j = 0; j < d; ++j) {
            ck_assert(perm[j] >= 0 && perm[j] < d);
            seen[perm[j]]++;
            /* SPEC 2.4: perm[br(i)] = s[i] with s = descending order of ascending indices */
            ck_assert_int_eq(perm[okv_bit_reverse(j, d)], d - 1 - j);
        }
        for (int j = 0; j < d; ++j)
            ck_assert_int_eq(seen[j], 1);
    }
}
END_TEST

START_TEST(test_compose_structure)
{
    int d = 64;
    double *C = random_cov(d);
    double *U = malloc(sizeof(double) * d * d), w[64], *R = malloc(sizeof(double) * d * d),
           *H = malloc(sizeof(double) * d * d);
    int perm[64];
    ck_assert_int_eq(okv_eig_sym(d, C, U, w), OKV_SUCCESS);
    okv_hadamard(d, H);
    okv_bitrev_perm(d, perm);
    /* NONE */
    ck_assert_int_eq(okv_compose_rotation(OKV_ROT_NONE, d, NULL, 1, R), OKV_SUCCESS);
    for (int i = 0; i < d * d; ++i)
        ck_assert(R[i] == ((i / d) == (i % d) ? 1.0 : 0.0));
    /* HADAMARD: H exactly */
    ck_assert_int_eq(okv_compose_rotation(OKV_ROT_HADAMARD, d, NULL, 1, R), OKV_SUCCESS);
    ck_assert(memcmp(R, H, sizeof(double) * d * d) == 0);
    /* U_ONLY: U exactly; R^T C R is diagonal with the eigenvalues */
    ck_assert_int_eq(okv_compose_rotation(OKV_ROT_U_ONLY, d, U, 1, R), OKV_SUCCESS);
    ck_assert(memcmp(R, U, sizeof(double) * d * d) == 0);
    /* OSCAR with and without P: columns are (U H)[:, perm[c]] */
    for (int use_perm = 0; use_perm < 2; ++use_perm) {
        ck_assert_int_eq(okv_compose_rotation(OKV_ROT_OSCAR, d, U, use_perm, R), OKV_SUCCESS);
        for (int i = 0; i < d; ++i)
            for (int c = 0; c < d; ++c) {
                int col = use_perm ? perm[c] : c;
                double s = 0;
                for (int k = 0; k < d; ++k)
                    s += U[i * d + k] * H[k * d + col];
                ck_assert_double_eq_tol(R[i * d + c], s, 1e-14);
            }
        ck_assert(ortho_err(d, R) < 1e-13);
    }
    ck_assert_int_eq(okv_compose_rotation(OKV_ROT_OSCAR, d, NULL, 1, R), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_compose_rotation((okv_rotation_method_t)99, d, U, 1, R), OKV_ERROR_INVALID_ARGUMENT);
    free(C);
    free(U);
    free(R);
    free(H);
}
END_TEST

/* diag(R^T C R) = tr(C)/d for R = U H P; U-only gives the eigenvalues instead. */
START_TEST(test_equalised_diagonal)
{
    static const int dims[] = {64, 128, 256};
    for (int k = 0; k < 3; ++k) {
        int d = dims[k];
        double *C = random_cov(d), *U = malloc(sizeof(double) * d * d), *w = malloc(sizeof(double) * d),
               *R = malloc(sizeof(double) * d * d), *CR = malloc(sizeof(double) * d * d);
        ck_assert_int_eq(okv_eig_sym(d, C, U, w), OKV_SUCCESS);
        ck_assert_int_eq(okv_compose_rotation(OKV_ROT_OSCAR, d, U, 1, R), OKV_SUCCESS);
        double tr = 0;
        for (int i = 0; i < d; ++i)
            tr += C[i * d + i];
        for (int i = 0; i < d; ++i)
            for (int j = 0; j < d; ++j) {
                double s = 0;
                for (int m = 0; m < d; ++m)
                    s += C[i * d + m] * R[m * d + j];
                CR[i * d + j] = s;
            }
        for (int j = 0; j < d; ++j) {
            double s = 0;
            for (int i = 0; i < d; ++i)
                s += R[i * d + j] * CR[i * d + j];
            ck_assert_msg(fabs(s - tr / d) <= 1e-10 * tr, "d=%d diag %d: %.17g vs %.17g", d, j, s, tr / d);
        }
        free(C);
        free(U);
        free(w);
        free(R);
        free(CR);
    }
}
END_TEST

START_TEST(test_fold_projections)
{
    const int d = 64, hkv = 2, hq = 4, in = 5, out = 3;
    float *rv = malloc(sizeof(float) * hkv * d * d);
    double *Hd = malloc(sizeof(double) * d * d), *U = malloc(sizeof(double) * d * d), w[64];
    for (int h = 0; h < hkv; ++h) {
        double *C = random_cov(d);
        okv_eig_sym(d, C, U, w);
        okv_compose_rotation(OKV_ROT_OSCAR, d, U, 1, Hd);
        for (int i = 0; i < d * d; ++i)
            rv[h * d * d + i] = (float)Hd[i];
        free(C);
    }
    okv_layer_rotation_t rot = {sizeof rot, d, hkv, rv, rv, NULL, NULL, 0.96f, 0.92f, NULL, NULL};
    /* W_v [in, hkv*d]; v R per head must equal x (W_v folded) */
    float *wv = malloc(sizeof(float) * in * hkv * d), *wv0 = malloc(sizeof(float) * in * hkv * d);
    for (int i = 0; i < in * hkv * d; ++i)
        wv0[i] = wv[i] = (float)urand();
    ck_assert_int_eq(okv_fold_v_projection(&rot, hkv, in, wv), OKV_SUCCESS);
    for (int r = 0; r < in; ++r)
        for (int h = 0; h < hkv; ++h)
            for (int c = 0; c < d; ++c) {
                double s = 0;
                for (int a = 0; a < d; ++a)
                    s += (double)wv0[r * hkv * d + h * d + a] * rv[h * d * d + a * d + c];
                ck_assert_double_eq_tol(wv[r * hkv * d + h * d + c], s, 1e-5);
            }
    /* W_o [hq*d, out]: o' (folded) == (o' R^T) W_o for o' in the rotated basis */
    float *wo = malloc(sizeof(float) * hq * d * out), *wo0 = malloc(sizeof(float) * hq * d * out);
    for (int i = 0; i < hq * d * out; ++i)
        wo0[i] = wo[i] = (float)urand();
    ck_assert_int_eq(okv_fold_o_projection(&rot, hq, hkv, out, wo), OKV_SUCCESS);
    double o[64], u[64];
    for (int i = 0; i < hq; ++i) {
        const float *R = rv + (i / (hq / hkv)) * d * d;
        for (int c = 0; c < d; ++c)
            o[c] = urand();
        for (int a = 0; a < d; ++a) { /* u = o R^T */
            double s = 0;
            for (int c = 0; c < d; ++c)
                s += o[c] * R[a * d + c];
            u[a] = s;
        }
        for (int j = 0; j < out; ++j) {
            double want = 0, got = 0;
            for (int a = 0; a < d; ++a) {
                want += u[a] * wo0[(i * d + a) * out + j];
                got += o[a] * wo[(i * d + a) * out + j];
            }
            ck_assert_double_eq_tol(got, want, 1e-4);
        }
    }
    /* errors */
    ck_assert_int_eq(okv_fold_v_projection(NULL, hkv, in, wv), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_fold_v_projection(&rot, hkv, in, NULL), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_fold_o_projection(&rot, hq, hkv, out, NULL), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_fold_v_projection(&rot, 3, in, wv), OKV_ERROR_BAD_SHAPE);
    ck_assert_int_eq(okv_fold_o_projection(&rot, 5, hkv, out, wo), OKV_ERROR_BAD_SHAPE);
    ck_assert_int_eq(okv_fold_v_projection(&rot, hkv, 0, wv), OKV_ERROR_BAD_SHAPE);
    rot.head_dim = 96;
    ck_assert_int_eq(okv_fold_v_projection(&rot, hkv, in, wv), OKV_ERROR_UNSUPPORTED_HEAD_DIM);
    free(rv);
    free(Hd);
    free(U);
    free(wv);
    free(wv0);
    free(wo);
    free(wo0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("calib_rotation");
    TCase *tc = tcase_create("rotation");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_hadamard_properties);
    tcase_add_test(tc, test_bitrev_perm);
    tcase_add_test(tc, test_compose_structure);
    tcase_add_test(tc, test_equalised_diagonal);
    tcase_add_test(tc, test_fold_projections);
    suite_add_tcase(s, tc);
    return okv_check_run(s);
}
