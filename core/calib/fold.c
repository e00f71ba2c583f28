/* fold.c - fold R_V into the value and output projections (SPEC 5.1), host side.
 * v = x W_v, so v R = x (W_v R): the columns of head h of W_v are multiplied by R_V,h.
 * o (un-rotated) = o' R^T, so o W_o = o' (R^T W_o): the d rows of query head i of W_o
 * are replaced by R_V,h^T times them (h = i / (Hq / Hkv)). Accumulation in double. */
#include "calib_util.h"

#include <stdlib.h>
#include <string.h>

static okv_status_t check_rot(const okv_layer_rotation_t *rot, int32_t n_kv_heads)
{
    if (rot->size < sizeof *rot) return OKV_ERROR_INVALID_ARGUMENT;
    if (!rot->v_rotation) return OKV_ERROR_NULL_POINTER;
    if (!okv_calib_head_dim_ok(rot->head_dim)) return OKV_ERROR_UNSUPPORTED_HEAD_DIM;
    if (n_kv_heads < 1 || (rot->n_rot != 1 && rot->n_rot != n_kv_heads)) return OKV_ERROR_BAD_SHAPE;
    return OKV_SUCCESS;
}

static const float *rv_of(const okv_layer_rotation_t *rot, int32_t h)
{
    size_t d = (size_t)rot->head_dim;
    return rot->v_rotation + (rot->n_rot == 1 ? 0 : (size_t)h * d * d);
}

OKV_API okv_status_t okv_fold_v_projection(const okv_layer_rotation_t *rot, int32_t n_kv_heads, int32_t in_features,
                                           float *w_v)
{
    if (!rot || !w_v) return OKV_ERROR_NULL_POINTER;
    okv_status_t st = check_rot(rot, n_kv_heads);
    if (st != OKV_SUCCESS) return st;
    if (in_features < 1) return OKV_ERROR_BAD_SHAPE;
    int d = rot->head_dim;
    size_t cols = (size_t)n_kv_heads * d;
    double *acc = malloc(sizeof(double) * (size_t)d);
    if (!acc) return OKV_ERROR_OUT_OF_MEMORY;
    for (int32_t r = 0; r < in_features; ++r) {
        float *row = w_v + (size_t)r * cols;
        for (int32_t h = 0; h < n_kv_heads; ++h) {
            const float *R = rv_of(rot, h);
            float *x = row + (size_t)h * d;
            for (int c = 0; c < d; ++c)
                acc[c] = 0.0;
            for (int a = 0; a < d; ++a) {
                double xa = x[a];
                const float *Ra = R + (size_t)a * d;
                for (int c = 0; c < d; ++c)
                    acc[c] += xa * Ra[c];
            }
            for (int c = 0; c < d; ++c)
                x[c] = (float)acc[c];
        }
    }
    free(acc);
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_fold_o_projection(const okv_layer_rotation_t *rot, int32_t n_q_heads, int32_t n_kv_heads,
                                           int32_t out_features, float *w_o)
{
    if (!rot || !w_o) return OKV_ERROR_NULL_POINTER;
    okv_status_t st = check_rot(rot, n_kv_heads);
    if (st != OKV_SUCCESS) return st;
    if (n_q_heads < 1 || n_q_heads % n_kv_heads != 0 || out_features < 1) return OKV_ERROR_BAD_SHAPE;
    int d = rot->head_dim, g = n_q_heads / n_kv_heads;
    size_t oc = (size_t)out_features;
    double *acc = malloc(sizeof(double) * (size_t)d * oc);
    if (!acc) return OKV_ERROR_OUT_OF_MEMORY;
    for (int32_t i = 0; i < n_q_heads; ++i) {
        const float *R = rv_of(rot, i / g);
        float *blk = w_o + (size_t)i * d * oc; /* d x out */
        memset(acc, 0, sizeof(double) * (size_t)d * oc);
        /* (R^T B)[a][:] = sum_b R[b][a] B[b][:] */
        for (int b = 0; b < d; ++b) {
            const float *Bb = blk + (size_t)b * oc;
            for (int a = 0; a < d; ++a) {
                double rba = R[(size_t)b * d + a];
                double *acc_a = acc + (size_t)a * oc;
                for (size_t c = 0; c < oc; ++c)
                    acc_a[c] += rba * Bb[c];
            }
        }
        for (size_t x = 0; x < (size_t)d * oc; ++x)
            blk[x] = (float)acc[x];
    }
    free(acc);
    return OKV_SUCCESS;
}
