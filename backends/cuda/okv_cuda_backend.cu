/*
 * okv_cuda_backend.cu - the CUDA backend module: runtime glue and the function
 * table exported through okv_backend_entry_v1 (core/backend_iface.h).
 *
 * Every CUDA call is checked; a failure returns OKV_ERROR_DEVICE with the CUDA
 * error string in err. Ops enqueue on the context's stream (the caller's
 * native_stream, or one created here) and never allocate.
 *
 * Validation. Like the reference, a failing op returns its status and writes
 * nothing. Every op first enqueues the device-side checks of the data it reads
 * (backends/common/okv_gpu_validate.h, shared with the HIP backend): page tables,
 * lengths and indptr arrays (one block per sequence) and NaN/Inf in its float
 * inputs, into a device status word; append and demote then enqueue a dry run
 * (commit = 0) of their kernels that only detects metadata overflow and rotated
 * rows that overflow (skipped by the kernels when the tables were found bad). The
 * host reads the status word back with ONE stream synchronisation per op, maps it to
 * OKV_ERROR_INVALID_ARGUMENT / OKV_ERROR_NONFINITE_INPUT /
 * OKV_ERROR_METADATA_OVERFLOW, and only then enqueues the real work (append and
 * demote: the commit = 1 pass), which returns without waiting.
 *
 * OKV_CUDA_TRUST_INPUTS=1 (read at context creation; like OKV_OPENCL_TRUST_INPUTS)
 * skips all of that: no validation kernels, no dry run, no host synchronisation, so
 * every op can be captured in a CUDA graph. Inputs must then be valid: a page index
 * outside its pool is NOT detected (kernels would read or write out of bounds).
 * Append/demote still refuse to store a row whose metadata overflows or whose
 * rotation is not finite; that row is skipped, a bit is set in the status word and
 * the next synchronize returns the error (other rows of the call are stored).
 *
 * Prefill. With a max_seq_len (> 0) and the workspace that prefill_workspace reports
 * (6 * batch * Hkv * max_seq_len * d bytes + a little), prefill runs the tensor-core
 * flash kernel of okv_cuda_prefill.cu over a staged copy of the history; without
 * them (workspace 0), and for every call when OKV_CUDA_PREFILL_NAIVE=1 (read once),
 * the naive kernel of okv_cuda_ops.cu (a warp per query row and head) runs. A
 * sequence with seq_len + chunk > max_seq_len is OKV_ERROR_INVALID_ARGUMENT when
 * validated; with trusted inputs its output rows are zero and the next synchronize
 * reports an error.
 */
#include <cuda_runtime.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "okv_cuda.h"
#include "okv_format.h"

#define OKV_EXPORT extern "C" __attribute__((visibility("default")))

namespace
{

okv_status_t fail(okv_err_t *err, okv_status_t st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
okv_status_t fail(okv_err_t *err, okv_status_t st, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}

okv_status_t cuda_fail(okv_err_t *err, cudaError_t e, const char *what)
{
    return fail(err, OKV_ERROR_DEVICE, "cuda: %s: %s (%s, %d)", what, cudaGetErrorString(e), cudaGetErrorName(e),
                (int)e);
}

#define CK(call, what)                                                                                                 \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) return cuda_fail(err, e_, what);                                                        \
    } while (0)

okvc_state_t *S(void *state) { return (okvc_state_t *)state; }

okv_status_t set_device(okvc_state_t *st, okv_err_t *err)
{
    CK(cudaSetDevice(st->device), "cudaSetDevice");
    return OKV_SUCCESS;
}

okv_status_t cu_probe(int32_t *device_count, char *reason, size_t cap)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (reason && cap)
            snprintf(reason, cap, "cudaGetDeviceCount failed: %s (%s, %d)", cudaGetErrorString(e), cudaGetErrorName(e),
                     (int)e);
        cudaGetLastError(); /* clear the sticky-free error */
        if (device_count) *device_count = 0;
        return OKV_ERROR_BACKEND_UNAVAILABLE;
    }
    if (device_count) *device_count = n;
    if (n == 0) {
        if (reason && cap) snprintf(reason, cap, "no CUDA device");
        return OKV_ERROR_BACKEND_UNAVAILABLE;
    }
    if (reason && cap) {
        cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, 0) == cudaSuccess)
            snprintf(reason, cap, "%d device(s); 0: %s (sm_%d%d, %d SMs)", n, p.name, p.major, p.minor,
                     p.multiProcessorCount);
    }
    return OKV_SUCCESS;
}

