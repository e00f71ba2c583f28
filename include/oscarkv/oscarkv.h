/*
 * oscarkv.h - public C API of oscarkv: a 2-bit KV cache with OSCAR rotations.
 *
 * Conventions
 * - Every call returns okv_status_t; okv_status_string() names it and
 *   okv_context_last_error() gives the detail of the last failure on a context.
 * - Handles are opaque. Parameter structs start with `size` (set it to sizeof the
 *   struct: fields may be appended in later versions without breaking the ABI);
 *   the *_init() helpers fill size and defaults.
 * - Memory is owned by the caller. Device memory is reached through okv_buffer_t,
 *   created by the library or wrapped around the caller's native handle (a CUDA/HIP
 *   device pointer, a cl_mem, or a host pointer for the "ref" backend); see the
 *   oscarkv_cuda.h / oscarkv_hip.h / oscarkv_opencl.h interop headers.
 * - Tensors are dense row-major; shapes are given in the parameter structs. Vectors
 *   are rows: a rotation R acts as x R. A ref's offset must be a multiple of its
 *   element size (4 for int32 arrays and f32 rotations), and of 64 for page pools.
 * - No call aborts or prints; logging goes to the callback set with okv_set_log_callback.
 */
#ifndef OSCARKV_H
#define OSCARKV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define OKV_API __declspec(dllexport)
#else
#define OKV_API __attribute__((visibility("default")))
#endif

#define OKV_VERSION_MAJOR 0
#define OKV_VERSION_MINOR 1
#define OKV_VERSION_PATCH 0

/* ------------------------------------------------------------------ status -- */
typedef enum okv_status {
    OKV_SUCCESS = 0,
    OKV_ERROR_NULL_POINTER = 1,         /* a required pointer/handle is NULL */
    OKV_ERROR_INVALID_ARGUMENT = 2,     /* a value out of its documented range */
    OKV_ERROR_BAD_SHAPE = 3,            /* inconsistent sizes, too-small buffers */
    OKV_ERROR_UNSUPPORTED_HEAD_DIM = 4, /* head_dim not in {64, 128, 256} */
    OKV_ERROR_NONFINITE_INPUT = 5,      /* NaN or Inf in input data */
    OKV_ERROR_METADATA_OVERFLOW = 6,    /* a scale/offset does not fit the metadata type */
    OKV_ERROR_OUT_OF_MEMORY = 7,        /* host or device allocation failed */
    OKV_ERROR_IO = 8,                   /* file could not be opened/read/written */
    OKV_ERROR_CORRUPT_FILE = 9,         /* rotation / npy file malformed or truncated */
    OKV_ERROR_BACKEND_UNAVAILABLE = 10, /* backend not built, runtime or device absent */
    OKV_ERROR_UNSUPPORTED = 11,         /* valid request this backend cannot do */
    OKV_ERROR_NOT_CONVERGED = 12,       /* eigensolver did not reach its tolerance */
    OKV_ERROR_DEVICE = 13,              /* the device runtime reported an error */
    OKV_ERROR_VERSION_MISMATCH = 14,    /* backend module built for another interface */
    OKV_ERROR_INSUFFICIENT_DATA = 15,   /* calibration has no (or too few) tokens */
    OKV_ERROR_INTERNAL = 16,            /* a bug: please report */
    OKV_STATUS_FORCE_32BIT = 0x7fffffff
} okv_status_t;

/* Name of a status ("OKV_ERROR_BAD_SHAPE"); never NULL. */
OKV_API const char *okv_status_string(okv_status_t status);

/* Runtime version; any pointer may be NULL. */
OKV_API void okv_get_version(int32_t *major, int32_t *minor, int32_t *patch);

typedef enum okv_log_level {
    OKV_LOG_ERROR = 0,
    OKV_LOG_WARN = 1,
    OKV_LOG_INFO = 2,
    OKV_LOG_DEBUG = 3,
    OKV_LOG_FORCE_32BIT = 0x7fffffff
} okv_log_level_t;
typedef void (*okv_log_fn)(okv_log_level_t level, const char *message, void *user);
/* Process-wide log sink (NULL: silent, the default). */
OKV_API void okv_set_log_callback(okv_log_fn fn, void *user);

