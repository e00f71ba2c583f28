/*
 * okv_opencl_selftest.c - the OpenCL backend module against the scalar reference.
 *
 * dlopens liboscarkv_backend_opencl.so, takes the "ref" table from the library
 * (okv_ref_backend_ops), and runs every op on twin buffers (host for ref, cl_mem for
 * opencl) with the same parameters; compares outputs (attention, rotate, moments,
 * dequantize) and cache state after append/demote (lengths exact, BF16 tier exact up
 * to one bf16 ulp, INT2 tier on dequantized values, codes may differ at ties). After
 * each cache-writing op the device cache is reset to the reference's bytes so that
 * later ops see identical inputs.
 *
 * usage: okv-opencl-selftest [module.so] [--quick]    exit 0 when everything passed
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_iface.h"
#include "okv_format.h"
#include "ref_backend.h"

#ifndef OKV_OCL_MODULE_PATH
#define OKV_OCL_MODULE_PATH "liboscarkv_backend_opencl.so"
#endif

static const okv_backend_ops_t *O, *R; /* opencl, ref */
static void *OS, *RS;                  /* their states */
static int g_fail, g_pass;

#define CHECK_OK(call, what)                                                                                           \
    do {                                                                                                               \
        okv_err_t e_ = {{0}};                                                                                          \
        okv_status_t s_ = (call);                                                                                      \
        (void)e_;                                                                                                      \
        if (s_ != OKV_SUCCESS) {                                                                                       \
            fprintf(stderr, "FATAL %s: status %d\n", what, (int)s_);                                                   \
            exit(2);                                                                                                   \
        }                                                                                                              \
    } while (0)

/* ------------------------------------------------------------------ twins -- */
typedef struct twin {
    struct okv_buffer h, d;
    size_t bytes;
} twin_t;

static twin_t *tw_new(size_t bytes)
{
    twin_t *t = calloc(1, sizeof *t);
    okv_err_t err = {{0}};
    t->bytes = bytes;
    t->h.native = calloc(1, bytes ? bytes : 1);
    t->h.bytes = bytes;
    if (O->alloc(OS, bytes, &t->d.native, &err) != OKV_SUCCESS) {
        fprintf(stderr, "alloc %zu: %s\n", bytes, err.msg);
        exit(2);
    }
    t->d.bytes = bytes;
    if (bytes && O->write(OS, t->d.native, 0, t->h.native, bytes, &err) != OKV_SUCCESS) {
        fprintf(stderr, "write: %s\n", err.msg);
        exit(2);
    }
    return t;
}
static void tw_free(twin_t *t)
{
    if (!t) return;
    O->release(OS, t->d.native);
    free(t->h.native);
    free(t);
}
static void tw_h2d(twin_t *t)
{
    okv_err_t err = {{0}};
    if (t->bytes && O->write(OS, t->d.native, 0, t->h.native, t->bytes, &err) != OKV_SUCCESS) {
        fprintf(stderr, "write: %s\n", err.msg);
        exit(2);
    }
}
static void *tw_dev(twin_t *t)
{
    void *p = malloc(t->bytes ? t->bytes : 1);
    okv_err_t err = {{0}};
    if (t->bytes && O->read(OS, t->d.native, 0, p, t->bytes, &err) != OKV_SUCCESS) {
        fprintf(stderr, "read: %s\n", err.msg);
        exit(2);
    }
    return p;
}
static okv_ref_t RF(twin_t *t, int dev)
{
    okv_ref_t r = {NULL, 0};
    if (t) r.buffer = dev ? &t->d : &t->h;
    return r;
}

