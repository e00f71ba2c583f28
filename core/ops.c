/* ops.c - public entry points of the operations: defaults, validation, dispatch. */
#include "okv_internal.h"

#include <string.h>

#define INIT_PARAMS(type, p)                                                                                           \
    do {                                                                                                               \
        if (!(p)) return;                                                                                              \
        memset((p), 0, sizeof(type));                                                                                  \
        (p)->size = sizeof(type);                                                                                      \
    } while (0)

OKV_API void okv_rotate_params_init(okv_rotate_params_t *p)
{
    INIT_PARAMS(okv_rotate_params_t, p);
    p->head_group = 1;
}

OKV_API void okv_append_params_init(okv_append_params_t *p)
{
    INIT_PARAMS(okv_append_params_t, p);
    p->kv_dtype = OKV_DTYPE_BF16;
    p->k_clip_ratio = 0.96f;
    p->v_clip_ratio = 0.92f;
}

OKV_API void okv_demote_params_init(okv_demote_params_t *p)
{
    INIT_PARAMS(okv_demote_params_t, p);
    p->k_clip_ratio = 0.96f;
    p->v_clip_ratio = 0.92f;
}

OKV_API void okv_dequantize_params_init(okv_dequantize_params_t *p) { INIT_PARAMS(okv_dequantize_params_t, p); }

OKV_API void okv_decode_params_init(okv_decode_params_t *p)
{
    INIT_PARAMS(okv_decode_params_t, p);
    p->q_dtype = OKV_DTYPE_BF16;
    p->out_dtype = OKV_DTYPE_BF16;
}

OKV_API void okv_prefill_params_init(okv_prefill_params_t *p)
{
    INIT_PARAMS(okv_prefill_params_t, p);
    p->in_dtype = OKV_DTYPE_BF16;
    p->out_dtype = OKV_DTYPE_BF16;
}

OKV_API void okv_moments_params_init(okv_moments_params_t *p)
{
    INIT_PARAMS(okv_moments_params_t, p);
    p->x_dtype = OKV_DTYPE_F32;
    p->acc_dtype = OKV_DTYPE_F64;
    p->head_group = 1;
}

/* Every buffer an op touches must belong to the context running it. */
static okv_status_t owned_by(okv_context_t *ctx, const okv_ref_t *refs, size_t n)
{
    for (size_t i = 0; i < n; ++i)
        if (refs[i].buffer && refs[i].buffer->ctx != ctx)
            return okv_fail(&ctx->err, OKV_ERROR_INVALID_ARGUMENT, "a buffer belongs to another context");
    return OKV_SUCCESS;
}

static okv_status_t view_owned(okv_context_t *ctx, const okv_cache_view_t *c)
{
    const okv_ref_t refs[] = {c->int2_pool,   c->bf16_pool,    c->int2_indptr, c->int2_indices,
                              c->bf16_indptr, c->bf16_indices, c->seq_lens,    c->int2_lens};
    return owned_by(ctx, refs, sizeof refs / sizeof refs[0]);
}

#define BEGIN(ctx, p)                                                                                                  \
    if (!(ctx) || !(p)) return OKV_ERROR_NULL_POINTER;                                                                 \
    (ctx)->err.msg[0] = '\0';                                                                                          \
    okv_status_t st

#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        st = (x);                                                                                                      \
        if (st != OKV_SUCCESS) return st;                                                                              \
    } while (0)

/* A request for an optional feature the backend does not have. */
static okv_status_t need_cap(okv_context_t *ctx, uint32_t cap, const char *what)
{
    if (okv_backend_caps(ctx->ops) & cap) return OKV_SUCCESS;
    return okv_fail(&ctx->err, OKV_ERROR_UNSUPPORTED, "backend %s does not implement %s", ctx->ops->name, what);
}

OKV_API okv_status_t okv_rotate(okv_context_t *ctx, const okv_rotate_params_t *p)
{
    BEGIN(ctx, p);
    TRY(okv_validate_rotate(p, &ctx->err));
    const okv_ref_t refs[] = {p->x, p->out, p->rotation, p->bias};
    TRY(owned_by(ctx, refs, 4));
    if (p->bias.buffer) TRY(need_cap(ctx, OKV_CAP_KEY_BIAS, "a bias in rotate"));
    if (p->n_rows == 0) return OKV_SUCCESS;
    return ctx->ops->rotate(ctx->state, p, &ctx->err);
}

