/*
 * ocl_runtime.c - OpenCL backend: module entry, device discovery, contexts, buffers,
 * program building with in-memory and on-disk (CL_PROGRAM_BINARIES) caches.
 */
#define _POSIX_C_SOURCE 200809L
#include "ocl_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "okv_opencl_sources.h" /* generated: okv_ocl_src_format, okv_ocl_src_kernels */

/* ------------------------------------------------------------------ errors -- */
const char *ocl_error_name(cl_int code)
{
    switch (code) {
    case CL_SUCCESS: return "CL_SUCCESS";
    case CL_DEVICE_NOT_FOUND: return "CL_DEVICE_NOT_FOUND";
    case CL_DEVICE_NOT_AVAILABLE: return "CL_DEVICE_NOT_AVAILABLE";
    case CL_COMPILER_NOT_AVAILABLE: return "CL_COMPILER_NOT_AVAILABLE";
    case CL_MEM_OBJECT_ALLOCATION_FAILURE: return "CL_MEM_OBJECT_ALLOCATION_FAILURE";
    case CL_OUT_OF_RESOURCES: return "CL_OUT_OF_RESOURCES";
    case CL_OUT_OF_HOST_MEMORY: return "CL_OUT_OF_HOST_MEMORY";
    case CL_PROFILING_INFO_NOT_AVAILABLE: return "CL_PROFILING_INFO_NOT_AVAILABLE";
    case CL_BUILD_PROGRAM_FAILURE: return "CL_BUILD_PROGRAM_FAILURE";
    case CL_INVALID_VALUE: return "CL_INVALID_VALUE";
    case CL_INVALID_DEVICE: return "CL_INVALID_DEVICE";
    case CL_INVALID_CONTEXT: return "CL_INVALID_CONTEXT";
    case CL_INVALID_COMMAND_QUEUE: return "CL_INVALID_COMMAND_QUEUE";
    case CL_INVALID_MEM_OBJECT: return "CL_INVALID_MEM_OBJECT";
    case CL_INVALID_BINARY: return "CL_INVALID_BINARY";
    case CL_INVALID_BUILD_OPTIONS: return "CL_INVALID_BUILD_OPTIONS";
    case CL_INVALID_PROGRAM: return "CL_INVALID_PROGRAM";
    case CL_INVALID_PROGRAM_EXECUTABLE: return "CL_INVALID_PROGRAM_EXECUTABLE";
    case CL_INVALID_KERNEL_NAME: return "CL_INVALID_KERNEL_NAME";
    case CL_INVALID_KERNEL: return "CL_INVALID_KERNEL";
    case CL_INVALID_ARG_INDEX: return "CL_INVALID_ARG_INDEX";
    case CL_INVALID_ARG_VALUE: return "CL_INVALID_ARG_VALUE";
    case CL_INVALID_ARG_SIZE: return "CL_INVALID_ARG_SIZE";
    case CL_INVALID_KERNEL_ARGS: return "CL_INVALID_KERNEL_ARGS";
    case CL_INVALID_WORK_DIMENSION: return "CL_INVALID_WORK_DIMENSION";
    case CL_INVALID_WORK_GROUP_SIZE: return "CL_INVALID_WORK_GROUP_SIZE";
    case CL_INVALID_WORK_ITEM_SIZE: return "CL_INVALID_WORK_ITEM_SIZE";
    case CL_INVALID_GLOBAL_OFFSET: return "CL_INVALID_GLOBAL_OFFSET";
    case CL_INVALID_EVENT_WAIT_LIST: return "CL_INVALID_EVENT_WAIT_LIST";
    case CL_INVALID_OPERATION: return "CL_INVALID_OPERATION";
    case CL_INVALID_BUFFER_SIZE: return "CL_INVALID_BUFFER_SIZE";
    case CL_INVALID_GLOBAL_WORK_SIZE: return "CL_INVALID_GLOBAL_WORK_SIZE";
    case CL_MISALIGNED_SUB_BUFFER_OFFSET: return "CL_MISALIGNED_SUB_BUFFER_OFFSET";
    case CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST: return "CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST";
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR";
    default: return "CL_ERROR";
    }
}

