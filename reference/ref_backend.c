/* ref_backend.c - the okv_backend_ops_t table of the "ref" backend: buffers are
 * host memory (calloc / memcpy), work runs synchronously on the calling thread
 * through the reference functions of ref_ops.h. */
#include "ref_backend.h"

#include "ref_ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REF_DEVICE_NAME "scalar C reference"

typedef struct ref_state {
    int32_t device;
} ref_state_t;

static okv_status_t ref_probe(int32_t *device_count, char *reason, size_t reason_cap)
{
    if (device_count) *device_count = 1;
    if (reason && reason_cap) snprintf(reason, reason_cap, "%s", REF_DEVICE_NAME);
    return OKV_SUCCESS;
}

static okv_status_t ref_device_info(int32_t device, okv_device_info_t *info)
{
    if (!info) return OKV_ERROR_NULL_POINTER;
    if (device != 0) return OKV_ERROR_INVALID_ARGUMENT;
    memset(info, 0, sizeof *info);
    info->size = sizeof *info;
    snprintf(info->name, sizeof info->name, "%s", REF_DEVICE_NAME);
    snprintf(info->vendor, sizeof info->vendor, "oscarkv");
    snprintf(info->driver, sizeof info->driver, "host");
    info->global_mem_bytes = 0; /* host memory: not reported */
    info->compute_units = 1;
    info->warp_size = 1;
    info->has_fp64 = 1;
    info->has_fp16 = 1;
    info->has_subgroups = 0;
    return OKV_SUCCESS;
}

static okv_status_t ref_create(int32_t device, void *native_stream, void **state, okv_err_t *err)
{
    if (device != 0)
        return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT, "ref backend has one device (0), not %d", device);
    ref_state_t *s = (ref_state_t *)calloc(1, sizeof *s);
    if (!s) return okv_ref_fail(err, OKV_ERROR_OUT_OF_MEMORY, "ref backend state");
    s->device = device;
    *state = s;
    return OKV_SUCCESS;
}

static void ref_destroy(void *state) { free(state); }

static okv_status_t ref_alloc(void *state, size_t bytes, void **native, okv_err_t *err)
{
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) return okv_ref_fail(err, OKV_ERROR_OUT_OF_MEMORY, "host allocation of %zu bytes failed", bytes);
    *native = p;
    return OKV_SUCCESS;
}

static void ref_release(void *state, void *native) { free(native); }

static okv_status_t ref_write(void *state, void *native, size_t offset, const void *src, size_t bytes, okv_err_t *err)
{
    if (bytes) memcpy((char *)native + offset, src, bytes);
    return OKV_SUCCESS;
}

static okv_status_t ref_read(void *state, void *native, size_t offset, void *dst, size_t bytes, okv_err_t *err)
{
    if (bytes) memcpy(dst, (const char *)native + offset, bytes);
    return OKV_SUCCESS;
}

static okv_status_t ref_synchronize(void *state, okv_err_t *err) { return OKV_SUCCESS; }

static okv_status_t ref_rotate(void *state, const okv_rotate_params_t *p, okv_err_t *err)
{
    return okv_ref_rotate_biased(okv_ref_ptr(p->x), p->x_dtype, okv_ref_ptr(p->out), p->out_dtype,
                                 (const float *)okv_ref_ptr(p->rotation), (const float *)okv_ref_ptr(p->bias),
                                 p->n_rows, p->n_heads, p->head_dim, p->per_head, p->head_group, p->transpose, err);
}

static okv_status_t ref_append(void *state, const okv_append_params_t *p, okv_err_t *err)
{
    okv_ref_cache_t c;
    okv_ref_cache_from_view(&p->cache, &c);
    return okv_ref_append_centered(
        &c, okv_ref_ptr(p->k), okv_ref_ptr(p->v), p->kv_dtype, (const int32_t *)okv_ref_ptr(p->append_indptr),
        p->n_rows, (const float *)okv_ref_ptr(p->k_rotation), (const float *)okv_ref_ptr(p->v_rotation),
        (const float *)okv_ref_ptr(p->k_bias), p->per_head_rotation, p->k_clip_ratio, p->v_clip_ratio, err);
}

