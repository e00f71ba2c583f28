/* hadamard.h - normalised Sylvester-Hadamard matrix, bit-reversal permutation and the
 * composition R = U H P of SPEC section 2.4 (and its ablations). */
#ifndef OKV_HADAMARD_H
#define OKV_HADAMARD_H

#include "oscarkv/oscarkv.h"

/* H[i*d + m] = (-1)^popcount(i & m) / sqrt(d); d a power of two. */
void okv_hadamard(int d, double *H);

/* log2(d)-bit reversal of i (d a power of two). */
int okv_bit_reverse(int i, int d);

/* perm[j] = d - 1 - br(j): P = I[:, perm] for eigenvalues in ascending order. */
void okv_bitrev_perm(int d, int *perm);

/* R (d x d, row-major, used as x R) for one target:
 *   OSCAR, PLAIN_COV : U H P  (P = identity when !use_perm)
 *   U_ONLY           : U
 *   HADAMARD         : H      (QuaRot-style; P is not applied)
 *   NONE             : I
 * U: eigenvectors as columns (ascending eigenvalues); ignored for NONE and HADAMARD
 * (may be NULL then). */
okv_status_t okv_compose_rotation(okv_rotation_method_t method, int d, const double *U, int use_perm, double *R);

/* 1 when the method uses eigenvectors of a target. */
int okv_method_uses_eigen(okv_rotation_method_t method);

#endif