void ocl_errf(okv_err_t *err, const char *fmt, ...)
{
    if (!err) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

okv_status_t ocl_fail(okv_err_t *err, cl_int code, const char *what, int line)
{
    ocl_errf(err, "opencl: %s failed: %s (%d) [ocl line %d]", what, ocl_error_name(code), (int)code, line);
    if (code == CL_MEM_OBJECT_ALLOCATION_FAILURE || code == CL_OUT_OF_HOST_MEMORY) return OKV_ERROR_OUT_OF_MEMORY;
    return OKV_ERROR_DEVICE;
}

/* ------------------------------------------------------------------ devices -- */
#define OCL_MAX_DEVICES 64

typedef struct ocl_dev_entry {
    cl_platform_id platform;
    cl_device_id device;
} ocl_dev_entry_t;

/* All devices of all platforms, GPUs first, then accelerators, then the rest. */
static cl_int ocl_list_devices(ocl_dev_entry_t *out, int cap, int *count)
{
    cl_uint np = 0;
    *count = 0;
    cl_int e = clGetPlatformIDs(0, NULL, &np);
    if (e != CL_SUCCESS) return e;
    if (np == 0) return -1001;
    cl_platform_id plats[16];
    if (np > 16) np = 16;
    e = clGetPlatformIDs(np, plats, NULL);
    if (e != CL_SUCCESS) return e;
    static const cl_device_type order[3] = {CL_DEVICE_TYPE_GPU, CL_DEVICE_TYPE_ACCELERATOR,
                                            CL_DEVICE_TYPE_CPU | CL_DEVICE_TYPE_CUSTOM | CL_DEVICE_TYPE_DEFAULT};
    for (int pass = 0; pass < 3; ++pass) {
        for (cl_uint p = 0; p < np; ++p) {
            cl_device_id devs[OCL_MAX_DEVICES];
            cl_uint nd = 0;
            if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, OCL_MAX_DEVICES, devs, &nd) != CL_SUCCESS) continue;
            if (nd > OCL_MAX_DEVICES) nd = OCL_MAX_DEVICES;
            for (cl_uint d = 0; d < nd; ++d) {
                cl_device_type ty = 0;
                if (clGetDeviceInfo(devs[d], CL_DEVICE_TYPE, sizeof ty, &ty, NULL) != CL_SUCCESS) continue;
                int cls = (ty & CL_DEVICE_TYPE_GPU) ? 0 : (ty & CL_DEVICE_TYPE_ACCELERATOR) ? 1 : 2;
                if (cls != pass || *count >= cap) continue;
                out[*count].platform = plats[p];
                out[*count].device = devs[d];
                ++*count;
            }
        }
    }
    (void)order;
    return CL_SUCCESS;
}

static okv_status_t ocl_probe(int32_t *device_count, char *reason, size_t reason_cap)
{
    ocl_dev_entry_t devs[OCL_MAX_DEVICES];
    int n = 0;
    cl_int e = ocl_list_devices(devs, OCL_MAX_DEVICES, &n);
    if (device_count) *device_count = n;
    if (e != CL_SUCCESS || n == 0) {
        if (reason && reason_cap)
            snprintf(reason, reason_cap, "no OpenCL %s (%s, %d)", e == CL_SUCCESS ? "device" : "platform/ICD",
                     ocl_error_name(e), (int)e);
        if (device_count) *device_count = 0;
        return OKV_ERROR_BACKEND_UNAVAILABLE;
    }
    if (reason && reason_cap) {
        char name[128] = "";
        clGetDeviceInfo(devs[0].device, CL_DEVICE_NAME, sizeof name - 1, name, NULL);
        name[sizeof name - 1] = 0;
        snprintf(reason, reason_cap, "OpenCL, %d device(s); device 0: %s", n, name);
    }
    return OKV_SUCCESS;
}

static int ocl_has_ext(cl_device_id dev, const char *ext)
{
    size_t sz = 0;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &sz) != CL_SUCCESS || sz == 0) return 0;
    char *s = malloc(sz + 1);
    if (!s) return 0;
    int found = 0;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, sz, s, NULL) == CL_SUCCESS) {
        s[sz] = 0;
        size_t n = strlen(ext);
        for (const char *p = s; (p = strstr(p, ext)) != NULL; p += n)
            if ((p == s || p[-1] == ' ') && (p[n] == 0 || p[n] == ' ')) {
                found = 1;
                break;
            }
    }
    free(s);
    return found;
}

static void ocl_str_info(cl_device_id dev, cl_device_info what, char *dst, size_t cap)
{
    dst[0] = 0;
    if (clGetDeviceInfo(dev, what, cap - 1, dst, NULL) != CL_SUCCESS) dst[0] = 0;
    dst[cap - 1] = 0;
}

