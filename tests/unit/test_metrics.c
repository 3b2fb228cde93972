/* test_metrics.c - the Prometheus registry: exact exposition text, escaping, cumulative histogram
 * buckets, number formatting, errors on bad declarations, hidden children, gauge callbacks, the
 * process collector, and exact totals when several threads update (and render) at once. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "check.h"
#include "metrics.h"
#include "status.h"

static char *render(mg_registry *r) {
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(metrics_render(r, &text, &len));
    CHECK(text && strlen(text) == len);
    return text;
}

static void test_exposition(void) {
    mg_registry *r;
    CHECK_OK(metrics_registry_create(&r));

    mg_metric *req, *infl, *lat, *temp;
    CHECK_OK(metrics_counter_new(r, "magneto_test_requests_total", "Requests handled.",
                                 MG_LABELS("model", "status"), &req));
    CHECK_OK(
        metrics_gauge_new(r, "magneto_test_inflight_requests", "Requests in flight.", NULL, &infl));
    static const double b[] = {0.25, 0.5, 1};
    CHECK_OK(metrics_histogram_new(r, "magneto_test_latency_seconds", "Latency.",
                                   MG_LABELS("model"), b, 3, &lat));
    CHECK_OK(metrics_gauge_new(r, "magneto_test_temperature_celsius", "", NULL, &temp));

    mg_counter *c1, *c2;
    CHECK_OK(metrics_counter_child(req, MG_LABELS("m1", "200"), &c1));
    CHECK_OK(metrics_counter_child(req, MG_LABELS("m2", "500"), &c2));
    metrics_counter_inc(c1);
    metrics_counter_add_u64(c1, 2);
    metrics_counter_add(c2, 1.5);
    metrics_counter_add(c2, -4); /* ignored: counters only rise */
    CHECK_NEAR(metrics_counter_value(c1), 3, 0);
    CHECK_NEAR(metrics_counter_value(c2), 1.5, 0);

    mg_gauge *g, *t;
    CHECK_OK(metrics_gauge_child(infl, NULL, &g));
    metrics_gauge_set(g, 7);
    metrics_gauge_dec(g);
    metrics_gauge_add(g, 0.5);
    CHECK_NEAR(metrics_gauge_value(g), 6.5, 0);
    CHECK_OK(metrics_gauge_child(temp, NULL, &t));
    metrics_gauge_set(t, -0.1);

    mg_histogram *h;
    CHECK_OK(metrics_histogram_child(lat, MG_LABELS("m1"), &h));
    metrics_histogram_observe(h, 0.125);
    metrics_histogram_observe(h, 0.25); /* on a bound: counts in le="0.25" */
    metrics_histogram_observe(h, 0.375);
    metrics_histogram_observe(h, 2);
    CHECK_EQ_INT(metrics_histogram_count(h), 4);
    CHECK_NEAR(metrics_histogram_sum(h), 2.75, 0);

    char *text = render(r);
    const char *want = "# HELP magneto_test_requests_total Requests handled.\n"
                       "# TYPE magneto_test_requests_total counter\n"
                       "magneto_test_requests_total{model=\"m1\",status=\"200\"} 3\n"
                       "magneto_test_requests_total{model=\"m2\",status=\"500\"} 1.5\n"
                       "# HELP magneto_test_inflight_requests Requests in flight.\n"
                       "# TYPE magneto_test_inflight_requests gauge\n"
                       "magneto_test_inflight_requests 6.5\n"
                       "# HELP magneto_test_latency_seconds Latency.\n"
                       "# TYPE magneto_test_latency_seconds histogram\n"
                       "magneto_test_latency_seconds_bucket{model=\"m1\",le=\"0.25\"} 2\n"
                       "magneto_test_latency_seconds_bucket{model=\"m1\",le=\"0.5\"} 3\n"
                       "magneto_test_latency_seconds_bucket{model=\"m1\",le=\"1\"} 3\n"
                       "magneto_test_latency_seconds_bucket{model=\"m1\",le=\"+Inf\"} 4\n"
                       "magneto_test_latency_seconds_sum{model=\"m1\"} 2.75\n"
                       "magneto_test_latency_seconds_count{model=\"m1\"} 4\n"
                       "# TYPE magneto_test_temperature_celsius gauge\n"
                       "magneto_test_temperature_celsius -0.1\n";
    CHECK_EQ_STR(text, want);
    free(text);

    /* A lookup of the same values returns the same child. */
    mg_counter *again;
    CHECK_OK(metrics_counter_child(req, MG_LABELS("m1", "200"), &again));
    CHECK(again == c1);

    /* Removing hides the child from the output; its handle stays usable; a lookup shows it. */
    CHECK_OK(metrics_remove(req, MG_LABELS("m2", "500")));
    CHECK_EQ_INT(metrics_remove(req, MG_LABELS("m9", "500")), MG_ENOTFOUND);
    metrics_counter_inc(c2);
    text = render(r);
    CHECK(strstr(text, "model=\"m2\"") == NULL);
    CHECK(strstr(text, "model=\"m1\",status=\"200\"} 3\n") != NULL);
    free(text);
    CHECK_OK(metrics_counter_child(req, MG_LABELS("m2", "500"), &again));
    CHECK(again == c2);
    text = render(r);
    CHECK(strstr(text, "magneto_test_requests_total{model=\"m2\",status=\"500\"} 2.5\n") != NULL);
    free(text);

    metrics_registry_destroy(r);
}

