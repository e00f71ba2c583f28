/* conf_ops.c - one runner per op: generate inputs on the host, upload, run on the
 * backend under test, read back, compare with the host model.
 *
 * Every op function returns the status of the call under test. For invalid-argument
 * cases (c->err != CONF_ERR_NONE) it breaks one argument and returns the status
 * without comparing; conf_run_case compares that status with the ref backend's. */
#include "conf_cache.h"

#include "okv_format.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Attention tolerances. Matrix units may take bf16/fp16 operands (SPEC section 6:
 * the decode kernel needs mma/MFMA to approach the bandwidth bound), with fp32
 * accumulation (SPEC section 5). The output is compared with a float64 recomputation
 * on the same dequantized K/V: relative L2 and max-abs (relative to max |o|), on top
 * of the output dtype's rounding. lse: absolute, plus the rounding of q and k to bf16
 * (2 u sum_c |q_c k_c| * scale, u = 2^-9) that such operands imply. Every num_splits
 * variant must meet the same bound (split-count invariance). */
#define CONF_ATT_REL_L2 3e-3
#define CONF_ATT_MAX_ABS 1e-2
#define CONF_LSE_ABS 2e-3
#define CONF_BF16_U (1.0 / 512.0)

#define INTERNAL OKV_ERROR_INTERNAL

static okv_status_t oom(run_t *r)
{
    run_fail(r, "runner: out of host memory");
    return INTERNAL;
}

static size_t esz(okv_dtype_t t) { return okv_dtype_size(t); }

/* Random host rows rounded through `t`: returns floats (rounded) and fills *stored
 * with the dtype bytes. */
static float *gen_rows(conf_rng_t *rng, int n, int heads, int d, float outlier, okv_dtype_t t, void **stored)
{
    size_t cnt = (size_t)n * heads * d;
    float *x = malloc((cnt ? cnt : 1) * sizeof(float));
    *stored = malloc((cnt ? cnt : 1) * esz(t));
    if (!x || !*stored || !conf_activations(rng, n, heads, d, outlier, x)) {
        free(x);
        free(*stored);
        *stored = NULL;
        return NULL;
    }
    conf_store(t, x, *stored, cnt);
    conf_load(t, *stored, x, cnt);
    return x;
}

static float *gen_rotations(conf_rng_t *rng, int n, int d)
{
    float *R = malloc((size_t)n * d * d * sizeof(float));
    if (R)
        for (int i = 0; i < n; ++i)
            conf_random_rotation(rng, d, R + (size_t)i * d * d);
    return R;
}

/* y = x R (or x R^T) in double; abssum[j] = sum_m |x_m R_mj|. */
static void rot_row(const float *x, const float *R, int d, int transpose, double *y, double *abssum)
{
    for (int j = 0; j < d; ++j) {
        double acc = 0.0, as = 0.0;
        for (int m = 0; m < d; ++m) {
            double t = (double)x[m] * (transpose ? R[(size_t)j * d + m] : R[(size_t)m * d + j]);
            acc += t;
            as += fabs(t);
        }
        y[j] = acc;
        if (abssum) abssum[j] = as;
    }
}

/* A key mean [n][d] of realistic size: several times the channel spread of the
 * generated activations (0.5..1.5), as post-RoPE keys have. */
static float *key_bias(conf_rng_t *rng, int n, int d)
{
    float *mu = malloc((size_t)n * d * sizeof(float));
    if (mu)
        for (size_t e = 0; e < (size_t)n * d; ++e)
            mu[e] = (float)(3.0 * conf_rng_normal(rng));
    return mu;
}

/* xc = x - mu in fp32, as the reference and the GPU kernels compute it (mu NULL: copy). */
static void center_row(const float *x, const float *mu, int d, float *xc)
{
    for (int j = 0; j < d; ++j)
        xc[j] = mu ? x[j] - mu[j] : x[j];
}

/* Bound of an fp32 dot product's error over d terms (worst case, recursive sum). */
static double dot_err(double abssum, int d) { return abssum * (double)(d + 2) * 6.0e-8; }

#define CALL_FAILED(st, what, ctx) run_fail(r, "%s -> %s: %s", what, okv_status_string(st), okv_context_last_error(ctx))

/* ------------------------------------------------------------------ rotate -- */
static okv_status_t op_rotate(run_t *r, okv_context_t *ctx)
{
    const conf_case_t *c = r->c;
    conf_rng_t rng;
    conf_rng_seed(&rng, c->seed);
    int n = c->n_new, H = c->hq, d = c->d;
    int per_head = c->per_head || c->err == CONF_ERR_GQA;
    int hg = c->hq / c->hkv, nrot = per_head ? c->hkv : 1;
    void *xs = NULL;
    float *x = gen_rows(&rng, n, H, d, 4.0f, c->in_dtype, &xs);
    float *R = gen_rotations(&rng, nrot, d);
    size_t cnt = (size_t)n * H * d;
    void *got = malloc(cnt * esz(c->out_dtype) + 1);
    float *mu = c->kbias ? key_bias(&rng, nrot, d) : NULL;
    okv_status_t st = INTERNAL;
    if (!x || !R || !got || (c->kbias && !mu)) {
        st = oom(r);
        goto done;
    }
    if (mu) {
        /* the rows carry the mean the bias removes (keys of a prefill chunk) */
        for (size_t e = 0; e < cnt; ++e)
            x[e] += mu[(size_t)(per_head ? e / d % H / hg : 0) * d + e % d];
        conf_store(c->in_dtype, x, xs, cnt);
        conf_load(c->in_dtype, xs, x, cnt);
        if (c->err == CONF_ERR_NAN) mu[(size_t)nrot * d / 2] = NAN;
    } else if (c->err == CONF_ERR_NAN) {
        conf_store(c->in_dtype, &(float){NAN}, (char *)xs + esz(c->in_dtype) * (cnt / 2), 1);
    }
    dbuf_t *dx = dbuf_new(r, ctx, "x", cnt * esz(c->in_dtype), xs);
    dbuf_t *dR = dbuf_new(r, ctx, "rotation", (size_t)nrot * d * d * 4, R);
    dbuf_t *dmu = mu ? dbuf_new(r, ctx, "bias", (size_t)nrot * d * 4, mu) : NULL;
    dbuf_t *dout = c->err == CONF_ERR_SMALL_BUF
                       ? dbuf_new_short(r, ctx, "out", cnt * esz(c->out_dtype) - esz(c->out_dtype))
                       : dbuf_new(r, ctx, "out", cnt * esz(c->out_dtype), NULL);
    if (!dx || !dR || !dout || (mu && !dmu)) goto done;
    okv_rotate_params_t p;
    okv_rotate_params_init(&p);
    p.x = c->err == CONF_ERR_NULL_BUF ? (okv_ref_t){NULL, 0} : dref(dx);
    p.x_dtype = c->in_dtype;
    p.out = dref(dout);
    p.out_dtype = c->out_dtype;
    p.rotation = dref(dR);
    p.n_rows = n;
    p.n_heads = H;
    p.head_dim = d;
    p.per_head = per_head;
    p.head_group = per_head ? (c->err == CONF_ERR_GQA ? 2 : hg) : 1;
    p.transpose = c->unrotate;
    p.bias = dref(dmu);
    st = okv_rotate(ctx, &p);
    if (c->err != CONF_ERR_NONE || st != OKV_SUCCESS) goto done;
    if (!dbuf_get(r, dout, got, cnt * esz(c->out_dtype))) goto done;
    {
        float *o = malloc(cnt * sizeof(float));
        double y[OKV_FMT_MAX_HEAD_DIM], as[OKV_FMT_MAX_HEAD_DIM];
        if (!o) {
            oom(r);
            goto done;
        }
        conf_load(c->out_dtype, got, o, cnt);
        double eps = conf_dtype_eps(c->out_dtype), worst = 0.0;
        long bad = 0;
        for (int t = 0; t < n; ++t) {
            for (int h = 0; h < H; ++h) {
                const float *Rh = R + (size_t)(per_head ? h / hg : 0) * d * d;
                size_t base = ((size_t)t * H + h) * d;
                float xc[OKV_FMT_MAX_HEAD_DIM];
                center_row(x + base, mu ? mu + (size_t)(per_head ? h / hg : 0) * d : NULL, d, xc);
                rot_row(xc, Rh, d, c->unrotate, y, as);
                for (int j = 0; j < d; ++j) {
                    double e = fabs(o[base + j] - y[j]);
                    double tol =
                        eps * 1.001 * fabs(y[j]) + dot_err(as[j], d) * (1.0 + eps) + conf_dtype_tiny(c->out_dtype);
                    if (!(e <= tol)) {
                        if (bad++ == 0)
                            run_fail(r, "out[%d][%d][%d] = %.9g, expected %.9g (tol %.3g)", t, h, j,
                                     (double)o[base + j], y[j], tol);
                    }
                    if (e / (tol > 0 ? tol : 1) > worst) worst = e / tol;
                }
            }
        }
        if (bad > 1) run_fail(r, "%ld of %zu outputs outside tolerance", bad, cnt);
        free(o);
    }
done:
    free(x);
    free(xs);
    free(R);
    free(got);
    free(mu);
    return st;
}

