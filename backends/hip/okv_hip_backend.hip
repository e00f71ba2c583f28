/*
 * okv_hip_backend.hip - the HIP backend module: runtime glue and the function table
 * exported through okv_backend_entry_v1 (core/backend_iface.h).
 *
 * Same source for AMD (clang -x hip) and NVIDIA (nvcc, through okv_hip_alias.h).
 * Every runtime call is checked; a failure returns OKV_ERROR_DEVICE with the
 * runtime's error string. Like the reference, a failing op writes nothing: each op
 * first runs device-side validation (page tables, lengths, indptr arrays, NaN/Inf in
 * its inputs), reads the device status word back, then (append, demote) runs a dry
 * pass that only detects metadata overflow and non-finite rotated rows, reads the
 * status word again, and only then commits. Ops therefore synchronise the stream
 * once or twice; the kernels themselves never allocate. With OKV_CONTEXT_TRUST_INPUTS
 * (or OKV_HIP_TRUST_INPUTS=1) all of that is skipped: no host sync, graph-capturable,
 * undefined results for invalid data.
 * Launch shapes use the device's warpSize (queried here), never a literal width.
 */
#include "okv_hip_alias.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "okv_format.h"
#include "okv_hip.h"

#define OKV_EXPORT extern "C" __attribute__((visibility("default")))
#ifndef OKV_HIP_TARGETS
#define OKV_HIP_TARGETS "unknown targets"
#endif

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

okv_status_t hip_fail(okv_err_t *err, hipError_t e, const char *what)
{
    return fail(err, OKV_ERROR_DEVICE, "hip: %s: %s (%s, %d)", what, hipGetErrorString(e), hipGetErrorName(e), (int)e);
}

#define CK(call, what)                                                                                                 \
    do {                                                                                                               \
        hipError_t e_ = (call);                                                                                        \
        if (e_ != hipSuccess) return hip_fail(err, e_, what);                                                          \
    } while (0)

#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        okv_status_t s_ = (x);                                                                                         \
        if (s_ != OKV_SUCCESS) return s_;                                                                              \
    } while (0)

okvh_state_t *ST(void *state) { return (okvh_state_t *)state; }
hipStream_t STREAM(const okvh_state_t *st) { return (hipStream_t)st->stream; }

okv_status_t set_device(okvh_state_t *st, okv_err_t *err)
{
    CK(hipSetDevice(st->device), "hipSetDevice");
    return OKV_SUCCESS;
}

void device_arch(const hipDeviceProp_t &p, char *out, size_t cap)
{
#if defined(OKV_HIP_VENDOR_AMD) || defined(OKV_HIP_VENDOR_EMU)
    snprintf(out, cap, "%.63s", p.gcnArchName);
#else
    snprintf(out, cap, "sm_%d%d", p.major, p.minor);
#endif
}

okv_status_t hp_probe(int32_t *device_count, char *reason, size_t cap)
{
    int n = 0;
    hipError_t e = hipGetDeviceCount(&n);
    if (device_count) *device_count = 0;
    if (e != hipSuccess) {
        if (reason && cap)
            snprintf(reason, cap, "no device (hipGetDeviceCount returned %s, %d)", hipGetErrorName(e), (int)e);
        (void)hipGetLastError();
        return OKV_ERROR_BACKEND_UNAVAILABLE;
    }
    if (n <= 0) {
        if (reason && cap) snprintf(reason, cap, "no device");
        return OKV_ERROR_BACKEND_UNAVAILABLE;
    }
    if (device_count) *device_count = n;
    if (reason && cap) {
        hipDeviceProp_t p;
        char arch[64] = "";
        if (hipGetDeviceProperties(&p, 0) == hipSuccess) {
            device_arch(p, arch, sizeof arch);
            snprintf(reason, cap, "%d device(s); 0: %.120s (%s, %.40s, wave %d, %d CUs)", n, p.name, OKV_DEVICE_VENDOR,
                     arch, p.warpSize, p.multiProcessorCount);
        }
    }
    return OKV_SUCCESS;
}

