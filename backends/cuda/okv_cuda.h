/*
 * okv_cuda.h - internal interface of the CUDA backend (not installed).
 *
 * Host glue (okv_cuda_backend.cu) owns the state and the validation order; kernels
 * live in okv_cuda_decode.cu (decode attention, split-K + LSE merge),
 * okv_cuda_prefill.cu (tensor-core flash prefill over a staged history) and
 * okv_cuda_ops.cu (rotate, append, demote, dequantize, the naive prefill and the
 * prefill staging kernel, moments, and the launchers of the device-side validation
 * shared with the HIP backend in backends/common/okv_gpu_validate.h). The benchmark (bench/cuda) links these
 * sources directly and also reaches the BF16-cache decode path through
 * okvc_decode_launch with bf16_only = 1.
 */
#ifndef OKV_CUDA_H
#define OKV_CUDA_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "backend_iface.h"
#include "../common/okv_gpu_validate.h"

typedef struct okvc_state {
    int device;
    cudaStream_t stream;
    int own_stream;
    int num_sms;
    int max_smem_optin;
    int cc_major, cc_minor;
    int *d_status;    /* device status word: OKV_GPU_FLAG_* bits */
    int trust_inputs; /* OKV_CUDA_TRUST_INPUTS=1: no validation, no host sync in ops */
    int *h_status;    /* pinned host copy of the status word */
} okvc_state_t;

/* Device-side description of one layer's cache (plain pointers). */
typedef struct okvc_cache {
    int batch, hq, hkv, d, page, group, ng, meta_dtype, quantizer, clip_mode;
    int s0, w, f;
    const int *seq_lens, *int2_lens; /* device int32 [batch] */
    int *seq_lens_rw, *int2_lens_rw;
    const int *int2_indptr, *int2_indices, *bf16_indptr, *bf16_indices;
    unsigned char *int2_pool;
    unsigned long long int2_page_bytes;
    unsigned short *bf16_pool; /* bf16 bits */
    unsigned long long bf16_page_elems;
    /* validation only: capacities known on the host */
    long long int2_cap, bf16_cap; /* int32 entries of the index buffers */
    int int2_pool_pages, bf16_pool_pages;
} okvc_cache_t;

typedef struct okvc_decode_args {
    okvc_cache_t c;
    const void *q;
    int q_dtype;
    void *out;
    int out_dtype;
    float *lse;
    float sm_scale;
    int max_seq_len;
    int num_splits; /* 0: choose */
    const float *v_rotation;
    int per_head_rotation, unrotate;
    void *workspace;
    size_t workspace_bytes;
    int bf16_only; /* bench: every position is a BF16 row at slot = position */
} okvc_decode_args_t;

/* V of the flash prefill is stored as fp16(v * 2^shift): the power of two that puts
 * the largest |v| of its (sequence, KV head) in [2^14, 2^15), so fp16 keeps 11 bits of
 * every value and cannot overflow; the output is scaled back by 2^-shift. */
#ifdef __CUDACC__
static __host__ __device__ __forceinline__ int okvc_prefill_vshift(unsigned int max_bits)
{
    const int e = (int)((max_bits >> 23) & 0xffu); /* biased exponent of max |v| */
    if (e == 0xff) return 0;                       /* Inf / NaN (trusted inputs only) */
    return e == 0 ? 140 : 141 - e;                 /* max in [2^(e-127), 2^(e-126)) -> [2^14, 2^15) */
}
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Tuning knob for the benchmark: 0 = defaults; 2 or 4 = stages per warp of the
 * d=128, group=d, fp16-metadata INT2 kernel and of the d=128 BF16-cache kernel. */
extern int okvc_decode_stages_override;

/* Splits the launch will use for these arguments (grid.x of the attention kernel). */
int okvc_decode_plan(const okvc_state_t *st, const okvc_decode_args_t *a);
size_t okvc_decode_workspace(const okvc_state_t *st, const okvc_decode_args_t *a);
/* Returns a cudaError_t. */
int okvc_decode_launch(const okvc_state_t *st, const okvc_decode_args_t *a);

