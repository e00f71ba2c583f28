/*
 * ocl_ops.c - OpenCL backend: the operations of the function table (host side).
 * Kernels live in kernels/okv_kernels.cl; dense GEMMs go through CLBlast with a plain
 * kernel fallback when CLBlast fails (the failure disables CLBlast for the context).
 */
#include "ocl_internal.h"

#include <clblast_c.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ small helpers -- */
typedef struct ocl_args {
    cl_kernel k;
    cl_uint i;
    cl_int e;
    cl_mem dummy;
} ocl_args_t;

static void arg_raw(ocl_args_t *a, size_t sz, const void *v)
{
    if (a->e == CL_SUCCESS) a->e = clSetKernelArg(a->k, a->i, sz, v);
    a->i++;
}
static void arg_mem(ocl_args_t *a, cl_mem m) { arg_raw(a, sizeof m, &m); }
static void arg_i32(ocl_args_t *a, int v)
{
    cl_int x = v;
    arg_raw(a, sizeof x, &x);
}
static void arg_u64(ocl_args_t *a, size_t v)
{
    cl_ulong x = v;
    arg_raw(a, sizeof x, &x);
}
static void arg_f32(ocl_args_t *a, float v)
{
    cl_float x = v;
    arg_raw(a, sizeof x, &x);
}
static cl_mem ref_mem(const ocl_args_t *a, okv_ref_t r) { return r.buffer ? (cl_mem)r.buffer->native : a->dummy; }
static void arg_ref(ocl_args_t *a, okv_ref_t r)
{
    arg_mem(a, ref_mem(a, r));
    arg_u64(a, r.buffer ? r.offset : 0);
}
static void arg_cache(ocl_args_t *a, const okv_cache_view_t *v)
{
    arg_ref(a, v->seq_lens);
    arg_ref(a, v->int2_lens);
    arg_ref(a, v->int2_indptr);
    arg_ref(a, v->int2_indices);
    arg_ref(a, v->bf16_indptr);
    arg_ref(a, v->bf16_indices);
    arg_ref(a, v->int2_pool);
    arg_ref(a, v->bf16_pool);
}
static ocl_args_t args_begin(ocl_state_t *st, cl_kernel k)
{
    ocl_args_t a;
    a.k = k;
    a.i = 0;
    a.e = CL_SUCCESS;
    a.dummy = st->dummy;
    return a;
}

static okv_status_t launch(ocl_state_t *st, const ocl_args_t *a, const char *name, cl_uint dims, const size_t *gws,
                           const size_t *lws, okv_err_t *err)
{
    if (a->e != CL_SUCCESS) {
        char what[96];
        snprintf(what, sizeof what, "clSetKernelArg(%s, arg %u)", name, (unsigned)a->i);
        return ocl_fail(err, a->e, what, __LINE__);
    }
    for (cl_uint d = 0; d < dims; ++d)
        if (gws[d] == 0) return OKV_SUCCESS;
    cl_int e = clEnqueueNDRangeKernel(st->queue, a->k, dims, NULL, gws, lws, 0, NULL, NULL);
    if (e != CL_SUCCESS) {
        char what[96];
        snprintf(what, sizeof what, "clEnqueueNDRangeKernel(%s)", name);
        return ocl_fail(err, e, what, __LINE__);
    }
    return ocl_barrier(st, err);
}

static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

static okv_status_t flags_clear(ocl_state_t *st, okv_err_t *err)
{
    cl_int zero = 0;
    OCL_CHECK(clEnqueueFillBuffer(st->queue, st->flags, &zero, sizeof zero, 0, sizeof zero, 0, NULL, NULL),
              "clEnqueueFillBuffer(flags)");
    return ocl_barrier(st, err);
}

/* Reads the device error flags (blocking: the op's kernels complete first). */
static okv_status_t flags_check(ocl_state_t *st, const char *op, okv_err_t *err)
{
    cl_int f = 0;
    OCL_CHECK(clEnqueueReadBuffer(st->queue, st->flags, CL_TRUE, 0, sizeof f, &f, 0, NULL, NULL),
              "clEnqueueReadBuffer(flags)");
    if (f & 4) {
        ocl_errf(err,
                 "opencl %s: invalid page table, lengths or indptr (page index outside its pool, "
                 "too few pages, non-monotone indptr or inconsistent seq_len/int2_len)",
                 op);
        return OKV_ERROR_INVALID_ARGUMENT;
    }
    if (f & 2) {
        ocl_errf(err, "opencl %s: NaN or Inf in the input data", op);
        return OKV_ERROR_NONFINITE_INPUT;
    }
    if (f & 1) {
        ocl_errf(err, "opencl %s: a group's scale/offset does not fit the metadata type", op);
        return OKV_ERROR_METADATA_OVERFLOW;
    }
    return OKV_SUCCESS;
}

static size_t i32_cap(okv_ref_t r)
{
    if (!r.buffer || r.offset > r.buffer->bytes) return 0;
    return (r.buffer->bytes - r.offset) / 4;
}

/* Page tables and lengths (the reference's checks) on device data -> flag 4. */
static okv_status_t validate_cache(ocl_state_t *st, ocl_program_t *pr, const okv_cache_view_t *v, int need_mode, int n,
                                   okv_ref_t aip, int row_mode, okv_ref_t rip, int n_rows, okv_err_t *err)
{
    if (v->batch <= 0) return OKV_SUCCESS;
    ocl_args_t a = args_begin(st, pr->kernels[OCL_K_VALIDATE]);
    arg_cache(&a, v);
    arg_i32(&a, v->batch);
    arg_u64(&a, i32_cap(v->int2_indices));
    arg_u64(&a, i32_cap(v->bf16_indices));
    arg_i32(&a, v->int2_pool.buffer ? v->int2_pool_pages : 0);
    arg_i32(&a, v->bf16_pool_pages);
    arg_i32(&a, need_mode);
    arg_i32(&a, n);
    arg_ref(&a, aip);
    arg_i32(&a, row_mode);
    arg_ref(&a, rip);
    arg_i32(&a, n_rows);
    arg_mem(&a, st->flags);
    size_t gws = (size_t)v->batch;
    return launch(st, &a, "okv_validate", 1, &gws, NULL, err);
}

