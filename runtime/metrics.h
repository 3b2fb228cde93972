/* metrics.h - Prometheus metrics: a registry of counters, gauges and histograms, rendered in the
 * text exposition format 0.0.4 on `/metrics` of every process (see sysserver.h).
 *
 * A family (mg_metric) has a name, help text, a type and a fixed list of label names. It has one
 * child per tuple of label values (mg_counter, mg_gauge, mg_histogram); updates go to a child.
 * Components create their families once at start-up, look children up once (a lookup takes the
 * family's lock) and keep the handles: updating a child is a few lock-free atomic operations and
 * never allocates, so it belongs in hot loops (the frontend's SSE loop, the engine step).
 *
 * Names follow DESIGN.md §6: Dynamo's names under the `magneto_` prefix
 * (magneto_frontend_requests_total{model,endpoint,status}, ...). Counters should end in _total and
 * units should be base units (seconds, bytes), as promtool's lint expects.
 *
 * Use, in a component:
 *
 *     mg_metric *req;   // once, at start-up
 *     metrics_counter_new(metrics_default(), "magneto_frontend_requests_total",
 *                         "Total number of LLM requests processed.",
 *                         MG_LABELS("model", "endpoint", "request_type", "status"), &req);
 *     mg_counter *ok;   // once per label tuple, kept
 *     metrics_counter_child(req, MG_LABELS(model, "chat_completions", "stream", "success"), &ok);
 *     metrics_counter_inc(ok);   // hot path
 *
 * Ownership: the registry owns its families and their children; every handle stays valid until
 * metrics_registry_destroy(). Removing a child only hides it from the exposition, so a handle that
 * some thread still holds never dangles.
 *
 * Threads: every function may be called from any thread, concurrently. Callbacks (gauge
 * functions, scrape hooks) run on the thread that renders; a gauge function must not call back into
 * its registry except to update children (it runs under its family's lock), and a scrape hook must
 * not render. */
#ifndef MG_METRICS_H
#define MG_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

typedef struct mg_registry mg_registry;   /* a set of families; rendered together */
typedef struct mg_metric mg_metric;       /* one family: name, help, type, label names */
typedef struct mg_counter mg_counter;     /* one child of a counter family */
typedef struct mg_gauge mg_gauge;         /* one child of a gauge family */
typedef struct mg_histogram mg_histogram; /* one child of a histogram family */

typedef enum mg_metric_type {
    MG_METRIC_COUNTER = 0,
    MG_METRIC_GAUGE = 1,
    MG_METRIC_HISTOGRAM = 2,
} mg_metric_type;

/* A NULL-terminated list of label names or label values, as the functions below take them:
 * MG_LABELS("model", "endpoint", "status"). Pass NULL for a family without labels. */
#define MG_LABELS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Most label names a family may have. */
#define MG_METRICS_MAX_LABELS 8

/* ---- registry ---- */

mg_status metrics_registry_create(mg_registry **out);
/* Frees the registry, its families and children. Accepts NULL. No other thread may use it or any
 * handle from it any more. */
void metrics_registry_destroy(mg_registry *r);

/* The process-wide registry, created on first call with the process collector registered
 * (metrics_process_register). Lives until exit; never destroy it. Thread-safe. */
mg_registry *metrics_default(void);

/* Register fn to run at the start of every render of r, before any family is read: the place to
 * refresh values that are cheaper to read on demand (a queue length, KV block counts). Hooks run
 * in registration order. arg must stay valid while r lives. */
typedef void (*mg_scrape_fn)(void *arg);
mg_status metrics_registry_on_scrape(mg_registry *r, mg_scrape_fn fn, void *arg);

/* ---- families ---- */

/* Create a family, or return the existing one of that name when its type and label names match
 * (so two modules of a process may both declare a metric they share); a name taken by a different
 * type or label set is MG_EEXIST. Names must match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* without a leading "__"; histograms may not use the label "le".
 * label_names is NULL-terminated (MG_LABELS) or NULL; strings are copied. */
mg_status metrics_counter_new(mg_registry *r, const char *name, const char *help,
                              const char *const *label_names, mg_metric **out);
mg_status metrics_gauge_new(mg_registry *r, const char *name, const char *help,
                            const char *const *label_names, mg_metric **out);
