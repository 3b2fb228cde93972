/* test_bench_e2e.c - magneto-bench against magneto-sse-server on loopback: every artifact parsed
 * and every key checked, timings against the server's set pace, warmup outside the duration
 * window, injected faults (HTTP 500, reset, malformed SSE, early close) recorded as errors with
 * the right counts, request rate and cancellation, fixed-schedule traces, the grace period,
 * an unreachable server. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static char g_dir[256];

typedef struct server {
    pid_t pid;
    int port;
} server;

static server start_server(const char *args) {
    server s = {0, 0};
    int p[2];
    if (pipe(p)) return s;
    char line[512];
    snprintf(line, sizeof line, "exec %s %s", MG_SSE_BIN, args);
    s.pid = fork();
    if (s.pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execl("/bin/sh", "sh", "-c", line, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    FILE *f = fdopen(p[0], "r");
    if (f && fgets(line, sizeof line, f)) sscanf(line, "PORT %d", &s.port);
    if (f) fclose(f);
    return s;
}

static void stop_server(server *s) {
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
    }
    s->pid = 0;
}

/* Run magneto-bench with args (a format string); returns its exit status, -1 on timeout. */
static int run_bench(double timeout_s, const char *fmt, ...) {
    char args[4096], cmd[4600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "exec %s profile --ui none --tokenizer words %s >>%s/bench.log 2>&1",
             MG_BENCH_BIN, args, g_dir);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec + (t.tv_nsec - t0.tv_nsec) / 1e9 > timeout_s) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return -1;
        }
        usleep(10000);
    }
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc(n + 1);
    if (fread(s, 1, n, f) != (size_t)n) n = 0;
    s[n] = 0;
    fclose(f);
    return s;
}

static json_t *load_json(const char *dir, const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    json_error_t e;
    json_t *j = json_load_file(p, 0, &e);
    CHECK_MSG(j != NULL, "%s: %s", p, e.text);
    return j;
}

/* Every line of profile_export.jsonl, as an array. */
static json_t *load_jsonl(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/profile_export.jsonl", dir);
    FILE *f = fopen(p, "r");
    CHECK_MSG(f != NULL, "%s missing", p);
    json_t *arr = json_array();
    if (!f) return arr;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t e;
        json_t *j = json_loads(line, 0, &e);
        CHECK_MSG(j != NULL, "jsonl line: %s", e.text);
        if (j) json_array_append_new(arr, j);
    }
    free(line);
    fclose(f);
    return arr;
}

static const char *STAT_KEYS[] = {"unit", "avg", "p1",  "p5",  "p10", "p25", "p50",   "p75",
                                  "p90",  "p95", "p99", "min", "max", "std", "count", "sum"};

static void check_stat_metric(json_t *o, const char *tag, const char *unit) {
    json_t *m = json_object_get(o, tag);
    CHECK_MSG(json_is_object(m), "%s missing", tag);
    if (!m) return;
    CHECK_EQ_INT(json_object_size(m), 16);
    for (size_t i = 0; i < 16; i++)
        CHECK_MSG(json_object_get(m, STAT_KEYS[i]) != NULL, "%s.%s missing", tag, STAT_KEYS[i]);
    CHECK_EQ_STR(json_string_value(json_object_get(m, "unit")), unit);
}

static void check_scalar(json_t *o, const char *tag, const char *unit) {
    json_t *m = json_object_get(o, tag);
    CHECK_MSG(json_is_object(m) && json_object_size(m) == 2, "%s: not {unit, avg}", tag);
    if (!m) return;
    CHECK_EQ_STR(json_string_value(json_object_get(m, "unit")), unit);
    CHECK(json_is_number(json_object_get(m, "avg")));
}

static double avg(json_t *o, const char *tag) {
    return json_number_value(json_object_get(json_object_get(o, tag), "avg"));
}

static int error_count(json_t *o, const char *type) {
    json_t *es = json_object_get(o, "error_summary"), *e;
    size_t i;
    int n = 0;
    json_array_foreach(es, i, e) {
        json_t *d = json_object_get(e, "error_details");
        if (strcmp(json_string_value(json_object_get(d, "type")), type) == 0)
            n += json_integer_value(json_object_get(e, "count"));
    }
    return n;
}

