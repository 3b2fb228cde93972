/* bus.c - the NATS wrapper over libnats and the token-stream layer (see bus.h).
 *
 * Connection: one natsConnection with reconnect forever; connection events arrive on libnats'
 * callback thread and only update flags, counters and the log.
 *
 * Subscriptions: each bus_sub owns an async natsSubscription (one libnats delivery thread). Its
 * on-complete callback tells bus_sub_destroy() that the handler has returned for the last time,
 * which is what makes "arg may be freed after destroy" true.
 *
 * Stream inbox: one bus_sub on `<prefix>.<random>.*`; a hash table from the last subject token
 * to the open stream, and a list of streams that the timer thread scans for silence. Locks: the
 * inbox mutex guards the table and the list only (held for a lookup, never during a callback);
 * each stream has its own mutex for its sequence state and queue. Lock order: inbox, then
 * stream. A stream is reference-counted: the owner's handle holds one reference, the delivery
 * and timer threads take one while they work on it, so a close racing a delivery frees the
 * memory only after the delivery is done. Queued chunks keep their natsMsg (no copy); the ring
 * that holds them grows by doubling and is reused, so steady streaming allocates nothing here
 * beyond what libnats allocates per message. */
#include "mono.h"
#include "bus.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "log.h"

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec abs_deadline(int64_t deadline_ns) {
    struct timespec ts = {.tv_sec = deadline_ns / 1000000000, .tv_nsec = deadline_ns % 1000000000};
    return ts;
}

/* Condition variables wait on the monotonic clock so a wall-clock step cannot stretch a wait. */
static mg_status from_nats(natsStatus s) {
    switch (s) {
    case NATS_OK:
        return MG_OK;
    case NATS_TIMEOUT:
        return MG_ETIMEOUT;
    case NATS_CONNECTION_CLOSED:
        return MG_ECLOSED;
    case NATS_NO_SERVER:
    case NATS_NOT_YET_CONNECTED:
        return MG_EUNAVAIL;
    case NATS_INSUFFICIENT_BUFFER:
        return MG_EFULL;
    case NATS_NO_MEMORY:
        return MG_ENOMEM;
    case NATS_INVALID_ARG:
    case NATS_INVALID_SUBJECT:
    case NATS_INVALID_QUEUE_NAME:
    case NATS_ADDRESS_MISSING:
    case NATS_MAX_PAYLOAD:
        return MG_EINVAL;
    case NATS_PROTOCOL_ERROR:
        return MG_EPROTO;
    case NATS_NO_SERVER_SUPPORT:
        return MG_EUNSUPPORTED;
    default:
        return MG_EIO;
    }
}

/* Record a libnats failure: what we were doing plus libnats' text and last-error detail. */
static mg_status nats_fail(natsStatus s, const char *what, const char *subject) {
    natsStatus ls;
    const char *detail = nats_GetLastError(&ls);
    return MG_ERRF(from_nats(s), "nats %s%s%s: %s%s%s", what, subject ? " " : "",
                   subject ? subject : "", natsStatus_GetText(s), detail && *detail ? ": " : "",
                   detail && *detail ? detail : "");
}

/* ==== connection ============================================================================ */

struct bus {
    natsConnection *nc;
    natsOptions *opts;
    char url[256];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool connected, closed; /* guarded by mu */
    _Atomic bool closing;   /* bus_destroy began: the disconnect is ours, not worth a warning */
    /* Unsubscribed natsSubscriptions whose memory must outlive the read loop (see sub_free). */
    pthread_mutex_t grave_mu;
    natsSubscription **grave;
    size_t ngrave, capgrave;
    _Atomic uint64_t disconnects, reconnects, async_errors;
};

void bus_options_default(bus_options *o) {
    memset(o, 0, sizeof *o);
    const char *env = getenv("MAGNETO_NATS_URL");
    o->url = env && *env ? env : "nats://127.0.0.1:4222";
    o->max_reconnect = -1;
    o->reconnect_wait_ms = 250;
    o->reconnect_buf_bytes = 8 << 20;
    o->connect_timeout_ms = 2000;
    o->ping_interval_ms = 5000;
}

static void on_disconnected(natsConnection *nc, void *closure) {
    bus *b = closure;
    pthread_mutex_lock(&b->mu);
    bool was = b->connected;
    b->connected = false;
    pthread_mutex_unlock(&b->mu);
    if (was && !atomic_load(&b->closing)) {
        atomic_fetch_add(&b->disconnects, 1);
        MG_WARN("nats: disconnected from %s, reconnecting", b->url);
    }
}

static void on_reconnected(natsConnection *nc, void *closure) {
    bus *b = closure;
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    atomic_fetch_add(&b->reconnects, 1);
    pthread_mutex_lock(&b->mu);
    b->connected = true;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    MG_INFO("nats: reconnected to %s", url[0] ? url : b->url);
}

static void on_closed(natsConnection *nc, void *closure) {
    bus *b = closure;
    pthread_mutex_lock(&b->mu);
    b->connected = false;
    b->closed = true;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* Asynchronous errors are mostly slow-consumer drops, which can come in floods: log the first
 * few and then one in 10,000. */
static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err,
                           void *closure) {
    bus *b = closure;
    uint64_t n = atomic_fetch_add(&b->async_errors, 1);
    if (n < 10 || n % 10000 == 0)
        MG_WARN("nats: asynchronous error on %s: %s (%" PRIu64 " so far)",
                sub ? natsSubscription_GetSubject(sub) : "connection", natsStatus_GetText(err),
                n + 1);
}

