/* sse.c - HTTP/1.1 response decoding, SSE assembly and the chunk scanner (see sse.h). */
#include "sse.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
    ST_HEAD,
    ST_BODY_LEN,
    ST_CHUNK_SIZE,
    ST_CHUNK_EXT, /* after the size, up to LF */
    ST_CHUNK_DATA,
    ST_CHUNK_CR, /* the CRLF after a chunk's data */
    ST_CHUNK_LF,
    ST_TRAILER, /* trailer lines until an empty one */
    ST_BODY_EOF,
    ST_DONE,
};

#define HEAD_MAX  (64 * 1024)
#define LINE_MAX_ (8 * 1024 * 1024)

static int grow(char **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    char *n = realloc(*p, c);
    if (!n) return -1;
    *p = n;
    *cap = c;
    return 0;
}

static int append(char **p, size_t *len, size_t *cap, const char *s, size_t n) {
    if (grow(p, cap, *len + n + 1)) return -1;
    memcpy(*p + *len, s, n);
    *len += n;
    (*p)[*len] = 0;
    return 0;
}

void hresp_init(hresp *h, hresp_event_fn on_event, void *ctx) {
    memset(h, 0, sizeof *h);
    h->on_event = on_event;
    h->ctx = ctx;
    h->body_limit = 64u << 20;
}

void hresp_reset(hresp *h) {
    h->state = ST_HEAD;
    h->status = 0;
    h->reason[0] = 0;
    h->chunked = h->keep_alive = h->sse = h->until_close = false;
    h->content_left = 0;
    h->chunk_left = 0;
    h->hlen = h->line_len = h->ev_len = h->body_len = 0;
    h->ev_has_data = false;
    h->ev_type[0] = 0;
    h->bytes = 0;
    h->error[0] = 0;
}

void hresp_deinit(hresp *h) {
    free(h->hbuf);
    free(h->line);
    free(h->ev);
    free(h->body);
    memset(h, 0, sizeof *h);
}

static hresp_result fail(hresp *h, const char *msg) {
    snprintf(h->error, sizeof h->error, "%s", msg);
    return HRESP_ERROR;
}

/* Header parsing: status line, Content-Length, Transfer-Encoding, Connection, Content-Type. */
static hresp_result parse_head(hresp *h) {
    char *s = h->hbuf, *end = h->hbuf + h->hlen;
    char *eol = memchr(s, '\n', end - s);
    if (!eol || strncmp(s, "HTTP/1.", 7) != 0 || eol - s < 12) return fail(h, "bad status line");
    bool http11 = s[7] == '1';
    h->keep_alive = http11;
    char *p = s + 8;
    while (*p == ' ') p++;
    if (!isdigit((unsigned char)p[0]) || !isdigit((unsigned char)p[1]) ||
        !isdigit((unsigned char)p[2]))
        return fail(h, "bad status code");
    h->status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    p += 3;
    while (*p == ' ') p++;
    size_t rl = eol - p;
    while (rl && (p[rl - 1] == '\r' || p[rl - 1] == ' ')) rl--;
    if (rl >= sizeof h->reason) rl = sizeof h->reason - 1;
    memcpy(h->reason, p, rl);
    h->reason[rl] = 0;
    bool have_len = false;
    bool is_stream = false;
    for (char *line = eol + 1; line < end;) {
        char *le = memchr(line, '\n', end - line);
        if (!le) break;
        char *ve = le;
        if (ve > line && ve[-1] == '\r') ve--;
        char *colon = memchr(line, ':', ve - line);
        if (colon) {
            size_t kl = colon - line;
            char *v = colon + 1;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            size_t vl = ve - v;
            if (kl == 14 && strncasecmp(line, "content-length", 14) == 0) {
                char tmp[32];
                if (vl == 0 || vl >= sizeof tmp) return fail(h, "bad Content-Length");
                memcpy(tmp, v, vl);
                tmp[vl] = 0;
                char *e;
                long long n = strtoll(tmp, &e, 10);
                if (*e || n < 0) return fail(h, "bad Content-Length");
                h->content_left = n;
                have_len = true;
            } else if (kl == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
                if (vl >= 7 && strncasecmp(v + vl - 7, "chunked", 7) == 0) h->chunked = true;
            } else if (kl == 10 && strncasecmp(line, "connection", 10) == 0) {
                if (vl >= 5 && strncasecmp(v, "close", 5) == 0) h->keep_alive = false;
                if (vl >= 10 && strncasecmp(v, "keep-alive", 10) == 0) h->keep_alive = true;
            } else if (kl == 12 && strncasecmp(line, "content-type", 12) == 0) {
                if (vl >= 17 && strncasecmp(v, "text/event-stream", 17) == 0) is_stream = true;
            }
        }
        line = le + 1;
    }
    h->sse = is_stream && h->status == 200;
    if (h->chunked) {
        h->state = ST_CHUNK_SIZE;
    } else if (have_len) {
        h->state = h->content_left ? ST_BODY_LEN : ST_DONE;
    } else if (h->status == 204 || h->status == 304 || (h->status >= 100 && h->status < 200)) {
        h->state = ST_DONE;
    } else {
        h->state = ST_BODY_EOF;
        h->until_close = true;
        h->keep_alive = false;
    }
    return HRESP_MORE;
}

