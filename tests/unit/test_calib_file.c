/* test_calib_file.c - rotation files: round trip (bit-exact), metadata, corrupt and
 * hostile inputs (truncation at every byte, bad JSON, wrong dtype/shape, offsets out
 * of range / overlapping, non-orthogonal data), NULL arguments; the JSON reader. */
#define _POSIX_C_SOURCE 200809L
#include "calib/hadamard.h"
#include "calib/json.h"
#include "calib/safetensors.h"
#include "oscarkv/oscarkv.h"

#include <check.h>

#include "okv_check_run.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define D 64

static okv_rotation_set_t *make_set(int n_layers, int n_rot, int with_eig, int with_mean)
{
    okv_rotation_set_t *rs;
    ck_assert_int_eq(okv_rotation_set_create(n_layers, D, n_rot, &rs), OKV_SUCCESS);
    double H[D * D];
    okv_hadamard(D, H);
    float *k = malloc(sizeof(float) * n_rot * D * D), *v = malloc(sizeof(float) * n_rot * D * D),
          *ev = malloc(sizeof(float) * n_rot * D), *mu = malloc(sizeof(float) * n_rot * D);
    for (int l = 0; l < n_layers; ++l) {
        for (int r = 0; r < n_rot; ++r) {
            for (int i = 0; i < D * D; ++i) {
                k[r * D * D + i] = (float)H[i] * (float)((r + l) % 2 ? -1 : 1);
                /* v: a permutation matrix (orthogonal, exact in float) */
                int row = i / D, col = i % D;
                v[r * D * D + i] = col == (row * 5 + l + r) % D ? 1.0f : 0.0f;
            }
            for (int i = 0; i < D; ++i)
                ev[r * D + i] = 0.25f * i + (float)l + 1e-3f * (float)r;
            for (int i = 0; i < D; ++i) /* not exactly representable in decimal: bit-exactness matters */
                mu[r * D + i] = (float)sin(0.7 * i + l) * 13.1f / (float)(r + 3) - 1e-7f * (float)i;
        }
        okv_layer_rotation_t L = {sizeof L,
                                  D,
                                  n_rot,
                                  k,
                                  v,
                                  with_eig ? ev : NULL,
                                  with_eig ? ev : NULL,
                                  0.9f + 0.01f * (float)l,
                                  0.85f,
                                  with_mean ? mu : NULL,
                                  NULL};
        ck_assert_int_eq(okv_rotation_set_set_layer(rs, l, &L), OKV_SUCCESS);
    }
    free(k);
    free(v);
    free(ev);
    free(mu);
    ck_assert_int_eq(okv_rotation_set_set_meta(rs, "method", "oscar"), OKV_SUCCESS);
    ck_assert_int_eq(
        okv_rotation_set_set_meta(rs, "weird", "quote\" backslash\\ nl\n tab\t ctl\x01 utf8 \xc3\xa9\xe2\x82\xac"),
        OKV_SUCCESS);
    return rs;
}