okv_status_t hp_device_info(int32_t device, okv_device_info_t *info)
{
    hipDeviceProp_t p;
    if (hipGetDeviceProperties(&p, device) != hipSuccess) {
        (void)hipGetLastError();
        return OKV_ERROR_BACKEND_UNAVAILABLE;
    }
    char arch[64];
    device_arch(p, arch, sizeof arch);
    snprintf(info->name, sizeof info->name, "%.200s (%.40s)", p.name, arch);
    snprintf(info->vendor, sizeof info->vendor, "%s", OKV_DEVICE_VENDOR);
    int drv = 0, rt = 0;
    (void)hipDriverGetVersion(&drv);
    (void)hipRuntimeGetVersion(&rt);
    snprintf(info->driver, sizeof info->driver, "driver %d, runtime %d", drv, rt);
    info->global_mem_bytes = p.totalGlobalMem;
    info->compute_units = p.multiProcessorCount;
    info->warp_size = p.warpSize;
    info->has_fp64 = 1;
    info->has_fp16 = 1;
    info->has_subgroups = 1;
    return OKV_SUCCESS;
}

void free_state(okvh_state_t *st)
{
    if (st->d_flags) (void)hipFree(st->d_flags);
    if (st->own_stream && st->stream) (void)hipStreamDestroy(STREAM(st));
    free(st);
}

okv_status_t hp_create(int32_t device, void *native_stream, void **state, okv_err_t *err)
{
    int n = 0;
    hipError_t e = hipGetDeviceCount(&n);
    if (e != hipSuccess || n <= 0) {
        (void)hipGetLastError();
        return fail(err, OKV_ERROR_BACKEND_UNAVAILABLE, "hip: no device (hipGetDeviceCount: %s)",
                    e != hipSuccess ? hipGetErrorString(e) : "0 devices");
    }
    if (device < 0 || device >= n) return fail(err, OKV_ERROR_INVALID_ARGUMENT, "hip: device %d of %d", device, n);
    okvh_state_t *st = (okvh_state_t *)calloc(1, sizeof *st);
    if (!st) return fail(err, OKV_ERROR_OUT_OF_MEMORY, "hip: state");
    st->device = device;
    okv_status_t s = set_device(st, err);
    if (s != OKV_SUCCESS) {
        free(st);
        return s;
    }
    hipDeviceProp_t p;
    e = hipGetDeviceProperties(&p, device);
    if (e != hipSuccess) {
        free(st);
        return hip_fail(err, e, "hipGetDeviceProperties");
    }
    st->warp = p.warpSize;
    st->num_cus = p.multiProcessorCount;
    device_arch(p, st->arch, sizeof st->arch);
    if (st->warp <= 0 || st->warp > OKV_WAVE_MAX || (st->warp & (st->warp - 1))) {
        free(st);
        return fail(err, OKV_ERROR_BACKEND_UNAVAILABLE, "hip: unsupported wave width %d", p.warpSize);
    }
    if (native_stream) {
        st->stream = native_stream;
    } else {
        hipStream_t h;
        e = hipStreamCreateWithFlags(&h, hipStreamNonBlocking);
        if (e != hipSuccess) {
            free(st);
            return hip_fail(err, e, "hipStreamCreateWithFlags");
        }
        st->stream = (void *)h;
        st->own_stream = 1;
    }
    e = hipMalloc((void **)&st->d_flags, 16);
    if (e == hipSuccess) e = hipMemsetAsync(st->d_flags, 0, 16, STREAM(st));
    if (e == hipSuccess) e = hipStreamSynchronize(STREAM(st));
    if (e != hipSuccess) {
        free_state(st);
        return hip_fail(err, e, "device status word");
    }
    /* A kernel launch here catches a module without code for this GPU (e.g. an
     * AMD arch this build did not target) at creation, not in the first op. */
    s = OKV_SUCCESS;
    int rc = okvh_check_finite_launch(st, st->d_flags, OKV_DTYPE_F32, 1);
    if (rc == hipSuccess) rc = hipStreamSynchronize(STREAM(st));
    if (rc != hipSuccess) {
        (void)hipGetLastError();
        s = fail(err, OKV_ERROR_BACKEND_UNAVAILABLE,
                 "hip: %s: this module has no usable code object for %s (built for " OKV_HIP_TARGETS ")",
                 hipGetErrorString((hipError_t)rc), st->arch);
        free_state(st);
        return s;
    }
    st->use_mfma = okvh_mfma_selftest(st);
    const char *ti = getenv("OKV_HIP_TRUST_INPUTS");
    st->trust_inputs = ti && *ti && *ti != '0';
    *state = st;
    return OKV_SUCCESS;
}

