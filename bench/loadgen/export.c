/* export.c - AIPerf artifacts, summary table and gnuplot plots (see export.h). */
#include "export.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "log.h"

extern char **environ;

mg_status bench_mkdirs(const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) && errno != EEXIST)
            return MG_ERRF(MG_EIO, "mkdir %s: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) && errno != EEXIST)
        return MG_ERRF(MG_EIO, "mkdir %s: %s", tmp, strerror(errno));
    return MG_OK;
}

/* The record metrics AIPerf shows in its CSV/JSON (inter_chunk_latency is experimental there,
 * the token counts are internal); sorted by tag, as AIPerf's CSV exporter sorts them. */
static const int shown_metrics[] = {BM_ITL,  BM_ISL,  BM_OSL, BM_TPS_USER, BM_REQUEST_LATENCY,
                                    BM_TTFT, BM_TTFO, BM_TTST};

static bool metric_shown(const bench_summary *s, int m) {
    if (!s->has[m]) return false;
    if (m == BM_TTFO) return s->total_reasoning_tokens > 0; /* equals TTFT otherwise */
    return true;
}

typedef struct scalar {
    const char *tag, *header, *unit;
    double v;
} scalar;

/* Scalar metrics, sorted by tag. Returns how many. */
static int scalars(const bench_summary *s, scalar *out) {
    int n = 0;
    out[n++] = (scalar){"benchmark_duration", "Benchmark Duration", "sec", s->benchmark_duration_s};
    if (s->error_request_count)
        out[n++] = (scalar){"error_request_count", "Error Request Count", "requests",
                            (double)s->error_request_count};
    if (s->has_goodput) {
        out[n++] = (scalar){"good_request_count", "Good Request Count", "requests",
                            (double)s->good_request_count};
        out[n++] = (scalar){"goodput", "Goodput", "requests/sec", s->goodput};
    }
    out[n++] = (scalar){"output_token_throughput", "Output Token Throughput", "tokens/sec",
                        s->output_token_throughput};
    out[n++] = (scalar){"request_count", "Request Count", "requests", (double)s->request_count};
    out[n++] =
        (scalar){"request_throughput", "Request Throughput", "requests/sec", s->request_throughput};
    out[n++] = (scalar){"total_token_throughput", "Total Token Throughput", "tokens/sec",
                        s->total_token_throughput};
    return n;
}

static void row_name(char *out, size_t cap, const char *header, const char *unit) {
    if (strcmp(unit, "count") == 0 || strcmp(unit, "requests") == 0)
        snprintf(out, cap, "%s", header);
    else
        snprintf(out, cap, "%s (%s)", header, unit);
}

mg_status bench_export_csv(const char *path, const bench_summary *s) {
    FILE *f = fopen(path, "w");
    if (!f) return MG_ERRF(MG_EIO, "%s: %s", path, strerror(errno));
    fprintf(f, "Metric,avg,min,max,p1,p5,p10,p25,p50,p75,p90,p95,p99,std\n");
    for (size_t i = 0; i < sizeof shown_metrics / sizeof *shown_metrics; i++) {
        int m = shown_metrics[i];
        if (!metric_shown(s, m)) continue;
        const bench_stats *st = &s->rec[m];
        char name[128];
        row_name(name, sizeof name, bench_record_metric_info[m].header,
                 bench_record_metric_info[m].unit);
        fprintf(f, "%s,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f\n", name,
                st->avg, st->min, st->max, st->p1, st->p5, st->p10, st->p25, st->p50, st->p75,
                st->p90, st->p95, st->p99, st->std);
    }
    fprintf(f, "\nMetric,Value\n");
    scalar sc[16];
    int n = scalars(s, sc);
    for (int i = 0; i < n; i++) {
        char name[128];
        row_name(name, sizeof name, sc[i].header, sc[i].unit);
        fprintf(f, "%s,%.2f\n", name, sc[i].v);
    }
    if (fclose(f)) return MG_ERRF(MG_EIO, "%s: write failed", path);
    return MG_OK;
}

static void iso_time(char *out, size_t cap, int64_t wall_ns) {
    time_t t = wall_ns / 1000000000;
    struct tm tm;
    localtime_r(&t, &tm);
    char base[40];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%06lld", base, (long long)(wall_ns % 1000000000) / 1000);
}