/* ------------------------------------------------------------------- types -- */
typedef enum okv_dtype {
    OKV_DTYPE_F32 = 0,
    OKV_DTYPE_F16 = 1,
    OKV_DTYPE_BF16 = 2,
    OKV_DTYPE_F64 = 3,
    OKV_DTYPE_I32 = 4,
    OKV_DTYPE_FORCE_32BIT = 0x7fffffff
} okv_dtype_t;
OKV_API size_t okv_dtype_size(okv_dtype_t dtype); /* 0 for an unknown dtype */

typedef enum okv_quantizer {
    OKV_QUANT_UNIFORM = 0,   /* min/max asymmetric INT2 */
    OKV_QUANT_LLOYD_MAX = 1, /* Gaussian Lloyd-Max thresholds on a stored uniform grid */
    OKV_QUANT_FORCE_32BIT = 0x7fffffff
} okv_quantizer_t;

typedef enum okv_clip_mode {
    OKV_CLIP_SORT = 0,   /* exact order statistic of |x| */
    OKV_CLIP_BISECT = 1, /* 7 halvings; clips at most one element more */
    OKV_CLIP_FORCE_32BIT = 0x7fffffff
} okv_clip_mode_t;

/* ---------------------------------------------------------------- backends -- */
#define OKV_NAME_MAX 64
#define OKV_REASON_MAX 256

typedef struct okv_backend_info {
    size_t size;
    char name[OKV_NAME_MAX]; /* "cuda", "hip", "opencl", "ref" */
    int32_t available;       /* 1 when a context can be created */
    int32_t device_count;
    char reason[OKV_REASON_MAX]; /* why unavailable, or a short description */
} okv_backend_info_t;

typedef struct okv_device_info {
    size_t size;
    char name[OKV_REASON_MAX];
    char vendor[OKV_NAME_MAX];
    char driver[OKV_NAME_MAX];
    uint64_t global_mem_bytes;
    int32_t compute_units;
    int32_t warp_size; /* SIMD width the kernels use (1 for the CPU reference) */
    int32_t has_fp64;
    int32_t has_fp16;
    int32_t has_subgroups;
} okv_device_info_t;

OKV_API void okv_backend_info_init(okv_backend_info_t *info);
OKV_API void okv_device_info_init(okv_device_info_t *info);
/* Backends in the auto order (cuda, hip, opencl, ref), built or not. */
OKV_API okv_status_t okv_backend_count(int32_t *count);
OKV_API okv_status_t okv_backend_get_info(int32_t index, okv_backend_info_t *info);
OKV_API okv_status_t okv_device_get_info(const char *backend, int32_t device, okv_device_info_t *info);

/* ----------------------------------------------------------------- context -- */
typedef struct okv_context okv_context_t;

typedef struct okv_context_desc {
    size_t size;
    const char *backend; /* NULL or "auto": OKV_BACKEND env, else first available */
    int32_t device;      /* device index within the backend */
    void *native_stream; /* optional cudaStream_t / hipStream_t / cl_command_queue */
    uint32_t flags;      /* OKV_CONTEXT_* (0: defaults); appended - older, smaller descs are accepted */
} okv_context_desc_t;

/* Skip the data-dependent checks (NaN/Inf in inputs, page indices and lengths read
 * from device memory, metadata overflow) and the host synchronisation they need on
 * GPU backends, so ops can be captured in a CUDA/HIP graph and never stall the host.
 * Argument checks that need no device data still run. With invalid data the results
 * are then undefined (a bad page index can write outside its pool): for engines that
 * guarantee their inputs. Env overrides: OKV_CUDA_TRUST_INPUTS, OKV_OPENCL_TRUST_INPUTS. */
#define OKV_CONTEXT_TRUST_INPUTS 1u

OKV_API void okv_context_desc_init(okv_context_desc_t *desc);
OKV_API okv_status_t okv_context_create(const okv_context_desc_t *desc, okv_context_t **ctx);
OKV_API void okv_context_destroy(okv_context_t *ctx);
/* Detail of the last failing call on ctx ("" if none); valid until the next call. */
OKV_API const char *okv_context_last_error(const okv_context_t *ctx);
OKV_API const char *okv_context_backend_name(const okv_context_t *ctx);
/* Wait for all work queued on the context's stream. */
OKV_API okv_status_t okv_context_synchronize(okv_context_t *ctx);

