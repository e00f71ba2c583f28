/*
 * ocl_internal.h - shared declarations of the OpenCL backend's host code.
 */
#ifndef OKV_OCL_INTERNAL_H
#define OKV_OCL_INTERNAL_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#ifndef CL_USE_DEPRECATED_OPENCL_1_2_APIS
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#endif
#include <CL/cl.h>

#include <stddef.h>
#include <stdint.h>

#include "backend_iface.h"

/* One compiled program (one set of -D defines) and its kernels. */
enum {
    OCL_K_DEMOTE = 0,
    OCL_K_UPDATE_LENS,
    OCL_K_APPEND_ROWS,
    OCL_K_DEQUANTIZE,
    OCL_K_ATTN_SPLIT,
    OCL_K_ATTN_MERGE,
    OCL_K_ROTATE,
    OCL_K_CONVERT,
    OCL_K_MOMENTS,
    OCL_K_VALIDATE,
    OCL_K_CHECK_FINITE,
    OCL_K_COUNT
};

/* Compile-time configuration of a program (values become -D defines). */
typedef struct ocl_config {
    int d, gs, meta, quant, clip, page, hkv, gqa, s0, w, f, ch;
    int vec;   /* pools 16-byte aligned: vector loads */
    int group; /* OCL_GROUP_*: which kernels the program holds */
} ocl_config_t;

typedef struct ocl_program {
    ocl_config_t cfg;
    cl_program program;
    cl_kernel kernels[OCL_K_COUNT];
} ocl_program_t;

enum { OCL_GROUP_GENERIC = 0, OCL_GROUP_WRITE = 1, OCL_GROUP_READ = 2 };

#define OCL_MAX_PROGRAMS 64
#define OCL_SCRATCH 6

typedef struct ocl_state {
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;
    int out_of_order;
    int has_fp64, has_fp16, has_subgroups; /* has_subgroups: 1 intel (CL1.2), 2 khr (CL2.0) */
    cl_uint compute_units;
    size_t max_wg;
    cl_ulong local_mem;
    char dev_name[256];
    char driver[128];
    char platform_version[256];
    ocl_program_t programs[OCL_MAX_PROGRAMS];
    int n_programs;
    cl_mem scratch[OCL_SCRATCH];
    size_t scratch_bytes[OCL_SCRATCH];
    cl_mem flags;
    cl_mem dummy;
    int clblast_ok; /* cleared after the first CLBlast failure */
    int clblast_min_rows;
    int trust_inputs; /* OKV_OPENCL_TRUST_INPUTS=1: decode/prefill skip validation (no host sync) */
} ocl_state_t;

/* runtime (ocl_runtime.c) */
okv_status_t ocl_fail(okv_err_t *err, cl_int code, const char *what, int line);
const char *ocl_error_name(cl_int code);
okv_status_t ocl_get_program(ocl_state_t *st, const ocl_config_t *cfg, ocl_program_t **out, okv_err_t *err);
okv_status_t ocl_scratch(ocl_state_t *st, int idx, size_t bytes, cl_mem *out, okv_err_t *err);
okv_status_t ocl_barrier(ocl_state_t *st, okv_err_t *err);
void ocl_config_generic(ocl_config_t *cfg, int d);
okv_status_t ocl_config_from_desc(const ocl_state_t *st, const okv_cache_desc_t *desc, ocl_config_t *cfg,
                                  okv_err_t *err);
okv_status_t ocl_config_for_view(const ocl_state_t *st, const okv_cache_view_t *v, ocl_config_t *cfg, okv_err_t *err);

/* ops (ocl_ops.c) */
okv_status_t ocl_rotate(void *state, const okv_rotate_params_t *p, okv_err_t *err);
okv_status_t ocl_append(void *state, const okv_append_params_t *p, okv_err_t *err);
okv_status_t ocl_demote(void *state, const okv_demote_params_t *p, okv_err_t *err);
okv_status_t ocl_dequantize(void *state, const okv_dequantize_params_t *p, okv_err_t *err);
okv_status_t ocl_decode_workspace(void *state, const okv_decode_params_t *p, size_t *bytes, okv_err_t *err);
okv_status_t ocl_decode(void *state, const okv_decode_params_t *p, okv_err_t *err);
okv_status_t ocl_prefill_workspace(void *state, const okv_prefill_params_t *p, size_t *bytes, okv_err_t *err);
okv_status_t ocl_prefill(void *state, const okv_prefill_params_t *p, okv_err_t *err);
okv_status_t ocl_moments(void *state, const okv_moments_params_t *p, okv_err_t *err);

void ocl_errf(okv_err_t *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#define OCL_CHECK(call, what)                                                                                          \
    do {                                                                                                               \
        cl_int e_ = (call);                                                                                            \
        if (e_ != CL_SUCCESS) return ocl_fail(err, e_, what, __LINE__);                                                \
    } while (0)

#define OKV_TRY(call)                                                                                                  \
    do {                                                                                                               \
        okv_status_t s_ = (call);                                                                                      \
        if (s_ != OKV_SUCCESS) return s_;                                                                              \
    } while (0)

#endif /* OKV_OCL_INTERNAL_H */
