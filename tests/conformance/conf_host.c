/* conf_host.c - host-side helpers of the conformance runner: random numbers, dtype
 * conversions (through the shared format header), rotations and test activations. */
#include "conf_internal.h"

#include "okv_format.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- xoshiro256** seeded by splitmix64 ---- */
static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void conf_rng_seed(conf_rng_t *r, uint64_t seed)
{
    uint64_t x = seed * 0x2545f4914f6cdd1dull + 0x1234567ull;
    for (int i = 0; i < 4; ++i)
        r->s[i] = splitmix(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t conf_rng_u64(conf_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double conf_rng_uniform(conf_rng_t *r) { return (double)(conf_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

double conf_rng_normal(conf_rng_t *r)
{
    double u1 = conf_rng_uniform(r), u2 = conf_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

int conf_rng_int(conf_rng_t *r, int n) { return n <= 1 ? 0 : (int)(conf_rng_u64(r) % (uint64_t)n); }

/* ---- dtypes ---- */
void conf_store(okv_dtype_t t, const float *src, void *dst, size_t n)
{
    switch (t) {
    case OKV_DTYPE_F32: memcpy(dst, src, n * sizeof(float)); break;
    case OKV_DTYPE_F16:
        for (size_t i = 0; i < n; ++i)
            ((uint16_t *)dst)[i] = okv_f32_to_f16(src[i]);
        break;
    case OKV_DTYPE_BF16:
        for (size_t i = 0; i < n; ++i)
            ((uint16_t *)dst)[i] = okv_f32_to_bf16(src[i]);
        break;
    case OKV_DTYPE_F64:
        for (size_t i = 0; i < n; ++i)
            ((double *)dst)[i] = (double)src[i];
        break;
    default: memset(dst, 0, n * 4); break;
    }
}

void conf_load(okv_dtype_t t, const void *src, float *dst, size_t n)
{
    switch (t) {
    case OKV_DTYPE_F32: memcpy(dst, src, n * sizeof(float)); break;
    case OKV_DTYPE_F16:
        for (size_t i = 0; i < n; ++i)
            dst[i] = okv_f16_to_f32(((const uint16_t *)src)[i]);
        break;
    case OKV_DTYPE_BF16:
        for (size_t i = 0; i < n; ++i)
            dst[i] = okv_bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    case OKV_DTYPE_F64:
        for (size_t i = 0; i < n; ++i)
            dst[i] = (float)((const double *)src)[i];
        break;
    default:
        for (size_t i = 0; i < n; ++i)
            dst[i] = NAN;
        break;
    }
}

float conf_round(okv_dtype_t t, float x)
{
    if (t == OKV_DTYPE_F16) return okv_f16_to_f32(okv_f32_to_f16(x));
    if (t == OKV_DTYPE_BF16) return okv_bf16_to_f32(okv_f32_to_bf16(x));
    return x;
}

double conf_dtype_eps(okv_dtype_t t)
{
    switch (t) {
    case OKV_DTYPE_F16: return 1.0 / 2048.0;
    case OKV_DTYPE_BF16: return 1.0 / 256.0;
    case OKV_DTYPE_F64: return 1.1e-16;
    default: return 1.0 / 16777216.0;
    }
}

double conf_dtype_tiny(okv_dtype_t t)
{
    /* half the spacing of the subnormals: the absolute rounding error near zero */
    switch (t) {
    case OKV_DTYPE_F16: return 2.98023223876953125e-08;
    case OKV_DTYPE_BF16: return 4.6e-41;
    case OKV_DTYPE_F64: return 0.0;
    default: return 7.1e-46;
    }
}

/* ---- rotations ---- */
void conf_random_rotation(conf_rng_t *r, int d, float *out)
{
    double *m = malloc((size_t)d * (size_t)d * sizeof(double));
    if (!m) {
        for (int i = 0; i < d * d; ++i)
            out[i] = (i / d == i % d) ? 1.0f : 0.0f;
        return;
    }
    for (int i = 0; i < d * d; ++i)
        m[i] = conf_rng_normal(r);
    /* modified Gram-Schmidt on rows, twice for orthogonality to ~1e-15 */
    for (int pass = 0; pass < 2; ++pass) {
        for (int i = 0; i < d; ++i) {
            double *ri = m + (size_t)i * d;
            for (int j = 0; j < i; ++j) {
                const double *rj = m + (size_t)j * d;
                double dot = 0.0;
                for (int k = 0; k < d; ++k)
                    dot += ri[k] * rj[k];
                for (int k = 0; k < d; ++k)
                    ri[k] -= dot * rj[k];
            }
            double nrm = 0.0;
            for (int k = 0; k < d; ++k)
                nrm += ri[k] * ri[k];
            nrm = 1.0 / sqrt(nrm);
            for (int k = 0; k < d; ++k)
                ri[k] *= nrm;
        }
    }
    for (int i = 0; i < d * d; ++i)
        out[i] = (float)m[i];
    free(m);
}

int conf_actgen_init(conf_actgen_t *a, conf_rng_t *r, int heads, int d, float outlier_scale)
{
    /* per head: 3 outlier channels with a large scale and a bias, the rest N(b_c, s_c)
     * with a mild spread of channel scales */
    a->heads = heads;
    a->d = d;
    a->scale = malloc((size_t)heads * (size_t)d * sizeof(float));
    a->bias = malloc((size_t)heads * (size_t)d * sizeof(float));
    if (!a->scale || !a->bias) {
        conf_actgen_free(a);
        return 0;
    }
    for (int h = 0; h < heads; ++h) {
        for (int c = 0; c < d; ++c) {
            a->scale[h * d + c] = (float)(0.5 + conf_rng_uniform(r));
            a->bias[h * d + c] = (float)(0.1 * conf_rng_normal(r));
        }
        for (int o = 0; o < 3; ++o) {
            int c = conf_rng_int(r, d);
            a->scale[h * d + c] = outlier_scale * (float)(0.5 + conf_rng_uniform(r));
            a->bias[h * d + c] = outlier_scale * (float)conf_rng_normal(r);
        }
    }
    return 1;
}

void conf_actgen_rows(const conf_actgen_t *a, conf_rng_t *r, int n, float *out)
{
    int hd = a->heads * a->d;
    for (int t = 0; t < n; ++t)
        for (int i = 0; i < hd; ++i)
            out[(size_t)t * hd + i] = (float)(a->bias[i] + a->scale[i] * conf_rng_normal(r));
}

void conf_actgen_free(conf_actgen_t *a)
{
    free(a->scale);
    free(a->bias);
    a->scale = a->bias = NULL;
}

int conf_activations(conf_rng_t *r, int n, int heads, int d, float outlier_scale, float *out)
{
    conf_actgen_t a;
    if (!conf_actgen_init(&a, r, heads, d, outlier_scale)) return 0;
    conf_actgen_rows(&a, r, n, out);
    conf_actgen_free(&a);
    return 1;
}
