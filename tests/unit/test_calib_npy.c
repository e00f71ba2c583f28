/* test_calib_npy.c - the .npy reader: versions 1/2/3, dtypes, shapes, and malformed
 * headers / sizes rejected with OKV_ERROR_CORRUPT_FILE. */
#define _POSIX_C_SOURCE 200809L
#include "calib/npy.h"

#include <check.h>

#include "okv_check_run.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Build a .npy image: version major, header dict text, n data bytes (pattern). */
static unsigned char *image(int major, const char *dict, size_t data_bytes, size_t *len)
{
    size_t pre = major == 1 ? 10 : 12, hl = strlen(dict) + 1;
    size_t pad = (64 - (pre + hl) % 64) % 64;
    hl += pad;
    *len = pre + hl + data_bytes;
    unsigned char *b = malloc(*len);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    b[7] = 0;
    for (size_t i = 0; i < pre - 8; ++i)
        b[8 + i] = (unsigned char)(hl >> (8 * i));
    memcpy(b + pre, dict, strlen(dict));
    memset(b + pre + strlen(dict), ' ', pad);
    b[pre + hl - 1] = '\n';
    for (size_t i = 0; i < data_bytes; ++i)
        b[pre + hl + i] = (unsigned char)i;
    return b;
}

START_TEST(test_valid)
{
    okv_npy_info_t info;
    size_t len;
    char err[128];
    unsigned char *b = image(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4, 2), }", 3 * 4 * 2 * 4, &len);
    ck_assert_int_eq(okv_npy_parse(b, len, &info, err, sizeof err), OKV_SUCCESS);
    ck_assert_int_eq(info.dtype, OKV_DTYPE_F32);
    ck_assert_int_eq(info.ndim, 3);
    ck_assert(info.shape[0] == 3 && info.shape[1] == 4 && info.shape[2] == 2);
    ck_assert_uint_eq(info.count, 24);
    ck_assert_uint_eq(info.data_offset % 64, 0);
    free(b);
    b = image(2, "{\"shape\": (5,), \"fortran_order\": False, \"descr\": \"<f2\"}", 10, &len);
    ck_assert_int_eq(okv_npy_parse(b, len, &info, err, sizeof err), OKV_SUCCESS);
    ck_assert_int_eq(info.dtype, OKV_DTYPE_F16);
    ck_assert_int_eq(info.ndim, 1);
    ck_assert_uint_eq(info.count, 5);
    free(b);
    b = image(3, "{'descr': '<f4', 'fortran_order': False, 'shape': ()}", 4, &len);
    ck_assert_int_eq(okv_npy_parse(b, len, &info, err, sizeof err), OKV_SUCCESS);
    ck_assert_int_eq(info.ndim, 0);
    ck_assert_uint_eq(info.count, 1);
    free(b);
    b = image(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 7), }", 0, &len);
    ck_assert_int_eq(okv_npy_parse(b, len, &info, err, sizeof err), OKV_SUCCESS);
    ck_assert_uint_eq(info.count, 0);
    free(b);
    /* through a file */
    b = image(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, &len);
    char path[] = "/tmp/okv_npyXXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, b, len), (ssize_t)len);
    close(fd);
    okv_npy_array_t arr;
    ck_assert_int_eq(okv_npy_load(path, &arr, err, sizeof err), OKV_SUCCESS);
    ck_assert_uint_eq(arr.info.count, 6);
    ck_assert(memcmp(arr.data, b + arr.info.data_offset, 24) == 0);
    okv_npy_free(&arr);
    unlink(path);
    ck_assert_int_eq(okv_npy_load("/nonexistent/x.npy", &arr, err, sizeof err), OKV_ERROR_IO);
    ck_assert_int_eq(okv_npy_load(NULL, &arr, err, sizeof err), OKV_ERROR_NULL_POINTER);
    free(b);
}
END_TEST

START_TEST(test_invalid)
{
    static const struct {
        const char *dict;
        size_t data;
    } bad[] = {
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16},
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", 8},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 15},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 17},
        {"{'descr': '<f4', 'fortran_order': False}", 4},
        {"{'descr': '<f4', 'shape': (1,), 'fortran_order': False, 'extra': 1}", 4},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", 4},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} trailing", 4},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", 4},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,2,3,4,5,6,7,8,9)}", 4},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", 4},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", 4},
        {"{'descr': '<f4', 'fortran_order': Nope, 'shape': (1,)}", 4},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", 4},
        {"['descr']", 4},
        {"{'descr: '<f4'}", 4},
    };
    char err[128];
    okv_npy_info_t info;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        size_t len;
        unsigned char *b = image(1, bad[i].dict, bad[i].data, &len);
        okv_status_t st = okv_npy_parse(b, len, &info, err, sizeof err);
        ck_assert_msg(st == OKV_ERROR_CORRUPT_FILE, "case %zu accepted", i);
        ck_assert(err[0] != '\0');
        free(b);
    }
    /* truncation at every byte of a valid image */
    size_t len;
    unsigned char *b = image(2, "{'descr': '<f2', 'fortran_order': False, 'shape': (3, 2), }", 12, &len);
    for (size_t n = 0; n < len; ++n) {
        unsigned char *c = malloc(n ? n : 1);
        memcpy(c, b, n);
        ck_assert_int_eq(okv_npy_parse(c, n, &info, err, sizeof err), OKV_ERROR_CORRUPT_FILE);
        free(c);
    }
    b[6] = 9; /* unknown version */
    ck_assert_int_eq(okv_npy_parse(b, len, &info, err, sizeof err), OKV_ERROR_CORRUPT_FILE);
    b[6] = 2;
    b[8] = 0xff; /* header length past the end */
    b[9] = 0xff;
    ck_assert_int_eq(okv_npy_parse(b, len, &info, err, sizeof err), OKV_ERROR_CORRUPT_FILE);
    ck_assert_int_eq(okv_npy_parse(NULL, len, &info, err, sizeof err), OKV_ERROR_NULL_POINTER);
    free(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("calib_npy");
    TCase *tc = tcase_create("npy");
    tcase_add_test(tc, test_valid);
    tcase_add_test(tc, test_invalid);
    suite_add_tcase(s, tc);
    return okv_check_run(s);
}