static json_t *stats_json(const bench_stats *st, const char *unit) {
    json_t *o = json_object();
    json_object_set_new(o, "unit", json_string(unit));
    json_object_set_new(o, "avg", json_real(st->avg));
    json_object_set_new(o, "p1", json_real(st->p1));
    json_object_set_new(o, "p5", json_real(st->p5));
    json_object_set_new(o, "p10", json_real(st->p10));
    json_object_set_new(o, "p25", json_real(st->p25));
    json_object_set_new(o, "p50", json_real(st->p50));
    json_object_set_new(o, "p75", json_real(st->p75));
    json_object_set_new(o, "p90", json_real(st->p90));
    json_object_set_new(o, "p95", json_real(st->p95));
    json_object_set_new(o, "p99", json_real(st->p99));
    json_object_set_new(o, "min", json_real(st->min));
    json_object_set_new(o, "max", json_real(st->max));
    json_object_set_new(o, "std", json_real(st->std));
    json_object_set_new(o, "count", json_integer((json_int_t)st->count));
    json_object_set_new(o, "sum", json_real(st->sum));
    return o;
}

static json_t *scalar_json(const char *unit, double v) {
    return json_pack("{s:s, s:f}", "unit", unit, "avg", v);
}

mg_status bench_export_json(const char *path, const bench_config *cfg, const bench_run *run,
                            const bench_summary *s) {
    json_t *o = json_object();
    /* Record metrics in the order AIPerf's console lists them, then the scalars. */
    static const int order[] = {BM_TTFT, BM_TTST,     BM_TTFO, BM_REQUEST_LATENCY,
                                BM_ITL,  BM_TPS_USER, BM_OSL,  BM_ISL};
    json_object_set_new(o, "request_throughput",
                        scalar_json("requests/sec", s->request_throughput));
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        int m = order[i];
        if (!metric_shown(s, m)) continue;
        json_object_set_new(o, bench_record_metric_info[m].tag,
                            stats_json(&s->rec[m], bench_record_metric_info[m].unit));
    }
    json_object_set_new(o, "output_token_throughput",
                        scalar_json("tokens/sec", s->output_token_throughput));
    json_object_set_new(o, "total_token_throughput",
                        scalar_json("tokens/sec", s->total_token_throughput));
    json_object_set_new(o, "request_count", scalar_json("requests", (double)s->request_count));
    if (s->error_request_count)
        json_object_set_new(o, "error_request_count",
                            scalar_json("requests", (double)s->error_request_count));
    json_object_set_new(o, "benchmark_duration", scalar_json("sec", s->benchmark_duration_s));
    if (s->has_goodput) {
        json_object_set_new(o, "good_request_count",
                            scalar_json("requests", (double)s->good_request_count));
        json_object_set_new(o, "goodput", scalar_json("requests/sec", s->goodput));
    }
    json_object_set_new(o, "total_isl", scalar_json("tokens", (double)s->total_isl));
    json_object_set_new(o, "total_osl", scalar_json("tokens", (double)s->total_osl));
    json_object_set_new(o, "total_output_tokens",
                        scalar_json("tokens", (double)s->total_output_tokens));
    if (s->total_reasoning_tokens)
        json_object_set_new(o, "total_reasoning_tokens",
                            scalar_json("tokens", (double)s->total_reasoning_tokens));
    /* Wall-clock ns exceed a double's 53 bits: written as integers to stay exact. */
    json_object_set_new(
        o, "min_request_timestamp",
        json_pack("{s:s, s:I}", "unit", "ns", "avg", (json_int_t)s->min_request_wall_ns));
    json_object_set_new(
        o, "max_response_timestamp",
        json_pack("{s:s, s:I}", "unit", "ns", "avg", (json_int_t)s->max_response_wall_ns));
    json_object_set_new(o, "input_config", bench_config_json(cfg));
    json_object_set_new(o, "was_cancelled", json_boolean(run->was_cancelled));
    json_t *errs = json_array();
    for (size_t i = 0; i < s->n_errors; i++) {
        const bench_error_kind *e = &s->errors[i];
        json_array_append_new(errs, json_pack("{s:{s:o, s:s, s:s}, s:I}", "error_details", "code",
                                              e->code ? json_integer(e->code) : json_null(), "type",
                                              e->type, "message", e->message, "count",
                                              (json_int_t)e->count));
    }
    json_object_set_new(o, "error_summary", errs);
    char t0[64], t1[64];
    iso_time(t0, sizeof t0, run->start_wall_ns);
    iso_time(t1, sizeof t1, run->end_wall_ns);
    json_object_set_new(o, "start_time", json_string(t0));
    json_object_set_new(o, "end_time", json_string(t1));
    int rc =
        json_dump_file(o, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
    json_decref(o);
    if (rc) return MG_ERRF(MG_EIO, "%s: write failed", path);
    return MG_OK;
}

