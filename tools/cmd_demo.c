/* cmd_demo.c - `oscarkv demo`, the main job: calibrate rotations on an activation
 * sample, store its K/V in the INT2 cache per method (BF16, no rotation,
 * Hadamard-only, OSCAR with fixed and with fitted clips), run decode attention on
 * the best available backend and report bits/element, memory, attention error and
 * time. Quality is measured with everything in the INT2 tier (no BF16 windows), the
 * hardest setting; the default windows' bits/element are printed too. */
#include "cli.h"
#include "demo_cache.h"
#include "demo_data.h"
#include "demo_metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef OKV_SOURCE_DIR
#define OKV_SOURCE_DIR "."
#endif

typedef struct method {
    const char *name;
    okv_rotation_method_t rot;
    int fit_clips;
    int center_keys; /* subtract the calibration mean key before rotation (ours; exact for softmax) */
    int scale_keys;  /* query-energy key scaling, queries use q_rotation (ours; the library default) */
    int int2;        /* 0: BF16 baseline (no rotation, everything in the BF16 tier) */
} method_t;

static const method_t k_methods[] = {
    {"bf16", OKV_ROT_NONE, 0, 0, 0, 0},
    {"int2 no rotation", OKV_ROT_NONE, 0, 0, 0, 1},
    {"int2 hadamard", OKV_ROT_HADAMARD, 0, 0, 0, 1},
    {"oscar (paper)", OKV_ROT_OSCAR, 0, 0, 0, 1},
    {"oscar +center", OKV_ROT_OSCAR, 0, 1, 0, 1},
    {"oscar +center+fit", OKV_ROT_OSCAR, 1, 1, 0, 1},
    {"oscar +center+scale+fit", OKV_ROT_OSCAR, 1, 1, 1, 1},
};
#define N_METHODS ((int)(sizeof k_methods / sizeof k_methods[0]))

typedef struct opts {
    const char *backend, *data;
    int synthetic, layers, queries, reps, sink, recent;
} opts_t;

static int parse(int argc, char **argv, opts_t *o)
{
    o->backend = NULL;
    o->data = OKV_SOURCE_DIR "/data/gemma3-270m-sample";
    o->synthetic = 0;
    o->layers = 4;
    o->queries = 16;
    o->reps = 2;
    o->sink = 16; /* windows scaled to the 256-token sample; the library default is 64 / 256 */
    o->recent = 32;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        const char *val = (i + 1 < argc) ? argv[i + 1] : NULL;
        if (strcmp(a, "--synthetic") == 0)
            o->synthetic = 1;
        else if (strcmp(a, "--backend") == 0 && val)
            o->backend = argv[++i];
        else if (strcmp(a, "--data") == 0 && val)
            o->data = argv[++i];
        else if (strcmp(a, "--layers") == 0 && val)
            o->layers = atoi(argv[++i]);
        else if (strcmp(a, "--queries") == 0 && val)
            o->queries = atoi(argv[++i]);
        else if (strcmp(a, "--reps") == 0 && val)
            o->reps = atoi(argv[++i]);
        else if (strcmp(a, "--sink") == 0 && val)
            o->sink = atoi(argv[++i]);
        else if (strcmp(a, "--recent") == 0 && val)
            o->recent = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: oscarkv demo [--backend NAME] [--data DIR] [--synthetic] [--layers N] "
                            "[--queries M] [--reps R] [--sink S0] [--recent W]\n");
            return strcmp(a, "--help") == 0 ? 1 : -1;
        }
    }
    if (o->layers < 1 || o->queries < 1 || o->reps < 1 || o->sink < 0 || o->recent < 0) return -1;
    return 0;
}

/* Rotation set for one method: calibrated, or identity for the BF16 baseline. */
static okv_status_t make_rotations(okv_calibrator_t *cal, const method_t *m, okv_rotation_set_t **rs)
{
    okv_calib_options_t opt;
    okv_calib_options_init(&opt);
    opt.method = m->rot;
    opt.fit_clips = m->fit_clips;
    opt.center_keys = m->center_keys;
    opt.scale_keys = m->scale_keys;
    return okv_calibrator_finalize(cal, &opt, rs);
}

