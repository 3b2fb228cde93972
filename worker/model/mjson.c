/* mjson.c - recursive-descent JSON parser into an arena-held tree (see mjson.h). */
#include "mjson.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

/* Arena: a list of chunks; nodes and unescaped strings are carved from it. */
typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} chunk;

struct mjson_doc {
    chunk *chunks;
    mjson *root;
};

typedef struct parser {
    const char *s, *end, *start;
    const char *name;
    mjson_doc *doc;
    int depth;
} parser;

static void *arena_alloc(mjson_doc *doc, size_t n) {
    n = (n + 15) & ~(size_t)15;
    chunk *c = doc->chunks;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        c = malloc(sizeof(chunk) + cap);
        if (!c) return NULL;
        c->next = doc->chunks;
        c->used = 0;
        c->cap = cap;
        doc->chunks = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

static mg_status fail(parser *p, const char *what) {
    return MG_ERRF(MG_EFORMAT, "%s: byte %td: %s", p->name, p->s - p->start, what);
}

static void skip_ws(parser *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r'))
        p->s++;
}

bool mjson_utf8_valid(const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str, *e = s + len;
    while (s < e) {
        unsigned c = *s;
        if (c < 0x80) {
            s++;
            continue;
        }
        int n;
        unsigned cp, min;
        if ((c & 0xE0) == 0xC0)
            n = 1, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0)
            n = 2, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0)
            n = 3, cp = c & 0x07, min = 0x10000;
        else
            return false;
        if (e - s <= n) return false;
        for (int k = 1; k <= n; k++) {
            if ((s[k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        s += n + 1;
    }
    return true;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_hex4(parser *p, unsigned *out) {
    if (p->end - p->s < 4) return false;
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(p->s[k]);
        if (h < 0) return false;
        v = v * 16 + (unsigned)h;
    }
    p->s += 4;
    *out = v;
    return true;
}

/* p->s is just past the opening quote. The unescaped text is never longer than the raw text. */
static mg_status parse_string(parser *p, const char **out, size_t *out_len) {
    const char *q = p->s;
    while (q < p->end && *q != '"') q += (*q == '\\') ? 2 : 1;
    if (q >= p->end) return fail(p, "unterminated string");
    char *buf = arena_alloc(p->doc, (size_t)(q - p->s) + 1);
    if (!buf) return MG_ERRF(MG_ENOMEM, "%s: out of memory", p->name);
    size_t n = 0;
    while (*p->s != '"') {
        unsigned char c = (unsigned char)*p->s;
        if (c < 0x20) return fail(p, "control character in string");
        if (c != '\\') {
            buf[n++] = (char)c;
            p->s++;
            continue;
        }
        p->s++;
        char e = *p->s++;
        switch (e) {
        case '"':
            buf[n++] = '"';
            break;
        case '\\':
            buf[n++] = '\\';
            break;
        case '/':
            buf[n++] = '/';
            break;
        case 'b':
            buf[n++] = '\b';
            break;
        case 'f':
            buf[n++] = '\f';
            break;
        case 'n':
            buf[n++] = '\n';
            break;
        case 'r':
            buf[n++] = '\r';
            break;
        case 't':
            buf[n++] = '\t';
            break;
        case 'u': {
            unsigned cp;
            if (!read_hex4(p, &cp)) return fail(p, "bad \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (p->end - p->s < 6 || p->s[0] != '\\' || p->s[1] != 'u')
                    return fail(p, "lone surrogate in \\u escape");
                p->s += 2;
                if (!read_hex4(p, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return fail(p, "bad surrogate pair in \\u escape");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return fail(p, "lone surrogate in \\u escape");
            }
            /* A 6- or 12-byte escape always has room for its at most 4-byte encoding. */
            if (cp < 0x80) {
                buf[n++] = (char)cp;
            } else if (cp < 0x800) {
                buf[n++] = (char)(0xC0 | (cp >> 6));
                buf[n++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                buf[n++] = (char)(0xE0 | (cp >> 12));
                buf[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                buf[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                buf[n++] = (char)(0xF0 | (cp >> 18));
                buf[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                buf[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                buf[n++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default:
            p->s--;
            return fail(p, "bad escape in string");
        }
    }
    p->s++; /* closing quote */
    buf[n] = 0;
    if (!mjson_utf8_valid(buf, n)) {
        /* Name the string as far as it can be shown, bytes outside ASCII escaped. */
        char shown[96];
        size_t k = 0;
        for (size_t j = 0; j < n && k + 5 < sizeof(shown); j++) {
            unsigned char ch = (unsigned char)buf[j];
            if (ch >= 0x20 && ch < 0x7F)
                shown[k++] = (char)ch;
            else
                k += (size_t)snprintf(shown + k, sizeof(shown) - k, "\\x%02x", ch);
        }
        shown[k] = 0;
        p->s = q;
        return MG_ERRF(MG_EFORMAT, "%s: byte %td: string \"%s\" is not valid UTF-8", p->name,
                       q - p->start, shown);
    }
    *out = buf;
    *out_len = n;
    return MG_OK;
}

static mg_status parse_number(parser *p, mjson *v) {
    const char *b = p->s;
    bool integral = true;
    if (p->s < p->end && *p->s == '-') p->s++;
    if (p->s >= p->end || *p->s < '0' || *p->s > '9') return fail(p, "bad number");
    while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
    if (p->s < p->end && *p->s == '.') {
        integral = false;
        p->s++;
        if (p->s >= p->end || *p->s < '0' || *p->s > '9') return fail(p, "bad number");
        while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
    }
    if (p->s < p->end && (*p->s == 'e' || *p->s == 'E')) {
        integral = false;
        p->s++;
        if (p->s < p->end && (*p->s == '+' || *p->s == '-')) p->s++;
        if (p->s >= p->end || *p->s < '0' || *p->s > '9') return fail(p, "bad number");
        while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
    }
    char tmp[64];
    size_t n = (size_t)(p->s - b);
    if (n >= sizeof(tmp)) return fail(p, "number too long");
    memcpy(tmp, b, n);
    tmp[n] = 0;
    v->type = MJSON_NUM;
    v->num = strtod(tmp, NULL);
    if (integral) {
        errno = 0;
        long long i = strtoll(tmp, NULL, 10);
        if (errno == 0) {
            v->is_int = true;
            v->i = i;
        }
    }
    return MG_OK;
}

static mg_status parse_value(parser *p, mjson **out);

static mg_status parse_container(parser *p, mjson *v, bool obj) {
    char close = obj ? '}' : ']';
    mjson **tail = &v->kid;
    p->s++;
    skip_ws(p);
    if (p->s < p->end && *p->s == close) {
        p->s++;
        return MG_OK;
    }
    for (;;) {
        const char *key = NULL;
        if (obj) {
            size_t klen;
            skip_ws(p);
            if (p->s >= p->end || *p->s != '"') return fail(p, "expected member name");
            p->s++;
            mg_status st = parse_string(p, &key, &klen);
            if (st) return st;
            skip_ws(p);
            if (p->s >= p->end || *p->s != ':') return fail(p, "expected ':'");
            p->s++;
        }
        mjson *kid;
        mg_status st = parse_value(p, &kid);
        if (st) return st;
        kid->key = key;
        *tail = kid;
        tail = &kid->next;
        v->len++;
        skip_ws(p);
        if (p->s < p->end && *p->s == ',') {
            p->s++;
            continue;
        }
        if (p->s < p->end && *p->s == close) {
            p->s++;
            return MG_OK;
        }
        return fail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static mg_status parse_value(parser *p, mjson **out) {
    skip_ws(p);
    if (p->s >= p->end) return fail(p, "unexpected end of text");
    mjson *v = arena_alloc(p->doc, sizeof(mjson));
    if (!v) return MG_ERRF(MG_ENOMEM, "%s: out of memory", p->name);
    memset(v, 0, sizeof(*v));
    *out = v;
    char c = *p->s;
    if (c == '{' || c == '[') {
        if (++p->depth > MAX_DEPTH) return fail(p, "nested too deeply");
        v->type = c == '{' ? MJSON_OBJ : MJSON_ARR;
        mg_status st = parse_container(p, v, c == '{');
        p->depth--;
        return st;
    }
    if (c == '"') {
        p->s++;
        v->type = MJSON_STR;
        return parse_string(p, &v->str, &v->len);
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
    static const struct {
        const char *word;
        mjson_type type;
        bool b;
    } words[] = {{"true", MJSON_BOOL, true}, {"false", MJSON_BOOL, false}, {"null", MJSON_NULL, 0}};
    for (size_t k = 0; k < sizeof(words) / sizeof(words[0]); k++) {
        size_t n = strlen(words[k].word);
        if ((size_t)(p->end - p->s) >= n && memcmp(p->s, words[k].word, n) == 0) {
            p->s += n;
            v->type = words[k].type;
            v->b = words[k].b;
            return MG_OK;
        }
    }
    return fail(p, "unexpected character");
}

mg_status mjson_parse(const char *text, size_t len, const char *name, mjson_doc **out) {
    *out = NULL;
    mjson_doc *doc = calloc(1, sizeof(*doc));
    if (!doc) return MG_ERRF(MG_ENOMEM, "%s: out of memory", name);
    parser p = {.s = text, .end = text + len, .start = text, .name = name, .doc = doc};
    mg_status st = parse_value(&p, &doc->root);
    if (!st) {
        skip_ws(&p);
        if (p.s != p.end) st = fail(&p, "trailing characters after the document");
    }
    if (st) {
        mjson_free(doc);
        return st;
    }
    *out = doc;
    return MG_OK;
}

void mjson_free(mjson_doc *doc) {
    if (!doc) return;
    for (chunk *c = doc->chunks, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    free(doc);
}

const mjson *mjson_root(const mjson_doc *doc) {
    return doc->root;
}

const mjson *mjson_get(const mjson *obj, const char *key) {
    if (!obj || obj->type != MJSON_OBJ) return NULL;
    for (const mjson *k = obj->kid; k; k = k->next)
        if (strcmp(k->key, key) == 0) return k;
    return NULL;
}

bool mjson_int(const mjson *v, int64_t *out) {
    if (!v || v->type != MJSON_NUM) return false;
    if (v->is_int) {
        *out = v->i;
        return true;
    }
    /* 1e3 or 2.0 are integers too when they are exact. */
    if (!(v->num > -9.2e18 && v->num < 9.2e18) || v->num != (double)(int64_t)v->num) return false;
    *out = (int64_t)v->num;
    return true;
}

bool mjson_double(const mjson *v, double *out) {
    if (!v || v->type != MJSON_NUM) return false;
    *out = v->num;
    return true;
}

bool mjson_bool(const mjson *v, bool *out) {
    if (!v || v->type != MJSON_BOOL) return false;
    *out = v->b;
    return true;
}