/* ----------------------------------------------------------------- moments -- */
static okv_status_t op_moments(run_t *r, okv_context_t *ctx)
{
    const conf_case_t *c = r->c;
    conf_rng_t rng;
    conf_rng_seed(&rng, c->seed);
    int n = c->n_new, H = c->hq, d = c->d;
    int hg = c->err == CONF_ERR_GQA ? 2 : c->hq / c->hkv;
    int nacc = c->err == CONF_ERR_GQA ? 1 : c->hkv;
    okv_dtype_t adt = c->out_dtype;
    void *xs = NULL;
    float *x = gen_rows(&rng, n, H, d, 4.0f, c->in_dtype, &xs);
    size_t cnt = (size_t)n * H * d, acnt = (size_t)nacc * d * d;
    float *w = malloc(((size_t)n * H + 1) * sizeof(float));
    double *init = malloc(acnt * sizeof(double));
    void *ainit = malloc(acnt * esz(adt) + 1), *got = malloc(acnt * esz(adt) + 1);
    okv_status_t st = INTERNAL;
    if (!x || !w || !init || !ainit || !got) {
        st = oom(r);
        goto done;
    }
    for (size_t i = 0; i < (size_t)n * H; ++i)
        w[i] = (float)(2.0 * conf_rng_uniform(&rng));
    for (size_t i = 0; i < acnt; ++i) {
        float v = (float)(0.25 * conf_rng_normal(&rng));
        init[i] = v;
        if (adt == OKV_DTYPE_F64)
            ((double *)ainit)[i] = v;
        else
            ((float *)ainit)[i] = v;
    }
    if (c->err == CONF_ERR_NAN) conf_store(c->in_dtype, &(float){NAN}, (char *)xs + esz(c->in_dtype) * (cnt / 3), 1);
    dbuf_t *dx = dbuf_new(r, ctx, "x", cnt * esz(c->in_dtype), xs);
    dbuf_t *dw = c->with_aux ? dbuf_new(r, ctx, "weights", (size_t)n * H * 4, w) : NULL;
    dbuf_t *dacc = c->err == CONF_ERR_SMALL_BUF ? dbuf_new_short(r, ctx, "acc", acnt * esz(adt) - esz(adt))
                                                : dbuf_new(r, ctx, "acc", acnt * esz(adt), ainit);
    if (!dx || (c->with_aux && !dw) || !dacc) goto done;
    okv_moments_params_t p;
    okv_moments_params_init(&p);
    p.x = c->err == CONF_ERR_NULL_BUF ? (okv_ref_t){NULL, 0} : dref(dx);
    p.x_dtype = c->in_dtype;
    p.weights = dref(dw);
    p.acc = dref(dacc);
    p.acc_dtype = adt;
    p.n_rows = n;
    p.n_heads = H;
    p.head_dim = d;
    p.head_group = hg;
    st = okv_moments(ctx, &p);
    if (c->err != CONF_ERR_NONE || st != OKV_SUCCESS) goto done;
    if (!dbuf_get(r, dacc, got, acnt * esz(adt))) goto done;
    {
        double *e = calloc(acnt, sizeof(double)), *a = calloc(acnt, sizeof(double));
        if (!e || !a) {
            free(e);
            free(a);
            oom(r);
            goto done;
        }
        for (int t = 0; t < n; ++t)
            for (int h = 0; h < H; ++h) {
                const float *xr = x + ((size_t)t * H + h) * d;
                double wt = c->with_aux ? w[(size_t)t * H + h] : 1.0;
                double *E = e + (size_t)(h / hg) * d * d, *A = a + (size_t)(h / hg) * d * d;
                for (int i = 0; i < d; ++i) {
                    double wi = wt * xr[i];
                    for (int j = 0; j < d; ++j) {
                        E[i * d + j] += wi * xr[j];
                        A[i * d + j] += fabs(wi * xr[j]);
                    }
                }
            }
        double rel = adt == OKV_DTYPE_F64 ? 2.4e-7 : ((double)n + 4.0) * 1.2e-7;
        if (rel > 2e-3) rel = 2e-3;
        long bad = 0;
        for (size_t i = 0; i < acnt; ++i) {
            double g = adt == OKV_DTYPE_F64 ? ((double *)got)[i] : ((float *)got)[i];
            double ex = init[i] + e[i];
            double tol = rel * (a[i] + fabs(init[i])) + 1e-30;
            if (!(fabs(g - ex) <= tol) && bad++ == 0)
                run_fail(r, "acc[%zu][%zu][%zu] = %.12g, expected %.12g (tol %.3g)", i / ((size_t)d * d), (i / d) % d,
                         i % d, g, ex, tol);
        }
        if (bad > 1) run_fail(r, "%ld of %zu accumulator entries outside tolerance", bad, acnt);
        free(e);
        free(a);
    }
done:
    free(x);
    free(xs);
    free(w);
    free(init);
    free(ainit);
    free(got);
    return st;
}

/* ------------------------------------------------------ cache-state setup -- */
/* Lengths per sequence: sequence 0 gets exactly `ctx`, the others random in
 * [lo, ctx]; int2 lengths from a reachable history. */
static void seq_states(const hcache_t *h, conf_rng_t *rng, int ctx, int lo, int *t, int *i)
{
    for (int b = 0; b < h->batch; ++b) {
        t[b] = b == 0 ? ctx : lo + conf_rng_int(rng, ctx - lo + 1);
        i[b] = hc_state_int2(h, rng, t[b]);
    }
}

/* A host cache for the case; cap_extra[b] (may be NULL) extra INT2 tokens. */
static int make_cache(run_t *r, hcache_t *h, conf_rng_t *rng, int lo, const int *t, const int *i, const int *cap)
{
    if (!hc_init(h, r->c, cap)) {
        oom(r);
        return 0;
    }
    for (int b = 0; b < h->batch; ++b) {
        if (!hc_fill(h, rng, b, t[b], i[b])) {
            run_fail(r, "runner: could not build the cache state (host quantizer refused a row)");
            return 0;
        }
    }
    (void)lo;
    return 1;
}

static int bad_page_write(run_t *r, dcache_t *dc, const hcache_t *h, int entry)
{
    int32_t bad = h->n_ipool;
    if (entry < 0 || entry >= dc->n_iidx) {
        run_fail(r, "runner: no INT2 page to corrupt (table has %d entries)", dc->n_iidx);
        return 0;
    }
    okv_status_t st = okv_buffer_write(dc->iidx->ctx, dc->iidx->b, CONF_GUARD + (size_t)entry * 4, &bad, 4);
    if (st != OKV_SUCCESS) {
        run_fail(r, "okv_buffer_write(int2_indices) -> %s", okv_status_string(st));
        return 0;
    }
    return 1;
}

/* Read back pools and tables and compare them with `m` (the model after the op):
 * rows with a record are compared tie-aware; every other byte of the INT2 pool must
 * be unchanged; live BF16 rows must hold the model's values (within bf16 rounding of
 * the uncertainty); pages nobody owns must be untouched; tables unchanged. */
typedef struct rec {
    float *x;   /* [rows][d] model values quantized */
    float *unc; /* [rows] */
    int *idx;   /* [batch][cap][2][hkv] -> record row or -1 */
    int cap, n, max;
} rec_t;

static int rec_init(rec_t *rc, const hcache_t *h, int cap_tokens, int max_rows)
{
    rc->cap = cap_tokens > 0 ? cap_tokens : 1;
    rc->max = max_rows > 0 ? max_rows : 1;
    rc->n = 0;
    rc->x = malloc((size_t)rc->max * h->d * sizeof(float));
    rc->unc = malloc((size_t)rc->max * sizeof(float));
    size_t ni = (size_t)h->batch * rc->cap * 2 * h->hkv;
    rc->idx = malloc(ni * sizeof(int));
    if (!rc->x || !rc->unc || !rc->idx) return 0;
    for (size_t k = 0; k < ni; ++k)
        rc->idx[k] = -1;
    return 1;
}

static void rec_free(rec_t *rc)
{
    free(rc->x);
    free(rc->unc);
    free(rc->idx);
}

static int *rec_slot(rec_t *rc, const hcache_t *h, int b, int j, int kv, int hd)
{
    return &rc->idx[(((size_t)b * rc->cap + j) * 2 + kv) * h->hkv + hd];
}

/* Model: quantize x into INT2 position j of sequence b and remember it. */
static int model_quant(rec_t *rc, hcache_t *m, int b, int j, int kv, int hd, const float *x, double unc)
{
    if (rc->n >= rc->max || j >= rc->cap) return -1;
    memcpy(rc->x + (size_t)rc->n * m->d, x, (size_t)m->d * sizeof(float));
    rc->unc[rc->n] = (float)unc;
    *rec_slot(rc, m, b, j, kv, hd) = rc->n++;
    return hc_quant_row(m, x, kv ? m->vr : m->kr, m->ipool + hc_int2_codes_at(m, b, j, kv, hd),
                        m->ipool + hc_int2_meta_at(m, b, j, kv, hd));
}

static double row_absmax(const float *x, int d)
{
    double a = 0.0;
    for (int i = 0; i < d; ++i)
        a = fmax(a, fabs((double)x[i]));
    return a;
}