void hp_destroy(void *state)
{
    okvh_state_t *st = ST(state);
    if (!st) return;
    (void)hipSetDevice(st->device);
    (void)hipStreamSynchronize(STREAM(st));
    free_state(st);
}

okv_status_t hp_alloc(void *state, size_t bytes, void **native, okv_err_t *err)
{
    TRY(set_device(ST(state), err));
    hipError_t e = hipMalloc(native, bytes ? bytes : 1);
    if (e == hipErrorOutOfMemory) {
        (void)hipGetLastError();
        return fail(err, OKV_ERROR_OUT_OF_MEMORY, "hip: hipMalloc(%zu): %s", bytes, hipGetErrorString(e));
    }
    CK(e, "hipMalloc");
    return OKV_SUCCESS;
}

void hp_release(void *state, void *native)
{
    (void)hipSetDevice(ST(state)->device);
    (void)hipFree(native);
}

okv_status_t hp_write(void *state, void *native, size_t offset, const void *src, size_t bytes, okv_err_t *err)
{
    okvh_state_t *st = ST(state);
    TRY(set_device(st, err));
    if (!bytes) return OKV_SUCCESS;
    CK(hipMemcpyAsync((char *)native + offset, src, bytes, hipMemcpyHostToDevice, STREAM(st)), "write");
    CK(hipStreamSynchronize(STREAM(st)), "write (synchronize)");
    return OKV_SUCCESS;
}

okv_status_t hp_read(void *state, void *native, size_t offset, void *dst, size_t bytes, okv_err_t *err)
{
    okvh_state_t *st = ST(state);
    TRY(set_device(st, err));
    if (!bytes) return OKV_SUCCESS;
    CK(hipMemcpyAsync(dst, (const char *)native + offset, bytes, hipMemcpyDeviceToHost, STREAM(st)), "read");
    CK(hipStreamSynchronize(STREAM(st)), "read (synchronize)");
    return OKV_SUCCESS;
}

okv_status_t hp_configure(void *state, uint32_t flags, okv_err_t *)
{
    if (flags & OKV_CONTEXT_TRUST_INPUTS) ST(state)->trust_inputs = 1;
    return OKV_SUCCESS;
}

okv_status_t hp_synchronize(void *state, okv_err_t *err)
{
    okvh_state_t *st = ST(state);
    TRY(set_device(st, err));
    CK(hipStreamSynchronize(STREAM(st)), "hipStreamSynchronize");
    return OKV_SUCCESS;
}

/* ---- device status word ---- */
okv_status_t flags_clear(okvh_state_t *st, okv_err_t *err)
{
    if (st->trust_inputs) return OKV_SUCCESS; /* trusted: the word is never read back */
    CK(hipMemsetAsync(st->d_flags, 0, sizeof(int), STREAM(st)), "status word reset");
    return OKV_SUCCESS;
}

