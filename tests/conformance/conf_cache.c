/* conf_cache.c - fenced device buffers, the host model of the paged cache, the host
 * INT2 quantizer (core/format/okv_format.h) and the tie-aware row comparison. */
#include "conf_cache.h"

#include "okv_format.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- run, buffers -- */
void run_fail(run_t *r, const char *fmt, ...)
{
    r->failed = 1;
    size_t n = strlen(r->msg);
    if (n + 4 >= r->cap) return;
    if (n > 0) {
        memcpy(r->msg + n, "; ", 3);
        n += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg + n, r->cap - n, fmt, ap);
    va_end(ap);
}

static unsigned char fence_byte(size_t i) { return (unsigned char)(0xa5u ^ (unsigned)(i * 29u)); }

static dbuf_t *dbuf_make(run_t *r, okv_context_t *ctx, const char *name, size_t bytes, const void *init, size_t post)
{
    if (r->nbufs == CONF_MAX_BUFS) {
        run_fail(r, "runner: too many buffers");
        return NULL;
    }
    dbuf_t *d = &r->bufs[r->nbufs];
    memset(d, 0, sizeof *d);
    d->ctx = ctx;
    d->bytes = bytes;
    d->post = post;
    snprintf(d->name, sizeof d->name, "%s", name);
    okv_status_t st = okv_buffer_create(ctx, CONF_GUARD + bytes + post, &d->b);
    if (st != OKV_SUCCESS) {
        run_fail(r, "okv_buffer_create(%s, %zu) -> %s: %s", name, CONF_GUARD + bytes + post, okv_status_string(st),
                 okv_context_last_error(ctx));
        return NULL;
    }
    r->nbufs++;
    unsigned char fence[CONF_GUARD];
    for (size_t i = 0; i < CONF_GUARD; ++i)
        fence[i] = fence_byte(i);
    st = okv_buffer_write(ctx, d->b, 0, fence, CONF_GUARD);
    if (st == OKV_SUCCESS && post) st = okv_buffer_write(ctx, d->b, CONF_GUARD + bytes, fence, post);
    if (st != OKV_SUCCESS) {
        run_fail(r, "okv_buffer_write(%s fence) -> %s", name, okv_status_string(st));
        return NULL;
    }
    if (init) {
        if (!dbuf_put(r, d, init, bytes)) return NULL;
    } else if (!dbuf_poison(r, d)) {
        return NULL;
    }
    return d;
}

dbuf_t *dbuf_new(run_t *r, okv_context_t *ctx, const char *name, size_t bytes, const void *init)
{
    return dbuf_make(r, ctx, name, bytes, init, CONF_GUARD);
}

dbuf_t *dbuf_new_short(run_t *r, okv_context_t *ctx, const char *name, size_t bytes)
{
    return dbuf_make(r, ctx, name, bytes, NULL, 0);
}

okv_ref_t dref(const dbuf_t *d)
{
    okv_ref_t ref = {NULL, 0};
    if (d) {
        ref.buffer = d->b;
        ref.offset = CONF_GUARD;
    }
    return ref;
}

int dbuf_put(run_t *r, dbuf_t *d, const void *src, size_t bytes)
{
    if (bytes == 0) return 1;
    okv_status_t st = okv_buffer_write(d->ctx, d->b, CONF_GUARD, src, bytes);
    if (st != OKV_SUCCESS) {
        run_fail(r, "okv_buffer_write(%s) -> %s: %s", d->name, okv_status_string(st), okv_context_last_error(d->ctx));
        return 0;
    }
    return 1;
}

int dbuf_get(run_t *r, const dbuf_t *d, void *dst, size_t bytes)
{
    if (bytes == 0) return 1;
    okv_status_t st = okv_buffer_read(d->ctx, d->b, CONF_GUARD, dst, bytes);
    if (st != OKV_SUCCESS) {
        run_fail(r, "okv_buffer_read(%s) -> %s: %s", d->name, okv_status_string(st), okv_context_last_error(d->ctx));
        return 0;
    }
    return 1;
}

int dbuf_poison(run_t *r, dbuf_t *d)
{
    if (d->bytes == 0) return 1;
    unsigned char *p = malloc(d->bytes);
    if (!p) {
        run_fail(r, "runner: out of host memory");
        return 0;
    }
    memset(p, 0xff, d->bytes);
    int ok = dbuf_put(r, d, p, d->bytes);
    free(p);
    return ok;
}

