/* okv_internal.h - declarations shared by the core's translation units. */
#ifndef OKV_INTERNAL_H
#define OKV_INTERNAL_H

#include "backend_iface.h"
#include "oscarkv/oscarkv.h"

#include <stdarg.h>

struct okv_context {
    const okv_backend_ops_t *ops;
    void *state;
    int32_t device;
    okv_err_t err; /* detail of the last failing call */
};

/* Formats a detail line into e (printf-style) and returns status. */
okv_status_t okv_fail(okv_err_t *e, okv_status_t status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Log through the user's callback, if any. */
void okv_log(okv_log_level_t level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Registry: backend slots in auto order (cuda, hip, opencl, ref). */
#define OKV_MAX_BACKENDS 4
typedef struct okv_backend_slot {
    const char *name;
    const okv_backend_ops_t *ops; /* NULL when not loaded */
    int32_t available;
    int32_t device_count;
    char reason[OKV_REASON_MAX];
} okv_backend_slot_t;

/* Loads (once, thread-safe) and returns the slot array; *count = OKV_MAX_BACKENDS. */
const okv_backend_slot_t *okv_registry(int32_t *count);
const okv_backend_slot_t *okv_registry_find(const char *name);

/* Parameter validation shared by all backends (core/validate_*.c). */
okv_status_t okv_validate_cache_desc(const okv_cache_desc_t *d, okv_err_t *e);
okv_status_t okv_validate_rotate(const okv_rotate_params_t *p, okv_err_t *e);
okv_status_t okv_validate_append(const okv_append_params_t *p, okv_err_t *e);
okv_status_t okv_validate_demote(const okv_demote_params_t *p, okv_err_t *e);
okv_status_t okv_validate_dequantize(const okv_dequantize_params_t *p, okv_err_t *e);
okv_status_t okv_validate_decode(const okv_decode_params_t *p, int need_workspace, okv_err_t *e);
okv_status_t okv_validate_prefill(const okv_prefill_params_t *p, int need_workspace, okv_err_t *e);
okv_status_t okv_validate_moments(const okv_moments_params_t *p, okv_err_t *e);

#endif
