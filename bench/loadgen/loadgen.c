/* loadgen.c - epoll HTTP/1.1 client and AIPerf's timing modes (see loadgen.h). */
#include "loadgen.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "sse.h"

enum { C_FREE, C_CONNECTING, C_WRITING, C_READING, C_IDLE };

typedef struct loop loop;

typedef struct conn {
    loop *L;
    int fd;
    int state;
    size_t rec;   /* index of the record being served */
    uint32_t gen; /* bumped per request, so stale timer entries are ignored */
    bool reused;  /* a kept-alive connection: a failure before any byte is retried once */
    bool retried;
    bool got_bytes;
    char *wbuf;
    size_t wlen, woff, wcap;
    hresp resp;
    struct conn *prev, *next; /* idle list */
} conn;

typedef struct timer_ent {
    conn *c;
    uint32_t gen;
    int64_t at;
} timer_ent;

/* FIFO of deadlines: the delay is the same for every request, so issue order is expiry order. */
typedef struct timer_q {
    timer_ent *e;
    size_t head, n, cap;
} timer_q;

struct loop {
    const bench_config *cfg;
    const bench_pool *pool;
    bench_run *run;
    int ep;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    conn *idle; /* idle keep-alive connections */
    conn **all; /* every conn object ever made, for cleanup */
    size_t n_all, cap_all;
    conn *free_list;
    int64_t now;
    char *rbuf;
    size_t rbuf_size;
    /* Schedule. */
    bench_phase phase;
    long long issued, target; /* in this phase; target -1: until the duration ends */
    int64_t phase_start, duration_end, grace_end;
    bool issuing_done;
    int64_t next_due;
    bool slot_wait; /* the due credit is waiting for a concurrency slot */
    int in_flight;
    size_t trace_next;
    int64_t trace_offset_ms;
    bench_rng pick, arrive, cancel, ids;
    timer_q cancels, timeouts;
    uint64_t done_profiling, errors_profiling;
    int64_t next_progress;
    uint64_t last_responses;
    int64_t last_progress_ns;
    bool tty;
};

static volatile sig_atomic_t g_interrupt;

void bench_run_interrupt(void) {
    g_interrupt = 1;
}

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t wall_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int grow_buf(char **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    char *n = realloc(*p, c);
    if (!n) return -1;
    *p = n;
    *cap = c;
    return 0;
}

static bool tq_push(timer_q *q, conn *c, int64_t at) {
    if (q->n == q->cap) {
        size_t nc = q->cap ? q->cap * 2 : 1024;
        timer_ent *e = malloc(nc * sizeof *e);
        if (!e) return false;
        for (size_t i = 0; i < q->n; i++) e[i] = q->e[(q->head + i) % q->cap];
        free(q->e);
        q->e = e;
        q->head = 0;
        q->cap = nc;
    }
    q->e[(q->head + q->n) % q->cap] = (timer_ent){c, c->gen, at};
    q->n++;
    return true;
}

static timer_ent *tq_peek(timer_q *q) {
    return q->n ? &q->e[q->head] : NULL;
}

static void tq_pop(timer_q *q) {
    q->head = (q->head + 1) % q->cap;
    q->n--;
}

static bench_record *rec_of(conn *c) {
    return &c->L->run->recs[c->rec];
}

/* ---- connections ---------------------------------------------------------------------------- */

