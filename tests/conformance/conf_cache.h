/* conf_cache.h - device buffers with guard fences, the host model of the paged
 * mixed-precision cache, the host INT2 quantizer and the tie-aware row comparison. */
#ifndef OKV_CONF_CACHE_H
#define OKV_CONF_CACHE_H

#include "conf_internal.h"

#define CONF_GUARD 256 /* fence bytes before and after every payload */
#define CONF_MAX_BUFS 64

/* ---- one case's run: buffers, failure message ---- */
typedef struct dbuf {
    okv_context_t *ctx;
    okv_buffer_t *b;
    size_t bytes; /* payload */
    size_t post;  /* fence bytes after the payload (0 for a deliberately short buffer) */
    char name[32];
} dbuf_t;

typedef struct run {
    conf_session_t *s;
    const conf_case_t *c;
    char *msg;
    size_t cap;
    int failed;
    dbuf_t bufs[CONF_MAX_BUFS];
    int nbufs;
} run_t;

void run_fail(run_t *r, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Device buffer of `bytes` payload bytes between two fences; payload = init, or
 * 0xff bytes (NaN in f32/f16/bf16) when init is NULL. NULL on failure (recorded). */
dbuf_t *dbuf_new(run_t *r, okv_context_t *ctx, const char *name, size_t bytes, const void *init);
/* A buffer that ends right after its payload (the core must reject it as too small
 * for the shape; no fence after it to make it larger). */
dbuf_t *dbuf_new_short(run_t *r, okv_context_t *ctx, const char *name, size_t bytes);
okv_ref_t dref(const dbuf_t *d);
int dbuf_put(run_t *r, dbuf_t *d, const void *src, size_t bytes);
int dbuf_get(run_t *r, const dbuf_t *d, void *dst, size_t bytes);
int dbuf_poison(run_t *r, dbuf_t *d);
/* Checks the fences of every buffer of the run (records failures). */
int run_check_fences(run_t *r);
void run_free(run_t *r);

/* ---- host model of the cache ---- */
typedef struct hcache {
    okv_cache_desc_t desc;
    int batch, hkv, d, g, ng, P, s0, w, f;
    int meta, msz, quant, clip;
    float kr, vr; /* clip ratios */
    int *seq_len, *int2_len;
    int max_pages; /* INT2 pages reserved per sequence (capacity) */
    int *pages;    /* [batch][max_pages] INT2 page ids */
    int *tpages;   /* [batch] pages currently in the page table */
    int bppseq;    /* BF16 pages per sequence */
    int *bpages;   /* [batch][bppseq] */
    int n_ipool, n_bpool;
    size_t ipb, bpb; /* page bytes */
    uint8_t *ipool;
    uint16_t *bpool;
    float *bval; /* exact (pre-bf16) value of every BF16 element */
    float *bunc; /* per BF16 row: uncertainty of bval (0: exact) */
} hcache_t;

/* cap_int2[b]: INT2 tokens sequence b may reach during the case. */
int hc_init(hcache_t *h, const conf_case_t *c, const int *cap_int2);
void hc_free(hcache_t *h);
int hc_copy(hcache_t *dst, const hcache_t *src);
int hc_int2_after(const hcache_t *h, int seq_len, int int2_len, int n_new);
/* A reachable (seq_len, int2_len) state: a prompt then a few decode steps. */
int hc_state_int2(const hcache_t *h, conf_rng_t *rng, int t);
/* Fill sequence b with t positions of random rotated K/V in state (t, i). */
int hc_fill(hcache_t *h, conf_rng_t *rng, int b, int t, int i);
int hc_bf16_slot(const hcache_t *h, int pos);
uint16_t *hc_bf16_row(const hcache_t *h, uint16_t *pool, int b, int slot, int kv, int head);
size_t hc_bf16_row_index(const hcache_t *h, int b, int slot, int kv, int head); /* element index */
size_t hc_int2_codes_at(const hcache_t *h, int b, int j, int kv, int head);     /* byte offset */
size_t hc_int2_meta_at(const hcache_t *h, int b, int j, int kv, int head);
/* Quantize a rotated row into codes (d/4 bytes) and meta (ng*2*msz bytes); 0 on
 * metadata overflow. */
int hc_quant_row(const hcache_t *h, const float *x, float ratio, uint8_t *codes, uint8_t *meta);
/* Dequantized value of channel i of a stored row. */
float hc_dequant(const hcache_t *h, const uint8_t *codes, const uint8_t *meta, int i);

/* Uploaded cache: the pools, page tables and lengths as device buffers. */
typedef struct dcache {
    dbuf_t *ipool, *bpool, *iptr, *iidx, *bptr, *bidx, *slen, *ilen;
    okv_cache_view_t view;
    int n_iidx; /* entries of int2 indices */
} dcache_t;
int hc_upload(run_t *r, okv_context_t *ctx, const hcache_t *h, dcache_t *dc);
/* Page tables of the host cache: indptr [batch+1], indices (h->tpages INT2 pages per seq). */
void hc_build_tables(const hcache_t *h, int32_t *iptr, int32_t *iidx, int32_t *bptr, int32_t *bidx);
/* Rewrite the INT2 page table (h->tpages) of an uploaded cache. */
int hc_upload_table(run_t *r, const hcache_t *h, dcache_t *dc);

/* Tie-aware comparison of one stored row against the model row x (the values the
 * backend quantizes, known to within unc). Returns 1 when acceptable; *ties gets the
 * codes that differ from the model's at an allowed rounding tie. */
int hc_check_row(run_t *r, const hcache_t *h, const float *x, double unc, float ratio, const uint8_t *got_codes,
                 const uint8_t *got_meta, const uint8_t *exp_codes, const uint8_t *exp_meta, int *ties,
                 const char *where);

/* Runs the ref backend's dequantize over h (f32 out, rows concatenated in sequence
 * order). *k, *v are [sum seq_len][Hkv][d]; rowstart [batch + 1]. */
int ref_dequantize(run_t *r, const hcache_t *h, float **k, float **v, int **rowstart);

#endif