/* Waits for the op's kernels so far and turns the status word into a status. */
okv_status_t flags_check(okvh_state_t *st, const char *op, okv_err_t *err)
{
    if (st->trust_inputs) return OKV_SUCCESS; /* trusted: never wait for the device */
    int f = 0;
    CK(hipMemcpyAsync(&f, st->d_flags, sizeof f, hipMemcpyDeviceToHost, STREAM(st)), "status word");
    CK(hipStreamSynchronize(STREAM(st)), "status word (synchronize)");
    if (f & OKVH_FLAG_BAD_INDEX)
        return fail(err, OKV_ERROR_INVALID_ARGUMENT,
                    "hip %s: invalid page table, lengths or indptr (page index outside its pool, too few pages, "
                    "non-monotone indptr or inconsistent seq_len/int2_len)",
                    op);
    if (f & OKVH_FLAG_NONFINITE)
        return fail(err, OKV_ERROR_NONFINITE_INPUT, "hip %s: NaN or Inf in the input data", op);
    if (f & OKVH_FLAG_META_OVERFLOW)
        return fail(err, OKV_ERROR_METADATA_OVERFLOW, "hip %s: a group's scale/offset does not fit the metadata type",
                    op);
    return OKV_SUCCESS;
}

okv_status_t launched(okv_err_t *err, int e, const char *what)
{
    if (e != hipSuccess) return hip_fail(err, (hipError_t)e, what);
    return OKV_SUCCESS;
}

okv_status_t finite(okvh_state_t *st, okv_ref_t x, okv_dtype_t dt, size_t n, okv_err_t *err)
{
    if (st->trust_inputs) return OKV_SUCCESS;
    return launched(err, okvh_check_finite_launch(st, okv_ref_ptr(x), (int)dt, n), "finite check");
}

/* Page tables, lengths and indptr arrays checked on the device (skipped when trusted). */
okv_status_t validate(okvh_state_t *st, const okvh_cache_t *c, int need_mode, int n, const int *aip, int row_mode,
                      const int *rip, int n_rows, const char *what, okv_err_t *err)
{
    if (st->trust_inputs) return OKV_SUCCESS;
    return launched(err, okvh_validate_launch(st, c, need_mode, n, aip, row_mode, rip, n_rows), what);
}

okv_status_t float_dtype(okv_dtype_t dt, const char *what, okv_err_t *err)
{
    if (dt == OKV_DTYPE_F32 || dt == OKV_DTYPE_F16 || dt == OKV_DTYPE_BF16) return OKV_SUCCESS;
    return fail(err, OKV_ERROR_UNSUPPORTED, "hip: %s dtype %d not supported", what, (int)dt);
}

okv_status_t head_dim_ok(int d, okv_err_t *err)
{
    if (d == 64 || d == 128 || d == 256) return OKV_SUCCESS;
    return fail(err, OKV_ERROR_UNSUPPORTED_HEAD_DIM, "hip: head_dim %d (64, 128 or 256)", d);
}

long long i32_cap(okv_ref_t r)
{
    if (!r.buffer || r.offset > r.buffer->bytes) return 0;
    return (long long)((r.buffer->bytes - r.offset) / sizeof(int32_t));
}

/* ---- cache view -> device description ---- */
void cache_from_view(const okv_cache_view_t *v, okvh_cache_t *c)
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
    c->seq_lens = (int *)okv_ref_ptr(v->seq_lens);
    c->int2_lens = (int *)okv_ref_ptr(v->int2_lens);
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

/* ---- operations ---- */
okv_status_t hp_rotate(void *state, const okv_rotate_params_t *p, okv_err_t *err)
{
    okvh_state_t *st = ST(state);
    TRY(set_device(st, err));
    TRY(head_dim_ok(p->head_dim, err));
    TRY(float_dtype(p->x_dtype, "x", err));
    TRY(float_dtype(p->out_dtype, "out", err));
    const int d = p->head_dim;
    const int n_rot = p->per_head ? p->n_heads / (p->head_group > 0 ? p->head_group : 1) : 1;
    TRY(flags_clear(st, err));
    TRY(finite(st, p->x, p->x_dtype, (size_t)p->n_rows * p->n_heads * d, err));
    TRY(finite(st, p->rotation, OKV_DTYPE_F32, (size_t)n_rot * d * d, err));
    TRY(finite(st, p->bias, OKV_DTYPE_F32, (size_t)n_rot * d, err));
    TRY(flags_check(st, "rotate", err));
    return launched(err,
                    okvh_rotate_launch(st, okv_ref_ptr(p->x), (int)p->x_dtype, okv_ref_ptr(p->out), (int)p->out_dtype,
                                       (const float *)okv_ref_ptr(p->rotation), p->n_rows, p->n_heads, d, p->per_head,
                                       p->head_group, p->transpose, (const float *)okv_ref_ptr(p->bias)),
                    "rotate");
}

