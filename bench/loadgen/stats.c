/* stats.c - AIPerf's per-record metrics, percentiles and the run summary (see stats.h). */
#include "stats.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const bench_metric_info bench_record_metric_info[BM_NUM_RECORD_METRICS] = {
    [BM_REQUEST_LATENCY] = {"request_latency", "Request Latency", "ms"},
    [BM_TTFT] = {"time_to_first_token", "Time to First Token", "ms"},
    [BM_TTST] = {"time_to_second_token", "Time to Second Token", "ms"},
    [BM_TTFO] = {"time_to_first_output_token", "Time to First Output Token", "ms"},
    [BM_ITL] = {"inter_token_latency", "Inter Token Latency", "ms"},
    [BM_ICL] = {"inter_chunk_latency", "Inter Chunk Latency", "ms"},
    [BM_TPS_USER] = {"output_token_throughput_per_user", "Output Token Throughput Per User",
                     "tokens/sec/user"},
    [BM_OSL] = {"output_sequence_length", "Output Sequence Length", "tokens"},
    [BM_OUTPUT_TOKENS] = {"output_token_count", "Output Token Count", "tokens"},
    [BM_REASONING_TOKENS] = {"reasoning_token_count", "Reasoning Token Count", "tokens"},
    [BM_ISL] = {"input_sequence_length", "Input Sequence Length", "tokens"},
};

void bench_record_free(bench_record *r) {
    if (!r) return;
    free(r->resp_ns);
    free(r->text);
    free(r->reasoning);
    free(r->err_type);
    free(r->err_msg);
    r->resp_ns = NULL;
    r->text = r->reasoning = r->err_type = r->err_msg = NULL;
}

/* Replace each byte that does not belong to a valid UTF-8 sequence with '?'. Messages carry
 * server text cut at a byte limit (and reason phrases of any bytes); the exporters must write
 * valid JSON, and jansson refuses such a string outright (the error would vanish from
 * error_summary). */
static void utf8_scrub(char *str) {
    unsigned char *s = (unsigned char *)str;
    while (*s) {
        unsigned c = *s;
        int n = 0;
        unsigned cp = 0, min = 0;
        if (c < 0x80) {
            s++;
            continue;
        }
        if ((c & 0xE0) == 0xC0)
            n = 1, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0)
            n = 2, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0)
            n = 3, cp = c & 0x07, min = 0x10000;
        bool ok = n > 0;
        for (int k = 1; ok && k <= n; k++) {
            if ((s[k] & 0xC0) != 0x80)
                ok = false; /* also stops at the terminating NUL */
            else
                cp = (cp << 6) | (s[k] & 0x3F);
        }
        if (ok && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
        if (!ok) {
            *s++ = '?';
            continue;
        }
        s += n + 1;
    }
}

void bench_record_fail(bench_record *r, int code, const char *type, const char *fmt, ...) {
    if (r->err_type) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->err_code = code;
    r->err_type = strdup(type);
    r->err_msg = strdup(msg);
    if (r->err_type) utf8_scrub(r->err_type);
    if (r->err_msg) utf8_scrub(r->err_msg);
}

bool bench_record_ok(const bench_record *r) {
    return !r->err_type && !r->dropped;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_percentile(const double *v, size_t n, double p) {
    if (n == 0) return 0;
    double rank = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)floor(rank);
    if (lo >= n - 1) return v[n - 1];
    double frac = rank - (double)lo;
    return v[lo] + (v[lo + 1] - v[lo]) * frac;
}

