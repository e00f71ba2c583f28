/* status.c - status names, version, and the process-wide log sink. */
#include "okv_internal.h"

#include <stdio.h>
#include <string.h>

OKV_API const char *okv_status_string(okv_status_t status)
{
    switch (status) {
    case OKV_SUCCESS: return "OKV_SUCCESS";
    case OKV_ERROR_NULL_POINTER: return "OKV_ERROR_NULL_POINTER";
    case OKV_ERROR_INVALID_ARGUMENT: return "OKV_ERROR_INVALID_ARGUMENT";
    case OKV_ERROR_BAD_SHAPE: return "OKV_ERROR_BAD_SHAPE";
    case OKV_ERROR_UNSUPPORTED_HEAD_DIM: return "OKV_ERROR_UNSUPPORTED_HEAD_DIM";
    case OKV_ERROR_NONFINITE_INPUT: return "OKV_ERROR_NONFINITE_INPUT";
    case OKV_ERROR_METADATA_OVERFLOW: return "OKV_ERROR_METADATA_OVERFLOW";
    case OKV_ERROR_OUT_OF_MEMORY: return "OKV_ERROR_OUT_OF_MEMORY";
    case OKV_ERROR_IO: return "OKV_ERROR_IO";
    case OKV_ERROR_CORRUPT_FILE: return "OKV_ERROR_CORRUPT_FILE";
    case OKV_ERROR_BACKEND_UNAVAILABLE: return "OKV_ERROR_BACKEND_UNAVAILABLE";
    case OKV_ERROR_UNSUPPORTED: return "OKV_ERROR_UNSUPPORTED";
    case OKV_ERROR_NOT_CONVERGED: return "OKV_ERROR_NOT_CONVERGED";
    case OKV_ERROR_DEVICE: return "OKV_ERROR_DEVICE";
    case OKV_ERROR_VERSION_MISMATCH: return "OKV_ERROR_VERSION_MISMATCH";
    case OKV_ERROR_INSUFFICIENT_DATA: return "OKV_ERROR_INSUFFICIENT_DATA";
    case OKV_ERROR_INTERNAL: return "OKV_ERROR_INTERNAL";
    case OKV_STATUS_FORCE_32BIT: break;
    }
    return "OKV_ERROR_UNKNOWN_STATUS";
}

OKV_API void okv_get_version(int32_t *major, int32_t *minor, int32_t *patch)
{
    if (major) *major = OKV_VERSION_MAJOR;
    if (minor) *minor = OKV_VERSION_MINOR;
    if (patch) *patch = OKV_VERSION_PATCH;
}

OKV_API size_t okv_dtype_size(okv_dtype_t dtype)
{
    switch (dtype) {
    case OKV_DTYPE_F32: return 4;
    case OKV_DTYPE_F16: return 2;
    case OKV_DTYPE_BF16: return 2;
    case OKV_DTYPE_F64: return 8;
    case OKV_DTYPE_I32: return 4;
    case OKV_DTYPE_FORCE_32BIT: break;
    }
    return 0;
}

/* The sink is process-wide; set it once before using the library from threads. */
static okv_log_fn g_log_fn;
static void *g_log_user;

OKV_API void okv_set_log_callback(okv_log_fn fn, void *user)
{
    g_log_fn = fn;
    g_log_user = user;
}

void okv_log(okv_log_level_t level, const char *fmt, ...)
{
    if (!g_log_fn) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    g_log_fn(level, msg, g_log_user);
}

okv_status_t okv_fail(okv_err_t *e, okv_status_t status, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return status;
}
