/* oscarkv_opencl.h - interop with OpenCL: wrap cl_mem objects and command queues.
 * The context is created on the queue's device and context. */
#ifndef OSCARKV_OPENCL_H
#define OSCARKV_OPENCL_H

#include "oscarkv/oscarkv.h"

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

static inline okv_status_t okv_opencl_context_create(cl_command_queue queue, okv_context_t **ctx)
{
    okv_context_desc_t d;
    okv_context_desc_init(&d);
    d.backend = "opencl";
    d.native_stream = (void *)queue;
    return okv_context_create(&d, ctx);
}

/* Wrap a buffer object of `bytes` bytes; refs address it by byte offset. */
static inline okv_status_t okv_opencl_buffer_wrap(okv_context_t *ctx, cl_mem mem, size_t bytes, okv_buffer_t **buf)
{
    return okv_buffer_wrap(ctx, (void *)mem, bytes, buf);
}

#endif