static okv_status_t ref_demote(void *state, const okv_demote_params_t *p, okv_err_t *err)
{
    okv_ref_cache_t c;
    okv_ref_cache_from_view(&p->cache, &c);
    return okv_ref_demote(&c, p->n_rows, p->k_clip_ratio, p->v_clip_ratio, err);
}

static okv_status_t ref_dequantize(void *state, const okv_dequantize_params_t *p, okv_err_t *err)
{
    okv_ref_cache_t c;
    okv_ref_cache_from_view(&p->cache, &c);
    return okv_ref_dequantize(&c, (const int32_t *)okv_ref_ptr(p->out_indptr), p->out_rows, okv_ref_ptr(p->k_out),
                              okv_ref_ptr(p->v_out), p->out_dtype, err);
}

/* The reference keeps its per-split state on the stack: no workspace. */
static okv_status_t ref_decode_workspace(void *state, const okv_decode_params_t *p, size_t *bytes, okv_err_t *err)
{
    *bytes = 0;
    return OKV_SUCCESS;
}

static okv_status_t ref_decode(void *state, const okv_decode_params_t *p, okv_err_t *err)
{
    okv_ref_cache_t c;
    okv_ref_cache_from_view(&p->cache, &c);
    return okv_ref_decode(&c, okv_ref_ptr(p->q), p->q_dtype, okv_ref_ptr(p->out), p->out_dtype,
                          (float *)okv_ref_ptr(p->lse), p->sm_scale, p->max_seq_len, p->num_splits,
                          p->unrotate_output ? (const float *)okv_ref_ptr(p->v_rotation) : NULL, p->per_head_rotation,
                          p->unrotate_output, err);
}

static okv_status_t ref_prefill_workspace(void *state, const okv_prefill_params_t *p, size_t *bytes, okv_err_t *err)
{
    *bytes = 0;
    return OKV_SUCCESS;
}

static okv_status_t ref_prefill(void *state, const okv_prefill_params_t *p, okv_err_t *err)
{
    okv_ref_cache_t c;
    okv_ref_cache_from_view(&p->cache, &c);
    return okv_ref_prefill(&c, (const int32_t *)okv_ref_ptr(p->q_indptr), p->n_rows, okv_ref_ptr(p->q),
                           okv_ref_ptr(p->k_new), okv_ref_ptr(p->v_new), p->in_dtype, okv_ref_ptr(p->out), p->out_dtype,
                           p->sm_scale, err);
}

static okv_status_t ref_moments(void *state, const okv_moments_params_t *p, okv_err_t *err)
{
    return okv_ref_moments(okv_ref_ptr(p->x), p->x_dtype, (const float *)okv_ref_ptr(p->weights), okv_ref_ptr(p->acc),
                           p->acc_dtype, p->n_rows, p->n_heads, p->head_dim, p->head_group, err);
}

static const okv_backend_ops_t g_ref_ops = {
    OKV_BACKEND_IFACE_VERSION,
    (uint32_t)sizeof(okv_backend_ops_t),
    "ref",
    ref_probe,
    ref_device_info,
    ref_create,
    ref_destroy,
    ref_alloc,
    ref_release,
    ref_write,
    ref_read,
    ref_synchronize,
    ref_rotate,
    ref_append,
    ref_demote,
    ref_dequantize,
    ref_decode_workspace,
    ref_decode,
    ref_prefill_workspace,
    ref_prefill,
    ref_moments,
    OKV_CAP_KEY_BIAS,
    NULL, /* configure: the reference checks everything on the host at no sync cost */
};

const okv_backend_ops_t *okv_ref_backend_ops(void) { return &g_ref_ops; }