/* ----------------------------------------------------------------- buffers -- */
typedef struct okv_buffer okv_buffer_t;

OKV_API okv_status_t okv_buffer_create(okv_context_t *ctx, size_t bytes, okv_buffer_t **buf);
/* Wrap caller memory (no copy, not freed by destroy): a device pointer for cuda/hip,
 * a cl_mem for opencl, a host pointer for ref. Ops run in order on the context's
 * stream/queue only: what the caller writes into wrapped memory on another stream
 * (including the legacy default stream) must be complete or event-ordered before the
 * op is enqueued. okv_buffer_write/read are synchronous. */
OKV_API okv_status_t okv_buffer_wrap(okv_context_t *ctx, void *native, size_t bytes, okv_buffer_t **buf);
OKV_API void okv_buffer_destroy(okv_buffer_t *buf);
OKV_API size_t okv_buffer_size(const okv_buffer_t *buf);
OKV_API okv_status_t okv_buffer_write(okv_context_t *ctx, okv_buffer_t *buf, size_t offset, const void *src,
                                      size_t bytes);
OKV_API okv_status_t okv_buffer_read(okv_context_t *ctx, const okv_buffer_t *buf, size_t offset, void *dst,
                                     size_t bytes);

/* A tensor argument: a buffer and a byte offset into it. */
typedef struct okv_ref {
    okv_buffer_t *buffer;
    size_t offset;
} okv_ref_t;

/* ------------------------------------------------------- cache geometry -- */
typedef struct okv_cache_desc {
    size_t size;
    int32_t n_q_heads;      /* Hq */
    int32_t n_kv_heads;     /* Hkv; Hq % Hkv == 0 */
    int32_t head_dim;       /* 64, 128 or 256 */
    int32_t group_size;     /* 32, 64, 128 or head_dim (0 = head_dim) */
    okv_dtype_t meta_dtype; /* F16 (default), BF16 or F32 */
    okv_quantizer_t quantizer;
    okv_clip_mode_t clip_mode;
    int32_t sink_tokens;    /* S0, default 64 */
    int32_t recent_tokens;  /* W, default 256 */
    int32_t flush_interval; /* F, default 8 */
    int32_t page_size;      /* tokens per page (INT2 and BF16), default 16 */
} okv_cache_desc_t;

OKV_API void okv_cache_desc_init(okv_cache_desc_t *desc);
OKV_API okv_status_t okv_cache_desc_validate(const okv_cache_desc_t *desc);

typedef struct okv_cache_sizes {
    size_t size;
    size_t int2_page_bytes;     /* one INT2 page: K and V, all KV heads, page_size tokens */
    size_t bf16_page_bytes;     /* one BF16 page */
    int32_t bf16_slots_per_seq; /* S0 + W + F */
    int32_t bf16_pages_per_seq;
    double int2_bytes_per_token; /* K+V, all KV heads, excluding page padding */
    double bf16_bytes_per_token;
} okv_cache_sizes_t;
OKV_API okv_status_t okv_cache_get_sizes(const okv_cache_desc_t *desc, okv_cache_sizes_t *sizes);
/* INT2 length after appending n_new tokens (the flush rule of SPEC section 4). */
OKV_API okv_status_t okv_cache_int2_len_after(const okv_cache_desc_t *desc, int32_t seq_len, int32_t int2_len,
                                              int32_t n_new, int32_t *int2_len_after);
/* INT2 pages a sequence needs for int2_len tokens. */
OKV_API okv_status_t okv_cache_int2_pages_needed(const okv_cache_desc_t *desc, int32_t int2_len, int32_t *pages);
/* FlashInfer-style last_page_len for an INT2 tier of int2_len tokens. */
OKV_API okv_status_t okv_cache_last_page_len(const okv_cache_desc_t *desc, int32_t int2_len, int32_t *len);
/* Bits per element of a sequence of length seq_len (SPEC section 3). */
OKV_API okv_status_t okv_cache_bits_per_element(const okv_cache_desc_t *desc, int64_t seq_len, double *bpe);

