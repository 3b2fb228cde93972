/* test_frontend_http.c - the frontend's HTTP layer (frontend/http.c) through real libcurl
 * clients: immediate and deferred replies, SSE streams written from other threads (in order,
 * complete, many at once), the body limit (413), and a client that goes away mid-stream (the
 * close callback says so and later writes are refused). */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "http.h"
#include "openai.h"

#define N_EVENTS 2000

typedef struct stream_job {
    fe_conn *c;
    int events;
    int delay_us;
    bool big; /* 64 KiB events, until refused */
} stream_job;

static atomic_int closed_gone, closed_ok;
static atomic_int write_refused;

static void *writer(void *arg) {
    stream_job *j = arg;
    char ev[64];
    if (j->big) { /* a client that never reads: writes must be refused, not buffered forever */
        static char blob[64 * 1024];
        memset(blob, 'x', sizeof blob);
        for (int i = 0; i < 4096; i++) {
            if (!fe_conn_write(j->c, blob, sizeof blob)) {
                atomic_fetch_add(&write_refused, 1);
                break;
            }
        }
        fe_conn_end(j->c);
        fe_conn_unref(j->c);
        free(j);
        return NULL;
    }
    for (int i = 0; i < j->events; i++) {
        int n = snprintf(ev, sizeof ev, "data: %d\n\n", i);
        if (!fe_conn_write(j->c, ev, (size_t)n)) {
            atomic_fetch_add(&write_refused, 1);
            break;
        }
        if (j->delay_us) usleep((useconds_t)j->delay_us);
    }
    fe_conn_end(j->c);
    fe_conn_unref(j->c);
    free(j);
    return NULL;
}

static void *deferred(void *arg) {
    fe_conn *c = arg;
    usleep(50000);
    fe_conn_reply(c, 201, "text/plain", "later", 5);
    fe_conn_unref(c);
    return NULL;
}

static void on_close(void *arg, bool gone) {
    atomic_fetch_add(gone ? &closed_gone : &closed_ok, 1);
}

static void handler(void *ud, fe_conn *c, const char *method, const char *path, const char *body,
                    size_t len) {
    pthread_t t;
    if (!strcmp(path, "/now")) {
        char msg[64];
        int n = snprintf(msg, sizeof msg, "%s %zu", method, len);
        fe_conn_reply(c, 200, "text/plain", msg, (size_t)n);
    } else if (!strcmp(path, "/later")) {
        fe_conn_ref(c);
        pthread_create(&t, NULL, deferred, c);
        pthread_detach(t);
    } else if (!strncmp(path, "/stream", 7)) {
        fe_conn_stream(c);
        fe_conn_set_on_close(c, on_close, NULL);
        stream_job *j = calloc(1, sizeof *j);
        j->c = c;
        j->events = N_EVENTS;
        j->delay_us = !strcmp(path, "/stream/slow") ? 2000 : 0;
        j->big = !strcmp(path, "/stream/big");
        fe_conn_ref(c);
        pthread_create(&t, NULL, writer, j);
        pthread_detach(t);
    } else {
        fe_conn_reply(c, 404, "text/plain", "no", 2);
    }
}

typedef struct sink {
    oai_buf b;
    size_t abort_after; /* 0: never */
} sink;

static size_t on_data(char *p, size_t sz, size_t n, void *ud) {
    sink *s = ud;
    oai_buf_put(&s->b, p, sz * n);
    if (s->abort_after && s->b.len >= s->abort_after) return 0; /* the client goes away */
    return sz * n;
}

static long get(int port, const char *path, const char *post, size_t post_len, sink *s) {
    CURL *h = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
    if (post) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, post);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)post_len);
    }
    CURLcode rc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    if (rc != CURLE_OK && !(s->abort_after && rc == CURLE_WRITE_ERROR)) return -1;
    return code;
}

/* The stream carried "data: 0" .. "data: N-1" in order. */
static bool stream_ok(const oai_buf *b, int n) {
    const char *p = b->p;
    for (int i = 0; i < n; i++) {
        char want[32];
        int k = snprintf(want, sizeof want, "data: %d\n\n", i);
        if (!p || strncmp(p, want, (size_t)k) != 0) return false;
        p += k;
    }
    return p == b->p + b->len;
}

