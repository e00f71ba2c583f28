/* eigen.c - symmetric eigensolvers (tridiagonal QL, cyclic Jacobi) and their check. */
#include "eigen.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EIG_QL_MAX_ITER 60
#define EIG_JACOBI_MAX_SWEEPS 80

static void symmetrise(int n, const double *C, double *A)
{
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j)
            A[(size_t)i * n + j] = 0.5 * (C[(size_t)i * n + j] + C[(size_t)j * n + i]);
}

static int all_finite(size_t n, const double *x)
{
    for (size_t i = 0; i < n; ++i)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* Sign convention: the largest-magnitude component of each eigenvector (the first one
 * on ties) is positive. Eigenvectors of distinct eigenvalues are then unique, whichever
 * solver produced them; R = U H P depends on these signs. */
static void canonical_signs(int n, double *U)
{
    for (int j = 0; j < n; ++j) {
        int arg = 0;
        double best = -1.0;
        for (int i = 0; i < n; ++i) {
            double a = fabs(U[(size_t)i * n + j]);
            if (a > best) {
                best = a;
                arg = i;
            }
        }
        if (U[(size_t)arg * n + j] < 0.0)
            for (int i = 0; i < n; ++i)
                U[(size_t)i * n + j] = -U[(size_t)i * n + j];
    }
}

static void transpose(int n, double *A)
{
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j) {
            double t = A[(size_t)i * n + j];
            A[(size_t)i * n + j] = A[(size_t)j * n + i];
            A[(size_t)j * n + i] = t;
        }
}

/* Sort eigenvalues ascending, permuting the columns of U alongside (selection sort). */
static void sort_ascending(int n, double *U, double *w)
{
    for (int i = 0; i < n - 1; ++i) {
        int k = i;
        for (int j = i + 1; j < n; ++j)
            if (w[j] < w[k]) k = j;
        if (k != i) {
            double t = w[i];
            w[i] = w[k];
            w[k] = t;
            for (int r = 0; r < n; ++r) {
                t = U[(size_t)r * n + i];
                U[(size_t)r * n + i] = U[(size_t)r * n + k];
                U[(size_t)r * n + k] = t;
            }
        }
    }
}

/* Householder reduction of the symmetric V (in place) to tridiagonal form: diagonal d,
 * sub-diagonal e (e[i] couples i-1 and i), V the accumulated orthogonal transform. */
static void tred2(int n, double *V, double *d, double *e)
{
#define VV(i, j) V[(size_t)(i)*n + (j)]
    for (int j = 0; j < n; ++j)
        d[j] = VV(n - 1, j);
    for (int i = n - 1; i > 0; --i) {
        double scale = 0.0, h = 0.0;
        for (int k = 0; k < i; ++k)
            scale += fabs(d[k]);
        if (scale == 0.0) {
            e[i] = d[i - 1];
            for (int j = 0; j < i; ++j) {
                d[j] = VV(i - 1, j);
                VV(i, j) = 0.0;
                VV(j, i) = 0.0;
            }
        } else {
            for (int k = 0; k < i; ++k) {
                d[k] /= scale;
                h += d[k] * d[k];
            }
            double f = d[i - 1];
            double g = sqrt(h);
            if (f > 0) g = -g;
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            for (int j = 0; j < i; ++j)
                e[j] = 0.0;
            for (int j = 0; j < i; ++j) {
                f = d[j];
                VV(j, i) = f;
                g = e[j] + VV(j, j) * f;
                for (int k = j + 1; k <= i - 1; ++k) {
                    g += VV(k, j) * d[k];
                    e[k] += VV(k, j) * f;
                }
                e[j] = g;
            }
            f = 0.0;
            for (int j = 0; j < i; ++j) {
                e[j] /= h;
                f += e[j] * d[j];
            }
            double hh = f / (h + h);
            for (int j = 0; j < i; ++j)
                e[j] -= hh * d[j];
            for (int j = 0; j < i; ++j) {
                f = d[j];
                g = e[j];
                for (int k = j; k <= i - 1; ++k)
                    VV(k, j) -= (f * e[k] + g * d[k]);
                d[j] = VV(i - 1, j);
                VV(i, j) = 0.0;
            }
        }
        d[i] = h;
    }
    for (int i = 0; i < n - 1; ++i) {
        VV(n - 1, i) = VV(i, i);
        VV(i, i) = 1.0;
        double h = d[i + 1];
        if (h != 0.0) {
            for (int k = 0; k <= i; ++k)
                d[k] = VV(k, i + 1) / h;
            for (int j = 0; j <= i; ++j) {
                double g = 0.0;
                for (int k = 0; k <= i; ++k)
                    g += VV(k, i + 1) * VV(k, j);
                for (int k = 0; k <= i; ++k)
                    VV(k, j) -= g * d[k];
            }
        }
        for (int k = 0; k <= i; ++k)
            VV(k, i + 1) = 0.0;
    }
    for (int j = 0; j < n; ++j) {
        d[j] = VV(n - 1, j);
        VV(n - 1, j) = 0.0;
    }
    VV(n - 1, n - 1) = 1.0;
    e[0] = 0.0;
#undef VV
}

