/* test_bus.c - the NATS wrapper and the token-stream layer against a real nats-server.
 *
 * One binary, one case per ctest entry (`test_bus <case>`; no argument runs all). Cases use the
 * server named by MAGNETO_NATS_URL (tests/run.sh starts it) or, when unset, one they start with
 * mg_testspawn; the restart case always starts its own, since it stops and restarts it.
 * Callbacks run on libnats threads, so they only record into mutex-guarded state; every CHECK
 * runs on the main thread. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "check.h"
#include "log.h"
#include "spawn.h"

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Wait until *flag (read under mu) reaches want or timeout_ms passes. */
static bool wait_count(pthread_mutex_t *mu, pthread_cond_t *cv, const int *count, int want,
                       int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    pthread_mutex_lock(mu);
    while (*count < want && now_ms() < end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20000000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(cv, mu, &ts);
    }
    bool ok = *count >= want;
    pthread_mutex_unlock(mu);
    return ok;
}

static spawn_srv g_srv; /* our own server when MAGNETO_NATS_URL is unset */
static char g_url[128];

static const char *shared_url(void) {
    if (g_url[0]) return g_url;
    const char *env = getenv("MAGNETO_NATS_URL");
    if (env && *env) {
        snprintf(g_url, sizeof g_url, "%s", env);
    } else if (spawn_nats(&g_srv) == 0) {
        snprintf(g_url, sizeof g_url, "%s", g_srv.url);
    }
    return g_url;
}

static bus *connect_to(const char *url, const char *name) {
    bus_options o;
    bus_options_default(&o);
    o.url = url;
    o.name = name;
    o.reconnect_wait_ms = 100;
    bus *b = NULL;
    CHECK_OK(bus_connect(&o, &b));
    return b;
}

/* A subject no other test run on the same server uses. */
static void unique_subject(char *buf, size_t n, const char *what) {
    snprintf(buf, n, "test.%s.%d.%" PRId64, what, (int)getpid(), now_ms());
}

/* ---- plain pub/sub with reply subject and headers ------------------------------------------ */

typedef struct recorder {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int count;
    int in_order; /* messages whose index matched their arrival position */
    int replies_ok, headers_ok;
    int *per_index; /* deliveries per message index (queue groups) */
    int nindex;
} recorder;

static void recorder_init(recorder *r, int nindex) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->nindex = nindex;
    r->per_index = calloc(nindex > 0 ? nindex : 1, sizeof(int));
}