static void test_escaping(void) {
    mg_registry *r;
    CHECK_OK(metrics_registry_create(&r));
    mg_metric *m;
    CHECK_OK(metrics_counter_new(r, "magneto_test_escapes_total",
                                 "Help with \\ and\nnewline \"q\".", MG_LABELS("path"), &m));
    mg_counter *c;
    CHECK_OK(metrics_counter_child(m, MG_LABELS("a\\b\"c\nd"), &c));
    metrics_counter_inc(c);
    mg_counter *u;
    CHECK_OK(metrics_counter_child(m, MG_LABELS("gpt-oss-120b/模型"), &u)); /* UTF-8 passes as is */
    char *text = render(r);
    const char *want = "# HELP magneto_test_escapes_total Help with \\\\ and\\nnewline \"q\".\n"
                       "# TYPE magneto_test_escapes_total counter\n"
                       "magneto_test_escapes_total{path=\"a\\\\b\\\"c\\nd\"} 1\n"
                       "magneto_test_escapes_total{path=\"gpt-oss-120b/模型\"} 0\n";
    CHECK_EQ_STR(text, want);
    free(text);
    metrics_registry_destroy(r);
}

/* Number formatting follows the shortest round-trip text, with the format's special values. */
static void test_numbers(void) {
    mg_registry *r;
    CHECK_OK(metrics_registry_create(&r));
    mg_metric *m;
    CHECK_OK(metrics_gauge_new(r, "magneto_test_value", "v", MG_LABELS("k"), &m));
    struct {
        const char *k;
        double v;
        const char *text;
    } cases[] = {
        {"a", 0.1, "0.1"},       {"b", 12345678901.0, "12345678901"},
        {"c", 1e-9, "1e-09"},    {"d", 1.0 / 3.0, "0.3333333333333333"},
        {"e", INFINITY, "+Inf"}, {"f", -INFINITY, "-Inf"},
        {"g", NAN, "NaN"},       {"h", 0, "0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mg_gauge *g;
        CHECK_OK(metrics_gauge_child(m, MG_LABELS(cases[i].k), &g));
        metrics_gauge_set(g, cases[i].v);
    }
    char *text = render(r);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char line[128];
        snprintf(line, sizeof line, "magneto_test_value{k=\"%s\"} %s\n", cases[i].k, cases[i].text);
        CHECK_MSG(strstr(text, line) != NULL, "missing line %s", line);
    }
    free(text);
    metrics_registry_destroy(r);
}

