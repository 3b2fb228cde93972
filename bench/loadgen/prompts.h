/* prompts.h - the prompt pool: synthetic prompts of exact token counts cut from a text corpus,
 * or prompts sized by a mooncake trace, each turned into the request body that is sent.
 *
 * Data flow: main.c builds the pool before the run (all CPU work here happens before the first
 * request, so it cannot disturb timestamps); loadgen.c picks conversations from it; export.c
 * writes the bodies to inputs.json.
 *
 * Prompts follow AIPerf's generator: the corpus's non-empty lines are joined with spaces and
 * tokenized once; a prompt of n tokens is the text of n consecutive corpus tokens from a seeded
 * random offset (wrapping at the end), re-counted and trimmed or extended until it counts exactly
 * n (AIPerf's newer fix-up loop, 10 tries). The default corpus is the license texts of Debian's
 * base-files package (/usr/share/common-licenses), which every Debian system has. */
#ifndef MG_BENCH_PROMPTS_H
#define MG_BENCH_PROMPTS_H

#include <stddef.h>
#include <stdint.h>

#include "btok.h"
#include "options.h"
#include "status.h"

/* xoshiro256**: small, fast and seedable; one per purpose so streams do not interfere. */
typedef struct bench_rng {
    uint64_t s[4];
} bench_rng;
void bench_rng_seed(bench_rng *r, uint64_t seed);
uint64_t bench_rng_next(bench_rng *r);
double bench_rng_uniform(bench_rng *r); /* [0, 1) */
double bench_rng_normal(bench_rng *r, double mean, double stddev);

typedef struct bench_corpus {
    char *text; /* owned; starts with a space so that a wrapped cut joins words cleanly */
    size_t len;
    uint32_t *ends; /* token end offsets, owned */
    size_t ntok, ends_cap;
} bench_corpus;

/* paths: ':'-separated text files, or NULL for the default corpus. */
mg_status bench_corpus_load(bench_corpus *c, const char *paths, const btok *t);
void bench_corpus_deinit(bench_corpus *c);
/* A prompt of n tokens starting near corpus token off. *out (caller-owned, malloc'd) gets the
 * text; *ntok what it counts to (== n unless 10 fix-up rounds could not reach n). */
mg_status bench_corpus_prompt(const bench_corpus *c, const btok *t, size_t off, size_t n,
                              char **out, int *ntok);

typedef struct bench_conv {
    char session_id[40];
    char *prompt;         /* owned */
    int isl;              /* tokens of the prompt */
    int osl;              /* max tokens requested; 0: none */
    int64_t timestamp_ms; /* trace timestamp; -1 when none */
    char *body;           /* the request body (JSON), owned */
    size_t body_len;
} bench_conv;

typedef struct bench_pool {
    bench_conv *conv;
    size_t n;
    bool sequential; /* traces are replayed in order; synthetic pools are sampled */
} bench_pool;

/* Build the pool for the config: --conversation-num synthetic prompts, or one entry per trace
 * line of --input-file. */
mg_status bench_pool_build(bench_pool *p, const bench_config *c, const bench_corpus *corpus,
                           const btok *t);
void bench_pool_deinit(bench_pool *p);
/* The request body for a prompt (AIPerf's payload layout, extra inputs merged last). */
char *bench_body_make(const bench_config *c, const char *prompt, int osl, size_t *len);
/* A random UUID v4 string (36 chars + NUL) from rng. */
void bench_uuid(bench_rng *r, char out[40]);

#endif