/* ------------------------------------------------------------------ random -- */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * (1.0 / 9007199254740992.0);
}
static double nrand(void)
{
    double u = urand() + 1e-12, v = urand();
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
static size_t dsz(okv_dtype_t t) { return t == OKV_DTYPE_F32 ? 4 : t == OKV_DTYPE_F64 ? 8 : 2; }
static void store(void *base, okv_dtype_t t, size_t i, float v)
{
    if (t == OKV_DTYPE_F32)
        ((float *)base)[i] = v;
    else if (t == OKV_DTYPE_F16)
        ((okv_u16 *)base)[i] = okv_f32_to_f16(v);
    else
        ((okv_u16 *)base)[i] = okv_f32_to_bf16(v);
}
static double load(const void *base, okv_dtype_t t, size_t i)
{
    if (t == OKV_DTYPE_F32) return ((const float *)base)[i];
    if (t == OKV_DTYPE_F64) return ((const double *)base)[i];
    if (t == OKV_DTYPE_F16) return okv_f16_to_f32(((const okv_u16 *)base)[i]);
    return okv_bf16_to_f32(((const okv_u16 *)base)[i]);
}
static twin_t *tw_random(size_t n, okv_dtype_t t, double scale, double bias_every)
{
    twin_t *w = tw_new(n * dsz(t));
    for (size_t i = 0; i < n; ++i) {
        double v = nrand() * scale;
        if (bias_every > 0 && (i % 17) == 3) v += bias_every; /* a few outlier channels */
        store(w->h.native, t, i, (float)v);
    }
    tw_h2d(w);
    return w;
}
/* random orthogonal [n][d][d] (Gram-Schmidt on Gaussian rows) */
static twin_t *tw_rotation(int n, int d)
{
    twin_t *t = tw_new((size_t)n * d * d * 4);
    float *r = t->h.native;
    double *m = malloc(sizeof(double) * d * d);
    for (int k = 0; k < n; ++k) {
        for (int i = 0; i < d * d; ++i)
            m[i] = nrand();
        for (int i = 0; i < d; ++i) {
            for (int j = 0; j < i; ++j) {
                double dot = 0;
                for (int c = 0; c < d; ++c)
                    dot += m[i * d + c] * m[j * d + c];
                for (int c = 0; c < d; ++c)
                    m[i * d + c] -= dot * m[j * d + c];
            }
            double nn = 0;
            for (int c = 0; c < d; ++c)
                nn += m[i * d + c] * m[i * d + c];
            nn = 1.0 / sqrt(nn);
            for (int c = 0; c < d; ++c)
                m[i * d + c] *= nn;
        }
        for (int i = 0; i < d * d; ++i)
            r[(size_t)k * d * d + i] = (float)m[i];
    }
    free(m);
    tw_h2d(t);
    return t;
}

/* ----------------------------------------------------------------- compare -- */
static void verdict(int ok, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void verdict(int ok, const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s %-58s ", ok ? "PASS" : "FAIL", name);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (ok)
        ++g_pass;
    else
        ++g_fail;
}

/* max |a-b| / max(|ref|) over n elements of dtype t */
static double rel_err(const void *ref, const void *dev, okv_dtype_t t, size_t n, double *maxref)
{
    double mr = 0, me = 0;
    for (size_t i = 0; i < n; ++i) {
        double a = load(ref, t, i), b = load(dev, t, i);
        if (isnan(b) && !isnan(a)) return INFINITY;
        if (fabs(a) > mr) mr = fabs(a);
        if (fabs(a - b) > me) me = fabs(a - b);
    }
    if (maxref) *maxref = mr;
    return me / (mr > 0 ? mr : 1.0);
}
static double tol_for(okv_dtype_t t) { return t == OKV_DTYPE_F32 ? 2e-5 : t == OKV_DTYPE_F16 ? 2e-3 : 1.6e-2; }

static void cmp_twin(twin_t *t, okv_dtype_t dt, size_t n, double tol, const char *name)
{
    void *dv = tw_dev(t);
    double mr = 0;
    double e = rel_err(t->h.native, dv, dt, n, &mr);
    verdict(e <= tol, name, "rel_err %.3g (tol %.3g, max|ref| %.3g)", e, tol, mr);
    free(dv);
}

/* ------------------------------------------------------------------ rotate -- */
static void test_rotate(int n_rows, int n_heads, int d, okv_dtype_t xt, okv_dtype_t ot, int per_head, int hg,
                        int transpose, int inplace, int with_bias)
{
    char name[160];
    snprintf(name, sizeof name, "rotate n%d h%d d%d x%d o%d ph%d hg%d T%d ip%d bias%d", n_rows, n_heads, d, xt, ot,
             per_head, hg, transpose, inplace, with_bias);
    size_t n = (size_t)n_rows * n_heads * d;
    twin_t *x = tw_random(n, xt, 1.0, 0);
    twin_t *o = inplace ? x : tw_new(n * dsz(ot));
    twin_t *r = tw_rotation(per_head ? n_heads / hg : 1, d);
    twin_t *bias = with_bias ? tw_random((size_t)(per_head ? n_heads / hg : 1) * d, OKV_DTYPE_F32, 0.5, 1.0) : NULL;
    okv_rotate_params_t p[2];
    for (int dev = 0; dev < 2; ++dev) {
        memset(&p[dev], 0, sizeof p[dev]);
        p[dev].size = sizeof p[dev];
        p[dev].x = RF(x, dev);
        p[dev].x_dtype = xt;
        p[dev].out = RF(o, dev);
        p[dev].out_dtype = inplace ? xt : ot;
        p[dev].rotation = RF(r, dev);
        p[dev].n_rows = n_rows;
        p[dev].n_heads = n_heads;
        p[dev].head_dim = d;
        p[dev].per_head = per_head;
        p[dev].head_group = hg;
        p[dev].transpose = transpose;
        p[dev].bias = RF(bias, dev);
    }
    okv_err_t e1 = {{0}}, e2 = {{0}};
    okv_status_t s1 = R->rotate(RS, &p[0], &e1), s2 = O->rotate(OS, &p[1], &e2);
    if (s1 != OKV_SUCCESS || s2 != OKV_SUCCESS) {
        verdict(0, name, "status ref %d opencl %d (%s)", s1, s2, e2.msg);
    } else {
        okv_dtype_t t = inplace ? xt : ot;
        cmp_twin(o, t, n, t == OKV_DTYPE_F32 ? 1e-5 : tol_for(t), name);
    }
    if (o != x) tw_free(o);
    tw_free(x);
    tw_free(r);
    tw_free(bias);
}

/* ----------------------------------------------------------------- moments -- */
static void test_moments(int n_rows, int n_heads, int d, int hg, okv_dtype_t xt, okv_dtype_t at, int weights)
{
    char name[160];
    snprintf(name, sizeof name, "moments n%d h%d d%d hg%d x%d acc%d w%d", n_rows, n_heads, d, hg, xt, at, weights);
    size_t n = (size_t)n_rows * n_heads * d;
    twin_t *x = tw_random(n, xt, 1.0, 2.0);
    twin_t *w = weights ? tw_random((size_t)n_rows * n_heads, OKV_DTYPE_F32, 1.0, 0) : NULL;
    size_t na = (size_t)(n_heads / hg) * d * d;
    twin_t *acc = tw_new(na * dsz(at));
    for (size_t i = 0; i < na; ++i) {
        if (at == OKV_DTYPE_F64)
            ((double *)acc->h.native)[i] = 0.5;
        else
            ((float *)acc->h.native)[i] = 0.5f;
    }
    tw_h2d(acc);
    okv_moments_params_t p[2];
    for (int dev = 0; dev < 2; ++dev) {
        memset(&p[dev], 0, sizeof p[dev]);
        p[dev].size = sizeof p[dev];
        p[dev].x = RF(x, dev);
        p[dev].x_dtype = xt;
        p[dev].weights = RF(w, dev);
        p[dev].acc = RF(acc, dev);
        p[dev].acc_dtype = at;
        p[dev].n_rows = n_rows;
        p[dev].n_heads = n_heads;
        p[dev].head_dim = d;
        p[dev].head_group = hg;
    }
    okv_err_t e1 = {{0}}, e2 = {{0}};
    okv_status_t s1 = R->moments(RS, &p[0], &e1), s2 = O->moments(OS, &p[1], &e2);
    if (s2 == OKV_ERROR_UNSUPPORTED)
        verdict(1, name, "UNSUPPORTED (%s)", e2.msg);
    else if (s1 != OKV_SUCCESS || s2 != OKV_SUCCESS)
        verdict(0, name, "status ref %d opencl %d (%s)", s1, s2, e2.msg);
    else
        cmp_twin(acc, at, na, at == OKV_DTYPE_F64 ? 1e-6 : 1e-5, name);
    tw_free(x);
    tw_free(w);
    tw_free(acc);
}

/* ------------------------------------------------------------------- cache -- */
typedef struct cache {
    okv_cache_desc_t desc;
    int batch;
    twin_t *i2pool, *bfpool, *i2ptr, *i2idx, *bfptr, *bfidx, *seql, *i2l;
    int i2pages, bfpages;
    twin_t *rk, *rv, *kbias;
    int per_head;
} cache_t;

static okv_cache_view_t view(cache_t *c, int dev)
{
    okv_cache_view_t v;
    memset(&v, 0, sizeof v);
    v.desc = &c->desc;
    v.batch = c->batch;
    v.int2_pool = RF(c->i2pool, dev);
    v.int2_pool_pages = c->i2pages;
    v.bf16_pool = RF(c->bfpool, dev);
    v.bf16_pool_pages = c->bfpages;
    v.int2_indptr = RF(c->i2ptr, dev);
    v.int2_indices = RF(c->i2idx, dev);
    v.bf16_indptr = RF(c->bfptr, dev);
    v.bf16_indices = RF(c->bfidx, dev);
    v.seq_lens = RF(c->seql, dev);
    v.int2_lens = RF(c->i2l, dev);
    return v;
}

static void shuffle(int32_t *a, int n)
{
    for (int i = n - 1; i > 0; --i) {
        int j = (int)(urand() * (i + 1));
        int32_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

static cache_t *cache_new(int batch, int hq, int hkv, int d, int g, okv_dtype_t meta, okv_quantizer_t q,
                          okv_clip_mode_t clip, int s0, int w, int f, int page, int max_len, int per_head)
{
    cache_t *c = calloc(1, sizeof *c);
    okv_cache_desc_t *ds = &c->desc;
    ds->size = sizeof *ds;
    ds->n_q_heads = hq;
    ds->n_kv_heads = hkv;
    ds->head_dim = d;
    ds->group_size = g;
    ds->meta_dtype = meta;
    ds->quantizer = q;
    ds->clip_mode = clip;
    ds->sink_tokens = s0;
    ds->recent_tokens = w;
    ds->flush_interval = f;
    ds->page_size = page;
    c->batch = batch;
    int i2per = (max_len + page - 1) / page + 1;
    int bfper = (s0 + w + f + page - 1) / page;
    c->i2pages = batch * i2per + 3;
    c->bfpages = batch * bfper + 2;
    c->i2pool = tw_new(okv_int2_page_bytes(hkv, page, d, g, (int)meta) * c->i2pages);
    c->bfpool = tw_new(okv_bf16_page_bytes(hkv, page, d) * c->bfpages);
    c->i2ptr = tw_new(4 * (batch + 1));
    c->bfptr = tw_new(4 * (batch + 1));
    c->i2idx = tw_new(4 * (size_t)batch * i2per);
    c->bfidx = tw_new(4 * (size_t)batch * bfper);
    c->seql = tw_new(4 * batch);
    c->i2l = tw_new(4 * batch);
    int32_t *perm = malloc(4 * (size_t)(c->i2pages > c->bfpages ? c->i2pages : c->bfpages));
    for (int i = 0; i < c->i2pages; ++i)
        perm[i] = i;
    shuffle(perm, c->i2pages);
    for (int b = 0; b <= batch; ++b)
        ((int32_t *)c->i2ptr->h.native)[b] = b * i2per;
    memcpy(c->i2idx->h.native, perm, 4 * (size_t)batch * i2per);
    for (int i = 0; i < c->bfpages; ++i)
        perm[i] = i;
    shuffle(perm, c->bfpages);
    for (int b = 0; b <= batch; ++b)
        ((int32_t *)c->bfptr->h.native)[b] = b * bfper;
    memcpy(c->bfidx->h.native, perm, 4 * (size_t)batch * bfper);
    free(perm);
    tw_h2d(c->i2ptr);
    tw_h2d(c->i2idx);
    tw_h2d(c->bfptr);
    tw_h2d(c->bfidx);
    c->per_head = per_head;
    c->rk = tw_rotation(per_head ? hkv : 1, d);
    c->rv = tw_rotation(per_head ? hkv : 1, d);
    return c;
}

static void cache_free(cache_t *c)
{
    twin_t *all[] = {c->i2pool, c->bfpool, c->i2ptr, c->i2idx, c->bfptr, c->bfidx,
                     c->seql,   c->i2l,    c->rk,    c->rv,    c->kbias};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        tw_free(all[i]);
    free(c);
}

/* after an append/demote: compare, then reset the device to the reference's bytes */
static void cache_compare(cache_t *c, const char *name)
{
    const okv_cache_desc_t *ds = &c->desc;
    int d = ds->head_dim, hkv = ds->n_kv_heads, g = ds->group_size, P = ds->page_size;
    int32_t *sl = tw_dev(c->seql), *il = tw_dev(c->i2l);
    int lens_ok = !memcmp(sl, c->seql->h.native, c->seql->bytes) && !memcmp(il, c->i2l->h.native, c->i2l->bytes);
    okv_u16 *bfd = tw_dev(c->bfpool);
    okv_u8 *i2d = tw_dev(c->i2pool);
    const int32_t *hsl = c->seql->h.native, *hil = c->i2l->h.native;
    const int32_t *i2ptr = c->i2ptr->h.native, *i2idx = c->i2idx->h.native;
    const int32_t *bfptr = c->bfptr->h.native, *bfidx = c->bfidx->h.native;
    const okv_u16 *bfh = c->bfpool->h.native;
    const okv_u8 *i2h = c->i2pool->h.native;
    long bf_bad = 0, bf_n = 0, codes_diff = 0, codes_n = 0, deq_bad = 0, rows_n = 0, tie_rows = 0;
    double meta_err = 0;
    unsigned long pb = okv_int2_page_bytes(hkv, P, d, g, (int)ds->meta_dtype);
    unsigned long bpb = okv_bf16_page_bytes(hkv, P, d) / 2;
    int msz = okv_meta_size((int)ds->meta_dtype);
    okv_dtype_t mdt = ds->meta_dtype;
    for (int b = 0; b < c->batch && lens_ok; ++b) {
        int t = hsl[b], n2 = hil[b];
        for (int pos = 0; pos < t; ++pos)
            for (int kv = 0; kv < 2; ++kv)
                for (int h = 0; h < hkv; ++h) {
                    if (pos >= ds->sink_tokens && pos < ds->sink_tokens + n2) {
                        int i = pos - ds->sink_tokens;
                        unsigned long base = (unsigned long)i2idx[i2ptr[b] + i / P] * pb;
                        unsigned long co = base + okv_int2_codes_offset(hkv, P, d, kv, h, i % P);
                        unsigned long mo = base + okv_int2_meta_offset(hkv, P, d, g, (int)mdt, kv, h, i % P);
                        int tie_row = 0;
                        rows_n++;
                        for (int ch = 0; ch < d; ++ch) {
                            int gi = ch / g;
                            int ca = okv_unpack_code(i2h[co + ch % (d / 4)], ch / (d / 4));
                            int cb = okv_unpack_code(i2d[co + ch % (d / 4)], ch / (d / 4));
                            double sa = load(i2h + mo, mdt, 2 * gi), la = load(i2h + mo, mdt, 2 * gi + 1);
                            double sb = load(i2d + mo, mdt, 2 * gi), lb = load(i2d + mo, mdt, 2 * gi + 1);
                            double me = fabs(sa - sb) / (fabs(sa) + 1e-30);
                            if (me > meta_err) meta_err = me;
                            if (me > 2e-3) tie_row = 1;
                            double va = la + ca * sa, vb = lb + cb * sb;
                            codes_n++;
                            if (ca != cb) codes_diff++;
                            if (fabs(va - vb) > 1.01 * fabs(sa) + 1e-6) deq_bad++;
                        }
                        tie_rows += tie_row;
                        (void)msz;
                    } else {
                        int slot = okv_bf16_slot(pos, ds->sink_tokens, ds->recent_tokens, ds->flush_interval);
                        unsigned long e = (unsigned long)bfidx[bfptr[b] + slot / P] * bpb +
                                          okv_bf16_row_elem(hkv, P, d, kv, h, slot % P);
                        for (int ch = 0; ch < d; ++ch) {
                            /* one bf16 rounding step (the GEMM path sums in another order) */
                            double a = okv_bf16_to_f32(bfh[e + ch]), bb = okv_bf16_to_f32(bfd[e + ch]);
                            bf_n++;
                            if (fabs(a - bb) > fmax(fabs(a), fabs(bb)) * (1.0 / 128) + 1e-5) bf_bad++;
                        }
                    }
                }
    }
    /* a row whose clip threshold or range flips between two nearly equal |x| (rotation
     * rounded differently) gets other metadata: allowed for a few rows, like code ties */
    int ok = lens_ok && bf_bad == 0 && codes_diff <= codes_n / 200 + 2 && tie_rows <= rows_n / 200 + 1 &&
             deq_bad <= (tie_rows + 1) * d;
    verdict(ok, name,
            "lens %s, bf16 %ld/%ld off, codes %ld/%ld differ, deq>1step %ld, meta max rel %.2g (%ld/%ld rows)",
            lens_ok ? "ok" : "DIFFER", bf_bad, bf_n, codes_diff, codes_n, deq_bad, meta_err, tie_rows, rows_n);
    free(sl);
    free(il);
    free(bfd);
    free(i2d);
    tw_h2d(c->bfpool);
    tw_h2d(c->i2pool);
    tw_h2d(c->seql);
    tw_h2d(c->i2l);
}

static void do_append(cache_t *c, const int *n_new, okv_dtype_t dt, float kr, float vr, const char *tag)
{
    int d = c->desc.head_dim, hkv = c->desc.n_kv_heads;
    twin_t *ip = tw_new(4 * (c->batch + 1));
    int32_t *ipp = ip->h.native;
    ipp[0] = 0;
    for (int b = 0; b < c->batch; ++b)
        ipp[b + 1] = ipp[b] + n_new[b];
    tw_h2d(ip);
    int n = ipp[c->batch];
    twin_t *k = tw_random((size_t)n * hkv * d, dt, 1.0, 3.0);
    twin_t *v = tw_random((size_t)n * hkv * d, dt, 0.5, 0);
    okv_append_params_t p[2];
    for (int dev = 0; dev < 2; ++dev) {
        memset(&p[dev], 0, sizeof p[dev]);
        p[dev].size = sizeof p[dev];
        p[dev].cache = view(c, dev);
        p[dev].k = RF(k, dev);
        p[dev].v = RF(v, dev);
        p[dev].kv_dtype = dt;
        p[dev].append_indptr = RF(ip, dev);
        p[dev].n_rows = n;
        p[dev].k_rotation = RF(c->rk, dev);
        p[dev].v_rotation = RF(c->rv, dev);
        p[dev].per_head_rotation = c->per_head;
        p[dev].k_clip_ratio = kr;
        p[dev].v_clip_ratio = vr;
        p[dev].k_bias = RF(c->kbias, dev);
    }
    okv_err_t e1 = {{0}}, e2 = {{0}};
    okv_status_t s1 = R->append(RS, &p[0], &e1), s2 = O->append(OS, &p[1], &e2);
    char name[200];
    snprintf(name, sizeof name, "append %s n=%d", tag, n);
    if (s1 != OKV_SUCCESS || s2 != OKV_SUCCESS)
        verdict(0, name, "status ref %d (%s) opencl %d (%s)", s1, e1.msg, s2, e2.msg);
    else
        cache_compare(c, name);
    tw_free(ip);
    tw_free(k);
    tw_free(v);
}

static void do_demote(cache_t *c, int n, const char *tag)
{
    okv_demote_params_t p[2];
    for (int dev = 0; dev < 2; ++dev) {
        memset(&p[dev], 0, sizeof p[dev]);
        p[dev].size = sizeof p[dev];
        p[dev].cache = view(c, dev);
        p[dev].n_rows = n;
        p[dev].k_clip_ratio = 0.96f;
        p[dev].v_clip_ratio = 0.92f;
    }
    okv_err_t e1 = {{0}}, e2 = {{0}};
    okv_status_t s1 = R->demote(RS, &p[0], &e1), s2 = O->demote(OS, &p[1], &e2);
    char name[200];
    snprintf(name, sizeof name, "demote %s n=%d", tag, n);
    if (s1 != OKV_SUCCESS || s2 != OKV_SUCCESS)
        verdict(0, name, "status ref %d opencl %d (%s)", s1, s2, e2.msg);
    else
        cache_compare(c, name);
}

static int max_len(cache_t *c)
{
    int m = 0;
    for (int b = 0; b < c->batch; ++b)
        if (((int32_t *)c->seql->h.native)[b] > m) m = ((int32_t *)c->seql->h.native)[b];
    return m;
}

static void do_dequantize(cache_t *c, okv_dtype_t ot, const char *tag)
{
    int d = c->desc.head_dim, hkv = c->desc.n_kv_heads;
    twin_t *ip = tw_new(4 * (c->batch + 1));
    int32_t *ipp = ip->h.native;
    ipp[0] = 1; /* a leading unused row */
    for (int b = 0; b < c->batch; ++b)
        ipp[b + 1] = ipp[b] + ((int32_t *)c->seql->h.native)[b] + (b & 1);
    tw_h2d(ip);
    int rows = ipp[c->batch] + 1;
    size_t n = (size_t)rows * hkv * d;
    twin_t *ko = tw_new(n * dsz(ot)), *vo = tw_new(n * dsz(ot));
    okv_dequantize_params_t p[2];
    for (int dev = 0; dev < 2; ++dev) {
        memset(&p[dev], 0, sizeof p[dev]);
        p[dev].size = sizeof p[dev];
        p[dev].cache = view(c, dev);
        p[dev].out_indptr = RF(ip, dev);
        p[dev].out_rows = rows;
        p[dev].k_out = RF(ko, dev);
        p[dev].v_out = RF(vo, dev);
        p[dev].out_dtype = ot;
    }
    okv_err_t e1 = {{0}}, e2 = {{0}};
    okv_status_t s1 = R->dequantize(RS, &p[0], &e1), s2 = O->dequantize(OS, &p[1], &e2);
    char name[200];
    snprintf(name, sizeof name, "dequantize %s out%d", tag, ot);
    if (s1 != OKV_SUCCESS || s2 != OKV_SUCCESS) {
        verdict(0, name, "status ref %d opencl %d (%s)", s1, s2, e2.msg);
    } else {
        void *kd = tw_dev(ko), *vd = tw_dev(vo);
        int ok = !memcmp(kd, ko->h.native, ko->bytes) && !memcmp(vd, vo->h.native, vo->bytes);
        verdict(ok, name, "%s", ok ? "bit-identical" : "DIFFER");
        free(kd);
        free(vd);
    }
    tw_free(ip);
    tw_free(ko);
    tw_free(vo);
}

static void do_decode(cache_t *c, okv_dtype_t qt, okv_dtype_t ot, int splits, int unrot, int with_lse, int plan_div,
                      const char *tag)
{
    int d = c->desc.head_dim, hq = c->desc.n_q_heads;
    size_t n = (size_t)c->batch * hq * d;
    twin_t *q = tw_random(n, qt, 1.0, 0);
    twin_t *o = tw_new(n * dsz(ot));
    twin_t *lse = with_lse ? tw_new(4 * (size_t)c->batch * hq) : NULL;
    okv_decode_params_t p[2];
    for (int dev = 0; dev < 2; ++dev) {
        memset(&p[dev], 0, sizeof p[dev]);
        p[dev].size = sizeof p[dev];
        p[dev].cache = view(c, dev);
        p[dev].q = RF(q, dev);
        p[dev].q_dtype = qt;
        p[dev].out = RF(o, dev);
        p[dev].out_dtype = ot;
        p[dev].lse = RF(lse, dev);
        p[dev].max_seq_len = max_len(c) / plan_div; /* plan_div > 1: an underestimated bound */
        p[dev].num_splits = splits;
        p[dev].v_rotation = RF(c->rv, dev);
        p[dev].per_head_rotation = c->per_head;
        p[dev].unrotate_output = unrot;
    }
    okv_err_t e1 = {{0}}, e2 = {{0}};
    okv_status_t s1 = R->decode(RS, &p[0], &e1), s2 = O->decode(OS, &p[1], &e2);
    char name[200];
    snprintf(name, sizeof name, "decode %s q%d o%d splits%d unrot%d lse%d plan/%d", tag, qt, ot, splits, unrot,
             with_lse, plan_div);
    if (s1 != OKV_SUCCESS || s2 != OKV_SUCCESS) {
        verdict(0, name, "status ref %d opencl %d (%s)", s1, s2, e2.msg);
    } else {
        cmp_twin(o, ot, n, ot == OKV_DTYPE_F32 ? 1e-4 : tol_for(ot), name);
        if (lse) {
            float *ld = tw_dev(lse), *lh = lse->h.native;
            double me = 0;
            for (int i = 0; i < c->batch * hq; ++i) {
                double e = (isinf(lh[i]) && isinf(ld[i])) ? 0 : fabs((double)lh[i] - ld[i]);
                if (!(e <= me)) me = e;
            }
            verdict(me < 1e-4, "  lse", "max abs err %.3g", me);
            free(ld);
        }
    }
    tw_free(q);
    tw_free(o);
    tw_free(lse);
}

static void do_prefill(cache_t *c, const int *n_new, okv_dtype_t it, okv_dtype_t ot, const char *tag)
{
    int d = c->desc.head_dim, hq = c->desc.n_q_heads, hkv = c->desc.n_kv_heads;
    twin_t *ip = tw_new(4 * (c->batch + 1));
    int32_t *ipp = ip->h.native;
    ipp[0] = 0;
    for (int b = 0; b < c->batch; ++b)
        ipp[b + 1] = ipp[b] + n_new[b];
    tw_h2d(ip);
    int n = ipp[c->batch];
    twin_t *q = tw_random((size_t)n * hq * d, it, 1.0, 0);
    twin_t *k = tw_random((size_t)n * hkv * d, it, 1.0, 0);
    twin_t *v = tw_random((size_t)n * hkv * d, it, 1.0, 0);
    twin_t *o = tw_new((size_t)n * hq * d * dsz(ot));
    okv_prefill_params_t p[2];
    for (int dev = 0; dev < 2; ++dev) {
        memset(&p[dev], 0, sizeof p[dev]);
        p[dev].size = sizeof p[dev];
        p[dev].cache = view(c, dev);
        p[dev].q_indptr = RF(ip, dev);
        p[dev].n_rows = n;
        p[dev].q = RF(q, dev);
        p[dev].k_new = RF(k, dev);
        p[dev].v_new = RF(v, dev);
        p[dev].in_dtype = it;
        p[dev].out = RF(o, dev);
        p[dev].out_dtype = ot;
        p[dev].max_seq_len = max_len(c);
    }
    okv_err_t e1 = {{0}}, e2 = {{0}};
    okv_status_t s1 = R->prefill(RS, &p[0], &e1), s2 = O->prefill(OS, &p[1], &e2);
    char name[200];
    snprintf(name, sizeof name, "prefill %s n=%d in%d o%d", tag, n, it, ot);
    if (s1 != OKV_SUCCESS || s2 != OKV_SUCCESS)
        verdict(0, name, "status ref %d opencl %d (%s)", s1, s2, e2.msg);
    else
        cmp_twin(o, ot, (size_t)n * hq * d, ot == OKV_DTYPE_F32 ? 1e-4 : tol_for(ot), name);
    tw_free(ip);
    tw_free(q);
    tw_free(k);
    tw_free(v);
    tw_free(o);
}

/* One cache geometry through prefill appends, decode appends, demote, dequantize,
 * decode and prefill attention. */
static void scenario(int batch, int hq, int hkv, int d, int g, okv_dtype_t meta, okv_quantizer_t qz,
                     okv_clip_mode_t clip, int s0, int w, int f, int page, const int *prefill_len, int steps,
                     int per_head, okv_dtype_t dt)
{
    char tag[160];
    snprintf(tag, sizeof tag, "[b%d hq%d hkv%d d%d g%d m%d q%d c%d win%d,%d,%d p%d ph%d kb%d]", batch, hq, hkv, d, g,
             (int)meta, (int)qz, (int)clip, s0, w, f, page, per_head, per_head || g != d);
    int mx = 0;
    for (int b = 0; b < batch; ++b)
        mx = prefill_len[b] > mx ? prefill_len[b] : mx;
    cache_t *c = cache_new(batch, hq, hkv, d, g, meta, qz, clip, s0, w, f, page, mx + steps + 64, per_head);
    if (per_head || g != d) /* key centering in some scenarios */
        c->kbias = tw_random((size_t)(per_head ? hkv : 1) * d, OKV_DTYPE_F32, 0.3, 3.0);
    do_append(c, prefill_len, dt, 0.96f, 0.92f, tag);
    int *ones = malloc(sizeof(int) * batch);
    for (int s = 0; s < steps; ++s) {
        for (int b = 0; b < batch; ++b)
            ones[b] = (b + s) % 5 == 4 ? 0 : 1;
        char t2[200];
        snprintf(t2, sizeof t2, "%s step %d", tag, s);
        do_append(c, ones, dt, s % 3 ? 0.96f : 1.0f, 0.92f, t2);
    }
    do_demote(c, 5, tag);
    do_dequantize(c, OKV_DTYPE_F32, tag);
    do_dequantize(c, OKV_DTYPE_BF16, tag);
    do_decode(c, dt, OKV_DTYPE_F32, 0, 0, 1, 1, tag);
    do_decode(c, OKV_DTYPE_F32, OKV_DTYPE_F32, 3, 1, 1, 1, tag);
    do_decode(c, OKV_DTYPE_BF16, OKV_DTYPE_BF16, 1, 0, 0, 1, tag);
    do_decode(c, OKV_DTYPE_F16, OKV_DTYPE_F32, 0, 1, 1, 3, tag);
    for (int b = 0; b < batch; ++b)
        ones[b] = (b * 7 + 3) % 11;
    do_prefill(c, ones, dt, OKV_DTYPE_F32, tag);
    free(ones);
    cache_free(c);
}

int main(int argc, char **argv)
{
    const char *path = OKV_OCL_MODULE_PATH;
    int quick = 0;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else
            path = argv[i];
    }
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
        return 2;
    }
    okv_backend_entry_fn entry = (okv_backend_entry_fn)dlsym(lib, OKV_BACKEND_ENTRY_NAME);
    if (!entry || entry(OKV_BACKEND_IFACE_VERSION, &O) != OKV_SUCCESS) {
        fprintf(stderr, "no entry point\n");
        return 2;
    }
    const okv_backend_ops_t *bad = NULL;
    verdict(entry(OKV_BACKEND_IFACE_VERSION + 1, &bad) == OKV_ERROR_VERSION_MISMATCH && !bad, "version mismatch",
            "refused");
    R = okv_ref_backend_ops();
    int32_t ndev = 0;
    char reason[256] = "";
    okv_status_t ps = O->probe(&ndev, reason, sizeof reason);
    printf("probe: status %d, %d device(s): %s\n", (int)ps, ndev, reason);
    if (ps != OKV_SUCCESS) return 3;
    okv_device_info_t di;
    memset(&di, 0, sizeof di);
    di.size = sizeof di;
    if (O->device_info(0, &di) == OKV_SUCCESS)
        printf("device 0: %s | %s | driver %s | %d CUs | warp %d | fp64 %d fp16 %d subgroups %d\n", di.name, di.vendor,
               di.driver, di.compute_units, di.warp_size, di.has_fp64, di.has_fp16, di.has_subgroups);
    okv_err_t err = {{0}};
    if (O->create(0, NULL, &OS, &err) != OKV_SUCCESS) {
        fprintf(stderr, "create: %s\n", err.msg);
        return 2;
    }
    CHECK_OK(R->create(0, NULL, &RS, &err), "ref create");

    /* rotate: kernel path (few rows) and GEMM path (>= 256 rows x heads) */
    test_rotate(3, 4, 64, OKV_DTYPE_F32, OKV_DTYPE_F32, 0, 1, 0, 0, 0);
    test_rotate(5, 8, 128, OKV_DTYPE_BF16, OKV_DTYPE_F32, 1, 2, 1, 0, 0);
    test_rotate(2, 2, 256, OKV_DTYPE_F16, OKV_DTYPE_F16, 1, 1, 0, 1, 0);
    test_rotate(64, 8, 128, OKV_DTYPE_F32, OKV_DTYPE_F32, 0, 1, 0, 0, 0);
    test_rotate(40, 8, 64, OKV_DTYPE_BF16, OKV_DTYPE_BF16, 1, 4, 1, 0, 0);
    test_rotate(33, 8, 128, OKV_DTYPE_F32, OKV_DTYPE_F32, 1, 1, 0, 1, 0);
    test_rotate(6, 4, 128, OKV_DTYPE_BF16, OKV_DTYPE_F32, 1, 2, 0, 0, 1);
    test_rotate(70, 4, 64, OKV_DTYPE_F32, OKV_DTYPE_F32, 0, 1, 0, 0, 1);

    /* moments: kernel path and GEMM path, f32 / f64 accumulators, weights */
    test_moments(7, 4, 64, 2, OKV_DTYPE_F32, OKV_DTYPE_F64, 1);
    test_moments(9, 2, 128, 1, OKV_DTYPE_BF16, OKV_DTYPE_F32, 0);
    test_moments(300, 4, 64, 4, OKV_DTYPE_F32, OKV_DTYPE_F64, 0);
    test_moments(260, 2, 128, 1, OKV_DTYPE_F16, OKV_DTYPE_F32, 1);

    /* cache scenarios */
    {
        int len[3] = {5, 40, 150};
        scenario(3, 8, 2, 64, 64, OKV_DTYPE_F16, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 16, 32, 8, 16, len, quick ? 10 : 20,
                 0, OKV_DTYPE_F32);
    }
    {
        int len[2] = {700, 97};
        scenario(2, 12, 4, 128, 32, OKV_DTYPE_F32, OKV_QUANT_LLOYD_MAX, OKV_CLIP_BISECT, 64, 256, 8, 16, len, 9, 1,
                 OKV_DTYPE_BF16);
    }
    if (!quick) {
        int len[2] = {300, 81};
        scenario(2, 4, 1, 256, 64, OKV_DTYPE_BF16, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 4, 64, 4, 8, len, 6, 0,
                 OKV_DTYPE_F16);
        int len2[4] = {0, 1, 2000, 33};
        scenario(4, 32, 8, 128, 128, OKV_DTYPE_F16, OKV_QUANT_UNIFORM, OKV_CLIP_SORT, 64, 256, 8, 16, len2, 3, 0,
                 OKV_DTYPE_F32);
    }

    O->destroy(OS);
    R->destroy(RS);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
