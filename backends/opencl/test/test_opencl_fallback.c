/* The OpenCL backend's failure modes (issue: clear status and fallback, never a crash):
 * no OpenCL runtime/platform, a device without fp64, and a kernel build error. Each
 * Check test runs in its own forked process, so the environment it sets (ICD search
 * directory, OKV_OPENCL_* switches) is seen by a fresh registry and a fresh module.
 * Exit 77 (ctest: skipped) when this machine has no working OpenCL device at all. */
#define _POSIX_C_SOURCE 200809L /* setenv, mkdtemp */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "oscarkv/oscarkv.h"

static int find_backend(const char *name, okv_backend_info_t *out)
{
    int32_t n = 0;
    if (okv_backend_count(&n) != OKV_SUCCESS) return 0;
    for (int32_t i = 0; i < n; ++i) {
        okv_backend_info_init(out);
        if (okv_backend_get_info(i, out) == OKV_SUCCESS && strcmp(out->name, name) == 0) return 1;
    }
    return 0;
}

static okv_context_t *opencl_context(void)
{
    okv_context_desc_t cd;
    okv_context_desc_init(&cd);
    cd.backend = "opencl";
    okv_context_t *ctx = NULL;
    okv_status_t s = okv_context_create(&cd, &ctx);
    ck_assert_msg(s == OKV_SUCCESS, "opencl context: %s", okv_status_string(s));
    return ctx;
}

/* x = [n, 1, d] f32 with a known pattern; acc[d, d] = X^T X computed here in double. */
enum { N_ROWS = 5, D = 64 };

static void fill_rows(float *x)
{
    for (int i = 0; i < N_ROWS * D; ++i)
        x[i] = (float)((i * 37 % 23) - 11) / 8.0f;
}

static char last_detail[1024]; /* okv_context_last_error() right after okv_moments */

/* Runs okv_moments with acc_dtype over an accumulator that starts poisoned (a call that
 * must fail: nothing may be written) or zeroed; returns the status and leaves the
 * accumulator, converted to f32, in acc_out. */
static okv_status_t run_moments(okv_context_t *ctx, okv_dtype_t acc_dtype, int poisoned, float *acc_out)
{
    float x[N_ROWS * D];
    fill_rows(x);
    const size_t esz = okv_dtype_size(acc_dtype), acc_bytes = (size_t)D * D * esz;
    okv_buffer_t *bx = NULL, *bacc = NULL;
    ck_assert_int_eq(okv_buffer_create(ctx, sizeof x, &bx), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_create(ctx, acc_bytes, &bacc), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_write(ctx, bx, 0, x, sizeof x), OKV_SUCCESS);
    unsigned char *poison = malloc(acc_bytes);
    ck_assert_ptr_nonnull(poison);
    memset(poison, poisoned ? 0x5a : 0, acc_bytes);
    ck_assert_int_eq(okv_buffer_write(ctx, bacc, 0, poison, acc_bytes), OKV_SUCCESS);

    okv_moments_params_t p;
    okv_moments_params_init(&p);
    p.x.buffer = bx;
    p.x_dtype = OKV_DTYPE_F32;
    p.acc.buffer = bacc;
    p.acc_dtype = acc_dtype;
    p.n_rows = N_ROWS;
    p.n_heads = 1;
    p.head_dim = D;
    p.head_group = 1;
    okv_status_t s = okv_moments(ctx, &p);
    /* the detail belongs to the last call: keep it before the read-back below */
    snprintf(last_detail, sizeof last_detail, "%s", okv_context_last_error(ctx));

    unsigned char *back = malloc(acc_bytes);
    ck_assert_ptr_nonnull(back);
    ck_assert_int_eq(okv_buffer_read(ctx, bacc, 0, back, acc_bytes), OKV_SUCCESS);
    if (s != OKV_SUCCESS) /* a failed call writes nothing */
        ck_assert_msg(memcmp(back, poison, acc_bytes) == 0, "failed moments call modified its accumulator");
    for (int i = 0; i < D * D; ++i) {
        if (acc_dtype == OKV_DTYPE_F64) {
            double v;
            memcpy(&v, back + (size_t)i * 8, 8);
            acc_out[i] = (float)v;
        } else {
            memcpy(&acc_out[i], back + (size_t)i * 4, 4);
        }
    }
    free(back);
    free(poison);
    okv_buffer_destroy(bacc);
    okv_buffer_destroy(bx);
    return s;
}