/* One complete SSE line (without its line ending). */
static hresp_result sse_line(hresp *h, const char *s, size_t n) {
    if (n == 0) { /* blank line: dispatch */
        if (h->ev_has_data) {
            if (h->on_event && h->on_event(h->ctx, h->ev_type, h->ev ? h->ev : "", h->ev_len))
                return HRESP_STOPPED;
        }
        h->ev_len = 0;
        h->ev_has_data = false;
        h->ev_type[0] = 0;
        return HRESP_MORE;
    }
    if (s[0] == ':') return HRESP_MORE; /* comment */
    const char *colon = memchr(s, ':', n);
    size_t fl = colon ? (size_t)(colon - s) : n;
    const char *v = colon ? colon + 1 : s + n;
    size_t vl = n - (v - s);
    if (vl && *v == ' ') v++, vl--;
    if (fl == 4 && memcmp(s, "data", 4) == 0) {
        /* Lines are capped, so an event is too: many data lines without a blank line would
         * otherwise grow it without bound. */
        if (h->ev_len + 1 + vl > LINE_MAX_) return fail(h, "SSE event too long");
        if (h->ev_has_data && append(&h->ev, &h->ev_len, &h->ev_cap, "\n", 1))
            return fail(h, "out of memory");
        if (append(&h->ev, &h->ev_len, &h->ev_cap, v, vl)) return fail(h, "out of memory");
        h->ev_has_data = true;
    } else if (fl == 5 && memcmp(s, "event", 5) == 0) {
        size_t k = vl < sizeof h->ev_type - 1 ? vl : sizeof h->ev_type - 1;
        memcpy(h->ev_type, v, k);
        h->ev_type[k] = 0;
    } /* id:, retry: and unknown fields are ignored, as the SSE spec says */
    return HRESP_MORE;
}

/* Body bytes (after transfer decoding). */
static hresp_result body_bytes(hresp *h, const char *s, size_t n) {
    h->bytes += n;
    if (!h->sse) {
        if (h->body_len + n > h->body_limit) return fail(h, "response body too large");
        if (append(&h->body, &h->body_len, &h->body_cap, s, n)) return fail(h, "out of memory");
        return HRESP_MORE;
    }
    while (n) {
        const char *nl = memchr(s, '\n', n);
        if (!nl) {
            if (h->line_len + n > LINE_MAX_) return fail(h, "SSE line too long");
            if (append(&h->line, &h->line_len, &h->line_cap, s, n)) return fail(h, "out of memory");
            return HRESP_MORE;
        }
        size_t k = nl - s;
        hresp_result r;
        if (h->line_len) {
            if (append(&h->line, &h->line_len, &h->line_cap, s, k)) return fail(h, "out of memory");
            size_t ll = h->line_len;
            if (ll && h->line[ll - 1] == '\r') ll--;
            h->line_len = 0;
            r = sse_line(h, h->line, ll);
        } else {
            size_t ll = k;
            if (ll && s[ll - 1] == '\r') ll--;
            r = sse_line(h, s, ll);
        }
        if (r != HRESP_MORE) return r;
        s += k + 1;
        n -= k + 1;
    }
    return HRESP_MORE;
}

