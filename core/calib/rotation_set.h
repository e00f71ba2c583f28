/* rotation_set.h - the in-memory rotation set (what a rotation file holds). */
#ifndef OKV_ROTATION_SET_H
#define OKV_ROTATION_SET_H

#include "oscarkv/oscarkv.h"

#include <stddef.h>

#define OKV_ROT_MAX_LAYERS 4096
#define OKV_ROT_MAX_NROT 1024
#define OKV_ROT_MAX_META 256
#define OKV_ROT_MAX_META_KEY 256
#define OKV_ROT_MAX_META_VALUE (1 << 20)
/* Loaded rotations must satisfy max |R^T R - I| <= this. */
#define OKV_ROT_ORTHO_TOL 1e-3

typedef struct okv_rot_layer {
    float *k_rot, *v_rot; /* [n_rot, d, d] */
    float *k_eig, *v_eig; /* [n_rot, d] or NULL */
    float *k_mean;        /* [n_rot, d] mean key (subtracted before rotation) or NULL */
    float *q_rot;         /* [n_rot, d, d] queries' matrix (= k_rot^-T, key scaling) or NULL: queries use k_rot */
    float k_clip, v_clip;
} okv_rot_layer_t;

typedef struct okv_meta_kv {
    char *key, *value;
} okv_meta_kv_t;

struct okv_rotation_set {
    int32_t n_layers, head_dim, n_rot;
    okv_rot_layer_t *layers;
    okv_meta_kv_t meta[OKV_ROT_MAX_META];
    int n_meta;
};

/* Set a metadata entry without the read-only-key check (loader, finalize). */
okv_status_t okv_rot_meta_put(okv_rotation_set_t *rs, const char *key, const char *value);

/* max |R^T R - I| over one d x d float matrix (computed in double). */
double okv_rot_ortho_error(int d, const float *R);
/* max |R Q^T - I| (computed in double): 0 when Q = R^-T, the pair key scaling stores. */
double okv_rot_pair_error(int d, const float *R, const float *Q);
/* Whether an okv_layer_rotation_t of this size has the q_rotation field. */
#define OKV_LAYER_ROTATION_HAS_Q(size) ((size) >= offsetof(okv_layer_rotation_t, q_rotation) + sizeof(const float *))

#endif