mg_status bus_connect(const bus_options *o, bus **out) {
    *out = NULL;
    if (!o || !o->url || !*o->url) return MG_ERRF(MG_EINVAL, "bus_connect: no NATS url");
    if (strlen(o->url) >= sizeof(((bus *)0)->url))
        return MG_ERRF(MG_EINVAL, "bus_connect: NATS url too long (%zu bytes)", strlen(o->url));
    bus *b = calloc(1, sizeof *b);
    if (!b) return MG_ERRF(MG_ENOMEM, "bus_connect: out of memory");
    snprintf(b->url, sizeof b->url, "%s", o->url);
    pthread_mutex_init(&b->mu, NULL);
    pthread_mutex_init(&b->grave_mu, NULL);
    mono_cond_init(&b->cv);

    natsStatus s = natsOptions_Create(&b->opts);
    if (s == NATS_OK) s = natsOptions_SetURL(b->opts, o->url);
    if (s == NATS_OK && o->name) s = natsOptions_SetName(b->opts, o->name);
    if (s == NATS_OK) s = natsOptions_SetAllowReconnect(b->opts, true);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(b->opts, o->max_reconnect);
    if (s == NATS_OK && o->reconnect_wait_ms > 0)
        s = natsOptions_SetReconnectWait(b->opts, o->reconnect_wait_ms);
    if (s == NATS_OK && o->reconnect_buf_bytes > 0)
        s = natsOptions_SetReconnectBufSize(b->opts, o->reconnect_buf_bytes);
    if (s == NATS_OK && o->connect_timeout_ms > 0)
        s = natsOptions_SetTimeout(b->opts, o->connect_timeout_ms);
    if (s == NATS_OK && o->ping_interval_ms > 0)
        s = natsOptions_SetPingInterval(b->opts, o->ping_interval_ms);
    if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(b->opts, 2);
    if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(b->opts, on_disconnected, b);
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(b->opts, on_reconnected, b);
    if (s == NATS_OK) s = natsOptions_SetClosedCB(b->opts, on_closed, b);
    if (s == NATS_OK) s = natsOptions_SetErrorHandler(b->opts, on_async_error, b);
    if (s != NATS_OK) {
        mg_status st = nats_fail(s, "options for", o->url);
        natsOptions_Destroy(b->opts);
        pthread_mutex_destroy(&b->mu);
        pthread_mutex_destroy(&b->grave_mu);
        pthread_cond_destroy(&b->cv);
        free(b);
        return st;
    }
    b->connected = true; /* set before connect: a disconnect callback may follow right away */
    int64_t deadline =
        now_ns() + (int64_t)(o->connect_wait_ms > 0 ? o->connect_wait_ms : 0) * 1000000;
    int64_t pause = (int64_t)(o->reconnect_wait_ms > 0 ? o->reconnect_wait_ms : 250) * 1000000;
    bool logged = false;
    while ((s = natsConnection_Connect(&b->nc, b->opts)) == NATS_NO_SERVER &&
           now_ns() + pause < deadline) {
        if (!logged)
            MG_INFO("nats: no server at %s yet, retrying for %d ms", o->url, o->connect_wait_ms);
        logged = true;
        struct timespec ts = {.tv_sec = pause / 1000000000, .tv_nsec = pause % 1000000000};
        nanosleep(&ts, NULL);
    }
    if (s != NATS_OK) {
        mg_status st = nats_fail(s, "connect to", o->url);
        natsOptions_Destroy(b->opts);
        pthread_mutex_destroy(&b->mu);
        pthread_mutex_destroy(&b->grave_mu);
        pthread_cond_destroy(&b->cv);
        free(b);
        return st;
    }
    MG_INFO("nats: connected to %s", o->url);
    *out = b;
    return MG_OK;
}

void bus_destroy(bus *b) {
    if (!b) return;
    if (natsConnection_Status(b->nc) == NATS_CONN_STATUS_CONNECTED)
        natsConnection_FlushTimeout(b->nc, 1000);
    atomic_store(&b->closing, true);
    natsConnection_Close(b->nc);
    /* The closed callback runs on libnats' callback thread and touches b: wait for it before
     * freeing (bounded, in case the library never calls it). */
    pthread_mutex_lock(&b->mu);
    int64_t deadline = now_ns() + 5000000000LL;
    while (!b->closed) {
        struct timespec ts = abs_deadline(deadline);
        if (pthread_cond_timedwait(&b->cv, &b->mu, &ts) == ETIMEDOUT) break;
    }
    pthread_mutex_unlock(&b->mu);
    /* The read loop has been joined by the close: now the subscriptions can go. */
    for (size_t i = 0; i < b->ngrave; i++) natsSubscription_Destroy(b->grave[i]);
    free(b->grave);
    natsConnection_Destroy(b->nc);
    natsOptions_Destroy(b->opts);
    pthread_mutex_destroy(&b->grave_mu);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
}

void bus_shutdown(void) {
    /* Waits for libnats' own threads to exit, so their memory is gone before leak checks. */
    nats_CloseAndWait(5000);
}

bool bus_is_connected(bus *b) {
    return natsConnection_Status(b->nc) == NATS_CONN_STATUS_CONNECTED;
}