static int ocl_warp_size(cl_device_id dev)
{
    cl_uint w = 0;
    if (ocl_has_ext(dev, "cl_nv_device_attribute_query") &&
        clGetDeviceInfo(dev, 0x4003 /* CL_DEVICE_WARP_SIZE_NV */, sizeof w, &w, NULL) == CL_SUCCESS && w)
        return (int)w;
    if (ocl_has_ext(dev, "cl_amd_device_attribute_query") &&
        clGetDeviceInfo(dev, 0x4043 /* CL_DEVICE_WAVEFRONT_WIDTH_AMD */, sizeof w, &w, NULL) == CL_SUCCESS && w)
        return (int)w;
    return 1;
}

static okv_status_t ocl_device_info(int32_t device, okv_device_info_t *info)
{
    ocl_dev_entry_t devs[OCL_MAX_DEVICES];
    int n = 0;
    if (ocl_list_devices(devs, OCL_MAX_DEVICES, &n) != CL_SUCCESS || n == 0) return OKV_ERROR_BACKEND_UNAVAILABLE;
    if (device < 0 || device >= n) return OKV_ERROR_INVALID_ARGUMENT;
    cl_device_id d = devs[device].device;
    ocl_str_info(d, CL_DEVICE_NAME, info->name, sizeof info->name);
    ocl_str_info(d, CL_DEVICE_VENDOR, info->vendor, sizeof info->vendor);
    ocl_str_info(d, CL_DRIVER_VERSION, info->driver, sizeof info->driver);
    cl_ulong mem = 0;
    cl_uint cu = 0;
    clGetDeviceInfo(d, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL);
    clGetDeviceInfo(d, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
    info->global_mem_bytes = mem;
    info->compute_units = (int32_t)cu;
    info->warp_size = ocl_warp_size(d);
    info->has_fp64 = ocl_has_ext(d, "cl_khr_fp64");
    info->has_fp16 = ocl_has_ext(d, "cl_khr_fp16");
    info->has_subgroups = ocl_has_ext(d, "cl_khr_subgroups") || ocl_has_ext(d, "cl_intel_subgroups");
    return OKV_SUCCESS;
}

/* ----------------------------------------------------------------- context -- */
static void ocl_destroy(void *state);

static okv_status_t ocl_create(int32_t device, void *native_stream, void **state, okv_err_t *err)
{
    ocl_state_t *st = calloc(1, sizeof *st);
    if (!st) {
        ocl_errf(err, "opencl: out of host memory");
        return OKV_ERROR_OUT_OF_MEMORY;
    }
    cl_int e;
    okv_status_t s = OKV_SUCCESS;
    if (native_stream) {
        st->queue = (cl_command_queue)native_stream;
        e = clRetainCommandQueue(st->queue);
        if (e != CL_SUCCESS) {
            st->queue = NULL;
            s = ocl_fail(err, e, "clRetainCommandQueue(native_stream)", __LINE__);
            goto fail;
        }
        e = clGetCommandQueueInfo(st->queue, CL_QUEUE_CONTEXT, sizeof st->context, &st->context, NULL);
        if (e == CL_SUCCESS)
            e = clRetainContext(st->context);
        else
            st->context = NULL;
        if (e == CL_SUCCESS)
            e = clGetCommandQueueInfo(st->queue, CL_QUEUE_DEVICE, sizeof st->device, &st->device, NULL);
        if (e == CL_SUCCESS)
            e = clGetDeviceInfo(st->device, CL_DEVICE_PLATFORM, sizeof st->platform, &st->platform, NULL);
        if (e != CL_SUCCESS) {
            s = ocl_fail(err, e, "querying the caller's command queue", __LINE__);
            goto fail;
        }
        cl_command_queue_properties props = 0;
        if (clGetCommandQueueInfo(st->queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL) == CL_SUCCESS)
            st->out_of_order = (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE) != 0;
    } else {
        ocl_dev_entry_t devs[OCL_MAX_DEVICES];
        int n = 0;
        e = ocl_list_devices(devs, OCL_MAX_DEVICES, &n);
        if (e != CL_SUCCESS || n == 0) {
            ocl_errf(err, "opencl: no OpenCL platform/device (%s)", ocl_error_name(e));
            s = OKV_ERROR_BACKEND_UNAVAILABLE;
            goto fail;
        }
        if (device < 0 || device >= n) {
            ocl_errf(err, "opencl: device %d out of range (%d devices)", (int)device, n);
            s = OKV_ERROR_INVALID_ARGUMENT;
            goto fail;
        }
        st->platform = devs[device].platform;
        st->device = devs[device].device;
        cl_context_properties cp[3] = {CL_CONTEXT_PLATFORM, (cl_context_properties)st->platform, 0};
        st->context = clCreateContext(cp, 1, &st->device, NULL, NULL, &e);
        if (e != CL_SUCCESS) {
            st->context = NULL;
            s = ocl_fail(err, e, "clCreateContext", __LINE__);
            goto fail;
        }
        st->queue = clCreateCommandQueue(st->context, st->device, 0, &e);
        if (e != CL_SUCCESS) {
            st->queue = NULL;
            s = ocl_fail(err, e, "clCreateCommandQueue", __LINE__);
            goto fail;
        }
    }
    ocl_str_info(st->device, CL_DEVICE_NAME, st->dev_name, sizeof st->dev_name);
    ocl_str_info(st->device, CL_DRIVER_VERSION, st->driver, sizeof st->driver);
    if (clGetPlatformInfo(st->platform, CL_PLATFORM_VERSION, sizeof st->platform_version - 1, st->platform_version,
                          NULL) != CL_SUCCESS)
        st->platform_version[0] = 0;
    st->platform_version[sizeof st->platform_version - 1] = 0;
    st->has_fp64 = ocl_has_ext(st->device, "cl_khr_fp64");
    st->has_fp16 = ocl_has_ext(st->device, "cl_khr_fp16");
    {
        /* sub-groups: cl_intel_subgroups works at OpenCL C 1.2; cl_khr_subgroups needs 2.0 */
        char cver[128] = "";
        ocl_str_info(st->device, CL_DEVICE_OPENCL_C_VERSION, cver, sizeof cver);
        int c20 = strncmp(cver, "OpenCL C ", 9) == 0 && atoi(cver + 9) >= 2;
        st->has_subgroups = ocl_has_ext(st->device, "cl_intel_subgroups")          ? 1
                            : (c20 && ocl_has_ext(st->device, "cl_khr_subgroups")) ? 2
                                                                                   : 0;
        const char *nosg = getenv("OKV_OPENCL_NO_SUBGROUPS");
        if (nosg && *nosg && *nosg != '0') st->has_subgroups = 0;
    }
    const char *nofp64 = getenv("OKV_OPENCL_NO_FP64");
    if (nofp64 && *nofp64 && *nofp64 != '0') st->has_fp64 = 0;
    e = clGetDeviceInfo(st->device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof st->compute_units, &st->compute_units, NULL);
    if (e == CL_SUCCESS)
        e = clGetDeviceInfo(st->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof st->max_wg, &st->max_wg, NULL);
    if (e == CL_SUCCESS)
        e = clGetDeviceInfo(st->device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof st->local_mem, &st->local_mem, NULL);
    if (e != CL_SUCCESS) {
        s = ocl_fail(err, e, "clGetDeviceInfo(compute units / work-group size / local memory)", __LINE__);
        goto fail;
    }
    if (st->compute_units == 0) st->compute_units = 1;
    const char *lml = getenv("OKV_OPENCL_LOCAL_MEM_LIMIT"); /* testing: behave like a smaller device */
    if (lml && *lml && (cl_ulong)atol(lml) < st->local_mem) st->local_mem = (cl_ulong)atol(lml);
    st->flags = clCreateBuffer(st->context, CL_MEM_READ_WRITE, 64, NULL, &e);
    if (e != CL_SUCCESS) {
        st->flags = NULL;
        s = ocl_fail(err, e, "clCreateBuffer(flags)", __LINE__);
        goto fail;
    }
    st->dummy = clCreateBuffer(st->context, CL_MEM_READ_WRITE, 256, NULL, &e);
    if (e != CL_SUCCESS) {
        st->dummy = NULL;
        s = ocl_fail(err, e, "clCreateBuffer(dummy)", __LINE__);
        goto fail;
    }
    const char *nob = getenv("OKV_OPENCL_NO_CLBLAST");
    st->clblast_ok = !(nob && *nob && *nob != '0');
    st->clblast_min_rows = 256;
    const char *ti = getenv("OKV_OPENCL_TRUST_INPUTS");
    st->trust_inputs = ti && *ti && *ti != '0';
    const char *mr = getenv("OKV_OPENCL_CLBLAST_MIN_ROWS");
    if (mr && *mr) st->clblast_min_rows = atoi(mr);
    *state = st;
    return OKV_SUCCESS;
fail:
    ocl_destroy(st);
    return s;
}

static okv_status_t ocl_configure(void *state, uint32_t flags, okv_err_t *err)
{
    (void)err;
    if (flags & OKV_CONTEXT_TRUST_INPUTS) ((ocl_state_t *)state)->trust_inputs = 1;
    return OKV_SUCCESS;
}

static void ocl_destroy(void *state)
{
    ocl_state_t *st = state;
    if (!st) return;
    if (st->queue) clFinish(st->queue);
    for (int i = 0; i < st->n_programs; ++i) {
        for (int k = 0; k < OCL_K_COUNT; ++k)
            if (st->programs[i].kernels[k]) clReleaseKernel(st->programs[i].kernels[k]);
        if (st->programs[i].program) clReleaseProgram(st->programs[i].program);
    }
    for (int i = 0; i < OCL_SCRATCH; ++i)
        if (st->scratch[i]) clReleaseMemObject(st->scratch[i]);
    if (st->flags) clReleaseMemObject(st->flags);
    if (st->dummy) clReleaseMemObject(st->dummy);
    if (st->queue) clReleaseCommandQueue(st->queue);
    if (st->context) clReleaseContext(st->context);
    free(st);
}

/* ----------------------------------------------------------------- buffers -- */
static okv_status_t ocl_alloc(void *state, size_t bytes, void **native, okv_err_t *err)
{
    ocl_state_t *st = state;
    cl_int e;
    cl_mem m = clCreateBuffer(st->context, CL_MEM_READ_WRITE, bytes ? bytes : 1, NULL, &e);
    if (e != CL_SUCCESS) {
        ocl_fail(err, e, "clCreateBuffer", __LINE__);
        return OKV_ERROR_OUT_OF_MEMORY;
    }
    *native = m;
    return OKV_SUCCESS;
}

static void ocl_release(void *state, void *native)
{
    (void)state;
    if (native) clReleaseMemObject((cl_mem)native);
}

static okv_status_t ocl_write(void *state, void *native, size_t offset, const void *src, size_t bytes, okv_err_t *err)
{
    ocl_state_t *st = state;
    if (bytes == 0) return OKV_SUCCESS;
    OCL_CHECK(clEnqueueWriteBuffer(st->queue, (cl_mem)native, CL_TRUE, offset, bytes, src, 0, NULL, NULL),
              "clEnqueueWriteBuffer");
    return OKV_SUCCESS;
}

static okv_status_t ocl_read(void *state, void *native, size_t offset, void *dst, size_t bytes, okv_err_t *err)
{
    ocl_state_t *st = state;
    if (bytes == 0) return OKV_SUCCESS;
    OCL_CHECK(clEnqueueReadBuffer(st->queue, (cl_mem)native, CL_TRUE, offset, bytes, dst, 0, NULL, NULL),
              "clEnqueueReadBuffer");
    return OKV_SUCCESS;
}

static okv_status_t ocl_synchronize(void *state, okv_err_t *err)
{
    ocl_state_t *st = state;
    OCL_CHECK(clFinish(st->queue), "clFinish");
    return OKV_SUCCESS;
}

okv_status_t ocl_scratch(ocl_state_t *st, int idx, size_t bytes, cl_mem *out, okv_err_t *err)
{
    if (bytes == 0) bytes = 4;
    if (st->scratch[idx] && st->scratch_bytes[idx] >= bytes) {
        *out = st->scratch[idx];
        return OKV_SUCCESS;
    }
    if (st->scratch[idx]) clReleaseMemObject(st->scratch[idx]); /* deferred until queued work is done */
    st->scratch[idx] = NULL;
    st->scratch_bytes[idx] = 0;
    cl_int e;
    cl_mem m = clCreateBuffer(st->context, CL_MEM_READ_WRITE, bytes, NULL, &e);
    if (e != CL_SUCCESS) {
        ocl_fail(err, e, "clCreateBuffer(scratch)", __LINE__);
        return OKV_ERROR_OUT_OF_MEMORY;
    }
    st->scratch[idx] = m;
    st->scratch_bytes[idx] = bytes;
    *out = m;
    return OKV_SUCCESS;
}

okv_status_t ocl_barrier(ocl_state_t *st, okv_err_t *err)
{
    if (!st->out_of_order) return OKV_SUCCESS;
    OCL_CHECK(clEnqueueBarrierWithWaitList(st->queue, 0, NULL, NULL), "clEnqueueBarrierWithWaitList");
    return OKV_SUCCESS;
}

/* ---------------------------------------------------------------- programs -- */
void ocl_config_generic(ocl_config_t *cfg, int d)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->d = d;
    cfg->gs = d;
    cfg->meta = OKV_DTYPE_F16;
    cfg->page = 16;
    cfg->hkv = 1;
    cfg->gqa = 1;
    cfg->s0 = 64;
    cfg->w = 256;
    cfg->f = 8;
    cfg->ch = d;
}

