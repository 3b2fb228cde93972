/* sched_out.h - what the scheduler tests keep of a request's output callbacks: its tokens (up to
 * MAXOUT, which the including test defines first), finish reason, usage, and how the callbacks
 * came (a final one exactly once, nothing after it). Header-only, for tests. */
#ifndef MG_TEST_SCHED_OUT_H
#define MG_TEST_SCHED_OUT_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "scheduler.h"

#ifndef MAXOUT
#error "define MAXOUT (tokens kept per request) before including sched_out.h"
#endif

typedef struct res {
    int32_t toks[MAXOUT];
    int n;
    mg_finish fin;
    int n_final, after_final, overflow;
    int calls, first_n; /* callbacks, and tokens in the first one */
    mg_usage usage;
} res;

/* The request's callback (ud: its res). */
static inline void on_out(void *ud, const mg_output *o) {
    res *r = ud;
    if (r->n_final) r->after_final++;
    if (r->calls++ == 0) r->first_n = o->n_tokens;
    for (int i = 0; i < o->n_tokens; i++) {
        if (r->n < MAXOUT)
            r->toks[r->n++] = o->tokens[i];
        else
            r->overflow++;
    }
    if (o->finish != MG_FINISH_NONE) {
        r->fin = o->finish;
        r->n_final++;
        r->usage = o->usage;
    }
}

/* The same tokens. */
static inline bool res_same(const res *a, const res *b) {
    return a->n == b->n && memcmp(a->toks, b->toks, sizeof(int32_t) * a->n) == 0;
}

#endif