static hresp_result finish(hresp *h) {
    h->state = ST_DONE;
    if (h->sse && h->line_len) { /* a last line without newline */
        size_t ll = h->line_len;
        h->line_len = 0;
        hresp_result r = sse_line(h, h->line, ll);
        if (r != HRESP_MORE) return r;
    }
    if (h->sse && h->ev_has_data) { /* an event not closed by a blank line still counts */
        hresp_result r = sse_line(h, "", 0);
        if (r != HRESP_MORE) return r;
    }
    return HRESP_DONE;
}

hresp_result hresp_feed(hresp *h, const char *data, size_t len, size_t *used) {
    const char *p = data, *end = data + len;
    hresp_result r = HRESP_MORE;
    while (p < end && r == HRESP_MORE) {
        switch (h->state) {
        case ST_HEAD: {
            /* Accumulate until CRLFCRLF; look only at the new bytes plus 3 of the old. */
            size_t old = h->hlen;
            size_t take = end - p;
            if (h->hlen + take > HEAD_MAX) take = HEAD_MAX - h->hlen;
            if (take == 0) return fail(h, "response headers too large");
            if (grow(&h->hbuf, &h->hcap, h->hlen + take + 1)) return fail(h, "out of memory");
            memcpy(h->hbuf + h->hlen, p, take);
            h->hlen += take;
            h->hbuf[h->hlen] = 0;
            size_t from = old > 3 ? old - 3 : 0;
            char *hit = memmem(h->hbuf + from, h->hlen - from, "\r\n\r\n", 4);
            size_t hl = 4;
            if (!hit) hit = memmem(h->hbuf + from, h->hlen - from, "\n\n", 2), hl = 2;
            if (!hit) {
                p += take;
                break;
            }
            size_t head_len = (hit - h->hbuf) + hl;
            p += head_len - old;
            h->hlen = head_len;
            r = parse_head(h);
            if (r == HRESP_MORE && h->status >= 100 && h->status < 200 && h->status != 101) {
                h->hlen = 0; /* 1xx interim response: read the real one */
                h->state = ST_HEAD;
            }
            break;
        }
        case ST_BODY_LEN: {
            size_t k = end - p;
            if ((int64_t)k > h->content_left) k = h->content_left;
            r = body_bytes(h, p, k);
            p += k;
            h->content_left -= k;
            if (r == HRESP_MORE && h->content_left == 0) r = finish(h);
            break;
        }
        case ST_BODY_EOF:
            r = body_bytes(h, p, end - p);
            p = end;
            break;
        case ST_CHUNK_SIZE: {
            char c = *p;
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d >= 0) {
                if (h->chunk_left >> 56) return fail(h, "chunk size too large");
                h->chunk_left = h->chunk_left * 16 + d;
                p++;
            } else if (c == ';' || c == ' ' || c == '\t' || c == '\r') {
                h->state = ST_CHUNK_EXT;
                p++;
            } else if (c == '\n') {
                p++;
                h->state = h->chunk_left ? ST_CHUNK_DATA : ST_TRAILER;
                h->hlen = 0;
            } else {
                return fail(h, "bad chunk size");
            }
            break;
        }
        case ST_CHUNK_EXT: {
            const char *nl = memchr(p, '\n', end - p);
            if (!nl) {
                p = end;
                break;
            }
            p = nl + 1;
            h->state = h->chunk_left ? ST_CHUNK_DATA : ST_TRAILER;
            h->hlen = 0;
            break;
        }
        case ST_CHUNK_DATA: {
            size_t k = end - p;
            if (k > h->chunk_left) k = h->chunk_left;
            r = body_bytes(h, p, k);
            p += k;
            h->chunk_left -= k;
            if (h->chunk_left == 0) h->state = ST_CHUNK_CR;
            break;
        }
        case ST_CHUNK_CR:
            if (*p == '\r') {
                p++;
                h->state = ST_CHUNK_LF;
            } else if (*p == '\n') {
                p++;
                h->state = ST_CHUNK_SIZE;
            } else {
                return fail(h, "missing CRLF after chunk data");
            }
            break;
        case ST_CHUNK_LF:
            if (*p != '\n') return fail(h, "missing LF after chunk data");
            p++;
            h->state = ST_CHUNK_SIZE;
            break;
        case ST_TRAILER: {
            /* hlen counts the bytes of the current trailer line. */
            char c = *p++;
            if (c == '\n') {
                if (h->hlen == 0) r = finish(h);
                h->hlen = 0;
            } else if (c != '\r') {
                h->hlen++;
            }
            break;
        }
        case ST_DONE:
            *used = p - data;
            return HRESP_DONE;
        }
    }
    if (r == HRESP_MORE && h->state == ST_DONE) r = HRESP_DONE;
    if (r == HRESP_MORE && h->state == ST_HEAD && h->hlen == 0 && p == end) r = HRESP_MORE;
    *used = p - data;
    return r;
}

