/* test_ref_util.c - see test_ref_util.h. */
#include "test_ref_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

uint64_t tu_next(tu_rng_t *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double tu_uniform(tu_rng_t *r) { return (double)(tu_next(r) >> 11) * (1.0 / 9007199254740992.0); }

double tu_normal(tu_rng_t *r)
{
    double u1 = tu_uniform(r), u2 = tu_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void tu_fill_normal(tu_rng_t *r, float *x, size_t n, double sigma)
{
    for (size_t i = 0; i < n; ++i)
        x[i] = (float)(sigma * tu_normal(r));
}

void tu_random_orthogonal(tu_rng_t *r, int d, float *out)
{
    double *a = (double *)tu_calloc((size_t)d * d, sizeof(double));
    for (int i = 0; i < d * d; ++i)
        a[i] = tu_normal(r);
    /* rows of a, modified Gram-Schmidt twice for orthogonality at double precision */
    for (int pass = 0; pass < 2; ++pass)
        for (int i = 0; i < d; ++i) {
            double *ai = a + (size_t)i * d;
            for (int j = 0; j < i; ++j) {
                const double *aj = a + (size_t)j * d;
                double dot = 0.0;
                for (int t = 0; t < d; ++t)
                    dot += ai[t] * aj[t];
                for (int t = 0; t < d; ++t)
                    ai[t] -= dot * aj[t];
            }
            double nrm = 0.0;
            for (int t = 0; t < d; ++t)
                nrm += ai[t] * ai[t];
            nrm = sqrt(nrm);
            for (int t = 0; t < d; ++t)
                ai[t] /= nrm;
        }
    for (int i = 0; i < d * d; ++i)
        out[i] = (float)a[i];
    free(a);
}

void tu_identity(int d, float *out)
{
    for (int i = 0; i < d * d; ++i)
        out[i] = (i / d == i % d) ? 1.0f : 0.0f;
}

void tu_permutation(tu_rng_t *r, int32_t n, int32_t *perm)
{
    for (int32_t i = 0; i < n; ++i)
        perm[i] = i;
    for (int32_t i = n - 1; i > 0; --i) {
        int32_t j = (int32_t)(tu_next(r) % (uint64_t)(i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

typedef struct tu_node {
    struct okv_buffer buf;
    struct tu_node *next;
} tu_node_t;
static tu_node_t *g_nodes;

okv_ref_t tu_ref(void *p, size_t bytes)
{
    okv_ref_t r = {NULL, 0};
    if (!p) return r;
    tu_node_t *n = (tu_node_t *)tu_calloc(1, sizeof *n);
    n->buf.native = p;
    n->buf.bytes = bytes;
    n->next = g_nodes;
    g_nodes = n;
    r.buffer = &n->buf;
    return r;
}

void tu_release_all(void)
{
    while (g_nodes) {
        tu_node_t *n = g_nodes->next;
        free(g_nodes);
        g_nodes = n;
    }
}

void *tu_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    ck_assert_ptr_nonnull(p);
    return p;
}

size_t tu_dtype_size(okv_dtype_t dt)
{
    return dt == OKV_DTYPE_F32 || dt == OKV_DTYPE_I32 ? 4u : (dt == OKV_DTYPE_F64 ? 8u : 2u);
}

void tu_cache_sync(tu_cache_t *c)
{
    okv_cache_view_t *v = &c->view;
    memset(v, 0, sizeof *v);
    v->desc = &c->desc;
    v->batch = c->batch;
    v->int2_pool = tu_ref(c->int2_pool, c->int2_page_bytes * (size_t)c->int2_pool_pages);
    v->int2_pool_pages = c->int2_pool_pages;
    v->bf16_pool = tu_ref(c->bf16_pool, c->bf16_page_bytes * (size_t)c->bf16_pool_pages);
    v->bf16_pool_pages = c->bf16_pool_pages;
    v->int2_indptr = tu_ref(c->int2_indptr, sizeof(int32_t) * (size_t)(c->batch + 1));
    v->int2_indices = tu_ref(c->int2_indices, sizeof(int32_t) * (size_t)c->batch * c->int2_pages_per_seq + 4);
    v->bf16_indptr = tu_ref(c->bf16_indptr, sizeof(int32_t) * (size_t)(c->batch + 1));
    v->bf16_indices = tu_ref(c->bf16_indices, sizeof(int32_t) * (size_t)c->batch * c->bf16_pages_per_seq);
    v->seq_lens = tu_ref(c->seq_lens, sizeof(int32_t) * (size_t)c->batch);
    v->int2_lens = tu_ref(c->int2_lens, sizeof(int32_t) * (size_t)c->batch);
    okv_ref_cache_from_view(v, &c->rc);
}

void tu_cache_init(tu_cache_t *c, const tu_geom_t *g, int32_t batch, int32_t max_int2, int32_t spare, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    okv_cache_desc_t *d = &c->desc;
    d->size = sizeof *d;
    d->n_q_heads = g->hq;
    d->n_kv_heads = g->hkv;
    d->head_dim = g->d;
    d->group_size = g->g;
    d->meta_dtype = (okv_dtype_t)g->meta;
    d->quantizer = (okv_quantizer_t)g->quantizer;
    d->clip_mode = (okv_clip_mode_t)g->clip_mode;
    d->sink_tokens = g->s0;
    d->recent_tokens = g->w;
    d->flush_interval = g->f;
    d->page_size = g->p;
    c->batch = batch;
    int32_t gs = g->g ? g->g : g->d;
    c->int2_page_bytes = (size_t)okv_int2_page_bytes(g->hkv, g->p, g->d, gs, g->meta);
    c->bf16_page_bytes = (size_t)okv_bf16_page_bytes(g->hkv, g->p, g->d);
    c->int2_pages_per_seq = (max_int2 + g->p - 1) / g->p;
    c->bf16_pages_per_seq = (g->s0 + g->w + g->f + g->p - 1) / g->p;
    c->int2_pool_pages = batch * c->int2_pages_per_seq + spare;
    c->bf16_pool_pages = batch * c->bf16_pages_per_seq + spare;
    c->int2_pool = (uint8_t *)tu_calloc((size_t)c->int2_pool_pages + 1, c->int2_page_bytes);
    c->bf16_pool = (uint8_t *)tu_calloc((size_t)c->bf16_pool_pages, c->bf16_page_bytes);
    c->int2_indptr = (int32_t *)tu_calloc((size_t)batch + 1, sizeof(int32_t));
    c->bf16_indptr = (int32_t *)tu_calloc((size_t)batch + 1, sizeof(int32_t));
    c->int2_indices = (int32_t *)tu_calloc((size_t)batch * c->int2_pages_per_seq + 1, sizeof(int32_t));
    c->bf16_indices = (int32_t *)tu_calloc((size_t)batch * c->bf16_pages_per_seq, sizeof(int32_t));
    c->seq_lens = (int32_t *)tu_calloc((size_t)batch, sizeof(int32_t));
    c->int2_lens = (int32_t *)tu_calloc((size_t)batch, sizeof(int32_t));
    tu_rng_t r = {seed};
    int32_t *perm = (int32_t *)tu_calloc((size_t)c->int2_pool_pages + c->bf16_pool_pages + 1, sizeof(int32_t));
    tu_permutation(&r, c->int2_pool_pages, perm);
    for (int32_t b = 0; b <= batch; ++b)
        c->int2_indptr[b] = b * c->int2_pages_per_seq;
    for (int32_t i = 0; i < batch * c->int2_pages_per_seq; ++i)
        c->int2_indices[i] = perm[i];
    tu_permutation(&r, c->bf16_pool_pages, perm);
    for (int32_t b = 0; b <= batch; ++b)
        c->bf16_indptr[b] = b * c->bf16_pages_per_seq;
    for (int32_t i = 0; i < batch * c->bf16_pages_per_seq; ++i)
        c->bf16_indices[i] = perm[i];
    free(perm);
    tu_cache_sync(c);
}

void tu_cache_free(tu_cache_t *c)
{
    free(c->int2_pool);
    free(c->bf16_pool);
    free(c->int2_indptr);
    free(c->bf16_indptr);
    free(c->int2_indices);
    free(c->bf16_indices);
    free(c->seq_lens);
    free(c->int2_lens);
    memset(c, 0, sizeof *c);
}

okv_status_t tu_append(tu_cache_t *c, const void *k, const void *v, okv_dtype_t dt, const int32_t *indptr,
                       int32_t n_rows, const float *krot, const float *vrot, int32_t per_head, float kclip, float vclip,
                       okv_err_t *err)
{
    const int32_t d = c->desc.head_dim, hkv = c->desc.n_kv_heads;
    size_t bytes = (size_t)n_rows * hkv * d * tu_dtype_size(dt);
    size_t rbytes = sizeof(float) * (size_t)(per_head ? hkv : 1) * d * d;
    okv_append_params_t p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.cache = c->view;
    p.k = tu_ref((void *)k, bytes);
    p.v = tu_ref((void *)v, bytes);
    p.kv_dtype = dt;
    p.append_indptr = tu_ref((void *)indptr, sizeof(int32_t) * (size_t)(c->batch + 1));
    p.n_rows = n_rows;
    p.k_rotation = tu_ref((void *)krot, rbytes);
    p.v_rotation = tu_ref((void *)vrot, rbytes);
    p.per_head_rotation = per_head;
    p.k_clip_ratio = kclip;
    p.v_clip_ratio = vclip;
    okv_err_t local;
    return okv_ref_backend_ops()->append(NULL, &p, err ? err : &local);
}

okv_status_t tu_append_even(tu_cache_t *c, const float *k, const float *v, int32_t n, const float *krot,
                            const float *vrot, float kclip, float vclip, okv_err_t *err)
{
    int32_t *indptr = (int32_t *)tu_calloc((size_t)c->batch + 1, sizeof(int32_t));
    for (int32_t b = 0; b <= c->batch; ++b)
        indptr[b] = b * n;
    okv_status_t st = tu_append(c, k, v, OKV_DTYPE_F32, indptr, n * c->batch, krot, vrot, 0, kclip, vclip, err);
    free(indptr);
    return st;
}

okv_status_t tu_demote(tu_cache_t *c, int32_t n_rows, float kclip, float vclip, okv_err_t *err)
{
    okv_demote_params_t p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.cache = c->view;
    p.n_rows = n_rows;
    p.k_clip_ratio = kclip;
    p.v_clip_ratio = vclip;
    okv_err_t local;
    return okv_ref_backend_ops()->demote(NULL, &p, err ? err : &local);
}

okv_status_t tu_dequantize(tu_cache_t *c, int32_t max_len, float *k_out, float *v_out, okv_err_t *err)
{
    const int32_t d = c->desc.head_dim, hkv = c->desc.n_kv_heads;
    int32_t *indptr = (int32_t *)tu_calloc((size_t)c->batch + 1, sizeof(int32_t));
    for (int32_t b = 0; b <= c->batch; ++b)
        indptr[b] = b * max_len;
    size_t bytes = sizeof(float) * (size_t)c->batch * max_len * hkv * d;
    okv_dequantize_params_t p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.cache = c->view;
    p.out_indptr = tu_ref(indptr, sizeof(int32_t) * (size_t)(c->batch + 1));
    p.out_rows = c->batch * max_len;
    p.k_out = tu_ref(k_out, bytes);
    p.v_out = tu_ref(v_out, bytes);
    p.out_dtype = OKV_DTYPE_F32;
    okv_err_t local;
    okv_status_t st = okv_ref_backend_ops()->dequantize(NULL, &p, err ? err : &local);
    free(indptr);
    return st;
}

okv_status_t tu_decode(tu_cache_t *c, const tu_decode_args_t *a, okv_err_t *err)
{
    const int32_t d = c->desc.head_dim, hq = c->desc.n_q_heads, hkv = c->desc.n_kv_heads;
    size_t n = (size_t)c->batch * hq * d;
    int32_t max_len = 0;
    for (int32_t b = 0; b < c->batch; ++b)
        max_len = c->seq_lens[b] > max_len ? c->seq_lens[b] : max_len;
    okv_decode_params_t p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.cache = c->view;
    p.q = tu_ref((void *)a->q, n * tu_dtype_size(a->q_dtype));
    p.q_dtype = a->q_dtype;
    p.out = tu_ref(a->out, n * tu_dtype_size(a->out_dtype));
    p.out_dtype = a->out_dtype;
    p.lse = tu_ref(a->lse, sizeof(float) * (size_t)c->batch * hq);
    p.sm_scale = a->sm_scale;
    p.max_seq_len = max_len;
    p.num_splits = a->num_splits;
    p.v_rotation = tu_ref((void *)a->v_rotation, sizeof(float) * (size_t)(a->per_head ? hkv : 1) * d * d);
    p.per_head_rotation = a->per_head;
    p.unrotate_output = a->unrotate;
    okv_err_t local;
    return okv_ref_backend_ops()->decode(NULL, &p, err ? err : &local);
}

double tu_attention_f64(const double *q, const float *k, const float *v, int64_t n, int d, double scale, double *out)
{
    for (int i = 0; i < d; ++i)
        out[i] = 0.0;
    if (n <= 0) return -INFINITY;
    double *s = (double *)tu_calloc((size_t)n, sizeof(double));
    double m = -INFINITY;
    for (int64_t t = 0; t < n; ++t) {
        double dot = 0.0;
        for (int i = 0; i < d; ++i)
            dot += q[i] * (double)k[(size_t)t * d + i];
        s[t] = dot * scale;
        m = s[t] > m ? s[t] : m;
    }
    double l = 0.0;
    for (int64_t t = 0; t < n; ++t) {
        double e = exp(s[t] - m);
        l += e;
        for (int i = 0; i < d; ++i)
            out[i] += e * (double)v[(size_t)t * d + i];
    }
    for (int i = 0; i < d; ++i)
        out[i] /= l;
    free(s);
    return m + log(l);
}

double tu_rel_err(const float *a, const double *b, size_t n)
{
    double mx = 0.0, ref = 1e-30;
    for (size_t i = 0; i < n; ++i) {
        double e = fabs((double)a[i] - b[i]);
        mx = e > mx ? e : mx;
        ref = fabs(b[i]) > ref ? fabs(b[i]) : ref;
    }
    return mx / ref;
}