/* JSON string escaping for the JSONL writer (kept out of jansson: it is the one big file). */
static void put_jstr(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = *s;
        if (c == '"' || c == '\\')
            fputc('\\', f), fputc(c, f);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void put_metric(FILE *f, bool *first, const char *tag, double v, const char *unit,
                       bool integer) {
    fprintf(f, "%s\"%s\":{\"value\":", *first ? "" : ",", tag);
    if (integer)
        fprintf(f, "%lld", (long long)v);
    else
        fprintf(f, "%.6f", v);
    fprintf(f, ",\"unit\":\"%s\"}", unit);
    *first = false;
}

mg_status bench_export_jsonl(const char *path, const bench_run *run, const bench_pool *pool) {
    FILE *f = fopen(path, "w");
    if (!f) return MG_ERRF(MG_EIO, "%s: %s", path, strerror(errno));
    static char buf[1 << 20];
    setvbuf(f, buf, _IOFBF, sizeof buf);
    long session = 0;
    for (size_t i = 0; i < run->n_recs; i++) {
        const bench_record *r = &run->recs[i];
        if (r->phase != BENCH_PROFILING) continue;
        int64_t base = r->start_wall_ns - r->start_ns; /* monotonic -> wall */
        fprintf(f,
                "{\"metadata\":{\"session_num\":%ld,\"x_request_id\":\"%s\","
                "\"x_correlation_id\":\"%s\",\"conversation_id\":\"%s\",\"turn_index\":0,"
                "\"request_start_ns\":%lld,",
                session++, r->request_id, r->request_id,
                (size_t)r->conversation < pool->n ? pool->conv[r->conversation].session_id : "",
                (long long)r->start_wall_ns);
        if (r->ack_ns)
            fprintf(f, "\"request_ack_ns\":%lld,", (long long)(r->ack_ns + base));
        else
            fprintf(f, "\"request_ack_ns\":null,");
        fprintf(f,
                "\"request_end_ns\":%lld,\"worker_id\":\"worker_0\","
                "\"record_processor_id\":\"record_processor_0\",\"benchmark_phase\":\"profiling\","
                "\"was_cancelled\":%s,",
                (long long)(r->end_ns + base), r->cancelled ? "true" : "false");
        if (r->cancelled)
            fprintf(f, "\"cancellation_time_ns\":%lld},", (long long)(r->cancel_ns + base));
        else
            fprintf(f, "\"cancellation_time_ns\":null},");
        fprintf(f, "\"metrics\":{");
        bool first = true;
        if (!bench_record_ok(r)) {
            put_metric(f, &first, "error_isl", r->isl, "tokens", true);
            fprintf(f, "},\"error\":{\"code\":");
            if (r->err_code)
                fprintf(f, "%d", r->err_code);
            else
                fprintf(f, "null");
            fprintf(f, ",\"type\":");
            put_jstr(f, r->err_type);
            fprintf(f, ",\"message\":");
            put_jstr(f, r->err_msg);
            fprintf(f, "}}\n");
            continue;
        }
        double x;
        put_metric(f, &first, "input_sequence_length", r->isl, "tokens", true);
        if (bench_metric_ttft(r, &x)) put_metric(f, &first, "time_to_first_token", x, "ms", false);
        if (bench_metric_ttst(r, &x)) put_metric(f, &first, "time_to_second_token", x, "ms", false);
        if (bench_metric_request_latency(r, &x))
            put_metric(f, &first, "request_latency", x, "ms", false);
        if (r->streaming && r->n_resp > 1) {
            fprintf(f, ",\"inter_chunk_latency\":{\"value\":[");
            for (size_t k = 1; k < r->n_resp; k++)
                fprintf(f, "%s%.6f", k > 1 ? "," : "", (r->resp_ns[k] - r->resp_ns[k - 1]) / 1e6);
            fprintf(f, "],\"unit\":\"ms\"}");
        }
        put_metric(f, &first, "output_token_count", r->output_tokens, "tokens", true);
        if (r->reasoning_tokens)
            put_metric(f, &first, "reasoning_token_count", r->reasoning_tokens, "tokens", true);
        put_metric(f, &first, "output_sequence_length", bench_metric_osl(r), "tokens", true);
        if (bench_metric_itl(r, &x)) put_metric(f, &first, "inter_token_latency", x, "ms", false);
        if (bench_metric_tps_user(r, &x))
            put_metric(f, &first, "output_token_throughput_per_user", x, "tokens/sec/user", false);
        fprintf(f, "},\"error\":null}\n");
    }
    if (fclose(f)) return MG_ERRF(MG_EIO, "%s: write failed", path);
    return MG_OK;
}

mg_status bench_export_inputs(const char *path, const bench_pool *pool) {
    FILE *f = fopen(path, "w");
    if (!f) return MG_ERRF(MG_EIO, "%s: %s", path, strerror(errno));
    fprintf(f, "{\n  \"data\": [");
    for (size_t i = 0; i < pool->n; i++) {
        fprintf(f,
                "%s\n    {\n      \"session_id\": \"%s\",\n      \"payloads\": [\n        %s\n"
                "      ]\n    }",
                i ? "," : "", pool->conv[i].session_id, pool->conv[i].body);
    }
    fprintf(f, "\n  ]\n}\n");
    if (fclose(f)) return MG_ERRF(MG_EIO, "%s: write failed", path);
    return MG_OK;
}

mg_status bench_export_deployment(const char *path, const bench_config *cfg) {
    const char *gpus = cfg->total_gpus ? cfg->total_gpus : getenv("JOB_TOTAL_GPUS");
    json_t *o = json_pack("{s:s, s:s, s:s}", "kind",
                          cfg->deployment_kind ? cfg->deployment_kind : "magneto_agg", "model",
                          cfg->model, "total_gpus", gpus ? gpus : "1");
    int rc = json_dump_file(o, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (rc) return MG_ERRF(MG_EIO, "%s: write failed", path);
    return MG_OK;
}

/* ---- plots ---------------------------------------------------------------------------------- */

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static bool write_hist(const char *path, double *v, size_t n) {
    FILE *f = fopen(path, "w");
    if (!f) return false;
    if (n) {
        qsort(v, n, sizeof *v, cmp_d);
        /* Clip the view at p99.5 so one outlier does not squash the distribution. */
        double lo = v[0], hi = v[(size_t)((n - 1) * 0.995)];
        int bins = 50;
        double w = hi > lo ? (hi - lo) / bins : 1;
        size_t counts[51] = {0};
        for (size_t i = 0; i < n; i++) {
            int b = (int)((v[i] - lo) / w);
            if (b > bins) b = bins;
            if (b < 0) b = 0;
            counts[b]++;
        }
        for (int b = 0; b <= bins; b++) fprintf(f, "%.6f %zu\n", lo + (b + 0.5) * w, counts[b]);
    }
    fclose(f);
    return true;
}

static int run_gnuplot(const char *script) {
    pid_t pid;
    char *argv[] = {"gnuplot", (char *)script, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc) return -1;
    int st;
    if (waitpid(pid, &st, 0) < 0) return -2;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0
               ? 0
               : (WIFEXITED(st) && WEXITSTATUS(st) == 127 ? -1 : -2);
}

mg_status bench_export_plots(const char *dir, const bench_run *run) {
    char pdir[4096], path[4200];
    snprintf(pdir, sizeof pdir, "%s/plots", dir);
    mg_status s = bench_mkdirs(pdir);
    if (s != MG_OK) return s;
    size_t n = 0;
    for (size_t i = 0; i < run->n_recs; i++) n += run->recs[i].phase == BENCH_PROFILING;
    double *ttft = malloc((n + 1) * sizeof *ttft), *itl = malloc((n + 1) * sizeof *itl);
    size_t nt = 0, ni = 0;
    int64_t t0 = INT64_MAX, t1 = 0;
    for (size_t i = 0; i < run->n_recs; i++) {
        const bench_record *r = &run->recs[i];
        double x;
        if (r->phase != BENCH_PROFILING || !bench_record_ok(r)) continue;
        if (ttft && bench_metric_ttft(r, &x)) ttft[nt++] = x;
        if (itl && bench_metric_itl(r, &x)) itl[ni++] = x;
        if (r->start_ns < t0) t0 = r->start_ns;
        if (r->n_resp && r->resp_ns[r->n_resp - 1] > t1) t1 = r->resp_ns[r->n_resp - 1];
        if (r->end_ns > t1) t1 = r->end_ns;
    }
    snprintf(path, sizeof path, "%s/ttft_hist.dat", pdir);
    write_hist(path, ttft, nt);
    snprintf(path, sizeof path, "%s/itl_hist.dat", pdir);
    write_hist(path, itl, ni);
    free(ttft);
    free(itl);
    /* Output tokens/s over time: each response carries osl / n_resp tokens. */
    double span = t1 > t0 ? (t1 - t0) / 1e9 : 1;
    double bw = span > 100 ? 1.0 : span / 100.0;
    if (bw <= 0) bw = 0.01;
    size_t nb = (size_t)(span / bw) + 2;
    double *tp = calloc(nb, sizeof *tp);
    if (tp && t0 != INT64_MAX) {
        for (size_t i = 0; i < run->n_recs; i++) {
            const bench_record *r = &run->recs[i];
            if (r->phase != BENCH_PROFILING || !bench_record_ok(r) || !r->n_resp) continue;
            double per = (double)bench_metric_osl(r) / r->n_resp;
            for (size_t k = 0; k < r->n_resp; k++) {
                size_t b = (size_t)((r->resp_ns[k] - t0) / 1e9 / bw);
                if (b < nb) tp[b] += per;
            }
        }
    }
    snprintf(path, sizeof path, "%s/throughput.dat", pdir);
    FILE *f = fopen(path, "w");
    if (f) {
        for (size_t b = 0; tp && b < nb; b++) fprintf(f, "%.3f %.1f\n", (b + 0.5) * bw, tp[b] / bw);
        fclose(f);
    }
    free(tp);
    for (int attempt = 0; attempt < 2; attempt++) {
        snprintf(path, sizeof path, "%s/plots.gp", pdir);
        f = fopen(path, "w");
        if (!f) return MG_ERRF(MG_EIO, "%s: %s", path, strerror(errno));
        fprintf(f,
                "set terminal %s size 900,500\n"
                "cd '%s'\n"
                "set style fill solid 0.6\nset grid\n"
                "set output 'ttft.png'\nset title 'Time to first token'\n"
                "set xlabel 'ms'\nset ylabel 'requests'\n"
                "plot 'ttft_hist.dat' using 1:2 with boxes notitle\n"
                "set output 'itl.png'\nset title 'Inter token latency'\n"
                "plot 'itl_hist.dat' using 1:2 with boxes notitle\n"
                "set output 'throughput.png'\nset title 'Output token throughput'\n"
                "set xlabel 'seconds since the first request'\nset ylabel 'tokens/s'\n"
                "plot 'throughput.dat' using 1:2 with lines lw 2 notitle\n",
                attempt == 0 ? "pngcairo" : "png", pdir);
        fclose(f);
        int rc = run_gnuplot(path);
        if (rc == 0) return MG_OK;
        if (rc == -1) {
            MG_WARN("gnuplot not found: plots skipped (install gnuplot-nox)");
            return MG_ERRF(MG_EUNAVAIL, "gnuplot not found");
        }
    }
    MG_WARN("gnuplot failed: plots skipped (script %s)", path);
    return MG_ERRF(MG_EUNAVAIL, "gnuplot failed");
}

mg_status bench_export_all(const bench_config *cfg, const bench_pool *pool, const bench_run *run,
                           const bench_summary *s) {
    mg_status st = bench_mkdirs(cfg->artifact_dir);
    if (st != MG_OK) return st;
    char path[4200];
#define OUT(name, call)                                                                            \
    do {                                                                                           \
        snprintf(path, sizeof path, "%s/%s", cfg->artifact_dir, name);                             \
        if ((st = (call)) != MG_OK) return st;                                                     \
    } while (0)
    OUT("profile_export_aiperf.csv", bench_export_csv(path, s));
    OUT("profile_export_aiperf.json", bench_export_json(path, cfg, run, s));
    OUT("profile_export.jsonl", bench_export_jsonl(path, run, pool));
    OUT("inputs.json", bench_export_inputs(path, pool));
    OUT("deployment_config.json", bench_export_deployment(path, cfg));
#undef OUT
    if (!cfg->no_plots) bench_export_plots(cfg->artifact_dir, run);
    return MG_OK;
}

void bench_print_summary(FILE *f, const bench_config *cfg, const bench_run *run,
                         const bench_summary *s, double tokenize_s, const char *tokenizer) {
    fprintf(f, "\n%*s\n", 70, "magneto-bench | LLM Metrics");
    fprintf(f, "%-52s %10s %10s %10s %10s %10s %10s %10s\n", "Metric", "avg", "min", "max", "p99",
            "p90", "p50", "std");
    static const int order[] = {BM_TTFT, BM_TTST,     BM_TTFO, BM_REQUEST_LATENCY,
                                BM_ITL,  BM_TPS_USER, BM_OSL,  BM_ISL};
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        int m = order[i];
        if (!metric_shown(s, m)) continue;
        const bench_stats *st = &s->rec[m];
        char name[128];
        row_name(name, sizeof name, bench_record_metric_info[m].header,
                 bench_record_metric_info[m].unit);
        fprintf(f, "%-52s %10.2f %10.2f %10.2f %10.2f %10.2f %10.2f %10.2f\n", name, st->avg,
                st->min, st->max, st->p99, st->p90, st->p50, st->std);
    }
    scalar sc[16];
    int n = scalars(s, sc);
    for (int i = 0; i < n; i++) {
        char name[128];
        row_name(name, sizeof name, sc[i].header, sc[i].unit);
        fprintf(f, "%-52s %10.2f\n", name, sc[i].v);
    }
    if (s->n_errors) {
        fprintf(f, "\nErrors (%zu requests):\n", s->error_request_count);
        for (size_t i = 0; i < s->n_errors; i++)
            fprintf(f, "  %6zu  %d %s: %s\n", s->errors[i].count, s->errors[i].code,
                    s->errors[i].type, s->errors[i].message);
    }
    if (s->dropped_count)
        fprintf(f, "%zu requests were still running at the end of the grace period (dropped)\n",
                s->dropped_count);
    double cpu = run->cpu_user_s + run->cpu_sys_s;
    fprintf(f,
            "\nClient: %llu SSE events, %llu responses parsed in %.2f s (%.0f responses/s), "
            "%.1f MB in, %llu connections, max %d in flight\n"
            "Client CPU: user %.2f s + sys %.2f s = %.2f s (%.0f%% of one core); "
            "re-tokenizing output took %.2f s (tokenizer %s)\n",
            (unsigned long long)run->sse_events, (unsigned long long)run->responses, run->wall_s,
            run->wall_s > 0 ? run->responses / run->wall_s : 0, run->bytes_in / 1e6,
            (unsigned long long)run->connections_opened, run->max_in_flight, run->cpu_user_s,
            run->cpu_sys_s, cpu, run->wall_s > 0 ? 100.0 * cpu / run->wall_s : 0, tokenize_s,
            tokenizer);
    if (run->resent)
        fprintf(f,
                "%llu requests were sent again on a new connection (the server had closed the "
                "kept-alive one)\n",
                (unsigned long long)run->resent);
    fprintf(f, "Artifacts: %s\n", cfg->artifact_dir);
}
