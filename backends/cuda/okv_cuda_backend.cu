/*
 * okv_cuda_backend.cu - the CUDA backend module: runtime glue and the function
 * table exported through okv_backend_entry_v1 (core/backend_iface.h).
 *
 * Every CUDA call is checked; a failure returns OKV_ERROR_DEVICE with the CUDA
 * error string in err. Ops enqueue on the context's stream (the caller's
 * native_stream, or one created here) and never allocate or synchronize, so they
 * can be captured in a CUDA graph. Data-dependent failures inside kernels
 * (metadata overflow, non-finite rotated rows) are recorded in a device status
 * word and reported by the next synchronize.
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
    if (e != cudaSuccess) {
        if (st->own_stream) cudaStreamDestroy(st->stream);
        free(st);
        return cuda_fail(err, e, "status word");
    }
    *state = st;
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
    if (flags) {
        CK(cudaMemset(st->d_status, 0, sizeof flags), "status word reset");
        if (flags & 1)
            return fail(err, OKV_ERROR_METADATA_OVERFLOW,
                        "cuda: an earlier append/demote met a row whose scale/offset does not fit the metadata type "
                        "(row not written)");
        return fail(err, OKV_ERROR_NONFINITE_INPUT,
                    "cuda: an earlier append met a non-finite rotated row (row not written)");
    }
    return OKV_SUCCESS;
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
}

okv_status_t launched(okv_err_t *err, int e, const char *what)
{
    if (e != cudaSuccess) return cuda_fail(err, (cudaError_t)e, what);
    return OKV_SUCCESS;
}

okv_status_t cu_rotate(void *state, const okv_rotate_params_t *p, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    okv_status_t s = set_device(st, err);
    if (s != OKV_SUCCESS) return s;
    return launched(err,
                    okvc_rotate_launch(st, okv_ref_ptr(p->x), (int)p->x_dtype, okv_ref_ptr(p->out), (int)p->out_dtype,
                                       (const float *)okv_ref_ptr(p->rotation), p->n_rows, p->n_heads, p->head_dim,
                                       p->per_head, p->head_group, p->transpose, (const float *)okv_ref_ptr(p->bias)),
                    "rotate");
}

okv_status_t cu_append(void *state, const okv_append_params_t *p, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    okv_status_t s = set_device(st, err);
    if (s != OKV_SUCCESS) return s;
    okvc_cache_t c;
    cache_from_view(&p->cache, &c);
    return launched(err,
                    okvc_append_launch(st, &c, okv_ref_ptr(p->k), okv_ref_ptr(p->v), (int)p->kv_dtype,
                                       (const int *)okv_ref_ptr(p->append_indptr), p->n_rows,
                                       (const float *)okv_ref_ptr(p->k_rotation),
                                       (const float *)okv_ref_ptr(p->v_rotation), p->per_head_rotation, p->k_clip_ratio,
                                       p->v_clip_ratio, (const float *)okv_ref_ptr(p->k_bias)),
                    "append");
}

okv_status_t cu_demote(void *state, const okv_demote_params_t *p, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    okv_status_t s = set_device(st, err);
    if (s != OKV_SUCCESS) return s;
    okvc_cache_t c;
    cache_from_view(&p->cache, &c);
    return launched(err, okvc_demote_launch(st, &c, p->n_rows, p->k_clip_ratio, p->v_clip_ratio), "demote");
}

okv_status_t cu_dequantize(void *state, const okv_dequantize_params_t *p, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    okv_status_t s = set_device(st, err);
    if (s != OKV_SUCCESS) return s;
    okvc_cache_t c;
    cache_from_view(&p->cache, &c);
    return launched(err,
                    okvc_dequantize_launch(st, &c, (const int *)okv_ref_ptr(p->out_indptr), p->out_rows,
                                           okv_ref_ptr(p->k_out), okv_ref_ptr(p->v_out), (int)p->out_dtype),
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
    okv_status_t s = set_device(st, err);
    if (s != OKV_SUCCESS) return s;
    okvc_decode_args_t a;
    decode_args(p, &a);
    if (a.c.batch == 0) return OKV_SUCCESS;
    if (a.workspace_bytes < okvc_decode_workspace(st, &a))
        return fail(err, OKV_ERROR_BAD_SHAPE, "cuda: decode workspace too small");
    return launched(err, okvc_decode_launch(st, &a), "decode attention");
}

okv_status_t cu_prefill_workspace(void *state, const okv_prefill_params_t *p, size_t *bytes, okv_err_t *err)
{
    (void)state;
    (void)p;
    (void)err;
    *bytes = 0;
    return OKV_SUCCESS;
}

okv_status_t cu_prefill(void *state, const okv_prefill_params_t *p, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    okv_status_t s = set_device(st, err);
    if (s != OKV_SUCCESS) return s;
    okvc_cache_t c;
    cache_from_view(&p->cache, &c);
    return launched(err,
                    okvc_prefill_launch(st, &c, (const int *)okv_ref_ptr(p->q_indptr), p->n_rows, okv_ref_ptr(p->q),
                                        okv_ref_ptr(p->k_new), okv_ref_ptr(p->v_new), (int)p->in_dtype,
                                        okv_ref_ptr(p->out), (int)p->out_dtype, p->sm_scale),
                    "prefill attention");
}

okv_status_t cu_moments(void *state, const okv_moments_params_t *p, okv_err_t *err)
{
    okvc_state_t *st = S(state);
    okv_status_t s = set_device(st, err);
    if (s != OKV_SUCCESS) return s;
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
};

} // namespace

OKV_EXPORT okv_status_t okv_backend_entry_v1(uint32_t core_iface_version, const okv_backend_ops_t **ops)
{
    if (!ops) return OKV_ERROR_NULL_POINTER;
    if (core_iface_version != OKV_BACKEND_IFACE_VERSION) return OKV_ERROR_VERSION_MISMATCH;
    *ops = &g_ops;
    return OKV_SUCCESS;
}