mg_status bus_wait_connected(bus *b, int timeout_ms) {
    int64_t deadline = now_ns() + (int64_t)timeout_ms * 1000000;
    pthread_mutex_lock(&b->mu);
    mg_status st = MG_OK;
    for (;;) {
        if (b->closed) {
            st = MG_ERRF(MG_ECLOSED, "nats connection to %s closed", b->url);
            break;
        }
        if (b->connected && bus_is_connected(b)) break;
        /* Wake up now and then: the status may change without our callback (connect races). */
        int64_t next = now_ns() + 50000000;
        if (timeout_ms >= 0 && next > deadline) next = deadline;
        struct timespec ts = abs_deadline(next);
        pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        if (timeout_ms >= 0 && now_ns() >= deadline && !(b->connected && bus_is_connected(b))) {
            st = MG_ERRF(MG_ETIMEOUT, "nats: not connected to %s within %d ms", b->url, timeout_ms);
            break;
        }
    }
    pthread_mutex_unlock(&b->mu);
    return st;
}

void bus_stats_get(bus *b, bus_stats *out) {
    memset(out, 0, sizeof *out);
    out->disconnects = atomic_load(&b->disconnects);
    out->reconnects = atomic_load(&b->reconnects);
    natsStatistics *st = NULL;
    if (natsStatistics_Create(&st) == NATS_OK && natsConnection_GetStats(b->nc, st) == NATS_OK)
        natsStatistics_GetCounts(st, &out->msgs_in, &out->bytes_in, &out->msgs_out, &out->bytes_out,
                                 NULL);
    natsStatistics_Destroy(st);
}

/* ==== publish =============================================================================== */

mg_status bus_publish(bus *b, const char *subject, const char *reply, const void *data,
                      size_t len) {
    if (!subject || !*subject) return MG_ERRF(MG_EINVAL, "bus_publish: empty subject");
    if (len > INT32_MAX) return MG_ERRF(MG_EINVAL, "bus_publish: %zu bytes is too large", len);
    if (reply && !*reply) reply = NULL;
    natsStatus s = reply ? natsConnection_PublishRequest(b->nc, subject, reply, data, (int)len)
                         : natsConnection_Publish(b->nc, subject, data, (int)len);
    return s == NATS_OK ? MG_OK : nats_fail(s, "publish to", subject);
}

mg_status bus_publish_hdr(bus *b, const char *subject, const char *reply, const bus_header *hdrs,
                          int nhdrs, const void *data, size_t len) {
    if (!subject || !*subject) return MG_ERRF(MG_EINVAL, "bus_publish_hdr: empty subject");
    if (len > INT32_MAX) return MG_ERRF(MG_EINVAL, "bus_publish_hdr: %zu bytes is too large", len);
    if (reply && !*reply) reply = NULL;
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, reply, data, (int)len);
    for (int i = 0; s == NATS_OK && i < nhdrs; i++)
        s = natsMsgHeader_Add(m, hdrs[i].key, hdrs[i].value);
    if (s == NATS_OK) s = natsConnection_PublishMsg(b->nc, m);
    natsMsg_Destroy(m);
    return s == NATS_OK ? MG_OK : nats_fail(s, "publish to", subject);
}

mg_status bus_flush(bus *b, int timeout_ms) {
    natsStatus s = natsConnection_FlushTimeout(b->nc, timeout_ms > 0 ? timeout_ms : 1);
    return s == NATS_OK ? MG_OK : nats_fail(s, "flush", NULL);
}

/* ==== subscribe ============================================================================= */

struct bus_sub {
    bus *b;
    natsSubscription *sub;
    bus_msg_fn fn;
    void *arg;
    /* Internal receivers (the inbox) take the natsMsg and its ownership instead. */
    void (*raw)(void *arg, natsMsg *msg);
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool complete;     /* the handler has returned for the last time (on-complete callback) */
    bool self_destroy; /* destroyed from its own handler: the on-complete callback frees it */
};

/* The subscription whose handler runs on this thread, so a destroy from inside it is seen. */
static _Thread_local bus_sub *tl_cur_sub;

static void sub_on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    bus_sub *s = closure;
    tl_cur_sub = s;
    if (s->raw) {
        s->raw(s->arg, msg);
    } else {
        bus_msg m = {.subject = natsMsg_GetSubject(msg),
                     .reply = natsMsg_GetReply(msg),
                     .data = natsMsg_GetData(msg),
                     .len = (size_t)natsMsg_GetDataLength(msg),
                     .raw_ = msg};
        if (m.reply && !*m.reply) m.reply = NULL;
        s->fn(s->arg, &m);
        natsMsg_Destroy(msg);
    }
    tl_cur_sub = NULL;
}

/* libnats 3.4 (Debian 12) has a race between its read loop and natsSubscription_Destroy: the
 * loop looks the subscription up, drops the table lock, then locks the subscription, which
 * another thread may have freed meanwhile (nats.c issue #637, fixed in later releases). Messages
 * still in flight to an unsubscribed subject hit it (seen here as a crash closing an inbox while
 * chunks arrived). So the natsSubscription of a destroyed bus_sub is only unsubscribed; its
 * memory is kept until bus_destroy has closed the connection and joined the read loop. A process
 * creates few subscriptions, so the cost is a few hundred bytes per destroyed one. */