/* The CSV: two sections, the stats header, %.2f numbers, the scalar rows. Returns the value of
 * the "Request Count" row. */
static double check_csv(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/profile_export_aiperf.csv", dir);
    char *s = slurp(p);
    CHECK_MSG(s != NULL, "%s missing", p);
    if (!s) return -1;
    static const char hdr[] = "Metric,avg,min,max,p1,p5,p10,p25,p50,p75,p90,p95,p99,std\n";
    CHECK(strncmp(s, hdr, sizeof hdr - 1) == 0);
    char *blank = strstr(s, "\n\nMetric,Value\n");
    CHECK(blank != NULL);
    double count = -1;
    int section = 0, rows = 0;
    for (char *save, *line = strtok_r(s, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "Metric,", 7) == 0) {
            section++;
            continue;
        }
        int commas = 0;
        for (char *q = line; *q; q++) commas += *q == ',';
        CHECK_MSG(commas == (section == 1 ? 13 : 1), "row '%s'", line);
        char *c = strchr(line, ',');
        while (c) { /* each value: digits, a point, exactly two decimals */
            char *next = strchr(c + 1, ',');
            size_t len = next ? (size_t)(next - c - 1) : strlen(c + 1);
            CHECK_MSG(len >= 4 && c[1 + len - 3] == '.', "value in '%s'", line);
            c = next;
        }
        if (strncmp(line, "Request Count,", 14) == 0) count = atof(line + 14);
        rows++;
    }
    CHECK_EQ_INT(section, 2);
    CHECK(rows >= 8);
    free(s);
    return count;
}

