/* cache_desc.c - cache geometry: defaults, validation, sizes, flush rule, bits/element. */
#include "okv_format.h"
#include "okv_internal.h"

#include <string.h>

OKV_API void okv_cache_desc_init(okv_cache_desc_t *d)
{
    if (!d) return;
    memset(d, 0, sizeof *d);
    d->size = sizeof *d;
    d->n_q_heads = 32;
    d->n_kv_heads = 8;
    d->head_dim = 128;
    d->group_size = 0;
    d->meta_dtype = OKV_DTYPE_F16;
    d->quantizer = OKV_QUANT_UNIFORM;
    d->clip_mode = OKV_CLIP_SORT;
    d->sink_tokens = 64;
    d->recent_tokens = 256;
    d->flush_interval = 8;
    d->page_size = 16;
}

static int32_t group_of(const okv_cache_desc_t *d) { return d->group_size ? d->group_size : d->head_dim; }

okv_status_t okv_validate_cache_desc(const okv_cache_desc_t *d, okv_err_t *e)
{
    if (!d) return okv_fail(e, OKV_ERROR_NULL_POINTER, "cache desc is NULL");
    if (d->size < sizeof *d)
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "cache desc size %zu < %zu", d->size, sizeof *d);
    if (d->head_dim != 64 && d->head_dim != 128 && d->head_dim != 256)
        return okv_fail(e, OKV_ERROR_UNSUPPORTED_HEAD_DIM, "head_dim %d (supported: 64, 128, 256)", d->head_dim);
    if (d->n_kv_heads <= 0 || d->n_q_heads <= 0 || d->n_q_heads % d->n_kv_heads != 0)
        return okv_fail(e, OKV_ERROR_BAD_SHAPE, "n_q_heads %d must be a positive multiple of n_kv_heads %d",
                        d->n_q_heads, d->n_kv_heads);
    int32_t g = group_of(d);
    if (!(g == 32 || g == 64 || g == 128 || g == d->head_dim) || g > d->head_dim)
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "group_size %d (32, 64, 128 or head_dim, <= head_dim)",
                        d->group_size);
    if (d->meta_dtype != OKV_DTYPE_F16 && d->meta_dtype != OKV_DTYPE_BF16 && d->meta_dtype != OKV_DTYPE_F32)
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "meta_dtype %d (F16, BF16 or F32)", (int)d->meta_dtype);
    if (d->quantizer != OKV_QUANT_UNIFORM && d->quantizer != OKV_QUANT_LLOYD_MAX)
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "unknown quantizer %d", (int)d->quantizer);
    if (d->clip_mode != OKV_CLIP_SORT && d->clip_mode != OKV_CLIP_BISECT)
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "unknown clip mode %d", (int)d->clip_mode);
    if (d->sink_tokens < 0 || d->recent_tokens < 0 || d->flush_interval < 1)
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "sink %d, recent %d must be >= 0 and flush %d >= 1",
                        d->sink_tokens, d->recent_tokens, d->flush_interval);
    if (d->page_size < 1 || d->page_size > 4096)
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "page_size %d (1..4096)", d->page_size);
    if ((int64_t)d->sink_tokens + d->recent_tokens + d->flush_interval > (1 << 20))
        return okv_fail(e, OKV_ERROR_INVALID_ARGUMENT, "sink + recent + flush exceed 2^20 tokens");
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_cache_desc_validate(const okv_cache_desc_t *d)
{
    if (!d) return OKV_ERROR_NULL_POINTER;
    return okv_validate_cache_desc(d, NULL);
}

static int meta_code(okv_dtype_t t)
{
    return t == OKV_DTYPE_F32 ? OKV_FMT_META_F32 : (t == OKV_DTYPE_BF16 ? OKV_FMT_META_BF16 : OKV_FMT_META_F16);
}

