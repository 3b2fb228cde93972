/* loadgen.h - the load generator: one epoll event loop driving many keep-alive HTTP/1.1
 * connections, issuing requests by AIPerf's timing modes and recording what comes back.
 *
 * Timing modes (reference/aiperf.md section 4):
 *  - concurrency: a closed loop keeping --concurrency requests in flight;
 *  - request rate: constant or Poisson arrivals at --request-rate, optionally capped by
 *    --concurrency (a credit that finds no free slot waits for one; missed slots are not caught
 *    up);
 *  - fixed schedule: each trace entry at its timestamp.
 * Warmup requests are issued first with the same mode and fully drained before profiling starts.
 * Profiling stops issuing at --request-count or after --benchmark-duration; then in-flight
 * requests get --benchmark-grace-period to finish, after which they are dropped (neither results
 * nor errors). --request-cancellation-rate percent of requests are cancelled (connection closed)
 * --request-cancellation-delay seconds after they were sent, and count as errors (code 499).
 *
 * The loop does only I/O, HTTP/SSE decoding and timestamping: text is kept and tokenized after
 * the run, so tokenizer CPU cannot shift timestamps. One thread; the caller's thread runs it. */
#ifndef MG_BENCH_LOADGEN_H
#define MG_BENCH_LOADGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "options.h"
#include "prompts.h"
#include "stats.h"

typedef struct bench_run {
    bench_record *recs; /* every request, warmup and profiling, in issue order; owned */
    size_t n_recs, cap_recs;
    int64_t start_wall_ns, end_wall_ns; /* the whole run on the wall clock */
    int64_t profile_start_ns;           /* monotonic, when profiling began */
    bool was_cancelled;                 /* stopped by SIGINT/SIGTERM */
    /* The client's own cost over the run (loop thread, the whole process). */
    double cpu_user_s, cpu_sys_s, wall_s;
    uint64_t sse_events, responses, bytes_in;
    int max_in_flight;
    uint64_t connections_opened;
    uint64_t resent; /* requests sent again after a kept-alive connection turned out closed */
} bench_run;

/* Run the benchmark against cfg's server with prompts from pool. Returns MG_OK also when
 * requests failed (they are records with errors); an error only when the run could not start
 * (address resolution, epoll). */
mg_status bench_run_execute(const bench_config *cfg, const bench_pool *pool, bench_run *out);
void bench_run_deinit(bench_run *r);

/* Re-tokenize every record's returned text (output_tokens, reasoning_tokens) on nthreads
 * threads. With use_server_token_count, the usage numbers are taken when present instead.
 * Returns the seconds it took. */
double bench_run_count_tokens(bench_run *r, const btok *t, int nthreads, bool use_server);

/* What the loop does with one SSE event's data of record r, received at now (monotonic ns):
 * a chunk with non-empty content or reasoning text is a response (its time is kept and its text
 * appended); role-only, usage-only and [DONE] events are not; an "error" event, an error object
 * or data that is not JSON fail the record. Returns 1 for a response, 0 for none, -1 on error.
 * Exposed so that tests can check these rules without a network. */
int bench_record_event(bench_record *r, const char *type, const char *data, size_t len,
                       int64_t now);
/* The same for a whole non-streaming response body. */
int bench_record_body(bench_record *r, const char *body, size_t len, int64_t now);

/* Asks a running loop (from a signal handler) to stop issuing and cancel what is in flight. */
void bench_run_interrupt(void);

#endif
