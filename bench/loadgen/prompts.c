/* prompts.c - corpus, exact-length synthetic prompts, mooncake traces, request bodies. */
#include "prompts.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void bench_rng_seed(bench_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t bench_rng_next(bench_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double bench_rng_uniform(bench_rng *r) {
    return (double)(bench_rng_next(r) >> 11) * 0x1.0p-53;
}

double bench_rng_normal(bench_rng *r, double mean, double stddev) {
    if (stddev <= 0) return mean;
    double u1 = bench_rng_uniform(r), u2 = bench_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return mean + stddev * sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void bench_uuid(bench_rng *r, char out[40]) {
    uint64_t a = bench_rng_next(r), b = bench_rng_next(r);
    a = (a & ~0xF000ull) | 0x4000ull;                        /* version 4 */
    b = (b & 0x3FFFFFFFFFFFFFFFull) | 0x8000000000000000ull; /* variant 10 */
    snprintf(out, 40, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(a >> 32),
             (unsigned)((a >> 16) & 0xFFFF), (unsigned)(a & 0xFFFF), (unsigned)(b >> 48),
             (unsigned long long)(b & 0xFFFFFFFFFFFFull));
}

static const char *default_corpus[] = {
    "/usr/share/common-licenses/GPL-3",    "/usr/share/common-licenses/GPL-2",
    "/usr/share/common-licenses/LGPL-2.1", "/usr/share/common-licenses/Apache-2.0",
    "/usr/share/common-licenses/MPL-2.0",  "/usr/share/common-licenses/GFDL-1.3",
    "/usr/share/common-licenses/Artistic", "/usr/share/common-licenses/CC0-1.0",
};

/* Append the non-empty lines of a file, each prefixed by a space. */
static mg_status add_file(bench_corpus *c, const char *path, size_t *cap) {
    FILE *f = fopen(path, "r");
    if (!f) return MG_ERRF(MG_EIO, "corpus %s: cannot open", path);
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    while ((n = getline(&line, &lcap, f)) >= 0) {
        char *s = line, *e = line + n;
        while (s < e && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f')) s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r')) e--;
        if (s == e) continue;
        size_t need = c->len + (e - s) + 2;
        if (need > *cap) {
            size_t nc = *cap ? *cap * 2 : 1 << 16;
            while (nc < need) nc *= 2;
            char *t = realloc(c->text, nc);
            if (!t) {
                free(line);
                fclose(f);
                return MG_ERRF(MG_ENOMEM, "corpus: out of memory");
            }
            c->text = t;
            *cap = nc;
        }
        c->text[c->len++] = ' ';
        memcpy(c->text + c->len, s, e - s);
        c->len += e - s;
        c->text[c->len] = 0;
    }
    free(line);
    fclose(f);
    return MG_OK;
}

mg_status bench_corpus_load(bench_corpus *c, const char *paths, const btok *t) {
    memset(c, 0, sizeof *c);
    size_t cap = 0;
    mg_status s = MG_OK;
    if (paths && *paths) {
        char *dup = strdup(paths), *save = NULL;
        for (char *p = strtok_r(dup, ":", &save); p && s == MG_OK; p = strtok_r(NULL, ":", &save))
            s = add_file(c, p, &cap);
        free(dup);
    } else {
        int found = 0;
        for (size_t i = 0; i < sizeof default_corpus / sizeof *default_corpus; i++) {
            FILE *f = fopen(default_corpus[i], "r");
            if (!f) continue;
            fclose(f);
            found++;
            if ((s = add_file(c, default_corpus[i], &cap)) != MG_OK) break;
        }
        if (!found && s == MG_OK)
            s = MG_ERRF(MG_ENOTFOUND, "default corpus /usr/share/common-licenses is missing "
                                      "(package base-files); pass --corpus FILE");
    }
    if (s == MG_OK && c->len < 16) s = MG_ERRF(MG_EINVAL, "corpus %s: no text", paths ? paths : "");
    if (s == MG_OK) s = btok_bounds(t, c->text, c->len, &c->ends, &c->ntok, &c->ends_cap);
    if (s != MG_OK) bench_corpus_deinit(c);
    return s;
}

void bench_corpus_deinit(bench_corpus *c) {
    free(c->text);
    free(c->ends);
    memset(c, 0, sizeof *c);
}