okv_status_t ocl_config_from_desc(const ocl_state_t *st, const okv_cache_desc_t *desc, ocl_config_t *cfg,
                                  okv_err_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->d = desc->head_dim;
    cfg->gs = desc->group_size > 0 ? desc->group_size : desc->head_dim;
    cfg->meta = (int)desc->meta_dtype;
    cfg->quant = (int)desc->quantizer;
    cfg->clip = (int)desc->clip_mode;
    cfg->page = desc->page_size;
    cfg->hkv = desc->n_kv_heads;
    cfg->gqa = desc->n_kv_heads > 0 ? desc->n_q_heads / desc->n_kv_heads : 1;
    cfg->s0 = desc->sink_tokens;
    cfg->w = desc->recent_tokens;
    cfg->f = desc->flush_interval;
    if (cfg->d <= 0 || cfg->gs <= 0 || cfg->page <= 0 || cfg->hkv <= 0 || cfg->gqa <= 0 || cfg->d % cfg->gs) {
        ocl_errf(err, "opencl: invalid cache geometry");
        return OKV_ERROR_INVALID_ARGUMENT;
    }
    if ((size_t)cfg->d > st->max_wg) {
        ocl_errf(err, "opencl: head_dim %d exceeds the device's work-group size %zu", cfg->d, st->max_wg);
        return OKV_ERROR_UNSUPPORTED;
    }
    /* attention chunk (okv_attn_split's local memory, floats): q GQA*D, sum(q), scores and
     * tree GQA*CH each, V metadata 2*NG*CH, token offsets CH ulongs; the final
     * reduction reuses it and needs 4*D + 8. */
    int ch = cfg->d;
    size_t budget = (size_t)st->local_mem > 512 ? (size_t)st->local_mem - 512 : 0;
    size_t ng = (size_t)(cfg->d / cfg->gs), g = (size_t)cfg->gqa, d = (size_t)cfg->d;
    for (;;) {
        size_t c = (size_t)ch;
        size_t main_f = g * d + 4 * ((g + 3) / 4) + 2 * g * c + 2 * ng * c;
        size_t fin_f = 4 * d + 8;
        size_t bytes = 4 * (main_f > fin_f ? main_f : fin_f) + 8 * c;
        if (bytes <= budget) break;
        if (ch <= 16 || fin_f * 4 + 8 * 16 > budget) {
            ocl_errf(err, "opencl: GQA group %d x head_dim %d needs more local memory than the device has (%llu bytes)",
                     cfg->gqa, cfg->d, (unsigned long long)st->local_mem);
            return OKV_ERROR_UNSUPPORTED;
        }
        ch /= 2;
    }
    cfg->ch = ch;
    return OKV_SUCCESS;
}

