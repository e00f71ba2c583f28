/* validate.c - checks every backend relies on: NULLs, dtypes, shapes and buffer
 * bounds, computed from the parameter structs alone (no device memory is read), so
 * every backend returns the same status for the same bad call. */
#include "okv_internal.h"

#include <math.h>

static int is_float_dtype(okv_dtype_t t) { return t == OKV_DTYPE_F32 || t == OKV_DTYPE_F16 || t == OKV_DTYPE_BF16; }

static int head_dim_ok(int32_t d) { return d == 64 || d == 128 || d == 256; }

/* A ref that must hold `bytes` bytes at an offset that is a multiple of `align`
 * (the element size; OKV_POOL_ALIGN for page pools, so vector loads stay aligned).
 * `n` names it in the detail line. */
static okv_status_t need_aligned(okv_err_t *e, okv_ref_t r, double bytes, size_t align, const char *n)
{
    if (!r.buffer) return okv_fail(e, OKV_ERROR_NULL_POINTER, "%s: buffer is NULL", n);
    if (align > 1 && r.offset % align != 0)
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "%s: offset %zu is not a multiple of %zu", n, r.offset, align);
    if (bytes < 0) return okv_fail(e, OKV_ERROR_BAD_SHAPE, "%s: negative size", n);
    if (r.offset > r.buffer->bytes || bytes > (double)(r.buffer->bytes - r.offset))
        return okv_fail(e, OKV_ERROR_BAD_SHAPE, "%s: needs %.0f bytes at offset %zu, buffer holds %zu", n, bytes,
                        r.offset, r.buffer->bytes);
    return OKV_SUCCESS;
}

#define OKV_POOL_ALIGN 64
/* Element size of a float dtype, 4 for int32/fp32 arrays. */
#define need(e, r, bytes, n) need_aligned((e), (r), (bytes), 4, (n))
#define need_dt(e, r, bytes, dt, n) need_aligned((e), (r), (bytes), okv_dtype_size(dt), (n))

#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        okv_status_t st_ = (x);                                                                                        \
        if (st_ != OKV_SUCCESS) return st_;                                                                            \
    } while (0)

static okv_status_t check_ratio(okv_err_t *e, float r, const char *n)
{
    if (!(r > 0.0f && r <= 1.0f)) return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "%s %g outside (0, 1]", n, (double)r);
    return OKV_SUCCESS;
}

static okv_status_t check_view(const okv_cache_view_t *c, okv_err_t *e)
{
    TRY(okv_validate_cache_desc(c->desc, e));
    const okv_cache_desc_t *d = c->desc;
    if (c->batch < 1) return okv_fail(e, OKV_ERROR_BAD_SHAPE, "batch %d < 1", c->batch);
    if (c->int2_pool_pages < 0 || c->bf16_pool_pages < 1)
        return okv_fail(e, OKV_ERROR_BAD_SHAPE, "pool pages: int2 %d (>= 0), bf16 %d (>= 1)", c->int2_pool_pages,
                        c->bf16_pool_pages);
    okv_cache_sizes_t s = {sizeof s, 0, 0, 0, 0, 0, 0};
    TRY(okv_cache_get_sizes(d, &s));
    if (c->int2_pool_pages > 0)
        TRY(need_aligned(e, c->int2_pool, (double)c->int2_pool_pages * s.int2_page_bytes, OKV_POOL_ALIGN, "int2_pool"));
    TRY(need_aligned(e, c->bf16_pool, (double)c->bf16_pool_pages * s.bf16_page_bytes, OKV_POOL_ALIGN, "bf16_pool"));
    double ip = 4.0 * (c->batch + 1), b4 = 4.0 * c->batch;
    TRY(need(e, c->int2_indptr, ip, "int2_indptr"));
    TRY(need(e, c->bf16_indptr, ip, "bf16_indptr"));
    TRY(need(e, c->seq_lens, b4, "seq_lens"));
    TRY(need(e, c->int2_lens, b4, "int2_lens"));
    TRY(need(e, c->bf16_indices, 4.0 * c->batch * s.bf16_pages_per_seq, "bf16_indices"));
    if (!c->int2_indices.buffer) return okv_fail(e, OKV_ERROR_NULL_POINTER, "int2_indices: buffer is NULL");
    return OKV_SUCCESS;
}

static double elems(double a, double b, double c) { return a * b * c; }