static void assert_same(const okv_rotation_set_t *a, const okv_rotation_set_t *b)
{
    int32_t na, da, ra, nb, db, rb;
    okv_rotation_set_info(a, &na, &da, &ra);
    okv_rotation_set_info(b, &nb, &db, &rb);
    ck_assert_int_eq(na, nb);
    ck_assert_int_eq(da, db);
    ck_assert_int_eq(ra, rb);
    for (int l = 0; l < na; ++l) {
        okv_layer_rotation_t x, y;
        ck_assert_int_eq(okv_rotation_set_get_layer(a, l, &x), OKV_SUCCESS);
        ck_assert_int_eq(okv_rotation_set_get_layer(b, l, &y), OKV_SUCCESS);
        size_t m = (size_t)ra * da * da;
        ck_assert(memcmp(x.k_rotation, y.k_rotation, m * 4) == 0);
        ck_assert(memcmp(x.v_rotation, y.v_rotation, m * 4) == 0);
        ck_assert((x.k_eigenvalues == NULL) == (y.k_eigenvalues == NULL));
        if (x.k_eigenvalues) ck_assert(memcmp(x.k_eigenvalues, y.k_eigenvalues, (size_t)ra * da * 4) == 0);
        if (x.v_eigenvalues) ck_assert(memcmp(x.v_eigenvalues, y.v_eigenvalues, (size_t)ra * da * 4) == 0);
        ck_assert((x.k_mean == NULL) == (y.k_mean == NULL));
        if (x.k_mean) ck_assert(memcmp(x.k_mean, y.k_mean, (size_t)ra * da * 4) == 0);
        ck_assert(memcmp(&x.k_clip_ratio, &y.k_clip_ratio, 4) == 0);
        ck_assert(memcmp(&x.v_clip_ratio, &y.v_clip_ratio, 4) == 0);
    }
    static const char *keys[] = {"method", "weird", "head_dim", "n_layers", "n_rot", "granularity"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; ++i) {
        const char *va, *vb;
        ck_assert_int_eq(okv_rotation_set_get_meta(a, keys[i], &va), OKV_SUCCESS);
        ck_assert_int_eq(okv_rotation_set_get_meta(b, keys[i], &vb), OKV_SUCCESS);
        ck_assert_ptr_nonnull(va);
        ck_assert_ptr_nonnull(vb);
        ck_assert_str_eq(va, vb);
    }
}

START_TEST(test_round_trip)
{
    static const int cfg[][4] = {{1, 1, 1, 0}, {3, 1, 0, 0}, {2, 4, 1, 0}, {1, 2, 0, 0},
                                 {1, 1, 1, 1}, {3, 1, 0, 1}, {2, 4, 1, 1}, {1, 2, 0, 1}};
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; ++c) {
        okv_rotation_set_t *rs = make_set(cfg[c][0], cfg[c][1], cfg[c][2], cfg[c][3]), *back = NULL, *back2 = NULL;
        unsigned char *buf, *buf2;
        size_t len, len2;
        ck_assert_int_eq(okv_st_save_memory(rs, &buf, &len), OKV_SUCCESS);
        ck_assert_int_eq(okv_rotation_set_load_memory(buf, len, &back), OKV_SUCCESS);
        assert_same(rs, back);
        ck_assert_int_eq(okv_st_save_memory(back, &buf2, &len2), OKV_SUCCESS);
        ck_assert_uint_eq(len, len2);
        ck_assert(memcmp(buf, buf2, len) == 0);
        /* through a file */
        char path[] = "/tmp/okv_rotXXXXXX";
        int fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        close(fd);
        ck_assert_int_eq(okv_rotation_set_save(rs, path), OKV_SUCCESS);
        ck_assert_int_eq(okv_rotation_set_load(path, &back2), OKV_SUCCESS);
        assert_same(rs, back2);
        unlink(path);
        /* header: length multiple of 8, valid JSON object */
        uint64_t hl = 0;
        for (int i = 7; i >= 0; --i)
            hl = hl << 8 | buf[i];
        ck_assert_uint_eq(hl % 8, 0);
        free(buf);
        free(buf2);
        okv_rotation_set_destroy(rs);
        okv_rotation_set_destroy(back);
        okv_rotation_set_destroy(back2);
    }
}
END_TEST

START_TEST(test_truncated_every_byte)
{
    okv_rotation_set_t *rs = make_set(1, 1, 1, 1);
    unsigned char *buf;
    size_t len;
    ck_assert_int_eq(okv_st_save_memory(rs, &buf, &len), OKV_SUCCESS);
    for (size_t n = 0; n < len; ++n) {
        okv_rotation_set_t *out = (okv_rotation_set_t *)1;
        unsigned char *copy = malloc(n ? n : 1); /* exact-size copy: ASan catches any over-read */
        memcpy(copy, buf, n);
        okv_status_t st = okv_rotation_set_load_memory(copy, n, &out);
        ck_assert_msg(st == OKV_ERROR_CORRUPT_FILE, "prefix %zu: status %d", n, (int)st);
        ck_assert_ptr_null(out);
        ck_assert(okv_rotation_last_error()[0] != '\0');
        free(copy);
    }
    /* one byte too many */
    unsigned char *big = malloc(len + 1);
    memcpy(big, buf, len);
    big[len] = 0;
    okv_rotation_set_t *out;
    ck_assert_int_eq(okv_rotation_set_load_memory(big, len + 1, &out), OKV_ERROR_CORRUPT_FILE);
    free(big);
    free(buf);
    okv_rotation_set_destroy(rs);
}
END_TEST