void bench_stats_compute(double *v, size_t n, bench_stats *o) {
    memset(o, 0, sizeof *o);
    o->count = n;
    if (n == 0) return;
    qsort(v, n, sizeof *v, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    double avg = sum / (double)n, var = 0;
    for (size_t i = 0; i < n; i++) var += (v[i] - avg) * (v[i] - avg);
    o->sum = sum;
    o->avg = avg;
    o->std = sqrt(var / (double)n);
    o->min = v[0];
    o->max = v[n - 1];
    o->p1 = bench_percentile(v, n, 1);
    o->p5 = bench_percentile(v, n, 5);
    o->p10 = bench_percentile(v, n, 10);
    o->p25 = bench_percentile(v, n, 25);
    o->p50 = bench_percentile(v, n, 50);
    o->p75 = bench_percentile(v, n, 75);
    o->p90 = bench_percentile(v, n, 90);
    o->p95 = bench_percentile(v, n, 95);
    o->p99 = bench_percentile(v, n, 99);
}

static double ns_to_ms(int64_t ns) {
    return (double)ns / 1e6;
}

bool bench_metric_request_latency(const bench_record *r, double *ms) {
    if (!bench_record_ok(r)) return false;
    /* Non-streaming: the whole body is the one response, complete at end_ns. */
    int64_t last = r->n_resp ? r->resp_ns[r->n_resp - 1] : r->end_ns;
    if (!r->streaming) last = r->end_ns;
    if (last <= 0) return false;
    *ms = ns_to_ms(last - r->start_ns);
    return true;
}

bool bench_metric_ttft(const bench_record *r, double *ms) {
    if (!bench_record_ok(r) || !r->streaming || r->n_resp == 0) return false;
    *ms = ns_to_ms(r->resp_ns[0] - r->start_ns);
    return true;
}

bool bench_metric_ttst(const bench_record *r, double *ms) {
    if (!bench_record_ok(r) || !r->streaming || r->n_resp < 2) return false;
    *ms = ns_to_ms(r->resp_ns[1] - r->resp_ns[0]);
    return true;
}

bool bench_metric_ttfo(const bench_record *r, double *ms) {
    if (!bench_record_ok(r) || !r->streaming || r->first_output_ns == 0) return false;
    *ms = ns_to_ms(r->first_output_ns - r->start_ns);
    return true;
}

int bench_metric_osl(const bench_record *r) {
    return r->output_tokens + r->reasoning_tokens;
}

bool bench_metric_itl(const bench_record *r, double *ms) {
    double lat, ttft;
    int osl = bench_metric_osl(r);
    if (osl < 2 || !bench_metric_request_latency(r, &lat) || !bench_metric_ttft(r, &ttft))
        return false;
    *ms = (lat - ttft) / (double)(osl - 1);
    return true;
}

bool bench_metric_tps_user(const bench_record *r, double *tok_s) {
    double itl;
    if (!bench_metric_itl(r, &itl) || itl <= 0) return false;
    *tok_s = 1000.0 / itl;
    return true;
}

typedef struct dvec {
    double *v;
    size_t n, cap;
} dvec;

static bool dvec_push(dvec *d, double x) {
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 256;
        double *v = realloc(d->v, cap * sizeof *v);
        if (!v) return false;
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n++] = x;
    return true;
}

static bool add_error(bench_summary *s, const bench_record *r, size_t *cap) {
    for (size_t i = 0; i < s->n_errors; i++) {
        bench_error_kind *e = &s->errors[i];
        if (e->code == r->err_code && strcmp(e->type, r->err_type) == 0 &&
            strcmp(e->message, r->err_msg ? r->err_msg : "") == 0) {
            e->count++;
            return true;
        }
    }
    if (s->n_errors == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        bench_error_kind *e = realloc(s->errors, nc * sizeof *e);
        if (!e) return false;
        s->errors = e;
        *cap = nc;
    }
    bench_error_kind *e = &s->errors[s->n_errors++];
    e->code = r->err_code;
    e->type = strdup(r->err_type);
    e->message = strdup(r->err_msg ? r->err_msg : "");
    e->count = 1;
    return e->type && e->message;
}

static int cmp_error(const void *a, const void *b) {
    const bench_error_kind *x = a, *y = b;
    return x->count > y->count ? -1 : x->count < y->count;
}

bool bench_summarize(const bench_record *recs, size_t n, bench_summary *s) {
    memset(s, 0, sizeof *s);
    dvec v[BM_NUM_RECORD_METRICS] = {0};
    size_t ecap = 0;
    bool ok = true;
    int64_t min_start = INT64_MAX, max_end = INT64_MIN;
    int64_t min_start_wall = 0, max_end_wall = 0;
    for (size_t i = 0; i < n && ok; i++) {
        const bench_record *r = &recs[i];
        if (r->phase != BENCH_PROFILING) continue;
        if (r->dropped) {
            s->dropped_count++;
            continue;
        }
        if (r->cancelled) s->cancelled_count++;
        if (!bench_record_ok(r)) {
            s->error_request_count++;
            s->total_error_isl += r->isl;
            ok = add_error(s, r, &ecap);
            continue;
        }
        s->request_count++;
        double x;
        if (bench_metric_request_latency(r, &x)) {
            ok &= dvec_push(&v[BM_REQUEST_LATENCY], x);
            /* The duration window: first valid start to last valid response, on the wall clock
             * (start_wall + latency, as AIPerf's max_response_timestamp). */
            int64_t end = r->start_ns + (int64_t)llround(x * 1e6);
            if (r->start_ns < min_start) {
                min_start = r->start_ns;
                min_start_wall = r->start_wall_ns;
            }
            if (end > max_end) {
                max_end = end;
                max_end_wall = r->start_wall_ns + (end - r->start_ns);
            }
        }
        if (bench_metric_ttft(r, &x)) ok &= dvec_push(&v[BM_TTFT], x);
        if (bench_metric_ttst(r, &x)) ok &= dvec_push(&v[BM_TTST], x);
        if (bench_metric_ttfo(r, &x)) ok &= dvec_push(&v[BM_TTFO], x);
        if (bench_metric_itl(r, &x)) ok &= dvec_push(&v[BM_ITL], x);
        if (bench_metric_tps_user(r, &x)) ok &= dvec_push(&v[BM_TPS_USER], x);
        if (r->streaming)
            for (size_t k = 1; k < r->n_resp; k++)
                ok &= dvec_push(&v[BM_ICL], ns_to_ms(r->resp_ns[k] - r->resp_ns[k - 1]));
        ok &= dvec_push(&v[BM_OSL], bench_metric_osl(r));
        ok &= dvec_push(&v[BM_OUTPUT_TOKENS], r->output_tokens);
        if (r->reasoning_tokens) ok &= dvec_push(&v[BM_REASONING_TOKENS], r->reasoning_tokens);
        ok &= dvec_push(&v[BM_ISL], r->isl);
        s->total_isl += r->isl;
        s->total_osl += bench_metric_osl(r);
        s->total_output_tokens += r->output_tokens;
        s->total_reasoning_tokens += r->reasoning_tokens;
    }
    for (int m = 0; m < BM_NUM_RECORD_METRICS; m++) {
        s->has[m] = v[m].n > 0;
        bench_stats_compute(v[m].v, v[m].n, &s->rec[m]);
        free(v[m].v);
    }
    if (max_end > min_start) {
        s->min_request_wall_ns = min_start_wall;
        s->max_response_wall_ns = max_end_wall;
        s->benchmark_duration_s = (double)(max_end - min_start) / 1e9;
        double d = s->benchmark_duration_s;
        s->request_throughput = (double)s->request_count / d;
        s->output_token_throughput = (double)s->total_osl / d;
        s->total_token_throughput = (double)(s->total_isl + s->total_osl) / d;
    }
    if (s->n_errors > 1) qsort(s->errors, s->n_errors, sizeof *s->errors, cmp_error);
    return ok;
}