okv_status_t ocl_config_for_view(const ocl_state_t *st, const okv_cache_view_t *v, ocl_config_t *cfg, okv_err_t *err)
{
    okv_status_t s = ocl_config_from_desc(st, v->desc, cfg, err);
    if (s != OKV_SUCCESS) return s;
    cfg->vec = v->int2_pool.offset % 16 == 0 && v->bf16_pool.offset % 16 == 0;
    return OKV_SUCCESS;
}

static const char *const k_kernel_names[OCL_K_COUNT] = {
    "okv_demote", "okv_update_lens", "okv_append_rows", "okv_dequantize", "okv_attn_split",   "okv_attn_merge",
    "okv_rotate", "okv_convert",     "okv_moments",     "okv_validate",   "okv_check_finite",
};

/* Groups (bit mask of OCL_GROUP_*) whose programs hold each kernel. */
static const int k_kernel_groups[OCL_K_COUNT] = {
    2, 2, 2, /* demote, update_lens, append_rows */
    4, 4, 4, /* dequantize, attn_split, attn_merge */
    1, 3, 1, /* rotate, convert, moments */
    7, 7,    /* validate, check_finite */
};

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Cache directory: OKV_CACHE_DIR, $XDG_CACHE_HOME/oscarkv, ~/.cache/oscarkv. */
static int ocl_cache_dir(char *dst, size_t cap)
{
    const char *e = getenv("OKV_CACHE_DIR");
    if (e && *e) {
        snprintf(dst, cap, "%s", e);
    } else if ((e = getenv("XDG_CACHE_HOME")) && *e) {
        snprintf(dst, cap, "%s/oscarkv", e);
    } else if ((e = getenv("HOME")) && *e) {
        snprintf(dst, cap, "%s/.cache/oscarkv", e);
    } else {
        return 0;
    }
    /* mkdir -p */
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", dst);
    for (char *p = tmp + 1; *p; ++p)
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return 0;
    return 1;
}

