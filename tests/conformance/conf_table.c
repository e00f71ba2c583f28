/* conf_table.c - the conformance case table and canonical descriptors.
 *
 * The table is data: explicit rows for the edge cases (tier boundaries, awkward
 * pages, long contexts, invalid arguments) plus deterministic sweeps that walk the
 * parameter lists below so every value appears in several combinations. Every case
 * has its own seed. `quick` marks the subset the Check suite runs per (op, backend).
 */
#include "conf_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const conf_op_names[CONF_OP_COUNT] = {"rotate", "append",  "demote", "dequantize",
                                                  "decode", "prefill", "moments"};
const char *const conf_err_names[CONF_ERR_COUNT] = {"none",     "nullbuf", "headdim", "gqa",
                                                    "smallbuf", "nan",     "badpage", "metaovf"};

const char *conf_dtype_name(okv_dtype_t t)
{
    switch (t) {
    case OKV_DTYPE_F32: return "f32";
    case OKV_DTYPE_F16: return "f16";
    case OKV_DTYPE_BF16: return "bf16";
    case OKV_DTYPE_F64: return "f64";
    case OKV_DTYPE_I32: return "i32";
    default: return "?";
    }
}

/* ---- parameter lists the sweeps walk ---- */
static const int k_gqa[] = {1, 2, 3, 4, 5, 6, 7, 8, 12, 16};
static const int k_hkv[] = {1, 2, 4, 3, 8};
static const int k_dim[] = {128, 64, 256};
static const int k_grp[] = {0, 32, 64, 128}; /* 0: head_dim */
static const int k_page[] = {16, 1, 3, 33, 8, 64};
static const okv_dtype_t k_io[] = {OKV_DTYPE_BF16, OKV_DTYPE_F16, OKV_DTYPE_F32};
static const okv_dtype_t k_meta[] = {OKV_DTYPE_F16, OKV_DTYPE_BF16, OKV_DTYPE_F32};
static const int k_splits[] = {0, 1, 7, 2, 16, 3};
#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static conf_case_t base(conf_op_t op)
{
    conf_case_t c;
    memset(&c, 0, sizeof c);
    c.op = op;
    c.batch = 1;
    c.hq = 8;
    c.hkv = 2;
    c.d = 128;
    c.g = 128;
    c.page = 16;
    c.s0 = 64;
    c.w = 256;
    c.f = 8;
    c.ctx = 100;
    c.n_new = 1;
    c.steps = 1;
    c.in_dtype = OKV_DTYPE_BF16;
    c.out_dtype = OKV_DTYPE_F32;
    c.meta = OKV_DTYPE_F16;
    c.quant = OKV_QUANT_UNIFORM;
    c.clip = OKV_CLIP_SORT;
    return c;
}

/* Small window (S0 4, W 8, F 3) so every tier and the flush are reached at short
 * lengths; the medium one keeps pages and windows unaligned. */
static void win_small(conf_case_t *c) { c->s0 = 4, c->w = 8, c->f = 3; }
static void win_medium(conf_case_t *c) { c->s0 = 16, c->w = 40, c->f = 5; }

typedef struct tbuild {
    conf_case_t *v;
    int n, cap;
} tbuild_t;

static void add(tbuild_t *t, conf_case_t c, int quick)
{
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 256;
        conf_case_t *v = realloc(t->v, (size_t)cap * sizeof *v);
        if (!v) return;
        t->v = v;
        t->cap = cap;
    }
    if (c.g == 0 || c.g > c.d) c.g = c.d;
    c.quick = quick;
    /* the seed follows from the case's parameters (FNV-1a of its descriptor), so
     * adding cases elsewhere in the table never changes an existing descriptor */
    char desc[512];
    c.seed = 0;
    conf_descriptor(&c, desc, sizeof desc);
    uint64_t hsh = 1469598103934665603ull;
    for (const char *p = desc; *p; ++p)
        hsh = (hsh ^ (unsigned char)*p) * 1099511628211ull;
    c.seed = hsh % 99991u + 1u;
    for (int k = 0; k < t->n; ++k)
        if (t->v[k].seed == c.seed) c.seed += 99991u; /* a repeated shape gets its own inputs */
    t->v[t->n++] = c;
}