static void compare_cache(run_t *r, const hcache_t *m, const hcache_t *before, dcache_t *dc, rec_t *rc)
{
    size_t ib = (size_t)m->n_ipool * m->ipb, bb = (size_t)m->n_bpool * m->bpb;
    uint8_t *gi = malloc(ib);
    uint16_t *gb = malloc(bb);
    int32_t *sl = malloc((size_t)m->batch * 4), *il = malloc((size_t)m->batch * 4);
    if (!gi || !gb || !sl || !il) {
        oom(r);
        goto done;
    }
    if (!dbuf_get(r, dc->ipool, gi, ib) || !dbuf_get(r, dc->bpool, gb, bb) ||
        !dbuf_get(r, dc->slen, sl, (size_t)m->batch * 4) || !dbuf_get(r, dc->ilen, il, (size_t)m->batch * 4))
        goto done;
    for (int b = 0; b < m->batch; ++b) {
        if (sl[b] != m->seq_len[b] || il[b] != m->int2_len[b]) {
            run_fail(r, "seq %d: seq_len %d int2_len %d, expected %d %d", b, sl[b], il[b], m->seq_len[b],
                     m->int2_len[b]);
            goto done;
        }
    }
    size_t cb = (size_t)m->d / 4, mb = (size_t)m->ng * 2 * m->msz;
    long bad_rows = 0;
    for (int b = 0; b < m->batch; ++b) {
        for (int j = 0; j < m->int2_len[b]; ++j) {
            for (int kv = 0; kv < 2; ++kv) {
                for (int hd = 0; hd < m->hkv; ++hd) {
                    int k = rc ? *rec_slot(rc, m, b, j, kv, hd) : -1;
                    if (k < 0) continue; /* unchanged rows: checked by the pool compare below */
                    size_t co = hc_int2_codes_at(m, b, j, kv, hd), mo = hc_int2_meta_at(m, b, j, kv, hd);
                    char where[96];
                    snprintf(where, sizeof where, "seq %d INT2 row %d %s head %d", b, j, kv ? "V" : "K", hd);
                    int ties = 0;
                    if (bad_rows < 3) {
                        if (!hc_check_row(r, m, rc->x + (size_t)k * m->d, rc->unc[k], kv ? m->vr : m->kr, gi + co,
                                          gi + mo, m->ipool + co, m->ipool + mo, &ties, where))
                            ++bad_rows;
                    } else {
                        ++bad_rows;
                    }
                    r->s->codes_compared += m->d;
                    r->s->code_ties += ties;
                    memcpy(gi + co, m->ipool + co, cb);
                    memcpy(gi + mo, m->ipool + mo, mb);
                }
            }
        }
    }
    if (bad_rows > 3) run_fail(r, "%ld INT2 rows differ in all", bad_rows);
    if (bad_rows == 0 && memcmp(gi, m->ipool, ib) != 0) {
        size_t k = 0;
        while (gi[k] == m->ipool[k])
            ++k;
        int page = (int)(k / m->ipb), owner = -1, pj = -1;
        for (int b = 0; b < m->batch && owner < 0; ++b)
            for (int j = 0; j < m->max_pages; ++j)
                if (j * m->P < (m->int2_len[b] + m->P - 1) / m->P * m->P && m->pages[b * m->max_pages + j] == page)
                    owner = b, pj = j;
        run_fail(r,
                 "INT2 pool byte changed outside the rows the op writes: pool page %d (%s%d, page %d of its table) "
                 "byte %zu: 0x%02x, was 0x%02x",
                 page, owner >= 0 ? "seq " : "owned by no sequence: ", owner, pj, k % m->ipb, gi[k], m->ipool[k]);
    }
    /* BF16 tier: live rows hold the model's values; dead ring slots may hold anything */
    long bad_b = 0;
    for (int b = 0; b < m->batch; ++b) {
        int t = m->seq_len[b];
        for (int s = 0; s < okv_bf16_tier_slots(m->s0, m->w, m->f); ++s) {
            int live = 0, pos = -1;
            if (s < m->s0)
                live = s < t, pos = s;
            else {
                /* the live recent position whose ring slot is s, if any */
                int first = m->s0 + m->int2_len[b];
                for (int p = first; p < t; ++p)
                    if (hc_bf16_slot(m, p) == s) live = 1, pos = p;
            }
            for (int kv = 0; kv < 2; ++kv) {
                for (int hd = 0; hd < m->hkv; ++hd) {
                    size_t e = hc_bf16_row_index(m, b, s, kv, hd);
                    if (live) {
                        double unc = m->bunc[e / m->d];
                        for (int c = 0; c < m->d; ++c) {
                            double want = m->bval[e + c], g = okv_bf16_to_f32(gb[e + c]);
                            double tol = (fabs(want) + unc) / 256.0 * 1.001 + unc;
                            if (!(fabs(g - want) <= tol) && bad_b++ == 0)
                                run_fail(r,
                                         "seq %d position %d (BF16 slot %d) %s head %d channel %d: %.9g, expected %.9g",
                                         b, pos, s, kv ? "V" : "K", hd, c, g, want);
                        }
                    }
                    memcpy(gb + e, m->bpool + e, (size_t)m->d * 2);
                }
            }
        }
    }
    if (bad_b > 1) run_fail(r, "%ld BF16 elements differ", bad_b);
    if (memcmp(gb, m->bpool, bb) != 0) {
        size_t k = 0;
        while (gb[k] == m->bpool[k])
            ++k;
        run_fail(r, "BF16 pool page %zu, owned by no sequence, was written (element %zu)", k / (m->bpb / 2),
                 k % (m->bpb / 2));
    }
    (void)before;
done:
    free(gi);
    free(gb);
    free(sl);
    free(il);
}

/* Tables and lengths the op only reads must come back unchanged. */
static void check_tables(run_t *r, const hcache_t *h, dcache_t *dc, int lengths_too)
{
    int B = h->batch;
    int32_t *a = malloc((size_t)(B * (h->max_pages + h->bppseq + 4) + 8) * 4);
    int32_t *iptr = malloc((size_t)(B + 1) * 4), *iidx = malloc((size_t)(B * (h->max_pages + 1)) * 4);
    int32_t *bptr = malloc((size_t)(B + 1) * 4), *bidx = malloc((size_t)(B * h->bppseq) * 4);
    if (!a || !iptr || !iidx || !bptr || !bidx) {
        oom(r);
        goto done;
    }
    hc_build_tables(h, iptr, iidx, bptr, bidx);
    if (dbuf_get(r, dc->iptr, a, (size_t)(B + 1) * 4) && memcmp(a, iptr, (size_t)(B + 1) * 4))
        run_fail(r, "int2_indptr was modified");
    if (dbuf_get(r, dc->iidx, a, (size_t)iptr[B] * 4) && memcmp(a, iidx, (size_t)iptr[B] * 4))
        run_fail(r, "int2_indices was modified");
    if (dbuf_get(r, dc->bptr, a, (size_t)(B + 1) * 4) && memcmp(a, bptr, (size_t)(B + 1) * 4))
        run_fail(r, "bf16_indptr was modified");
    if (dbuf_get(r, dc->bidx, a, (size_t)bptr[B] * 4) && memcmp(a, bidx, (size_t)bptr[B] * 4))
        run_fail(r, "bf16_indices was modified");
    if (lengths_too) {
        for (int b = 0; b < B; ++b)
            iptr[b] = h->seq_len[b], bptr[b] = h->int2_len[b];
        if (dbuf_get(r, dc->slen, a, (size_t)B * 4) && memcmp(a, iptr, (size_t)B * 4))
            run_fail(r, "seq_lens was modified");
        if (dbuf_get(r, dc->ilen, a, (size_t)B * 4) && memcmp(a, bptr, (size_t)B * 4))
            run_fail(r, "int2_lens was modified");
    }
done:
    free(a);
    free(iptr);
    free(iidx);
    free(bptr);
    free(bidx);
}

/* A read-only op must leave both pools byte-identical. */
static void check_pools_unchanged(run_t *r, const hcache_t *h, dcache_t *dc)
{
    size_t ib = (size_t)h->n_ipool * h->ipb, bb = (size_t)h->n_bpool * h->bpb;
    unsigned char *g = malloc(ib > bb ? ib : bb);
    if (!g) {
        oom(r);
        return;
    }
    if (dbuf_get(r, dc->ipool, g, ib) && memcmp(g, h->ipool, ib)) run_fail(r, "the INT2 pool was modified");
    if (dbuf_get(r, dc->bpool, g, bb) && memcmp(g, h->bpool, bb)) run_fail(r, "the BF16 pool was modified");
    free(g);
    check_tables(r, h, dc, 1);
}