/* Text of corpus tokens [off, off + n) with wrap-around, written to *out. */
static mg_status cut(const bench_corpus *c, size_t off, size_t n, char **out, size_t *len) {
    size_t total = 0;
    char *buf = NULL;
    size_t bl = 0;
    off %= c->ntok;
    while (n) {
        size_t k = n < c->ntok - off ? n : c->ntok - off;
        size_t from = off ? c->ends[off - 1] : 0, to = c->ends[off + k - 1];
        char *nb = realloc(buf, bl + (to - from) + 1);
        if (!nb) {
            free(buf);
            return MG_ERRF(MG_ENOMEM, "prompt: out of memory");
        }
        buf = nb;
        memcpy(buf + bl, c->text + from, to - from);
        bl += to - from;
        total += k;
        n -= k;
        off = 0;
    }
    if (!buf)
        buf = calloc(1, 1);
    else
        buf[bl] = 0;
    *out = buf;
    *len = bl;
    return MG_OK;
}

mg_status bench_corpus_prompt(const bench_corpus *c, const btok *t, size_t off, size_t n,
                              char **out, int *ntok) {
    *out = NULL;
    if (n == 0) n = 1;
    size_t take = n;
    char *best = NULL;
    long best_diff = -1;
    int best_count = 0;
    for (int round = 0; round < 10; round++) {
        char *s = NULL;
        size_t len = 0;
        mg_status st = cut(c, off, take, &s, &len);
        if (st != MG_OK) {
            free(best);
            return st;
        }
        size_t got = btok_count(t, s, len);
        long diff = labs((long)got - (long)n);
        if (best_diff < 0 || diff < best_diff) {
            free(best);
            best = s;
            best_diff = diff;
            best_count = (int)got;
        } else {
            free(s);
        }
        if (got == n) break;
        /* Cutting inside a pre-token can merge or split tokens at the ends; adjust the number
         * of corpus tokens taken by the difference and try again. */
        if (got > n)
            take = take > (got - n) ? take - (got - n) : 1;
        else
            take += n - got;
        if (round >= 5 && got != n) off++; /* a stubborn boundary: move the window */
    }
    *out = best;
    *ntok = best_count;
    return MG_OK;
}

/* ---- pool ----------------------------------------------------------------------------------- */

char *bench_body_make(const bench_config *c, const char *prompt, int osl, size_t *len) {
    json_t *b = json_object();
    if (c->endpoint_type == BENCH_CHAT) {
        json_object_set_new(
            b, "messages",
            json_pack("[{s:s, s:s, s:s}]", "role", "user", "name", "text", "content", prompt));
    } else {
        json_object_set_new(b, "prompt", json_pack("[s]", prompt));
    }
    json_object_set_new(b, "model", json_string(c->model));
    json_object_set_new(b, "stream", json_boolean(c->streaming));
    if (osl > 0) {
        const char *key = c->endpoint_type == BENCH_CHAT && !c->use_legacy_max_tokens
                              ? "max_completion_tokens"
                              : "max_tokens";
        json_object_set_new(b, key, json_integer(osl));
    }
    if (c->streaming && c->use_server_token_count)
        json_object_set_new(b, "stream_options", json_pack("{s:b}", "include_usage", 1));
    json_object_update(b, c->extra_inputs); /* extra inputs last: they win */
    char *s = json_dumps(b, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(b);
    if (s && len) *len = strlen(s);
    return s;
}

static int draw_len(bench_rng *r, double mean, double stddev) {
    double x = bench_rng_normal(r, mean, stddev);
    double v = ceil(x < 1 ? 1 : x);
    return v > 1e7 ? 10000000 : (int)v;
}

/* Hash-id block cache for traces: id -> text of isl_block_size tokens. */
typedef struct block_ent {
    long long id;
    char *text;
} block_ent;

typedef struct block_map {
    block_ent *e;
    size_t cap, n;
} block_map;

static block_ent *block_get(block_map *m, long long id) {
    if (m->n * 2 >= m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 1024;
        block_ent *ne = calloc(nc, sizeof *ne);
        if (!ne) return NULL;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->e[i].text) continue;
            size_t h = (size_t)((uint64_t)m->e[i].id * 0x9E3779B97F4A7C15ull) & (nc - 1);
            while (ne[h].text) h = (h + 1) & (nc - 1);
            ne[h] = m->e[i];
        }
        free(m->e);
        m->e = ne;
        m->cap = nc;
    }
    size_t h = (size_t)((uint64_t)id * 0x9E3779B97F4A7C15ull) & (m->cap - 1);
    while (m->e[h].text && m->e[h].id != id) h = (h + 1) & (m->cap - 1);
    return &m->e[h];
}