/* Shapes for sweep index i: Hkv, g, d, group, page. */
static void shape(conf_case_t *c, int i)
{
    c->hkv = k_hkv[i % N_OF(k_hkv)];
    c->hq = c->hkv * k_gqa[(i * 3 + 1) % N_OF(k_gqa)];
    c->d = k_dim[i % N_OF(k_dim)];
    c->g = k_grp[(i / 3) % N_OF(k_grp)];
    c->page = k_page[(i * 5 + 2) % N_OF(k_page)];
}

static void quant_of(conf_case_t *c, int i)
{
    c->meta = k_meta[(i / 2) % N_OF(k_meta)];
    c->quant = (i % 3 == 2) ? OKV_QUANT_LLOYD_MAX : OKV_QUANT_UNIFORM;
    c->clip = (i % 4 == 1 || i % 4 == 2) ? OKV_CLIP_BISECT : OKV_CLIP_SORT;
    c->noclip = (i % 7 == 5);
}

static void build_rotate(tbuild_t *t)
{
    static const int rows[] = {1, 7, 33, 256, 5, 64};
    for (int i = 0; i < 18; ++i) {
        conf_case_t c = base(CONF_OP_ROTATE);
        shape(&c, i);
        c.n_new = rows[i % N_OF(rows)];
        c.in_dtype = k_io[i % 3];
        c.out_dtype = k_io[(i / 3 + i) % 3];
        c.per_head = (i % 4 == 1);
        c.unrotate = (i % 3 == 2); /* transpose */
        add(t, c, i % 3 == 0 || i == 4);
    }
    conf_case_t c = base(CONF_OP_ROTATE);
    c.n_new = 2048, c.hq = 32, c.hkv = 8, c.d = 128;
    add(t, c, 0);
    /* a bias (prefill keys centered like the cache's): per-head rotations shared by
     * head groups of 3; one rotation, transposed, wide rows */
    c = base(CONF_OP_ROTATE);
    c.kbias = 1, c.n_new = 33, c.hq = 12, c.hkv = 4, c.d = 128, c.per_head = 1;
    c.in_dtype = OKV_DTYPE_BF16, c.out_dtype = OKV_DTYPE_F32;
    add(t, c, 1);
    c = base(CONF_OP_ROTATE);
    c.kbias = 1, c.n_new = 64, c.hq = 4, c.hkv = 2, c.d = 256, c.unrotate = 1;
    c.in_dtype = OKV_DTYPE_F32, c.out_dtype = OKV_DTYPE_BF16;
    add(t, c, 0);
}

static void build_moments(tbuild_t *t)
{
    static const int rows[] = {1, 17, 256, 1000, 3, 64};
    for (int i = 0; i < 14; ++i) {
        conf_case_t c = base(CONF_OP_MOMENTS);
        shape(&c, i);
        c.n_new = rows[i % N_OF(rows)];
        c.in_dtype = k_io[(i + 1) % 3];
        c.out_dtype = (i % 3 == 1) ? OKV_DTYPE_F32 : OKV_DTYPE_F64;
        c.with_aux = (i % 2 == 1); /* weights */
        add(t, c, i % 3 == 0 || i == 1);
    }
    conf_case_t c = base(CONF_OP_MOMENTS);
    c.n_new = 8192, c.hq = 16, c.hkv = 1, c.d = 128, c.out_dtype = OKV_DTYPE_F64, c.with_aux = 1;
    c.in_dtype = OKV_DTYPE_F32;
    add(t, c, 0);
}

