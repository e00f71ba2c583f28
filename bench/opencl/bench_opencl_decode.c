/*
 * bench_opencl_decode.c - decode attention of the OpenCL backend: INT2 tier vs a
 * BF16 path of the same backend and kernels.
 *
 * Shapes: Hq 32, Hkv 8, d 128, group 128, fp16 metadata, page 16; context 4K..128K,
 * batch 1..8. INT2 path: S0 = 64, W = 256, F = 8, every sequence at seq_len = ctx with
 * int2_len = ctx - S0 - W (the steady state). BF16 path: the same kernels with the
 * sink widened to the whole context (S0 = ctx, int2_len = 0), i.e. an all-BF16 cache.
 *
 * Timing: the bench creates its own profiling command queue and hands it to the
 * backend (native_stream). Per measurement, `reps` back-to-back decode calls are
 * enqueued between two tiny marker kernels; time = (start of the second marker - end
 * of the first) / reps, from OpenCL profiling events; the median of `iters`
 * measurements is reported. OKV_OPENCL_TRUST_INPUTS=1 is set so decode does no
 * host-synchronising validation between calls. Bytes: K+V codes + metadata of the
 * INT2 tier + the BF16 rows actually read; bandwidth is compared with the device's
 * copy bandwidth (clEnqueueCopyBuffer, read + write bytes) measured in the same run.
 *
 * usage: bench_opencl_decode [--module PATH] [--quick] [--ctx a,b,..] [--batch a,b,..]
 *                            [--iters N] [--reps N] [--splits N] [--out FILE.md]
 */
#define _POSIX_C_SOURCE 200809L
#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend_iface.h"
#include "okv_format.h"

#ifndef OKV_OCL_MODULE_PATH
#define OKV_OCL_MODULE_PATH "liboscarkv_backend_opencl.so"
#endif

#define HQ 32
#define HKV 8
#define D 128
#define PAGE 16

static const okv_backend_ops_t *O;
static void *OS;
static cl_context g_ctx;
static cl_command_queue g_q;
static cl_device_id g_dev;
static cl_kernel g_marker;
static cl_mem g_marker_buf;