okv_status_t hp_append(void *state, const okv_append_params_t *p, okv_err_t *err)
{
    okvh_state_t *st = ST(state);
    TRY(set_device(st, err));
    okvh_cache_t c;
    cache_from_view(&p->cache, &c);
    TRY(head_dim_ok(c.d, err));
    TRY(float_dtype(p->kv_dtype, "kv", err));
    if (c.batch <= 0) return OKV_SUCCESS;
    const int *aip = (const int *)okv_ref_ptr(p->append_indptr);
    const size_t n = (size_t)p->n_rows * c.hkv * c.d;
    const size_t nr = (size_t)(p->per_head_rotation ? c.hkv : 1) * c.d * c.d;
    TRY(flags_clear(st, err));
    TRY(validate(st, &c, 1, 0, aip, 1, aip, p->n_rows, "append validation", err));
    TRY(flags_check(st, "append", err));
    TRY(finite(st, p->k, p->kv_dtype, n, err));
    TRY(finite(st, p->v, p->kv_dtype, n, err));
    TRY(finite(st, p->k_rotation, OKV_DTYPE_F32, nr, err));
    TRY(finite(st, p->v_rotation, OKV_DTYPE_F32, nr, err));
    TRY(finite(st, p->k_bias, OKV_DTYPE_F32, (size_t)(p->per_head_rotation ? c.hkv : 1) * c.d, err));
    TRY(flags_check(st, "append", err));
    const void *k = okv_ref_ptr(p->k), *v = okv_ref_ptr(p->v);
    const float *kr = (const float *)okv_ref_ptr(p->k_rotation), *vr = (const float *)okv_ref_ptr(p->v_rotation);
    const float *kb = (const float *)okv_ref_ptr(p->k_bias);
    for (int commit = st->trust_inputs ? 1 : 0; commit < 2; ++commit) { /* dry run first */
        TRY(launched(err,
                     okvh_append_launch(st, &c, k, v, (int)p->kv_dtype, aip, p->n_rows, kr, vr, p->per_head_rotation,
                                        p->k_clip_ratio, p->v_clip_ratio, kb, commit),
                     "append"));
        if (!commit) TRY(flags_check(st, "append", err));
    }
    return OKV_SUCCESS;
}

okv_status_t hp_demote(void *state, const okv_demote_params_t *p, okv_err_t *err)
{
    okvh_state_t *st = ST(state);
    TRY(set_device(st, err));
    okvh_cache_t c;
    cache_from_view(&p->cache, &c);
    TRY(head_dim_ok(c.d, err));
    if (c.batch <= 0 || p->n_rows <= 0) return OKV_SUCCESS;
    TRY(flags_clear(st, err));
    /* current lengths first (a bad int2_len must not skew the target), then the target */
    TRY(validate(st, &c, 0, 0, nullptr, 0, nullptr, 0, "demote validation", err));
    TRY(flags_check(st, "demote", err));
    TRY(validate(st, &c, 2, p->n_rows, nullptr, 0, nullptr, 0, "demote validation", err));
    TRY(flags_check(st, "demote", err));
    for (int commit = st->trust_inputs ? 1 : 0; commit < 2; ++commit) { /* dry run first */
        TRY(launched(err, okvh_demote_launch(st, &c, p->n_rows, p->k_clip_ratio, p->v_clip_ratio, commit), "demote"));
        if (!commit) TRY(flags_check(st, "demote", err));
    }
    return OKV_SUCCESS;
}