static okv_status_t check_finite(ocl_state_t *st, ocl_program_t *pr, okv_ref_t x, okv_dtype_t dt, size_t n,
                                 okv_err_t *err)
{
    if (!x.buffer || n == 0) return OKV_SUCCESS;
    ocl_args_t a = args_begin(st, pr->kernels[OCL_K_CHECK_FINITE]);
    arg_ref(&a, x);
    arg_i32(&a, (int)dt);
    arg_u64(&a, n);
    arg_mem(&a, st->flags);
    size_t gws = round_up(n, 256), lws = 256;
    return launch(st, &a, "okv_check_finite", 1, &gws, &lws, err);
}

static okv_status_t dtype_ok(const ocl_state_t *st, okv_dtype_t dt, const char *what, okv_err_t *err)
{
    if (dt == OKV_DTYPE_F32 || dt == OKV_DTYPE_F16 || dt == OKV_DTYPE_BF16) return OKV_SUCCESS;
    (void)st;
    ocl_errf(err, "opencl: %s dtype %d not supported", what, (int)dt);
    return OKV_ERROR_UNSUPPORTED;
}

/* okv_convert kernel: n elements x (x_dt) -> out (o_dt), optionally scaled per row by w. */
static okv_status_t convert(ocl_state_t *st, ocl_program_t *pr, cl_mem x, size_t x_off, int x_dt, cl_mem o,
                            size_t o_off, int o_dt, size_t n, okv_ref_t w, okv_err_t *err)
{
    ocl_args_t a = args_begin(st, pr->kernels[OCL_K_CONVERT]);
    arg_mem(&a, x);
    arg_u64(&a, x_off);
    arg_i32(&a, x_dt);
    arg_mem(&a, o);
    arg_u64(&a, o_off);
    arg_i32(&a, o_dt);
    arg_u64(&a, n);
    arg_ref(&a, w);
    arg_i32(&a, w.buffer != NULL);
    size_t gws = round_up(n, 64), lws = 64;
    return launch(st, &a, "okv_convert", 1, &gws, &lws, err);
}

/* ------------------------------------------------------------------ CLBlast -- */
/* Row-major C[m,n] (+)= op(A) op(B); element offsets and leading dimensions. */
static int gemm(ocl_state_t *st, int f64, int trans_a, int trans_b, size_t m, size_t n, size_t k, cl_mem a,
                size_t a_off, size_t lda, cl_mem b, size_t b_off, size_t ldb, double beta, cl_mem c, size_t c_off,
                size_t ldc)
{
    cl_command_queue q = st->queue;
    CLBlastTranspose ta = trans_a ? CLBlastTransposeYes : CLBlastTransposeNo;
    CLBlastTranspose tb = trans_b ? CLBlastTransposeYes : CLBlastTransposeNo;
    CLBlastStatusCode s;
    if (f64)
        s = CLBlastDgemm(CLBlastLayoutRowMajor, ta, tb, m, n, k, 1.0, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc,
                         &q, NULL);
    else
        s = CLBlastSgemm(CLBlastLayoutRowMajor, ta, tb, m, n, k, 1.0f, a, a_off, lda, b, b_off, ldb, (float)beta, c,
                         c_off, ldc, &q, NULL);
    return s == CLBlastSuccess;
}

/* out[n_rows, n_heads, d] (f32 buffer `y` at element offset y_off) = x R per head
 * through CLBlast; x is f32 at element offset x_off. Returns 1 on success. */
static int gemm_rotate(ocl_state_t *st, cl_mem x, size_t x_off, cl_mem y, size_t y_off, cl_mem r, size_t r_off,
                       int n_rows, int n_heads, int d, int per_head, int head_group, int transpose)
{
    if (!per_head)
        return gemm(st, 0, 0, transpose, (size_t)n_rows * (size_t)n_heads, (size_t)d, (size_t)d, x, x_off, (size_t)d, r,
                    r_off, (size_t)d, 0.0, y, y_off, (size_t)d);
    if (head_group <= 0) head_group = 1;
    for (int h = 0; h < n_heads; ++h) {
        size_t ld = (size_t)n_heads * (size_t)d;
        if (!gemm(st, 0, 0, transpose, (size_t)n_rows, (size_t)d, (size_t)d, x, x_off + (size_t)h * (size_t)d, ld, r,
                  r_off + (size_t)(h / head_group) * (size_t)d * (size_t)d, (size_t)d, 0.0, y,
                  y_off + (size_t)h * (size_t)d, ld))
            return 0;
    }
    return 1;
}

static int use_clblast(const ocl_state_t *st, size_t rows)
{
    return st->clblast_ok && st->clblast_min_rows >= 0 && rows >= (size_t)st->clblast_min_rows;
}

/* Rotate x (any dtype) into an f32 scratch buffer via CLBlast. Returns OKV_SUCCESS and
 * *done = 1 when it worked; *done = 0 when CLBlast failed (then disabled). */
