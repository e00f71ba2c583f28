/* context.c - contexts (one backend + device + stream) and buffers. */
#include "okv_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

OKV_API void okv_context_desc_init(okv_context_desc_t *desc)
{
    if (!desc) return;
    memset(desc, 0, sizeof *desc);
    desc->size = sizeof *desc;
}

/* The backend a context should use: explicit name, else OKV_BACKEND, else the
 * first available in auto order. */
static const okv_backend_slot_t *pick_backend(const char *name, okv_err_t *e, okv_status_t *st)
{
    if (!name || !name[0] || strcmp(name, "auto") == 0) {
        const char *env = getenv("OKV_BACKEND");
        name = (env && env[0] && strcmp(env, "auto") != 0) ? env : NULL;
    }
    if (name) {
        const okv_backend_slot_t *s = okv_registry_find(name);
        if (!s) {
            *st = okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "unknown backend '%s' (cuda, hip, opencl, ref)", name);
            return NULL;
        }
        if (!s->available) {
            *st = okv_fail(e, OKV_ERROR_BACKEND_UNAVAILABLE, "backend %s %s", s->name, s->reason);
            return NULL;
        }
        return s;
    }
    int32_t n = 0;
    const okv_backend_slot_t *all = okv_registry(&n);
    for (int32_t i = 0; i < n; ++i)
        if (all[i].available) return &all[i];
    *st = okv_fail(e, OKV_ERROR_BACKEND_UNAVAILABLE, "no backend available");
    return NULL;
}

OKV_API okv_status_t okv_context_create(const okv_context_desc_t *desc, okv_context_t **out)
{
    if (!out) return OKV_ERROR_NULL_POINTER;
    *out = NULL;
    okv_context_desc_t d;
    okv_context_desc_init(&d);
    if (desc) {
        /* size-first: a desc compiled before `flags` existed is still accepted */
        if (desc->size < offsetof(okv_context_desc_t, flags)) return OKV_ERROR_INVALID_ARGUMENT;
        memcpy(&d, desc, desc->size < sizeof d ? desc->size : sizeof d);
        d.size = sizeof d;
    }
    if (d.flags & ~OKV_CONTEXT_TRUST_INPUTS) {
        okv_log(OKV_LOG_ERROR, "okv_context_create: unknown flags 0x%x",
                (unsigned)(d.flags & ~OKV_CONTEXT_TRUST_INPUTS));
        return OKV_ERROR_INVALID_ARGUMENT;
    }
    okv_err_t e = {{0}};
    okv_status_t st = OKV_SUCCESS;
    const okv_backend_slot_t *s = pick_backend(d.backend, &e, &st);
    if (!s) {
        okv_log(OKV_LOG_ERROR, "okv_context_create: %s", e.msg);
        return st;
    }
    if (d.device < 0 || d.device >= s->device_count) {
        okv_log(OKV_LOG_ERROR, "okv_context_create: device %d out of range (backend %s has %d)", d.device, s->name,
                s->device_count);
        return OKV_ERROR_INVALID_ARGUMENT;
    }
    okv_context_t *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return OKV_ERROR_OUT_OF_MEMORY;
    ctx->ops = s->ops;
    ctx->device = d.device;
    st = s->ops->create(d.device, d.native_stream, &ctx->state, &ctx->err);
    if (st != OKV_SUCCESS) {
        okv_log(OKV_LOG_ERROR, "okv_context_create(%s): %s", s->name, ctx->err.msg);
        free(ctx);
        return st;
    }
    /* Flags are permissions: a backend without `configure` keeps its checks. */
    okv_status_t (*configure)(void *, uint32_t, okv_err_t *) = okv_backend_configure_fn(s->ops);
    if (d.flags && configure) {
        st = configure(ctx->state, d.flags, &ctx->err);
        if (st != OKV_SUCCESS) {
            okv_log(OKV_LOG_ERROR, "okv_context_create(%s): %s", s->name, ctx->err.msg);
            s->ops->destroy(ctx->state);
            free(ctx);
            return st;
        }
    }
    *out = ctx;
    return OKV_SUCCESS;
}