/* One layer's mixed-precision paged cache for a batch of sequences. All index arrays
 * are int32 in backend memory. Sequence b has seq_lens[b] tokens of which
 * int2_lens[b] (positions [S0, S0 + int2_lens[b])) live in the INT2 tier, on pages
 * int2_indices[int2_indptr[b] .. int2_indptr[b+1]); its BF16 tier (sink + recent ring,
 * S0+W+F slots) is on pages bf16_indices[bf16_indptr[b] .. bf16_indptr[b+1]).
 * (FlashInfer's last_page_len equals int2_len - (pages - 1) * page_size.) */
typedef struct okv_cache_view {
    const okv_cache_desc_t *desc;
    int32_t batch;
    okv_ref_t int2_pool;
    int32_t int2_pool_pages;
    okv_ref_t bf16_pool;
    int32_t bf16_pool_pages;
    okv_ref_t int2_indptr; /* [batch + 1] */
    okv_ref_t int2_indices;
    okv_ref_t bf16_indptr; /* [batch + 1] */
    okv_ref_t bf16_indices;
    okv_ref_t seq_lens;  /* [batch] */
    okv_ref_t int2_lens; /* [batch] */
} okv_cache_view_t;

/* --------------------------------------------------------------- operations -- */

/* out = x R (or x R^T when transpose: un-rotating attention outputs with R_V).
 * x, out: [n_rows, n_heads, d]; R: f32 [d, d], or [n_rot, d, d] when per_head, in
 * which case head h uses R[h / head_group] (head_group = Hq/Hkv for queries). */
typedef struct okv_rotate_params {
    size_t size;
    okv_ref_t x;
    okv_dtype_t x_dtype;
    okv_ref_t out;
    okv_dtype_t out_dtype;
    okv_ref_t rotation;
    int32_t n_rows, n_heads, head_dim;
    int32_t per_head, head_group;
    int32_t transpose;
    okv_ref_t bias; /* optional f32 [d] or [n_rot, d]: out = (x - bias) R (keys of a prefill chunk, centered
                       like the cache's; see okv_append_params_t.k_bias) */
} okv_rotate_params_t;
OKV_API void okv_rotate_params_init(okv_rotate_params_t *p);
OKV_API okv_status_t okv_rotate(okv_context_t *ctx, const okv_rotate_params_t *p);

/* Rotate + clip + quantize + pack new K/V rows into the cache and update seq_lens
 * and int2_lens in place. k, v: [append_indptr[batch], Hkv, d] raw (after RoPE);
 * sequence b appends rows [append_indptr[b], append_indptr[b+1]) at its end.
 * Placement: sink positions go to BF16, positions that the flush rule sends to the
 * INT2 tier are quantized (recent rows crossing into it are demoted), the rest go to
 * the BF16 recent ring. The INT2 page table must already hold the pages the new
 * int2 length needs (okv_cache_int2_len_after + okv_cache_int2_pages_needed).
 * Clip ratios: 1 disables clipping; per-head rotations are [Hkv, d, d]. Rows sent
 * straight to INT2 are quantized from their fp32 rotated values; demoted rows from
 * their stored bf16 values. Data-dependent errors (a page index outside the pool:
 * OKV_ERROR_INVALID_ARGUMENT; NaN/Inf: OKV_ERROR_NONFINITE_INPUT; metadata overflow)
 * leave the cache untouched; a GPU backend that can only see them on the device
 * reports them at the next okv_context_synchronize. */
typedef struct okv_append_params {
    size_t size;
    okv_cache_view_t cache;
    okv_ref_t k, v;
    okv_dtype_t kv_dtype;
    okv_ref_t append_indptr; /* int32 [batch + 1], backend memory */
    int32_t n_rows;          /* append_indptr[batch], known on the host */
    okv_ref_t k_rotation, v_rotation;
    int32_t per_head_rotation;
    float k_clip_ratio, v_clip_ratio;
    /* Optional key centering: f32 [d] (or [Hkv, d] with per-head rotations) subtracted
     * from every key before rotation, e.g. the calibration's k_mean. Softmax is
     * invariant to it (every logit of a query moves by the same -q.mean), so attention
     * outputs are unchanged while the INT2 range shrinks; lse values are those of the
     * centered logits. Backends without it return OKV_ERROR_UNSUPPORTED. */
    okv_ref_t k_bias;
} okv_append_params_t;
OKV_API void okv_append_params_init(okv_append_params_t *p);
OKV_API okv_status_t okv_append(okv_context_t *ctx, const okv_append_params_t *p);