okv_status_t okv_validate_rotate(const okv_rotate_params_t *p, okv_err_t *e)
{
    if (p->size < sizeof *p) return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "params size %zu too small", p->size);
    if (!head_dim_ok(p->head_dim)) return okv_fail(e, OKV_ERROR_UNSUPPORTED_HEAD_DIM, "head_dim %d", p->head_dim);
    if (!is_float_dtype(p->x_dtype) || !is_float_dtype(p->out_dtype))
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "x/out dtype must be F32, F16 or BF16");
    if (p->n_rows < 0 || p->n_heads < 1)
        return okv_fail(e, OKV_ERROR_BAD_SHAPE, "n_rows %d, n_heads %d", p->n_rows, p->n_heads);
    int32_t n_rot = 1;
    if (p->per_head) {
        if (p->head_group < 1 || p->n_heads % p->head_group)
            return okv_fail(e, OKV_ERROR_BAD_SHAPE, "head_group %d must divide n_heads %d", p->head_group, p->n_heads);
        n_rot = p->n_heads / p->head_group;
    }
    double n = elems(p->n_rows, p->n_heads, p->head_dim);
    TRY(need_dt(e, p->x, n * okv_dtype_size(p->x_dtype), p->x_dtype, "x"));
    TRY(need_dt(e, p->out, n * okv_dtype_size(p->out_dtype), p->out_dtype, "out"));
    TRY(need(e, p->rotation, 4.0 * elems(n_rot, p->head_dim, p->head_dim), "rotation"));
    if (p->bias.buffer) TRY(need(e, p->bias, 4.0 * n_rot * p->head_dim, "bias"));
    return OKV_SUCCESS;
}

static okv_status_t check_rotation(okv_err_t *e, okv_ref_t r, int per_head, const okv_cache_desc_t *d, const char *n)
{
    double rows = per_head ? d->n_kv_heads : 1;
    return need(e, r, 4.0 * elems(rows, d->head_dim, d->head_dim), n);
}

okv_status_t okv_validate_append(const okv_append_params_t *p, okv_err_t *e)
{
    if (p->size < sizeof *p) return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "params size %zu too small", p->size);
    TRY(check_view(&p->cache, e));
    const okv_cache_desc_t *d = p->cache.desc;
    if (!is_float_dtype(p->kv_dtype)) return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "kv dtype must be F32/F16/BF16");
    if (p->n_rows < 0) return okv_fail(e, OKV_ERROR_BAD_SHAPE, "n_rows %d < 0", p->n_rows);
    TRY(need(e, p->append_indptr, 4.0 * (p->cache.batch + 1), "append_indptr"));
    double n = elems(p->n_rows, d->n_kv_heads, d->head_dim) * okv_dtype_size(p->kv_dtype);
    TRY(need_dt(e, p->k, n, p->kv_dtype, "k"));
    TRY(need_dt(e, p->v, n, p->kv_dtype, "v"));
    TRY(check_rotation(e, p->k_rotation, p->per_head_rotation, d, "k_rotation"));
    TRY(check_rotation(e, p->v_rotation, p->per_head_rotation, d, "v_rotation"));
    TRY(check_ratio(e, p->k_clip_ratio, "k_clip_ratio"));
    TRY(check_ratio(e, p->v_clip_ratio, "v_clip_ratio"));
    if (p->k_bias.buffer)
        TRY(need(e, p->k_bias, 4.0 * (p->per_head_rotation ? d->n_kv_heads : 1) * d->head_dim, "k_bias"));
    return OKV_SUCCESS;
}

okv_status_t okv_validate_demote(const okv_demote_params_t *p, okv_err_t *e)
{
    if (p->size < sizeof *p) return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "params size %zu too small", p->size);
    TRY(check_view(&p->cache, e));
    if (p->n_rows < 0) return okv_fail(e, OKV_ERROR_BAD_SHAPE, "n_rows %d < 0", p->n_rows);
    TRY(check_ratio(e, p->k_clip_ratio, "k_clip_ratio"));
    TRY(check_ratio(e, p->v_clip_ratio, "v_clip_ratio"));
    return OKV_SUCCESS;
}

okv_status_t okv_validate_dequantize(const okv_dequantize_params_t *p, okv_err_t *e)
{
    if (p->size < sizeof *p) return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "params size %zu too small", p->size);
    TRY(check_view(&p->cache, e));
    const okv_cache_desc_t *d = p->cache.desc;
    if (!is_float_dtype(p->out_dtype)) return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "out dtype must be F32/F16/BF16");
    if (p->out_rows < 0) return okv_fail(e, OKV_ERROR_BAD_SHAPE, "out_rows %d < 0", p->out_rows);
    TRY(need(e, p->out_indptr, 4.0 * (p->cache.batch + 1), "out_indptr"));
    double n = elems(p->out_rows, d->n_kv_heads, d->head_dim) * okv_dtype_size(p->out_dtype);
    TRY(need_dt(e, p->k_out, n, p->out_dtype, "k_out"));
    TRY(need_dt(e, p->v_out, n, p->out_dtype, "v_out"));
    return OKV_SUCCESS;
}

static okv_status_t check_scale(okv_err_t *e, float s)
{
    if (!(s >= 0.0f) || isinf(s)) return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "sm_scale %g", (double)s);
    return OKV_SUCCESS;
}