int run_check_fences(run_t *r)
{
    int ok = 1;
    unsigned char fence[2][CONF_GUARD];
    for (int k = 0; k < r->nbufs; ++k) {
        dbuf_t *d = &r->bufs[k];
        if (okv_buffer_read(d->ctx, d->b, 0, fence[0], CONF_GUARD) != OKV_SUCCESS ||
            (d->post && okv_buffer_read(d->ctx, d->b, CONF_GUARD + d->bytes, fence[1], d->post) != OKV_SUCCESS)) {
            run_fail(r, "okv_buffer_read(%s fences) failed", d->name);
            ok = 0;
            continue;
        }
        for (int side = 0; side < 2; ++side) {
            for (size_t i = 0; i < (side ? d->post : CONF_GUARD); ++i) {
                if (fence[side][i] != fence_byte(i)) {
                    run_fail(r, "guard bytes %s buffer %s overwritten (byte %zu)", side ? "after" : "before", d->name,
                             side ? i : CONF_GUARD - i);
                    ok = 0;
                    break;
                }
            }
        }
    }
    return ok;
}

void run_free(run_t *r)
{
    for (int k = 0; k < r->nbufs; ++k)
        okv_buffer_destroy(r->bufs[k].b);
    r->nbufs = 0;
}

/* ------------------------------------------------------------- host cache -- */
static void shuffle(conf_rng_t *rng, int *v, int n)
{
    for (int i = n - 1; i > 0; --i) {
        int j = conf_rng_int(rng, i + 1);
        int t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

int hc_init(hcache_t *h, const conf_case_t *c, const int *cap_int2)
{
    memset(h, 0, sizeof *h);
    okv_cache_desc_init(&h->desc);
    h->desc.n_q_heads = c->hq;
    h->desc.n_kv_heads = c->hkv;
    h->desc.head_dim = c->d;
    h->desc.group_size = c->g;
    h->desc.meta_dtype = c->meta;
    h->desc.quantizer = c->quant;
    h->desc.clip_mode = c->clip;
    h->desc.sink_tokens = c->s0;
    h->desc.recent_tokens = c->w;
    h->desc.flush_interval = c->f;
    h->desc.page_size = c->page;
    h->batch = c->batch;
    h->hkv = c->hkv;
    h->d = c->d;
    h->g = c->g;
    h->ng = c->d / c->g;
    h->P = c->page;
    h->s0 = c->s0;
    h->w = c->w;
    h->f = c->f;
    h->meta = (int)c->meta;
    h->msz = okv_meta_size(h->meta);
    h->quant = (int)c->quant;
    h->clip = (int)c->clip;
    h->kr = c->noclip ? 1.0f : 0.96f;
    h->vr = c->noclip ? 1.0f : 0.92f;
    h->ipb = okv_int2_page_bytes(h->hkv, h->P, h->d, h->g, h->meta);
    h->bpb = okv_bf16_page_bytes(h->hkv, h->P, h->d);
    h->bppseq = (okv_bf16_tier_slots(h->s0, h->w, h->f) + h->P - 1) / h->P;
    h->seq_len = calloc((size_t)h->batch, sizeof(int));
    h->int2_len = calloc((size_t)h->batch, sizeof(int));
    h->tpages = calloc((size_t)h->batch, sizeof(int));
    if (!h->seq_len || !h->int2_len || !h->tpages) return 0;
    int total = 0;
    for (int b = 0; b < h->batch; ++b) {
        int p = (cap_int2[b] + h->P - 1) / h->P;
        if (p > h->max_pages) h->max_pages = p;
        total += p;
    }
    h->n_ipool = total + 2; /* two pages nobody owns */
    h->n_bpool = h->batch * h->bppseq + 1;
    h->pages = calloc((size_t)(h->batch * (h->max_pages ? h->max_pages : 1)), sizeof(int));
    h->bpages = calloc((size_t)(h->batch * h->bppseq), sizeof(int));
    h->ipool = malloc((size_t)h->n_ipool * h->ipb);
    h->bpool = malloc((size_t)h->n_bpool * h->bpb);
    h->bval = malloc((size_t)h->n_bpool * h->bpb / 2 * sizeof(float));
    h->bunc = calloc((size_t)h->n_bpool * h->bpb / 2 / (size_t)h->d, sizeof(float));
    int *perm = malloc((size_t)(h->n_ipool > h->n_bpool ? h->n_ipool : h->n_bpool) * sizeof(int));
    if (!h->pages || !h->bpages || !h->ipool || !h->bpool || !h->bval || !h->bunc || !perm) {
        free(perm);
        return 0;
    }
    memset(h->ipool, 0xff, (size_t)h->n_ipool * h->ipb);
    memset(h->bpool, 0xff, (size_t)h->n_bpool * h->bpb);
    for (size_t i = 0; i < (size_t)h->n_bpool * h->bpb / 2; ++i)
        h->bval[i] = NAN;
    /* pages scattered over the pools (deterministic from the case seed) */
    conf_rng_t rng;
    conf_rng_seed(&rng, c->seed ^ 0x5eedull);
    for (int i = 0; i < h->n_ipool; ++i)
        perm[i] = i;
    shuffle(&rng, perm, h->n_ipool);
    int k = 0;
    for (int b = 0; b < h->batch; ++b) {
        int p = (cap_int2[b] + h->P - 1) / h->P;
        for (int j = 0; j < p; ++j)
            h->pages[b * h->max_pages + j] = perm[k++];
    }
    for (int i = 0; i < h->n_bpool; ++i)
        perm[i] = i;
    shuffle(&rng, perm, h->n_bpool);
    for (int i = 0; i < h->batch * h->bppseq; ++i)
        h->bpages[i] = perm[i];
    free(perm);
    return 1;
}

void hc_free(hcache_t *h)
{
    free(h->seq_len);
    free(h->int2_len);
    free(h->tpages);
    free(h->pages);
    free(h->bpages);
    free(h->ipool);
    free(h->bpool);
    free(h->bval);
    free(h->bunc);
    memset(h, 0, sizeof *h);
}

static void *dup(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    if (q && n) memcpy(q, p, n);
    return q;
}

int hc_copy(hcache_t *dst, const hcache_t *src)
{
    *dst = *src;
    size_t belems = (size_t)src->n_bpool * src->bpb / 2;
    dst->seq_len = dup(src->seq_len, (size_t)src->batch * sizeof(int));
    dst->int2_len = dup(src->int2_len, (size_t)src->batch * sizeof(int));
    dst->tpages = dup(src->tpages, (size_t)src->batch * sizeof(int));
    dst->pages = dup(src->pages, (size_t)(src->batch * (src->max_pages ? src->max_pages : 1)) * sizeof(int));
    dst->bpages = dup(src->bpages, (size_t)(src->batch * src->bppseq) * sizeof(int));
    dst->ipool = dup(src->ipool, (size_t)src->n_ipool * src->ipb);
    dst->bpool = dup(src->bpool, (size_t)src->n_bpool * src->bpb);
    dst->bval = dup(src->bval, belems * sizeof(float));
    dst->bunc = dup(src->bunc, belems / (size_t)src->d * sizeof(float));
    return dst->seq_len && dst->int2_len && dst->tpages && dst->pages && dst->bpages && dst->ipool && dst->bpool &&
           dst->bval && dst->bunc;
}

/* SPEC section 4: once the recent window would reach W + F rows, the oldest are
 * demoted so that exactly W stay (written from the spec, not from the header). */
int hc_int2_after(const hcache_t *h, int seq_len, int int2_len, int n_new)
{
    int t = seq_len + n_new;
    int recent = t - h->s0 - int2_len;
    if (t > h->s0 && recent >= h->w + h->f) return t - h->s0 - h->w;
    return int2_len;
}

int hc_state_int2(const hcache_t *h, conf_rng_t *rng, int t)
{
    int steps = conf_rng_int(rng, 2 * h->f + 2);
    if (steps > t) steps = t;
    int len = t - steps, i = hc_int2_after(h, 0, 0, len);
    for (int s = 0; s < steps; ++s)
        i = hc_int2_after(h, len++, i, 1);
    return i;
}

int hc_bf16_slot(const hcache_t *h, int pos) { return pos < h->s0 ? pos : h->s0 + (pos - h->s0) % (h->w + h->f); }

size_t hc_bf16_row_index(const hcache_t *h, int b, int slot, int kv, int head)
{
    int page = h->bpages[b * h->bppseq + slot / h->P];
    return (size_t)page * (h->bpb / 2) + okv_bf16_row_elem(h->hkv, h->P, h->d, kv, head, slot % h->P);
}

uint16_t *hc_bf16_row(const hcache_t *h, uint16_t *pool, int b, int slot, int kv, int head)
{
    return pool + hc_bf16_row_index(h, b, slot, kv, head);
}

size_t hc_int2_codes_at(const hcache_t *h, int b, int j, int kv, int head)
{
    int page = h->pages[b * h->max_pages + j / h->P];
    return (size_t)page * h->ipb + okv_int2_codes_offset(h->hkv, h->P, h->d, kv, head, j % h->P);
}

size_t hc_int2_meta_at(const hcache_t *h, int b, int j, int kv, int head)
{
    int page = h->pages[b * h->max_pages + j / h->P];
    return (size_t)page * h->ipb + okv_int2_meta_offset(h->hkv, h->P, h->d, h->g, h->meta, kv, head, j % h->P);
}

static void clip_row(const float *x, int d, float tau, float *xc)
{
    for (int i = 0; i < d; ++i)
        xc[i] = tau >= 0.0f ? fminf(fmaxf(x[i], -tau), tau) : x[i];
}

static void store_meta(int meta, float v, uint8_t *dst) { conf_store((okv_dtype_t)meta, &v, dst, 1); }
static float load_meta(int meta, const uint8_t *src)
{
    float v;
    conf_load((okv_dtype_t)meta, src, &v, 1);
    return v;
}

/* Codes of a clipped row against given metadata (scale, lo per group). */
static void row_codes(const hcache_t *h, const float *xc, const float *scale, const float *lo, int *code)
{
    for (int i = 0; i < h->d; ++i)
        code[i] = okv_group_code(xc[i], scale[i / h->g], lo[i / h->g], h->quant);
}

static void pack_codes(int d, const int *code, uint8_t *out)
{
    int q = d / 4;
    for (int i = 0; i < q; ++i)
        out[i] = okv_pack4(code[i], code[i + q], code[i + 2 * q], code[i + 3 * q]);
}

static int unpack_code(int d, const uint8_t *codes, int i) { return okv_unpack_code(codes[i % (d / 4)], i / (d / 4)); }

int hc_quant_row(const hcache_t *h, const float *x, float ratio, uint8_t *codes, uint8_t *meta)
{
    float xc[OKV_FMT_MAX_HEAD_DIM], scale[OKV_FMT_MAX_HEAD_DIM], lo[OKV_FMT_MAX_HEAD_DIM];
    int code[OKV_FMT_MAX_HEAD_DIM];
    clip_row(x, h->d, okv_clip_tau(x, h->d, ratio, h->clip), xc);
    for (int gi = 0; gi < h->ng; ++gi) {
        if (!okv_group_meta(xc + gi * h->g, h->g, h->quant, h->meta, &scale[gi], &lo[gi])) return 0;
        store_meta(h->meta, scale[gi], meta + (size_t)(2 * gi) * h->msz);
        store_meta(h->meta, lo[gi], meta + (size_t)(2 * gi + 1) * h->msz);
    }
    row_codes(h, xc, scale, lo, code);
    pack_codes(h->d, code, codes);
    return 1;
}

float hc_dequant(const hcache_t *h, const uint8_t *codes, const uint8_t *meta, int i)
{
    int gi = i / h->g;
    float scale = load_meta(h->meta, meta + (size_t)(2 * gi) * h->msz);
    float lo = load_meta(h->meta, meta + (size_t)(2 * gi + 1) * h->msz);
    return okv_dequant(unpack_code(h->d, codes, i), scale, lo);
}

int hc_fill(hcache_t *h, conf_rng_t *rng, int b, int t, int i)
{
    h->seq_len[b] = t;
    h->int2_len[b] = i;
    h->tpages[b] = (i + h->P - 1) / h->P;
    if (t == 0) return 1;
    /* rows are stored rotated: rotate structured activations when that is cheap,
     * else store the structured rows as they are (the "no rotation" worst case) */
    int rotate = (double)t * h->hkv * h->d * h->d <= 4e7;
    int chunk = 1024;
    float *rk = NULL, *rows = malloc((size_t)chunk * h->hkv * h->d * sizeof(float));
    float *tmp = malloc((size_t)h->d * sizeof(float));
    conf_actgen_t gen[2];
    int ok = rows && tmp && conf_actgen_init(&gen[0], rng, h->hkv, h->d, 8.0f) &&
             conf_actgen_init(&gen[1], rng, h->hkv, h->d, 3.0f);
    if (ok && rotate) {
        rk = malloc((size_t)2 * h->d * h->d * sizeof(float));
        ok = rk != NULL;
        if (ok) {
            conf_random_rotation(rng, h->d, rk);
            conf_random_rotation(rng, h->d, rk + (size_t)h->d * h->d);
        }
    }
    for (int kv = 0; ok && kv < 2; ++kv) {
        for (int p0 = 0; ok && p0 < t; p0 += chunk) {
            int n = t - p0 < chunk ? t - p0 : chunk;
            conf_actgen_rows(&gen[kv], rng, n, rows);
            for (int p = p0; ok && p < p0 + n; ++p) {
                for (int hd = 0; hd < h->hkv; ++hd) {
                    float *x = rows + ((size_t)(p - p0) * h->hkv + hd) * h->d;
                    if (rk) {
                        const float *R = rk + (size_t)kv * h->d * h->d;
                        for (int j = 0; j < h->d; ++j) {
                            double acc = 0.0;
                            for (int m = 0; m < h->d; ++m)
                                acc += (double)x[m] * R[(size_t)m * h->d + j];
                            tmp[j] = (float)acc;
                        }
                        memcpy(x, tmp, (size_t)h->d * sizeof(float));
                    }
                    if (p >= h->s0 && p < h->s0 + i) {
                        int j = p - h->s0;
                        if (!hc_quant_row(h, x, kv ? h->vr : h->kr, h->ipool + hc_int2_codes_at(h, b, j, kv, hd),
                                          h->ipool + hc_int2_meta_at(h, b, j, kv, hd)))
                            ok = 0;
                    } else {
                        size_t e = hc_bf16_row_index(h, b, hc_bf16_slot(h, p), kv, hd);
                        for (int c = 0; c < h->d; ++c) {
                            h->bpool[e + c] = okv_f32_to_bf16(x[c]);
                            h->bval[e + c] = okv_bf16_to_f32(h->bpool[e + c]);
                        }
                        h->bunc[e / h->d] = 0.0f;
                    }
                }
            }
        }
    }
    if (rows && tmp) {
        conf_actgen_free(&gen[0]);
        conf_actgen_free(&gen[1]);
    }
    free(rk);
    free(rows);
    free(tmp);
    return ok;
}

/* ---------------------------------------------------------------- upload -- */
void hc_build_tables(const hcache_t *h, int32_t *iptr, int32_t *iidx, int32_t *bptr, int32_t *bidx)
{
    iptr[0] = 0;
    for (int b = 0; b < h->batch; ++b) {
        for (int j = 0; j < h->tpages[b]; ++j)
            iidx[iptr[b] + j] = h->pages[b * h->max_pages + j];
        iptr[b + 1] = iptr[b] + h->tpages[b];
    }
    bptr[0] = 0;
    for (int b = 0; b < h->batch; ++b) {
        for (int j = 0; j < h->bppseq; ++j)
            bidx[bptr[b] + j] = h->bpages[b * h->bppseq + j];
        bptr[b + 1] = bptr[b] + h->bppseq;
    }
}

int hc_upload(run_t *r, okv_context_t *ctx, const hcache_t *h, dcache_t *dc)
{
    memset(dc, 0, sizeof *dc);
    int B = h->batch;
    int32_t *iptr = malloc((size_t)(B + 1) * 4), *bptr = malloc((size_t)(B + 1) * 4);
    int32_t *iidx = malloc((size_t)(B * (h->max_pages + 1)) * 4), *bidx = malloc((size_t)(B * h->bppseq) * 4);
    int32_t *sl = malloc((size_t)B * 4), *il = malloc((size_t)B * 4);
    int ok = iptr && bptr && iidx && bidx && sl && il;
    if (ok) {
        hc_build_tables(h, iptr, iidx, bptr, bidx);
        for (int b = 0; b < B; ++b)
            sl[b] = h->seq_len[b], il[b] = h->int2_len[b];
        /* the INT2 index array is sized for the capacity: later steps grow the table */
        int cap = 0;
        for (int b = 0; b < B; ++b)
            cap += (h->max_pages > h->tpages[b] ? h->max_pages : h->tpages[b]);
        dc->n_iidx = iptr[B];
        int32_t *iidx_full = calloc((size_t)(cap + 1), 4);
        ok = iidx_full != NULL;
        if (ok) {
            memcpy(iidx_full, iidx, (size_t)iptr[B] * 4);
            dc->ipool = dbuf_new(r, ctx, "int2_pool", (size_t)h->n_ipool * h->ipb, h->ipool);
            dc->bpool = dbuf_new(r, ctx, "bf16_pool", (size_t)h->n_bpool * h->bpb, h->bpool);
            dc->iptr = dbuf_new(r, ctx, "int2_indptr", (size_t)(B + 1) * 4, iptr);
            dc->iidx = dbuf_new(r, ctx, "int2_indices", (size_t)(cap > 0 ? cap : 1) * 4, iidx_full);
            dc->bptr = dbuf_new(r, ctx, "bf16_indptr", (size_t)(B + 1) * 4, bptr);
            dc->bidx = dbuf_new(r, ctx, "bf16_indices", (size_t)(B * h->bppseq) * 4, bidx);
            dc->slen = dbuf_new(r, ctx, "seq_lens", (size_t)B * 4, sl);
            dc->ilen = dbuf_new(r, ctx, "int2_lens", (size_t)B * 4, il);
            ok = dc->ipool && dc->bpool && dc->iptr && dc->iidx && dc->bptr && dc->bidx && dc->slen && dc->ilen;
            free(iidx_full);
        }
    }
    if (ok) {
        okv_cache_view_t *v = &dc->view;
        v->desc = &h->desc;
        v->batch = B;
        v->int2_pool = dref(dc->ipool);
        v->int2_pool_pages = h->n_ipool;
        v->bf16_pool = dref(dc->bpool);
        v->bf16_pool_pages = h->n_bpool;
        v->int2_indptr = dref(dc->iptr);
        v->int2_indices = dref(dc->iidx);
        v->bf16_indptr = dref(dc->bptr);
        v->bf16_indices = dref(dc->bidx);
        v->seq_lens = dref(dc->slen);
        v->int2_lens = dref(dc->ilen);
    } else if (!r->failed) {
        run_fail(r, "runner: out of host memory");
    }
    free(iptr);
    free(bptr);
    free(iidx);
    free(bidx);
    free(sl);
    free(il);
    return ok;
}

int hc_upload_table(run_t *r, const hcache_t *h, dcache_t *dc)
{
    int B = h->batch;
    int32_t *iptr = malloc((size_t)(B + 1) * 4), *iidx = malloc((size_t)(B * (h->max_pages + 1)) * 4);
    int32_t *bptr = malloc((size_t)(B + 1) * 4), *bidx = malloc((size_t)(B * h->bppseq) * 4);
    int ok = iptr && iidx && bptr && bidx;
    if (ok) {
        hc_build_tables(h, iptr, iidx, bptr, bidx);
        dc->n_iidx = iptr[B];
        ok = dbuf_put(r, dc->iptr, iptr, (size_t)(B + 1) * 4) && dbuf_put(r, dc->iidx, iidx, (size_t)iptr[B] * 4);
    }
    free(iptr);
    free(iidx);
    free(bptr);
    free(bidx);
    return ok;
}

/* ------------------------------------------------------- tie-aware compare -- */

/* Thresholds a bisection could end on when |x| is known only to within unc:
 * branches wherever a comparison could go either way. */
static void bisect_dfs(const float *ax, int d, int allowed, double unc, int step, float lo, float hi, float *out,
                       int *n, int max)
{
    if (*n >= max) return;
    if (step == OKV_FMT_BISECT_STEPS) {
        out[(*n)++] = hi;
        return;
    }
    float mid = 0.5f * (lo + hi);
    int cnt_min = 0, cnt_max = 0;
    for (int i = 0; i < d; ++i) {
        cnt_min += ax[i] > mid + 2.0 * unc;
        cnt_max += ax[i] > mid - 2.0 * unc;
    }
    int a = cnt_min > allowed, b = cnt_max > allowed;
    /* the model's own decision first */
    int cnt = 0;
    for (int i = 0; i < d; ++i)
        cnt += ax[i] > mid;
    int own = cnt > allowed;
    if (own)
        bisect_dfs(ax, d, allowed, unc, step + 1, mid, hi, out, n, max);
    else
        bisect_dfs(ax, d, allowed, unc, step + 1, lo, mid, out, n, max);
    if (a != b) {
        if (own)
            bisect_dfs(ax, d, allowed, unc, step + 1, lo, mid, out, n, max);
        else
            bisect_dfs(ax, d, allowed, unc, step + 1, mid, hi, out, n, max);
    }
}

static int tau_candidates(const hcache_t *h, const float *x, float ratio, double unc, float *out, int max)
{
    out[0] = okv_clip_tau(x, h->d, ratio, h->clip);
    if (h->clip != OKV_FMT_CLIP_BISECT || out[0] < 0.0f || unc <= 0.0) return 1;
    float ax[OKV_FMT_MAX_HEAD_DIM], hi = 0.0f;
    for (int i = 0; i < h->d; ++i) {
        ax[i] = fabsf(x[i]);
        hi = fmaxf(hi, ax[i]);
    }
    int k = (int)floor(ratio * (float)h->d);
    int n = 0;
    bisect_dfs(ax, h->d, h->d - k, unc, 0, 0.0f, hi, out, &n, max);
    return n;
}

static double meta_ulp(int meta, double v)
{
    double a = fabs(v);
    if (meta == OKV_FMT_META_F16) return fmax(a / 1024.0, 5.960464477539063e-08);
    if (meta == OKV_FMT_META_BF16) return fmax(a / 128.0, 1e-38);
    return fmax(a * 1.2e-7, 1e-45);
}

/* One candidate threshold: meta within tolerance, every code consistent with the
 * backend's own metadata. Returns 1 if acceptable. */
static int check_candidate(const hcache_t *h, const float *x, double unc, float tau, const uint8_t *gc,
                           const uint8_t *gm, const uint8_t *ec, int *ties, char *why, size_t cap)
{
    float xc[OKV_FMT_MAX_HEAD_DIM], scale[OKV_FMT_MAX_HEAD_DIM], lo[OKV_FMT_MAX_HEAD_DIM];
    float gscale[OKV_FMT_MAX_HEAD_DIM], glo[OKV_FMT_MAX_HEAD_DIM];
    clip_row(x, h->d, tau, xc);
    double vunc = 2.0 * unc + 1e-6 * fabs((double)tau);
    for (int gi = 0; gi < h->ng; ++gi) {
        if (!okv_group_meta(xc + gi * h->g, h->g, h->quant, h->meta, &scale[gi], &lo[gi])) {
            snprintf(why, cap, "model metadata overflows");
            return 0;
        }
        gscale[gi] = load_meta(h->meta, gm + (size_t)(2 * gi) * h->msz);
        glo[gi] = load_meta(h->meta, gm + (size_t)(2 * gi + 1) * h->msz);
        double mag = fabs((double)lo[gi]) + 3.0 * fabs((double)scale[gi]);
        double ts = meta_ulp(h->meta, scale[gi]) * 1.01 + 2.0 * vunc + 1e-6 * mag;
        double tl = meta_ulp(h->meta, lo[gi]) * 1.01 + 2.0 * vunc + 1e-6 * mag;
        if (h->quant == OKV_FMT_QUANT_LLOYD_MAX) ts *= 2.0, tl += 3.0 * ts;
        if (!(fabs((double)gscale[gi] - scale[gi]) <= ts) || !(fabs((double)glo[gi] - lo[gi]) <= tl)) {
            snprintf(why, cap, "group %d metadata (scale %.9g, lo %.9g), expected (%.9g, %.9g)", gi, (double)gscale[gi],
                     (double)glo[gi], (double)scale[gi], (double)lo[gi]);
            return 0;
        }
    }
    int t = 0;
    for (int i = 0; i < h->d; ++i) {
        int cg = unpack_code(h->d, gc, i), ce = unpack_code(h->d, ec, i);
        if (cg == ce) continue;
        int gi = i / h->g;
        int c0 = okv_group_code((float)(xc[i] - vunc), gscale[gi], glo[gi], h->quant);
        int c1 = okv_group_code((float)(xc[i] + vunc), gscale[gi], glo[gi], h->quant);
        if (cg < c0 || cg > c1) {
            snprintf(why, cap, "channel %d code %d, expected %d (value %.9g, group scale %.9g lo %.9g)", i, cg, ce,
                     (double)xc[i], (double)gscale[gi], (double)glo[gi]);
            return 0;
        }
        ++t;
    }
    *ties = t;
    return 1;
}

int hc_check_row(run_t *r, const hcache_t *h, const float *x, double unc, float ratio, const uint8_t *got_codes,
                 const uint8_t *got_meta, const uint8_t *exp_codes, const uint8_t *exp_meta, int *ties,
                 const char *where)
{
    size_t mbytes = (size_t)h->ng * 2 * h->msz;
    *ties = 0;
    if (memcmp(got_codes, exp_codes, (size_t)h->d / 4) == 0 && memcmp(got_meta, exp_meta, mbytes) == 0) return 1;
    float taus[16];
    int nt = tau_candidates(h, x, ratio, unc, taus, 16);
    char why[256] = "", first[256] = "";
    for (int k = 0; k < nt; ++k) {
        if (check_candidate(h, x, unc, taus[k], got_codes, got_meta, exp_codes, ties, why, sizeof why)) return 1;
        if (k == 0) memcpy(first, why, sizeof first);
    }
    run_fail(r, "%s: %s", where, first);
    return 0;
}

/* ------------------------------------------------------------ ref dequant -- */
int ref_dequantize(run_t *r, const hcache_t *h, float **k, float **v, int **rowstart)
{
    *k = *v = NULL;
    *rowstart = malloc((size_t)(h->batch + 1) * sizeof(int));
    int32_t *optr = malloc((size_t)(h->batch + 1) * 4);
    if (!*rowstart || !optr) {
        free(optr);
        run_fail(r, "runner: out of host memory");
        return 0;
    }
    optr[0] = 0;
    for (int b = 0; b < h->batch; ++b)
        optr[b + 1] = optr[b] + h->seq_len[b];
    for (int b = 0; b <= h->batch; ++b)
        (*rowstart)[b] = optr[b];
    int rows = optr[h->batch];
    size_t elems = (size_t)rows * h->hkv * h->d;
    int nb0 = r->nbufs;
    dcache_t dc;
    int ok = hc_upload(r, r->s->ref, h, &dc);
    dbuf_t *dptr = ok ? dbuf_new(r, r->s->ref, "ref.out_indptr", (size_t)(h->batch + 1) * 4, optr) : NULL;
    dbuf_t *dk = ok ? dbuf_new(r, r->s->ref, "ref.k_out", elems * 4, NULL) : NULL;
    dbuf_t *dv = ok ? dbuf_new(r, r->s->ref, "ref.v_out", elems * 4, NULL) : NULL;
    free(optr);
    if (!dptr || !dk || !dv) return 0;
    okv_dequantize_params_t p;
    okv_dequantize_params_init(&p);
    p.cache = dc.view;
    p.out_indptr = dref(dptr);
    p.out_rows = rows;
    p.k_out = dref(dk);
    p.v_out = dref(dv);
    p.out_dtype = OKV_DTYPE_F32;
    okv_status_t st = okv_dequantize(r->s->ref, &p);
    if (st != OKV_SUCCESS) {
        run_fail(r, "ref backend's dequantize (the attention oracle's K/V) -> %s: %s", okv_status_string(st),
                 okv_context_last_error(r->s->ref));
        return 0;
    }
    *k = malloc(elems * 4 + 4);
    *v = malloc(elems * 4 + 4);
    if (!*k || !*v) {
        run_fail(r, "runner: out of host memory");
        return 0;
    }
    ok = dbuf_get(r, dk, *k, elems * 4) && dbuf_get(r, dv, *v, elems * 4);
    /* these buffers live on the ref context: check their fences and release them now */
    if (ok) {
        run_t tmp = *r;
        tmp.nbufs = 0;
        for (int i = nb0; i < r->nbufs; ++i)
            tmp.bufs[tmp.nbufs++] = r->bufs[i];
        if (!run_check_fences(&tmp)) {
            r->failed = 1;
            ok = 0;
        }
        run_free(&tmp);
        r->nbufs = nb0;
    }
    for (size_t i = 0; ok && i < elems; ++i) {
        if (!isfinite((*k)[i]) || !isfinite((*v)[i])) {
            run_fail(r, "ref backend's dequantize left a non-finite value at element %zu", i);
            ok = 0;
        }
    }
    return ok;
}
