/* ref_cache.c - page-table validation and row access for the mixed-precision
 * paged cache (SPEC section 4; geometry from okv_format.h). */
#include "ref_ops.h"

#include <string.h>

size_t okv_ref_int2_page_bytes(const okv_ref_cache_t *c)
{
    return (size_t)okv_int2_page_bytes(c->n_kv_heads, c->page_size, c->head_dim, c->group_size, c->meta_dtype);
}

size_t okv_ref_bf16_page_bytes(const okv_ref_cache_t *c)
{
    return (size_t)okv_bf16_page_bytes(c->n_kv_heads, c->page_size, c->head_dim);
}

int32_t okv_ref_bf16_pages_per_seq(const okv_ref_cache_t *c)
{
    int32_t slots = okv_bf16_tier_slots(c->sink, c->recent, c->flush);
    return (slots + c->page_size - 1) / c->page_size;
}

static okv_status_t check_table(const int32_t *indptr, const int32_t *indices, int64_t cap, int32_t batch,
                                int32_t pool_pages, const char *tier, okv_err_t *err)
{
    if (indptr[0] < 0)
        return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT, "%s_indptr[0] = %d is negative", tier, indptr[0]);
    for (int32_t b = 0; b < batch; ++b) {
        if (indptr[b + 1] < indptr[b])
            return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT, "sequence %d: %s_indptr not monotone (%d then %d)", b,
                                tier, indptr[b], indptr[b + 1]);
        if ((int64_t)indptr[b + 1] > cap)
            return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT,
                                "sequence %d: %s_indptr[%d] = %d exceeds the %lld entries of %s_indices", b, tier,
                                b + 1, indptr[b + 1], (long long)cap, tier);
        for (int32_t j = indptr[b]; j < indptr[b + 1]; ++j)
            if (indices[j] < 0 || indices[j] >= pool_pages)
                return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT,
                                    "sequence %d: %s page index %d (entry %d) outside the pool of %d pages", b, tier,
                                    indices[j], j, pool_pages);
    }
    return OKV_SUCCESS;
}

okv_status_t okv_ref_cache_validate(const okv_ref_cache_t *c, const int32_t *int2_need, okv_err_t *err)
{
    okv_status_t st =
        check_table(c->int2_indptr, c->int2_indices, c->int2_indices_cap, c->batch, c->int2_pool_pages, "int2", err);
    if (st != OKV_SUCCESS) return st;
    st = check_table(c->bf16_indptr, c->bf16_indices, c->bf16_indices_cap, c->batch, c->bf16_pool_pages, "bf16", err);
    if (st != OKV_SUCCESS) return st;
    const int32_t s0 = c->sink, wf = c->recent + c->flush, p = c->page_size;
    const int32_t bf16_pages = okv_ref_bf16_pages_per_seq(c);
    for (int32_t b = 0; b < c->batch; ++b) {
        int32_t len = c->seq_lens[b], i2 = c->int2_lens[b];
        int32_t max_i2 = len > s0 ? len - s0 : 0;
        if (len < 0)
            return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT, "sequence %d: seq_len %d is negative", b, len);
        if (i2 < 0 || i2 > max_i2)
            return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT,
                                "sequence %d: int2_len %d outside [0, %d] for seq_len %d", b, i2, max_i2, len);
        if (len > s0 && len - s0 - i2 > wf - 1)
            return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT,
                                "sequence %d: recent window %d (seq_len %d, int2_len %d) exceeds W + F - 1 = %d", b,
                                len - s0 - i2, len, i2, wf - 1);
        int32_t have = c->bf16_indptr[b + 1] - c->bf16_indptr[b];
        if (have < bf16_pages)
            return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT, "sequence %d: %d BF16 pages listed, %d needed", b,
                                have, bf16_pages);
        int32_t need_len = int2_need ? int2_need[b] : i2;
        int64_t need = ((int64_t)need_len + p - 1) / p;
        have = c->int2_indptr[b + 1] - c->int2_indptr[b];
        if (have < need)
            return okv_ref_fail(err, OKV_ERROR_INVALID_ARGUMENT,
                                "sequence %d: %d INT2 pages listed, %lld needed for %d INT2 tokens", b, have,
                                (long long)need, need_len);
    }
    return OKV_SUCCESS;
}

size_t okv_ref_bf16_row_offset(const okv_ref_cache_t *c, int32_t b, int32_t pos, int kv, int head)
{
    const int32_t p = c->page_size;
    int slot = okv_bf16_slot(pos, c->sink, c->recent, c->flush);
    size_t page = (size_t)c->bf16_indices[c->bf16_indptr[b] + slot / p];
    size_t elem = (size_t)okv_bf16_row_elem(c->n_kv_heads, p, c->head_dim, kv, head, slot % p);
    return page * okv_ref_bf16_page_bytes(c) + 2 * elem;
}

static size_t int2_page_base(const okv_ref_cache_t *c, int32_t b, int32_t idx)
{
    size_t page = (size_t)c->int2_indices[c->int2_indptr[b] + idx / c->page_size];
    return page * okv_ref_int2_page_bytes(c);
}

size_t okv_ref_int2_codes_offset(const okv_ref_cache_t *c, int32_t b, int32_t idx, int kv, int head)
{
    return int2_page_base(c, b, idx) +
           (size_t)okv_int2_codes_offset(c->n_kv_heads, c->page_size, c->head_dim, kv, head, idx % c->page_size);
}