/* buckets: upper bounds, strictly increasing and finite (the +Inf bucket is implicit); NULL takes
 * metrics_latency_buckets. The bounds are copied. */
mg_status metrics_histogram_new(mg_registry *r, const char *name, const char *help,
                                const char *const *label_names, const double *buckets,
                                size_t nbuckets, mg_metric **out);

/* Default buckets for latencies in seconds (TTFT, ITL, request duration, step time): 1 ms to
 * 480 s, denser where ITL (5-100 ms) and TTFT (50 ms-10 s) fall. */
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_nbuckets;

/* Fill out[0..count) with start, start*factor, ... (start > 0, factor > 1) or with start,
 * start+width, ... (width > 0): handy for token counts and ratios. */
mg_status metrics_buckets_exponential(double start, double factor, size_t count, double *out);
mg_status metrics_buckets_linear(double start, double width, size_t count, double *out);

const char *metrics_name(const mg_metric *m);
mg_metric_type metrics_type(const mg_metric *m);

/* ---- children ---- */

/* The child for these label values, created at zero on first use. values is NULL-terminated
 * (MG_LABELS) with exactly as many entries as the family has label names, or NULL for a family
 * without labels; any UTF-8 text is allowed (escaped on output). Takes the family's lock: look up
 * once, keep the handle. A child of the wrong family type is MG_EINVAL. */
mg_status metrics_counter_child(mg_metric *m, const char *const *values, mg_counter **out);
mg_status metrics_gauge_child(mg_metric *m, const char *const *values, mg_gauge **out);
mg_status metrics_histogram_child(mg_metric *m, const char *const *values, mg_histogram **out);

/* Hide the child for these values from the exposition (a worker that left). Its handle stays
 * valid and keeps its value; a later lookup of the same values shows it again. MG_ENOTFOUND when
 * there is no such child. */
mg_status metrics_remove(mg_metric *m, const char *const *values);

/* ---- updates: lock-free, no allocation; any thread ---- */

void metrics_counter_inc(mg_counter *c);
void metrics_counter_add_u64(mg_counter *c, unsigned long long n);
void metrics_counter_add(mg_counter *c, double v); /* v < 0 or NaN is ignored: counters only rise */
double metrics_counter_value(const mg_counter *c);

void metrics_gauge_set(mg_gauge *g, double v);
void metrics_gauge_add(mg_gauge *g, double v);
void metrics_gauge_inc(mg_gauge *g);
void metrics_gauge_dec(mg_gauge *g);
/* The value as the last render would report it (calls the callback when one is set). */
double metrics_gauge_value(const mg_gauge *g);
/* Back the gauge with fn(arg), evaluated at each render instead of the stored value; fn NULL
 * returns to the stored value. arg must stay valid until the callback is replaced or the registry
 * is destroyed. */
typedef double (*mg_gauge_fn)(void *arg);
void metrics_gauge_set_fn(mg_gauge *g, mg_gauge_fn fn, void *arg);

void metrics_histogram_observe(mg_histogram *h, double v); /* NaN is ignored */
/* Snapshot for tests and summaries: total count and sum. */
unsigned long long metrics_histogram_count(const mg_histogram *h);
double metrics_histogram_sum(const mg_histogram *h);

/* ---- exposition ---- */

/* Render every visible family of r in the text format 0.0.4: "# HELP", "# TYPE", then one line
 * per child (histograms: cumulative _bucket{le="..."} lines ending in le="+Inf", then _sum and
 * _count). Families appear in creation order, children in creation order. *out is
 * NUL-terminated, *len excludes the NUL; the caller frees *out with free(). Families without a
 * visible child print their HELP and TYPE lines only. */
mg_status metrics_render(mg_registry *r, char **out, size_t *len);

/* The content type of metrics_render's output, for the HTTP response. */
#define MG_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ---- names (DESIGN.md §6) ----
 * Dynamo's names with "dynamo_" replaced by "magneto_", so a Dynamo dashboard ports with one
 * rename, and Dynamo's label names. Each component creates the families it reports. */
/* frontend; label model (requests_total also endpoint, request_type, status; per-worker gauges
 * worker_id, dp_rank, worker_type instead) */