/* Move up to n_rows oldest recent rows of every sequence into the INT2 tier (clip,
 * quantize, pack; the rows are already rotated) and advance int2_lens. Never demotes
 * a sink row or below an empty recent window. */
typedef struct okv_demote_params {
    size_t size;
    okv_cache_view_t cache;
    int32_t n_rows;
    float k_clip_ratio, v_clip_ratio;
} okv_demote_params_t;
OKV_API void okv_demote_params_init(okv_demote_params_t *p);
OKV_API okv_status_t okv_demote(okv_context_t *ctx, const okv_demote_params_t *p);

/* Materialise the logical cache (rotated basis): sequence b's positions [0, seq_len)
 * land in rows [out_indptr[b], out_indptr[b] + seq_lens[b]) of k_out, v_out
 * ([rows, Hkv, d] in out_dtype). */
typedef struct okv_dequantize_params {
    size_t size;
    okv_cache_view_t cache;
    okv_ref_t out_indptr; /* int32 [batch + 1] */
    int32_t out_rows;     /* rows k_out/v_out hold */
    okv_ref_t k_out, v_out;
    okv_dtype_t out_dtype;
} okv_dequantize_params_t;
OKV_API void okv_dequantize_params_init(okv_dequantize_params_t *p);
OKV_API okv_status_t okv_dequantize(okv_context_t *ctx, const okv_dequantize_params_t *p);

/* Decode attention: one query token per sequence over [BF16 tier | INT2 tier], GQA,
 * split-K over the context with exact log-sum-exp merge. q: [batch, Hq, d] already
 * rotated by R_K; out: [batch, Hq, d] in the rotated V basis, or multiplied by R_V^T
 * when unrotate_output. lse (optional, f32 [batch, Hq]) receives the natural-log
 * sum-exp of the scaled logits. num_splits = 0 lets the backend choose. A sequence
 * of length 0 yields a zero output and lse = -inf. */
typedef struct okv_decode_params {
    size_t size;
    okv_cache_view_t cache;
    okv_ref_t q;
    okv_dtype_t q_dtype;
    okv_ref_t out;
    okv_dtype_t out_dtype;
    okv_ref_t lse;
    float sm_scale;      /* 0: 1/sqrt(d) */
    int32_t max_seq_len; /* host-known upper bound of seq_lens, for planning */
    int32_t num_splits;
    okv_ref_t v_rotation;
    int32_t per_head_rotation;
    int32_t unrotate_output;
    okv_ref_t workspace;
    size_t workspace_bytes;
} okv_decode_params_t;
OKV_API void okv_decode_params_init(okv_decode_params_t *p);
OKV_API okv_status_t okv_decode_workspace_size(okv_context_t *ctx, const okv_decode_params_t *p, size_t *bytes);
OKV_API okv_status_t okv_decode_attention(okv_context_t *ctx, const okv_decode_params_t *p);

/* Prefill attention (max_seq_len bounds history plus chunk): a chunk of new tokens per sequence attends to the cached
 * history (the cache as it is before the chunk is appended, dequantised on the fly)
 * and causally to the chunk itself in full precision. q: [q_indptr[batch], Hq, d]
 * rotated; k_new, v_new: [q_indptr[batch], Hkv, d] rotated (full precision);
 * out: [q_indptr[batch], Hq, d]. */
typedef struct okv_prefill_params {
    size_t size;
    okv_cache_view_t cache;
    okv_ref_t q_indptr;
    int32_t n_rows;
    okv_ref_t q;
    okv_ref_t k_new, v_new;
    okv_dtype_t in_dtype;
    okv_ref_t out;
    okv_dtype_t out_dtype;
    float sm_scale;
    int32_t max_seq_len;
    okv_ref_t workspace;
    size_t workspace_bytes;
} okv_prefill_params_t;
OKV_API void okv_prefill_params_init(okv_prefill_params_t *p);
OKV_API okv_status_t okv_prefill_workspace_size(okv_context_t *ctx, const okv_prefill_params_t *p, size_t *bytes);
OKV_API okv_status_t okv_prefill_attention(okv_context_t *ctx, const okv_prefill_params_t *p);

/* Second moments: acc[h / head_group] += sum_t w[t, h] x[t, h]^T x[t, h] for x
 * [n_rows, n_heads, d]; w optional f32 [n_rows, n_heads] (NULL buffer: 1); acc is
 * [n_heads / head_group, d, d] in acc_dtype (F64 where the device has it, else F32). */