static okv_status_t rotate_to_f32(ocl_state_t *st, ocl_program_t *pr, okv_ref_t x, okv_dtype_t x_dt, okv_ref_t rot,
                                  int n_rows, int n_heads, int d, int per_head, int head_group, int transpose,
                                  int scratch_in, int scratch_out, cl_mem *y, int *done, okv_err_t *err)
{
    *done = 0;
    size_t n = (size_t)n_rows * (size_t)n_heads * (size_t)d;
    if (rot.offset % 4) return OKV_SUCCESS;
    cl_mem xin;
    size_t xin_off;
    if (x_dt == OKV_DTYPE_F32 && x.offset % 4 == 0) {
        xin = (cl_mem)x.buffer->native;
        xin_off = x.offset / 4;
    } else {
        OKV_TRY(ocl_scratch(st, scratch_in, n * 4, &xin, err));
        okv_ref_t none = {NULL, 0};
        OKV_TRY(convert(st, pr, (cl_mem)x.buffer->native, x.offset, (int)x_dt, xin, 0, OKV_DTYPE_F32, n, none, err));
        xin_off = 0;
    }
    OKV_TRY(ocl_scratch(st, scratch_out, n * 4, y, err));
    if (!gemm_rotate(st, xin, xin_off, *y, 0, (cl_mem)rot.buffer->native, rot.offset / 4, n_rows, n_heads, d, per_head,
                     head_group, transpose)) {
        st->clblast_ok = 0;
        return OKV_SUCCESS;
    }
    OKV_TRY(ocl_barrier(st, err));
    *done = 1;
    return OKV_SUCCESS;
}

/* ------------------------------------------------------------------ rotate -- */
okv_status_t ocl_rotate(void *state, const okv_rotate_params_t *p, okv_err_t *err)
{
    ocl_state_t *st = state;
    OKV_TRY(dtype_ok(st, p->x_dtype, "x", err));
    OKV_TRY(dtype_ok(st, p->out_dtype, "out", err));
    int d = p->head_dim;
    size_t rows = (size_t)p->n_rows * (size_t)p->n_heads;
    if (rows == 0) return OKV_SUCCESS;
    ocl_config_t cfg;
    ocl_config_generic(&cfg, d);
    cfg.group = OCL_GROUP_GENERIC;
    ocl_program_t *pr;
    OKV_TRY(ocl_get_program(st, &cfg, &pr, err));
    int hg = p->head_group > 0 ? p->head_group : 1;
    if (!st->trust_inputs) {
        OKV_TRY(flags_clear(st, err));
        OKV_TRY(check_finite(st, pr, p->x, p->x_dtype, rows * (size_t)d, err));
        OKV_TRY(check_finite(st, pr, p->rotation, OKV_DTYPE_F32,
                             (size_t)(p->per_head ? p->n_heads / hg : 1) * (size_t)d * (size_t)d, err));
        OKV_TRY(
            check_finite(st, pr, p->bias, OKV_DTYPE_F32, (size_t)(p->per_head ? p->n_heads / hg : 1) * (size_t)d, err));
        OKV_TRY(flags_check(st, "rotate", err));
    }
    if (use_clblast(st, rows) && !p->bias.buffer) {
        cl_mem y;
        int done = 0;
        OKV_TRY(rotate_to_f32(st, pr, p->x, p->x_dtype, p->rotation, p->n_rows, p->n_heads, d, p->per_head, hg,
                              p->transpose, 0, 1, &y, &done, err));
        if (done) {
            okv_ref_t none = {NULL, 0};
            return convert(st, pr, y, 0, OKV_DTYPE_F32, (cl_mem)p->out.buffer->native, p->out.offset, (int)p->out_dtype,
                           rows * (size_t)d, none, err);
        }
    }
    ocl_args_t a = args_begin(st, pr->kernels[OCL_K_ROTATE]);
    arg_ref(&a, p->x);
    arg_i32(&a, (int)p->x_dtype);
    arg_ref(&a, p->out);
    arg_i32(&a, (int)p->out_dtype);
    arg_ref(&a, p->rotation);
    arg_i32(&a, p->n_heads);
    arg_i32(&a, p->per_head);
    arg_i32(&a, hg);
    arg_i32(&a, p->transpose);
    arg_ref(&a, p->bias);
    arg_i32(&a, p->bias.buffer != NULL);
    size_t gws[2] = {(size_t)d, rows}, lws[2] = {(size_t)d, 1};
    return launch(st, &a, "okv_rotate", 2, gws, lws, err);
}

/* ------------------------------------------------------------ append/demote -- */
static okv_status_t demote_rows(ocl_state_t *st, ocl_program_t *pr, const okv_cache_view_t *v, int mode, int n,
                                okv_ref_t aip, float k_ratio, float v_ratio, int commit, okv_err_t *err)
{
    const okv_cache_desc_t *desc = v->desc;
    int max_rows = desc->recent_tokens + desc->flush_interval;
    if (mode == 0 && n < max_rows) max_rows = n;
    if (max_rows > 0 && v->batch > 0) {
        ocl_args_t a = args_begin(st, pr->kernels[OCL_K_DEMOTE]);
        arg_cache(&a, v);
        arg_i32(&a, v->batch);
        arg_i32(&a, mode);
        arg_i32(&a, mode == 0 ? max_rows : n);
        arg_ref(&a, aip);
        arg_f32(&a, k_ratio);
        arg_f32(&a, v_ratio);
        arg_mem(&a, st->flags);
        arg_i32(&a, commit);
        size_t gws[3] = {(size_t)max_rows, (size_t)desc->n_kv_heads, (size_t)v->batch * 2};
        OKV_TRY(launch(st, &a, "okv_demote", 3, gws, NULL, err));
    }
    return OKV_SUCCESS;
}

