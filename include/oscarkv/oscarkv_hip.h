/* oscarkv_hip.h - interop with HIP: wrap device pointers and streams.
 * Include after hip/hip_runtime_api.h; the library itself links no HIP SDK. */
#ifndef OSCARKV_HIP_H
#define OSCARKV_HIP_H

#include "oscarkv/oscarkv.h"

#include <hip/hip_runtime_api.h>

static inline okv_status_t okv_hip_context_create(int device, hipStream_t stream, okv_context_t **ctx)
{
    okv_context_desc_t d;
    okv_context_desc_init(&d);
    d.backend = "hip";
    d.device = device;
    d.native_stream = (void *)stream;
    return okv_context_create(&d, ctx);
}

static inline okv_status_t okv_hip_buffer_wrap(okv_context_t *ctx, void *dptr, size_t bytes, okv_buffer_t **buf)
{
    return okv_buffer_wrap(ctx, dptr, bytes, buf);
}

#endif