typedef struct result {
    double relerr, kl, ms, bpe;
    int n;
} result_t;

/* sink < 0: BF16 baseline layout is decided by the method; windows (sink, recent)
 * apply to INT2 methods, (0, 0) meaning every token in the INT2 tier. */
static okv_status_t run_method(okv_context_t *ctx, const demo_data_t *data, const method_t *m, okv_rotation_set_t *rs,
                               int32_t queries, int reps, int32_t sink, int32_t recent, result_t *res)
{
    const int32_t hq = data->n_q_heads, hkv = data->n_kv_heads, d = data->head_dim;
    okv_status_t st = OKV_SUCCESS;
    float *eye = calloc((size_t)d * d, sizeof *eye);
    if (!eye) return OKV_ERROR_OUT_OF_MEMORY;
    for (int32_t i = 0; i < d; ++i)
        eye[i * d + i] = 1.0f;
    memset(res, 0, sizeof *res);
    for (int32_t l = 0; l < data->n_layers && st == OKV_SUCCESS; ++l) {
        const demo_layer_t *L = &data->layers[l];
        const int32_t T = L->n_tokens;
        okv_cache_desc_t desc;
        okv_cache_desc_init(&desc);
        desc.n_q_heads = hq;
        desc.n_kv_heads = hkv;
        desc.head_dim = d;
        desc.sink_tokens = m->int2 ? sink : T; /* BF16 baseline: every token in the sink */
        desc.recent_tokens = m->int2 ? recent : 0;
        desc.flush_interval = m->int2 && recent > 0 ? 8 : 1;
        okv_layer_rotation_t lr;
        memset(&lr, 0, sizeof lr);
        lr.size = sizeof lr;
        if (m->int2) {
            if ((st = okv_rotation_set_get_layer(rs, l, &lr)) != OKV_SUCCESS) break;
        }
        demo_run_t r;
        memset(&r, 0, sizeof r);
        r.ctx = ctx;
        r.desc = &desc;
        r.n_tokens = T;
        r.n_queries = queries;
        r.k = L->k;
        r.v = L->v;
        r.q = L->q + ((size_t)L->n_tokens - queries) * hq * d;
        r.k_rot = m->int2 ? lr.k_rotation : eye;
        r.q_matrix = m->int2 ? lr.q_rotation : NULL;
        r.v_rot = m->int2 ? lr.v_rotation : eye;
        r.k_clip = m->int2 ? lr.k_clip_ratio : 1.0f;
        r.k_bias = m->int2 ? lr.k_mean : NULL;
        r.v_clip = m->int2 ? lr.v_clip_ratio : 1.0f;
        r.timing_reps = reps;
        size_t qn = (size_t)queries * hq * d;
        r.out = malloc(sizeof(float) * qn);
        r.q_rot = malloc(sizeof(float) * qn);
        r.k_hat = malloc(sizeof(float) * (size_t)T * queries * hkv * d);
        r.rows_indptr = malloc(sizeof(int32_t) * ((size_t)queries + 1));
        double *ref = malloc(sizeof(double) * qn);
        char err[600] = "";
        if (!r.out || !r.q_rot || !r.k_hat || !r.rows_indptr || !ref) st = OKV_ERROR_OUT_OF_MEMORY;
        if (st == OKV_SUCCESS) st = demo_run_layer(&r, err, sizeof err);
        if (st != OKV_SUCCESS) {
            fprintf(stderr, "demo: layer %d, %s: %s\n", data->layer_ids[l], m->name, err);
        } else {
            demo_shape_t s = {hq, hkv, d, T, queries, 1.0 / sqrt((double)d)};
            demo_attention_ref(&s, r.q, r.k, r.v, ref);
            res->relerr += demo_rel_err(ref, r.out, (int64_t)qn);
            res->kl += demo_attention_kl(&s, r.q, r.k, r.q_rot, r.k_hat, r.rows_indptr);
            res->ms += r.decode_ms;
            double bpe = 0;
            okv_cache_bits_per_element(&desc, T, &bpe);
            res->bpe += bpe;
            res->n++;
        }
        free(r.out), free(r.q_rot), free(r.k_hat), free(r.rows_indptr), free(ref);
    }
    free(eye);
    if (res->n) {
        res->relerr /= res->n;
        res->kl /= res->n;
        res->bpe /= res->n;
        res->ms /= res->n;
    }
    return st;
}