typedef struct okv_moments_params {
    size_t size;
    okv_ref_t x;
    okv_dtype_t x_dtype;
    okv_ref_t weights;
    okv_ref_t acc;
    okv_dtype_t acc_dtype;
    int32_t n_rows, n_heads, head_dim, head_group;
} okv_moments_params_t;
OKV_API void okv_moments_params_init(okv_moments_params_t *p);
OKV_API okv_status_t okv_moments(okv_context_t *ctx, const okv_moments_params_t *p);

/* ------------------------------------------------------------ calibration -- */
typedef enum okv_rotation_method {
    OKV_ROT_OSCAR = 0,     /* R = U H P from attention-aware targets */
    OKV_ROT_NONE = 1,      /* identity */
    OKV_ROT_HADAMARD = 2,  /* H only (QuaRot-style) */
    OKV_ROT_U_ONLY = 3,    /* eigenvectors of the targets, no Hadamard */
    OKV_ROT_PLAIN_COV = 4, /* U H P from K^T K and V^T V */
    OKV_ROT_FORCE_32BIT = 0x7fffffff
} okv_rotation_method_t;

typedef enum okv_value_target {
    OKV_VALUE_TARGET_REFERENCE = 0, /* score-weighted value moment (reference code) */
    OKV_VALUE_TARGET_EXACT = 1,     /* (S V)^T (S V) / N with causal softmax S */
    OKV_VALUE_TARGET_FORCE_32BIT = 0x7fffffff
} okv_value_target_t;

typedef enum okv_granularity {
    OKV_GRANULARITY_LAYER = 0, /* one R_K, R_V per layer */
    OKV_GRANULARITY_HEAD = 1,  /* one per (layer, KV head) */
    OKV_GRANULARITY_FORCE_32BIT = 0x7fffffff
} okv_granularity_t;

typedef struct okv_calib_desc {
    size_t size;
    int32_t n_layers, n_q_heads, n_kv_heads, head_dim;
    okv_value_target_t value_target;
    int32_t holdout_tokens; /* per layer, kept for clip fitting (default 256) */
    uint64_t seed;          /* holdout sampling */
} okv_calib_desc_t;

typedef struct okv_calib_options {
    size_t size;
    okv_rotation_method_t method;
    okv_granularity_t granularity;
    int32_t use_permutation; /* bit-reversal P (default 1) */
    int32_t fit_clips;       /* 0: fixed ratios below; 1: fitted per layer and K/V */
    float k_clip_ratio;      /* default 0.96 */
    float v_clip_ratio;      /* default 0.92 */
    okv_cache_desc_t quant;  /* quantizer settings used when fitting clips */
    int32_t progress;        /* log progress lines at OKV_LOG_INFO */
    int32_t center_keys;     /* store k_mean and fit clips on centered keys (default 1) */
    /* Query-energy key scaling (ours; default 1; OSCAR and U_ONLY only, other methods
     * ignore it): keys use R_K = U D H P and queries Q_K = U D^-1 H P with
     * D_i = (lambda_i / mu_i)^(1/4) (lambda: C_Q eigenvalues, mu: key variance along the
     * same eigenvector, each plus scale_eps times its mean), so q Q_K . k R_K = q . k
     * while the INT2 error moves out of the directions queries read. An orthogonal R
     * cannot do this: per-token INT2 error is near isotropic after H, so q.e has variance
     * ~ sigma^2 |q|^2 for every orthogonal R. The set then carries q_rotation. */
    int32_t scale_keys;
    float scale_eps; /* regulariser of the scaling (default 0.01; > 0) */
} okv_calib_options_t;

typedef struct okv_calibrator okv_calibrator_t;
typedef struct okv_rotation_set okv_rotation_set_t;

OKV_API void okv_calib_desc_init(okv_calib_desc_t *desc);
OKV_API void okv_calib_options_init(okv_calib_options_t *opt);
OKV_API okv_status_t okv_calibrator_create(const okv_calib_desc_t *desc, okv_calibrator_t **cal);
OKV_API void okv_calibrator_destroy(okv_calibrator_t *cal);
/* Detail of the last failure on this calibrator. */
OKV_API const char *okv_calibrator_last_error(const okv_calibrator_t *cal);
/* Add one causal sequence (or a batch of independent tokens) for one layer: host
 * arrays q [n_tokens, Hq, d], k and v [n_tokens, Hkv, d], q and k after q/k-norm and
 * RoPE, v raw. The exact value target treats the rows as one causal sequence. */