okv_status_t hp_dequantize(void *state, const okv_dequantize_params_t *p, okv_err_t *err)
{
    okvh_state_t *st = ST(state);
    TRY(set_device(st, err));
    okvh_cache_t c;
    cache_from_view(&p->cache, &c);
    TRY(head_dim_ok(c.d, err));
    TRY(float_dtype(p->out_dtype, "out", err));
    if (c.batch <= 0) return OKV_SUCCESS;
    const int *oip = (const int *)okv_ref_ptr(p->out_indptr);
    TRY(flags_clear(st, err));
    TRY(validate(st, &c, 0, 0, nullptr, 2, oip, p->out_rows, "dequantize validation", err));
    TRY(flags_check(st, "dequantize", err));
    return launched(err,
                    okvh_dequantize_launch(st, &c, oip, p->out_rows, okv_ref_ptr(p->k_out), okv_ref_ptr(p->v_out),
                                           (int)p->out_dtype),
                    "dequantize");
}

void decode_args(const okv_decode_params_t *p, okvh_decode_args_t *a)
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

okv_status_t hp_decode_workspace(void *state, const okv_decode_params_t *p, size_t *bytes, okv_err_t *err)
{
    okvh_decode_args_t a;
    decode_args(p, &a);
    (void)err;
    *bytes = okvh_decode_workspace(ST(state), &a);
    return OKV_SUCCESS;
}

okv_status_t hp_decode(void *state, const okv_decode_params_t *p, okv_err_t *err)
{
    okvh_state_t *st = ST(state);
    TRY(set_device(st, err));
    okvh_decode_args_t a;
    decode_args(p, &a);
    TRY(head_dim_ok(a.c.d, err));
    TRY(float_dtype(p->q_dtype, "q", err));
    TRY(float_dtype(p->out_dtype, "out", err));
    if (a.c.batch <= 0) return OKV_SUCCESS;
    if (a.workspace_bytes < okvh_decode_workspace(st, &a) || !a.workspace)
        return fail(err, OKV_ERROR_BAD_SHAPE, "hip: decode workspace too small (%zu < %zu bytes)", a.workspace_bytes,
                    okvh_decode_workspace(st, &a));
    TRY(flags_clear(st, err));
    TRY(validate(st, &a.c, 0, 0, nullptr, 0, nullptr, 0, "decode validation", err));
    TRY(flags_check(st, "decode", err));
    TRY(finite(st, p->q, p->q_dtype, (size_t)a.c.batch * a.c.hq * a.c.d, err));
    if (p->unrotate_output)
        TRY(finite(st, p->v_rotation, OKV_DTYPE_F32, (size_t)(p->per_head_rotation ? a.c.hkv : 1) * a.c.d * a.c.d,
                   err));
    TRY(flags_check(st, "decode", err));
    return launched(err, okvh_decode_launch(st, &a), "decode attention");
}

okv_status_t hp_prefill_workspace(void *state, const okv_prefill_params_t *p, size_t *bytes, okv_err_t *err)
{
    (void)state;
    (void)p;
    (void)err;
    *bytes = 0;
    return OKV_SUCCESS;
}

okv_status_t hp_prefill(void *state, const okv_prefill_params_t *p, okv_err_t *err)
{
    okvh_state_t *st = ST(state);
    TRY(set_device(st, err));
    okvh_cache_t c;
    cache_from_view(&p->cache, &c);
    TRY(head_dim_ok(c.d, err));
    TRY(float_dtype(p->in_dtype, "in", err));
    TRY(float_dtype(p->out_dtype, "out", err));
    if (c.batch <= 0) return OKV_SUCCESS;
    const int *qip = (const int *)okv_ref_ptr(p->q_indptr);
    TRY(flags_clear(st, err));
    TRY(validate(st, &c, 0, 0, nullptr, 1, qip, p->n_rows, "prefill validation", err));
    TRY(flags_check(st, "prefill", err));
    TRY(finite(st, p->q, p->in_dtype, (size_t)p->n_rows * c.hq * c.d, err));
    TRY(finite(st, p->k_new, p->in_dtype, (size_t)p->n_rows * c.hkv * c.d, err));
    TRY(finite(st, p->v_new, p->in_dtype, (size_t)p->n_rows * c.hkv * c.d, err));
    TRY(flags_check(st, "prefill", err));
    return launched(err,
                    okvh_prefill_launch(st, &c, qip, p->n_rows, okv_ref_ptr(p->q), okv_ref_ptr(p->k_new),
                                        okv_ref_ptr(p->v_new), (int)p->in_dtype, okv_ref_ptr(p->out), (int)p->out_dtype,
                                        p->sm_scale),
                    "prefill attention");
}