/* ------------------------------------------------------------------ append -- */
static okv_status_t op_append(run_t *r, okv_context_t *ctx)
{
    const conf_case_t *c = r->c;
    conf_rng_t rng;
    conf_rng_seed(&rng, c->seed);
    int B = c->batch, d = c->d, hkv = c->hkv;
    int n_new = c->n_new, steps = c->steps;
    if (c->err == CONF_ERR_BAD_PAGE || c->err == CONF_ERR_META_OVF) n_new = 20; /* forces a flush */
    int *t = calloc((size_t)B, sizeof(int)), *i0 = calloc((size_t)B, sizeof(int));
    int *cap = calloc((size_t)B, sizeof(int)), *nb = calloc((size_t)B * steps, sizeof(int));
    hcache_t h, m;
    memset(&h, 0, sizeof h);
    memset(&m, 0, sizeof m);
    rec_t rc;
    memset(&rc, 0, sizeof rc);
    conf_actgen_t gen[2];
    int have_gen = 0;
    float *R = NULL, *raw = NULL, *kb = NULL;
    void *kvs[2] = {NULL, NULL};
    int32_t *aptr = NULL;
    okv_status_t st = INTERNAL;
    if (!t || !i0 || !cap || !nb) {
        st = oom(r);
        goto done;
    }
    /* lengths: a first pass with a throw-away model to know capacities */
    {
        hcache_t tmp;
        memset(&tmp, 0, sizeof tmp);
        tmp.s0 = c->s0, tmp.w = c->w, tmp.f = c->f, tmp.batch = B;
        seq_states(&tmp, &rng, c->ctx, 0, t, i0);
        for (int b = 0; b < B; ++b) {
            int len = t[b], il = i0[b];
            for (int s = 0; s < steps; ++s) {
                int n = (b == 0) ? n_new : conf_rng_int(&rng, n_new + 1);
                nb[s * B + b] = n;
                il = hc_int2_after(&tmp, len, il, n);
                len += n;
            }
            cap[b] = il;
        }
    }
    int maxcap = 0, rows_step = 0;
    for (int b = 0; b < B; ++b)
        maxcap = cap[b] > maxcap ? cap[b] : maxcap;
    for (int s = 0; s < steps; ++s) {
        int n = 0;
        for (int b = 0; b < B; ++b)
            n += nb[s * B + b];
        rows_step = n > rows_step ? n : rows_step;
    }
    if (!make_cache(r, &h, &rng, 0, t, i0, cap)) goto done;
    if (!hc_copy(&m, &h)) {
        st = oom(r);
        goto done;
    }
    int total_new_int2 = 0;
    for (int b = 0; b < B; ++b)
        total_new_int2 += cap[b] - i0[b];
    if (!rec_init(&rc, &h, maxcap, total_new_int2 * 2 * hkv)) {
        st = oom(r);
        goto done;
    }
    int nrot = c->per_head ? hkv : 1;
    R = gen_rotations(&rng, 2 * nrot, d);
    size_t rcnt = (size_t)(rows_step > 0 ? rows_step : 1) * hkv * d;
    raw = malloc(rcnt * 2 * sizeof(float));
    kvs[0] = malloc(rcnt * esz(c->in_dtype));
    kvs[1] = malloc(rcnt * esz(c->in_dtype));
    aptr = malloc((size_t)(B + 1) * 4);
    if (!R || !raw || !kvs[0] || !kvs[1] || !aptr || !conf_actgen_init(&gen[0], &rng, hkv, d, 8.0f)) {
        st = oom(r);
        goto done;
    }
    if (!conf_actgen_init(&gen[1], &rng, hkv, d, 3.0f)) {
        conf_actgen_free(&gen[0]);
        st = oom(r);
        goto done;
    }
    have_gen = 1;
    if (c->kbias) {
        /* keys with a large common mean; the bias is the calibration's estimate of it:
         * the generator's per-channel mean of each head, or their average when shared */
        if (!(kb = key_bias(&rng, nrot, d))) {
            st = oom(r);
            goto done;
        }
        for (int hd = 0; hd < hkv; ++hd)
            for (int j = 0; j < d; ++j)
                gen[0].bias[hd * d + j] += kb[(c->per_head ? hd : 0) * d + j];
        for (int j = 0; j < d; ++j) {
            double sum = 0.0;
            for (int hd = 0; hd < hkv; ++hd)
                sum += gen[0].bias[hd * d + j];
            for (int hb = 0; hb < nrot; ++hb)
                kb[hb * d + j] = c->per_head ? gen[0].bias[hb * d + j] : (float)(sum / hkv);
        }
        if (c->err == CONF_ERR_NAN) kb[nrot * d / 2] = NAN;
    }
    dcache_t dc;
    if (!hc_upload(r, ctx, &h, &dc)) goto done;
    dbuf_t *dk = dbuf_new(r, ctx, "k", rcnt * esz(c->in_dtype), NULL);
    dbuf_t *dv = dbuf_new(r, ctx, "v", rcnt * esz(c->in_dtype), NULL);
    dbuf_t *dap = dbuf_new(r, ctx, "append_indptr", (size_t)(B + 1) * 4, NULL);
    dbuf_t *dRk = dbuf_new(r, ctx, "k_rotation", (size_t)nrot * d * d * 4, R);
    dbuf_t *dRv = dbuf_new(r, ctx, "v_rotation", (size_t)nrot * d * d * 4, R + (size_t)nrot * d * d);
    dbuf_t *dkb = kb ? dbuf_new(r, ctx, "k_bias", (size_t)nrot * d * 4, kb) : NULL;
    if (!dk || !dv || !dap || !dRk || !dRv || (kb && !dkb)) goto done;
    if (c->err == CONF_ERR_SMALL_BUF) {
        /* a k buffer one element short of the rows of step 0 */
        int n0 = 0;
        for (int b = 0; b < B; ++b)
            n0 += nb[b];
        dk = dbuf_new_short(r, ctx, "k_short", (size_t)n0 * hkv * d * esz(c->in_dtype) - esz(c->in_dtype));
        if (!dk) goto done;
    }
    int model_ovf = 0;
    for (int s = 0; s < steps; ++s) {
        aptr[0] = 0;
        for (int b = 0; b < B; ++b)
            aptr[b + 1] = aptr[b] + nb[s * B + b];
        int N = aptr[B];
        for (int kv = 0; kv < 2; ++kv) {
            float *x = raw + (size_t)kv * rcnt;
            conf_actgen_rows(&gen[kv], &rng, N, x);
            if (c->err == CONF_ERR_META_OVF && kv == 0)
                for (size_t e = 0; e < (size_t)N * hkv * d; ++e)
                    x[e] *= 1e6f;
            conf_store(c->in_dtype, x, kvs[kv], (size_t)N * hkv * d);
            conf_load(c->in_dtype, kvs[kv], x, (size_t)N * hkv * d);
        }
        if (c->err == CONF_ERR_NAN && !kb)
            conf_store(c->in_dtype, &(float){NAN}, (char *)kvs[0] + esz(c->in_dtype) * 5, 1);
        /* the model */
        for (int b = 0; b < B; ++b) {
            int t0 = m.seq_len[b], il0 = m.int2_len[b], n = nb[s * B + b];
            int il1 = hc_int2_after(&m, t0, il0, n), tt = t0 + n;
            /* recent rows crossing into the INT2 tier: quantized from their BF16 values */
            for (int p = m.s0 + il0; p < m.s0 + il1 && p < t0; ++p) {
                for (int kv = 0; kv < 2; ++kv)
                    for (int hd = 0; hd < hkv; ++hd) {
                        size_t e = hc_bf16_row_index(&m, b, hc_bf16_slot(&m, p), kv, hd);
                        float x[OKV_FMT_MAX_HEAD_DIM];
                        for (int q = 0; q < d; ++q)
                            x[q] = okv_bf16_to_f32(m.bpool[e + q]);
                        double u = m.bunc[e / d];
                        double unc = 1e-6 * row_absmax(x, d) + (u > 0 ? u + row_absmax(x, d) / 128.0 : 0.0);
                        if (model_quant(&rc, &m, b, p - m.s0, kv, hd, x, unc) != 1) model_ovf = 1;
                    }
            }
            for (int q = 0; q < n; ++q) {
                int p = t0 + q;
                for (int kv = 0; kv < 2; ++kv)
                    for (int hd = 0; hd < hkv; ++hd) {
                        const float *xr = raw + (size_t)kv * rcnt + ((size_t)(aptr[b] + q) * hkv + hd) * d;
                        const float *Rh = R + ((size_t)kv * nrot + (c->per_head ? hd : 0)) * d * d;
                        double y[OKV_FMT_MAX_HEAD_DIM], as[OKV_FMT_MAX_HEAD_DIM];
                        float x[OKV_FMT_MAX_HEAD_DIM], xc[OKV_FMT_MAX_HEAD_DIM];
                        center_row(xr, kv == 0 && kb ? kb + (size_t)(c->per_head ? hd : 0) * d : NULL, d, xc);
                        rot_row(xc, Rh, d, 0, y, as);
                        double unc = 0.0;
                        for (int j = 0; j < d; ++j) {
                            x[j] = (float)y[j];
                            unc = fmax(unc, dot_err(as[j], d));
                        }
                        unc += 1e-6 * row_absmax(x, d);
                        if (p >= m.s0 && p < m.s0 + il1) {
                            if (model_quant(&rc, &m, b, p - m.s0, kv, hd, x, unc) != 1) model_ovf = 1;
                        } else {
                            size_t e = hc_bf16_row_index(&m, b, hc_bf16_slot(&m, p), kv, hd);
                            for (int j = 0; j < d; ++j) {
                                m.bpool[e + j] = okv_f32_to_bf16(x[j]);
                                m.bval[e + j] = x[j];
                            }
                            m.bunc[e / d] = (float)unc;
                        }
                    }
            }
            m.seq_len[b] = tt;
            m.int2_len[b] = il1;
            m.tpages[b] = (il1 + m.P - 1) / m.P;
            h.tpages[b] = m.tpages[b];
        }
        if (!hc_upload_table(r, &m, &dc)) goto done;
        if (c->err == CONF_ERR_BAD_PAGE) {
            int32_t last = 0;
            for (int b = 0; b <= 0; ++b)
                last = m.tpages[0] - 1;
            if (!bad_page_write(r, &dc, &m, last)) goto done;
        }
        if (!dbuf_put(r, dk, kvs[0],
                      dk->bytes < (size_t)N * hkv * d * esz(c->in_dtype) ? dk->bytes
                                                                         : (size_t)N * hkv * d * esz(c->in_dtype)) ||
            !dbuf_put(r, dv, kvs[1], (size_t)N * hkv * d * esz(c->in_dtype)) ||
            !dbuf_put(r, dap, aptr, (size_t)(B + 1) * 4))
            goto done;
        okv_append_params_t p;
        okv_append_params_init(&p);
        p.cache = dc.view;
        p.k = c->err == CONF_ERR_NULL_BUF ? (okv_ref_t){NULL, 0} : dref(dk);
        p.v = dref(dv);
        p.kv_dtype = c->in_dtype;
        p.append_indptr = dref(dap);
        p.n_rows = N;
        p.k_rotation = dref(dRk);
        p.v_rotation = dref(dRv);
        p.per_head_rotation = c->per_head;
        p.k_clip_ratio = h.kr;
        p.v_clip_ratio = h.vr;
        p.k_bias = dref(dkb);
        st = okv_append(ctx, &p);
        if (c->err == CONF_ERR_NAN) check_pools_unchanged(r, &h, &dc); /* a failing call writes nothing */
        if (c->err != CONF_ERR_NONE) goto done;
        if (st != OKV_SUCCESS) {
            if (st != OKV_ERROR_UNSUPPORTED) CALL_FAILED(st, s ? "okv_append (a later step)" : "okv_append", ctx);
            goto done;
        }
    }
    if (model_ovf) {
        run_fail(r, "runner: the model's metadata overflowed on valid input");
        goto done;
    }
    compare_cache(r, &m, &h, &dc, &rc);
    check_tables(r, &m, &dc, 0);
done:
    if (have_gen) {
        conf_actgen_free(&gen[0]);
        conf_actgen_free(&gen[1]);
    }
    hc_free(&h);
    hc_free(&m);
    rec_free(&rc);
    free(t);
    free(i0);
    free(cap);
    free(nb);
    free(R);
    free(raw);
    free(kb);
    free(kvs[0]);
    free(kvs[1]);
    free(aptr);
    return st;
}