okv_status_t cu_device_info(int32_t device, okv_device_info_t *info)
{
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return OKV_ERROR_BACKEND_UNAVAILABLE;
    snprintf(info->name, sizeof info->name, "%s", p.name);
    snprintf(info->vendor, sizeof info->vendor, "NVIDIA");
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    snprintf(info->driver, sizeof info->driver, "CUDA driver %d.%d, runtime %d.%d, sm_%d%d", drv / 1000,
             (drv % 1000) / 10, rt / 1000, (rt % 1000) / 10, p.major, p.minor);
    info->global_mem_bytes = p.totalGlobalMem;
    info->compute_units = p.multiProcessorCount;
    info->warp_size = p.warpSize;
    info->has_fp64 = 1;
    info->has_fp16 = p.major >= 6;
    info->has_subgroups = 1;
    return OKV_SUCCESS;
}

okv_status_t cu_create(int32_t device, void *native_stream, void **state, okv_err_t *err)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return fail(err, OKV_ERROR_BACKEND_UNAVAILABLE, "cuda: cudaGetDeviceCount: %s", cudaGetErrorString(e));
    }
    if (device < 0 || device >= n) return fail(err, OKV_ERROR_INVALID_ARGUMENT, "cuda: device %d of %d", device, n);
    okvc_state_t *st = (okvc_state_t *)calloc(1, sizeof *st);
    if (!st) return fail(err, OKV_ERROR_OUT_OF_MEMORY, "cuda: state");
    st->device = device;
    okv_status_t s = set_device(st, err);
    if (s != OKV_SUCCESS) {
        free(st);
        return s;
    }
    cudaDeviceProp p;
    e = cudaGetDeviceProperties(&p, device);
    if (e != cudaSuccess) {
        free(st);
        return cuda_fail(err, e, "cudaGetDeviceProperties");
    }
    st->num_sms = p.multiProcessorCount;
    st->max_smem_optin = (int)p.sharedMemPerBlockOptin;
    st->cc_major = p.major;
    st->cc_minor = p.minor;
    if (p.major < 8) {
        free(st);
        return fail(err, OKV_ERROR_BACKEND_UNAVAILABLE, "cuda: %s is sm_%d%d; this module needs sm_80 or newer", p.name,
                    p.major, p.minor);
    }
    if (native_stream)
        st->stream = (cudaStream_t)native_stream;
    else {
        e = cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking);
        if (e != cudaSuccess) {
            free(st);
            return cuda_fail(err, e, "cudaStreamCreate");
        }
        st->own_stream = 1;
    }
    e = cudaMalloc((void **)&st->d_status, 16);
    if (e == cudaSuccess) e = cudaMemset(st->d_status, 0, 16);
    if (e == cudaSuccess) e = cudaMallocHost((void **)&st->h_status, sizeof(int));
    if (e != cudaSuccess) {
        if (st->d_status) cudaFree(st->d_status);
        if (st->own_stream) cudaStreamDestroy(st->stream);
        free(st);
        return cuda_fail(err, e, "status word");
    }
    const char *ti = getenv("OKV_CUDA_TRUST_INPUTS");
    st->trust_inputs = ti && *ti && *ti != '0';
    *state = st;
    return OKV_SUCCESS;
}

okv_status_t cu_configure(void *state, uint32_t flags, okv_err_t *)
{
    if (flags & OKV_CONTEXT_TRUST_INPUTS) S(state)->trust_inputs = 1;
    return OKV_SUCCESS;
}

void cu_destroy(void *state)
{
    okvc_state_t *st = S(state);
    if (!st) return;
    cudaSetDevice(st->device);
    cudaStreamSynchronize(st->stream);
    if (st->own_stream) cudaStreamDestroy(st->stream);
    cudaFree(st->d_status);
    cudaFreeHost(st->h_status);
    free(st);
}