static void sub_free(bus_sub *s) {
    if (s->sub) {
        bus *b = s->b;
        pthread_mutex_lock(&b->grave_mu);
        if (b->ngrave == b->capgrave) {
            size_t nc = b->capgrave ? b->capgrave * 2 : 8;
            natsSubscription **ng = realloc(b->grave, nc * sizeof *ng);
            if (ng) b->grave = ng, b->capgrave = nc;
        }
        if (b->ngrave < b->capgrave)
            b->grave[b->ngrave++] = s->sub;
        else
            MG_ERROR("nats: out of memory keeping an unsubscribed subscription; leaking it");
        pthread_mutex_unlock(&b->grave_mu);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

static void sub_on_complete(void *closure) {
    bus_sub *s = closure;
    pthread_mutex_lock(&s->mu);
    s->complete = true;
    bool self = s->self_destroy;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (self) sub_free(s);
}

static mg_status sub_create(bus *b, const char *subject, const char *queue, bus_msg_fn fn,
                            void (*raw)(void *, natsMsg *), void *arg, bus_sub **out) {
    *out = NULL;
    if (!subject || !*subject) return MG_ERRF(MG_EINVAL, "bus_subscribe: empty subject");
    if (!fn && !raw) return MG_ERRF(MG_EINVAL, "bus_subscribe %s: no callback", subject);
    bus_sub *s = calloc(1, sizeof *s);
    if (!s) return MG_ERRF(MG_ENOMEM, "bus_subscribe: out of memory");
    s->b = b;
    s->fn = fn;
    s->raw = raw;
    s->arg = arg;
    pthread_mutex_init(&s->mu, NULL);
    mono_cond_init(&s->cv);
    natsStatus st =
        queue ? natsConnection_QueueSubscribe(&s->sub, b->nc, subject, queue, sub_on_msg, s)
              : natsConnection_Subscribe(&s->sub, b->nc, subject, sub_on_msg, s);
    if (st == NATS_OK) st = natsSubscription_SetOnCompleteCB(s->sub, sub_on_complete, s);
    if (st != NATS_OK) {
        mg_status r = nats_fail(st, "subscribe to", subject);
        if (s->sub) natsSubscription_Unsubscribe(s->sub);
        sub_free(s);
        return r;
    }
    *out = s;
    return MG_OK;
}

mg_status bus_subscribe(bus *b, const char *subject, const char *queue, bus_msg_fn fn, void *arg,
                        bus_sub **out) {
    if (queue && !*queue) queue = NULL;
    return sub_create(b, subject, queue, fn, NULL, arg, out);
}

void bus_sub_destroy(bus_sub *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    bool complete = s->complete;
    if (tl_cur_sub == s && !complete) {
        /* From our own handler: the handler has not returned yet, so the on-complete callback,
         * which runs after it, frees the subscription. */
        s->self_destroy = true;
        pthread_mutex_unlock(&s->mu);
        natsSubscription_Unsubscribe(s->sub);
        return;
    }
    pthread_mutex_unlock(&s->mu);
    natsStatus st = complete ? NATS_OK : natsSubscription_Unsubscribe(s->sub);
    pthread_mutex_lock(&s->mu);
    /* If unsubscribe failed (connection already closed), the subscription was closed with the
     * connection and the callback comes anyway; bound the wait in either case. */
    int64_t deadline = now_ns() + (st == NATS_OK ? 30000000000LL : 2000000000LL);
    while (!s->complete) {
        struct timespec ts = abs_deadline(deadline);
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT) break;
    }
    bool done = s->complete;
    pthread_mutex_unlock(&s->mu);
    if (!done) {
        /* Leaking is safer than freeing memory a libnats thread may still use. */
        MG_ERROR("nats: subscription %s did not complete; leaking it",
                 natsSubscription_GetSubject(s->sub));
        return;
    }
    sub_free(s);
}

const char *bus_msg_header(const bus_msg *m, const char *key) {
    const char *v = NULL;
    if (!m || !m->raw_) return NULL;
    if (natsMsgHeader_Get((natsMsg *)m->raw_, key, &v) != NATS_OK) return NULL;
    return v;
}

/* ==== token streams: sending side =========================================================== */

mg_status bus_stream_send(bus *b, const char *reply_subject, uint64_t seq, const void *data,
                          size_t len, bool last) {
    char seqbuf[24];
    snprintf(seqbuf, sizeof seqbuf, "%" PRIu64, seq);
    bus_header h[2] = {{BUS_HDR_SEQ, seqbuf}, {BUS_HDR_LAST, "1"}};
    return bus_publish_hdr(b, reply_subject, NULL, h, last ? 2 : 1, data, len);
}

/* ==== token streams: receiving side ========================================================= */

#define ID_MAX 63

typedef struct qitem {
    natsMsg *msg;
    uint64_t seq;
    bool last;
} qitem;

struct bus_stream {
    bus_inbox *ib;
    bus_stream *hnext;       /* hash chain (inbox mutex) */
    bus_stream *prev, *next; /* list of streams for the timer (inbox mutex) */
    uint64_t hash;
    bool linked; /* in the table and list (inbox mutex) */
    _Atomic int refs;

    bus_stream_fn fn;
    void *arg;
    bool queue;
    _Atomic int64_t timeout_ns;
    _Atomic int64_t last_ns; /* last chunk received (or open) */
    _Atomic int state;       /* bus_stream_state; written under mu */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    mg_status status;
    uint64_t next_seq;
    bool closing;          /* owner closed it: no more callbacks */
    bool busy;             /* a callback is running */
    pthread_t busy_thread; /* ... on this thread */
    bool wake_pending;     /* queue mode: a wake-up was sent and not yet drained */
    qitem *q;              /* ring of queued chunks */
    size_t qcap, qhead, qlen;
    natsMsg *cur; /* the chunk last returned by bus_stream_next, alive until the next call */

    char id[ID_MAX + 1];
    char reply[]; /* "<inbox subject>.<id>" */
};

struct bus_inbox {
    bus *b;
    bus_sub *sub;
    char subject[160]; /* "<prefix>.<random>" */
    int64_t default_timeout_ns;
    _Atomic int64_t min_timeout_ns; /* the timer ticks at an eighth of the shortest timeout */

    pthread_mutex_t mu; /* table, list, counters below */
    bus_stream **buckets;
    size_t nbuckets, count;
    bus_stream list; /* sentinel */
    uint64_t auto_id;

    pthread_t timer;
    pthread_cond_t timer_cv;
    bool stop; /* under mu */

    _Atomic uint64_t chunks, duplicates, gaps, timeouts, unknown, malformed;
};

static uint64_t hash_id(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static bus_stream *table_find(bus_inbox *ib, const char *id, size_t n, uint64_t h) {
    for (bus_stream *s = ib->buckets[h & (ib->nbuckets - 1)]; s; s = s->hnext)
        if (s->hash == h && strlen(s->id) == n && memcmp(s->id, id, n) == 0) return s;
    return NULL;
}

/* Grow the table when it is fuller than one stream per bucket. Failure to grow only slows. */
static void table_grow(bus_inbox *ib) {
    size_t nb = ib->nbuckets * 2;
    bus_stream **nbk = calloc(nb, sizeof *nbk);
    if (!nbk) return;
    for (size_t i = 0; i < ib->nbuckets; i++) {
        for (bus_stream *s = ib->buckets[i], *n; s; s = n) {
            n = s->hnext;
            s->hnext = nbk[s->hash & (nb - 1)];
            nbk[s->hash & (nb - 1)] = s;
        }
    }
    free(ib->buckets);
    ib->buckets = nbk;
    ib->nbuckets = nb;
}

static void table_unlink(bus_inbox *ib, bus_stream *s) {
    bus_stream **pp = &ib->buckets[s->hash & (ib->nbuckets - 1)];
    while (*pp && *pp != s) pp = &(*pp)->hnext;
    if (*pp) *pp = s->hnext;
    s->prev->next = s->next;
    s->next->prev = s->prev;
    s->linked = false;
    ib->count--;
}

static void stream_free(bus_stream *s) {
    for (size_t i = 0; i < s->qlen; i++) natsMsg_Destroy(s->q[(s->qhead + i) % s->qcap].msg);
    natsMsg_Destroy(s->cur);
    free(s->q);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

static void stream_unref(bus_stream *s) {
    if (atomic_fetch_sub(&s->refs, 1) == 1) stream_free(s);
}

/* Run the stream's callback with s->mu held on entry and on return (dropped during the call).
 * Waits for a callback running on another thread so that calls never overlap; returns without
 * calling when the owner closed the stream meanwhile. */
static void stream_invoke(bus_stream *s, const bus_chunk *c, mg_status status) {
    while (s->busy && !s->closing) pthread_cond_wait(&s->cv, &s->mu);
    if (s->closing || !s->fn) return;
    s->busy = true;
    s->busy_thread = pthread_self();
    pthread_mutex_unlock(&s->mu);
    s->fn(s->arg, s, c, status);
    pthread_mutex_lock(&s->mu);
    s->busy = false;
    pthread_cond_broadcast(&s->cv);
}

/* Mark the stream failed (s->mu held, state OPEN) and tell the consumer. */
static void stream_fail(bus_stream *s, mg_status why) {
    s->status = why;
    atomic_store(&s->state, BUS_STREAM_FAILED);
    pthread_cond_broadcast(&s->cv);
    stream_invoke(s, NULL, why);
}

static bool queue_push(bus_stream *s, natsMsg *m, uint64_t seq, bool last) {
    if (s->qlen == s->qcap) {
        size_t ncap = s->qcap ? s->qcap * 2 : 16;
        qitem *nq = malloc(ncap * sizeof *nq);
        if (!nq) return false;
        for (size_t i = 0; i < s->qlen; i++) nq[i] = s->q[(s->qhead + i) % s->qcap];
        free(s->q);
        s->q = nq;
        s->qcap = ncap;
        s->qhead = 0;
    }
    s->q[(s->qhead + s->qlen) % s->qcap] = (qitem){m, seq, last};
    s->qlen++;
    return true;
}

/* Strict decimal u64: digits only, no sign, no overflow. */
static bool parse_u64(const char *v, uint64_t *out) {
    if (!v || !*v) return false;
    uint64_t x = 0;
    for (; *v; v++) {
        if (*v < '0' || *v > '9') return false;
        uint64_t d = (uint64_t)(*v - '0');
        if (x > (UINT64_MAX - d) / 10) return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

/* The inbox subscription's handler: on the inbox's libnats delivery thread; owns msg. */
static void inbox_on_msg(void *arg, natsMsg *msg) {
    bus_inbox *ib = arg;
    const char *subj = natsMsg_GetSubject(msg);
    const char *dot = strrchr(subj, '.');
    const char *id = dot ? dot + 1 : subj;
    size_t n = strlen(id);
    const char *v = NULL;
    uint64_t seq;
    if (natsMsgHeader_Get(msg, BUS_HDR_SEQ, &v) != NATS_OK || !parse_u64(v, &seq)) {
        uint64_t k = atomic_fetch_add(&ib->malformed, 1);
        if (k < 10)
            MG_WARN("nats inbox: message on %s without a valid %s header", subj, BUS_HDR_SEQ);
        natsMsg_Destroy(msg);
        return;
    }
    bool last = natsMsgHeader_Get(msg, BUS_HDR_LAST, &v) == NATS_OK && strcmp(v, "1") == 0;

    uint64_t h = hash_id(id, n);
    pthread_mutex_lock(&ib->mu);
    bus_stream *s = n <= ID_MAX ? table_find(ib, id, n, h) : NULL;
    if (s) atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&ib->mu);
    if (!s) {
        atomic_fetch_add(&ib->unknown, 1);
        natsMsg_Destroy(msg);
        return;
    }

    pthread_mutex_lock(&s->mu);
    if (s->closing || atomic_load(&s->state) != BUS_STREAM_OPEN) {
        if (!s->closing && atomic_load(&s->state) == BUS_STREAM_DONE && seq < s->next_seq)
            atomic_fetch_add(&ib->duplicates, 1);
        natsMsg_Destroy(msg);
    } else if (seq < s->next_seq) {
        atomic_fetch_add(&ib->duplicates, 1);
        natsMsg_Destroy(msg);
    } else if (seq > s->next_seq) {
        natsMsg_Destroy(msg);
        atomic_fetch_add(&ib->gaps, 1);
        MG_LOGR(MG_LOG_WARN, s->id, "stream %s: chunk %" PRIu64 " arrived, expected %" PRIu64,
                s->reply, seq, s->next_seq);
        stream_fail(s, MG_EGAP);
    } else {
        atomic_store(&s->last_ns, now_ns());
        atomic_fetch_add(&ib->chunks, 1);
        s->next_seq++;
        if (last) atomic_store(&s->state, BUS_STREAM_DONE);
        if (s->queue) {
            if (!queue_push(s, msg, seq, last)) {
                natsMsg_Destroy(msg);
                atomic_store(&s->state, BUS_STREAM_OPEN);
                MG_LOGR(MG_LOG_ERROR, s->id, "stream %s: out of memory queueing a chunk", s->reply);
                stream_fail(s, MG_ENOMEM);
            } else {
                pthread_cond_broadcast(&s->cv);
                if (!s->wake_pending) {
                    s->wake_pending = true;
                    stream_invoke(s, NULL, MG_OK);
                }
            }
        } else {
            bus_chunk c = {.seq = seq,
                           .last = last,
                           .data = natsMsg_GetData(msg),
                           .len = (size_t)natsMsg_GetDataLength(msg)};
            stream_invoke(s, &c, MG_OK);
            natsMsg_Destroy(msg);
        }
    }
    pthread_mutex_unlock(&s->mu);
    stream_unref(s);
}

/* The timer thread: every tick, fail the open streams that have been silent too long. */
static void *inbox_timer(void *arg) {
    bus_inbox *ib = arg;
    bus_stream **expired = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&ib->mu);
    while (!ib->stop) {
        int64_t tick = atomic_load(&ib->min_timeout_ns) / 8;
        if (tick < 5000000) tick = 5000000;
        if (tick > 250000000) tick = 250000000;
        struct timespec ts = abs_deadline(now_ns() + tick);
        pthread_cond_timedwait(&ib->timer_cv, &ib->mu, &ts);
        if (ib->stop) break;
        int64_t now = now_ns();
        size_t n = 0;
        for (bus_stream *s = ib->list.next; s != &ib->list; s = s->next) {
            if (atomic_load(&s->state) != BUS_STREAM_OPEN) continue;
            if (now - atomic_load(&s->last_ns) <= atomic_load(&s->timeout_ns)) continue;
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 64;
                bus_stream **ne = realloc(expired, nc * sizeof *ne);
                if (!ne) break; /* the rest waits for the next tick */
                expired = ne;
                cap = nc;
            }
            atomic_fetch_add(&s->refs, 1);
            expired[n++] = s;
        }
        pthread_mutex_unlock(&ib->mu);
        for (size_t i = 0; i < n; i++) {
            bus_stream *s = expired[i];
            pthread_mutex_lock(&s->mu);
            /* Re-check: a chunk may have arrived since the scan. */
            if (!s->closing && atomic_load(&s->state) == BUS_STREAM_OPEN &&
                now_ns() - atomic_load(&s->last_ns) > atomic_load(&s->timeout_ns)) {
                atomic_fetch_add(&ib->timeouts, 1);
                MG_LOGR(MG_LOG_WARN, s->id, "stream %s: no chunk for %" PRId64 " ms after %" PRIu64,
                        s->reply, atomic_load(&s->timeout_ns) / 1000000, s->next_seq);
                stream_fail(s, MG_ETIMEOUT);
            }
            pthread_mutex_unlock(&s->mu);
            stream_unref(s);
        }
        pthread_mutex_lock(&ib->mu);
    }
    pthread_mutex_unlock(&ib->mu);
    free(expired);
    return NULL;
}

mg_status bus_inbox_create(bus *b, const bus_inbox_options *o, bus_inbox **out) {
    *out = NULL;
    bus_inbox_options d = {0};
    if (!o) o = &d;
    const char *prefix = o->prefix && *o->prefix ? o->prefix : "_INBOX.magneto";
    if (strlen(prefix) > 100 || strchr(prefix, '*') || strchr(prefix, '>') || strchr(prefix, ' '))
        return MG_ERRF(MG_EINVAL, "bus_inbox_create: bad subject prefix \"%s\"", prefix);
    bus_inbox *ib = calloc(1, sizeof *ib);
    if (!ib) return MG_ERRF(MG_ENOMEM, "bus_inbox_create: out of memory");
    ib->b = b;
    /* 64 random bits make the prefix unique among processes sharing the server. */
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != sizeof r) r = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);
    snprintf(ib->subject, sizeof ib->subject, "%s.%016" PRIx64, prefix, r);
    ib->default_timeout_ns = (int64_t)(o->timeout_ms > 0 ? o->timeout_ms : 30000) * 1000000;
    atomic_store(&ib->min_timeout_ns, ib->default_timeout_ns);
    pthread_mutex_init(&ib->mu, NULL);
    mono_cond_init(&ib->timer_cv);
    ib->list.next = ib->list.prev = &ib->list;
    ib->nbuckets = 1024;
    ib->buckets = calloc(ib->nbuckets, sizeof *ib->buckets);
    if (!ib->buckets) {
        pthread_mutex_destroy(&ib->mu);
        pthread_cond_destroy(&ib->timer_cv);
        free(ib);
        return MG_ERRF(MG_ENOMEM, "bus_inbox_create: out of memory");
    }
    if (pthread_create(&ib->timer, NULL, inbox_timer, ib) != 0) {
        free(ib->buckets);
        pthread_mutex_destroy(&ib->mu);
        pthread_cond_destroy(&ib->timer_cv);
        free(ib);
        return MG_ERRF(MG_ERR, "bus_inbox_create: cannot start the timer thread");
    }
    char wild[176];
    snprintf(wild, sizeof wild, "%s.*", ib->subject);
    mg_status st = sub_create(b, wild, NULL, NULL, inbox_on_msg, ib, &ib->sub);
    if (st == MG_OK) {
        /* Thousands of streams burst into one subscription: a deep libnats queue keeps bursts
         * from being dropped as a slow consumer (a drop would show up as a gap). */
        int msgs = o->pending_msgs_limit > 0 ? o->pending_msgs_limit : 1000000;
        int bytes = o->pending_bytes > 0 ? o->pending_bytes : 512 << 20;
        natsStatus ns = natsSubscription_SetPendingLimits(ib->sub->sub, msgs, bytes);
        if (ns != NATS_OK) st = nats_fail(ns, "set pending limits on", wild);
    }
    if (st != MG_OK) {
        bus_inbox_destroy(ib);
        return st;
    }
    *out = ib;
    return MG_OK;
}