static okv_status_t update_lens(ocl_state_t *st, ocl_program_t *pr, const okv_cache_view_t *v, int mode, int n,
                                okv_ref_t aip, okv_err_t *err)
{
    if (v->batch <= 0) return OKV_SUCCESS;
    ocl_args_t a = args_begin(st, pr->kernels[OCL_K_UPDATE_LENS]);
    arg_cache(&a, v);
    arg_i32(&a, v->batch);
    arg_i32(&a, mode);
    arg_i32(&a, n);
    arg_ref(&a, aip);
    size_t gws = (size_t)v->batch;
    return launch(st, &a, "okv_update_lens", 1, &gws, NULL, err);
}

static okv_status_t append_rows(ocl_state_t *st, ocl_program_t *pr, const okv_append_params_t *p, okv_ref_t kin,
                                okv_ref_t vin, int prerot, int commit, cl_mem keep_k, cl_mem keep_v, okv_err_t *err)
{
    if (p->n_rows <= 0) return OKV_SUCCESS;
    const okv_cache_view_t *v = &p->cache;
    ocl_args_t a = args_begin(st, pr->kernels[OCL_K_APPEND_ROWS]);
    arg_cache(&a, v);
    arg_i32(&a, v->batch);
    arg_ref(&a, p->append_indptr);
    arg_ref(&a, kin);
    arg_ref(&a, vin);
    arg_i32(&a, (int)p->kv_dtype);
    arg_ref(&a, p->k_rotation);
    arg_ref(&a, p->v_rotation);
    arg_i32(&a, p->per_head_rotation);
    arg_i32(&a, prerot);
    arg_f32(&a, p->k_clip_ratio);
    arg_f32(&a, p->v_clip_ratio);
    arg_mem(&a, st->flags);
    arg_i32(&a, commit);
    arg_mem(&a, keep_k ? keep_k : st->dummy);
    arg_mem(&a, keep_v ? keep_v : st->dummy);
    arg_i32(&a, keep_k != NULL);
    arg_ref(&a, p->k_bias);
    arg_i32(&a, p->k_bias.buffer != NULL);
    size_t gws[3] = {(size_t)p->n_rows, (size_t)v->desc->n_kv_heads, 2};
    return launch(st, &a, "okv_append_rows", 3, gws, NULL, err);
}

/* Validate (tables, NaN) -> dry run (metadata overflow) -> commit: a failing call
 * writes nothing, like the reference. */
okv_status_t ocl_append(void *state, const okv_append_params_t *p, okv_err_t *err)
{
    ocl_state_t *st = state;
    const okv_cache_view_t *v = &p->cache;
    OKV_TRY(dtype_ok(st, p->kv_dtype, "kv", err));
    ocl_config_t cfg;
    OKV_TRY(ocl_config_for_view(st, v, &cfg, err));
    cfg.group = OCL_GROUP_WRITE;
    ocl_program_t *pr;
    OKV_TRY(ocl_get_program(st, &cfg, &pr, err));
    int hkv = cfg.hkv, d = cfg.d;
    size_t n = (size_t)p->n_rows * (size_t)hkv * (size_t)d;
    size_t nr = (size_t)(p->per_head_rotation ? hkv : 1) * (size_t)d * (size_t)d;
    OKV_TRY(flags_clear(st, err));
    OKV_TRY(validate_cache(st, pr, v, 1, 0, p->append_indptr, 1, p->append_indptr, p->n_rows, err));
    OKV_TRY(check_finite(st, pr, p->k, p->kv_dtype, n, err));
    OKV_TRY(check_finite(st, pr, p->v, p->kv_dtype, n, err));
    OKV_TRY(check_finite(st, pr, p->k_rotation, OKV_DTYPE_F32, nr, err));
    OKV_TRY(check_finite(st, pr, p->v_rotation, OKV_DTYPE_F32, nr, err));
    OKV_TRY(check_finite(st, pr, p->k_bias, OKV_DTYPE_F32, (size_t)(p->per_head_rotation ? hkv : 1) * (size_t)d, err));
    OKV_TRY(flags_check(st, "append", err));
    /* Rotation. With fp64 the kernel accumulates each rotated row in double in the
     * reference's order (bit-identical rows, codes and metadata) and keeps the rows
     * of the dry run for the commit pass. Without fp64 (or OKV_OPENCL_APPEND_GEMM=1),
     * prefill-sized appends are rotated by CLBlast first. */
    int prerot = 0;
    okv_ref_t kin = p->k, vin = p->v;
    okv_buffer_t kb, vb;
    const char *ag = getenv("OKV_OPENCL_APPEND_GEMM");
    int gemm_ok = (!st->has_fp64 || (ag && *ag && *ag != '0')) && !p->k_bias.buffer;
    if (p->n_rows > 0 && gemm_ok && use_clblast(st, (size_t)p->n_rows * (size_t)hkv)) {
        cl_mem ky, vy;
        int dk = 0, dv = 0;
        OKV_TRY(rotate_to_f32(st, pr, p->k, p->kv_dtype, p->k_rotation, p->n_rows, hkv, d, p->per_head_rotation, 1, 0,
                              0, 2, &ky, &dk, err));
        if (dk)
            OKV_TRY(rotate_to_f32(st, pr, p->v, p->kv_dtype, p->v_rotation, p->n_rows, hkv, d, p->per_head_rotation, 1,
                                  0, 1, 3, &vy, &dv, err));
        if (dk && dv) {
            memset(&kb, 0, sizeof kb);
            memset(&vb, 0, sizeof vb);
            kb.native = ky;
            vb.native = vy;
            kin.buffer = &kb;
            kin.offset = 0;
            vin.buffer = &vb;
            vin.offset = 0;
            prerot = 1;
        }
    }
    cl_mem keep_k = NULL, keep_v = NULL;
    if (!prerot && p->n_rows > 0) {
        OKV_TRY(ocl_scratch(st, 2, n * 4, &keep_k, err));
        OKV_TRY(ocl_scratch(st, 3, n * 4, &keep_v, err));
    }
    OKV_TRY(demote_rows(st, pr, v, 1, 0, p->append_indptr, p->k_clip_ratio, p->v_clip_ratio, 0, err));
    OKV_TRY(append_rows(st, pr, p, kin, vin, prerot, 0, keep_k, keep_v, err));
    OKV_TRY(flags_check(st, "append", err));
    if (keep_k) {
        memset(&kb, 0, sizeof kb);
        memset(&vb, 0, sizeof vb);
        kb.native = keep_k;
        vb.native = keep_v;
        kin.buffer = &kb;
        kin.offset = 0;
        vin.buffer = &vb;
        vin.offset = 0;
        prerot = 1;
    }
    OKV_TRY(demote_rows(st, pr, v, 1, 0, p->append_indptr, p->k_clip_ratio, p->v_clip_ratio, 1, err));
    OKV_TRY(append_rows(st, pr, p, kin, vin, prerot, 1, NULL, NULL, err));
    return update_lens(st, pr, v, 1, 0, p->append_indptr, err);
}