/* Calibration and evaluation sets: DIR/calib and DIR/eval (the committed sample:
 * different text domains), else synthetic sets of one synthetic model. */
static int load_data(const opts_t *o, demo_data_t *cal, demo_data_t *ev)
{
    char err[512] = "", path[4096];
    if (!o->synthetic) {
        snprintf(path, sizeof path, "%s/calib", o->data);
        if (demo_data_load(path, o->layers, cal, err, sizeof err) == 0) {
            snprintf(path, sizeof path, "%s/eval", o->data);
            if (demo_data_load(path, o->layers, ev, err, sizeof err) == 0) {
                if (ev->n_layers == cal->n_layers && ev->head_dim == cal->head_dim && ev->n_q_heads == cal->n_q_heads &&
                    ev->n_kv_heads == cal->n_kv_heads)
                    return 0;
                snprintf(err, sizeof err, "calib and eval sets differ in shape");
                demo_data_free(ev);
            }
            demo_data_free(cal);
        }
        printf("note: real sample not loaded (%s); using SYNTHETIC activations\n", err);
    }
    if (demo_data_synthesize(o->layers, 512, 16, 4, 128, 20261129u, 1u, cal) != 0) return -1;
    if (demo_data_synthesize(o->layers, 512, 16, 4, 128, 20261129u, 2u, ev) != 0) {
        demo_data_free(cal);
        return -1;
    }
    return 0;
}

static int32_t min_tokens(const demo_data_t *d)
{
    int32_t n = d->layers[0].n_tokens;
    for (int32_t l = 1; l < d->n_layers; ++l)
        if (d->layers[l].n_tokens < n) n = d->layers[l].n_tokens;
    return n;
}