static void test_streaming_artifacts(void) {
    server s = start_server("--ttft-ms 30 --itl-ms 3 --batch 1");
    CHECK(s.port > 0);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/stream", g_dir);
    int rc = run_bench(60,
                       "-m openai/gpt-oss-120b -u http://127.0.0.1:%d --endpoint-type chat "
                       "--streaming --isl 64 --osl 20 --concurrency 4 --request-count 12 "
                       "--warmup-request-count 4 --random-seed 5 --extra-inputs "
                       "'{\"ignore_eos\":true}' --extra-inputs min_tokens:20 --artifact-dir %s "
                       "--total-gpus 4 --deployment-kind dynamo_agg "
                       "--goodput 'time_to_first_token:10000 inter_token_latency:1000'",
                       s.port, dir);
    stop_server(&s);
    CHECK_EQ_INT(rc, 0);
    CHECK_NEAR(check_csv(dir), 12, 0);

    json_t *o = load_json(dir, "profile_export_aiperf.json");
    if (o) {
        check_stat_metric(o, "time_to_first_token", "ms");
        check_stat_metric(o, "time_to_second_token", "ms");
        check_stat_metric(o, "request_latency", "ms");
        check_stat_metric(o, "inter_token_latency", "ms");
        check_stat_metric(o, "output_token_throughput_per_user", "tokens/sec/user");
        check_stat_metric(o, "output_sequence_length", "tokens");
        check_stat_metric(o, "input_sequence_length", "tokens");
        check_scalar(o, "request_throughput", "requests/sec");
        check_scalar(o, "output_token_throughput", "tokens/sec");
        check_scalar(o, "total_token_throughput", "tokens/sec");
        check_scalar(o, "request_count", "requests");
        check_scalar(o, "benchmark_duration", "sec");
        check_scalar(o, "total_isl", "tokens");
        check_scalar(o, "total_osl", "tokens");
        check_scalar(o, "total_output_tokens", "tokens");
        check_scalar(o, "min_request_timestamp", "ns");
        check_scalar(o, "max_response_timestamp", "ns");
        CHECK(json_is_object(json_object_get(o, "input_config")));
        CHECK(json_is_false(json_object_get(o, "was_cancelled")));
        CHECK(json_is_array(json_object_get(o, "error_summary")));
        CHECK_EQ_INT(json_array_size(json_object_get(o, "error_summary")), 0);
        CHECK(json_is_string(json_object_get(o, "start_time")));
        CHECK(json_is_string(json_object_get(o, "end_time")));
        CHECK(json_object_get(o, "error_request_count") == NULL);
        check_scalar(o, "good_request_count", "requests");
        check_scalar(o, "goodput", "requests/sec");
        CHECK_NEAR(avg(o, "good_request_count"), 12, 0);
        CHECK_EQ_INT(json_object_size(o), 24);
        /* values against the server's pace: TTFT >= 30 ms, ITL ~3 ms, OSL 20 by re-counting */
        CHECK(avg(o, "time_to_first_token") >= 30 && avg(o, "time_to_first_token") < 300);
        CHECK_MSG(avg(o, "inter_token_latency") >= 2.9 && avg(o, "inter_token_latency") < 20,
                  "itl %f", avg(o, "inter_token_latency"));
        CHECK_NEAR(avg(o, "output_sequence_length"), 20, 0);
        CHECK_NEAR(avg(o, "input_sequence_length"), 64, 0);
        CHECK_NEAR(avg(o, "request_count"), 12, 0);
        CHECK_NEAR(avg(o, "total_osl"), 240, 0);
        double dur = avg(o, "benchmark_duration");
        CHECK_NEAR(avg(o, "output_token_throughput"), 240 / dur, 1e-6 * 240 / dur);
        json_t *ic = json_object_get(o, "input_config");
        CHECK(json_is_true(
            json_object_get(json_object_get(json_object_get(ic, "input"), "extra"), "ignore_eos")));

        /* the JSONL: 12 profiling records (no warmup), every key; the duration window is the
         * records' first start to last response */
        json_t *recs = load_jsonl(dir);
        CHECK_EQ_INT(json_array_size(recs), 12);
        static const char *meta_keys[] = {
            "session_num",         "x_request_id",        "x_correlation_id", "conversation_id",
            "turn_index",          "request_start_ns",    "request_ack_ns",   "request_end_ns",
            "worker_id",           "record_processor_id", "benchmark_phase",  "was_cancelled",
            "cancellation_time_ns"};
        static const char *metric_keys[] = {
            "input_sequence_length",  "time_to_first_token", "time_to_second_token",
            "request_latency",        "inter_chunk_latency", "output_token_count",
            "output_sequence_length", "inter_token_latency", "output_token_throughput_per_user"};
        double first = INFINITY, last = 0;
        json_int_t first_ns = INT64_MAX;
        size_t i;
        json_t *r;
        json_array_foreach(recs, i, r) {
            CHECK_EQ_INT(json_object_size(r), 3);
            json_t *md = json_object_get(r, "metadata"), *mt = json_object_get(r, "metrics");
            CHECK(json_is_null(json_object_get(r, "error")));
            CHECK_EQ_INT(json_object_size(md), 13);
            for (size_t k = 0; k < 13; k++)
                CHECK_MSG(json_object_get(md, meta_keys[k]) != NULL, "metadata.%s", meta_keys[k]);
            CHECK_EQ_STR(json_string_value(json_object_get(md, "benchmark_phase")), "profiling");
            CHECK_EQ_INT(json_object_size(mt), 9);
            for (size_t k = 0; k < 9; k++) {
                json_t *m = json_object_get(mt, metric_keys[k]);
                CHECK_MSG(m && json_object_get(m, "value") && json_object_get(m, "unit"),
                          "metrics.%s", metric_keys[k]);
            }
            CHECK_EQ_INT(json_array_size(
                             json_object_get(json_object_get(mt, "inter_chunk_latency"), "value")),
                         19);
            double start = json_number_value(json_object_get(md, "request_start_ns"));
            double lat =
                json_number_value(json_object_get(json_object_get(mt, "request_latency"), "value"));
            json_int_t sns = json_integer_value(json_object_get(md, "request_start_ns"));
            if (sns < first_ns) first_ns = sns;
            if (start < first) first = start;
            if (start + lat * 1e6 > last) last = start + lat * 1e6;
        }
        CHECK_NEAR(dur, (last - first) / 1e9, 2e-6);
        CHECK_EQ_INT(
            json_integer_value(json_object_get(json_object_get(o, "min_request_timestamp"), "avg")),
            first_ns);
        json_decref(recs);
        json_decref(o);
    }
    o = load_json(dir, "inputs.json");
    if (o) {
        json_t *data = json_object_get(o, "data");
        CHECK_EQ_INT(json_object_size(o), 1);
        CHECK_EQ_INT(json_array_size(data), 100); /* --conversation-num default */
        json_t *e = json_array_get(data, 0);
        CHECK_EQ_INT(json_object_size(e), 2);
        CHECK_EQ_INT(strlen(json_string_value(json_object_get(e, "session_id"))), 36);
        json_t *b = json_array_get(json_object_get(e, "payloads"), 0);
        CHECK(json_is_array(json_object_get(b, "messages")));
        CHECK_EQ_STR(json_string_value(json_object_get(b, "model")), "openai/gpt-oss-120b");
        CHECK(json_is_true(json_object_get(b, "stream")));
        CHECK_EQ_INT(json_integer_value(json_object_get(b, "max_completion_tokens")), 20);
        CHECK_EQ_INT(json_integer_value(json_object_get(b, "min_tokens")), 20);
        CHECK(json_is_true(json_object_get(b, "ignore_eos")));
        json_decref(o);
    }
    /* each record's conversation_id is a session of inputs.json */
    o = load_json(dir, "inputs.json");
    json_t *recs = load_jsonl(dir);
    if (o) {
        size_t i, k;
        json_t *r, *e;
        json_array_foreach(recs, i, r) {
            const char *cid = json_string_value(
                json_object_get(json_object_get(r, "metadata"), "conversation_id"));
            bool found = false;
            json_array_foreach(json_object_get(o, "data"), k, e) {
                if (cid && !strcmp(cid, json_string_value(json_object_get(e, "session_id"))))
                    found = true;
            }
            CHECK_MSG(found, "conversation_id %s not in inputs.json", cid ? cid : "(null)");
        }
        json_decref(o);
    }
    json_decref(recs);
    o = load_json(dir, "deployment_config.json");
    if (o) {
        CHECK_EQ_STR(json_string_value(json_object_get(o, "kind")), "dynamo_agg");
        CHECK_EQ_STR(json_string_value(json_object_get(o, "model")), "openai/gpt-oss-120b");
        CHECK_EQ_STR(json_string_value(json_object_get(o, "total_gpus")), "4");
        json_decref(o);
    }
    if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
        static const char *pngs[] = {"ttft.png", "itl.png", "throughput.png"};
        for (int k = 0; k < 3; k++) {
            char p[512];
            struct stat st;
            snprintf(p, sizeof p, "%s/plots/%s", dir, pngs[k]);
            CHECK_MSG(stat(p, &st) == 0 && st.st_size > 1000, "%s", p);
        }
    }
}

