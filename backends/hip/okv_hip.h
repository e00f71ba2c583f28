/*
 * okv_hip.h - internal interface of the HIP backend (not installed).
 *
 * okv_hip_backend.hip: runtime glue, validation order, function table.
 * okv_hip_kernels.hip: every kernel and its launcher (rotate, validate, finite
 * check, append/demote, dequantize, decode split + merge, prefill, moments) and the
 * CDNA MFMA score path with its start-up self-test. The validate and finite-check
 * kernels are shared with the CUDA backend (backends/common/okv_gpu_validate.h).
 * Launchers return a hipError_t (cudaError_t in the NVIDIA build) as an int.
 */
#ifndef OKV_HIP_H
#define OKV_HIP_H

#include <stddef.h>
#include <stdint.h>

#include "backend_iface.h"
#include "../common/okv_gpu_validate.h"

/* Device status-word bits (data-dependent failures found by kernels), shared with
 * the CUDA backend (backends/common/okv_gpu_validate.h). */
#define OKVH_FLAG_META_OVERFLOW OKV_GPU_FLAG_META_OVERFLOW
#define OKVH_FLAG_NONFINITE OKV_GPU_FLAG_NONFINITE
#define OKVH_FLAG_BAD_INDEX OKV_GPU_FLAG_BAD_INDEX

typedef struct okvh_state {
    int device;
    void *stream; /* hipStream_t / cudaStream_t */
    int own_stream;
    int warp;     /* the device's warpSize: launch shapes are multiples of it */
    int num_cus;  /* compute units (AMD) / SMs (NVIDIA) */
    int use_mfma; /* CDNA only, and only after the start-up self-test agreed */
    char arch[64];
    int *d_flags;     /* device status word */
    int trust_inputs; /* OKV_CONTEXT_TRUST_INPUTS / OKV_HIP_TRUST_INPUTS=1: no validation, no host sync */
    int *h_flags_scratch;
} okvh_state_t;

/* Device-side description of one layer's cache (plain pointers). */
typedef struct okvh_cache {
    int batch, hq, hkv, d, page, group, ng, meta_dtype, quantizer, clip_mode;
    int s0, w, f;
    int *seq_lens, *int2_lens; /* device int32 [batch] */
    const int *int2_indptr, *int2_indices, *bf16_indptr, *bf16_indices;
    unsigned char *int2_pool;
    unsigned long long int2_page_bytes;
    unsigned short *bf16_pool; /* bf16 bits */
    unsigned long long bf16_page_elems;
    /* validation only: capacities known on the host */
    long long int2_cap, bf16_cap;
    int int2_pool_pages, bf16_pool_pages;
} okvh_cache_t;

#ifdef __cplusplus
extern "C" {
#endif

/* Validation kernels (backends/common/okv_gpu_validate.h): set OKVH_FLAG_BAD_INDEX
 * in st->d_flags. need_mode 0: INT2 pages for the current int2_lens; 1: for
 * okv_int2_len_after with the rows of aip; 2: for int2_len + min(recent, n) (demote).
 * row_mode 0: none; 1: rip is an append/q indptr ending at n_rows; 2: rip is an
 * out_indptr with >= seq_len rows per sequence and rip[batch] <= n_rows. */
int okvh_validate_launch(const okvh_state_t *st, const okvh_cache_t *c, int need_mode, int n, const int *aip,
                         int row_mode, const int *rip, int n_rows);
/* OKVH_FLAG_NONFINITE when one of n elements of x (f32/f16/bf16) is NaN or Inf. */
int okvh_check_finite_launch(const okvh_state_t *st, const void *x, int dtype, size_t n);

/* out = (x - bias) R (or R^T); bias NULL: none, else f32 [d] or [n_heads / hg, d] (per_head). */
int okvh_rotate_launch(const okvh_state_t *st, const void *x, int xd, void *out, int od, const float *R, int n_rows,
                       int n_heads, int d, int per_head, int hg, int transpose, const float *bias);
/* commit 0: dry run (flags only, nothing written); 1: store. kbias (NULL: none): f32
 * [d] or [Hkv, d] (per_head), subtracted from keys before the rotation. */
int okvh_append_launch(const okvh_state_t *st, const okvh_cache_t *c, const void *k, const void *v, int dtype,
                       const int *append_indptr, int n_rows, const float *krot, const float *vrot, int per_head,
                       float kclip, float vclip, const float *kbias, int commit);
int okvh_demote_launch(const okvh_state_t *st, const okvh_cache_t *c, int n_rows, float kclip, float vclip, int commit);
int okvh_dequantize_launch(const okvh_state_t *st, const okvh_cache_t *c, const int *out_indptr, int out_rows,
                           void *kout, void *vout, int od);

typedef struct okvh_decode_args {
    okvh_cache_t c;
    const void *q;
    int q_dtype;
    void *out;
    int out_dtype;
    float *lse;
    float sm_scale;
    int max_seq_len;
    int num_splits;
    const float *v_rotation;
    int per_head_rotation, unrotate;
    void *workspace;
    size_t workspace_bytes;
} okvh_decode_args_t;

/* Splits used for these arguments (num_splits, or the planner's choice). */
int okvh_decode_splits(const okvh_state_t *st, const okvh_decode_args_t *a);
size_t okvh_decode_workspace(const okvh_state_t *st, const okvh_decode_args_t *a);
int okvh_decode_launch(const okvh_state_t *st, const okvh_decode_args_t *a);

int okvh_prefill_launch(const okvh_state_t *st, const okvh_cache_t *c, const int *q_indptr, int n_rows, const void *q,
                        const void *kn, const void *vn, int idt, void *out, int od, float sm_scale);
int okvh_moments_launch(const okvh_state_t *st, const void *x, int xd, const float *w, void *acc, int acc_dtype,
                        int n_rows, int n_heads, int d, int hg);

/* CDNA MFMA path: 1 when the device is gfx90a/gfx940-class and the MFMA score
 * kernel agrees exactly with a host product (run once at context creation). */
int okvh_mfma_selftest(const okvh_state_t *st);

#ifdef __cplusplus
}
#endif
#endif /* OKV_HIP_H */