okv_status_t okv_validate_decode(const okv_decode_params_t *p, int need_workspace, okv_err_t *e)
{
    if (p->size < sizeof *p) return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "params size %zu too small", p->size);
    TRY(check_view(&p->cache, e));
    const okv_cache_desc_t *d = p->cache.desc;
    if (!is_float_dtype(p->q_dtype) || !is_float_dtype(p->out_dtype))
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "q/out dtype must be F32/F16/BF16");
    TRY(check_scale(e, p->sm_scale));
    if (p->max_seq_len < 0 || p->num_splits < 0 || p->num_splits > 4096)
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "max_seq_len %d (>= 0), num_splits %d (0..4096)", p->max_seq_len,
                        p->num_splits);
    double n = elems(p->cache.batch, d->n_q_heads, d->head_dim);
    TRY(need_dt(e, p->q, n * okv_dtype_size(p->q_dtype), p->q_dtype, "q"));
    if (need_workspace) {
        TRY(need_dt(e, p->out, n * okv_dtype_size(p->out_dtype), p->out_dtype, "out"));
        if (p->lse.buffer) TRY(need(e, p->lse, 4.0 * p->cache.batch * d->n_q_heads, "lse"));
        if (p->unrotate_output) TRY(check_rotation(e, p->v_rotation, p->per_head_rotation, d, "v_rotation"));
        if (p->workspace_bytes && p->workspace.buffer)
            TRY(need(e, p->workspace, (double)p->workspace_bytes, "workspace"));
    }
    return OKV_SUCCESS;
}

okv_status_t okv_validate_prefill(const okv_prefill_params_t *p, int need_workspace, okv_err_t *e)
{
    if (p->size < sizeof *p) return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "params size %zu too small", p->size);
    TRY(check_view(&p->cache, e));
    const okv_cache_desc_t *d = p->cache.desc;
    if (!is_float_dtype(p->in_dtype) || !is_float_dtype(p->out_dtype))
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "in/out dtype must be F32/F16/BF16");
    TRY(check_scale(e, p->sm_scale));
    if (p->n_rows < 0 || p->max_seq_len < 0)
        return okv_fail(e, OKV_ERROR_BAD_SHAPE, "n_rows %d, max_seq_len %d", p->n_rows, p->max_seq_len);
    TRY(need(e, p->q_indptr, 4.0 * (p->cache.batch + 1), "q_indptr"));
    double sz = okv_dtype_size(p->in_dtype);
    TRY(need_dt(e, p->q, elems(p->n_rows, d->n_q_heads, d->head_dim) * sz, p->in_dtype, "q"));
    TRY(need_dt(e, p->k_new, elems(p->n_rows, d->n_kv_heads, d->head_dim) * sz, p->in_dtype, "k_new"));
    TRY(need_dt(e, p->v_new, elems(p->n_rows, d->n_kv_heads, d->head_dim) * sz, p->in_dtype, "v_new"));
    if (need_workspace) {
        TRY(need_dt(e, p->out, elems(p->n_rows, d->n_q_heads, d->head_dim) * okv_dtype_size(p->out_dtype), p->out_dtype,
                    "out"));
        if (p->workspace_bytes && p->workspace.buffer)
            TRY(need(e, p->workspace, (double)p->workspace_bytes, "workspace"));
    }
    return OKV_SUCCESS;
}

okv_status_t okv_validate_moments(const okv_moments_params_t *p, okv_err_t *e)
{
    if (p->size < sizeof *p) return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "params size %zu too small", p->size);
    if (!head_dim_ok(p->head_dim)) return okv_fail(e, OKV_ERROR_UNSUPPORTED_HEAD_DIM, "head_dim %d", p->head_dim);
    if (!is_float_dtype(p->x_dtype)) return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "x dtype must be F32/F16/BF16");
    if (p->acc_dtype != OKV_DTYPE_F32 && p->acc_dtype != OKV_DTYPE_F64)
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "acc dtype must be F32 or F64");
    if (p->n_rows < 0 || p->n_heads < 1 || p->head_group < 1 || p->n_heads % p->head_group)
        return okv_fail(e, OKV_ERROR_BAD_SHAPE, "n_rows %d, n_heads %d, head_group %d", p->n_rows, p->n_heads,
                        p->head_group);
    TRY(need_dt(e, p->x, elems(p->n_rows, p->n_heads, p->head_dim) * okv_dtype_size(p->x_dtype), p->x_dtype, "x"));
    if (p->weights.buffer) TRY(need(e, p->weights, 4.0 * p->n_rows * p->n_heads, "weights"));
    TRY(need_dt(e, p->acc, elems(p->n_heads / p->head_group, p->head_dim, p->head_dim) * okv_dtype_size(p->acc_dtype),
                p->acc_dtype, "acc"));
    return OKV_SUCCESS;
}