static void test_faults(void) {
    server s = start_server("--fault-500 5 --fault-reset 7 --fault-malformed 11 --fault-close 13 "
                            "--batch 4");
    char dir[300];
    snprintf(dir, sizeof dir, "%s/faults", g_dir);
    int rc = run_bench(60,
                       "-m m -u 127.0.0.1:%d --streaming --isl 16 --osl 40 --concurrency 4 "
                       "--request-count 60 --artifact-dir %s --no-plots",
                       s.port, dir);
    stop_server(&s);
    CHECK_EQ_INT(rc, 0);
    /* The server numbers requests 1..60 and fails by the first rule that matches. */
    int n500 = 0, nreset = 0, nbad = 0, nclose = 0;
    for (int n = 1; n <= 60; n++) {
        if (n % 5 == 0)
            n500++;
        else if (n % 7 == 0)
            nreset++;
        else if (n % 11 == 0)
            nbad++;
        else if (n % 13 == 0)
            nclose++;
    }
    int nerr = n500 + nreset + nbad + nclose;
    json_t *o = load_json(dir, "profile_export_aiperf.json");
    if (!o) return;
    CHECK_NEAR(avg(o, "request_count"), 60 - nerr, 0);
    CHECK_NEAR(avg(o, "error_request_count"), nerr, 0);
    CHECK_EQ_INT(error_count(o, "Internal Server Error"), n500);
    CHECK_EQ_INT(error_count(o, "ClientConnectionError"), nreset);
    CHECK_EQ_INT(error_count(o, "SSEParseError"), nbad);
    CHECK_EQ_INT(error_count(o, "ServerDisconnectedError"), nclose);
    json_t *es = json_object_get(o, "error_summary"), *e;
    size_t i;
    json_array_foreach(es, i, e) {
        json_t *d = json_object_get(e, "error_details");
        CHECK_EQ_INT(json_object_size(d), 3);
        CHECK(json_object_get(d, "code") && json_object_get(d, "message"));
        if (!strcmp(json_string_value(json_object_get(d, "type")), "Internal Server Error"))
            CHECK_EQ_INT(json_integer_value(json_object_get(d, "code")), 500);
    }
    /* latency statistics come from the successes only: OSL is exactly 40 everywhere */
    CHECK_NEAR(
        json_number_value(json_object_get(json_object_get(o, "output_sequence_length"), "min")), 40,
        0);
    CHECK_EQ_INT(
        json_integer_value(json_object_get(json_object_get(o, "request_latency"), "count")),
        60 - nerr);
    json_decref(o);
    json_t *recs = load_jsonl(dir);
    CHECK_EQ_INT(json_array_size(recs), 60);
    int with_error = 0;
    json_t *r;
    json_array_foreach(recs, i, r) {
        json_t *err = json_object_get(r, "error");
        if (json_is_null(err)) continue;
        with_error++;
        CHECK_EQ_INT(json_object_size(err), 3);
        CHECK(json_object_get(json_object_get(r, "metrics"), "error_isl") != NULL);
    }
    CHECK_EQ_INT(with_error, nerr);
    json_decref(recs);
    CHECK_NEAR(check_csv(dir), 60 - nerr, 0);
}

