/* http.c - libmicrohttpd glue: body collection, deferred replies and suspended SSE streams.
 * See http.h for the contract.
 *
 * Invariant: MHD_resume_connection is called only for a connection this file suspended and has
 * not resumed yet (the `suspended` flag, under the connection's lock, says which); MHD forbids
 * anything else. The SSE content reader suspends from inside itself when the buffer is empty,
 * which MHD allows, and a writer resumes it.
 *
 * Direct writes: resuming costs an MHD thread wake-up (ITC write, epoll, the reader, the send,
 * then a suspend again) per token. MHD calls a chunked response's reader only once everything it
 * produced before has gone to the kernel, so while the reader has suspended the stream after
 * sending body bytes, the socket carries exactly the chunks so far and MHD does not touch it. A
 * writer then sends the next chunk itself ("<hex size>\r\n" data "\r\n", the framing MHD would
 * have used) with one non-blocking sendmsg from its own thread and leaves the connection
 * suspended. Anything else (queued bytes, a full socket buffer, a large write, a write within
 * DIRECT_GAP_NS of the stream's previous one, the end of the stream) goes through the reader as
 * before, so MHD still owns the response's start and end, and a fast stream still has its
 * events coalesced into one send. */
#include "http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "openai.h"

enum conn_mode { MODE_BODY = 0, MODE_PENDING, MODE_REPLY, MODE_STREAM };

struct fe_conn {
    atomic_int refs;
    pthread_mutex_t mu;
    fe_http *h;
    struct MHD_Connection *mc; /* NULL once completed */
    fe_conn *prev, *next;      /* in h->conns */
    enum conn_mode mode;
    bool handled;     /* the handler has run */
    bool too_large;   /* body exceeded max_body: answer 413 */
    bool suspended;   /* suspended by us and not resumed yet */
    bool queued;      /* a response has been queued with MHD */
    bool done;        /* stream: no more writes */
    bool closed;      /* completed */
    bool sent_all;    /* the whole response went out */
    bool overflow;    /* the client fell too far behind: close the connection */
    bool body_sent;   /* the reader has handed MHD body bytes (so the headers went out before) */
    int64_t t_mhd;    /* monotonic seconds of the reader's last call: MHD's idle clock */
    uint64_t t_write; /* monotonic ns of the last fe_conn_write */
    int fd;           /* the socket, for shutdown on overflow; -1 when unknown */
    char method[8];
    char *path;
    oai_buf body;
    /* reply */
    int status;
    const char *ctype;
    oai_buf reply;
    /* stream: out.p[off..len) waits for the socket */
    oai_buf out;
    size_t off;
    fe_conn_close_fn on_close;
    void *on_close_arg;
};

struct fe_http {
    struct MHD_Daemon *d;
    fe_http_opts o;
    int port;
    pthread_mutex_t mu; /* guards conns */
    fe_conn *conns;
    atomic_uint nconns;
    atomic_ullong direct; /* chunks sent by direct_write */
};

void fe_conn_ref(fe_conn *c) {
    atomic_fetch_add(&c->refs, 1);
}

void fe_conn_unref(fe_conn *c) {
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1) return;
    pthread_mutex_destroy(&c->mu);
    oai_buf_free(&c->body);
    oai_buf_free(&c->reply);
    oai_buf_free(&c->out);
    free(c->path);
    free(c);
}

static int64_t mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec;
}

/* Largest write sent directly; larger ones go through MHD (a chunk that big is not latency
 * bound, and a small one fits an empty socket buffer whole). */
#define DIRECT_MAX 4096
/* A write within this long of the stream's previous one is queued for MHD instead: a stream
 * that fast gains more from MHD sending its events in one go (one syscall for many) than from
 * the wake-up saved. */
#define DIRECT_GAP_NS 1000000ull
/* MHD's connection timeout counts from its own last activity, which direct writes do not
 * update: route one write through MHD at least this often. */
#define DIRECT_REFRESH_S 30

/* The rest of a direct chunk the kernel took only in part (the framing must stay whole):
 * wait for room, briefly. Caller holds c->mu. */