okv_status_t cu_alloc(void *state, size_t bytes, void **native, okv_err_t *err)
{
    okv_status_t s = set_device(S(state), err);
    if (s != OKV_SUCCESS) return s;
    cudaError_t e = cudaMalloc(native, bytes ? bytes : 1);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        return fail(err, OKV_ERROR_OUT_OF_MEMORY, "cuda: cudaMalloc(%zu): %s", bytes, cudaGetErrorString(e));
    }
    CK(e, "cudaMalloc");
    return OKV_SUCCESS;
}

void cu_release(void *state, void *native)
{
    cudaSetDevice(S(state)->device);
    cudaFree(native);
}

okv_status_t cu_write(void *state, void *native, size_t offset, const void *src, size_t bytes, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    okv_status_t s = set_device(st, err);
    if (s != OKV_SUCCESS) return s;
    CK(cudaMemcpyAsync((char *)native + offset, src, bytes, cudaMemcpyHostToDevice, st->stream), "write");
    CK(cudaStreamSynchronize(st->stream), "write (synchronize)");
    return OKV_SUCCESS;
}

okv_status_t cu_read(void *state, void *native, size_t offset, void *dst, size_t bytes, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    okv_status_t s = set_device(st, err);
    if (s != OKV_SUCCESS) return s;
    CK(cudaMemcpyAsync(dst, (const char *)native + offset, bytes, cudaMemcpyDeviceToHost, st->stream), "read");
    CK(cudaStreamSynchronize(st->stream), "read (synchronize)");
    return OKV_SUCCESS;
}

okv_status_t cu_synchronize(void *state, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    okv_status_t s = set_device(st, err);
    if (s != OKV_SUCCESS) return s;
    CK(cudaStreamSynchronize(st->stream), "cudaStreamSynchronize");
    int flags = 0;
    CK(cudaMemcpy(&flags, st->d_status, sizeof flags, cudaMemcpyDeviceToHost), "status word");
    if (flags) { /* only with OKV_CUDA_TRUST_INPUTS: validated ops report their own failures */
        CK(cudaMemset(st->d_status, 0, sizeof flags), "status word reset");
        if (flags & OKV_GPU_FLAG_META_OVERFLOW)
            return fail(err, OKV_ERROR_METADATA_OVERFLOW,
                        "cuda: an earlier append/demote met a row whose scale/offset does not fit the metadata type "
                        "(row not written)");
        return fail(err, OKV_ERROR_NONFINITE_INPUT,
                    "cuda: an earlier append met a non-finite rotated row (row not written)");
    }
    return OKV_SUCCESS;
}

/* int32 entries a ref holds from its offset to the end of its buffer. */
long long i32_cap(okv_ref_t r)
{
    if (!r.buffer || r.offset > r.buffer->bytes) return 0;
    return (long long)((r.buffer->bytes - r.offset) / sizeof(int32_t));
}

/* ---- cache view -> device description ---- */
void cache_from_view(const okv_cache_view_t *v, okvc_cache_t *c)
{
    const okv_cache_desc_t *d = v->desc;
    memset(c, 0, sizeof *c);
    c->batch = v->batch;
    c->hq = d->n_q_heads;
    c->hkv = d->n_kv_heads;
    c->d = d->head_dim;
    c->page = d->page_size;
    c->group = d->group_size > 0 ? d->group_size : d->head_dim;
    c->ng = c->d / c->group;
    c->meta_dtype = (int)d->meta_dtype;
    c->quantizer = (int)d->quantizer;
    c->clip_mode = (int)d->clip_mode;
    c->s0 = d->sink_tokens;
    c->w = d->recent_tokens;
    c->f = d->flush_interval;
    c->seq_lens = c->seq_lens_rw = (int *)okv_ref_ptr(v->seq_lens);
    c->int2_lens = c->int2_lens_rw = (int *)okv_ref_ptr(v->int2_lens);
    c->int2_indptr = (const int *)okv_ref_ptr(v->int2_indptr);
    c->int2_indices = (const int *)okv_ref_ptr(v->int2_indices);
    c->bf16_indptr = (const int *)okv_ref_ptr(v->bf16_indptr);
    c->bf16_indices = (const int *)okv_ref_ptr(v->bf16_indices);
    c->int2_pool = (unsigned char *)okv_ref_ptr(v->int2_pool);
    c->int2_page_bytes = okv_int2_page_bytes(c->hkv, c->page, c->d, c->group, c->meta_dtype);
    c->bf16_pool = (unsigned short *)okv_ref_ptr(v->bf16_pool);
    c->bf16_page_elems = okv_bf16_page_bytes(c->hkv, c->page, c->d) / 2;
    c->int2_cap = i32_cap(v->int2_indices);
    c->bf16_cap = i32_cap(v->bf16_indices);
    c->int2_pool_pages = v->int2_pool.buffer ? v->int2_pool_pages : 0;
    c->bf16_pool_pages = v->bf16_pool.buffer ? v->bf16_pool_pages : 0;
}