/* A server that closes kept-alive connections unannounced: a request sent on such a connection
 * before the close was seen is sent again on a new one, so no request fails. */
static void test_keepalive_close(void) {
    server s = start_server("--conn-max-requests 2 --batch 4");
    char dir[300];
    snprintf(dir, sizeof dir, "%s/keepalive", g_dir);
    int rc = run_bench(60,
                       "-m m -u 127.0.0.1:%d --streaming --isl 8 --osl 10 --concurrency 4 "
                       "--request-count 200 --artifact-dir %s --no-plots",
                       s.port, dir);
    stop_server(&s);
    CHECK_EQ_INT(rc, 0);
    json_t *o = load_json(dir, "profile_export_aiperf.json");
    if (!o) return;
    CHECK_NEAR(avg(o, "request_count"), 200, 0);
    CHECK_EQ_INT(json_array_size(json_object_get(o, "error_summary")), 0);
    json_decref(o);
    /* the resend path was taken (the summary says how often) */
    char p[400];
    snprintf(p, sizeof p, "%s/bench.log", g_dir);
    char *log = slurp(p);
    CHECK(log && strstr(log, "were sent again on a new connection"));
    free(log);
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* 4,096 streams at once: every request in flight together (each lasts over 1 s: the first
 * token comes after 1 s), none fails. */
static void test_many_streams(void) {
    server s = start_server("--ttft-ms 1000 --itl-ms 20 --batch 1");
    char dir[300];
    snprintf(dir, sizeof dir, "%s/many", g_dir);
    int rc = run_bench(120,
                       "-m m -u 127.0.0.1:%d --streaming --isl 8 --osl 10 --concurrency 4096 "
                       "--request-count 4096 --artifact-dir %s --no-plots",
                       s.port, dir);
    stop_server(&s);
    CHECK_EQ_INT(rc, 0);
    json_t *recs = load_jsonl(dir);
    size_t n = json_array_size(recs), i;
    CHECK_EQ_INT(n, 4096);
    long long *starts = malloc(n * sizeof *starts), *ends = malloc(n * sizeof *ends);
    int errors = 0;
    json_t *r;
    json_array_foreach(recs, i, r) {
        json_t *md = json_object_get(r, "metadata");
        starts[i] = json_integer_value(json_object_get(md, "request_start_ns"));
        ends[i] = json_integer_value(json_object_get(md, "request_end_ns"));
        errors += !json_is_null(json_object_get(r, "error"));
    }
    CHECK_EQ_INT(errors, 0);
    qsort(starts, n, sizeof *starts, cmp_ll);
    qsort(ends, n, sizeof *ends, cmp_ll);
    size_t a = 0, b = 0;
    int cur = 0, peak = 0;
    while (a < n) { /* sweep: a start before the next end raises the count */
        if (starts[a] < ends[b]) {
            if (++cur > peak) peak = cur;
            a++;
        } else {
            cur--;
            b++;
        }
    }
    CHECK_MSG(peak == 4096, "peak in flight %d", peak);
    free(starts);
    free(ends);
    json_decref(recs);
}

static void test_completions_nonstreaming(void) {
    server s = start_server("--ttft-ms 5");
    char dir[300];
    snprintf(dir, sizeof dir, "%s/completions", g_dir);
    int rc = run_bench(60,
                       "-m m -u 127.0.0.1:%d --endpoint-type completions --isl 32 --osl 25 "
                       "--concurrency 2 --request-count 6 --artifact-dir %s --no-plots "
                       "--conversation-num 3",
                       s.port, dir);
    stop_server(&s);
    CHECK_EQ_INT(rc, 0);
    json_t *o = load_json(dir, "profile_export_aiperf.json");
    if (!o) return;
    CHECK(json_object_get(o, "time_to_first_token") == NULL); /* streaming only */
    check_stat_metric(o, "request_latency", "ms");
    CHECK(avg(o, "request_latency") >= 5);
    CHECK_NEAR(avg(o, "output_sequence_length"), 25, 0);
    CHECK_NEAR(avg(o, "request_count"), 6, 0);
    json_decref(o);
    o = load_json(dir, "inputs.json");
    if (o) {
        json_t *b = json_array_get(
            json_object_get(json_array_get(json_object_get(o, "data"), 0), "payloads"), 0);
        CHECK(json_is_array(json_object_get(b, "prompt")));
        CHECK_EQ_INT(json_integer_value(json_object_get(b, "max_tokens")), 25);
        CHECK(json_is_false(json_object_get(b, "stream")));
        CHECK_EQ_INT(json_array_size(json_object_get(o, "data")), 3);
        json_decref(o);
    }
}

static void test_rate_cancel(void) {
    server s = start_server("--itl-ms 2 --batch 1");
    char dir[300];
    snprintf(dir, sizeof dir, "%s/rate", g_dir);
    int rc = run_bench(60,
                       "-m m -u 127.0.0.1:%d --streaming --isl 16 --osl 30 --request-rate 100 "
                       "--request-rate-mode constant --benchmark-duration 1 "
                       "--benchmark-grace-period 2 --request-cancellation-rate 30 "
                       "--request-cancellation-delay 0.01 --artifact-dir %s --no-plots",
                       s.port, dir);
    stop_server(&s);
    CHECK_EQ_INT(rc, 0);
    json_t *o = load_json(dir, "profile_export_aiperf.json");
    if (!o) return;
    int cancelled = error_count(o, "RequestCancellationError");
    double ok = avg(o, "request_count");
    CHECK_MSG(cancelled >= 12 && cancelled <= 50, "cancelled %d", cancelled);
    CHECK_MSG(ok + cancelled >= 85 && ok + cancelled <= 102, "ok %g + cancelled %d", ok, cancelled);
    json_t *es = json_object_get(o, "error_summary");
    CHECK_EQ_INT(json_integer_value(json_object_get(
                     json_object_get(json_array_get(es, 0), "error_details"), "code")),
                 499);
    json_decref(o);
    /* constant arrivals: starts 10 ms apart. The median gap, not the mean: one stall of the
     * loaded machine near the end (the schedule then catches up in a burst) moves the mean but
     * not the median, and Poisson arrivals would give ln 2 * 10 ms. */
    json_t *recs = load_jsonl(dir);
    size_t n = json_array_size(recs), i;
    long long *starts = calloc(n ? n : 1, sizeof *starts);
    int was_cancelled = 0;
    json_t *r;
    json_array_foreach(recs, i, r) {
        json_t *md = json_object_get(r, "metadata");
        starts[i] = (long long)json_number_value(json_object_get(md, "request_start_ns"));
        was_cancelled += json_is_true(json_object_get(md, "was_cancelled"));
    }
    CHECK_EQ_INT(was_cancelled, cancelled);
    if (n > 2) {
        qsort(starts, n, sizeof *starts, cmp_ll);
        for (i = 0; i + 1 < n; i++) starts[i] = starts[i + 1] - starts[i];
        qsort(starts, n - 1, sizeof *starts, cmp_ll);
        double median_ms = starts[(n - 1) / 2] / 1e6;
        CHECK_MSG(median_ms > 9 && median_ms < 11, "median interval %.3f ms", median_ms);
    }
    free(starts);
    json_decref(recs);
}

/* Poisson arrivals capped by concurrency: never more than the cap in flight at once. */
static void test_rate_capped(void) {
    server s = start_server("--itl-ms 5 --batch 1");
    char dir[300];
    snprintf(dir, sizeof dir, "%s/capped", g_dir);
    int rc = run_bench(60,
                       "-m m -u 127.0.0.1:%d --streaming --isl 8 --osl 8 --request-rate 400 "
                       "--concurrency 3 --request-count 30 --artifact-dir %s --no-plots",
                       s.port, dir);
    stop_server(&s);
    CHECK_EQ_INT(rc, 0);
    json_t *recs = load_jsonl(dir);
    size_t n = json_array_size(recs), i;
    CHECK_EQ_INT(n, 30);
    int max_overlap = 0;
    json_t *r;
    json_array_foreach(recs, i, r) {
        json_t *md = json_object_get(r, "metadata");
        json_int_t t = json_integer_value(json_object_get(md, "request_start_ns"));
        int overlap = 0; /* requests running at r's start, r included */
        size_t k;
        json_t *q;
        json_array_foreach(recs, k, q) {
            json_t *mq = json_object_get(q, "metadata");
            json_int_t a = json_integer_value(json_object_get(mq, "request_start_ns"));
            json_int_t b = json_integer_value(json_object_get(mq, "request_end_ns"));
            overlap += a <= t && t < b;
        }
        if (overlap > max_overlap) max_overlap = overlap;
    }
    CHECK_MSG(max_overlap >= 2 && max_overlap <= 3, "max overlap %d", max_overlap);
    json_decref(recs);
}

static void test_trace_fixed_schedule(void) {
    char trace[300];
    snprintf(trace, sizeof trace, "%s/trace.jsonl", g_dir);
    FILE *f = fopen(trace, "w");
    fprintf(
        f,
        "{\"timestamp\": 1000, \"input_length\": 20, \"output_length\": 3, \"hash_ids\": [1, 2, "
        "3]}\n"
        "{\"timestamp\": 1200, \"input_length\": 12, \"output_length\": 4, \"hash_ids\": [1, 5]}\n"
        "{\"timestamp\": 1400, \"input_length\": 9, \"output_length\": 5}\n"
        "{\"timestamp\": 1600, \"input_length\": 16, \"output_length\": 6, \"hash_ids\": [7, "
        "8]}\n");
    fclose(f);
    server s = start_server("--batch 1");
    /* --fixed-schedule given, then left to the timestamps (AIPerf switches it on by itself) */
    for (int pass = 0; pass < 2; pass++) {
        char dir[300];
        snprintf(dir, sizeof dir, "%s/trace%d", g_dir, pass);
        int rc = run_bench(60,
                           "-m m -u 127.0.0.1:%d --streaming --input-file %s --custom-dataset-type "
                           "mooncake_trace %s --fixed-schedule-auto-offset "
                           "--isl-block-size 8 --artifact-dir %s --no-plots",
                           s.port, trace, pass == 0 ? "--fixed-schedule" : "", dir);
        CHECK_EQ_INT(rc, 0);
        json_t *recs = load_jsonl(dir);
        CHECK_EQ_INT(json_array_size(recs), 4);
        if (json_array_size(recs) == 4) {
            double t0 = json_number_value(json_object_get(
                json_object_get(json_array_get(recs, 0), "metadata"), "request_start_ns"));
            static const int isl[] = {20, 12, 9, 16}, osl[] = {3, 4, 5, 6};
            for (int i = 0; i < 4; i++) {
                json_t *r = json_array_get(recs, i);
                double t = json_number_value(
                    json_object_get(json_object_get(r, "metadata"), "request_start_ns"));
                double off_ms = (t - t0) / 1e6;
                CHECK_MSG(fabs(off_ms - 200 * i) < 100, "pass %d: request %d at %.1f ms", pass, i,
                          off_ms);
                json_t *mt = json_object_get(r, "metrics");
                CHECK_EQ_INT(json_integer_value(json_object_get(
                                 json_object_get(mt, "input_sequence_length"), "value")),
                             isl[i]);
                CHECK_EQ_INT(json_integer_value(json_object_get(
                                 json_object_get(mt, "output_sequence_length"), "value")),
                             osl[i]);
            }
        }
        json_decref(recs);
    }
    stop_server(&s);
}

static void test_grace_and_unreachable(void) {
    /* 40 tokens at 50 ms each take 2 s; the duration is 0.3 s and the grace 0.2 s: the run ends
     * near 0.5 s with everything in flight dropped, and valid (empty) artifacts. */
    server s = start_server("--itl-ms 50 --batch 1");
    char dir[300];
    snprintf(dir, sizeof dir, "%s/grace", g_dir);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = run_bench(60,
                       "-m m -u 127.0.0.1:%d --streaming --isl 8 --osl 40 --concurrency 3 "
                       "--benchmark-duration 0.3 --benchmark-grace-period 0.2 --artifact-dir %s "
                       "--no-plots",
                       s.port, dir);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    stop_server(&s);
    CHECK_EQ_INT(rc, 0);
    double took = t1.tv_sec - t0.tv_sec + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK_MSG(took < 1.9, "took %.2f s", took);
    json_t *o = load_json(dir, "profile_export_aiperf.json");
    if (o) {
        CHECK_NEAR(avg(o, "request_count"), 0, 0);
        CHECK_EQ_INT(json_array_size(json_object_get(o, "error_summary")), 0);
        json_decref(o);
    }
    /* nothing listens on a port just freed: every request a ClientConnectorError, no crash */
    s = start_server("");
    int port = s.port;
    stop_server(&s);
    snprintf(dir, sizeof dir, "%s/unreachable", g_dir);
    rc = run_bench(60,
                   "-m m -u 127.0.0.1:%d --streaming --concurrency 2 --request-count 5 "
                   "--artifact-dir %s --no-plots",
                   port, dir);
    CHECK_EQ_INT(rc, 0);
    o = load_json(dir, "profile_export_aiperf.json");
    if (o) {
        CHECK_EQ_INT(error_count(o, "ClientConnectorError"), 5);
        CHECK_NEAR(avg(o, "request_count"), 0, 0);
        json_decref(o);
    }
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/test_bench_e2e.XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    test_streaming_artifacts();
    test_faults();
    test_keepalive_close();
    test_many_streams();
    test_completions_nonstreaming();
    test_rate_cancel();
    test_rate_capped();
    test_trace_fixed_schedule();
    test_grace_and_unreachable();
    int rc = check_done();
    if (rc == 0) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
        if (system(cmd)) fprintf(stderr, "could not remove %s\n", g_dir);
    } else {
        fprintf(stderr, "artifacts and bench.log kept in %s\n", g_dir);
    }
    return rc;
}
