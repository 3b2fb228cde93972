/* http.h - the frontend's HTTP server: libmicrohttpd with an epoll thread pool, whole-body
 * requests handed to one application handler, deferred replies, and SSE streams that suspend
 * while they have nothing to send.
 *
 * Data flow: client -> MHD thread collects the body (up to max_body; larger is 413 without
 * reading further) -> handler(ud, conn, ...) on that MHD thread -> the handler answers in one of
 * three ways:
 *   - fe_conn_reply() before returning: a complete response, sent at once;
 *   - nothing before returning, fe_conn_reply() later from any thread (the connection is
 *     suspended until then; stream=false requests wait for their worker this way);
 *   - fe_conn_stream() before returning: a 200 text/event-stream response whose bytes come from
 *     fe_conn_write() on any thread and end with fe_conn_end(). When its buffer is empty the
 *     connection is suspended, so an idle stream costs no CPU; the next small write is then sent
 *     to the socket from the writer's thread (one non-blocking send, no MHD wake-up) when the
 *     socket takes it, else queued and the connection resumed.
 *
 * Lifetime: an fe_conn is reference-counted. The server holds one reference until the
 * connection completes; the handler receives it and takes its own with fe_conn_ref() if it keeps
 * the pointer past the handler's return (fe_conn_unref() when done). After the connection
 * completes, writes and replies are dropped silently. The on_close callback (if set) runs once,
 * on an MHD thread, when the connection completes; client_gone tells whether the client went
 * away before the response was fully sent (the place to cancel work).
 *
 * Threads: fe_conn_reply/write/end/ref/unref are thread-safe. fe_conn_stream and
 * fe_conn_set_on_close only inside the handler. The handler runs on MHD threads concurrently
 * for different connections. */
#ifndef MG_FRONTEND_HTTP_H
#define MG_FRONTEND_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

typedef struct fe_http fe_http;
typedef struct fe_conn fe_conn;

typedef void (*fe_http_handler)(void *ud, fe_conn *c, const char *method, const char *path,
                                const char *body, size_t body_len);
typedef void (*fe_conn_close_fn)(void *arg, bool client_gone);

typedef struct fe_http_opts {
    const char *host; /* bind address; NULL = 0.0.0.0 */
    int port;         /* 0 = a free port (fe_http_port tells) */
    int threads;      /* MHD threads; 0 = 1 */
    size_t max_body;  /* bytes; larger bodies are 413 */
    unsigned max_connections;
    size_t max_pending; /* stream bytes waiting for a slow client before the connection is
                           dropped (as if the client had gone); 0 = 16 MiB */
    fe_http_handler handler;
    void *ud;
} fe_http_opts;

mg_status fe_http_start(const fe_http_opts *o, fe_http **out);
/* Ends every stream, answers every deferred reply with 503, then stops. Accepts NULL. */
void fe_http_stop(fe_http *h);
int fe_http_port(const fe_http *h);
/* Connections open right now (for metrics and tests). */
unsigned fe_http_connections(const fe_http *h);
/* Stream writes sent straight to an idle stream's socket from the writer's thread, without
 * waking an MHD thread (see http.c), since start. */
unsigned long long fe_http_direct_writes(const fe_http *h);

void fe_conn_ref(fe_conn *c);
void fe_conn_unref(fe_conn *c);
/* A request header's value, or NULL. Inside the handler only. */
const char *fe_conn_header(fe_conn *c, const char *name);

/* Complete response; copies body. Once per connection. */
void fe_conn_reply(fe_conn *c, int status, const char *content_type, const char *body, size_t len);
/* Begin an SSE response (inside the handler only). */
mg_status fe_conn_stream(fe_conn *c);
/* Append bytes to the stream; false once the connection has completed (client gone) or when
 * the client reads too slowly (max_pending): the connection is then closed, and on_close reports
 * the client gone. */
bool fe_conn_write(fe_conn *c, const char *data, size_t len);
/* No more bytes: the response ends after what was written. */
void fe_conn_end(fe_conn *c);
/* Register a callback for the connection's completion (inside the handler only). */
void fe_conn_set_on_close(fe_conn *c, fe_conn_close_fn fn, void *arg);
/* True once the connection has completed. */
bool fe_conn_closed(fe_conn *c);

#endif