hresp_result hresp_eof(hresp *h) {
    if (h->state == ST_BODY_EOF) return finish(h);
    if (h->state == ST_DONE) return HRESP_DONE;
    if (h->state == ST_HEAD)
        return fail(h, h->hlen ? "connection closed inside the response headers"
                               : "connection closed before any response");
    return fail(h, "connection closed mid-response");
}

/* ---- chunk scanner ------------------------------------------------------------------------ */

typedef struct jp {
    const char *p, *end;
    bench_chunk *c;
    int depth;
} jp;

static void ws(jp *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t'))
        j->p++;
}

static int put_utf8(char **b, size_t *len, size_t *cap, unsigned cp) {
    char u[4];
    size_t n;
    if (cp < 0x80)
        u[0] = cp, n = 1;
    else if (cp < 0x800)
        u[0] = 0xC0 | (cp >> 6), u[1] = 0x80 | (cp & 0x3F), n = 2;
    else if (cp < 0x10000)
        u[0] = 0xE0 | (cp >> 12), u[1] = 0x80 | ((cp >> 6) & 0x3F), u[2] = 0x80 | (cp & 0x3F),
        n = 3;
    else
        u[0] = 0xF0 | (cp >> 18), u[1] = 0x80 | ((cp >> 12) & 0x3F),
        u[2] = 0x80 | ((cp >> 6) & 0x3F), u[3] = 0x80 | (cp & 0x3F), n = 4;
    return append(b, len, cap, u, n);
}

static int hex4(const char *s, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        *v = *v * 16 + d;
    }
    return 0;
}

/* A string at j->p (the opening quote). Unescaped bytes are appended to *b when b != NULL.
 * raw/raw_len get the bytes between the quotes (escapes not undone), for key comparison. */
static int jstring(jp *j, char **b, size_t *len, size_t *cap, const char **raw, size_t *raw_len) {
    if (j->p >= j->end || *j->p != '"') return -1;
    const char *s = ++j->p;
    for (;;) {
        /* Copy runs without escapes in one go. */
        const char *q = s;
        while (q < j->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20) q++;
        if (q >= j->end || (unsigned char)*q < 0x20) return -1;
        if (b && q > s && append(b, len, cap, s, q - s)) return -1;
        if (*q == '"') {
            if (raw) *raw = j->p, *raw_len = q - j->p;
            j->p = q + 1;
            return 0;
        }
        /* backslash */
        if (q + 1 >= j->end) return -1;
        char e = q[1];
        const char *next = q + 2;
        char o;
        switch (e) {
        case '"':
            o = '"';
            break;
        case '\\':
            o = '\\';
            break;
        case '/':
            o = '/';
            break;
        case 'b':
            o = '\b';
            break;
        case 'f':
            o = '\f';
            break;
        case 'n':
            o = '\n';
            break;
        case 'r':
            o = '\r';
            break;
        case 't':
            o = '\t';
            break;
        case 'u': {
            unsigned cp;
            if (next + 4 > j->end || hex4(next, &cp)) return -1;
            next += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {
                unsigned lo;
                if (next + 6 <= j->end && next[0] == '\\' && next[1] == 'u' &&
                    hex4(next + 2, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    next += 6;
                } else {
                    cp = 0xFFFD; /* lone surrogate: what a lenient decoder gives */
                }
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                cp = 0xFFFD;
            }
            if (b && put_utf8(b, len, cap, cp)) return -1;
            s = next;
            continue;
        }
        default:
            return -1;
        }
        if (b && append(b, len, cap, &o, 1)) return -1;
        s = next;
    }
}

static int jskip(jp *j);

static int jnumber(jp *j, double *out) {
    const char *s = j->p;
    if (j->p < j->end && *j->p == '-') j->p++;
    if (j->p >= j->end || !isdigit((unsigned char)*j->p)) return -1;
    while (j->p < j->end && (isdigit((unsigned char)*j->p) || *j->p == '.' || *j->p == 'e' ||
                             *j->p == 'E' || *j->p == '+' || *j->p == '-'))
        j->p++;
    if (out) {
        char tmp[64];
        size_t n = j->p - s;
        if (n >= sizeof tmp) n = sizeof tmp - 1;
        memcpy(tmp, s, n);
        tmp[n] = 0;
        *out = strtod(tmp, NULL);
    }
    return 0;
}

static int jlit(jp *j, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0) return -1;
    j->p += n;
    return 0;
}