okv_status_t launched(okv_err_t *err, int e, const char *what)
{
    if (e != cudaSuccess) return cuda_fail(err, (cudaError_t)e, what);
    return OKV_SUCCESS;
}

/* ---- validation (skipped entirely with OKV_CUDA_TRUST_INPUTS) ---- */
/* Starts a validated op: refuses a stream under CUDA-graph capture (the status
 * read-back would invalidate the capture) before enqueuing anything, then clears
 * the status word. */
okv_status_t flags_clear(okvc_state_t *st, okv_err_t *err)
{
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    CK(cudaStreamIsCapturing(st->stream, &cs), "cudaStreamIsCapturing");
    if (cs != cudaStreamCaptureStatusNone)
        return fail(err, OKV_ERROR_UNSUPPORTED,
                    "cuda: the stream is being captured into a CUDA graph, and validated ops read a status word "
                    "back from the device; set OKV_CUDA_TRUST_INPUTS=1 (before creating the context) to capture");
    CK(cudaMemsetAsync(st->d_status, 0, sizeof(int), st->stream), "status word reset");
    return OKV_SUCCESS;
}

/* The one synchronisation of a validated op: waits for the checks (and dry run)
 * enqueued so far and turns the status word into a status. */
okv_status_t flags_check(okvc_state_t *st, const char *op, okv_err_t *err)
{
    *st->h_status = 0;
    CK(cudaMemcpyAsync(st->h_status, st->d_status, sizeof(int), cudaMemcpyDeviceToHost, st->stream), "status word");
    CK(cudaStreamSynchronize(st->stream), "status word (synchronize)");
    const int f = *st->h_status;
    if (!f) return OKV_SUCCESS;
    CK(cudaMemsetAsync(st->d_status, 0, sizeof(int), st->stream), "status word reset");
    if (f & OKV_GPU_FLAG_BAD_INDEX)
        return fail(err, OKV_ERROR_INVALID_ARGUMENT,
                    "cuda %s: invalid page table, lengths or indptr (page index outside its pool, too few pages, "
                    "non-monotone indptr or inconsistent seq_len/int2_len)",
                    op);
    if (f & OKV_GPU_FLAG_NONFINITE)
        return fail(err, OKV_ERROR_NONFINITE_INPUT,
                    "cuda %s: NaN or Inf in the input data (or a rotated row overflows)", op);
    return fail(err, OKV_ERROR_METADATA_OVERFLOW, "cuda %s: a group's scale/offset does not fit the metadata type", op);
}

okv_status_t validate(okvc_state_t *st, const okvc_cache_t *c, int need_mode, int n, const int *aip, int row_mode,
                      const int *rip, int n_rows, okv_err_t *err)
{
    return launched(err, okvc_validate_launch(st, c, need_mode, n, aip, row_mode, rip, n_rows), "validation");
}

okv_status_t finite(okvc_state_t *st, okv_ref_t x, okv_dtype_t dt, size_t n, okv_err_t *err)
{
    return launched(err, okvc_check_finite_launch(st, okv_ref_ptr(x), (int)dt, n), "finite check");
}

#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        okv_status_t s_ = (x);                                                                                         \
        if (s_ != OKV_SUCCESS) return s_;                                                                              \
    } while (0)