static void test_errors(void) {
    mg_registry *r;
    CHECK_OK(metrics_registry_create(&r));
    mg_metric *m, *m2;
    CHECK_EQ_INT(metrics_counter_new(r, "9bad", "h", NULL, &m), MG_EINVAL);
    CHECK(strstr(mg_err_msg(), "9bad") != NULL);
    CHECK_EQ_INT(metrics_counter_new(r, "bad-name_total", "h", NULL, &m), MG_EINVAL);
    CHECK_EQ_INT(metrics_counter_new(r, "", "h", NULL, &m), MG_EINVAL);
    CHECK_EQ_INT(metrics_counter_new(r, "ok_total", "h", MG_LABELS("__reserved"), &m), MG_EINVAL);
    CHECK_EQ_INT(metrics_counter_new(r, "ok_total", "h", MG_LABELS("a", "a"), &m), MG_EINVAL);
    CHECK_EQ_INT(metrics_counter_new(r, "ok_total", "h", MG_LABELS("a-b"), &m), MG_EINVAL);
    CHECK_EQ_INT(metrics_histogram_new(r, "h_seconds", "h", MG_LABELS("le"), NULL, 0, &m),
                 MG_EINVAL);
    static const double flat[] = {1, 1};
    CHECK_EQ_INT(metrics_histogram_new(r, "h_seconds", "h", NULL, flat, 2, &m), MG_EINVAL);
    static const double inf[] = {1, INFINITY};
    CHECK_EQ_INT(metrics_histogram_new(r, "h_seconds", "h", NULL, inf, 2, &m), MG_EINVAL);

    /* The same declaration twice gives the same family; a different one is refused. */
    CHECK_OK(metrics_counter_new(r, "ok_total", "h", MG_LABELS("a", "b"), &m));
    CHECK_OK(metrics_counter_new(r, "ok_total", "other help", MG_LABELS("a", "b"), &m2));
    CHECK(m == m2);
    CHECK_EQ_INT(metrics_counter_new(r, "ok_total", "h", MG_LABELS("a"), &m2), MG_EEXIST);
    CHECK_EQ_INT(metrics_gauge_new(r, "ok_total", "h", MG_LABELS("a", "b"), &m2), MG_EEXIST);
    CHECK(strcmp(metrics_name(m), "ok_total") == 0);
    CHECK(metrics_type(m) == MG_METRIC_COUNTER);

    /* Children: wrong number of values, wrong type, bad UTF-8. */
    mg_counter *c;
    mg_gauge *g;
    CHECK_EQ_INT(metrics_counter_child(m, MG_LABELS("x"), &c), MG_EINVAL);
    CHECK(strstr(mg_err_msg(), "1 label value") != NULL);
    CHECK_EQ_INT(metrics_counter_child(m, MG_LABELS("x", "y", "z"), &c), MG_EINVAL);
    CHECK_EQ_INT(metrics_counter_child(m, NULL, &c), MG_EINVAL);
    CHECK_EQ_INT(metrics_gauge_child(m, MG_LABELS("x", "y"), &g), MG_EINVAL);
    CHECK_EQ_INT(metrics_counter_child(m, MG_LABELS("x", "\xff\xfe"), &c), MG_EINVAL);
    CHECK_EQ_INT(metrics_counter_child(m, MG_LABELS("x", "\xc0\x80"), &c),
                 MG_EINVAL); /* overlong */
    CHECK_OK(metrics_counter_child(m, MG_LABELS("x", "y"), &c));

    double out[4];
    CHECK_OK(metrics_buckets_exponential(0.001, 2, 4, out));
    CHECK_NEAR(out[3], 0.008, 1e-15);
    CHECK_EQ_INT(metrics_buckets_exponential(0, 2, 4, out), MG_EINVAL);
    CHECK_EQ_INT(metrics_buckets_exponential(1, 1, 4, out), MG_EINVAL);
    CHECK_OK(metrics_buckets_linear(0, 0.25, 4, out));
    CHECK_NEAR(out[3], 0.75, 0);
    CHECK_EQ_INT(metrics_buckets_linear(0, 0, 4, out), MG_EINVAL);
    for (size_t i = 1; i < metrics_latency_nbuckets; i++)
        CHECK(metrics_latency_buckets[i] > metrics_latency_buckets[i - 1]);
    CHECK(metrics_latency_buckets[0] <= 0.001 &&
          metrics_latency_buckets[metrics_latency_nbuckets - 1] >= 480);

    /* Default buckets when none are given. */
    mg_metric *lat;
    CHECK_OK(metrics_histogram_new(r, "ttft_seconds", "h", NULL, NULL, 0, &lat));
    mg_histogram *h;
    CHECK_OK(metrics_histogram_child(lat, NULL, &h));
    metrics_histogram_observe(h, NAN); /* ignored */
    metrics_histogram_observe(h, 1000);
    char *text = render(r);
    CHECK(strstr(text, "ttft_seconds_bucket{le=\"480\"} 0\n") != NULL);
    CHECK(strstr(text, "ttft_seconds_bucket{le=\"+Inf\"} 1\n") != NULL);
    CHECK(strstr(text, "ttft_seconds_bucket{le=\"0.001\"} 0\n") != NULL);
    free(text);
    metrics_registry_destroy(r);
}