/* Iterate an object: calls member(j, key, keylen, arg) with j->p at the value; the callback must
 * consume the value. */
typedef int (*member_fn)(jp *j, const char *key, size_t kl, void *arg);

static int jobject(jp *j, member_fn fn, void *arg) {
    if (j->p >= j->end || *j->p != '{') return -1;
    if (++j->depth > 64) return -1;
    j->p++;
    ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        j->depth--;
        return 0;
    }
    for (;;) {
        const char *k;
        size_t kl;
        ws(j);
        if (jstring(j, NULL, NULL, NULL, &k, &kl)) return -1;
        ws(j);
        if (j->p >= j->end || *j->p != ':') return -1;
        j->p++;
        ws(j);
        if (fn ? fn(j, k, kl, arg) : jskip(j)) return -1;
        ws(j);
        if (j->p >= j->end) return -1;
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        if (*j->p == '}') {
            j->p++;
            j->depth--;
            return 0;
        }
        return -1;
    }
}

/* Iterate an array: elem(j, index, arg) consumes each element. */
typedef int (*elem_fn)(jp *j, int idx, void *arg);

static int jarray(jp *j, elem_fn fn, void *arg) {
    if (j->p >= j->end || *j->p != '[') return -1;
    if (++j->depth > 64) return -1;
    j->p++;
    ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        j->depth--;
        return 0;
    }
    for (int i = 0;; i++) {
        ws(j);
        if (fn ? fn(j, i, arg) : jskip(j)) return -1;
        ws(j);
        if (j->p >= j->end) return -1;
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        if (*j->p == ']') {
            j->p++;
            j->depth--;
            return 0;
        }
        return -1;
    }
}

static int jskip(jp *j) {
    if (j->p >= j->end) return -1;
    switch (*j->p) {
    case '{':
        return jobject(j, NULL, NULL);
    case '[':
        return jarray(j, NULL, NULL);
    case '"':
        return jstring(j, NULL, NULL, NULL, NULL, NULL);
    case 't':
        return jlit(j, "true");
    case 'f':
        return jlit(j, "false");
    case 'n':
        return jlit(j, "null");
    default:
        return jnumber(j, NULL);
    }
}

#define KEY(lit) (kl == sizeof(lit) - 1 && memcmp(k, lit, kl) == 0)

/* A string value appended to a target, or null. */
static int text_value(jp *j, char **b, size_t *len, size_t *cap) {
    if (j->p < j->end && *j->p == 'n') return jlit(j, "null");
    return jstring(j, b, len, cap, NULL, NULL);
}

static int delta_member(jp *j, const char *k, size_t kl, void *arg) {
    bench_chunk *c = j->c;
    if (KEY("content")) return text_value(j, c->content, c->content_len, c->content_cap);
    if (KEY("reasoning_content") || KEY("reasoning"))
        return text_value(j, c->reasoning, c->reasoning_len, c->reasoning_cap);
    return jskip(j);
}

