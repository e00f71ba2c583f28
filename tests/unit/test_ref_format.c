/* test_ref_format.c - hand-checked values for the row format the reference uses:
 * quartered packing, fp16/bf16 conversions, clipping, the quantizer, the
 * log-sum-exp merge, rotation and moments; quantizer statistics on N(0,1) rows. */
#include "test_ref_util.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

START_TEST(test_pack_quartered_hand)
{
    /* d = 8: byte i = c[i] | c[i+2] << 2 | c[i+4] << 4 | c[i+6] << 6 */
    const int codes[8] = {0, 1, 2, 3, 3, 2, 1, 0};
    uint8_t b[2];
    okv_ref_pack_row(codes, 8, b);
    ck_assert_uint_eq(b[0], 0x78); /* 0 | 2<<2 | 3<<4 | 1<<6 */
    ck_assert_uint_eq(b[1], 0x2d); /* 1 | 3<<2 | 2<<4 | 0<<6 */
    /* d = 64, code = channel / 16 (the quarter index): every byte is 0b11100100 */
    int c64[64];
    uint8_t b64[16];
    for (int i = 0; i < 64; ++i)
        c64[i] = i / 16;
    okv_ref_pack_row(c64, 64, b64);
    for (int i = 0; i < 16; ++i)
        ck_assert_uint_eq(b64[i], 0xe4);
    /* code = channel % 4: byte i = (i % 4) * 0b01010101 */
    for (int i = 0; i < 64; ++i)
        c64[i] = i % 4;
    okv_ref_pack_row(c64, 64, b64);
    for (int i = 0; i < 16; ++i)
        ck_assert_uint_eq(b64[i], (unsigned)(i % 4) * 0x55u);
    ck_assert_int_eq(okv_unpack_code(0xe4, 0), 0);
    ck_assert_int_eq(okv_unpack_code(0xe4, 3), 3);
}
END_TEST

START_TEST(test_pack_roundtrip)
{
    tu_rng_t r = {7};
    const int ds[3] = {64, 128, 256};
    for (int t = 0; t < 3; ++t) {
        int d = ds[t], c[256], back[256];
        uint8_t bytes[64];
        for (int i = 0; i < d; ++i)
            c[i] = (int)(tu_next(&r) & 3u);
        okv_ref_pack_row(c, d, bytes);
        okv_ref_unpack_row(bytes, d, back);
        for (int i = 0; i < d; ++i)
            ck_assert_int_eq(back[i], c[i]);
        for (int i = 0; i < d / 4; ++i)
            ck_assert_int_eq(okv_unpack_code(bytes[i], 2), c[i + d / 2]);
    }
}
END_TEST

