/* calib_util.c - input conversion, PRNG, thread-local error detail. */
#include "calib_util.h"

#include "okv_format.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int okv_calib_head_dim_ok(int32_t d) { return d == 64 || d == 128 || d == 256; }

int okv_calib_to_f32(const void *src, okv_dtype_t dtype, size_t n, float *dst, size_t *bad_index)
{
    for (size_t i = 0; i < n; ++i) {
        float x;
        if (dtype == OKV_DTYPE_F32) {
            memcpy(&x, (const unsigned char *)src + 4 * i, 4);
        } else {
            uint16_t h;
            memcpy(&h, (const unsigned char *)src + 2 * i, 2);
            x = dtype == OKV_DTYPE_F16 ? okv_f16_to_f32(h) : okv_bf16_to_f32(h);
        }
        if (!isfinite(x)) {
            if (bad_index) *bad_index = i;
            return 0;
        }
        dst[i] = x;
    }
    return 1;
}

void okv_rng_seed(okv_rng_t *r, uint64_t seed) { r->s = seed; }

uint64_t okv_rng_next(okv_rng_t *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t okv_rng_below(okv_rng_t *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = okv_rng_next(r);
    } while (x >= limit);
    return x % n;
}

static _Thread_local char g_rot_err[OKV_ERR_MAX];

okv_status_t okv_rot_fail(okv_status_t st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_rot_err, sizeof g_rot_err, fmt, ap);
    va_end(ap);
    return st;
}

void okv_rot_clear_error(void) { g_rot_err[0] = '\0'; }

OKV_API const char *okv_rotation_last_error(void) { return g_rot_err; }

int okv_mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}