/* Build a file from a header text and data of n floats (identity-like content). */
static unsigned char *craft(const char *header, const float *data, size_t n_floats, size_t *len)
{
    size_t hl = strlen(header);
    *len = 8 + hl + 4 * n_floats;
    unsigned char *b = malloc(*len);
    for (int i = 0; i < 8; ++i)
        b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    memcpy(b + 8 + hl, data, 4 * n_floats);
    return b;
}

#define META "\"__metadata__\":{\"head_dim\":\"64\",\"n_layers\":\"1\"}"
#define EIGHT_K 16384 /* bytes of one 64x64 F32 */

static float *identity_data(int extra_eig)
{
    size_t n = 2 * D * D + (extra_eig ? 2 * D : 0) + 2;
    float *f = calloc(n, sizeof(float));
    for (int i = 0; i < D; ++i)
        f[i * D + i] = f[D * D + i * D + i] = 1.0f;
    f[n - 2] = 0.96f;
    f[n - 1] = 0.92f;
    return f;
}

static okv_status_t load_header(const char *header, const float *data, size_t n_floats)
{
    size_t len;
    unsigned char *b = craft(header, data, n_floats, &len);
    okv_rotation_set_t *rs = NULL;
    okv_status_t st = okv_rotation_set_load_memory(b, len, &rs);
    okv_rotation_set_destroy(rs);
    free(b);
    return st;
}