static unsigned char *ocl_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long sz = ftell(f);
        if (sz > 0 && fseek(f, 0, SEEK_SET) == 0) {
            buf = malloc((size_t)sz);
            if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
                free(buf);
                buf = NULL;
            }
            *n = (size_t)sz;
        }
    }
    fclose(f);
    return buf;
}

static void ocl_save_binary(ocl_state_t *st, cl_program prog, const char *path)
{
    size_t sz = 0;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof sz, &sz, NULL) != CL_SUCCESS || sz == 0) return;
    unsigned char *bin = malloc(sz);
    if (!bin) return;
    unsigned char *bins[1] = {bin};
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) == CL_SUCCESS) {
        char tmp[1100];
        snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
        FILE *f = fopen(tmp, "wb");
        if (f) {
            int ok = fwrite(bin, 1, sz, f) == sz;
            ok = (fclose(f) == 0) && ok;
            if (!ok || rename(tmp, path) != 0) remove(tmp);
        }
    }
    (void)st;
    free(bin);
}

static okv_status_t ocl_build_log(ocl_state_t *st, cl_program prog, cl_int code, okv_err_t *err)
{
    char log[OKV_ERR_MAX];
    size_t n = 0;
    log[0] = 0;
    if (clGetProgramBuildInfo(prog, st->device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, &n) != CL_SUCCESS) {
        /* log longer than our buffer: fetch it whole, keep the head */
        size_t full = 0;
        if (clGetProgramBuildInfo(prog, st->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &full) == CL_SUCCESS && full) {
            char *b = malloc(full + 1);
            if (b && clGetProgramBuildInfo(prog, st->device, CL_PROGRAM_BUILD_LOG, full, b, NULL) == CL_SUCCESS) {
                b[full] = 0;
                snprintf(log, sizeof log, "%s", b);
            }
            free(b);
        }
    }
    log[sizeof log - 1] = 0;
    for (char *p = log; *p; ++p)
        if (*p == '\n') *p = ' ';
    ocl_errf(err, "opencl: kernel build failed (%s): %.400s", ocl_error_name(code), log);
    return OKV_ERROR_DEVICE;
}

