/*
 * backend_iface.h - the contract between the core and a backend (built in or a
 * dlopen'ed module). A module exports one C function, OKV_BACKEND_ENTRY, that
 * negotiates the interface version and hands back a const table of functions.
 *
 * The core validates every parameter that can be checked without reading device
 * memory (NULLs, shapes, dtypes, buffer bounds) before calling a backend, so every
 * backend returns the same status for those. Backends check what only they can see
 * (data-dependent indices, NaN/Inf in inputs where practical, device errors) and
 * write a one-line detail into err.
 */
#ifndef OKV_BACKEND_IFACE_H
#define OKV_BACKEND_IFACE_H

#include "oscarkv/oscarkv.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OKV_BACKEND_IFACE_VERSION 1u
#define OKV_BACKEND_ENTRY okv_backend_entry_v1
#define OKV_BACKEND_ENTRY_NAME "okv_backend_entry_v1"
#define OKV_ERR_MAX 512

/* What a buffer is, seen from a backend: `native` is the device pointer (cuda/hip),
 * the cl_mem (opencl) or the host pointer (ref). Data of a ref lives at
 * native + offset (pointer backends) or at that offset inside the cl_mem. */
struct okv_buffer {
    struct okv_context *ctx;
    void *native;
    size_t bytes;
    int owned;
};

typedef struct okv_err {
    char msg[OKV_ERR_MAX];
} okv_err_t;

typedef struct okv_backend_ops {
    uint32_t iface_version;
    uint32_t struct_size;
    const char *name;
    /* Is the runtime/device there? Fills device_count and, when not, a reason. */
    okv_status_t (*probe)(int32_t *device_count, char *reason, size_t reason_cap);
    okv_status_t (*device_info)(int32_t device, okv_device_info_t *info);
    okv_status_t (*create)(int32_t device, void *native_stream, void **state, okv_err_t *err);
    void (*destroy)(void *state);
    okv_status_t (*alloc)(void *state, size_t bytes, void **native, okv_err_t *err);
    void (*release)(void *state, void *native);
    okv_status_t (*write)(void *state, void *native, size_t offset, const void *src, size_t bytes, okv_err_t *err);
    okv_status_t (*read)(void *state, void *native, size_t offset, void *dst, size_t bytes, okv_err_t *err);
    okv_status_t (*synchronize)(void *state, okv_err_t *err);

    okv_status_t (*rotate)(void *state, const okv_rotate_params_t *p, okv_err_t *err);
    okv_status_t (*append)(void *state, const okv_append_params_t *p, okv_err_t *err);
    okv_status_t (*demote)(void *state, const okv_demote_params_t *p, okv_err_t *err);
    okv_status_t (*dequantize)(void *state, const okv_dequantize_params_t *p, okv_err_t *err);
    okv_status_t (*decode_workspace)(void *state, const okv_decode_params_t *p, size_t *bytes, okv_err_t *err);
    okv_status_t (*decode)(void *state, const okv_decode_params_t *p, okv_err_t *err);
    okv_status_t (*prefill_workspace)(void *state, const okv_prefill_params_t *p, size_t *bytes, okv_err_t *err);
    okv_status_t (*prefill)(void *state, const okv_prefill_params_t *p, okv_err_t *err);
    okv_status_t (*moments)(void *state, const okv_moments_params_t *p, okv_err_t *err);
    /* Optional features (OKV_CAP_*); the core refuses a request that needs one the
     * backend lacks. Modules whose struct_size ends before this field have none. */
    uint32_t caps;
    /* Applies okv_context_desc_t.flags (OKV_CONTEXT_*) to a new context; optional. */
    okv_status_t (*configure)(void *state, uint32_t flags, okv_err_t *err);
} okv_backend_ops_t;

#define OKV_CAP_KEY_BIAS 1u /* okv_append_params_t.k_bias and okv_rotate_params_t.bias */

/* `configure` of a table, NULL where the module's struct ends before it. */
static inline okv_status_t (*okv_backend_configure_fn(const okv_backend_ops_t *ops))(void *, uint32_t, okv_err_t *)
{
    return ops->struct_size >= offsetof(okv_backend_ops_t, configure) + sizeof ops->configure ? ops->configure : 0;
}

/* Capabilities of a table, reading `caps` only where the module's struct has it. */
static inline uint32_t okv_backend_caps(const okv_backend_ops_t *ops)
{
    return ops->struct_size >= offsetof(okv_backend_ops_t, caps) + sizeof(uint32_t) ? ops->caps : 0u;
}

/* Exported by every module (visibility default):
 *   okv_status_t okv_backend_entry_v1(uint32_t core_iface_version, const okv_backend_ops_t **ops);
 * returns OKV_ERROR_VERSION_MISMATCH when it cannot serve core_iface_version. */
typedef okv_status_t (*okv_backend_entry_fn)(uint32_t core_iface_version, const okv_backend_ops_t **ops);

/* Address of a ref's first byte for pointer backends (ref, cuda, hip). */
static inline void *okv_ref_ptr(okv_ref_t r) { return r.buffer ? (char *)r.buffer->native + r.offset : (void *)0; }

#ifdef __cplusplus
}
#endif
#endif /* OKV_BACKEND_IFACE_H */
