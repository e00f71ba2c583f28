/* test_calib_eigen.c - symmetric eigensolvers: residual, orthogonality, ordering,
 * degenerate spectra, failure on non-finite input. */
#include "calib/eigen.h"

#include <check.h>

#include "okv_check_run.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 12345;
static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return ((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0 - 1.0;
}

/* C = A^T A scaled + optional anisotropy: an SPD covariance with a spread spectrum */
static double *random_cov(int n, int spread)
{
    double *A = malloc(sizeof(double) * n * n), *C = calloc((size_t)n * n, sizeof(double));
    for (int i = 0; i < n * n; ++i)
        A[i] = urand();
    for (int r = 0; r < n; ++r) {
        double s = spread ? pow(10.0, 4.0 * r / n - 2.0) : 1.0;
        for (int a = 0; a < n; ++a)
            for (int b = 0; b < n; ++b)
                C[a * n + b] += s * A[r * n + a] * A[r * n + b];
    }
    free(A);
    return C;
}

typedef okv_status_t (*solver_fn)(int, const double *, double *, double *);

static void check_solver(solver_fn f, int n, const double *C)
{
    double *U = malloc(sizeof(double) * n * n), *w = malloc(sizeof(double) * n);
    ck_assert_int_eq(f(n, C, U, w), OKV_SUCCESS);
    double res, orth;
    okv_eig_check(n, C, U, w, &res, &orth);
    ck_assert_msg(res <= 1e-12, "n=%d residual %g", n, res);
    ck_assert_msg(orth <= 1e-13, "n=%d orthogonality %g", n, orth);
    for (int i = 1; i < n; ++i)
        ck_assert(w[i - 1] <= w[i]);
    /* trace is preserved */
    double tr = 0, sw = 0;
    for (int i = 0; i < n; ++i) {
        tr += C[i * n + i];
        sw += w[i];
    }
    ck_assert_double_eq_tol(tr, sw, 1e-10 * fabs(tr) + 1e-14);
    free(U);
    free(w);
}

START_TEST(test_random_spd)
{
    static const int dims[] = {1, 2, 3, 7, 64, 128, 256};
    for (size_t k = 0; k < sizeof dims / sizeof dims[0]; ++k) {
        int n = dims[k];
        double *C = random_cov(n, 1);
        check_solver(okv_eig_sym, n, C);
        check_solver(okv_eig_tridiag_ql, n, C);
        if (n <= 128) check_solver(okv_eig_jacobi, n, C);
        free(C);
    }
}
END_TEST

/* Canonical signs: both solvers return the same eigenvectors for distinct eigenvalues. */
START_TEST(test_solvers_agree)
{
    int n = 64;
    double *C = random_cov(n, 1), *U1 = malloc(sizeof(double) * n * n), *U2 = malloc(sizeof(double) * n * n), w1[64],
           w2[64];
    ck_assert_int_eq(okv_eig_tridiag_ql(n, C, U1, w1), OKV_SUCCESS);
    ck_assert_int_eq(okv_eig_jacobi(n, C, U2, w2), OKV_SUCCESS);
    for (int j = 0; j < n; ++j) {
        ck_assert_double_eq_tol(w1[j], w2[j], 1e-12 * fabs(w2[n - 1]));
        double big = 0;
        int arg = 0;
        for (int i = 0; i < n; ++i) {
            ck_assert_double_eq_tol(U1[i * n + j], U2[i * n + j], 1e-9);
            if (fabs(U1[i * n + j]) > big) {
                big = fabs(U1[i * n + j]);
                arg = i;
            }
        }
        ck_assert(U1[arg * n + j] > 0);
    }
    free(C);
    free(U1);
    free(U2);
}
END_TEST

START_TEST(test_indefinite_nonsymmetric_input)
{
    int n = 64;
    double *C = malloc(sizeof(double) * n * n);
    for (int i = 0; i < n * n; ++i)
        C[i] = urand(); /* not symmetric: its symmetric part is used */
    check_solver(okv_eig_sym, n, C);
    check_solver(okv_eig_jacobi, n, C);
    free(C);
}
END_TEST

START_TEST(test_degenerate)
{
    int n = 128;
    double *C = calloc((size_t)n * n, sizeof(double));
    /* zero matrix */
    check_solver(okv_eig_sym, n, C);
    check_solver(okv_eig_jacobi, n, C);
    /* identity * 3 */
    for (int i = 0; i < n; ++i)
        C[i * n + i] = 3.0;
    check_solver(okv_eig_sym, n, C);
    check_solver(okv_eig_jacobi, n, C);
    /* rank one: x x^T */
    double x[128];
    for (int i = 0; i < n; ++i)
        x[i] = urand();
    for (int a = 0; a < n; ++a)
        for (int b = 0; b < n; ++b)
            C[a * n + b] = x[a] * x[b];
    check_solver(okv_eig_sym, n, C);
    check_solver(okv_eig_jacobi, n, C);
    /* two clusters of repeated eigenvalues, rotated: Q diag Q^T with Q Householder */
    double v[128], nv = 0;
    for (int i = 0; i < n; ++i) {
        v[i] = urand();
        nv += v[i] * v[i];
    }
    for (int a = 0; a < n; ++a)
        for (int b = 0; b < n; ++b) {
            double s = 0;
            for (int k = 0; k < n; ++k) {
                double qa = (a == k) - 2 * v[a] * v[k] / nv, qb = (b == k) - 2 * v[b] * v[k] / nv;
                s += qa * (k < n / 2 ? 1.0 : 1e6) * qb;
            }
            C[a * n + b] = s;
        }
    check_solver(okv_eig_sym, n, C);
    free(C);
}
END_TEST

START_TEST(test_diagonal_known)
{
    double C[16] = {4, 0, 0, 0, 0, -1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0.5};
    double U[16], w[4];
    ck_assert_int_eq(okv_eig_sym(4, C, U, w), OKV_SUCCESS);
    ck_assert_double_eq_tol(w[0], -1, 1e-15);
    ck_assert_double_eq_tol(w[1], 0.5, 1e-15);
    ck_assert_double_eq_tol(w[2], 2, 1e-15);
    ck_assert_double_eq_tol(w[3], 4, 1e-15);
    ck_assert_double_eq_tol(fabs(U[1 * 4 + 0]), 1.0, 1e-15); /* eigenvector of -1 is e1 */
}
END_TEST

START_TEST(test_nonfinite)
{
    double C[4] = {1, NAN, NAN, 1}, U[4], w[2];
    ck_assert_int_eq(okv_eig_sym(2, C, U, w), OKV_ERROR_NOT_CONVERGED);
    C[1] = C[2] = INFINITY;
    ck_assert_int_eq(okv_eig_jacobi(2, C, U, w), OKV_ERROR_NOT_CONVERGED);
    ck_assert_int_eq(okv_eig_sym(0, C, U, w), OKV_ERROR_INVALID_ARGUMENT);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("calib_eigen");
    TCase *tc = tcase_create("eigen");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_random_spd);
    tcase_add_test(tc, test_solvers_agree);
    tcase_add_test(tc, test_indefinite_nonsymmetric_input);
    tcase_add_test(tc, test_degenerate);
    tcase_add_test(tc, test_diagonal_known);
    tcase_add_test(tc, test_nonfinite);
    suite_add_tcase(s, tc);
    return okv_check_run(s);
}