static mg_status trace_prompt(const bench_config *cfg, const bench_corpus *c, const btok *t,
                              block_map *blocks, json_t *hash_ids, int isl, char **out) {
    size_t nh = json_array_size(hash_ids);
    size_t bs = cfg->isl_block_size;
    char *acc = NULL;
    size_t al = 0;
    for (size_t i = 0; i < nh; i++) {
        json_t *h = json_array_get(hash_ids, i);
        if (!json_is_integer(h)) {
            free(acc);
            return MG_ERRF(MG_EFORMAT, "hash_ids[%zu] is not an integer", i);
        }
        long long id = json_integer_value(h);
        uint64_t x = cfg->random_seed ^ ((uint64_t)id * 0xD6E8FEB86659FD93ull);
        size_t off = splitmix(&x) % c->ntok;
        size_t want = bs;
        if (i == nh - 1 && isl > (int)((nh - 1) * bs)) want = isl - (nh - 1) * bs;
        char *text = NULL;
        int got;
        mg_status s;
        if (want == bs) {
            block_ent *e = block_get(blocks, id);
            if (!e) {
                free(acc);
                return MG_ERRF(MG_ENOMEM, "trace: out of memory");
            }
            if (!e->text) {
                if ((s = bench_corpus_prompt(c, t, off, bs, &e->text, &got)) != MG_OK) {
                    free(acc);
                    return s;
                }
                e->id = id;
                blocks->n++;
            }
            text = strdup(e->text);
        } else if ((s = bench_corpus_prompt(c, t, off, want, &text, &got)) != MG_OK) {
            free(acc);
            return s;
        }
        size_t tl = strlen(text);
        char *na = realloc(acc, al + tl + 1);
        if (!na) {
            free(text);
            free(acc);
            return MG_ERRF(MG_ENOMEM, "trace: out of memory");
        }
        acc = na;
        memcpy(acc + al, text, tl + 1);
        al += tl;
        free(text);
    }
    *out = acc;
    return MG_OK;
}

/* Longest input or output a trace line may ask for, in tokens. */
#define TRACE_MAX_LEN (1 << 24)

static mg_status load_trace(bench_pool *p, const bench_config *cfg, const bench_corpus *c,
                            const btok *t, bench_rng *ids) {
    FILE *f = fopen(cfg->input_file, "r");
    if (!f) return MG_ERRF(MG_EIO, "--input-file %s: cannot open", cfg->input_file);
    char *line = NULL;
    size_t lcap = 0, cap = 0;
    long lineno = 0;
    mg_status s = MG_OK;
    block_map blocks = {0};
    int64_t first_ts = -1;
    while (s == MG_OK && getline(&line, &lcap, f) >= 0) {
        lineno++;
        char *q = line;
        while (*q == ' ' || *q == '\t') q++;
        if (*q == '\n' || *q == 0 || *q == '\r') continue;
        json_error_t err;
        json_t *j = json_loads(q, JSON_DECODE_ANY, &err);
        if (!j || !json_is_object(j)) {
            s = MG_ERRF(MG_EFORMAT, "%s:%ld: not a JSON object (%s)", cfg->input_file, lineno,
                        j ? "wrong type" : err.text);
            json_decref(j);
            break;
        }
        json_t *jin = json_object_get(j, "input_length"),
               *jout = json_object_get(j, "output_length");
        json_t *jts = json_object_get(j, "timestamp"), *jh = json_object_get(j, "hash_ids");
        json_t *jtext = json_object_get(j, "text_input");
        if ((!jin || !json_is_integer(jin) || json_integer_value(jin) <= 0) &&
            !json_is_string(jtext)) {
            s = MG_ERRF(MG_EFORMAT, "%s:%ld: input_length missing or not a positive integer",
                        cfg->input_file, lineno);
            json_decref(j);
            break;
        }
        /* Lengths become ints (and a prompt of that many tokens); a timestamp becomes an int64
         * of ms: values past that are errors, not wrapped counts or undefined conversions. */
        if (jin && json_is_integer(jin) && json_integer_value(jin) > TRACE_MAX_LEN) {
            s = MG_ERRF(MG_EFORMAT, "%s:%ld: input_length is over %d", cfg->input_file, lineno,
                        TRACE_MAX_LEN);
            json_decref(j);
            break;
        }
        if (jout && (!json_is_integer(jout) || json_integer_value(jout) < 0 ||
                     json_integer_value(jout) > TRACE_MAX_LEN)) {
            s = MG_ERRF(MG_EFORMAT, "%s:%ld: output_length is not an integer in [0, %d]",
                        cfg->input_file, lineno, TRACE_MAX_LEN);
            json_decref(j);
            break;
        }
        if (jts && (!json_is_number(jts) || !(fabs(json_number_value(jts)) <= 9e15))) {
            s = MG_ERRF(MG_EFORMAT, "%s:%ld: timestamp is not a number of ms in [-9e15, 9e15]",
                        cfg->input_file, lineno);
            json_decref(j);
            break;
        }
        if (jh && !json_is_array(jh)) {
            s = MG_ERRF(MG_EFORMAT, "%s:%ld: hash_ids is not an array", cfg->input_file, lineno);
            json_decref(j);
            break;
        }
        if (p->n == cap) {
            cap = cap ? cap * 2 : 256;
            bench_conv *nc = realloc(p->conv, cap * sizeof *nc);
            if (!nc) {
                json_decref(j);
                s = MG_ERRF(MG_ENOMEM, "trace: out of memory");
                break;
            }
            p->conv = nc;
        }
        bench_conv *cv = &p->conv[p->n];
        memset(cv, 0, sizeof *cv);
        int isl = jin ? (int)json_integer_value(jin) : 0;
        cv->osl = jout ? (int)json_integer_value(jout) : 0;
        cv->timestamp_ms = jts ? (int64_t)json_number_value(jts) : -1;
        if (json_is_string(jtext)) {
            cv->prompt = strdup(json_string_value(jtext));
        } else if (jh && json_array_size(jh) > 0) {
            s = trace_prompt(cfg, c, t, &blocks, jh, isl, &cv->prompt);
            if (s != MG_OK) s = MG_ERRF(s, "%s:%ld: %s", cfg->input_file, lineno, mg_err_msg());
        } else {
            int got;
            uint64_t x = cfg->random_seed + lineno;
            s = bench_corpus_prompt(c, t, splitmix(&x) % c->ntok, isl, &cv->prompt, &got);
        }
        json_decref(j);
        if (s != MG_OK) break;
        cv->isl = (int)btok_count(t, cv->prompt, strlen(cv->prompt));
        if (first_ts < 0 && cv->timestamp_ms >= 0) first_ts = cv->timestamp_ms;
        bench_uuid(ids, cv->session_id);
        cv->body = bench_body_make(cfg, cv->prompt, cv->osl, &cv->body_len);
        p->n++;
        if (!cv->body) s = MG_ERRF(MG_ENOMEM, "trace: out of memory");
    }
    for (size_t i = 0; i < blocks.cap; i++) free(blocks.e[i].text);
    free(blocks.e);
    free(line);
    fclose(f);
    if (s == MG_OK && p->n == 0) s = MG_ERRF(MG_EFORMAT, "%s: no records", cfg->input_file);
    p->sequential = true;
    return s;
}