/* okv_cuda_ops.cu; each returns a cudaError_t. */
/* Device-side validation into st->d_status (modes: okv_gpu_validate.h). */
int okvc_validate_launch(const okvc_state_t *st, const okvc_cache_t *c, int need_mode, int n, const int *aip,
                         int row_mode, const int *rip, int n_rows);
/* OKV_GPU_FLAG_NONFINITE when one of the n elements of x (f32/f16/bf16) is NaN or Inf. */
int okvc_check_finite_launch(const okvc_state_t *st, const void *x, int dtype, size_t n);
/* commit 0: dry run (status bits only, nothing written; skipped when the status word
 * already holds OKV_GPU_FLAG_BAD_INDEX); 1: store rows and lengths (a row whose
 * metadata overflows or whose rotation is not finite is skipped and flagged). */
int okvc_append_launch(const okvc_state_t *st, const okvc_cache_t *c, const void *k, const void *v, int dtype,
                       const int *append_indptr, int n_rows, const float *krot, const float *vrot, int per_head,
                       float kclip, float vclip, const float *kbias /* NULL: none */, int commit);
int okvc_demote_launch(const okvc_state_t *st, const okvc_cache_t *c, int n_rows, float kclip, float vclip, int commit);
int okvc_rotate_launch(const okvc_state_t *st, const void *x, int xd, void *out, int od, const float *R, int n_rows,
                       int n_heads, int d, int per_head, int hg, int transpose, const float *bias /* NULL: none */);
int okvc_dequantize_launch(const okvc_state_t *st, const okvc_cache_t *c, const int *out_indptr, int out_rows,
                           void *kout, void *vout, int od);
int okvc_prefill_launch(const okvc_state_t *st, const okvc_cache_t *c, const int *q_indptr, int n_rows, const void *q,
                        const void *kn, const void *vn, int idt, void *out, int od, float sm_scale);
int okvc_moments_launch(const okvc_state_t *st, const void *x, int xd, const float *w, void *acc, int acc_dtype,
                        int n_rows, int n_heads, int d, int hg);

/* Prefill staging (okv_cuda_ops.cu, reuses the cache row reader): every row t <
 * seq_lens[b] + n_b (history dequantised, then the chunk's k_new / v_new) of (b, kv
 * head h) goes to row ((b * Hkv + h) * cap + t) of the workspace arrays. pass 0:
 * vmax[b * Hkv + h] = max |v| (float bits, atomicMax; the caller zeroes it first)
 * and OKV_GPU_FLAG_BAD_INDEX when seq_len + n_b > cap; pass 1: K as a bf16 hi + lo
 * pair (x = hi + lo to ~16 bits), V as fp16 scaled by 2^okvc_prefill_vshift(vmax). */
int okvc_prefill_stage_launch(const okvc_state_t *st, const okvc_cache_t *c, const int *q_indptr, const void *kn,
                              const void *vn, int idt, int cap, int pass, unsigned short *khi, unsigned short *klo,
                              unsigned short *vh, unsigned int *vmax);

/* okv_cuda_prefill.cu: the flash prefill (mma.sync, staged bf16/fp16 history). */
/* 1 when the flash kernel handles head_dim d with q/k/v in in_dtype on this device. */
int okvc_prefill_flash_ok(const okvc_state_t *st, int d, int in_dtype);
/* Workspace bytes of the flash path: K hi, K lo, V (2 bytes each) for batch * Hkv *
 * cap rows of d, the per-(b, h) V maxima, 256 bytes of alignment slack. */
size_t okvc_prefill_workspace(int batch, int hkv, int d, int cap);
/* OKV_GPU_FLAG_BAD_INDEX into st->d_status when a sequence's seq_len + n_b exceeds cap
 * (validated mode, before the status read-back). */
int okvc_prefill_bound_launch(const okvc_state_t *st, const okvc_cache_t *c, const int *q_indptr, int cap);
/* Stage + flash attention; ws holds okvc_prefill_workspace(batch, hkv, d, cap) bytes. */
int okvc_prefill_flash_launch(const okvc_state_t *st, const okvc_cache_t *c, const int *q_indptr, int n_rows,
                              const void *q, const void *kn, const void *vn, int idt, void *out, int od, float sm_scale,
                              void *ws, int cap);

#ifdef __cplusplus
}
#endif
#endif /* OKV_CUDA_H */