okv_status_t ocl_demote(void *state, const okv_demote_params_t *p, okv_err_t *err)
{
    ocl_state_t *st = state;
    const okv_cache_view_t *v = &p->cache;
    if (p->n_rows <= 0) return OKV_SUCCESS;
    ocl_config_t cfg;
    OKV_TRY(ocl_config_for_view(st, v, &cfg, err));
    cfg.group = OCL_GROUP_WRITE;
    ocl_program_t *pr;
    OKV_TRY(ocl_get_program(st, &cfg, &pr, err));
    int n = p->n_rows;
    int cap = v->desc->recent_tokens + v->desc->flush_interval;
    if (n > cap) n = cap;
    okv_ref_t none = {NULL, 0};
    OKV_TRY(flags_clear(st, err));
    OKV_TRY(validate_cache(st, pr, v, 2, n, none, 0, none, 0, err));
    OKV_TRY(flags_check(st, "demote", err));
    OKV_TRY(demote_rows(st, pr, v, 0, n, none, p->k_clip_ratio, p->v_clip_ratio, 0, err));
    OKV_TRY(flags_check(st, "demote", err));
    OKV_TRY(demote_rows(st, pr, v, 0, n, none, p->k_clip_ratio, p->v_clip_ratio, 1, err));
    return update_lens(st, pr, v, 0, n, none, err);
}

/* okv_attn_split also stages the V code rows of a chunk in local memory (CH * D/4
 * bytes, kernels/okv_kernels.cl `vst`) on top of what the runtime's chunk choice
 * (ocl_runtime.c) counts; halve the chunk until both fit the device. */
static void attn_fit_chunk(const ocl_state_t *st, ocl_config_t *cfg)
{
    size_t budget = (size_t)st->local_mem > 512 ? (size_t)st->local_mem - 512 : 0;
    size_t ng = (size_t)(cfg->d / cfg->gs), g = (size_t)cfg->gqa, d = (size_t)cfg->d;
    while (cfg->ch > 16) {
        size_t c = (size_t)cfg->ch;
        size_t main_f = g * d + 4 * ((g + 3) / 4) + 2 * g * c + 2 * ng * c;
        size_t fin_f = 4 * d + 8;
        size_t bytes = 4 * (main_f > fin_f ? main_f : fin_f) + 8 * c + c * (d / 4 < 16 ? 16 : d / 4);
        if (bytes <= budget) break;
        cfg->ch /= 2;
    }
}

/* -------------------------------------------------------------- dequantize -- */
okv_status_t ocl_dequantize(void *state, const okv_dequantize_params_t *p, okv_err_t *err)
{
    ocl_state_t *st = state;
    const okv_cache_view_t *v = &p->cache;
    OKV_TRY(dtype_ok(st, p->out_dtype, "out", err));
    if (p->out_rows <= 0 || v->batch <= 0) return OKV_SUCCESS;
    ocl_config_t cfg;
    OKV_TRY(ocl_config_for_view(st, v, &cfg, err));
    attn_fit_chunk(st, &cfg);
    cfg.group = OCL_GROUP_READ;
    ocl_program_t *pr;
    OKV_TRY(ocl_get_program(st, &cfg, &pr, err));
    OKV_TRY(flags_clear(st, err));
    okv_ref_t none = {NULL, 0};
    OKV_TRY(validate_cache(st, pr, v, 0, 0, none, 2, p->out_indptr, p->out_rows, err));
    OKV_TRY(flags_check(st, "dequantize", err));
    ocl_args_t a = args_begin(st, pr->kernels[OCL_K_DEQUANTIZE]);
    arg_cache(&a, v);
    arg_i32(&a, v->batch);
    arg_ref(&a, p->out_indptr);
    arg_i32(&a, p->out_rows);
    arg_ref(&a, p->k_out);
    arg_ref(&a, p->v_out);
    arg_i32(&a, (int)p->out_dtype);
    size_t gws[3] = {(size_t)p->out_rows, (size_t)cfg.hkv, 2};
    return launch(st, &a, "okv_dequantize", 3, gws, NULL, err);
}

/* --------------------------------------------------------------- attention -- */
typedef struct attn_plan {
    int ns[3];    /* splits per tier: BF16, INT2, new rows */
    int chunk[3]; /* tokens per split */
    int ns_total;
    size_t ws_bytes;
} attn_plan_t;

