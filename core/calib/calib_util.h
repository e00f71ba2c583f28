/* calib_util.h - small helpers shared by the calibration sources: input conversion,
 * a seeded PRNG, head_dim checks, the thread-local rotation-file error detail. */
#ifndef OKV_CALIB_UTIL_H
#define OKV_CALIB_UTIL_H

#include "okv_internal.h"

#include <stddef.h>
#include <stdint.h>

/* 1 for head_dim 64, 128, 256. */
int okv_calib_head_dim_ok(int32_t d);

/* Convert n elements of an F32/F16/BF16 array to float. Returns 0 and stops at the
 * first NaN/Inf (its index in *bad_index), 1 when every element is finite. */
int okv_calib_to_f32(const void *src, okv_dtype_t dtype, size_t n, float *dst, size_t *bad_index);

/* splitmix64: deterministic, seedable. */
typedef struct okv_rng {
    uint64_t s;
} okv_rng_t;
void okv_rng_seed(okv_rng_t *r, uint64_t seed);
uint64_t okv_rng_next(okv_rng_t *r);
/* Uniform integer in [0, n), n > 0 (rejection sampling, no modulo bias). */
uint64_t okv_rng_below(okv_rng_t *r, uint64_t n);

/* Thread-local detail of the last rotation-set failure (okv_rotation_last_error). */
okv_status_t okv_rot_fail(okv_status_t st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void okv_rot_clear_error(void);

/* a * b into *out without size_t overflow; returns 0 on overflow. */
int okv_mul_size(size_t a, size_t b, size_t *out);

#endif
