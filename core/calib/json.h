/* json.h - a small strict JSON reader for safetensors headers: full RFC 8259 syntax,
 * UTF-8 validated, depth-limited, duplicate object keys rejected, strings without NUL.
 * Never reads outside [text, text + len). */
#ifndef OKV_JSON_H
#define OKV_JSON_H

#include <stddef.h>
#include <stdint.h>

#define OKV_JSON_MAX_DEPTH 32

typedef enum okv_json_type {
    OKV_JSON_NULL,
    OKV_JSON_BOOL,
    OKV_JSON_NUMBER,
    OKV_JSON_STRING,
    OKV_JSON_ARRAY,
    OKV_JSON_OBJECT
} okv_json_type_t;

typedef struct okv_json {
    okv_json_type_t type;
    int boolean;
    int is_int; /* NUMBER without fraction/exponent that fits int64 */
    int64_t ival;
    char *str; /* STRING: NUL-terminated UTF-8 */
    size_t len;
    size_t count; /* ARRAY / OBJECT members */
    char **keys;  /* OBJECT */
    struct okv_json *items;
} okv_json_t;

/* Parse exactly one value (surrounding whitespace allowed). Returns 0 on success;
 * otherwise fills err (a short reason with the byte offset). */
int okv_json_parse(const char *text, size_t len, okv_json_t *out, char *err, size_t errcap);
void okv_json_free(okv_json_t *v);
/* Member of an object by key (NULL when absent or v is not an object). */
const okv_json_t *okv_json_get(const okv_json_t *v, const char *key);
/* Append s as a JSON string literal (quotes, escapes) to buf; returns the bytes it
 * needs (excluding NUL), writing only when buf has room (snprintf-style). */
size_t okv_json_escape(const char *s, char *buf, size_t cap);

#endif
