/* ref_util.c - detail messages and element access by dtype for the reference. */
#include "ref_ops.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

okv_status_t okv_ref_fail(okv_err_t *err, okv_status_t status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return status;
}

float okv_ref_load(const void *base, okv_dtype_t dtype, size_t i)
{
    const unsigned char *p = (const unsigned char *)base;
    if (dtype == OKV_DTYPE_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return dtype == OKV_DTYPE_F16 ? okv_f16_to_f32(h) : okv_bf16_to_f32(h);
}

void okv_ref_store(void *base, okv_dtype_t dtype, size_t i, float v)
{
    unsigned char *p = (unsigned char *)base;
    if (dtype == OKV_DTYPE_F32) {
        memcpy(p + 4 * i, &v, 4);
        return;
    }
    uint16_t h = dtype == OKV_DTYPE_F16 ? okv_f32_to_f16(v) : okv_f32_to_bf16(v);
    memcpy(p + 2 * i, &h, 2);
}

int64_t okv_ref_find_nonfinite(const void *base, okv_dtype_t dtype, size_t n)
{
    for (size_t i = 0; i < n; ++i)
        if (!isfinite(okv_ref_load(base, dtype, i))) return (int64_t)i;
    return -1;
}

const char *okv_ref_dtype_name(okv_dtype_t dtype)
{
    switch (dtype) {
    case OKV_DTYPE_F32: return "f32";
    case OKV_DTYPE_F16: return "f16";
    case OKV_DTYPE_BF16: return "bf16";
    case OKV_DTYPE_F64: return "f64";
    case OKV_DTYPE_I32: return "i32";
    case OKV_DTYPE_FORCE_32BIT: break;
    }
    return "?";
}