static int choice_member(jp *j, const char *k, size_t kl, void *arg) {
    bench_chunk *c = j->c;
    if (KEY("delta") || KEY("message")) {
        if (j->p < j->end && *j->p == 'n') return jlit(j, "null");
        return jobject(j, delta_member, NULL);
    }
    if (KEY("text")) return text_value(j, c->content, c->content_len, c->content_cap);
    return jskip(j);
}

static int choice_elem(jp *j, int idx, void *arg) {
    if (idx != 0) return jskip(j); /* n = 1: the first choice is the answer */
    return jobject(j, choice_member, NULL);
}

static int usage_member(jp *j, const char *k, size_t kl, void *arg) {
    if (KEY("completion_tokens")) {
        if (j->p < j->end && *j->p == 'n') return jlit(j, "null");
        double v;
        if (jnumber(j, &v)) return -1;
        /* A count outside int (or a NaN) is no usage: converting it would be undefined. */
        if (v >= 0 && v <= INT_MAX) j->c->usage_completion_tokens = (long)v;
        return 0;
    }
    return jskip(j);
}

static int error_member(jp *j, const char *k, size_t kl, void *arg) {
    bench_chunk *c = j->c;
    if (KEY("message") && j->p < j->end && *j->p == '"') {
        const char *raw;
        size_t rl;
        if (jstring(j, NULL, NULL, NULL, &raw, &rl)) return -1;
        if (rl >= sizeof c->error_msg) rl = sizeof c->error_msg - 1;
        memcpy(c->error_msg, raw, rl);
        c->error_msg[rl] = 0;
        return 0;
    }
    if (KEY("code") && j->p < j->end && (isdigit((unsigned char)*j->p))) {
        double v;
        if (jnumber(j, &v)) return -1;
        if (v <= INT_MAX) c->error_code = (int)v; /* not negative: it starts with a digit */
        return 0;
    }
    return jskip(j);
}

static int top_member(jp *j, const char *k, size_t kl, void *arg) {
    bench_chunk *c = j->c;
    if (KEY("choices")) {
        if (j->p < j->end && *j->p == 'n') return jlit(j, "null");
        return jarray(j, choice_elem, NULL);
    }
    if (KEY("usage")) {
        if (j->p < j->end && *j->p == 'n') return jlit(j, "null");
        return jobject(j, usage_member, NULL);
    }
    if (KEY("error")) {
        if (j->p < j->end && *j->p == 'n') return jlit(j, "null");
        c->error = true;
        if (j->p < j->end && *j->p == '{') return jobject(j, error_member, NULL);
        if (j->p < j->end && *j->p == '"') {
            const char *raw;
            size_t rl;
            if (jstring(j, NULL, NULL, NULL, &raw, &rl)) return -1;
            if (rl >= sizeof c->error_msg) rl = sizeof c->error_msg - 1;
            memcpy(c->error_msg, raw, rl);
            c->error_msg[rl] = 0;
            return 0;
        }
        return jskip(j);
    }
    return jskip(j);
}

int bench_chunk_scan(const char *json, size_t len, bench_chunk *c) {
    size_t cl0 = *c->content_len, rl0 = *c->reasoning_len;
    c->content_added = c->reasoning_added = 0;
    c->error = false;
    c->error_msg[0] = 0;
    c->error_code = 0;
    c->usage_completion_tokens = -1;
    jp j = {json, json + len, c, 0};
    ws(&j);
    int rc = jobject(&j, top_member, NULL);
    if (rc == 0) {
        ws(&j);
        if (j.p != j.end) rc = -1;
    }
    if (rc) {
        *c->content_len = cl0;
        *c->reasoning_len = rl0;
        if (*c->content) (*c->content)[cl0] = 0;
        if (*c->reasoning) (*c->reasoning)[rl0] = 0;
        c->error = false;
        size_t off = j.p - json;
        snprintf(c->error_msg, sizeof c->error_msg, "invalid JSON at byte %zu of %zu", off, len);
        return -1;
    }
    c->content_added = *c->content_len - cl0;
    c->reasoning_added = *c->reasoning_len - rl0;
    return 0;
}
