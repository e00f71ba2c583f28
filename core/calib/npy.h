/* npy.h - a small .npy reader for the CLI's `calibrate` command (internal API).
 * Accepts format versions 1.0, 2.0 and 3.0, dtypes '<f2' (-> OKV_DTYPE_F16) and
 * '<f4' (-> OKV_DTYPE_F32) (also '|' / '=' byte orders on little-endian data), C order
 * only, up to OKV_NPY_MAX_DIMS dimensions. The data must be exactly the header's
 * element count (trailing bytes are rejected). Errors: OKV_ERROR_CORRUPT_FILE with a
 * detail in err, OKV_ERROR_IO, OKV_ERROR_OUT_OF_MEMORY. */
#ifndef OKV_NPY_H
#define OKV_NPY_H

#include "oscarkv/oscarkv.h"

#include <stddef.h>
#include <stdint.h>

#define OKV_NPY_MAX_DIMS 8

typedef struct okv_npy_info {
    okv_dtype_t dtype;
    int32_t ndim;
    int64_t shape[OKV_NPY_MAX_DIMS];
    uint64_t count;     /* product of shape (1 for a 0-d array) */
    size_t data_offset; /* bytes from the file start to the first element */
} okv_npy_info_t;

typedef struct okv_npy_array {
    okv_npy_info_t info;
    void *data; /* count elements, native little-endian layout; free with okv_npy_free */
} okv_npy_array_t;

/* Parse the header of an in-memory .npy image of `bytes` bytes and check that the
 * data section holds exactly count elements. */
okv_status_t okv_npy_parse(const void *image, size_t bytes, okv_npy_info_t *info, char *err, size_t errcap);
/* Read a whole file. */
okv_status_t okv_npy_load(const char *path, okv_npy_array_t *arr, char *err, size_t errcap);
void okv_npy_free(okv_npy_array_t *arr);

#endif