void bench_summary_free(bench_summary *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_errors; i++) {
        free(s->errors[i].type);
        free(s->errors[i].message);
    }
    free(s->errors);
    s->errors = NULL;
    s->n_errors = 0;
}

int bench_slo_parse(const char *spec, bench_slo *out, int cap, const char **bad) {
    int n = 0;
    const char *p = spec;
    while (*p) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) break;
        const char *item = p;
        while (*p && *p != ' ' && *p != ',') p++;
        size_t len = p - item;
        const char *colon = memchr(item, ':', len);
        *bad = item;
        if (!colon || n == cap) return -1;
        size_t kl = colon - item;
        int m = -1;
        static const int allowed[] = {BM_REQUEST_LATENCY, BM_TTFT, BM_TTST, BM_TTFO, BM_ITL,
                                      BM_TPS_USER};
        for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++) {
            const char *tag = bench_record_metric_info[allowed[i]].tag;
            if (strlen(tag) == kl && strncmp(tag, item, kl) == 0) m = allowed[i];
        }
        if (m < 0) return -1;
        char num[64];
        size_t vl = len - kl - 1;
        if (vl == 0 || vl >= sizeof num) return -1;
        memcpy(num, colon + 1, vl);
        num[vl] = 0;
        char *e;
        double v = strtod(num, &e);
        if (*e || !(v >= 0)) return -1;
        out[n++] = (bench_slo){m, v};
    }
    *bad = NULL;
    return n;
}

bool bench_record_good(const bench_record *r, const bench_slo *slo, int n) {
    if (!bench_record_ok(r)) return false;
    for (int i = 0; i < n; i++) {
        double v;
        bool have;
        switch (slo[i].metric) {
        case BM_REQUEST_LATENCY:
            have = bench_metric_request_latency(r, &v);
            break;
        case BM_TTFT:
            have = bench_metric_ttft(r, &v);
            break;
        case BM_TTST:
            have = bench_metric_ttst(r, &v);
            break;
        case BM_TTFO:
            have = bench_metric_ttfo(r, &v);
            break;
        case BM_ITL:
            have = bench_metric_itl(r, &v);
            break;
        case BM_TPS_USER:
            have = bench_metric_tps_user(r, &v);
            break;
        default:
            have = false;
        }
        if (!have) return false;
        bool higher_is_better = slo[i].metric == BM_TPS_USER;
        if (higher_is_better ? v < slo[i].threshold : v > slo[i].threshold) return false;
    }
    return true;
}

void bench_summary_goodput(bench_summary *s, const bench_record *recs, size_t n,
                           const bench_slo *slo, int n_slo) {
    s->has_goodput = true;
    s->good_request_count = 0;
    for (size_t i = 0; i < n; i++)
        if (recs[i].phase == BENCH_PROFILING && bench_record_good(&recs[i], slo, n_slo))
            s->good_request_count++;
    s->goodput = s->benchmark_duration_s > 0 ? s->good_request_count / s->benchmark_duration_s : 0;
}