static void expect_gram(const float *acc)
{
    float x[N_ROWS * D];
    fill_rows(x);
    for (int i = 0; i < D; ++i)
        for (int j = 0; j < D; ++j) {
            double g = 0;
            for (int t = 0; t < N_ROWS; ++t)
                g += (double)x[t * D + i] * x[t * D + j];
            const double want = g;
            ck_assert_msg(fabs(acc[i * D + j] - want) <= 1e-6 * fabs(want) + 1e-4, "acc[%d,%d] %g want %g", i, j,
                          (double)acc[i * D + j], want);
        }
}

START_TEST(missing_runtime_reports_unavailable_and_falls_back)
{
    /* ocl-icd reads vendor .icd files from OCL_ICD_VENDORS when it names a directory:
     * an empty one means no platform at all, as on a machine without a runtime. */
    char dir[] = "/tmp/okv-no-icd-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    setenv("OCL_ICD_VENDORS", dir, 1);
    unsetenv("OCL_ICD_FILENAMES");
    unsetenv("OKV_BACKEND");

    okv_backend_info_t bi;
    ck_assert(find_backend("opencl", &bi));
    ck_assert_int_eq(bi.available, 0);
    ck_assert_msg(strncmp(bi.reason, "unavailable: ", 13) == 0, "reason: %s", bi.reason);
    printf("no OpenCL platform -> opencl: %s\n", bi.reason);

    okv_context_desc_t cd;
    okv_context_desc_init(&cd);
    okv_context_t *ctx = NULL;
    cd.backend = "opencl";
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_ERROR_BACKEND_UNAVAILABLE);
    ck_assert_ptr_null(ctx);
    cd.backend = NULL; /* auto: cuda, hip, opencl, ref */
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_SUCCESS);
    ck_assert_str_ne(okv_context_backend_name(ctx), "opencl");
    printf("auto context fell back to: %s\n", okv_context_backend_name(ctx));
    okv_context_destroy(ctx);
    rmdir(dir);
}
END_TEST

START_TEST(device_without_fp64)
{
    setenv("OKV_OPENCL_NO_FP64", "1", 1); /* the backend then behaves as on such a device */
    okv_context_t *ctx = opencl_context();
    float *acc = malloc(sizeof(float) * D * D);
    ck_assert_ptr_nonnull(acc);
    ck_assert_int_eq(run_moments(ctx, OKV_DTYPE_F64, 1, acc), OKV_ERROR_UNSUPPORTED);
    const char *why = last_detail;
    ck_assert_msg(strstr(why, "fp64"), "detail: %s", why);
    printf("f64 moments without fp64 -> UNSUPPORTED: %s\n", why);
    ck_assert_int_eq(run_moments(ctx, OKV_DTYPE_F32, 0, acc), OKV_SUCCESS);
    expect_gram(acc);
    free(acc);
    okv_context_destroy(ctx);
}
END_TEST

START_TEST(device_with_fp64_accumulates_in_double)
{
    okv_context_t *ctx = opencl_context();
    float *acc = malloc(sizeof(float) * D * D);
    ck_assert_ptr_nonnull(acc);
    okv_status_t s = run_moments(ctx, OKV_DTYPE_F64, 0, acc);
    if (s == OKV_ERROR_UNSUPPORTED) {
        printf("SKIP device_with_fp64: this OpenCL device has no cl_khr_fp64 (%s)\n", last_detail);
    } else {
        ck_assert_int_eq(s, OKV_SUCCESS);
        expect_gram(acc);
    }
    free(acc);
    okv_context_destroy(ctx);
}
END_TEST