static void idle_remove(loop *L, conn *c) {
    if (c->prev)
        c->prev->next = c->next;
    else
        L->idle = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void conn_close(loop *L, conn *c, bool reset) {
    if (c->state == C_IDLE) idle_remove(L, c);
    if (c->fd >= 0) {
        if (reset) { /* cancellation: an RST tells the server at once */
            struct linger lg = {1, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(c->fd); /* also removes it from the epoll set */
    }
    c->fd = -1;
    c->state = C_FREE;
    c->gen++;
    c->next = L->free_list;
    L->free_list = c;
}

static int on_event(void *ctx, const char *type, const char *data, size_t len);

static conn *conn_new(loop *L) {
    conn *c = L->free_list;
    if (c) {
        L->free_list = c->next;
        c->next = NULL;
    } else {
        c = calloc(1, sizeof *c);
        if (!c) return NULL;
        if (L->n_all == L->cap_all) {
            size_t nc = L->cap_all ? L->cap_all * 2 : 1024;
            conn **a = realloc(L->all, nc * sizeof *a);
            if (!a) {
                free(c);
                return NULL;
            }
            L->all = a;
            L->cap_all = nc;
        }
        L->all[L->n_all++] = c;
        c->L = L;
        hresp_init(&c->resp, on_event, c);
    }
    c->fd = socket(L->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) goto fail;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(L->ep, EPOLL_CTL_ADD, c->fd, &ev)) goto fail;
    int r = connect(c->fd, (struct sockaddr *)&L->addr, L->addrlen);
    if (r && errno != EINPROGRESS) goto fail;
    c->state = C_CONNECTING;
    c->reused = false;
    L->run->connections_opened++;
    return c;
fail:
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->state = C_FREE;
    c->next = L->free_list;
    L->free_list = c;
    return NULL;
}

/* ---- request lifecycle ---------------------------------------------------------------------- */

static void request_end(loop *L, conn *c, bool keep) {
    bench_record *r = rec_of(c);
    if (!r->end_ns) r->end_ns = L->now;
    L->in_flight--;
    if (r->phase == BENCH_PROFILING) {
        L->done_profiling++;
        if (r->err_type) L->errors_profiling++;
    }
    c->gen++;
    if (keep && c->fd >= 0) {
        c->state = C_IDLE;
        c->prev = NULL;
        c->next = L->idle;
        if (L->idle) L->idle->prev = c;
        L->idle = c;
    } else {
        conn_close(L, c, false);
    }
}

static void request_fail(loop *L, conn *c, int code, const char *type, const char *msg) {
    bench_record *r = rec_of(c);
    bench_record_fail(r, code, type, "%s", msg);
    r->end_ns = L->now;
    request_end(L, c, false);
}

static bool write_request(loop *L, conn *c);

/* Point the queue's entries for request (c, gen) at (n, n->gen). */
static void tq_move(timer_q *q, const conn *c, uint32_t gen, conn *n) {
    for (size_t i = 0; i < q->n; i++) {
        timer_ent *e = &q->e[(q->head + i) % q->cap];
        if (e->c == c && e->gen == gen) e->c = n, e->gen = n->gen;
    }
}

/* A kept-alive connection the server had already closed: send again on a new one. */
static bool retry_fresh(loop *L, conn *c) {
    if (!c->reused || c->retried || c->got_bytes) return false;
    /* c's socket goes first (at the open-file limit the new one needs its descriptor), c itself
     * only once the new connection exists: when none can be opened the caller fails the request
     * on c, which frees c (freeing it here as well put it on the free list twice). */
    close(c->fd);
    c->fd = -1;
    conn *n = conn_new(L);
    if (!n) return false;
    free(n->wbuf);
    n->wbuf = c->wbuf;
    n->wlen = c->wlen;
    n->wcap = c->wcap;
    n->woff = 0;
    c->wbuf = NULL;
    c->wlen = c->wcap = 0;
    n->rec = c->rec;
    n->retried = true;
    n->got_bytes = false;
    /* The request keeps its timeout and cancellation: their entries name (c, its gen), which
     * freeing c makes stale. A rare path (once per unannounced keep-alive close): a scan. */
    tq_move(&L->timeouts, c, c->gen, n);
    tq_move(&L->cancels, c, c->gen, n);
    conn_close(L, c, false);
    L->run->resent++;
    hresp_reset(&n->resp);
    return true;
}

static bool build_request(loop *L, conn *c, const bench_conv *cv, const bench_record *r) {
    const bench_config *cfg = L->cfg;
    size_t extra = 512 + strlen(cfg->endpoint_path) + strlen(cfg->host) + cv->body_len;
    for (int i = 0; i < cfg->n_headers; i++) extra += strlen(cfg->headers[i]) + 2;
    if (cfg->api_key) extra += strlen(cfg->api_key) + 32;
    if (grow_buf(&c->wbuf, &c->wcap, extra)) return false;
    bool user_accept = false;
    for (int i = 0; i < cfg->n_headers; i++)
        if (strncasecmp(cfg->headers[i], "accept:", 7) == 0) user_accept = true;
    int n = snprintf(c->wbuf, c->wcap,
                     "POST %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: magneto-bench\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                     "X-Request-ID: %s\r\nX-Correlation-ID: %s\r\n%s",
                     cfg->endpoint_path, cfg->host, cfg->port, cv->body_len, r->request_id,
                     r->request_id,
                     cfg->streaming && !user_accept ? "Accept: text/event-stream\r\n" : "");
    if (cfg->api_key)
        n += snprintf(c->wbuf + n, c->wcap - n, "Authorization: Bearer %s\r\n", cfg->api_key);
    for (int i = 0; i < cfg->n_headers; i++)
        n += snprintf(c->wbuf + n, c->wcap - n, "%s\r\n", cfg->headers[i]);
    n += snprintf(c->wbuf + n, c->wcap - n, "\r\n");
    memcpy(c->wbuf + n, cv->body, cv->body_len);
    c->wlen = n + cv->body_len;
    c->woff = 0;
    return true;
}

static bool write_request(loop *L, conn *c) {
    while (c->woff < c->wlen) {
        ssize_t k = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (k > 0) {
            c->woff += k;
            continue;
        }
        if (k < 0 && errno == EAGAIN) return true; /* EPOLLOUT will resume */
        if (k < 0 && errno == EINTR) continue;
        char msg[160];
        snprintf(msg, sizeof msg, "sending the request failed: %s", strerror(errno));
        if (retry_fresh(L, c)) return true;
        request_fail(L, c, 0, "ClientConnectionError", msg);
        return false;
    }
    c->state = C_READING;
    return true;
}

static void issue(loop *L) {
    const bench_config *cfg = L->cfg;
    bench_run *run = L->run;
    if (run->n_recs == run->cap_recs) {
        size_t nc = run->cap_recs ? run->cap_recs * 2 : 1024;
        bench_record *r = realloc(run->recs, nc * sizeof *r);
        if (!r) {
            MG_ERROR("out of memory for records");
            L->issuing_done = true;
            return;
        }
        run->recs = r;
        run->cap_recs = nc;
    }
    size_t idx = run->n_recs++;
    bench_record *r = &run->recs[idx];
    memset(r, 0, sizeof *r);
    r->phase = L->phase;
    r->streaming = cfg->streaming;
    r->usage_completion_tokens = -1;
    size_t ci;
    if (L->pool->sequential)
        ci = L->trace_next++ % L->pool->n;
    else
        ci = bench_rng_next(&L->pick) % L->pool->n;
    const bench_conv *cv = &L->pool->conv[ci];
    r->conversation = (int)ci;
    r->isl = cv->isl;
    r->osl_requested = cv->osl;
    bench_uuid(&L->ids, r->request_id);
    if (cv->osl > 0) {
        r->cap_resp = cv->osl + 8;
        r->resp_ns = malloc(r->cap_resp * sizeof *r->resp_ns);
        r->text_cap = (size_t)cv->osl * 8 + 64;
        r->text = malloc(r->text_cap);
        if (r->text) r->text[0] = 0;
        if (!r->resp_ns || !r->text) r->cap_resp = r->text_cap = 0;
    }
    L->issued++;
    L->in_flight++;
    if (L->in_flight > run->max_in_flight) run->max_in_flight = L->in_flight;
    L->now = mono_ns();
    r->start_ns = L->now;
    r->start_wall_ns = wall_ns();

    conn *c = L->idle;
    if (c) {
        idle_remove(L, c);
        c->reused = true;
        c->state = C_WRITING;
    } else {
        c = conn_new(L);
        if (!c) {
            /* No connection: the request is an error right away (no conn to end it through). */
            bench_record_fail(r, 0, "ClientConnectorError", "cannot open a connection: %s",
                              strerror(errno));
            r->end_ns = L->now;
            L->in_flight--;
            if (r->phase == BENCH_PROFILING) L->done_profiling++, L->errors_profiling++;
            return;
        }
    }
    c->rec = idx;
    c->retried = false;
    c->got_bytes = false;
    hresp_reset(&c->resp);
    if (!build_request(L, c, cv, r)) {
        request_fail(L, c, 0, "ClientError", "out of memory building the request");
        return;
    }
    if (cfg->request_timeout_s > 0)
        tq_push(&L->timeouts, c, L->now + (int64_t)(cfg->request_timeout_s * 1e9));
    if (cfg->cancel_rate_pct > 0 && bench_rng_uniform(&L->cancel) * 100.0 < cfg->cancel_rate_pct)
        tq_push(&L->cancels, c, L->now + (int64_t)(cfg->cancel_delay_s * 1e9));
    if (c->state == C_WRITING) write_request(L, c);
}

/* ---- response handling ---------------------------------------------------------------------- */

/* What a parsed chunk or body adds to its record: the server's usage, and a response timestamp
 * when it carried content or reasoning (role-only, usage-only and empty chunks do not count).
 * first_cap: the timestamp array's first size (streams get many, bodies one). Returns 1 for a
 * counted response, 0 for none, -1 when out of memory (the record is failed). */
static int record_output(bench_record *r, const bench_chunk *ch, int64_t now, size_t first_cap) {
    if (ch->usage_completion_tokens >= 0)
        r->usage_completion_tokens = (int)ch->usage_completion_tokens;
    if (!ch->content_added && !ch->reasoning_added) return 0;
    if (r->n_resp == r->cap_resp) {
        size_t nc = r->cap_resp ? r->cap_resp * 2 : first_cap;
        int64_t *n = realloc(r->resp_ns, nc * sizeof *n);
        if (!n) {
            bench_record_fail(r, 0, "ClientError", "out of memory");
            return -1;
        }
        r->resp_ns = n;
        r->cap_resp = nc;
    }
    r->resp_ns[r->n_resp++] = now;
    if (ch->content_added && !r->first_output_ns) r->first_output_ns = now;
    return 1;
}

int bench_record_event(bench_record *r, const char *type, const char *data, size_t len,
                       int64_t now) {
    if (strcmp(type, "error") == 0) {
        bench_record_fail(r, 0, "SSEError", "server sent an error event: %.*s",
                          (int)(len > 200 ? 200 : len), data);
        return -1;
    }
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) return 0;
    bench_chunk ch = {
        .content = &r->text,
        .content_len = &r->text_len,
        .content_cap = &r->text_cap,
        .reasoning = &r->reasoning,
        .reasoning_len = &r->reasoning_len,
        .reasoning_cap = &r->reasoning_cap,
    };
    if (bench_chunk_scan(data, len, &ch)) {
        bench_record_fail(r, 0, "SSEParseError", "malformed SSE data (not a JSON object)");
        return -1;
    }
    if (ch.error) {
        bench_record_fail(r, ch.error_code, "ServerError", "%s",
                          ch.error_msg[0] ? ch.error_msg : "error in stream");
        return -1;
    }
    return record_output(r, &ch, now, 64);
}

int bench_record_body(bench_record *r, const char *body, size_t len, int64_t now) {
    bench_chunk ch = {
        .content = &r->text,
        .content_len = &r->text_len,
        .content_cap = &r->text_cap,
        .reasoning = &r->reasoning,
        .reasoning_len = &r->reasoning_len,
        .reasoning_cap = &r->reasoning_cap,
    };
    if (len == 0) {
        bench_record_fail(r, 0, "ResponseError", "empty response body");
        return -1;
    }
    if (bench_chunk_scan(body, len, &ch)) {
        bench_record_fail(r, 0, "ResponseParseError", "response body is not JSON");
        return -1;
    }
    if (ch.error) {
        bench_record_fail(r, ch.error_code, "ServerError", "%s",
                          ch.error_msg[0] ? ch.error_msg : "error in response");
        return -1;
    }
    return record_output(r, &ch, now, 4);
}

static int on_event(void *ctx, const char *type, const char *data, size_t len) {
    conn *c = ctx;
    loop *L = c->L;
    L->run->sse_events++;
    int rc = bench_record_event(rec_of(c), type, data, len, L->now);
    if (rc > 0) L->run->responses++;
    return rc < 0 ? -1 : 0;
}

static void response_done(loop *L, conn *c) {
    bench_record *r = rec_of(c);
    hresp *h = &c->resp;
    r->end_ns = L->now;
    if (h->status != 200) {
        char msg[512];
        size_t bl = h->body_len > 400 ? 400 : h->body_len;
        snprintf(msg, sizeof msg, "%.*s", (int)bl, h->body ? h->body : "");
        for (char *p = msg; *p; p++)
            if (*p == '\n' || *p == '\r') *p = ' ';
        bench_record_fail(r, h->status, h->reason[0] ? h->reason : "HTTPError", "%s", msg);
        /* An early answer (before the request was fully sent) leaves the stream unusable. */
        request_end(L, c, h->keep_alive && c->woff == c->wlen);
        return;
    }
    if (!h->sse && bench_record_body(r, h->body ? h->body : "", h->body_len, L->now) > 0)
        L->run->responses++;
    request_end(L, c, h->keep_alive && !r->err_type && c->woff == c->wlen);
}

static void conn_readable(loop *L, conn *c) {
    for (;;) {
        ssize_t k = recv(c->fd, L->rbuf, L->rbuf_size, 0);
        if (k > 0) {
            L->now = mono_ns();
            L->run->bytes_in += k;
            if (c->state == C_IDLE) { /* bytes on an idle connection: drop it */
                conn_close(L, c, false);
                return;
            }
            bench_record *r = rec_of(c);
            if (!c->got_bytes) {
                c->got_bytes = true;
                r->ack_ns = L->now;
            }
            size_t used;
            hresp_result hr = hresp_feed(&c->resp, L->rbuf, k, &used);
            if (hr == HRESP_DONE) {
                bool extra = used < (size_t)k;
                response_done(L, c);
                if (extra && c->state == C_IDLE) conn_close(L, c, false);
                return;
            }
            if (hr == HRESP_ERROR) {
                char msg[200];
                snprintf(msg, sizeof msg, "malformed HTTP response: %s", c->resp.error);
                request_fail(L, c, 0, "HTTPProtocolError", msg);
                return;
            }
            if (hr == HRESP_STOPPED) { /* the record already holds the error */
                request_fail(L, c, 0, "SSEParseError", "stopped");
                return;
            }
            continue;
        }
        if (k < 0 && errno == EAGAIN) return;
        if (k < 0 && errno == EINTR) continue;
        /* EOF or a reset. */
        L->now = mono_ns();
        if (c->state == C_IDLE) {
            conn_close(L, c, false);
            return;
        }
        if (c->state == C_CONNECTING) return; /* the error comes through EPOLLOUT/EPOLLERR */
        int err = k < 0 ? errno : 0;
        if (k == 0) {
            hresp_result hr = hresp_eof(&c->resp);
            if (hr == HRESP_DONE) {
                c->resp.keep_alive = false;
                response_done(L, c);
                return;
            }
            if (hr == HRESP_STOPPED) {
                request_fail(L, c, 0, "SSEParseError", "stopped");
                return;
            }
        }
        if (retry_fresh(L, c)) return;
        if (err == ECONNRESET)
            request_fail(L, c, 0, "ClientConnectionError",
                         c->got_bytes ? "connection reset by peer mid-response"
                                      : "connection reset by peer before any response");
        else
            request_fail(L, c, 0, "ServerDisconnectedError",
                         c->got_bytes ? "server disconnected mid-response"
                                      : "server disconnected before any response");
        return;
    }
}

static void conn_event(loop *L, conn *c, uint32_t ev) {
    if (c->state == C_FREE) return;
    if (c->state == C_CONNECTING && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        L->now = mono_ns();
        if (err) {
            char msg[400];
            snprintf(msg, sizeof msg, "cannot connect to %s:%d: %s", L->cfg->host, L->cfg->port,
                     strerror(err));
            request_fail(L, c, 0, "ClientConnectorError", msg);
            return;
        }
        c->state = C_WRITING;
    }
    if (c->state == C_WRITING && (ev & EPOLLOUT)) {
        if (!write_request(L, c)) return;
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        if (c->state == C_READING || c->state == C_IDLE || c->state == C_WRITING)
            conn_readable(L, c);
    }
}

/* ---- schedule ------------------------------------------------------------------------------- */

static double interval_ns(loop *L) {
    double mean = 1e9 / L->cfg->request_rate;
    if (L->cfg->rate_mode == BENCH_CONSTANT) return mean;
    double u = bench_rng_uniform(&L->arrive);
    return -log(1.0 - u) * mean;
}

static bool fixed_schedule(const loop *L) {
    return L->cfg->fixed_schedule ||
           (L->pool->sequential && L->pool->n && L->pool->conv[0].timestamp_ms >= 0 &&
            L->cfg->request_rate == 0 && !L->cfg->concurrency);
}

static void start_phase(loop *L, bench_phase ph) {
    const bench_config *cfg = L->cfg;
    L->phase = ph;
    L->issued = 0;
    L->issuing_done = false;
    L->phase_start = L->now;
    L->next_due = L->now;
    if (ph == BENCH_WARMUP) {
        L->target = cfg->warmup_request_count;
    } else {
        L->run->profile_start_ns = L->now;
        if (cfg->benchmark_duration_s > 0) {
            L->target = -1;
            L->duration_end = L->now + (int64_t)(cfg->benchmark_duration_s * 1e9);
            L->grace_end = L->duration_end + (int64_t)(cfg->grace_period_s * 1e9);
        } else {
            L->target = cfg->request_count;
        }
        if (fixed_schedule(L)) {
            L->target = L->pool->n;
            L->trace_next = 0;
        }
    }
    if (L->target == 0) L->issuing_done = true;
}

/* When the next fixed-schedule request is due (monotonic), or INT64_MAX when none. */
static int64_t trace_due(loop *L) {
    while (L->trace_next < L->pool->n) {
        const bench_conv *cv = &L->pool->conv[L->trace_next];
        long long ts = cv->timestamp_ms < 0 ? 0 : cv->timestamp_ms;
        if (L->cfg->fixed_schedule_end_offset_ms >= 0 &&
            ts > L->cfg->fixed_schedule_end_offset_ms) {
            L->trace_next = L->pool->n;
            break;
        }
        if (L->cfg->fixed_schedule_start_offset_ms >= 0 &&
            ts < L->cfg->fixed_schedule_start_offset_ms) {
            L->trace_next++;
            continue;
        }
        return L->phase_start + (ts - L->trace_offset_ms) * 1000000;
    }
    return INT64_MAX;
}

/* Issue every request that is due now; returns the next time something becomes due. */
static int64_t schedule(loop *L) {
    const bench_config *cfg = L->cfg;
    for (;;) {
        if (L->issuing_done || g_interrupt) return INT64_MAX;
        if (L->target >= 0 && L->issued >= L->target) {
            L->issuing_done = true;
            return INT64_MAX;
        }
        if (L->target < 0 && L->now >= L->duration_end) {
            L->issuing_done = true;
            return INT64_MAX;
        }
        if (L->phase == BENCH_PROFILING && fixed_schedule(L)) {
            int64_t due = trace_due(L);
            if (due == INT64_MAX) {
                L->issuing_done = true;
                return INT64_MAX;
            }
            if (L->now < due) return due;
            issue(L);
            continue;
        }
        bool slot = !cfg->concurrency || L->in_flight < cfg->concurrency;
        if (cfg->request_rate > 0) {
            if (L->now < L->next_due) return L->next_due;
            if (!slot) {
                L->slot_wait = true;
                return INT64_MAX; /* a completion frees a slot */
            }
            int64_t due = L->next_due;
            issue(L);
            /* A credit that had to wait for a slot restarts the clock: missed slots are not made
             * up. Lateness of the loop itself is absorbed (the schedule stays on its grid). */
            int64_t base = L->slot_wait ? L->now : due;
            L->slot_wait = false;
            L->next_due = base + (int64_t)interval_ns(L);
            continue;
        }
        if (!slot) return INT64_MAX;
        issue(L);
        L->now = mono_ns();
    }
}

static void expire_timers(loop *L) {
    timer_ent *t;
    while ((t = tq_peek(&L->cancels)) && t->at <= L->now) {
        conn *c = t->c;
        uint32_t gen = t->gen;
        tq_pop(&L->cancels);
        if (c->gen != gen || c->state == C_FREE || c->state == C_IDLE) continue;
        bench_record *r = rec_of(c);
        r->cancelled = true;
        r->cancel_ns = L->now;
        char msg[100];
        snprintf(msg, sizeof msg, "request cancelled after %.3g s", L->cfg->cancel_delay_s);
        bench_record_fail(r, 499, "RequestCancellationError", "%s", msg);
        r->end_ns = L->now;
        c->gen++;
        L->in_flight--;
        if (r->phase == BENCH_PROFILING) L->done_profiling++, L->errors_profiling++;
        conn_close(L, c, true);
    }
    /* Entries of finished requests are dropped from the head as well, so the queue holds about
     * what is in flight rather than every request of the last --request-timeout-seconds. */
    while ((t = tq_peek(&L->timeouts)) && (t->at <= L->now || t->c->gen != t->gen ||
                                           t->c->state == C_FREE || t->c->state == C_IDLE)) {
        conn *c = t->c;
        uint32_t gen = t->gen;
        tq_pop(&L->timeouts);
        if (c->gen != gen || c->state == C_FREE || c->state == C_IDLE) continue;
        char msg[100];
        snprintf(msg, sizeof msg, "request timed out after %.6g s", L->cfg->request_timeout_s);
        request_fail(L, c, 0, "TimeoutError", msg);
    }
}

/* End of the grace period, or an interrupt: everything in flight is dropped. */
static void drop_in_flight(loop *L, bool interrupted) {
    for (size_t i = 0; i < L->n_all; i++) {
        conn *c = L->all[i];
        if (c->state == C_FREE || c->state == C_IDLE) continue;
        bench_record *r = rec_of(c);
        r->dropped = true;
        r->cancelled = true;
        r->cancel_ns = L->now;
        bench_record_fail(r, 499, "RequestCancellationError",
                          interrupted ? "benchmark interrupted"
                                      : "still running when the grace period ended");
        r->end_ns = L->now;
        c->gen++;
        L->in_flight--;
        conn_close(L, c, true);
    }
}

static void progress(loop *L, bool final) {
    if (!L->tty) return;
    double dt = (L->now - L->last_progress_ns) / 1e9;
    double rate = dt > 0 ? (L->run->responses - L->last_responses) / dt : 0;
    L->last_responses = L->run->responses;
    L->last_progress_ns = L->now;
    char total[32] = "";
    if (L->phase == BENCH_PROFILING && L->target > 0)
        snprintf(total, sizeof total, "/%lld", L->target);
    fprintf(stderr,
            "\r\033[K[%s] %llu%s done, %d in flight, %.0f tokens/s (chunks), %llu errors, %.0f s",
            L->phase == BENCH_WARMUP ? "warmup" : "profiling",
            L->phase == BENCH_WARMUP ? (unsigned long long)L->issued - L->in_flight
                                     : (unsigned long long)L->done_profiling,
            total, L->in_flight, rate, (unsigned long long)L->errors_profiling,
            (L->now - L->phase_start) / 1e9);
    if (final) fputc('\n', stderr);
}

static bool resolve(loop *L) {
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", L->cfg->port);
    int rc = getaddrinfo(L->cfg->host, port, &hints, &res);
    if (rc || !res) {
        MG_ERRF(MG_EUNAVAIL, "--url %s: cannot resolve %s: %s", L->cfg->url, L->cfg->host,
                gai_strerror(rc));
        return false;
    }
    memcpy(&L->addr, res->ai_addr, res->ai_addrlen);
    L->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return true;
}

static void raise_fd_limit(int want) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    if (rl.rlim_cur >= (rlim_t)want) return;
    rl.rlim_cur = rl.rlim_max < (rlim_t)want ? rl.rlim_max : (rlim_t)want;
    setrlimit(RLIMIT_NOFILE, &rl);
}