/* ------------------------------------------------------------------ demote -- */
static okv_status_t op_demote(run_t *r, okv_context_t *ctx)
{
    const conf_case_t *c = r->c;
    conf_rng_t rng;
    conf_rng_seed(&rng, c->seed);
    int B = c->batch, d = c->d, hkv = c->hkv;
    int *t = calloc((size_t)B, sizeof(int)), *i0 = calloc((size_t)B, sizeof(int)),
        *cap = calloc((size_t)B, sizeof(int));
    hcache_t h, m;
    memset(&h, 0, sizeof h);
    memset(&m, 0, sizeof m);
    rec_t rc;
    memset(&rc, 0, sizeof rc);
    okv_status_t st = INTERNAL;
    if (!t || !i0 || !cap) {
        st = oom(r);
        goto done;
    }
    hcache_t tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.s0 = c->s0, tmp.w = c->w, tmp.f = c->f, tmp.batch = B;
    seq_states(&tmp, &rng, c->ctx, 0, t, i0);
    int maxcap = 0, total = 0;
    for (int b = 0; b < B; ++b) {
        int recent = t[b] > c->s0 ? t[b] - c->s0 - i0[b] : 0;
        int k = c->n_new < recent ? c->n_new : recent;
        cap[b] = i0[b] + k;
        total += k;
        maxcap = cap[b] > maxcap ? cap[b] : maxcap;
    }
    if (!make_cache(r, &h, &rng, 0, t, i0, cap) || !hc_copy(&m, &h) || !rec_init(&rc, &h, maxcap, total * 2 * hkv)) {
        if (!r->failed) oom(r);
        goto done;
    }
    int ovf = 0;
    for (int b = 0; b < B; ++b) {
        for (int j = i0[b]; j < cap[b]; ++j)
            for (int kv = 0; kv < 2; ++kv)
                for (int hd = 0; hd < hkv; ++hd) {
                    size_t e = hc_bf16_row_index(&m, b, hc_bf16_slot(&m, m.s0 + j), kv, hd);
                    float x[OKV_FMT_MAX_HEAD_DIM];
                    for (int q = 0; q < d; ++q)
                        x[q] = okv_bf16_to_f32(m.bpool[e + q]);
                    if (model_quant(&rc, &m, b, j, kv, hd, x, 1e-6 * row_absmax(x, d)) != 1) ovf = 1;
                }
        m.int2_len[b] = cap[b];
        m.tpages[b] = h.tpages[b] = (cap[b] + m.P - 1) / m.P;
    }
    dcache_t dc;
    if (!hc_upload(r, ctx, &h, &dc)) goto done;
    if (c->err == CONF_ERR_BAD_PAGE && !bad_page_write(r, &dc, &h, i0[0] / h.P)) goto done;
    okv_demote_params_t p;
    okv_demote_params_init(&p);
    p.cache = dc.view;
    if (c->err == CONF_ERR_NULL_BUF) p.cache.int2_pool = (okv_ref_t){NULL, 0};
    p.n_rows = c->n_new;
    p.k_clip_ratio = h.kr;
    p.v_clip_ratio = h.vr;
    st = okv_demote(ctx, &p);
    if (c->err != CONF_ERR_NONE || st != OKV_SUCCESS) goto done;
    if (ovf) {
        run_fail(r, "runner: the model's metadata overflowed on valid input");
        goto done;
    }
    compare_cache(r, &m, &h, &dc, &rc);
    check_tables(r, &m, &dc, 0);
done:
    hc_free(&h);
    hc_free(&m);
    rec_free(&rc);
    free(t);
    free(i0);
    free(cap);
    return st;
}