static bool send_rest(int fd, struct iovec *iov, int n, size_t sent) {
    for (int i = 0; i < n; i++) {
        size_t k = sent < iov[i].iov_len ? sent : iov[i].iov_len;
        iov[i].iov_base = (char *)iov[i].iov_base + k;
        iov[i].iov_len -= k;
        sent -= k;
    }
    for (int tries = 0; tries < 20;) {
        while (n && !iov[0].iov_len) iov++, n--;
        if (!n) return true;
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t r = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r > 0) {
            send_rest(fd, iov, n, (size_t)r);
            return true;
        }
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, 100) == 0) tries++;
    }
    return false;
}

/* Send one chunk straight to the socket of a stream suspended with nothing queued. Returns 1 if
 * sent, 0 if the caller should queue it for MHD instead, -1 if the connection failed (the
 * caller marks it so the reader ends it). Caller holds c->mu. */
static int direct_write(fe_conn *c, const char *data, size_t len) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    uint64_t gap = now - c->t_write;
    c->t_write = now;
    if (gap < DIRECT_GAP_NS) return 0;
    if (!c->suspended || !c->body_sent || !c->mc || c->fd < 0 || c->off != c->out.len || len == 0 ||
        len > DIRECT_MAX || mono_s() - c->t_mhd >= DIRECT_REFRESH_S)
        return 0;
    char hdr[24];
    int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", len);
    struct iovec iov[3] = {{hdr, (size_t)hl}, {(void *)data, len}, {"\r\n", 2}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 3};
    size_t total = (size_t)hl + len + 2;
    ssize_t r = sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    if (r != (ssize_t)total && !send_rest(c->fd, iov, 3, (size_t)r)) return -1;
    atomic_fetch_add_explicit(&c->h->direct, 1, memory_order_relaxed);
    return 1;
}

/* Resume if we suspended it; caller holds c->mu. */
static void wake(fe_conn *c) {
    if (c->suspended && c->mc) {
        c->suspended = false;
        MHD_resume_connection(c->mc);
    }
}

void fe_conn_reply(fe_conn *c, int status, const char *content_type, const char *body, size_t len) {
    pthread_mutex_lock(&c->mu);
    if (c->mode == MODE_BODY || c->mode == MODE_PENDING) {
        c->mode = MODE_REPLY;
        c->status = status;
        c->ctype = content_type;
        if (oai_buf_put(&c->reply, body, len)) c->status = 500;
        wake(c);
    }
    pthread_mutex_unlock(&c->mu);
}

mg_status fe_conn_stream(fe_conn *c) {
    pthread_mutex_lock(&c->mu);
    mg_status s = MG_OK;
    if (c->mode != MODE_BODY || c->handled)
        s = MG_ERRF(MG_EINVAL, "fe_conn_stream outside the handler or after a reply");
    else
        c->mode = MODE_STREAM;
    pthread_mutex_unlock(&c->mu);
    return s;
}

bool fe_conn_write(fe_conn *c, const char *data, size_t len) {
    pthread_mutex_lock(&c->mu);
    bool ok = !c->closed && !c->done && !c->overflow;
    int d = ok ? direct_write(c, data, len) : 0;
    if (d < 0) {
        /* The client is gone (reset or closed): let the reader end the connection. */
        c->overflow = true;
        ok = false;
        wake(c);
    } else if (ok && d == 0) {
        if (c->off == c->out.len) c->off = c->out.len = 0; /* drained: reuse from the start */
        if (c->out.len - c->off + len > c->h->o.max_pending || oai_buf_put(&c->out, data, len)) {
            /* A client that stopped reading leaves MHD waiting for the socket to drain and never
             * calling the reader again: shut the socket so that MHD sees it fail and completes
             * the connection (the fd is still open: completion needs c->mu, held here). */
            c->overflow = true;
            if (c->fd >= 0) shutdown(c->fd, SHUT_RDWR);
            ok = false;
        }
        wake(c);
    }
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void fe_conn_end(fe_conn *c) {
    pthread_mutex_lock(&c->mu);
    c->done = true;
    wake(c);
    pthread_mutex_unlock(&c->mu);
}

void fe_conn_set_on_close(fe_conn *c, fe_conn_close_fn fn, void *arg) {
    c->on_close = fn;
    c->on_close_arg = arg;
}

bool fe_conn_closed(fe_conn *c) {
    pthread_mutex_lock(&c->mu);
    bool v = c->closed;
    pthread_mutex_unlock(&c->mu);
    return v;
}

const char *fe_conn_header(fe_conn *c, const char *name) {
    return c->mc ? MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, name) : NULL;
}