int main(void) {
    curl_global_init(CURL_GLOBAL_ALL);
    fe_http_opts o = {.host = "127.0.0.1",
                      .threads = 2,
                      .max_body = 1024,
                      .max_pending = 1 << 20,
                      .handler = handler};
    fe_http *h;
    CHECK_OK(fe_http_start(&o, &h));
    int port = fe_http_port(h);
    CHECK(port > 0);

    sink s = {0};
    CHECK_EQ_INT(get(port, "/now", NULL, 0, &s), 200);
    CHECK_EQ_STR(s.b.p, "GET 0");
    s.b.len = 0;
    CHECK_EQ_INT(get(port, "/now", "hello", 5, &s), 200);
    CHECK_EQ_STR(s.b.p, "POST 5");
    s.b.len = 0;
    CHECK_EQ_INT(get(port, "/later", NULL, 0, &s), 201);
    CHECK_EQ_STR(s.b.p, "later");

    /* Over the body limit: 413 with an OpenAI error body. */
    char *big = malloc(5000);
    memset(big, 'x', 5000);
    s.b.len = 0;
    CHECK_EQ_INT(get(port, "/now", big, 5000, &s), 413);
    CHECK(s.b.p && strstr(s.b.p, "\"code\":\"request_too_large\"") != NULL);
    free(big);

    /* One stream: every event, in order, then the end. */
    s.b.len = 0;
    CHECK_EQ_INT(get(port, "/stream", NULL, 0, &s), 200);
    CHECK(stream_ok(&s.b, N_EVENTS));
    for (int i = 0; i < 100 && atomic_load(&closed_ok) < 1; i++) usleep(10000);
    CHECK_EQ_INT(atomic_load(&closed_ok), 1);

    /* Many streams at once through one curl multi handle. */
    enum { NS = 64 };
    CURLM *m = curl_multi_init();
    sink ss[NS] = {0};
    CURL *hs[NS];
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/stream/slow", port);
    for (int i = 0; i < NS; i++) {
        hs[i] = curl_easy_init();
        curl_easy_setopt(hs[i], CURLOPT_URL, url);
        curl_easy_setopt(hs[i], CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(hs[i], CURLOPT_WRITEDATA, &ss[i]);
        curl_multi_add_handle(m, hs[i]);
    }
    int running = 1;
    for (int iter = 0; running && iter < 100000; iter++) {
        curl_multi_perform(m, &running);
        if (running) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    int good = 0;
    for (int i = 0; i < NS; i++) {
        good += stream_ok(&ss[i].b, N_EVENTS);
        curl_multi_remove_handle(m, hs[i]);
        curl_easy_cleanup(hs[i]);
        oai_buf_free(&ss[i].b);
    }
    curl_multi_cleanup(m);
    CHECK_EQ_INT(good, NS);

    /* Paced streams are written straight to the socket (no MHD wake-up per event), and the
     * chunked framing stays whole: a second stream on the same kept-alive connection. */
    CHECK(fe_http_direct_writes(h) > 0);
    CURL *ka = curl_easy_init();
    curl_easy_setopt(ka, CURLOPT_URL, url);
    curl_easy_setopt(ka, CURLOPT_WRITEFUNCTION, on_data);
    for (int i = 0; i < 2; i++) {
        sink k = {0};
        curl_easy_setopt(ka, CURLOPT_WRITEDATA, &k);
        CHECK(curl_easy_perform(ka) == CURLE_OK);
        CHECK(stream_ok(&k.b, N_EVENTS));
        long conns = -1;
        curl_easy_getinfo(ka, CURLINFO_NUM_CONNECTS, &conns);
        CHECK_EQ_INT(conns, i == 0 ? 1 : 0); /* the second reused the connection */
        oai_buf_free(&k.b);
    }
    curl_easy_cleanup(ka);

    /* A client that leaves mid-stream: the close callback reports it, writes are refused. */
    int gone0 = atomic_load(&closed_gone);
    sink ab = {.abort_after = 100};
    get(port, "/stream/slow", NULL, 0, &ab);
    for (int i = 0; i < 500 && atomic_load(&write_refused) < 1; i++) usleep(10000);
    CHECK_EQ_INT(atomic_load(&closed_gone), gone0 + 1);
    CHECK_EQ_INT(atomic_load(&write_refused), 1);
    oai_buf_free(&ab.b);

    /* A client that sends its request and never reads: the server stops buffering at
     * max_pending, drops the connection and reports the client gone. */
    gone0 = atomic_load(&closed_gone);
    int refused0 = atomic_load(&write_refused);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    const char *rq = "GET /stream/big HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(write(fd, rq, strlen(rq)) == (ssize_t)strlen(rq));
    for (int i = 0; i < 1000 && atomic_load(&write_refused) == refused0; i++) usleep(10000);
    CHECK_EQ_INT(atomic_load(&write_refused), refused0 + 1);
    for (int i = 0; i < 500 && atomic_load(&closed_gone) == gone0; i++) usleep(10000);
    CHECK_EQ_INT(atomic_load(&closed_gone), gone0 + 1);
    close(fd);

    s.b.len = 0;
    CHECK_EQ_INT(get(port, "/nope", NULL, 0, &s), 404);
    oai_buf_free(&s.b);

    fe_http_stop(h);
    curl_global_cleanup();
    return check_done();
}