size_t okv_ref_int2_meta_offset(const okv_ref_cache_t *c, int32_t b, int32_t idx, int kv, int head)
{
    return int2_page_base(c, b, idx) + (size_t)okv_int2_meta_offset(c->n_kv_heads, c->page_size, c->head_dim,
                                                                    c->group_size, c->meta_dtype, kv, head,
                                                                    idx % c->page_size);
}

static okv_dtype_t meta_dtype_of(const okv_ref_cache_t *c)
{
    return c->meta_dtype == OKV_FMT_META_F16 ? OKV_DTYPE_F16
                                             : (c->meta_dtype == OKV_FMT_META_BF16 ? OKV_DTYPE_BF16 : OKV_DTYPE_F32);
}

void okv_ref_cache_read_int2(const okv_ref_cache_t *c, int32_t b, int32_t idx, int kv, int head, uint8_t *codes,
                             float *meta)
{
    const int d = c->head_dim, ng = okv_groups_per_row(d, c->group_size);
    memcpy(codes, c->int2_pool + okv_ref_int2_codes_offset(c, b, idx, kv, head), (size_t)d / 4);
    const uint8_t *m = c->int2_pool + okv_ref_int2_meta_offset(c, b, idx, kv, head);
    for (int i = 0; i < 2 * ng; ++i)
        meta[i] = okv_ref_load(m, meta_dtype_of(c), (size_t)i);
}

void okv_ref_cache_write_int2(okv_ref_cache_t *c, int32_t b, int32_t idx, int kv, int head, const uint8_t *codes,
                              const float *meta)
{
    const int d = c->head_dim, ng = okv_groups_per_row(d, c->group_size);
    memcpy(c->int2_pool + okv_ref_int2_codes_offset(c, b, idx, kv, head), codes, (size_t)d / 4);
    uint8_t *m = c->int2_pool + okv_ref_int2_meta_offset(c, b, idx, kv, head);
    for (int i = 0; i < 2 * ng; ++i)
        okv_ref_store(m, meta_dtype_of(c), (size_t)i, meta[i]);
}

void okv_ref_cache_write_bf16(okv_ref_cache_t *c, int32_t b, int32_t pos, int kv, int head, const float *x)
{
    uint8_t *row = c->bf16_pool + okv_ref_bf16_row_offset(c, b, pos, kv, head);
    for (int i = 0; i < c->head_dim; ++i)
        okv_ref_store(row, OKV_DTYPE_BF16, (size_t)i, x[i]);
}

void okv_ref_cache_read_row(const okv_ref_cache_t *c, int32_t b, int32_t pos, int kv, int head, float *out)
{
    const int d = c->head_dim;
    int32_t idx = pos - c->sink;
    if (idx >= 0 && idx < c->int2_lens[b]) {
        uint8_t codes[OKV_FMT_MAX_HEAD_DIM / 4];
        float meta[2 * OKV_FMT_MAX_HEAD_DIM];
        okv_ref_cache_read_int2(c, b, idx, kv, head, codes, meta);
        okv_ref_dequantize_row(codes, meta, d, c->group_size, out);
        return;
    }
    const uint8_t *row = c->bf16_pool + okv_ref_bf16_row_offset(c, b, pos, kv, head);
    for (int i = 0; i < d; ++i)
        out[i] = okv_ref_load(row, OKV_DTYPE_BF16, (size_t)i);
}

/* int32 elements a ref holds from its offset to the end of its buffer. */
static int64_t i32_capacity(okv_ref_t r)
{
    if (!r.buffer || r.offset > r.buffer->bytes) return 0;
    return (int64_t)((r.buffer->bytes - r.offset) / sizeof(int32_t));
}

void okv_ref_cache_from_view(const okv_cache_view_t *v, okv_ref_cache_t *c)
{
    const okv_cache_desc_t *d = v->desc;
    c->n_q_heads = d->n_q_heads;
    c->n_kv_heads = d->n_kv_heads;
    c->head_dim = d->head_dim;
    c->group_size = d->group_size ? d->group_size : d->head_dim;
    c->meta_dtype = (int32_t)d->meta_dtype;
    c->quantizer = (int32_t)d->quantizer;
    c->clip_mode = (int32_t)d->clip_mode;
    c->sink = d->sink_tokens;
    c->recent = d->recent_tokens;
    c->flush = d->flush_interval;
    c->page_size = d->page_size;
    c->batch = v->batch;
    c->int2_pool = (uint8_t *)okv_ref_ptr(v->int2_pool);
    c->int2_pool_pages = v->int2_pool.buffer ? v->int2_pool_pages : 0;
    c->bf16_pool = (uint8_t *)okv_ref_ptr(v->bf16_pool);
    c->bf16_pool_pages = v->bf16_pool_pages;
    c->int2_indptr = (const int32_t *)okv_ref_ptr(v->int2_indptr);
    c->int2_indices = (const int32_t *)okv_ref_ptr(v->int2_indices);
    c->int2_indices_cap = i32_capacity(v->int2_indices);
    c->bf16_indptr = (const int32_t *)okv_ref_ptr(v->bf16_indptr);
    c->bf16_indices = (const int32_t *)okv_ref_ptr(v->bf16_indices);
    c->bf16_indices_cap = i32_capacity(v->bf16_indices);
    c->seq_lens = (int32_t *)okv_ref_ptr(v->seq_lens);
    c->int2_lens = (int32_t *)okv_ref_ptr(v->int2_lens);
}