/* -------------------------------------------------------------- dequantize -- */
static okv_status_t op_dequantize(run_t *r, okv_context_t *ctx)
{
    const conf_case_t *c = r->c;
    conf_rng_t rng;
    conf_rng_seed(&rng, c->seed);
    int B = c->batch, d = c->d, hkv = c->hkv;
    int *t = calloc((size_t)B, sizeof(int)), *i0 = calloc((size_t)B, sizeof(int));
    int32_t *optr = malloc((size_t)(B + 1) * 4);
    hcache_t h;
    memset(&h, 0, sizeof h);
    void *got[2] = {NULL, NULL};
    okv_status_t st = INTERNAL;
    if (!t || !i0 || !optr) {
        st = oom(r);
        goto done;
    }
    hcache_t tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.s0 = c->s0, tmp.w = c->w, tmp.f = c->f, tmp.batch = B;
    seq_states(&tmp, &rng, c->ctx, c->ctx / 2, t, i0);
    if (!make_cache(r, &h, &rng, 0, t, i0, i0)) goto done;
    /* output rows with gaps between sequences (the gaps must stay poisoned) */
    optr[0] = 0;
    for (int b = 0; b < B; ++b)
        optr[b + 1] = optr[b] + t[b] + conf_rng_int(&rng, 3);
    int rows = optr[B] + 1;
    size_t cnt = (size_t)rows * hkv * d, ob = cnt * esz(c->out_dtype);
    got[0] = malloc(ob);
    got[1] = malloc(ob);
    if (!got[0] || !got[1]) {
        st = oom(r);
        goto done;
    }
    dcache_t dc;
    if (!hc_upload(r, ctx, &h, &dc)) goto done;
    dbuf_t *dptr = dbuf_new(r, ctx, "out_indptr", (size_t)(B + 1) * 4, optr);
    dbuf_t *dk = c->err == CONF_ERR_SMALL_BUF ? dbuf_new_short(r, ctx, "k_out", ob - esz(c->out_dtype))
                                              : dbuf_new(r, ctx, "k_out", ob, NULL);
    dbuf_t *dv = dbuf_new(r, ctx, "v_out", ob, NULL);
    if (!dptr || !dk || !dv) goto done;
    if (c->err == CONF_ERR_BAD_PAGE && !bad_page_write(r, &dc, &h, 0)) goto done;
    okv_dequantize_params_t p;
    okv_dequantize_params_init(&p);
    p.cache = dc.view;
    p.out_indptr = dref(dptr);
    p.out_rows = rows;
    p.k_out = c->err == CONF_ERR_NULL_BUF ? (okv_ref_t){NULL, 0} : dref(dk);
    p.v_out = dref(dv);
    p.out_dtype = c->out_dtype;
    st = okv_dequantize(ctx, &p);
    if (c->err != CONF_ERR_NONE || st != OKV_SUCCESS) goto done;
    if (!dbuf_get(r, dk, got[0], ob) || !dbuf_get(r, dv, got[1], ob)) goto done;
    {
        const unsigned char *gb[2] = {got[0], got[1]};
        size_t es = esz(c->out_dtype);
        double eps = conf_dtype_eps(c->out_dtype);
        long bad = 0;
        for (int b = 0; b < B; ++b) {
            for (int row = optr[b]; row < optr[b + 1] + (b == B - 1); ++row) {
                int pos = row - optr[b];
                for (int kv = 0; kv < 2; ++kv)
                    for (int hd = 0; hd < hkv; ++hd) {
                        size_t off = ((size_t)row * hkv + hd) * d;
                        if (pos >= t[b]) {
                            for (size_t q = 0; q < (size_t)d * es; ++q)
                                if (gb[kv][off * es + q] != 0xff) {
                                    if (bad++ == 0)
                                        run_fail(r, "output row %d (a gap after seq %d) was written", row, b);
                                    break;
                                }
                            continue;
                        }
                        float o[OKV_FMT_MAX_HEAD_DIM];
                        conf_load(c->out_dtype, gb[kv] + off * es, o, (size_t)d);
                        int int2 = pos >= h.s0 && pos < h.s0 + i0[b];
                        size_t co = 0, mo = 0, e = 0;
                        if (int2) {
                            co = hc_int2_codes_at(&h, b, pos - h.s0, kv, hd);
                            mo = hc_int2_meta_at(&h, b, pos - h.s0, kv, hd);
                        } else {
                            e = hc_bf16_row_index(&h, b, hc_bf16_slot(&h, pos), kv, hd);
                        }
                        for (int q = 0; q < d; ++q) {
                            double want, slack;
                            if (int2) {
                                want = hc_dequant(&h, h.ipool + co, h.ipool + mo, q);
                                int gi = q / h.g;
                                float sc, lo;
                                conf_load((okv_dtype_t)h.meta, h.ipool + mo + (size_t)(2 * gi) * h.msz, &sc, 1);
                                conf_load((okv_dtype_t)h.meta, h.ipool + mo + (size_t)(2 * gi + 1) * h.msz, &lo, 1);
                                slack = (fabs(lo) + 3.0 * fabs(sc)) * 1.2e-7; /* fma vs mul+add */
                            } else {
                                want = okv_bf16_to_f32(h.bpool[e + q]);
                                slack = 0.0;
                            }
                            double tol = eps * 1.001 * (fabs(want) + slack) + slack + conf_dtype_tiny(c->out_dtype);
                            if (!(fabs(o[q] - want) <= tol) && bad++ == 0)
                                run_fail(r, "seq %d position %d (%s) %s head %d channel %d: %.9g, expected %.9g", b,
                                         pos, int2 ? "INT2" : "BF16", kv ? "V" : "K", hd, q, (double)o[q], want);
                        }
                    }
            }
        }
        if (bad > 1) run_fail(r, "%ld mismatches in all", bad);
    }
    check_pools_unchanged(r, &h, &dc);
done:
    hc_free(&h);
    free(t);
    free(i0);
    free(optr);
    free(got[0]);
    free(got[1]);
    return st;
}

/* ------------------------------------------------------- attention checks -- */
typedef struct att_err {
    double max_abs, scale, l2_num, l2_den;
    long bad;
} att_err_t;

static void att_accum(att_err_t *e, const float *o, const double *ref, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        double df = (double)o[i] - ref[i];
        if (!(fabs(df) <= e->max_abs)) e->max_abs = isnan(df) ? INFINITY : fmax(e->max_abs, fabs(df));
        e->scale = fmax(e->scale, fabs(ref[i]));
        e->l2_num += df * df;
        e->l2_den += ref[i] * ref[i];
    }
}

static void att_verdict(run_t *r, const att_err_t *e, okv_dtype_t qt, okv_dtype_t ot, const char *what)
{
    double eq = qt == OKV_DTYPE_F32 ? 0.0 : conf_dtype_eps(qt), eo = ot == OKV_DTYPE_F32 ? 0.0 : conf_dtype_eps(ot);
    double rel = sqrt(e->l2_num / fmax(e->l2_den, 1e-300));
    double tol_rel = CONF_ATT_REL_L2 + 2.0 * eo + eq;
    double tol_abs = (CONF_ATT_MAX_ABS + 4.0 * eo + 2.0 * eq) * fmax(e->scale, 1e-30);
    if (!(rel <= tol_rel) || !(e->max_abs <= tol_abs) || isnan(rel))
        run_fail(r, "%s: max_abs %.3g (tol %.3g, max|o| %.3g), rel_l2 %.3g (tol %.3g)", what, e->max_abs, tol_abs,
                 e->scale, rel, tol_rel);
}

/* softmax(q K^T * scale) V over rows kr/vr [n][hkv][d] (head hd) in double */
static void att_row(const float *q, int d, double sm, const float *const *kr, const float *const *vr, int n,
                    double *logit, double *o, double *lse, double *l1max)
{
    double mx = -INFINITY, l1 = 0.0;
    for (int t = 0; t < n; ++t) {
        double a = 0.0, b = 0.0;
        for (int c = 0; c < d; ++c) {
            double pr = (double)q[c] * kr[t][c];
            a += pr;
            b += fabs(pr);
        }
        logit[t] = a * sm;
        mx = fmax(mx, logit[t]);
        l1 = fmax(l1, b * sm);
    }
    if (l1max) *l1max = l1;
    double s = 0.0;
    for (int c = 0; c < d; ++c)
        o[c] = 0.0;
    for (int t = 0; t < n; ++t) {
        double p = exp(logit[t] - mx);
        s += p;
        for (int c = 0; c < d; ++c)
            o[c] += p * vr[t][c];
    }
    for (int c = 0; c < d; ++c)
        o[c] /= s;
    *lse = mx + log(s);
}

/* ------------------------------------------------------------------ decode -- */
static okv_status_t run_decode_once(run_t *r, okv_context_t *ctx, okv_decode_params_t *p, dbuf_t *dout, dbuf_t *dlse,
                                    int splits)
{
    if ((dout && !dbuf_poison(r, dout)) || (dlse && !dbuf_poison(r, dlse))) return INTERNAL;
    p->num_splits = splits;
    return okv_decode_attention(ctx, p);
}