OKV_API okv_status_t okv_append(okv_context_t *ctx, const okv_append_params_t *p)
{
    BEGIN(ctx, p);
    TRY(okv_validate_append(p, &ctx->err));
    TRY(view_owned(ctx, &p->cache));
    const okv_ref_t refs[] = {p->k, p->v, p->append_indptr, p->k_rotation, p->v_rotation, p->k_bias};
    TRY(owned_by(ctx, refs, 6));
    if (p->k_bias.buffer) TRY(need_cap(ctx, OKV_CAP_KEY_BIAS, "key centering (k_bias)"));
    return ctx->ops->append(ctx->state, p, &ctx->err);
}

OKV_API okv_status_t okv_demote(okv_context_t *ctx, const okv_demote_params_t *p)
{
    BEGIN(ctx, p);
    TRY(okv_validate_demote(p, &ctx->err));
    TRY(view_owned(ctx, &p->cache));
    if (p->n_rows == 0) return OKV_SUCCESS;
    return ctx->ops->demote(ctx->state, p, &ctx->err);
}

OKV_API okv_status_t okv_dequantize(okv_context_t *ctx, const okv_dequantize_params_t *p)
{
    BEGIN(ctx, p);
    TRY(okv_validate_dequantize(p, &ctx->err));
    TRY(view_owned(ctx, &p->cache));
    const okv_ref_t refs[] = {p->out_indptr, p->k_out, p->v_out};
    TRY(owned_by(ctx, refs, 3));
    return ctx->ops->dequantize(ctx->state, p, &ctx->err);
}

OKV_API okv_status_t okv_decode_workspace_size(okv_context_t *ctx, const okv_decode_params_t *p, size_t *bytes)
{
    BEGIN(ctx, p);
    if (!bytes) return OKV_ERROR_NULL_POINTER;
    TRY(okv_validate_decode(p, 0, &ctx->err));
    return ctx->ops->decode_workspace(ctx->state, p, bytes, &ctx->err);
}

/* The caller's workspace must cover what the backend asks for this call. */
static okv_status_t check_workspace(okv_context_t *ctx, size_t needed, okv_ref_t ws, size_t ws_bytes)
{
    if (needed == 0) return OKV_SUCCESS;
    if (!ws.buffer) return okv_fail(&ctx->err, OKV_ERROR_NULL_POINTER, "workspace of %zu bytes needed", needed);
    if (ws_bytes < needed)
        return okv_fail(&ctx->err, OKV_ERROR_BAD_SHAPE, "workspace_bytes %zu < %zu needed", ws_bytes, needed);
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_decode_attention(okv_context_t *ctx, const okv_decode_params_t *p)
{
    BEGIN(ctx, p);
    TRY(okv_validate_decode(p, 1, &ctx->err));
    TRY(view_owned(ctx, &p->cache));
    const okv_ref_t refs[] = {p->q, p->out, p->lse, p->v_rotation, p->workspace};
    TRY(owned_by(ctx, refs, 5));
    size_t needed = 0;
    TRY(ctx->ops->decode_workspace(ctx->state, p, &needed, &ctx->err));
    TRY(check_workspace(ctx, needed, p->workspace, p->workspace_bytes));
    return ctx->ops->decode(ctx->state, p, &ctx->err);
}

OKV_API okv_status_t okv_prefill_workspace_size(okv_context_t *ctx, const okv_prefill_params_t *p, size_t *bytes)
{
    BEGIN(ctx, p);
    if (!bytes) return OKV_ERROR_NULL_POINTER;
    TRY(okv_validate_prefill(p, 0, &ctx->err));
    return ctx->ops->prefill_workspace(ctx->state, p, bytes, &ctx->err);
}

OKV_API okv_status_t okv_prefill_attention(okv_context_t *ctx, const okv_prefill_params_t *p)
{
    BEGIN(ctx, p);
    TRY(okv_validate_prefill(p, 1, &ctx->err));
    TRY(view_owned(ctx, &p->cache));
    const okv_ref_t refs[] = {p->q_indptr, p->q, p->k_new, p->v_new, p->out, p->workspace};
    TRY(owned_by(ctx, refs, 6));
    size_t needed = 0;
    TRY(ctx->ops->prefill_workspace(ctx->state, p, &needed, &ctx->err));
    TRY(check_workspace(ctx, needed, p->workspace, p->workspace_bytes));
    if (p->n_rows == 0) return OKV_SUCCESS;
    return ctx->ops->prefill(ctx->state, p, &ctx->err);
}

OKV_API okv_status_t okv_moments(okv_context_t *ctx, const okv_moments_params_t *p)
{
    BEGIN(ctx, p);
    TRY(okv_validate_moments(p, &ctx->err));
    const okv_ref_t refs[] = {p->x, p->weights, p->acc};
    TRY(owned_by(ctx, refs, 3));
    if (p->n_rows == 0) return OKV_SUCCESS;
    return ctx->ops->moments(ctx->state, p, &ctx->err);
}