static void build_append(tbuild_t *t)
{
    /* tier boundaries with the small window (S0 4, W 8, F 3): sink only, sink crossing,
     * recent filling, exactly at the flush, through several flushes; decode steps and
     * prefill chunks */
    static const int sm[][3] = {/* ctx, n_new, steps */
                                {0, 1, 1},  {0, 3, 1},  {0, 4, 1},  {0, 5, 1},  {3, 1, 1},  {3, 2, 1},  {4, 1, 1},
                                {11, 1, 1}, {12, 1, 1}, {14, 1, 1}, {14, 1, 4}, {0, 1, 40}, {0, 15, 1}, {0, 16, 1},
                                {0, 40, 1}, {13, 7, 3}, {20, 1, 9}, {5, 13, 2}, {0, 2, 17}, {25, 11, 3}};
    for (int i = 0; i < N_OF(sm); ++i) {
        conf_case_t c = base(CONF_OP_APPEND);
        shape(&c, i);
        if (c.d == 256) c.d = 64;
        win_small(&c);
        c.batch = 1 + i % 3;
        c.ctx = sm[i][0], c.n_new = sm[i][1], c.steps = sm[i][2];
        c.in_dtype = k_io[i % 3];
        quant_of(&c, i);
        c.per_head = (i % 5 == 3);
        add(t, c, i % 2 == 0);
    }
    /* default window (64, 256, 8): prompt lengths around S0 + W and S0 + W + F, decode
     * steps crossing a flush, a long prefill chunk */
    static const int df[][3] = {{0, 300, 1},  {0, 320, 1}, {0, 327, 1},   {0, 328, 1}, {0, 1000, 1},  {327, 1, 1},
                                {320, 1, 12}, {330, 1, 9}, {1000, 64, 2}, {63, 2, 1},  {4000, 97, 1}, {0, 8192, 1}};
    for (int i = 0; i < N_OF(df); ++i) {
        conf_case_t c = base(CONF_OP_APPEND);
        shape(&c, i + 7);
        c.batch = 1 + (i % 2);
        c.ctx = df[i][0], c.n_new = df[i][1], c.steps = df[i][2];
        c.in_dtype = k_io[(i + 1) % 3];
        quant_of(&c, i + 3);
        c.per_head = (i % 4 == 2);
        if (c.n_new >= 4000) c.clip = OKV_CLIP_BISECT, c.hkv = 1, c.hq = 4, c.d = 128, c.batch = 1;
        add(t, c, i == 3 || i == 5 || i == 9);
    }
    /* medium window, awkward pages */
    for (int i = 0; i < 6; ++i) {
        conf_case_t c = base(CONF_OP_APPEND);
        shape(&c, i + 2);
        win_medium(&c);
        c.batch = 3;
        c.ctx = 50 + 13 * i, c.n_new = 1 + 9 * (i % 3), c.steps = 1 + i;
        c.in_dtype = k_io[i % 3];
        quant_of(&c, i + 1);
        add(t, c, i == 1);
    }
    /* key centering (k_bias): keys with a large common mean, centered before the
     * rotation in both tiers; per-head and shared biases, every input dtype */
    static const int kb[][4] = {/* ctx, n_new, steps, per_head */ {13, 7, 3, 1}, {0, 330, 1, 0}, {50, 5, 4, 1}};
    for (int i = 0; i < N_OF(kb); ++i) {
        conf_case_t c = base(CONF_OP_APPEND);
        shape(&c, i + 4);
        if (i == 0) win_small(&c), c.d = 64, c.g = 32;
        if (i == 2) win_medium(&c);
        c.kbias = 1;
        c.batch = 2 + i % 2;
        c.ctx = kb[i][0], c.n_new = kb[i][1], c.steps = kb[i][2], c.per_head = kb[i][3];
        c.in_dtype = k_io[i];
        quant_of(&c, i + 2);
        add(t, c, i == 0);
    }
}

static void build_demote(tbuild_t *t)
{
    static const int dm[][2] = {/* ctx, n_rows */ {3, 3},
                                {13, 1},
                                {14, 3},
                                {14, 9},
                                {20, 2},
                                {20, 50},
                                {100, 5},
                                {330, 8},
                                {327, 8},
                                {700, 300},
                                {1, 1},
                                {37, 4}};
    for (int i = 0; i < N_OF(dm); ++i) {
        conf_case_t c = base(CONF_OP_DEMOTE);
        shape(&c, i + 1);
        if (dm[i][0] < 64)
            win_small(&c);
        else if (i % 2)
            win_medium(&c);
        c.batch = 1 + i % 4;
        c.ctx = dm[i][0], c.n_new = dm[i][1];
        quant_of(&c, i);
        add(t, c, i % 3 == 0);
    }
}

