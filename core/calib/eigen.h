/* eigen.h - symmetric eigensolver in double precision.
 * okv_eig_sym: Householder tridiagonalisation + implicit QL (Wilkinson shifts), verified;
 * falls back to cyclic Jacobi when the verification fails. Eigenvalues ascending,
 * eigenvectors as columns of U (row-major n x n: U[i*n + j] = component i of vector j).
 * Each eigenvector's largest-magnitude component is positive (first on ties), so both
 * solvers give the same U for distinct eigenvalues. Guarantees on success: ||C U - U diag(w)||_F <= 1e-12 ||C||_F and
 * max |U^T U - I| <= 1e-13, else OKV_ERROR_NOT_CONVERGED. */
#ifndef OKV_EIGEN_H
#define OKV_EIGEN_H

#include "oscarkv/oscarkv.h"

#define OKV_EIG_RESIDUAL_TOL 1e-12
#define OKV_EIG_ORTHO_TOL 1e-13

/* C is read only (its symmetric part (C + C^T)/2 is decomposed). n >= 1. */
okv_status_t okv_eig_sym(int n, const double *C, double *U, double *w);

/* The two solvers alone (tests compare them); same contract, no fallback. */
okv_status_t okv_eig_tridiag_ql(int n, const double *C, double *U, double *w);
okv_status_t okv_eig_jacobi(int n, const double *C, double *U, double *w);

/* ||C U - U diag(w)||_F / max(||C||_F, tiny) and max |U^T U - I| (C symmetrised). */
void okv_eig_check(int n, const double *C, const double *U, const double *w, double *rel_residual, double *ortho_err);

#endif