static void plan_tier(const ocl_state_t *st, const ocl_config_t *cfg, long bound, size_t parallel, int forced, int *ns,
                      int *chunk)
{
    if (bound <= 0) {
        *ns = 0;
        *chunk = cfg->ch;
        return;
    }
    long n;
    if (forced > 0) {
        n = forced;
    } else {
        long target = 16L * (long)st->compute_units; /* work-groups in flight per device */
        long have = parallel > 0 ? (long)parallel : 1;
        n = (target + have - 1) / have;
        /* at least one chunk per split: at batch 1 and short contexts the device has far
         * more room than work-groups (4K context: 32 splits x 8 KV heads instead of 16 x 8),
         * and a work-group's time is serial chunk after chunk; the merge pays little per
         * extra split now that it reads the splits in parallel */
        long maxn = (bound + cfg->ch - 1) / cfg->ch;
        if (n > maxn) n = maxn;
        if (n < 1) n = 1;
    }
    if (n > bound) n = bound;
    long c = (bound + n - 1) / n;
    if (forced <= 0) c = (long)round_up((size_t)c, (size_t)cfg->ch);
    if (c > 0x3fffffffL) c = 0x3fffffffL;
    *chunk = (int)c;
    *ns = (int)((bound + c - 1) / c);
}

static void plan_attention(const ocl_state_t *st, const ocl_config_t *cfg, const okv_cache_view_t *v, int n_rows,
                           int max_seq_len, int forced_int2, long new_bound, attn_plan_t *pl)
{
    const okv_cache_desc_t *desc = v->desc;
    long tier_slots = (long)desc->sink_tokens + desc->recent_tokens + desc->flush_interval;
    long bf_bound, i2_bound;
    if (max_seq_len > 0) {
        bf_bound = max_seq_len < tier_slots ? max_seq_len : tier_slots;
        i2_bound = (long)max_seq_len - desc->sink_tokens;
        if (i2_bound < 0) i2_bound = 0;
    } else {
        bf_bound = tier_slots;
        i2_bound = (long)v->int2_pool_pages * desc->page_size;
    }
    size_t par = (size_t)n_rows * (size_t)cfg->hkv;
    plan_tier(st, cfg, bf_bound, par, 0, &pl->ns[0], &pl->chunk[0]);
    plan_tier(st, cfg, i2_bound, par, forced_int2, &pl->ns[1], &pl->chunk[1]);
    plan_tier(st, cfg, new_bound, par, 0, &pl->ns[2], &pl->chunk[2]);
    pl->ns_total = pl->ns[0] + pl->ns[1] + pl->ns[2];
    if (pl->ns_total == 0) {
        pl->ns[0] = 1; /* one empty split keeps the merge well defined */
        pl->ns_total = 1;
    }
    pl->ws_bytes = (size_t)n_rows * (size_t)cfg->hkv * (size_t)cfg->gqa * (size_t)pl->ns_total * ((size_t)cfg->d + 2) *
                   sizeof(float);
}

typedef struct attn_run {
    const okv_cache_view_t *cache;
    int n_rows, row_mode;
    okv_ref_t q;
    okv_dtype_t q_dt;
    okv_ref_t q_indptr, k_new, v_new;
    okv_dtype_t new_dt;
    float sm_scale;
    okv_ref_t out;
    okv_dtype_t out_dt;
    okv_ref_t lse, v_rotation;
    int per_head, unrotate;
    okv_ref_t workspace;
    size_t workspace_bytes;
} attn_run_t;

/* One okv_attn_split launch: ns_a splits of tier_a, then ns_b of tier_b (-1: none). */
static okv_status_t launch_split(ocl_state_t *st, ocl_program_t *pr, const ocl_config_t *cfg, const attn_run_t *r,
                                 cl_mem ws, size_t ws_off, float scale, int tier_a, int chunk_a, int ns_a, int tier_b,
                                 int chunk_b, int ns_b, int base, int ns_total, okv_err_t *err)
{
    ocl_args_t a = args_begin(st, pr->kernels[OCL_K_ATTN_SPLIT]);
    arg_cache(&a, r->cache);
    arg_i32(&a, r->cache->batch);
    arg_ref(&a, r->q);
    arg_i32(&a, (int)r->q_dt);
    arg_i32(&a, r->row_mode);
    arg_ref(&a, r->q_indptr);
    arg_ref(&a, r->k_new);
    arg_ref(&a, r->v_new);
    arg_i32(&a, (int)r->new_dt);
    arg_f32(&a, scale);
    arg_i32(&a, tier_a);
    arg_i32(&a, chunk_a);
    arg_i32(&a, ns_a);
    arg_i32(&a, tier_b);
    arg_i32(&a, chunk_b);
    arg_i32(&a, base);
    arg_i32(&a, ns_total);
    arg_mem(&a, ws);
    arg_u64(&a, ws_off);
    size_t gws[3] = {(size_t)cfg->d * (size_t)(ns_a + ns_b), (size_t)cfg->hkv, (size_t)r->n_rows};
    size_t lws[3] = {(size_t)cfg->d, 1, 1};
    return launch(st, &a, "okv_attn_split", 3, gws, lws, err);
}