START_TEST(kernel_build_error_is_a_status)
{
    /* An option that breaks every kernel source (each `void` becomes a stray token);
     * the disk cache is off so a cached binary cannot hide the compile. */
    setenv("OKV_OPENCL_BUILD_OPTIONS", "-Dvoid=@", 1);
    setenv("OKV_OPENCL_NO_DISK_CACHE", "1", 1);
    okv_context_desc_t cd;
    okv_context_desc_init(&cd);
    cd.backend = "opencl";
    okv_context_t *ctx = NULL;
    okv_status_t s = okv_context_create(&cd, &ctx);
    if (s != OKV_SUCCESS) { /* a backend may build eagerly: then creation reports it */
        ck_assert_int_eq(s, OKV_ERROR_DEVICE);
        ck_assert_ptr_null(ctx);
        return;
    }
    float *acc = malloc(sizeof(float) * D * D);
    ck_assert_ptr_nonnull(acc);
    ck_assert_int_eq(run_moments(ctx, OKV_DTYPE_F32, 1, acc), OKV_ERROR_DEVICE);
    const char *why = last_detail;
    ck_assert_msg(strstr(why, "build"), "detail: %s", why);
    printf("kernel build error -> DEVICE: %.160s\n", why);
    /* the context stays usable for calls that need no program */
    okv_buffer_t *b = NULL;
    ck_assert_int_eq(okv_buffer_create(ctx, 64, &b), OKV_SUCCESS);
    okv_buffer_destroy(b);
    free(acc);
    okv_context_destroy(ctx);
    /* and the reference backend is there to fall back to */
    cd.backend = "ref";
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_SUCCESS);
    okv_context_destroy(ctx);
}
END_TEST

/* OKV_CONTEXT_TRUST_INPUTS reaches the backend: a NaN in rotate's input is reported
 * by default (device check + host sync) and passes through unchecked when trusted. */
static okv_status_t rotate_with_nan(uint32_t flags)
{
    okv_context_desc_t cd;
    okv_context_desc_init(&cd);
    cd.backend = "opencl";
    cd.flags = flags;
    okv_context_t *ctx = NULL;
    ck_assert_int_eq(okv_context_create(&cd, &ctx), OKV_SUCCESS);
    float x[2 * D], r[D * D];
    fill_rows(x);
    x[D + 3] = NAN;
    for (int i = 0; i < D * D; ++i)
        r[i] = (i % (D + 1)) == 0 ? 1.0f : 0.0f; /* identity */
    okv_buffer_t *bx = NULL, *br = NULL, *bo = NULL;
    ck_assert_int_eq(okv_buffer_create(ctx, sizeof x, &bx), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_create(ctx, sizeof r, &br), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_create(ctx, sizeof x, &bo), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_write(ctx, bx, 0, x, sizeof x), OKV_SUCCESS);
    ck_assert_int_eq(okv_buffer_write(ctx, br, 0, r, sizeof r), OKV_SUCCESS);
    okv_rotate_params_t p;
    okv_rotate_params_init(&p);
    p.x.buffer = bx;
    p.x_dtype = OKV_DTYPE_F32;
    p.out.buffer = bo;
    p.out_dtype = OKV_DTYPE_F32;
    p.rotation.buffer = br;
    p.n_rows = 2;
    p.n_heads = 1;
    p.head_dim = D;
    p.head_group = 1;
    okv_status_t s = okv_rotate(ctx, &p);
    ck_assert_int_eq(okv_context_synchronize(ctx), OKV_SUCCESS);
    okv_buffer_destroy(bo);
    okv_buffer_destroy(br);
    okv_buffer_destroy(bx);
    okv_context_destroy(ctx);
    return s;
}

START_TEST(trust_inputs_flag_skips_device_checks)
{
    unsetenv("OKV_OPENCL_TRUST_INPUTS");
    ck_assert_int_eq(rotate_with_nan(0), OKV_ERROR_NONFINITE_INPUT);
    ck_assert_int_eq(rotate_with_nan(OKV_CONTEXT_TRUST_INPUTS), OKV_SUCCESS);
}
END_TEST

/* Probes in a child process: the parent must not initialise OpenCL (or the registry)
 * before Check forks the tests, each of which needs a fresh one. */
static int opencl_usable(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        okv_backend_info_t bi;
        const int found = find_backend("opencl", &bi);
        if (!found || !bi.available) {
            printf("SKIPPED test_opencl_fallback: the OpenCL backend is not usable here (%s)\n",
                   found ? bi.reason : "not registered");
            fflush(stdout);
            _exit(1);
        }
        _exit(0);
    }
    int st = 0;
    return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* forked tests exit without flushing */
    if (!opencl_usable()) return 77;
    Suite *s = suite_create("opencl_fallback");
    TCase *tc = tcase_create("failure_modes");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, missing_runtime_reports_unavailable_and_falls_back);
    tcase_add_test(tc, device_without_fp64);
    tcase_add_test(tc, device_with_fp64_accumulates_in_double);
    tcase_add_test(tc, kernel_build_error_is_a_status);
    tcase_add_test(tc, trust_inputs_flag_skips_device_checks);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_FORK); /* each test: its own process and environment */
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