static void recorder_deinit(recorder *r) {
    free(r->per_index);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

static void on_record(void *arg, const bus_msg *m) {
    recorder *r = arg;
    int idx = -1;
    char buf[32] = "";
    if (m->len < sizeof buf) {
        memcpy(buf, m->data, m->len);
        idx = atoi(buf);
    }
    const char *h = bus_msg_header(m, "X-Index");
    pthread_mutex_lock(&r->mu);
    if (idx == r->count) r->in_order++;
    if (m->reply && strcmp(m->reply, "reply.here") == 0) r->replies_ok++;
    if (h && atoi(h) == idx) r->headers_ok++;
    if (idx >= 0 && idx < r->nindex) r->per_index[idx]++;
    r->count++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* A subscription that destroys itself from its first callback. */
typedef struct self_sub {
    bus_sub *sub;
    pthread_mutex_t mu;
    int calls;
} self_sub;

static void on_self_destroy(void *arg, const bus_msg *m) {
    self_sub *ss = arg;
    pthread_mutex_lock(&ss->mu);
    int n = ++ss->calls;
    pthread_mutex_unlock(&ss->mu);
    if (n == 1) bus_sub_destroy(ss->sub); /* returns at once; freed after this handler */
}

static void case_pubsub(void) {
    bus *b = connect_to(shared_url(), "test-pubsub");
    if (!b) return;
    char subj[128];
    unique_subject(subj, sizeof subj, "pubsub");
    recorder r;
    recorder_init(&r, 200);
    bus_sub *sub = NULL;
    CHECK_OK(bus_subscribe(b, subj, NULL, on_record, &r, &sub));
    CHECK_OK(bus_flush(b, 2000)); /* the server knows the subscription before we publish */
    for (int i = 0; i < 200; i++) {
        char data[16], hv[16];
        int n = snprintf(data, sizeof data, "%d", i);
        snprintf(hv, sizeof hv, "%d", i);
        if (i % 2 == 0) {
            CHECK_OK(bus_publish(b, subj, "reply.here", data, (size_t)n));
        } else {
            bus_header h = {"X-Index", hv};
            CHECK_OK(bus_publish_hdr(b, subj, "reply.here", &h, 1, data, (size_t)n));
        }
    }
    CHECK_OK(bus_flush(b, 2000));
    CHECK(wait_count(&r.mu, &r.cv, &r.count, 200, 5000));
    pthread_mutex_lock(&r.mu);
    CHECK_EQ_INT(r.count, 200);
    CHECK_EQ_INT(r.in_order, 200);
    CHECK_EQ_INT(r.replies_ok, 200);
    CHECK_EQ_INT(r.headers_ok, 100); /* only the odd ones carried the header */
    pthread_mutex_unlock(&r.mu);

    /* After destroy the callback never runs again. */
    bus_sub_destroy(sub);
    CHECK_OK(bus_publish(b, subj, NULL, "999", 3));
    CHECK_OK(bus_flush(b, 2000));
    sleep_ms(100);
    pthread_mutex_lock(&r.mu);
    CHECK_EQ_INT(r.count, 200);
    pthread_mutex_unlock(&r.mu);

    /* Destroyed from inside its own callback: exactly one message is handled. */
    self_sub ss = {0};
    pthread_mutex_init(&ss.mu, NULL);
    CHECK_OK(bus_subscribe(b, subj, NULL, on_self_destroy, &ss, &ss.sub));
    CHECK_OK(bus_flush(b, 2000));
    for (int i = 0; i < 5; i++) CHECK_OK(bus_publish(b, subj, NULL, "x", 1));
    CHECK_OK(bus_flush(b, 2000));
    sleep_ms(200);
    pthread_mutex_lock(&ss.mu);
    CHECK_EQ_INT(ss.calls, 1);
    pthread_mutex_unlock(&ss.mu);
    pthread_mutex_destroy(&ss.mu);

    /* Bad arguments are errors, not crashes. */
    CHECK_EQ_INT(bus_publish(b, "", NULL, "x", 1), MG_EINVAL);
    CHECK_EQ_INT(bus_subscribe(b, "", NULL, on_record, &r, &sub), MG_EINVAL);
    bus_options bad;
    bus_options_default(&bad);
    bad.url = "nats://127.0.0.1:1"; /* nothing listens there */
    bad.connect_timeout_ms = 500;
    bus *nb = NULL;
    CHECK_EQ_INT(bus_connect(&bad, &nb), MG_EUNAVAIL);
    CHECK(nb == NULL);
    bus_destroy(b);
    recorder_deinit(&r);
}

/* ---- queue groups ---------------------------------------------------------------------------- */

static void case_queue(void) {
    bus *b = connect_to(shared_url(), "test-queue");
    if (!b) return;
    char subj[128];
    unique_subject(subj, sizeof subj, "queue");
    enum { N = 2000 };
    recorder q1, q2, all;
    recorder_init(&q1, N);
    recorder_init(&q2, N);
    recorder_init(&all, N);
    bus_sub *s1 = NULL, *s2 = NULL, *s3 = NULL;
    CHECK_OK(bus_subscribe(b, subj, "workers", on_record, &q1, &s1));
    CHECK_OK(bus_subscribe(b, subj, "workers", on_record, &q2, &s2));
    CHECK_OK(bus_subscribe(b, subj, NULL, on_record, &all, &s3));
    CHECK_OK(bus_flush(b, 2000));
    for (int i = 0; i < N; i++) {
        char data[16];
        int n = snprintf(data, sizeof data, "%d", i);
        CHECK_OK(bus_publish(b, subj, NULL, data, (size_t)n));
    }
    CHECK_OK(bus_flush(b, 2000));
    CHECK(wait_count(&all.mu, &all.cv, &all.count, N, 5000));
    /* Both queue members together get N; wait for the sum. */
    int64_t end = now_ms() + 5000;
    int sum = 0;
    while (now_ms() < end) {
        pthread_mutex_lock(&q1.mu);
        sum = q1.count;
        pthread_mutex_unlock(&q1.mu);
        pthread_mutex_lock(&q2.mu);
        sum += q2.count;
        pthread_mutex_unlock(&q2.mu);
        if (sum >= N) break;
        sleep_ms(10);
    }
    sleep_ms(100); /* any extra delivery would show up now */
    bus_sub_destroy(s1);
    bus_sub_destroy(s2);
    bus_sub_destroy(s3);
    CHECK_EQ_INT(all.count, N);
    CHECK_EQ_INT(q1.count + q2.count, N);
    CHECK_MSG(q1.count > 0 && q2.count > 0, "q1 %d, q2 %d: both members should share the load",
              q1.count, q2.count);
    int once = 0;
    for (int i = 0; i < N; i++) once += q1.per_index[i] + q2.per_index[i] == 1;
    CHECK_EQ_INT(once, N);
    printf("queue group: %d + %d of %d messages\n", q1.count, q2.count, N);
    bus_destroy(b);
    recorder_deinit(&q1);
    recorder_deinit(&q2);
    recorder_deinit(&all);
}

/* ---- stream helpers ----------------------------------------------------------------------- */

/* Records the callback events of one direct-mode stream. */
typedef struct events {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int nchunks;
    uint64_t seqs[64];
    char data[64][32];
    bool last_seen;
    mg_status end; /* MG_OK until a failure call */
    int ends;      /* failure calls (must be at most 1) */
    int done;      /* last chunk or failure */
    bool close_in_cb;
} events;

static void events_init(events *e) {
    memset(e, 0, sizeof *e);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
}

static void events_deinit(events *e) {
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
}

static void on_event(void *arg, bus_stream *s, const bus_chunk *c, mg_status st) {
    events *e = arg;
    pthread_mutex_lock(&e->mu);
    if (c) {
        if (e->nchunks < 64) {
            e->seqs[e->nchunks] = c->seq;
            size_t n = c->len < 31 ? c->len : 31;
            memcpy(e->data[e->nchunks], c->data, n);
            e->data[e->nchunks][n] = 0;
        }
        e->nchunks++;
        if (c->last) e->last_seen = true, e->done++;
    } else if (st != MG_OK) {
        e->end = st;
        e->ends++;
        e->done++;
    }
    bool close_now = e->close_in_cb && e->done;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (close_now) bus_stream_close(s); /* allowed from the stream's own callback */
}

static void send_chunk(bus *b, const char *reply, uint64_t seq, bool last) {
    char d[32];
    int n = snprintf(d, sizeof d, "chunk-%" PRIu64, seq);
    CHECK_OK(bus_stream_send(b, reply, seq, d, (size_t)n, last));
}

/* ---- gaps and duplicates --------------------------------------------------------------------- */

static void case_gap(void) {
    bus *rx = connect_to(shared_url(), "test-gap-rx");
    bus *tx = connect_to(shared_url(), "test-gap-tx");
    if (!rx || !tx) return;
    bus_inbox *ib = NULL;
    CHECK_OK(bus_inbox_create(rx, NULL, &ib));
    if (!ib) return;
    CHECK_OK(bus_flush(rx, 2000));

    /* Direct mode: 0, 1, 3 (3 is marked last) -> chunks 0 and 1, then MG_EGAP, never complete. */
    events e;
    events_init(&e);
    bus_stream *s = NULL;
    const char *reply = NULL;
    bus_stream_opts o = {.fn = on_event, .arg = &e};
    CHECK_OK(bus_inbox_open(ib, "req-gap-1", &o, &s, &reply));
    CHECK(reply && strncmp(reply, bus_inbox_subject(ib), strlen(bus_inbox_subject(ib))) == 0);
    CHECK(reply && strcmp(reply + strlen(reply) - 9, "req-gap-1") == 0);
    send_chunk(tx, reply, 0, false);
    send_chunk(tx, reply, 1, false);
    send_chunk(tx, reply, 3, true);
    CHECK_OK(bus_flush(tx, 2000));
    CHECK(wait_count(&e.mu, &e.cv, &e.done, 1, 5000));
    sleep_ms(50);
    pthread_mutex_lock(&e.mu);
    CHECK_EQ_INT(e.nchunks, 2);
    CHECK_EQ_INT(e.seqs[0], 0);
    CHECK_EQ_INT(e.seqs[1], 1);
    CHECK_EQ_STR(e.data[1], "chunk-1");
    CHECK(!e.last_seen);
    CHECK_EQ_INT(e.end, MG_EGAP);
    CHECK_EQ_INT(e.ends, 1);
    pthread_mutex_unlock(&e.mu);
    CHECK_EQ_INT(bus_stream_state_get(s), BUS_STREAM_FAILED);
    CHECK_EQ_INT(bus_stream_status(s), MG_EGAP);
    /* A late chunk 2 does not revive it. */
    send_chunk(tx, reply, 2, false);
    CHECK_OK(bus_flush(tx, 2000));
    sleep_ms(50);
    CHECK_EQ_INT(bus_stream_state_get(s), BUS_STREAM_FAILED);
    pthread_mutex_lock(&e.mu);
    CHECK_EQ_INT(e.nchunks, 2);
    CHECK_EQ_INT(e.ends, 1);
    pthread_mutex_unlock(&e.mu);
    char closed_reply[200];
    snprintf(closed_reply, sizeof closed_reply, "%s", reply);
    bus_stream_close(s);
    events_deinit(&e);
    send_chunk(tx, closed_reply, 4, false); /* after close: an unknown id, dropped */

    /* Queue mode: chunks before the gap come out first, then MG_EGAP. */
    CHECK_OK(bus_inbox_open(ib, "req-gap-2", NULL, &s, &reply));
    send_chunk(tx, reply, 0, false);
    send_chunk(tx, reply, 1, false);
    send_chunk(tx, reply, 3, true);
    CHECK_OK(bus_flush(tx, 2000));
    bus_chunk c;
    CHECK_OK(bus_stream_next(s, 2000, &c));
    CHECK_EQ_INT(c.seq, 0);
    CHECK(c.len == 7 && memcmp(c.data, "chunk-0", 7) == 0);
    CHECK_OK(bus_stream_next(s, 2000, &c));
    CHECK_EQ_INT(c.seq, 1);
    CHECK_EQ_INT(bus_stream_next(s, 2000, &c), MG_EGAP);
    CHECK_EQ_INT(bus_stream_next(s, 0, &c), MG_EGAP); /* it stays failed */
    CHECK_EQ_INT(bus_stream_state_get(s), BUS_STREAM_FAILED);
    bus_stream_close(s);

    /* Duplicates are dropped; the stream completes. */
    events_init(&e);
    o.arg = &e;
    CHECK_OK(bus_inbox_open(ib, "req-dup", &o, &s, &reply));
    send_chunk(tx, reply, 0, false);
    send_chunk(tx, reply, 0, false);
    send_chunk(tx, reply, 1, false);
    send_chunk(tx, reply, 0, false);
    send_chunk(tx, reply, 2, true);
    CHECK_OK(bus_flush(tx, 2000));
    CHECK(wait_count(&e.mu, &e.cv, &e.done, 1, 5000));
    pthread_mutex_lock(&e.mu);
    CHECK_EQ_INT(e.nchunks, 3);
    CHECK(e.last_seen);
    CHECK_EQ_INT(e.ends, 0);
    pthread_mutex_unlock(&e.mu);
    CHECK_EQ_INT(bus_stream_state_get(s), BUS_STREAM_DONE);
    CHECK_EQ_INT(bus_stream_status(s), MG_OK);
    bus_stream_close(s);
    events_deinit(&e);

    /* Bad ids, duplicate ids, chunks for unknown ids and without a sequence header. */
    CHECK_EQ_INT(bus_inbox_open(ib, "has.dot", NULL, &s, &reply), MG_EINVAL);
    CHECK_EQ_INT(bus_inbox_open(ib, "", NULL, &s, &reply), MG_EINVAL);
    CHECK_OK(bus_inbox_open(ib, "same", NULL, &s, &reply));
    bus_stream *s2 = NULL;
    CHECK_EQ_INT(bus_inbox_open(ib, "same", NULL, &s2, NULL), MG_EEXIST);
    CHECK(s2 == NULL);
    bus_stream_close(s);
    bus_stream *auto1 = NULL, *auto2 = NULL;
    CHECK_OK(bus_inbox_open(ib, NULL, NULL, &auto1, NULL));
    CHECK_OK(bus_inbox_open(ib, NULL, NULL, &auto2, NULL));
    CHECK(auto1 && auto2 && strcmp(bus_stream_id(auto1), bus_stream_id(auto2)) != 0);
    bus_stream_close(auto1);
    bus_stream_close(auto2);
    char unknown[200];
    snprintf(unknown, sizeof unknown, "%s.nobody", bus_inbox_subject(ib));
    send_chunk(tx, unknown, 0, false);
    CHECK_OK(bus_publish(tx, unknown, NULL, "no-seq", 6));
    CHECK_OK(bus_flush(tx, 2000));
    sleep_ms(100);
    bus_inbox_stats st;
    bus_inbox_stats_get(ib, &st);
    CHECK_EQ_INT(st.gaps, 2);
    CHECK_EQ_INT(st.duplicates, 2);
    CHECK_EQ_INT(st.unknown, 2); /* "nobody" and chunk 4 of the closed req-gap-1 */
    CHECK_EQ_INT(st.malformed, 1);
    CHECK_EQ_INT(st.open_streams, 0);

    /* Close from inside the callback, then destroy the inbox with a stream left open: it gets
     * MG_ECLOSED. */
    events_init(&e);
    e.close_in_cb = true;
    o.arg = &e;
    CHECK_OK(bus_inbox_open(ib, "req-self-close", &o, &s, &reply));
    send_chunk(tx, reply, 0, true);
    CHECK_OK(bus_flush(tx, 2000));
    CHECK(wait_count(&e.mu, &e.cv, &e.done, 1, 5000));
    sleep_ms(20);
    bus_inbox_stats_get(ib, &st);
    CHECK_EQ_INT(st.open_streams, 0);
    events_deinit(&e);

    events left;
    events_init(&left);
    o.arg = &left;
    CHECK_OK(bus_inbox_open(ib, "req-left-open", &o, &s, &reply));
    bus_inbox_destroy(ib);
    CHECK_EQ_INT(left.ends, 1);
    CHECK_EQ_INT(left.end, MG_ECLOSED);
    events_deinit(&left);
    bus_destroy(tx);
    bus_destroy(rx);
}

/* ---- silence timeout ------------------------------------------------------------------------ */

static void case_timeout(void) {
    bus *rx = connect_to(shared_url(), "test-timeout-rx");
    bus *tx = connect_to(shared_url(), "test-timeout-tx");
    if (!rx || !tx) return;
    bus_inbox *ib = NULL;
    bus_inbox_options io = {.timeout_ms = 400};
    CHECK_OK(bus_inbox_create(rx, &io, &ib));
    if (!ib) return;
    CHECK_OK(bus_flush(rx, 2000));

    /* Direct mode: the sender stops after 2 chunks. */
    events e;
    events_init(&e);
    bus_stream *s = NULL;
    const char *reply = NULL;
    bus_stream_opts o = {.fn = on_event, .arg = &e};
    int64_t t0 = now_ms();
    CHECK_OK(bus_inbox_open(ib, "req-silent", &o, &s, &reply));
    send_chunk(tx, reply, 0, false);
    send_chunk(tx, reply, 1, false);
    CHECK_OK(bus_flush(tx, 2000));
    CHECK(wait_count(&e.mu, &e.cv, &e.done, 1, 5000));
    int64_t took = now_ms() - t0;
    pthread_mutex_lock(&e.mu);
    CHECK_EQ_INT(e.nchunks, 2);
    CHECK_EQ_INT(e.end, MG_ETIMEOUT);
    CHECK_EQ_INT(e.ends, 1);
    pthread_mutex_unlock(&e.mu);
    CHECK_MSG(took >= 400 && took < 2000, "timed out after %" PRId64 " ms (timeout 400)", took);
    CHECK_EQ_INT(bus_stream_state_get(s), BUS_STREAM_FAILED);
    CHECK_EQ_INT(bus_stream_status(s), MG_ETIMEOUT);
    bus_stream_close(s);
    events_deinit(&e);

    /* Queue mode with its own shorter timeout; the wait timeout of next is not the stream's. */
    bus_stream_opts qo = {.queue = true, .timeout_ms = 300};
    CHECK_OK(bus_inbox_open(ib, "req-silent-q", &qo, &s, &reply));
    send_chunk(tx, reply, 0, false);
    CHECK_OK(bus_flush(tx, 2000));
    bus_chunk c;
    CHECK_OK(bus_stream_next(s, 2000, &c));
    CHECK_EQ_INT(c.seq, 0);
    CHECK_EQ_INT(bus_stream_next(s, 50, &c), MG_ETIMEOUT); /* a short wait: still open */
    CHECK_EQ_INT(bus_stream_state_get(s), BUS_STREAM_OPEN);
    CHECK_EQ_INT(bus_stream_next(s, 3000, &c), MG_ETIMEOUT); /* the stream's silence timeout */
    CHECK_EQ_INT(bus_stream_state_get(s), BUS_STREAM_FAILED);
    CHECK_EQ_INT(bus_stream_status(s), MG_ETIMEOUT);
    bus_stream_close(s);

    /* A timeout changed after open applies: 20 s at open, 200 ms afterwards. */
    bus_stream_opts lo = {.queue = true, .timeout_ms = 20000};
    CHECK_OK(bus_inbox_open(ib, "req-retimed", &lo, &s, &reply));
    bus_stream_set_timeout(s, 200);
    t0 = now_ms();
    CHECK_EQ_INT(bus_stream_next(s, 5000, &c), MG_ETIMEOUT);
    took = now_ms() - t0;
    CHECK_EQ_INT(bus_stream_status(s), MG_ETIMEOUT);
    CHECK_MSG(took >= 150 && took < 2000, "retimed stream failed after %" PRId64 " ms", took);
    bus_stream_close(s);

    /* Silence is counted from the last chunk: a slow but steady sender outlives the timeout. */
    events_init(&e);
    o.arg = &e;
    o.timeout_ms = 1000;
    CHECK_OK(bus_inbox_open(ib, "req-steady", &o, &s, &reply));
    for (int i = 0; i < 8; i++) {
        send_chunk(tx, reply, (uint64_t)i, i == 7);
        CHECK_OK(bus_flush(tx, 2000));
        sleep_ms(250); /* 8 x 250 ms = 2 s, twice the timeout */
    }
    CHECK(wait_count(&e.mu, &e.cv, &e.done, 1, 5000));
    pthread_mutex_lock(&e.mu);
    CHECK_EQ_INT(e.nchunks, 8);
    CHECK(e.last_seen);
    CHECK_EQ_INT(e.ends, 0);
    pthread_mutex_unlock(&e.mu);
    CHECK_EQ_INT(bus_stream_state_get(s), BUS_STREAM_DONE);
    bus_stream_close(s);
    events_deinit(&e);

    bus_inbox_stats st;
    bus_inbox_stats_get(ib, &st);
    CHECK_EQ_INT(st.timeouts, 3);
    bus_inbox_destroy(ib);
    bus_destroy(tx);
    bus_destroy(rx);
}

/* ---- reconnect after a server restart ----------------------------------------------------------
 */

typedef struct late_connect {
    const char *url;
    bus *b;
    mg_status st;
    int64_t took_ms;
} late_connect;

static void *connect_late(void *arg) {
    late_connect *lc = arg;
    bus_options o;
    bus_options_default(&o);
    o.url = lc->url;
    o.connect_wait_ms = 10000;
    o.reconnect_wait_ms = 50;
    int64_t t0 = now_ms();
    lc->st = bus_connect(&o, &lc->b);
    lc->took_ms = now_ms() - t0;
    return NULL;
}

static void case_restart(void) {
    spawn_srv srv = {0};
    if (spawn_nats(&srv) != 0) {
        CHECK_MSG(false, "cannot start nats-server");
        return;
    }
    bus *b = connect_to(srv.url, "test-restart");
    bus *tx = connect_to(srv.url, "test-restart-tx");
    if (!b || !tx) return;
    char subj[128];
    unique_subject(subj, sizeof subj, "restart");
    recorder r;
    recorder_init(&r, 16);
    bus_sub *sub = NULL;
    CHECK_OK(bus_subscribe(b, subj, NULL, on_record, &r, &sub));
    bus_inbox *ib = NULL;
    CHECK_OK(bus_inbox_create(b, NULL, &ib));
    events e;
    events_init(&e);
    bus_stream *s = NULL;
    const char *reply = NULL;
    bus_stream_opts o = {.fn = on_event, .arg = &e, .timeout_ms = 20000};
    CHECK_OK(bus_inbox_open(ib, "req-across-restart", &o, &s, &reply));
    CHECK_OK(bus_flush(b, 2000));
    CHECK_OK(bus_publish(b, subj, NULL, "0", 1));
    CHECK_OK(bus_flush(b, 2000));
    CHECK(wait_count(&r.mu, &r.cv, &r.count, 1, 5000));
    send_chunk(tx, reply, 0, false);
    CHECK_OK(bus_flush(tx, 2000));

    CHECK_EQ_INT(spawn_stop(&srv), 0);
    int64_t end = now_ms() + 5000;
    while (bus_is_connected(b) && now_ms() < end) sleep_ms(10);
    CHECK(!bus_is_connected(b));
    /* Published while disconnected: held in the reconnect buffer, sent after reconnecting. */
    CHECK_OK(bus_publish(b, subj, NULL, "1", 1));

    CHECK_EQ_INT(spawn_restart(&srv), 0);
    CHECK_OK(bus_wait_connected(b, 10000));
    CHECK_OK(bus_wait_connected(tx, 10000));
    CHECK(bus_is_connected(b));
    CHECK_OK(bus_flush(b, 2000));
    CHECK_OK(bus_publish(b, subj, NULL, "2", 1));
    CHECK_OK(bus_flush(b, 2000));
    /* Subscriptions were re-created on the new server: both later messages arrive. */
    CHECK(wait_count(&r.mu, &r.cv, &r.count, 3, 5000));
    pthread_mutex_lock(&r.mu);
    CHECK_EQ_INT(r.count, 3);
    CHECK_EQ_INT(r.in_order, 3);
    pthread_mutex_unlock(&r.mu);
    /* The inbox, too: the stream opened before the restart completes. */
    send_chunk(tx, reply, 1, false);
    send_chunk(tx, reply, 2, true);
    CHECK_OK(bus_flush(tx, 2000));
    CHECK(wait_count(&e.mu, &e.cv, &e.done, 1, 5000));
    pthread_mutex_lock(&e.mu);
    CHECK_EQ_INT(e.nchunks, 3);
    CHECK(e.last_seen);
    CHECK_EQ_INT(e.ends, 0);
    pthread_mutex_unlock(&e.mu);

    bus_stats st;
    bus_stats_get(b, &st);
    CHECK(st.disconnects >= 1);
    CHECK(st.reconnects >= 1);
    printf("restart: %" PRIu64 " disconnects, %" PRIu64 " reconnects, %" PRIu64 " msgs out\n",
           st.disconnects, st.reconnects, st.msgs_out);

    bus_stream_close(s);
    events_deinit(&e);
    bus_inbox_destroy(ib);
    bus_sub_destroy(sub);
    bus_destroy(tx);
    bus_destroy(b);
    recorder_deinit(&r);

    /* A process started before its server: the first connect keeps trying for connect_wait_ms. */
    CHECK_EQ_INT(spawn_stop(&srv), 0);
    late_connect lc = {.url = srv.url};
    pthread_t th;
    pthread_create(&th, NULL, connect_late, &lc);
    sleep_ms(400);
    CHECK_EQ_INT(spawn_restart(&srv), 0);
    pthread_join(th, NULL);
    CHECK_EQ_INT(lc.st, MG_OK);
    CHECK(lc.b && bus_is_connected(lc.b));
    CHECK_MSG(lc.took_ms >= 300, "connected after %" PRId64 " ms, before the server started",
              lc.took_ms);
    bus_destroy(lc.b);
    bus_options once;
    bus_options_default(&once);
    once.url = srv.url;
    CHECK_EQ_INT(spawn_stop(&srv), 0);
    bus *nb = NULL;
    CHECK_EQ_INT(bus_connect(&once, &nb), MG_EUNAVAIL); /* default: one try */
    spawn_cleanup(&srv);
}

/* ---- closing streams while their chunks arrive ----------------------------------------------- */

enum { RACE_STREAMS = 200, RACE_CHUNKS = 100 };

typedef struct race_arg {
    _Atomic int calls;
    char pad[64]; /* touched by the callback: a call after close would be a use after free */
} race_arg;

static void on_race(void *arg, bus_stream *s, const bus_chunk *c, mg_status st) {
    race_arg *ra = arg;
    atomic_fetch_add(&ra->calls, 1);
    if (c && c->len) ra->pad[c->seq % 64] = ((const char *)c->data)[0];
}

typedef struct race_send {
    bus *tx;
    char reply[RACE_STREAMS][200];
} race_send;

static void *race_sender(void *arg) {
    race_send *rs = arg;
    for (int seq = 0; seq < RACE_CHUNKS; seq++)
        for (int i = 0; i < RACE_STREAMS; i++)
            bus_stream_send(rs->tx, rs->reply[i], (uint64_t)seq, "r", 1, seq == RACE_CHUNKS - 1);
    bus_flush(rs->tx, 5000);
    return NULL;
}

/* The owner closes streams (and frees the callback's arg right away) while the NATS thread is
 * delivering to them; under ASan a callback after close would be reported. */
static void case_close_race(void) {
    bus *rx = connect_to(shared_url(), "test-race-rx");
    bus *tx = connect_to(shared_url(), "test-race-tx");
    if (!rx || !tx) return;
    bus_inbox *ib = NULL;
    CHECK_OK(bus_inbox_create(rx, NULL, &ib));
    if (!ib) return;
    CHECK_OK(bus_flush(rx, 2000));
    race_send *rs = calloc(1, sizeof *rs);
    rs->tx = tx;
    bus_stream *st[RACE_STREAMS];
    race_arg *args[RACE_STREAMS];
    for (int i = 0; i < RACE_STREAMS; i++) {
        args[i] = calloc(1, sizeof(race_arg));
        bus_stream_opts o = {.fn = on_race, .arg = args[i], .queue = i % 2 == 1};
        const char *reply = NULL;
        CHECK_OK(bus_inbox_open(ib, NULL, &o, &st[i], &reply));
        snprintf(rs->reply[i], sizeof rs->reply[i], "%s", reply ? reply : "x");
    }
    pthread_t th;
    pthread_create(&th, NULL, race_sender, rs);
    int called = 0;
    for (int i = 0; i < RACE_STREAMS; i++) {
        if (i % 20 == 0) sleep_ms(2);
        bus_stream_close(st[i]);
        called += atomic_load(&args[i]->calls) > 0;
        free(args[i]);
    }
    pthread_join(th, NULL);
    bus_inbox_stats s;
    bus_inbox_stats_get(ib, &s);
    CHECK_EQ_INT(s.open_streams, 0);
    CHECK_EQ_INT(s.gaps, 0);
    printf("close race: %d of %d streams had callbacks before close; %" PRIu64
           " chunks delivered, %" PRIu64 " dropped after close\n",
           called, RACE_STREAMS, s.chunks, s.unknown);
    bus_inbox_destroy(ib);
    free(rs);
    bus_destroy(tx);
    bus_destroy(rx);
}

/* ---- many concurrent streams over one inbox ---------------------------------------------------
 */

enum { NSTREAMS = 1000, NCHUNKS = 50 };

typedef struct many many;

typedef struct many_stream {
    many *m;
    bus_stream *s;
    const char *reply;
    int idx;
    uint64_t next; /* next seq expected by the consumer */
    int bad;       /* out of order or wrong payload */
    bool complete;
    mg_status end;
    bool queued; /* in the ready list */
    struct many_stream *ready_next;
} many_stream;

struct many {
    many_stream st[NSTREAMS];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int finished;       /* streams complete or failed */
    many_stream *ready; /* queue-mode streams woken and not yet drained */
    bool stop;
    bus *tx;
};

static bool payload_ok(const many_stream *ms, const void *data, size_t len, uint64_t seq) {
    char want[64];
    int n = snprintf(want, sizeof want, "stream %d chunk %" PRIu64 " ............", ms->idx, seq);
    return len == (size_t)n && memcmp(data, want, len) == 0;
}

/* Direct mode (even streams): check each chunk on the NATS thread. */
static void many_on_chunk(void *arg, bus_stream *s, const bus_chunk *c, mg_status st) {
    many_stream *ms = arg;
    many *m = ms->m;
    if (c) {
        if (c->seq != ms->next || !payload_ok(ms, c->data, c->len, c->seq)) ms->bad++;
        ms->next = c->seq + 1;
        if (c->last) ms->complete = true;
    } else {
        ms->end = st;
    }
    if (!c || c->last) {
        pthread_mutex_lock(&m->mu);
        m->finished++;
        pthread_cond_broadcast(&m->cv);
        pthread_mutex_unlock(&m->mu);
    }
}

/* Queue mode (odd streams): the wake-up only hands the stream to the consumer thread, as a
 * frontend would wake the HTTP response that owns it. */
static void many_on_wake(void *arg, bus_stream *s, const bus_chunk *c, mg_status st) {
    many_stream *ms = arg;
    many *m = ms->m;
    pthread_mutex_lock(&m->mu);
    if (!ms->queued) {
        ms->queued = true;
        ms->ready_next = m->ready;
        m->ready = ms;
        pthread_cond_broadcast(&m->cv);
    }
    pthread_mutex_unlock(&m->mu);
}

static void *many_consumer(void *arg) {
    many *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        many_stream *ms = m->ready;
        if (!ms) {
            pthread_cond_wait(&m->cv, &m->mu);
            continue;
        }
        m->ready = ms->ready_next;
        ms->queued = false;
        pthread_mutex_unlock(&m->mu);
        bus_chunk c;
        mg_status st;
        bool fin = false;
        /* Drain until nothing is left: only then does a new chunk send a new wake-up. */
        while ((st = bus_stream_next(ms->s, 0, &c)) == MG_OK) {
            if (c.seq != ms->next || !payload_ok(ms, c.data, c.len, c.seq)) ms->bad++;
            ms->next = c.seq + 1;
            if (c.last) ms->complete = fin = true;
        }
        if (st != MG_ETIMEOUT && st != MG_ECLOSED) ms->end = st, fin = true;
        if (st == MG_ETIMEOUT && bus_stream_state_get(ms->s) == BUS_STREAM_FAILED)
            ms->end = st, fin = true;
        pthread_mutex_lock(&m->mu);
        if (fin) {
            m->finished++;
            pthread_cond_broadcast(&m->cv);
        }
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* The worker side: one thread interleaving all streams chunk by chunk. */
static void *many_sender(void *arg) {
    many *m = arg;
    for (int seq = 0; seq < NCHUNKS; seq++) {
        for (int i = 0; i < NSTREAMS; i++) {
            char d[64];
            int n = snprintf(d, sizeof d, "stream %d chunk %d ............", i, seq);
            mg_status st = bus_stream_send(m->tx, m->st[i].reply, (uint64_t)seq, d, (size_t)n,
                                           seq == NCHUNKS - 1);
            if (st != MG_OK) MG_LOG_ERR("bus_stream_send");
        }
    }
    bus_flush(m->tx, 5000);
    return NULL;
}

static void case_many(void) {
    bus *rx = connect_to(shared_url(), "test-many-rx");
    bus *tx = connect_to(shared_url(), "test-many-tx");
    if (!rx || !tx) return;
    bus_inbox *ib = NULL;
    CHECK_OK(bus_inbox_create(rx, NULL, &ib));
    if (!ib) return;
    CHECK_OK(bus_flush(rx, 2000));
    many *m = calloc(1, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    m->tx = tx;
    int opened = 0;
    for (int i = 0; i < NSTREAMS; i++) {
        many_stream *ms = &m->st[i];
        ms->idx = i;
        ms->m = m;
        char id[32];
        snprintf(id, sizeof id, "many-%d", i);
        bus_stream_opts o = {.arg = ms};
        if (i % 2 == 0) {
            o.fn = many_on_chunk;
        } else {
            o.fn = many_on_wake;
            o.queue = true;
        }
        opened += bus_inbox_open(ib, id, &o, &ms->s, &ms->reply) == MG_OK;
    }
    CHECK_EQ_INT(opened, NSTREAMS);
    if (opened != NSTREAMS) return;

    pthread_t cons, send;
    int64_t t0 = now_ms();
    pthread_create(&cons, NULL, many_consumer, m);
    pthread_create(&send, NULL, many_sender, m);
    pthread_join(send, NULL);
    CHECK(wait_count(&m->mu, &m->cv, &m->finished, NSTREAMS, 30000));
    int64_t took = now_ms() - t0;
    pthread_mutex_lock(&m->mu);
    m->stop = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(cons, NULL);

    int complete = 0, bad = 0, failed = 0, in_order = 0;
    for (int i = 0; i < NSTREAMS; i++) {
        many_stream *ms = &m->st[i];
        complete += ms->complete && bus_stream_state_get(ms->s) == BUS_STREAM_DONE;
        bad += ms->bad;
        failed += ms->end != MG_OK;
        in_order += ms->next == NCHUNKS;
    }
    CHECK_EQ_INT(complete, NSTREAMS);
    CHECK_EQ_INT(in_order, NSTREAMS);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(failed, 0);
    bus_inbox_stats st;
    bus_inbox_stats_get(ib, &st);
    CHECK_EQ_INT(st.chunks, NSTREAMS * NCHUNKS);
    CHECK_EQ_INT(st.gaps, 0);
    printf("many: %d streams x %d chunks in %" PRId64 " ms (%.0f chunks/s end to end)\n", NSTREAMS,
           NCHUNKS, took, took > 0 ? NSTREAMS * NCHUNKS * 1000.0 / took : 0.0);
    for (int i = 0; i < NSTREAMS; i++) bus_stream_close(m->st[i].s);
    bus_inbox_stats_get(ib, &st);
    CHECK_EQ_INT(st.open_streams, 0);
    bus_inbox_destroy(ib);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
    bus_destroy(tx);
    bus_destroy(rx);
}

int main(int argc, char **argv) {
    mg_log_init("test_bus", -1);
    struct {
        const char *name;
        void (*fn)(void);
    } cases[] = {{"pubsub", case_pubsub},        {"queue", case_queue},     {"gap", case_gap},
                 {"timeout", case_timeout},      {"restart", case_restart}, {"many", case_many},
                 {"close_race", case_close_race}};
    int ran = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) continue;
        printf("== %s\n", cases[i].name);
        fflush(stdout);
        cases[i].fn();
        ran++;
    }
    CHECK_MSG(ran > 0, "no case named %s", argc > 1 ? argv[1] : "");
    if (g_srv.pid) spawn_cleanup(&g_srv);
    bus_shutdown();
    return check_done();
}