okv_status_t ocl_get_program(ocl_state_t *st, const ocl_config_t *cfg, ocl_program_t **out, okv_err_t *err)
{
    for (int i = 0; i < st->n_programs; ++i)
        if (memcmp(&st->programs[i].cfg, cfg, sizeof *cfg) == 0) {
            *out = &st->programs[i];
            return OKV_SUCCESS;
        }
    if (st->n_programs == OCL_MAX_PROGRAMS) {
        /* evict the oldest */
        ocl_program_t *o = &st->programs[0];
        clFinish(st->queue);
        for (int k = 0; k < OCL_K_COUNT; ++k)
            if (o->kernels[k]) clReleaseKernel(o->kernels[k]);
        if (o->program) clReleaseProgram(o->program);
        memmove(&st->programs[0], &st->programs[1], sizeof st->programs[0] * (OCL_MAX_PROGRAMS - 1));
        st->n_programs--;
    }
    char opts[1024];
    const char *extra = getenv("OKV_OPENCL_BUILD_OPTIONS");
    int sg = st->has_subgroups;
build_again:
    snprintf(opts, sizeof opts,
             "-cl-std=%s -DOKV_SG_KHR=%d -DOKV_D=%d -DOKV_GS=%d -DOKV_META=%d -DOKV_QUANT=%d -DOKV_CLIP=%d -DOKV_P=%d "
             "-DOKV_HKV=%d -DOKV_GQA=%d -DOKV_S0=%d -DOKV_W=%d -DOKV_F=%d -DOKV_CH=%d -DOKV_HAS_FP64=%d "
             "-DOKV_HAS_FP16=%d -DOKV_HAS_SUBGROUPS=%d -DOKV_VEC=%d -DOKV_GROUP=%d %s",
             sg == 2 ? "CL2.0" : "CL1.2", sg == 2, cfg->d, cfg->gs, cfg->meta, cfg->quant, cfg->clip, cfg->page,
             cfg->hkv, cfg->gqa, cfg->s0, cfg->w, cfg->f, cfg->ch, st->has_fp64, st->has_fp16, sg != 0, cfg->vec,
             cfg->group, extra ? extra : "");
    /* no FMA contraction: dequantisation (lo + code * scale) and the conversions
     * must round exactly like the C reference */
    static const char prelude[] = "#pragma OPENCL FP_CONTRACT OFF\n";
    const char *srcs[3] = {prelude, okv_ocl_src_format, okv_ocl_src_kernels};
    size_t lens[3] = {strlen(prelude), strlen(okv_ocl_src_format), strlen(okv_ocl_src_kernels)};

    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 3; ++i)
        h = fnv1a(h, srcs[i], lens[i]);
    h = fnv1a(h, opts, strlen(opts));
    h = fnv1a(h, st->dev_name, strlen(st->dev_name));
    h = fnv1a(h, st->driver, strlen(st->driver));
    h = fnv1a(h, st->platform_version, strlen(st->platform_version));
    char dir[900], path[1000];
    int have_dir = 0;
    const char *nocache = getenv("OKV_OPENCL_NO_DISK_CACHE");
    if (!(nocache && *nocache && *nocache != '0')) have_dir = ocl_cache_dir(dir, sizeof dir);
    if (have_dir) snprintf(path, sizeof path, "%s/opencl-%016llx.bin", dir, (unsigned long long)h);

    cl_int e;
    cl_program prog = NULL;
    if (have_dir) {
        size_t n = 0;
        unsigned char *bin = ocl_read_file(path, &n);
        if (bin) {
            const unsigned char *bins[1] = {bin};
            cl_int bst = CL_SUCCESS;
            prog = clCreateProgramWithBinary(st->context, 1, &st->device, &n, bins, &bst, &e);
            if (e != CL_SUCCESS || bst != CL_SUCCESS) {
                if (prog && e == CL_SUCCESS) clReleaseProgram(prog);
                prog = NULL;
            } else if (clBuildProgram(prog, 1, &st->device, opts, NULL, NULL) != CL_SUCCESS) {
                clReleaseProgram(prog);
                prog = NULL;
            }
            free(bin);
        }
    }
    int from_source = 0;
    if (!prog) {
        prog = clCreateProgramWithSource(st->context, 3, srcs, lens, &e);
        if (e != CL_SUCCESS) return ocl_fail(err, e, "clCreateProgramWithSource", __LINE__);
        e = clBuildProgram(prog, 1, &st->device, opts, NULL, NULL);
        if (e != CL_SUCCESS) {
            okv_status_t s = ocl_build_log(st, prog, e, err);
            clReleaseProgram(prog);
            if (sg) {
                /* the sub-group fast path did not build here: the generic path always must */
                st->has_subgroups = sg = 0;
                goto build_again;
            }
            return s;
        }
        from_source = 1;
    }
    ocl_program_t *pr = &st->programs[st->n_programs];
    memset(pr, 0, sizeof *pr);
    pr->cfg = *cfg;
    pr->program = prog;
    for (int k = 0; k < OCL_K_COUNT; ++k) {
        if (!(k_kernel_groups[k] & (1 << cfg->group))) continue;
        pr->kernels[k] = clCreateKernel(prog, k_kernel_names[k], &e);
        if (e != CL_SUCCESS) {
            for (int j = 0; j < k; ++j)
                if (pr->kernels[j]) clReleaseKernel(pr->kernels[j]);
            clReleaseProgram(prog);
            memset(pr, 0, sizeof *pr);
            return ocl_fail(err, e, k_kernel_names[k], __LINE__);
        }
    }
    if (from_source && have_dir) ocl_save_binary(st, prog, path);
    st->n_programs++;
    *out = pr;
    return OKV_SUCCESS;
}