int cmd_demo(int argc, char **argv)
{
    opts_t o;
    int pr = parse(argc, argv, &o);
    if (pr) return pr > 0 ? 0 : 2;
    demo_data_t calib, data;
    if (load_data(&o, &calib, &data) != 0) {
        fprintf(stderr, "demo: could not load or synthesize activations\n");
        return 1;
    }
    if (o.queries > min_tokens(&data)) o.queries = min_tokens(&data);
    printf("oscarkv demo\n  calibration: %s\n  evaluation:  %s\n  shape: Hq %d, Hkv %d, head_dim %d; layers",
           calib.real ? calib.source : "SYNTHETIC (outlier key channels, RoPE pairs, GQA)",
           data.real ? data.source : "SYNTHETIC, other tokens of the same synthetic model", data.n_q_heads,
           data.n_kv_heads, data.head_dim);
    for (int32_t l = 0; l < data.n_layers; ++l)
        printf(" %d", data.layer_ids[l]);
    printf("; %d decode queries per layer over the evaluation context\n", o.queries);

    int rc = 1;
    okv_context_t *ctx = NULL;
    okv_calibrator_t *cal = NULL;
    okv_context_desc_t cd;
    okv_context_desc_init(&cd);
    cd.backend = o.backend;
    okv_status_t st = okv_context_create(&cd, &ctx);
    if (st != OKV_SUCCESS) {
        fprintf(stderr, "demo: no context on backend %s: %s\n", o.backend ? o.backend : "auto", okv_status_string(st));
        goto out;
    }
    okv_device_info_t di;
    okv_device_info_init(&di);
    okv_device_get_info(okv_context_backend_name(ctx), 0, &di);
    printf("  backend: %s (%s)\n", okv_context_backend_name(ctx), di.name);

    okv_calib_desc_t desc;
    okv_calib_desc_init(&desc);
    desc.holdout_tokens = min_tokens(&calib) / 4; /* clip fitting needs held-back tokens */
    desc.n_layers = data.n_layers;
    desc.n_q_heads = data.n_q_heads;
    desc.n_kv_heads = data.n_kv_heads;
    desc.head_dim = data.head_dim;
    if ((st = okv_calibrator_create(&desc, &cal)) != OKV_SUCCESS) goto fail;
    for (int32_t l = 0; l < calib.n_layers && st == OKV_SUCCESS; ++l)
        st = okv_calibrator_add(cal, l, calib.layers[l].n_tokens, OKV_DTYPE_F32, calib.layers[l].q, calib.layers[l].k,
                                calib.layers[l].v);
    if (st != OKV_SUCCESS) goto fail;

    /* quality with small BF16 windows, and with every token in the INT2 tier */
    result_t win[N_METHODS], all[N_METHODS];
    for (int m = 0; m < N_METHODS; ++m) {
        okv_rotation_set_t *rs = NULL;
        if (k_methods[m].int2 && (st = make_rotations(cal, &k_methods[m], &rs)) != OKV_SUCCESS) goto fail;
        st = run_method(ctx, &data, &k_methods[m], rs, o.queries, o.reps, o.sink, o.recent, &win[m]);
        if (st == OKV_SUCCESS) {
            if (k_methods[m].int2)
                st = run_method(ctx, &data, &k_methods[m], rs, o.queries, 1, 0, 0, &all[m]);
            else
                all[m] = win[m];
        }
        okv_rotation_set_destroy(rs);
        if (st != OKV_SUCCESS) goto fail;
    }

    printf("\n%-23s %9s %11s | %-24s | %-24s | %9s\n", "", "", "", "  sink + recent in BF16", "  everything INT2", "");
    printf("%-23s %9s %11s | %11s %12s | %11s %12s | %9s\n", "method", "bits/elem", "mem vs bf16", "out relerr",
           "attn KL", "out relerr", "attn KL", "decode ms");
    for (int m = 0; m < N_METHODS; ++m)
        printf("%-23s %9.3f %10.2fx | %11.4f %12.5f | %11.4f %12.5f | %9.3f\n", k_methods[m].name, all[m].bpe,
               16.0 / all[m].bpe, win[m].relerr, win[m].kl, all[m].relerr, all[m].kl, win[m].ms);
    okv_cache_desc_t def;
    okv_cache_desc_init(&def);
    double b32 = 0, b128 = 0;
    okv_cache_bits_per_element(&def, 32768, &b32);
    okv_cache_bits_per_element(&def, 131072, &b128);
    printf(
        "\nout relerr: ||o - o_ref|| / ||o_ref|| of the decode output (un-rotated) against float64 attention on the\n"
        "unquantized K/V; attn KL: mean KL(p_ref || p) of the attention probabilities. Windows: sink %d + recent %d\n"
        "tokens in BF16 (scaled to the %d-token context); bits/elem: everything INT2, fp16 metadata, group %d.\n"
        "decode ms: median per call for a batch of %d sequences, mean over layers, backend %s.\n"
        "At long context with the default windows (sink 64, recent 256): %.3f bits/element at 32K (%.2fx less than "
        "BF16), %.3f at 128K (%.2fx).\n",
        o.sink, o.recent, min_tokens(&data), data.head_dim, o.queries, okv_context_backend_name(ctx), b32, 16.0 / b32,
        b128, 16.0 / b128);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "demo: %s %s %s\n", okv_status_string(st), ctx ? okv_context_last_error(ctx) : "",
            cal ? okv_calibrator_last_error(cal) : "");
out:
    okv_calibrator_destroy(cal);
    okv_context_destroy(ctx);
    demo_data_free(&data);
    demo_data_free(&calib);
    return rc;
}
