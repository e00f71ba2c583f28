/* oscarkv_cuda.h - interop with CUDA: wrap device pointers and streams.
 * Include after cuda_runtime_api.h; the library itself links no CUDA SDK. */
#ifndef OSCARKV_CUDA_H
#define OSCARKV_CUDA_H

#include "oscarkv/oscarkv.h"

#include <cuda_runtime_api.h>

/* A context of the "cuda" backend on `device` that queues work on `stream`. */
static inline okv_status_t okv_cuda_context_create(int device, cudaStream_t stream, okv_context_t **ctx)
{
    okv_context_desc_t d;
    okv_context_desc_init(&d);
    d.backend = "cuda";
    d.device = device;
    d.native_stream = (void *)stream;
    return okv_context_create(&d, ctx);
}

/* Wrap `bytes` of device memory at `dptr` (from cudaMalloc or a framework's allocator). */
static inline okv_status_t okv_cuda_buffer_wrap(okv_context_t *ctx, void *dptr, size_t bytes, okv_buffer_t **buf)
{
    return okv_buffer_wrap(ctx, dptr, bytes, buf);
}

#endif