okv_status_t cu_rotate(void *state, const okv_rotate_params_t *p, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    TRY(set_device(st, err));
    if (!st->trust_inputs) {
        const size_t d = (size_t)p->head_dim;
        const size_t n_rot = p->per_head ? (size_t)(p->n_heads / (p->head_group > 0 ? p->head_group : 1)) : 1;
        TRY(flags_clear(st, err));
        TRY(finite(st, p->x, p->x_dtype, (size_t)p->n_rows * p->n_heads * d, err));
        TRY(finite(st, p->rotation, OKV_DTYPE_F32, n_rot * d * d, err));
        TRY(finite(st, p->bias, OKV_DTYPE_F32, n_rot * d, err));
        TRY(flags_check(st, "rotate", err));
    }
    return launched(err,
                    okvc_rotate_launch(st, okv_ref_ptr(p->x), (int)p->x_dtype, okv_ref_ptr(p->out), (int)p->out_dtype,
                                       (const float *)okv_ref_ptr(p->rotation), p->n_rows, p->n_heads, p->head_dim,
                                       p->per_head, p->head_group, p->transpose, (const float *)okv_ref_ptr(p->bias)),
                    "rotate");
}

/* Validated: tables + indptr, NaN/Inf in k, v, rotations, k_bias, then the dry run,
 * one synchronisation, then the commit pass. */
okv_status_t cu_append(void *state, const okv_append_params_t *p, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    TRY(set_device(st, err));
    okvc_cache_t c;
    cache_from_view(&p->cache, &c);
    if (c.batch <= 0) return OKV_SUCCESS;
    const int *aip = (const int *)okv_ref_ptr(p->append_indptr);
    const void *k = okv_ref_ptr(p->k), *v = okv_ref_ptr(p->v);
    const float *kr = (const float *)okv_ref_ptr(p->k_rotation), *vr = (const float *)okv_ref_ptr(p->v_rotation);
    const float *kb = (const float *)okv_ref_ptr(p->k_bias);
    if (!st->trust_inputs) {
        const size_t d = (size_t)c.d, nh = p->per_head_rotation ? (size_t)c.hkv : 1;
        const size_t n = (size_t)p->n_rows * c.hkv * d;
        TRY(flags_clear(st, err));
        TRY(validate(st, &c, OKV_GPU_NEED_APPEND, 0, aip, OKV_GPU_ROWS_EXACT, aip, p->n_rows, err));
        TRY(finite(st, p->k, p->kv_dtype, n, err));
        TRY(finite(st, p->v, p->kv_dtype, n, err));
        TRY(finite(st, p->k_rotation, OKV_DTYPE_F32, nh * d * d, err));
        TRY(finite(st, p->v_rotation, OKV_DTYPE_F32, nh * d * d, err));
        TRY(finite(st, p->k_bias, OKV_DTYPE_F32, nh * d, err));
        TRY(launched(err,
                     okvc_append_launch(st, &c, k, v, (int)p->kv_dtype, aip, p->n_rows, kr, vr, p->per_head_rotation,
                                        p->k_clip_ratio, p->v_clip_ratio, kb, 0),
                     "append (dry run)"));
        TRY(flags_check(st, "append", err));
    }
    return launched(err,
                    okvc_append_launch(st, &c, k, v, (int)p->kv_dtype, aip, p->n_rows, kr, vr, p->per_head_rotation,
                                       p->k_clip_ratio, p->v_clip_ratio, kb, 1),
                    "append");
}

okv_status_t cu_demote(void *state, const okv_demote_params_t *p, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    TRY(set_device(st, err));
    okvc_cache_t c;
    cache_from_view(&p->cache, &c);
    if (c.batch <= 0) return OKV_SUCCESS;
    const int n = p->n_rows > 0 ? p->n_rows : 0;
    if (!st->trust_inputs) {
        /* the current lengths are checked before the target is computed from them */
        TRY(flags_clear(st, err));
        TRY(validate(st, &c, OKV_GPU_NEED_DEMOTE, n, nullptr, OKV_GPU_ROWS_NONE, nullptr, 0, err));
        TRY(launched(err, okvc_demote_launch(st, &c, n, p->k_clip_ratio, p->v_clip_ratio, 0), "demote (dry run)"));
        TRY(flags_check(st, "demote", err));
    }
    return launched(err, okvc_demote_launch(st, &c, n, p->k_clip_ratio, p->v_clip_ratio, 1), "demote");
}

