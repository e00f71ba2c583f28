/* hadamard.c - Hadamard matrix, bit-reversal permutation, R = U H P. */
#include "hadamard.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int popcount_u(unsigned x)
{
    int c = 0;
    while (x) {
        x &= x - 1u;
        ++c;
    }
    return c;
}

void okv_hadamard(int d, double *H)
{
    double s = 1.0 / sqrt((double)d);
    for (int i = 0; i < d; ++i)
        for (int m = 0; m < d; ++m)
            H[(size_t)i * d + m] = (popcount_u((unsigned)(i & m)) & 1) ? -s : s;
}

int okv_bit_reverse(int i, int d)
{
    int bits = 0;
    while ((1 << bits) < d)
        ++bits;
    int r = 0;
    for (int b = 0; b < bits; ++b)
        if (i & (1 << b)) r |= 1 << (bits - 1 - b);
    return r;
}

void okv_bitrev_perm(int d, int *perm)
{
    for (int j = 0; j < d; ++j)
        perm[j] = d - 1 - okv_bit_reverse(j, d);
}

int okv_method_uses_eigen(okv_rotation_method_t method)
{
    return method == OKV_ROT_OSCAR || method == OKV_ROT_U_ONLY || method == OKV_ROT_PLAIN_COV;
}

okv_status_t okv_compose_rotation(okv_rotation_method_t method, int d, const double *U, int use_perm, double *R)
{
    size_t dd = (size_t)d * d;
    switch (method) {
    case OKV_ROT_NONE:
        memset(R, 0, sizeof(double) * dd);
        for (int i = 0; i < d; ++i)
            R[(size_t)i * d + i] = 1.0;
        return OKV_SUCCESS;
    case OKV_ROT_HADAMARD: okv_hadamard(d, R); return OKV_SUCCESS;
    case OKV_ROT_U_ONLY:
        if (!U) return OKV_ERROR_NULL_POINTER;
        memcpy(R, U, sizeof(double) * dd);
        return OKV_SUCCESS;
    case OKV_ROT_OSCAR:
    case OKV_ROT_PLAIN_COV: {
        if (!U) return OKV_ERROR_NULL_POINTER;
        double *H = malloc(sizeof(double) * dd);
        double *UH = malloc(sizeof(double) * dd);
        int *perm = malloc(sizeof(int) * (size_t)d);
        if (!H || !UH || !perm) {
            free(H);
            free(UH);
            free(perm);
            return OKV_ERROR_OUT_OF_MEMORY;
        }
        okv_hadamard(d, H);
        for (int i = 0; i < d; ++i) {
            double *row = UH + (size_t)i * d;
            memset(row, 0, sizeof(double) * (size_t)d);
            for (int k = 0; k < d; ++k) {
                double u = U[(size_t)i * d + k];
                const double *h = H + (size_t)k * d;
                for (int m = 0; m < d; ++m)
                    row[m] += u * h[m];
            }
        }
        if (use_perm)
            okv_bitrev_perm(d, perm);
        else
            for (int j = 0; j < d; ++j)
                perm[j] = j;
        /* (U H P)[:, c] = (U H)[:, perm[c]] */
        for (int i = 0; i < d; ++i)
            for (int c = 0; c < d; ++c)
                R[(size_t)i * d + c] = UH[(size_t)i * d + perm[c]];
        free(H);
        free(UH);
        free(perm);
        return OKV_SUCCESS;
    }
    case OKV_ROT_FORCE_32BIT: break;
    }
    return OKV_ERROR_INVALID_ARGUMENT;
}