#define CL_OK(x)                                                                                                       \
    do {                                                                                                               \
        cl_int e_ = (x);                                                                                               \
        if (e_ != CL_SUCCESS) {                                                                                        \
            fprintf(stderr, "%s:%d: %s -> %d\n", __FILE__, __LINE__, #x, (int)e_);                                     \
            exit(2);                                                                                                   \
        }                                                                                                              \
    } while (0)

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint32_t urnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

typedef struct dbuf {
    struct okv_buffer b;
} dbuf_t;

static dbuf_t *dnew(size_t bytes)
{
    dbuf_t *d = calloc(1, sizeof *d);
    okv_err_t err = {{0}};
    if (O->alloc(OS, bytes, &d->b.native, &err) != OKV_SUCCESS) {
        fprintf(stderr, "alloc %zu bytes: %s\n", bytes, err.msg);
        exit(2);
    }
    d->b.bytes = bytes;
    return d;
}
static void dfree(dbuf_t *d)
{
    if (!d) return;
    O->release(OS, d->b.native);
    free(d);
}
static void dwrite(dbuf_t *d, size_t off, const void *src, size_t n)
{
    okv_err_t err = {{0}};
    if (O->write(OS, d->b.native, off, src, n, &err) != OKV_SUCCESS) {
        fprintf(stderr, "write: %s\n", err.msg);
        exit(2);
    }
}
static okv_ref_t R(dbuf_t *d)
{
    okv_ref_t r = {d ? &d->b : NULL, 0};
    return r;
}

/* Fill a big device buffer by repeating a host block. */
static void dfill(dbuf_t *d, const void *block, size_t block_bytes)
{
    size_t chunk = 64u << 20;
    if (chunk > d->b.bytes) chunk = d->b.bytes;
    chunk = chunk / block_bytes * block_bytes;
    if (chunk == 0) chunk = block_bytes;
    unsigned char *h = malloc(chunk);
    for (size_t o = 0; o < chunk; o += block_bytes)
        memcpy(h + o, block, block_bytes);
    for (size_t o = 0; o < d->b.bytes; o += chunk)
        dwrite(d, o, h, d->b.bytes - o < chunk ? d->b.bytes - o : chunk);
    free(h);
}

typedef struct cache {
    okv_cache_desc_t desc;
    int batch;
    dbuf_t *i2pool, *bfpool, *i2ptr, *i2idx, *bfptr, *bfidx, *seql, *i2l;
    int i2pages, bfpages, ctx;
    double bytes_read; /* K+V bytes one decode call reads */
} cache_t;

static void cache_free(cache_t *c)
{
    dbuf_t *all[] = {c->i2pool, c->bfpool, c->i2ptr, c->i2idx, c->bfptr, c->bfidx, c->seql, c->i2l};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        dfree(all[i]);
    memset(c, 0, sizeof *c);
}

/* int2 = 1: steady-state INT2 cache; 0: all-BF16 (sink = ctx). */
static void cache_make(cache_t *c, int batch, int ctx, int int2)
{
    memset(c, 0, sizeof *c);
    okv_cache_desc_t *ds = &c->desc;
    ds->size = sizeof *ds;
    ds->n_q_heads = HQ;
    ds->n_kv_heads = HKV;
    ds->head_dim = D;
    ds->group_size = D;
    ds->meta_dtype = OKV_DTYPE_F16;
    ds->quantizer = OKV_QUANT_UNIFORM;
    ds->clip_mode = OKV_CLIP_SORT;
    ds->sink_tokens = int2 ? 64 : ctx;
    ds->recent_tokens = 256;
    ds->flush_interval = 8;
    ds->page_size = PAGE;
    c->batch = batch;
    c->ctx = ctx;
    int n2 = int2 ? ctx - 64 - 256 : 0;
    int i2per = (n2 + PAGE - 1) / PAGE;
    int bfslots = ds->sink_tokens + ds->recent_tokens + ds->flush_interval;
    int bfper = (bfslots + PAGE - 1) / PAGE;
    c->i2pages = batch * i2per;
    c->bfpages = batch * bfper;
    size_t i2pb = okv_int2_page_bytes(HKV, PAGE, D, D, OKV_FMT_META_F16);
    size_t bfpb = okv_bf16_page_bytes(HKV, PAGE, D);
    c->i2pool = dnew(i2pb * (size_t)(c->i2pages > 0 ? c->i2pages : 1));
    c->bfpool = dnew(bfpb * (size_t)c->bfpages);
    /* page contents: random codes, meta (scale 0.05, lo -0.08), random bf16 in [-1, 1] */
    unsigned char *page = malloc(i2pb);
    for (size_t i = 0; i < i2pb; ++i)
        page[i] = (unsigned char)urnd();
    for (int kv = 0; kv < 2; ++kv)
        for (int h = 0; h < HKV; ++h)
            for (int s = 0; s < PAGE; ++s) {
                okv_u16 *m = (okv_u16 *)(page + okv_int2_meta_offset(HKV, PAGE, D, D, OKV_FMT_META_F16, kv, h, s));
                m[0] = okv_f32_to_f16(0.05f + 0.001f * (float)(s % 7));
                m[1] = okv_f32_to_f16(-0.08f);
            }
    if (c->i2pages > 0) dfill(c->i2pool, page, i2pb);
    free(page);
    okv_u16 *bp = malloc(bfpb);
    for (size_t i = 0; i < bfpb / 2; ++i)
        bp[i] = okv_f32_to_bf16((float)((int)(urnd() % 2001) - 1000) / 1000.0f);
    dfill(c->bfpool, bp, bfpb);
    free(bp);
    /* page tables: sequence b owns consecutive page ranges (shuffling changes nothing for bandwidth) */
    int32_t *ip = malloc(sizeof(int32_t) * (batch + 1));
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(c->i2pages > c->bfpages ? c->i2pages : c->bfpages) + 4);
    for (int b = 0; b <= batch; ++b)
        ip[b] = b * i2per;
    c->i2ptr = dnew(4 * (batch + 1));
    dwrite(c->i2ptr, 0, ip, 4 * (batch + 1));
    for (int i = 0; i < c->i2pages; ++i)
        idx[i] = i;
    c->i2idx = dnew(4 * (size_t)(c->i2pages > 0 ? c->i2pages : 1));
    if (c->i2pages) dwrite(c->i2idx, 0, idx, 4 * (size_t)c->i2pages);
    for (int b = 0; b <= batch; ++b)
        ip[b] = b * bfper;
    c->bfptr = dnew(4 * (batch + 1));
    dwrite(c->bfptr, 0, ip, 4 * (batch + 1));
    for (int i = 0; i < c->bfpages; ++i)
        idx[i] = i;
    c->bfidx = dnew(4 * (size_t)c->bfpages);
    dwrite(c->bfidx, 0, idx, 4 * (size_t)c->bfpages);
    for (int b = 0; b < batch; ++b)
        ip[b] = ctx;
    c->seql = dnew(4 * batch);
    dwrite(c->seql, 0, ip, 4 * batch);
    for (int b = 0; b < batch; ++b)
        ip[b] = n2;
    c->i2l = dnew(4 * batch);
    dwrite(c->i2l, 0, ip, 4 * batch);
    free(ip);
    free(idx);
    int nbf = ctx - n2;
    c->bytes_read = (double)batch * HKV *
                    ((double)n2 * (2.0 * D / 4 + 2.0 * 2 * 2) /* codes + (scale, lo) fp16, K and V */
                     + (double)nbf * 2.0 * D * 2);            /* bf16 K and V */
}