/* The SSE content reader: runs on the connection's MHD thread. */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    fe_conn *c = cls;
    pthread_mutex_lock(&c->mu);
    c->t_mhd = mono_s();
    ssize_t n;
    if (c->overflow) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (c->off < c->out.len) {
        size_t k = c->out.len - c->off;
        if (k > max) k = max;
        memcpy(buf, c->out.p + c->off, k);
        c->off += k;
        if (c->off == c->out.len) c->off = c->out.len = 0;
        c->body_sent = true;
        n = (ssize_t)k;
    } else if (c->done) {
        c->sent_all = true;
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        c->suspended = true;
        MHD_suspend_connection(c->mc);
        n = 0;
    }
    pthread_mutex_unlock(&c->mu);
    return n;
}

static enum MHD_Result queue_buf(struct MHD_Connection *mc, int status, const char *ctype,
                                 const char *body, size_t len) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", ctype ? ctype : "application/json");
    enum MHD_Result ret = MHD_queue_response(mc, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result queue_error(struct MHD_Connection *mc, int status, const char *type,
                                   const char *code, const char *msg) {
    oai_error e;
    oai_fail(&e, status, type, code, NULL, "%s", msg);
    oai_buf b = {0};
    oai_error_json(&e, &b);
    enum MHD_Result r = queue_buf(mc, status, "application/json", b.p, b.len);
    oai_buf_free(&b);
    return r;
}

/* Queue whatever the handler decided; caller holds c->mu. */
static enum MHD_Result queue_decided(fe_conn *c, struct MHD_Connection *mc) {
    if (c->mode == MODE_REPLY) {
        c->queued = true;
        c->sent_all = true; /* a buffer response: MHD sends it whole or the client left */
        return queue_buf(mc, c->status, c->ctype, c->reply.p ? c->reply.p : "", c->reply.len);
    }
    if (c->mode == MODE_STREAM) {
        struct MHD_Response *r =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, sse_read, c, NULL);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        MHD_add_response_header(r, "X-Accel-Buffering", "no");
        c->queued = true;
        enum MHD_Result ret = MHD_queue_response(mc, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    /* Pending: wait for fe_conn_reply from another thread. */
    c->suspended = true;
    MHD_suspend_connection(mc);
    return MHD_YES;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *mc, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **req_cls) {
    fe_http *h = cls;
    fe_conn *c = *req_cls;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) return MHD_NO;
        atomic_init(&c->refs, 1);
        pthread_mutex_init(&c->mu, NULL);
        c->h = h;
        c->mc = mc;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        snprintf(c->method, sizeof c->method, "%s", method);
        c->path = strdup(url);
        if (!c->path) {
            fe_conn_unref(c);
            return MHD_NO;
        }
        pthread_mutex_lock(&h->mu);
        c->next = h->conns;
        if (h->conns) h->conns->prev = c;
        h->conns = c;
        pthread_mutex_unlock(&h->mu);
        *req_cls = c;
        /* A declared body over the limit is refused before reading it. */
        const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > h->o.max_body) {
            c->too_large = true;
            c->handled = true;
            char msg[128];
            snprintf(msg, sizeof msg, "Request body is larger than the limit of %zu bytes.",
                     h->o.max_body);
            return queue_error(mc, 413, "invalid_request_error", "request_too_large", msg);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!c->too_large && c->body.len + *upload_data_size > h->o.max_body) c->too_large = true;
        if (!c->too_large && oai_buf_put(&c->body, upload_data, *upload_data_size))
            c->too_large = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (c->too_large && !c->handled) {
        char msg[128];
        snprintf(msg, sizeof msg, "Request body is larger than the limit of %zu bytes.",
                 h->o.max_body);
        c->handled = true;
        return queue_error(mc, 413, "invalid_request_error", "request_too_large", msg);
    }
    if (!c->handled) {
        h->o.handler(h->o.ud, c, c->method, c->path, c->body.p ? c->body.p : "", c->body.len);
        pthread_mutex_lock(&c->mu);
        c->handled = true;
        if (c->mode == MODE_BODY) c->mode = MODE_PENDING;
        enum MHD_Result r = queue_decided(c, mc);
        pthread_mutex_unlock(&c->mu);
        return r;
    }
    /* Called again after a resume: the deferred reply is ready. */
    pthread_mutex_lock(&c->mu);
    enum MHD_Result r = MHD_YES;
    if (!c->queued) {
        if (c->mode == MODE_PENDING) {
            c->suspended = true; /* spurious resume: keep waiting */
            MHD_suspend_connection(mc);
        } else {
            r = queue_decided(c, mc);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **req_cls,
                         enum MHD_RequestTerminationCode toe) {
    fe_http *h = cls;
    fe_conn *c = *req_cls;
    if (!c) return;
    *req_cls = NULL;
    pthread_mutex_lock(&c->mu);
    c->closed = true;
    c->mc = NULL;
    bool gone = !(toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && c->sent_all);
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_lock(&h->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    pthread_mutex_unlock(&h->mu);
    if (c->on_close) c->on_close(c->on_close_arg, gone);
    fe_conn_unref(c);
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code) {
    fe_http *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        atomic_fetch_add(&h->nconns, 1);
    else
        atomic_fetch_sub(&h->nconns, 1);
}

mg_status fe_http_start(const fe_http_opts *o, fe_http **out) {
    *out = NULL;
    fe_http *h = calloc(1, sizeof *h);
    if (!h) return MG_ERRF(MG_ENOMEM, "fe_http");
    h->o = *o;
    if (!h->o.max_body) h->o.max_body = 8u << 20;
    if (!h->o.max_connections) h->o.max_connections = 65536;
    if (!h->o.max_pending) h->o.max_pending = 16u << 20;
    pthread_mutex_init(&h->mu, NULL);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    if (inet_pton(AF_INET, o->host ? o->host : "0.0.0.0", &sa.sin_addr) != 1) {
        free(h);
        return MG_ERRF(MG_EINVAL, "http host '%s' is not an IPv4 address", o->host);
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
                     MHD_USE_TCP_FASTOPEN;
    int threads = o->threads > 0 ? o->threads : 1;
    h->d = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, on_access, h, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_CONNECTION_LIMIT,
        h->o.max_connections, MHD_OPTION_CONNECTION_TIMEOUT, 600u, MHD_OPTION_LISTEN_BACKLOG_SIZE,
        4096u, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads, MHD_OPTION_LISTENING_ADDRESS_REUSE,
        1u, MHD_OPTION_END);
    if (!h->d) {
        pthread_mutex_destroy(&h->mu);
        free(h);
        return MG_ERRF(MG_EIO, "cannot listen on %s:%d", o->host ? o->host : "0.0.0.0", o->port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : o->port;
    *out = h;
    return MG_OK;
}

void fe_http_stop(fe_http *h) {
    if (!h) return;
    /* MHD may not stop with suspended connections: finish them all first. */
    pthread_mutex_lock(&h->mu);
    for (fe_conn *c = h->conns; c; c = c->next) {
        pthread_mutex_lock(&c->mu);
        if (c->mode == MODE_PENDING || c->mode == MODE_BODY) {
            c->mode = MODE_REPLY;
            c->status = 503;
            c->ctype = "application/json";
            oai_buf_puts(&c->reply, "{\"error\":{\"message\":\"The server is shutting down.\","
                                    "\"type\":\"service_unavailable\",\"param\":null,"
                                    "\"code\":\"shutting_down\"}}");
        }
        c->done = true;
        wake(c);
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&h->mu);
    /* Let the poll threads move the resumed connections off their suspended lists. */
    for (int i = 0; i < 100; i++) {
        bool any = false;
        pthread_mutex_lock(&h->mu);
        for (fe_conn *c = h->conns; c; c = c->next) any |= c->suspended;
        pthread_mutex_unlock(&h->mu);
        usleep(any ? 10000 : 20000);
        if (!any) break;
    }
    MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

int fe_http_port(const fe_http *h) {
    return h->port;
}

unsigned fe_http_connections(const fe_http *h) {
    return atomic_load(&h->nconns);
}

unsigned long long fe_http_direct_writes(const fe_http *h) {
    return atomic_load_explicit(&h->direct, memory_order_relaxed);
}