static okv_status_t run_attention(ocl_state_t *st, const ocl_config_t *cfg, const attn_plan_t *pl, const attn_run_t *r,
                                  okv_err_t *err)
{
    ocl_program_t *pr;
    OKV_TRY(ocl_get_program(st, cfg, &pr, err));
    if (r->n_rows <= 0) return OKV_SUCCESS;
    if (!st->trust_inputs) {
        okv_ref_t none = {NULL, 0};
        size_t hq = (size_t)cfg->hkv * (size_t)cfg->gqa, d = (size_t)cfg->d;
        OKV_TRY(flags_clear(st, err));
        OKV_TRY(validate_cache(st, pr, r->cache, 0, 0, none, r->row_mode, r->q_indptr, r->n_rows, err));
        OKV_TRY(check_finite(st, pr, r->q, r->q_dt, (size_t)r->n_rows * hq * d, err));
        if (r->row_mode) {
            OKV_TRY(check_finite(st, pr, r->k_new, r->new_dt, (size_t)r->n_rows * (size_t)cfg->hkv * d, err));
            OKV_TRY(check_finite(st, pr, r->v_new, r->new_dt, (size_t)r->n_rows * (size_t)cfg->hkv * d, err));
        }
        if (r->unrotate && r->v_rotation.buffer)
            OKV_TRY(
                check_finite(st, pr, r->v_rotation, OKV_DTYPE_F32, (size_t)(r->per_head ? cfg->hkv : 1) * d * d, err));
        OKV_TRY(flags_check(st, r->row_mode ? "prefill" : "decode", err));
    }
    cl_mem ws;
    size_t ws_off;
    if (r->workspace.buffer && r->workspace_bytes >= pl->ws_bytes && r->workspace.offset % 4 == 0) {
        ws = (cl_mem)r->workspace.buffer->native;
        ws_off = r->workspace.offset;
    } else {
        OKV_TRY(ocl_scratch(st, 5, pl->ws_bytes, &ws, err));
        ws_off = 0;
    }
    float scale = r->sm_scale > 0.0f ? r->sm_scale : 1.0f / sqrtf((float)cfg->d);
    int base = 0;
    for (int tier = 0; tier < 3;) {
        if (pl->ns[tier] == 0) {
            ++tier;
            continue;
        }
        /* BF16 + INT2 tiers in one launch (see okv_attn_split) */
        int tb = tier == 0 && pl->ns[1] > 0 ? 1 : -1;
        int nb = tb >= 0 ? pl->ns[tb] : 0;
        OKV_TRY(launch_split(st, pr, cfg, r, ws, ws_off, scale, tier, pl->chunk[tier], pl->ns[tier], tb,
                             tb >= 0 ? pl->chunk[tb] : 0, nb, base, pl->ns_total, err));
        base += pl->ns[tier] + nb;
        tier = tb >= 0 ? tb + 1 : tier + 1;
    }
    if (base == 0) /* no tier at all: write one empty partial per (row, hq) through a zero-length split */
        OKV_TRY(launch_split(st, pr, cfg, r, ws, ws_off, scale, 0, 0, 1, -1, 0, 0, 0, pl->ns_total, err));
    ocl_args_t a = args_begin(st, pr->kernels[OCL_K_ATTN_MERGE]);
    arg_mem(&a, ws);
    arg_u64(&a, ws_off);
    arg_i32(&a, pl->ns_total);
    arg_ref(&a, r->out);
    arg_i32(&a, (int)r->out_dt);
    arg_ref(&a, r->lse);
    arg_i32(&a, r->lse.buffer != NULL);
    arg_ref(&a, r->v_rotation);
    arg_i32(&a, r->per_head);
    arg_i32(&a, r->unrotate && r->v_rotation.buffer != NULL);
    size_t gws[3] = {(size_t)cfg->d, (size_t)cfg->hkv * (size_t)cfg->gqa, (size_t)r->n_rows};
    size_t lws[3] = {(size_t)cfg->d, 1, 1};
    return launch(st, &a, "okv_attn_merge", 3, gws, lws, err);
}

okv_status_t ocl_decode_workspace(void *state, const okv_decode_params_t *p, size_t *bytes, okv_err_t *err)
{
    ocl_state_t *st = state;
    ocl_config_t cfg;
    OKV_TRY(ocl_config_for_view(st, &p->cache, &cfg, err));
    attn_fit_chunk(st, &cfg);
    attn_plan_t pl;
    plan_attention(st, &cfg, &p->cache, p->cache.batch, p->max_seq_len, p->num_splits, 0, &pl);
    *bytes = pl.ws_bytes;
    return OKV_SUCCESS;
}

okv_status_t ocl_decode(void *state, const okv_decode_params_t *p, okv_err_t *err)
{
    ocl_state_t *st = state;
    OKV_TRY(dtype_ok(st, p->q_dtype, "q", err));
    OKV_TRY(dtype_ok(st, p->out_dtype, "out", err));
    ocl_config_t cfg;
    OKV_TRY(ocl_config_for_view(st, &p->cache, &cfg, err));
    attn_fit_chunk(st, &cfg);
    cfg.group = OCL_GROUP_READ;
    attn_plan_t pl;
    plan_attention(st, &cfg, &p->cache, p->cache.batch, p->max_seq_len, p->num_splits, 0, &pl);
    attn_run_t r;
    memset(&r, 0, sizeof r);
    r.cache = &p->cache;
    r.n_rows = p->cache.batch;
    r.row_mode = 0;
    r.q = p->q;
    r.q_dt = p->q_dtype;
    r.new_dt = OKV_DTYPE_F32;
    r.sm_scale = p->sm_scale;
    r.out = p->out;
    r.out_dt = p->out_dtype;
    r.lse = p->lse;
    r.v_rotation = p->v_rotation;
    r.per_head = p->per_head_rotation;
    r.unrotate = p->unrotate_output;
    r.workspace = p->workspace;
    r.workspace_bytes = p->workspace_bytes;
    return run_attention(st, &cfg, &pl, &r, err);
}

okv_status_t ocl_prefill_workspace(void *state, const okv_prefill_params_t *p, size_t *bytes, okv_err_t *err)
{
    ocl_state_t *st = state;
    ocl_config_t cfg;
    OKV_TRY(ocl_config_for_view(st, &p->cache, &cfg, err));
    attn_fit_chunk(st, &cfg);
    attn_plan_t pl;
    plan_attention(st, &cfg, &p->cache, p->n_rows, p->max_seq_len, 0, p->n_rows, &pl);
    *bytes = pl.ws_bytes;
    return OKV_SUCCESS;
}

