/* mjson.h - a small JSON reader for checkpoint metadata (config.json, safetensors headers,
 * model.safetensors.index.json).
 *
 * The engine core may not depend on a JSON library, so this parses a whole document into a tree
 * held in one arena. Strings are unescaped and checked to be valid UTF-8 (tensor names come from
 * files we do not trust); integers that fit int64 keep their exact value next to the double.
 * Nesting deeper than 64 levels is rejected so that hostile input cannot exhaust the stack.
 *
 * Ownership: mjson_parse returns a document the caller frees with mjson_free; every node and
 * string stays valid until then. No thread rules: a document is read-only after parsing. */
#ifndef MG_MJSON_H
#define MG_MJSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum mjson_type {
    MJSON_NULL,
    MJSON_BOOL,
    MJSON_NUM,
    MJSON_STR,
    MJSON_ARR,
    MJSON_OBJ,
} mjson_type;

typedef struct mjson {
    mjson_type type;
    bool b;             /* MJSON_BOOL */
    bool is_int;        /* MJSON_NUM written without fraction or exponent and fits int64 */
    int64_t i;          /* MJSON_NUM when is_int */
    double num;         /* MJSON_NUM */
    const char *str;    /* MJSON_STR: NUL-terminated UTF-8 (may hold embedded NULs: see len) */
    size_t len;         /* MJSON_STR: bytes; MJSON_ARR/OBJ: children */
    const char *key;    /* member name when the parent is an object */
    struct mjson *kid;  /* first child (ARR, OBJ) */
    struct mjson *next; /* next sibling */
} mjson;

typedef struct mjson_doc mjson_doc;

/* Parse len bytes of text. name (a file name) prefixes error messages: "NAME: byte N: ...". */
mg_status mjson_parse(const char *text, size_t len, const char *name, mjson_doc **out);
void mjson_free(mjson_doc *doc);
const mjson *mjson_root(const mjson_doc *doc);

/* Member of an object by name (the first one when repeated), NULL when absent or not an object. */
const mjson *mjson_get(const mjson *obj, const char *key);
/* Typed reads; return false when the node is NULL or of another type. */
bool mjson_int(const mjson *v, int64_t *out);
bool mjson_double(const mjson *v, double *out);
bool mjson_bool(const mjson *v, bool *out);

/* Whether len bytes are valid UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF). */
bool mjson_utf8_valid(const char *s, size_t len);

#endif