static okv_status_t op_decode(run_t *r, okv_context_t *ctx)
{
    const conf_case_t *c = r->c;
    conf_rng_t rng;
    conf_rng_seed(&rng, c->seed);
    int B = c->batch, d = c->d, hkv = c->hkv, Hq = c->hq, g = c->hq / c->hkv;
    int *t = calloc((size_t)B, sizeof(int)), *i0 = calloc((size_t)B, sizeof(int));
    hcache_t h;
    memset(&h, 0, sizeof h);
    void *qs = NULL, *got = NULL;
    float *q = NULL, *R = NULL, *K = NULL, *V = NULL, *o = NULL, *lse = NULL, *o2 = NULL;
    int *rs = NULL;
    double *logit = NULL, *ref = NULL, *rlse = NULL, *l1 = NULL;
    okv_status_t st = INTERNAL;
    if (!t || !i0) {
        st = oom(r);
        goto done;
    }
    hcache_t tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.s0 = c->s0, tmp.w = c->w, tmp.f = c->f, tmp.batch = B;
    seq_states(&tmp, &rng, c->ctx, c->ctx / 2 > 1 ? c->ctx / 2 : 1, t, i0);
    if (c->empty_seq && B > 1) t[B - 1] = i0[B - 1] = 0;
    if (!make_cache(r, &h, &rng, 0, t, i0, i0)) goto done;
    q = gen_rows(&rng, B, Hq, d, 2.0f, c->in_dtype, &qs);
    int nrot = c->per_head ? hkv : 1;
    R = gen_rotations(&rng, nrot, d);
    size_t cnt = (size_t)B * Hq * d;
    got = malloc(cnt * esz(c->out_dtype));
    o = malloc(cnt * sizeof(float));
    o2 = malloc(cnt * sizeof(float));
    lse = malloc((size_t)B * Hq * sizeof(float) * 2);
    if (!q || !R || !got || !o || !o2 || !lse) {
        st = oom(r);
        goto done;
    }
    if (c->err == CONF_ERR_NAN) conf_store(c->in_dtype, &(float){NAN}, (char *)qs + esz(c->in_dtype) * (cnt - 3), 1);
    dcache_t dc;
    if (!hc_upload(r, ctx, &h, &dc)) goto done;
    dbuf_t *dq = dbuf_new(r, ctx, "q", cnt * esz(c->in_dtype), qs);
    dbuf_t *dout = c->err == CONF_ERR_SMALL_BUF
                       ? dbuf_new_short(r, ctx, "out", cnt * esz(c->out_dtype) - esz(c->out_dtype))
                       : dbuf_new(r, ctx, "out", cnt * esz(c->out_dtype), NULL);
    dbuf_t *dlse = c->with_aux ? dbuf_new(r, ctx, "lse", (size_t)B * Hq * 4, NULL) : NULL;
    dbuf_t *dR = dbuf_new(r, ctx, "v_rotation", (size_t)nrot * d * d * 4, R);
    if (!dq || !dout || (c->with_aux && !dlse) || !dR) goto done;
    if (c->err == CONF_ERR_BAD_PAGE && !bad_page_write(r, &dc, &h, 0)) goto done;
    okv_decode_params_t p;
    okv_decode_params_init(&p);
    p.cache = dc.view;
    p.q = c->err == CONF_ERR_NULL_BUF ? (okv_ref_t){NULL, 0} : dref(dq);
    p.q_dtype = c->in_dtype;
    p.out = dref(dout);
    p.out_dtype = c->out_dtype;
    p.lse = dref(dlse);
    p.sm_scale = 0.0f;
    p.max_seq_len = c->ctx;
    p.v_rotation = dref(dR);
    p.per_head_rotation = c->per_head;
    p.unrotate_output = c->unrotate;
    int alt = c->splits == 0 ? 3 : 0;
    int split_set[3] = {c->splits, 1, alt};
    size_t ws = 0;
    for (int k = 0; k < 3; ++k) {
        size_t b = 0;
        p.num_splits = split_set[k];
        okv_status_t s2 = okv_decode_workspace_size(ctx, &p, &b);
        if (s2 != OKV_SUCCESS) {
            if (c->err != CONF_ERR_NONE || s2 == OKV_ERROR_UNSUPPORTED) {
                st = s2;
                goto done;
            }
            CALL_FAILED(s2, "okv_decode_workspace_size", ctx);
            goto done;
        }
        ws = b > ws ? b : ws;
    }
    dbuf_t *dws = ws ? dbuf_new(r, ctx, "workspace", ws, NULL) : NULL;
    if (ws && !dws) goto done;
    p.workspace = dref(dws);
    p.workspace_bytes = ws;
    st = run_decode_once(r, ctx, &p, dout, dlse, c->splits);
    if (c->err != CONF_ERR_NONE || st != OKV_SUCCESS) goto done;
    if (!dbuf_get(r, dout, got, cnt * esz(c->out_dtype))) goto done;
    conf_load(c->out_dtype, got, o, cnt);
    if (dlse && !dbuf_get(r, dlse, lse, (size_t)B * Hq * 4)) goto done;
    /* float64 recomputation on the K/V the ref backend dequantizes from the same pages */
    if (!ref_dequantize(r, &h, &K, &V, &rs)) goto done;
    int maxt = 0;
    for (int b = 0; b < B; ++b)
        maxt = t[b] > maxt ? t[b] : maxt;
    logit = malloc((size_t)(maxt + 1) * sizeof(double));
    ref = calloc(cnt, sizeof(double));
    rlse = calloc((size_t)B * Hq, sizeof(double));
    l1 = calloc((size_t)B * Hq, sizeof(double));
    const float **kr = malloc((size_t)(maxt + 1) * sizeof(float *)),
                **vr = malloc((size_t)(maxt + 1) * sizeof(float *));
    if (!logit || !ref || !rlse || !l1 || !kr || !vr) {
        free(kr);
        free(vr);
        oom(r);
        goto done;
    }
    double sm = 1.0 / sqrt((double)d);
    for (int b = 0; b < B; ++b) {
        for (int hq = 0; hq < Hq; ++hq) {
            int hd = hq / g;
            for (int tt = 0; tt < t[b]; ++tt) {
                kr[tt] = K + ((size_t)(rs[b] + tt) * hkv + hd) * d;
                vr[tt] = V + ((size_t)(rs[b] + tt) * hkv + hd) * d;
            }
            double ov[OKV_FMT_MAX_HEAD_DIM];
            double *dst = ref + ((size_t)b * Hq + hq) * d;
            if (t[b] == 0) {
                /* the contract: an empty sequence yields a zero output and lse = -inf */
                for (int j = 0; j < d; ++j)
                    dst[j] = 0.0;
                rlse[b * Hq + hq] = -INFINITY;
                continue;
            }
            att_row(q + ((size_t)b * Hq + hq) * d, d, sm, kr, vr, t[b], logit, ov, &rlse[b * Hq + hq],
                    &l1[b * Hq + hq]);
            if (c->unrotate) {
                const float *Rh = R + (size_t)(c->per_head ? hd : 0) * d * d;
                for (int j = 0; j < d; ++j) {
                    double a = 0.0;
                    for (int m = 0; m < d; ++m)
                        a += ov[m] * Rh[(size_t)j * d + m];
                    dst[j] = a;
                }
            } else {
                memcpy(dst, ov, (size_t)d * sizeof(double));
            }
        }
    }
    free(kr);
    free(vr);
    att_err_t e = {0};
    att_accum(&e, o, ref, cnt);
    att_verdict(r, &e, c->in_dtype, c->out_dtype, "out vs float64");
    for (int b = 0; b < B; ++b)
        for (size_t k = (size_t)b * Hq * d; t[b] == 0 && k < (size_t)(b + 1) * Hq * d; ++k)
            if (o[k] != 0.0f) {
                run_fail(r, "seq %d is empty: out[%zu] = %.9g, expected 0", b, k - (size_t)b * Hq * d, (double)o[k]);
                break;
            }
    if (dlse) {
        for (int k = 0; k < B * Hq; ++k) {
            double tl = CONF_LSE_ABS * fmax(1.0, fabs(rlse[k])) + 2.0 * CONF_BF16_U * l1[k];
            int ok = isinf(rlse[k]) ? (isinf(lse[k]) && lse[k] < 0) : fabs((double)lse[k] - rlse[k]) <= tl;
            if (!ok) {
                run_fail(r, "lse[%d][%d] = %.7g, expected %.7g (tol %.3g)", k / Hq, k % Hq, (double)lse[k], rlse[k],
                         tl);
                break;
            }
        }
    }
    /* split-count invariance: every num_splits meets the same bound */
    for (int k = 1; k < 3 && !r->failed; ++k) {
        okv_status_t s2 = run_decode_once(r, ctx, &p, dout, dlse, split_set[k]);
        if (s2 != OKV_SUCCESS) {
            CALL_FAILED(
                s2, split_set[k] == 1 ? "okv_decode_attention (num_splits 1)" : "okv_decode_attention (num_splits alt)",
                ctx);
            break;
        }
        if (!dbuf_get(r, dout, got, cnt * esz(c->out_dtype))) break;
        conf_load(c->out_dtype, got, o2, cnt);
        att_err_t e2 = {0};
        att_accum(&e2, o2, ref, cnt);
        char what[96];
        snprintf(what, sizeof what, "split-count invariance: num_splits %d vs float64", split_set[k]);
        att_verdict(r, &e2, c->in_dtype, c->out_dtype, what);
        if (r->failed) {
            double md = 0.0;
            size_t at = 0;
            for (size_t k2 = 0; k2 < cnt; ++k2)
                if (fabs((double)o2[k2] - o[k2]) > md) md = fabs((double)o2[k2] - o[k2]), at = k2;
            run_fail(r, "largest difference to num_splits %d: out[%zu] %.9g vs %.9g", c->splits, at, (double)o2[at],
                     (double)o[at]);
        }
    }
    check_pools_unchanged(r, &h, &dc);
done:
    hc_free(&h);
    free(t);
    free(i0);
    free(qs);
    free(q);
    free(R);
    free(got);
    free(o);
    free(o2);
    free(lse);
    free(K);
    free(V);
    free(rs);
    free(logit);
    free(ref);
    free(rlse);
    free(l1);
    return st;
}