static okv_cache_view_t view_of(cache_t *c)
{
    okv_cache_view_t v;
    memset(&v, 0, sizeof v);
    v.desc = &c->desc;
    v.batch = c->batch;
    v.int2_pool = R(c->i2pool);
    v.int2_pool_pages = c->i2pages;
    v.bf16_pool = R(c->bfpool);
    v.bf16_pool_pages = c->bfpages;
    v.int2_indptr = R(c->i2ptr);
    v.int2_indices = R(c->i2idx);
    v.bf16_indptr = R(c->bfptr);
    v.bf16_indices = R(c->bfidx);
    v.seq_lens = R(c->seql);
    v.int2_lens = R(c->i2l);
    return v;
}

static void marker(cl_event *ev)
{
    size_t g = 1;
    CL_OK(clEnqueueNDRangeKernel(g_q, g_marker, 1, NULL, &g, NULL, 0, NULL, ev));
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* median microseconds per decode call */
static double time_decode(cache_t *c, int splits, int iters, int reps, int *ok)
{
    size_t n = (size_t)c->batch * HQ * D;
    dbuf_t *q = dnew(n * 2), *o = dnew(n * 2), *lse = dnew(4 * (size_t)c->batch * HQ);
    okv_u16 *qh = malloc(n * 2);
    for (size_t i = 0; i < n; ++i)
        qh[i] = okv_f32_to_bf16((float)((int)(urnd() % 2001) - 1000) / 1000.0f);
    dwrite(q, 0, qh, n * 2);
    free(qh);
    okv_decode_params_t p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.cache = view_of(c);
    p.q = R(q);
    p.q_dtype = OKV_DTYPE_BF16;
    p.out = R(o);
    p.out_dtype = OKV_DTYPE_BF16;
    p.lse = R(lse);
    p.max_seq_len = c->ctx; /* every sequence is at seq_len = ctx */
    okv_err_t err = {{0}};
    p.num_splits = splits;
    size_t wsb = 0;
    dbuf_t *ws = NULL;
    *ok = 1;
    if (O->decode_workspace(OS, &p, &wsb, &err) != OKV_SUCCESS) {
        fprintf(stderr, "workspace: %s\n", err.msg);
        *ok = 0;
    }
    if (wsb) {
        ws = dnew(wsb);
        p.workspace = R(ws);
        p.workspace_bytes = wsb;
    }
    double *t = malloc(sizeof(double) * iters);
    /* warm-up (program build, caches) */
    for (int i = 0; i < 3 && *ok; ++i)
        if (O->decode(OS, &p, &err) != OKV_SUCCESS) {
            fprintf(stderr, "decode: %s\n", err.msg);
            *ok = 0;
        }
    CL_OK(clFinish(g_q));
    for (int it = 0; it < iters && *ok; ++it) {
        cl_event e0, e1;
        marker(&e0);
        for (int r = 0; r < reps; ++r)
            if (O->decode(OS, &p, &err) != OKV_SUCCESS) {
                fprintf(stderr, "decode: %s\n", err.msg);
                *ok = 0;
                break;
            }
        marker(&e1);
        CL_OK(clFinish(g_q));
        cl_ulong a = 0, b = 0;
        CL_OK(clGetEventProfilingInfo(e0, CL_PROFILING_COMMAND_END, sizeof a, &a, NULL));
        CL_OK(clGetEventProfilingInfo(e1, CL_PROFILING_COMMAND_START, sizeof b, &b, NULL));
        t[it] = (double)(b - a) * 1e-3 / reps;
        clReleaseEvent(e0);
        clReleaseEvent(e1);
    }
    double med = 0;
    if (*ok) {
        qsort(t, iters, sizeof(double), cmp_d);
        med = t[iters / 2];
    }
    free(t);
    dfree(q);
    dfree(o);
    dfree(lse);
    dfree(ws);
    return med;
}

/* device copy bandwidth (read + write bytes per second) */
static double copy_bandwidth(size_t bytes)
{
    cl_int e;
    cl_mem a = clCreateBuffer(g_ctx, CL_MEM_READ_WRITE, bytes, NULL, &e);
    if (e != CL_SUCCESS) return 0;
    cl_mem b = clCreateBuffer(g_ctx, CL_MEM_READ_WRITE, bytes, NULL, &e);
    if (e != CL_SUCCESS) {
        clReleaseMemObject(a);
        return 0;
    }
    unsigned char z = 1;
    CL_OK(clEnqueueFillBuffer(g_q, a, &z, 1, 0, bytes, 0, NULL, NULL));
    CL_OK(clEnqueueFillBuffer(g_q, b, &z, 1, 0, bytes, 0, NULL, NULL));
    double best = 0;
    for (int i = 0; i < 7; ++i) {
        cl_event ev;
        CL_OK(clEnqueueCopyBuffer(g_q, a, b, 0, 0, bytes, 0, NULL, &ev));
        CL_OK(clWaitForEvents(1, &ev));
        cl_ulong s0 = 0, s1 = 0;
        CL_OK(clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof s0, &s0, NULL));
        CL_OK(clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof s1, &s1, NULL));
        clReleaseEvent(ev);
        double bw = 2.0 * (double)bytes / ((double)(s1 - s0) * 1e-9);
        if (i > 0 && bw > best) best = bw;
    }
    clReleaseMemObject(a);
    clReleaseMemObject(b);
    return best;
}