START_TEST(test_f16_conversions)
{
    ck_assert_uint_eq(okv_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(okv_f32_to_f16(-2.0f), 0xc000);
    ck_assert_uint_eq(okv_f32_to_f16(0.1f), 0x2e66);
    ck_assert_uint_eq(okv_f32_to_f16(1.0f / 3.0f), 0x3555);
    ck_assert_uint_eq(okv_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(okv_f32_to_f16(65519.0f), 0x7bff);
    ck_assert_uint_eq(okv_f32_to_f16(65520.0f), 0x7c00); /* rounds to inf */
    ck_assert_uint_eq(okv_f32_to_f16(1e6f), 0x7c00);
    ck_assert_uint_eq(okv_f32_to_f16(-INFINITY), 0xfc00);
    ck_assert_uint_eq(okv_f32_to_f16(NAN) & 0x7fffu, 0x7e00);
    ck_assert_uint_eq(okv_f32_to_f16(6.103515625e-05f), 0x0400);           /* min normal */
    ck_assert_uint_eq(okv_f32_to_f16(5.9604644775390625e-08f), 0x0001);    /* min subnormal */
    ck_assert_uint_eq(okv_f32_to_f16(2.98023223876953125e-08f), 0x0000);   /* tie -> even 0 */
    ck_assert_uint_eq(okv_f32_to_f16(8.94069671630859375e-08f), 0x0002);   /* 1.5 ulp: tie -> even 2 */
    ck_assert_uint_eq(okv_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);            /* tie -> even */
    ck_assert_uint_eq(okv_f32_to_f16(1.0f + 3.0f * 0x1p-11f), 0x3c02);     /* tie -> even (up) */
    ck_assert_uint_eq(okv_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01); /* above tie */
    ck_assert_uint_eq(okv_f32_to_f16(-0.0f), 0x8000);
    ck_assert(okv_f16_to_f32(0x3555) == 0.333251953125f);
    ck_assert(okv_f16_to_f32(0x0001) == 5.9604644775390625e-08f);
    ck_assert(okv_f16_to_f32(0x8400) == -6.103515625e-05f);
    ck_assert(okv_f16_to_f32(0x7bff) == 65504.0f);
    ck_assert(isinf(okv_f16_to_f32(0x7c00)));
    ck_assert(isnan(okv_f16_to_f32(0x7e00)));
    /* every finite half round-trips */
    for (uint32_t h = 0; h < 0x10000u; ++h) {
        if ((h & 0x7c00u) == 0x7c00u) continue;
        ck_assert_uint_eq(okv_f32_to_f16(okv_f16_to_f32((uint16_t)h)), h);
    }
}
END_TEST

START_TEST(test_bf16_conversions)
{
    ck_assert_uint_eq(okv_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(okv_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);        /* tie -> even */
    ck_assert_uint_eq(okv_f32_to_bf16(1.0f + 3.0f * 0x1p-8f), 0x3f82); /* tie -> even (up) */
    ck_assert_uint_eq(okv_f32_to_bf16(u2f(0x40490fdbu)), 0x4049);      /* pi -> 3.140625 */
    ck_assert(okv_bf16_to_f32(0x4049) == 3.140625f);
    ck_assert_uint_eq(okv_f32_to_bf16(-0.0f), 0x8000);
    ck_assert_uint_eq(okv_f32_to_bf16(u2f(0x7fc00000u)), 0x7fc0);
    ck_assert_uint_eq(okv_f32_to_bf16(u2f(0x7f800001u)), 0x7fc0); /* signalling NaN stays NaN */
    ck_assert_uint_eq(okv_f32_to_bf16(FLT_MAX), 0x7f80);          /* rounds to inf */
    ck_assert_uint_eq(okv_f32_to_bf16(1e6f), 0x4974);             /* 999424 */
    ck_assert(okv_bf16_to_f32(0x4974) == 999424.0f);
    for (uint32_t h = 0; h < 0x10000u; ++h) {
        if ((h & 0x7f80u) == 0x7f80u) continue;
        ck_assert_uint_eq(okv_f32_to_bf16(okv_bf16_to_f32((uint16_t)h)), h);
    }
}
END_TEST

START_TEST(test_clip_tau_hand)
{
    float x[64];
    for (int i = 0; i < 64; ++i)
        x[i] = (i % 2 ? -1.0f : 1.0f) * (float)(i + 1); /* |x| = 1..64 */
    /* floor(0.96 * 64) = 61: the 62nd smallest |x| = 62 */
    ck_assert(okv_clip_tau(x, 64, 0.96f, OKV_FMT_CLIP_SORT) == 62.0f);
    /* bisection: 32, 48, 56, 60 (4 above > 3 allowed), 62 (2 above), 61 (3 above), 60.5 -> hi = 61 */
    ck_assert(okv_clip_tau(x, 64, 0.96f, OKV_FMT_CLIP_BISECT) == 61.0f);
    ck_assert(okv_clip_tau(x, 64, 1.0f, OKV_FMT_CLIP_SORT) < 0.0f);
    ck_assert(okv_clip_tau(x, 64, 1.0f, OKV_FMT_CLIP_BISECT) < 0.0f);
    /* d = 128: 0.92 clips the 10 largest, 0.96 the 5 largest */
    float y[128];
    for (int i = 0; i < 128; ++i)
        y[i] = (float)(127 - i);
    ck_assert(okv_clip_tau(y, 128, 0.92f, OKV_FMT_CLIP_SORT) == 117.0f);
    ck_assert(okv_clip_tau(y, 128, 0.96f, OKV_FMT_CLIP_SORT) == 122.0f);
}
END_TEST

START_TEST(test_quantize_row_hand)
{
    float x[64], meta[4], out[64];
    uint8_t codes[16];
    int c[64];
    for (int i = 0; i < 64; ++i)
        x[i] = (float)i;
    /* lo 0, hi 63, scale 21: code = floor(i / 21 + 0.5) */
    ck_assert(
        okv_ref_quantize_row(x, 64, 64, 1.0f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_F32, codes, meta));
    ck_assert(meta[0] == 21.0f && meta[1] == 0.0f);
    okv_ref_unpack_row(codes, 64, c);
    for (int i = 0; i < 64; ++i)
        ck_assert_int_eq(c[i], i <= 10 ? 0 : (i <= 31 ? 1 : (i <= 52 ? 2 : 3)));
    okv_ref_dequantize_row(codes, meta, 64, 64, out);
    ck_assert(out[0] == 0.0f && out[11] == 21.0f && out[40] == 42.0f && out[63] == 63.0f);
    /* fp16 metadata: same values (exact in f16) */
    ck_assert(
        okv_ref_quantize_row(x, 64, 64, 1.0f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_F16, codes, meta));
    ck_assert(meta[0] == 21.0f && meta[1] == 0.0f);

    /* two groups of 32: [0, 31] and [32, 63] */
    ck_assert(
        okv_ref_quantize_row(x, 64, 32, 1.0f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_F32, codes, meta));
    ck_assert(meta[0] == 31.0f / 3.0f && meta[1] == 0.0f && meta[2] == 31.0f / 3.0f && meta[3] == 32.0f);
    okv_ref_unpack_row(codes, 64, c);
    ck_assert_int_eq(c[5], 0);
    ck_assert_int_eq(c[6], 1); /* 6 / 10.33 + 0.5 = 1.08 */
    ck_assert_int_eq(c[63], 3);
    ck_assert_int_eq(c[32], 0);

    /* clip 0.96 on |x| = 1..64: tau 62, lo 1, hi 62 */
    for (int i = 0; i < 64; ++i)
        x[i] = (float)(i + 1);
    ck_assert(okv_ref_quantize_row(x, 64, 64, 0.96f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_F32, codes,
                                   meta));
    ck_assert(meta[0] == 61.0f / 3.0f && meta[1] == 1.0f);
    okv_ref_dequantize_row(codes, meta, 64, 64, out);
    ck_assert(out[63] == 1.0f + 3.0f * (61.0f / 3.0f));

    /* a constant row: scale 1e-8/3 (f32) and every value decodes to lo */
    for (int i = 0; i < 64; ++i)
        x[i] = 0.5f;
    ck_assert(
        okv_ref_quantize_row(x, 64, 64, 1.0f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_F32, codes, meta));
    ck_assert(meta[0] == 1e-8f / 3.0f && meta[1] == 0.5f);
    okv_ref_dequantize_row(codes, meta, 64, 64, out);
    for (int i = 0; i < 64; ++i)
        ck_assert(out[i] == 0.5f);
    /* with f16 meta the tiny scale underflows to 0: still lo everywhere */
    ck_assert(
        okv_ref_quantize_row(x, 64, 64, 1.0f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_F16, codes, meta));
    ck_assert(meta[0] == 0.0f);
    okv_ref_dequantize_row(codes, meta, 64, 64, out);
    for (int i = 0; i < 64; ++i)
        ck_assert(out[i] == 0.5f);
}
END_TEST

START_TEST(test_quantize_lloyd_hand)
{
    float x[64], meta[2];
    uint8_t codes[16];
    int c[64];
    for (int i = 0; i < 64; ++i)
        x[i] = (i % 2) ? 1.0f : -1.0f; /* mu 0, sigma 1 */
    ck_assert(okv_ref_quantize_row(x, 64, 64, 1.0f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_LLOYD_MAX, OKV_FMT_META_F32, codes,
                                   meta));
    float spacing = 1.16f * (2.0f * 1.5104f / 3.0f);
    ck_assert_float_eq_tol(meta[0], spacing, 1e-6f);
    ck_assert_float_eq_tol(meta[1], -1.5f * spacing, 1e-6f);
    okv_ref_unpack_row(codes, 64, c);
    for (int i = 0; i < 64; ++i)
        ck_assert_int_eq(c[i], (i % 2) ? 3 : 0); /* |z| = 1 > 0.9816 */
    x[0] = -0.5f;                                /* still below 0, above -0.98 sigma: code 1 */
    ck_assert(okv_ref_quantize_row(x, 64, 64, 1.0f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_LLOYD_MAX, OKV_FMT_META_F32, codes,
                                   meta));
    okv_ref_unpack_row(codes, 64, c);
    ck_assert_int_eq(c[0], 1);
}
END_TEST

START_TEST(test_quantize_meta_overflow)
{
    float x[128];
    uint8_t codes[32], codes0[32];
    float meta[8], meta0[8];
    for (int i = 0; i < 128; ++i)
        x[i] = 1e6f * (float)((i % 7) - 3);
    memset(codes, 0xa5, sizeof codes);
    memset(meta, 0xa5, sizeof meta);
    memcpy(codes0, codes, sizeof codes);
    memcpy(meta0, meta, sizeof meta);
    ck_assert(!okv_ref_quantize_row(x, 128, 128, 1.0f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_F16,
                                    codes, meta));
    TU_ASSERT_SAME_BYTES(codes, codes0, sizeof codes, "codes");
    TU_ASSERT_SAME_BYTES(meta, meta0, sizeof meta, "meta");
    /* bf16 and f32 hold it */
    ck_assert(okv_ref_quantize_row(x, 128, 128, 1.0f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_BF16,
                                   codes, meta));
    ck_assert(okv_ref_quantize_row(x, 128, 32, 1.0f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_F32, codes,
                                   meta));
}
END_TEST

/* Relative MSE sum (x - x^)^2 / sum x^2 over N(0,1) rows, d = 128, G = 128. */
static double rel_mse(float ratio, int clip_mode, int quantizer, int meta_dtype, int g, int rows)
{
    tu_rng_t r = {12345};
    float x[128], y[128], meta[8];
    uint8_t codes[32];
    double num = 0.0, den = 0.0;
    for (int t = 0; t < rows; ++t) {
        tu_fill_normal(&r, x, 128, 1.0);
        ck_assert(okv_ref_quantize_row(x, 128, g, ratio, clip_mode, quantizer, meta_dtype, codes, meta));
        okv_ref_dequantize_row(codes, meta, 128, g, y);
        for (int i = 0; i < 128; ++i) {
            num += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
            den += (double)x[i] * x[i];
        }
    }
    return num / den;
}

START_TEST(test_quantizer_statistics)
{
    const int rows = 20000;
    double e_none = rel_mse(1.0f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_F32, 128, rows);
    double e_96 = rel_mse(0.96f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_F32, 128, rows);
    double e_92 = rel_mse(0.92f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_F32, 128, rows);
    printf("quantizer relative MSE, N(0,1), d=128, G=128, f32 meta: none %.4f, clip 0.96 %.4f, clip 0.92 %.4f\n",
           e_none, e_96, e_92);
    ck_assert_msg(fabs(e_none - 0.251) <= 0.005, "no clip: relative MSE %.4f, expected 0.251", e_none);
    ck_assert_msg(fabs(e_96 - 0.156) <= 0.005, "clip 0.96: relative MSE %.4f, expected 0.156", e_96);
    ck_assert_msg(fabs(e_92 - 0.127) <= 0.005, "clip 0.92: relative MSE %.4f, expected 0.127", e_92);
    /* fp16 metadata costs almost nothing at unit scale; bisection clips about as well */
    double e_f16 = rel_mse(0.96f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_F16, 128, rows / 4);
    double e_bis = rel_mse(0.96f, OKV_FMT_CLIP_BISECT, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_F32, 128, rows / 4);
    ck_assert_msg(fabs(e_f16 - e_96) < 0.003, "f16 meta %.4f vs f32 %.4f", e_f16, e_96);
    ck_assert_msg(fabs(e_bis - e_96) < 0.01, "bisect %.4f vs sort %.4f", e_bis, e_96);
    /* smaller groups only help */
    double e_g32 = rel_mse(1.0f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_UNIFORM, OKV_FMT_META_F32, 32, rows / 4);
    ck_assert_msg(e_g32 < e_none, "G=32 %.4f vs G=128 %.4f", e_g32, e_none);
    /* Lloyd-Max on Gaussian rows beats min/max uniform without clipping */
    double e_lm = rel_mse(1.0f, OKV_FMT_CLIP_SORT, OKV_FMT_QUANT_LLOYD_MAX, OKV_FMT_META_F32, 128, rows / 4);
    printf("  f16 meta %.4f, bisect %.4f, G=32 %.4f, Lloyd-Max %.4f\n", e_f16, e_bis, e_g32, e_lm);
    ck_assert_msg(e_lm < e_none, "Lloyd-Max %.4f vs uniform %.4f", e_lm, e_none);
}
END_TEST

START_TEST(test_lse_merge_hand)
{
    double lse = log(2.0), o[2] = {1.0, 0.0};
    const double ob[2] = {0.0, 1.0};
    okv_ref_merge_state(&lse, o, log(6.0), ob, 2);
    ck_assert_double_eq_tol(lse, log(8.0), 1e-15);
    ck_assert_double_eq_tol(o[0], 0.25, 1e-15);
    ck_assert_double_eq_tol(o[1], 0.75, 1e-15);
    /* merging the empty state changes nothing; merging into it copies */
    okv_ref_merge_state(&lse, o, -INFINITY, ob, 2);
    ck_assert_double_eq_tol(lse, log(8.0), 1e-15);
    ck_assert_double_eq_tol(o[0], 0.25, 1e-15);
    double le = -INFINITY, oe[2] = {0.0, 0.0};
    okv_ref_merge_state(&le, oe, 1.5, ob, 2);
    ck_assert(le == 1.5 && oe[0] == 0.0 && oe[1] == 1.0);
    /* large magnitudes do not overflow: lse 1000 twice -> 1000 + log 2 */
    double lb = 1000.0, obig[1] = {2.0};
    const double obig2[1] = {4.0};
    okv_ref_merge_state(&lb, obig, 1000.0, obig2, 1);
    ck_assert_double_eq_tol(lb, 1000.0 + log(2.0), 1e-12);
    ck_assert_double_eq_tol(obig[0], 3.0, 1e-12);
    /* very unequal weights: -1000 vs 0 */
    double ls = -1000.0, os[1] = {5.0};
    const double os2[1] = {1.0};
    okv_ref_merge_state(&ls, os, 0.0, os2, 1);
    ck_assert_double_eq_tol(ls, 0.0, 1e-12);
    ck_assert_double_eq_tol(os[0], 1.0, 1e-12);
}
END_TEST

START_TEST(test_rotate_hand)
{
    /* R = cyclic shift: (x R)[j] = x[(j + 1) % d] when R[i][j] = 1 for i = (j + 1) % d */
    const int d = 64;
    float r[64 * 64], x[64], y[64], z[64];
    memset(r, 0, sizeof r);
    for (int j = 0; j < d; ++j)
        r[((j + 1) % d) * d + j] = 1.0f;
    for (int i = 0; i < d; ++i)
        x[i] = (float)i;
    okv_ref_rotate_row(x, r, d, 0, y);
    for (int j = 0; j < d; ++j)
        ck_assert(y[j] == (float)((j + 1) % d));
    okv_ref_rotate_row(y, r, d, 1, z); /* x R R^T = x */
    for (int j = 0; j < d; ++j)
        ck_assert(z[j] == x[j]);
    okv_ref_rotate_row(x, r, d, 0, x); /* in place */
    for (int j = 0; j < d; ++j)
        ck_assert(x[j] == y[j]);
}
END_TEST

START_TEST(test_rotate_op_per_head)
{
    const int d = 64, nh = 4, hg = 2, rows = 3;
    tu_rng_t rg = {99};
    float *rot = (float *)tu_calloc(2 * d * d, sizeof(float));
    tu_random_orthogonal(&rg, d, rot);
    tu_random_orthogonal(&rg, d, rot + d * d);
    float x[3 * 4 * 64], out[3 * 4 * 64], back[3 * 4 * 64];
    tu_fill_normal(&rg, x, sizeof x / sizeof x[0], 1.0);
    ck_assert_int_eq(okv_ref_rotate(x, OKV_DTYPE_F32, out, OKV_DTYPE_F32, rot, rows, nh, d, 1, hg, 0, NULL),
                     OKV_SUCCESS);
    for (int t = 0; t < rows; ++t)
        for (int h = 0; h < nh; ++h) {
            const float *xr = x + (t * nh + h) * d, *rr = rot + (h / hg) * d * d;
            for (int j = 0; j < d; ++j) {
                double s = 0.0;
                for (int i = 0; i < d; ++i)
                    s += (double)xr[i] * rr[i * d + j];
                ck_assert_float_eq_tol(out[(t * nh + h) * d + j], (float)s, 1e-6f);
            }
        }
    ck_assert_int_eq(okv_ref_rotate(out, OKV_DTYPE_F32, back, OKV_DTYPE_F32, rot, rows, nh, d, 1, hg, 1, NULL),
                     OKV_SUCCESS);
    for (int i = 0; i < rows * nh * d; ++i)
        ck_assert_float_eq_tol(back[i], x[i], 1e-5f);
    free(rot);
}
END_TEST

START_TEST(test_moments_hand)
{
    /* d = 64, two heads in one group; x[t, h] = e_0 * (t + 1) + e_1 * h; w = 2 */
    const int d = 64, rows = 3, nh = 2;
    float *x = (float *)tu_calloc((size_t)rows * nh * d, sizeof(float));
    float w[6];
    for (int t = 0; t < rows; ++t)
        for (int h = 0; h < nh; ++h) {
            x[(t * nh + h) * d + 0] = (float)(t + 1);
            x[(t * nh + h) * d + 1] = (float)h;
            w[t * nh + h] = 2.0f;
        }
    double *acc = (double *)tu_calloc((size_t)d * d, sizeof(double));
    acc[0] = 1.0; /* accumulates on top */
    ck_assert_int_eq(okv_ref_moments(x, OKV_DTYPE_F32, w, acc, OKV_DTYPE_F64, rows, nh, d, 2, NULL), OKV_SUCCESS);
    /* [0][0] = 1 + 2 * 2 * (1 + 4 + 9) = 57; [0][1] = 2 * (1 + 2 + 3) = 12; [1][1] = 2 * 3 = 6 */
    ck_assert(acc[0] == 57.0 && acc[1] == 12.0 && acc[d] == 12.0 && acc[d + 1] == 6.0 && acc[2] == 0.0);
    float *accf = (float *)tu_calloc((size_t)2 * d * d, sizeof(float));
    ck_assert_int_eq(okv_ref_moments(x, OKV_DTYPE_F32, NULL, accf, OKV_DTYPE_F32, rows, nh, d, 1, NULL), OKV_SUCCESS);
    /* head 0: [0][0] = 14, [1][1] = 0; head 1: [0][0] = 14, [0][1] = 6, [1][1] = 3 */
    ck_assert(accf[0] == 14.0f && accf[d + 1] == 0.0f);
    ck_assert(accf[d * d] == 14.0f && accf[d * d + 1] == 6.0f && accf[d * d + d + 1] == 3.0f);
    free(x);
    free(acc);
    free(accf);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("ref_format");
    TCase *tc = tcase_create("format");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, NULL, tu_release_all);
    tcase_add_test(tc, test_pack_quartered_hand);
    tcase_add_test(tc, test_pack_roundtrip);
    tcase_add_test(tc, test_f16_conversions);
    tcase_add_test(tc, test_bf16_conversions);
    tcase_add_test(tc, test_clip_tau_hand);
    tcase_add_test(tc, test_quantize_row_hand);
    tcase_add_test(tc, test_quantize_lloyd_hand);
    tcase_add_test(tc, test_quantize_meta_overflow);
    tcase_add_test(tc, test_quantizer_statistics);
    tcase_add_test(tc, test_lse_merge_hand);
    tcase_add_test(tc, test_rotate_hand);
    tcase_add_test(tc, test_rotate_op_per_head);
    tcase_add_test(tc, test_moments_hand);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return okv_check_run(suite()); }