OKV_API void okv_context_destroy(okv_context_t *ctx)
{
    if (!ctx) return;
    ctx->ops->destroy(ctx->state);
    free(ctx);
}

OKV_API const char *okv_context_last_error(const okv_context_t *ctx) { return ctx ? ctx->err.msg : ""; }

OKV_API const char *okv_context_backend_name(const okv_context_t *ctx) { return ctx ? ctx->ops->name : ""; }

OKV_API okv_status_t okv_context_synchronize(okv_context_t *ctx)
{
    if (!ctx) return OKV_ERROR_NULL_POINTER;
    ctx->err.msg[0] = '\0';
    return ctx->ops->synchronize(ctx->state, &ctx->err);
}

OKV_API okv_status_t okv_buffer_create(okv_context_t *ctx, size_t bytes, okv_buffer_t **out)
{
    if (!ctx || !out) return OKV_ERROR_NULL_POINTER;
    *out = NULL;
    ctx->err.msg[0] = '\0';
    if (bytes == 0) return okv_fail(&ctx->err, OKV_ERROR_INVALID_ARGUMENT, "buffer of 0 bytes");
    okv_buffer_t *b = calloc(1, sizeof *b);
    if (!b) return okv_fail(&ctx->err, OKV_ERROR_OUT_OF_MEMORY, "host allocation of a buffer handle failed");
    okv_status_t st = ctx->ops->alloc(ctx->state, bytes, &b->native, &ctx->err);
    if (st != OKV_SUCCESS) {
        free(b);
        return st;
    }
    b->ctx = ctx;
    b->bytes = bytes;
    b->owned = 1;
    *out = b;
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_buffer_wrap(okv_context_t *ctx, void *native, size_t bytes, okv_buffer_t **out)
{
    if (!ctx || !native || !out) return OKV_ERROR_NULL_POINTER;
    *out = NULL;
    if (bytes == 0) return okv_fail(&ctx->err, OKV_ERROR_INVALID_ARGUMENT, "buffer of 0 bytes");
    okv_buffer_t *b = calloc(1, sizeof *b);
    if (!b) return OKV_ERROR_OUT_OF_MEMORY;
    b->ctx = ctx;
    b->native = native;
    b->bytes = bytes;
    b->owned = 0;
    *out = b;
    return OKV_SUCCESS;
}

OKV_API void okv_buffer_destroy(okv_buffer_t *buf)
{
    if (!buf) return;
    if (buf->owned) buf->ctx->ops->release(buf->ctx->state, buf->native);
    free(buf);
}

OKV_API size_t okv_buffer_size(const okv_buffer_t *buf) { return buf ? buf->bytes : 0; }

static okv_status_t check_range(okv_context_t *ctx, const okv_buffer_t *buf, size_t offset, const void *host,
                                size_t bytes)
{
    if (!ctx || !buf || (!host && bytes)) return OKV_ERROR_NULL_POINTER;
    ctx->err.msg[0] = '\0';
    if (buf->ctx != ctx) return okv_fail(&ctx->err, OKV_ERROR_INVALID_ARGUMENT, "buffer belongs to another context");
    if (offset > buf->bytes || bytes > buf->bytes - offset)
        return okv_fail(&ctx->err, OKV_ERROR_BAD_SHAPE, "range [%zu, %zu+%zu) outside a buffer of %zu bytes", offset,
                        offset, bytes, buf->bytes);
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_buffer_write(okv_context_t *ctx, okv_buffer_t *buf, size_t offset, const void *src,
                                      size_t bytes)
{
    okv_status_t st = check_range(ctx, buf, offset, src, bytes);
    if (st != OKV_SUCCESS || bytes == 0) return st;
    return ctx->ops->write(ctx->state, buf->native, offset, src, bytes, &ctx->err);
}

OKV_API okv_status_t okv_buffer_read(okv_context_t *ctx, const okv_buffer_t *buf, size_t offset, void *dst,
                                     size_t bytes)
{
    okv_status_t st = check_range(ctx, buf, offset, dst, bytes);
    if (st != OKV_SUCCESS || bytes == 0) return st;
    return ctx->ops->read(ctx->state, buf->native, offset, dst, bytes, &ctx->err);
}