#define MG_M_FRONTEND_REQUESTS_TOTAL               "magneto_frontend_requests_total"
#define MG_M_FRONTEND_INFLIGHT_REQUESTS            "magneto_frontend_inflight_requests"
#define MG_M_FRONTEND_QUEUED_REQUESTS              "magneto_frontend_queued_requests"
#define MG_M_FRONTEND_DISCONNECTED                 "magneto_frontend_disconnected_clients"
#define MG_M_FRONTEND_TTFT_SECONDS                 "magneto_frontend_time_to_first_token_seconds"
#define MG_M_FRONTEND_ITL_SECONDS                  "magneto_frontend_inter_token_latency_seconds"
#define MG_M_FRONTEND_DURATION_SECONDS             "magneto_frontend_request_duration_seconds"
#define MG_M_FRONTEND_INPUT_TOKENS                 "magneto_frontend_input_sequence_tokens"
#define MG_M_FRONTEND_OUTPUT_TOKENS                "magneto_frontend_output_sequence_tokens"
#define MG_M_FRONTEND_OUTPUT_TOKENS_TOTAL          "magneto_frontend_output_tokens_total"
#define MG_M_FRONTEND_CACHED_LENGTH                "magneto_frontend_cached_sequence_length"
#define MG_M_FRONTEND_MODEL_TOTAL_KV_BLOCKS        "magneto_frontend_model_total_kv_blocks"
#define MG_M_FRONTEND_WORKER_ACTIVE_DECODE_BLOCKS  "magneto_frontend_worker_active_decode_blocks"
#define MG_M_FRONTEND_WORKER_ACTIVE_PREFILL_TOKENS "magneto_frontend_worker_active_prefill_tokens"
#define MG_M_FRONTEND_WORKER_WAITING_REQUESTS      "magneto_frontend_worker_waiting_requests"
#define MG_M_FRONTEND_ADMISSION_REJECTIONS         "magneto_frontend_admission_rejection_total"
/* router (Dynamo: dynamo_component_router_*); labels as Dynamo's, dynamo_ read as magneto_ */
#define MG_M_ROUTER_REQUESTS_TOTAL    "magneto_component_router_requests_total"
#define MG_M_ROUTER_TTFT_SECONDS      "magneto_component_router_time_to_first_token_seconds"
#define MG_M_ROUTER_ITL_SECONDS       "magneto_component_router_inter_token_latency_seconds"
#define MG_M_ROUTER_INPUT_TOKENS      "magneto_component_router_input_sequence_tokens"
#define MG_M_ROUTER_OUTPUT_TOKENS     "magneto_component_router_output_sequence_tokens"
#define MG_M_ROUTER_KV_HIT_RATE       "magneto_component_router_kv_hit_rate"
#define MG_M_ROUTER_WORKER_REGISTERED "magneto_component_router_worker_registered"
/* worker (Dynamo: dynamo_component_*) */
#define MG_M_WORKER_REQUESTS_TOTAL    "magneto_component_requests_total"
#define MG_M_WORKER_INFLIGHT_REQUESTS "magneto_component_inflight_requests"
#define MG_M_WORKER_DURATION_SECONDS  "magneto_component_request_duration_seconds"
#define MG_M_WORKER_UPTIME_SECONDS    "magneto_component_uptime_seconds"
#define MG_M_KVSTATS_ACTIVE_BLOCKS    "magneto_component_kvstats_active_blocks"
#define MG_M_KVSTATS_TOTAL_BLOCKS     "magneto_component_kvstats_total_blocks"
#define MG_M_KVSTATS_GPU_CACHE_USAGE  "magneto_component_kvstats_gpu_cache_usage_percent"
#define MG_M_KVSTATS_PREFIX_HIT_RATE  "magneto_component_kvstats_gpu_prefix_cache_hit_rate"

/* ---- process collector ---- */

/* Register the standard process metrics on r: process_cpu_seconds_total,
 * process_resident_memory_bytes, process_virtual_memory_bytes, process_start_time_seconds,
 * process_open_fds, process_max_fds, read from /proc at each render. Idempotent. */
mg_status metrics_process_register(mg_registry *r);

#endif
