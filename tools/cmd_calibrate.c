/* cmd_calibrate.c - `oscarkv calibrate DUMPS OUT.safetensors`: rotations from
 * per-layer activation dumps layer_{i}/{q,k,v}.npy ([N, H, d], f16 or f32). */
#include "cli.h"
#include "demo_data.h"
#include "oscarkv/oscarkv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: oscarkv calibrate DUMPS_DIR OUT.safetensors [--method oscar|none|hadamard|u-only|plain-cov]\n"
               "       [--per-head] [--fit-clips] [--exact-value-target] [--k-clip R] [--v-clip R] [--no-perm]\n"
               "       [--no-center] [--no-scale]   (reference-compatible orthogonal R_K: both)\n"
               "DUMPS_DIR holds layer_0/, layer_1/, ... each with q.npy, k.npy, v.npy of shape [N, H, d]\n"
               "(q and k after q/k-norm and RoPE, v raw), float16 or float32.\n");
}

static int parse_method(const char *s, okv_rotation_method_t *m)
{
    static const struct {
        const char *name;
        okv_rotation_method_t m;
    } k[] = {{"oscar", OKV_ROT_OSCAR},
             {"none", OKV_ROT_NONE},
             {"hadamard", OKV_ROT_HADAMARD},
             {"u-only", OKV_ROT_U_ONLY},
             {"plain-cov", OKV_ROT_PLAIN_COV}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; ++i)
        if (strcmp(s, k[i].name) == 0) {
            *m = k[i].m;
            return 0;
        }
    return -1;
}

static void log_to_stderr(okv_log_level_t level, const char *msg, void *user)
{
    (void)user;
    if (level <= OKV_LOG_INFO) fprintf(stderr, "%s\n", msg);
}

int cmd_calibrate(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    okv_calib_options_t opt;
    okv_calib_options_init(&opt);
    opt.progress = 1;
    okv_value_target_t target = OKV_VALUE_TARGET_REFERENCE;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--method") == 0 && val) {
            if (parse_method(argv[++i], &opt.method)) {
                fprintf(stderr, "calibrate: unknown method '%s'\n", val);
                return 2;
            }
        } else if (strcmp(a, "--per-head") == 0) {
            opt.granularity = OKV_GRANULARITY_HEAD;
        } else if (strcmp(a, "--fit-clips") == 0) {
            opt.fit_clips = 1;
        } else if (strcmp(a, "--exact-value-target") == 0) {
            target = OKV_VALUE_TARGET_EXACT;
        } else if (strcmp(a, "--no-center") == 0) {
            opt.center_keys = 0;
        } else if (strcmp(a, "--no-scale") == 0) {
            opt.scale_keys = 0;
        } else if (strcmp(a, "--no-perm") == 0) {
            opt.use_permutation = 0;
        } else if (strcmp(a, "--k-clip") == 0 && val) {
            opt.k_clip_ratio = strtof(argv[++i], NULL);
        } else if (strcmp(a, "--v-clip") == 0 && val) {
            opt.v_clip_ratio = strtof(argv[++i], NULL);
        } else if (a[0] != '-' && !in) {
            in = a;
        } else if (a[0] != '-' && !out) {
            out = a;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!in || !out) {
        usage(stderr);
        return 2;
    }
    okv_set_log_callback(log_to_stderr, NULL);

    /* count layers and read the head shape from layer 0 */
    int32_t n_layers = 0, shape[3] = {0, 0, 0};
    char err[512] = "";
    for (;; ++n_layers) {
        char path[4096];
        snprintf(path, sizeof path, "%s/layer_%d/q.npy", in, n_layers);
        FILE *f = fopen(path, "rb");
        if (!f) break;
        fclose(f);
    }
    if (n_layers == 0) {
        fprintf(stderr, "calibrate: no %s/layer_0/q.npy\n", in);
        return 1;
    }
    okv_calibrator_t *cal = NULL;
    okv_rotation_set_t *rs = NULL;
    okv_status_t st = OKV_SUCCESS;
    int rc = 1;
    for (int32_t l = 0; l < n_layers; ++l) {
        demo_layer_t L;
        int32_t s[3];
        if (demo_layer_load(in, l, &L, s, err, sizeof err) != 0) {
            fprintf(stderr, "calibrate: %s\n", err);
            goto out;
        }
        if (l == 0) {
            memcpy(shape, s, sizeof shape);
            okv_calib_desc_t desc;
            okv_calib_desc_init(&desc);
            desc.n_layers = n_layers;
            desc.n_q_heads = s[0];
            desc.n_kv_heads = s[1];
            desc.head_dim = s[2];
            desc.value_target = target;
            st = okv_calibrator_create(&desc, &cal);
        } else if (memcmp(shape, s, sizeof shape) != 0) {
            fprintf(stderr, "calibrate: layer %d head shape differs from layer 0\n", l);
            st = OKV_ERROR_BAD_SHAPE;
        }
        if (st == OKV_SUCCESS) st = okv_calibrator_add(cal, l, L.n_tokens, OKV_DTYPE_F32, L.q, L.k, L.v);
        fprintf(stderr, "calibrate: layer %d/%d: %d tokens, Hq %d, Hkv %d, d %d\n", l + 1, n_layers, L.n_tokens, s[0],
                s[1], s[2]);
        free(L.q), free(L.k), free(L.v);
        if (st != OKV_SUCCESS) goto fail;
    }
    if ((st = okv_calibrator_finalize(cal, &opt, &rs)) != OKV_SUCCESS) goto fail;
    if ((st = okv_rotation_set_save(rs, out)) != OKV_SUCCESS) {
        fprintf(stderr, "calibrate: %s: %s (%s)\n", out, okv_status_string(st), okv_rotation_last_error());
        goto out;
    }
    printf("calibrate: wrote %s (%d layers, head_dim %d)\n", out, n_layers, shape[2]);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "calibrate: %s: %s\n", okv_status_string(st), cal ? okv_calibrator_last_error(cal) : "");
out:
    okv_rotation_set_destroy(rs);
    okv_calibrator_destroy(cal);
    return rc;
}