static double queue_len = 3;
static double read_queue(void *arg) {
    return *(double *)arg * 2;
}
static int hook_calls;
static void count_hook(void *arg) {
    (*(int *)arg)++;
}

static void test_callbacks(void) {
    mg_registry *r;
    CHECK_OK(metrics_registry_create(&r));
    mg_metric *m;
    CHECK_OK(metrics_gauge_new(r, "magneto_test_queued_requests", "Queued.", NULL, &m));
    mg_gauge *g;
    CHECK_OK(metrics_gauge_child(m, NULL, &g));
    metrics_gauge_set(g, 1);
    metrics_gauge_set_fn(g, read_queue, &queue_len);
    CHECK_NEAR(metrics_gauge_value(g), 6, 0);
    queue_len = 10;
    CHECK_OK(metrics_registry_on_scrape(r, count_hook, &hook_calls));
    char *text = render(r);
    CHECK(strstr(text, "magneto_test_queued_requests 20\n") != NULL);
    CHECK_EQ_INT(hook_calls, 1);
    free(text);
    metrics_gauge_set_fn(g, NULL, NULL); /* back to the stored value */
    text = render(r);
    CHECK(strstr(text, "magneto_test_queued_requests 1\n") != NULL);
    CHECK_EQ_INT(hook_calls, 2);
    free(text);
    metrics_registry_destroy(r);
}

/* Finds "name value" at the start of a line and parses value. */
static bool sample(const char *text, const char *name, double *v) {
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ') {
            *v = strtod(p + n + 1, NULL);
            return true;
        }
    }
    return false;
}

static void test_process(void) {
    mg_registry *r = metrics_default();
    CHECK(r != NULL);
    CHECK(metrics_default() == r);
    CHECK_OK(metrics_process_register(r)); /* idempotent */
    /* Burn a little CPU so the counter moves off zero. */
    volatile double x = 0;
    for (int i = 0; i < 20000000; i++) x += i * 0.5;
    char *text = render(r);
    double cpu = -1, rss = 0, start = 0, fds = 0, maxfds = 0, vsize = 0;
    CHECK(sample(text, "process_cpu_seconds_total", &cpu));
    CHECK(sample(text, "process_resident_memory_bytes", &rss));
    CHECK(sample(text, "process_virtual_memory_bytes", &vsize));
    CHECK(sample(text, "process_start_time_seconds", &start));
    CHECK(sample(text, "process_open_fds", &fds));
    CHECK(sample(text, "process_max_fds", &maxfds));
    CHECK(strstr(text, "# TYPE process_cpu_seconds_total counter\n") != NULL);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    CHECK_MSG(cpu > 0 && cpu < 600, "cpu %g", cpu);
    CHECK_MSG(rss > 1 << 20 && vsize >= rss, "rss %g vsize %g", rss, vsize);
    CHECK_MSG(start > tv.tv_sec - 600 && start <= tv.tv_sec + 1, "start %f now %ld", start,
              (long)tv.tv_sec);
    CHECK_MSG(fds >= 3 && fds <= maxfds, "fds %g max %g", fds, maxfds);
    free(text);
}

/* ---- concurrency ---- */

enum { THREADS = 4, ITERS = 200000 };

struct shared {
    mg_registry *r;
    mg_counter *c;
    mg_gauge *g;
    mg_histogram *h;
    mg_metric *fam;
    int renders;
};

static void *updater(void *arg) {
    struct shared *s = arg;
    for (int i = 0; i < ITERS; i++) {
        metrics_counter_inc(s->c);
        metrics_counter_add(s->c, 0.5);
        metrics_gauge_add(s->g, 0.25);
        metrics_histogram_observe(s->h, (i % 4) * 0.25); /* 0, .25, .5, .75 */
    }
    /* Concurrent creation and lookup of children: each thread touches every tuple. */
    char k[16];
    for (int i = 0; i < 64; i++) {
        snprintf(k, sizeof k, "w%d", i);
        mg_counter *c;
        if (metrics_counter_child(s->fam, MG_LABELS(k), &c) == MG_OK) metrics_counter_inc(c);
    }
    return NULL;
}

static void *renderer(void *arg) {
    struct shared *s = arg;
    for (int i = 0; i < 50; i++) {
        char *text;
        size_t len;
        if (metrics_render(s->r, &text, &len) == MG_OK) {
            s->renders++;
            free(text);
        }
    }
    return NULL;
}

