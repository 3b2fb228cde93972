/* test_sysserver.c - the per-process HTTP endpoint, fetched with libcurl over loopback.
 *
 * Starts a sysserver on 127.0.0.1 port 0 with a registry holding the process collector and
 * frontend-style metrics under Dynamo's names, then checks /metrics (content type, exact
 * samples, and `promtool check metrics` exits 0 with no lint output), /health (200 healthy,
 * 503 unhealthy with the callback's details), /live (heartbeat timeout), 404/405, scrapes from
 * several threads while others update, and bind errors that name the address. */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "metrics.h"
#include "status.h"
#include "sysserver.h"

struct resp {
    long code;
    char *body;
    size_t len;
    char ctype[128];
};

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
    struct resp *r = ud;
    char *nb = realloc(r->body, r->len + sz * n + 1);
    if (!nb) return 0;
    memcpy(nb + r->len, p, sz * n);
    r->body = nb;
    r->len += sz * n;
    r->body[r->len] = 0;
    return sz * n;
}

/* GET (or another method) http://127.0.0.1:port path; false when the transfer itself failed. */
static bool fetch(int port, const char *method, const char *path, struct resp *out) {
    memset(out, 0, sizeof *out);
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *c = curl_easy_init();
    if (!c) return false;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "POST") == 0) curl_easy_setopt(c, CURLOPT_POSTFIELDS, "x=1");
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->code);
        char *ct = NULL;
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
        if (ct) snprintf(out->ctype, sizeof out->ctype, "%s", ct);
    } else {
        fprintf(stderr, "curl %s: %s\n", url, curl_easy_strerror(rc));
    }
    curl_easy_cleanup(c);
    if (!out->body) out->body = calloc(1, 1);
    return rc == CURLE_OK;
}