OKV_API okv_status_t okv_calibrator_add(okv_calibrator_t *cal, int32_t layer, int32_t n_tokens, okv_dtype_t dtype,
                                        const void *q, const void *k, const void *v);
OKV_API okv_status_t okv_calibrator_finalize(okv_calibrator_t *cal, const okv_calib_options_t *opt,
                                             okv_rotation_set_t **rotations);
/* Tokens added to a layer so far. */
OKV_API okv_status_t okv_calibrator_tokens(const okv_calibrator_t *cal, int32_t layer, int64_t *tokens);

/* -------------------------------------------------------------- rotations -- */
typedef struct okv_layer_rotation {
    size_t size;
    int32_t head_dim;
    int32_t n_rot;           /* 1 (per layer) or Hkv (per head) */
    const float *k_rotation; /* [n_rot, d, d], used as x R */
    const float *v_rotation;
    const float *k_eigenvalues; /* [n_rot, d] ascending (NULL for methods without) */
    const float *v_eigenvalues;
    float k_clip_ratio, v_clip_ratio;
    const float *k_mean; /* [n_rot, d] mean post-RoPE key of the calibration data, or NULL */
    /* [n_rot, d, d] the queries' matrix when it differs from k_rotation (key scaling:
     * q_rotation = k_rotation^-T, so q Q . k R = q . k), or NULL: queries use k_rotation.
     * Optional field: callers built before it set a smaller size and never see it. */
    const float *q_rotation;
} okv_layer_rotation_t;

OKV_API okv_status_t okv_rotation_set_create(int32_t n_layers, int32_t head_dim, int32_t n_rot,
                                             okv_rotation_set_t **rs);
OKV_API void okv_rotation_set_destroy(okv_rotation_set_t *rs);
OKV_API okv_status_t okv_rotation_set_info(const okv_rotation_set_t *rs, int32_t *n_layers, int32_t *head_dim,
                                           int32_t *n_rot);
OKV_API okv_status_t okv_rotation_set_get_layer(const okv_rotation_set_t *rs, int32_t layer, okv_layer_rotation_t *out);
/* Copy one layer in (eigenvalue and k_mean pointers may be NULL; NULL clears them). */
OKV_API okv_status_t okv_rotation_set_set_layer(okv_rotation_set_t *rs, int32_t layer, const okv_layer_rotation_t *in);
/* Provenance stored in the file's __metadata__ ("method", "tokens", ...). */
OKV_API okv_status_t okv_rotation_set_get_meta(const okv_rotation_set_t *rs, const char *key, const char **value);
OKV_API okv_status_t okv_rotation_set_set_meta(okv_rotation_set_t *rs, const char *key, const char *value);
OKV_API okv_status_t okv_rotation_set_save(const okv_rotation_set_t *rs, const char *path);
OKV_API okv_status_t okv_rotation_set_load(const char *path, okv_rotation_set_t **rs);
/* Same as load, from memory (the fuzzing entry point). */
OKV_API okv_status_t okv_rotation_set_load_memory(const void *data, size_t bytes, okv_rotation_set_t **rs);
/* Detail of the last load/save failure in this thread. */
OKV_API const char *okv_rotation_last_error(void);

/* Host helpers to fold rotations into projection weights instead of rotating at run
 * time: w_v [in, Hkv*d] (columns of head h times R_V,h) and w_o [Hq*d, out] (rows of
 * query head i times R_V,h^T, h = i / (Hq/Hkv)); f32, row-major, in place. */
OKV_API okv_status_t okv_fold_v_projection(const okv_layer_rotation_t *rot, int32_t n_kv_heads, int32_t in_features,
                                           float *w_v);
OKV_API okv_status_t okv_fold_o_projection(const okv_layer_rotation_t *rot, int32_t n_q_heads, int32_t n_kv_heads,
                                           int32_t out_features, float *w_o);

#ifdef __cplusplus
}
#endif
#endif /* OSCARKV_H */