START_TEST(test_crafted_headers)
{
    float *f = identity_data(0);
    size_t nf = 2 * D * D + 2;
    const char *good =
        "{" META ",\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[0,16384]},"
        "\"layer.0.v_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[16384,32768]},"
        "\"layer.0.k_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32768,32772]},"
        "\"layer.0.v_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32772,32776]}}";
    ck_assert_int_eq(load_header(good, f, nf), OKV_SUCCESS);
    /* same, different key order and whitespace, unknown non-layer tensor of 0 bytes */
    const char *reordered =
        " { \"layer.0.v_clip\" : {\"shape\":[1],\"dtype\":\"F32\",\"data_offsets\":[32772,32776]},\n"
        "\"extra\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}," META ","
        "\"layer.0.k_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32768,32772]},"
        "\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[0,16384]},"
        "\"layer.0.v_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[16384,32768]}}\t";
    ck_assert_int_eq(load_header(reordered, f, nf), OKV_SUCCESS);
    static const char *bad[] = {
        /* not JSON / not an object / trailing garbage */
        "{" META ",\"layer.0.k_rotation\":{",
        "[1,2,3]",
        "{" META "} x",
        "\"str\"",
        "{\"__metadata__\":1}",
        /* missing metadata, missing head_dim, bad head_dim, n_layers 0, non-string metadata */
        "{\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[0,16384]}}",
        "{\"__metadata__\":{\"n_layers\":\"1\"}}",
        "{\"__metadata__\":{\"head_dim\":\"96\",\"n_layers\":\"1\"}}",
        "{\"__metadata__\":{\"head_dim\":\"064\",\"n_layers\":\"1\"}}",
        "{\"__metadata__\":{\"head_dim\":\"64\",\"n_layers\":\"0\"}}",
        "{\"__metadata__\":{\"head_dim\":\"64\",\"n_layers\":\"1\",\"x\":5}}",
        /* wrong dtype */
        "{" META ",\"layer.0.k_rotation\":{\"dtype\":\"F16\",\"shape\":[64,64],\"data_offsets\":[0,16384]},"
        "\"layer.0.v_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[16384,32768]},"
        "\"layer.0.k_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32768,32772]},"
        "\"layer.0.v_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32772,32776]}}",
        /* offsets past the end */
        "{" META ",\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[0,16384]},"
        "\"layer.0.v_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[16384,32768]},"
        "\"layer.0.k_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32768,32772]},"
        "\"layer.0.v_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32776,32780]}}",
        /* huge offsets (overflow bait) */
        "{" META ",\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[18446744073709535232,"
        "18446744073709551615]}}",
        /* overlapping: v_rotation reuses k_rotation's bytes */
        "{" META ",\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[0,16384]},"
        "\"layer.0.v_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[0,16384]},"
        "\"layer.0.k_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16384,16388]},"
        "\"layer.0.v_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16388,16392]}}",
        /* begin > end, size/shape mismatch, negative and fractional numbers, bad shape */
        "{" META ",\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[16384,0]}}",
        "{" META ",\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,63],\"data_offsets\":[0,16384]}}",
        "{" META ",\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,-64],\"data_offsets\":[0,16384]}}",
        "{" META ",\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64.0],\"data_offsets\":[0,16384]}}",
        "{" META ",\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[4096,1],\"data_offsets\":[0,16384]},"
        "\"layer.0.v_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[16384,32768]},"
        "\"layer.0.k_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32768,32772]},"
        "\"layer.0.v_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32772,32776]}}",
        /* missing v_clip (gap in the data), layer index out of range, bad tensor name, duplicate key */
        "{" META ",\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[0,16384]},"
        "\"layer.0.v_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[16384,32768]},"
        "\"layer.0.k_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32768,32772]},"
        "\"pad\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32772,32776]}}",
        "{" META ",\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[0,16384]},"
        "\"layer.0.v_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[16384,32768]},"
        "\"layer.0.k_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32768,32772]},"
        "\"layer.1.v_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32772,32776]}}",
        "{" META ",\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[0,16384]},"
        "\"layer.0.v_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[16384,32768]},"
        "\"layer.0.k_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32768,32772]},"
        "\"layer.0.v_clipx\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32772,32776]}}",
        "{" META ",\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[0,16384]},"
        "\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[16384,32768]},"
        "\"layer.0.k_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32768,32772]},"
        "\"layer.0.v_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32772,32776]}}",
        /* n_rot metadata disagreeing with the tensors */
        "{\"__metadata__\":{\"head_dim\":\"64\",\"n_layers\":\"1\",\"n_rot\":\"2\"},"
        "\"layer.0.k_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[0,16384]},"
        "\"layer.0.v_rotation\":{\"dtype\":\"F32\",\"shape\":[64,64],\"data_offsets\":[16384,32768]},"
        "\"layer.0.k_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32768,32772]},"
        "\"layer.0.v_clip\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32772,32776]}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        okv_status_t st = load_header(bad[i], f, nf);
        ck_assert_msg(st == OKV_ERROR_CORRUPT_FILE, "case %zu: status %d (%s)", i, (int)st, okv_rotation_last_error());
    }
    /* bad values with a good header: non-orthogonal, NaN, clip out of range */
    f[5] = 0.5f;
    ck_assert_int_eq(load_header(good, f, nf), OKV_ERROR_CORRUPT_FILE);
    ck_assert_ptr_nonnull(strstr(okv_rotation_last_error(), "orthogonal"));
    f[5] = NAN;
    ck_assert_int_eq(load_header(good, f, nf), OKV_ERROR_CORRUPT_FILE);
    f[5] = 0.0f;
    f[nf - 1] = 1.5f;
    ck_assert_int_eq(load_header(good, f, nf), OKV_ERROR_CORRUPT_FILE);
    f[nf - 1] = 0.0f;
    ck_assert_int_eq(load_header(good, f, nf), OKV_ERROR_CORRUPT_FILE);
    f[nf - 1] = 0.92f;
    ck_assert_int_eq(load_header(good, f, nf), OKV_SUCCESS);
    /* header length field larger than the file / absurd */
    unsigned char tiny[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    okv_rotation_set_t *rs;
    ck_assert_int_eq(okv_rotation_set_load_memory(tiny, sizeof tiny, &rs), OKV_ERROR_CORRUPT_FILE);
    tiny[0] = 2;
    memset(tiny + 1, 0, 7);
    ck_assert_int_eq(okv_rotation_set_load_memory(tiny, 10, &rs), OKV_ERROR_CORRUPT_FILE);
    free(f);
}
END_TEST

START_TEST(test_null_and_api_errors)
{
    okv_rotation_set_t *rs = NULL;
    unsigned char b[8] = {0};
    ck_assert_int_eq(okv_rotation_set_load_memory(NULL, 8, &rs), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_rotation_set_load_memory(b, 8, NULL), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_rotation_set_load(NULL, &rs), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_rotation_set_load("/nonexistent/dir/x.safetensors", &rs), OKV_ERROR_IO);
    ck_assert_int_eq(okv_rotation_set_save(NULL, "/tmp/x"), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_rotation_set_create(1, 64, 1, NULL), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_rotation_set_create(1, 96, 1, &rs), OKV_ERROR_UNSUPPORTED_HEAD_DIM);
    ck_assert_int_eq(okv_rotation_set_create(0, 64, 1, &rs), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(okv_rotation_set_create(1, 64, 0, &rs), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(okv_rotation_set_info(NULL, NULL, NULL, NULL), OKV_ERROR_NULL_POINTER);
    okv_layer_rotation_t L;
    ck_assert_int_eq(okv_rotation_set_get_layer(NULL, 0, &L), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_rotation_set_set_layer(NULL, 0, &L), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_rotation_set_create(2, 64, 1, &rs), OKV_SUCCESS);
    ck_assert_int_eq(okv_rotation_set_save(rs, "/nonexistent/dir/x.safetensors"), OKV_ERROR_IO);
    /* defaults: identity, no eigenvalues, reference clips */
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, 1, &L), OKV_SUCCESS);
    ck_assert(L.k_rotation[0] == 1.0f && L.k_rotation[1] == 0.0f && L.k_eigenvalues == NULL);
    ck_assert(L.k_clip_ratio == 0.96f && L.v_clip_ratio == 0.92f);
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, 2, &L), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, -1, &L), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(okv_rotation_set_get_layer(rs, 0, NULL), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_rotation_set_set_layer(rs, 0, NULL), OKV_ERROR_NULL_POINTER);
    /* set_layer validation */
    okv_rotation_set_get_layer(rs, 0, &L);
    okv_layer_rotation_t bad = L;
    bad.n_rot = 2;
    ck_assert_int_eq(okv_rotation_set_set_layer(rs, 0, &bad), OKV_ERROR_BAD_SHAPE);
    bad = L;
    bad.k_clip_ratio = 1.5f;
    ck_assert_int_eq(okv_rotation_set_set_layer(rs, 0, &bad), OKV_ERROR_INVALID_ARGUMENT);
    bad = L;
    bad.size = 0;
    ck_assert_int_eq(okv_rotation_set_set_layer(rs, 0, &bad), OKV_ERROR_INVALID_ARGUMENT);
    bad = L;
    bad.v_rotation = NULL;
    ck_assert_int_eq(okv_rotation_set_set_layer(rs, 0, &bad), OKV_ERROR_NULL_POINTER);
    float *nan_rot = calloc(D * D, sizeof(float));
    nan_rot[3] = NAN;
    bad = L;
    bad.k_rotation = nan_rot;
    ck_assert_int_eq(okv_rotation_set_set_layer(rs, 0, &bad), OKV_ERROR_NONFINITE_INPUT);
    free(nan_rot);
    ck_assert_int_eq(okv_rotation_set_set_layer(rs, 1, &L), OKV_SUCCESS); /* aliasing copy is fine */
    /* metadata */
    const char *v;
    ck_assert_int_eq(okv_rotation_set_get_meta(rs, "head_dim", &v), OKV_SUCCESS);
    ck_assert_str_eq(v, "64");
    ck_assert_int_eq(okv_rotation_set_get_meta(rs, "granularity", &v), OKV_SUCCESS);
    ck_assert_str_eq(v, "layer");
    ck_assert_int_eq(okv_rotation_set_get_meta(rs, "absent", &v), OKV_SUCCESS);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(okv_rotation_set_set_meta(rs, "head_dim", "128"), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(okv_rotation_set_set_meta(rs, "", "x"), OKV_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(okv_rotation_set_set_meta(rs, NULL, "x"), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_rotation_set_set_meta(rs, "k", NULL), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_rotation_set_get_meta(rs, NULL, &v), OKV_ERROR_NULL_POINTER);
    ck_assert_int_eq(okv_rotation_set_set_meta(rs, "tokens", "1"), OKV_SUCCESS);
    ck_assert_int_eq(okv_rotation_set_set_meta(rs, "tokens", "2"), OKV_SUCCESS);
    ck_assert_int_eq(okv_rotation_set_get_meta(rs, "tokens", &v), OKV_SUCCESS);
    ck_assert_str_eq(v, "2");
    okv_rotation_set_destroy(rs);
    okv_rotation_set_destroy(NULL);
}
END_TEST

START_TEST(test_json_reader)
{
    okv_json_t v;
    char err[128];
    const char *ok = "{\"a\":[1,-2,3.5e2,true,false,null],\"s\":\"x\\u00e9\\ud83d\\ude00\\n\\\"\\/\",\"o\":{}}";
    ck_assert_int_eq(okv_json_parse(ok, strlen(ok), &v, err, sizeof err), 0);
    const okv_json_t *a = okv_json_get(&v, "a"), *s = okv_json_get(&v, "s");
    ck_assert_uint_eq(a->count, 6);
    ck_assert(a->items[0].is_int && a->items[0].ival == 1);
    ck_assert(a->items[1].is_int && a->items[1].ival == -2);
    ck_assert(!a->items[2].is_int);
    ck_assert_str_eq(s->str, "x\xc3\xa9\xf0\x9f\x98\x80\n\"/");
    okv_json_free(&v);
    static const char *bad[] = {"",
                                "{",
                                "{\"a\"}",
                                "{\"a\":}",
                                "[1,]",
                                "{\"a\":1,}",
                                "\"\\ud800\"",
                                "\"\\udc00\"",
                                "\"\\u00\"",
                                "\"\\x\"",
                                "\"a\x01\"",
                                "\"\xff\"",
                                "\"\xc0\xaf\"",
                                "\"\\u0000\"",
                                "01",
                                "1.",
                                "-",
                                "1e",
                                "tru",
                                "{\"a\":1,\"a\":2}",
                                "[1] [2]",
                                "\"abc",
                                "\"abc\\",
                                "99999999999999999999x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i)
        ck_assert_msg(okv_json_parse(bad[i], strlen(bad[i]), &v, err, sizeof err) != 0, "accepted case %zu", i);
    /* depth limit */
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    ck_assert(okv_json_parse(deep, 200, &v, err, sizeof err) != 0);
    /* big integers: > INT64_MAX is a number but not an int */
    ck_assert_int_eq(okv_json_parse("18446744073709551615", 20, &v, err, sizeof err), 0);
    ck_assert(!v.is_int);
    okv_json_free(&v);
    /* escape writer round trip */
    const char *raw = "q\"b\\n\nc\x01\xc3\xa9";
    char lit[64];
    size_t n = okv_json_escape(raw, lit, sizeof lit);
    ck_assert_uint_eq(n, strlen(lit));
    ck_assert_int_eq(okv_json_parse(lit, n, &v, err, sizeof err), 0);
    ck_assert_str_eq(v.str, raw);
    okv_json_free(&v);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("calib_file");
    TCase *tc = tcase_create("file");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_truncated_every_byte);
    tcase_add_test(tc, test_crafted_headers);
    tcase_add_test(tc, test_null_and_api_errors);
    tcase_add_test(tc, test_json_reader);
    suite_add_tcase(s, tc);
    return okv_check_run(s);
}
