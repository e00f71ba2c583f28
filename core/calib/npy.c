/* npy.c - .npy reader (see npy.h). The header is a Python dict literal such as
 * {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }. */
#include "npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lex {
    const char *s;
    size_t n, i;
} lex_t;

static void ws(lex_t *L)
{
    while (L->i < L->n && (L->s[L->i] == ' ' || L->s[L->i] == '\t' || L->s[L->i] == '\n' || L->s[L->i] == '\r'))
        L->i++;
}

static int eat(lex_t *L, char c)
{
    ws(L);
    if (L->i < L->n && L->s[L->i] == c) {
        L->i++;
        return 1;
    }
    return 0;
}

/* Python string literal without escapes, into out (cap incl. NUL). */
static int pystr(lex_t *L, char *out, size_t cap)
{
    ws(L);
    if (L->i >= L->n || (L->s[L->i] != '\'' && L->s[L->i] != '"')) return 0;
    char q = L->s[L->i++];
    size_t k = 0;
    while (L->i < L->n && L->s[L->i] != q) {
        char c = L->s[L->i++];
        if (c == '\\' || c == '\n' || k + 1 >= cap) return 0;
        out[k++] = c;
    }
    if (L->i >= L->n) return 0;
    L->i++;
    out[k] = '\0';
    return 1;
}

static int word(lex_t *L, const char *w)
{
    ws(L);
    size_t k = strlen(w);
    if (L->n - L->i < k || memcmp(L->s + L->i, w, k) != 0) return 0;
    L->i += k;
    return 1;
}

static int shape_tuple(lex_t *L, okv_npy_info_t *info)
{
    if (!eat(L, '(')) return 0;
    info->ndim = 0;
    for (;;) {
        if (eat(L, ')')) return 1;
        ws(L);
        if (L->i >= L->n || L->s[L->i] < '0' || L->s[L->i] > '9') return 0;
        int64_t v = 0;
        while (L->i < L->n && L->s[L->i] >= '0' && L->s[L->i] <= '9') {
            if (v > (INT64_MAX - 9) / 10) return 0;
            v = v * 10 + (L->s[L->i++] - '0');
        }
        if (L->i < L->n && L->s[L->i] == 'L') L->i++; /* Python 2 long suffix */
        if (info->ndim >= OKV_NPY_MAX_DIMS) return 0;
        info->shape[info->ndim++] = v;
        if (eat(L, ',')) continue;
        if (eat(L, ')')) return 1;
        return 0;
    }
}

static okv_status_t bad(char *err, size_t cap, const char *what)
{
    if (err && cap) snprintf(err, cap, "npy: %s", what);
    return OKV_ERROR_CORRUPT_FILE;
}

