/* sysserver.c - the per-process HTTP endpoint: /metrics, /health, /live on libmicrohttpd.
 *
 * We bind the listening socket ourselves and hand it to MHD (MHD_OPTION_LISTEN_SOCKET): that
 * lets us resolve any host (IPv4 or IPv6) with getaddrinfo, report a clear error when the bind
 * fails, and read the chosen port back with getsockname when asked for port 0. MHD closes the
 * socket when the daemon stops.
 *
 * Requests are answered whole on the first call of the access handler: they are all GETs without
 * a body, so there is no upload state to keep between calls. */
#include "sysserver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "log.h"

struct sysserver {
    struct MHD_Daemon *daemon;
    mg_registry *registry;
    char *host;
    char *component;
    int port;
    int live_timeout_ms;
    int64_t start_ns;
    _Atomic int64_t beat_ns;

    pthread_mutex_t health_mu; /* fn/arg; held while the callback runs */
    sysserver_health_fn health_fn;
    void *health_arg;
};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- responses ---- */

/* Queue body (taken: freed with free()) with the given status and content type. */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, const char *type,
                             char *body, size_t len) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, body, body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result r = MHD_queue_response(conn, code, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned code, const char *text) {
    char *body = strdup(text);
    if (!body) return MHD_NO;
    return reply(conn, code, "text/plain; charset=utf-8", body, strlen(body));
}

/* Serialize obj (a new reference, released here) as the response body. */
static enum MHD_Result reply_json(struct MHD_Connection *conn, unsigned code, json_t *obj) {
    char *body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!body) return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    return reply(conn, code, "application/json", body, strlen(body));
}

static enum MHD_Result serve_metrics(sysserver *s, struct MHD_Connection *conn) {
    char *text;
    size_t len;
    if (metrics_render(s->registry, &text, &len) != MG_OK) {
        MG_LOG_ERR("sysserver: /metrics");
        return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "metrics render failed\n");
    }
    return reply(conn, MHD_HTTP_OK, MG_METRICS_CONTENT_TYPE, text, len);
}

static enum MHD_Result serve_health(sysserver *s, struct MHD_Connection *conn) {
    json_t *details = json_object();
    bool healthy = true;
    pthread_mutex_lock(&s->health_mu);
    if (s->health_fn && details) healthy = s->health_fn(s->health_arg, details);
    pthread_mutex_unlock(&s->health_mu);

    json_t *obj = json_object();
    if (obj) {
        json_object_set_new(obj, "status", json_string(healthy ? "healthy" : "unhealthy"));
        if (s->component) json_object_set_new(obj, "component", json_string(s->component));
        json_object_set_new(obj, "uptime_seconds", json_real((now_ns() - s->start_ns) / 1e9));
        json_object_set(obj, "details", details ? details : json_object());
    }
    json_decref(details);
    return reply_json(conn, healthy ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, obj);
}

static enum MHD_Result serve_live(sysserver *s, struct MHD_Connection *conn) {
    double age_s = (now_ns() - atomic_load_explicit(&s->beat_ns, memory_order_relaxed)) / 1e9;
    bool alive = s->live_timeout_ms <= 0 || age_s * 1000.0 <= s->live_timeout_ms;
    json_t *obj = json_object();
    if (obj) {
        json_object_set_new(obj, "status", json_string(alive ? "alive" : "stalled"));
        if (s->live_timeout_ms > 0)
            json_object_set_new(obj, "last_heartbeat_seconds_ago", json_real(age_s));
    }
    return reply_json(conn, alive ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, obj);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    sysserver *s = cls;
    /* Bodies sent to these paths are ignored: report them consumed. */
    *upload_data_size = 0;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (strcmp(url, "/metrics") == 0) return serve_metrics(s, conn);
    if (strcmp(url, "/health") == 0) return serve_health(s, conn);
    if (strcmp(url, "/live") == 0) return serve_live(s, conn);
    return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
}

/* ---- lifecycle ---- */

