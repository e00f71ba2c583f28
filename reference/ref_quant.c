/* ref_quant.c - one row: clip, per-group INT2 quantization, quartered packing
 * (SPEC section 3), built from the okv_format.h helpers. */
#include "ref_ops.h"

#include <string.h>

void okv_ref_pack_row(const int *codes, int d, uint8_t *bytes)
{
    const int q = d / 4;
    for (int i = 0; i < q; ++i)
        bytes[i] = okv_pack4(codes[i], codes[i + q], codes[i + 2 * q], codes[i + 3 * q]);
}

void okv_ref_unpack_row(const uint8_t *bytes, int d, int *codes)
{
    const int q = d / 4;
    for (int c = 0; c < d; ++c)
        codes[c] = okv_unpack_code(bytes[c % q], c / q);
}

int okv_ref_quantize_row(const float *x, int d, int g, float clip_ratio, int clip_mode, int quantizer, int meta_dtype,
                         uint8_t *codes, float *meta)
{
    float xc[OKV_FMT_MAX_HEAD_DIM];
    float m[2 * OKV_FMT_MAX_HEAD_DIM];
    int c[OKV_FMT_MAX_HEAD_DIM];
    memcpy(xc, x, sizeof(float) * (size_t)d);
    float tau = okv_clip_tau(xc, d, clip_ratio, clip_mode);
    if (tau >= 0.0f)
        for (int i = 0; i < d; ++i)
            xc[i] = xc[i] > tau ? tau : (xc[i] < -tau ? -tau : xc[i]);
    const int ng = okv_groups_per_row(d, g);
    for (int gi = 0; gi < ng; ++gi) {
        float scale, lo;
        if (!okv_group_meta(xc + gi * g, g, quantizer, meta_dtype, &scale, &lo)) return 0;
        m[2 * gi] = scale;
        m[2 * gi + 1] = lo;
        for (int i = gi * g; i < (gi + 1) * g; ++i)
            c[i] = okv_group_code(xc[i], scale, lo, quantizer);
    }
    okv_ref_pack_row(c, d, codes);
    memcpy(meta, m, sizeof(float) * 2 * (size_t)ng);
    return 1;
}

void okv_ref_dequantize_row(const uint8_t *codes, const float *meta, int d, int g, float *out)
{
    const int q = d / 4;
    for (int c = 0; c < d; ++c) {
        int code = okv_unpack_code(codes[c % q], c / q);
        out[c] = okv_dequant(code, meta[2 * (c / g)], meta[2 * (c / g) + 1]);
    }
}