/* ------------------------------------------------------------------- entry -- */
static const okv_backend_ops_t k_ops = {
    OKV_BACKEND_IFACE_VERSION,
    (uint32_t)sizeof(okv_backend_ops_t),
    "opencl",
    ocl_probe,
    ocl_device_info,
    ocl_create,
    ocl_destroy,
    ocl_alloc,
    ocl_release,
    ocl_write,
    ocl_read,
    ocl_synchronize,
    ocl_rotate,
    ocl_append,
    ocl_demote,
    ocl_dequantize,
    ocl_decode_workspace,
    ocl_decode,
    ocl_prefill_workspace,
    ocl_prefill,
    ocl_moments,
    OKV_CAP_KEY_BIAS, /* caps: key centering (k_bias in append, bias in rotate) */
    ocl_configure,
};

__attribute__((visibility("default"))) okv_status_t okv_backend_entry_v1(uint32_t core_iface_version,
                                                                         const okv_backend_ops_t **ops);

okv_status_t okv_backend_entry_v1(uint32_t core_iface_version, const okv_backend_ops_t **ops)
{
    if (!ops) return OKV_ERROR_NULL_POINTER;
    *ops = NULL;
    if (core_iface_version != OKV_BACKEND_IFACE_VERSION) return OKV_ERROR_VERSION_MISMATCH;
    *ops = &k_ops;
    return OKV_SUCCESS;
}
