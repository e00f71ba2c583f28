/* json.c - strict JSON reader (see json.h). */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
    const char *s;
    size_t n, i;
    char *err;
    size_t errcap;
    int failed;
} parser_t;

static int fail(parser_t *p, const char *what)
{
    if (!p->failed && p->err && p->errcap) snprintf(p->err, p->errcap, "JSON: %s at byte %zu", what, p->i);
    p->failed = 1;
    return 0;
}

static void skip_ws(parser_t *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int parse_value(parser_t *p, okv_json_t *v, int depth);

static int put_utf8(char *buf, size_t *len, uint32_t cp)
{
    if (cp < 0x80)
        buf[(*len)++] = (char)cp;
    else if (cp < 0x800) {
        buf[(*len)++] = (char)(0xc0 | (cp >> 6));
        buf[(*len)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        buf[(*len)++] = (char)(0xe0 | (cp >> 12));
        buf[(*len)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        buf[(*len)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        buf[(*len)++] = (char)(0xf0 | (cp >> 18));
        buf[(*len)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        buf[(*len)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        buf[(*len)++] = (char)(0x80 | (cp & 0x3f));
    }
    return 1;
}

static int hex4(parser_t *p, uint32_t *out)
{
    if (p->n - p->i < 4) return fail(p, "truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
        char c = p->s[p->i++];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return fail(p, "bad hex digit in \\u escape");
    }
    *out = v;
    return 1;
}

/* Length of a valid UTF-8 sequence starting at s[0] (n bytes available), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0) {
        len = 2;
        cp = c & 0x1f;
        min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3;
        cp = c & 0x0f;
        min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4;
        cp = c & 0x07;
        min = 0x10000;
    } else
        return 0;
    if (n < len) return 0;
    for (size_t k = 1; k < len; ++k) {
        if ((s[k] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

/* p->s[p->i] == '"'. The decoded string is never longer than the literal. */
static int parse_string(parser_t *p, char **out, size_t *out_len)
{
    p->i++;
    size_t start = p->i, end = start;
    /* find the closing quote to size the buffer */
    while (end < p->n && p->s[end] != '"')
        end += (p->s[end] == '\\') ? 2 : 1;
    if (end >= p->n) return fail(p, "unterminated string");
    char *buf = malloc(end - start + 1);
    if (!buf) return fail(p, "out of memory");
    size_t len = 0;
    while (p->i < end) {
        unsigned char c = (unsigned char)p->s[p->i];
        if (c < 0x20) {
            free(buf);
            return fail(p, "control character in string");
        }
        if (c == '\\') {
            p->i++;
            char e = p->s[p->i++];
            switch (e) {
            case '"': buf[len++] = '"'; break;
            case '\\': buf[len++] = '\\'; break;
            case '/': buf[len++] = '/'; break;
            case 'b': buf[len++] = '\b'; break;
            case 'f': buf[len++] = '\f'; break;
            case 'n': buf[len++] = '\n'; break;
            case 'r': buf[len++] = '\r'; break;
            case 't': buf[len++] = '\t'; break;
            case 'u': {
                uint32_t cp;
                if (p->i > end || !hex4(p, &cp) || p->i > end) {
                    free(buf);
                    return fail(p, "bad \\u escape");
                }
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    uint32_t lo;
                    if (end - p->i < 6 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') {
                        free(buf);
                        return fail(p, "lone high surrogate");
                    }
                    p->i += 2;
                    if (!hex4(p, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                        free(buf);
                        return fail(p, "bad low surrogate");
                    }
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                    free(buf);
                    return fail(p, "lone low surrogate");
                }
                if (cp == 0) {
                    free(buf);
                    return fail(p, "NUL in string");
                }
                put_utf8(buf, &len, cp); /* \uXXXX (6 bytes) or a pair (12) -> <= 4 bytes */
                break;
            }
            default: free(buf); return fail(p, "bad escape");
            }
        } else {
            size_t k = utf8_seq((const unsigned char *)p->s + p->i, end - p->i);
            if (!k) {
                free(buf);
                return fail(p, "invalid UTF-8");
            }
            memcpy(buf + len, p->s + p->i, k);
            len += k;
            p->i += k;
        }
    }
    if (p->i != end) { /* an escape ran past the closing quote */
        free(buf);
        return fail(p, "bad escape at end of string");
    }
    p->i = end + 1;
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return 1;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int parse_number(parser_t *p, okv_json_t *v)
{
    size_t start = p->i;
    int neg = 0, is_int = 1, overflow = 0;
    uint64_t mag = 0;
    if (p->s[p->i] == '-') {
        neg = 1;
        p->i++;
    }
    if (p->i >= p->n || !is_digit(p->s[p->i])) return fail(p, "bad number");
    if (p->s[p->i] == '0') {
        p->i++;
    } else {
        while (p->i < p->n && is_digit(p->s[p->i])) {
            unsigned dg = (unsigned)(p->s[p->i] - '0');
            if (mag > (UINT64_MAX - dg) / 10)
                overflow = 1;
            else
                mag = mag * 10 + dg;
            p->i++;
        }
    }
    if (p->i < p->n && p->s[p->i] == '.') {
        is_int = 0;
        p->i++;
        if (p->i >= p->n || !is_digit(p->s[p->i])) return fail(p, "bad fraction");
        while (p->i < p->n && is_digit(p->s[p->i]))
            p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        is_int = 0;
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
        if (p->i >= p->n || !is_digit(p->s[p->i])) return fail(p, "bad exponent");
        while (p->i < p->n && is_digit(p->s[p->i]))
            p->i++;
    }
    (void)start;
    v->type = OKV_JSON_NUMBER;
    v->is_int = 0;
    if (is_int && !overflow) {
        if (!neg && mag <= (uint64_t)INT64_MAX) {
            v->is_int = 1;
            v->ival = (int64_t)mag;
        } else if (neg && mag <= (uint64_t)INT64_MAX) {
            v->is_int = 1;
            v->ival = -(int64_t)mag;
        }
    }
    return 1;
}

static int match_lit(parser_t *p, const char *lit)
{
    size_t k = strlen(lit);
    if (p->n - p->i < k || memcmp(p->s + p->i, lit, k) != 0) return fail(p, "bad literal");
    p->i += k;
    return 1;
}

static int grow(parser_t *p, okv_json_t *v, size_t *cap, int with_keys)
{
    if (v->count < *cap) return 1;
    size_t nc = *cap ? *cap * 2 : 4;
    okv_json_t *items = realloc(v->items, nc * sizeof *items);
    if (!items) return fail(p, "out of memory");
    v->items = items;
    if (with_keys) {
        char **keys = realloc(v->keys, nc * sizeof *keys);
        if (!keys) return fail(p, "out of memory");
        v->keys = keys;
    }
    *cap = nc;
    return 1;
}

static int cmp_keyp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int parse_container(parser_t *p, okv_json_t *v, int depth, int object)
{
    size_t cap = 0;
    v->type = object ? OKV_JSON_OBJECT : OKV_JSON_ARRAY;
    p->i++;
    skip_ws(p);
    char close = object ? '}' : ']';
    if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        return 1;
    }
    for (;;) {
        skip_ws(p);
        if (!grow(p, v, &cap, object)) return 0;
        char *key = NULL;
        if (object) {
            size_t kl;
            if (p->i >= p->n || p->s[p->i] != '"') return fail(p, "expected key");
            if (!parse_string(p, &key, &kl)) return 0;
            skip_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') {
                free(key);
                return fail(p, "expected ':'");
            }
            p->i++;
            v->keys[v->count] = key;
        }
        okv_json_t *item = &v->items[v->count];
        memset(item, 0, sizeof *item);
        v->count++; /* counted before parsing so that okv_json_free releases partial items */
        if (!parse_value(p, item, depth + 1)) return 0;
        skip_ws(p);
        if (p->i >= p->n) return fail(p, "unterminated container");
        if (p->s[p->i] == ',') {
            p->i++;
            continue;
        }
        if (p->s[p->i] == close) {
            p->i++;
            break;
        }
        return fail(p, "expected ',' or closing bracket");
    }
    if (object && v->count > 1) {
        char **sorted = malloc(v->count * sizeof *sorted);
        if (!sorted) return fail(p, "out of memory");
        memcpy(sorted, v->keys, v->count * sizeof *sorted);
        qsort(sorted, v->count, sizeof *sorted, cmp_keyp);
        int dup = 0;
        for (size_t k = 1; k < v->count && !dup; ++k)
            dup = strcmp(sorted[k - 1], sorted[k]) == 0;
        free(sorted);
        if (dup) return fail(p, "duplicate key");
    }
    return 1;
}

static int parse_value(parser_t *p, okv_json_t *v, int depth)
{
    if (depth > OKV_JSON_MAX_DEPTH) return fail(p, "nesting too deep");
    skip_ws(p);
    if (p->i >= p->n) return fail(p, "unexpected end");
    char c = p->s[p->i];
    switch (c) {
    case '{': return parse_container(p, v, depth, 1);
    case '[': return parse_container(p, v, depth, 0);
    case '"': v->type = OKV_JSON_STRING; return parse_string(p, &v->str, &v->len);
    case 't':
        v->type = OKV_JSON_BOOL;
        v->boolean = 1;
        return match_lit(p, "true");
    case 'f': v->type = OKV_JSON_BOOL; return match_lit(p, "false");
    case 'n': v->type = OKV_JSON_NULL; return match_lit(p, "null");
    default:
        if (c == '-' || is_digit(c)) return parse_number(p, v);
        return fail(p, "unexpected character");
    }
}

void okv_json_free(okv_json_t *v)
{
    if (!v) return;
    if (v->type == OKV_JSON_STRING) free(v->str);
    if (v->type == OKV_JSON_ARRAY || v->type == OKV_JSON_OBJECT) {
        for (size_t k = 0; k < v->count; ++k) {
            okv_json_free(&v->items[k]);
            if (v->type == OKV_JSON_OBJECT) free(v->keys[k]);
        }
        free(v->items);
        free(v->keys);
    }
    memset(v, 0, sizeof *v);
}

int okv_json_parse(const char *text, size_t len, okv_json_t *out, char *err, size_t errcap)
{
    parser_t p = {text, len, 0, err, errcap, 0};
    memset(out, 0, sizeof *out);
    if (err && errcap) err[0] = '\0';
    if (!text) return -1;
    int ok = parse_value(&p, out, 0);
    if (ok) {
        skip_ws(&p);
        if (p.i != p.n) ok = fail(&p, "trailing characters");
    }
    if (!ok) {
        okv_json_free(out);
        return -1;
    }
    return 0;
}

const okv_json_t *okv_json_get(const okv_json_t *v, const char *key)
{
    if (!v || v->type != OKV_JSON_OBJECT) return NULL;
    for (size_t k = 0; k < v->count; ++k)
        if (strcmp(v->keys[k], key) == 0) return &v->items[k];
    return NULL;
}

size_t okv_json_escape(const char *s, char *buf, size_t cap)
{
    size_t n = 0;
#define PUTC(ch)                                                                                                       \
    do {                                                                                                               \
        if (n + 1 < cap) buf[n] = (ch);                                                                                \
        n++;                                                                                                           \
    } while (0)
    PUTC('"');
    for (const unsigned char *c = (const unsigned char *)s; *c; ++c) {
        switch (*c) {
        case '"':
            PUTC('\\');
            PUTC('"');
            break;
        case '\\':
            PUTC('\\');
            PUTC('\\');
            break;
        case '\n':
            PUTC('\\');
            PUTC('n');
            break;
        case '\r':
            PUTC('\\');
            PUTC('r');
            break;
        case '\t':
            PUTC('\\');
            PUTC('t');
            break;
        default:
            if (*c < 0x20) {
                static const char hx[] = "0123456789abcdef";
                PUTC('\\');
                PUTC('u');
                PUTC('0');
                PUTC('0');
                PUTC(hx[*c >> 4]);
                PUTC(hx[*c & 15]);
            } else {
                PUTC((char)*c);
            }
        }
    }
    PUTC('"');
    if (cap) buf[n < cap ? n : cap - 1] = '\0';
#undef PUTC
    return n;
}