/* Feed text to `promtool check metrics` on stdin; returns its exit status, *out its output. */
static int promtool_check(const char *text, char *out, size_t outcap) {
    char in_path[] = "/tmp/mg_promtool_inXXXXXX";
    int fd = mkstemp(in_path);
    if (fd < 0) return -1;
    size_t len = strlen(text);
    bool ok = write(fd, text, len) == (ssize_t)len;
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s 2>&1", in_path);
    FILE *p = ok ? popen(cmd, "r") : NULL;
    if (!p) {
        unlink(in_path);
        return -1;
    }
    size_t n = fread(out, 1, outcap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    unlink(in_path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static double input_tokens_buckets[8];

struct health_state {
    atomic_bool healthy;
    atomic_int calls;
};

static bool health_cb(void *arg, json_t *details) {
    struct health_state *h = arg;
    atomic_fetch_add(&h->calls, 1);
    bool ok = atomic_load(&h->healthy);
    json_object_set_new(details, "nats", json_string(ok ? "connected" : "disconnected"));
    json_object_set_new(details, "workers", json_integer(ok ? 2 : 0));
    return ok;
}

static double kv_blocks(void *arg) {
    return 4096;
}

struct load {
    mg_counter *req;
    mg_histogram *ttft;
    int port;
    atomic_bool stop;
    int scrapes_ok;
};

static void *updater(void *arg) {
    struct load *l = arg;
    while (!atomic_load(&l->stop)) {
        metrics_counter_inc(l->req);
        metrics_histogram_observe(l->ttft, 0.02);
    }
    return NULL;
}

static void *scraper(void *arg) {
    struct load *l = arg;
    for (int i = 0; i < 20; i++) {
        struct resp r;
        if (fetch(l->port, "GET", "/metrics", &r) && r.code == 200 &&
            strstr(r.body, "magneto_frontend_requests_total{") &&
            strstr(r.body, "process_open_fds "))
            l->scrapes_ok++;
        free(r.body);
    }
    return NULL;
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);

    mg_registry *reg;
    CHECK_OK(metrics_registry_create(&reg));
    CHECK_OK(metrics_process_register(reg));
    mg_metric *requests, *inflight, *ttft, *isl, *kv;
    CHECK_OK(metrics_counter_new(
        reg, "magneto_frontend_requests_total", "Total number of LLM requests processed.",
        MG_LABELS("model", "endpoint", "request_type", "status"), &requests));
    CHECK_OK(metrics_gauge_new(reg, MG_M_FRONTEND_INFLIGHT_REQUESTS,
                               "Number of requests in flight.", MG_LABELS("model"), &inflight));
    CHECK_OK(metrics_histogram_new(reg, MG_M_FRONTEND_TTFT_SECONDS, "Time to first token.",
                                   MG_LABELS("model"), NULL, 0, &ttft));
    CHECK_OK(metrics_buckets_exponential(16, 2, 8, input_tokens_buckets));
    CHECK_OK(metrics_histogram_new(reg, MG_M_FRONTEND_INPUT_TOKENS,
                                   "Input sequence length in tokens.", MG_LABELS("model"),
                                   input_tokens_buckets, 8, &isl));
    CHECK_OK(metrics_gauge_new(reg, MG_M_FRONTEND_MODEL_TOTAL_KV_BLOCKS,
                               "Total KV blocks of the model's workers.", MG_LABELS("model"), &kv));
    mg_counter *ok200, *err500;
    CHECK_OK(metrics_counter_child(
        requests, MG_LABELS("openai/gpt-oss-120b", "chat_completions", "stream", "success"),
        &ok200));
    CHECK_OK(metrics_counter_child(
        requests, MG_LABELS("openai/gpt-oss-120b", "completions", "unary", "error"), &err500));
    mg_gauge *infl, *kvg;
    CHECK_OK(metrics_gauge_child(inflight, MG_LABELS("openai/gpt-oss-120b"), &infl));
    CHECK_OK(metrics_gauge_child(kv, MG_LABELS("odd \"name\"\\\n"), &kvg));
    metrics_gauge_set_fn(kvg, kv_blocks, NULL);
    mg_histogram *t, *in;
    CHECK_OK(metrics_histogram_child(ttft, MG_LABELS("openai/gpt-oss-120b"), &t));
    CHECK_OK(metrics_histogram_child(isl, MG_LABELS("openai/gpt-oss-120b"), &in));
    metrics_counter_add_u64(ok200, 41);
    metrics_counter_inc(ok200);
    metrics_counter_inc(err500);
    metrics_gauge_set(infl, 3);
    metrics_histogram_observe(t, 0.0123);
    metrics_histogram_observe(t, 0.75);
    metrics_histogram_observe(in, 128);
    metrics_histogram_observe(in, 5000);

    /* Every name metrics.h declares, as the type Dynamo gives it, must pass promtool's lint. */
    static const struct {
        const char *name;
        mg_metric_type type;
    } names[] = {
        {MG_M_FRONTEND_QUEUED_REQUESTS, MG_METRIC_GAUGE},
        {MG_M_FRONTEND_DISCONNECTED, MG_METRIC_GAUGE},
        {MG_M_FRONTEND_ITL_SECONDS, MG_METRIC_HISTOGRAM},
        {MG_M_FRONTEND_DURATION_SECONDS, MG_METRIC_HISTOGRAM},
        {MG_M_FRONTEND_OUTPUT_TOKENS, MG_METRIC_HISTOGRAM},
        {MG_M_FRONTEND_OUTPUT_TOKENS_TOTAL, MG_METRIC_COUNTER},
        {MG_M_FRONTEND_CACHED_LENGTH, MG_METRIC_HISTOGRAM},
        {MG_M_FRONTEND_WORKER_ACTIVE_DECODE_BLOCKS, MG_METRIC_GAUGE},
        {MG_M_FRONTEND_WORKER_ACTIVE_PREFILL_TOKENS, MG_METRIC_GAUGE},
        {MG_M_FRONTEND_WORKER_WAITING_REQUESTS, MG_METRIC_GAUGE},
        {MG_M_FRONTEND_ADMISSION_REJECTIONS, MG_METRIC_COUNTER},
        {MG_M_ROUTER_REQUESTS_TOTAL, MG_METRIC_COUNTER},
        {MG_M_ROUTER_TTFT_SECONDS, MG_METRIC_HISTOGRAM},
        {MG_M_ROUTER_ITL_SECONDS, MG_METRIC_HISTOGRAM},
        {MG_M_ROUTER_INPUT_TOKENS, MG_METRIC_HISTOGRAM},
        {MG_M_ROUTER_OUTPUT_TOKENS, MG_METRIC_HISTOGRAM},
        {MG_M_ROUTER_KV_HIT_RATE, MG_METRIC_HISTOGRAM},
        {MG_M_ROUTER_WORKER_REGISTERED, MG_METRIC_GAUGE},
        {MG_M_WORKER_REQUESTS_TOTAL, MG_METRIC_COUNTER},
        {MG_M_WORKER_INFLIGHT_REQUESTS, MG_METRIC_GAUGE},
        {MG_M_WORKER_DURATION_SECONDS, MG_METRIC_HISTOGRAM},
        {MG_M_WORKER_UPTIME_SECONDS, MG_METRIC_GAUGE},
        {MG_M_KVSTATS_ACTIVE_BLOCKS, MG_METRIC_GAUGE},
        {MG_M_KVSTATS_TOTAL_BLOCKS, MG_METRIC_GAUGE},
        {MG_M_KVSTATS_GPU_CACHE_USAGE, MG_METRIC_GAUGE},
        {MG_M_KVSTATS_PREFIX_HIT_RATE, MG_METRIC_GAUGE},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        mg_metric *m = NULL;
        mg_counter *c;
        mg_gauge *g;
        mg_histogram *h;
        const char *const *lv = MG_LABELS("w1");
        switch (names[i].type) {
        case MG_METRIC_COUNTER:
            CHECK_OK(metrics_counter_new(reg, names[i].name, "x.", MG_LABELS("worker_id"), &m));
            if (m) CHECK_OK(metrics_counter_child(m, lv, &c));
            break;
        case MG_METRIC_GAUGE:
            CHECK_OK(metrics_gauge_new(reg, names[i].name, "x.", MG_LABELS("worker_id"), &m));
            if (m) CHECK_OK(metrics_gauge_child(m, lv, &g));
            break;
        case MG_METRIC_HISTOGRAM:
            CHECK_OK(metrics_histogram_new(reg, names[i].name, "x.", MG_LABELS("worker_id"), NULL,
                                           0, &m));
            if (m) CHECK_OK(metrics_histogram_child(m, lv, &h));
            break;
        }
    }

    sysserver_opts opts = {.host = "127.0.0.1",
                           .port = 0,
                           .registry = reg,
                           .component = "frontend",
                           .threads = 2,
                           .live_timeout_ms = 300};
    sysserver *s = NULL;
    CHECK_OK(sysserver_start(&opts, &s));
    if (!s) return check_done();
    int port = sysserver_port(s);
    CHECK_MSG(port > 0 && port < 65536, "port %d", port);

    /* /metrics */
    struct resp r;
    CHECK(fetch(port, "GET", "/metrics", &r));
    CHECK_EQ_INT(r.code, 200);
    CHECK_EQ_STR(r.ctype, MG_METRICS_CONTENT_TYPE);
    CHECK(strstr(r.ctype, "version=0.0.4") != NULL);
    CHECK(strstr(r.body, "magneto_frontend_requests_total{model=\"openai/gpt-oss-120b\","
                         "endpoint=\"chat_completions\",request_type=\"stream\","
                         "status=\"success\"} 42\n") != NULL);
    CHECK(strstr(r.body, "magneto_frontend_inflight_requests{model=\"openai/gpt-oss-120b\"} 3\n"));
    CHECK(strstr(r.body, "magneto_frontend_time_to_first_token_seconds_bucket{model=\"openai/"
                         "gpt-oss-120b\",le=\"0.015\"} 1\n"));
    CHECK(strstr(r.body, "magneto_frontend_time_to_first_token_seconds_count{model=\"openai/"
                         "gpt-oss-120b\"} 2\n"));
    CHECK(strstr(r.body, "magneto_frontend_input_sequence_tokens_bucket{model=\"openai/"
                         "gpt-oss-120b\",le=\"2048\"} 1\n"));
    CHECK(strstr(r.body, "magneto_frontend_model_total_kv_blocks{model=\"odd \\\"name\\\"\\\\"
                         "\\n\"} 4096\n"));
    CHECK(strstr(r.body, "# TYPE process_cpu_seconds_total counter\n"));
    CHECK(strstr(r.body, "process_resident_memory_bytes "));
    CHECK(strstr(r.body, "process_start_time_seconds "));
    CHECK(strstr(r.body, "process_open_fds "));

    char lint[4096];
    int prc = promtool_check(r.body, lint, sizeof lint);
    CHECK_MSG(prc == 0, "promtool exit %d: %s", prc, lint);
    CHECK_MSG(lint[0] == 0, "promtool said: %s", lint);
    /* The check itself must be able to fail: a counter without _total and help is linted. */
    prc = promtool_check("# TYPE bad counter\nbad 1\n", lint, sizeof lint);
    CHECK_MSG(prc != 0 && strstr(lint, "_total"), "promtool accepted a bad counter (%d)", prc);
    free(r.body);

    /* HEAD gives headers without a body. */
    CHECK(fetch(port, "HEAD", "/metrics", &r));
    CHECK_EQ_INT(r.code, 200);
    CHECK_EQ_INT(r.len, 0);
    free(r.body);

    /* /health: healthy without a callback, then as the callback says. */
    CHECK(fetch(port, "GET", "/health", &r));
    CHECK_EQ_INT(r.code, 200);
    CHECK_EQ_STR(r.ctype, "application/json");
    json_error_t jerr;
    json_t *j = json_loads(r.body, 0, &jerr);
    CHECK_MSG(j != NULL, "health body not JSON: %s", r.body);
    CHECK_EQ_STR(json_string_value(json_object_get(j, "status")), "healthy");
    CHECK_EQ_STR(json_string_value(json_object_get(j, "component")), "frontend");
    CHECK(json_is_number(json_object_get(j, "uptime_seconds")));
    CHECK(json_is_object(json_object_get(j, "details")));
    json_decref(j);
    free(r.body);

    struct health_state hs;
    atomic_init(&hs.healthy, true);
    atomic_init(&hs.calls, 0);
    sysserver_set_health(s, health_cb, &hs);
    CHECK(fetch(port, "GET", "/health", &r));
    CHECK_EQ_INT(r.code, 200);
    j = json_loads(r.body, 0, &jerr);
    CHECK_EQ_STR(json_string_value(json_object_get(j, "status")), "healthy");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(j, "details"), "nats")),
                 "connected");
    json_decref(j);
    free(r.body);
    atomic_store(&hs.healthy, false);
    CHECK(fetch(port, "GET", "/health", &r));
    CHECK_EQ_INT(r.code, 503);
    j = json_loads(r.body, 0, &jerr);
    CHECK_EQ_STR(json_string_value(json_object_get(j, "status")), "unhealthy");
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "details"), "workers")), 0);
    json_decref(j);
    free(r.body);
    CHECK_EQ_INT(atomic_load(&hs.calls), 2);

    /* /live: alive after a heartbeat, stalled once the beat is older than 300 ms. */
    sysserver_heartbeat(s);
    CHECK(fetch(port, "GET", "/live", &r));
    CHECK_EQ_INT(r.code, 200);
    CHECK(strstr(r.body, "\"alive\"") != NULL);
    free(r.body);
    usleep(500 * 1000);
    CHECK(fetch(port, "GET", "/live", &r));
    CHECK_EQ_INT(r.code, 503);
    CHECK(strstr(r.body, "\"stalled\"") != NULL);
    free(r.body);
    sysserver_heartbeat(s);
    CHECK(fetch(port, "GET", "/live", &r));
    CHECK_EQ_INT(r.code, 200);
    free(r.body);

    /* Unknown path and method. */
    CHECK(fetch(port, "GET", "/nope", &r));
    CHECK_EQ_INT(r.code, 404);
    free(r.body);
    CHECK(fetch(port, "POST", "/metrics", &r));
    CHECK_EQ_INT(r.code, 405);
    free(r.body);

    /* Scrapes from several threads while others update: every scrape succeeds. */
    struct load l = {.req = ok200, .ttft = t, .port = port};
    atomic_init(&l.stop, false);
    struct load ls[3];
    pthread_t up[2], sc[3];
    for (int i = 0; i < 2; i++) pthread_create(&up[i], NULL, updater, &l);
    for (int i = 0; i < 3; i++) {
        ls[i] = (struct load){.port = port};
        pthread_create(&sc[i], NULL, scraper, &ls[i]);
    }
    for (int i = 0; i < 3; i++) pthread_join(sc[i], NULL);
    atomic_store(&l.stop, true);
    for (int i = 0; i < 2; i++) pthread_join(up[i], NULL);
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(ls[i].scrapes_ok, 20);
    /* Every update landed: +Inf bucket, _count and the samples all agree. */
    CHECK(fetch(port, "GET", "/metrics", &r));
    unsigned long long n = metrics_histogram_count(t);
    char line[256];
    snprintf(line, sizeof line,
             "magneto_frontend_time_to_first_token_seconds_count{model=\"openai/gpt-oss-120b\"} "
             "%llu\n",
             n);
    CHECK_MSG(strstr(r.body, line) != NULL, "missing %s", line);
    CHECK_MSG(metrics_counter_value(ok200) == 42 + (double)(n - 2), "requests %g vs ttft %llu",
              metrics_counter_value(ok200), n);
    prc = promtool_check(r.body, lint, sizeof lint);
    CHECK_MSG(prc == 0 && lint[0] == 0, "promtool exit %d: %s", prc, lint);
    free(r.body);

    /* A port that is taken, and a host that does not resolve, fail with the address named. */
    sysserver *s2 = NULL;
    sysserver_opts taken = {.host = "127.0.0.1", .port = port, .registry = reg};
    CHECK_EQ_INT(sysserver_start(&taken, &s2), MG_EIO);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    CHECK_MSG(strstr(mg_err_msg(), want) != NULL, "error: %s", mg_err_msg());
    sysserver_opts bad = {.host = "no-such-host.invalid", .port = 0, .registry = reg};
    CHECK_EQ_INT(sysserver_start(&bad, &s2), MG_EINVAL);
    CHECK(strstr(mg_err_msg(), "no-such-host.invalid") != NULL);
    sysserver_opts badport = {.host = "127.0.0.1", .port = 70000, .registry = reg};
    CHECK_EQ_INT(sysserver_start(&badport, &s2), MG_EINVAL);

    /* Stopping frees the port: a new server can bind it at once. This one takes its address
     * from a config table built with SYSSERVER_CFG_ROWS, as the binaries do. */
    sysserver_stop(s);
    char *cfg_host = NULL;
    int64_t cfg_port = -1;
    mg_cfg_opt rows[] = {SYSSERVER_CFG_ROWS(&cfg_host, &cfg_port, "8081")};
    char port_arg[32];
    snprintf(port_arg, sizeof port_arg, "--system-port=%d", port);
    char *bad_argv[] = {"prog", "--system-port=70000", NULL};
    CHECK_EQ_INT(mg_cfg_parse(rows, 2, 2, bad_argv, "prog", NULL), MG_EINVAL);
    mg_cfg_free(rows, 2); /* the table owns what the failed parse set */
    char *argv[] = {"prog", "--system-host", "127.0.0.1", port_arg, NULL};
    CHECK_OK(mg_cfg_parse(rows, 2, 4, argv, "prog", NULL));
    CHECK_EQ_STR(cfg_host, "127.0.0.1");
    CHECK_EQ_INT(cfg_port, port);
    sysserver_opts from_cfg = {.host = cfg_host, .port = (int)cfg_port, .registry = reg};
    CHECK_OK(sysserver_start(&from_cfg, &s2));
    mg_cfg_free(rows, 2);
    if (s2) {
        CHECK_EQ_INT(sysserver_port(s2), port);
        CHECK(fetch(port, "GET", "/live", &r)); /* live_timeout_ms 0: always alive */
        CHECK_EQ_INT(r.code, 200);
        free(r.body);
        sysserver_stop(s2);
    }
    sysserver_stop(NULL);

    metrics_registry_destroy(reg);
    curl_global_cleanup();
    return check_done();
}