okv_status_t ocl_prefill(void *state, const okv_prefill_params_t *p, okv_err_t *err)
{
    ocl_state_t *st = state;
    OKV_TRY(dtype_ok(st, p->in_dtype, "in", err));
    OKV_TRY(dtype_ok(st, p->out_dtype, "out", err));
    ocl_config_t cfg;
    OKV_TRY(ocl_config_for_view(st, &p->cache, &cfg, err));
    attn_fit_chunk(st, &cfg);
    cfg.group = OCL_GROUP_READ;
    attn_plan_t pl;
    plan_attention(st, &cfg, &p->cache, p->n_rows, p->max_seq_len, 0, p->n_rows, &pl);
    attn_run_t r;
    memset(&r, 0, sizeof r);
    r.cache = &p->cache;
    r.n_rows = p->n_rows;
    r.row_mode = 1;
    r.q = p->q;
    r.q_dt = p->in_dtype;
    r.q_indptr = p->q_indptr;
    r.k_new = p->k_new;
    r.v_new = p->v_new;
    r.new_dt = p->in_dtype;
    r.sm_scale = p->sm_scale;
    r.out = p->out;
    r.out_dt = p->out_dtype;
    r.workspace = p->workspace;
    r.workspace_bytes = p->workspace_bytes;
    return run_attention(st, &cfg, &pl, &r, err);
}

/* ----------------------------------------------------------------- moments -- */
okv_status_t ocl_moments(void *state, const okv_moments_params_t *p, okv_err_t *err)
{
    ocl_state_t *st = state;
    OKV_TRY(dtype_ok(st, p->x_dtype, "x", err));
    if (p->acc_dtype != OKV_DTYPE_F32 && p->acc_dtype != OKV_DTYPE_F64) {
        ocl_errf(err, "opencl: moments accumulator dtype %d not supported", (int)p->acc_dtype);
        return OKV_ERROR_UNSUPPORTED;
    }
    int f64 = p->acc_dtype == OKV_DTYPE_F64;
    if (f64 && !st->has_fp64) {
        ocl_errf(err, "opencl: device has no cl_khr_fp64; use an F32 accumulator");
        return OKV_ERROR_UNSUPPORTED;
    }
    int d = p->head_dim, hg = p->head_group > 0 ? p->head_group : 1;
    if (p->n_rows <= 0 || p->n_heads <= 0) return OKV_SUCCESS;
    int nacc = p->n_heads / hg;
    ocl_config_t cfg;
    ocl_config_generic(&cfg, d);
    cfg.group = OCL_GROUP_GENERIC;
    ocl_program_t *pr;
    OKV_TRY(ocl_get_program(st, &cfg, &pr, err));
    if (!st->trust_inputs) {
        OKV_TRY(flags_clear(st, err));
        OKV_TRY(check_finite(st, pr, p->x, p->x_dtype, (size_t)p->n_rows * (size_t)p->n_heads * (size_t)d, err));
        OKV_TRY(check_finite(st, pr, p->weights, OKV_DTYPE_F32, (size_t)p->n_rows * (size_t)p->n_heads, err));
        OKV_TRY(flags_check(st, "moments", err));
    }
    size_t esz = f64 ? 8 : 4;
    size_t rows = (size_t)p->n_rows * (size_t)hg;
    if (use_clblast(st, rows) && p->acc.offset % esz == 0) {
        size_t n = (size_t)p->n_rows * (size_t)p->n_heads * (size_t)d;
        cl_mem xs, xw;
        okv_ref_t none = {NULL, 0};
        OKV_TRY(ocl_scratch(st, 0, n * esz, &xs, err));
        OKV_TRY(convert(st, pr, (cl_mem)p->x.buffer->native, p->x.offset, (int)p->x_dtype, xs, 0, (int)p->acc_dtype, n,
                        none, err));
        if (p->weights.buffer) {
            OKV_TRY(ocl_scratch(st, 1, n * esz, &xw, err));
            OKV_TRY(convert(st, pr, (cl_mem)p->x.buffer->native, p->x.offset, (int)p->x_dtype, xw, 0, (int)p->acc_dtype,
                            n, p->weights, err));
        } else {
            xw = xs;
        }
        size_t ld = (size_t)p->n_heads * (size_t)d;
        int ok = 1, h = 0;
        for (; h < p->n_heads && ok; ++h) {
            size_t c_off = p->acc.offset / esz + (size_t)(h / hg) * (size_t)d * (size_t)d;
            ok = gemm(st, f64, 1, 0, (size_t)d, (size_t)d, (size_t)p->n_rows, xw, (size_t)h * d, ld, xs, (size_t)h * d,
                      ld, 1.0, (cl_mem)p->acc.buffer->native, c_off, (size_t)d);
        }
        if (ok) return ocl_barrier(st, err);
        if (h > 1) {
            /* CLBlast failed after some heads were accumulated: cannot fall back safely */
            st->clblast_ok = 0;
            ocl_errf(err, "opencl: CLBlast GEMM failed during moment accumulation");
            return OKV_ERROR_DEVICE;
        }
        st->clblast_ok = 0;
    }
    ocl_args_t a = args_begin(st, pr->kernels[OCL_K_MOMENTS]);
    arg_ref(&a, p->x);
    arg_i32(&a, (int)p->x_dtype);
    arg_ref(&a, p->weights);
    arg_i32(&a, p->weights.buffer != NULL);
    arg_ref(&a, p->acc);
    arg_i32(&a, (int)p->acc_dtype);
    arg_i32(&a, p->n_rows);
    arg_i32(&a, p->n_heads);
    arg_i32(&a, hg);
    size_t gws[3] = {(size_t)d, (size_t)d, (size_t)nacc};
    return launch(st, &a, "okv_moments", 3, gws, NULL, err);
}