void bus_inbox_destroy(bus_inbox *ib) {
    if (!ib) return;
    bus_sub_destroy(ib->sub); /* no delivery after this */
    pthread_mutex_lock(&ib->mu);
    ib->stop = true;
    pthread_cond_broadcast(&ib->timer_cv);
    pthread_mutex_unlock(&ib->mu);
    pthread_join(ib->timer, NULL);
    /* Streams their owners did not close: end them and drop the owners' references. */
    while (ib->list.next != &ib->list) {
        bus_stream *s = ib->list.next;
        table_unlink(ib, s);
        MG_WARN("nats inbox %s: stream %s still open at destroy", ib->subject, s->id);
        /* A temporary reference: the callback may close the stream (dropping the owner's). */
        atomic_fetch_add(&s->refs, 1);
        pthread_mutex_lock(&s->mu);
        if (atomic_load(&s->state) == BUS_STREAM_OPEN) stream_fail(s, MG_ECLOSED);
        bool owner_ref = !s->closing;
        s->closing = true;
        pthread_mutex_unlock(&s->mu);
        if (owner_ref) stream_unref(s);
        stream_unref(s);
    }
    free(ib->buckets);
    pthread_mutex_destroy(&ib->mu);
    pthread_cond_destroy(&ib->timer_cv);
    free(ib);
}