static void build_dequantize(tbuild_t *t)
{
    static const int ctxs[] = {1, 5, 64, 65, 329, 330, 1000, 4097, 12, 200};
    for (int i = 0; i < 16; ++i) {
        conf_case_t c = base(CONF_OP_DEQUANTIZE);
        shape(&c, i);
        c.ctx = ctxs[i % N_OF(ctxs)];
        if (i % 4 == 3) win_small(&c);
        if (i % 5 == 4) win_medium(&c);
        c.batch = 1 + i % 3;
        c.out_dtype = k_io[(i + 2) % 3];
        quant_of(&c, i);
        add(t, c, i % 3 == 0);
    }
    conf_case_t c = base(CONF_OP_DEQUANTIZE);
    c.ctx = 65536, c.hkv = 1, c.hq = 1, c.page = 33, c.noclip = 1;
    add(t, c, 0);
}

static void build_decode(tbuild_t *t)
{
    static const int ctxs[] = {1, 2, 63, 64, 65, 200, 329, 330, 1000, 4097, 17, 777};
    for (int i = 0; i < 36; ++i) {
        conf_case_t c = base(CONF_OP_DECODE);
        shape(&c, i);
        c.ctx = ctxs[i % N_OF(ctxs)];
        if (i % 4 == 3) win_small(&c);
        if (i % 6 == 5) win_medium(&c);
        c.batch = 1 + (i * 7) % 4;
        c.in_dtype = k_io[i % 3];
        c.out_dtype = k_io[(i / 3) % 3];
        quant_of(&c, i);
        c.splits = k_splits[i % N_OF(k_splits)];
        c.unrotate = (i % 3 == 1);
        c.per_head = (i % 8 == 5);
        c.with_aux = (i % 2 == 0);
        add(t, c, i % 4 == 0 || i == 5 || i == 7);
    }
    /* an empty sequence in the batch: zero output, lse = -inf */
    for (int i = 0; i < 2; ++i) {
        conf_case_t c = base(CONF_OP_DECODE);
        shape(&c, 3 + i);
        c.batch = 3, c.ctx = i ? 1000 : 70, c.empty_seq = 1, c.with_aux = 1, c.splits = i ? 4 : 0;
        c.unrotate = i;
        c.in_dtype = k_io[i], c.out_dtype = k_io[2 - i];
        add(t, c, i == 0);
    }
    /* the example of the brief, then long contexts (a few only: CPU budget) */
    conf_case_t c = base(CONF_OP_DECODE);
    c.batch = 2, c.hq = 12, c.hkv = 4, c.d = 128, c.g = 128, c.page = 16, c.ctx = 4097;
    c.in_dtype = OKV_DTYPE_BF16, c.splits = 7, c.with_aux = 1;
    add(t, c, 1);
    c = base(CONF_OP_DECODE);
    c.ctx = 65536, c.hq = 8, c.hkv = 1, c.noclip = 1, c.splits = 0, c.with_aux = 1;
    add(t, c, 0);
    c = base(CONF_OP_DECODE);
    c.ctx = 70001, c.hq = 4, c.hkv = 1, c.d = 256, c.g = 64, c.page = 33, c.clip = OKV_CLIP_BISECT;
    c.splits = 16, c.unrotate = 1, c.in_dtype = OKV_DTYPE_F16, c.out_dtype = OKV_DTYPE_BF16;
    add(t, c, 0);
    c = base(CONF_OP_DECODE);
    c.ctx = 20000, c.batch = 3, c.hq = 16, c.hkv = 2, c.d = 64, c.g = 32, c.page = 3;
    c.clip = OKV_CLIP_BISECT, c.quant = OKV_QUANT_LLOYD_MAX, c.splits = 5, c.meta = OKV_DTYPE_F32;
    add(t, c, 0);
}

static void build_prefill(tbuild_t *t)
{
    static const int pf[][2] = {/* history, chunk */ {0, 1},
                                {0, 7},
                                {1, 1},
                                {5, 16},
                                {64, 3},
                                {330, 1},
                                {330, 100},
                                {1000, 17},
                                {12, 257},
                                {0, 64},
                                {4097, 9},
                                {200, 33}};
    for (int i = 0; i < N_OF(pf); ++i) {
        conf_case_t c = base(CONF_OP_PREFILL);
        shape(&c, i + 4);
        if (pf[i][0] < 64 && i % 2) win_small(&c);
        c.batch = 1 + i % 3;
        c.ctx = pf[i][0], c.n_new = pf[i][1];
        c.in_dtype = k_io[i % 3];
        c.out_dtype = k_io[(i + 1) % 3];
        quant_of(&c, i);
        add(t, c, i % 3 == 0 || i == 5);
    }
    conf_case_t c = base(CONF_OP_PREFILL);
    c.ctx = 16000, c.n_new = 64, c.hq = 8, c.hkv = 1, c.clip = OKV_CLIP_BISECT;
    add(t, c, 0);
}

