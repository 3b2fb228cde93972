/* scripted_worker.h - a worker for tests that speaks the real wire protocol (DESIGN.md §2) and
 * plays a known output: it registers an instance card and a model card in etcd through
 * discovery, takes GenerateRequests on its NATS subject, and streams GenerateChunks (one token
 * each) to the request's reply subject with the bus's sequence numbers; it honours max_tokens,
 * CancelRequests and migration (a request carrying generated tokens resumes at their position).
 *
 * It is not a model: token k of an answer is script[k], where the script comes from a callback
 * that sees the prompt. Tests use it to check the frontend's output exactly (harmony reasoning,
 * tool calls, stop strings, migration), which a real engine's sampled tokens do not allow.
 *
 * Threads: each request is served on its own thread; the callbacks run there. */
#ifndef MG_TEST_SCRIPTED_WORKER_H
#define MG_TEST_SCRIPTED_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "etcd.h"

/* Copy the script for a request with this prompt into *out (malloc'd, caller frees), *n its
 * length. */
typedef void (*sworker_script_fn)(void *ud, const uint32_t *prompt, size_t n_prompt, uint32_t **out,
                                  size_t *n);

typedef struct sworker {
    /* settings the test may change at any time */
    atomic_int delay_us;   /* between tokens */
    atomic_int die_after;  /* >0: a first-attempt request makes the worker vanish after this many
                              tokens (it stops answering and its etcd key goes, like a crash) */
    atomic_int gap_after;  /* >0: a first-attempt request skips a sequence number after this many
                              tokens (a lost chunk), then goes on */
    atomic_int hang_after; /* >0: a first-attempt request falls silent after this many tokens,
                              the worker staying registered (a stuck process) */
    /* counters */
    atomic_bool dead;
    atomic_int requests, cancels, running, tokens_sent;
    char subject[160];
    /* private */
    bus *b;
    void *reg_, *sub_, *csub_;
    sworker_script_fn fn;
    void *ud;
    void *mu_;
    char cancelled[256][64];
    int n_cancelled;
} sworker;

/* Register in namespace ns as component "worker" serving model (context ctx tokens) and start
 * serving. NULL on failure (logged). */
sworker *sworker_start(bus *b, etcd_client *etcd, const char *ns, const char *model, int64_t ctx,
                       sworker_script_fn fn, void *ud);
/* Stop serving, wait for running requests, deregister, free. Accepts NULL. */
void sworker_stop(sworker *w);

#endif