okv_status_t hp_moments(void *state, const okv_moments_params_t *p, okv_err_t *err)
{
    okvh_state_t *st = ST(state);
    TRY(set_device(st, err));
    TRY(float_dtype(p->x_dtype, "x", err));
    if (p->acc_dtype != OKV_DTYPE_F32 && p->acc_dtype != OKV_DTYPE_F64)
        return fail(err, OKV_ERROR_INVALID_ARGUMENT, "hip: moments acc dtype %d (F32 or F64)", (int)p->acc_dtype);
    if (p->head_dim < 1 || p->head_dim > OKV_FMT_MAX_HEAD_DIM || p->head_group < 1 || p->n_heads % p->head_group)
        return fail(err, OKV_ERROR_BAD_SHAPE, "hip: moments n_heads %d, head_dim %d, head_group %d", p->n_heads,
                    p->head_dim, p->head_group);
    TRY(flags_clear(st, err));
    TRY(finite(st, p->x, p->x_dtype, (size_t)p->n_rows * p->n_heads * p->head_dim, err));
    TRY(finite(st, p->weights, OKV_DTYPE_F32, (size_t)p->n_rows * p->n_heads, err));
    TRY(flags_check(st, "moments", err));
    return launched(err,
                    okvh_moments_launch(st, okv_ref_ptr(p->x), (int)p->x_dtype, (const float *)okv_ref_ptr(p->weights),
                                        okv_ref_ptr(p->acc), (int)p->acc_dtype, p->n_rows, p->n_heads, p->head_dim,
                                        p->head_group),
                    "moments");
}

/* Filled field by field: fields appended to okv_backend_ops_t later (optional
 * capabilities) stay zero, i.e. "not implemented", until this backend sets them. */
okv_backend_ops_t make_ops()
{
    okv_backend_ops_t o;
    memset(&o, 0, sizeof o);
    o.iface_version = OKV_BACKEND_IFACE_VERSION;
    o.struct_size = (uint32_t)sizeof(okv_backend_ops_t);
    o.name = "hip";
    o.probe = hp_probe;
    o.device_info = hp_device_info;
    o.create = hp_create;
    o.destroy = hp_destroy;
    o.alloc = hp_alloc;
    o.release = hp_release;
    o.write = hp_write;
    o.read = hp_read;
    o.synchronize = hp_synchronize;
    o.configure = hp_configure;
    o.rotate = hp_rotate;
    o.append = hp_append;
    o.demote = hp_demote;
    o.dequantize = hp_dequantize;
    o.decode_workspace = hp_decode_workspace;
    o.decode = hp_decode;
    o.prefill_workspace = hp_prefill_workspace;
    o.prefill = hp_prefill;
    o.moments = hp_moments;
    o.caps = OKV_CAP_KEY_BIAS; /* key centering: append k_bias, rotate bias */
    return o;
}

const okv_backend_ops_t g_ops = make_ops();

} // namespace

OKV_EXPORT okv_status_t okv_backend_entry_v1(uint32_t core_iface_version, const okv_backend_ops_t **ops)
{
    if (!ops) return OKV_ERROR_NULL_POINTER;
    if (core_iface_version != OKV_BACKEND_IFACE_VERSION) return OKV_ERROR_VERSION_MISMATCH;
    *ops = &g_ops;
    return OKV_SUCCESS;
}