static double tv_s(struct timeval tv) {
    return tv.tv_sec + tv.tv_usec / 1e6;
}

mg_status bench_run_execute(const bench_config *cfg, const bench_pool *pool, bench_run *run) {
    memset(run, 0, sizeof *run);
    loop L = {.cfg = cfg, .pool = pool, .run = run, .ep = -1};
    if (!resolve(&L)) return mg_err_status();
    raise_fd_limit(cfg->concurrency + 1024 > 65536 ? cfg->concurrency + 1024 : 65536);
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && cfg->concurrency + 64 > (long long)rl.rlim_cur)
        MG_WARN("--concurrency %d exceeds the open-file limit (%llu): connections beyond it will "
                "fail (raise ulimit -n)",
                cfg->concurrency, (unsigned long long)rl.rlim_cur);
    L.ep = epoll_create1(EPOLL_CLOEXEC);
    if (L.ep < 0) return MG_ERRF(MG_EIO, "epoll_create1: %s", strerror(errno));
    L.rbuf_size = 256 * 1024;
    L.rbuf = malloc(L.rbuf_size);
    if (!L.rbuf) {
        close(L.ep);
        return MG_ERRF(MG_ENOMEM, "out of memory");
    }
    bench_rng_seed(&L.pick, cfg->random_seed + 10);
    bench_rng_seed(&L.arrive, cfg->random_seed + 11);
    bench_rng_seed(&L.cancel, cfg->random_seed + 12);
    bench_rng_seed(&L.ids, cfg->random_seed + 13 + (uint64_t)wall_ns());
    L.tty = isatty(2) && strcmp(cfg->ui, "none") != 0;
    if (pool->sequential && pool->n) {
        L.trace_offset_ms = 0;
        if (cfg->fixed_schedule_auto_offset) {
            int64_t mn = INT64_MAX;
            for (size_t i = 0; i < pool->n; i++)
                if (pool->conv[i].timestamp_ms >= 0 && pool->conv[i].timestamp_ms < mn)
                    mn = pool->conv[i].timestamp_ms;
            L.trace_offset_ms = mn == INT64_MAX ? 0 : mn;
        } else if (cfg->fixed_schedule_start_offset_ms >= 0) {
            L.trace_offset_ms = cfg->fixed_schedule_start_offset_ms;
        }
    }
    g_interrupt = 0;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    run->start_wall_ns = wall_ns();
    int64_t t0 = mono_ns();
    L.now = t0;
    L.last_progress_ns = t0;
    L.next_progress = t0 + 1000000000;
    bool has_warmup = cfg->warmup_request_count > 0 && !fixed_schedule(&L);
    if (cfg->warmup_request_count > 0 && !has_warmup)
        MG_WARN("warmup is not used with a fixed schedule");
    start_phase(&L, has_warmup ? BENCH_WARMUP : BENCH_PROFILING);
    struct epoll_event evs[1024];
    for (;;) {
        L.now = mono_ns();
        if (g_interrupt && !run->was_cancelled) {
            run->was_cancelled = true;
            L.issuing_done = true;
            drop_in_flight(&L, true);
        }
        expire_timers(&L);
        int64_t due = schedule(&L);
        if (L.issuing_done && L.in_flight == 0) {
            if (L.phase == BENCH_WARMUP && !g_interrupt) {
                start_phase(&L, BENCH_PROFILING);
                continue;
            }
            break;
        }
        if (L.phase == BENCH_PROFILING && L.target < 0 && L.issuing_done && L.now >= L.grace_end) {
            drop_in_flight(&L, false);
            break;
        }
        if (L.now >= L.next_progress) {
            progress(&L, false);
            L.next_progress = L.now + 1000000000;
        }
        int64_t wake = L.next_progress;
        if (due < wake) wake = due;
        timer_ent *t = tq_peek(&L.cancels);
        if (t && t->at < wake) wake = t->at;
        t = tq_peek(&L.timeouts);
        if (t && t->at < wake) wake = t->at;
        if (L.phase == BENCH_PROFILING && L.target < 0) {
            int64_t edge = L.issuing_done ? L.grace_end : L.duration_end;
            if (edge < wake) wake = edge;
        }
        int64_t wait_ns = wake - L.now;
        if (wait_ns < 0) wait_ns = 0;
        struct timespec ts = {wait_ns / 1000000000, wait_ns % 1000000000};
        int n = epoll_pwait2(L.ep, evs, 1024, &ts, NULL);
        if (n < 0 && errno == ENOSYS) {
            n = epoll_wait(L.ep, evs, 1024, (int)((wait_ns + 999999) / 1000000));
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            MG_ERROR("epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) conn_event(&L, evs[i].data.ptr, evs[i].events);
    }
    L.now = mono_ns();
    progress(&L, true);
    getrusage(RUSAGE_SELF, &ru1);
    run->end_wall_ns = wall_ns();
    run->wall_s = (L.now - t0) / 1e9;
    run->cpu_user_s = tv_s(ru1.ru_utime) - tv_s(ru0.ru_utime);
    run->cpu_sys_s = tv_s(ru1.ru_stime) - tv_s(ru0.ru_stime);
    for (size_t i = 0; i < L.n_all; i++) {
        conn *c = L.all[i];
        if (c->fd >= 0) close(c->fd);
        hresp_deinit(&c->resp);
        free(c->wbuf);
        free(c);
    }
    free(L.all);
    free(L.rbuf);
    free(L.cancels.e);
    free(L.timeouts.e);
    close(L.ep);
    return MG_OK;
}

void bench_run_deinit(bench_run *r) {
    for (size_t i = 0; i < r->n_recs; i++) bench_record_free(&r->recs[i]);
    free(r->recs);
    memset(r, 0, sizeof *r);
}

typedef struct count_job {
    bench_run *run;
    const btok *t;
    bool use_server;
    size_t from, to;
} count_job;

static void *count_thread(void *arg) {
    count_job *j = arg;
    for (size_t i = j->from; i < j->to; i++) {
        bench_record *r = &j->run->recs[i];
        if (j->use_server && r->usage_completion_tokens >= 0) {
            r->output_tokens = r->usage_completion_tokens;
            continue;
        }
        r->output_tokens = r->text_len ? (int)btok_count(j->t, r->text, r->text_len) : 0;
        r->reasoning_tokens =
            r->reasoning_len ? (int)btok_count(j->t, r->reasoning, r->reasoning_len) : 0;
    }
    return NULL;
}

double bench_run_count_tokens(bench_run *r, const btok *t, int nthreads, bool use_server) {
    int64_t t0 = mono_ns();
    if (nthreads < 1) nthreads = 1;
    if (nthreads > 64) nthreads = 64;
    pthread_t th[64];
    bool made[64] = {0};
    count_job jobs[64];
    size_t per = (r->n_recs + nthreads - 1) / nthreads;
    for (int i = 0; i < nthreads; i++) {
        size_t from = i * per, to = from + per > r->n_recs ? r->n_recs : from + per;
        if (from >= to) break;
        jobs[i] = (count_job){r, t, use_server, from, to};
        made[i] = pthread_create(&th[i], NULL, count_thread, &jobs[i]) == 0;
        if (!made[i]) count_thread(&jobs[i]); /* no thread: do it here */
    }
    for (int i = 0; i < nthreads; i++)
        if (made[i]) pthread_join(th[i], NULL);
    return (mono_ns() - t0) / 1e9;
}
