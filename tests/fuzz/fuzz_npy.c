/* fuzz_npy.c - libFuzzer entry for the .npy header parser used by `oscarkv calibrate`.
 * Any input must parse or fail with OKV_ERROR_CORRUPT_FILE; a parsed header must
 * describe data that lies inside the input. */
#include "calib/npy.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    okv_npy_info_t info;
    char err[128];
    okv_status_t st = okv_npy_parse(data, size, &info, err, sizeof err);
    if (st != OKV_SUCCESS) {
        if (st != OKV_ERROR_CORRUPT_FILE || err[0] == '\0') __builtin_trap();
        return 0;
    }
    size_t esz = info.dtype == OKV_DTYPE_F16 ? 2 : 4;
    if (info.data_offset > size || info.count * esz != size - info.data_offset) __builtin_trap();
    volatile unsigned char sink = 0;
    for (size_t i = info.data_offset; i < size; ++i)
        sink ^= data[i]; /* ASan: stays in bounds */
    (void)sink;
    return 0;
}
