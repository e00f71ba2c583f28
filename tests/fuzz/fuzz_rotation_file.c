/* fuzz_rotation_file.c - libFuzzer entry for the rotation-file loader.
 * Any input must either load or fail with a status (never crash, leak or read out of
 * bounds); a loaded set must re-serialise, reload, and re-serialise to the same bytes. */
#include "calib/safetensors.h"
#include "oscarkv/oscarkv.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    okv_rotation_set_t *rs = NULL;
    okv_status_t st = okv_rotation_set_load_memory(data, size, &rs);
    if (st != OKV_SUCCESS) {
        if (rs != NULL) __builtin_trap();
        if (okv_rotation_last_error()[0] == '\0') __builtin_trap(); /* every failure has a detail */
        return 0;
    }
    unsigned char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    okv_rotation_set_t *rs2 = NULL;
    if (okv_st_save_memory(rs, &a, &na) != OKV_SUCCESS) __builtin_trap();
    if (okv_rotation_set_load_memory(a, na, &rs2) != OKV_SUCCESS) __builtin_trap();
    if (okv_st_save_memory(rs2, &b, &nb) != OKV_SUCCESS) __builtin_trap();
    if (na != nb || memcmp(a, b, na) != 0) __builtin_trap();
    int32_t nl, d, nr;
    okv_rotation_set_info(rs2, &nl, &d, &nr);
    okv_layer_rotation_t lr;
    for (int32_t l = 0; l < nl; ++l)
        if (okv_rotation_set_get_layer(rs2, l, &lr) != OKV_SUCCESS) __builtin_trap();
    free(a);
    free(b);
    okv_rotation_set_destroy(rs);
    okv_rotation_set_destroy(rs2);
    return 0;
}