static int parse_list(const char *s, int *out, int cap)
{
    int n = 0;
    while (*s && n < cap) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

int main(int argc, char **argv)
{
    const char *module = OKV_OCL_MODULE_PATH, *outpath = NULL;
    int ctxs[16] = {4096, 16384, 32768, 65536, 131072}, nctx = 5;
    int batches[16] = {1, 4, 8}, nb = 3;
    int iters = 11, reps = 20, splits = 0;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--module") && i + 1 < argc)
            module = argv[++i];
        else if (!strcmp(argv[i], "--quick")) {
            ctxs[0] = 4096, ctxs[1] = 8192, nctx = 2;
            batches[0] = 1, batches[1] = 2, nb = 2;
            iters = 3, reps = 2;
        } else if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            nctx = parse_list(argv[++i], ctxs, 16);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            nb = parse_list(argv[++i], batches, 16);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--splits") && i + 1 < argc)
            splits = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            outpath = argv[++i];
        else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (iters < 1) iters = 1;
    if (reps < 1) reps = 1;
    setenv("OKV_OPENCL_TRUST_INPUTS", "1", 1);

    void *lib = dlopen(module, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen %s: %s\n", module, dlerror());
        return 2;
    }
    okv_backend_entry_fn entry = (okv_backend_entry_fn)dlsym(lib, OKV_BACKEND_ENTRY_NAME);
    if (!entry || entry(OKV_BACKEND_IFACE_VERSION, &O) != OKV_SUCCESS) {
        fprintf(stderr, "%s: no usable %s\n", module, OKV_BACKEND_ENTRY_NAME);
        return 2;
    }
    /* our own profiling queue on the first GPU (else the first device) */
    cl_platform_id plats[8];
    cl_uint np = 0;
    CL_OK(clGetPlatformIDs(8, plats, &np));
    g_dev = NULL;
    for (int pass = 0; pass < 2 && !g_dev; ++pass)
        for (cl_uint i = 0; i < np && !g_dev; ++i) {
            cl_uint nd = 0;
            cl_device_id dv;
            if (clGetDeviceIDs(plats[i], pass == 0 ? CL_DEVICE_TYPE_GPU : CL_DEVICE_TYPE_ALL, 1, &dv, &nd) ==
                    CL_SUCCESS &&
                nd > 0)
                g_dev = dv;
        }
    if (!g_dev) {
        fprintf(stderr, "no OpenCL device\n");
        return 3;
    }
    cl_int e;
    g_ctx = clCreateContext(NULL, 1, &g_dev, NULL, NULL, &e);
    CL_OK(e);
    g_q = clCreateCommandQueue(g_ctx, g_dev, CL_QUEUE_PROFILING_ENABLE, &e);
    CL_OK(e);
    const char *msrc = "__kernel void okv_marker(__global int *p) { if (get_global_id(0) == 0) p[0] += 1; }";
    cl_program mp = clCreateProgramWithSource(g_ctx, 1, &msrc, NULL, &e);
    CL_OK(e);
    CL_OK(clBuildProgram(mp, 1, &g_dev, "-cl-std=CL1.2", NULL, NULL));
    g_marker = clCreateKernel(mp, "okv_marker", &e);
    CL_OK(e);
    g_marker_buf = clCreateBuffer(g_ctx, CL_MEM_READ_WRITE, 64, NULL, &e);
    CL_OK(e);
    CL_OK(clSetKernelArg(g_marker, 0, sizeof g_marker_buf, &g_marker_buf));
    okv_err_t err = {{0}};
    if (O->create(0, g_q, &OS, &err) != OKV_SUCCESS) {
        fprintf(stderr, "create: %s\n", err.msg);
        return 2;
    }
    char devname[256] = "", drv[128] = "";
    clGetDeviceInfo(g_dev, CL_DEVICE_NAME, sizeof devname - 1, devname, NULL);
    clGetDeviceInfo(g_dev, CL_DRIVER_VERSION, sizeof drv - 1, drv, NULL);
    cl_ulong gmem = 0;
    clGetDeviceInfo(g_dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof gmem, &gmem, NULL);
    double bw = copy_bandwidth(gmem > (8ull << 30) ? (1ull << 30) : (64ull << 20));

    FILE *out = outpath ? fopen(outpath, "w") : NULL;
    FILE *fs[2] = {stdout, out};
    for (int k = 0; k < 2; ++k) {
        if (!fs[k]) continue;
        fprintf(fs[k], "# OpenCL decode attention: INT2 vs BF16 (same backend)\n\n");
        fprintf(fs[k], "device: %s (driver %s); copy bandwidth (read+write): %.1f GB/s\n\n", devname, drv, bw * 1e-9);
        fprintf(fs[k],
                "Hq %d, Hkv %d, d %d, group %d, fp16 metadata, page %d; INT2: S0 64, W 256 (int2_len = ctx - 320); "
                "BF16: all rows in the BF16 tier. q/out bf16, lse on. splits: %s. Median of %d measurements of "
                "%d back-to-back calls between profiling events.\n\n",
                HQ, HKV, D, D, PAGE, splits ? "fixed" : "backend's choice", iters, reps);
        fprintf(fs[k],
                "| batch | ctx | INT2 us | INT2 GB/s | INT2 %%copy | BF16 us | BF16 GB/s | BF16 %%copy | speedup |\n");
        fprintf(fs[k], "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        fflush(fs[k]);
    }
    for (int bi = 0; bi < nb; ++bi)
        for (int ci = 0; ci < nctx; ++ci) {
            int batch = batches[bi], ctx = ctxs[ci];
            cache_t c2, cb;
            int ok2 = 0, okb = 0;
            cache_make(&c2, batch, ctx, 1);
            double t2 = time_decode(&c2, splits, iters, reps, &ok2);
            double by2 = c2.bytes_read;
            cache_free(&c2);
            cache_make(&cb, batch, ctx, 0);
            double tb = time_decode(&cb, splits, iters, reps, &okb);
            double byb = cb.bytes_read;
            cache_free(&cb);
            double g2 = ok2 ? by2 / (t2 * 1e-6) : 0, gb = okb ? byb / (tb * 1e-6) : 0;
            for (int k = 0; k < 2; ++k) {
                if (!fs[k]) continue;
                fprintf(fs[k], "| %d | %d | %.1f | %.0f | %.0f%% | %.1f | %.0f | %.0f%% | %.2fx |\n", batch, ctx, t2,
                        g2 * 1e-9, bw > 0 ? 100.0 * g2 / bw : 0, tb, gb * 1e-9, bw > 0 ? 100.0 * gb / bw : 0,
                        (ok2 && okb && t2 > 0) ? tb / t2 : 0.0);
                fflush(fs[k]);
            }
        }
    if (out) fclose(out);
    O->destroy(OS);
    clReleaseKernel(g_marker);
    clReleaseProgram(mp);
    clReleaseMemObject(g_marker_buf);
    clReleaseCommandQueue(g_q);
    clReleaseContext(g_ctx);
    return 0;
}