const char *bus_inbox_subject(const bus_inbox *ib) {
    return ib->subject;
}

static bool id_valid(const char *id, size_t n) {
    if (n == 0 || n > ID_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

mg_status bus_inbox_open(bus_inbox *ib, const char *request_id, const bus_stream_opts *opts,
                         bus_stream **out, const char **reply_subject) {
    *out = NULL;
    if (reply_subject) *reply_subject = NULL;
    bus_stream_opts d = {.queue = true};
    if (!opts) opts = &d;
    if (!opts->queue && !opts->fn)
        return MG_ERRF(MG_EINVAL, "bus_inbox_open: direct mode needs a callback");
    if (request_id && !id_valid(request_id, strlen(request_id)))
        return MG_ERRF(MG_EINVAL,
                       "bus_inbox_open: request id \"%.80s\" must be 1..%d characters of "
                       "[A-Za-z0-9_-]",
                       request_id, ID_MAX);
    size_t sublen = strlen(ib->subject);
    bus_stream *s = calloc(1, sizeof *s + sublen + 1 + ID_MAX + 1);
    if (!s) return MG_ERRF(MG_ENOMEM, "bus_inbox_open: out of memory");
    s->ib = ib;
    s->fn = opts->fn;
    s->arg = opts->arg;
    s->queue = opts->queue;
    int64_t tmo =
        opts->timeout_ms > 0 ? (int64_t)opts->timeout_ms * 1000000 : ib->default_timeout_ns;
    atomic_store(&s->timeout_ns, tmo);
    atomic_store(&s->last_ns, now_ns());
    atomic_store(&s->state, BUS_STREAM_OPEN);
    atomic_store(&s->refs, 1);
    s->status = MG_OK;
    pthread_mutex_init(&s->mu, NULL);
    mono_cond_init(&s->cv);

    pthread_mutex_lock(&ib->mu);
    if (request_id)
        snprintf(s->id, sizeof s->id, "%s", request_id);
    else
        snprintf(s->id, sizeof s->id, "s%" PRIx64, ++ib->auto_id);
    size_t n = strlen(s->id);
    s->hash = hash_id(s->id, n);
    if (table_find(ib, s->id, n, s->hash)) {
        pthread_mutex_unlock(&ib->mu);
        mg_status st = MG_ERRF(MG_EEXIST, "bus_inbox_open: stream \"%s\" is already open", s->id);
        stream_free(s);
        return st;
    }
    if (ib->count >= ib->nbuckets) table_grow(ib);
    bus_stream **b = &ib->buckets[s->hash & (ib->nbuckets - 1)];
    s->hnext = *b;
    *b = s;
    s->next = &ib->list;
    s->prev = ib->list.prev;
    ib->list.prev->next = s;
    ib->list.prev = s;
    s->linked = true;
    ib->count++;
    if (tmo < atomic_load(&ib->min_timeout_ns)) {
        atomic_store(&ib->min_timeout_ns, tmo);
        pthread_cond_broadcast(&ib->timer_cv); /* tick faster from now */
    }
    pthread_mutex_unlock(&ib->mu);
    snprintf(s->reply, sublen + 1 + ID_MAX + 1, "%s.%s", ib->subject, s->id);
    *out = s;
    if (reply_subject) *reply_subject = s->reply;
    return MG_OK;
}

mg_status bus_stream_next(bus_stream *s, int timeout_ms, bus_chunk *out) {
    memset(out, 0, sizeof *out);
    if (!s->queue)
        return MG_ERRF(MG_EINVAL, "bus_stream_next: stream %s is not in queue mode", s->id);
    int64_t deadline = timeout_ms > 0 ? now_ns() + (int64_t)timeout_ms * 1000000 : 0;
    pthread_mutex_lock(&s->mu);
    natsMsg_Destroy(s->cur);
    s->cur = NULL;
    mg_status st;
    for (;;) {
        if (s->qlen > 0) {
            qitem it = s->q[s->qhead];
            s->qhead = (s->qhead + 1) % s->qcap;
            s->qlen--;
            s->cur = it.msg;
            out->seq = it.seq;
            out->last = it.last;
            out->data = natsMsg_GetData(it.msg);
            out->len = (size_t)natsMsg_GetDataLength(it.msg);
            st = MG_OK;
            break;
        }
        int state = atomic_load(&s->state);
        if (state == BUS_STREAM_DONE) {
            s->wake_pending = false;
            st = MG_ERRF(MG_ECLOSED, "stream %s: complete", s->id);
            break;
        }
        if (state == BUS_STREAM_FAILED) {
            s->wake_pending = false;
            st = MG_ERRF(s->status, "stream %s failed: %s", s->id,
                         s->status == MG_EGAP       ? "a chunk was lost"
                         : s->status == MG_ETIMEOUT ? "the sender went silent"
                                                    : mg_status_str(s->status));
            break;
        }
        bool expired = timeout_ms == 0 || (timeout_ms > 0 && now_ns() >= deadline);
        if (expired) {
            /* Drained: the next chunk sends a new wake-up. */
            s->wake_pending = false;
            st = MG_ERRF(MG_ETIMEOUT, "stream %s: no chunk within %d ms", s->id, timeout_ms);
            break;
        }
        if (timeout_ms < 0) {
            pthread_cond_wait(&s->cv, &s->mu);
        } else {
            struct timespec ts = abs_deadline(deadline);
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

void bus_stream_set_timeout(bus_stream *s, int timeout_ms) {
    int64_t t = (int64_t)(timeout_ms > 0 ? timeout_ms : 1) * 1000000;
    atomic_store(&s->timeout_ns, t);
    bus_inbox *ib = s->ib;
    pthread_mutex_lock(&ib->mu);
    if (t < atomic_load(&ib->min_timeout_ns)) {
        atomic_store(&ib->min_timeout_ns, t);
        pthread_cond_broadcast(&ib->timer_cv);
    }
    pthread_mutex_unlock(&ib->mu);
}

bus_stream_state bus_stream_state_get(bus_stream *s) {
    return (bus_stream_state)atomic_load(&s->state);
}

mg_status bus_stream_status(bus_stream *s) {
    pthread_mutex_lock(&s->mu);
    mg_status st = atomic_load(&s->state) == BUS_STREAM_FAILED ? s->status : MG_OK;
    pthread_mutex_unlock(&s->mu);
    return st;
}

const char *bus_stream_id(const bus_stream *s) {
    return s->id;
}

const char *bus_stream_reply(const bus_stream *s) {
    return s->reply;
}

void bus_stream_close(bus_stream *s) {
    if (!s) return;
    bus_inbox *ib = s->ib;
    pthread_mutex_lock(&ib->mu);
    if (s->linked) table_unlink(ib, s);
    pthread_mutex_unlock(&ib->mu);
    pthread_mutex_lock(&s->mu);
    s->closing = true;
    pthread_cond_broadcast(&s->cv);
    /* Wait for a callback running on another thread; from our own callback, go on: the thread
     * that runs it holds a reference and frees the stream after the callback returns. */
    while (s->busy && !pthread_equal(s->busy_thread, pthread_self()))
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    stream_unref(s);
}

void bus_inbox_stats_get(bus_inbox *ib, bus_inbox_stats *out) {
    pthread_mutex_lock(&ib->mu);
    out->open_streams = ib->count;
    pthread_mutex_unlock(&ib->mu);
    out->chunks = atomic_load(&ib->chunks);
    out->duplicates = atomic_load(&ib->duplicates);
    out->gaps = atomic_load(&ib->gaps);
    out->timeouts = atomic_load(&ib->timeouts);
    out->unknown = atomic_load(&ib->unknown);
    out->malformed = atomic_load(&ib->malformed);
}
