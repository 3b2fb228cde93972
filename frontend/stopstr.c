/* stopstr.c - see stopstr.h. The held tail is at most (longest stop string - 1) bytes, so the
 * search and the move of the tail stay small whatever the length of the output. */
#include "stopstr.h"

#include <stdlib.h>
#include <string.h>

void stopstr_init(stopstr *m, const char *const *stops, const size_t *lens, int n) {
    memset(m, 0, sizeof *m);
    m->s = stops;
    m->len = lens;
    m->n = n;
}

void stopstr_free(stopstr *m) {
    free(m->buf);
    m->buf = NULL;
    m->cap = m->held = 0;
}

static bool grow(stopstr *m, size_t need) {
    if (need <= m->cap) return true;
    size_t cap = m->cap ? m->cap : 256;
    while (cap < need) cap *= 2;
    char *p = realloc(m->buf, cap);
    if (!p) return false;
    m->buf = p;
    m->cap = cap;
    return true;
}

bool stopstr_feed(stopstr *m, const char *text, size_t len, const char **out, size_t *out_len) {
    *out = "";
    *out_len = 0;
    if (m->matched) return true;
    if (m->n == 0) { /* the common case: nothing to match, nothing to copy */
        *out = text;
        *out_len = len;
        return false;
    }
    /* Layout: buf[0..held) the previous tail, then the new text; the search runs over both. */
    size_t total = m->held + len;
    if (!grow(m, 2 * total + 1)) {
        MG_ERRF(MG_ENOMEM, "stop-string buffer");
        return false;
    }
    memcpy(m->buf + m->held, text, len);
    char *t = m->buf;
    /* Earliest full match of any stop string. */
    size_t best = total;
    for (int i = 0; i < m->n; i++) {
        const char *p = memmem(t, total, m->s[i], m->len[i]);
        if (p && (size_t)(p - t) < best) best = (size_t)(p - t);
    }
    char *rel = m->buf + total; /* release area, after the search area */
    if (best < total) {
        memcpy(rel, t, best);
        *out = rel;
        *out_len = best;
        m->held = 0;
        m->matched = true;
        return true;
    }
    /* Hold the longest tail that is a proper prefix of some stop string. */
    size_t hold = 0;
    for (int i = 0; i < m->n; i++) {
        size_t k = m->len[i] - 1 < total ? m->len[i] - 1 : total;
        for (; k > hold; k--) {
            if (memcmp(t + total - k, m->s[i], k) == 0) {
                hold = k;
                break;
            }
        }
    }
    size_t emit = total - hold;
    memcpy(rel, t, emit);
    memmove(m->buf, t + emit, hold);
    m->held = hold;
    *out = rel;
    *out_len = emit;
    return false;
}

void stopstr_flush(stopstr *m, const char **out, size_t *out_len) {
    *out = m->buf ? m->buf : "";
    *out_len = m->matched ? 0 : m->held;
    m->held = 0;
}