okv_status_t okv_npy_parse(const void *image, size_t bytes, okv_npy_info_t *info, char *err, size_t errcap)
{
    if (!image || !info) return OKV_ERROR_NULL_POINTER;
    memset(info, 0, sizeof *info);
    const unsigned char *b = image;
    if (bytes < 10 || memcmp(b, "\x93NUMPY", 6) != 0) return bad(err, errcap, "missing \\x93NUMPY magic");
    int major = b[6];
    size_t hlen, hstart;
    if (major == 1) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (bytes < 12) return bad(err, errcap, "truncated header length");
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        hstart = 12;
    } else {
        return bad(err, errcap, "unsupported format version");
    }
    if (hlen > bytes - hstart) return bad(err, errcap, "truncated header");
    lex_t L = {(const char *)b + hstart, hlen, 0};
    char key[32], descr[16];
    int have_descr = 0, have_fortran = 0, have_shape = 0, fortran = 0;
    if (!eat(&L, '{')) return bad(err, errcap, "header is not a dict");
    for (;;) {
        if (eat(&L, '}')) break;
        if (!pystr(&L, key, sizeof key) || !eat(&L, ':')) return bad(err, errcap, "bad dict key");
        if (strcmp(key, "descr") == 0 && !have_descr) {
            if (!pystr(&L, descr, sizeof descr)) return bad(err, errcap, "bad descr");
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0 && !have_fortran) {
            if (word(&L, "False"))
                fortran = 0;
            else if (word(&L, "True"))
                fortran = 1;
            else
                return bad(err, errcap, "bad fortran_order");
            have_fortran = 1;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            if (!shape_tuple(&L, info)) return bad(err, errcap, "bad shape tuple");
            have_shape = 1;
        } else {
            return bad(err, errcap, "unexpected or repeated key in header dict");
        }
        if (eat(&L, ',')) continue;
        if (eat(&L, '}')) break;
        return bad(err, errcap, "expected ',' or '}' in header dict");
    }
    ws(&L);
    if (L.i != L.n) return bad(err, errcap, "trailing characters after the header dict");
    if (!have_descr || !have_fortran || !have_shape)
        return bad(err, errcap, "header lacks descr, fortran_order or shape");
    if (fortran) return bad(err, errcap, "Fortran-order arrays are not supported (use C order)");
    size_t esz;
    if (strcmp(descr, "<f4") == 0 || strcmp(descr, "=f4") == 0) {
        info->dtype = OKV_DTYPE_F32;
        esz = 4;
    } else if (strcmp(descr, "<f2") == 0 || strcmp(descr, "=f2") == 0) {
        info->dtype = OKV_DTYPE_F16;
        esz = 2;
    } else {
        return bad(err, errcap, "dtype must be '<f2' or '<f4'");
    }
    uint64_t count = 1;
    for (int i = 0; i < info->ndim; ++i) {
        uint64_t s = (uint64_t)info->shape[i];
        if (s != 0 && count > UINT64_MAX / 4 / s) return bad(err, errcap, "shape too large");
        count *= s;
    }
    info->count = count;
    info->data_offset = hstart + hlen;
    uint64_t avail = bytes - info->data_offset;
    if (count * esz != avail) {
        if (err && errcap)
            snprintf(err, errcap, "npy: data section has %llu bytes, shape needs %llu", (unsigned long long)avail,
                     (unsigned long long)(count * esz));
        return OKV_ERROR_CORRUPT_FILE;
    }
    return OKV_SUCCESS;
}

okv_status_t okv_npy_load(const char *path, okv_npy_array_t *arr, char *err, size_t errcap)
{
    if (!path || !arr) return OKV_ERROR_NULL_POINTER;
    memset(arr, 0, sizeof *arr);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (err && errcap) snprintf(err, errcap, "npy: cannot open %s", path);
        return OKV_ERROR_IO;
    }
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    okv_status_t st = OKV_SUCCESS;
    for (;;) {
        if (len == cap) {
            size_t nc = cap ? cap * 2 : 1 << 16;
            unsigned char *nb = nc > cap ? realloc(buf, nc) : NULL;
            if (!nb) {
                st = OKV_ERROR_OUT_OF_MEMORY;
                if (err && errcap) snprintf(err, errcap, "npy: out of memory reading %s", path);
                break;
            }
            buf = nb;
            cap = nc;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0) {
            if (ferror(f)) {
                st = OKV_ERROR_IO;
                if (err && errcap) snprintf(err, errcap, "npy: read error on %s", path);
            }
            break;
        }
    }
    fclose(f);
    if (st == OKV_SUCCESS) st = okv_npy_parse(buf, len, &arr->info, err, errcap);
    if (st == OKV_SUCCESS) {
        /* move the data to the buffer start */
        size_t n = len - arr->info.data_offset;
        memmove(buf, buf + arr->info.data_offset, n);
        arr->data = buf;
        buf = NULL;
    }
    free(buf);
    return st;
}

void okv_npy_free(okv_npy_array_t *arr)
{
    if (!arr) return;
    free(arr->data);
    memset(arr, 0, sizeof *arr);
}