okv_status_t cu_dequantize(void *state, const okv_dequantize_params_t *p, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    TRY(set_device(st, err));
    okvc_cache_t c;
    cache_from_view(&p->cache, &c);
    if (c.batch <= 0) return OKV_SUCCESS;
    const int *oip = (const int *)okv_ref_ptr(p->out_indptr);
    if (!st->trust_inputs) {
        TRY(flags_clear(st, err));
        TRY(validate(st, &c, OKV_GPU_NEED_CURRENT, 0, nullptr, OKV_GPU_ROWS_OUT, oip, p->out_rows, err));
        TRY(flags_check(st, "dequantize", err));
    }
    return launched(err,
                    okvc_dequantize_launch(st, &c, oip, p->out_rows, okv_ref_ptr(p->k_out), okv_ref_ptr(p->v_out),
                                           (int)p->out_dtype),
                    "dequantize");
}

void decode_args(const okv_decode_params_t *p, okvc_decode_args_t *a)
{
    memset(a, 0, sizeof *a);
    cache_from_view(&p->cache, &a->c);
    a->q = okv_ref_ptr(p->q);
    a->q_dtype = (int)p->q_dtype;
    a->out = okv_ref_ptr(p->out);
    a->out_dtype = (int)p->out_dtype;
    a->lse = (float *)okv_ref_ptr(p->lse);
    a->sm_scale = p->sm_scale;
    a->max_seq_len = p->max_seq_len;
    a->num_splits = p->num_splits;
    a->v_rotation = (const float *)okv_ref_ptr(p->v_rotation);
    a->per_head_rotation = p->per_head_rotation;
    a->unrotate = p->unrotate_output;
    a->workspace = okv_ref_ptr(p->workspace);
    a->workspace_bytes = p->workspace_bytes;
}

okv_status_t cu_decode_workspace(void *state, const okv_decode_params_t *p, size_t *bytes, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    okv_status_t s = set_device(st, err);
    if (s != OKV_SUCCESS) return s;
    okvc_decode_args_t a;
    decode_args(p, &a);
    *bytes = okvc_decode_workspace(st, &a);
    return OKV_SUCCESS;
}

okv_status_t cu_decode(void *state, const okv_decode_params_t *p, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    TRY(set_device(st, err));
    okvc_decode_args_t a;
    decode_args(p, &a);
    if (a.c.batch <= 0) return OKV_SUCCESS;
    if (a.workspace_bytes < okvc_decode_workspace(st, &a))
        return fail(err, OKV_ERROR_BAD_SHAPE, "cuda: decode workspace too small");
    if (!st->trust_inputs) {
        const size_t d = (size_t)a.c.d;
        TRY(flags_clear(st, err));
        TRY(validate(st, &a.c, OKV_GPU_NEED_CURRENT, 0, nullptr, OKV_GPU_ROWS_NONE, nullptr, 0, err));
        TRY(finite(st, p->q, p->q_dtype, (size_t)a.c.batch * a.c.hq * d, err));
        if (p->unrotate_output)
            TRY(finite(st, p->v_rotation, OKV_DTYPE_F32, (p->per_head_rotation ? (size_t)a.c.hkv : 1) * d * d, err));
        TRY(flags_check(st, "decode", err));
    }
    return launched(err, okvc_decode_launch(st, &a), "decode attention");
}

/* OKV_CUDA_PREFILL_NAIVE=1 (read once): the naive prefill kernel for every call. */
bool prefill_naive_forced()
{
    static const bool forced = [] {
        const char *e = getenv("OKV_CUDA_PREFILL_NAIVE");
        return e && *e && *e != '0';
    }();
    return forced;
}

/* Workspace of the flash prefill (0: the naive kernel runs). It needs max_seq_len,
 * the bound of seq_len + chunk per sequence that sizes the staged history. */
size_t prefill_flash_bytes(okvc_state_t *st, const okv_prefill_params_t *p)
{
    const okv_cache_desc_t *d = p->cache.desc;
    if (prefill_naive_forced() || p->max_seq_len <= 0 || p->cache.batch <= 0 ||
        !okvc_prefill_flash_ok(st, d->head_dim, (int)p->in_dtype))
        return 0;
    return okvc_prefill_workspace(p->cache.batch, d->n_kv_heads, d->head_dim, p->max_seq_len);
}

okv_status_t cu_prefill_workspace(void *state, const okv_prefill_params_t *p, size_t *bytes, okv_err_t *err)
{
    okv_status_t s = set_device(S(state), err);
    if (s != OKV_SUCCESS) return s;
    *bytes = prefill_flash_bytes(S(state), p);
    return OKV_SUCCESS;
}