mg_status bench_pool_build(bench_pool *p, const bench_config *cfg, const bench_corpus *c,
                           const btok *t) {
    memset(p, 0, sizeof *p);
    bench_rng offs, lens, ids;
    bench_rng_seed(&offs, cfg->random_seed);
    bench_rng_seed(&lens, cfg->random_seed + 1);
    bench_rng_seed(&ids, cfg->random_seed + 2);
    if (cfg->input_file) {
        mg_status s = load_trace(p, cfg, c, t, &ids);
        if (s != MG_OK) bench_pool_deinit(p);
        return s;
    }
    p->n = cfg->conversation_num;
    p->conv = calloc(p->n, sizeof *p->conv);
    if (!p->conv) return MG_ERRF(MG_ENOMEM, "pool: out of memory");
    for (size_t i = 0; i < p->n; i++) {
        bench_conv *cv = &p->conv[i];
        int n = draw_len(&lens, cfg->isl_mean, cfg->isl_stddev);
        cv->osl = cfg->osl_mean >= 0 ? draw_len(&lens, cfg->osl_mean, cfg->osl_stddev) : 0;
        cv->timestamp_ms = -1;
        size_t off = bench_rng_next(&offs) % c->ntok;
        mg_status s = bench_corpus_prompt(c, t, off, n, &cv->prompt, &cv->isl);
        if (s != MG_OK) {
            bench_pool_deinit(p);
            return s;
        }
        bench_uuid(&ids, cv->session_id);
        cv->body = bench_body_make(cfg, cv->prompt, cv->osl, &cv->body_len);
        if (!cv->body) {
            bench_pool_deinit(p);
            return MG_ERRF(MG_ENOMEM, "pool: out of memory");
        }
    }
    return MG_OK;
}

void bench_pool_deinit(bench_pool *p) {
    for (size_t i = 0; i < p->n; i++) {
        free(p->conv[i].prompt);
        free(p->conv[i].body);
    }
    free(p->conv);
    memset(p, 0, sizeof *p);
}