/* Invalid arguments: each must fail with the same status everywhere. */
static void build_invalid(tbuild_t *t)
{
    static const struct {
        conf_op_t op;
        conf_err_t err;
    } iv[] = {
        {CONF_OP_ROTATE, CONF_ERR_NULL_BUF},      {CONF_OP_ROTATE, CONF_ERR_HEAD_DIM},
        {CONF_OP_ROTATE, CONF_ERR_SMALL_BUF},     {CONF_OP_ROTATE, CONF_ERR_GQA},
        {CONF_OP_APPEND, CONF_ERR_NULL_BUF},      {CONF_OP_APPEND, CONF_ERR_HEAD_DIM},
        {CONF_OP_APPEND, CONF_ERR_GQA},           {CONF_OP_APPEND, CONF_ERR_NAN},
        {CONF_OP_APPEND, CONF_ERR_BAD_PAGE},      {CONF_OP_APPEND, CONF_ERR_META_OVF},
        {CONF_OP_APPEND, CONF_ERR_SMALL_BUF},     {CONF_OP_DEMOTE, CONF_ERR_NULL_BUF},
        {CONF_OP_DEMOTE, CONF_ERR_BAD_PAGE},      {CONF_OP_DEQUANTIZE, CONF_ERR_NULL_BUF},
        {CONF_OP_DEQUANTIZE, CONF_ERR_SMALL_BUF}, {CONF_OP_DEQUANTIZE, CONF_ERR_BAD_PAGE},
        {CONF_OP_DEQUANTIZE, CONF_ERR_HEAD_DIM},  {CONF_OP_DECODE, CONF_ERR_NULL_BUF},
        {CONF_OP_DECODE, CONF_ERR_HEAD_DIM},      {CONF_OP_DECODE, CONF_ERR_GQA},
        {CONF_OP_DECODE, CONF_ERR_SMALL_BUF},     {CONF_OP_DECODE, CONF_ERR_NAN},
        {CONF_OP_DECODE, CONF_ERR_BAD_PAGE},      {CONF_OP_PREFILL, CONF_ERR_NULL_BUF},
        {CONF_OP_PREFILL, CONF_ERR_GQA},          {CONF_OP_PREFILL, CONF_ERR_NAN},
        {CONF_OP_PREFILL, CONF_ERR_BAD_PAGE},     {CONF_OP_PREFILL, CONF_ERR_SMALL_BUF},
        {CONF_OP_MOMENTS, CONF_ERR_NULL_BUF},     {CONF_OP_MOMENTS, CONF_ERR_HEAD_DIM},
        {CONF_OP_MOMENTS, CONF_ERR_GQA},          {CONF_OP_MOMENTS, CONF_ERR_NAN},
        {CONF_OP_MOMENTS, CONF_ERR_SMALL_BUF},
    };
    for (int i = 0; i < N_OF(iv); ++i) {
        conf_case_t c = base(iv[i].op);
        c.err = iv[i].err;
        c.batch = 2;
        c.hq = 6, c.hkv = 2, c.d = 64, c.g = 64, c.page = 4;
        c.ctx = 90, c.n_new = 3;
        if (c.op != CONF_OP_ROTATE && c.op != CONF_OP_MOMENTS) win_small(&c); /* INT2 rows at ctx 90 */
        if (c.err == CONF_ERR_HEAD_DIM) c.d = 96, c.g = 96;
        if (c.err == CONF_ERR_GQA) c.hq = 5; /* 5 % 2 != 0 */
        if (c.err == CONF_ERR_META_OVF) c.meta = OKV_DTYPE_F16, c.ctx = 10;
        add(t, c, 1);
    }
    /* a NaN in the key bias (append) / bias (rotate): nothing written */
    for (int i = 0; i < 2; ++i) {
        conf_case_t c = base(i ? CONF_OP_ROTATE : CONF_OP_APPEND);
        c.err = CONF_ERR_NAN, c.kbias = 1, c.per_head = 1;
        c.batch = 2;
        c.hq = 6, c.hkv = 2, c.d = 64, c.g = 64, c.page = 4;
        c.ctx = 90, c.n_new = 3;
        if (c.op == CONF_OP_APPEND) win_small(&c);
        add(t, c, 1);
    }
}

