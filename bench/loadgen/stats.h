/* stats.h - AIPerf's metric definitions over the records of one benchmark run.
 *
 * Data flow: the load generator (loadgen.c) fills one bench_record per request (timestamps of
 * every content response, the returned text, an error if any); after the run the text is
 * re-tokenized (bench_records_count_tokens) and this module turns the records into per-record
 * metrics and the aggregate statistics that export.c writes.
 *
 * Definitions (AIPerf, reference/aiperf.md section 2):
 *  - a "response" is an SSE message whose delta carries non-empty content or reasoning text;
 *    role-only, usage-only and [DONE] messages are not responses;
 *  - request_latency = last response - request start; time_to_first_token = first response -
 *    start (streaming only); inter_token_latency = (latency - TTFT) / (OSL - 1), needs OSL >= 2;
 *  - benchmark_duration = last response of a valid profiling record - first start of a valid
 *    profiling record (warmup excluded); throughputs divide by it;
 *  - percentiles interpolate linearly between order statistics (numpy's default), std is the
 *    population std (ddof = 0);
 *  - failed requests are left out of every latency statistic and counted in error_summary.
 * All of it is plain arithmetic on caller-owned arrays; nothing here is thread-aware. */
#ifndef MG_BENCH_STATS_H
#define MG_BENCH_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum bench_phase { BENCH_WARMUP = 0, BENCH_PROFILING = 1 } bench_phase;

/* One request as the client saw it. Times are CLOCK_MONOTONIC ns unless named _wall_. */
typedef struct bench_record {
    bench_phase phase;
    bool streaming;
    int conversation;      /* index into the prompt pool */
    int64_t start_ns;      /* just before the request's first byte was written */
    int64_t start_wall_ns; /* the same instant on CLOCK_REALTIME */
    int64_t ack_ns;        /* response status line received (0 when none) */
    int64_t end_ns;        /* response complete or the error seen */
    int64_t *resp_ns;      /* arrival of each response (content or reasoning), owned */
    size_t n_resp, cap_resp;
    int64_t first_output_ns; /* first response with non-reasoning content (0 when none) */
    char *text;              /* concatenated content text, owned, NUL-terminated */
    size_t text_len, text_cap;
    char *reasoning; /* concatenated reasoning text, owned */
    size_t reasoning_len, reasoning_cap;
    int isl;                     /* prompt tokens (counted when the prompt was made) */
    int osl_requested;           /* max tokens asked for (0: none) */
    int output_tokens;           /* re-tokenized content (filled after the run) */
    int reasoning_tokens;        /* re-tokenized reasoning */
    int usage_completion_tokens; /* from a usage chunk, -1 when none */
    /* Error: err_type != NULL. err_code is the HTTP status, or 0 for transport errors. */
    int err_code;
    char *err_type, *err_msg; /* owned */
    bool cancelled;           /* cancelled by --request-cancellation-rate or the grace period */
    bool dropped;             /* still running when the grace period ended: not a result */
    int64_t cancel_ns;
    char request_id[40];
} bench_record;

void bench_record_free(bench_record *r); /* frees owned arrays, not r itself */
/* Set the record's error (first one wins: later errors of the same request are ignored). */
void bench_record_fail(bench_record *r, int code, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
bool bench_record_ok(const bench_record *r);

/* Statistics keys of AIPerf's STAT_KEYS plus count and sum. */
typedef struct bench_stats {
    double avg, min, max, p1, p5, p10, p25, p50, p75, p90, p95, p99, std, sum;
    size_t count;
} bench_stats;

/* Percentile p (0..100) of sorted values v[0..n) by linear interpolation (numpy.percentile). */
double bench_percentile(const double *sorted, size_t n, double p);
/* Stats over v[0..n); v is sorted in place. n == 0 gives all zeros. */
void bench_stats_compute(double *v, size_t n, bench_stats *out);

/* Per-record metrics, ms or tokens. Each returns false when the metric is not defined for the
 * record (error, not streaming, too few tokens). */
bool bench_metric_request_latency(const bench_record *r, double *ms);
bool bench_metric_ttft(const bench_record *r, double *ms);
bool bench_metric_ttst(const bench_record *r, double *ms);
bool bench_metric_ttfo(const bench_record *r, double *ms);
bool bench_metric_itl(const bench_record *r, double *ms);
bool bench_metric_tps_user(const bench_record *r, double *tok_s);
int bench_metric_osl(const bench_record *r); /* output + reasoning tokens */

/* The metrics of a run, in AIPerf's tags. */
enum {
    BM_REQUEST_LATENCY,
    BM_TTFT,
    BM_TTST,
    BM_TTFO,
    BM_ITL,
    BM_ICL,
    BM_TPS_USER,
    BM_OSL,
    BM_OUTPUT_TOKENS,
    BM_REASONING_TOKENS,
    BM_ISL,
    BM_NUM_RECORD_METRICS,
};

typedef struct bench_metric_info {
    const char *tag, *header, *unit;
} bench_metric_info;
extern const bench_metric_info bench_record_metric_info[BM_NUM_RECORD_METRICS];

typedef struct bench_error_kind {
    int code;
    char *type, *message; /* owned */
    size_t count;
} bench_error_kind;

typedef struct bench_summary {
    bench_stats rec[BM_NUM_RECORD_METRICS];
    bool has[BM_NUM_RECORD_METRICS]; /* the metric had at least one value */
    size_t request_count, error_request_count, cancelled_count, dropped_count;
    int64_t min_request_wall_ns, max_response_wall_ns;
    double benchmark_duration_s;
    double request_throughput, output_token_throughput, total_token_throughput;
    long long total_isl, total_osl, total_output_tokens, total_reasoning_tokens, total_error_isl;
    bool has_goodput; /* --goodput was given */
    size_t good_request_count;
    double goodput;           /* good requests / benchmark_duration */
    bench_error_kind *errors; /* distinct (code, type, message), most frequent first */
    size_t n_errors;
} bench_summary;

/* Compute the summary over the profiling records of recs[0..n). Returns false on allocation
 * failure. The summary owns its error list: free with bench_summary_free. */
bool bench_summarize(const bench_record *recs, size_t n, bench_summary *out);
void bench_summary_free(bench_summary *s);

/* AIPerf's --goodput: a request is good when every SLO holds (latencies at most the threshold,
 * output_token_throughput_per_user at least it; a metric the record lacks fails it). */
typedef struct bench_slo {
    int metric;       /* BM_* */
    double threshold; /* in the metric's display unit (ms, tokens/sec/user) */
} bench_slo;
/* Parse "time_to_first_token:100 inter_token_latency:3.4" (space or comma separated). Returns
 * the number of SLOs, or -1 with *bad pointing at the offending item. */
int bench_slo_parse(const char *spec, bench_slo *out, int cap, const char **bad);
bool bench_record_good(const bench_record *r, const bench_slo *slo, int n);
/* Fill has_goodput, good_request_count and goodput from the profiling records. */
void bench_summary_goodput(bench_summary *s, const bench_record *recs, size_t n,
                           const bench_slo *slo, int n_slo);

#endif