okv_status_t cu_prefill(void *state, const okv_prefill_params_t *p, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    TRY(set_device(st, err));
    okvc_cache_t c;
    cache_from_view(&p->cache, &c);
    if (c.batch <= 0) return OKV_SUCCESS;
    const int *qip = (const int *)okv_ref_ptr(p->q_indptr);
    /* flash path when its workspace is there (callers that pass none, or too little,
     * get the naive kernel) */
    const size_t ws_need = prefill_flash_bytes(st, p);
    void *ws = okv_ref_ptr(p->workspace);
    const bool flash = ws_need > 0 && ws && p->workspace_bytes >= ws_need;
    if (!st->trust_inputs) {
        const size_t d = (size_t)c.d;
        TRY(flags_clear(st, err));
        TRY(validate(st, &c, OKV_GPU_NEED_CURRENT, 0, nullptr, OKV_GPU_ROWS_EXACT, qip, p->n_rows, err));
        TRY(finite(st, p->q, p->in_dtype, (size_t)p->n_rows * c.hq * d, err));
        TRY(finite(st, p->k_new, p->in_dtype, (size_t)p->n_rows * c.hkv * d, err));
        TRY(finite(st, p->v_new, p->in_dtype, (size_t)p->n_rows * c.hkv * d, err));
        if (flash) /* seq_len + chunk <= max_seq_len, the staged rows per sequence */
            TRY(launched(err, okvc_prefill_bound_launch(st, &c, qip, p->max_seq_len), "prefill bound check"));
        TRY(flags_check(st, "prefill", err));
    }
    if (flash)
        return launched(err,
                        okvc_prefill_flash_launch(st, &c, qip, p->n_rows, okv_ref_ptr(p->q), okv_ref_ptr(p->k_new),
                                                  okv_ref_ptr(p->v_new), (int)p->in_dtype, okv_ref_ptr(p->out),
                                                  (int)p->out_dtype, p->sm_scale, ws, p->max_seq_len),
                        "prefill attention (flash)");
    return launched(err,
                    okvc_prefill_launch(st, &c, qip, p->n_rows, okv_ref_ptr(p->q), okv_ref_ptr(p->k_new),
                                        okv_ref_ptr(p->v_new), (int)p->in_dtype, okv_ref_ptr(p->out), (int)p->out_dtype,
                                        p->sm_scale),
                    "prefill attention");
}

okv_status_t cu_moments(void *state, const okv_moments_params_t *p, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    TRY(set_device(st, err));
    if (!st->trust_inputs) {
        const size_t rows = (size_t)p->n_rows * p->n_heads;
        TRY(flags_clear(st, err));
        TRY(finite(st, p->x, p->x_dtype, rows * p->head_dim, err));
        TRY(finite(st, p->weights, OKV_DTYPE_F32, rows, err));
        TRY(flags_check(st, "moments", err));
    }
    return launched(err,
                    okvc_moments_launch(st, okv_ref_ptr(p->x), (int)p->x_dtype, (const float *)okv_ref_ptr(p->weights),
                                        okv_ref_ptr(p->acc), (int)p->acc_dtype, p->n_rows, p->n_heads, p->head_dim,
                                        p->head_group),
                    "moments");
}

const okv_backend_ops_t g_ops = {
    OKV_BACKEND_IFACE_VERSION,
    (uint32_t)sizeof(okv_backend_ops_t),
    "cuda",
    cu_probe,
    cu_device_info,
    cu_create,
    cu_destroy,
    cu_alloc,
    cu_release,
    cu_write,
    cu_read,
    cu_synchronize,
    cu_rotate,
    cu_append,
    cu_demote,
    cu_dequantize,
    cu_decode_workspace,
    cu_decode,
    cu_prefill_workspace,
    cu_prefill,
    cu_moments,
    OKV_CAP_KEY_BIAS, /* caps: key centering (append k_bias, rotate bias) */
    cu_configure,
};

} // namespace

OKV_EXPORT okv_status_t okv_backend_entry_v1(uint32_t core_iface_version, const okv_backend_ops_t **ops)
{
    if (!ops) return OKV_ERROR_NULL_POINTER;
    if (core_iface_version != OKV_BACKEND_IFACE_VERSION) return OKV_ERROR_VERSION_MISMATCH;
    *ops = &g_ops;
    return OKV_SUCCESS;
}