static conf_case_t *g_table;
static int g_count;

const conf_case_t *conf_table(int *count)
{
    if (!g_table) {
        tbuild_t t = {0};
        build_rotate(&t);
        build_append(&t);
        build_demote(&t);
        build_dequantize(&t);
        build_decode(&t);
        build_prefill(&t);
        build_moments(&t);
        build_invalid(&t);
        g_table = t.v;
        g_count = t.n;
    }
    *count = g_count;
    return g_table;
}

static const char *quant_name(okv_quantizer_t q) { return q == OKV_QUANT_LLOYD_MAX ? "lloyd" : "uniform"; }
static const char *clip_name(const conf_case_t *c)
{
    if (c->noclip) return "noclip";
    return c->clip == OKV_CLIP_BISECT ? "bisect" : "sort";
}

#define APPENDF(...)                                                                                                   \
    do {                                                                                                               \
        if (n < cap) n += (size_t)snprintf(buf + n, cap - n, __VA_ARGS__);                                             \
    } while (0)

void conf_descriptor(const conf_case_t *c, char *buf, size_t cap)
{
    size_t n = 0;
    if (cap == 0) return;
    buf[0] = '\0';
    const char *op = conf_op_names[c->op];
    switch (c->op) {
    case CONF_OP_ROTATE:
        APPENDF("%s/n%d/hq%d/hkv%d/d%d/x=%s/out=%s%s%s%s", op, c->n_new, c->hq, c->hkv, c->d,
                conf_dtype_name(c->in_dtype), conf_dtype_name(c->out_dtype), c->per_head ? "/perhead" : "",
                c->unrotate ? "/transpose" : "", c->kbias ? "/bias" : "");
        break;
    case CONF_OP_MOMENTS:
        APPENDF("%s/n%d/hq%d/hkv%d/d%d/x=%s/acc=%s%s", op, c->n_new, c->hq, c->hkv, c->d, conf_dtype_name(c->in_dtype),
                conf_dtype_name(c->out_dtype), c->with_aux ? "/weights" : "");
        break;
    default:
        APPENDF("%s/b%d/hq%d/hkv%d/d%d/g%d/p%d/win=%d,%d,%d/ctx%d", op, c->batch, c->hq, c->hkv, c->d, c->g, c->page,
                c->s0, c->w, c->f, c->ctx);
        if (c->op == CONF_OP_APPEND) APPENDF("/new%dx%d/kv=%s", c->n_new, c->steps, conf_dtype_name(c->in_dtype));
        if (c->op == CONF_OP_DEMOTE) APPENDF("/rows%d", c->n_new);
        if (c->op == CONF_OP_PREFILL) APPENDF("/new%d", c->n_new);
        if (c->op == CONF_OP_DECODE || c->op == CONF_OP_PREFILL) APPENDF("/q=%s", conf_dtype_name(c->in_dtype));
        if (c->op == CONF_OP_DECODE || c->op == CONF_OP_PREFILL || c->op == CONF_OP_DEQUANTIZE)
            APPENDF("/out=%s", conf_dtype_name(c->out_dtype));
        APPENDF("/meta=%s/%s/%s", conf_dtype_name(c->meta), quant_name(c->quant), clip_name(c));
        if (c->op == CONF_OP_DECODE)
            APPENDF("/splits=%d%s%s%s", c->splits, c->unrotate ? "/unrotate" : "", c->with_aux ? "/lse" : "",
                    c->empty_seq ? "/emptyseq" : "");
        if ((c->op == CONF_OP_DECODE || c->op == CONF_OP_APPEND) && c->per_head) APPENDF("/perhead");
        if (c->op == CONF_OP_APPEND && c->kbias) APPENDF("/kbias");
        break;
    }
    if (c->err != CONF_ERR_NONE) APPENDF("/err=%s", conf_err_names[c->err]);
    APPENDF("/seed=%llu", (unsigned long long)c->seed);
}