OKV_API okv_status_t okv_cache_get_sizes(const okv_cache_desc_t *d, okv_cache_sizes_t *s)
{
    if (!d || !s) return OKV_ERROR_NULL_POINTER;
    if (s->size < sizeof *s) return OKV_ERROR_INVALID_ARGUMENT;
    okv_status_t st = okv_validate_cache_desc(d, NULL);
    if (st != OKV_SUCCESS) return st;
    int32_t g = group_of(d), hd = d->head_dim, hkv = d->n_kv_heads, p = d->page_size;
    s->int2_page_bytes = okv_int2_page_bytes(hkv, p, hd, g, meta_code(d->meta_dtype));
    s->bf16_page_bytes = okv_bf16_page_bytes(hkv, p, hd);
    s->bf16_slots_per_seq = okv_bf16_tier_slots(d->sink_tokens, d->recent_tokens, d->flush_interval);
    s->bf16_pages_per_seq = (s->bf16_slots_per_seq + p - 1) / p;
    double msz = (double)okv_meta_size(meta_code(d->meta_dtype));
    s->int2_bytes_per_token = 2.0 * hkv * (hd / 4.0 + (double)(hd / g) * 2.0 * msz);
    s->bf16_bytes_per_token = 2.0 * hkv * hd * 2.0;
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_cache_int2_len_after(const okv_cache_desc_t *d, int32_t seq_len, int32_t int2_len,
                                              int32_t n_new, int32_t *out)
{
    if (!d || !out) return OKV_ERROR_NULL_POINTER;
    okv_status_t st = okv_validate_cache_desc(d, NULL);
    if (st != OKV_SUCCESS) return st;
    if (seq_len < 0 || n_new < 0 || int2_len < 0 ||
        int2_len > (seq_len > d->sink_tokens ? seq_len - d->sink_tokens : 0) || (int64_t)seq_len + n_new > INT32_MAX)
        return OKV_ERROR_INVALID_ARGUMENT;
    *out = okv_int2_len_after(seq_len, int2_len, n_new, d->sink_tokens, d->recent_tokens, d->flush_interval);
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_cache_int2_pages_needed(const okv_cache_desc_t *d, int32_t int2_len, int32_t *pages)
{
    if (!d || !pages) return OKV_ERROR_NULL_POINTER;
    okv_status_t st = okv_validate_cache_desc(d, NULL);
    if (st != OKV_SUCCESS) return st;
    if (int2_len < 0) return OKV_ERROR_INVALID_ARGUMENT;
    *pages = (int32_t)(((int64_t)int2_len + d->page_size - 1) / d->page_size);
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_cache_last_page_len(const okv_cache_desc_t *d, int32_t int2_len, int32_t *len)
{
    int32_t pages = 0;
    okv_status_t st = okv_cache_int2_pages_needed(d, int2_len, &pages);
    if (st != OKV_SUCCESS) return st;
    *len = pages ? int2_len - (pages - 1) * d->page_size : 0;
    return OKV_SUCCESS;
}

OKV_API okv_status_t okv_cache_bits_per_element(const okv_cache_desc_t *d, int64_t seq_len, double *bpe)
{
    if (!d || !bpe) return OKV_ERROR_NULL_POINTER;
    okv_status_t st = okv_validate_cache_desc(d, NULL);
    if (st != OKV_SUCCESS) return st;
    if (seq_len <= 0) return OKV_ERROR_INVALID_ARGUMENT;
    /* BPE(L) = [(L - S0 - W)(2 + 32/G) + (S0 + W) 16] / L, metadata 2 values per group */
    double g = (double)group_of(d);
    double meta_bits = 2.0 * 8.0 * okv_meta_size(meta_code(d->meta_dtype));
    int64_t bf = d->sink_tokens + d->recent_tokens;
    if (bf > seq_len) bf = seq_len;
    *bpe = ((double)(seq_len - bf) * (2.0 + meta_bits / g) + (double)bf * 16.0) / (double)seq_len;
    return OKV_SUCCESS;
}