/* Implicit QL on the tridiagonal (d, e), accumulating into V. 0 when an eigenvalue
 * needs more than EIG_QL_MAX_ITER iterations. */
static int tql2(int n, double *V, double *d, double *e)
{
#define VV(i, j) V[(size_t)(j)*n + (i)] /* V holds the transpose: VV(k, i) = component k of vector i */
    for (int i = 1; i < n; ++i)
        e[i - 1] = e[i];
    e[n - 1] = 0.0;
    double f = 0.0, tst1 = 0.0;
    const double eps = DBL_EPSILON;
    for (int l = 0; l < n; ++l) {
        tst1 = fmax(tst1, fabs(d[l]) + fabs(e[l]));
        int m = l;
        while (m < n - 1) {
            if (fabs(e[m]) <= eps * tst1) break;
            ++m;
        }
        if (m > l) {
            int iter = 0;
            do {
                if (++iter > EIG_QL_MAX_ITER) return 0;
                double g = d[l];
                double p = (d[l + 1] - g) / (2.0 * e[l]);
                double r = hypot(p, 1.0);
                if (p < 0) r = -r;
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                double dl1 = d[l + 1];
                double h = g - d[l];
                for (int i = l + 2; i < n; ++i)
                    d[i] -= h;
                f += h;
                p = d[m];
                double c = 1.0, c2 = 1.0, c3 = 1.0;
                double el1 = e[l + 1];
                double s = 0.0, s2 = 0.0;
                for (int i = m - 1; i >= l; --i) {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * e[i];
                    h = c * p;
                    r = hypot(p, e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    for (int k = 0; k < n; ++k) {
                        h = VV(k, i + 1);
                        VV(k, i + 1) = s * VV(k, i) + c * h;
                        VV(k, i) = c * VV(k, i) - s * h;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
            } while (fabs(e[l]) > eps * tst1);
        }
        d[l] += f;
        e[l] = 0.0;
    }
    return 1;
#undef VV
}

static okv_status_t verify(int n, const double *C, const double *U, const double *w)
{
    double res, orth;
    okv_eig_check(n, C, U, w, &res, &orth);
    if (!(res <= OKV_EIG_RESIDUAL_TOL) || !(orth <= OKV_EIG_ORTHO_TOL)) return OKV_ERROR_NOT_CONVERGED;
    return OKV_SUCCESS;
}

okv_status_t okv_eig_tridiag_ql(int n, const double *C, double *U, double *w)
{
    if (n < 1 || !C || !U || !w) return OKV_ERROR_INVALID_ARGUMENT;
    if (!all_finite((size_t)n * n, C)) return OKV_ERROR_NOT_CONVERGED;
    double *e = malloc(sizeof(double) * (size_t)n);
    if (!e) return OKV_ERROR_OUT_OF_MEMORY;
    symmetrise(n, C, U);
    tred2(n, U, w, e);
    /* QL rotates pairs of eigenvector columns: run it on the transpose so that those
     * become contiguous rows (tql2 below indexes VV(k, i) = Vt[i][k]). */
    transpose(n, U);
    int ok = tql2(n, U, w, e);
    transpose(n, U);
    free(e);
    if (!ok) return OKV_ERROR_NOT_CONVERGED;
    sort_ascending(n, U, w);
    canonical_signs(n, U);
    return verify(n, C, U, w);
}

okv_status_t okv_eig_jacobi(int n, const double *C, double *U, double *w)
{
    if (n < 1 || !C || !U || !w) return OKV_ERROR_INVALID_ARGUMENT;
    if (!all_finite((size_t)n * n, C)) return OKV_ERROR_NOT_CONVERGED;
    double *A = malloc(sizeof(double) * (size_t)n * n);
    if (!A) return OKV_ERROR_OUT_OF_MEMORY;
    symmetrise(n, C, A);
    memset(U, 0, sizeof(double) * (size_t)n * n);
    for (int i = 0; i < n; ++i)
        U[(size_t)i * n + i] = 1.0;
    double norm = 0.0;
    for (size_t i = 0; i < (size_t)n * n; ++i)
        norm += A[i] * A[i];
    norm = sqrt(norm);
    int converged = 0;
    for (int sweep = 0; sweep < EIG_JACOBI_MAX_SWEEPS && !converged; ++sweep) {
        double off = 0.0;
        for (int p = 0; p < n; ++p)
            for (int q = p + 1; q < n; ++q)
                off += A[(size_t)p * n + q] * A[(size_t)p * n + q];
        if (sqrt(2.0 * off) <= 1e-17 * norm || off == 0.0) {
            converged = 1;
            break;
        }
        for (int p = 0; p < n; ++p) {
            for (int q = p + 1; q < n; ++q) {
                double apq = A[(size_t)p * n + q];
                if (fabs(apq) <= 1e-300) continue;
                double app = A[(size_t)p * n + p], aqq = A[(size_t)q * n + q];
                /* skip when below roundoff of both diagonal entries */
                if (fabs(apq) < 1e-18 * (fabs(app) + fabs(aqq)) && sweep > 3) {
                    A[(size_t)p * n + q] = A[(size_t)q * n + p] = 0.0;
                    continue;
                }
                double theta = (aqq - app) / (2.0 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < n; ++k) { /* columns: A J */
                    double akp = A[(size_t)k * n + p], akq = A[(size_t)k * n + q];
                    A[(size_t)k * n + p] = c * akp - s * akq;
                    A[(size_t)k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; ++k) { /* rows: J^T (A J) */
                    double apk = A[(size_t)p * n + k], aqk = A[(size_t)q * n + k];
                    A[(size_t)p * n + k] = c * apk - s * aqk;
                    A[(size_t)q * n + k] = s * apk + c * aqk;
                }
                A[(size_t)p * n + q] = A[(size_t)q * n + p] = 0.0;
                for (int k = 0; k < n; ++k) { /* U J */
                    double ukp = U[(size_t)k * n + p], ukq = U[(size_t)k * n + q];
                    U[(size_t)k * n + p] = c * ukp - s * ukq;
                    U[(size_t)k * n + q] = s * ukp + c * ukq;
                }
            }
        }
    }
    for (int i = 0; i < n; ++i)
        w[i] = A[(size_t)i * n + i];
    free(A);
    sort_ascending(n, U, w);
    canonical_signs(n, U);
    return verify(n, C, U, w);
}

okv_status_t okv_eig_sym(int n, const double *C, double *U, double *w)
{
    okv_status_t st = okv_eig_tridiag_ql(n, C, U, w);
    if (st == OKV_ERROR_NOT_CONVERGED && all_finite((size_t)n * n, C)) st = okv_eig_jacobi(n, C, U, w);
    return st;
}

void okv_eig_check(int n, const double *C, const double *U, const double *w, double *rel_residual, double *ortho_err)
{
    size_t nn = (size_t)n * n;
    double *S = malloc(sizeof(double) * nn), *P = malloc(sizeof(double) * nn);
    if (!S || !P) {
        free(S);
        free(P);
        *rel_residual = *ortho_err = INFINITY;
        return;
    }
    symmetrise(n, C, S);
    double cn = 0.0, res = 0.0, orth = 0.0;
    for (size_t i = 0; i < nn; ++i)
        cn += S[i] * S[i];
    /* P = S U (row i: sum_k S[i][k] U[k][:]), residual P - U diag(w) */
    memset(P, 0, sizeof(double) * nn);
    for (int i = 0; i < n; ++i)
        for (int k = 0; k < n; ++k) {
            double sik = S[(size_t)i * n + k];
            const double *uk = U + (size_t)k * n;
            double *pi = P + (size_t)i * n;
            for (int j = 0; j < n; ++j)
                pi[j] += sik * uk[j];
        }
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) {
            double r = P[(size_t)i * n + j] - U[(size_t)i * n + j] * w[j];
            res += r * r;
        }
    /* P = U^T U as a sum of rank-1 updates over the rows of U */
    memset(P, 0, sizeof(double) * nn);
    for (int k = 0; k < n; ++k) {
        const double *uk = U + (size_t)k * n;
        for (int i = 0; i < n; ++i) {
            double uki = uk[i];
            double *pi = P + (size_t)i * n;
            for (int j = 0; j < n; ++j)
                pi[j] += uki * uk[j];
        }
    }
    for (int i = 0; i < n && orth == orth; ++i)
        for (int j = 0; j < n; ++j) {
            double o = P[(size_t)i * n + j] - ((i == j) ? 1.0 : 0.0);
            if (o != o) {
                orth = NAN;
                break;
            }
            if (fabs(o) > orth) orth = fabs(o);
        }
    free(S);
    free(P);
    if (orth != orth) orth = INFINITY;
    cn = sqrt(cn);
    res = sqrt(res);
    *rel_residual = cn > 0 ? res / cn : (res == 0 ? 0.0 : INFINITY);
    if (res != res) *rel_residual = INFINITY;
    *ortho_err = orth;
}