/* ----------------------------------------------------------------- prefill -- */
static okv_status_t op_prefill(run_t *r, okv_context_t *ctx)
{
    const conf_case_t *c = r->c;
    conf_rng_t rng;
    conf_rng_seed(&rng, c->seed);
    int B = c->batch, d = c->d, hkv = c->hkv, Hq = c->hq, g = c->hq / c->hkv;
    int *t = calloc((size_t)B, sizeof(int)), *i0 = calloc((size_t)B, sizeof(int));
    int32_t *qptr = malloc((size_t)(B + 1) * 4);
    hcache_t h;
    memset(&h, 0, sizeof h);
    void *qs = NULL, *ks = NULL, *vs = NULL, *got = NULL;
    float *q = NULL, *kn = NULL, *vn = NULL, *K = NULL, *V = NULL, *o = NULL;
    int *rs = NULL;
    double *logit = NULL, *ref = NULL;
    const float **kr = NULL, **vr = NULL;
    okv_status_t st = INTERNAL;
    if (!t || !i0 || !qptr) {
        st = oom(r);
        goto done;
    }
    hcache_t tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.s0 = c->s0, tmp.w = c->w, tmp.f = c->f, tmp.batch = B;
    seq_states(&tmp, &rng, c->ctx, 0, t, i0);
    if (!make_cache(r, &h, &rng, 0, t, i0, i0)) goto done;
    qptr[0] = 0;
    for (int b = 0; b < B; ++b)
        qptr[b + 1] = qptr[b] + (b == 0 ? c->n_new : 1 + conf_rng_int(&rng, c->n_new));
    int N = qptr[B];
    q = gen_rows(&rng, N, Hq, d, 2.0f, c->in_dtype, &qs);
    kn = gen_rows(&rng, N, hkv, d, 8.0f, c->in_dtype, &ks);
    vn = gen_rows(&rng, N, hkv, d, 3.0f, c->in_dtype, &vs);
    size_t cnt = (size_t)N * Hq * d;
    got = malloc(cnt * esz(c->out_dtype));
    o = malloc(cnt * sizeof(float));
    if (!q || !kn || !vn || !got || !o) {
        st = oom(r);
        goto done;
    }
    if (c->err == CONF_ERR_NAN) conf_store(c->in_dtype, &(float){NAN}, (char *)qs + esz(c->in_dtype) * 7, 1);
    dcache_t dc;
    if (!hc_upload(r, ctx, &h, &dc)) goto done;
    dbuf_t *dqp = dbuf_new(r, ctx, "q_indptr", (size_t)(B + 1) * 4, qptr);
    dbuf_t *dq = dbuf_new(r, ctx, "q", cnt * esz(c->in_dtype), qs);
    dbuf_t *dk = dbuf_new(r, ctx, "k_new", (size_t)N * hkv * d * esz(c->in_dtype), ks);
    dbuf_t *dv = dbuf_new(r, ctx, "v_new", (size_t)N * hkv * d * esz(c->in_dtype), vs);
    dbuf_t *dout = c->err == CONF_ERR_SMALL_BUF
                       ? dbuf_new_short(r, ctx, "out", cnt * esz(c->out_dtype) - esz(c->out_dtype))
                       : dbuf_new(r, ctx, "out", cnt * esz(c->out_dtype), NULL);
    if (!dqp || !dq || !dk || !dv || !dout) goto done;
    if (c->err == CONF_ERR_BAD_PAGE && !bad_page_write(r, &dc, &h, 0)) goto done;
    okv_prefill_params_t p;
    okv_prefill_params_init(&p);
    p.cache = dc.view;
    p.q_indptr = dref(dqp);
    p.n_rows = N;
    p.q = c->err == CONF_ERR_NULL_BUF ? (okv_ref_t){NULL, 0} : dref(dq);
    p.k_new = dref(dk);
    p.v_new = dref(dv);
    p.in_dtype = c->in_dtype;
    p.out = dref(dout);
    p.out_dtype = c->out_dtype;
    p.sm_scale = 0.0f;
    int maxn = 0, maxt = 0;
    for (int b = 0; b < B; ++b) {
        maxn = qptr[b + 1] - qptr[b] > maxn ? qptr[b + 1] - qptr[b] : maxn;
        maxt = t[b] > maxt ? t[b] : maxt;
    }
    p.max_seq_len = maxt + maxn;
    size_t ws = 0;
    okv_status_t s2 = okv_prefill_workspace_size(ctx, &p, &ws);
    if (s2 != OKV_SUCCESS) {
        if (c->err == CONF_ERR_NONE && s2 != OKV_ERROR_UNSUPPORTED) CALL_FAILED(s2, "okv_prefill_workspace_size", ctx);
        st = s2;
        goto done;
    }
    dbuf_t *dws = ws ? dbuf_new(r, ctx, "workspace", ws, NULL) : NULL;
    if (ws && !dws) goto done;
    p.workspace = dref(dws);
    p.workspace_bytes = ws;
    st = okv_prefill_attention(ctx, &p);
    if (c->err != CONF_ERR_NONE || st != OKV_SUCCESS) goto done;
    if (!dbuf_get(r, dout, got, cnt * esz(c->out_dtype))) goto done;
    conf_load(c->out_dtype, got, o, cnt);
    if (!ref_dequantize(r, &h, &K, &V, &rs)) goto done;
    logit = malloc((size_t)(maxt + maxn + 1) * sizeof(double));
    ref = malloc(cnt * sizeof(double));
    kr = malloc((size_t)(maxt + maxn + 1) * sizeof(float *));
    vr = malloc((size_t)(maxt + maxn + 1) * sizeof(float *));
    if (!logit || !ref || !kr || !vr) {
        oom(r);
        goto done;
    }
    double sm = 1.0 / sqrt((double)d), lse;
    for (int b = 0; b < B; ++b) {
        for (int j = 0; j < qptr[b + 1] - qptr[b]; ++j) {
            int row = qptr[b] + j;
            for (int hq = 0; hq < Hq; ++hq) {
                int hd = hq / g;
                for (int tt = 0; tt < t[b]; ++tt) {
                    kr[tt] = K + ((size_t)(rs[b] + tt) * hkv + hd) * d;
                    vr[tt] = V + ((size_t)(rs[b] + tt) * hkv + hd) * d;
                }
                for (int jj = 0; jj <= j; ++jj) {
                    kr[t[b] + jj] = kn + ((size_t)(qptr[b] + jj) * hkv + hd) * d;
                    vr[t[b] + jj] = vn + ((size_t)(qptr[b] + jj) * hkv + hd) * d;
                }
                att_row(q + ((size_t)row * Hq + hq) * d, d, sm, kr, vr, t[b] + j + 1, logit,
                        ref + ((size_t)row * Hq + hq) * d, &lse, NULL);
            }
        }
    }
    att_err_t e = {0};
    att_accum(&e, o, ref, cnt);
    att_verdict(r, &e, c->in_dtype, c->out_dtype, "out vs float64");
    check_pools_unchanged(r, &h, &dc);
done:
    hc_free(&h);
    free(t);
    free(i0);
    free(qptr);
    free(qs);
    free(ks);
    free(vs);
    free(q);
    free(kn);
    free(vn);
    free(got);
    free(o);
    free(K);
    free(V);
    free(rs);
    free(logit);
    free(ref);
    free(kr);
    free(vr);
    return st;
}

/* --------------------------------------------------------------- dispatch -- */
typedef okv_status_t (*op_fn)(run_t *, okv_context_t *);
static const op_fn k_ops[CONF_OP_COUNT] = {op_rotate, op_append,  op_demote, op_dequantize,
                                           op_decode, op_prefill, op_moments};

/* Statuses the contract documents for each invalid-argument kind. */
static int expected_status(conf_err_t e, okv_status_t st)
{
    switch (e) {
    case CONF_ERR_NULL_BUF: return st == OKV_ERROR_NULL_POINTER;
    case CONF_ERR_HEAD_DIM: return st == OKV_ERROR_UNSUPPORTED_HEAD_DIM;
    case CONF_ERR_GQA: return st == OKV_ERROR_BAD_SHAPE || st == OKV_ERROR_INVALID_ARGUMENT;
    case CONF_ERR_SMALL_BUF: return st == OKV_ERROR_BAD_SHAPE;
    case CONF_ERR_NAN: return st == OKV_ERROR_NONFINITE_INPUT;
    case CONF_ERR_BAD_PAGE: return st == OKV_ERROR_INVALID_ARGUMENT || st == OKV_ERROR_BAD_SHAPE;
    case CONF_ERR_META_OVF: return st == OKV_ERROR_METADATA_OVERFLOW;
    default: return 0;
    }
}

conf_verdict_t conf_run_case(conf_session_t *s, const conf_case_t *c, char *msg, size_t cap)
{
    run_t *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(msg, cap, "runner: out of host memory");
        return CONF_FAIL;
    }
    msg[0] = '\0';
    r->s = s;
    r->c = c;
    r->msg = msg;
    r->cap = cap;
    conf_verdict_t v = CONF_PASS;
    okv_status_t st = k_ops[c->op](r, s->ctx);
    if (c->err != CONF_ERR_NONE && c->kbias && st == OKV_ERROR_UNSUPPORTED && !r->failed) {
        /* an optional capability (OKV_CAP_KEY_BIAS) the backend lacks: the core refuses
         * the call before its arguments are looked at */
        v = CONF_UNSUPPORTED;
    } else if (c->err != CONF_ERR_NONE) {
        if (!r->failed) {
            okv_status_t want = st;
            int is_ref = s->ctx == s->ref;
            if (!is_ref) {
                run_t *r2 = calloc(1, sizeof *r2);
                char m2[512] = "";
                if (!r2) {
                    run_fail(r, "runner: out of host memory");
                } else {
                    r2->s = s;
                    r2->c = c;
                    r2->msg = m2;
                    r2->cap = sizeof m2;
                    want = k_ops[c->op](r2, s->ref);
                    run_check_fences(r2);
                    run_free(r2);
                    free(r2);
                    if (m2[0]) run_fail(r, "on ref: %s", m2);
                }
            }
            if (!r->failed) {
                if (!expected_status(c->err, want))
                    run_fail(r, "%s returned %s, not a status the contract documents for this error",
                             is_ref ? "ref" : "ref (the oracle)", okv_status_string(want));
                else if (st != want)
                    run_fail(r, "returned %s, ref returns %s%s%s%s", okv_status_string(st), okv_status_string(want),
                             st != OKV_SUCCESS ? " (" : "", st != OKV_SUCCESS ? okv_context_last_error(s->ctx) : "",
                             st != OKV_SUCCESS ? ")" : "");
            }
        }
    } else if (st == OKV_ERROR_UNSUPPORTED && !r->failed) {
        v = CONF_UNSUPPORTED;
    } else if (st != OKV_SUCCESS && !r->failed) {
        run_fail(r, "okv_%s -> %s: %s", conf_op_names[c->op], okv_status_string(st), okv_context_last_error(s->ctx));
    }
    run_check_fences(r);
    run_free(r);
    if (r->failed) v = CONF_FAIL;
    free(r);
    return v;
}