/* Resolve host, bind and listen; on success *fd is the listening socket and *port its port. */
static mg_status listen_on(const char *host, int port, int *fd, int *bound_port) {
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0)
        return MG_ERRF(MG_EINVAL, "sysserver: cannot resolve host \"%s\": %s", host,
                       gai_strerror(gai));
    int err = 0;
    int sock = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        sock = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (sock < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(sock, ai->ai_addr, ai->ai_addrlen) == 0 && listen(sock, 128) == 0) break;
        err = errno;
        close(sock);
        sock = -1;
    }
    freeaddrinfo(res);
    if (sock < 0)
        return MG_ERRF(MG_EIO, "sysserver: cannot listen on %s:%d: %s", host, port, strerror(err));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(sock, (struct sockaddr *)&ss, &sl) != 0) {
        err = errno;
        close(sock);
        return MG_ERRF(MG_EIO, "sysserver: getsockname: %s", strerror(err));
    }
    *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    *fd = sock;
    return MG_OK;
}

mg_status sysserver_start(const sysserver_opts *opts, sysserver **out) {
    if (!opts || !out) return MG_ERRF(MG_EINVAL, "sysserver_start: NULL opts or out");
    if (opts->port < 0 || opts->port > 65535)
        return MG_ERRF(MG_EINVAL, "sysserver: port %d out of range 0..65535", opts->port);
    if (opts->threads < 0 || opts->threads > 64)
        return MG_ERRF(MG_EINVAL, "sysserver: threads %d out of range 0..64", opts->threads);
    mg_registry *reg = opts->registry ? opts->registry : metrics_default();
    if (!reg) return MG_ERRF(MG_ENOMEM, "sysserver: no metrics registry");

    sysserver *s = calloc(1, sizeof *s);
    if (!s) return MG_ERRF(MG_ENOMEM, "sysserver: out of memory");
    pthread_mutex_init(&s->health_mu, NULL);
    s->registry = reg;
    s->live_timeout_ms = opts->live_timeout_ms;
    s->host = strdup(opts->host ? opts->host : "0.0.0.0");
    s->component = opts->component ? strdup(opts->component) : NULL;
    if (!s->host || (opts->component && !s->component)) {
        sysserver_stop(s);
        return MG_ERRF(MG_ENOMEM, "sysserver: out of memory");
    }
    s->start_ns = now_ns();
    atomic_store(&s->beat_ns, s->start_ns);

    int fd = -1;
    mg_status st = listen_on(s->host, opts->port, &fd, &s->port);
    if (st != MG_OK) {
        sysserver_stop(s);
        return st;
    }
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    /* MHD warns about a pool of one: name the pool only when there is one. The port argument is 0
     * because the socket is ours and already bound. */
    struct MHD_OptionItem pool[] = {
        {MHD_OPTION_THREAD_POOL_SIZE, opts->threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_LISTEN_SOCKET, fd,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_ARRAY,
                                 opts->threads > 1 ? pool : pool + 1, MHD_OPTION_END);
    if (!s->daemon) {
        close(fd);
        int port = s->port;
        sysserver_stop(s);
        return MG_ERRF(MG_EIO, "sysserver: libmicrohttpd failed to start on %s:%d",
                       opts->host ? opts->host : "0.0.0.0", port);
    }
    MG_INFO("sysserver: serving /metrics /health /live on %s:%d", s->host, s->port);
    *out = s;
    return MG_OK;
}

void sysserver_stop(sysserver *s) {
    if (!s) return;
    if (s->daemon) MHD_stop_daemon(s->daemon); /* joins its threads, closes the socket */
    pthread_mutex_destroy(&s->health_mu);
    free(s->host);
    free(s->component);
    free(s);
}

int sysserver_port(const sysserver *s) {
    return s->port;
}

void sysserver_set_health(sysserver *s, sysserver_health_fn fn, void *arg) {
    pthread_mutex_lock(&s->health_mu);
    s->health_fn = fn;
    s->health_arg = fn ? arg : NULL;
    pthread_mutex_unlock(&s->health_mu);
}

void sysserver_heartbeat(sysserver *s) {
    atomic_store_explicit(&s->beat_ns, now_ns(), memory_order_relaxed);
}
