/* btok.c - the benchmark's tokenizer adapter (see btok.h). */
#include "btok.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef MG_BENCH_HAVE_TOK
#include "tok.h"
#endif

struct btok {
    bool words;
    void *tok; /* tok_t when !words */
    char name[1024];
};

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The default ranks file: env, then the test install relative to the working directory or the
 * executable's folder, then a system location. */
static bool default_ranks(char *out, size_t cap) {
    const char *env = getenv("MAGNETO_O200K_PATH");
    if (env && is_file(env)) {
        snprintf(out, cap, "%s", env);
        return true;
    }
    static const char *rel = "tests/node_modules/gpt-tokenizer/data/o200k_base.tiktoken";
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    const char *roots[8] = {".", "..", "../..", "../../.."};
    int nr = 4;
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        static char up[3][1100];
        snprintf(up[0], sizeof up[0], "%s/..", exe);
        snprintf(up[1], sizeof up[1], "%s/../..", exe);
        snprintf(up[2], sizeof up[2], "%s/../../..", exe);
        roots[nr++] = up[0];
        roots[nr++] = up[1];
        roots[nr++] = up[2];
    }
    for (int i = 0; i < nr; i++) {
        snprintf(out, cap, "%s/%s", roots[i], rel);
        if (is_file(out)) return true;
    }
    snprintf(out, cap, "/usr/share/magneto/o200k_base.tiktoken");
    return is_file(out);
}

mg_status btok_open(const char *spec, btok **out) {
    *out = NULL;
    btok *t = calloc(1, sizeof *t);
    if (!t) return MG_ERRF(MG_ENOMEM, "btok: out of memory");
    if (spec && (strcmp(spec, "words") == 0)) {
        t->words = true;
        snprintf(t->name, sizeof t->name, "words");
        *out = t;
        return MG_OK;
    }
    char path[1024];
    bool given = spec && *spec && (is_file(spec) || is_dir(spec));
    if (given)
        snprintf(path, sizeof path, "%s", spec);
    else if (!default_ranks(path, sizeof path)) {
        free(t);
        return MG_ERRF(MG_ENOTFOUND,
                       "tokenizer '%s': not a ranks file or checkpoint folder, and no default "
                       "o200k_base.tiktoken found (run tests/setup-node.sh, set "
                       "MAGNETO_O200K_PATH, or pass --tokenizer words)",
                       spec && *spec ? spec : "(default)");
    }
#ifdef MG_BENCH_HAVE_TOK
    tok_t *tk = NULL;
    mg_status s = is_dir(path) ? tok_load_dir(path, &tk) : tok_load_tiktoken(path, &tk);
    if (s != MG_OK) {
        free(t);
        return s;
    }
    t->tok = tk;
    snprintf(t->name, sizeof t->name, "%s", path);
    *out = t;
    return MG_OK;
#else
    free(t);
    return MG_ERRF(MG_EUNSUPPORTED,
                   "tokenizer %s: this build has no o200k tokenizer (runtime/tok); use "
                   "--tokenizer words",
                   path);
#endif
}

void btok_destroy(btok *t) {
    if (!t) return;
#ifdef MG_BENCH_HAVE_TOK
    tok_destroy(t->tok);
#endif
    free(t);
}

const char *btok_name(const btok *t) {
    return t->name;
}

static inline bool is_space(unsigned char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/* words: each token is [whitespace]* [non-whitespace]+; trailing whitespace is one token. */
static size_t words_scan(const char *s, size_t len, uint32_t *ends, size_t cap) {
    size_t n = 0, i = 0;
    while (i < len) {
        while (i < len && is_space(s[i])) i++;
        while (i < len && !is_space(s[i])) i++;
        if (ends && n < cap) ends[n] = (uint32_t)i;
        n++;
    }
    return n;
}

size_t btok_count(const btok *t, const char *text, size_t len) {
    if (t->words) return words_scan(text, len, NULL, 0);
#ifdef MG_BENCH_HAVE_TOK
    return tok_count(t->tok, text, len);
#else
    return 0;
#endif
}

mg_status btok_bounds(const btok *t, const char *text, size_t len, uint32_t **ends, size_t *n,
                      size_t *cap) {
    if (len > UINT32_MAX) return MG_ERRF(MG_EINVAL, "btok: text too long");
    if (t->words) {
        size_t need = words_scan(text, len, NULL, 0);
        if (need > *cap) {
            uint32_t *e = realloc(*ends, need * sizeof *e);
            if (!e) return MG_ERRF(MG_ENOMEM, "btok: out of memory");
            *ends = e;
            *cap = need;
        }
        *n = words_scan(text, len, *ends, *cap);
        return MG_OK;
    }
#ifdef MG_BENCH_HAVE_TOK
    uint32_t *ids = NULL;
    size_t nid = 0, idcap = 0;
    mg_status s = tok_encode(t->tok, text, len, TOK_SPECIAL_TEXT, &ids, &nid, &idcap);
    if (s != MG_OK) return s;
    if (nid > *cap) {
        uint32_t *e = realloc(*ends, nid * sizeof *e);
        if (!e) {
            free(ids);
            return MG_ERRF(MG_ENOMEM, "btok: out of memory");
        }
        *ends = e;
        *cap = nid;
    }
    size_t off = 0;
    for (size_t i = 0; i < nid; i++) {
        size_t pl = 0;
        tok_piece(t->tok, ids[i], &pl);
        off += pl;
        (*ends)[i] = (uint32_t)off;
    }
    free(ids);
    *n = nid;
    if (off != len)
        return MG_ERRF(MG_EPROTO, "btok: token pieces cover %zu of %zu bytes", off, len);
    return MG_OK;
#else
    return MG_ERRF(MG_EUNSUPPORTED, "btok: no o200k tokenizer in this build");
#endif
}