static void test_concurrency(void) {
    struct shared s = {0};
    CHECK_OK(metrics_registry_create(&s.r));
    mg_metric *m;
    CHECK_OK(metrics_counter_new(s.r, "magneto_test_tokens_total", "t", NULL, &m));
    CHECK_OK(metrics_counter_child(m, NULL, &s.c));
    CHECK_OK(metrics_gauge_new(s.r, "magneto_test_level", "l", NULL, &m));
    CHECK_OK(metrics_gauge_child(m, NULL, &s.g));
    static const double b[] = {0.25, 0.5};
    CHECK_OK(metrics_histogram_new(s.r, "magneto_test_step_seconds", "s", NULL, b, 2, &m));
    CHECK_OK(metrics_histogram_child(m, NULL, &s.h));
    CHECK_OK(metrics_counter_new(s.r, "magneto_test_per_worker_total", "w", MG_LABELS("worker"),
                                 &s.fam));

    pthread_t th[THREADS + 1];
    for (int i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, updater, &s);
    pthread_create(&th[THREADS], NULL, renderer, &s);
    for (int i = 0; i <= THREADS; i++) pthread_join(th[i], NULL);

    double n = (double)THREADS * ITERS;
    CHECK_NEAR(metrics_counter_value(s.c), n * 1.5, 0);
    CHECK_NEAR(metrics_gauge_value(s.g), n * 0.25, 0);
    CHECK_EQ_INT(metrics_histogram_count(s.h), THREADS * ITERS);
    CHECK_NEAR(metrics_histogram_sum(s.h), n / 4 * (0 + 0.25 + 0.5 + 0.75), 0);
    CHECK_EQ_INT(s.renders, 50);

    char *text = render(s.r);
    char line[128];
    snprintf(line, sizeof line, "magneto_test_step_seconds_bucket{le=\"0.25\"} %d\n",
             THREADS * ITERS / 2);
    CHECK_MSG(strstr(text, line) != NULL, "missing %s", line);
    snprintf(line, sizeof line, "magneto_test_step_seconds_bucket{le=\"0.5\"} %d\n",
             THREADS * ITERS / 4 * 3);
    CHECK_MSG(strstr(text, line) != NULL, "missing %s", line);
    snprintf(line, sizeof line, "magneto_test_step_seconds_count %d\n", THREADS * ITERS);
    CHECK_MSG(strstr(text, line) != NULL, "missing %s", line);
    int children = 0;
    for (const char *p = text; (p = strstr(p, "magneto_test_per_worker_total{")); p++) {
        children++;
        double v = strtod(strchr(p, '}') + 1, NULL);
        CHECK_MSG(v == THREADS, "child count %g", v);
    }
    CHECK_EQ_INT(children, 64);
    free(text);
    metrics_registry_destroy(s.r);
}

/* Cost of the hot-path updates, printed for the record (single thread, uncontended). The check
 * is only that they return the counts they were given; timings vary with the machine. */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_hot_path_cost(void) {
    mg_registry *r;
    CHECK_OK(metrics_registry_create(&r));
    mg_metric *m;
    mg_counter *c;
    mg_histogram *h;
    CHECK_OK(metrics_counter_new(r, "magneto_test_ops_total", "o", MG_LABELS("model"), &m));
    CHECK_OK(metrics_counter_child(m, MG_LABELS("x"), &c));
    CHECK_OK(
        metrics_histogram_new(r, "magneto_test_itl_seconds", "i", MG_LABELS("model"), NULL, 0, &m));
    CHECK_OK(metrics_histogram_child(m, MG_LABELS("x"), &h));
    enum { N = 2000000 };
    double t0 = now_s();
    for (int i = 0; i < N; i++) metrics_counter_inc(c);
    double t1 = now_s();
    for (int i = 0; i < N; i++) metrics_histogram_observe(h, (i & 1023) * 0.001);
    double t2 = now_s();
    CHECK_NEAR(metrics_counter_value(c), N, 0);
    CHECK_EQ_INT(metrics_histogram_count(h), N);
    printf("hot path: counter_inc %.1f ns, histogram_observe (%zu buckets) %.1f ns\n",
           (t1 - t0) / N * 1e9, metrics_latency_nbuckets, (t2 - t1) / N * 1e9);
    metrics_registry_destroy(r);
}

int main(void) {
    test_exposition();
    test_escaping();
    test_numbers();
    test_errors();
    test_callbacks();
    test_process();
    test_concurrency();
    test_hot_path_cost();
    return check_done();
}
